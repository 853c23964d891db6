//! SIEM forwarding through the services, with a clock the test moves: a destination that is
//! down raises one alert once `[siem] alert_after_minutes` have passed, and delivery resumes from
//! its position when it listens again (a minimal octet-counting receiver here; the real rsyslog
//! is in the cofre crate's tests).

use cofre_app::config::ServerConfig;
use cofre_app::services::{App, Principal};
use cofre_core::role::{Mode, Role};
use cofre_proto::NewSiemRequest;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const START: i64 = 1_795_428_000;

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn actions(app: &App, who: &Principal) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .audit()
            .list_audit(who, Some(500), cursor.as_deref())
            .await
            .unwrap();
        out.extend(page.items.into_iter().map(|e| e.action));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Reads octet-counted frames from each connection until the sender closes, then closes: what a
/// syslog receiver does. Keeps every message.
async fn receiver(listener: tokio::net::TcpListener, got: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let got = got.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            let mut rest = &buf[..];
            while let Some(sp) = rest.iter().position(|b| *b == b' ') {
                let n: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
                let msg = &rest[sp + 1..sp + 1 + n];
                got.lock()
                    .unwrap()
                    .push(String::from_utf8(msg.to_vec()).unwrap());
                rest = &rest[sp + 1 + n..];
            }
        });
    }
}

#[tokio::test]
async fn a_destination_down_too_long_is_alerted_once_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    config.siem.alert_after_minutes = 15;
    config.siem.hostname = Some("cofre-test".into());
    let (first, _) = cofre_app::initialise(&config, cofre_app::SealChoice::KeyFile)
        .await
        .unwrap();
    let now = Arc::new(AtomicI64::new(START));
    let clock_now = now.clone();
    let clock: cofre_app::Clock = Arc::new(move || {
        time::OffsetDateTime::from_unix_timestamp(clock_now.load(Ordering::SeqCst)).unwrap()
    });
    let app = Arc::new(App::new(
        first.store.clone(),
        config,
        first.keyring.clone(),
        clock,
    ));
    app.unseal_from_key_file().unwrap();
    let user = app.store.user_by_name("admin").await.unwrap().unwrap();
    let admin = Principal::for_tests(user.id, "admin", Role::Admin, &[], Mode::OnPrem);
    cofre_app::services::siem::spawn_forwarder(&app);

    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    app.audit()
        .add_siem_destination(
            &admin,
            &NewSiemRequest {
                name: "corp".into(),
                syslog: format!("tcp://127.0.0.1:{port}"),
                format: "rfc5424".into(),
                ca_cert: None,
            },
        )
        .await
        .unwrap();
    wait_until("the failure in the status", || async {
        let s = app.audit().get_siem_status(&admin).await.unwrap();
        s.destinations[0].failing_since.is_some() && s.destinations[0].last_error.is_some()
    })
    .await;
    let s = app.audit().get_siem_status(&admin).await.unwrap();
    assert_eq!(s.destinations[0].last_delivered_seq, 0);
    assert!(s.destinations[0].lag > 0);
    assert!(
        !actions(&app, &admin)
            .await
            .contains(&"siem.down".to_owned()),
        "no alert before alert_after_minutes"
    );

    // 14 minutes: still no alert; 16: one.
    now.store(START + 14 * 60, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!actions(&app, &admin)
        .await
        .contains(&"siem.down".to_owned()));
    now.store(START + 16 * 60, Ordering::SeqCst);
    wait_until("the siem.down alert", || async {
        actions(&app, &admin)
            .await
            .contains(&"siem.down".to_owned())
    })
    .await;
    now.store(START + 30 * 60, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let downs = actions(&app, &admin)
        .await
        .iter()
        .filter(|a| *a == "siem.down")
        .count();
    assert_eq!(downs, 1, "one alert per outage");

    // The receiver comes up: everything arrives, from the first entry, the alert included.
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(receiver(listener, got.clone()));
    wait_until("delivery up to the head", || async {
        let s = app.audit().get_siem_status(&admin).await.unwrap();
        s.destinations[0].lag == 0 && s.destinations[0].failing_since.is_none()
    })
    .await;
    let head = app
        .audit()
        .get_siem_status(&admin)
        .await
        .unwrap()
        .audit_head_seq;
    let msgs = got.lock().unwrap().clone();
    let seqs: Vec<i64> = msgs
        .iter()
        .map(|m| {
            let at = m.find(" seq=\"").unwrap() + 6;
            m[at..at + m[at..].find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "in order, once each");
    assert!(msgs.iter().all(|m| m.contains(" cofre-test cofre - ")));
    assert!(msgs.iter().any(|m| m.contains(" siem.down [cofre@32473 ")));
}
