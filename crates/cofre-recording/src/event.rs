//! The binary event stream inside a frame: kind, time, length, bytes. Encoding appends to the
//! frame's buffer (the one copy a hand-over needs); decoding borrows from the decrypted frame.

/// What an event is. The byte values are the format: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The asciicast header (JSON): terminal size, environment, start time.
    Header = 1,
    /// Bytes the user's terminal received (stdout and stderr).
    Output = 2,
    /// Bytes the user sent.
    Input = 3,
    /// The terminal's new size: cols, rows (u32 BE each).
    Resize = 4,
    /// The command of an exec request, exactly as sent.
    Exec = 5,
    /// A file operation seen in an SFTP conversation, described.
    Sftp = 6,
    /// Anything else worth a line: an exit status, a refusal.
    Marker = 7,
    /// The session's end and why; nothing follows it.
    End = 8,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Output,
            3 => Kind::Input,
            4 => Kind::Resize,
            5 => Kind::Exec,
            6 => Kind::Sftp,
            7 => Kind::Marker,
            8 => Kind::End,
            _ => return None,
        })
    }
}

/// One decoded event, borrowing its bytes from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub kind: Kind,
    /// Microseconds since the recording started.
    pub micros: u64,
    pub data: &'a [u8],
}

impl Event<'_> {
    /// A resize's columns and rows.
    pub fn size(&self) -> Option<(u32, u32)> {
        let cols = u32::from_be_bytes(self.data.get(..4)?.try_into().ok()?);
        let rows = u32::from_be_bytes(self.data.get(4..8)?.try_into().ok()?);
        Some((cols, rows))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *input.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Appends one event to a frame's buffer.
pub fn encode(out: &mut Vec<u8>, kind: Kind, micros: u64, data: &[u8]) {
    out.push(kind as u8);
    put_varint(out, micros);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// The events of one frame's plaintext, in order; `Err(offset)` at the first that does not parse
/// (a frame that decrypted cannot hold one, unless the writer was wrong).
pub fn decode(events: &[u8]) -> impl Iterator<Item = Result<Event<'_>, usize>> + '_ {
    let mut at = 0usize;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || at >= events.len() {
            return None;
        }
        let start = at;
        let parsed = (|| {
            let kind = Kind::from_byte(*events.get(at)?)?;
            at += 1;
            let micros = get_varint(events, &mut at)?;
            let len = usize::try_from(get_varint(events, &mut at)?).ok()?;
            let data = events.get(at..at.checked_add(len)?)?;
            at += len;
            Some(Event { kind, micros, data })
        })();
        match parsed {
            Some(e) => Some(Ok(e)),
            None => {
                broken = true;
                Some(Err(start))
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_every_length() {
        let mut buf = Vec::new();
        let big = vec![0xffu8; 70_000];
        encode(&mut buf, Kind::Output, 0, b"");
        encode(&mut buf, Kind::Input, 127, b"x");
        encode(&mut buf, Kind::Output, 1 << 40, &big);
        encode(
            &mut buf,
            Kind::Resize,
            u64::MAX,
            &[0, 0, 0, 80, 0, 0, 0, 24],
        );
        let got: Vec<Event<'_>> = decode(&buf).map(Result::unwrap).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].micros, 127);
        assert_eq!(got[2].data, big.as_slice());
        assert_eq!(got[3].micros, u64::MAX);
        assert_eq!(got[3].size(), Some((80, 24)));
        // Cut anywhere inside the last event: an error at its offset, never a short event.
        let last = buf.len() - (1 + 10 + 1 + 8);
        assert_eq!(decode(&buf[..buf.len() - 1]).last(), Some(Err(last)));
    }
}
