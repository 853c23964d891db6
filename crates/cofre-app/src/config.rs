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
    /// Consecutive failed logins for one user from one address before that address waits
    /// (30 s, doubling with each further failure).
    pub lockout_threshold: u32,
    /// The longest such wait, and how long failures count towards an account-wide lock.
    pub lockout_minutes: u64,
    /// Addresses in back-off for one user at once that lock the account for password logins
    /// (a distributed guess); 0: never. Key logins at the gateway are never locked.
    pub lockout_sources: u32,
    /// Break-glass backup files (`[breakglass]` in the TOML file).
    pub breakglass: BreakGlassConfig,
    /// Address of the SSH gateway.
    pub ssh_listen: SocketAddr,
    /// Record what users type in gateway sessions, not only what they see.
    pub record_input: bool,
    /// Deadlines and caps that keep connections from being held open (`[limits]`).
    pub limits: LimitsConfig,
    /// Facts of the instance as a whole (`[instance]`): its time zone.
    pub instance: InstanceConfig,
    /// Access requests (`[approvals]`).
    pub approvals: ApprovalsConfig,
    /// Webhook and email notifications (`[notify]`).
    pub notify: NotifyConfig,
    /// Where failures are announced besides the log, the audit trail and /metrics (`[alerts]`).
    pub alerts: AlertsConfig,
    /// The file this configuration was read from (backed up by `system` backups).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// That file's settings as read, every secret taken out (for `cofre diagnostics config`);
    /// the file itself is never kept in memory.
    #[serde(skip)]
    pub file_settings_redacted: Option<serde_json::Value>,
    /// Daily snapshots and their retention (`[snapshots]` in the TOML file).
    pub snapshots: crate::snapshot::SnapshotConfig,
    /// Dual control over changes that widen access (`[governance]`).
    pub governance: GovernanceConfig,
    /// How the server stops (`[server]`).
    pub server: ServerSection,
    /// Forwarding the audit trail to SIEMs (`[siem]`).
    pub siem: SiemConfig,
    /// Updates: which release signatures are trusted (`[maintenance]`).
    pub maintenance: MaintenanceConfig,
    /// Vendor support grants (`[support]`).
    pub support: SupportConfig,
    /// The external listener for invited third parties (`[external]`): off unless `listen` is set.
    pub external: ExternalConfig,
    /// Single sign-on (`[sso]`): how long an SSO login lasts.
    pub sso: SsoConfig,
    /// Several nodes on one database (`[cluster]`): this node's name and heartbeat.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: the node registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in `cofre node list` (`--node-name`, `COFRE_NODE_NAME`); default: the
    /// host name.
    pub node_name: Option<String>,
    /// How often this node says it is alive, in seconds (1 to 60); one silent for three of
    /// them is reported dead.
    pub heartbeat_seconds: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            heartbeat_seconds: 5,
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=60).contains(&self.heartbeat_seconds) {
            return Err(ConfigError::Invalid {
                field: "cluster.heartbeat_seconds",
                reason: "must be 1 to 60 seconds".into(),
            });
        }
        if let Some(n) = &self.node_name {
            if let Err(e) = cofre_core::names::check_host("cluster.node_name", n) {
                return Err(ConfigError::Invalid {
                    field: "cluster.node_name",
                    reason: e.reason,
                });
            }
        }
        Ok(())
    }
}

/// `[sso]`: the identity providers themselves are data (`cofre sso add`); these are the rules
/// every SSO login follows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// An SSO user must also give Cofre's own TOTP code (and one without TOTP must enrol it
    /// first), unless the IdP's `amr`/`acr` says it did a second factor `trusted_amr` names.
    pub require_totp: bool,
    /// `amr` or `acr` values taken as the IdP's own second factor (e.g. `["mfa", "otp"]`);
    /// empty (the default): the IdP's word is never taken for it.
    pub trusted_amr: Vec<String>,
    /// The longest a token from an SSO login lives, in hours (and never longer than
    /// `token_ttl_minutes`): the IdP is asked again at least this often.
    pub max_session_hours: u32,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            require_totp: false,
            trusted_amr: Vec::new(),
            max_session_hours: 8,
        }
    }
}

impl SsoConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=720).contains(&self.max_session_hours) {
            return Err(ConfigError::Invalid {
                field: "sso.max_session_hours",
                reason: "must be 1 to 720 hours".into(),
            });
        }
        if self.trusted_amr.iter().any(|v| v.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                field: "sso.trusted_amr",
                reason: "values must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// `[external]`: the listener that serves only the invitation pages and the invitees' web
/// terminal, so it can face the internet while the main listener stays on the customer's networks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    /// `ADDR:PORT`; unset (the default), there is no external listener and no invitation.
    pub listen: Option<SocketAddr>,
    /// The address invitees reach it by, for the link in the invitation's e-mail
    /// (default `https://LISTEN`).
    pub public_url: Option<String>,
    /// Requests one address may make per minute on the external listener.
    pub requests_per_minute: u32,
    /// Failed logins of an invitee before each further try waits (30 s, doubling, at most 15 min).
    pub lockout_threshold: u32,
    /// The invitee's second factor after the password: an authenticator app enrolled on first
    /// use (`totp`, the default) or a one-time code mailed to the invitation's address at each
    /// login (`email`).
    pub second_factor: SecondFactor,
    /// With `second_factor = "email"`: how long a mailed code works, in seconds (30 to 3600).
    pub code_seconds: u32,
}

/// `[external] second_factor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    #[default]
    Totp,
    Email,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::Email => "email",
        }
    }
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            listen: None,
            public_url: None,
            requests_per_minute: 120,
            lockout_threshold: 5,
            second_factor: SecondFactor::Totp,
            code_seconds: 600,
        }
    }
}

impl ExternalConfig {
    /// Where the invitation's link points, if there is an external listener.
    pub fn base_url(&self) -> Option<String> {
        let listen = self.listen?;
        Some(match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("https://{listen}"),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url {
            if !u.starts_with("https://") || u.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid {
                    field: "external.public_url",
                    reason: "must be an https:// URL".into(),
                });
            }
        }
        if self.requests_per_minute == 0 {
            return Err(ConfigError::Invalid {
                field: "external.requests_per_minute",
                reason: "must be at least 1".into(),
            });
        }
        if self.lockout_threshold == 0 {
            return Err(ConfigError::Invalid {
                field: "external.lockout_threshold",
                reason: "must be at least 1".into(),
            });
        }
        if !(30..=3600).contains(&self.code_seconds) {
            return Err(ConfigError::Invalid {
                field: "external.code_seconds",
                reason: "must be 30 to 3600 seconds".into(),
            });
        }
        Ok(())
    }
}

/// `[support]`: the customer-approved access of vendor support users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Distinct customer admins who approve a grant (at least 1: the vendor never grants itself).
    pub approvals: u32,
    /// The longest grant, and the default duration when it is shorter than 8 h.
    pub max_hours: u32,
    /// An undecided request expires after this many hours.
    pub request_expiry_hours: u32,
    /// Overrides `request_expiry_hours` with seconds (tests, and sites that want minutes).
    pub request_expiry_seconds: Option<u32>,
    /// How often expired requests and ended grants are closed and announced.
    pub tick_seconds: u64,
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self {
            approvals: 1,
            max_hours: cofre_core::support::DEFAULT_HOURS,
            request_expiry_hours: cofre_core::support::DEFAULT_REQUEST_EXPIRY_HOURS,
            request_expiry_seconds: None,
            tick_seconds: 30,
        }
    }
}

impl SupportConfig {
    pub fn rule(&self) -> cofre_core::support::Rule {
        cofre_core::support::Rule {
            approvals: self.approvals,
            max_hours: self.max_hours,
            request_expiry_seconds: match self.request_expiry_seconds {
                Some(s) => i64::from(s),
                None => i64::from(self.request_expiry_hours) * 3600,
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.approvals == 0 || self.approvals > 10 {
            return Err(ConfigError::Invalid {
                field: "support.approvals",
                reason: "must be between 1 and 10".into(),
            });
        }
        if self.max_hours == 0 || self.max_hours > 24 * 7 {
            return Err(ConfigError::Invalid {
                field: "support.max_hours",
                reason: "must be between 1 and 168 (a week)".into(),
            });
        }
        if self.request_expiry_hours == 0 || self.request_expiry_hours > 24 * 7 {
            return Err(ConfigError::Invalid {
                field: "support.request_expiry_hours",
                reason: "must be between 1 and 168 (a week)".into(),
            });
        }
        if self.request_expiry_seconds == Some(0) {
            return Err(ConfigError::Invalid {
                field: "support.request_expiry_seconds",
                reason: "must be at least 1".into(),
            });
        }
        if self.tick_seconds == 0 || self.tick_seconds > 3600 {
            return Err(ConfigError::Invalid {
                field: "support.tick_seconds",
                reason: "must be between 1 and 3600".into(),
            });
        }
        Ok(())
    }
}

/// `[siem]`: forwarding the audit trail (the destinations themselves are added with `cofre siem add`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiemConfig {
    /// A destination that has received nothing for this long raises an alert (once per outage).
    pub alert_after_minutes: u64,
    /// The HOSTNAME field of every message; the machine's host name when absent.
    pub hostname: Option<String>,
}

impl Default for SiemConfig {
    fn default() -> Self {
        Self {
            alert_after_minutes: 15,
            hostname: None,
        }
    }
}

impl SiemConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.alert_after_minutes == 0 {
            return Err(ConfigError::Invalid {
                field: "siem.alert_after_minutes",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > 255 || !h.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ConfigError::Invalid {
                    field: "siem.hostname",
                    reason: "must be 1 to 255 printable ASCII characters without spaces".into(),
                });
            }
        }
        Ok(())
    }
}

/// `[maintenance]`: updates in maintenance windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// minisign public keys (the second line of `minisign.pub`) whose signatures make a release
    /// file trusted; none: no release is accepted.
    pub release_public_keys: Vec<String>,
    /// saas: a window is announced to every customer admin at least this many hours ahead.
    pub notice_hours: u32,
    /// on-prem: how many admins other than the proposer approve a window (0: the admin schedules).
    pub approvals: u32,
    /// Live gateway sessions are told this many minutes before a window starts.
    pub warn_minutes: u32,
    /// How often the scheduler looks at the windows (expiry, warnings, the start).
    pub tick_seconds: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            release_public_keys: Vec::new(),
            notice_hours: 72,
            approvals: 0,
            warn_minutes: 15,
            tick_seconds: 30,
        }
    }
}

impl MaintenanceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        crate::release::parse_keys(&self.release_public_keys)
            .map(|_| ())
            .map_err(|reason| ConfigError::Invalid {
                field: "maintenance.release_public_keys",
                reason,
            })?;
        if self.notice_hours > 24 * 30 {
            return Err(ConfigError::Invalid {
                field: "maintenance.notice_hours",
                reason: "must be at most 720 (30 days)".into(),
            });
        }
        if self.approvals > 10 {
            return Err(ConfigError::Invalid {
                field: "maintenance.approvals",
                reason: "must be at most 10".into(),
            });
        }
        if self.warn_minutes > 24 * 60 {
            return Err(ConfigError::Invalid {
                field: "maintenance.warn_minutes",
                reason: "must be at most 1440 (a day)".into(),
            });
        }
        if self.tick_seconds == 0 || self.tick_seconds > 3600 {
            return Err(ConfigError::Invalid {
                field: "maintenance.tick_seconds",
                reason: "must be between 1 and 3600".into(),
            });
        }
        Ok(())
    }
}

/// `[server]`: how the server stops, and how long a moderated session waits for its moderator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// At SIGTERM, how long live gateway sessions have to end after being told; the rest are
    /// ended then (recorded and audited as ended by the shutdown).
    pub drain_seconds: u64,
    /// How long a session under a `--moderated` policy waits for a moderator to watch before it
    /// is refused.
    pub moderator_wait_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            drain_seconds: 30,
            moderator_wait_seconds: 300,
        }
    }
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
            lockout_sources: 10,
            breakglass: BreakGlassConfig::default(),
            ssh_listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            record_input: true,
            limits: LimitsConfig::default(),
            instance: InstanceConfig::default(),
            approvals: ApprovalsConfig::default(),
            notify: NotifyConfig::default(),
            alerts: AlertsConfig::default(),
            config_file: None,
            file_settings_redacted: None,
            snapshots: crate::snapshot::SnapshotConfig::default(),
            governance: GovernanceConfig::default(),
            server: ServerSection::default(),
            siem: SiemConfig::default(),
            maintenance: MaintenanceConfig::default(),
            support: SupportConfig::default(),
            external: ExternalConfig::default(),
            sso: SsoConfig::default(),
            cluster: ClusterConfig::default(),
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
    pub node_name: Option<String>,
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
        let (mut config, redacted) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let parse = |e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                };
                let settings: toml::Value = toml::from_str(&text).map_err(parse)?;
                let config: ServerConfig = toml::from_str(&text).map_err(parse)?;
                (config, Some(crate::diagnostics::redact_settings(&settings)))
            }
            None => (ServerConfig::default(), None),
        };
        config.file_settings_redacted = redacted;
        // Absolute, so that a later read does not depend on the working directory.
        config.config_file =
            file.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
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
        if let Some(v) = overrides.node_name {
            config.cluster.node_name = Some(v);
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.breakglass.validate()?;
        self.approvals.validate()?;
        self.limits.validate()?;
        self.notify.validate()?;
        self.alerts.validate()?;
        self.snapshots.validate()?;
        self.governance.validate()?;
        self.siem.validate()?;
        self.maintenance.validate()?;
        self.support.validate()?;
        self.external.validate()?;
        self.sso.validate()?;
        self.cluster.validate()?;
        if self.server.drain_seconds > 3600 {
            return Err(ConfigError::Invalid {
                field: "server.drain_seconds",
                reason: "must be at most 3600 (an hour)".into(),
            });
        }
        if !(1..=86_400).contains(&self.server.moderator_wait_seconds) {
            return Err(ConfigError::Invalid {
                field: "server.moderator_wait_seconds",
                reason: "must be between 1 and 86400 (a day)".into(),
            });
        }
        if self.lockout_threshold == 0 {
            return Err(ConfigError::Invalid {
                field: "lockout_threshold",
                reason: "must be at least 1".into(),
            });
        }
        if self.lockout_minutes == 0 || self.lockout_minutes > 24 * 60 {
            return Err(ConfigError::Invalid {
                field: "lockout_minutes",
                reason: "must be between 1 and 1440 (a day)".into(),
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

/// Deadlines and caps on the listeners: a client that connects and then says nothing must not
/// hold a connection (or a file descriptor) for long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds an SSH gateway connection has to authenticate (OpenSSH's `LoginGraceTime`).
    pub ssh_login_grace_seconds: u64,
    /// SSH gateway connections one address may have open before authenticating.
    pub ssh_unauthenticated_per_source: usize,
    /// Seconds an HTTPS client has to complete the TLS handshake and then each request's headers.
    pub http_header_read_seconds: u64,
    /// Seconds an HTTPS connection may stay open with no request.
    pub http_idle_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            ssh_login_grace_seconds: 60,
            ssh_unauthenticated_per_source: 10,
            http_header_read_seconds: 15,
            http_idle_seconds: 120,
        }
    }
}

/// Dual control (`[governance]`). Read from the config file at start only: changing it needs
/// access to the server's files, not an API call, so no runtime change can lower it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    pub dual_control: cofre_core::governance::DualControl,
    /// An approver whose account the requester created or changed this recently does not count
    /// on the requester's requests.
    pub cooling_off_days: u32,
    /// A change request not decided within this many hours expires (default two weeks, longer
    /// than the default cooling off, so a fresh second admin can still decide it).
    pub change_timeout_hours: u32,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            dual_control: cofre_core::governance::DualControl::WhenPossible,
            cooling_off_days: 7,
            change_timeout_hours: 14 * 24,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value, max) in [
            (
                "limits.ssh_login_grace_seconds",
                self.ssh_login_grace_seconds,
                600,
            ),
            (
                "limits.http_header_read_seconds",
                self.http_header_read_seconds,
                600,
            ),
            ("limits.http_idle_seconds", self.http_idle_seconds, 3600),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::Invalid {
                    field,
                    reason: format!("must be between 1 and {max}"),
                });
            }
        }
        if self.ssh_unauthenticated_per_source == 0 || self.ssh_unauthenticated_per_source > 1000 {
            return Err(ConfigError::Invalid {
                field: "limits.ssh_unauthenticated_per_source",
                reason: "must be between 1 and 1000".into(),
            });
        }
        Ok(())
    }
}

impl GovernanceConfig {
    pub fn cooling_off_seconds(&self) -> i64 {
        i64::from(self.cooling_off_days) * 86_400
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.cooling_off_days > 365 {
            return Err(ConfigError::Invalid {
                field: "governance.cooling_off_days",
                reason: "must be at most 365".into(),
            });
        }
        if self.change_timeout_hours == 0 || self.change_timeout_hours > 24 * 90 {
            return Err(ConfigError::Invalid {
                field: "governance.change_timeout_hours",
                reason: "must be between 1 and 2160 (90 days)".into(),
            });
        }
        Ok(())
    }
}

/// `[instance]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// The one time zone in which every wall-clock time of the instance is read: policies' days
    /// and hours, backup schedules' `daily HH:MM`, the daily snapshot's time, and (next)
    /// maintenance windows. A tz database name (`Europe/Lisbon`: daylight saving followed), `UTC`
    /// (the default), or a fixed offset (`+01:00`).
    #[serde(deserialize_with = "deserialize_zone")]
    pub time_zone: cofre_core::when::Zone,
}

fn deserialize_zone<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<cofre_core::when::Zone, D::Error> {
    let text = String::deserialize(d)?;
    cofre_core::when::Zone::parse("instance.time_zone", &text).map_err(serde::de::Error::custom)
}

/// How access requests behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// A request not decided within this many seconds expires (default 3600).
    pub request_timeout_seconds: u64,
    /// Replaced by `[instance] time_zone`; refused with a message that says so, so that a config
    /// written for the old key is not silently read in UTC.
    pub utc_offset: Option<String>,
    /// The grant length when a request names none (default 60 minutes).
    pub default_duration_minutes: u32,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            request_timeout_seconds: 3600,
            utc_offset: None,
            default_duration_minutes: 60,
        }
    }
}

impl ApprovalsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(offset) = &self.utc_offset {
            return Err(ConfigError::Invalid {
                field: "approvals.utc_offset",
                reason: format!(
                    "replaced by [instance] time_zone (e.g. time_zone = {offset:?}, or a zone name such as \"Europe/Lisbon\" to follow daylight saving)"
                ),
            });
        }
        if self.request_timeout_seconds == 0 || self.request_timeout_seconds > 30 * 24 * 3600 {
            return Err(ConfigError::Invalid {
                field: "approvals.request_timeout_seconds",
                reason: "must be between 1 and 2592000 (30 days)".into(),
            });
        }
        if self.default_duration_minutes == 0 || self.default_duration_minutes > 7 * 24 * 60 {
            return Err(ConfigError::Invalid {
                field: "approvals.default_duration_minutes",
                reason: "must be between 1 and 10080 (a week)".into(),
            });
        }
        Ok(())
    }
}

/// Where notifications about access requests go. Each channel is off until configured.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Every state change is POSTed here as JSON.
    pub webhook_url: Option<String>,
    /// A file holding the key that signs webhook bodies (`X-Cofre-Signature`); kept out of the
    /// config file so the config can be shared.
    pub webhook_secret_file: Option<PathBuf>,
    /// SMTP server for email to requesters and approvers (their user `email`).
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// `none` (plain, for a relay on the same host), `starttls` (default) or `tls`.
    pub smtp_tls: Option<String>,
    pub smtp_from: Option<String>,
    pub smtp_username: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    /// The address users reach the server at, for links (default `https://LISTEN`).
    pub public_url: Option<String>,
}

impl NotifyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    field: "notify.webhook_url",
                    reason: "must be an http:// or https:// URL".into(),
                });
            }
            if self.webhook_secret_file.is_none() {
                return Err(ConfigError::Invalid {
                    field: "notify.webhook_secret_file",
                    reason: "a webhook needs a signing key file (receivers must be able to trust what they get)".into(),
                });
            }
        }
        if let Some(tls) = &self.smtp_tls {
            if !matches!(tls.as_str(), "none" | "starttls" | "tls") {
                return Err(ConfigError::Invalid {
                    field: "notify.smtp_tls",
                    reason: "must be none, starttls or tls".into(),
                });
            }
        }
        if self.smtp_host.is_some() && self.smtp_from.is_none() {
            return Err(ConfigError::Invalid {
                field: "notify.smtp_from",
                reason: "email needs a sender address".into(),
            });
        }
        Ok(())
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

/// Alerts (`[alerts]` in the TOML file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An http(s) URL that receives a JSON POST for every alert (e.g. a failed backup run).
    pub webhook_url: Option<String>,
}

impl AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    field: "alerts.webhook_url",
                    reason: "must be an http:// or https:// URL".into(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod alerts_config_tests {
    use super::*;

    #[test]
    fn webhook_url_must_be_http() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[alerts]\nwebhook_url = \"https://hooks.example/cofre\"\n",
        )
        .unwrap();
        let c = ServerConfig::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(
            c.alerts.webhook_url.as_deref(),
            Some("https://hooks.example/cofre")
        );
        assert!(c.config_file.as_deref().is_some_and(Path::is_absolute));
        std::fs::write(&path, "[alerts]\nwebhook_url = \"ftp://x\"\n").unwrap();
        let err = ServerConfig::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("alerts.webhook_url"), "{err}");
    }
}
