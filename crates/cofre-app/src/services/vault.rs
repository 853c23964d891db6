//! Targets, credentials and policies, and the one place where a secret leaves the vault: reveal.

use super::governance::{Applied, Change, Output};
use super::requests::UseRefused;
use super::Vault;
use super::{page_limit, paginate, App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::{check_account, check_host, check_identifier, check_text};
use cofre_core::policy::{
    check_reason, parse_duration_minutes, Access, Limits, Outcome, Policy, TargetRef,
    TargetSelector, Window,
};
use cofre_core::role::Action;
use cofre_crypto::{envelope, SealedSecret};
use cofre_proto::{
    CreatePolicyRequest, CreateTargetRequest, CredentialInfo, CredentialVersionInfo, Page,
    PolicyInfo, PolicyLimits, RevealRequest, RevealResponse, SecretString, TargetInfo,
};
use cofre_store::credentials::{CredentialRow, NewVersion};
use cofre_store::policies::PolicyRow;
use cofre_store::targets::{NewTarget, TargetRow};

const MAX_SECRET_BYTES: usize = 16 * 1024;
const MAX_REASON_CHARS: usize = 500;

fn target_info(t: TargetRow) -> TargetInfo {
    TargetInfo {
        name: t.name,
        host: t.host,
        port: u16::try_from(t.port).unwrap_or(0),
        protocol: t.protocol,
        tags: t.tags,
        created_at: t.created_at,
        disabled: t.disabled_at.is_some(),
    }
}

fn credential_info(c: CredentialRow) -> CredentialInfo {
    CredentialInfo {
        target: c.target,
        account: c.account,
        kind: c.kind,
        version: c.current_version,
        disabled: c.disabled_at.is_some() || c.target_disabled_at.is_some(),
        updated_at: c.updated_at,
        updated_by: c.updated_by,
    }
}

/// A short hash of what a policy says (not its name or creation), so an edit made from an older
/// read can be told from one made from the current one without a counter in the schema. The same
/// content gives the same version: an edit from a form of identical content loses nothing.
pub(crate) fn policy_version(p: &PolicyRow) -> String {
    use sha2::Digest;
    let canonical = serde_json::json!([p.group, p.targets, p.access, p.outcome, p.limits]);
    let digest = sha2::Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..8])
}

pub(crate) fn policy_info(p: PolicyRow) -> PolicyInfo {
    PolicyInfo {
        version: policy_version(&p),
        limits: serde_json::from_str(&p.limits).unwrap_or_default(),
        name: p.name,
        group: p.group,
        targets: p.targets,
        allow: p.access,
        outcome: p.outcome,
        created_at: p.created_at,
    }
}

/// The stored limits (the API's form, already validated when stored) as the core's.
fn limits_from(l: &PolicyLimits) -> std::result::Result<Limits, cofre_core::FieldError> {
    let mut out = Limits::default();
    if let Some(d) = &l.days {
        out.window.days = Some(Window::parse_days("days", d)?);
    }
    if let Some(h) = &l.hours {
        out.window.hours = Some(Window::parse_hours("hours", h)?);
    }
    if let Some(d) = &l.from {
        out.window.from = Some(Window::parse_date("from", d)?);
    }
    if let Some(d) = &l.until {
        out.window.until = Some(Window::parse_date("until", d)?);
    }
    if let Some(levels) = &l.levels {
        out.levels = cofre_core::approval::parse_levels("levels", levels)?;
    }
    if let Some(m) = &l.max_duration {
        out.max_duration_minutes = Some(parse_duration_minutes("max_duration", m)?);
    }
    out.emergency = l.emergency;
    out.moderated = l.moderated;
    if let Some(n) = &l.networks {
        out.networks = cofre_core::network::parse_networks("networks", n)?;
    }
    Ok(out)
}

/// The stored form back into the core's policy; a row that no longer parses is skipped (and logged)
/// rather than widening anything.
pub(crate) fn policy_from_row(p: &PolicyRow) -> Option<Policy> {
    let targets: Result<Vec<_>, _> = p
        .targets
        .iter()
        .map(|t| TargetSelector::parse("targets", t))
        .collect();
    let access: Option<Vec<_>> = p.access.iter().map(|a| Access::parse(a)).collect();
    let limits = serde_json::from_str::<PolicyLimits>(&p.limits)
        .ok()
        .and_then(|l| limits_from(&l).ok());
    match (targets, access, Outcome::parse(&p.outcome), limits) {
        (Ok(targets), Some(access), Some(outcome), Some(limits)) => Some(Policy {
            name: p.name.clone(),
            group: p.group.clone(),
            targets,
            access,
            outcome,
            limits,
        }),
        _ => {
            tracing::warn!(policy = %p.name, "stored policy does not parse; ignored");
            None
        }
    }
}

/// A private key the gateway can log in with, unattended: read by the same parser the gateway
/// uses, so a key it cannot use is refused when it is added, not when a session starts. The
/// messages are fixed: a parser's error could quote part of the key.
fn check_private_key(value: &str) -> Result<()> {
    match russh::keys::decode_secret_key(value, None) {
        Ok(_) => Ok(()),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(Error::invalid(
            "private_key",
            "private_key: the key is protected by a passphrase, which nobody is there to type \
             when the gateway logs in; store a copy without one (ssh-keygen -p -N '' -f COPY)",
        )),
        Err(_) => Err(Error::invalid(
            "private_key",
            "private_key: not a private key in OpenSSH, PEM or PuTTY format",
        )),
    }
}

/// Exactly one of password / private key, bounded, as (kind, bytes).
fn secret_input<'a>(
    password: Option<&'a SecretString>,
    private_key: Option<&'a SecretString>,
) -> Result<(&'static str, &'a str)> {
    let (kind, field, value) = match (password, private_key) {
        (Some(p), None) => ("password", "password", p.expose()),
        (None, Some(k)) => ("private_key", "private_key", k.expose()),
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "password",
                "give either password or private_key, not both",
            ))
        }
        (None, None) => {
            return Err(Error::invalid(
                "password",
                "password or private_key is required",
            ))
        }
    };
    if value.is_empty() {
        return Err(Error::invalid(field, format!("{field}: must not be empty")));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(Error::invalid(
            field,
            format!("{field}: must be at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    if kind == "private_key" {
        check_private_key(value)?;
    }
    Ok((kind, value))
}

/// Why a credential may not be used now, if it may not: its target or itself is disabled. The
/// first is what the audit entry says, the second what the caller is told.
pub(crate) fn disabled_refusal(c: &CredentialRow) -> Option<(&'static str, Error)> {
    if c.target_disabled_at.is_some() {
        Some((
            "target disabled",
            Error::new(
                ErrorKind::Forbidden,
                ErrorCode::TargetDisabled,
                format!(
                    "target {} is disabled; an admin can enable it with `cofre target enable {}`",
                    c.target, c.target
                ),
            ),
        ))
    } else if c.disabled_at.is_some() {
        Some((
            "credential disabled",
            Error::new(
                ErrorKind::Forbidden,
                ErrorCode::CredentialDisabled,
                format!(
                    "credential {t}/{a} is disabled; an admin can enable it with `cofre credential enable {t} {a}`",
                    t = c.target,
                    a = c.account
                ),
            ),
        ))
    } else {
        None
    }
}

pub(crate) fn secret_aad(credential_id: i64, version: i64) -> String {
    format!("cofre:credential:{credential_id}:v{version}")
}

impl App {
    /// `secret` sealed as version `version` of credential `credential_id` stores it, for a
    /// bulk loader that writes credential rows in its own transaction (`cofre-bench console`
    /// seeding ten thousand of them); the services seal their own.
    pub fn seal_credential_secret(
        &self,
        credential_id: i64,
        version: i64,
        secret: &[u8],
    ) -> Result<SealedSecret> {
        self.with_master(|mk| {
            envelope::seal(mk, secret, secret_aad(credential_id, version).as_bytes())
        })?
        .map_err(|e| Error::internal("sealing the secret", e))
    }
}

impl Vault<'_> {
    pub async fn create_target(
        &self,
        who: &Principal,
        req: &CreateTargetRequest,
    ) -> Result<TargetInfo> {
        who.require(Action::ManageTargets)?;
        check_identifier("name", &req.name)?;
        check_host("host", &req.host)?;
        let port = req.port.unwrap_or(22);
        if port == 0 {
            return Err(Error::invalid("port", "port: must be between 1 and 65535"));
        }
        let protocol = req.protocol.as_deref().unwrap_or("ssh");
        if protocol != "ssh" {
            return Err(Error::invalid(
                "protocol",
                "protocol: only `ssh` is supported",
            ));
        }
        let mut tags = req.tags.clone();
        for t in &tags {
            check_identifier("tags", t)?;
        }
        tags.sort();
        tags.dedup();
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        tx.insert_target(NewTarget {
            name: &req.name,
            host: &req.host,
            port: i64::from(port),
            protocol,
            tags: &tags,
            created_at: &now,
        })
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "target.create",
                format!("target:{}", req.name),
            )
            .detail("host", req.host.as_str())
            .detail("port", port)
            .detail("tags", tags.clone()),
        )
        .await?;
        self.breakglass_changed();
        Ok(TargetInfo {
            name: req.name.clone(),
            host: req.host.clone(),
            port,
            protocol: protocol.to_owned(),
            tags,
            created_at: now,
            disabled: false,
        })
    }
}

impl App {
    /// Policies of the principal's groups, parsed.
    async fn policies_of(&self, who: &Principal) -> Result<Vec<Policy>> {
        self.vault().policies_of_groups(&who.groups).await
    }
}

impl Vault<'_> {
    pub(crate) async fn policies_of_groups(&self, groups: &[String]) -> Result<Vec<Policy>> {
        let rows = self.store.policies_for_groups(groups).await?;
        Ok(rows.iter().filter_map(policy_from_row).collect())
    }
}

impl App {
    /// Whether `who` may see a target: admins see all, others what some policy of theirs covers.
    fn may_see(who: &Principal, policies: &[Policy], t: &TargetRow) -> bool {
        who.role == cofre_core::role::Role::Admin
            || policies.iter().any(|p| {
                p.covers(
                    &who.groups,
                    &TargetRef {
                        name: &t.name,
                        tags: &t.tags,
                    },
                )
            })
    }
}

impl Vault<'_> {
    pub async fn list_targets(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<TargetInfo>> {
        who.require(Action::ListTargets)?;
        let limit = page_limit(limit)?;
        let policies = self.policies_of(who).await?;
        let admin = who.role == cofre_core::role::Role::Admin;
        // A page holds `limit` targets the viewer may see, however sparse they are among all
        // (a user whose policies cover 1% of ten thousand targets would otherwise page through
        // a hundred nearly empty pages). What one page scans is bounded: a page cut short by
        // the bound carries the cursor of the last target scanned, so nothing is skipped.
        let chunk = if admin {
            limit + 1
        } else {
            ((limit + 1) * 4).min(500)
        };
        let budget = usize::try_from(limit * TARGET_SCAN_PER_ITEM).unwrap_or(usize::MAX);
        let mut items: Vec<TargetInfo> = Vec::new();
        let mut after = cursor.map(str::to_owned);
        let mut scanned = 0;
        loop {
            let rows = self.store.targets_page(after.as_deref(), chunk).await?;
            let exhausted = (rows.len() as i64) < chunk;
            for t in rows {
                scanned += 1;
                let name = t.name.clone();
                if App::may_see(who, &policies, &t) {
                    if items.len() as i64 == limit {
                        let next_cursor = items.last().map(|i| i.name.clone());
                        return Ok(Page { items, next_cursor });
                    }
                    items.push(target_info(t));
                }
                after = Some(name);
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
            if scanned >= budget {
                return Ok(Page {
                    items,
                    next_cursor: after,
                });
            }
        }
    }
}

/// How many targets one page of `list_targets` looks at, at most, per item it may hold (5,000
/// for a page of 100), for a viewer who sees few.
const TARGET_SCAN_PER_ITEM: i64 = 50;

impl App {
    async fn visible_target(&self, who: &Principal, name: &str) -> Result<TargetRow> {
        let not_found = || Error::not_found(format!("target {name}"));
        let target = self
            .store
            .target_by_name(name)
            .await?
            .ok_or_else(not_found)?;
        let policies = self.policies_of(who).await?;
        if App::may_see(who, &policies, &target) {
            Ok(target)
        } else {
            Err(not_found())
        }
    }
}

impl Vault<'_> {
    pub async fn get_target(&self, who: &Principal, name: &str) -> Result<TargetInfo> {
        who.require(Action::ListTargets)?;
        Ok(target_info(self.visible_target(who, name).await?))
    }

    pub async fn list_credentials(
        &self,
        who: &Principal,
        target: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<CredentialInfo>> {
        who.require(Action::ListTargets)?;
        self.visible_target(who, target).await?;
        let limit = page_limit(limit)?;
        let rows = self
            .store
            .credentials_page(target, cursor, limit + 1)
            .await?;
        Ok(paginate(
            rows,
            limit,
            |c| c.account.clone(),
            credential_info,
        ))
    }

    /// Adds a credential (version 1) or, with `must_exist`, a new version of an existing one.
    pub async fn put_credential(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        password: Option<&SecretString>,
        private_key: Option<&SecretString>,
        must_exist: bool,
    ) -> Result<CredentialInfo> {
        who.require(Action::ManageTargets)?;
        check_account("account", account)?;
        let (kind, secret) = secret_input(password, private_key)?;
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        let (credential_id, version) = match tx.credential_for_update(target, account).await? {
            Some(_) if !must_exist => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    ErrorCode::Conflict,
                    format!("credential {target}/{account} already exists; use `cofre credential update` for a new version"),
                ))
            }
            // Past pending rotation versions too, which are stored but not current.
            Some((id, _)) => (id, tx.next_credential_version(id).await?),
            None if must_exist => {
                return Err(Error::not_found(format!("credential {target}/{account}")))
            }
            None => {
                let target_id = tx
                    .target_id(target)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("target {target}")))?;
                let id = tx
                    .insert_credential(target_id, target, account, kind, &now, &who.username)
                    .await?;
                (id, 1)
            }
        };
        let sealed = self
            .with_master(|mk| {
                envelope::seal(
                    mk,
                    secret.as_bytes(),
                    secret_aad(credential_id, version).as_bytes(),
                )
            })?
            .map_err(|e| Error::internal("sealing the secret", e))?;
        tx.add_credential_version(
            credential_id,
            version,
            NewVersion {
                kind,
                wrapped_key: &sealed.wrapped_key,
                ciphertext: &sealed.ciphertext,
                created_at: &now,
                created_by: &who.username,
            },
        )
        .await?;
        let action = if version == 1 {
            "credential.create"
        } else {
            "credential.update"
        };
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                action,
                format!("credential:{target}/{account}"),
            )
            .detail("version", version)
            .detail("kind", kind),
        )
        .await?;
        self.breakglass_changed();
        Ok(CredentialInfo {
            target: target.to_owned(),
            account: account.to_owned(),
            kind: kind.to_owned(),
            version,
            updated_at: now,
            updated_by: who.username.clone(),
            disabled: false,
        })
    }

    pub async fn list_credential_versions(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<CredentialVersionInfo>> {
        who.require(Action::ViewCredentialHistory)?;
        let limit = page_limit(limit)?;
        let before = match cursor {
            None => i64::MAX,
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid("cursor", "cursor: not a cursor from this list"))?,
        };
        let cred = self
            .store
            .credential(target, account)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        let rows = self
            .store
            .credential_versions(cred.id, before, limit + 1)
            .await?;
        Ok(paginate(
            rows,
            limit,
            |v| v.version.to_string(),
            |v| CredentialVersionInfo {
                current: v.version == cred.current_version,
                version: v.version,
                kind: v.kind,
                created_at: v.created_at,
                created_by: v.created_by,
            },
        ))
    }

    /// Returns a secret if policy allows, after its audit entry is committed.
    pub async fn reveal(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        req: &RevealRequest,
    ) -> Result<RevealResponse> {
        who.require(Action::UseCredentials)?;
        if let Some(reason) = &req.reason {
            check_text("reason", reason, MAX_REASON_CHARS)?;
        }
        let object = format!("credential:{target}/{account}");
        // The secret's row comes first (one query on the hot path) but is opened only after the
        // policy said yes. Without it, look the target up: a user without a policy gets a refusal
        // that says so (and is audited), not a puzzling "not found".
        let found = self
            .store
            .credential_to_reveal(target, account, req.version)
            .await?;
        let tags = match &found {
            Some(s) => s.tags.clone(),
            None => {
                self.store
                    .target_by_name(target)
                    .await?
                    // The same answer as a target no policy grants: names cannot be probed.
                    .ok_or_else(|| UseRefused::NoPolicy.error(target, account, Access::Reveal))?
                    .tags
            }
        };
        let allowed = match self
            .approvals()
            .authorise_use(who, target, &tags, account, Access::Reveal)
            .await?
        {
            Ok(a) => a,
            Err(refused) => {
                let mut entry = NewAuditEntry::new(&who.username, "credential.reveal", &*object)
                    .outcome("denied")
                    .detail("why", refused.audit_why(Access::Reveal));
                if let Some(p) = refused.policy() {
                    entry = entry.detail("policy", p);
                }
                self.record(entry).await?;
                return Err(refused.error(target, account, Access::Reveal));
            }
        };
        if allowed.grant.is_none() {
            check_reason(allowed.outcome, req.reason.as_deref())?;
        }
        let policy = allowed.policy;
        let (cred, row, rotate) = match found {
            Some(s) => (s.credential, s.version, s.rotate_after_reveal),
            None => {
                return Err(match req.version {
                    Some(v) if self.store.credential(target, account).await?.is_some() => {
                        Error::not_found(format!("version {v} of {target}/{account}"))
                            .with_field("version")
                    }
                    _ => Error::not_found(format!("credential {target}/{account}")),
                })
            }
        };
        if let Some((why, error)) = disabled_refusal(&cred) {
            self.record(
                NewAuditEntry::new(&who.username, "credential.reveal", &*object)
                    .outcome("denied")
                    .detail("why", why),
            )
            .await?;
            return Err(error);
        }
        let version = row.version;
        let sealed = SealedSecret {
            wrapped_key: row.wrapped_key,
            ciphertext: row.ciphertext,
        };
        let plain = self
            .with_master(|mk| envelope::open(mk, &sealed, secret_aad(cred.id, version).as_bytes()))?
            .map_err(|e| Error::internal("opening the secret", e))?;
        let secret = String::from_utf8(plain.to_vec())
            .map_err(|_| Error::internal("opening the secret", "not UTF-8"))?;
        let mut entry = NewAuditEntry::new(&who.username, "credential.reveal", object)
            .detail("version", version)
            .detail("policy", policy);
        if let Some(reason) = &req.reason {
            entry = entry.detail("reason", reason.as_str());
        }
        if let Some(g) = &allowed.grant {
            entry = entry
                .detail("request", g.id.as_str())
                .detail("request_reason", g.reason.as_str());
        }
        self.record(entry).await?;
        metrics::counter!("cofre_reveals_total").increment(1);
        // A secret someone has seen should not stay valid, where the credential is set so (read
        // with the secret, so a credential without it costs no further query).
        if rotate {
            self.rotation_after_use(target, account, "reveal").await;
        }
        Ok(RevealResponse {
            target: target.to_owned(),
            account: account.to_owned(),
            kind: row.kind,
            version,
            secret: SecretString::new(secret),
        })
    }

    /// Creates a policy; one that grants what its group's policies do not grant yet is
    /// dual-controlled.
    pub async fn create_policy(
        &self,
        who: &Principal,
        req: &CreatePolicyRequest,
    ) -> Result<Applied<PolicyInfo>> {
        who.require(Action::ManagePolicies)?;
        let change = Change::PolicyCreate {
            policy: req.clone(),
        };
        self.approvals()
            .propose_change(who, change)
            .await?
            .map(|o| match o {
                Output::Policy(p) => Ok(p),
                _ => Err(Error::internal("creating a policy", "unexpected output")),
            })
    }

    /// One policy as it stands, with the version an edit must name.
    pub async fn get_policy(&self, who: &Principal, name: &str) -> Result<PolicyInfo> {
        who.require(Action::ViewPolicies)?;
        check_identifier("name", name)?;
        self.store
            .policy_by_name(name)
            .await?
            .map(policy_info)
            .ok_or_else(|| Error::not_found(format!("policy {name}")))
    }

    /// Replaces what the policy `name` says with `req` (every option, as for adding), if
    /// `version` is still its version (else 409 `stale_version`). An edit that widens access, old
    /// against new (`cofre_core::governance::policy_edit_widens`), is dual-controlled; one that
    /// only narrows applies at once.
    pub async fn update_policy(
        &self,
        who: &Principal,
        name: &str,
        version: Option<&str>,
        req: &CreatePolicyRequest,
    ) -> Result<Applied<PolicyInfo>> {
        who.require(Action::ManagePolicies)?;
        check_identifier("name", name)?;
        let version = version
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                "version",
                "version: the version of the policy the edit was made from (`policy list`), so \
                 that an edit made meanwhile by someone else is not overwritten",
            )
            })?;
        if req.name != name {
            return Err(Error::invalid(
                "name",
                format!("name: {:?} differs from the policy edited ({name}); a policy keeps its name (add a new one and remove this one to rename)", req.name),
            ));
        }
        let change = Change::PolicyUpdate {
            policy: req.clone(),
            version: version.to_owned(),
        };
        self.approvals()
            .propose_change(who, change)
            .await?
            .map(|o| match o {
                Output::Policy(p) => Ok(p),
                _ => Err(Error::internal("editing a policy", "unexpected output")),
            })
    }

    /// Validates a proposed policy into the row that would be stored (canonical form).
    pub(crate) async fn prepare_policy(&self, req: &CreatePolicyRequest) -> Result<PolicyRow> {
        check_identifier("name", &req.name)?;
        check_identifier("group", &req.group)?;
        if req.targets.is_empty() {
            return Err(Error::invalid(
                "targets",
                "targets: at least one selector ('*', 'tag:TAG' or a target name)",
            ));
        }
        let mut targets = Vec::new();
        for t in &req.targets {
            targets.push(TargetSelector::parse("targets", t)?.to_string());
        }
        if req.allow.is_empty() {
            return Err(Error::invalid(
                "allow",
                "allow: at least one of session, reveal, invite",
            ));
        }
        let mut access = Vec::new();
        for a in &req.allow {
            let a = Access::parse(a).ok_or_else(|| {
                Error::invalid(
                    "allow",
                    format!("allow: {a:?} is not one of session, reveal, invite"),
                )
            })?;
            access.push(a.as_str().to_owned());
        }
        access.sort();
        access.dedup();
        let outcome = Outcome::parse(&req.outcome).ok_or_else(|| {
            Error::invalid("outcome", "outcome: must be one of allow, justify, approve")
        })?;
        if !self.store.group_exists(&req.group).await? {
            return Err(Error::invalid(
                "group",
                format!("group: {} does not exist (create it with `cofre group add` or `cofre user add --group`)", req.group),
            ));
        }
        let limits = PolicyLimits {
            levels: req.levels.clone().filter(|s| !s.trim().is_empty()),
            max_duration: req.max_duration.clone().filter(|s| !s.trim().is_empty()),
            hours: req.hours.clone().filter(|s| !s.trim().is_empty()),
            days: req.days.clone().filter(|s| !s.trim().is_empty()),
            from: req.from.clone().filter(|s| !s.trim().is_empty()),
            until: req.until.clone().filter(|s| !s.trim().is_empty()),
            emergency: req.emergency,
            moderated: req.moderated,
            networks: (!req.networks.is_empty()).then(|| req.networks.clone()),
        };
        let parsed = limits_from(&limits)?;
        // Stored in canonical form, so what `policy list` shows is what is enforced.
        let limits = PolicyLimits {
            levels: (!parsed.levels.is_empty())
                .then(|| cofre_core::approval::levels_text(&parsed.levels)),
            max_duration: limits.max_duration.map(|m| m.trim().to_owned()),
            hours: parsed.window.hours.map(Window::hours_text),
            days: parsed.window.days.map(Window::days_text),
            from: parsed.window.from.map(|d| d.to_string()),
            until: parsed.window.until.map(|d| d.to_string()),
            emergency: parsed.emergency,
            moderated: parsed.moderated,
            networks: (!parsed.networks.is_empty())
                .then(|| cofre_core::network::to_strings(&parsed.networks)),
        };
        if let (Some(from), Some(until)) = (parsed.window.from, parsed.window.until) {
            if from > until {
                return Err(Error::invalid("until", "until: comes before from"));
            }
        }
        match outcome {
            Outcome::Approve if parsed.levels.is_empty() => return Err(Error::invalid(
                "levels",
                "levels: an approve policy names who approves, e.g. --levels leads:1,security:1",
            )),
            Outcome::Allow | Outcome::Justify if !parsed.levels.is_empty() || parsed.emergency => {
                return Err(Error::invalid(
                    if parsed.emergency {
                        "emergency"
                    } else {
                        "levels"
                    },
                    "levels and emergency access belong to approve policies only",
                ))
            }
            _ => {}
        }
        for level in &parsed.levels {
            if !self.store.group_exists(&level.group).await? {
                return Err(Error::invalid(
                    "levels",
                    format!("levels: group {} does not exist", level.group),
                ));
            }
        }
        let limits_json =
            serde_json::to_string(&limits).map_err(|e| Error::internal("storing the policy", e))?;
        Ok(PolicyRow {
            name: req.name.clone(),
            group: req.group.clone(),
            targets,
            access,
            outcome: outcome.as_str().to_owned(),
            created_at: self.now_text(),
            limits: limits_json,
        })
    }

    pub async fn list_policies(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<PolicyInfo>> {
        who.require(Action::ViewPolicies)?;
        let limit = page_limit(limit)?;
        let rows = self.store.policies_page(cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |p| p.name.clone(), policy_info))
    }

    /// Removes a policy; where it restricted another policy of its group, dual-controlled.
    pub async fn delete_policy(&self, who: &Principal, name: &str) -> Result<Applied<()>> {
        who.require(Action::ManagePolicies)?;
        let change = Change::PolicyDelete {
            name: name.to_owned(),
        };
        self.approvals()
            .propose_change(who, change)
            .await?
            .map(|_| Ok(()))
    }
}
