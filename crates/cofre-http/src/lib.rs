//! Cofre's HTTPS front end: the API router and its handlers ([`http`]), request extraction
//! ([`extract`]), the TLS accept loop ([`listener`]) and certificate ([`tls`]). Handlers only
//! translate; every rule lives in cofre-app's services.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

pub mod error;
pub mod extract;
pub mod http;
pub mod listener;
pub mod tls;

// The handlers name these as `crate::...`, as they did when they lived in the same crate.
pub use cofre_app::{config, fd_limit, services};

use cofre_app::config::ServerConfig;
use cofre_app::services::App;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::{Arc, OnceLock};

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    pub metrics: PrometheusHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests run several apps in one process);
            // then this handle renders an empty page, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The HTTPS listener, bound and with its certificate loaded, serving nothing yet.
pub struct Bound {
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub addr: std::net::SocketAddr,
    /// SHA-256 of the certificate, for clients to pin.
    pub fingerprint: String,
}

pub async fn bind(app: Arc<App>, config: &ServerConfig) -> Result<Bound, BindError> {
    // Installed before anything is served, so the first requests are counted too.
    let _ = metrics_handle();
    let tls = tls::load_or_generate(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| BindError::Listen {
            addr: config.listen.to_string(),
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| BindError::Listen {
        addr: config.listen.to_string(),
        message: e.to_string(),
    })?;
    Ok(Bound {
        app,
        listener,
        tls: tls.config,
        addr,
        fingerprint: tls.fingerprint,
    })
}

impl Bound {
    /// Serves the HTTPS API until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(addr = %self.addr, sealed = self.app.is_sealed(), "cofre server listening");
        let state = AppState {
            app: self.app.clone(),
            metrics: metrics_handle(),
        };
        let limits = self.app.config.limits.clone();
        listener::serve(
            cofre_core::network::Listener::Api,
            self.app.clone(),
            self.listener,
            self.tls,
            http::router(state),
            limits,
            shutdown,
        )
        .await;
    }
}

/// The external listener (issue 18), bound with its own certificate, serving nothing yet: only
/// the invitees' pages (`cofre_console::external`), never the API, the console or Orbit.
pub struct BoundExternal {
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub addr: std::net::SocketAddr,
    pub fingerprint: String,
}

/// Binds `[external] listen`, if set.
pub async fn bind_external(
    app: Arc<App>,
    config: &ServerConfig,
) -> Result<Option<BoundExternal>, BindError> {
    let Some(listen) = config.external.listen else {
        return Ok(None);
    };
    let tls = tls::load_or_generate_in(&config.data_dir.join("tls-external"))?;
    let listen_err = |e: std::io::Error| BindError::Listen {
        addr: listen.to_string(),
        message: e.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    Ok(Some(BoundExternal {
        app,
        listener,
        tls: tls.config,
        addr,
        fingerprint: tls.fingerprint,
    }))
}

impl BoundExternal {
    /// Serves the invitees' pages until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(addr = %self.addr, "cofre external listener (invitations) listening");
        let limits = self.app.config.limits.clone();
        let router = cofre_console::external::router(self.app.clone());
        listener::serve(
            cofre_core::network::Listener::External,
            self.app.clone(),
            self.listener,
            self.tls,
            router,
            limits,
            shutdown,
        )
        .await;
    }
}

/// The router on an explicit app, for in-process tests of the HTTP layer.
pub fn test_router(app: Arc<App>) -> axum::Router {
    http::router(AppState {
        app,
        metrics: metrics_handle(),
    })
}
