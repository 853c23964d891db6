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

use cofre_crypto::datakey::DataKey;
use cofre_crypto::Keyring;
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
const MAX_HEADER: u32 = 1 << 20;
const KIND_DATA: u8 = 2;
const KIND_MANIFEST: u8 = 3;
const RAW: u8 = 0;
const ZSTD: u8 = 1;
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

pub struct Writer<W: Write> {
    out: Sink<W>,
    key: DataKey,
    header_hash: [u8; 32],
    frames: u64,
    members: Vec<MemberEntry>,
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
    id: String,
}

/// What [`Writer::finish`] produced.
pub struct Written<W> {
    pub inner: W,
    pub size: u64,
    pub sha256: String,
    pub manifest: Manifest,
}

impl<W: Write + Send + 'static> Writer<W> {
    pub fn new(out: W, header: &Header, key: DataKey) -> Result<Self, FormatError> {
        let header_bytes =
            serde_json::to_vec(header).map_err(|e| FormatError::Header(e.to_string()))?;
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
        let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| FormatError::Io {
            context: "starting zstd".into(),
            source: e,
        })?;
        Ok(Writer {
            out,
            key,
            header_hash: Sha256::digest(&header_bytes).into(),
            frames: 0,
            members: Vec::new(),
            compressor,
            buf: vec![0; FRAME_PLAIN],
            id: header.id.clone(),
        })
    }

    /// Seals one frame; returns whether compressing it paid off (`try_compress` false skips zstd).
    fn write_frame(
        &mut self,
        kind: u8,
        payload: &[u8],
        try_compress: bool,
    ) -> Result<bool, FormatError> {
        let compressed = if try_compress {
            Some(
                self.compressor
                    .compress(payload)
                    .map_err(FormatError::io("compressing"))?,
            )
        } else {
            None
        };
        let mut plain = Vec::with_capacity(1 + payload.len());
        let paid_off = match compressed {
            Some(c) if c.len() < payload.len() => {
                plain.push(ZSTD);
                plain.extend_from_slice(&c);
                true
            }
            _ => {
                plain.push(RAW);
                plain.extend_from_slice(payload);
                false
            }
        };
        let sealed = self
            .key
            .encrypt(&plain, &frame_aad(&self.header_hash, self.frames, kind))
            .map_err(|e| FormatError::Key(e.to_string()))?;
        let len = u32::try_from(sealed.len()).map_err(|_| FormatError::Io {
            context: "writing the snapshot".into(),
            source: std::io::Error::other("frame too large"),
        })?;
        let io = FormatError::io("writing the snapshot");
        self.out
            .send(len.to_be_bytes().to_vec())
            .and_then(|()| self.out.send(sealed))
            .map_err(io)?;
        self.frames += 1;
        Ok(paid_off)
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
    ) -> Result<&MemberEntry, FormatError> {
        let offset = self.out.position;
        let first_frame = self.frames;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut misses = 0u32;
        let mut source = source.take(limit);
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            let n = match read_full(&mut source, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    break Err(FormatError::Io {
                        context: format!("reading {name}"),
                        source: e,
                    })
                }
            };
            if n == 0 {
                break Ok(());
            }
            hash.update(&buf[..n]);
            size += n as u64;
            // Recordings are sealed already and never compress: after two frames that did not,
            // try only every 16th frame, which saves most of zstd's time on them.
            let frame_in_member = self.frames - first_frame;
            let try_compress = misses < 2 || frame_in_member.is_multiple_of(16);
            match self.write_frame(KIND_DATA, &buf[..n], try_compress) {
                Ok(true) => misses = 0,
                Ok(false) => misses += u32::from(try_compress),
                Err(e) => break Err(e),
            }
            progress(n as u64);
            if n < buf.len() {
                break Ok(());
            }
        };
        self.buf = buf;
        result?;
        self.members.push(MemberEntry {
            name: name.to_owned(),
            size,
            sha256: hex::encode(hash.finalize()),
            offset,
            end: self.out.position,
            frames: self.frames - first_frame,
            mode,
        });
        self.members
            .last()
            .ok_or_else(|| FormatError::Manifest("no member".into()))
    }

    /// Writes the manifest and the trailer and flushes. The caller fsyncs and renames.
    pub fn finish(mut self) -> Result<Written<W>, FormatError> {
        let manifest = Manifest {
            id: self.id.clone(),
            members: std::mem::take(&mut self.members),
        };
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| FormatError::Manifest(e.to_string()))?;
        let manifest_offset = self.out.position;
        self.write_frame(KIND_MANIFEST, &bytes, true)?;
        let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
        trailer.extend_from_slice(&manifest_offset.to_be_bytes());
        trailer.extend_from_slice(&self.frames.to_be_bytes());
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

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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
    /// names the member on the first mismatch.
    pub fn for_each_member(
        &mut self,
        mut sink: impl FnMut(&MemberEntry) -> Result<Option<Box<dyn Write + '_>>, FormatError>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), FormatError> {
        self.file
            .seek(SeekFrom::Start(self.data_start))
            .map_err(FormatError::io("reading the snapshot"))?;
        let mut reader = std::io::BufReader::with_capacity(FRAME_PLAIN + 64, &mut self.file);
        let mut position = self.data_start;
        let mut index = 0u64;
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
                let (plain, used) =
                    read_frame_counted(&mut reader, &self.key, &self.header_hash, index, KIND_DATA)
                        .map_err(&bad)?;
                index += 1;
                position += used;
                hash.update(&plain);
                size += plain.len() as u64;
                if let Some(w) = out.as_mut() {
                    w.write_all(&plain)
                        .map_err(|e| bad(format!("cannot write it: {e}")))?;
                }
                progress(plain.len() as u64);
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

fn read_frame(
    r: &mut impl Read,
    key: &DataKey,
    header_hash: &[u8; 32],
    index: u64,
    kind: u8,
) -> Result<Vec<u8>, String> {
    read_frame_counted(r, key, header_hash, index, kind).map(|(p, _)| p)
}

/// One frame's plaintext and the bytes it took in the file.
fn read_frame_counted(
    r: &mut impl Read,
    key: &DataKey,
    header_hash: &[u8; 32],
    index: u64,
    kind: u8,
) -> Result<(Vec<u8>, u64), String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("frame {index}: cannot read its length: {e}"))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(format!("frame {index}: length {len} is damaged"));
    }
    let mut sealed = vec![0u8; len as usize];
    r.read_exact(&mut sealed)
        .map_err(|e| format!("frame {index}: cannot read it: {e}"))?;
    let plain = key
        .decrypt(&sealed, &frame_aad(header_hash, index, kind))
        .map_err(|_| format!("frame {index} does not decrypt: the data was altered or damaged"))?;
    let (flag, payload) = plain
        .split_first()
        .ok_or_else(|| format!("frame {index} is empty"))?;
    let data = match *flag {
        RAW => payload.to_vec(),
        ZSTD => zstd::bulk::decompress(payload, FRAME_PLAIN.max(64 << 10))
            .map_err(|e| format!("frame {index} does not decompress: {e}"))?,
        other => return Err(format!("frame {index}: unknown compression {other}")),
    };
    Ok((data, 4 + u64::from(len)))
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
            w.add_member(name, 0o600, &data[..], u64::MAX, &mut |_| {})
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
        // Incompressible and 20 frames long: exercises skipping zstd and trying it again.
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..FRAME_PLAIN * 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let members = vec![
            ("empty", Vec::new()),
            ("small", b"hello".to_vec()),
            ("big", big),
            ("random", random),
        ];
        let (bytes, key, manifest) = build(&members);
        assert_eq!(manifest.members[2].frames, 3);
        let got = read_all(bytes, key).unwrap();
        let want: Vec<(String, Vec<u8>)> = members
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d))
            .collect();
        assert_eq!(got, want);
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
