//! Forwarding the audit trail to SIEMs: destinations (add, list, remove, status) and the delivery
//! task.
//!
//! Each destination keeps its `position` (the last audit sequence it received) in the database.
//! The task reads the entries after it in `seq` order and sends them in batches; the position
//! moves only once a batch is known to have arrived, so a SIEM that is down, or a server that
//! restarts, loses nothing: delivery resumes from the position, at least once (a batch cut short
//! is resent whole, and every message carries its sequence and hash for the SIEM to de-duplicate).
//!
//! "Known to have arrived" over TCP and TLS: the batch goes on a connection of its own, which we
//! then close for writing (TLS: close_notify first) and wait for the receiver to close too.
//! A syslog receiver closes only once it has read everything up to our end, so its close says
//! every byte was read; a reset or the deadline says otherwise. Over UDP nothing is acknowledged:
//! a batch counts as sent unless the receiver's host answers that no one listens (ICMP port
//! unreachable, seen as a refused send or receive on the connected socket).

use super::backups::send_webhook;
use super::Audit;
use super::{App, Principal};
use crate::error::{Error, Result};
use cofre_core::audit::{AuditRecord, NewAuditEntry};
use cofre_core::role::Action;
use cofre_core::siem::{Address, Format, Transport};
use cofre_proto::{NewSiemRequest, SiemDestinationStatus, SiemInfo, SiemStatus};
use cofre_store::siem::{NewSiem, SiemRow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Entries sent on one connection (TCP, TLS) before its arrival is confirmed.
const STREAM_BATCH: i64 = 500;
/// Entries sent per round over UDP: a burst larger than a receiver's socket buffer is dropped.
const DATAGRAM_BATCH: i64 = 50;
/// Deadlines of a delivery: connecting (and the TLS handshake), writing a batch, and the
/// receiver's close that confirms it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a UDP round waits for the port-unreachable answer of a host where no one listens.
const UDP_REFUSAL_WAIT: Duration = Duration::from_millis(200);
/// Retry back-off after failures: 1 s doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longer datagrams are cut here (RFC 5426 allows it; receivers' default limits are near 8 KiB),
/// so an entry too large for one datagram never blocks a UDP destination.
const MAX_DATAGRAM: usize = 8 * 1024;
/// The longest PEM accepted as a CA certificate bundle.
const MAX_CA_PEM: usize = 64 * 1024;

fn info(r: &SiemRow) -> SiemInfo {
    SiemInfo {
        name: r.name.clone(),
        syslog: r.url.clone(),
        format: r.format.clone(),
        ca_cert: r.ca_cert.is_some(),
        created_at: r.created_at.clone(),
        created_by: r.created_by.clone(),
    }
}

/// The trust anchors of a `tls://` destination: the given CA, or the web's roots.
fn tls_config(field: &str, ca_pem: Option<&str>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    Error::invalid(field, format!("{field}: not a PEM certificate ({e})"))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::invalid(field, format!("{field}: not a usable CA certificate ({e})"))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::invalid(
                    field,
                    format!("{field}: no certificate in the PEM text"),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Audit<'_> {
    pub async fn add_siem_destination(
        &self,
        who: &Principal,
        req: &NewSiemRequest,
    ) -> Result<SiemInfo> {
        who.require(Action::ManageSiem)?;
        cofre_core::names::check_identifier("name", &req.name)?;
        let address = Address::parse("syslog", &req.syslog)?;
        let format = Format::parse("format", &req.format)?;
        if let Some(pem) = &req.ca_cert {
            if address.transport != Transport::Tls {
                return Err(Error::invalid(
                    "ca_cert",
                    "ca_cert: only a tls:// destination takes a CA certificate",
                ));
            }
            if pem.len() > MAX_CA_PEM {
                return Err(Error::invalid(
                    "ca_cert",
                    format!("ca_cert: at most {MAX_CA_PEM} bytes of PEM"),
                ));
            }
            tls_config("ca_cert", Some(pem))?;
        }
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        tx.siem_insert(NewSiem {
            name: &req.name,
            url: &req.syslog,
            format: format.as_str(),
            ca_cert: req.ca_cert.as_deref(),
            created_at: &now,
            created_by: &who.username,
        })
        .await?;
        let entry = NewAuditEntry::new(&who.username, "siem.add", format!("siem:{}", req.name))
            .detail("syslog", req.syslog.as_str())
            .detail("format", format.as_str())
            .detail("ca_cert", req.ca_cert.is_some());
        self.commit(tx, entry).await?;
        self.siem_wake.notify_one();
        let row = self
            .store
            .siem_destination(&req.name)
            .await?
            .ok_or_else(|| Error::not_found(format!("SIEM destination {}", req.name)))?;
        Ok(info(&row))
    }

    pub async fn list_siem_destinations(&self, who: &Principal) -> Result<Vec<SiemInfo>> {
        who.require(Action::ViewSiem)?;
        Ok(self
            .store
            .siem_destinations()
            .await?
            .iter()
            .map(info)
            .collect())
    }

    pub async fn remove_siem_destination(&self, who: &Principal, name: &str) -> Result<()> {
        who.require(Action::ManageSiem)?;
        let mut tx = self.store.write().await?;
        let row = tx
            .siem_remove(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("SIEM destination {name}")))?;
        let entry = NewAuditEntry::new(&who.username, "siem.remove", format!("siem:{name}"))
            .detail("syslog", row.url.as_str())
            .detail("last_delivered_seq", row.position);
        self.commit(tx, entry).await?;
        self.siem_wake.notify_one();
        Ok(())
    }

    pub async fn get_siem_status(&self, who: &Principal) -> Result<SiemStatus> {
        who.require(Action::ViewSiem)?;
        let head = self.store.audit_head().await?.0;
        let destinations = self
            .store
            .siem_destinations()
            .await?
            .into_iter()
            .map(|r| SiemDestinationStatus {
                lag: (head - r.position).max(0),
                last_delivered_seq: r.position,
                failing_since: r.failing_since.map(super::rfc3339),
                name: r.name,
                syslog: r.url,
                format: r.format,
                last_ok_at: r.last_ok_at,
                last_error_at: r.last_error_at,
                last_error: r.last_error,
            })
            .collect();
        Ok(SiemStatus {
            audit_head_seq: head,
            destinations,
        })
    }
}

impl App {
    /// A destination down for longer than `[siem] alert_after_minutes`: once per outage, an
    /// audit entry, an `ALERT` log line, a metric and the `[alerts]` webhook.
    async fn siem_alert_if_due(&self, row: &SiemRow) -> Result<()> {
        let Some(since) = row.failing_since else {
            return Ok(());
        };
        let after = i64::try_from(self.config.siem.alert_after_minutes.saturating_mul(60))
            .unwrap_or(i64::MAX);
        let now = self.now().unix_timestamp();
        if row.alerted || now - since < after {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        if !tx.siem_mark_alerted(row.id).await? {
            return Ok(());
        }
        let error = row.last_error.clone().unwrap_or_default();
        let entry = NewAuditEntry::new("system", "siem.down", format!("siem:{}", row.name))
            .outcome("failed")
            .detail("since", super::rfc3339(since))
            .detail("last_delivered_seq", row.position)
            .detail("error", error.as_str());
        self.commit(tx, entry).await?;
        tracing::error!(destination = %row.name, since = %super::rfc3339(since), error = %error, "ALERT: SIEM destination down");
        metrics::counter!("cofre_siem_alerts_total", "destination" => row.name.clone())
            .increment(1);
        if let Some(url) = self.config.alerts.webhook_url.clone() {
            let body = serde_json::json!({
                "event": "siem.down",
                "instance": self.instance_id(),
                "destination": row.name,
                "since": super::rfc3339(since),
                "last_delivered_seq": row.position,
                "error": error,
                "at": self.now_text(),
            });
            tokio::spawn(send_webhook(url, body));
        }
        Ok(())
    }
}

/// Messages for a batch, in order.
fn messages(format: Format, batch: &[AuditRecord], hostname: &str) -> Vec<String> {
    batch
        .iter()
        .map(|r| cofre_core::siem::message(format, r, hostname, crate::switch::version()))
        .collect()
}

/// One destination, ready to send to.
struct Sender {
    address: Address,
    format: Format,
    tls: Option<tokio_rustls::TlsConnector>,
    hostname: String,
}

async fn with_deadline<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", limit.as_secs())),
    }
}

/// Writes the frames, ends our side, and waits for the receiver's close: only that says it read
/// them all.
async fn send_and_confirm<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    frames: &[u8],
) -> std::result::Result<(), String> {
    with_deadline("sending", WRITE_TIMEOUT, async {
        stream.write_all(frames).await?;
        stream.shutdown().await
    })
    .await?;
    let mut buf = [0u8; 512];
    let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                // A syslog receiver sends nothing back; whatever it is, wait for the close.
                Ok(_) => continue,
                // A receiver that closes the TCP connection without TLS's close_notify still
                // read up to our end before it closed.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match confirmed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the receiver did not confirm the batch: {e}")),
        Err(_) => Err(format!(
            "the receiver did not close within {} s after the batch",
            CONFIRM_TIMEOUT.as_secs()
        )),
    }
}

impl Sender {
    fn new(row: &SiemRow, hostname: &str) -> std::result::Result<Sender, String> {
        let address = Address::parse("syslog", &row.url).map_err(|e| e.to_string())?;
        let format = Format::parse("format", &row.format).map_err(|e| e.to_string())?;
        let tls = match address.transport {
            Transport::Tls => Some(tokio_rustls::TlsConnector::from(Arc::new(
                tls_config("ca_cert", row.ca_cert.as_deref()).map_err(|e| e.to_string())?,
            ))),
            _ => None,
        };
        Ok(Sender {
            address,
            format,
            tls,
            hostname: hostname.to_owned(),
        })
    }

    fn batch_size(&self) -> i64 {
        match self.address.transport {
            Transport::Udp => DATAGRAM_BATCH,
            _ => STREAM_BATCH,
        }
    }

    async fn resolve(&self) -> std::result::Result<std::net::SocketAddr, String> {
        let host = (self.address.host.as_str(), self.address.port);
        with_deadline("resolving", CONNECT_TIMEOUT, tokio::net::lookup_host(host))
            .await?
            .next()
            .ok_or_else(|| format!("resolving: no address for {}", self.address.host))
    }

    /// Sends a batch; Ok once it is known to have arrived (UDP: unless refused).
    async fn send(&self, batch: &[AuditRecord]) -> std::result::Result<(), String> {
        let msgs = messages(self.format, batch, &self.hostname);
        let addr = self.resolve().await?;
        match self.address.transport {
            Transport::Udp => {
                let local: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = tokio::net::UdpSocket::bind(local)
                    .await
                    .map_err(|e| format!("udp socket: {e}"))?;
                socket
                    .connect(addr)
                    .await
                    .map_err(|e| format!("udp connect: {e}"))?;
                for m in &msgs {
                    let mut end = m.len().min(MAX_DATAGRAM);
                    while !m.is_char_boundary(end) {
                        end -= 1;
                    }
                    with_deadline("sending", WRITE_TIMEOUT, socket.send(&m.as_bytes()[..end]))
                        .await?;
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(UDP_REFUSAL_WAIT, socket.recv(&mut buf)).await {
                    Ok(Err(e)) => Err(format!("sending: {e}")),
                    _ => Ok(()),
                }
            }
            Transport::Tcp | Transport::Tls => {
                let mut frames = Vec::new();
                for m in &msgs {
                    frames.extend_from_slice(&cofre_core::siem::octet_frame(m));
                }
                let tcp = with_deadline(
                    "connecting",
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(addr),
                )
                .await?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => {
                        let mut tcp = tcp;
                        send_and_confirm(&mut tcp, &frames).await
                    }
                    Some(connector) => {
                        let name =
                            rustls::pki_types::ServerName::try_from(self.address.host.clone())
                                .map_err(|e| format!("server name: {e}"))?;
                        let mut tls = with_deadline(
                            "TLS handshake",
                            CONNECT_TIMEOUT,
                            connector.connect(name, tcp),
                        )
                        .await?;
                        send_and_confirm(&mut tls, &frames).await
                    }
                }
            }
        }
    }
}

/// Delivers everything after the destination's position, batch by batch, moving the position
/// after each confirmed batch. Err says why the destination failed now.
async fn deliver(app: &App, row: &SiemRow, hostname: &str) -> std::result::Result<(), String> {
    let sender = Sender::new(row, hostname)?;
    let label = row.name.clone();
    let mut position = row.position;
    loop {
        let batch = app
            .store
            .audit_page(position, sender.batch_size())
            .await
            .map_err(|e| format!("reading the audit trail: {e}"))?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Ok(());
        };
        sender.send(&batch).await?;
        app.store
            .siem_delivered(row.id, last, &app.now_text())
            .await
            .map_err(|e| format!("recording the position: {e}"))?;
        metrics::counter!("cofre_siem_messages_total", "destination" => label.clone())
            .increment(batch.len() as u64);
        metrics::gauge!("cofre_siem_position", "destination" => label.clone()).set(last as f64);
        position = last;
    }
}

/// The delivery task's view of one destination.
#[derive(Default)]
struct Worker {
    running: Option<tokio::task::JoinHandle<std::result::Result<(), String>>>,
    failures: u32,
    next_try: Option<Instant>,
}

/// One pass: start a delivery for each destination that lags and is not waiting out a
/// back-off, collect finished ones, raise alerts that are due, publish the lag.
async fn tick(app: &Arc<App>, workers: &mut HashMap<i64, Worker>, hostname: &str) -> Result<()> {
    let rows = app.store.siem_destinations().await?;
    let head = app.store.audit_head().await?.0;
    workers.retain(|id, w| {
        let keep = rows.iter().any(|r| r.id == *id);
        if !keep {
            if let Some(h) = w.running.take() {
                h.abort();
            }
        }
        keep
    });
    for row in &rows {
        metrics::gauge!("cofre_siem_lag_entries", "destination" => row.name.clone())
            .set((head - row.position).max(0) as f64);
        let w = workers.entry(row.id).or_default();
        if let Some(h) = w.running.take_if(|h| h.is_finished()) {
            let outcome = h
                .await
                .unwrap_or_else(|e| Err(format!("delivery task: {e}")));
            match outcome {
                Ok(()) => {
                    if w.failures > 0 {
                        tracing::info!(destination = %row.name, "SIEM destination receiving again");
                    }
                    w.failures = 0;
                    w.next_try = None;
                }
                Err(why) => {
                    w.failures = w.failures.saturating_add(1);
                    let backoff = Duration::from_secs(1u64 << w.failures.min(6)).min(MAX_BACKOFF);
                    w.next_try = Some(Instant::now() + backoff);
                    tracing::warn!(destination = %row.name, failures = w.failures, error = %why, "SIEM delivery failed; retrying");
                    metrics::counter!("cofre_siem_failures_total", "destination" => row.name.clone())
                        .increment(1);
                    let now = app.now();
                    app.store
                        .siem_failed(row.id, &why, &super::timestamp(now), now.unix_timestamp())
                        .await?;
                }
            }
        }
        app.siem_alert_if_due(row).await?;
        let waiting = w.next_try.is_some_and(|t| Instant::now() < t);
        if w.running.is_none() && !waiting && row.position < head {
            let app = app.clone();
            let row = row.clone();
            let hostname = hostname.to_owned();
            w.running = Some(tokio::spawn(
                async move { deliver(&app, &row, &hostname).await },
            ));
        }
    }
    Ok(())
}

/// Starts the delivery task: a pass every second (and at once after a destination is added).
/// It holds the app weakly and ends with it.
pub fn spawn_forwarder(app: &Arc<App>) {
    let hostname = app.config.siem.hostname.clone().unwrap_or_else(|| {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cofre".to_owned())
    });
    let weak = Arc::downgrade(app);
    let wake = app.siem_wake.clone();
    tokio::spawn(async move {
        let mut workers: HashMap<i64, Worker> = HashMap::new();
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            let Some(app) = weak.upgrade() else {
                for w in workers.values_mut() {
                    if let Some(h) = w.running.take() {
                        h.abort();
                    }
                }
                return;
            };
            if let Err(e) = tick(&app, &mut workers, &hostname).await {
                tracing::warn!(error = %e, "SIEM forwarding pass failed; retrying");
            }
        }
    });
}
