//! The switch-over of a maintenance window, on the server's side (the supervisor's side is
//! `cofre server`'s, the shared facts are [`crate::switch`]):
//!
//! - the old version, its pre-maintenance snapshot verified and the release installed, writes
//!   `switch.json` and asks to exit with [`EXIT_SWITCH`];
//! - the new version, started by the supervisor as the candidate, checks itself (unsealed,
//!   migrations applied, the audit chain verifies, the sealed test secret opens) and says so on
//!   `/healthz`; once the supervisor commits it, it records the last steps and ends the window
//!   `done`;
//! - the old version, started again after a failed hand-over (its database already restored
//!   where the new one migrated it, [`crate::switch::restore_database_if_migrated`]), records
//!   the failure and the rollback and ends the window `rolled_back`, audited and notified.

use super::maintenance::Step;
use super::{rfc3339, App, Principal};
use crate::error::{Error, Result};
use crate::switch::{self, Phase, Switch, EXIT_SWITCH};
use cofre_core::audit::NewAuditEntry;
use cofre_core::maintenance::State;
use cofre_core::role::Mode;
use cofre_store::maintenance::WindowRow;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

/// The addresses this process listens on, as bound (port 0 resolved).
#[derive(Debug, Clone)]
pub struct Bound {
    pub listen: SocketAddr,
    pub ssh_listen: SocketAddr,
    pub external_listen: Option<SocketAddr>,
}

/// This process's part in a hand-over.
pub struct HandoverState {
    /// Set when the server should exit with this status (the old version handing over, or a
    /// candidate that failed its self-check).
    pub(crate) exit: tokio::sync::watch::Sender<Option<i32>>,
    pub(crate) bound: std::sync::OnceLock<Bound>,
    /// The candidate's self-check: None when this process is not a candidate.
    pub(crate) check: std::sync::Mutex<Option<String>>,
    /// While this process runs a window (or is its new version on trial): why the API takes no
    /// changes. A rollback may restore the database from the window's snapshot, which would
    /// lose a change acknowledged meanwhile.
    pub(crate) frozen: std::sync::Mutex<Option<String>>,
}

impl Default for HandoverState {
    fn default() -> Self {
        Self {
            exit: tokio::sync::watch::channel(None).0,
            bound: std::sync::OnceLock::new(),
            check: std::sync::Mutex::new(None),
            frozen: std::sync::Mutex::new(None),
        }
    }
}

impl App {
    /// Tells the front ends where this process listens (a hand-over needs the same addresses).
    pub fn set_bound(&self, bound: Bound) {
        let _ = self.handover.bound.set(bound);
    }

    /// Resolves to the exit status once the server has been asked to exit by a hand-over.
    pub fn exit_requests(&self) -> tokio::sync::watch::Receiver<Option<i32>> {
        self.handover.exit.subscribe()
    }

    /// The candidate's self-check as `/healthz` reports it: `checking`, `ok: ...` or
    /// `failed: ...`; None when this process is not a candidate.
    pub fn handover_check(&self) -> Option<String> {
        self.handover.check.lock().ok().and_then(|c| c.clone())
    }

    /// The refusal of an API change while a window runs on this process (see `frozen`).
    pub fn maintenance_write_refusal(&self) -> Option<Error> {
        let why = self.handover.frozen.lock().ok()?.clone()?;
        Some(Error::new(
            crate::error::ErrorKind::Unavailable,
            crate::error::ErrorCode::MaintenanceWindow,
            why,
        ))
    }

    pub(crate) fn freeze(&self, window: Option<(&str, i64)>) {
        if let Ok(mut f) = self.handover.frozen.lock() {
            *f = window.map(|(id, ends)| {
                format!(
                    "maintenance window {id} is running until {}: changes are refused until it ends (reading goes on)",
                    rfc3339(ends)
                )
            });
        }
    }

    fn set_check(&self, text: String) {
        if let Ok(mut c) = self.handover.check.lock() {
            *c = Some(text);
        }
    }

    /// The last step of the old version in a window: hand over to the new one.
    pub(crate) async fn hand_over(
        self: &Arc<Self>,
        row: &WindowRow,
        snapshot: (&str, std::path::PathBuf),
        audit_after: i64,
        to_binary: std::path::PathBuf,
        to_version: &str,
    ) -> Result<()> {
        let id = row.id.as_str();
        let refuse = if !switch::supervised() {
            Some("this server runs without its supervisor (`cofre server --no-supervisor`): nothing would start the new version".to_owned())
        } else if self.keyring.seal != cofre_crypto::SealKind::KeyFile {
            Some("a Shamir-sealed instance would start the new version sealed, and no one could check it or roll it back unattended: apply this release by hand".to_owned())
        } else {
            None
        };
        if let Some(why) = refuse {
            self.step(id, "switch_over", "failed", why.clone()).await?;
            return self.finish_window(id, State::Failed, &why).await;
        }
        let bound = self.handover.bound.get().cloned().ok_or_else(|| {
            Error::internal("the switch-over", "the listeners' addresses are unknown")
        })?;
        let schema = cofre_store::rollback::schema_fingerprint(&self.config.database_url()).await?;
        let canary: [u8; 32] = cofre_crypto::random_array();
        let sealed = self
            .with_master(|mk| cofre_crypto::envelope::seal(mk, &canary, switch::CANARY_AAD))?
            .map_err(|e| Error::internal("sealing the test secret", e))?;
        let from_binary = std::env::current_exe()
            .map_err(|e| Error::internal("finding the running binary", e))?;
        let now = self.now().unix_timestamp();
        let mut s = Switch {
            window: id.to_owned(),
            release: row.release_id.clone(),
            from_binary,
            from_version: switch::version().to_owned(),
            to_binary,
            to_version: to_version.to_owned(),
            snapshot: snapshot.0.to_owned(),
            snapshot_path: snapshot.1,
            audit_after,
            deadline: row.ends_at,
            listen: bound.listen.to_string(),
            ssh_listen: bound.ssh_listen.to_string(),
            external_listen: bound.external_listen.map(|a| a.to_string()),
            schema,
            canary_wrapped_key: hex::encode(&sealed.wrapped_key),
            canary_ciphertext: hex::encode(&sealed.ciphertext),
            canary_sha256: hex::encode(Sha256::digest(canary)),
            phase: Phase::Prepared,
            failure: None,
            restored: None,
            history: Vec::new(),
        };
        self.step(
            id,
            "switch_over",
            "started",
            format!(
                "Cofre {} stops; the supervisor starts Cofre {} on the same addresses and checks it by {}",
                s.from_version,
                s.to_version,
                rfc3339(s.deadline)
            ),
        )
        .await?;
        self.switch_file("writing the switch-over", move |d| {
            switch::save(d, &mut s, Phase::Prepared, now)
        })
        .await?;
        tracing::info!(window = %id, "handing over to the new version");
        let _ = self.handover.exit.send(Some(EXIT_SWITCH));
        Ok(())
    }

    /// Runs `f` on the data dir's switch-over files, on a blocking thread.
    async fn switch_file<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&std::path::Path) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let data_dir = self.config.data_dir.clone();
        tokio::task::spawn_blocking(move || f(&data_dir))
            .await
            .map_err(|e| Error::internal(what, e))?
            .map_err(|e| Error::internal(what, e))
    }

    /// At start: a hand-over in progress decides what this process does first.
    pub(crate) async fn resume_handover(self: &Arc<Self>) -> Option<String> {
        let s = match self
            .switch_file("reading the switch-over", switch::load)
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the switch-over's state");
                return None;
            }
        };
        let me = switch::version();
        match s.phase {
            Phase::Starting if me == s.to_version => {
                self.freeze(Some((&s.window, s.deadline)));
                self.set_check("checking".into());
                let app = self.clone();
                let s2 = s.clone();
                tokio::spawn(async move { app.self_check(&s2).await });
            }
            Phase::Committed if me == s.to_version => {
                if let Err(e) = self.finish_handover_done().await {
                    tracing::error!(error = %e, "cannot record the end of the update");
                }
            }
            Phase::RollingBack if me == s.from_version => {
                if let Err(e) = self.finish_rollback(&s).await {
                    tracing::error!(error = %e, "cannot record the rollback");
                }
            }
            _ => {}
        }
        Some(s.window)
    }

    async fn self_check(self: Arc<Self>, s: &Switch) {
        match self.checks(s).await {
            Ok(report) => {
                tracing::info!(report = %report, "the new version checked itself");
                self.set_check(format!("ok: {report}"));
            }
            Err(why) => {
                tracing::error!(why = %why, "the new version failed its self-check: exiting so the old one comes back");
                self.set_check(format!("failed: {why}"));
                let _ = self.handover.exit.send(Some(1));
            }
        }
    }

    async fn checks(&self, s: &Switch) -> std::result::Result<String, String> {
        if self.is_sealed() {
            return Err("the new version is sealed".into());
        }
        let schema = self
            .store
            .schema_version()
            .await
            .map_err(|e| format!("reading the schema: {e}"))?;
        let verify = self
            .audit()
            .verify_audit(&Principal::system(Mode::OnPrem))
            .await
            .map_err(|e| format!("verifying the audit chain: {}", e.message))?;
        if !verify.intact {
            return Err(format!(
                "the audit chain does not verify: {}",
                verify
                    .first_broken
                    .map(|b| format!("entry {}: {}", b.seq, b.reason))
                    .unwrap_or_default()
            ));
        }
        let sealed = cofre_crypto::SealedSecret {
            wrapped_key: hex::decode(&s.canary_wrapped_key).map_err(|e| e.to_string())?,
            ciphertext: hex::decode(&s.canary_ciphertext).map_err(|e| e.to_string())?,
        };
        let opened = self
            .with_master(|mk| cofre_crypto::envelope::open(mk, &sealed, switch::CANARY_AAD))
            .map_err(|e| e.message)?
            .map_err(|_| "the test secret sealed by the old version does not open".to_owned())?;
        if hex::encode(Sha256::digest(&opened[..])) != s.canary_sha256 {
            return Err("the test secret opens to other bytes".into());
        }
        Ok(format!(
            "unsealed; schema at migration {schema}; audit chain intact ({} entries); the test secret round-trips",
            verify.entries_checked
        ))
    }

    /// The supervisor committed the update (it wrote `committed` and said so on stdin, or this
    /// process started after it did): the window's last steps, and done.
    pub async fn finish_handover_done(&self) -> Result<()> {
        let s = self
            .switch_file("reading the switch-over", switch::load)
            .await?;
        let Some(s) = s else { return Ok(()) };
        if s.phase != Phase::Committed {
            return Ok(());
        }
        let id = s.window.as_str();
        let check = self
            .handover_check()
            .unwrap_or_else(|| "checked before a restart".into());
        self.step(
            id,
            "switch_over",
            "ok",
            format!("Cofre {} serves on the same addresses", s.to_version),
        )
        .await?;
        self.step(id, "health_check", "ok", check).await?;
        self.finish_window(
            id,
            State::Done,
            &format!("updated from Cofre {} to {}", s.from_version, s.to_version),
        )
        .await?;
        if let Ok(mut c) = self.handover.check.lock() {
            *c = None;
        }
        self.switch_file("ending the switch-over", switch::remove)
            .await?;
        Ok(())
    }

    async fn finish_rollback(&self, s: &Switch) -> Result<()> {
        let id = s.window.as_str();
        let failure = s
            .failure
            .clone()
            .unwrap_or_else(|| "the hand-over did not complete".into());
        let restored = s
            .restored
            .clone()
            .unwrap_or_else(|| "the database was not looked at".into());
        let steps: [Step; 2] = [
            ("switch_over", "failed", failure.clone()),
            (
                "rollback",
                "ok",
                format!("Cofre {} serves again; {restored}", s.from_version),
            ),
        ];
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let subject = format!(
            "Maintenance window {id} rolled back: Cofre {} kept",
            s.from_version
        );
        let text = format!(
            "{subject}\n\nThe update to Cofre {} failed: {failure}\n{restored}\n",
            s.to_version
        );
        let body = serde_json::json!({
            "event": "maintenance.rollback",
            "maintenance": id,
            "from": s.from_version,
            "to": s.to_version,
            "why": failure,
            "database": restored,
            "at": rfc3339(now),
        });
        self.queue_admin_notices(&mut tx, &subject, &text, &body)
            .await?;
        let entry = NewAuditEntry::new(
            "system",
            "maintenance.rollback",
            format!("maintenance:{id}"),
        )
        .outcome("failed")
        .detail("from", s.from_version.as_str())
        .detail("to", s.to_version.as_str())
        .detail("why", failure.as_str())
        .detail("database", restored.as_str());
        self.commit_steps(tx, id, &steps, entry).await?;
        self.notifier_wake();
        self.finish_window(
            id,
            State::RolledBack,
            &format!("rolled back to Cofre {}: {failure}", s.from_version),
        )
        .await?;
        self.switch_file("ending the switch-over", switch::remove)
            .await?;
        Ok(())
    }
}
