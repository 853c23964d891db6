//! Reading a recording back: frame by frame (at most one frame in memory, whatever the recording's
//! length), for the export and for verification.

use crate::asciicast::Cast;
pub(crate) use crate::codec::FrameRead;
use crate::codec::{self, Plain};
use crate::event::{self, Event, Kind};
use crate::legacy::{self, LegacyReader};
use crate::{first_link, frame_aad, next_link, RecordingError, MAGIC};
use cofre_crypto::datakey::DataKey;
use std::io::Read;
use std::path::Path;

/// Larger frame plaintexts are not decompressed (the writer's are a few MiB at most).
const MAX_PLAIN: usize = 64 * 1024 * 1024;

/// Which bytes a raw export gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// What the user's terminal received.
    Output,
    /// What the user sent.
    Input,
}

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    Asciicast,
    Raw(Stream),
}

/// What is wrong with a recording, at which frame (counted from 0, the header's frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The frame does not authenticate in its place: it was altered, or a frame before it was
    /// removed or moved, or this one was.
    NotAuthentic { frame: u64 },
    /// The file ends inside this frame (`bytes` of it are there).
    Torn { frame: u64, bytes: u64 },
    /// The frame authenticates but its events do not parse.
    BadEvents { frame: u64 },
    /// Frames follow the one that holds the end.
    AfterEnd { frame: u64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotAuthentic { frame } => write!(
                f,
                "frame {frame} does not authenticate in its place: it was altered, or a frame \
                 was removed, inserted or moved at this position"
            ),
            Problem::Torn { frame, bytes } => write!(
                f,
                "the file is cut off inside frame {frame} (only {bytes} bytes of it are there)"
            ),
            Problem::BadEvents { frame } => {
                write!(f, "frame {frame} holds events that do not parse")
            }
            Problem::AfterEnd { frame } => {
                write!(
                    f,
                    "frame {frame} follows the frame that ended the recording"
                )
            }
        }
    }
}

impl Problem {
    pub fn frame(&self) -> u64 {
        match self {
            Problem::NotAuthentic { frame }
            | Problem::Torn { frame, .. }
            | Problem::BadEvents { frame }
            | Problem::AfterEnd { frame } => *frame,
        }
    }
}

/// What reading a whole recording found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// `chained` (format 2) or `previous` (format 1: frames bound to their position only).
    pub format: &'static str,
    /// Whole frames that authenticated, in order, before any problem.
    pub frames: u64,
    /// Hex of the last good frame's link (format 2 only).
    pub hash: Option<String>,
    /// The reason in the end event, when the recording has one.
    pub ended: Option<String>,
    pub output_bytes: u64,
    pub input_bytes: u64,
    pub problem: Option<Problem>,
}

/// Reads the next frame's sealed bytes into `body`.
pub(crate) fn read_one_frame(
    file: &mut impl Read,
    body: &mut Vec<u8>,
) -> Result<FrameRead, RecordingError> {
    Ok(codec::read_frame(file, body, crate::MAX_FRAME)?)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, RecordingError> {
    Ok(codec::read_up_to(r, buf)?)
}

/// A format-2 recording's frames, decrypted and checked against the chain, one at a time.
struct Frames {
    file: std::io::BufReader<std::fs::File>,
    key: DataKey,
    session_id: String,
    index: u64,
    link: [u8; 32],
    body: Vec<u8>,
}

/// The next frame's events, or how the frames ended.
enum Next {
    Events(Plain),
    End,
    Problem(Problem),
}

impl Frames {
    fn next(&mut self) -> Result<Next, RecordingError> {
        let frame = self.index;
        match read_one_frame(&mut self.file, &mut self.body)? {
            FrameRead::End => return Ok(Next::End),
            FrameRead::Torn(bytes) => return Ok(Next::Problem(Problem::Torn { frame, bytes })),
            FrameRead::TooLong(_) => return Ok(Next::Problem(Problem::NotAuthentic { frame })),
            FrameRead::Frame => {}
        }
        let aad = frame_aad(&self.session_id, frame, &self.link);
        let events = match codec::open(&self.key, &aad, &self.body, MAX_PLAIN) {
            Ok(plain) => plain,
            Err(codec::OpenError::NotAuthentic) => {
                return Ok(Next::Problem(Problem::NotAuthentic { frame }))
            }
            Err(_) => return Ok(Next::Problem(Problem::BadEvents { frame })),
        };
        self.link = next_link(&self.link, &self.body);
        self.index += 1;
        Ok(Next::Events(events))
    }
}

enum Opened {
    Chained(Frames),
    Previous(LegacyReader),
}

fn open(path: &Path, key: &DataKey, session_id: &str) -> Result<Opened, RecordingError> {
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut magic = [0u8; 18];
    if read_up_to(&mut file, &mut magic)? < MAGIC.len() {
        return Err(RecordingError::NotARecording);
    }
    if magic == MAGIC {
        return Ok(Opened::Chained(Frames {
            file,
            key: key.clone(),
            session_id: session_id.to_owned(),
            index: 0,
            link: first_link(session_id),
            body: Vec::new(),
        }));
    }
    if magic == legacy::MAGIC {
        drop(file);
        return Ok(Opened::Previous(LegacyReader::open(path)?));
    }
    Err(RecordingError::NotARecording)
}

/// Checks that `path` is a recording this key opens (the export's early error).
pub fn check(path: &Path, key: &DataKey, session_id: &str) -> Result<(), RecordingError> {
    open(path, key, session_id).map(|_| ())
}

/// Streams a recording as `what`: `each` gets the bytes of one frame at a time, until the end
/// or until it returns false. A torn last frame is the end (a crash); a frame that does not
/// authenticate is an error after what came before it was given out.
pub fn export(
    path: &Path,
    key: &DataKey,
    session_id: &str,
    what: Export,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), RecordingError> {
    let mut frames = match open(path, key, session_id)? {
        Opened::Chained(f) => f,
        Opened::Previous(reader) => {
            if what != Export::Asciicast {
                return Err(RecordingError::NoExactBytes);
            }
            return reader.for_each_frame(key, session_id, each);
        }
    };
    let mut cast = Cast::default();
    loop {
        let events = match frames.next()? {
            Next::Events(e) => e,
            Next::End | Next::Problem(Problem::Torn { .. }) => return Ok(()),
            Next::Problem(p) => return Err(RecordingError::Corrupt(p.frame())),
        };
        let mut out = Vec::with_capacity(events.payload().len() + events.payload().len() / 8);
        for e in event::decode(events.payload()) {
            let Ok(e) = e else {
                return Err(RecordingError::Corrupt(frames.index - 1));
            };
            match what {
                Export::Asciicast => cast.event(&e, &mut out),
                Export::Raw(stream) => {
                    let wanted = match stream {
                        Stream::Output => Kind::Output,
                        Stream::Input => Kind::Input,
                    };
                    if e.kind == wanted {
                        out.extend_from_slice(e.data);
                    }
                }
            }
        }
        if !out.is_empty() && !each(out) {
            return Ok(());
        }
    }
}

/// Reads the whole recording and says what it found: every frame checked in its place, the end
/// event, the last link. Comparing that with the audit trail is the caller's part.
pub fn verify(path: &Path, key: &DataKey, session_id: &str) -> Result<Scan, RecordingError> {
    let mut frames = match open(path, key, session_id)? {
        Opened::Chained(f) => f,
        Opened::Previous(_) => return legacy::verify(path, key, session_id),
    };
    let mut scan = Scan {
        format: "chained",
        frames: 0,
        hash: None,
        ended: None,
        output_bytes: 0,
        input_bytes: 0,
        problem: None,
    };
    loop {
        let frame = frames.index;
        let events = match frames.next()? {
            Next::Events(e) => e,
            Next::End => break,
            Next::Problem(p) => {
                scan.problem = Some(p);
                break;
            }
        };
        if scan.ended.is_some() {
            scan.problem = Some(Problem::AfterEnd { frame });
            break;
        }
        let mut bad = false;
        for e in event::decode(events.payload()) {
            match e {
                Ok(Event { kind, data, .. }) => match kind {
                    Kind::Output => scan.output_bytes += data.len() as u64,
                    Kind::Input => scan.input_bytes += data.len() as u64,
                    Kind::End => scan.ended = Some(String::from_utf8_lossy(data).into_owned()),
                    _ => {}
                },
                Err(_) => bad = true,
            }
        }
        if bad {
            scan.problem = Some(Problem::BadEvents { frame });
            break;
        }
        scan.frames = frames.index;
        scan.hash = Some(hex::encode(frames.link));
    }
    Ok(scan)
}

/// The frames of a format-2 recording as they are on disk (length and sealed body), for the
/// tests that tamper with one.
pub fn frame_offsets(path: &Path) -> Result<Vec<(u64, u64)>, RecordingError> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 18];
    if read_up_to(&mut file, &mut magic)? < MAGIC.len() || magic != MAGIC {
        return Err(RecordingError::NotARecording);
    }
    let mut at = MAGIC.len() as u64;
    let mut out = Vec::new();
    let mut body = Vec::new();
    while let FrameRead::Frame = read_one_frame(&mut file, &mut body)? {
        let len = 4 + body.len() as u64;
        out.push((at, len));
        at += len;
    }
    Ok(out)
}
