use cofre_breakglass::{CredentialEntry, Header, Secret, TargetEntry, VersionEntry};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTANCE: &str = "0123456789abcdef";

/// Crates that would mean a server, a database driver, an async runtime or a network stack.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "hyper",
    "reqwest",
    "axum",
    "russh",
    "rustls",
    "h2",
    "mio",
    "socket2",
    "cofre-app",
    "cofre-http",
    "cofre-connect",
    "cofre-store",
    "cofre-gateway",
    "cofre-proto",
];

#[test]
fn opener_dependency_tree_has_no_runtime_database_or_network() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "cofre-opener",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The tree really is the opener's (a typo in -p would print nothing to judge).
    assert!(names.contains(&"cofre-breakglass"), "{stdout}");
    assert!(names.contains(&"age"), "{stdout}");
    let bad: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            FORBIDDEN.iter().any(|f| {
                n == f || n.starts_with(&format!("{f}-")) || n.starts_with(&format!("{f}_"))
            })
        })
        .collect();
    assert!(
        bad.is_empty(),
        "cofre-opener must not depend on {bad:?}:\n{stdout}"
    );
}

/// A break-glass file of two targets written by the real writer, and its 3 shares (2 open it).
fn write_file(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let c = cofre_breakglass::ceremony(INSTANCE, 1, 2, 3).unwrap();
    let header = Header {
        instance: INSTANCE.into(),
        epoch: 1,
        threshold: 2,
        written_at: cofre_breakglass::now_rfc3339(),
        targets: 2,
        credentials: 2,
        versions: 3,
        recipient: c.recipient.clone(),
        audit_head: None,
    };
    let version = |v: i64, secret: &str| VersionEntry {
        version: v,
        kind: "password".into(),
        secret: Secret::new(secret.into()),
        created_at: "2026-01-01T00:00:00Z".into(),
        created_by: "admin".into(),
    };
    let path = dir.join("bg.cofre");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = cofre_breakglass::Writer::new(file, header).unwrap();
    w.target(&TargetEntry {
        name: "db01".into(),
        host: "10.0.0.5".into(),
        port: 22,
        protocol: "ssh".into(),
        tags: vec!["prod".into()],
        credentials: vec![CredentialEntry {
            account: "root".into(),
            kind: "password".into(),
            current_version: 2,
            versions: vec![version(1, "old-root-pw"), version(2, "root-pw-now")],
        }],
    })
    .unwrap();
    w.target(&TargetEntry {
        name: "web01".into(),
        host: "web01.example".into(),
        port: 2222,
        protocol: "ssh".into(),
        tags: vec![],
        credentials: vec![CredentialEntry {
            account: "admin".into(),
            kind: "password".into(),
            current_version: 1,
            versions: vec![version(1, "web admin pw")],
        }],
    })
    .unwrap();
    w.finish().unwrap().sync_all().unwrap();
    let shares = c
        .shares
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = dir.join(format!("share-{}.txt", i + 1));
            std::fs::write(&p, format!("# my share\n{}\n", s.as_str())).unwrap();
            p
        })
        .collect();
    (path, shares)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cofre-opener ARGS` with an empty environment, in a network namespace with no interfaces.
fn run_isolated(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    assert!(
        is_root(),
        "the no-network run needs root (unshare --net); the suite runs as root"
    );
    let mut child = Command::new("unshare")
        .args(["--net", "--", env!("CARGO_BIN_EXE_cofre-opener")])
        .args(args)
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs");
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Ok(()) => {}
        // An opener that refuses before reading its input (too few shares) may have exited
        // already; what it said is judged below.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing to the opener: {e}"),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn opener_opens_a_file_with_no_environment_and_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let (file, shares) = write_file(dir.path());
    // The namespace really has no way out: only a down loopback, no route.
    let probe = Command::new("unshare")
        .args(["--net", "--", "cat", "/proc/net/dev"])
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe
            .lines()
            .skip(2)
            .all(|l| l.trim_start().starts_with("lo:")),
        "{probe}"
    );

    let (f, s1, s3) = (
        file.to_str().unwrap(),
        shares[0].to_str().unwrap(),
        shares[2].to_str().unwrap(),
    );
    let out = run_isolated(
        dir.path(),
        &[
            "--output",
            "json",
            "open",
            f,
            "--share-file",
            s3,
            "--share-file",
            s1,
        ],
        "list\nshow db01 root\nshow db01 root --version 1\nshow web01 admin\nquit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 4, "{replies:?}");
    let targets: Vec<&str> = replies[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["db01", "web01"]);
    assert_eq!(replies[1]["secret"], "root-pw-now");
    assert_eq!(replies[1]["version"], 2);
    assert_eq!(replies[2]["secret"], "old-root-pw");
    assert_eq!(replies[3]["secret"], "web admin pw");
    // Shown only after it was logged, next to the file, with the shares used and no secret.
    let log = std::fs::read_to_string(dir.path().join("bg.cofre.log")).unwrap();
    assert!(log.lines().all(|l| l.contains("shares=1,3")), "{log}");
    assert!(log.contains("\tshow db01/root version 1\t"), "{log}");
    assert!(!log.contains("pw"), "the log holds no secret: {log}");

    // One share is not enough, and says how many are.
    let out = run_isolated(dir.path(), &["open", f, "--share-file", s1], "list\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: 2 shares of key epoch 1 are needed"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // combine: the identity the plain age tool takes.
    let out = run_isolated(
        dir.path(),
        &[
            "combine",
            "--share-file",
            s1,
            "--share-file",
            s3,
            "--file",
            f,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\nAGE-SECRET-KEY-1"), "{stdout}");
}
