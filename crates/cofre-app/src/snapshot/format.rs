//! The snapshot file: one file, streamed, compressed and encrypted in frames.
//!
//! ```text
//! "COFRESN1"                       magic
//! u32 BE length, header JSON       in clear but authenticated: every frame's AAD has its SHA-256
//! frames: u32 BE length, sealed    XChaCha20-Poly1305 under the snapshot key (random nonce);
//!                                  AAD = SHA-256(header) || frame index (u64 BE) || kind (u8);
//!                                  plaintext = compression byte (0 raw, 1 zstd) || payload
//!   every member's data frames, in manifest order (kind 2), at most 1 MiB of plaintext each
//!   the manifest (kind 3): each member's name, size, SHA-256 and where its frames are
//! u64 BE manifest offset, u64 BE frame count, "COFREEND"
//! ```
//!
//! The snapshot key is random per snapshot and travels in the header sealed under the instance's
//! master key, which the header's sealed keyring (keyring.json) wraps under the KEK. So the file
//! alone opens nothing: a key-file instance's snapshot needs its `master.key`, a Shamir
//! instance's needs k unseal shares. Frame indexes in the AAD stop reordering and splicing; the
//! manifest, last and covered by the same AAD, stops truncation. Because the manifest says which
//! frames belong to which member, a damaged byte is reported with the member's name.
//!
//! The frames themselves (length, seal, codec byte, compression when it pays) are
//! [`cofre_recording::codec`], the same as a recording's.

use super::ordered::{worker_count, Ordered, Stopped, DEPTH};
use cofre_crypto::datakey::DataKey;
use cofre_crypto::Keyring;
use cofre_recording::codec::{self, Compressor, FrameRead, OpenError, Plain, SealError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

const MAGIC: &[u8; 8] = b"COFRESN1";
const END_MAGIC: &[u8; 8] = b"COFREEND";
const TRAILER_LEN: u64 = 8 + 8 + 8;
/// Plaintext per frame: big enough that per-frame costs vanish, small enough to hold in memory.
pub const FRAME_PLAIN: usize = 1 << 20;
/// Far above any frame we write (1 MiB + zstd worst case + AEAD); bounds what a bad length makes
/// us allocate.
const MAX_FRAME: u32 = 2 << 20;
/// The manifest is one frame of its own, as large as the data dir has members (a few hundred
/// bytes each): bounded far above any data dir, but not by the data frames' limit.
const MAX_MANIFEST: u32 = 256 << 20;
const MAX_HEADER: u32 = 1 << 20;
const KIND_DATA: u8 = 2;
const KIND_MANIFEST: u8 = 3;
/// Fast: most of a data dir is recordings, which are already compressed and encrypted.
const ZSTD_LEVEL: i32 = 1;
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a Cofre snapshot, or its header is damaged: {0}")]
    Header(String),
    #[error("the snapshot's manifest is damaged or the file was cut short: {0}")]
    Manifest(String),
    #[error("member {name}: {reason}")]
    Member { name: String, reason: String },
    #[error("{0}")]
    Key(String),
}

impl FormatError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FormatError {
        let context = context.into();
        move |source| FormatError::Io { context, source }
    }

    /// The member a damaged byte belongs to, if that is what went wrong.
    pub fn member(&self) -> Option<&str> {
        match self {
            FormatError::Member { name, .. } => Some(name),
            FormatError::Manifest(_) => Some("manifest"),
            FormatError::Header(_) => Some("header"),
            _ => None,
        }
    }
}

/// The clear part of a snapshot: enough to list it and to find the key that opens it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    /// `daily`, `pre-maintenance` or `manual`.
    pub reason: String,
    pub cofre_version: String,
    /// `sqlite` or `postgres`: what kind of database the snapshot restores into.
    pub database: String,
    /// The instance's keyring.json as it was (the master key wrapped under the KEK).
    pub keyring: Keyring,
    /// The snapshot key sealed under the master key (base64 of the wrapped data key and of the
    /// key itself encrypted under it).
    pub key_wrapped: String,
    pub key_ciphertext: String,
}

impl Header {
    pub fn key_aad(id: &str) -> Vec<u8> {
        format!("cofre:snapshot-key:{id}").into_bytes()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberEntry {
    /// Path relative to the data dir, `/`-separated (`database/...` for the database copy).
    pub name: String,
    pub size: u64,
    /// SHA-256 of the member's bytes, hex.
    pub sha256: String,
    /// Byte range of the member's frames in the snapshot file.
    pub offset: u64,
    pub end: u64,
    pub frames: u64,
    /// Unix permission bits, restored as they were (keys stay 0600).
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub members: Vec<MemberEntry>,
}

/// Counts bytes and hashes them as they go to the file, so the whole file's SHA-256 is known
/// when writing ends without reading it again.
struct CountingWriter<W> {
    inner: W,
    written: u64,
    hash: Sha256,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and writes on its own thread, so that the next frame is compressed and sealed while
/// the last one goes to disk.
struct Sink<W> {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<CountingWriter<W>>>>,
    /// Bytes handed to the thread so far: the file offset of the next byte.
    position: u64,
}

impl<W: Write + Send + 'static> Sink<W> {
    fn new(mut out: CountingWriter<W>) -> Sink<W> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let thread = std::thread::spawn(move || {
            for buf in rx {
                out.write_all(&buf)?;
            }
            out.flush()?;
            Ok(out)
        });
        Sink {
            tx: Some(tx),
            thread: Some(thread),
            position: 0,
        }
    }

    fn send(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        let len = buf.len() as u64;
        let sent = self.tx.as_ref().map(|tx| tx.send(buf).is_ok());
        if sent == Some(true) {
            self.position += len;
            return Ok(());
        }
        // The thread stopped: its error says why.
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(std::io::Error::other("the snapshot writer stopped")),
        }
    }

    fn join(&mut self) -> std::io::Result<CountingWriter<W>> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| std::io::Error::other("the snapshot writer panicked"))?,
            None => Err(std::io::Error::other("the snapshot writer stopped")),
        }
    }
}

/// A frame for a sealing worker. `plain[0]` is left free for the compression byte, so a frame
/// that stays raw is encrypted where it was read, without a copy.
struct SealJob {
    index: u64,
    kind: u8,
    plain: Vec<u8>,
}

/// A sealed frame, and the job's buffer back for the next read.
struct Sealed {
    len: [u8; 4],
    sealed: Vec<u8>,
    buf: Vec<u8>,
}

/// How much of a frame is compressed first to judge it: recordings are sealed already and never
/// compress (see [`Compressor`]).
const SAMPLE: usize = 64 << 10;

/// One sealing worker: its own compressor and copy of the snapshot key.
fn sealer(
    key: DataKey,
    header_hash: [u8; 32],
    mut compressor: Compressor,
) -> impl FnMut(SealJob) -> Result<Sealed, FormatError> {
    move |mut job| {
        let aad = frame_aad(&header_hash, job.index, job.kind);
        let sealed = codec::seal(&key, &aad, Some(&mut compressor), &mut job.plain)
            .and_then(|sealed| Ok((codec::length_prefix(&sealed)?, sealed)));
        let (len, sealed) = match sealed {
            Ok(done) => done,
            Err(SealError::Compress(source)) => {
                return Err(FormatError::Io {
                    context: "compressing".into(),
                    source,
                })
            }
            Err(e) => return Err(FormatError::Key(e.to_string())),
        };
        Ok(Sealed {
            len,
            sealed,
            buf: job.plain,
        })
    }
}

/// A member whose frames are read but not all written yet: its byte range is known only when
/// its frames come back from the workers.
struct PendingMember {
    entry: MemberEntry,
    first_frame: u64,
    /// Set when the member's last frame has been read.
    end_frame: Option<u64>,
    started: bool,
}

pub struct Writer<W: Write> {
    out: Sink<W>,
    pool: Ordered<SealJob, Result<Sealed, FormatError>>,
    /// Frames handed to the workers.
    submitted: u64,
    /// Frames written, in order.
    written: u64,
    pending: std::collections::VecDeque<PendingMember>,
    members: Vec<MemberEntry>,
    /// Read buffers back from the workers, so frames do not each cost a fresh megabyte.
    spare: Vec<Vec<u8>>,
    id: String,
}

/// What [`Writer::finish`] produced.
pub struct Written<W> {
    pub inner: W,
    pub size: u64,
    pub sha256: String,
    pub manifest: Manifest,
}

fn pool_stopped(_: Stopped) -> FormatError {
    FormatError::Io {
        context: "sealing the snapshot".into(),
        source: std::io::Error::other("a worker thread stopped"),
    }
}

impl<W: Write + Send + 'static> Writer<W> {
    pub fn new(out: W, header: &Header, key: DataKey) -> Result<Self, FormatError> {
        let header_bytes =
            serde_json::to_vec(header).map_err(|e| FormatError::Header(e.to_string()))?;
        let header_hash: [u8; 32] = Sha256::digest(&header_bytes).into();
        let mut workers = Vec::new();
        for _ in 0..worker_count() {
            let compressor = Compressor::new(ZSTD_LEVEL, SAMPLE).map_err(|e| FormatError::Io {
                context: "starting zstd".into(),
                source: e,
            })?;
            workers.push(sealer(key.clone(), header_hash, compressor));
        }
        drop(key);
        let pool = Ordered::new("snapshot-seal", workers, DEPTH)
            .map_err(FormatError::io("starting the snapshot's threads"))?;
        let mut out = Sink::new(CountingWriter {
            inner: out,
            written: 0,
            hash: Sha256::new(),
        });
        let len = u32::try_from(header_bytes.len())
            .map_err(|_| FormatError::Header("header too large".into()))?;
        let mut start = Vec::with_capacity(12 + header_bytes.len());
        start.extend_from_slice(MAGIC);
        start.extend_from_slice(&len.to_be_bytes());
        start.extend_from_slice(&header_bytes);
        out.send(start)
            .map_err(FormatError::io("writing the snapshot"))?;
        Ok(Writer {
            out,
            pool,
            submitted: 0,
            written: 0,
            pending: std::collections::VecDeque::new(),
            members: Vec::new(),
            spare: Vec::new(),
            id: header.id.clone(),
        })
    }

    /// Hands a frame to the workers, writing finished ones first if as many are in flight as
    /// memory allows.
    fn submit(&mut self, kind: u8, plain: Vec<u8>) -> Result<(), FormatError> {
        while self.pool.is_full() {
            self.write_next()?;
        }
        self.pool
            .submit(SealJob {
                index: self.submitted,
                kind,
                plain,
            })
            .map_err(pool_stopped)?;
        self.submitted += 1;
        Ok(())
    }

    /// Writes the oldest frame in flight; false when none is.
    fn write_next(&mut self) -> Result<bool, FormatError> {
        let Some(result) = self.pool.take() else {
            return Ok(false);
        };
        let sealed = result.map_err(pool_stopped)??;
        self.mark_starts();
        self.out
            .send(sealed.len.to_vec())
            .and_then(|()| self.out.send(sealed.sealed))
            .map_err(FormatError::io("writing the snapshot"))?;
        self.written += 1;
        if self.spare.len() < 2 {
            self.spare.push(sealed.buf);
        }
        self.settle();
        Ok(true)
    }

    /// Members whose first frame is the next to be written start at the current position.
    fn mark_starts(&mut self) {
        for p in self.pending.iter_mut() {
            if !p.started && p.first_frame == self.written {
                p.entry.offset = self.out.position;
                p.started = true;
            }
        }
    }

    /// Members whose frames are all written get their end and go into the manifest.
    fn settle(&mut self) {
        self.mark_starts();
        while let Some(front) = self.pending.front() {
            let done = front.started && front.end_frame.is_some_and(|end| end <= self.written);
            if !done {
                break;
            }
            if let Some(mut p) = self.pending.pop_front() {
                p.entry.end = self.out.position;
                self.members.push(p.entry);
            }
        }
    }

    /// Adds a member from `source`, reading at most `limit` bytes (a recording still being
    /// written is taken up to its length when the snapshot started). `progress` hears the number
    /// of bytes after each frame.
    pub fn add_member(
        &mut self,
        name: &str,
        mode: u32,
        source: impl Read,
        limit: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), FormatError> {
        let first_frame = self.submitted;
        self.pending.push_back(PendingMember {
            entry: MemberEntry {
                name: name.to_owned(),
                size: 0,
                sha256: String::new(),
                offset: 0,
                end: 0,
                frames: 0,
                mode,
            },
            first_frame,
            end_frame: None,
            started: false,
        });
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut source = source.take(limit);
        loop {
            // A small file gets a small buffer: most members of a data dir are far below a
            // frame, and filling a whole frame's buffer for each was most of a many-file
            // snapshot's time.
            let want = usize::try_from(limit.saturating_sub(size))
                .unwrap_or(FRAME_PLAIN)
                .min(FRAME_PLAIN);
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(1 + want, 0);
            let n = codec::read_up_to(&mut source, &mut buf[1..]).map_err(|e| FormatError::Io {
                context: format!("reading {name}"),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            buf.truncate(1 + n);
            hash.update(&buf[1..]);
            size += n as u64;
            self.submit(KIND_DATA, buf)?;
            progress(n as u64);
            if n < FRAME_PLAIN {
                break;
            }
        }
        let frames = self.submitted - first_frame;
        if let Some(p) = self.pending.back_mut() {
            p.entry.size = size;
            p.entry.sha256 = hex::encode(hash.finalize());
            p.entry.frames = frames;
            p.end_frame = Some(self.submitted);
        }
        self.settle();
        Ok(())
    }

    /// Writes the manifest and the trailer and flushes. The caller fsyncs and renames.
    pub fn finish(mut self) -> Result<Written<W>, FormatError> {
        while self.write_next()? {}
        self.settle();
        if !self.pending.is_empty() {
            return Err(FormatError::Manifest(
                "a member's frames were not all written".into(),
            ));
        }
        let manifest = Manifest {
            id: self.id.clone(),
            members: std::mem::take(&mut self.members),
        };
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| FormatError::Manifest(e.to_string()))?;
        if bytes.len() >= MAX_MANIFEST as usize {
            return Err(FormatError::Manifest(format!(
                "{} members are more than one snapshot holds",
                manifest.members.len()
            )));
        }
        let manifest_offset = self.out.position;
        let mut plain = Vec::with_capacity(1 + bytes.len());
        plain.push(codec::STORED);
        plain.extend_from_slice(&bytes);
        self.submit(KIND_MANIFEST, plain)?;
        while self.write_next()? {}
        let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
        trailer.extend_from_slice(&manifest_offset.to_be_bytes());
        trailer.extend_from_slice(&self.written.to_be_bytes());
        trailer.extend_from_slice(END_MAGIC);
        let io = FormatError::io("writing the snapshot");
        self.out.send(trailer).map_err(io)?;
        let out = self
            .out
            .join()
            .map_err(FormatError::io("writing the snapshot"))?;
        Ok(Written {
            size: out.written,
            sha256: hex::encode(out.hash.finalize()),
            inner: out.inner,
            manifest,
        })
    }
}

fn frame_aad(header_hash: &[u8; 32], index: u64, kind: u8) -> [u8; 41] {
    let mut aad = [0u8; 41];
    aad[..32].copy_from_slice(header_hash);
    aad[32..40].copy_from_slice(&index.to_be_bytes());
    aad[40] = kind;
    aad
}

/// Reads the clear header of a snapshot file (no key needed).
pub fn read_header(file: &mut (impl Read + Seek)) -> Result<(Header, [u8; 32]), FormatError> {
    file.seek(SeekFrom::Start(0))
        .map_err(FormatError::io("reading the snapshot"))?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| FormatError::Header("the file is too short".into()))?;
    if &magic != MAGIC {
        return Err(FormatError::Header("wrong magic bytes".into()));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|_| FormatError::Header("the file is too short".into()))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER {
        return Err(FormatError::Header(format!(
            "header length {len} is absurd"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes)
        .map_err(|_| FormatError::Header("the file is too short".into()))?;
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| FormatError::Header(e.to_string()))?;
    if header.format != FORMAT {
        return Err(FormatError::Header(format!(
            "format {} is not supported (this cofre reads {FORMAT})",
            header.format
        )));
    }
    Ok((header, Sha256::digest(&bytes).into()))
}

/// An open snapshot: header read, key unwrapped, manifest decrypted.
pub struct Reader<R> {
    file: R,
    key: DataKey,
    header_hash: [u8; 32],
    pub header: Header,
    pub manifest: Manifest,
    data_start: u64,
    manifest_offset: u64,
}

impl<R: Read + Seek> Reader<R> {
    /// `key` opens the header's sealed snapshot key (see [`open_key`]).
    pub fn open(mut file: R, key: DataKey) -> Result<Self, FormatError> {
        let (header, header_hash) = read_header(&mut file)?;
        let data_start = file
            .stream_position()
            .map_err(FormatError::io("reading the snapshot"))?;
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(FormatError::io("reading the snapshot"))?;
        if len < data_start + TRAILER_LEN {
            return Err(FormatError::Manifest("the file has no trailer".into()));
        }
        file.seek(SeekFrom::Start(len - TRAILER_LEN))
            .map_err(FormatError::io("reading the snapshot"))?;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        file.read_exact(&mut trailer)
            .map_err(FormatError::io("reading the snapshot"))?;
        if &trailer[16..] != END_MAGIC {
            return Err(FormatError::Manifest(
                "the end marker is missing (the file was cut short or altered)".into(),
            ));
        }
        let manifest_offset = u64::from_be_bytes(trailer[..8].try_into().unwrap_or([0; 8]));
        let frames = u64::from_be_bytes(trailer[8..16].try_into().unwrap_or([0; 8]));
        if manifest_offset < data_start || manifest_offset >= len - TRAILER_LEN || frames == 0 {
            return Err(FormatError::Manifest("the trailer is altered".into()));
        }
        file.seek(SeekFrom::Start(manifest_offset))
            .map_err(FormatError::io("reading the snapshot"))?;
        let plain = read_frame(&mut file, &key, &header_hash, frames - 1, KIND_MANIFEST)
            .map_err(FormatError::Manifest)?;
        let manifest: Manifest =
            serde_json::from_slice(&plain).map_err(|e| FormatError::Manifest(e.to_string()))?;
        if manifest.id != header.id {
            return Err(FormatError::Manifest(
                "it belongs to another snapshot".into(),
            ));
        }
        let data_frames: u64 = manifest.members.iter().map(|m| m.frames).sum();
        if data_frames != frames - 1 {
            return Err(FormatError::Manifest(
                "its frame count does not match the trailer".into(),
            ));
        }
        Ok(Reader {
            file,
            key,
            header_hash,
            header,
            manifest,
            data_start,
            manifest_offset,
        })
    }

    /// Streams every member, in order, into the writer `sink` returns for it (or only checks it
    /// when `sink` returns `None`). Checks every frame's tag, each member's size and SHA-256, and
    /// names the member on the first mismatch. Frames are read ahead and opened on worker
    /// threads; hashing, checks and writes stay here, in file order.
    pub fn for_each_member(
        &mut self,
        mut sink: impl FnMut(&MemberEntry) -> Result<Option<Box<dyn Write + '_>>, FormatError>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), FormatError> {
        self.file
            .seek(SeekFrom::Start(self.data_start))
            .map_err(FormatError::io("reading the snapshot"))?;
        let workers: Vec<_> = (0..worker_count())
            .map(|_| opener(self.key.clone(), self.header_hash))
            .collect();
        let mut pool = Ordered::new("snapshot-open", workers, DEPTH)
            .map_err(FormatError::io("starting the snapshot's threads"))?;
        let total_frames: u64 = self.manifest.members.iter().map(|m| m.frames).sum();
        let mut ahead = ReadAhead {
            // Unbuffered: frames are large, and a buffer would only copy each one once more.
            reader: &mut self.file,
            next: 0,
            total: total_frames,
            failed: false,
            spare: Vec::new(),
        };
        let mut position = self.data_start;
        let members = self.manifest.members.clone();
        for member in &members {
            let bad = |reason: String| FormatError::Member {
                name: member.name.clone(),
                reason,
            };
            if member.offset != position || member.end > self.manifest_offset {
                return Err(bad("the manifest places it where it is not".into()));
            }
            let mut out = sink(member)?;
            let mut hash = Sha256::new();
            let mut size = 0u64;
            for _ in 0..member.frames {
                ahead.fill(&mut pool)?;
                let opened = match pool.take() {
                    Some(r) => r.map_err(pool_stopped)?,
                    None => Err("the frame was not read".to_owned()),
                };
                let opened = opened.map_err(&bad)?;
                let plain = opened.plain.payload();
                position += opened.used;
                hash.update(plain);
                size += plain.len() as u64;
                if let Some(w) = out.as_mut() {
                    w.write_all(plain)
                        .map_err(|e| bad(format!("cannot write it: {e}")))?;
                }
                progress(plain.len() as u64);
                if ahead.spare.len() < 2 {
                    ahead.spare.push(opened.sealed);
                }
            }
            if let Some(mut w) = out {
                w.flush()
                    .map_err(|e| bad(format!("cannot write it: {e}")))?;
            }
            if position != member.end {
                return Err(bad("its frames do not end where the manifest says".into()));
            }
            if size != member.size {
                return Err(bad(format!(
                    "{size} bytes where the manifest says {}",
                    member.size
                )));
            }
            if hex::encode(hash.finalize()) != member.sha256 {
                return Err(bad("SHA-256 does not match the manifest".into()));
            }
        }
        Ok(())
    }
}

/// Reads sealed frames in file order for the opening workers, as far ahead as the pool allows.
struct ReadAhead<R> {
    reader: R,
    next: u64,
    total: u64,
    /// A read failed: that failure is the last job, later frames are not read.
    failed: bool,
    /// Ciphertext buffers back from the workers.
    spare: Vec<Vec<u8>>,
}

impl<R: Read> ReadAhead<R> {
    fn fill(&mut self, pool: &mut Ordered<OpenJob, OpenResult>) -> Result<(), FormatError> {
        while !self.failed && self.next < self.total && !pool.is_full() {
            let buf = self.spare.pop().unwrap_or_default();
            let sealed = read_sealed(&mut self.reader, self.next, buf, MAX_FRAME);
            self.failed = sealed.is_err();
            pool.submit(OpenJob {
                index: self.next,
                kind: KIND_DATA,
                sealed,
            })
            .map_err(pool_stopped)?;
            self.next += 1;
        }
        Ok(())
    }
}

struct OpenJob {
    index: u64,
    kind: u8,
    /// The sealed bytes, or why they could not be read (reported in order, with the member).
    sealed: Result<Vec<u8>, String>,
}

struct Opened {
    plain: Plain,
    /// Bytes the frame took in the file.
    used: u64,
    /// The ciphertext buffer, for the next read.
    sealed: Vec<u8>,
}

type OpenResult = Result<Opened, String>;

/// One opening worker: its own copy of the snapshot key.
fn opener(key: DataKey, header_hash: [u8; 32]) -> impl FnMut(OpenJob) -> OpenResult {
    move |job| {
        let sealed = job.sealed?;
        let plain = open_sealed(
            &key,
            &header_hash,
            job.index,
            job.kind,
            &sealed,
            FRAME_PLAIN,
        )?;
        Ok(Opened {
            plain,
            used: 4 + sealed.len() as u64,
            sealed,
        })
    }
}

fn read_frame(
    r: &mut impl Read,
    key: &DataKey,
    header_hash: &[u8; 32],
    index: u64,
    kind: u8,
) -> Result<Vec<u8>, String> {
    let sealed = read_sealed(r, index, Vec::new(), MAX_MANIFEST)?;
    open_sealed(
        key,
        header_hash,
        index,
        kind,
        &sealed,
        MAX_MANIFEST as usize,
    )
    .map(|p| p.payload().to_vec())
}

/// One frame's sealed bytes (without its length), read into `buf`.
fn read_sealed(
    r: &mut impl Read,
    index: u64,
    mut buf: Vec<u8>,
    max: u32,
) -> Result<Vec<u8>, String> {
    match codec::read_frame(r, &mut buf, max) {
        Ok(FrameRead::Frame) => Ok(buf),
        Ok(FrameRead::End | FrameRead::Torn(_)) => Err(format!(
            "frame {index}: the file ends inside it or before it"
        )),
        Ok(FrameRead::TooLong(len)) => Err(format!("frame {index}: length {len} is damaged")),
        Err(e) => Err(format!("frame {index}: cannot read it: {e}")),
    }
}

fn open_sealed(
    key: &DataKey,
    header_hash: &[u8; 32],
    index: u64,
    kind: u8,
    sealed: &[u8],
    max_payload: usize,
) -> Result<Plain, String> {
    codec::open(
        key,
        &frame_aad(header_hash, index, kind),
        sealed,
        max_payload,
    )
    .map_err(|e| match e {
        OpenError::NotAuthentic => {
            format!("frame {index} does not decrypt: the data was altered or damaged")
        }
        other => format!("frame {index}: {other}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(id: &str) -> Header {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
        Header {
            format: FORMAT,
            id: id.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            reason: "manual".into(),
            cofre_version: "test".into(),
            database: "sqlite".into(),
            keyring,
            key_wrapped: String::new(),
            key_ciphertext: String::new(),
        }
    }

    fn build(members: &[(&str, Vec<u8>)]) -> (Vec<u8>, DataKey, Manifest) {
        let key = DataKey::generate();
        let mut w = Writer::new(Vec::new(), &header("s1"), key.clone()).unwrap();
        for (name, data) in members {
            w.add_member(name, 0o600, &data[..], data.len() as u64, &mut |_| {})
                .unwrap();
        }
        let done = w.finish().unwrap();
        assert_eq!(done.size, done.inner.len() as u64);
        (done.inner, key, done.manifest)
    }

    fn read_all(bytes: Vec<u8>, key: DataKey) -> Result<Vec<(String, Vec<u8>)>, FormatError> {
        let mut r = Reader::open(Cursor::new(bytes), key)?;
        let mut got: Vec<(String, std::rc::Rc<std::cell::RefCell<Vec<u8>>>)> = Vec::new();
        struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        r.for_each_member(
            |m| {
                let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                got.push((m.name.clone(), buf.clone()));
                Ok(Some(Box::new(Shared(buf))))
            },
            &mut |_| {},
        )?;
        Ok(got
            .into_iter()
            .map(|(n, b)| (n, b.borrow().clone()))
            .collect())
    }

    #[test]
    fn round_trip_of_empty_small_and_multi_frame_members() {
        let big: Vec<u8> = (0..(FRAME_PLAIN * 2 + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        // Incompressible and 20 frames long: more frames than the sealing workers hold in
        // flight, each judged by its sample and stored raw.
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..FRAME_PLAIN * 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // Empty members between and after multi-frame ones: their byte ranges are settled
        // only when the frames before them come back from the workers.
        let members = vec![
            ("empty", Vec::new()),
            ("small", b"hello".to_vec()),
            ("big", big.clone()),
            ("empty-2", Vec::new()),
            ("random", random.clone()),
            ("big-2", big),
            ("empty-3", Vec::new()),
        ];
        let (bytes, key, manifest) = build(&members);
        assert_eq!(manifest.members[2].frames, 3);
        for pair in manifest.members.windows(2) {
            assert_eq!(
                pair[0].end, pair[1].offset,
                "{} then {}",
                pair[0].name, pair[1].name
            );
        }
        // What compresses is compressed; what does not is stored raw, not grown.
        let span = |m: &MemberEntry| m.end - m.offset;
        assert!(span(&manifest.members[2]) < manifest.members[2].size / 4);
        assert!(span(&manifest.members[4]) < random.len() as u64 + 20 * 64);
        let got = read_all(bytes, key).unwrap();
        let want: Vec<(String, Vec<u8>)> = members
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_manifest_larger_than_a_data_frame_reads_back() {
        // 20,000 members (a data dir of many recordings): the manifest is several MiB of JSON,
        // more than a data frame may hold, and must still open.
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("recordings/2026/12/{i:08}-0d6f4b1e-5e3a-4c1b-9f0e-{i:012}.rec"))
            .collect();
        let members: Vec<(&str, Vec<u8>)> = names
            .iter()
            .map(|n| (n.as_str(), n.as_bytes().to_vec()))
            .collect();
        let (bytes, key, manifest) = build(&members);
        assert!(serde_json::to_vec(&manifest).unwrap().len() > FRAME_PLAIN * 2);
        let got = read_all(bytes, key).unwrap();
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[19_999].1, names[19_999].as_bytes());
    }

    #[test]
    fn a_flipped_byte_names_its_member() {
        let (bytes, key, manifest) = build(&[
            ("a", vec![1; 5000]),
            ("b", vec![2; 5000]),
            ("c", vec![3; 5000]),
        ]);
        for m in &manifest.members {
            let mut damaged = bytes.clone();
            damaged[((m.offset + m.end) / 2) as usize] ^= 0x40;
            let err = read_all(damaged, key.clone()).unwrap_err();
            assert_eq!(err.member(), Some(m.name.as_str()), "{err}");
        }
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 30);
        assert_eq!(
            read_all(cut, key.clone()).unwrap_err().member(),
            Some("manifest")
        );
        assert!(read_all(bytes, DataKey::generate()).is_err());
    }
}
