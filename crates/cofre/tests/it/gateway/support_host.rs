//! Vendor support's `host` scope: with an approved `host` grant, a support user opens a recorded
//! gateway session to the target the customer tagged `support-host` (the Cofre machine; here the
//! test's sshd), and to nothing else; revoking the grant ends the session at once; the sessions
//! are in `support activity`; a session under a grant that runs out ends when the grant does.

use super::*;

#[test]
fn a_host_grant_opens_a_recorded_session_to_the_support_host_only_until_revoked() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let port = gw.sshd.port.to_string();
    let root_key = gw.keys.join("root_key");
    gw.admin.ok(&[
        "target",
        "add",
        "cofre-host",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tag",
        "support-host",
    ]);
    gw.admin.ok(&[
        "credential",
        "add",
        "cofre-host",
        "root",
        "--key-file",
        root_key.to_str().unwrap(),
    ]);
    let (sup1, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "sup1", "support", &[]);
    let sup_key = gw.keys.join("sup_key");
    ssh_keygen(&sup_key);
    gw.admin.ok(&[
        "user",
        "key",
        "add",
        "sup1",
        gw.keys.join("sup_key.pub").to_str().unwrap(),
    ]);
    let key = sup_key.to_str().unwrap();

    // No grant: refused before anything reaches the machine.
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("sup1:root@cofre-host", &["-i", key], Some("echo no"), None);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert_nothing_reached_sshd(&gw.sshd, before, "support without a grant");

    let id = request_host(&sup1, "TICKET-9", "1h");
    // Still nothing while it waits for the customer.
    let out = gw.run_ssh("sup1:root@cofre-host", &["-i", key], Some("echo no"), None);
    assert_ne!(out.code, Some(0), "{out:?}");
    gw.admin
        .ok(&["support", "approve", &id, "--comment", "ok"])
        .assert_stdout_contains("approved");

    // Approved: the support host only, never another target (even one a policy opens to users).
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("sup1:root@db01", &["-i", key], Some("echo no"), None);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert_nothing_reached_sshd(&gw.sshd, before, "a host grant on another target");
    let out = gw.run_ssh(
        "sup1:root@cofre-host",
        &["-i", key],
        Some("echo host-$((40+2))"),
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("host-42"), "{out:?}");

    // A live shell under the grant ends the moment the customer revokes it.
    shell_ends_with_its_grant(
        &gw,
        key,
        || {
            gw.admin.ok(&["support", "revoke", &id]);
        },
        &format!("support grant {id} was revoked"),
    );

    // Both sessions are in the grant's activity, and their recordings hold what was done.
    let activity: Vec<Value> = gw
        .admin
        .ok(&["support", "activity", &id])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts: Vec<&Value> = activity
        .iter()
        .filter(|e| e["action"] == "session.start")
        .collect();
    assert_eq!(starts.len(), 2, "{activity:#?}");
    for start in &starts {
        assert_eq!(start["object"], "credential:cofre-host/root");
        assert_eq!(start["details"]["support_grant"], id.as_str());
        assert_eq!(start["details"]["policy"], "support-grant");
    }
    let first = starts[0]["details"]["session"].as_str().unwrap();
    let (_, cast) = gw.export(first);
    assert!(cast.text("o").contains("host-42"), "{:?}", cast.events);
    // Support itself never reads the recording.
    sup1.fail(&["recording", "export", first, "-o", "/dev/null"]);

    // A short grant: the live shell ends by itself at the grant's end, with the reason shown.
    let short = request_host(&sup1, "TICKET-10", "8s");
    gw.admin
        .ok(&["support", "approve", &short, "--comment", "ok"])
        .assert_stdout_contains("approved");
    let approved_at = std::time::Instant::now();
    shell_ends_with_its_grant(
        &gw,
        key,
        || {},
        &format!("your support grant {short} has ended"),
    );
    assert!(
        approved_at.elapsed() >= Duration::from_secs(7),
        "the session ended before its grant did ({:?})",
        approved_at.elapsed()
    );
}

/// A `host` support request from `sup`, answered pending; its id.
fn request_host(sup: &Cli, ticket: &str, duration: &str) -> String {
    let v = sup
        .ok(&[
            "--output",
            "json",
            "support",
            "request",
            "--scope",
            "host",
            "--reason",
            &format!("{ticket} disk full"),
            "--ticket",
            ticket,
            "--duration",
            duration,
        ])
        .json();
    v["id"].as_str().unwrap().to_owned()
}

/// A live support shell to the host, then `end` (a revocation, or nothing while the grant runs
/// out): the shell ends, the support user is told `why`, and no new session opens.
fn shell_ends_with_its_grant(gw: &Gw, key: &str, end: impl FnOnce(), why: &str) {
    let mut ssh = Running::spawn(
        gw.ssh("sup1:root@cofre-host", &["-i", key, "-tt"], None),
        "ssh -tt (support shell)",
    );
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));
    end();
    let status = ssh.wait(Duration::from_secs(30));
    assert!(
        status.is_some(),
        "the session outlived its grant: {}",
        ssh.describe()
    );
    assert!(
        format!("{}{}", ssh.stdout(), ssh.stderr()).contains(why),
        "the support user sees why ({why}): {}",
        ssh.describe()
    );
    let out = gw.run_ssh(
        "sup1:root@cofre-host",
        &["-i", key],
        Some("echo after"),
        None,
    );
    assert_ne!(out.code, Some(0), "no session after the grant: {out:?}");
}
