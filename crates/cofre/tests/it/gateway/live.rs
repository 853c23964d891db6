//! Live session control against real OpenSSH: an admin watches a live shell (`cofre session
//! watch`), blocks and unblocks its input, terminates it; a moderated session waits for its
//! moderator and is held while none watches; the emergency panel ends every live session and
//! locks the instance down until a second admin lifts it.

use super::*;

fn wait_for_stderr(client: &Running, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !client.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on stderr within {timeout:?}: {}",
            client.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The id of alice's live session that is not one of `known`.
fn new_live_session(gw: &Gw, known: &[String]) -> String {
    let mut found = None;
    wait_until(
        "the session is listed as live",
        Duration::from_secs(30),
        || {
            let listed = gw.admin.ok(&["session", "list", "--live"]).stdout;
            found = listed
                .lines()
                .filter(|l| l.contains("alice:root@db01") && l.split('\t').any(|f| f == "live"))
                .map(|l| l.split('\t').next().expect("id").to_owned())
                .find(|id| !known.contains(id));
            found.is_some()
        },
    );
    found.expect("a live session")
}

/// `cofre session watch ID` as `cli`, running.
fn watch(cli: &Cli, id: &str) -> Running {
    let (cmd, what) = cli.command(&["session", "watch", id]);
    Running::spawn(cmd, &what)
}

fn shell(gw: &Gw, what: &str) -> Running {
    Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), what)
}

/// An admin watches alice's shell and sees what she sees; blocks her input (she is told why and
/// what she types is dropped, never run), unblocks it (she is told, and typing works again),
/// terminates it (the watch ends with it). Every step is audited, the watch's start and end too.
/// An approver may not watch a session that is not moderated; an auditor may, as no moderator.
#[test]
fn watch_lock_unlock_and_terminate() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let mut ssh = shell(&gw, "ssh -tt (alice)");
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));
    let id = new_live_session(&gw, &[]);

    let mut watcher = watch(&gw.admin, &id);
    wait_for_stderr(
        &watcher,
        &format!("watching session {id}"),
        Duration::from_secs(30),
    );
    // The typed line echoes `watched-$((6*7))`; only the shell's answer has the digits.
    ssh.send("echo watched-$((6*7))\n");
    ssh.wait_for_stdout("watched-42", Duration::from_secs(30));
    watcher.wait_for_stdout("watched-42", Duration::from_secs(30));

    let (auditor, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "audrey", "auditor", &[]);
    let audit_watch = watch(&auditor, &id);
    wait_for_stderr(
        &audit_watch,
        &format!("watching session {id}"),
        Duration::from_secs(30),
    );
    assert!(
        !audit_watch.stderr().contains("moderator"),
        "an auditor watches, never moderates: {}",
        audit_watch.describe()
    );
    drop(audit_watch);
    let (approver, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "percy",
        "approver",
        &["ops"],
    );
    approver
        .fail(&["session", "watch", &id])
        .assert_stderr_contains("moderated");

    gw.admin
        .ok(&["session", "lock", &id, "--reason", "suspicious commands"])
        .assert_stdout_contains("input blocked");
    wait_for_stderr(
        &ssh,
        "your input is blocked by admin: suspicious commands",
        Duration::from_secs(10),
    );
    gw.admin
        .ok(&["session", "list", "--live"])
        .assert_stdout_contains("live\tinput blocked");
    gw.admin
        .fail(&["session", "lock", &id, "--reason", "again"])
        .assert_stderr_contains("session_locked");
    ssh.send("echo dropped-$((1+1))\n");
    // Blocked input never reaches the target: once unblocked, a line typed after it comes back
    // alone.
    gw.admin
        .ok(&["session", "unlock", &id, "--reason", "cleared"])
        .assert_stdout_contains("input unblocked");
    wait_for_stderr(
        &ssh,
        "your input is unblocked by admin",
        Duration::from_secs(10),
    );
    gw.admin
        .fail(&["session", "unlock", &id, "--reason", "again"])
        .assert_stderr_contains("session_not_locked");
    ssh.send("echo back-$((2+2))\n");
    ssh.wait_for_stdout("back-4", Duration::from_secs(30));
    watcher.wait_for_stdout("back-4", Duration::from_secs(30));
    for seen in [ssh.stdout(), watcher.stdout()] {
        assert!(
            !seen.contains("dropped"),
            "input typed while blocked never ran: {seen}"
        );
    }

    gw.admin
        .ok(&["session", "kill", &id, "--reason", "enough"])
        .assert_stdout_contains("terminated");
    assert!(
        ssh.wait(Duration::from_secs(10)).is_some(),
        "{}",
        ssh.describe()
    );
    let status = watcher.wait(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the watch ends with the session: {}",
        watcher.describe()
    );
    wait_for_stderr(
        &watcher,
        &format!("session {id} ended"),
        Duration::from_secs(1),
    );
    gw.admin
        .fail(&["session", "watch", &id])
        .assert_stderr_contains("not running");

    let object = format!("session:{id}");
    let mut audit = Vec::new();
    wait_until(
        "both watches' ends are audited",
        Duration::from_secs(10),
        || {
            audit = gw.audit();
            audit
                .iter()
                .filter(|e| {
                    e["action"] == "session.watch"
                        && e["object"] == object
                        && e["details"]["event"] == "end"
                })
                .count()
                == 2
        },
    );
    let start = find_entry(&audit, "session.watch", |e| {
        e["object"] == object && e["actor"] == "admin" && e["details"]["event"] == "start"
    });
    assert_eq!(start["details"]["moderator"], true);
    assert_eq!(start["details"]["user"], "alice");
    let audited = find_entry(&audit, "session.watch", |e| {
        e["object"] == object && e["actor"] == "audrey" && e["details"]["event"] == "start"
    });
    assert_eq!(audited["details"]["moderator"], false);
    let lock = find_entry(&audit, "session.lock", |e| e["object"] == object);
    assert_eq!(lock["actor"], "admin");
    assert_eq!(lock["details"]["reason"], "suspicious commands");
    let unlock = find_entry(&audit, "session.unlock", |e| e["object"] == object);
    assert_eq!(unlock["details"]["reason"], "cleared");
    find_entry(&audit, "session.kill", |e| e["object"] == object);
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"] == "session.lock" && e["object"] == object)
            .count(),
        1,
        "the refused second lock is not audited as a lock"
    );
}

/// A session under a `--moderated` policy waits (told so) until an admin watches; what alice
/// typed meanwhile is held, not lost, and runs once the moderator is there. When the moderator
/// leaves the session is paused (alice is told; her input and its output are held), and when
/// one watches again it goes on with everything typed meanwhile. A session no moderator watches
/// within `[server] moderator_wait_seconds` is refused.
#[test]
fn a_moderated_session_waits_for_its_moderator_and_pauses_without_one() {
    let Some(gw) = setup_with_config(
        Backend::Sqlite,
        None,
        Some("[server]\nmoderator_wait_seconds = 8\n"),
    ) else {
        return;
    };
    gw.admin.ok(&[
        "policy",
        "add",
        "p",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session",
        "--outcome",
        "allow",
        "--moderated",
    ]);
    gw.admin
        .ok(&["policy", "list"])
        .assert_stdout_contains("moderated");

    let mut ssh = shell(&gw, "ssh -tt (moderated)");
    wait_for_stderr(&ssh, "waiting for a moderator", Duration::from_secs(30));
    ssh.send("echo early-$((3*3))\n");
    let id = new_live_session(&gw, &[]);
    gw.admin
        .ok(&["session", "list", "--live"])
        .assert_stdout_contains("moderated\theld: no moderator watching");
    assert!(
        !ssh.stdout().contains("early-9"),
        "nothing runs before a moderator watches: {}",
        ssh.describe()
    );

    let mut moderator = watch(&gw.admin, &id);
    wait_for_stderr(&moderator, "as its moderator", Duration::from_secs(30));
    ssh.wait_for_stdout("early-9", Duration::from_secs(30));
    wait_for_stderr(&ssh, "a moderator is watching", Duration::from_secs(10));
    ssh.send("echo seen-$((4*4))\n");
    moderator.wait_for_stdout("seen-16", Duration::from_secs(30));

    // The moderator leaves: the session is paused.
    drop(moderator);
    wait_for_stderr(&ssh, "the session is paused", Duration::from_secs(30));
    ssh.send("echo during-$((5*5))\n");
    let paused_at = ssh.stdout().len();

    // An approver who shares a group with alice moderates too. It may list no sessions, but
    // the live ones it is answered: exactly the moderated sessions of its groups.
    let (approver, _, percy_pw) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "percy",
        "approver",
        &["ops"],
    );
    let listed = approver.ok(&["session", "list", "--live"]).stdout;
    assert!(
        listed.lines().any(|l| l.starts_with(&id)
            && l.contains("alice:root@db01")
            && l.contains("moderated")),
        "the approver finds the session to moderate: {listed}"
    );
    approver
        .fail(&["session", "list"])
        .assert_stderr_contains("forbidden");
    let (outsider, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "olga", "approver", &[]);
    let theirs = outsider.ok(&["session", "list", "--live"]).all();
    assert!(
        !theirs.contains(&id),
        "an approver of other groups is answered none: {theirs}"
    );
    // The console's live page shows it with its Watch link.
    let mut b = crate::console::Browser::new(&gw.server);
    let r = b.login("percy", &percy_pw, None);
    assert_eq!(r.status, 303, "{}", r.text);
    let page = b.get("/sessions");
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains(&format!("/sessions/{id}/watch")) && page.text.contains("Watch "),
        "{}",
        page.text
    );
    let mut again = watch(&approver, &id);
    wait_for_stderr(&again, "as its moderator", Duration::from_secs(30));
    // Held, not lost: what was typed while paused runs now, and the moderator sees it.
    ssh.wait_for_stdout("during-25", Duration::from_secs(30));
    again.wait_for_stdout("during-25", Duration::from_secs(30));
    assert!(
        paused_at <= ssh.stdout().find("during-25").unwrap_or(0),
        "nothing ran while paused"
    );
    ssh.send("exit\n");
    assert!(
        ssh.wait(Duration::from_secs(30)).is_some(),
        "{}",
        ssh.describe()
    );
    assert!(
        again.wait(Duration::from_secs(10)).is_some(),
        "{}",
        again.describe()
    );

    // No moderator in time: refused, and nothing ran.
    let started = Instant::now();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo never-$((7*7))"), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("waiting for a moderator"), "{out:?}");
    assert!(
        out.stderr.contains("no moderator watched within 8 seconds"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("never-49"), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(8));

    let audit = gw.audit();
    let start = find_entry(&audit, "session.start", |e| {
        e["details"]["session"] == id.as_str()
    });
    assert_eq!(start["details"]["moderated"], true);
    find_entry(&audit, "session.end", |e| {
        e["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no moderator watched"))
    });
}

/// The next unused TOTP code (each step serves one action; the server accepts the step before
/// and after the current one).
fn next_code(seed: &[u8], used: &mut u64) -> String {
    loop {
        let step = (*used + 1).max(current_step().saturating_sub(1));
        if step <= current_step() + 1 {
            *used = step;
            return totp_at_step(seed, step);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The emergency panel. Each action needs the admin's own TOTP (an admin without one is
/// refused). terminate-all ends every live session at once; lockdown refuses alice on the API
/// and the gateway (admins still work) until a second admin lifts it, and the admin who locked
/// it down cannot lift it alone. All audited.
#[test]
fn emergency_terminate_all_and_a_lockdown_only_a_second_admin_lifts() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    gw.admin
        .fail(&[
            "emergency",
            "lockdown",
            "--totp",
            "123456",
            "--reason",
            "drill",
        ])
        .assert_stderr_contains("totp_not_enrolled");
    let secret = gw.admin.ok(&["totp", "enroll"]).value_after("secret:");
    let seed = base32_decode(&secret);
    let mut used = current_step().saturating_sub(2);
    gw.admin
        .ok(&["totp", "confirm", &next_code(&seed, &mut used)]);

    let mut first = shell(&gw, "ssh -tt (first)");
    first.send("echo one-$((1+1))\n");
    first.wait_for_stdout("one-2", Duration::from_secs(30));
    let one = new_live_session(&gw, &[]);
    let mut second = shell(&gw, "ssh -tt (second)");
    second.send("echo two-$((2+2))\n");
    second.wait_for_stdout("two-4", Duration::from_secs(30));
    let two = new_live_session(&gw, std::slice::from_ref(&one));

    gw.admin
        .fail(&[
            "emergency",
            "terminate-all",
            "--totp",
            "000000",
            "--reason",
            "breach",
        ])
        .assert_stderr_contains("totp");
    let code = next_code(&seed, &mut used);
    let ended = gw.admin.ok(&[
        "emergency",
        "terminate-all",
        "--totp",
        &code,
        "--reason",
        "breach suspected",
    ]);
    ended.assert_stdout_contains("2 live sessions terminated");
    for (client, id) in [(&mut first, &one), (&mut second, &two)] {
        assert!(
            client.wait(Duration::from_secs(10)).is_some(),
            "{id} ended: {}",
            client.describe()
        );
        let seen = format!("{}{}", client.stdout(), client.stderr());
        assert!(
            seen.contains("terminated by admin (emergency): breach suspected"),
            "{seen}"
        );
    }
    // One code, one action.
    gw.admin
        .fail(&[
            "emergency",
            "lockdown",
            "--totp",
            &code,
            "--reason",
            "reused",
        ])
        .assert_stderr_contains("totp");

    let (bob, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "bob", "admin", &[]);
    gw.admin.ok(&[
        "emergency",
        "lockdown",
        "--totp",
        &next_code(&seed, &mut used),
        "--reason",
        "incident 42",
    ]);
    gw.admin
        .ok(&["emergency", "status"])
        .assert_stdout_contains("locked down since");
    gw.alice
        .fail(&["target", "list"])
        .assert_stderr_contains("instance_locked_down");
    let device = Cli::new(&gw.inst, "alice-laptop").at(&gw.server);
    device
        .fail_in(
            &["login", "--user", "alice", "--password-stdin"],
            &format!("{}\n", gw.alice_password),
        )
        .assert_stderr_contains("instance_locked_down");
    let refused = gw.run_ssh("alice:root@db01", &[], Some("echo hi-$((1+2))"), None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("the instance is locked down: incident 42"),
        "{refused:?}"
    );
    assert!(!refused.stdout.contains("hi-3"), "{refused:?}");
    gw.admin
        .ok(&["target", "list"])
        .assert_stdout_contains("db01");

    gw.admin
        .fail(&["emergency", "lift", "--reason", "all clear"])
        .assert_stderr_contains("lockdown_needs_second_admin");
    gw.alice
        .fail(&["target", "list"])
        .assert_stderr_contains("instance_locked_down");
    bob.ok(&["emergency", "lift", "--reason", "all clear"])
        .assert_stdout_contains("not locked down");
    gw.alice.ok(&["target", "list"]);
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo hi-$((1+2))"), None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("hi-3"), "{out:?}");
    bob.fail(&["emergency", "lift", "--reason", "again"])
        .assert_stderr_contains("not_locked_down");

    let audit = gw.audit();
    let all = find_entry(&audit, "emergency.terminate_all", |e| e["outcome"] == "ok");
    assert_eq!(all["details"]["reason"], "breach suspected");
    let ids = all["details"]["sessions"].as_array().expect("ids").clone();
    assert!(ids.contains(&Value::from(one.as_str())) && ids.contains(&Value::from(two.as_str())));
    find_entry(&audit, "emergency.terminate_all", |e| {
        e["outcome"] == "denied"
    });
    find_entry(&audit, "emergency.lockdown", |e| {
        e["outcome"] == "ok" && e["details"]["reason"] == "incident 42"
    });
    find_entry(&audit, "emergency.lift", |e| {
        e["outcome"] == "denied" && e["actor"] == "admin"
    });
    let lift = find_entry(&audit, "emergency.lift", |e| e["outcome"] == "ok");
    assert_eq!(lift["actor"], "bob");
    assert_eq!(lift["details"]["locked_down_by"], "admin");
    find_entry(&audit, "session.refused", |e| {
        e["details"]["why"] == "instance_locked_down"
    });
}

/// The lockdown is in the database: a second node of an active-active instance (PostgreSQL)
/// refuses a user within seconds of the lockdown on the first, and serves again once a second
/// admin lifted it there.
#[test]
fn every_node_follows_the_lockdown_postgres() {
    let inst = Instance::new(Backend::Postgres);
    let node_a = inst.start();
    let (admin, _) = admin_cli(&inst, &node_a);
    let (user, _, _) = add_user_cli(&inst, &node_a, &admin, "ursula", "user", &[]);
    let (bob, _, _) = add_user_cli(&inst, &node_a, &admin, "bob", "admin", &[]);
    let secret = admin.ok(&["totp", "enroll"]).value_after("secret:");
    let seed = base32_decode(&secret);
    let mut used = current_step().saturating_sub(2);
    admin.ok(&["totp", "confirm", &next_code(&seed, &mut used)]);
    let node_b = inst.start();
    let api_b = node_b.api();
    let token = user.token();
    api_b.get("/api/v1/auth/whoami", Some(&token)).assert_ok();

    admin.ok(&[
        "emergency",
        "lockdown",
        "--totp",
        &next_code(&seed, &mut used),
        "--reason",
        "drill on every node",
    ]);
    wait_until("node b refuses the user", Duration::from_secs(10), || {
        let r = api_b.get("/api/v1/auth/whoami", Some(&token));
        if r.status == 403 {
            r.assert_error(403, "instance_locked_down");
            assert!(r.text.contains("drill on every node"), "{}", r.text);
            return true;
        }
        r.assert_ok();
        false
    });
    bob.ok(&["emergency", "lift", "--reason", "drill over"]);
    wait_until(
        "node b serves the user again",
        Duration::from_secs(10),
        || api_b.get("/api/v1/auth/whoami", Some(&token)).status == 200,
    );
}
