//! asciicast v2 (what `asciinema play` reads) made from the event stream on export: JSON escaping,
//! and UTF-8 repair (a character split across two chunks is joined, bytes that are not UTF-8
//! become U+FFFD). The stored recording keeps the exact bytes; only this view is lossy.

use crate::event::{Event, Kind};

/// Turns byte chunks into the escaped contents of a JSON string, without splitting a character
/// across events. It writes straight into the output: no intermediate copy.
#[derive(Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The start of a character that never got its end (the stream ended): U+FFFD, as a
    /// terminal shows it, or nothing.
    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.pending.clear();
        out.extend_from_slice("\u{fffd}".as_bytes());
        true
    }

    /// Appends `data` as escaped JSON string contents (invalid bytes become U+FFFD) to `out`.
    pub(crate) fn push_escaped(&mut self, data: &[u8], out: &mut Vec<u8>) {
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
pub(crate) fn escape_json_into(text: &str, out: &mut Vec<u8>) {
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

/// Events to asciicast lines, one recording at a time (it carries characters split across
/// events).
#[derive(Default)]
pub struct Cast {
    output: Utf8Stream,
    input: Utf8Stream,
}

impl Cast {
    /// Appends the line (or nothing) for `event` to `out`.
    pub fn event(&mut self, event: &Event<'_>, out: &mut Vec<u8>) {
        let t = event.micros as f64 / 1e6;
        let text = |out: &mut Vec<u8>, code: &str, prefix: &str, data: &[u8]| {
            use std::io::Write as _;
            let _ = write!(out, "[{t:.6},\"{code}\",\"");
            escape_json_into(prefix, out);
            escape_json_into(&String::from_utf8_lossy(data), out);
            out.extend_from_slice(b"\"]\n");
        };
        match event.kind {
            Kind::Header => {
                out.extend_from_slice(event.data);
                out.push(b'\n');
            }
            Kind::Output | Kind::Input => {
                use std::io::Write as _;
                let (code, stream) = if event.kind == Kind::Output {
                    ("o", &mut self.output)
                } else {
                    ("i", &mut self.input)
                };
                let before = out.len();
                let _ = write!(out, "[{t:.6},\"{code}\",\"");
                let text_start = out.len();
                stream.push_escaped(event.data, out);
                // Only the start of a character: it goes out with the next event.
                if out.len() == text_start {
                    out.truncate(before);
                } else {
                    out.extend_from_slice(b"\"]\n");
                }
            }
            Kind::Resize => {
                if let Some((cols, rows)) = event.size() {
                    text(out, "r", &format!("{cols}x{rows}"), b"");
                }
            }
            Kind::Exec => text(out, "m", "exec ", event.data),
            Kind::Sftp | Kind::Marker => text(out, "m", "", event.data),
            Kind::End => {
                for (code, stream) in [("o", &mut self.output), ("i", &mut self.input)] {
                    use std::io::Write as _;
                    let before = out.len();
                    let _ = write!(out, "[{t:.6},\"{code}\",\"");
                    if stream.finish(out) {
                        out.extend_from_slice(b"\"]\n");
                    } else {
                        out.truncate(before);
                    }
                }
                text(out, "m", "end: ", event.data)
            }
        }
    }
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
}
