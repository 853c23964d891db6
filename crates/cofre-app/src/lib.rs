//! Cofre's application layer: the use cases ([`services`]), the protocol-independent [`session`]
//! layer that the front ends drive, and the start-up sequence that turns an empty directory into a
//! running instance. No HTTP server code: the HTTPS front end (cofre-http) and the SSH gateway
//! (cofre-gateway) both sit on top of this crate.

pub mod backup;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod fd_limit;
pub mod proxy_protocol;
pub mod release;
pub mod services;
pub mod session;
pub mod snapshot;
pub mod ssh_keys;
pub mod switch;

use cofre_crypto::{Keyring, SealKind};
use cofre_store::Store;
use config::ServerConfig;
use services::App;
use std::path::Path;
use std::sync::Arc;

pub use services::Clock;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("data dir {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("keyring: {0}")]
    Keyring(#[from] cofre_crypto::CryptoError),
    #[error("database: {0}")]
    Store(#[from] cofre_store::StoreError),
    #[error("{0}")]
    Service(#[from] error::Error),
}

/// How `cofre init` seals a new instance.
#[derive(Debug, Clone, Copy)]
pub enum SealChoice {
    KeyFile,
    Shamir { shares: u8, threshold: u8 },
}

/// What initialisation produced, for the operator's eyes only (printed once, never logged).
pub struct InitReport {
    pub keyring_created: bool,
    pub unseal_shares: Vec<cofre_crypto::UnsealShare>,
    pub admin_password_file: Option<std::path::PathBuf>,
}

fn prepare_data_dir(dir: &Path) -> Result<(), StartError> {
    let err = |e: std::io::Error| StartError::DataDir {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(())
}

pub fn system_clock() -> Clock {
    Arc::new(time::OffsetDateTime::now_utc)
}

/// Creates what is missing: keyring (as `seal` says, if none exists), database schema, first admin.
/// Safe to run on an initialised instance: it changes nothing there.
pub async fn initialise(
    config: &ServerConfig,
    seal: SealChoice,
) -> Result<(Arc<App>, InitReport), StartError> {
    prepare_data_dir(&config.data_dir)?;
    let mut report = InitReport {
        keyring_created: false,
        unseal_shares: Vec::new(),
        admin_password_file: None,
    };
    let keyring = match Keyring::load(&config.data_dir)? {
        Some(k) => k,
        None => {
            report.keyring_created = true;
            match seal {
                SealChoice::KeyFile => Keyring::init_key_file(&config.data_dir)?.0,
                SealChoice::Shamir { shares, threshold } => {
                    let (k, shares) = Keyring::init_shamir(&config.data_dir, shares, threshold)?;
                    report.unseal_shares = shares;
                    k
                }
            }
        }
    };
    let store = Store::open(&config.database_url()).await?;
    let app = App::new(store, config.clone(), keyring, system_clock());
    if let Some(otp) = app.accounts().bootstrap_admin().await? {
        let path = config.data_dir.join("initial-admin-password");
        cofre_crypto::files::write_private_file(&path, format!("{}\n", otp.as_str()).as_bytes())?;
        report.admin_password_file = Some(path);
    }
    Ok((app, report))
}

/// `cofre init --demo` on a new key-file instance: opens the keyring, loads the sample data
/// (`App::load_demo`) and writes the sample users' one-time passwords to `DATA_DIR/demo-passwords`
/// (0600), like the first admin's.
pub async fn load_demo(app: &App, config: &ServerConfig) -> Result<std::path::PathBuf, StartError> {
    app.unseal_from_key_file()?;
    let passwords = app.orbit().load_demo().await?;
    let mut text = zeroize::Zeroizing::new(String::new());
    for (user, otp) in &passwords {
        text.push_str(user);
        text.push(' ');
        text.push_str(otp.as_str());
        text.push('\n');
    }
    let path = config.data_dir.join("demo-passwords");
    cofre_crypto::files::write_private_file(&path, text.as_bytes())?;
    Ok(path)
}

/// A running instance: keyring opened (if it can be), database ready, background tasks started.
/// The front ends (HTTPS, SSH gateway) are bound beside it on the same [`App`].
pub struct Started {
    pub app: Arc<App>,
    pub sealed: bool,
    pub admin_password_file: Option<std::path::PathBuf>,
}

pub async fn start(config: ServerConfig) -> Result<Started, StartError> {
    // After a failed switch-over, the database as this version left it, before anything opens it.
    switch::restore_database_if_migrated(&config).await?;
    let (app, report) = initialise(&config, SealChoice::KeyFile).await?;
    if app.keyring.seal == SealKind::KeyFile {
        app.unseal_from_key_file()?;
        if let Err(e) = app.start_signing_audit_head().await {
            tracing::error!(error = %e, "cannot sign the audit chain head");
        }
    }
    // Break-glass files: after credential changes and on a schedule (services::breakglass).
    services::breakglass::spawn_writer(&app);
    services::requests::spawn_expiry_sweeper(&app);
    // The audit head's anchor outside the database (services::anchor).
    services::anchor::spawn_anchor_writer(&app);
    services::notify::spawn_notifier(&app)?;
    services::siem::spawn_forwarder(&app);
    // Backups: interrupted runs marked failed, then the scheduler (services::backups).
    services::backups::start(&app).await;
    // Daily snapshots (services::snapshots).
    services::snapshots::spawn_scheduler(&app);
    // Credential rotation: cut-short rotations resolved, then the scheduler (services::rotation).
    services::rotation::start(&app).await;
    // Maintenance windows: interrupted ones ended, then the scheduler (services::maintenance).
    services::maintenance::start(&app).await;
    // Support grants: expired requests and ended grants closed and announced (services::support).
    services::support::start(&app);
    Ok(Started {
        sealed: app.is_sealed(),
        app,
        admin_password_file: report.admin_password_file,
    })
}
