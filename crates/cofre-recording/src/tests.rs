#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::legacy::old_writer::LegacyWriter;
use crate::reader::frame_offsets;
use crate::recorder::Pool;
use crate::*;
use cofre_crypto::datakey::DataKey;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn header() -> serde_json::Value {
    serde_json::json!({"version": 2, "width": 80, "height": 24})
}

fn exported(path: &Path, key: &DataKey, id: &str, what: Export) -> Vec<u8> {
    let mut out = Vec::new();
    export(path, key, id, what, |b| {
        out.extend_from_slice(&b);
        true
    })
    .unwrap();
    out
}

/// Output that is not text, cut at awkward places, and a long run across many frames.
fn binary_chunks() -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut chunks = vec![b"caf\xc3".to_vec(), b"\xa9 \xff\xfe\n".to_vec()];
    for _ in 0..200 {
        let len = (next() % 40_000) as usize;
        chunks.push((0..len).map(|_| next() as u8).collect());
    }
    chunks
}

#[test]
fn raw_export_is_every_byte_of_each_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rec");
    let key = DataKey::generate();
    let mut w = Writer::create(&path, key.clone(), "s1", &header()).unwrap();
    let (mut sent, mut typed) = (Vec::new(), Vec::new());
    for (i, c) in binary_chunks().iter().enumerate() {
        if i % 5 == 0 {
            w.push(Kind::Input, c);
            typed.extend_from_slice(c);
        } else {
            w.push(Kind::Output, c);
            sent.extend_from_slice(c);
        }
        if i % 17 == 0 {
            w.flush().unwrap();
        }
    }
    w.push(Kind::Exec, b"ls \xff");
    let summary = w.end("ended").unwrap();
    let out = exported(&path, &key, "s1", Export::Raw(Stream::Output));
    assert_eq!(out, sent);
    let input = exported(&path, &key, "s1", Export::Raw(Stream::Input));
    assert_eq!(input, typed);

    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, None);
    assert_eq!(scan.frames, summary.frames);
    assert_eq!(scan.hash.as_deref(), Some(summary.hash.as_str()));
    assert_eq!(scan.ended.as_deref(), Some("ended"));
    assert_eq!(scan.output_bytes, sent.len() as u64);
}

#[test]
fn asciicast_export_repairs_text_and_keeps_markers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rec");
    let key = DataKey::generate();
    let mut w = Writer::create(&path, key.clone(), "s1", &header()).unwrap();
    w.push(Kind::Exec, b"echo hi");
    w.push(Kind::Output, b"caf\xc3");
    w.flush().unwrap();
    w.push(Kind::Output, b"\xa9 \"q\" \xff\n");
    w.resize(100, 30);
    w.push(Kind::Sftp, b"write /tmp/x");
    w.push(Kind::Marker, b"exit status 0");
    w.end("ended").unwrap();
    let cast = String::from_utf8(exported(&path, &key, "s1", Export::Asciicast)).unwrap();
    let lines: Vec<&str> = cast.lines().collect();
    assert_eq!(lines[0], header().to_string());
    let events: Vec<(f64, String, String)> = lines[1..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<(&str, &str)> = events
        .iter()
        .map(|(_, c, d)| (c.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("m", "exec echo hi"),
            ("o", "caf"),
            ("o", "é \"q\" \u{fffd}\n"),
            ("r", "100x30"),
            ("m", "write /tmp/x"),
            ("m", "exit status 0"),
            ("m", "end: ended"),
        ]
    );
}

/// A recording of eight frames, ended, with its summary.
fn eight_frames(dir: &Path) -> (std::path::PathBuf, DataKey, Summary) {
    let path = dir.join("r.rec");
    let key = DataKey::generate();
    let mut w = Writer::create(&path, key.clone(), "s1", &header()).unwrap();
    for i in 0..6 {
        w.push(Kind::Output, format!("frame {i}\r\n").as_bytes());
        w.flush().unwrap();
    }
    let summary = w.end("ended").unwrap();
    assert_eq!(summary.frames, 8);
    (path, key, summary)
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>, &[(u64, u64)])) {
    let frames = frame_offsets(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes, &frames);
    std::fs::write(path, bytes).unwrap();
}

fn range(frame: (u64, u64)) -> std::ops::Range<usize> {
    frame.0 as usize..(frame.0 + frame.1) as usize
}

#[test]
fn tampering_is_found_at_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    // Removed: frame 3 goes; what is now at 3 does not authenticate there.
    let (path, key, _) = eight_frames(dir.path());
    rewrite(&path, |b, f| {
        b.drain(range(f[3]));
    });
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, Some(Problem::NotAuthentic { frame: 3 }));
    assert_eq!(scan.frames, 3);
    std::fs::remove_file(&path).unwrap();

    // Swapped: 4 and 5.
    let (path, key, _) = eight_frames(dir.path());
    rewrite(&path, |b, f| {
        let four = b[range(f[4])].to_vec();
        let five = b[range(f[5])].to_vec();
        let mut swapped = five;
        swapped.extend_from_slice(&four);
        b.splice(f[4].0 as usize..(f[5].0 + f[5].1) as usize, swapped);
    });
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, Some(Problem::NotAuthentic { frame: 4 }));
    std::fs::remove_file(&path).unwrap();

    // One bit flipped inside frame 2.
    let (path, key, _) = eight_frames(dir.path());
    rewrite(&path, |b, f| b[(f[2].0 + 20) as usize] ^= 1);
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, Some(Problem::NotAuthentic { frame: 2 }));
    // The export gives what came before and then fails at the frame.
    let err = export(&path, &key, "s1", Export::Asciicast, |_| true).unwrap_err();
    assert!(matches!(err, RecordingError::Corrupt(2)), "{err}");
    std::fs::remove_file(&path).unwrap();

    // Cut inside frame 6.
    let (path, key, _) = eight_frames(dir.path());
    rewrite(&path, |b, f| b.truncate((f[6].0 + 10) as usize));
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(
        scan.problem,
        Some(Problem::Torn {
            frame: 6,
            bytes: 10
        })
    );
    std::fs::remove_file(&path).unwrap();

    // Cut at a frame boundary: every frame left is good, but the end is missing and the count
    // and hash differ from the summary (the audit trail's part).
    let (path, key, summary) = eight_frames(dir.path());
    rewrite(&path, |b, f| b.truncate(f[7].0 as usize));
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, None);
    assert_eq!(scan.ended, None);
    assert_eq!(scan.frames, 7);
    assert_ne!(scan.hash.as_deref(), Some(summary.hash.as_str()));
    std::fs::remove_file(&path).unwrap();

    // Frames of another session's recording (same key) do not authenticate here.
    let (path, key, _) = eight_frames(dir.path());
    assert_eq!(
        verify(&path, &key, "s2").unwrap().problem,
        Some(Problem::NotAuthentic { frame: 0 })
    );
}

#[test]
fn a_recording_of_the_previous_format_exports_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.rec");
    let key = DataKey::generate();
    let mut w = LegacyWriter::create(&path, key.clone(), "s1", &header()).unwrap();
    w.marker("exec cat");
    w.output(b"caf\xc3");
    w.flush().unwrap();
    w.output(b"\xa9 \xff\n");
    w.input(b"q");
    w.resize(100, 30);
    w.marker("end: ended");
    w.flush().unwrap();
    // What the previous export streamed: each frame's text, as stored.
    let mut before = Vec::new();
    crate::legacy::LegacyReader::open(&path)
        .unwrap()
        .for_each_frame(&key, "s1", |f| {
            before.extend_from_slice(&f);
            true
        })
        .unwrap();
    assert!(before.starts_with(header().to_string().as_bytes()));
    assert_eq!(exported(&path, &key, "s1", Export::Asciicast), before);
    // Raw bytes were never kept in that format: a clear refusal, not a lossy answer.
    assert!(matches!(
        export(&path, &key, "s1", Export::Raw(Stream::Output), |_| true),
        Err(RecordingError::NoExactBytes)
    ));
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.format, "previous");
    assert_eq!((scan.frames, scan.problem), (3, None));
    assert_eq!(scan.ended.as_deref(), Some("ended"));
    // A torn tail, as a crash leaves it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0, 0, 1, 0, 1, 2, 3])
        .unwrap();
    assert_eq!(exported(&path, &key, "s1", Export::Asciicast), before);
    assert_eq!(
        verify(&path, &key, "s1").unwrap().problem,
        Some(Problem::Torn { frame: 3, bytes: 7 })
    );
}

#[tokio::test]
async fn the_recorder_keeps_everything_handed_over_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rec");
    let key = DataKey::generate();
    let w = Writer::create(&path, key.clone(), "s1", &header()).unwrap();
    let rec = Recorder::start(w);
    let mut sent = Vec::new();
    // More than a few frames' worth, so sealing overlaps filling and back-pressure happens.
    for c in binary_chunks().iter().cycle().take(600) {
        rec.output(bytes::Bytes::copy_from_slice(c)).await.unwrap();
        sent.extend_from_slice(c);
    }
    rec.flush().await.unwrap();
    rec.input(bytes::Bytes::from_static(b"exit\r"))
        .await
        .unwrap();
    let summary = rec.end("ended").await.unwrap();
    assert!(rec
        .output(bytes::Bytes::from_static(b"late"))
        .await
        .is_err());
    assert_eq!(rec.output_bytes(), sent.len() as u64);
    let out = exported(&path, &key, "s1", Export::Raw(Stream::Output));
    assert!(
        out == sent,
        "the raw export differs from what was handed over"
    );
    let scan = verify(&path, &key, "s1").unwrap();
    assert_eq!(scan.problem, None);
    assert_eq!(
        (scan.frames, scan.hash.unwrap()),
        (summary.frames, summary.hash)
    );
}

/// The front ends' flush schedule: nothing is due for a session that says nothing; a flush is
/// due FLUSH_AFTER after the first hand-over, and a `select!` round that drops the wait does not
/// push the deadline back.
#[tokio::test]
async fn a_flush_is_due_a_second_after_output_and_never_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::create(
        &dir.path().join("r.rec"),
        DataKey::generate(),
        "s1",
        &header(),
    )
    .unwrap();
    let rec = Recorder::start(w);
    let mut flushes = FlushSchedule::default();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), flushes.due(&rec))
            .await
            .is_err(),
        "a flush was due with nothing handed over"
    );
    let start = std::time::Instant::now();
    rec.output(bytes::Bytes::from_static(b"ready\n"))
        .await
        .unwrap();
    // Dropped half-way, as when another branch of the loop wins the round.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), flushes.due(&rec))
            .await
            .is_err()
    );
    let resumed = std::time::Instant::now();
    flushes.due(&rec).await;
    assert!(start.elapsed() >= recorder::FLUSH_AFTER, "due too early");
    assert!(
        resumed.elapsed() < recorder::FLUSH_AFTER,
        "the dropped wait pushed the deadline back"
    );
    rec.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), flushes.due(&rec))
            .await
            .is_err(),
        "a flush was due again with nothing new"
    );
    rec.end("ended").await.unwrap();
}

#[tokio::test]
async fn an_idle_recording_flushes_without_a_pool_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rec");
    let key = DataKey::generate();
    let w = Writer::create(&path, key.clone(), "s1", &header()).unwrap();
    // A pool of its own, so that other tests' sessions do not count.
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(1)));
    let rec = Recorder::start_on(w, pool);
    let quiet = Duration::from_millis(50);
    assert!(
        tokio::time::timeout(quiet, rec.handed_over())
            .await
            .is_err(),
        "nothing was handed over yet"
    );
    rec.output(bytes::Bytes::from_static(b"ready\n"))
        .await
        .unwrap();
    tokio::time::timeout(quiet, rec.handed_over())
        .await
        .expect("output is something to flush");
    rec.flush().await.unwrap();
    assert!(
        tokio::time::timeout(quiet, rec.handed_over())
            .await
            .is_err(),
        "nothing new after the flush"
    );
    let busy = pool.jobs_handed();
    assert!(busy >= 1, "output was flushed without the pool");
    // The gateway's once-a-second flushes of a session that says nothing.
    for _ in 0..5 {
        rec.flush().await.unwrap();
    }
    assert_eq!(pool.jobs_handed(), busy, "an idle flush went to the pool");
    rec.output(bytes::Bytes::from_static(b"more\n"))
        .await
        .unwrap();
    rec.flush().await.unwrap();
    assert!(pool.jobs_handed() > busy, "new output was not sealed");
    let summary = rec.end("ended").await.unwrap();
    assert_eq!(
        exported(&path, &key, "s1", Export::Raw(Stream::Output)),
        b"ready\nmore\n"
    );
    assert_eq!(
        verify(&path, &key, "s1").unwrap().hash.unwrap(),
        summary.hash
    );
}
