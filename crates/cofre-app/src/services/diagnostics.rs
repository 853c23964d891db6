//! Diagnostics: the redacted configuration and the server's log tail, for admins and, under a
//! `diagnostics` grant, vendor support. Each read is audited before it is answered (fail closed).

use super::{App, Orbit, Principal};
use crate::diagnostics::{log_tail, redact_url, LOG_TAIL_LINES};
use crate::error::{Error, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::Action;
use cofre_proto::{DiagnosticsConfig, DiagnosticsLogs};

/// Lines a log read gives when the caller names no number.
pub const DEFAULT_LOG_LINES: usize = 200;

impl App {
    fn database_text(&self) -> String {
        let url = self.config.database_url();
        if url.starts_with("postgres") {
            redact_url(&url, false)
        } else {
            format!("sqlite ({})", url.trim_start_matches("sqlite://"))
        }
    }
}

impl Orbit<'_> {
    /// `cofre diagnostics config`.
    pub async fn diagnostics_config(&self, who: &Principal) -> Result<DiagnosticsConfig> {
        who.require(Action::ReadDiagnostics)?;
        self.record(NewAuditEntry::new(
            who.username(),
            "diagnostics.config",
            "instance:config",
        ))
        .await?;
        let state = self.instance_state().await?;
        let c = &self.config;
        Ok(DiagnosticsConfig {
            version: crate::switch::version().to_owned(),
            mode: c.mode.as_str().to_owned(),
            instance_type: state.instance_type.as_str().to_owned(),
            data_dir: c.data_dir.display().to_string(),
            listen: c.listen.to_string(),
            ssh_listen: c.ssh_listen.to_string(),
            database: self.database_text(),
            time_zone: c.instance.time_zone.name().to_owned(),
            config_file: c.config_file.as_ref().map(|p| p.display().to_string()),
            settings: c.file_settings_redacted.clone(),
        })
    }

    /// `cofre diagnostics logs --lines N`: the last `lines` lines (1 to the tail's size).
    pub async fn diagnostics_logs(
        &self,
        who: &Principal,
        lines: Option<u32>,
    ) -> Result<DiagnosticsLogs> {
        who.require(Action::ReadDiagnostics)?;
        let n = match lines {
            None => DEFAULT_LOG_LINES,
            Some(n) if n >= 1 && (n as usize) <= LOG_TAIL_LINES => n as usize,
            Some(_) => {
                return Err(Error::invalid(
                    "lines",
                    format!("must be between 1 and {LOG_TAIL_LINES}"),
                ))
            }
        };
        self.record(
            NewAuditEntry::new(who.username(), "diagnostics.logs", "instance:log")
                .detail("lines", n as u64),
        )
        .await?;
        let (lines, total) = log_tail().last(n);
        Ok(DiagnosticsLogs {
            lines,
            total,
            kept: LOG_TAIL_LINES as u64,
        })
    }
}
