//! `cofre-bench snapshot`: a server on a scratch data dir with N MiB of recordings (random bytes,
//! which like real sealed frames do not compress). Times `snapshot create` (through the API, as
//! an admin would) and the offline restore, next to `tar -I 'zstd -1' -cf` and `-xf` of the same
//! data dir in the same run, and reports the ratios (aim: <= 1.3).

use super::{login, start_server};
use anyhow::{anyhow, bail, Context, Result};
use cofre::client::Client;
use cofre_app::snapshot::restore::{self, RestoreOptions, Unlock};
use cofre_proto::*;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Files of this size, like a day's worth of long sessions.
const FILE_MIB: u64 = 16;

pub(crate) async fn run(megabytes: u64) -> Result<ExitCode> {
    let (server, target, otp, _) = start_server(None).await?;
    let data_dir = server.1.path().join("data");
    seed(&data_dir, megabytes)?;
    let anon = Client::new(&target, None)?;
    let admin = login(&anon, "admin", &otp, "bench-admin-password").await?;
    let scratch = tempfile::tempdir()?;

    // tar first: it reads the data dir as it is (page cache warm for both, since seeding wrote it).
    let tar_file = scratch.path().join("data.tar.zst");
    let t = Instant::now();
    let status = std::process::Command::new("tar")
        .arg("-I")
        .arg("zstd -1")
        .arg("-cf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&data_dir)
        .arg(".")
        .status()
        .context("running tar (needs tar and zstd)")?;
    if !status.success() {
        bail!("tar -I 'zstd -1' -cf failed: {status}");
    }
    let tar_create_raw = t.elapsed();
    // The snapshot is fsynced before it counts; so is the baseline's archive.
    std::fs::File::open(&tar_file)?.sync_all()?;
    let tar_create = t.elapsed();
    let tar_size = std::fs::metadata(&tar_file)?.len();

    let t = Instant::now();
    let job: SnapshotJob = admin
        .post(
            "/api/v1/snapshots",
            &CreateSnapshotRequest {
                reason: None,
                include_recordings: Some(true),
            },
        )
        .await?;
    let job = loop {
        let j: SnapshotJob = admin
            .get(&format!("/api/v1/snapshots/jobs/{}", job.id))
            .await?;
        if j.finished_at.is_some() {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let snap_create = t.elapsed();
    let info = job
        .snapshot
        .ok_or_else(|| anyhow!("the snapshot failed: {}", job.error.unwrap_or_default()))?;

    let untar = scratch.path().join("untar");
    std::fs::create_dir_all(&untar)?;
    let t = Instant::now();
    let status = std::process::Command::new("tar")
        .arg("-I")
        .arg("zstd -1")
        .arg("-xf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&untar)
        .status()?;
    if !status.success() {
        bail!("tar -xf failed: {status}");
    }
    let tar_restore_raw = t.elapsed();
    // The restore fsyncs every file it writes; so does the baseline.
    sync_tree(&untar)?;
    let tar_restore = t.elapsed();

    let t = Instant::now();
    restore::restore(
        RestoreOptions {
            snapshot: cofre_app::snapshot::snapshot_path(&data_dir.join("snapshots"), &info.id),
            data_dir: scratch.path().join("restored"),
            unlock: Unlock::KeyFile(data_dir.join("master.key")),
            database_url: None,
        },
        &mut |_, _| {},
    )
    .await?;
    let snap_restore = t.elapsed();
    drop(server);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    outln!("data dir: {megabytes} MiB of recordings");
    outln!(
        "create : snapshot {:>7.2} s ({} bytes)   tar+zstd-1 + fsync {:>7.2} s ({} bytes)   ratio {:.2}   (tar without fsync {:.2} s: ratio {:.2})",
        snap_create.as_secs_f64(),
        info.size,
        tar_create.as_secs_f64(),
        tar_size,
        ratio(snap_create, tar_create),
        tar_create_raw.as_secs_f64(),
        ratio(snap_create, tar_create_raw)
    );
    outln!(
        "restore: snapshot {:>7.2} s   tar -xf + fsync {:>7.2} s   ratio {:.2}   (tar without fsync {:.2} s: ratio {:.2})",
        snap_restore.as_secs_f64(),
        tar_restore.as_secs_f64(),
        ratio(snap_restore, tar_restore),
        tar_restore_raw.as_secs_f64(),
        ratio(snap_restore, tar_restore_raw)
    );
    outln!("(snapshot: encrypted, per-member SHA-256, fsynced; restore verifies every member)");
    Ok(ExitCode::SUCCESS)
}

/// fsync of every file and directory under `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Random recordings, written fast (xorshift; the bytes only need to be incompressible).
pub(super) fn seed(data_dir: &Path, megabytes: u64) -> Result<()> {
    let dir = data_dir.join("recordings").join("2026-01-01");
    std::fs::create_dir_all(&dir)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut left = megabytes << 20;
    let mut n = 0;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let size = left.min(FILE_MIB << 20);
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("bench-{n}.rec")))?);
        let mut written = 0;
        while written < size {
            for chunk in buf.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let k = (size - written).min(buf.len() as u64) as usize;
            f.write_all(&buf[..k])?;
            written += k as u64;
        }
        f.flush()?;
        left -= size;
        n += 1;
    }
    Ok(())
}
