//! Snapshots: taken while writers are busy, restored offline into a new data dir, and the
//! restored server answers as the original did (users, policies, every credential's secret,
//! recordings byte for byte, the audit chain). A damaged byte is refused and named; kill -9
//! during a snapshot leaves nothing half-written listed; a Shamir instance restores sealed.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fake recordings: the snapshot copies files of DATA_DIR/recordings as they are, so random bytes
/// stand in for sealed frames (they do not compress either). Returns name -> bytes.
fn seed_recordings(
    data_dir: &Path,
    files: usize,
    bytes_each: usize,
    seed: u64,
) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Prng::new(seed);
    // One random buffer, made different per file at its start: generating each file's bytes
    // would dominate the test's time, and frames are compressed one by one anyway.
    let mut base = vec![0u8; bytes_each];
    for chunk in base.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let mut out = BTreeMap::new();
    for i in 0..files {
        let rel = format!("recordings/2026-01-0{}/seeded-{i}.rec", 1 + i % 3);
        let path = data_dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = base.clone();
        for (j, b) in data.iter_mut().take(64).enumerate() {
            *b ^= (i * 64 + j) as u8;
        }
        std::fs::write(&path, &data).unwrap();
        out.insert(rel, data);
    }
    out
}

/// Polls the job until it ends; returns the finished job.
fn wait_job(api: &Api, token: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = api.get(&format!("/api/v1/snapshots/jobs/{job}"), Some(token));
        r.assert_ok();
        if !r.body["finished_at"].is_null() {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot job did not end: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn snapshot_id(out: &Out) -> String {
    out.value_after("snapshot ")
}

fn reveal(cli: &Cli, target: &str, account: &str) -> String {
    cli.ok(&["credential", "reveal", target, account]).stdout
}

fn restore_args<'a>(
    id: &'a str,
    from: &'a Path,
    to: &'a Path,
    key_file: &'a Path,
    db: &'a Option<String>,
) -> Vec<String> {
    let mut args = vec![
        "snapshot".to_owned(),
        "restore".into(),
        id.into(),
        "--from".into(),
        from.display().to_string(),
        "--data-dir".into(),
        to.display().to_string(),
        "--key-file".into(),
        key_file.display().to_string(),
    ];
    if let Some(url) = db {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn snapshot_restores_what_it_took(backend: Backend) {
    let inst = Instance::new(backend);
    let server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    grant_admin_reveal(&admin, "allow");
    add_user_cli(&inst, &server, &admin, "bob", "user", &["ops"]);
    admin.ok(&[
        "policy",
        "add",
        "ops-sessions",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session",
        "--outcome",
        "justify",
    ]);
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..10 {
        let (account, secret) = (format!("seed{i}"), format!("s3cret-{i}-{}", random_hex(12)));
        admin.ok_in(
            &["credential", "add", "db01", &account, "--password-stdin"],
            &format!("{secret}\n"),
        );
        secrets.insert(account, secret);
    }
    let recordings = seed_recordings(&inst.data_dir, 3, 3 << 20, 7);

    // Writers add credentials through the API the whole time the snapshot is taken.
    let token = admin.token();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, fp, token) = (
                server.url.clone(),
                server.fingerprint.clone(),
                token.clone(),
            );
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let api = Api::new(&url, &fp);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (account, secret) = (
                        format!("w{w}-{n}"),
                        format!("busy-{w}-{n}-{}", random_hex(8)),
                    );
                    api.post(
                        "/api/v1/targets/db01/credentials",
                        Some(&token),
                        json!({"account": account, "password": secret}),
                    )
                    .assert_ok();
                    acked.lock().unwrap().push((account, secret));
                    n += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 5 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let acked_before: Vec<(String, String)> = acked.lock().unwrap().clone();
    let created = admin.ok(&["snapshot", "create"]);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let id = snapshot_id(&created);
    created.assert_stdout_contains("sha256: ");
    let acked_all: Vec<(String, String)> = acked.lock().unwrap().clone();

    let list = admin.ok(&["--output", "json", "snapshot", "list"]).json();
    let listed = &list["snapshots"][0];
    assert_eq!(listed["id"], id.as_str(), "{list}");
    assert_eq!(listed["reason"], "manual");
    let file = inst
        .data_dir
        .join("snapshots")
        .join(format!("{id}.cofresnap"));
    assert_eq!(
        listed["size"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    admin
        .ok(&["snapshot", "verify", &id])
        .assert_stdout_contains("verified");
    // The snapshot alone reveals nothing: no secret, user name or recording byte in clear.
    let raw = std::fs::read(&file).unwrap();
    let needle = secrets["seed0"].as_bytes();
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle),
        "a secret is in clear in the snapshot"
    );
    assert!(
        !raw.windows(8).any(|w| w == b"ops-sess"),
        "a policy name is in clear in the snapshot"
    );
    let users_before = admin.ok(&["--output", "json", "user", "list"]).json();
    let policies_before = admin.ok(&["--output", "json", "policy", "list"]).json();
    drop(server);

    // Restore offline (no server) into a new dir, start a server on it.
    let restored = inst.empty_like();
    let args = restore_args(
        &id,
        &inst.data_dir.join("snapshots"),
        &restored.data_dir,
        &inst.data_dir.join("master.key"),
        &restored.database_url(),
    );
    let operator = Cli::new(&inst, "operator");
    operator
        .ok(&strs(&args))
        .assert_stdout_contains(&format!("restored snapshot {id}"));
    for (rel, data) in &recordings {
        let got = std::fs::read(restored.data_dir.join(rel)).unwrap();
        assert!(got == *data, "recording {rel} differs after the restore");
    }
    assert!(!restored.data_dir.join(".cofre-restore").exists());
    let server2 = restored.start();
    assert_eq!(server2.fingerprint.len(), 64);
    let admin2 = Cli::new(&restored, "admin").at(&server2);
    admin2
        .login("admin", &admin_pw)
        .assert_stdout_contains("logged in as admin (admin)");
    assert_eq!(
        admin2.ok(&["--output", "json", "user", "list"]).json(),
        users_before
    );
    assert_eq!(
        admin2.ok(&["--output", "json", "policy", "list"]).json(),
        policies_before
    );
    for (account, secret) in &secrets {
        assert_eq!(
            reveal(&admin2, "db01", account),
            format!("{secret}\n"),
            "{account}"
        );
    }
    // One moment: every write acknowledged before the snapshot started is in it; whatever of the
    // later ones is in it reveals its own secret; the audit chain verifies.
    let listed = admin2
        .ok(&["--output", "json", "credential", "list", "db01"])
        .json();
    let present: Vec<String> = json_items(&listed)
        .iter()
        .map(|c| c["account"].as_str().unwrap().to_owned())
        .collect();
    for (account, _) in &acked_before {
        assert!(
            present.contains(account),
            "{account} was acknowledged before the snapshot and is missing"
        );
    }
    let mut busy_in = 0;
    for (account, secret) in &acked_all {
        if present.contains(account) {
            busy_in += 1;
            assert_eq!(reveal(&admin2, "db01", account), format!("{secret}\n"));
        }
    }
    assert!(busy_in >= acked_before.len());
    admin2
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    // A restored instance lists no snapshots: none of them is in its data dir.
    let list2 = admin2.ok(&["--output", "json", "snapshot", "list"]).json();
    assert_eq!(list2["snapshots"].as_array().unwrap().len(), 0, "{list2}");
    // And it takes its own.
    admin2.ok(&["snapshot", "create", "--no-recordings"]);
}

#[test]
fn snapshot_restore_sqlite() {
    snapshot_restores_what_it_took(Backend::Sqlite);
}

#[test]
fn snapshot_restore_postgres() {
    snapshot_restores_what_it_took(Backend::Postgres);
}

fn flip_byte(file: &Path, at: u64) {
    let mut data = std::fs::read(file).unwrap();
    data[at as usize] ^= 0x20;
    std::fs::write(file, data).unwrap();
}

#[test]
fn snapshot_corrupt_byte_is_refused_and_named() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    seed_recordings(&inst.data_dir, 2, 2 << 20, 3);
    let id = snapshot_id(&admin.ok(&["snapshot", "create"]));
    let verified = admin
        .ok(&["--output", "json", "snapshot", "verify", &id])
        .json();
    assert_eq!(verified["ok"], true, "{verified}");
    let members = verified["members"].as_array().unwrap().clone();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for want in [
        "database/cofre.db",
        "keyring.json",
        "tls/cert.pem",
        "ssh_host_ed25519_key",
    ] {
        assert!(
            names.contains(&want),
            "{want} is not in the snapshot: {names:?}"
        );
    }
    assert!(
        !names.contains(&"master.key"),
        "the KEK must never be in a snapshot"
    );
    let file = inst
        .data_dir
        .join("snapshots")
        .join(format!("{id}.cofresnap"));
    let pristine = std::fs::read(&file).unwrap();
    let key_file = inst.data_dir.join("master.key");
    let operator = Cli::new(&inst, "operator");
    for victim in [
        "database/cofre.db",
        "keyring.json",
        "recordings/2026-01-02/seeded-1.rec",
    ] {
        let m = members.iter().find(|m| m["name"] == victim).unwrap();
        let (start, end) = (m["offset"].as_u64().unwrap(), m["end"].as_u64().unwrap());
        std::fs::write(&file, &pristine).unwrap();
        flip_byte(&file, (start + end) / 2);
        let out = admin.run(&["snapshot", "verify", &id], None);
        out.assert_error()
            .assert_stderr_contains(&format!("damaged member: {victim}"));
        let target = inst.path().join(format!("restore-{}", random_hex(4)));
        let args = restore_args(
            &id,
            &inst.data_dir.join("snapshots"),
            &target,
            &key_file,
            &None,
        );
        let out = operator.run(&strs(&args), None);
        out.assert_error()
            .assert_stderr_contains(&format!("member {victim}"));
        // Nothing usable was written.
        assert!(!target.join("cofre.db").exists() && !target.join("keyring.json").exists());
    }
    // The list shows the failed verification.
    let list = admin.ok(&["--output", "json", "snapshot", "list"]).json();
    assert_eq!(list["snapshots"][0]["verified"], false, "{list}");
    // Audit: both verifications are there, the failure as `failed`.
    let entries = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    assert!(entries
        .iter()
        .any(|e| e["action"] == "snapshot.verify" && e["outcome"] == "failed"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "snapshot.create" && e["outcome"] == "ok"));
    drop(server);
}

#[test]
fn snapshot_kill9_leaves_no_half_file() {
    let inst = Instance::new(Backend::Sqlite);
    let mut server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    seed_recordings(&inst.data_dir, 4, 8 << 20, 11);
    let token = admin.token();
    let api = server.api();
    let job = api.post("/api/v1/snapshots", Some(&token), json!({}));
    assert_eq!(job.status, 202, "{}", job.text);
    let job_id = job.body["id"].as_str().unwrap().to_owned();
    // Kill while the files are being written.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = api.get(&format!("/api/v1/snapshots/jobs/{job_id}"), Some(&token));
        let done = r.body["bytes_done"].as_u64().unwrap_or(0);
        if r.body["phase"] == "files" && done > 0 {
            assert!(
                done < r.body["bytes_total"].as_u64().unwrap(),
                "finished too fast to kill: {}",
                r.text
            );
            break;
        }
        assert!(
            r.body["finished_at"].is_null(),
            "finished before the kill: {}",
            r.text
        );
        assert!(Instant::now() < deadline, "{}", r.text);
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    let snapshots_dir = inst.data_dir.join("snapshots");
    let leftovers: Vec<String> = std::fs::read_dir(&snapshots_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.iter().all(|n| n.starts_with('.')),
        "only hidden partial files may remain: {leftovers:?}"
    );
    assert!(
        leftovers.iter().any(|n| n.ends_with(".partial")),
        "{leftovers:?}"
    );

    let server = inst.start();
    let admin = Cli {
        server: Some(server.url.clone()),
        fingerprint: Some(server.fingerprint.clone()),
        ..admin
    };
    admin.login("admin", &admin_pw);
    let list = admin.ok(&["--output", "json", "snapshot", "list"]).json();
    assert_eq!(
        list["snapshots"].as_array().unwrap().len(),
        0,
        "a half snapshot is listed: {list}"
    );
    let token = admin.token();
    let api = server.api();
    let id = snapshot_id(&admin.ok(&["snapshot", "create"]));
    let after: Vec<String> = std::fs::read_dir(&snapshots_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !after.iter().any(|n| n.starts_with('.')),
        "leftovers were not cleaned: {after:?}"
    );
    let r = api.post(
        &format!("/api/v1/snapshots/{id}/verify"),
        Some(&token),
        json!({}),
    );
    r.assert_ok();
    assert_eq!(r.body["ok"], true, "{}", r.text);
    // The failed job was never acknowledged; the audit trail has the one finished snapshot.
    let entries = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    let creates: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "snapshot.create")
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
}

#[test]
fn snapshot_bad_input_is_named() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let token = admin.token();
    let api = server.api();
    api.post(
        "/api/v1/snapshots",
        Some(&token),
        json!({"reason": "daily"}),
    )
    .assert_error(400, "invalid_field");
    api.post(
        "/api/v1/snapshots",
        Some(&token),
        json!({"reasn": "manual"}),
    )
    .assert_error(400, "invalid_field");
    api.post("/api/v1/snapshots/nope/verify", Some(&token), json!({}))
        .assert_error(404, "not_found");
    api.post("/api/v1/snapshots/..%2Fx/verify", Some(&token), json!({}))
        .assert_error(400, "invalid_field");
    api.get("/api/v1/snapshots/jobs/nope", Some(&token))
        .assert_error(404, "not_found");
    let job = api.post(
        "/api/v1/snapshots",
        Some(&token),
        json!({"include_recordings": false}),
    );
    let done = wait_job(&api, &token, job.body["id"].as_str().unwrap());
    let id = done["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(done["phase"], "done", "{done}");

    let operator = Cli::new(&inst, "operator");
    let from = inst.data_dir.join("snapshots");
    let key = inst.data_dir.join("master.key");
    // Unknown id.
    let args = restore_args(
        "20990101T000000Z-0000",
        &from,
        &inst.path().join("r1"),
        &key,
        &None,
    );
    operator
        .run(&strs(&args), None)
        .assert_error()
        .assert_stderr_contains("no such snapshot");
    // A non-empty target dir.
    let busy = inst.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep-me"), b"x").unwrap();
    let args = restore_args(&id, &from, &busy, &key, &None);
    operator
        .run(&strs(&args), None)
        .assert_error()
        .assert_stderr_contains("not empty");
    assert_eq!(std::fs::read(busy.join("keep-me")).unwrap(), b"x");
    // Another instance's key file opens nothing.
    let other = Instance::new(Backend::Sqlite);
    drop(other.start());
    let args = restore_args(
        &id,
        &from,
        &inst.path().join("r2"),
        &other.data_dir.join("master.key"),
        &None,
    );
    operator
        .run(&strs(&args), None)
        .assert_error()
        .assert_stderr_contains("does not open");
    // A SQLite snapshot does not go into PostgreSQL.
    let args = restore_args(
        &id,
        &from,
        &inst.path().join("r3"),
        &key,
        &Some("postgres://x/y".into()),
    );
    operator
        .run(&strs(&args), None)
        .assert_error()
        .assert_stderr_contains("--database-url");
    // Nothing given to open it.
    operator
        .run(
            &[
                "snapshot",
                "restore",
                &id,
                "--from",
                &from.display().to_string(),
                "--data-dir",
                &inst.path().join("r4").display().to_string(),
            ],
            None,
        )
        .assert_error()
        .assert_stderr_contains("--key-file");
    // prune --dry-run with one snapshot: nothing goes.
    admin
        .ok(&["snapshot", "prune", "--dry-run"])
        .assert_stdout_contains("nothing to remove");
    drop(server);
}

#[test]
fn snapshot_of_shamir_instance_restores_sealed() {
    let inst = Instance::new(Backend::Sqlite);
    let (shares, pw_file) = inst.init_shamir(3, 2);
    let server = inst.start();
    assert!(server.started_sealed);
    let custodian = Cli::new(&inst, "custodian").at(&server);
    for s in &shares[..2] {
        custodian
            .run(
                &["operator", "unseal", "--share-stdin"],
                Some(&format!("{s}\n")),
            )
            .assert_ok();
    }
    let otp = read_password_file(&pw_file);
    let (admin, admin_pw) = admin_cli_with(&inst, &server, &otp);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    grant_admin_reveal(&admin, "allow");
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        "sealed-secret-1\n",
    );
    let id = snapshot_id(&admin.ok(&["snapshot", "create"]));
    drop(server);

    let restored = inst.empty_like();
    let from = inst.data_dir.join("snapshots").display().to_string();
    let to = restored.data_dir.display().to_string();
    let operator = Cli::new(&inst, "operator");
    // One share is not enough; a key file is the wrong thing.
    operator
        .run(
            &[
                "snapshot",
                "restore",
                &id,
                "--from",
                &from,
                "--data-dir",
                &to,
                "--shares-stdin",
            ],
            Some(&format!("{}\n", shares[2])),
        )
        .assert_error()
        .assert_stderr_contains("2 needed");
    let out = operator.run(
        &[
            "snapshot",
            "restore",
            &id,
            "--from",
            &from,
            "--data-dir",
            &to,
            "--shares-stdin",
        ],
        Some(&format!("{}\n{}\n", shares[0], shares[2])),
    );
    out.assert_ok().assert_stdout_contains("starts sealed");
    assert!(!restored.data_dir.join("master.key").exists());
    let server2 = restored.start();
    assert!(
        server2.started_sealed,
        "a Shamir snapshot restores sealed:\n{}",
        server2.stdout_text()
    );
    let api = server2.api();
    api.login("admin", &admin_pw).assert_error(503, "sealed");
    let custodian2 = Cli::new(&restored, "custodian").at(&server2);
    for s in &shares[1..] {
        custodian2
            .run(
                &["operator", "unseal", "--share-stdin"],
                Some(&format!("{s}\n")),
            )
            .assert_ok();
    }
    let admin2 = Cli::new(&restored, "admin").at(&server2);
    admin2
        .login("admin", &admin_pw)
        .assert_stdout_contains("logged in as admin");
    assert_eq!(reveal(&admin2, "db01", "root"), "sealed-secret-1\n");
    admin2
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

#[test]
fn snapshot_retention_keeps_the_newest_verified() {
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(
        &config,
        "[snapshots]\ntime = \"off\"\nkeep_daily = 1\nkeep_weekly = 1\n",
    )
    .unwrap();
    let server = inst.start_with_env(&[
        ("COFRE_LOG", "info"),
        ("COFRE_CONFIG", config.to_str().unwrap()),
    ]);
    let (admin, _) = admin_cli(&inst, &server);
    let a = snapshot_id(&admin.ok(&["snapshot", "create", "--no-recordings"]));
    let verified = admin
        .ok(&["--output", "json", "snapshot", "verify", &a])
        .json();
    let names: Vec<&str> = verified["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"config/cofre.toml"),
        "the config file is in the snapshot: {names:?}"
    );
    let b = snapshot_id(&admin.ok(&["snapshot", "create", "--no-recordings"]));
    let ids = |admin: &Cli| -> Vec<String> {
        let list = admin.ok(&["--output", "json", "snapshot", "list"]).json();
        list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // B is the day's newest, A the newest verified: both stay.
    assert_eq!(ids(&admin), vec![b.clone(), a.clone()]);
    let c = snapshot_id(&admin.ok(&["snapshot", "create", "--no-recordings"]));
    // C is the day's newest now; B goes; A stays as the newest verified.
    assert_eq!(ids(&admin), vec![c.clone(), a.clone()]);
    assert!(!inst
        .data_dir
        .join("snapshots")
        .join(format!("{b}.cofresnap"))
        .exists());
    let entries = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    let prune = entries
        .iter()
        .find(|e| e["action"] == "snapshot.prune")
        .expect("the prune is audited");
    assert_eq!(prune["details"]["removed"], json!([b]));
    admin
        .ok(&["snapshot", "prune", "--dry-run"])
        .assert_stdout_contains("nothing to remove");
    drop(server);
}

/// A real gateway session's recording (real sshd and ssh) exports identically from the restored
/// instance, which reads its own copy (the original's recordings are gone by then).
#[test]
fn snapshot_recording_exports_identical_after_restore() {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ssh_keygen(&keys.join("alice_key"));
    ssh_keygen(&keys.join("root_key"));
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("root_key.pub"));
    gateway_world(&inst, &server, &admin, &keys, sshd.port);
    allow_sessions(&admin, "allow");
    let home = inst.path().join("ssh-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut ssh = std::process::Command::new("ssh");
    ssh.env_remove("SSH_AUTH_SOCK")
        .env("HOME", &home)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(keys.join("alice_key"))
        .args([
            "-p",
            &server.ssh_port.to_string(),
            "alice:root@db01@127.0.0.1",
        ])
        .arg("for i in 1 2 3; do echo recorded-line-$i-$((6*7)); done");
    let out = run_command(ssh, None, "ssh through the gateway");
    out.assert_ok();
    assert!(out.stdout.contains("recorded-line-3-42"), "{out:?}");
    let sessions = json_items(&admin.ok(&["--output", "json", "session", "list"]).json());
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    let before = inst.path().join("before.cast");
    admin.ok(&["recording", "export", &id, "-o", before.to_str().unwrap()]);
    let before = std::fs::read(&before).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("recorded-line-3-42"));

    let snap = snapshot_id(&admin.ok(&["snapshot", "create"]));
    drop(server);
    let restored = inst.empty_like();
    let args = restore_args(
        &snap,
        &inst.data_dir.join("snapshots"),
        &restored.data_dir,
        &inst.data_dir.join("master.key"),
        &None,
    );
    Cli::new(&inst, "operator").ok(&strs(&args));
    // The restored server must read its own copy, not the original's.
    std::fs::remove_dir_all(inst.data_dir.join("recordings")).unwrap();
    let server2 = restored.start();
    let admin2 = Cli::new(&restored, "admin").at(&server2);
    admin2.login("admin", &admin_pw);
    let after = restored.path().join("after.cast");
    admin2.ok(&["recording", "export", &id, "-o", after.to_str().unwrap()]);
    assert!(
        std::fs::read(&after).unwrap() == before,
        "the recording differs after the restore"
    );
    drop(sshd);
}

/// Every path under `dir`, relative to it, sorted; empty when `dir` does not exist.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A restore that fails, however it fails, leaves the target as it found it: no key, no decrypted
/// member, no keyring, no database, no scratch dir (and no directory it made itself); one killed
/// half way leaves only its scratch dir, which the next attempt removes.
#[test]
fn snapshot_failed_restore_leaves_nothing_behind() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let recordings = seed_recordings(&inst.data_dir, 4, 6 << 20, 29);
    let id = snapshot_id(&admin.ok(&["snapshot", "create"]));
    let verified = admin
        .ok(&["--output", "json", "snapshot", "verify", &id])
        .json();
    let members = verified["members"].as_array().unwrap().clone();
    drop(server);
    let other = Instance::new(Backend::Sqlite);
    drop(other.start());

    let from = inst.data_dir.join("snapshots");
    let file = from.join(format!("{id}.cofresnap"));
    let pristine = std::fs::read(&file).unwrap();
    let key = inst.data_dir.join("master.key");
    let operator = Cli::new(&inst, "operator");
    let restore = |to: &Path, key: &Path| {
        let out = operator.run(&strs(&restore_args(&id, &from, to, key, &None)), None);
        out.assert_error();
        out
    };
    let fresh = || inst.path().join(format!("restore-{}", random_hex(4)));
    let assert_gone = |to: &Path, case: &str| {
        assert!(
            !to.exists(),
            "{case}: the failed restore left {}: {:?}",
            to.display(),
            tree(to)
        );
    };

    // A damaged byte in the first member, one in the middle and the last.
    for m in [
        &members[0],
        &members[members.len() / 2],
        &members[members.len() - 1],
    ] {
        let victim = m["name"].as_str().unwrap();
        let (start, end) = (m["offset"].as_u64().unwrap(), m["end"].as_u64().unwrap());
        std::fs::write(&file, &pristine).unwrap();
        flip_byte(&file, (start + end) / 2);
        let to = fresh();
        restore(&to, &key).assert_stderr_contains(&format!("member {victim}"));
        assert_gone(&to, &format!("damaged {victim}"));
    }
    // Truncated: half the file, and only the last byte of its trailer.
    for len in [pristine.len() / 2, pristine.len() - 1] {
        std::fs::write(&file, &pristine[..len]).unwrap();
        let to = fresh();
        restore(&to, &key);
        assert_gone(&to, &format!("truncated to {len} bytes"));
    }
    std::fs::write(&file, &pristine).unwrap();

    // Wrong keys: another instance's, bytes that are no key file, none at all.
    let garbage = inst.path().join("garbage.key");
    std::fs::write(&garbage, random_hex(32)).unwrap();
    for wrong in [
        other.data_dir.join("master.key"),
        garbage,
        inst.path().join("no-such.key"),
    ] {
        let to = fresh();
        restore(&to, &wrong);
        assert_gone(&to, &format!("key file {}", wrong.display()));
    }
    // A target that already existed (empty) stays, and stays empty.
    let empty = fresh();
    std::fs::create_dir_all(&empty).unwrap();
    restore(&empty, &other.data_dir.join("master.key")).assert_stderr_contains("does not open");
    assert!(empty.is_dir());
    assert_eq!(tree(&empty), Vec::<String>::new());
    // A missing parent is made, and removed again.
    let deep = fresh();
    restore(&deep.join("a/b/data"), &other.data_dir.join("master.key"));
    assert_gone(&deep, "a target whose parents were missing");

    // Unwritable and full targets (tmpfs mounts: the test runs as root).
    let ro = fresh();
    let _ro = Tmpfs::mount(&ro, "size=1m,ro").expect("read-only tmpfs");
    restore(&ro, &key).assert_stderr_contains("Read-only");
    assert_eq!(tree(&ro), Vec::<String>::new());
    let small = fresh();
    let _small = Tmpfs::mount(&small, "size=2m").expect("tmpfs");
    restore(&small, &key).assert_stderr_contains("No space left");
    assert_eq!(tree(&small), Vec::<String>::new());
    let plain = inst.path().join("plain-file");
    std::fs::write(&plain, b"keep").unwrap();
    restore(&plain.join("data"), &key);
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");

    // Killed while members are being written: only the scratch dir (and what it lists as being
    // moved into place) is left, and the next attempt, even a failing one, removes it.
    let to = fresh();
    let scratch = to.join(".cofre-restore");
    let (mut cmd, shown) = operator.command(&strs(&restore_args(&id, &from, &to, &key, &None)));
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = tree(&scratch.join("files"))
            .iter()
            .filter(|p| p.ends_with(".rec"))
            .any(|p| std::fs::metadata(scratch.join("files").join(p)).is_ok_and(|m| m.len() > 0));
        if started {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{shown} ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "{shown} wrote nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let placing = std::fs::read_to_string(scratch.join("placing")).unwrap_or_default();
    let left = tree(&to);
    assert!(
        left.iter().any(|p| p.starts_with(".cofre-restore/")),
        "{left:?}"
    );
    for p in &left {
        let top = p.split('/').next().unwrap();
        assert!(
            top == ".cofre-restore" || placing.lines().any(|l| l == top),
            "the killed restore left {p} outside its scratch dir: {left:?}"
        );
    }
    restore(&to, &other.data_dir.join("master.key"));
    assert_eq!(
        tree(&to),
        Vec::<String>::new(),
        "leftovers were not removed"
    );
    // And a good restore into it then works.
    operator
        .ok(&strs(&restore_args(&id, &from, &to, &key, &None)))
        .assert_stdout_contains(&format!("restored snapshot {id}"));
    let after = tree(&to);
    assert!(
        !after.iter().any(|p| p.starts_with(".cofre-restore")),
        "{after:?}"
    );
    for want in ["cofre.db", "keyring.json", "master.key"] {
        assert!(after.iter().any(|p| p == want), "{want} missing: {after:?}");
    }
    for (rel, data) in &recordings {
        assert!(
            std::fs::read(to.join(rel)).unwrap() == *data,
            "{rel} differs"
        );
    }
}
