//! What vendor support (under a `diagnostics` grant) and admins read to find out what is wrong
//! without a shell on the machine: the configuration with its secrets taken out, and the tail of
//! the server's log.
//!
//! The log tail is a ring of the last lines the server logged, fed by the binary's log
//! subscriber next to stderr. Secrets never reach the log in the first place (the invariant the
//! `secret_logs` tests hold); the ring adds no new place for them.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Lines the ring keeps.
pub const LOG_TAIL_LINES: usize = 2000;
/// A longer line is cut (a log line is a few hundred bytes; this bounds the ring's memory).
const MAX_LINE: usize = 4096;

/// The last lines logged, oldest first.
pub struct LogTail {
    lines: Mutex<Ring>,
}

struct Ring {
    lines: VecDeque<String>,
    /// Bytes of a line not yet ended by a newline.
    partial: Vec<u8>,
    /// Lines logged since the server started (so a reader sees how many it did not get).
    total: u64,
}

static LOG_TAIL: LogTail = LogTail {
    lines: Mutex::new(Ring {
        lines: VecDeque::new(),
        partial: Vec::new(),
        total: 0,
    }),
};

/// The server's log tail.
pub fn log_tail() -> &'static LogTail {
    &LOG_TAIL
}

impl LogTail {
    /// Appends what a log writer wrote: complete lines go into the ring.
    pub fn append(&self, bytes: &[u8]) {
        let Ok(mut ring) = self.lines.lock() else {
            return;
        };
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let ended = piece.last() == Some(&b'\n');
            let body = if ended {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            let room = MAX_LINE.saturating_sub(ring.partial.len());
            ring.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if ended {
                let line = String::from_utf8_lossy(&ring.partial).into_owned();
                ring.partial.clear();
                if ring.lines.len() == LOG_TAIL_LINES {
                    ring.lines.pop_front();
                }
                ring.lines.push_back(line);
                ring.total += 1;
            }
        }
    }

    /// The last `n` lines (oldest first) and how many lines were logged in all.
    pub fn last(&self, n: usize) -> (Vec<String>, u64) {
        let Ok(ring) = self.lines.lock() else {
            return (Vec::new(), 0);
        };
        let skip = ring.lines.len().saturating_sub(n);
        (ring.lines.iter().skip(skip).cloned().collect(), ring.total)
    }

    /// A writer for a log subscriber (`std::io::Write`): each write goes into the ring.
    pub fn writer(&'static self) -> LogTailWriter {
        LogTailWriter(self)
    }
}

pub struct LogTailWriter(&'static LogTail);

impl std::io::Write for LogTailWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// A setting whose name says it holds a secret (a path to a file that holds one is not one).
fn secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_file") || key.ends_with("_dir") || key.ends_with("_path") {
        return false;
    }
    [
        "password",
        "passphrase",
        "secret",
        "token",
        "private",
        "credential",
    ]
    .iter()
    .any(|w| key.contains(w))
}

/// A URL with what may authenticate taken out: the password of its user part, its query, and
/// for a webhook (whose path is often the token) its path.
pub fn redact_url(url: &str, path_is_secret: bool) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:{REDACTED}@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, _)) => (path, Some(REDACTED)),
        None => (tail.split('#').next().unwrap_or_default(), None),
    };
    let path = if path_is_secret && !path.is_empty() && path != "/" {
        format!("/{REDACTED}")
    } else {
        path.to_owned()
    };
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// A configuration file's settings as JSON, every secret replaced by [`REDACTED`]: values of
/// settings named like a secret, and the secret parts of URLs.
pub fn redact_settings(value: &toml::Value) -> serde_json::Value {
    redact_value(None, value)
}

fn redact_value(key: Option<&str>, value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    if key.is_some_and(secret_name) {
        return J::String(REDACTED.into());
    }
    match value {
        toml::Value::String(s) => {
            let webhook = key.is_some_and(|k| k.to_ascii_lowercase().contains("webhook"));
            if s.contains("://") {
                J::String(redact_url(s, webhook))
            } else {
                J::String(s.clone())
            }
        }
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.iter().map(|v| redact_value(key, v)).collect()),
        toml::Value::Table(table) => J::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), redact_value(Some(k), v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_queries_and_webhook_paths() {
        assert_eq!(
            redact_url("postgres://cofre:hunter2@db:5432/cofre", false),
            "postgres://cofre:[redacted]@db:5432/cofre"
        );
        assert_eq!(
            redact_url("https://hooks.example/services/T0/B0/XYZ?token=abc", true),
            "https://hooks.example/[redacted]?[redacted]"
        );
        assert_eq!(
            redact_url("tls://siem.corp:6514", false),
            "tls://siem.corp:6514"
        );
        assert_eq!(redact_url("not a url", true), "not a url");
    }

    #[test]
    fn settings_named_like_secrets_are_redacted_but_their_files_are_not() {
        let file: toml::Value = toml::from_str(
            r#"
            database_url = "postgres://cofre:hunter2@db/cofre"
            [notify]
            webhook_url = "https://hooks.example/T0/B0/XYZ"
            webhook_secret_file = "/etc/cofre/webhook.secret"
            smtp_password = "inline-password"
            [limits]
            login_seconds = 30
            "#,
        )
        .unwrap();
        let out = redact_settings(&file).to_string();
        for secret in ["hunter2", "XYZ", "inline-password"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("/etc/cofre/webhook.secret"), "{out}");
        assert!(out.contains("\"login_seconds\":30"), "{out}");
        assert!(
            out.contains("postgres://cofre:[redacted]@db/cofre"),
            "{out}"
        );
    }

    #[test]
    fn the_tail_keeps_whole_lines_in_order() {
        let tail = LogTail {
            lines: Mutex::new(Ring {
                lines: VecDeque::new(),
                partial: Vec::new(),
                total: 0,
            }),
        };
        tail.append(b"one\ntw");
        tail.append(b"o\nthree\n");
        let (lines, total) = tail.last(2);
        assert_eq!(lines, ["two", "three"]);
        assert_eq!(total, 3);
        for i in 0..LOG_TAIL_LINES + 5 {
            tail.append(format!("line {i}\n").as_bytes());
        }
        let (lines, _) = tail.last(usize::MAX);
        assert_eq!(lines.len(), LOG_TAIL_LINES);
        assert_eq!(
            lines.last().unwrap(),
            &format!("line {}", LOG_TAIL_LINES + 4)
        );
    }
}
