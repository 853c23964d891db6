//! What a SIEM receives: a destination's address (`tcp://`, `tls://`, `udp://HOST:PORT`), and an
//! audit entry as one syslog message, RFC 5424 with structured data or CEF, framed for TCP with
//! octet counting (RFC 6587). Pure text work; the delivery task in cofre-app does the I/O.
//!
//! Every message carries the entry's sequence number, hash and previous hash, so the SIEM can
//! de-duplicate what at-least-once delivery sends twice and check the chain itself.

use crate::audit::AuditRecord;
use crate::FieldError;

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
    /// RFC 5425: octet counting inside TLS.
    Tls,
    /// RFC 5426: one message per datagram.
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Udp => "udp",
        }
    }
}

/// What the message looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 with the entry in structured data and as JSON in MSG.
    Rfc5424,
    /// ArcSight CEF as the MSG of an RFC 5424 header.
    Cef,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Cef => "cef",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Format, FieldError> {
        match s {
            "rfc5424" => Ok(Format::Rfc5424),
            "cef" => Ok(Format::Cef),
            _ => Err(FieldError::new(field, "must be rfc5424 or cef")),
        }
    }
}

/// A destination's address, parsed from `SCHEME://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub transport: Transport,
    /// A DNS name, an IPv4 address, or an IPv6 address (written `[..]` in the URL, kept bare).
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn parse(field: &str, url: &str) -> Result<Address, FieldError> {
        let bad = |why: &str| FieldError::new(field, why.to_owned());
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("must look like tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT")
        })?;
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            "udp" => Transport::Udp,
            _ => return Err(bad("the scheme must be tcp, tls or udp")),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 address is written [ADDR]:PORT"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between [ and ]"));
            }
            (h, p)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| bad("a port is required (HOST:PORT)"))?
        };
        if host.is_empty()
            || host.len() > 253
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(bad("the host must be a DNS name or an IP address"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number between 1 and 65535"))?;
        Ok(Address {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

/// RFC 5424 facility 13, "log audit".
const FACILITY_LOG_AUDIT: u8 = 13;
/// The SD-ID's enterprise number: 32473 is the one RFC 5612 reserves for documentation, used
/// until Cofre has a registered Private Enterprise Number.
pub const SD_ID: &str = "cofre@32473";

fn severity(outcome: &str) -> u8 {
    match outcome {
        "ok" => 5,     // notice
        "denied" => 4, // warning
        _ => 3,        // error: failed, or anything unexpected
    }
}

/// A header field of RFC 5424 (HOSTNAME, APP-NAME, MSGID): printable US-ASCII without spaces,
/// at most `max` characters; `-` (NILVALUE) when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// PARAM-VALUE escaping of RFC 5424 section 6.3.3: `"`, `\` and `]` are escaped with `\`.
pub fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The entry as JSON, with the same fields the chain's hash covers (and the hash), so a SIEM can
/// recompute it.
fn entry_json(r: &AuditRecord) -> String {
    serde_json::json!({
        "seq": r.seq,
        "ts": r.ts,
        "actor": r.actor,
        "action": r.action,
        "object": r.object,
        "outcome": r.outcome,
        "details": r.details,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
    .to_string()
}

/// `<PRI>1 TIMESTAMP HOSTNAME cofre - MSGID`: the header both formats share.
fn header(r: &AuditRecord, hostname: &str) -> String {
    let pri = u16::from(FACILITY_LOG_AUDIT) * 8 + u16::from(severity(&r.outcome));
    format!(
        "<{pri}>1 {ts} {host} cofre - {msgid}",
        ts = header_field(&r.ts, 64),
        host = header_field(hostname, 255),
        msgid = header_field(&r.action, 32),
    )
}

/// One RFC 5424 message: the entry in structured data (`[cofre@32473 seq=.. hash=.. ...]`) and
/// the whole entry as JSON in MSG (UTF-8, marked with the BOM as section 6.4 asks).
pub fn rfc5424(r: &AuditRecord, hostname: &str) -> String {
    let sd = format!(
        "[{SD_ID} seq=\"{seq}\" hash=\"{hash}\" prev_hash=\"{prev}\" actor=\"{actor}\" action=\"{action}\" object=\"{object}\" outcome=\"{outcome}\"]",
        seq = r.seq,
        hash = sd_escape(&r.hash),
        prev = sd_escape(&r.prev_hash),
        actor = sd_escape(&r.actor),
        action = sd_escape(&r.action),
        object = sd_escape(&r.object),
        outcome = sd_escape(&r.outcome),
    );
    format!("{} {sd} \u{feff}{}", header(r, hostname), entry_json(r))
}

/// CEF header field escaping: `\` and `|` get a backslash; a line break would end the record,
/// so it becomes a space.
pub fn cef_header_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// CEF extension value escaping: `\` and `=` get a backslash, line breaks are written `\n` and
/// `\r` (CEF's rules; `|` needs none in the extension).
pub fn cef_value_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// CEF's `rt`: milliseconds since the epoch (the entry's RFC 3339 text if it does not parse).
fn cef_time(ts: &str) -> String {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).to_string())
        .unwrap_or_else(|_| ts.to_owned())
}

fn cef_severity(outcome: &str) -> u8 {
    match outcome {
        "ok" => 3,
        "denied" => 6,
        _ => 8,
    }
}

/// The CEF record alone: `CEF:0|Cofre|Cofre|VERSION|ACTION|ACTION|SEVERITY|EXTENSION`, where the
/// extension carries the sequence (`cn1`), hash (`cs1`), previous hash (`cs2`), object (`cs3`),
/// details as JSON (`cs4`), actor (`suser`), action (`act`), outcome and the time (`rt`).
pub fn cef_record(r: &AuditRecord, version: &str) -> String {
    let ext: [(&str, String); 15] = [
        ("rt", cef_time(&r.ts)),
        ("suser", r.actor.clone()),
        ("act", r.action.clone()),
        ("outcome", r.outcome.clone()),
        ("externalId", r.seq.to_string()),
        ("cn1Label", "seq".into()),
        ("cn1", r.seq.to_string()),
        ("cs1Label", "hash".into()),
        ("cs1", r.hash.clone()),
        ("cs2Label", "prev_hash".into()),
        ("cs2", r.prev_hash.clone()),
        ("cs3Label", "object".into()),
        ("cs3", r.object.clone()),
        ("cs4Label", "details".into()),
        ("cs4", r.details.to_string()),
    ];
    let ext: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", cef_value_escape(v)))
        .collect();
    format!(
        "CEF:0|Cofre|Cofre|{version}|{id}|{name}|{sev}|{ext}",
        version = cef_header_escape(version),
        id = cef_header_escape(&r.action),
        name = cef_header_escape(&r.action),
        sev = cef_severity(&r.outcome),
        ext = ext.join(" "),
    )
}

/// One CEF message over syslog: the RFC 5424 header, no structured data, the CEF record as MSG.
pub fn cef(r: &AuditRecord, hostname: &str, version: &str) -> String {
    format!("{} - {}", header(r, hostname), cef_record(r, version))
}

/// The message for `format`.
pub fn message(format: Format, r: &AuditRecord, hostname: &str, version: &str) -> String {
    match format {
        Format::Rfc5424 => rfc5424(r, hostname),
        Format::Cef => cef(r, hostname, version),
    }
}

/// RFC 6587 octet counting (also RFC 5425's framing): `LENGTH SP MESSAGE`.
pub fn octet_frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(actor: &str, object: &str, details: serde_json::Value) -> AuditRecord {
        AuditRecord {
            seq: 42,
            ts: "2026-12-02T03:51:02.123Z".into(),
            actor: actor.into(),
            action: "credential.reveal".into(),
            object: object.into(),
            outcome: "ok".into(),
            details,
            prev_hash: "ab".repeat(32),
            hash: "cd".repeat(32),
        }
    }

    /// A CEF parser as a SIEM's would be: the header split at unescaped `|`, the extension at
    /// ` KEY=` where `=` is unescaped, values unescaped.
    fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let body = line.strip_prefix("CEF:").unwrap();
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = body.chars();
        while fields.len() < 7 {
            match chars.next().unwrap() {
                '\\' => cur.push(chars.next().unwrap()),
                '|' => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        let ext: String = chars.collect();
        // Split the extension into raw `key=value` parts at unescaped `=`.
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut raw = String::new();
        let mut key: Option<String> = None;
        let mut it = ext.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\\' => {
                    raw.push('\\');
                    raw.push(it.next().unwrap());
                }
                '=' => {
                    // The key is the last word of what came before.
                    let (before, k) = match raw.rfind(' ') {
                        Some(i) => (raw[..i].to_owned(), raw[i + 1..].to_owned()),
                        None => (String::new(), raw.clone()),
                    };
                    if let Some(prev) = key.take() {
                        pairs.push((prev, before));
                    }
                    key = Some(k);
                    raw.clear();
                }
                c => raw.push(c),
            }
        }
        if let Some(k) = key {
            pairs.push((k, raw));
        }
        let unescape = |v: &str| {
            let mut out = String::new();
            let mut it = v.chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    match it.next().unwrap() {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        o => out.push(o),
                    }
                } else {
                    out.push(c);
                }
            }
            out
        };
        (
            fields,
            pairs.into_iter().map(|(k, v)| (k, unescape(&v))).collect(),
        )
    }

    #[test]
    fn addresses_parse_and_bad_ones_say_why() {
        let a = Address::parse("syslog", "tls://siem.corp:6514").unwrap();
        assert_eq!(
            (a.transport, a.host.as_str(), a.port),
            (Transport::Tls, "siem.corp", 6514)
        );
        let a = Address::parse("syslog", "udp://[2001:db8::9]:514").unwrap();
        assert_eq!(
            (a.transport, a.host.as_str()),
            (Transport::Udp, "2001:db8::9")
        );
        assert_eq!(
            Address::parse("syslog", "tcp://10.0.0.9:514").unwrap().port,
            514
        );
        for bad in [
            "siem.corp:514",
            "http://x:1",
            "tcp://x",
            "tcp://x:0",
            "tcp://x:99999",
            "tcp://:514",
            "tcp://a b:514",
            "tcp://x/y:514",
            "udp://[zz]:514",
        ] {
            let e = Address::parse("syslog", bad).unwrap_err();
            assert_eq!(e.field, "syslog", "{bad}");
        }
    }

    #[test]
    fn rfc5424_carries_sequence_hash_and_the_entry() {
        let r = record(
            "ali\"ce]",
            "credential:db01/root",
            serde_json::json!({"reason": "x"}),
        );
        let m = rfc5424(&r, "cofre-1");
        assert!(
            m.starts_with("<109>1 2026-12-02T03:51:02.123Z cofre-1 cofre - credential.reveal [cofre@32473 seq=\"42\" hash=\""),
            "{m}"
        );
        assert!(m.contains(r#"actor="ali\"ce\]""#), "{m}");
        let json = m.split_once('\u{feff}').unwrap().1;
        let back: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back["seq"], 42);
        assert_eq!(back["hash"], r.hash);
        assert_eq!(back["details"]["reason"], "x");
        let denied = AuditRecord {
            outcome: "denied".into(),
            ..r.clone()
        };
        assert!(rfc5424(&denied, "h").starts_with("<108>1 "));
        let framed = octet_frame("héllo");
        assert_eq!(framed, b"6 h\xc3\xa9llo");
    }

    #[test]
    fn cef_escapes_pipes_equals_backslashes_and_newlines() {
        let r = AuditRecord {
            action: "a|b\\c".into(),
            ..record(
                "bob=1",
                "x|y\\z\nw\r=",
                serde_json::json!({"k": "v=1|2\\3\n"}),
            )
        };
        let line = cef_record(&r, "0.1|0");
        assert!(
            line.starts_with(r"CEF:0|Cofre|Cofre|0.1\|0|a\|b\\c|a\|b\\c|3|"),
            "{line}"
        );
        assert!(line.contains(r"suser=bob\=1 "), "{line}");
        assert!(line.contains(r"cs3=x|y\\z\nw\r\="), "{line}");
        assert!(!line.contains('\n') && !line.contains('\r'));
        let (header, ext) = parse_cef(&line);
        assert_eq!(header[4], "a|b\\c");
        let get = |k: &str| ext.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("cs3"), r.object);
        assert_eq!(get("cn1"), "42");
        assert_eq!(get("cs1"), r.hash);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&get("cs4")).unwrap(),
            r.details
        );
        let full = cef(&r, "h", "1");
        assert!(
            full.starts_with("<109>1 2026-12-02T03:51:02.123Z h cofre - a|b\\c - CEF:0|"),
            "{full}"
        );
    }

    proptest! {
        /// Whatever the text, a CEF parser gets back exactly what was put in.
        #[test]
        fn cef_fields_round_trip(actor in "\\PC*", object in any::<String>(), action in "[a-z.|=\\\\ ]{1,20}", detail in any::<String>()) {
            let r = AuditRecord {
                action: action.clone(),
                ..record(&actor, &object, serde_json::json!({ "d": detail }))
            };
            let line = cef_record(&r, "1.0");
            prop_assert!(!line.contains('\n') && !line.contains('\r'));
            let (header, ext) = parse_cef(&line);
            prop_assert_eq!(&header[4], &action.replace(['\r', '\n'], " "));
            let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|p| p.1.clone());
            prop_assert_eq!(get("suser"), Some(actor));
            prop_assert_eq!(get("cs3"), Some(object));
            prop_assert_eq!(get("cn1"), Some("42".to_owned()));
            let details: serde_json::Value = serde_json::from_str(&get("cs4").unwrap()).unwrap();
            prop_assert_eq!(details["d"].as_str(), Some(detail.as_str()));
        }

        /// Structured data stays one well-formed element whatever the values hold.
        #[test]
        fn sd_values_never_end_the_element(actor in any::<String>()) {
            let esc = sd_escape(&actor);
            let mut it = esc.chars();
            let mut back = String::new();
            while let Some(c) = it.next() {
                if c == '\\' {
                    back.push(it.next().unwrap());
                } else {
                    prop_assert!(c != '"' && c != ']');
                    back.push(c);
                }
            }
            prop_assert_eq!(back, actor);
        }
    }
}
