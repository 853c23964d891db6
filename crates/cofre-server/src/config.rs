//! Server configuration: defaults, then the `--config` TOML file, then `COFRE_*` environment
//! variables and flags (the binary maps those two onto [`Overrides`]).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use cofre_core::role::Mode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Everything the instance keeps: database (SQLite), keyring, TLS certificate.
    pub data_dir: PathBuf,
    /// Address of the HTTPS API.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`; SQLite in the data dir when absent.
    pub database_url: Option<String>,
    pub mode: Mode,
    /// Lifetime of a login token.
    pub token_ttl_minutes: u64,
    /// Consecutive failed logins that lock an account.
    pub lockout_threshold: u32,
    pub lockout_minutes: u64,
    /// Break-glass backup files (`[breakglass]` in the TOML file).
    pub breakglass: BreakGlassConfig,
    /// Address of the SSH gateway.
    pub ssh_listen: SocketAddr,
    /// Record what users type in gateway sessions, not only what they see.
    pub record_input: bool,
    /// Daily snapshots and their retention (`[snapshots]` in the TOML file).
    pub snapshots: crate::snapshot::SnapshotConfig,
    /// The config file this came from (set by [`ServerConfig::load`]); snapshots include it.
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cofre-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            database_url: None,
            mode: Mode::OnPrem,
            token_ttl_minutes: 12 * 60,
            lockout_threshold: 5,
            lockout_minutes: 15,
            breakglass: BreakGlassConfig::default(),
            ssh_listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            record_input: true,
            snapshots: crate::snapshot::SnapshotConfig::default(),
            source_file: None,
        }
    }
}

/// Values from flags or the environment; each one set wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub ssh_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ServerConfig {
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<ServerConfig, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => ServerConfig::default(),
        };
        config.source_file = file.map(Path::to_path_buf);
        if let Some(v) = overrides.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = overrides.listen {
            config.listen = v;
        }
        if let Some(v) = overrides.database_url {
            config.database_url = Some(v);
        }
        if let Some(v) = overrides.ssh_listen {
            config.ssh_listen = v;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.breakglass.validate()?;
        self.snapshots.validate()?;
        if self.lockout_threshold == 0 {
            return Err(ConfigError::Invalid {
                field: "lockout_threshold",
                reason: "must be at least 1".into(),
            });
        }
        if self.token_ttl_minutes == 0 || self.token_ttl_minutes > 7 * 24 * 60 {
            return Err(ConfigError::Invalid {
                field: "token_ttl_minutes",
                reason: "must be between 1 and 10080 (a week)".into(),
            });
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
            {
                return Err(ConfigError::Invalid {
                    field: "database_url",
                    reason: "must start with sqlite: or postgres:".into(),
                });
            }
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("cofre.db").display()
            )
        })
    }
}

/// Where and when the break-glass file is written. It always goes to `DATA_DIR/breakglass/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakGlassConfig {
    /// A second directory for every file, ideally on other storage (a NAS mount, a removable
    /// disk), until backup targets of kind `credentials` replace it.
    pub directory: Option<PathBuf>,
    /// Minutes between scheduled files (default 1440, daily); 0 turns the schedule off.
    pub schedule_minutes: u64,
    /// After a credential change, at most one file per this many seconds (default 60); the last
    /// change always ends up in a file.
    pub min_interval_seconds: u64,
    /// Files kept per directory (default 1000; 0 keeps all). The newest file of every key epoch is
    /// always kept, so a new ceremony never removes the last file an older epoch's shares open.
    pub keep_files: usize,
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        Self {
            directory: None,
            schedule_minutes: 24 * 60,
            min_interval_seconds: 60,
            keep_files: 1000,
        }
    }
}

impl BreakGlassConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_interval_seconds == 0 || self.min_interval_seconds > 24 * 3600 {
            return Err(ConfigError::Invalid {
                field: "breakglass.min_interval_seconds",
                reason: "must be between 1 and 86400".into(),
            });
        }
        if self.schedule_minutes > 31 * 24 * 60 {
            return Err(ConfigError::Invalid {
                field: "breakglass.schedule_minutes",
                reason: "must be at most 44640 (31 days); 0 turns the schedule off".into(),
            });
        }
        if let Some(d) = &self.directory {
            if !d.is_absolute() {
                return Err(ConfigError::Invalid {
                    field: "breakglass.directory",
                    reason: "must be an absolute path".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nlockout_threshold = 3\n").unwrap();
        let c = ServerConfig::load(
            Some(&path),
            Overrides {
                listen: Some("127.0.0.1:1".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.lockout_threshold, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = ServerConfig::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod breakglass_config_tests {
    use super::*;

    #[test]
    fn breakglass_table_and_its_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[breakglass]\ndirectory = \"/mnt/nas/cofre\"\nmin_interval_seconds = 5\n",
        )
        .unwrap();
        let c = ServerConfig::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(c.breakglass.min_interval_seconds, 5);
        assert_eq!(c.breakglass.schedule_minutes, 1440);
        assert_eq!(
            c.breakglass.directory.as_deref(),
            Some(Path::new("/mnt/nas/cofre"))
        );
        std::fs::write(&path, "[breakglass]\nmin_interval_seconds = 0\n").unwrap();
        let err = ServerConfig::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("breakglass.min_interval_seconds"),
            "{err}"
        );
        std::fs::write(&path, "[breakglass]\ndirectory = \"relative\"\n").unwrap();
        let err = ServerConfig::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("breakglass.directory"), "{err}");
    }
}
