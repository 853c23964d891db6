//! Backup targets (where copies go), jobs (what goes where, when) and runs (what each attempt did).
//! A target's SSH key or S3 secret arrives sealed; the store never sees it in plaintext.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct BackupTargetRow {
    pub id: i64,
    pub name: String,
    /// `dir`, `ssh` or `s3`.
    pub kind: String,
    /// `credentials` or `system` (whose backups it holds); `None` until its first job binds it.
    pub duty: Option<String>,
    /// A directory, `user@host:/path`, or `s3://bucket/prefix`.
    pub location: String,
    pub port: Option<i64>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// Pinned SSH host keys, in known_hosts format.
    pub known_hosts: Option<String>,
    /// (wrapped data key, ciphertext) of the SSH private key or the S3 secret access key.
    pub secret: Option<(Vec<u8>, Vec<u8>)>,
    pub created_at: String,
    pub created_by: String,
    pub last_ok_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BackupJobRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub target_id: i64,
    pub target: String,
    pub schedule: String,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct BackupRunRow {
    pub id: i64,
    pub job_id: i64,
    pub job: String,
    pub reason: String,
    /// `running`, `ok` or `failed`.
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub files_sent: i64,
    pub bytes_sent: i64,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

const TARGET_COLUMNS: &str =
    "id, name, kind, duty, location, port, endpoint, region, access_key_id, \
    known_hosts, secret_wrapped_key, secret_ciphertext, created_at, created_by, last_ok_at, \
    last_error_at, last_error";
const JOB_COLUMNS: &str = "j.id, j.name, j.kind, j.target_id, t.name AS target, j.schedule, \
    j.created_at, j.created_by";
const RUN_COLUMNS: &str = "r.id, r.job_id, j.name AS job, r.reason, r.status, r.started_at, \
    r.ended_at, r.files_sent, r.bytes_sent, r.duration_ms, r.error";

fn target_from_row(row: &sqlx::any::AnyRow) -> Result<BackupTargetRow> {
    let wrapped: Option<Vec<u8>> = row.try_get("secret_wrapped_key")?;
    let ciphertext: Option<Vec<u8>> = row.try_get("secret_ciphertext")?;
    Ok(BackupTargetRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        duty: row.try_get("duty")?,
        location: row.try_get("location")?,
        port: row.try_get("port")?,
        endpoint: row.try_get("endpoint")?,
        region: row.try_get("region")?,
        access_key_id: row.try_get("access_key_id")?,
        known_hosts: row.try_get("known_hosts")?,
        secret: wrapped.zip(ciphertext),
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        last_ok_at: row.try_get("last_ok_at")?,
        last_error_at: row.try_get("last_error_at")?,
        last_error: row.try_get("last_error")?,
    })
}

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<BackupJobRow> {
    Ok(BackupJobRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        target_id: row.try_get("target_id")?,
        target: row.try_get("target")?,
        schedule: row.try_get("schedule")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<BackupRunRow> {
    Ok(BackupRunRow {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        job: row.try_get("job")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        files_sent: row.try_get("files_sent")?,
        bytes_sent: row.try_get("bytes_sent")?,
        duration_ms: row.try_get("duration_ms")?,
        error: row.try_get("error")?,
    })
}

impl Store {
    pub async fn backup_targets(&self) -> Result<Vec<BackupTargetRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM backup_targets WHERE deleted_at IS NULL ORDER BY name"
        ))
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(target_from_row).collect()
    }

    pub async fn backup_target(&self, name: &str) -> Result<Option<BackupTargetRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM backup_targets WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(target_from_row).transpose()
    }

    pub async fn backup_jobs(&self) -> Result<Vec<BackupJobRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM backup_jobs j JOIN backup_targets t ON t.id = j.target_id \
             WHERE j.deleted_at IS NULL ORDER BY j.name"
        ))
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn backup_job(&self, name: &str) -> Result<Option<BackupJobRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM backup_jobs j JOIN backup_targets t ON t.id = j.target_id \
             WHERE j.name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn backup_run(&self, id: i64) -> Result<Option<BackupRunRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM backup_runs r JOIN backup_jobs j ON j.id = r.job_id \
             WHERE r.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The newest run of a job with this status (`None` for any status).
    pub async fn backup_last_run(
        &self,
        job_id: i64,
        status: Option<&str>,
    ) -> Result<Option<BackupRunRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM backup_runs r JOIN backup_jobs j ON j.id = r.job_id \
             WHERE r.job_id = $1 AND ($2 = '' OR r.status = $2) ORDER BY r.id DESC LIMIT 1"
        ))
        .bind(job_id)
        .bind(status.unwrap_or(""))
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }
}

pub struct NewBackupTarget<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub duty: Option<&'a str>,
    pub location: &'a str,
    pub port: Option<i64>,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub known_hosts: Option<&'a str>,
    pub secret: Option<(&'a [u8], &'a [u8])>,
    pub created_at: &'a str,
    pub created_by: &'a str,
}

pub struct NewBackupJob<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub target_id: i64,
    pub schedule: &'a str,
    pub created_at: &'a str,
    pub created_by: &'a str,
}

/// What a finished run did.
pub struct RunEnd<'a> {
    pub status: &'a str,
    pub ended_at: &'a str,
    pub files_sent: i64,
    pub bytes_sent: i64,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
}

impl WriteTx {
    pub async fn backup_insert_target(&mut self, t: NewBackupTarget<'_>) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO backup_targets (name, kind, location, port, endpoint, region, \
             access_key_id, known_hosts, secret_wrapped_key, secret_ciphertext, created_at, created_by, \
             duty) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(t.name)
        .bind(t.kind)
        .bind(t.location)
        .bind(t.port)
        .bind(t.endpoint)
        .bind(t.region)
        .bind(t.access_key_id)
        .bind(t.known_hosts)
        .bind(t.secret.map(|s| s.0.to_vec()))
        .bind(t.secret.map(|s| s.1.to_vec()))
        .bind(t.created_at)
        .bind(t.created_by)
        .bind(t.duty)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("backup target {}", t.name)))
    }

    /// Binds a target to a duty if it has none yet; true if the target now holds `duty` (it
    /// had it already or got it), false if it holds the other one. One statement, so two jobs of
    /// different duties added at once cannot both win.
    pub async fn backup_bind_target_duty(&mut self, target_id: i64, duty: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE backup_targets SET duty = $1 WHERE id = $2 AND (duty IS NULL OR duty = $1)",
        )
        .bind(duty)
        .bind(target_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pins host keys, only where none are pinned yet; false if another pin won the race.
    pub async fn backup_pin_host_keys(
        &mut self,
        target_id: i64,
        known_hosts: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE backup_targets SET known_hosts = $1 WHERE id = $2 AND known_hosts IS NULL",
        )
        .bind(known_hosts)
        .bind(target_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how the last contact with a target went (`error` `None`: it worked).
    pub async fn backup_target_state(
        &mut self,
        target_id: i64,
        at: &str,
        error: Option<&str>,
    ) -> Result<()> {
        match error {
            None => {
                sqlx::query("UPDATE backup_targets SET last_ok_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(target_id)
                    .execute(&mut *self.tx)
                    .await?
            }
            Some(e) => {
                sqlx::query(
                    "UPDATE backup_targets SET last_error_at = $1, last_error = $2 WHERE id = $3",
                )
                .bind(at)
                .bind(e)
                .bind(target_id)
                .execute(&mut *self.tx)
                .await?
            }
        };
        Ok(())
    }

    pub async fn backup_insert_job(&mut self, j: NewBackupJob<'_>) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO backup_jobs (name, kind, target_id, schedule, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(j.name)
        .bind(j.kind)
        .bind(j.target_id)
        .bind(j.schedule)
        .bind(j.created_at)
        .bind(j.created_by)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("backup job {}", j.name)))
    }

    /// Starts a run unless one of the same job is still running (then returns that run's id as
    /// `Err(Conflict)`).
    pub async fn backup_start_run(&mut self, job_id: i64, reason: &str, at: &str) -> Result<i64> {
        // Read under the write lock: a job removed after the scheduler listed it does not run.
        let removed: Option<Option<String>> =
            sqlx::query_scalar("SELECT deleted_at FROM backup_jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *self.tx)
                .await?;
        if !matches!(removed, Some(None)) {
            return Err(StoreError::NotFound {
                what: "backup job (it was removed)".into(),
            });
        }
        let running: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM backup_runs WHERE job_id = $1 AND status = 'running' LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        if let Some(id) = running {
            return Err(StoreError::Conflict {
                what: format!("a running run ({id}) of this job"),
            });
        }
        Ok(sqlx::query_scalar(
            "INSERT INTO backup_runs (job_id, reason, status, started_at) \
             VALUES ($1, $2, 'running', $3) RETURNING id",
        )
        .bind(job_id)
        .bind(reason)
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn backup_finish_run(&mut self, run_id: i64, end: RunEnd<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE backup_runs SET status = $1, ended_at = $2, files_sent = $3, bytes_sent = $4, \
             duration_ms = $5, error = $6 WHERE id = $7 AND status = 'running'",
        )
        .bind(end.status)
        .bind(end.ended_at)
        .bind(end.files_sent)
        .bind(end.bytes_sent)
        .bind(end.duration_ms)
        .bind(end.error)
        .bind(run_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks runs left `running` by a previous server process as failed; returns their ids.
    pub async fn backup_fail_interrupted(&mut self, at: &str, why: &str) -> Result<Vec<i64>> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM backup_runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&mut *self.tx)
                .await?;
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE backup_runs SET status = 'failed', ended_at = $1, error = $2 \
                 WHERE status = 'running'",
            )
            .bind(at)
            .bind(why)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(ids)
    }
}
