//! Credential rotation (issue 15): a new secret is proved on the target before it replaces the old.
//!
//! One attempt: the new secret (password policy, or a new Ed25519 key) is stored as a *pending*
//! version while the lease row is taken (one transaction, audited `credential.rotate` `started`),
//! the break-glass file is written with it, the change is applied over SSH (`chpasswd` as a
//! privileged account, `passwd` as the account itself answering its prompts, or the key's line in
//! `authorized_keys` replaced), then a fresh login with the new secret verifies it. Only then is it
//! current. On any failure the target is asked which secret it takes: the old one stays current
//! (set back through the privileged account where the target took the new one but nothing logs in),
//! or the new one becomes current if it is the one that works; never a disagreement. If neither
//! logs in, the version stays pending (alerted) and the scheduler tries again; a crash leaves the
//! same pending row, which the next start (or, after the lease ran out, any node) resolves the
//! same way.
//!
//! Triggers: by hand, on a schedule, after a reveal, after a session, after a grant ends. A due
//! rotation waits while a gateway session on the credential is live (on any node: the sessions
//! table).

use super::Vault;
use super::{rfc3339, App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_connect::{Connection, HostKey, HostKeyPolicy, Login, Prompt, Secret, Target};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_account;
use cofre_core::password_policy::{Class, PasswordPolicy};
use cofre_core::role::Action;
use cofre_core::rotation_template::{self, Part, Template, Text as TemplateText};
use cofre_crypto::{envelope, SealedSecret};
use cofre_proto::{
    Page, PasswordPolicyInfo, RotateRequest, RotationInfo, RotationResult,
    SetPasswordPolicyRequest, SetRotationRequest, VerifyResult,
};
use cofre_store::credentials::{CredentialRow, NewVersion};
use cofre_store::rotation::{RotationEnd, RotationRow, RotationSettings};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a rotation may hold its credential before another node may take it over.
const LEASE_SECONDS: i64 = 600;
/// A command on the target (chpasswd, passwd, the authorized_keys edit) must end within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the scheduler looks for due rotations and verifies.
const TICK: Duration = Duration::from_secs(15);
const META_PASSWORD_POLICY: &str = "password_policy";
/// Test-only: with this set to `1`, the server aborts (like kill -9) right after a rotation was
/// applied on the target and before it is verified, so the tests can prove a restart resolves it.
pub const TEST_ONLY_ABORT_AFTER_APPLY: &str = "COFRE_TEST_ONLY_ABORT_ROTATION_AFTER_APPLY";

/// This node's part in rotation: who it is (for leases) and the scheduler's wake-up.
#[derive(Default)]
pub struct RotationState {
    node: OnceLock<String>,
    pub(crate) wake: tokio::sync::Notify,
    app: OnceLock<Weak<App>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Chpasswd,
    Passwd,
    Key,
    /// The credential's own command template (cofre-core `rotation_template`).
    Command,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        match s {
            "chpasswd" => Some(Method::Chpasswd),
            "passwd" => Some(Method::Passwd),
            "key" => Some(Method::Key),
            "command" => Some(Method::Command),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Method::Chpasswd => "chpasswd",
            Method::Passwd => "passwd",
            Method::Key => "key",
            Method::Command => "command",
        }
    }
}

/// How one rotation changes the secret: the method and the account that runs it (None: itself),
/// and for `command` the template it runs.
#[derive(Debug, Clone)]
struct Plan {
    method: Method,
    as_account: Option<String>,
    template: Option<Arc<StoredTemplate>>,
}

/// One version of a credential's command template, as stored and as read.
#[derive(Debug)]
struct StoredTemplate {
    version: i64,
    sha256: String,
    template: Template,
}

/// A template's text with `{account}`, `{old}` and `{new}` filled in, kept from the logs.
fn render(text: &TemplateText, account: &str, old: &Plain, new: &Plain) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for part in text.parts() {
        match part {
            Part::Literal(s) => out.push_str(s),
            Part::Account => out.push_str(account),
            Part::Old => out.push_str(old.text()),
            Part::New => out.push_str(new.text()),
        }
    }
    out
}

/// A secret in the open, for the length of an attempt only.
#[derive(Clone)]
enum Plain {
    Password(Zeroizing<String>),
    Key(Zeroizing<String>),
}

impl Plain {
    fn secret(&self) -> Secret {
        match self {
            Plain::Password(p) => Secret::Password(p.clone()),
            Plain::Key(k) => Secret::PrivateKey(k.clone()),
        }
    }
    fn text(&self) -> &str {
        match self {
            Plain::Password(s) | Plain::Key(s) => s.as_str(),
        }
    }
}

/// Words for the user that may quote a target's output: never a secret of this attempt in them.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .collect();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "***");
        }
    }
    let out = out.trim().to_owned();
    if out.chars().count() > 300 {
        out.chars().take(300).collect::<String>() + "..."
    } else {
        out
    }
}

/// The account part of `--as`: `ACCOUNT` or `TARGET/ACCOUNT` on the same target.
fn as_account_of(target: &str, given: Option<&str>) -> Result<Option<String>> {
    let Some(given) = given.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let account = match given.split_once('/') {
        Some((t, a)) if t == target => a,
        Some((t, _)) => {
            return Err(Error::invalid(
                "as",
                format!("as: {t} is another target; the account that changes {target}'s credential is on {target} (e.g. {target}/root)"),
            ))
        }
        None => given,
    };
    check_account("as", account)?;
    Ok(Some(account.to_owned()))
}

/// Names go into shell commands on the target: only the characters of Unix user names.
fn shell_safe_account(field: &str, account: &str) -> Result<()> {
    if !account.is_empty()
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{field}: {account:?} is not a Unix user name this method can change (letters, digits, '.', '_', '-')"),
        ))
    }
}

fn public_blob(private_openssh: &str) -> Option<String> {
    let key = russh::keys::decode_secret_key(private_openssh, None).ok()?;
    let line = key.public_key().to_openssh().ok()?;
    line.split_whitespace().nth(1).map(str::to_owned)
}

fn new_key() -> Result<(Zeroizing<String>, String)> {
    let seed = cofre_crypto::generate::ed25519_seed();
    let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = russh::keys::PrivateKey::from(pair);
    let private = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| Error::internal("making a key pair", e))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::internal("making a key pair", e))?;
    Ok((Zeroizing::new(private.to_string()), public))
}

/// The authorized_keys edit: the line holding `old_blob` becomes `new_line` (appended if no line
/// holds it, which is how a drifted key is reconciled). Written in place (`cat >`) so the file
/// keeps its owner and mode. Public keys only: nothing secret in the command.
fn authorized_keys_command(
    account: Option<&str>,
    old_blob: Option<&str>,
    new_line: &str,
) -> String {
    let home = match account {
        Some(a) => format!("$(getent passwd {a} | cut -d: -f6)"),
        None => "$HOME".to_owned(),
    };
    format!(
        "set -e; umask 077; f=\"{home}/.ssh/authorized_keys\"; \
         [ -f \"$f\" ] || {{ echo \"$f does not exist\"; exit 3; }}; \
         awk -v old='{old}' -v new='{new_line}' \
         '{{ hit = 0; n = split($0, w, \" \"); for (i = 1; i <= n; i++) if (old != \"\" && w[i] == old) hit = 1; \
            if (hit) {{ if (!done) print new; done = 1 }} else print }} END {{ if (!done) print new }}' \
         \"$f\" > \"$f.cofre-new\"; cat \"$f.cofre-new\" > \"$f\"; rm -f \"$f.cofre-new\"",
        old = old_blob.unwrap_or(""),
    )
}

/// The scheduler's back-off after the n-th failure in a row: 1 min, 2, 4, ... at most 1 h.
/// When a credential's next rotation is due. A failed automatic attempt's back-off holds every
/// trigger, the schedule too: otherwise `--every` would retry on each scheduler round.
fn next_rotation_at(r: &RotationRow) -> Option<i64> {
    if r.retry_at.is_some() {
        return r.retry_at;
    }
    let every = r
        .every_seconds
        .map(|e| r.last_success_at.unwrap_or(0).max(0) + e);
    [r.due_at, every].into_iter().flatten().min()
}

fn backoff_seconds(failures: i64) -> i64 {
    let n = u32::try_from(failures.clamp(0, 6)).unwrap_or(6);
    (60 * 2i64.pow(n)).min(3600)
}

/// The services' pin check (the gateway's) as cofre-connect's host-key policy.
struct Pinned {
    app: Arc<App>,
    label: String,
    target: String,
}

impl HostKeyPolicy for Pinned {
    fn check<'a>(
        &'a self,
        key: &'a HostKey,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + 'a>,
    > {
        Box::pin(async move {
            self.app
                .sessions()
                .check_host_key(&self.label, &self.target, &key.fingerprint)
                .await
                .map_err(|e| e.message)
        })
    }
}

/// Why applying failed, and whether the command ran on the target (so may have changed it).
struct ApplyError {
    ran: bool,
    message: String,
}

/// What an attempt found out, before it is written down.
struct Ending {
    outcome: &'static str,
    /// The version that is current afterwards.
    current: i64,
    reason: Option<String>,
    success: bool,
}

impl App {
    fn rotation_app(&self) -> Result<Arc<App>> {
        self.rotation
            .app
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::internal("rotating", "the rotation service is not started"))
    }

    pub(crate) fn node_id(&self) -> String {
        self.rotation
            .node
            .get_or_init(|| uuid::Uuid::new_v4().to_string())
            .clone()
    }

    // --- the password policy ---

    pub async fn password_policy(&self) -> Result<PasswordPolicy> {
        match self.store.meta_get(META_PASSWORD_POLICY).await? {
            None => Ok(PasswordPolicy::default()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::internal("reading the password policy", e)),
        }
    }
}

impl Vault<'_> {
    pub async fn get_password_policy(&self, who: &Principal) -> Result<PasswordPolicyInfo> {
        who.require(Action::ViewCredentialHistory)?;
        Ok(policy_info(&self.password_policy().await?))
    }

    /// Sets the policy for generated passwords. A policy never goes below 64 bits of entropy
    /// (`PasswordPolicy::new`), so a lone admin cannot make rotated passwords guessable.
    pub async fn set_password_policy(
        &self,
        who: &Principal,
        req: &SetPasswordPolicyRequest,
    ) -> Result<PasswordPolicyInfo> {
        who.require(Action::ManageTargets)?;
        let length = usize::try_from(req.length).unwrap_or(usize::MAX);
        let policy =
            PasswordPolicy::new(length, &req.classes, req.exclude.as_deref().unwrap_or(""))?;
        let json = serde_json::to_string(&policy)
            .map_err(|e| Error::internal("storing the password policy", e))?;
        let mut tx = self.store.write().await?;
        tx.meta_set(META_PASSWORD_POLICY, &json).await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "password_policy.set", "password_policy")
                .detail("length", policy.length)
                .detail("classes", policy.classes_text())
                .detail("exclude", policy.exclude.as_str()),
        )
        .await?;
        Ok(policy_info(&policy))
    }
}

impl App {
    // --- settings and status ---

    async fn live_credential(&self, target: &str, account: &str) -> Result<CredentialRow> {
        let cred = self
            .store
            .credential(target, account)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        if self
            .store
            .credential_secret(target, account, None)
            .await?
            .is_none()
        {
            return Err(Error::not_found(format!("credential {target}/{account}")));
        }
        Ok(cred)
    }

    /// The method and account for one attempt: what the caller asked, else the credential's
    /// settings, else `key` for a key and `passwd` (as itself) for a password.
    fn plan(
        &self,
        cred: &CredentialRow,
        settings: Option<&RotationRow>,
        method: Option<&str>,
        as_account: Option<&str>,
    ) -> Result<Plan> {
        let method = match method.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => Some(m.to_owned()),
            None => settings.and_then(|s| s.method.clone()),
        };
        let method = match method.as_deref() {
            Some(m) => Method::parse(m).ok_or_else(|| {
                Error::invalid(
                    "method",
                    format!("method: {m:?} is not one of chpasswd, passwd, key, command"),
                )
            })?,
            None if cred.kind == "private_key" => Method::Key,
            None => Method::Passwd,
        };
        let as_account = match as_account_of(&cred.target, as_account)? {
            Some(a) => Some(a),
            None => settings.and_then(|s| s.as_account.clone()),
        };
        match (method, cred.kind.as_str()) {
            (Method::Key, "private_key") => {}
            (Method::Key, _) => {
                return Err(Error::invalid(
                    "method",
                    "method: key rotates a private key credential; this one is a password (chpasswd, passwd or command)",
                ))
            }
            (_, "private_key") => {
                return Err(Error::invalid(
                    "method",
                    "method: this credential is a private key; rotate it with key (--key)",
                ))
            }
            _ => {}
        }
        if method == Method::Passwd && as_account.is_some() {
            return Err(Error::invalid(
                "as",
                "as: passwd runs as the account itself; use chpasswd to change it as another account",
            ));
        }
        shell_safe_account("account", &cred.account)?;
        if let Some(a) = &as_account {
            shell_safe_account("as", a)?;
        }
        Ok(Plan {
            method,
            as_account,
            template: None,
        })
    }

    /// [`App::plan`] with the stored template a `command` rotation runs with.
    async fn plan_with_template(
        &self,
        cred: &CredentialRow,
        settings: Option<&RotationRow>,
        method: Option<&str>,
        as_account: Option<&str>,
    ) -> Result<Plan> {
        let mut plan = self.plan(cred, settings, method, as_account)?;
        if plan.method == Method::Command {
            let version = settings.and_then(|s| s.template_version).ok_or_else(|| {
                Error::invalid(
                    "method",
                    format!(
                        "method: command runs the credential's template, and {}/{} has none yet (credential set-rotation --method command --template-file FILE)",
                        cred.target, cred.account
                    ),
                )
            })?;
            plan.template = Some(Arc::new(self.stored_template(cred.id, version).await?));
        }
        Ok(plan)
    }

    async fn stored_template(&self, credential_id: i64, version: i64) -> Result<StoredTemplate> {
        let (body, sha256) = self
            .store
            .rotation_template(credential_id, version)
            .await?
            .ok_or_else(|| {
                Error::internal(
                    "reading the rotation template",
                    format!("version {version} missing"),
                )
            })?;
        // Checked when it was uploaded; read again, so a template only ever runs as parsed.
        let template = rotation_template::parse(&body)
            .map_err(|e| Error::internal("reading the rotation template", e))?;
        Ok(StoredTemplate {
            version,
            sha256,
            template,
        })
    }
}

impl Vault<'_> {
    pub async fn set_rotation(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        req: &SetRotationRequest,
    ) -> Result<RotationInfo> {
        who.require(Action::ManageTargets)?;
        let cred = self.live_credential(target, account).await?;
        let every = optional_duration("every", req.every.as_deref())?;
        let verify_every = optional_duration("verify_every", req.verify_every.as_deref())?;
        let template = req
            .template
            .as_deref()
            .map(|text| rotation_template::parse(text).map(|_| text))
            .transpose()?;
        // A template says the method; naming another one beside it is a mistake.
        let method = match (req.method.as_deref().map(str::trim), template) {
            (None | Some(""), Some(_)) => Some("command"),
            (Some(m), Some(_)) if m != "command" => {
                return Err(Error::invalid(
                    "template",
                    format!("template: a template is run by the command method, not {m}"),
                ))
            }
            (m, _) => m,
        };
        // Validated as a rotation would use it, so a setting that cannot work is refused now.
        let plan = self.plan(&cred, None, method, req.as_account.as_deref())?;
        let existing_template = self
            .store
            .rotation(cred.id)
            .await?
            .and_then(|r| r.template_version);
        if plan.method == Method::Command && template.is_none() && existing_template.is_none() {
            return Err(Error::invalid(
                "template",
                "template: the command method runs a template; give one (--template-file FILE)",
            ));
        }
        if let Some(a) = &plan.as_account {
            if self.store.credential(target, a).await?.is_none() {
                return Err(Error::invalid(
                    "as",
                    format!("as: {target}/{a} is not a credential in the vault"),
                ));
            }
        }
        let method = plan.method.as_str();
        let mut tx = self.store.write().await?;
        let new_template = match template {
            Some(text) => {
                let sha256 = super::sha256_hex(text.as_bytes());
                let version = tx
                    .add_rotation_template(
                        cred.id,
                        text,
                        &sha256,
                        &who.username,
                        self.now().unix_timestamp(),
                    )
                    .await?;
                Some((version, sha256))
            }
            None => None,
        };
        let template_version = new_template.as_ref().map(|t| t.0).or(existing_template);
        tx.set_rotation_settings(
            cred.id,
            &RotationSettings {
                method: Some(method),
                as_account: plan.as_account.as_deref(),
                every_seconds: every,
                after_reveal: req.after_reveal,
                after_session: req.after_session,
                after_grant: req.after_grant,
                verify_every_seconds: verify_every,
                template_version,
                at: self.now().unix_timestamp(),
            },
        )
        .await?;
        let mut entry = NewAuditEntry::new(
            &who.username,
            "credential.set_rotation",
            format!("credential:{target}/{account}"),
        )
        .detail("method", method)
        .detail("after_reveal", req.after_reveal)
        .detail("after_session", req.after_session)
        .detail("after_grant", req.after_grant);
        if let Some(a) = &plan.as_account {
            entry = entry.detail("as", a.as_str());
        }
        if let Some(e) = every {
            entry = entry.detail("every_seconds", e);
        }
        if let Some(v) = verify_every {
            entry = entry.detail("verify_every_seconds", v);
        }
        if plan.method == Method::Command {
            if let Some(v) = template_version {
                entry = entry.detail("template_version", v);
            }
            if let Some((_, sha)) = &new_template {
                entry = entry.detail("template_sha256", sha.as_str());
            }
        }
        self.commit(tx, entry).await?;
        self.rotation.wake.notify_one();
        let row = self
            .store
            .rotation(cred.id)
            .await?
            .ok_or_else(|| Error::internal("reading the rotation settings", "row missing"))?;
        self.rotation_info(row).await
    }
}

impl App {
    async fn rotation_info(&self, r: RotationRow) -> Result<RotationInfo> {
        let next = next_rotation_at(&r);
        let waiting_for = if r.due_at.is_some() || r.retry_at.is_some() {
            let live = self.store.live_sessions_on(&r.target, &r.account).await?;
            (live > 0).then(|| format!("{live} live session(s) on {}/{}", r.target, r.account))
        } else {
            None
        };
        Ok(RotationInfo {
            target: r.target,
            account: r.account,
            kind: r.kind,
            version: r.current_version,
            method: r.method,
            as_account: r.as_account,
            every: r.every_seconds.map(duration_text),
            after_reveal: r.after_reveal,
            after_session: r.after_session,
            after_grant: r.after_grant,
            verify_every: r.verify_every_seconds.map(duration_text),
            last_at: r.last_at.map(rfc3339),
            last_trigger: r.last_trigger,
            last_outcome: r.last_outcome,
            last_reason: r.last_reason,
            next_at: next.map(rfc3339),
            waiting_for,
            pending_version: r.pending_version,
            failures: r.failures,
            last_verify_at: r.last_verify_at.map(rfc3339),
            last_verify_outcome: r.last_verify_outcome,
            template_version: r.template_version,
        })
    }
}

impl Vault<'_> {
    pub async fn get_rotation_status(
        &self,
        who: &Principal,
        failed_only: bool,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<RotationInfo>> {
        who.require(Action::ViewCredentialHistory)?;
        let limit = super::page_limit(limit)?;
        let after =
            match cursor {
                None => None,
                Some(c) => Some(c.split_once('/').ok_or_else(|| {
                    Error::invalid("cursor", "cursor: not a cursor from this list")
                })?),
            };
        let rows = self
            .store
            .rotations_page(after, failed_only, limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::new();
        for r in rows.into_iter().take(usize::try_from(limit).unwrap_or(0)) {
            items.push(self.rotation_info(r).await?);
        }
        let next_cursor = if more {
            items.last().map(|i| format!("{}/{}", i.target, i.account))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

impl App {
    // --- triggers ---

    /// After a reveal, a session or a grant on this credential: asks for a rotation where its
    /// settings say so. Never fails the caller (the use already happened); a failure is logged.
    pub(crate) async fn rotation_after_use(&self, target: &str, account: &str, trigger: &str) {
        if let Err(e) = self.mark_due_after_use(target, account, trigger).await {
            tracing::error!(target, account, trigger, error = %e, "ALERT: cannot ask for the rotation a use of this credential triggers");
        }
    }

    async fn mark_due_after_use(&self, target: &str, account: &str, trigger: &str) -> Result<()> {
        let Some(cred) = self.store.credential(target, account).await? else {
            return Ok(());
        };
        let Some(r) = self.store.rotation(cred.id).await? else {
            return Ok(());
        };
        let wanted = match trigger {
            "reveal" => r.after_reveal,
            "session" => r.after_session,
            "grant" => r.after_grant,
            _ => false,
        };
        if !wanted || r.due_at.is_some() {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        tx.mark_rotation_due(cred.id, self.now().unix_timestamp(), trigger, None, None)
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                "system",
                "credential.rotation_due",
                format!("credential:{target}/{account}"),
            )
            .detail("trigger", trigger),
        )
        .await?;
        self.rotation.wake.notify_one();
        Ok(())
    }
}

impl Vault<'_> {
    // --- rotate, verify ---

    /// `credential rotate`: now, or (while a session on it is live) as soon as it ends.
    pub async fn rotate_credential(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        req: &RotateRequest,
    ) -> Result<RotationResult> {
        who.require(Action::ManageTargets)?;
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        let cred = self.live_credential(target, account).await?;
        if let Some((_, error)) = super::vault::disabled_refusal(&cred) {
            return Err(error);
        }
        let settings = self.store.rotation(cred.id).await?;
        let plan = self
            .plan_with_template(
                &cred,
                settings.as_ref(),
                req.method.as_deref(),
                req.as_account.as_deref(),
            )
            .await?;
        if let Some(r) = &settings {
            if r.pending_version.is_some() {
                return Err(in_progress(target, account));
            }
        }
        let live = self.store.live_sessions_on(target, account).await?;
        if live > 0 {
            let mut tx = self.store.write().await?;
            tx.mark_rotation_due(
                cred.id,
                self.now().unix_timestamp(),
                "manual",
                req.method.as_deref(),
                req.as_account.as_deref(),
            )
            .await?;
            self.commit(
                tx,
                NewAuditEntry::new(
                    &who.username,
                    "credential.rotation_due",
                    format!("credential:{target}/{account}"),
                )
                .detail("trigger", "manual")
                .detail("method", plan.method.as_str())
                .detail("waiting_for", format!("{live} live session(s)")),
            )
            .await?;
            return Ok(RotationResult {
                target: target.to_owned(),
                account: account.to_owned(),
                outcome: "waiting".into(),
                version: cred.current_version,
                attempted_version: None,
                method: plan.method.as_str().into(),
                trigger: "manual".into(),
                reason: Some(format!(
                    "{live} session(s) on {target}/{account} are live; it rotates when they end"
                )),
            });
        }
        self.run_rotation(&who.username, &cred, &plan, "manual")
            .await
    }
}

impl App {
    fn open_version(
        &self,
        credential_id: i64,
        version: i64,
        kind: &str,
        sealed: SealedSecret,
    ) -> Result<Plain> {
        let plain = self
            .with_master(|mk| {
                envelope::open(
                    mk,
                    &sealed,
                    super::vault::secret_aad(credential_id, version).as_bytes(),
                )
            })?
            .map_err(|e| Error::internal("opening the secret", e))?;
        let text = Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| Error::internal("opening the secret", "not UTF-8"))?,
        );
        Ok(if kind == "private_key" {
            Plain::Key(text)
        } else {
            Plain::Password(text)
        })
    }

    async fn version_secret(&self, credential_id: i64, version: i64) -> Result<Plain> {
        let row = self
            .store
            .credential_version(credential_id, version)
            .await?
            .ok_or_else(|| Error::internal("rotating", format!("version {version} is missing")))?;
        self.open_version(
            credential_id,
            version,
            &row.kind,
            SealedSecret {
                wrapped_key: row.wrapped_key,
                ciphertext: row.ciphertext,
            },
        )
    }

    async fn current_secret(&self, target: &str, account: &str) -> Result<(CredentialRow, Plain)> {
        let (cred, _, row) = self
            .store
            .credential_secret(target, account, None)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        let plain = self.open_version(
            cred.id,
            row.version,
            &row.kind,
            SealedSecret {
                wrapped_key: row.wrapped_key,
                ciphertext: row.ciphertext,
            },
        )?;
        Ok((cred, plain))
    }

    async fn target_of(&self, name: &str) -> Result<Target> {
        let t = self
            .store
            .target_by_name(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("target {name}")))?;
        Ok(Target {
            name: t.name,
            host: t.host,
            port: u16::try_from(t.port).unwrap_or(22),
        })
    }

    /// Logs in as `account` with `secret` (the target's pinned host key checked).
    async fn target_login(
        &self,
        target: &Target,
        account: &str,
        secret: &Plain,
    ) -> std::result::Result<Connection, String> {
        let app = self.rotation_app().map_err(|e| e.message)?;
        let policy = Arc::new(Pinned {
            app,
            label: format!("rotation:{}/{account}", target.name),
            target: target.name.clone(),
        });
        Connection::open(
            target,
            &Login {
                account: account.to_owned(),
                secret: secret.secret(),
            },
            policy,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Whether `secret` logs in as `account` now.
    async fn logs_in(&self, target: &Target, account: &str, secret: &Plain) -> bool {
        match self.target_login(target, account, secret).await {
            Ok(c) => {
                c.disconnect("verified").await;
                true
            }
            Err(_) => false,
        }
    }

    /// Changes the secret on the target from `old` to `new` as the plan says.
    async fn apply(
        &self,
        target: &Target,
        account: &str,
        plan: &Plan,
        old: &Plain,
        new: &Plain,
    ) -> std::result::Result<(), ApplyError> {
        let not_run = |message: String| ApplyError {
            ran: false,
            message,
        };
        let ran = |message: String| ApplyError { ran: true, message };
        let secrets = [old.text(), new.text()];
        let (runner, runner_secret) = match &plan.as_account {
            Some(a) => {
                let (_, s) = self.current_secret(&target.name, a).await.map_err(|e| {
                    not_run(format!("the account that changes it ({a}): {}", e.message))
                })?;
                (a.clone(), s)
            }
            None => (account.to_owned(), old.clone()),
        };
        let conn = self
            .target_login(target, &runner, &runner_secret)
            .await
            .map_err(|e| not_run(format!("logging in as {runner} to change it: {e}")))?;
        let run = match (plan.method, new) {
            (Method::Chpasswd, Plain::Password(p)) => {
                let command = if runner == "root" {
                    "chpasswd"
                } else {
                    "sudo -n chpasswd"
                };
                let mut line = Zeroizing::new(format!("{account}:"));
                line.push_str(p);
                line.push('\n');
                conn.exec_with_input(command, &[], Some(line.as_bytes()), COMMAND_TIMEOUT)
                    .await
            }
            (Method::Passwd, Plain::Password(p)) => {
                let prompts = [
                    Prompt {
                        expect: "assword:".into(),
                        answer: Zeroizing::new(old.text().to_owned()),
                    },
                    Prompt {
                        expect: "assword:".into(),
                        answer: p.clone(),
                    },
                    Prompt {
                        expect: "assword:".into(),
                        answer: p.clone(),
                    },
                ];
                conn.exec("LC_ALL=C passwd", &prompts, COMMAND_TIMEOUT)
                    .await
            }
            (Method::Command, Plain::Password(_)) => {
                let Some(stored) = &plan.template else {
                    conn.disconnect("done").await;
                    return Err(not_run("the command method has no template".into()));
                };
                let t = &stored.template;
                let prompts: Vec<Prompt> = t
                    .prompts
                    .iter()
                    .map(|p| Prompt {
                        expect: p.expect.clone(),
                        answer: render(&p.answer, account, old, new),
                    })
                    .collect();
                let input = t.stdin.as_ref().map(|s| render(s, account, old, new));
                let run = conn
                    .exec_with_input(
                        &t.command.with_account(account),
                        &prompts,
                        input.as_ref().map(|s| s.as_bytes()),
                        COMMAND_TIMEOUT,
                    )
                    .await;
                // A device may exit 0 whatever happened; the template can name what success
                // prints.
                if let (Ok(out), Some(expected)) = (&run, &t.success_output) {
                    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
                    said.push(' ');
                    said.push_str(&String::from_utf8_lossy(&out.stderr));
                    if out.exit_status == Some(0) && !said.contains(expected.as_str()) {
                        conn.disconnect("done").await;
                        return Err(ran(format!(
                            "command on {} exited 0 without printing the template's success_output {expected:?}: {}",
                            target.name,
                            scrub(&said, &secrets)
                        )));
                    }
                }
                run
            }
            (Method::Key, Plain::Key(k)) => {
                let new_blob =
                    public_blob(k).ok_or_else(|| not_run("the new key cannot be read".into()))?;
                let old_blob = public_blob(old.text());
                let line = format!("ssh-ed25519 {new_blob} cofre-rotated");
                let command = authorized_keys_command(
                    plan.as_account.as_ref().map(|_| account),
                    old_blob.as_deref(),
                    &line,
                );
                conn.exec(&command, &[], COMMAND_TIMEOUT).await
            }
            _ => {
                conn.disconnect("done").await;
                return Err(not_run(
                    "the method does not fit the credential's kind".into(),
                ));
            }
        };
        conn.disconnect("done").await;
        let out = run.map_err(|e| ran(scrub(&e.to_string(), &secrets)))?;
        if out.exit_status == Some(0) {
            Ok(())
        } else {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push(' ');
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let status = out.exit_status.map_or_else(
                || "no exit status".to_owned(),
                |s| format!("exit status {s}"),
            );
            Err(ran(format!(
                "{} on {} refused the change ({status}): {}",
                plan.method.as_str(),
                target.name,
                scrub(&text, &secrets)
            )))
        }
    }

    /// One attempt, from storing the pending version to writing down the outcome.
    async fn run_rotation(
        &self,
        actor: &str,
        cred: &CredentialRow,
        plan: &Plan,
        trigger: &str,
    ) -> Result<RotationResult> {
        let (target_name, account) = (cred.target.as_str(), cred.account.as_str());
        let object = format!("credential:{target_name}/{account}");
        let (cred, old) = self.current_secret(target_name, account).await?;
        let target = self.target_of(target_name).await?;
        let new = match plan.method {
            Method::Key => Plain::Key(new_key()?.0),
            _ => Plain::Password(cofre_crypto::generate::password(
                &self.password_policy().await?,
            )),
        };
        let kind = if matches!(new, Plain::Key(_)) {
            "private_key"
        } else {
            "password"
        };
        // Stored, and the lease taken, before anything reaches the target.
        let now = self.now();
        let mut tx = self.store.write().await?;
        let version = tx.next_credential_version(cred.id).await?;
        let sealed = self
            .with_master(|mk| {
                envelope::seal(
                    mk,
                    new.text().as_bytes(),
                    super::vault::secret_aad(cred.id, version).as_bytes(),
                )
            })?
            .map_err(|e| Error::internal("sealing the secret", e))?;
        tx.add_pending_credential_version(
            cred.id,
            version,
            NewVersion {
                kind,
                wrapped_key: &sealed.wrapped_key,
                ciphertext: &sealed.ciphertext,
                created_at: &super::timestamp(now),
                created_by: actor,
            },
        )
        .await?;
        let node = self.node_id();
        let began = tx
            .begin_rotation(
                cred.id,
                &node,
                now.unix_timestamp(),
                now.unix_timestamp() + LEASE_SECONDS,
                version,
                plan.method.as_str(),
                plan.as_account.as_deref(),
                trigger,
            )
            .await?;
        if !began {
            return Err(in_progress(target_name, account));
        }
        let mut entry = NewAuditEntry::new(actor, "credential.rotate", object.as_str())
            .outcome("started")
            .detail("trigger", trigger)
            .detail("method", plan.method.as_str())
            .detail("version", version);
        if let Some(a) = &plan.as_account {
            entry = entry.detail("as", a.as_str());
        }
        if let Some(t) = &plan.template {
            entry = entry
                .detail("template_version", t.version)
                .detail("template_sha256", t.sha256.as_str());
        }
        self.commit(tx, entry).await?;

        // The break-glass file holds the new version before the old one stops working.
        let ending = if self.orbit().write_breakglass_files("rotation").await
            == super::breakglass::WriteOutcome::Failed
        {
            Ending {
                outcome: "failed",
                current: cred.current_version,
                reason: Some(
                    "the break-glass file could not be written with the new version; nothing was changed on the target"
                        .into(),
                ),
                success: false,
            }
        } else {
            let applied = self.apply(&target, account, plan, &old, &new).await;
            if applied.is_ok() && std::env::var(TEST_ONLY_ABORT_AFTER_APPLY).as_deref() == Ok("1") {
                tracing::error!(
                    "{TEST_ONLY_ABORT_AFTER_APPLY} is set: aborting between apply and verify"
                );
                std::process::abort();
            }
            let verified = match applied {
                Err(ApplyError {
                    ran: false,
                    message,
                }) => Err(Err(message)),
                Err(ApplyError { ran: true, message }) => Err(Ok(message)),
                Ok(()) => match self.target_login(&target, account, &new).await {
                    Ok(c) => {
                        c.disconnect("verified").await;
                        Ok(())
                    }
                    Err(e) => Err(Ok(format!(
                        "the new secret was accepted, but logging in with it failed: {e}"
                    ))),
                },
            };
            match verified {
                Ok(()) => Ending {
                    outcome: "rotated",
                    current: version,
                    reason: None,
                    success: true,
                },
                // The change never ran on the target: the old secret is as it was.
                Err(Err(why)) => Ending {
                    outcome: "failed",
                    current: cred.current_version,
                    reason: Some(format!("{why}; nothing was changed on the target")),
                    success: false,
                },
                Err(Ok(why)) => {
                    self.settle(
                        &target,
                        account,
                        plan,
                        &old,
                        &new,
                        cred.current_version,
                        version,
                        why,
                    )
                    .await
                }
            }
        };
        self.end_attempt(actor, &cred, plan.method.as_str(), trigger, version, ending)
            .await
    }

    /// After a failed apply or verify: which secret does the target take? The old one stays
    /// current if it logs in; the new one becomes current if only it does; where the target took
    /// the new one but neither logs in, the old one is set back through the privileged account.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        target: &Target,
        account: &str,
        plan: &Plan,
        old: &Plain,
        new: &Plain,
        old_version: i64,
        new_version: i64,
        why: String,
    ) -> Ending {
        if self.logs_in(target, account, old).await {
            return Ending {
                outcome: "failed",
                current: old_version,
                reason: Some(format!(
                    "{why}; the old secret still logs in and stays current"
                )),
                success: false,
            };
        }
        if self.logs_in(target, account, new).await {
            return Ending {
                outcome: "rotated",
                current: new_version,
                reason: Some(format!(
                    "{why}; the new secret logs in on a second try and is current"
                )),
                success: true,
            };
        }
        if plan.as_account.is_some() && plan.method != Method::Passwd {
            // Through the privileged account: set the old secret back (new → old).
            return match self.apply(target, account, plan, new, old).await {
                Ok(()) => Ending {
                    outcome: "failed",
                    current: old_version,
                    reason: Some(format!(
                        "{why}; the old secret was set back through {} and stays current",
                        plan.as_account.as_deref().unwrap_or("")
                    )),
                    success: false,
                },
                Err(e) => Ending {
                    outcome: "unresolved",
                    current: old_version,
                    reason: Some(format!(
                        "{why}; setting the old secret back failed too: {}",
                        e.message
                    )),
                    success: false,
                },
            };
        }
        Ending {
            outcome: "unresolved",
            current: old_version,
            reason: Some(format!("{why}; neither the old nor the new secret logs in")),
            success: false,
        }
    }

    async fn end_attempt(
        &self,
        actor: &str,
        cred: &CredentialRow,
        method: &str,
        trigger: &str,
        attempted: i64,
        e: Ending,
    ) -> Result<RotationResult> {
        let object = format!("credential:{}/{}", cred.target, cred.account);
        let now = self.now();
        let at = now.unix_timestamp();
        let failures = self
            .store
            .rotation(cred.id)
            .await?
            .map_or(0, |r| r.failures);
        let retry = (!e.success && trigger != "manual").then(|| at + backoff_seconds(failures));
        let mut tx = self.store.write().await?;
        if e.outcome == "unresolved" {
            tx.leave_rotation_pending(
                cred.id,
                at,
                e.reason.as_deref().unwrap_or(""),
                at + backoff_seconds(failures),
            )
            .await?;
        } else {
            if e.current != cred.current_version {
                tx.make_version_current(cred.id, e.current, &super::timestamp(now), actor)
                    .await?;
            }
            tx.end_rotation(
                cred.id,
                &RotationEnd {
                    at,
                    trigger,
                    method,
                    outcome: e.outcome,
                    reason: e.reason.as_deref(),
                    success: e.success,
                    retry_at: retry,
                },
            )
            .await?;
        }
        let mut entry = NewAuditEntry::new(actor, "credential.rotate", object.as_str())
            .outcome(e.outcome)
            .detail("trigger", trigger)
            .detail("method", method)
            .detail("version", e.current)
            .detail("attempted_version", attempted);
        if let Some(r) = &e.reason {
            entry = entry.detail("reason", r.as_str());
        }
        self.commit(tx, entry).await?;
        self.breakglass_changed();
        if e.success {
            metrics::counter!("cofre_rotations_total", "outcome" => "rotated").increment(1);
            tracing::info!(credential = %object, version = e.current, trigger, method, "credential rotated");
        } else {
            self.rotation_alert(
                &object,
                e.outcome,
                trigger,
                method,
                e.reason.as_deref().unwrap_or(""),
            );
        }
        Ok(RotationResult {
            target: cred.target.clone(),
            account: cred.account.clone(),
            outcome: e.outcome.into(),
            version: e.current,
            attempted_version: Some(attempted),
            method: method.into(),
            trigger: trigger.into(),
            reason: e.reason,
        })
    }

    /// A failed rotation or a drifted credential: an error log line, the metric, the webhook (the
    /// audit entry is written with the outcome).
    fn rotation_alert(
        &self,
        credential: &str,
        outcome: &str,
        trigger: &str,
        method: &str,
        reason: &str,
    ) {
        tracing::error!(
            credential,
            outcome,
            trigger,
            method,
            reason,
            "ALERT: credential rotation did not succeed"
        );
        metrics::counter!("cofre_rotation_failures_total", "outcome" => outcome.to_owned())
            .increment(1);
        if let Some(url) = self.config.alerts.webhook_url.clone() {
            let body = serde_json::json!({
                "event": if outcome == "drift" { "credential.drift" } else { "credential.rotate_failed" },
                "instance": self.instance_id(),
                "credential": credential,
                "outcome": outcome,
                "trigger": trigger,
                "method": method,
                "reason": reason,
                "at": self.now_text(),
            });
            tokio::spawn(super::backups::send_webhook(url, body));
        }
    }

    /// A rotation cut short (crash, or a node whose lease ran out): whichever secret the target
    /// takes becomes (or stays) current.
    async fn resolve_pending(&self, r: &RotationRow) -> Result<Option<RotationResult>> {
        let Some(pending) = r.pending_version else {
            return Ok(None);
        };
        let now = self.now().unix_timestamp();
        let mine = r.lease_owner.as_deref() == Some(self.node_id().as_str());
        if !mine && r.lease_until.is_some_and(|u| u >= now) {
            return Ok(None);
        }
        let cred = self.live_credential(&r.target, &r.account).await?;
        let target = self.target_of(&r.target).await?;
        let new = self.version_secret(cred.id, pending).await?;
        let (_, old) = self.current_secret(&r.target, &r.account).await?;
        let method = r.pending_method.clone().unwrap_or_else(|| "unknown".into());
        let trigger = r.pending_trigger.clone().unwrap_or_else(|| "manual".into());
        let ending = if pending > cred.current_version
            && self.logs_in(&target, &r.account, &new).await
        {
            Ending {
                outcome: "recovered",
                current: pending,
                reason: Some("a rotation was cut short after the change; the new secret logs in and is current".into()),
                success: true,
            }
        } else if self.logs_in(&target, &r.account, &old).await {
            Ending {
                outcome: "recovered",
                current: cred.current_version,
                reason: Some("a rotation was cut short before the change took; the old secret logs in and stays current".into()),
                success: false,
            }
        } else {
            Ending {
                outcome: "unresolved",
                current: cred.current_version,
                reason: Some(
                    "a rotation was cut short; neither the old nor the new secret logs in".into(),
                ),
                success: false,
            }
        };
        // Someone else may have resolved it meanwhile: only the row as read is ended.
        let still = self
            .store
            .rotation(cred.id)
            .await?
            .is_some_and(|now| now.pending_version == Some(pending));
        if !still {
            return Ok(None);
        }
        self.end_attempt("system", &cred, &method, &trigger, pending, ending)
            .await
            .map(Some)
    }
}

impl Vault<'_> {
    /// `credential verify`: does the vaulted secret still log in? Drift is alerted, and where a
    /// reconcile account is set (`--as`), reset to a new vaulted secret through it.
    pub async fn verify_credential(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
    ) -> Result<VerifyResult> {
        who.require(Action::ManageTargets)?;
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        self.live_credential(target, account).await?;
        self.verify_as(&who.username, target, account).await
    }
}

impl App {
    async fn verify_as(&self, actor: &str, target: &str, account: &str) -> Result<VerifyResult> {
        let (cred, secret) = self.current_secret(target, account).await?;
        let t = self.target_of(target).await?;
        let result = self.target_login(&t, account, &secret).await;
        let (outcome, reason) = match result {
            Ok(c) => {
                c.disconnect("verified").await;
                ("ok", None)
            }
            Err(e) => ("drift", Some(scrub(&e, &[secret.text()]))),
        };
        let mut tx = self.store.write().await?;
        tx.record_verify(cred.id, self.now().unix_timestamp(), outcome)
            .await?;
        let mut entry = NewAuditEntry::new(
            actor,
            "credential.verify",
            format!("credential:{target}/{account}"),
        )
        .outcome(outcome)
        .detail("version", cred.current_version);
        if let Some(r) = &reason {
            entry = entry.detail("reason", r.as_str());
        }
        self.commit(tx, entry).await?;
        let mut reconciled = None;
        if outcome == "drift" {
            self.rotation_alert(
                &format!("credential:{target}/{account}"),
                "drift",
                "verify",
                "",
                reason.as_deref().unwrap_or(""),
            );
            let settings = self.store.rotation(cred.id).await?;
            if let Some(s) = settings.as_ref().filter(|s| s.as_account.is_some()) {
                let plan = self.plan_with_template(&cred, Some(s), None, None).await?;
                if plan.method != Method::Passwd && s.pending_version.is_none() {
                    reconciled = Some(self.run_rotation(actor, &cred, &plan, "reconcile").await?);
                }
            }
        }
        Ok(VerifyResult {
            target: target.to_owned(),
            account: account.to_owned(),
            version: reconciled
                .as_ref()
                .map_or(cred.current_version, |r| r.version),
            outcome: outcome.into(),
            reason,
            reconciled,
        })
    }

    /// One scheduler round: cut-short rotations resolved, verifies and rotations that are due
    /// run (a rotation waits while a session on its credential is live).
    async fn rotation_round(&self) -> Result<()> {
        if self.is_sealed() {
            return Ok(());
        }
        let now = self.now().unix_timestamp();
        for (id, target, account) in self.store.rotations_after_grant(now).await? {
            let mut tx = self.store.write().await?;
            tx.mark_rotation_due(id, now, "grant", None, None).await?;
            self.commit(
                tx,
                NewAuditEntry::new(
                    "system",
                    "credential.rotation_due",
                    format!("credential:{target}/{account}"),
                )
                .detail("trigger", "grant"),
            )
            .await?;
        }
        for r in self.store.rotations_due(now).await? {
            let name = format!("{}/{}", r.target, r.account);
            if r.pending_version.is_some() {
                if let Err(e) = self.resolve_pending(&r).await {
                    tracing::error!(credential = %name, error = %e, "cannot resolve a pending rotation");
                }
                continue;
            }
            if r.verify_every_seconds
                .is_some_and(|v| r.last_verify_at.unwrap_or(0) + v <= now)
            {
                if let Err(e) = self.verify_as("system", &r.target, &r.account).await {
                    tracing::error!(credential = %name, error = %e, "scheduled verify failed");
                }
            }
            if next_rotation_at(&r).is_none_or(|at| at > now) {
                continue;
            }
            if self.store.live_sessions_on(&r.target, &r.account).await? > 0 {
                continue;
            }
            let trigger = r.due_trigger.clone().unwrap_or_else(|| {
                if r.retry_at.is_some() {
                    "retry"
                } else {
                    "schedule"
                }
                .into()
            });
            let Ok(cred) = self.live_credential(&r.target, &r.account).await else {
                continue;
            };
            let plan = match self
                .plan_with_template(
                    &cred,
                    Some(&r),
                    r.due_method.as_deref(),
                    r.due_as.as_deref(),
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(credential = %name, error = %e, "rotation settings do not fit the credential");
                    continue;
                }
            };
            match self.run_rotation("system", &cred, &plan, &trigger).await {
                Ok(result) => {
                    tracing::info!(credential = %name, outcome = %result.outcome, trigger, "scheduled rotation")
                }
                Err(e) => {
                    tracing::error!(credential = %name, error = %e, "scheduled rotation failed")
                }
            }
        }
        Ok(())
    }
}

fn in_progress(target: &str, account: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        ErrorCode::RotationInProgress,
        format!("a rotation of {target}/{account} is already in progress"),
    )
}

fn duration_text(seconds: i64) -> String {
    if seconds % 86_400 == 0 {
        format!("{}d", seconds / 86_400)
    } else if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

fn policy_info(p: &PasswordPolicy) -> PasswordPolicyInfo {
    PasswordPolicyInfo {
        length: u32::try_from(p.length).unwrap_or(u32::MAX),
        classes: p
            .classes
            .iter()
            .map(|c: &Class| c.as_str().to_owned())
            .collect(),
        exclude: p.exclude.clone(),
        entropy_bits: p.entropy_bits().floor() as u32,
    }
}

/// The node's identity for leases, kept in the data dir so that a restarted node knows the
/// rotations it had in flight.
fn load_node_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = cofre_crypto::files::write_private_file(&path, id.as_bytes()) {
        tracing::warn!(error = %e, "cannot keep the node id; rotations cut short by a crash are resolved once their lease runs out");
    }
    id
}

/// Resolves this node's rotations cut short by a crash, then runs the scheduler. It holds the
/// app weakly and ends when the app is gone.
pub async fn start(app: &Arc<App>) {
    let _ = app.rotation.app.set(Arc::downgrade(app));
    let dir = app.config.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || load_node_id(&dir))
        .await
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
    let _ = app.rotation.node.set(node.clone());
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        // Before anything else: this node's own rotations that a crash cut short.
        if let Some(app) = weak.upgrade() {
            while app.is_sealed() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match app.store.rotations_pending_of(&node).await {
                Ok(rows) => {
                    for r in rows {
                        if let Err(e) = app.resolve_pending(&r).await {
                            tracing::error!(credential = %format!("{}/{}", r.target, r.account), error = %e, "cannot resolve a rotation cut short");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the rotations cut short"),
            }
        }
        loop {
            let Some(app) = weak.upgrade() else { return };
            if let Err(e) = app.rotation_round().await {
                tracing::error!(error = %e, "rotation scheduler round failed");
            }
            let state = app.rotation.clone();
            drop(app);
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = state.wake.notified() => {}
            }
        }
    });
}

/// An optional duration setting: absent or blank is none, anything else must parse.
fn optional_duration(field: &str, value: Option<&str>) -> Result<Option<i64>> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => Ok(Some(cofre_core::when::parse_duration(field, v)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_back_off_holds_the_schedule_and_the_triggers() {
        let scheduled = RotationRow {
            every_seconds: Some(30),
            last_success_at: Some(1000),
            ..RotationRow::default()
        };
        assert_eq!(next_rotation_at(&scheduled), Some(1030));
        let asked = RotationRow {
            due_at: Some(1010),
            ..scheduled.clone()
        };
        assert_eq!(next_rotation_at(&asked), Some(1010));
        let failed = RotationRow {
            retry_at: Some(1100),
            ..asked
        };
        assert_eq!(next_rotation_at(&failed), Some(1100));
        assert_eq!(next_rotation_at(&RotationRow::default()), None);
        assert_eq!(backoff_seconds(0), 60);
        assert_eq!(backoff_seconds(1), 120);
        assert_eq!(backoff_seconds(40), 3600);
    }
}
