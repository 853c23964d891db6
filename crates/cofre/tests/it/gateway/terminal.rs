//! cofre-app's session layer driven by a terminal front end through its channel pair, as a
//! WebSocket terminal will drive it: the same policy, pin, recording and audit as an SSH session,
//! with no SSH between the user and Cofre.

use super::*;
use cofre_app::session::terminal::{Input, Output, Pty};
use cofre_app::session::{self, Session};
use tokio::sync::mpsc;

#[test]
fn a_terminal_front_end_drives_a_recorded_session() {
    let Some(mut gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    // The world is made through the real server; the session runs in this process on its data.
    gw.server.stop();
    let fingerprint = ssh_fingerprint(&gw.keys.join("alice_key.pub"));
    let config = cofre_app::config::ServerConfig {
        data_dir: gw.inst.data_dir.clone(),
        ..Default::default()
    };
    let (id, outputs) = block_on(async {
        let (app, _) = cofre_app::initialise(&config, cofre_app::SealChoice::KeyFile)
            .await
            .expect("open the instance");
        app.unseal_from_key_file().expect("unseal");
        let (id, to_session, mut from_session, run) =
            alice_terminal(&app, &fingerprint, 80, 24).await;
        to_session
            .send(Input::Resize {
                cols: 100,
                rows: 30,
            })
            .await
            .expect("resize");
        // The typed line echoes `term-$((40+2))`; only the shell's answer has the number.
        to_session
            .send(Input::Data(b"echo term-$((40+2)); exit 5\n".to_vec()))
            .await
            .expect("type");
        let mut outputs = Vec::new();
        while let Some(o) = tokio::time::timeout(Duration::from_secs(60), from_session.recv())
            .await
            .expect("the session answers within a minute")
        {
            let last = matches!(o, Output::Ended { .. });
            outputs.push(o);
            if last {
                break;
            }
        }
        run.await.expect("the relay ends");
        app.store.close().await;
        (id, outputs)
    });
    let text: String = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Data(d) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        })
        .collect();
    assert!(text.contains("term-42"), "{text:?}");
    assert_eq!(
        outputs.last(),
        Some(&Output::Ended {
            exit_status: Some(5),
            reason: "ended".into()
        }),
        "{outputs:?}"
    );

    // Recorded and audited as an SSH session is: read back through the restarted server.
    gw.server = gw.inst.start();
    gw.admin = gw.admin.at_with_token(&gw.server);
    let (file, cast) = gw.export(&id);
    asciinema_cat(&file);
    assert!(cast.text("o").contains("term-42"), "{:?}", cast.text("o"));
    assert!(cast.text("i").contains("echo term-"), "input is recorded");
    let markers = cast.markers();
    assert!(markers.contains(&"exit status 5".to_owned()), "{markers:?}");
    assert_eq!(markers.last().map(String::as_str), Some("end: ended"));
    let audit = gw.audit();
    find_entry(&audit, "session.start", |e| {
        e["details"]["session"] == id.as_str()
    });
    let end = find_entry(&audit, "session.end", |e| {
        e["object"] == format!("session:{id}").as_str()
    });
    assert_eq!(end["details"]["reason"], "ended", "{end}");
    let row = gw
        .sessions()
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .expect("listed");
    assert_eq!(row["live"], false, "{row}");
}

/// Reads the session's outputs until one passes `until`; returns the text seen and the notices.
async fn read_until(
    from_session: &mut mpsc::Receiver<Output>,
    text: &mut String,
    notices: &mut Vec<String>,
    until: impl Fn(&str, &[String]) -> bool,
) {
    while !until(text, notices) {
        match tokio::time::timeout(Duration::from_secs(30), from_session.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing more within 30 s; seen {text:?} {notices:?}"))
        {
            Some(Output::Data(d)) => text.push_str(&String::from_utf8_lossy(&d)),
            Some(Output::Notice(n)) => notices.push(n),
            other => panic!("the session ended early: {other:?}; seen {text:?} {notices:?}"),
        }
    }
}

/// The web terminal's path (`Session::run_terminal`) under live control, through the services
/// the console calls: an admin watches it (`watch_session`), blocks its input (the terminal gets
/// the notice, typed input is dropped), unblocks it, and the watcher sees the output.
#[test]
fn a_terminal_session_is_watched_and_its_input_blocked() {
    let Some(mut gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let admin_token = gw.admin.token();
    gw.server.stop();
    let fingerprint = ssh_fingerprint(&gw.keys.join("alice_key.pub"));
    let config = cofre_app::config::ServerConfig {
        data_dir: gw.inst.data_dir.clone(),
        ..Default::default()
    };
    block_on(async {
        let (app, _) = cofre_app::initialise(&config, cofre_app::SealChoice::KeyFile)
            .await
            .expect("open the instance");
        app.unseal_from_key_file().expect("unseal");
        let admin = app
            .accounts()
            .authenticate(&admin_token)
            .await
            .expect("the admin's token");
        let (id, to_session, mut from_session, run) =
            alice_terminal(&app, &fingerprint, 90, 20).await;
        let mut watch = app
            .sessions()
            .watch_session(&admin, &id)
            .await
            .expect("the admin watches");
        assert_eq!((watch.start.cols, watch.start.rows), (90, 20));
        assert!(watch.start.moderator && !watch.start.moderated);
        let (mut text, mut notices) = (String::new(), Vec::new());
        let typed = |line: &str| Input::Data(line.as_bytes().to_vec());
        to_session
            .send(typed("echo one-$((0+1))\n"))
            .await
            .expect("type");
        read_until(&mut from_session, &mut text, &mut notices, |t, _| {
            t.contains("one-1")
        })
        .await;

        app.sessions()
            .lock_session(&admin, &id, "looking")
            .await
            .expect("lock");
        read_until(&mut from_session, &mut text, &mut notices, |_, n| {
            n.iter().any(|n| n.contains("blocked by admin: looking"))
        })
        .await;
        to_session
            .send(typed("echo dropped-$((1+1))\n"))
            .await
            .expect("type");
        app.sessions()
            .unlock_session(&admin, &id, "done looking")
            .await
            .expect("unlock");
        read_until(&mut from_session, &mut text, &mut notices, |_, n| {
            n.iter().any(|n| n.contains("unblocked by admin"))
        })
        .await;
        to_session
            .send(typed("echo two-$((1+1))\n"))
            .await
            .expect("type");
        read_until(&mut from_session, &mut text, &mut notices, |t, _| {
            t.contains("two-2")
        })
        .await;
        assert!(
            !text.contains("dropped"),
            "blocked input never ran: {text:?}"
        );

        let mut watched = String::new();
        while !watched.contains("two-2") {
            match tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("the watch follows")
            {
                cofre_app::services::live::WatchEvent::Output(d) => {
                    watched.push_str(&String::from_utf8_lossy(&d));
                }
                other => panic!("{other:?}: {watched:?}"),
            }
        }
        assert!(watched.contains("one-1"), "{watched:?}");
        assert!(!watched.contains("dropped"), "{watched:?}");

        to_session.send(Input::Close).await.expect("close");
        while let Some(o) = tokio::time::timeout(Duration::from_secs(30), from_session.recv())
            .await
            .expect("the session ends")
        {
            if matches!(o, Output::Ended { .. }) {
                break;
            }
        }
        run.await.expect("the relay ends");
        // What the session printed last may still be queued for the watcher; then the end.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if watch.next().await == cofre_app::services::live::WatchEvent::Ended {
                    break;
                }
            }
        });
        ended.await.expect("the watch ends with the session");
        drop(watch);
        app.store.close().await;
    });
}

/// alice's shell on root@db01 started in this process, as the web terminal starts one, and driven
/// through its channel pair: its id, the input and output ends, and the task running it.
async fn alice_terminal(
    app: &std::sync::Arc<cofre_app::services::App>,
    fingerprint: &str,
    cols: u32,
    rows: u32,
) -> (
    String,
    mpsc::Sender<Input>,
    mpsc::Receiver<Output>,
    tokio::task::JoinHandle<()>,
) {
    let alice = app
        .sessions()
        .login_by_key("alice", fingerprint, "127.0.0.1")
        .await
        .expect("alice logs in with her key");
    let login = cofre_app::services::sessions::parse_gateway_login("alice+root+db01", 22)
        .expect("login name");
    let header = serde_json::json!({
        "version": 2, "width": cols, "height": rows, "timestamp": 0,
        "title": "alice:root@db01", "env": { "TERM": "xterm", "SHELL": null },
    });
    let request = session::Request {
        principal: &alice,
        login: &login,
        kind: "shell",
        source: "127.0.0.1",
        reason: None,
        header,
    };
    let session = Session::start(app, request).await.expect("session starts");
    let id = session.id.clone();
    let (to_session, input) = mpsc::channel(16);
    let (output, from_session) = mpsc::channel(64);
    let pty = Pty {
        term: "xterm".into(),
        cols,
        rows,
    };
    let run = tokio::spawn(session.run_terminal(pty, input, output));
    (id, to_session, from_session, run)
}
