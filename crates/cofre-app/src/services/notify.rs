//! Notifications about access requests: queued in the transaction of the change they report (an
//! outbox table), delivered by one task with retries, so a crash between the change and the
//! delivery loses nothing and a slow mail server never holds up a decision.
//!
//! Webhooks are a JSON POST signed with HMAC-SHA256 over `TIMESTAMP.BODY` (`X-Cofre-Timestamp`,
//! `X-Cofre-Signature: sha256=HEX`); emails go through the configured SMTP server.

use super::App;
use crate::error::{Error, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::{role_may, Action, Role};
use cofre_store::requests::{NotificationRow, RequestRow};
use cofre_store::WriteTx;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// After this many failed attempts a notification is given up (and that is audited).
const MAX_ATTEMPTS: i64 = 8;

fn subject(event: &str, r: &RequestRow) -> String {
    let what = format!("{}@{} for {}", r.account, r.target, r.requester);
    let state = match event {
        "request.created" => "waiting for approval",
        "request.advanced" => "waiting for the next approval level",
        "request.approved" => "approved",
        "request.denied" => "denied",
        "request.expired" => "expired undecided",
        "request.cancelled" => "cancelled",
        "request.emergency" => "EMERGENCY ACCESS taken (review needed)",
        "request.reviewed" => "emergency access reviewed",
        "grant.revoked" => "grant revoked",
        _ => "updated",
    };
    format!("[Cofre] request {} ({what}): {state}", r.id)
}

/// Signs a webhook body: what a receiver recomputes to trust it.
pub fn webhook_signature(key: &[u8], timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The associated data of a sealed notification body: it opens only as the row it was made for.
pub(crate) fn notification_aad(seal_id: &str) -> String {
    format!("cofre:notification:{seal_id}")
}

impl App {
    /// Queues an email whose body holds a secret (a one-time password): sealed under the master
    /// key here, opened only by the delivery task, erased from the row once delivered.
    pub(crate) async fn queue_secret_email(
        &self,
        tx: &mut WriteTx,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<()> {
        let seal_id = uuid::Uuid::new_v4().simple().to_string();
        let aad = notification_aad(&seal_id);
        let sealed = self
            .with_master(|mk| cofre_crypto::envelope::seal(mk, body.as_bytes(), aad.as_bytes()))?
            .map_err(|e| Error::internal("sealing a notification", e))?;
        tx.enqueue_sealed_notification(
            "email",
            to,
            subject,
            &seal_id,
            &sealed.wrapped_key,
            &sealed.ciphertext,
            self.now().unix_timestamp(),
        )
        .await?;
        Ok(())
    }

    /// Queues one notice to every customer admin: the webhook gets `body`, each admin with an
    /// address an email of `text`. Maintenance announcements and support grants both tell them.
    pub(crate) async fn queue_admin_notices(
        &self,
        tx: &mut WriteTx,
        subject: &str,
        text: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        let cfg = &self.config.notify;
        let now = self.now().unix_timestamp();
        if let Some(url) = &cfg.webhook_url {
            tx.enqueue_notification("webhook", url, subject, &body.to_string(), now)
                .await?;
        }
        if cfg.smtp_host.is_some() {
            for name in tx.usernames_with_role(Role::Admin.as_str()).await? {
                let Some(user) = tx.user_by_name(&name).await? else {
                    continue;
                };
                let Some(email) = user.email else { continue };
                let body = format!("Hello {name},\n\n{text}");
                tx.enqueue_notification("email", &email, subject, &body, now)
                    .await?;
            }
        }
        Ok(())
    }

    pub(crate) fn notifier_wake(&self) {
        self.notify_wake.notify_one();
    }

    /// Queues what one state change tells the requester and the approvers (everyone in the
    /// request's approval groups who may decide), except the one who made the change.
    pub(crate) async fn queue_notices(
        &self,
        tx: &mut WriteTx,
        r: &RequestRow,
        event: &str,
        actor: &str,
    ) -> Result<()> {
        let cfg = &self.config.notify;
        if cfg.webhook_url.is_none() && cfg.smtp_host.is_none() {
            return Ok(());
        }
        let now = self.now().unix_timestamp();
        let info = self.approvals().request_info(r);
        let subject = subject(event, r);
        if let Some(url) = &cfg.webhook_url {
            let body = serde_json::json!({
                "event": event,
                "actor": actor,
                "at": info.created_at.clone(),
                "request": &info,
            })
            .to_string();
            tx.enqueue_notification("webhook", url, &subject, &body, now)
                .await?;
        }
        if cfg.smtp_host.is_some() {
            let groups: Vec<String> = cofre_core::approval::parse_levels("levels", &r.levels)
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.group)
                .collect();
            let mut recipients = tx.members_of(&groups).await?;
            recipients.retain(|m| {
                Role::parse(&m.role)
                    .is_some_and(|role| role_may(self.config.mode, role, Action::DecideRequests))
            });
            if let Some(u) = tx.user_by_name(&r.requester).await? {
                recipients.push(cofre_store::users::Member {
                    username: u.username,
                    role: u.role,
                    email: u.email,
                });
            }
            recipients.sort_by(|a, b| a.username.cmp(&b.username));
            recipients.dedup_by(|a, b| a.username == b.username);
            let decisions: Vec<String> = info
                .decisions
                .iter()
                .map(|d| {
                    format!(
                        "  level {}: {} {} ({})",
                        d.level, d.approver, d.verdict, d.comment
                    )
                })
                .collect();
            for m in recipients.iter().filter(|m| m.username != actor) {
                let Some(email) = &m.email else { continue };
                let action = if m.username == r.requester {
                    format!("See it with: cofre request show {}", r.id)
                } else if r.state == "pending" {
                    format!(
                        "Decide with: cofre request approve {id} --comment \"...\"  (or: cofre request deny {id} --comment \"why\")",
                        id = r.id
                    )
                } else if r.emergency && r.reviewed_by.is_none() {
                    format!(
                        "Review with: cofre request review {} --comment \"...\"",
                        r.id
                    )
                } else {
                    format!("See it with: cofre request show {}", r.id)
                };
                let body = format!(
                    "Hello {user},\n\n{subject}\n\nRequester: {requester}\nTarget: {target}\nAccount: {account}\n\
                     Access: {access}\nReason: {reason}\nWindow: {starts} to {ends}\nState: {state}\n\
                     Levels: {levels}\nDecisions:\n{decisions}\n\nLink: {link}\n{action}\n",
                    user = m.username,
                    requester = r.requester,
                    target = r.target,
                    account = r.account,
                    access = r.access.join(", "),
                    reason = r.reason,
                    starts = info.starts_at,
                    ends = info.ends_at,
                    state = r.state,
                    levels = r.levels,
                    decisions = if decisions.is_empty() {
                        "  (none)".to_owned()
                    } else {
                        decisions.join("\n")
                    },
                    link = info.link,
                );
                tx.enqueue_notification("email", email, &subject, &body, now)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The delivery side: holds the transports, tries what is due, retries with backoff.
struct Deliverer {
    http: reqwest::Client,
    webhook_key: Option<Zeroizing<Vec<u8>>>,
    smtp: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    from: Option<lettre::message::Mailbox>,
}

fn read_secret_file(path: &std::path::Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| Error::internal(what, format!("cannot read {}: {e}", path.display())))?,
    );
    let trimmed = Zeroizing::new(bytes.trim_ascii().to_vec());
    if trimmed.is_empty() {
        return Err(Error::internal(
            what,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(trimmed)
}

impl Deliverer {
    fn new(app: &App) -> Result<Deliverer> {
        let cfg = &app.config.notify;
        let webhook_key = match &cfg.webhook_secret_file {
            Some(p) => Some(read_secret_file(p, "notify.webhook_secret_file")?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::internal("webhook client", e))?;
        let (smtp, from) = match &cfg.smtp_host {
            None => (None, None),
            Some(host) => {
                use lettre::transport::smtp::authentication::Credentials;
                type T = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;
                let mut b = match cfg.smtp_tls.as_deref().unwrap_or("starttls") {
                    "none" => T::builder_dangerous(host),
                    "tls" => T::relay(host).map_err(|e| Error::internal("notify.smtp_host", e))?,
                    _ => T::starttls_relay(host)
                        .map_err(|e| Error::internal("notify.smtp_host", e))?,
                };
                if let Some(port) = cfg.smtp_port {
                    b = b.port(port);
                }
                if let (Some(user), Some(pw)) = (&cfg.smtp_username, &cfg.smtp_password_file) {
                    let pw = read_secret_file(pw, "notify.smtp_password_file")?;
                    let pw = String::from_utf8(pw.to_vec())
                        .map_err(|_| Error::internal("notify.smtp_password_file", "not UTF-8"))?;
                    b = b.credentials(Credentials::new(user.clone(), pw));
                }
                b = b.timeout(Some(Duration::from_secs(20)));
                let from = cfg
                    .smtp_from
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| Error::internal("notify.smtp_from", e))?;
                (Some(b.build()), Some(from))
            }
        };
        Ok(Deliverer {
            http,
            webhook_key,
            smtp,
            from,
        })
    }

    async fn send(
        &self,
        n: &NotificationRow,
        body: &str,
        now: i64,
    ) -> std::result::Result<(), String> {
        match n.channel.as_str() {
            "webhook" => {
                let key = self
                    .webhook_key
                    .as_ref()
                    .ok_or("no webhook key configured")?;
                let resp = self
                    .http
                    .post(&n.recipient)
                    .header("content-type", "application/json")
                    .header("x-cofre-timestamp", now.to_string())
                    .header("x-cofre-signature", webhook_signature(key, now, body))
                    .body(body.to_owned())
                    .send()
                    .await
                    .map_err(|e| format!("webhook: {}", e.without_url()))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("webhook answered {}", resp.status()))
                }
            }
            "email" => {
                use lettre::AsyncTransport;
                let (Some(smtp), Some(from)) = (&self.smtp, &self.from) else {
                    return Err("no SMTP server configured".into());
                };
                let to: lettre::message::Mailbox = n
                    .recipient
                    .parse()
                    .map_err(|e| format!("recipient address: {e}"))?;
                let msg = lettre::Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(n.subject.clone())
                    .body(body.to_owned())
                    .map_err(|e| format!("building the email: {e}"))?;
                smtp.send(msg)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("smtp: {e}"))
            }
            other => Err(format!("unknown channel {other}")),
        }
    }
}

async fn deliver_due(app: &App, d: &Deliverer) -> Result<()> {
    let now = app.now().unix_timestamp();
    for n in app.store.due_notifications(now, 50).await? {
        // A sealed body (a one-time password) is opened here only, for this attempt.
        let body = match &n.sealed {
            None => Zeroizing::new(n.body.clone()),
            Some((seal_id, wrapped_key, ciphertext)) => {
                let sealed = cofre_crypto::SealedSecret {
                    wrapped_key: wrapped_key.clone(),
                    ciphertext: ciphertext.clone(),
                };
                let aad = notification_aad(seal_id);
                let plain = app
                    .with_master(|mk| cofre_crypto::envelope::open(mk, &sealed, aad.as_bytes()))?
                    .map_err(|e| Error::internal("opening a sealed notification", e))?;
                Zeroizing::new(
                    String::from_utf8(plain.to_vec()).map_err(|_| {
                        Error::internal("opening a sealed notification", "not UTF-8")
                    })?,
                )
            }
        };
        match d.send(&n, &body, now).await {
            Ok(()) => {
                app.store.notification_delivered(n.id, now).await?;
                metrics::counter!("cofre_notifications_sent_total", "channel" => n.channel.clone())
                    .increment(1);
            }
            Err(why) => {
                let attempts = n.attempts + 1;
                let give_up = attempts >= MAX_ATTEMPTS;
                let backoff = 2i64
                    .pow(u32::try_from(attempts.min(8)).unwrap_or(8))
                    .min(300);
                tracing::warn!(channel = %n.channel, attempts, error = %why, "notification not delivered");
                metrics::counter!("cofre_notification_failures_total", "channel" => n.channel.clone())
                    .increment(1);
                app.store
                    .notification_failed(n.id, &why, now + backoff, give_up.then_some(now))
                    .await?;
                if give_up {
                    tracing::error!(channel = %n.channel, "notification given up after {attempts} attempts");
                    app.record(
                        NewAuditEntry::new(
                            "system",
                            "notification.failed",
                            format!("notification:{}", n.id),
                        )
                        .outcome("failed")
                        .detail("channel", n.channel.as_str())
                        .detail("subject", n.subject.as_str())
                        .detail("error", why),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// Starts the delivery task (woken on every queued change, and every second for retries).
pub fn spawn_notifier(app: &Arc<App>) -> Result<()> {
    let deliverer = Deliverer::new(app)?;
    let weak = Arc::downgrade(app);
    let wake = app.notify_wake.clone();
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            let Some(app) = weak.upgrade() else { return };
            if let Err(e) = deliver_due(&app, &deliverer).await {
                tracing::warn!(error = %e, "notification delivery round failed; retrying");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 ("Jefe" / "what do ya want for nothing?"), split as TS "." BODY
        // would not reproduce it, so check the construction against a direct HMAC instead.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let a = webhook_signature(b"k", 1, "{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(
            a,
            webhook_signature(b"k", 2, "{}"),
            "the timestamp is signed"
        );
        assert_ne!(a, webhook_signature(b"k", 1, "{ }"), "the body is signed");
        assert_ne!(a, webhook_signature(b"j", 1, "{}"), "the key matters");
    }
}
