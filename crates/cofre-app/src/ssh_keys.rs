//! SSH public keys as people hand them to us: a user's key (`user key add`, one line of an OpenSSH
//! `.pub` file) and a backup host's keys (`known_hosts` lines, given or from `ssh-keyscan`). Both
//! go through russh's parser (its `ssh-key`), the same code that reads the key a client offers at
//! login, so a key we store is a key the gateway can match: a type with no key data, bad base64,
//! a blob of another type or of the wrong length is refused here, naming the field, rather than
//! stored and never matched.

use crate::error::{Error, Result};
use russh::keys::ssh_key::known_hosts::Entry;
use russh::keys::{HashAlg, PublicKey};

/// A user's public key: OpenSSH's fingerprint (`SHA256:...`) and the key as `TYPE BASE64`
/// (without its comment).
pub fn user_key(field: &str, line: &str) -> Result<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.contains('\n') {
        return Err(Error::invalid(
            field,
            format!("{field}: expected one line like `ssh-ed25519 AAAA... comment`"),
        ));
    }
    let mut key = PublicKey::from_openssh(line).map_err(|e| {
        Error::invalid(
            field,
            format!("{field}: not an OpenSSH public key line (`ssh-ed25519 AAAA... comment`): {e}"),
        )
    })?;
    key.set_comment("");
    let text = key
        .to_openssh()
        .map_err(|e| Error::invalid(field, format!("{field}: {e}")))?;
    Ok((
        key.fingerprint(HashAlg::Sha256).to_string(),
        text.trim_end().to_owned(),
    ))
}

/// Every key of a known_hosts text, as `TYPE SHA256:...`: each line that is not empty or a `#`
/// comment must be `HOSTS TYPE BASE64 [COMMENT]` with a key russh can read, and there must be one.
pub fn known_hosts(field: &str, text: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Entry = line.parse().map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "{field}: line {}: not a known_hosts line (`HOST KEYTYPE BASE64KEY`, as ssh-keyscan prints): {e}",
                    n + 1
                ),
            )
        })?;
        keys.push(describe(entry.public_key()));
    }
    if keys.is_empty() {
        return Err(Error::invalid(
            field,
            format!(
                "{field}: has no host key line (`HOST KEYTYPE BASE64KEY`, as ssh-keyscan prints)"
            ),
        ));
    }
    Ok(keys)
}

/// The keys of a known_hosts text already checked by [`known_hosts`] (stored, or just scanned), for
/// display; a line that does not parse is left out rather than failing a listing.
pub fn known_hosts_fingerprints(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse::<Entry>().ok())
        .map(|e| describe(e.public_key()))
        .collect()
}

fn describe(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKP/TY4zYuLWcNieFNPnyxvrVuIYqjgJoE+esWTppF4V";

    #[test]
    fn user_keys_match_openssh_and_need_key_data() {
        // `ssh-keygen -lf` prints SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU for this key.
        let (fp, key) = user_key("public_key", &format!("{ED25519} alice@laptop\n")).unwrap();
        assert_eq!(fp, "SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU");
        assert_eq!(key, ED25519);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 ",
            "ssh-ed25519 !!!",
            "ssh-ed25519 AAAA",
            // An ed25519 blob under the RSA name.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKP/TY4zYuLWcNieFNPnyxvrVuIYqjgJoE+esWTppF4V",
            // One byte short of an ed25519 key.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAH6P/TY4zYuLWcNieFNPnyxvrVuIYqjgJoE+esWTppF4=",
            "ssh-dss AAAA",
            "two\nlines",
        ] {
            let e = user_key("public_key", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("public_key"), "{bad:?}");
            assert!(
                e.message.starts_with("public_key: "),
                "{bad:?}: {}",
                e.message
            );
        }
    }

    #[test]
    fn known_hosts_lines_are_checked_one_by_one() {
        let text = format!("# from ssh-keyscan\n[127.0.0.1]:2200 {ED25519}\n\n");
        assert_eq!(
            known_hosts("known_hosts", &text).unwrap(),
            ["ssh-ed25519 SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU"]
        );
        assert_eq!(
            known_hosts_fingerprints(&text),
            ["ssh-ed25519 SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU"]
        );
        for bad in [
            "# nothing\n".to_owned(),
            "nas.example ssh-ed25519".to_owned(),
            "nas.example ssh-ed25519 AAAA".to_owned(),
            format!("nas.example {ED25519}\nnas.example ssh-rsa !!!"),
        ] {
            let e = known_hosts("known_hosts", &bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("known_hosts"), "{bad:?}");
        }
        let e =
            known_hosts("known_hosts", &format!("h {ED25519}\nh ssh-ed25519 AAAA\n")).unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }
}
