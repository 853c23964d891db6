//! Follows an SFTP conversation (draft-ietf-secsh-filexfer-02, what OpenSSH speaks, and OpenSSH's
//! extensions) well enough to record every request that changes the target, with its paths and its
//! outcome, and how many bytes each file read or write moved. Only the packet headers matter; the
//! data passes through untouched.

use std::collections::HashMap;

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_SYMLINK: u8 = 20;
const FXP_EXTENDED: u8 = 200;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
/// Larger packets are not buffered for parsing (OpenSSH never sends them); the observer gives up.
const MAX_PACKET: usize = 512 * 1024;
/// Change requests waiting for their reply; a client that never reads replies cannot grow this.
const MAX_PENDING: usize = 4096;

/// OpenSSH's extensions that only read (anything else an extension does is recorded).
const READ_ONLY_EXTENSIONS: &[&str] = &[
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "home-directory",
    "users-groups-by-id@openssh.com",
    "fsync@openssh.com",
];

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
    /// Change requests by id, described, until the server's status says how they went.
    changing: HashMap<u32, String>,
    broken: bool,
}

/// What an SSH_FXP_ATTRS structure sets, e.g. `mode 0644, owner 0:0`.
fn describe_attrs(r: &mut Reader<'_>) -> String {
    let Some(flags) = r.u32() else {
        return "attributes".into();
    };
    let mut parts = Vec::new();
    if flags & 0x1 != 0 {
        if let Some(size) = r.u64() {
            parts.push(format!("size {size}"));
        }
    }
    if flags & 0x2 != 0 {
        if let (Some(uid), Some(gid)) = (r.u32(), r.u32()) {
            parts.push(format!("owner {uid}:{gid}"));
        }
    }
    if flags & 0x4 != 0 {
        if let Some(mode) = r.u32() {
            parts.push(format!("mode {:04o}", mode & 0o7777));
        }
    }
    if flags & 0x8 != 0 {
        if let (Some(atime), Some(mtime)) = (r.u32(), r.u32()) {
            parts.push(format!("atime {atime} mtime {mtime}"));
        }
    }
    if parts.is_empty() {
        "attributes".into()
    } else {
        parts.join(", ")
    }
}

/// SSH_FX_* status codes, as the draft names them.
fn status_text(code: u32) -> String {
    match code {
        2 => "no such file".into(),
        3 => "permission denied".into(),
        4 => "failure".into(),
        5 => "bad message".into(),
        8 => "operation unsupported".into(),
        other => format!("status {other}"),
    }
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
                _ => {
                    if let Some(change) = self.describe_change(kind, &mut r) {
                        if self.changing.len() < MAX_PENDING {
                            self.changing.insert(id, change);
                        } else {
                            // Recorded now, unconfirmed, rather than not at all.
                            events.push(format!("{change} (reply not followed)"));
                        }
                    }
                }
            }
        }
        events
    }

    /// Bytes the server sent back; returns the change requests whose outcome they report.
    pub fn server_data(&mut self, data: &[u8]) -> Vec<String> {
        if self.broken {
            return Vec::new();
        }
        self.from_server.extend_from_slice(data);
        let Some(packets) = packets(&mut self.from_server) else {
            return self.give_up();
        };
        let mut events = Vec::new();
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
                    if let Some(change) = self.changing.remove(&id) {
                        events.push(match (kind, r.u32()) {
                            (FXP_STATUS, Some(0)) => change,
                            (FXP_STATUS, Some(code)) => {
                                format!("{change}: failed ({})", status_text(code))
                            }
                            // An extension's own reply (e.g. copy-data's) means it was done.
                            _ => change,
                        });
                    }
                }
            }
        }
        events
    }

    /// The change requests still waiting for a reply when the session ended.
    pub fn finish(&mut self) -> Vec<String> {
        let mut left: Vec<(u32, String)> = self.changing.drain().collect();
        left.sort_by_key(|(id, _)| *id);
        left.into_iter()
            .map(|(_, change)| format!("{change} (no reply before the session ended)"))
            .collect()
    }

    /// The event a request that changes the target will be recorded as; None for reads.
    fn describe_change(&self, kind: u8, r: &mut Reader<'_>) -> Option<String> {
        let path_of = |h: &[u8]| {
            self.files
                .get(h)
                .map_or_else(|| "(unknown handle)".to_owned(), |f| f.path.clone())
        };
        match kind {
            FXP_SETSTAT => {
                let path = r.text()?;
                Some(format!("sftp setstat {path} ({})", describe_attrs(r)))
            }
            FXP_FSETSTAT => {
                let path = path_of(r.string()?);
                Some(format!("sftp setstat {path} ({})", describe_attrs(r)))
            }
            FXP_REMOVE => Some(format!("sftp remove {}", r.text()?)),
            FXP_MKDIR => Some(format!("sftp mkdir {}", r.text()?)),
            FXP_RMDIR => Some(format!("sftp rmdir {}", r.text()?)),
            FXP_RENAME => {
                let (from, to) = (r.text()?, r.text()?);
                Some(format!("sftp rename {from} -> {to}"))
            }
            // OpenSSH sends the link's target first and the new link's path second (the
            // reverse of the draft), and every OpenSSH-compatible server expects that order.
            FXP_SYMLINK => {
                let (target, link) = (r.text()?, r.text()?);
                Some(format!("sftp symlink {link} -> {target}"))
            }
            FXP_EXTENDED => {
                let name = r.text()?;
                match name.as_str() {
                    "posix-rename@openssh.com" => {
                        let (from, to) = (r.text()?, r.text()?);
                        Some(format!("sftp rename {from} -> {to} (posix)"))
                    }
                    "hardlink@openssh.com" => {
                        let (target, link) = (r.text()?, r.text()?);
                        Some(format!("sftp hardlink {link} -> {target}"))
                    }
                    "lsetstat@openssh.com" => {
                        let path = r.text()?;
                        Some(format!(
                            "sftp setstat {path} ({}, not following links)",
                            describe_attrs(r)
                        ))
                    }
                    "copy-data" => {
                        let from = path_of(r.string()?);
                        let (_offset, len) = (r.u64()?, r.u64()?);
                        let to = path_of(r.string()?);
                        Some(format!("sftp copy-data {from} -> {to} ({len} bytes)"))
                    }
                    n if READ_ONLY_EXTENSIONS.contains(&n) => None,
                    other => Some(format!("sftp extension {other}")),
                }
            }
            _ => None,
        }
    }

    fn give_up(&mut self) -> Vec<String> {
        self.broken = true;
        self.from_client = Vec::new();
        self.from_server = Vec::new();
        let mut events = self.finish();
        events.push("sftp: unparseable stream, file operations no longer itemised".into());
        events
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

    fn status(id: u32, code: u32) -> Vec<u8> {
        packet(
            FXP_STATUS,
            id,
            &[&code.to_be_bytes(), &string(b""), &string(b"")],
        )
    }

    #[test]
    fn changes_are_recorded_with_their_outcome() {
        let mut o = SftpObserver::default();
        let requests = [
            packet(FXP_RENAME, 1, &[&string(b"/a"), &string(b"/b")]),
            packet(
                FXP_EXTENDED,
                2,
                &[
                    &string(b"posix-rename@openssh.com"),
                    &string(b"/b"),
                    &string(b"/c"),
                ],
            ),
            packet(
                FXP_SETSTAT,
                3,
                &[
                    &string(b"/c"),
                    &0x4u32.to_be_bytes(),
                    &0o100600u32.to_be_bytes(),
                ],
            ),
            packet(FXP_SYMLINK, 4, &[&string(b"/c"), &string(b"/link")]),
            packet(
                FXP_EXTENDED,
                5,
                &[
                    &string(b"hardlink@openssh.com"),
                    &string(b"/c"),
                    &string(b"/hard"),
                ],
            ),
            packet(FXP_REMOVE, 6, &[&string(b"/nope")]),
            packet(
                FXP_EXTENDED,
                7,
                &[&string(b"statvfs@openssh.com"), &string(b"/")],
            ),
            packet(FXP_EXTENDED, 8, &[&string(b"frobnicate@example.com")]),
            packet(FXP_MKDIR, 9, &[&string(b"/d"), &0u32.to_be_bytes()]),
        ];
        let all: Vec<u8> = requests.concat();
        assert!(
            o.client_data(&all).is_empty(),
            "recorded once the server answers"
        );
        let replies = [
            status(1, 0),
            status(2, 0),
            status(3, 0),
            status(4, 0),
            status(5, 0),
            status(6, 2),
            status(7, 0),
            status(8, 8),
        ]
        .concat();
        let events = o.server_data(&replies);
        assert_eq!(
            events,
            vec![
                "sftp rename /a -> /b",
                "sftp rename /b -> /c (posix)",
                "sftp setstat /c (mode 0600)",
                "sftp symlink /link -> /c",
                "sftp hardlink /hard -> /c",
                "sftp remove /nope: failed (no such file)",
                "sftp extension frobnicate@example.com: failed (operation unsupported)",
            ]
        );
        assert_eq!(
            o.finish(),
            vec!["sftp mkdir /d (no reply before the session ended)"]
        );
    }

    #[test]
    fn fsetstat_names_the_open_file() {
        let mut o = SftpObserver::default();
        o.client_data(&packet(
            FXP_OPEN,
            1,
            &[&string(b"/f"), &0x1au32.to_be_bytes(), &0u32.to_be_bytes()],
        ));
        o.server_data(&packet(FXP_HANDLE, 1, &[&string(b"h")]));
        o.client_data(&packet(
            FXP_FSETSTAT,
            2,
            &[
                &string(b"h"),
                &0x2u32.to_be_bytes(),
                &0u32.to_be_bytes(),
                &5u32.to_be_bytes(),
            ],
        ));
        assert_eq!(
            o.server_data(&status(2, 0)),
            vec!["sftp setstat /f (owner 0:5)"]
        );
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
