//! The break-glass file: a standard age file (age-encryption.org/v1) encrypted to the epoch's
//! X25519 recipient, with one more header stanza that says, in clear text, what the file is:
//!
//! ```text
//! age-encryption.org/v1
//! -> cofre-breakglass v1 instance=3f9a0c1d2e4b5a69 epoch=2 threshold=2 written=2024-05-01T12:34:56Z targets=40 credentials=120 versions=310 recipient=age1... audit_seq=812 audit_hash=<hex> audit_mac=<hex>
//!
//! -> X25519 ...
//! ...
//! --- <header MAC>
//! <encrypted payload>
//! ```
//!
//! age tools skip stanzas of a type they do not know, so `age -d -i identity.txt FILE` opens the
//! file as usual; Cofre reads the stanza before asking for shares, to say which epoch's shares to
//! bring. The header MAC covers the stanza, so once the file decrypts, the clear header is proven
//! to be the one it was written with (and the JSON inside repeats it, and is checked against it).
//! `audit_*` is the audit chain's head when the file was written, with the server's MAC of it:
//! one more anchor outside the database, which `audit verify` compares the chain with (files
//! written before it existed have none).
//!
//! Inside: JSON, one target per line:
//! `{"format":"cofre-breakglass","version":1,"instance":..,"epoch":..,"written_at":..,
//!   "counts":{"targets":..,"credentials":..,"versions":..},"targets":[{"name":..,"host":..,
//!   "port":..,"protocol":..,"tags":[..],"credentials":[{"account":..,"kind":..,
//!   "current_version":..,"versions":[{"version":1,"kind":..,"secret":..,"created_at":..,
//!   "created_by":..}, ...]}]}, ...]}`

use crate::key::{EpochSecret, Secret};
use crate::{Error, Result};
use age_core::format::{FileKey, Stanza};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use zeroize::Zeroizing;

pub const STANZA_TAG: &str = "cofre-breakglass";
pub const FORMAT: &str = "cofre-breakglass";
pub const FORMAT_VERSION: u32 = 1;
const AGE_MAGIC: &str = "age-encryption.org/v1";
/// The clear header is read from at most this many bytes at the start of the file.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// File names end so.
pub const FILE_EXTENSION: &str = "cofre";

/// What the clear header says. `written_at` is RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub instance: String,
    pub epoch: u32,
    /// Shares needed to open.
    pub threshold: u8,
    pub written_at: String,
    pub targets: u64,
    pub credentials: u64,
    pub versions: u64,
    /// The epoch's age recipient (`age1...`).
    pub recipient: String,
    /// The audit chain's head as the server signed it when the file was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditHead>,
}

/// The audit chain's newest entry (`seq`, `hash`) and the server's MAC of it (hex HMAC-SHA256
/// under a key derived from the master key): a head anchored outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
    pub mac: String,
}

/// A hash or MAC in the clear header: lowercase hex of a SHA-256 size.
fn is_hex_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Header {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("v{FORMAT_VERSION}"),
            format!("instance={}", self.instance),
            format!("epoch={}", self.epoch),
            format!("threshold={}", self.threshold),
            format!("written={}", self.written_at),
            format!("targets={}", self.targets),
            format!("credentials={}", self.credentials),
            format!("versions={}", self.versions),
            format!("recipient={}", self.recipient),
        ];
        if let Some(head) = &self.audit_head {
            args.push(format!("audit_seq={}", head.seq));
            args.push(format!("audit_hash={}", head.hash));
            args.push(format!("audit_mac={}", head.mac));
        }
        args
    }

    fn from_args(args: &[&str]) -> Result<Header> {
        let bad = |why: String| Error::NotABackup(format!("its cofre-breakglass header {why}"));
        match args.first() {
            Some(&"v1") => {}
            Some(v) => {
                return Err(bad(format!(
                    "is of format {v}; this version of Cofre reads v{FORMAT_VERSION}"
                )))
            }
            None => return Err(bad("is empty".into())),
        }
        let get = |key: &str| -> Result<&str> {
            args.iter()
                .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| bad(format!("lacks {key}=")))
        };
        let num = |key: &str| -> Result<u64> {
            get(key)?
                .parse()
                .map_err(|_| bad(format!("has a {key} that is not a number")))
        };
        let epoch = u32::try_from(num("epoch")?).map_err(|_| bad("has a bad epoch".into()))?;
        let threshold =
            u8::try_from(num("threshold")?).map_err(|_| bad("has a bad threshold".into()))?;
        let audit_head = match (
            get("audit_seq").ok(),
            get("audit_hash").ok(),
            get("audit_mac").ok(),
        ) {
            (None, None, None) => None,
            (Some(seq), Some(hash), Some(mac)) => {
                let seq: i64 = seq
                    .parse()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("has an audit_seq that is not a number".into()))?;
                if !is_hex_digest(hash) || !is_hex_digest(mac) {
                    return Err(bad(
                        "has an audit_hash or audit_mac that is not 64 hex digits".into(),
                    ));
                }
                Some(AuditHead {
                    seq,
                    hash: hash.to_owned(),
                    mac: mac.to_owned(),
                })
            }
            _ => {
                return Err(bad(
                    "has only part of the audit head (audit_seq, audit_hash, audit_mac)".into(),
                ))
            }
        };
        let header = Header {
            instance: get("instance")?.to_owned(),
            epoch,
            threshold,
            written_at: get("written")?.to_owned(),
            targets: num("targets")?,
            credentials: num("credentials")?,
            versions: num("versions")?,
            recipient: get("recipient")?.to_owned(),
            audit_head,
        };
        if age::x25519::Recipient::from_str(&header.recipient).is_err() {
            return Err(bad(
                "has a recipient that is not an age X25519 recipient".into()
            ));
        }
        Ok(header)
    }

    /// Reads the clear header from the start of an age file.
    pub fn parse(data: &[u8]) -> Result<Header> {
        let head = &data[..data.len().min(MAX_HEADER_BYTES)];
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n');
        if lines.next() != Some(AGE_MAGIC) {
            return Err(Error::NotABackup(
                "this is not a Cofre break-glass file: it is not an age-encrypted file".into(),
            ));
        }
        for line in lines {
            if line.starts_with("--- ") {
                break;
            }
            if let Some(stanza) = line.strip_prefix("-> ") {
                let mut words = stanza.split(' ');
                if words.next() == Some(STANZA_TAG) {
                    let args: Vec<&str> = words.collect();
                    return Header::from_args(&args);
                }
            }
        }
        Err(Error::NotABackup(
            "this age file is not a Cofre break-glass file (its header has no cofre-breakglass stanza)"
                .into(),
        ))
    }

    /// Reads the clear header of a file on disk without reading the rest.
    pub fn read_file(path: &Path) -> Result<Header> {
        let f = std::fs::File::open(path).map_err(|e| Error::io_path("cannot open", path, e))?;
        let mut head = Vec::with_capacity(4096);
        f.take(MAX_HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io_path("cannot read", path, e))?;
        Header::parse(&head)
    }

    /// `cofre-breakglass-20240501T123456Z-<instance>-e<epoch>.cofre`: sorts by time, names the epoch.
    pub fn file_name(&self) -> String {
        let compact: String = self
            .written_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        format!(
            "cofre-breakglass-{compact}-{}-e{}.{FILE_EXTENSION}",
            self.instance, self.epoch
        )
    }

    /// One line for people: what the file is and what it takes to open it.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "break-glass file of instance {}, key epoch {}, written {}: {} credentials ({} versions) on {} targets; opening it takes {} shares of epoch {}",
            self.instance,
            self.epoch,
            self.written_at,
            self.credentials,
            self.versions,
            self.targets,
            self.threshold,
            self.epoch
        );
        if let Some(head) = &self.audit_head {
            text.push_str(&format!(
                "; audit chain head then: entry {} (hash {})",
                head.seq, head.hash
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub targets: u64,
    pub credentials: u64,
    pub versions: u64,
}

/// The decrypted contents.
#[derive(Debug, Serialize, Deserialize)]
pub struct Contents {
    pub format: String,
    pub version: u32,
    pub instance: String,
    pub epoch: u32,
    pub written_at: String,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditHead>,
    pub targets: Vec<TargetEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetEntry {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: String,
    pub tags: Vec<String>,
    pub credentials: Vec<CredentialEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialEntry {
    pub account: String,
    /// `password` or `private_key` (of the current version).
    pub kind: String,
    pub current_version: i64,
    /// Oldest first.
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: i64,
    pub kind: String,
    pub secret: Secret,
    pub created_at: String,
    pub created_by: String,
}

impl Contents {
    /// Counts what is actually in the file.
    pub fn actual_counts(&self) -> Counts {
        let mut c = Counts {
            targets: self.targets.len() as u64,
            ..Counts::default()
        };
        for t in &self.targets {
            c.credentials += t.credentials.len() as u64;
            for cr in &t.credentials {
                c.versions += cr.versions.len() as u64;
            }
        }
        c
    }
}

/// The extra header stanza, produced as if it were a recipient: it wraps nothing.
struct HeaderStanza(Vec<String>);

impl age::Recipient for HeaderStanza {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> std::result::Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: STANZA_TAG.to_owned(),
                args: self.0.clone(),
                body: Vec::new(),
            }],
            HashSet::new(),
        ))
    }
}

/// Writes a break-glass file as a stream, one target at a time, so the server never holds more
/// than one target's secrets in the clear. The header's counts are promised up front and checked
/// at [`Writer::finish`]: a file whose contents disagree with its header is never completed.
pub struct Writer<W: Write> {
    stream: age::stream::StreamWriter<W>,
    header: Header,
    written: Counts,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: Header) -> Result<Writer<W>> {
        let recipient = age::x25519::Recipient::from_str(&header.recipient)
            .map_err(|e| Error::Encrypt(format!("recipient {}: {e}", header.recipient)))?;
        let stanza = HeaderStanza(header.to_args());
        let recipients: [&dyn age::Recipient; 2] = [&stanza, &recipient];
        let encryptor = age::Encryptor::with_recipients(recipients.into_iter())
            .map_err(|e| Error::Encrypt(e.to_string()))?;
        let mut stream = encryptor
            .wrap_output(out)
            .map_err(|e| Error::io("cannot write the file header", e))?;
        #[derive(Serialize)]
        struct Prelude<'a> {
            format: &'a str,
            version: u32,
            instance: &'a str,
            epoch: u32,
            written_at: &'a str,
            counts: Counts,
            #[serde(skip_serializing_if = "Option::is_none")]
            audit_head: &'a Option<AuditHead>,
        }
        let prelude = Prelude {
            format: FORMAT,
            version: FORMAT_VERSION,
            instance: &header.instance,
            epoch: header.epoch,
            written_at: &header.written_at,
            counts: Counts {
                targets: header.targets,
                credentials: header.credentials,
                versions: header.versions,
            },
            audit_head: &header.audit_head,
        };
        // The prelude object without its closing brace, then the targets array.
        let mut text = serde_json::to_string(&prelude)
            .map_err(|e| Error::Encrypt(format!("cannot serialise the prelude: {e}")))?;
        text.pop();
        text.push_str(",\"targets\":[\n");
        stream
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("cannot write the file", e))?;
        Ok(Writer {
            stream,
            header,
            written: Counts::default(),
        })
    }

    /// Appends one target with its credentials and all their versions.
    pub fn target(&mut self, target: &TargetEntry) -> Result<()> {
        let mut buf = Zeroizing::new(Vec::with_capacity(1024));
        if self.written.targets > 0 {
            buf.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut *buf, target)
            .map_err(|e| Error::Encrypt(format!("cannot serialise target {}: {e}", target.name)))?;
        self.stream
            .write_all(&buf)
            .map_err(|e| Error::io("cannot write the file", e))?;
        self.written.targets += 1;
        self.written.credentials += target.credentials.len() as u64;
        self.written.versions += target
            .credentials
            .iter()
            .map(|c| c.versions.len() as u64)
            .sum::<u64>();
        Ok(())
    }

    /// Closes the JSON and the age stream; refuses if the contents disagree with the header.
    pub fn finish(mut self) -> Result<W> {
        let promised = Counts {
            targets: self.header.targets,
            credentials: self.header.credentials,
            versions: self.header.versions,
        };
        if self.written != promised {
            return Err(Error::Corrupt(format!(
                "the header promised {promised:?} but {:?} were written",
                self.written
            )));
        }
        self.stream
            .write_all(b"\n]}\n")
            .map_err(|e| Error::io("cannot write the file", e))?;
        self.stream
            .finish()
            .map_err(|e| Error::io("cannot finish the file", e))
    }
}

/// Decrypts and checks a whole file (already read into memory) with the epoch's secret.
pub fn open(data: &[u8], secret: &EpochSecret) -> Result<(Header, Contents)> {
    let header = Header::parse(data)?;
    let identity = secret.identity()?;
    if identity.to_public().to_string() != header.recipient {
        return Err(Error::SharesDoNotCombine {
            epoch: header.epoch,
        });
    }
    let decryptor =
        age::Decryptor::new_buffered(data).map_err(|e| Error::Decrypt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| Error::Decrypt(e.to_string()))?;
    let mut plain = Zeroizing::new(Vec::with_capacity(data.len()));
    reader.read_to_end(&mut plain).map_err(|e| {
        Error::Decrypt(format!(
            "{e} (the file is truncated or was altered after it was written)"
        ))
    })?;
    let contents: Contents = serde_json::from_slice(&plain)
        .map_err(|e| Error::Corrupt(format!("the JSON inside does not parse: {e}")))?;
    check(&header, &contents)?;
    Ok((header, contents))
}

fn check(header: &Header, c: &Contents) -> Result<()> {
    let mismatch = |what: &str| {
        Err(Error::Corrupt(format!(
            "the {what} inside differs from the header's"
        )))
    };
    if c.format != FORMAT || c.version != FORMAT_VERSION {
        return Err(Error::Corrupt(format!(
            "unknown contents format {} v{}",
            c.format, c.version
        )));
    }
    if c.instance != header.instance {
        return mismatch("instance");
    }
    if c.epoch != header.epoch {
        return mismatch("epoch");
    }
    if c.written_at != header.written_at {
        return mismatch("time");
    }
    if c.audit_head != header.audit_head {
        return mismatch("audit head");
    }
    let announced = Counts {
        targets: header.targets,
        credentials: header.credentials,
        versions: header.versions,
    };
    if c.counts != announced {
        return mismatch("count");
    }
    if c.actual_counts() != announced {
        return Err(Error::Corrupt(format!(
            "the header says {announced:?} but the file holds {:?}",
            c.actual_counts()
        )));
    }
    Ok(())
}

/// Reads a file from disk and opens it.
pub fn open_file(path: &Path, secret: &EpochSecret) -> Result<(Header, Contents)> {
    let data = std::fs::read(path).map_err(|e| Error::io_path("cannot read", path, e))?;
    open(&data, secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::share::ceremony;

    pub(crate) fn sample_targets() -> Vec<TargetEntry> {
        let version = |v: i64, secret: &str| VersionEntry {
            version: v,
            kind: "password".into(),
            secret: Secret::new(secret.into()),
            created_at: format!("2024-05-0{v}T00:00:00Z"),
            created_by: "admin".into(),
        };
        vec![
            TargetEntry {
                name: "db01".into(),
                host: "10.0.0.5".into(),
                port: 22,
                protocol: "ssh".into(),
                tags: vec!["prod".into()],
                credentials: vec![
                    CredentialEntry {
                        account: "root".into(),
                        kind: "password".into(),
                        current_version: 2,
                        versions: vec![version(1, "old \"root\" pw"), version(2, "new-root-pw")],
                    },
                    CredentialEntry {
                        account: "deploy".into(),
                        kind: "private_key".into(),
                        current_version: 1,
                        versions: vec![VersionEntry {
                            kind: "private_key".into(),
                            ..version(1, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
                        }],
                    },
                ],
            },
            TargetEntry {
                name: "web01".into(),
                host: "web01.example".into(),
                port: 2222,
                protocol: "ssh".into(),
                tags: vec![],
                credentials: vec![],
            },
        ]
    }

    pub(crate) fn header_for(recipient: &str, targets: &[TargetEntry]) -> Header {
        let c = Contents {
            format: FORMAT.into(),
            version: 1,
            instance: String::new(),
            epoch: 0,
            written_at: String::new(),
            counts: Counts::default(),
            audit_head: None,
            targets: targets.to_vec(),
        }
        .actual_counts();
        Header {
            instance: "0123456789abcdef".into(),
            epoch: 4,
            threshold: 2,
            written_at: "2024-05-01T12:34:56Z".into(),
            targets: c.targets,
            credentials: c.credentials,
            versions: c.versions,
            recipient: recipient.into(),
            audit_head: Some(AuditHead {
                seq: 812,
                hash: "ab".repeat(32),
                mac: "c4".repeat(32),
            }),
        }
    }

    #[test]
    fn the_audit_head_is_in_the_clear_header_whole_or_not_at_all() {
        let c = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let (header, bytes) = write_sample(&c.recipient);
        let text = String::from_utf8_lossy(&bytes[..600]).into_owned();
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.ends_with(&format!(
                " audit_seq=812 audit_hash={} audit_mac={}",
                "ab".repeat(32),
                "c4".repeat(32)
            )),
            "{line}"
        );
        assert!(header
            .describe()
            .contains("audit chain head then: entry 812"));
        let (_, contents) = open(&bytes, &crate::combine(&c.shares).unwrap()).unwrap();
        assert_eq!(contents.audit_head, header.audit_head);
        // A file from before the audit head: no head, still a break-glass file.
        let old = line.split(" audit_seq=").next().unwrap();
        let parsed =
            Header::parse(format!("age-encryption.org/v1\n{old}\n--- x\n").as_bytes()).unwrap();
        assert_eq!(parsed.audit_head, None);
        for bad in [
            format!("{old} audit_seq=812"),
            format!(
                "{old} audit_seq=x audit_hash={} audit_mac={}",
                "ab".repeat(32),
                "c4".repeat(32)
            ),
            format!(
                "{old} audit_seq=1 audit_hash=zz audit_mac={}",
                "c4".repeat(32)
            ),
        ] {
            let err = Header::parse(format!("age-encryption.org/v1\n{bad}\n--- x\n").as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains("audit"), "{bad}: {err}");
        }
    }

    pub(crate) fn write_sample(recipient: &str) -> (Header, Vec<u8>) {
        let targets = sample_targets();
        let header = header_for(recipient, &targets);
        let mut w = Writer::new(Vec::new(), header.clone()).unwrap();
        for t in &targets {
            w.target(t).unwrap();
        }
        (header, w.finish().unwrap())
    }

    #[test]
    fn round_trip() {
        let c = ceremony("0123456789abcdef", 4, 2, 3).unwrap();
        let (header, bytes) = write_sample(&c.recipient);
        let text = String::from_utf8_lossy(&bytes[..200]);
        assert!(text.starts_with("age-encryption.org/v1\n-> cofre-breakglass v1 instance=0123456789abcdef epoch=4 threshold=2 written=2024-05-01T12:34:56Z targets=2 credentials=2 versions=3 recipient=age1"), "{text}");
        assert_eq!(Header::parse(&bytes).unwrap(), header);
        assert!(!String::from_utf8_lossy(&bytes).contains("new-root-pw"));

        let secret = crate::combine(&c.shares[1..3]).unwrap();
        let (h, contents) = open(&bytes, &secret).unwrap();
        assert_eq!(h, header);
        assert_eq!(contents.targets.len(), 2);
        let root = &contents.targets[0].credentials[0];
        assert_eq!(root.versions[0].secret.expose(), "old \"root\" pw");
        assert_eq!(root.versions[1].secret.expose(), "new-root-pw");
        assert!(contents.targets[0].credentials[1].versions[0]
            .secret
            .expose()
            .contains("\nabc\n"));
    }

    #[test]
    fn plain_age_library_decrypts_and_ignores_the_stanza() {
        let c = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let (_, bytes) = write_sample(&c.recipient);
        let identity = crate::combine(&c.shares).unwrap().identity().unwrap();
        let plain = age::decrypt(&identity, &bytes).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(
            v["targets"][0]["credentials"][0]["versions"][1]["secret"],
            "new-root-pw"
        );
        assert_eq!(v["counts"]["versions"], 3);
    }

    #[test]
    fn wrong_key_tampering_and_truncation_are_refused() {
        let c = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let other = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let (_, bytes) = write_sample(&c.recipient);
        let wrong = crate::combine(&other.shares).unwrap();
        assert!(matches!(
            open(&bytes, &wrong).unwrap_err(),
            Error::SharesDoNotCombine { epoch: 4 }
        ));
        let right = crate::combine(&c.shares).unwrap();
        // Editing the clear header (here: the count) breaks the header MAC.
        let text = bytes.clone();
        let pos = text
            .windows(13)
            .position(|w| w == b"credentials=2")
            .unwrap();
        let mut edited = text.clone();
        edited[pos + 12] = b'9';
        assert!(matches!(
            open(&edited, &right).unwrap_err(),
            Error::Decrypt(_)
        ));
        // Truncated.
        let cut = &bytes[..bytes.len() - 20];
        assert!(matches!(open(cut, &right).unwrap_err(), Error::Decrypt(_)));
        // Not an age file / not ours.
        assert!(matches!(
            Header::parse(b"hello").unwrap_err(),
            Error::NotABackup(_)
        ));
        let plain_age = age::encrypt(&right.identity().unwrap().to_public(), b"x").unwrap();
        let e = Header::parse(&plain_age).unwrap_err();
        assert!(e.to_string().contains("no cofre-breakglass stanza"), "{e}");
    }

    #[test]
    fn writer_refuses_counts_that_differ_from_the_header() {
        let c = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let targets = sample_targets();
        let mut header = header_for(&c.recipient, &targets);
        header.versions += 1;
        let mut w = Writer::new(Vec::new(), header).unwrap();
        for t in &targets {
            w.target(t).unwrap();
        }
        assert!(matches!(w.finish().unwrap_err(), Error::Corrupt(_)));
    }

    #[test]
    fn file_name_sorts_by_time_and_names_the_epoch() {
        let h = header_for("age1x", &[]);
        assert_eq!(
            h.file_name(),
            "cofre-breakglass-20240501T123456Z-0123456789abcdef-e4.cofre"
        );
    }
}
