//! cofre-connect, the SSH client to targets, against a real OpenSSH server: the host-key scan
//! (what backups' keyscan will use), the host-key policy, key and password logins, and a command
//! run with its prompts answered (what password rotation will use).

use crate::harness::*;
use cofre_connect::{
    scan_host_key, ConnectError, Connection, HostKey, HostKeyPolicy, Login, Prompt, Secret, Target,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Accepts exactly one fingerprint, as the services' pin does.
struct Pin1(String);

impl HostKeyPolicy for Pin1 {
    fn check<'a>(
        &'a self,
        key: &'a HostKey,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if key.fingerprint == self.0 {
                Ok(())
            } else {
                Err(format!("not the pinned key: {}", key.fingerprint))
            }
        })
    }
}

struct World {
    sshd: Sshd,
    root_key: Zeroizing<String>,
    _dir: tempfile::TempDir,
}

fn world() -> Option<World> {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("root_key");
    ssh_keygen(&key);
    let sshd = Sshd::start(&dir.path().join("sshd"));
    sshd.authorize(&key.with_extension("pub"));
    let root_key = Zeroizing::new(std::fs::read_to_string(&key).expect("root key"));
    Some(World {
        sshd,
        root_key,
        _dir: dir,
    })
}

fn target(sshd: &Sshd) -> Target {
    Target {
        name: "db01".into(),
        host: "127.0.0.1".into(),
        port: sshd.port,
    }
}

fn root_with_key(w: &World) -> Login {
    Login {
        account: "root".into(),
        secret: Secret::PrivateKey(w.root_key.clone()),
    }
}

#[test]
fn scan_then_pinned_login_runs_commands() {
    let Some(w) = world() else { return };
    let expected = w.sshd.host_key_fingerprint();
    block_on(async {
        let scanned = scan_host_key(&target(&w.sshd)).await.expect("scan");
        assert_eq!(scanned.fingerprint, expected, "the scan sees sshd's key");
        assert_eq!(scanned.algorithm, "ssh-ed25519");
        let pub_line = std::fs::read_to_string(w.sshd.host_key_path().with_extension("pub"))
            .expect("host key .pub");
        assert!(
            pub_line.starts_with(&scanned.openssh),
            "{} vs {pub_line}",
            scanned.openssh
        );

        let conn = Connection::open(
            &target(&w.sshd),
            &root_with_key(&w),
            Arc::new(Pin1(expected.clone())),
        )
        .await
        .expect("pinned key login");
        let out = conn
            .exec(
                "echo out; echo err >&2; exit 3",
                &[],
                Duration::from_secs(30),
            )
            .await
            .expect("exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        assert_eq!(out.exit_status, Some(3));
        // The same connection runs the next command too.
        let out = conn
            .exec("id -un", &[], Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "root\n");
        assert_eq!(out.exit_status, Some(0));
        conn.disconnect("done").await;
    });
    // The scan went no further than the key exchange: sshd saw one login, the pinned one.
    let log = w.sshd.log();
    assert_eq!(
        log.matches("Accepted publickey for root").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_refused_host_key_stops_before_any_login() {
    let Some(w) = world() else { return };
    let err = block_on(Connection::open(
        &target(&w.sshd),
        &root_with_key(&w),
        Arc::new(Pin1("SHA256:somethingelse".into())),
    ))
    .err()
    .expect("refused");
    match &err {
        ConnectError::HostKeyRefused(message) => {
            assert!(
                message.starts_with("not the pinned key: SHA256:"),
                "{message}"
            )
        }
        other => panic!("expected the policy's refusal, got {other:?}"),
    }
    let log = w.sshd.log();
    assert!(!log.contains("Accepted"), "{log}");
}

#[test]
fn a_wrong_password_is_the_credential_refused() {
    let Some(w) = world() else { return };
    let fp = w.sshd.host_key_fingerprint();
    let login = Login {
        account: "root".into(),
        secret: Secret::Password(Zeroizing::new(random_hex(16))),
    };
    let err = block_on(Connection::open(
        &target(&w.sshd),
        &login,
        Arc::new(Pin1(fp)),
    ))
    .err()
    .expect("refused");
    assert_eq!(
        err.to_string(),
        "db01 refused the vaulted credential for root; ask an admin to check it"
    );
    let err = block_on(Connection::open(
        &Target {
            name: "gone".into(),
            host: "127.0.0.1".into(),
            port: free_port(),
        },
        &login,
        Arc::new(Pin1(String::new())),
    ))
    .err()
    .expect("nothing listens there");
    assert!(
        matches!(err, ConnectError::Unreachable { .. }),
        "{err:?}: {err}"
    );
}

/// A command that asks twice on its terminal with echo off, as `passwd` does: each answer goes
/// once, after its prompt, and none shows in the output.
#[test]
fn exec_answers_prompts_in_order() {
    let Some(w) = world() else { return };
    let fp = w.sshd.host_key_fingerprint();
    let (old, new) = (random_hex(12), random_hex(12));
    block_on(async {
        let conn = Connection::open(&target(&w.sshd), &root_with_key(&w), Arc::new(Pin1(fp)))
            .await
            .expect("login");
        let script = format!(
            "stty -echo; printf 'Current password: '; read a; printf '\\nNew password: '; read b; \
             stty echo; [ \"$a\" = {old} ] && [ \"$b\" = {new} ] && echo answers-match; exit 7"
        );
        let prompts = [
            Prompt {
                expect: "Current password:".into(),
                answer: Zeroizing::new(old.clone()),
            },
            Prompt {
                expect: "New password:".into(),
                answer: Zeroizing::new(new.clone()),
            },
        ];
        let out = conn
            .exec(&script, &prompts, Duration::from_secs(30))
            .await
            .expect("exec");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("answers-match"), "{text:?}");
        assert_eq!(out.exit_status, Some(7), "{text:?}");
        let (shown_old, shown_new) = (
            text.matches(old.as_str()).count(),
            text.matches(new.as_str()).count(),
        );
        // The script's text (with the expected values) is not echoed; only what the terminal
        // printed is here, and with echo off the answers are not.
        assert_eq!((shown_old, shown_new), (0, 0), "{text:?}");
        conn.disconnect("done").await;
    });
}
