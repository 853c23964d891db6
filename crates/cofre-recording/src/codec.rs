//! The one framed, sealed stream codec of Cofre's files. A recording (this crate) and a snapshot
//! (cofre-app's `snapshot::format`) are both a run of frames:
//!
//! ```text
//! frame  = u32 BE length || sealed
//! sealed = XChaCha20-Poly1305 under the file's data key (random nonce), with the format's AAD
//! plain  = codec (0 stored, 1 zstd) || payload
//! ```
//!
//! What a frame's AAD binds it to (its position, the chain of the frames before it, its kind, the
//! file's header) is each format's own. Sealing, compressing only when it pays, opening, and
//! reading a frame back whole or torn are done here, once, for both.

use cofre_crypto::datakey::DataKey;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The payload is stored as it is.
pub const STORED: u8 = 0;
/// The payload is one zstd frame.
pub const ZSTD: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("compressing a frame: {0}")]
    Compress(#[source] std::io::Error),
    #[error("encrypting a frame failed")]
    Encrypt,
    #[error("a frame is too large for its length field")]
    TooLarge,
}

/// Why a frame did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Wrong key, wrong place (AAD), or altered bytes: the AEAD tag says no.
    #[error("the frame does not authenticate")]
    NotAuthentic,
    #[error("the frame holds no codec byte")]
    Empty,
    #[error("the frame names an unknown codec {0}")]
    UnknownCodec(u8),
    #[error("the frame does not decompress: {0}")]
    Decompress(String),
    #[error("the frame decompresses to more than {0} bytes")]
    TooLarge(usize),
}

/// A zstd context that is kept (not rebuilt for every frame) and that judges a payload by a
/// sample before compressing all of it: random or already sealed bytes never compress, and zstd
/// over a whole incompressible payload costs more than sealing it.
pub struct Compressor {
    zstd: zstd::bulk::Compressor<'static>,
    sample: usize,
}

impl Compressor {
    pub fn new(level: i32, sample: usize) -> std::io::Result<Compressor> {
        Ok(Compressor {
            zstd: zstd::bulk::Compressor::new(level)?,
            sample: sample.max(1),
        })
    }

    /// zstd's output when it pays off; `None` when the sample did not shrink by at least 1/16,
    /// or the whole payload did not shrink at all.
    pub fn compress_if_worth(&mut self, payload: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        if payload.len() > self.sample {
            let sample = self.zstd.compress(&payload[..self.sample])?;
            if sample.len() * 16 > self.sample * 15 {
                return Ok(None);
            }
        }
        let full = self.zstd.compress(payload)?;
        Ok((full.len() < payload.len()).then_some(full))
    }
}

/// Seals one frame's plaintext. `plain[0]` is kept free for the codec byte and `plain[1..]` is
/// the payload, so a payload that is not worth compressing (or `compressor` is None) is sealed
/// from `plain` where it is, without a copy. `plain` keeps its buffer for the next frame.
pub fn seal(
    key: &DataKey,
    aad: &[u8],
    compressor: Option<&mut Compressor>,
    plain: &mut [u8],
) -> Result<Vec<u8>, SealError> {
    let packed = match compressor {
        Some(c) => c
            .compress_if_worth(plain.get(1..).unwrap_or_default())
            .map_err(SealError::Compress)?,
        None => None,
    };
    let sealed = match packed {
        Some(packed) => {
            let mut framed = Vec::with_capacity(1 + packed.len());
            framed.push(ZSTD);
            framed.extend_from_slice(&packed);
            key.encrypt(&framed, aad)
        }
        None => {
            if let Some(codec) = plain.first_mut() {
                *codec = STORED;
            }
            key.encrypt(plain, aad)
        }
    }
    .map_err(|_| SealError::Encrypt)?;
    length_prefix(&sealed)?;
    Ok(sealed)
}

/// The length field that goes before a sealed frame.
pub fn length_prefix(sealed: &[u8]) -> Result<[u8; 4], SealError> {
    u32::try_from(sealed.len())
        .map(u32::to_be_bytes)
        .map_err(|_| SealError::TooLarge)
}

/// Appends a sealed frame: its length, then its bytes.
pub fn write_frame(out: &mut impl Write, sealed: &[u8]) -> std::io::Result<()> {
    let len = length_prefix(sealed).map_err(std::io::Error::other)?;
    out.write_all(&len)?;
    out.write_all(sealed)
}

/// An opened frame's payload.
pub enum Plain {
    /// Decrypted in place; wiped when dropped.
    Stored(Zeroizing<Vec<u8>>),
    Decompressed(Vec<u8>),
}

impl Plain {
    pub fn payload(&self) -> &[u8] {
        match self {
            Plain::Stored(plain) => plain.get(1..).unwrap_or_default(),
            Plain::Decompressed(payload) => payload,
        }
    }
}

/// Opens a sealed frame (without its length field) with the AAD it must have been sealed with,
/// and decompresses it, refusing a payload over `max_payload` bytes (what a damaged or hostile
/// frame could otherwise make the reader allocate).
pub fn open(
    key: &DataKey,
    aad: &[u8],
    sealed: &[u8],
    max_payload: usize,
) -> Result<Plain, OpenError> {
    let plain = key
        .decrypt(sealed, aad)
        .map_err(|_| OpenError::NotAuthentic)?;
    match plain.first().copied() {
        None => Err(OpenError::Empty),
        Some(STORED) => Ok(Plain::Stored(plain)),
        Some(ZSTD) => {
            let mut out = Vec::new();
            let limit = u64::try_from(max_payload)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            zstd::stream::read::Decoder::new(plain.get(1..).unwrap_or_default())
                .and_then(|d| d.take(limit).read_to_end(&mut out))
                .map_err(|e| OpenError::Decompress(e.to_string()))?;
            if out.len() > max_payload {
                return Err(OpenError::TooLarge(max_payload));
            }
            Ok(Plain::Decompressed(out))
        }
        Some(other) => Err(OpenError::UnknownCodec(other)),
    }
}

/// What reading one frame found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRead {
    /// A whole frame is in the buffer.
    Frame,
    /// The input ended cleanly, before a new frame.
    End,
    /// The input ends inside a frame; this many of its bytes (length field included) are there.
    Torn(u64),
    /// The length field is above the limit: damaged, never written so by us.
    TooLong(u32),
}

/// Reads the next frame's sealed bytes into `body` (resized to fit), at most `max` of them.
pub fn read_frame(
    input: &mut impl Read,
    body: &mut Vec<u8>,
    max: u32,
) -> std::io::Result<FrameRead> {
    let mut len = [0u8; 4];
    let got = read_up_to(input, &mut len)?;
    if got == 0 {
        return Ok(FrameRead::End);
    }
    if got < len.len() {
        return Ok(FrameRead::Torn(got as u64));
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Ok(FrameRead::TooLong(len));
    }
    body.resize(len as usize, 0);
    let got = read_up_to(input, body)?;
    if got < body.len() {
        return Ok(FrameRead::Torn(4 + got as u64));
    }
    Ok(FrameRead::Frame)
}

/// Reads until `buf` is full or the input ends; how much was read.
pub fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn sealed_frame(key: &DataKey, aad: &[u8], payload: &[u8], compress: bool) -> Vec<u8> {
        let mut plain = vec![0u8];
        plain.extend_from_slice(payload);
        let mut c = Compressor::new(1, 4096).unwrap();
        seal(key, aad, compress.then_some(&mut c), &mut plain).unwrap()
    }

    #[test]
    fn text_is_compressed_random_bytes_are_stored_and_both_open_to_the_payload() {
        let key = DataKey::generate();
        let text = b"the same line again\n".repeat(5000);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for (payload, compressed) in [(&text[..], true), (&random[..], false)] {
            let sealed = sealed_frame(&key, b"aad", payload, true);
            assert_eq!(sealed.len() < payload.len(), compressed);
            let plain = open(&key, b"aad", &sealed, payload.len()).unwrap();
            assert_eq!(matches!(plain, Plain::Decompressed(_)), compressed);
            assert_eq!(plain.payload(), payload);
        }
    }

    #[test]
    fn a_frame_opens_only_with_its_aad_and_unaltered() {
        let key = DataKey::generate();
        let mut sealed = sealed_frame(&key, b"frame 1", b"secret bytes", false);
        assert_eq!(
            open(&key, b"frame 2", &sealed, 100).err(),
            Some(OpenError::NotAuthentic)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            open(&key, b"frame 1", &sealed, 100).err(),
            Some(OpenError::NotAuthentic)
        );
        let other = DataKey::generate();
        let sealed = sealed_frame(&key, b"frame 1", b"secret bytes", false);
        assert!(open(&other, b"frame 1", &sealed, 100).is_err());
    }

    #[test]
    fn a_payload_above_the_limit_is_refused() {
        let key = DataKey::generate();
        let sealed = sealed_frame(&key, b"a", &vec![b'x'; 1 << 20], true);
        assert_eq!(
            open(&key, b"a", &sealed, 1000).err(),
            Some(OpenError::TooLarge(1000))
        );
    }

    #[test]
    fn frames_read_back_whole_torn_or_too_long() {
        let mut file = Vec::new();
        write_frame(&mut file, b"first").unwrap();
        write_frame(&mut file, b"second frame").unwrap();
        let mut input = &file[..];
        let mut body = Vec::new();
        assert_eq!(
            read_frame(&mut input, &mut body, 64).unwrap(),
            FrameRead::Frame
        );
        assert_eq!(body, b"first");
        assert_eq!(
            read_frame(&mut input, &mut body, 64).unwrap(),
            FrameRead::Frame
        );
        assert_eq!(body, b"second frame");
        assert_eq!(
            read_frame(&mut input, &mut body, 64).unwrap(),
            FrameRead::End
        );

        let mut torn = &file[..file.len() - 3];
        read_frame(&mut torn, &mut body, 64).unwrap();
        assert_eq!(
            read_frame(&mut torn, &mut body, 64).unwrap(),
            FrameRead::Torn(4 + 9)
        );
        let mut cut_in_length = &file[..11];
        read_frame(&mut cut_in_length, &mut body, 64).unwrap();
        assert_eq!(
            read_frame(&mut cut_in_length, &mut body, 64).unwrap(),
            FrameRead::Torn(2)
        );
        let mut long = &file[..];
        assert_eq!(
            read_frame(&mut long, &mut body, 4).unwrap(),
            FrameRead::TooLong(5)
        );
    }
}
