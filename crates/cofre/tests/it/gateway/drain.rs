//! Draining shutdown: SIGTERM stops the listeners, tells every live session why, waits up to
//! `[server] drain_seconds` for them to end, ends the rest (recording flushed, `session.end`
//! audited) and exits 0. Before this, a SIGTERM was a crash for live sessions.

use super::*;

const DRAIN_SECONDS: u64 = 8;
const NOTICE: &str = "cofre: the server is shutting down";
const FORCED: &str = "ended: the server shut down";

fn wait_for_stderr(client: &mut Running, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !client.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the client's stderr within {timeout:?}: {}",
            client.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two shells through the gateway at SIGTERM: one leaves when told, one keeps printing a line
/// every 100 ms and is ended when the drain time is over. Both users see why; both recordings
/// end with their `end:` line and hold every line the user saw; both ends are in the audit trail
/// (none is left for the next start's "gateway restarted" sweep), and the server exits 0.
#[test]
fn sigterm_drains_live_sessions() {
    let config = format!("[server]\ndrain_seconds = {DRAIN_SECONDS}\n");
    let Some(mut gw) = setup_with_config(Backend::Sqlite, Some("allow"), Some(&config)) else {
        return;
    };
    let mut busy = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (busy)");
    busy.send("for i in $(seq 1 900); do echo line-$i; sleep 0.1; done; exit\n");
    busy.wait_for_stdout("line-5\r\n", Duration::from_secs(60));
    let busy_id = gw.newest_session("shell")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut polite = Running::spawn(
        gw.ssh("alice:root@db01", &["-tt"], None),
        "ssh -tt (polite)",
    );
    // The typed line echoes `polite-$((1+1))`; only the shell's answer has the digit.
    polite.send("echo polite-$((1+1))\n");
    polite.wait_for_stdout("polite-2\r\n", Duration::from_secs(60));
    let polite_id = gw.newest_session("shell")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(busy_id, polite_id);

    gw.server.sigterm();
    wait_for_stderr(&mut polite, NOTICE, Duration::from_secs(30));
    wait_for_stderr(&mut busy, NOTICE, Duration::from_secs(30));
    assert!(
        gw.server.is_running(),
        "the server waits for its sessions after SIGTERM"
    );
    // The listeners close at once: no new connection while draining.
    for (port, what) in [(gw.server.ssh_port, "gateway"), (gw.server.port, "HTTPS")] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the {what} listener still accepts during the drain"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    polite.send("exit\n");
    let polite_status = polite.wait(Duration::from_secs(30));
    assert_eq!(
        polite_status.and_then(|s| s.code()),
        Some(0),
        "the shell that left when told ends as usual: {}",
        polite.describe()
    );
    assert!(
        gw.server.is_running(),
        "the busy session still holds the drain open"
    );
    let exit = gw
        .server
        .wait_exit(Duration::from_secs(DRAIN_SECONDS + 30))
        .expect("the server exits after the drain time");
    assert!(exit.success(), "a drained shutdown exits 0: {exit}");
    let busy_status = busy.wait(Duration::from_secs(30));
    assert!(busy_status.is_some(), "{}", busy.describe());
    wait_for_stderr(
        &mut busy,
        &format!("*** cofre: session {FORCED} ***"),
        Duration::from_secs(5),
    );
    let last_seen = line_numbers(&busy.stdout(), "line-")
        .into_iter()
        .max()
        .expect("lines");
    assert!(
        last_seen < 900,
        "the session was ended mid-loop: {}",
        busy.describe()
    );

    gw.server = gw.inst.start();
    gw.admin = gw.admin.at_with_token(&gw.server);
    let sessions = gw.sessions();
    let listed = |id: &str| {
        sessions
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("session {id} is listed: {sessions:?}"))
    };
    let (busy_row, polite_row) = (listed(&busy_id), listed(&polite_id));
    assert_eq!(busy_row["live"], false, "{busy_row}");
    assert_eq!(busy_row["end_reason"], FORCED, "{busy_row}");
    assert_eq!(polite_row["end_reason"], "ended", "{polite_row}");

    let (file, cast) = gw.export(&busy_id);
    asciinema_cat(&file);
    assert_eq!(
        cast.markers().last().map(String::as_str),
        Some(format!("end: {FORCED}").as_str()),
        "the recording's last line says why it ended: {:?}",
        cast.markers()
    );
    let recorded = line_numbers(&cast.text("o"), "line-");
    for n in 1..=last_seen {
        assert!(
            recorded.contains(&n),
            "line-{n} is missing from the recording (the user saw up to line-{last_seen})"
        );
    }
    let (_, polite_cast) = gw.export(&polite_id);
    assert!(
        polite_cast.text("o").contains("polite-2"),
        "{:?}",
        polite_cast.markers()
    );
    assert_eq!(
        polite_cast.markers().last().map(String::as_str),
        Some("end: ended")
    );

    let audit = gw.audit();
    let object = |id: &str| format!("session:{id}");
    let end = find_entry(&audit, "session.end", |e| e["object"] == object(&busy_id));
    assert_eq!(end["details"]["reason"], FORCED, "{end}");
    let end = find_entry(&audit, "session.end", |e| e["object"] == object(&polite_id));
    assert_eq!(end["details"]["reason"], "ended", "{end}");
    assert!(
        !audit
            .iter()
            .any(|e| e["action"] == "session.end" && e["details"]["reason"] == "gateway restarted"),
        "no session was left open for the next start to close"
    );
    gw.admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}
