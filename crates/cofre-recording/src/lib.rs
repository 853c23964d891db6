//! Session recordings as evidence: exactly the bytes that went each way, in frames that are
//! compressed, sealed with the session's data key and chained, so that a frame removed, swapped,
//! altered or cut off is found, and told apart from the torn last frame a crash leaves.
//!
//! On disk (format 2):
//! ```text
//! "COFRE-RECORDING-2\n"
//! frames: u32 BE length, sealed frame (XChaCha20-Poly1305 under the session's data key)
//!   AAD      = "cofre:recording:2:" session id ":" || frame index (u64 BE) || link(previous)
//!   plain    = codec (0 stored, 1 zstd) || events
//!   event    = kind (u8) || time in µs since the start (LEB128) || length (LEB128) || bytes
//!   link(-1) = SHA-256("cofre:recording:2:" session id)
//!   link(i)  = SHA-256(link(i-1) || sealed frame i)
//! ```
//! The first event is the asciicast header (JSON); the last, in a recording that ended, is
//! [`Kind::End`]. The last link and the frame count go into the `session.end` audit entry, so a
//! recording cut at a frame boundary is found too. A frame's AAD holds the link before it: a frame
//! decrypts only in its place after exactly the frames that were written before it.
//!
//! Recordings written before this format (`COFRE-RECORDING-1`, asciicast text in frames bound to
//! their position only) are still read by [`legacy`]: they export as before, and verify as far as
//! that format allows.
//!
//! The framing, sealing and compression of frames is [`codec`], which snapshots use too.
//!
//! The crate does file work on the calling thread; callers on an async runtime use the
//! [`recorder::Recorder`] (its sealing runs on a pool of threads shared by all sessions) or
//! `spawn_blocking`.

pub mod asciicast;
pub mod codec;
pub mod event;
pub mod legacy;
pub mod reader;
pub mod recorder;
pub mod writer;

#[cfg(test)]
mod tests;

pub use event::{Event, Kind};
pub use reader::{export, verify, Export, Problem, Scan, Stream};
pub use recorder::{FlushSchedule, Recorder};
pub use writer::{Summary, Writer};

/// The first bytes of a recording in this format.
pub const MAGIC: &[u8] = b"COFRE-RECORDING-2\n";
/// Larger sealed frames are not read (far above any the writer makes): bounds what a damaged
/// length can make a reader allocate.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("recording frame {0} does not decrypt (altered, removed, swapped, or a wrong key)")]
    Corrupt(u64),
    #[error("not a Cofre recording")]
    NotARecording,
    #[error("recording encryption failed")]
    Encrypt,
    #[error("an earlier write of this recording failed")]
    Failed,
    #[error(
        "this recording was made in the previous format (asciicast text), which does not keep \
         the exact bytes; export it as asciicast"
    )]
    NoExactBytes,
}

/// The AAD of frame `index`, bound to the link of the frames before it.
fn frame_aad(session_id: &str, index: u64, link: &[u8; 32]) -> Vec<u8> {
    let mut aad = format!("cofre:recording:2:{session_id}:").into_bytes();
    aad.extend_from_slice(&index.to_be_bytes());
    aad.extend_from_slice(link);
    aad
}

fn first_link(session_id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("cofre:recording:2:{session_id}")).into()
}

fn next_link(link: &[u8; 32], sealed: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(link);
    h.update(sealed);
    h.finalize().into()
}
