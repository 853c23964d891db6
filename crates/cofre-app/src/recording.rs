//! Session recordings: asciicast v2 (what `asciinema play` reads), written while the session runs.
//!
//! On disk a recording is a magic line followed by frames `[u32 big-endian length][sealed frame]`.
//! Each frame is a zstd-compressed run of asciicast lines, encrypted on its own with the session's
//! data key and bound to the session id and its position. The writer seals and fsyncs a frame at
//! least every second, so a crash loses at most the last second; a reader stops at a torn last frame.

use cofre_crypto::datakey::DataKey;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

const MAGIC: &[u8] = b"COFRE-RECORDING-1\n";
const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("recording frame {0} does not decrypt (altered, or a wrong key)")]
    Corrupt(u64),
    #[error("not a Cofre recording")]
    NotARecording,
    #[error("recording encryption failed")]
    Encrypt,
}

fn frame_aad(session_id: &str, index: u64) -> Vec<u8> {
    format!("cofre:recording:{session_id}:{index}").into_bytes()
}

/// Turns byte chunks into the escaped contents of a JSON string, without splitting a character
/// across events. It writes straight into the recording's buffer: this runs for every byte of
/// output, so it makes no intermediate copy.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Appends `data` as escaped JSON string contents (invalid bytes become U+FFFD) to `out`.
    fn push_escaped(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let joined;
        let bytes: &[u8] = if self.pending.is_empty() {
            data
        } else {
            self.pending.extend_from_slice(data);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        // Terminal output is nearly always valid UTF-8: one validation pass, then bulk escaping.
        if let Ok(text) = std::str::from_utf8(bytes) {
            escape_json_into(text, out);
            return;
        }
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            escape_json_into(chunk.valid(), out);
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            // A character cut at the end of this chunk of output: keep it for the next one.
            let at_end = chunks.peek().is_none();
            if at_end && std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none()) {
                self.pending = invalid.to_vec();
            } else {
                out.extend_from_slice("\u{fffd}".as_bytes());
            }
        }
    }
}

/// Appends `text` escaped for the inside of a JSON string. Runs of bytes that need no escaping
/// (everything but `"`, `\` and control characters) are copied whole.
fn escape_json_into(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

pub struct RecordingWriter {
    file: std::fs::File,
    key: DataKey,
    session_id: String,
    frame: u64,
    buf: Vec<u8>,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    bytes: u64,
    unsynced: bool,
    /// File length after the last complete frame.
    good_len: u64,
    failed: bool,
}

impl RecordingWriter {
    /// Creates the file (never overwriting one) and writes the asciicast header.
    pub fn create(
        path: &Path,
        key: DataKey,
        session_id: &str,
        header: &serde_json::Value,
    ) -> Result<RecordingWriter, RecordingError> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(MAGIC)?;
        let mut w = RecordingWriter {
            file,
            key,
            session_id: session_id.to_owned(),
            frame: 0,
            buf: Vec::new(),
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            bytes: 0,
            unsynced: false,
            good_len: MAGIC.len() as u64,
            failed: false,
        };
        w.buf.extend_from_slice(header.to_string().as_bytes());
        w.buf.push(b'\n');
        w.flush()?;
        Ok(w)
    }

    fn event_prefix(&mut self, code: &str) {
        use std::io::Write as _;
        let t = self.started.elapsed().as_secs_f64();
        let _ = write!(self.buf, "[{t:.6},\"{code}\",\"");
    }

    /// Appends `[time, code, data]` straight into the buffer, building no intermediate JSON value.
    fn event(&mut self, code: &str, data: &str) {
        self.event_prefix(code);
        escape_json_into(data, &mut self.buf);
        self.buf.extend_from_slice(b"\"]\n");
    }

    /// An event of raw terminal bytes; none when they are only the start of a character.
    fn bytes_event(&mut self, code: &str, data: &[u8], input: bool) {
        let before = self.buf.len();
        self.event_prefix(code);
        let text_start = self.buf.len();
        let stream = if input {
            &mut self.input
        } else {
            &mut self.output
        };
        stream.push_escaped(data, &mut self.buf);
        if self.buf.len() == text_start {
            self.buf.truncate(before);
        } else {
            self.buf.extend_from_slice(b"\"]\n");
        }
    }

    pub fn output(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.bytes_event("o", data, false);
    }

    pub fn input(&mut self, data: &[u8]) {
        self.bytes_event("i", data, true);
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    /// A labelled event: exec commands, file transfers, the reason a session ended.
    pub fn marker(&mut self, label: &str) {
        self.event("m", label);
    }

    /// Output bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Seals what is buffered into one frame, appends it and syncs it to disk (the once-a-second
    /// path: after it, a crash of the machine loses nothing recorded so far).
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.write_frame()?;
        if self.unsynced {
            if let Err(e) = self.file.sync_data() {
                self.failed = true;
                return Err(e.into());
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Seals what is buffered into one frame and hands it to the OS without waiting for the disk:
    /// for bulk output between two [`RecordingWriter::flush`]es. A killed process loses nothing
    /// written this way; only a crash of the whole machine can lose up to a second.
    pub fn write_frame(&mut self) -> Result<(), RecordingError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Level 1: recordings are written while the session runs; speed matters more than ratio.
        let compressed = zstd::bulk::compress(&self.buf, 1)?;
        let sealed = self
            .key
            .encrypt(&compressed, &frame_aad(&self.session_id, self.frame))
            .map_err(|_| RecordingError::Encrypt)?;
        let len = u32::try_from(sealed.len()).map_err(|_| RecordingError::Encrypt)?;
        let mut out = Vec::with_capacity(4 + sealed.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&sealed);
        if self.failed {
            return Err(RecordingError::Io(std::io::Error::other(
                "an earlier write of this recording failed",
            )));
        }
        if let Err(e) = self.file.write_all(&out) {
            // Cut a partly written frame off again, and write nothing more: a frame appended after
            // torn bytes would make everything after it unreadable.
            self.failed = true;
            let _ = self.file.set_len(self.good_len);
            return Err(e.into());
        }
        self.good_len += out.len() as u64;
        self.unsynced = true;
        self.frame += 1;
        self.buf.clear();
        Ok(())
    }
}

/// A recording opened for reading, frame by frame: at most one frame is in memory, whatever the
/// recording's length.
pub struct RecordingReader {
    file: std::io::BufReader<std::fs::File>,
}

impl RecordingReader {
    /// Opens the file and checks that it is a recording.
    pub fn open(path: &Path) -> Result<RecordingReader, RecordingError> {
        let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        let mut magic = [0u8; MAGIC.len()];
        file.read_exact(&mut magic)
            .map_err(|_| RecordingError::NotARecording)?;
        if magic != MAGIC {
            return Err(RecordingError::NotARecording);
        }
        Ok(RecordingReader { file })
    }

    /// Hands each frame's asciicast text to `each`, in order, until the end or until `each`
    /// returns false. A torn last frame (a crash while writing it) is the end; a frame that does
    /// not decrypt is an error.
    pub fn for_each_frame(
        mut self,
        key: &DataKey,
        session_id: &str,
        mut each: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), RecordingError> {
        let mut index = 0u64;
        let mut frame = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if !read_full(&mut self.file, &mut len)? {
                return Ok(());
            }
            let len = u32::from_be_bytes(len);
            if len > MAX_FRAME {
                return Ok(());
            }
            frame.resize(len as usize, 0);
            if !read_full(&mut self.file, &mut frame)? {
                return Ok(());
            }
            let compressed = key
                .decrypt(&frame, &frame_aad(session_id, index))
                .map_err(|_| RecordingError::Corrupt(index))?;
            let plain = zstd::stream::decode_all(compressed.as_slice())
                .map_err(|_| RecordingError::Corrupt(index))?;
            // Frames hold whole lines, so each is text on its own.
            if std::str::from_utf8(&plain).is_err() {
                return Err(RecordingError::Corrupt(index));
            }
            if !each(plain) {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// Fills `buf`; false at a clean or torn end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, RecordingError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads a whole recording back as asciicast text, for the tests (the API streams with
/// [`RecordingReader`]). A torn last frame is skipped; a frame that does not decrypt is an error.
#[cfg(test)]
pub fn read_cast(path: &Path, key: &DataKey, session_id: &str) -> Result<String, RecordingError> {
    let mut out = Vec::new();
    RecordingReader::open(path)?.for_each_frame(key, session_id, |plain| {
        out.extend_from_slice(&plain);
        true
    })?;
    String::from_utf8(out).map_err(|_| RecordingError::Corrupt(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks() {
        let mut s = Utf8Stream::default();
        let mut push = |data: &[u8]| {
            let mut out = Vec::new();
            s.push_escaped(data, &mut out);
            String::from_utf8(out).unwrap()
        };
        let bytes = "é€".as_bytes();
        let a = push(&bytes[..1]);
        let b = push(&bytes[1..4]);
        let c = push(&bytes[4..]);
        assert_eq!(format!("{a}{b}{c}"), "é€");
        assert_eq!(push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn escaping_matches_serde_json() {
        let samples = [
            "plain",
            "quote \" back \\ slash",
            "\n\r\t\u{8}\u{c}\u{1b}[0m\u{0}\u{1f}\u{7f}",
            "é€ \u{fffd} 😀",
            "",
        ];
        for text in samples {
            let mut ours = b"\"".to_vec();
            escape_json_into(text, &mut ours);
            ours.push(b'"');
            let back: String = serde_json::from_slice(&ours).unwrap();
            assert_eq!(back, text);
        }
        // Random bytes, cut anywhere, read back as the same lossy text.
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .chain(*b"end")
            .collect();
        let mut s = Utf8Stream::default();
        let mut json = b"\"".to_vec();
        for piece in data.chunks(7) {
            s.push_escaped(piece, &mut json);
        }
        json.push(b'"');
        let back: String = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, String::from_utf8_lossy(&data));
    }

    #[test]
    fn write_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.rec");
        let key = DataKey::generate();
        let mut w = RecordingWriter::create(
            &path,
            key.clone(),
            "s1",
            &serde_json::json!({"version": 2, "width": 80, "height": 24}),
        )
        .unwrap();
        w.output(b"hello ");
        w.flush().unwrap();
        w.output(b"world");
        w.resize(100, 30);
        w.flush().unwrap();
        let cast = read_cast(&path, &key, "s1").unwrap();
        let lines: Vec<&str> = cast.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("\"hello \""));
        assert!(lines[3].contains("\"r\""));
        // A torn frame at the end (crash mid-write) loses only that frame.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
        assert_eq!(read_cast(&path, &key, "s1").unwrap(), cast);
        // The wrong session id (frames moved between recordings) does not decrypt.
        assert!(matches!(
            read_cast(&path, &key, "s2"),
            Err(RecordingError::Corrupt(0))
        ));
    }
}
