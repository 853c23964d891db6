//! Writing a recording: a [`Frame`] collects events (cheap: a copy into a buffer), a [`Sink`]
//! compresses, seals, chains and appends it (the costly part, which the [`crate::Recorder`] runs
//! on its pool). [`Writer`] is both together, for callers that write on their own thread.

use crate::codec::{self, Compressor};
use crate::event::{self, Kind};
use crate::{first_link, frame_aad, next_link, RecordingError, MAGIC};
use cofre_crypto::datakey::DataKey;
use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// How a recording ended, for the `session.end` audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub frames: u64,
    /// Hex of the last frame's link.
    pub hash: String,
}

/// The events of the frame being filled. Byte 0 is kept for the codec, so a frame that is not
/// worth compressing is sealed from this buffer as it is.
pub struct Frame {
    buf: Vec<u8>,
    started: Instant,
}

impl Frame {
    pub fn new(started: Instant) -> Frame {
        Frame {
            buf: Vec::new(),
            started,
        }
    }

    pub fn push(&mut self, kind: Kind, data: &[u8]) {
        if self.buf.is_empty() {
            self.buf.push(codec::STORED);
        }
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        event::encode(&mut self.buf, kind, micros, data);
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        let mut size = [0u8; 8];
        size[..4].copy_from_slice(&cols.to_be_bytes());
        size[4..].copy_from_slice(&rows.to_be_bytes());
        self.push(Kind::Resize, &size);
    }

    /// Bytes of events held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Gives back a large buffer that holds nothing (an idle session after a burst).
    pub fn shrink(&mut self, keep: usize) {
        if self.buf.is_empty() && self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
    }

    /// The buffer, for sealing; this frame starts empty again (with the spare buffer, if any,
    /// so that a busy session does not allocate a fresh one each time).
    pub fn take(&mut self, spare: Option<Vec<u8>>) -> Vec<u8> {
        let mut next = spare.unwrap_or_default();
        next.clear();
        std::mem::replace(&mut self.buf, next)
    }
}

/// The file and the chain: everything that sealing a frame changes.
pub struct Sink {
    file: std::fs::File,
    key: DataKey,
    session_id: String,
    frames: u64,
    link: [u8; 32],
    /// File length after the last whole frame.
    good_len: u64,
    unsynced: bool,
    failed: bool,
}

thread_local! {
    /// Each sealing thread's compressor: its context is reused, not rebuilt for every frame.
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// How much of a frame is compressed first to judge it (see [`Compressor`]).
const SAMPLE: usize = 16 * 1024;

/// Seals a frame with this thread's compressor.
fn seal_frame(key: &DataKey, aad: &[u8], plain: &mut [u8]) -> Result<Vec<u8>, RecordingError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            // Level 1: recordings are written while the session runs; speed over ratio.
            None => slot.insert(Compressor::new(1, SAMPLE)?),
        };
        codec::seal(key, aad, Some(compressor), plain).map_err(|e| match e {
            codec::SealError::Compress(e) => RecordingError::Io(e),
            codec::SealError::Encrypt | codec::SealError::TooLarge => RecordingError::Encrypt,
        })
    })
}

impl Sink {
    /// Creates the file (never overwriting one) with its magic line.
    pub fn create(path: &Path, key: DataKey, session_id: &str) -> Result<Sink, RecordingError> {
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
        Ok(Sink {
            file,
            key,
            session_id: session_id.to_owned(),
            frames: 0,
            link: first_link(session_id),
            good_len: MAGIC.len() as u64,
            unsynced: true,
            failed: false,
        })
    }

    /// Seals `plain` (a [`Frame`]'s buffer) as the next frame and hands it to the OS. A killed
    /// process loses nothing written this way; [`Sink::sync`] makes it survive the machine too.
    pub fn seal(&mut self, mut plain: Vec<u8>) -> Result<Vec<u8>, RecordingError> {
        if self.failed {
            return Err(RecordingError::Failed);
        }
        if plain.len() <= 1 {
            return Ok(plain);
        }
        let aad = frame_aad(&self.session_id, self.frames, &self.link);
        let sealed = seal_frame(&self.key, &aad, &mut plain)?;
        let written = codec::write_frame(&mut self.file, &sealed);
        if let Err(e) = written {
            // Cut a partly written frame off again, and write nothing more: a frame after torn
            // bytes could never be read.
            self.failed = true;
            let _ = self.file.set_len(self.good_len);
            return Err(e.into());
        }
        self.good_len += 4 + sealed.len() as u64;
        self.link = next_link(&self.link, &sealed);
        self.frames += 1;
        self.unsynced = true;
        plain.clear();
        Ok(plain)
    }

    /// Waits until what was written is on the disk.
    pub fn sync(&mut self) -> Result<(), RecordingError> {
        if self.failed {
            return Err(RecordingError::Failed);
        }
        if self.unsynced {
            if let Err(e) = self.file.sync_data() {
                self.failed = true;
                return Err(e.into());
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Everything written is on the disk, and nothing has failed.
    pub fn is_synced(&self) -> bool {
        !self.unsynced && !self.failed
    }

    pub fn summary(&self) -> Summary {
        Summary {
            frames: self.frames,
            hash: hex::encode(self.link),
        }
    }
}

/// A recording written on the caller's thread (file I/O: not on an async worker).
pub struct Writer {
    pub(crate) frame: Frame,
    pub(crate) sink: Sink,
}

impl Writer {
    /// Creates the file and writes the header as the first frame, on disk before this returns.
    pub fn create(
        path: &Path,
        key: DataKey,
        session_id: &str,
        header: &serde_json::Value,
    ) -> Result<Writer, RecordingError> {
        let started = Instant::now();
        let mut w = Writer {
            frame: Frame::new(started),
            sink: Sink::create(path, key, session_id)?,
        };
        w.frame.push(Kind::Header, header.to_string().as_bytes());
        w.flush()?;
        Ok(w)
    }

    pub fn push(&mut self, kind: Kind, data: &[u8]) {
        self.frame.push(kind, data);
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.frame.resize(cols, rows);
    }

    /// Seals what is buffered and syncs it.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        let plain = self.frame.take(None);
        self.sink.seal(plain)?;
        self.sink.sync()
    }

    /// The last event (why it ended), sealed and synced: the recording is complete.
    pub fn end(mut self, reason: &str) -> Result<Summary, RecordingError> {
        self.frame.push(Kind::End, reason.as_bytes());
        self.flush()?;
        Ok(self.sink.summary())
    }
}
