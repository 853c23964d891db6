//! The previous recording format (`COFRE-RECORDING-1`): asciicast v2 text in zstd frames, each
//! sealed with the session's data key and bound to the session id and its position, but not to
//! the frame before it. Kept so that recordings made before format 2 still export exactly as they
//! did; its writer is here only for the tests that prove that.

use crate::reader::{read_one_frame, FrameRead, Problem, Scan};
use crate::RecordingError;
use cofre_crypto::datakey::DataKey;
use std::io::Read;
use std::path::Path;

pub const MAGIC: &[u8] = b"COFRE-RECORDING-1\n";
const MAX_FRAME: u32 = 64 * 1024 * 1024;

fn frame_aad(session_id: &str, index: u64) -> Vec<u8> {
    format!("cofre:recording:{session_id}:{index}").into_bytes()
}

/// A recording opened for reading, frame by frame: at most one frame is in memory, whatever the
/// recording's length.
pub struct LegacyReader {
    file: std::io::BufReader<std::fs::File>,
}

impl LegacyReader {
    /// Opens the file and checks that it is a recording.
    pub fn open(path: &Path) -> Result<LegacyReader, RecordingError> {
        let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        let mut magic = [0u8; MAGIC.len()];
        file.read_exact(&mut magic)
            .map_err(|_| RecordingError::NotARecording)?;
        if magic != MAGIC {
            return Err(RecordingError::NotARecording);
        }
        Ok(LegacyReader { file })
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

/// What can be checked in the previous format: every frame decrypts in its position and the file
/// is not cut inside a frame. A frame removed from the end, or the end itself, cannot be told
/// (those frames were not chained, and `session.end` held no count).
pub fn verify(path: &Path, key: &DataKey, session_id: &str) -> Result<Scan, RecordingError> {
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut magic = [0u8; MAGIC.len()];
    file.read_exact(&mut magic)
        .map_err(|_| RecordingError::NotARecording)?;
    let mut scan = Scan {
        format: "previous",
        frames: 0,
        hash: None,
        ended: None,
        output_bytes: 0,
        input_bytes: 0,
        problem: None,
    };
    let mut body = Vec::new();
    loop {
        let frame = scan.frames;
        match read_one_frame(&mut file, &mut body)? {
            FrameRead::End => return Ok(scan),
            FrameRead::Torn(bytes) => {
                scan.problem = Some(Problem::Torn { frame, bytes });
                return Ok(scan);
            }
            FrameRead::TooLong(_) => {
                scan.problem = Some(Problem::NotAuthentic { frame });
                return Ok(scan);
            }
            FrameRead::Frame => {}
        }
        let plain = key
            .decrypt(&body, &frame_aad(session_id, frame))
            .ok()
            .and_then(|c| zstd::stream::decode_all(c.as_slice()).ok());
        let Some(plain) = plain else {
            scan.problem = Some(Problem::NotAuthentic { frame });
            return Ok(scan);
        };
        for line in String::from_utf8_lossy(&plain).lines() {
            if let Some(reason) = line
                .strip_suffix("\"]")
                .and_then(|l| l.split_once(",\"m\",\"end: "))
            {
                scan.ended = Some(reason.1.to_owned());
            }
        }
        scan.frames += 1;
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

/// The writer of the previous format, unchanged: the tests make old recordings with it.
#[cfg(test)]
pub(crate) mod old_writer {
    use super::*;
    use crate::asciicast::{escape_json_into, Utf8Stream};
    use std::io::Write;
    use std::time::Instant;

    pub(crate) struct LegacyWriter {
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

    impl LegacyWriter {
        /// Creates the file (never overwriting one) and writes the asciicast header.
        pub(crate) fn create(
            path: &Path,
            key: DataKey,
            session_id: &str,
            header: &serde_json::Value,
        ) -> Result<LegacyWriter, RecordingError> {
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
            let mut w = LegacyWriter {
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

        pub(crate) fn output(&mut self, data: &[u8]) {
            self.bytes += data.len() as u64;
            self.bytes_event("o", data, false);
        }

        pub(crate) fn input(&mut self, data: &[u8]) {
            self.bytes_event("i", data, true);
        }

        pub(crate) fn resize(&mut self, cols: u32, rows: u32) {
            self.event("r", &format!("{cols}x{rows}"));
        }

        /// A labelled event: exec commands, file transfers, the reason a session ended.
        pub(crate) fn marker(&mut self, label: &str) {
            self.event("m", label);
        }

        /// Seals what is buffered into one frame, appends it and syncs it to disk (the once-a-second
        /// path: after it, a crash of the machine loses nothing recorded so far).
        pub(crate) fn flush(&mut self) -> Result<(), RecordingError> {
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
        /// for bulk output between two [`LegacyWriter::flush`]es. A killed process loses nothing
        /// written this way; only a crash of the whole machine can lose up to a second.
        pub(crate) fn write_frame(&mut self) -> Result<(), RecordingError> {
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
}
