//! The TLS accept loop: each connection is its own task, so one slow client never holds up another.
//! Nothing can hold a connection open: the TLS handshake and each request's headers have a
//! deadline, and a connection with no request in flight for `http_idle_seconds` is closed.

use crate::config::LimitsConfig;
use crate::extract::PeerAddr;
use axum::Router;
use hyper_util::rt::TokioTimer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How often an idle connection is looked at.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a connection's requests tell its idle watchdog.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(
            self.last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed(),
        )
    }
}

/// Counts a request in flight until its response is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's address: the PROXY protocol v2 header's when a trusted proxy sent one, else the
/// TCP peer's. `None` closes the connection: a header from a peer that is not a trusted proxy (it
/// could name any address), a malformed one, or none in time from a proxy that began one. The
/// TLS client speaks first, so peeking at its first bytes costs no round trip.
async fn proxied_peer(
    which: cofre_core::network::Listener,
    core: &cofre_app::services::App,
    tcp: &mut tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    within: Duration,
) -> Option<std::net::SocketAddr> {
    use cofre_app::proxy_protocol;
    match proxy_protocol::starts_with_header(tcp, within).await {
        Ok(false) => return Some(peer),
        Ok(true) => {}
        Err(e) => {
            tracing::debug!(%peer, error = %e, "no first bytes from the client");
            return None;
        }
    }
    let trusted = match core.network_policy().await {
        Ok(p) => p.listener(which).is_trusted_proxy(peer.ip()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the network policy");
            false
        }
    };
    if !trusted {
        tracing::warn!(%peer, "refused a PROXY protocol header from a peer that is not a trusted proxy");
        metrics::counter!("cofre_network_refused_total", "listener" => which.as_str()).increment(1);
        return None;
    }
    match proxy_protocol::read_header(tcp).await {
        Ok(Some(client)) => Some(client),
        Ok(None) => Some(peer),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a connection from a trusted proxy");
            None
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; `which` names the listener whose trusted proxies
/// may send a PROXY protocol header (the API's, or the external listener's).
pub async fn serve(
    which: cofre_core::network::Listener,
    core: Arc<cofre_app::services::App>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: LimitsConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let header_read = Duration::from_secs(limits.http_header_read_seconds);
    let idle = Duration::from_secs(limits.http_idle_seconds);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = crate::fd_limit::ConnectionSlots::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take() else {
            tracing::warn!(%peer, "refused a connection: the HTTPS listener is at its connection cap");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let core = core.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut tcp = tcp;
            let _ = tcp.set_nodelay(true);
            let Some(peer) = proxied_peer(which, &core, &mut tcp, peer, header_read).await else {
                return;
            };
            let stream = match tokio::time::timeout(header_read, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last: Mutex::new(Instant::now()),
            });
            let requests = activity.clone();
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    // The console reads the address as axum's own type (it cannot name ours).
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let in_flight = InFlight::start(&requests);
                    let response = app.clone().oneshot(req.map(axum::body::Body::new));
                    async move {
                        let r = response.await;
                        drop(in_flight);
                        r
                    }
                },
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20));
            // With upgrades: the console's web terminal is a WebSocket (HTTP/1.1 upgrade).
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut check = tokio::time::interval(IDLE_CHECK);
            let mut closing = false;
            loop {
                tokio::select! {
                    done = connection.as_mut() => {
                        if let Err(e) = done {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = check.tick(), if !closing => {
                        if activity.idle_for().is_some_and(|d| d >= idle) {
                            tracing::debug!(%peer, "closing an idle connection");
                            // Finishes what is in flight (nothing, by now), then closes.
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
}
