//! Recordings keep every byte and prove they are whole: the raw export of binary output, of text
//! mixed with bytes that are not UTF-8, and of what was typed is exactly what went through the
//! gateway; `recording verify` finds a frame removed, swapped, altered or cut off, at its place.

use super::*;
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Gw {
    /// `cofre recording export ID --format raw [--stream S] -o FILE`, read back.
    fn raw_export(&self, id: &str, stream: &str) -> Vec<u8> {
        let file = self.inst.path().join(format!("{id}.{stream}.raw"));
        self.admin.ok(&[
            "recording",
            "export",
            id,
            "--format",
            "raw",
            "--stream",
            stream,
            "-o",
            file.to_str().expect("path"),
        ]);
        std::fs::read(&file).expect("the raw export")
    }

    /// `cofre --output json recording verify ID`: its exit code and report.
    fn verify_recording(&self, id: &str) -> (Option<i32>, Value) {
        let out = self
            .admin
            .run(&["--output", "json", "recording", "verify", id], None);
        let report: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("recording verify prints JSON ({e}): {out:?}"));
        (out.code, report)
    }

    /// The recording file of session `id` (under the data dir's recordings/DAY/).
    fn recording_file(&self, id: &str) -> PathBuf {
        let root = self.inst.data_dir.join("recordings");
        std::fs::read_dir(&root)
            .expect("recordings dir")
            .filter_map(|d| d.ok())
            .map(|d| d.path().join(format!("{id}.rec")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no recording file for {id} under {}", root.display()))
    }

    /// `ssh alice:root@db01 COMMAND`: the exact bytes the client received on stdout.
    fn exec_bytes(&self, command: &str) -> Vec<u8> {
        let out = self
            .ssh("alice:root@db01", &[], Some(command))
            .stdin(Stdio::null())
            .output()
            .expect("run ssh");
        assert!(
            out.status.success(),
            "ssh {command}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Text with what terminals really get mixed in: bytes that are not UTF-8, a character cut at
/// the end, escapes, NUL, CR.
fn mixed_text() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..2000u32 {
        out.extend_from_slice(format!("line {i}: café ünïcödé €\r\n").as_bytes());
        match i % 5 {
            0 => out.extend_from_slice(b"\xff\xfe invalid \xc3\x28 bytes\n"),
            1 => out.extend_from_slice(b"\x1b[1;31mred\x1b[0m \x00 nul\n"),
            2 => out.extend_from_slice(b"cut \xe2\x82"),
            3 => out.extend_from_slice(b"\xf0\x9f\x98\x80 emoji \xed\xa0\x80 surrogate\n"),
            _ => out.extend_from_slice(b"\"quotes\" \\ backslash \t tab\n"),
        }
    }
    out.extend_from_slice(b"ends inside a character \xe2\x82");
    out
}

/// 20 MiB of /dev/urandom and a file of mixed text and invalid UTF-8, `cat` through the gateway:
/// the raw export is byte-identical to what the client received, the asciicast export still
/// passes `asciinema cat`, and both recordings verify.
#[test]
fn raw_export_is_exactly_what_the_client_received() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let payload = gw.inst.path().join("payload");
    std::fs::create_dir_all(&payload).expect("payload dir");
    let random = payload.join("random.bin");
    run_command(
        {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("head -c 20M /dev/urandom > {}", random.display()));
            c
        },
        None,
        "head -c 20M /dev/urandom",
    )
    .assert_ok();
    let mixed = payload.join("mixed.txt");
    std::fs::write(&mixed, mixed_text()).expect("mixed file");

    for file in [&random, &mixed] {
        let sent = std::fs::read(file).expect("payload");
        let received = gw.exec_bytes(&format!("cat {}", file.display()));
        assert_eq!(
            sha256(&received),
            sha256(&sent),
            "the client received {} exactly",
            file.display()
        );
        let id = gw.newest_session("exec")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let raw = gw.raw_export(&id, "output");
        assert_eq!(
            (raw.len(), sha256(&raw)),
            (received.len(), sha256(&received)),
            "the raw export of {} is what the client received",
            file.display()
        );
        let (cast_file, cast) = gw.export(&id);
        asciinema_cat(&cast_file);
        assert!(
            cast.markers()
                .contains(&format!("exec cat {}", file.display())),
            "{:?}",
            cast.markers()
        );
        if file == &mixed {
            assert_eq!(
                cast.text("o"),
                String::from_utf8_lossy(&sent),
                "the asciicast view repairs the text as a terminal would show it"
            );
        }
        let (code, report) = gw.verify_recording(&id);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["status"], "intact", "{report}");
        assert_eq!(report["output_bytes"], sent.len() as u64, "{report}");
        assert_eq!(report["frames"], report["expected_frames"], "{report}");
        assert_eq!(report["hash"], report["expected_hash"], "{report}");
    }
    let audit = gw.audit();
    find_entry(&audit, "recording.view", |e| {
        e["details"]["format"] == "raw" && e["details"]["stream"] == "output"
    });
    find_entry(&audit, "session.end", |e| {
        e["details"]["recording_frames"]
            .as_u64()
            .is_some_and(|n| n > 2)
            && e["details"]["recording_hash"]
                .as_str()
                .is_some_and(|h| h.len() == 64)
    });
    find_entry(&audit, "recording.verify", |e| {
        e["details"]["status"] == "intact"
    });
}

/// What the user typed in a pty shell is in the raw input export, exactly and in order.
#[test]
fn typed_input_is_exact_in_the_raw_input_export() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    let typed = [
        "echo one-$((1+1))\n",
        "echo 'çà ü €' | wc -c; echo two-$((2+1))\n",
        "printf 'x\\033[0m' >/dev/null; echo three-$((3+1))\n",
        "exit\n",
    ];
    let answers = ["one-2", "two-3", "three-4"];
    for (i, text) in typed.iter().enumerate() {
        ssh.send(text);
        if let Some(a) = answers.get(i) {
            ssh.wait_for_stdout(a, Duration::from_secs(30));
        }
    }
    assert!(
        ssh.wait(Duration::from_secs(30)).is_some(),
        "{}",
        ssh.describe()
    );
    let id = gw.newest_session("shell")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let input = gw.raw_export(&id, "input");
    assert_eq!(
        String::from_utf8_lossy(&input),
        typed.concat(),
        "the raw input export is what was typed"
    );
    assert_eq!(input, typed.concat().into_bytes());
    let output = gw.raw_export(&id, "output");
    assert!(
        String::from_utf8_lossy(&output).contains("three-4"),
        "the raw output export holds what the user saw"
    );
    // Bad combinations are refused naming the option.
    gw.admin
        .fail(&["recording", "export", &id, "--stream", "input"])
        .assert_stderr_contains("--stream");
    // (clap's own usage error: exit status 2)
    let bad = gw
        .admin
        .run(&["recording", "export", &id, "--format", "text"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    bad.assert_stderr_contains("--format");
}

/// `[u32 length][sealed]` frames after the magic line: each frame's offset and length.
fn frames_of(bytes: &[u8]) -> Vec<(usize, usize)> {
    let magic = b"COFRE-RECORDING-2\n";
    assert!(bytes.starts_with(magic), "a format-2 recording");
    let mut at = magic.len();
    let mut frames = Vec::new();
    while at + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        frames.push((at, 4 + len));
        at += 4 + len;
    }
    assert_eq!(at, bytes.len(), "whole frames");
    frames
}

/// Removing a middle frame, swapping two, flipping a byte, cutting the file inside a frame or at
/// a frame boundary: each is reported by `recording verify` as tampered, at the frame where it
/// is; the untouched recording verifies as intact.
#[test]
fn tampered_recordings_are_reported_at_their_frame() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    // Incompressible output of several frames' worth (a frame holds at most about 1 MiB).
    let received = gw.exec_bytes("head -c 6M /dev/urandom");
    assert_eq!(received.len(), 6 << 20);
    let id = gw.newest_session("exec")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let file = gw.recording_file(&id);
    let original = std::fs::read(&file).expect("recording");
    let frames = frames_of(&original);
    assert!(frames.len() >= 6, "several frames: {}", frames.len());
    let (code, report) = gw.verify_recording(&id);
    assert_eq!(
        (code, &report["status"]),
        (Some(0), &Value::from("intact")),
        "{report}"
    );
    assert_eq!(report["frames"], frames.len() as u64, "{report}");

    let last = frames.len() - 1;
    let (f2, f3, f4) = (frames[2], frames[3], frames[4]);
    type Tamper = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Tamper, u64)> = vec![
        (
            "frame 2 removed",
            Box::new(move |b| {
                b.drain(f2.0..f2.0 + f2.1);
            }),
            2,
        ),
        (
            "frames 3 and 4 swapped",
            Box::new(move |b| {
                let three = b[f3.0..f3.0 + f3.1].to_vec();
                let four = b[f4.0..f4.0 + f4.1].to_vec();
                b.splice(f3.0..f4.0 + f4.1, [four, three].concat());
            }),
            3,
        ),
        (
            "a byte of frame 3 flipped",
            Box::new(move |b| b[f3.0 + f3.1 / 2] ^= 0x20),
            3,
        ),
        (
            "cut inside frame 4",
            Box::new(move |b| b.truncate(f4.0 + 100)),
            4,
        ),
        (
            "the last frame cut off whole",
            Box::new(move |b| b.truncate(frames[last].0)),
            last as u64,
        ),
    ];
    for (what, tamper, at) in cases {
        let mut bytes = original.clone();
        tamper(&mut bytes);
        std::fs::write(&file, &bytes).expect("tamper");
        let (code, report) = gw.verify_recording(&id);
        assert_eq!(code, Some(1), "{what}: verify fails: {report}");
        assert_eq!(report["status"], "tampered", "{what}: {report}");
        assert_eq!(
            report["problem_frame"], at,
            "{what}: reported at its frame: {report}"
        );
        assert!(
            report["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("frame {at}"))),
            "{what}: the message names the frame: {report}"
        );
    }
    // `audit verify --recordings` walks every session: a second session's recording, cut
    // inside a frame, is named; the intact ones are counted.
    let other_received = gw.exec_bytes("head -c 3M /dev/urandom");
    assert_eq!(other_received.len(), 3 << 20);
    let other = gw.newest_session("exec")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other_file = gw.recording_file(&other);
    let other_bytes = std::fs::read(&other_file).expect("recording");
    std::fs::write(&other_file, &other_bytes[..other_bytes.len() - 50]).expect("tamper");
    let out = gw.admin.run(
        &["--output", "json", "audit", "verify", "--recordings"],
        None,
    );
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("audit verify prints JSON ({e}): {out:?}"));
    assert_eq!(out.code, Some(1), "{report}");
    assert_eq!(
        report["intact"], true,
        "the chain itself is intact: {report}"
    );
    let checked = &report["recordings"];
    let problems = checked["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{checked}");
    assert!(
        problems.iter().any(|p| p["session"] == other.as_str()
            && p["status"] == "tampered"
            && p["message"].as_str().is_some_and(|m| m.contains("frame"))),
        "{checked}"
    );
    assert!(
        problems.iter().any(|p| p["session"] == id.as_str()),
        "{checked}"
    );
    assert!(checked["checked"].as_u64().unwrap() >= 2, "{checked}");

    std::fs::write(&file, &original).expect("restore");
    std::fs::write(&other_file, &other_bytes).expect("restore");
    let out = gw.admin.ok(&["recording", "verify", &id]);
    out.assert_stdout_contains("intact");
    gw.admin
        .ok(&["audit", "verify", "--recordings"])
        .assert_stdout_contains(" 0 not intact");
    let audit = gw.audit();
    find_entry(&audit, "recording.verify", |e| {
        e["outcome"] == "failure" && e["details"]["status"] == "tampered"
    });
    find_entry(&audit, "recording.verify_all", |e| {
        e["outcome"] == "failure" && e["details"]["problems"] == 2
    });
}
