//! Cofre's persistence: one [`Store`] over SQLite (the embedded default) or PostgreSQL, through
//! sqlx's `Any` driver so that every query is written once.
//!
//! The store never sees a plaintext secret: credentials and TOTP seeds arrive sealed by
//! `cofre-crypto`. Every state change goes through a [`WriteTx`], which takes the audit chain's head
//! first; the service appends its audit entry in the same transaction, so an action and its audit entry
//! commit together or not at all.

pub mod audit;
pub mod backups;
pub mod breakglass;
pub mod copy;
pub mod credentials;
pub mod export;
pub mod gateway;
pub mod governance;
pub mod instance;
pub mod invites;
pub mod lockout;
pub mod maintenance;
pub mod network;
pub mod nodes;
pub mod offboarding;
pub mod policies;
pub mod requests;
pub mod rollback;
pub mod rotation;
pub mod siem;
pub mod sso;
pub mod support;
pub mod targets;
pub mod users;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use sqlx::AnyConnection as Conn;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// A file the store reads or writes (a database copy), with its path.
    #[error("{0}")]
    Io(String),
    /// What the store will not do, said in full (e.g. a copy into a database that is not empty).
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// Maps a unique-constraint violation to `Conflict` naming `what`.
    pub(crate) fn conflict_or(err: sqlx::Error, what: impl Into<String>) -> StoreError {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Conflict { what: what.into() };
            }
        }
        StoreError::Database(err)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// Computes the MAC of the audit head `(seq, hash)`; set once the keyring is unsealed (the store
/// never holds the key, only this function of it).
pub type HeadSigner = Arc<dyn Fn(i64, &str) -> String + Send + Sync>;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
    head_signer: Arc<std::sync::RwLock<Option<HeadSigner>>>,
    /// SQLite has one writer at a time; queueing writers here is much cheaper than letting them
    /// spin in SQLite's busy handler. PostgreSQL serialises on the audit head row instead.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Store {
    /// Connects, creating the SQLite file if needed, and runs the migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = match kind {
            DbKind::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    // sqlx would ping every connection it hands out: a round trip per query, more
                    // than a reveal's reads themselves. A connection that died fails its query (an
                    // error, never a wrong answer) and the pool drops it.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // FULL: a commit is on disk before we acknowledge it. secure_delete:
                            // deleted rows (a delivered break-glass share) are overwritten, not
                            // left behind in free pages.
                            conn.execute(
                                "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            DbKind::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    // As for SQLite: no ping per checkout.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?
            }
        };
        if kind == DbKind::Sqlite {
            // WAL lets readers go on while a writer commits; the mode is stored in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store {
            pool,
            kind,
            head_signer: Arc::default(),
            write_gate: (kind == DbKind::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(()))),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.kind {
            DbKind::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            DbKind::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The newest migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Starts a write transaction holding the audit chain head.
    pub async fn write(&self) -> Result<WriteTx> {
        let gate = match &self.write_gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        // The first statement is a write, so SQLite takes its write lock now (no deadlock-prone
        // upgrade later) and PostgreSQL locks the head row until commit.
        // It also reads the head, which stays ours until commit, so appends need not read it again.
        let row = sqlx::query(
            "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash, ts_high",
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit chain head is missing".into()))?;
        let head = (row.try_get("seq")?, row.try_get("hash")?);
        let head_ts_high = row.try_get("ts_high")?;
        let head_signer = self
            .head_signer
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        Ok(WriteTx {
            tx,
            _gate: gate,
            appended: false,
            head,
            head_ts_high,
            head_signer,
        })
    }

    /// From now on every append also MACs the new head (see [`HeadSigner`]).
    pub fn set_head_signer(&self, signer: HeadSigner) {
        if let Ok(mut slot) = self.head_signer.write() {
            *slot = Some(signer);
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that the database answers (for /healthz).
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        c.ping().await?;
        Ok(())
    }

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *c)
            .await?)
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls everything back.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
    appended: bool,
    /// The audit chain's head `(seq, hash)` as this transaction leaves it so far.
    head: (i64, String),
    /// The highest `ts` in the trail so far (the newest entry's `ts_high`, see `audit_search`).
    head_ts_high: String,
    /// None while sealed: the head is then written without a MAC, and the first append after
    /// unsealing (the unseal is itself audited) gives it one again.
    head_signer: Option<HeadSigner>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits. A transaction that changed state must have appended its audit entry first: this is
    /// where "no audit, no action" is enforced.
    pub async fn commit(self) -> Result<()> {
        if !self.appended {
            return Err(StoreError::Corrupt(
                "refusing to commit a change without its audit entry".into(),
            ));
        }
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

pub(crate) fn bool_int(b: bool) -> i64 {
    i64::from(b)
}
