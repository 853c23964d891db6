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
        let alice = app
            .sessions()
            .login_by_key("alice", &fingerprint, "127.0.0.1")
            .await
            .expect("alice logs in with her key");
        let login = cofre_app::services::sessions::parse_gateway_login("alice+root+db01", 22)
            .expect("login name");
        let header = serde_json::json!({
            "version": 2, "width": 80, "height": 24, "timestamp": 0,
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
        let session = Session::start(&app, request).await.expect("session starts");
        let id = session.id.clone();
        let (to_session, input) = mpsc::channel(16);
        let (output, mut from_session) = mpsc::channel(64);
        let pty = Pty {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        };
        let run = tokio::spawn(session.run_terminal(pty, input, output));
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
