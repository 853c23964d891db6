//! Writes the fixtures the targets open with (`fixtures/`) and the valid seeds of the corpus
//! (`corpus/<target>/seed-*`), made by Cofre's own code. Run by hand when a format changes:
//! `cargo run --example make_seeds` (in fuzz/, no fuzzer flags needed). Every run makes new keys,
//! so it replaces the fixtures and the seeds together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use cofre_breakglass::{CredentialEntry, Header, Secret, TargetEntry, VersionEntry, Writer};
use cofre_crypto::datakey::DataKey;
use cofre_crypto::{Keyring, MasterKey};
use cofre_app::snapshot::format;
use std::fs;
use std::path::Path;

/// The master key the snapshot target opens every snapshot's key with (also in the target).
const SNAPSHOT_MASTER: [u8; 32] = [0x5a; 32];

fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    fs::create_dir_all("fixtures").unwrap();

    // Unseal shares of a 2-of-3 Shamir keyring; the share target submits lines to this keyring.
    let dir = tempfile::tempdir().unwrap();
    let (_, unseal) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
    fs::copy(Keyring::path(dir.path()), "fixtures/keyring.json").unwrap();
    seed("share_lines", "unseal-1", unseal[0].as_str().as_bytes());
    seed(
        "share_lines",
        "unseal-2-of-2",
        format!("{}\n{}", unseal[0].as_str(), unseal[2].as_str()).as_bytes(),
    );

    // A break-glass epoch: the file target combines fixtures/breakglass-shares.txt to open files.
    let instance = "0123456789abcdef";
    let c = cofre_breakglass::ceremony(instance, 3, 2, 3).unwrap();
    fs::write(
        "fixtures/breakglass-shares.txt",
        format!("{}\n{}\n", c.shares[0].as_str(), c.shares[1].as_str()),
    )
    .unwrap();
    seed("share_lines", "bg-1", c.shares[2].as_str().as_bytes());
    seed(
        "share_lines",
        "bg-2-of-2",
        format!(
            "{}\n{}",
            c.shares[1].as_str(),
            c.shares[2].as_str().to_uppercase()
        )
        .as_bytes(),
    );
    seed(
        "share_lines",
        "mixed",
        format!("{}\n{}", unseal[1].as_str(), c.shares[0].as_str()).as_bytes(),
    );

    let version = |v: i64, kind: &str, secret: &str| VersionEntry {
        version: v,
        kind: kind.into(),
        secret: Secret::new(secret.into()),
        created_at: format!("2026-05-0{v}T00:00:00Z"),
        created_by: "admin".into(),
    };
    let targets = vec![
        TargetEntry {
            name: "db01".into(),
            host: "10.0.0.5".into(),
            port: 22,
            protocol: "ssh".into(),
            tags: vec!["prod".into()],
            credentials: vec![CredentialEntry {
                account: "root".into(),
                kind: "password".into(),
                current_version: 2,
                versions: vec![
                    version(1, "password", "old-pw"),
                    version(2, "password", "new-pw"),
                ],
            }],
        },
        TargetEntry {
            name: "web01".into(),
            host: "web01.example".into(),
            port: 2222,
            protocol: "ssh".into(),
            tags: vec![],
            credentials: vec![CredentialEntry {
                account: "deploy".into(),
                kind: "private_key".into(),
                current_version: 1,
                versions: vec![version(
                    1,
                    "private_key",
                    "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
                )],
            }],
        },
    ];
    let write_file = |targets: &[TargetEntry]| {
        let header = Header {
            instance: instance.into(),
            epoch: 3,
            threshold: 2,
            written_at: "2026-05-01T12:00:00Z".into(),
            targets: targets.len() as u64,
            credentials: targets.iter().map(|t| t.credentials.len() as u64).sum(),
            versions: targets
                .iter()
                .flat_map(|t| &t.credentials)
                .map(|c| c.versions.len() as u64)
                .sum(),
            recipient: c.recipient.clone(),
            audit_head: Some(cofre_breakglass::file::AuditHead {
                seq: 12,
                hash: "ab".repeat(32),
                mac: "cd".repeat(32),
            }),
        };
        let mut w = Writer::new(Vec::new(), header).unwrap();
        for t in targets {
            w.target(t).unwrap();
        }
        w.finish().unwrap()
    };
    seed("breakglass_file", "two-targets", &write_file(&targets));
    seed("breakglass_file", "empty", &write_file(&[]));

    // Snapshots whose key is sealed under SNAPSHOT_MASTER, as the server seals it.
    let dir = tempfile::tempdir().unwrap();
    let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
    let master = MasterKey::from_bytes(SNAPSHOT_MASTER);
    let b64 = base64::engine::general_purpose::STANDARD;
    let snapshot = |id: &str, members: &[(&str, &[u8])]| {
        let key = DataKey::generate();
        let sealed = key.seal(&master, &format::Header::key_aad(id)).unwrap();
        let header = format::Header {
            format: format::FORMAT,
            id: id.into(),
            created_at: "2026-05-01T12:00:00Z".into(),
            reason: "manual".into(),
            cofre_version: "0.1.0".into(),
            database: "sqlite".into(),
            keyring: keyring.clone(),
            key_wrapped: b64.encode(&sealed.wrapped_key),
            key_ciphertext: b64.encode(&sealed.ciphertext),
        };
        let mut w = format::Writer::new(Vec::new(), &header, key).unwrap();
        for (name, data) in members {
            w.add_member(name, 0o600, *data, u64::MAX, &mut |_| {})
                .unwrap();
        }
        w.finish().unwrap().inner
    };
    let text = "hello snapshot ".repeat(200);
    seed(
        "snapshot_reader",
        "three-members",
        &snapshot(
            "20260501T120000Z-manual",
            &[
                ("database/cofre.db", b"SQLite format 3\0tiny"),
                ("config.toml", text.as_bytes()),
                ("recordings/empty", b""),
            ],
        ),
    );
    seed("snapshot_reader", "no-members", &snapshot("s-empty", &[]));

    // One valid body (or query string) per request type, behind the byte that picks it.
    let requests: &[(&str, &str)] = &[
        (
            "UnsealRequest",
            r#"{"share":"cofre-unseal-0123456789abcdef-2-1-aaaa-abcdef"}"#,
        ),
        (
            "LoginRequest",
            r#"{"username":"alice","password":"pw","totp_code":"123456"}"#,
        ),
        (
            "ChangePasswordRequest",
            r#"{"current_password":"a","new_password":"b c d e"}"#,
        ),
        ("TotpConfirmRequest", r#"{"code":"123456"}"#),
        (
            "CreateUserRequest",
            r#"{"username":"bob","role":"user","groups":["ops"],"email":"b@x.example"}"#,
        ),
        ("SetEmailRequest", r#"{"email":null}"#),
        ("CreateGroupRequest", r#"{"name":"ops"}"#),
        ("GroupMemberRequest", r#"{"username":"bob"}"#),
        (
            "CreateTargetRequest",
            r#"{"name":"db01","host":"10.0.0.5","port":22,"protocol":"ssh","tags":["prod"]}"#,
        ),
        (
            "CreateCredentialRequest",
            r#"{"account":"root","password":"s3cret"}"#,
        ),
        (
            "UpdateCredentialRequest",
            r#"{"private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}"#,
        ),
        (
            "RevealRequest",
            r#"{"reason":"INC-42 disk full","version":2}"#,
        ),
        (
            "CreatePolicyRequest",
            r#"{"name":"p","group":"ops","targets":["tag:prod","*"],"allow":["session","reveal"],"outcome":"approve","levels":"leads:1,security:2","max_duration":"4h","hours":"08:00-20:00","days":"mon-fri","from":"2026-01-01","until":"2026-12-31","emergency":true}"#,
        ),
        (
            "AddSshKeyRequest",
            r#"{"public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"}"#,
        ),
        ("KillSessionRequest", r#"{"reason":"\u00e9 done"}"#),
        (
            "CreateAccessRequest",
            r#"{"target":"db01","account":"root","access":["reveal"],"reason":"CHG-1","start":"now","duration":"2h"}"#,
        ),
        ("DecideRequest", r#"{"comment":"ok"}"#),
        ("RevokeRequest", r#"{}"#),
        (
            "CeremonyRequest",
            r#"{"custodians":["alice","bob","carol"],"threshold":2}"#,
        ),
        (
            "NewBackupTargetRequest",
            r#"{"name":"nas","ssh":"backup@nas.example:/srv/cofre","port":22,"ssh_private_key":"k","known_hosts":"nas.example ssh-ed25519 AAAA"}"#,
        ),
        (
            "NewBackupJobRequest",
            r#"{"name":"daily","kind":"credentials","target":"nas","schedule":"daily 02:00"}"#,
        ),
        (
            "CreateSnapshotRequest",
            r#"{"reason":"manual","include_recordings":false}"#,
        ),
        ("PruneSnapshotsRequest", r#"{"dry_run":true}"#),
        ("PageQuery", "limit=10&cursor=abc"),
        ("SessionQuery", "live=true&limit=5"),
        (
            "RequestListQuery",
            "pending=true&all=false&limit=1000&cursor=x%20y",
        ),        ("SetPasswordPolicyRequest", r#"{"length":24,"classes":"upper,lower,digit,symbol","exclude":"\u0027\""}"#),
        ("RotateRequest", r#"{"method":"chpasswd","as":"db01/root"}"#),
        ("SetRotationRequest", r#"{"every":"30d","after_reveal":true,"after_session":true,"after_grant":false,"method":"key","verify_every":"1d"}"#),
        ("RotationListQuery", r#"failed=true&limit=10&cursor=db01%2Froot"#),
        ),
        (
            "NewSiemRequest",
            r#"{"name":"corp","syslog":"tls://siem.corp:6514","format":"cef","ca_cert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}"#,
        ),
        ("LockSessionRequest", r#"{"reason":"checking"}"#),
        ("EmergencyRequest", r#"{"totp_code":"123456","reason":"breach"}"#),
        ("LiftLockdownRequest", r#"{"reason":"all clear"}"#),
        (
            "SetNetworkRequest",
            r#"{"listener":"api","allow":["10.20.0.0/16","2001:db8::/32"],"trusted_proxies":["10.20.0.5"],"force":false}"#,
        ),
    ];
    for (name, text) in requests {
        let pick = cofre_fuzz::PARSERS
            .iter()
            .position(|(n, _)| n == name)
            .unwrap();
        let mut bytes = vec![pick as u8];
        bytes.extend_from_slice(text.as_bytes());
        seed("api_requests", name, &bytes);
    }
    assert_eq!(
        requests.len(),
        cofre_fuzz::PARSERS.len(),
        "a seed for every parser"
    );

    // Logins as people type them, and the policy grammar's fields.
    for (name, text) in [
        ("plus", "alice+root+db01"),
        ("colon-at", "alice:root@db01"),
        ("account-case", "ops.bot:Administrator@win-01.prod"),
        ("dollar", "a+svc$backup+t"),
        ("host", "db01.prod.example.com"),
        ("ipv6", "fe80::1"),
        ("days", "mon-wed,fri,sun"),
        ("hours", "22:00-06:00"),
        ("levels", "leads:1, security:2"),
        ("duration", "1h30m"),
        ("date", "2026-02-28"),
        ("selector", "tag:prod"),
    ] {
        seed("gateway_login", name, text.as_bytes());
    }
}
