//! Follows an SFTP conversation (draft-ietf-secsh-filexfer-02, what OpenSSH speaks) well enough to
//! record which files were read, written, removed or renamed, and how many bytes moved. Only the
//! packet headers matter; the data passes through untouched.

use std::collections::HashMap;

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
/// Larger packets are not buffered for parsing (OpenSSH never sends them); the observer gives up.
const MAX_PACKET: usize = 512 * 1024;

#[derive(Default)]
struct OpenFile {
    path: String,
    read: u64,
    written: u64,
}

#[derive(Default)]
pub struct SftpObserver {
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    opening: HashMap<u32, String>,
    reading: HashMap<u32, Vec<u8>>,
    files: HashMap<Vec<u8>, OpenFile>,
    broken: bool,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u32(&mut self) -> Option<u32> {
        let bytes = self.0.get(..4)?;
        self.0 = self.0.get(4..)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let bytes = self.0.get(..8)?;
        self.0 = self.0.get(8..)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let s = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(s)
    }
    fn text(&mut self) -> Option<String> {
        self.string()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// Splits complete packets off the front of `buf`.
fn packets(buf: &mut Vec<u8>) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(len) = buf.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
            return Some(out);
        };
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_PACKET {
            return None;
        }
        if buf.len() < 4 + len {
            return Some(out);
        }
        out.push(buf.get(4..4 + len)?.to_vec());
        buf.drain(..4 + len);
    }
}

impl SftpObserver {
    /// Bytes the client sent; returns the events they complete.
    pub fn client_data(&mut self, data: &[u8]) -> Vec<String> {
        if self.broken {
            return Vec::new();
        }
        self.from_client.extend_from_slice(data);
        let Some(packets) = packets(&mut self.from_client) else {
            return self.give_up();
        };
        let mut events = Vec::new();
        for p in packets {
            let mut r = Reader(&p);
            let (Some(kind), Some(id)) = (r.u8(), r.u32()) else {
                continue;
            };
            match kind {
                FXP_OPEN => {
                    if let Some(path) = r.text() {
                        self.opening.insert(id, path);
                    }
                }
                FXP_READ => {
                    if let Some(h) = r.string() {
                        self.reading.insert(id, h.to_vec());
                    }
                }
                FXP_WRITE => {
                    if let (Some(h), Some(_offset), Some(data)) =
                        (r.string().map(<[u8]>::to_vec), r.u64(), r.string())
                    {
                        if let Some(f) = self.files.get_mut(&h) {
                            f.written += data.len() as u64;
                        }
                    }
                }
                FXP_CLOSE => {
                    if let Some(f) = r.string().and_then(|h| self.files.remove(h)) {
                        if f.written > 0 {
                            events.push(format!("sftp write {} ({} bytes)", f.path, f.written));
                        }
                        if f.read > 0 || f.written == 0 {
                            events.push(format!("sftp read {} ({} bytes)", f.path, f.read));
                        }
                    }
                }
                FXP_REMOVE => events.extend(r.text().map(|p| format!("sftp remove {p}"))),
                FXP_MKDIR => events.extend(r.text().map(|p| format!("sftp mkdir {p}"))),
                FXP_RMDIR => events.extend(r.text().map(|p| format!("sftp rmdir {p}"))),
                FXP_RENAME => {
                    if let (Some(a), Some(b)) = (r.text(), r.text()) {
                        events.push(format!("sftp rename {a} -> {b}"));
                    }
                }
                _ => {}
            }
        }
        events
    }

    /// Bytes the server sent back.
    pub fn server_data(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        self.from_server.extend_from_slice(data);
        let Some(packets) = packets(&mut self.from_server) else {
            self.give_up();
            return;
        };
        for p in packets {
            let mut r = Reader(&p);
            let (Some(kind), Some(id)) = (r.u8(), r.u32()) else {
                continue;
            };
            match kind {
                FXP_HANDLE => {
                    if let (Some(path), Some(h)) = (self.opening.remove(&id), r.string()) {
                        self.files.insert(
                            h.to_vec(),
                            OpenFile {
                                path,
                                ..Default::default()
                            },
                        );
                    }
                }
                FXP_DATA => {
                    if let (Some(h), Some(data)) = (self.reading.remove(&id), r.string()) {
                        if let Some(f) = self.files.get_mut(&h) {
                            f.read += data.len() as u64;
                        }
                    }
                }
                _ => {
                    self.opening.remove(&id);
                    self.reading.remove(&id);
                }
            }
        }
    }

    fn give_up(&mut self) -> Vec<String> {
        self.broken = true;
        self.from_client = Vec::new();
        self.from_server = Vec::new();
        vec!["sftp: unparseable stream, file operations no longer itemised".into()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn packet(kind: u8, id: u32, body: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![kind];
        p.extend_from_slice(&id.to_be_bytes());
        for b in body {
            p.extend_from_slice(b);
        }
        let mut out = (p.len() as u32).to_be_bytes().to_vec();
        out.extend(p);
        out
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    #[test]
    fn follows_an_upload_split_across_chunks() {
        let mut o = SftpObserver::default();
        let open = packet(
            FXP_OPEN,
            1,
            &[
                &string(b"/tmp/f"),
                &0x1au32.to_be_bytes(),
                &0u32.to_be_bytes(),
            ],
        );
        assert!(o.client_data(&open).is_empty());
        o.server_data(&packet(FXP_HANDLE, 1, &[&string(b"h1")]));
        let write = packet(
            FXP_WRITE,
            2,
            &[&string(b"h1"), &0u64.to_be_bytes(), &string(&[7u8; 1000])],
        );
        let (a, b) = write.split_at(10);
        assert!(o.client_data(a).is_empty());
        assert!(o.client_data(b).is_empty());
        let events = o.client_data(&packet(FXP_CLOSE, 3, &[&string(b"h1")]));
        assert_eq!(events, vec!["sftp write /tmp/f (1000 bytes)".to_string()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut o = SftpObserver::default();
        o.client_data(&[0, 0, 0, 3, 3, 0]);
        o.server_data(&[0xff; 10]);
        o.client_data(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(o.client_data(b"more").is_empty());
    }
}
