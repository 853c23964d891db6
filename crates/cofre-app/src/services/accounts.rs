//! Users, groups and authentication: login with lockout and TOTP, one-time passwords, tokens.

use super::governance::{Applied, Change, Output};
use super::Accounts;
use super::{page_limit, paginate, timestamp, App, Principal, TokenScope};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::lockout::{source_key, Rules, SourceFailures};
use cofre_core::names::check_identifier;
use cofre_core::role::{Action, Role};
use cofre_crypto::{envelope, password, token, totp, SealedSecret};
use cofre_proto::{
    ChangePasswordResponse, CreateUserResponse, GroupInfo, LoginResponse, Page, SecretString,
    TotpEnrollRequest, TotpEnrollResponse, UserInfo,
};
use cofre_store::users::{NewUser, UserRow};
use std::collections::HashMap;

pub const MIN_PASSWORD_CHARS: usize = 12;

/// User names that do not exist, counted like real ones so that no answer tells them apart. In
/// memory (a guess at a name that does not exist changes no account), bounded.
#[derive(Default)]
pub struct UnknownFailures(std::sync::Mutex<HashMap<(String, String), SourceFailures>>);

/// Past this many (name, source) pairs the oldest are forgotten.
const UNKNOWN_FAILURES_CAP: usize = 50_000;

impl UnknownFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SourceFailures>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn rows(&self, username: &str) -> Vec<(String, SourceFailures)> {
        self.lock()
            .iter()
            .filter(|((u, _), _)| u == username)
            .map(|((_, s), r)| (s.clone(), *r))
            .collect()
    }

    pub(crate) fn fail(
        &self,
        username: &str,
        source: &str,
        now: i64,
        rules: &Rules,
    ) -> SourceFailures {
        let mut map = self.lock();
        if map.len() >= UNKNOWN_FAILURES_CAP {
            map.retain(|_, r| now - r.last_failure_at <= rules.max_seconds);
            while map.len() >= UNKNOWN_FAILURES_CAP {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, r)| r.last_failure_at)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        let key = (username.to_owned(), source_key(source));
        let after = rules.after_failure(map.get(&key).copied(), now);
        map.insert(key, after);
        after
    }
}

use super::rfc3339;
const PASSWORD_CHANGE_TOKEN_MINUTES: i64 = 10;

/// Argon2 is deliberately slow; keep it off the async workers.
pub async fn hash_password(pw: String) -> Result<String> {
    let pw = zeroize::Zeroizing::new(pw);
    tokio::task::spawn_blocking(move || password::hash_password(&pw))
        .await
        .map_err(|e| Error::internal("hashing a password", e))?
        .map_err(|e| Error::internal("hashing a password", e))
}

async fn verify_password(pw: &str, hash: String) -> bool {
    let pw = zeroize::Zeroizing::new(pw.to_owned());
    tokio::task::spawn_blocking(move || password::verify_password(&pw, &hash))
        .await
        .unwrap_or(false)
}

/// A valid PHC string that no password matches, so unknown users cost as much as known ones.
pub(crate) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2kQFsVSWgzGIN6o1uEdVOG3VOmy3h0JX9U1ux6hfKqs";

/// zxcvbn's score (0 to 4) a new password must reach: 3 is "safely unguessable" (about 10^8
/// guesses or more), what an online attacker under the back-off cannot reach.
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// Checks a password someone chose: length, then strength by zxcvbn with the words an attacker
/// would try first (`user_inputs`: the user name, the product and instance names). The error
/// names the field and gives zxcvbn's reason, never the password.
pub(crate) fn check_new_password(pw: &str, user_inputs: &[&str]) -> Result<()> {
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "new_password",
            format!("new_password: must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if pw.chars().count() > 1024 {
        return Err(Error::invalid(
            "new_password",
            "new_password: must be at most 1024 characters",
        ));
    }
    let mut inputs = vec!["cofre"];
    inputs.extend_from_slice(user_inputs);
    // zxcvbn's matching cost grows with length; past 100 characters the score is 4 anyway.
    let judged: String = pw.chars().take(100).collect();
    let verdict = zxcvbn::zxcvbn(&judged, &inputs);
    if u8::from(verdict.score()) >= MIN_PASSWORD_SCORE {
        return Ok(());
    }
    let mut why = Vec::new();
    if let Some(f) = verdict.feedback() {
        if let Some(w) = f.warning() {
            why.push(w.to_string());
        }
        why.extend(f.suggestions().iter().map(|s| s.to_string()));
    }
    if why.is_empty() {
        why.push("it would be guessed too easily".to_owned());
    }
    Err(Error::invalid(
        "new_password",
        format!(
            "new_password: too weak (strength {} of 4, at least {MIN_PASSWORD_SCORE} needed): {}",
            u8::from(verdict.score()),
            why.join(" ")
        ),
    ))
}

pub(crate) fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| {
        Error::invalid(
            "role",
            "role: must be one of admin, approver, user, auditor, operator, support",
        )
    })
}

pub(crate) fn user_info(u: &UserRow, groups: Vec<String>, now: i64) -> UserInfo {
    UserInfo {
        username: u.username.clone(),
        role: u.role.clone(),
        groups,
        totp_enabled: u.totp_enabled,
        locked: u.locked_until.is_some_and(|t| t > now),
        must_change_password: u.must_change_password,
        created_at: u.created_at.clone(),
        email: u.email.clone(),
        disabled: u.disabled_at.is_some(),
        disabled_reason: u.disabled_reason.clone(),
    }
}

/// An email address as SMTP will take it, or the field named.
pub(crate) fn check_email(email: &str) -> Result<()> {
    if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
        return Err(Error::invalid(
            "email",
            format!("email: {email:?} is not an email address"),
        ));
    }
    Ok(())
}

/// A wrong or reused TOTP code, naming the field.
pub(crate) fn totp_invalid() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        ErrorCode::TotpInvalid,
        "invalid TOTP code",
    )
    .with_field("totp_code")
}

pub(crate) fn account_disabled() -> Error {
    Error::new(
        ErrorKind::Forbidden,
        ErrorCode::AccountDisabled,
        "this account is disabled; an admin can enable it with `cofre user enable`",
    )
}

/// Where a reset's one-time password went.
#[derive(Debug)]
pub enum Reset {
    /// To the caller, shown once.
    Shown(SecretString),
    /// To the user by email (this address), to nobody else.
    Sent(String),
}

pub struct LoginInput<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub totp_code: Option<&'a str>,
    pub source: &'a str,
    /// The caller audits failures of unknown names itself, aggregated (the SSH gateway: a flood
    /// of made-up names must not write one audit entry each).
    pub aggregated: bool,
}

impl Accounts<'_> {
    /// Creates the first admin with a one-time password if the instance has no user yet.
    pub async fn bootstrap_admin(&self) -> Result<Option<zeroize::Zeroizing<String>>> {
        if self.store.user_count().await? > 0 {
            return Ok(None);
        }
        let otp = password::generate_password();
        let hash = hash_password(otp.to_string()).await?;
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        tx.insert_user(NewUser {
            username: "admin",
            role: Role::Admin.as_str(),
            password_hash: &hash,
            must_change_password: true,
            created_at: &now,
        })
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new("system", "user.create", "user:admin").detail("role", "admin"),
        )
        .await?;
        Ok(Some(otp))
    }

    /// Resolves a bearer token to its user.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let unauthorized = || {
            Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::Unauthenticated,
                "missing, invalid or expired token: log in with `cofre login`",
            )
        };
        let hash = token::hash_token(bearer);
        let row = self
            .store
            .token_lookup(&hash, self.now().unix_timestamp())
            .await?
            .ok_or_else(unauthorized)?;
        // Only the SHA-256 of a token is stored and looked up: an attacker cannot steer which
        // bytes of a stored hash a guess shares, so the index lookup leaks nothing useful.
        let role = Role::parse(&row.user.role)
            .ok_or_else(|| Error::internal("reading a user", "unknown role in the database"))?;
        let scope = match row.scope.as_str() {
            "session" => TokenScope::Session,
            "password_change" => TokenScope::PasswordChange,
            "sso_totp" => TokenScope::SsoTotp,
            "totp_enrolment" => TokenScope::TotpEnrolment,
            _ => return Err(unauthorized()),
        };
        // The emergency lockdown: every API call (and console page) of anyone but an admin.
        if let Some(refusal) = self.lockdown_refusal(role).await? {
            return Err(refusal);
        }
        let support_grants = if role == Role::Support {
            self.active_support_grants(&row.user.username).await?
        } else {
            Vec::new()
        };
        Ok(Principal {
            user_id: row.user.id,
            username: row.user.username,
            role,
            groups: row.groups,
            scope,
            token_hash: hash,
            mode: self.config.mode,
            via_key: None,
            source: None,
            support_grants,
            invitation: None,
            approved_session: None,
        })
    }

    pub(crate) fn lockout_rules(&self) -> Rules {
        Rules {
            threshold: self.config.lockout_threshold,
            max_seconds: i64::try_from(self.config.lockout_minutes * 60).unwrap_or(86_400),
            sources: self.config.lockout_sources,
        }
    }
}

impl App {
    /// Refuses, before any password is checked, a login from a source that must wait or for an
    /// account locked from many sources; audited. Known and unknown names alike.
    pub(crate) async fn refuse_if_held(
        &self,
        input: &LoginInput<'_>,
        rows: &[(String, SourceFailures)],
        action: &str,
        known: bool,
    ) -> Result<()> {
        let audited = known || !input.aggregated;
        let now = self.now().unix_timestamp();
        let rules = self.accounts().lockout_rules();
        let source = source_key(input.source);
        let here = rows.iter().find(|(s, _)| *s == source).map(|(_, r)| r);
        let all: Vec<SourceFailures> = rows.iter().map(|(_, r)| *r).collect();
        let object = format!("user:{}", input.username);
        if let Some(until) = rules.waiting(here, now) {
            if audited {
                self.record(
                    NewAuditEntry::new(input.username, action, &*object)
                        .outcome("denied")
                        .detail("why", "address waiting after repeated failures")
                        .detail("until", rfc3339(until))
                        .detail("source", input.source),
                )
                .await?;
            }
            metrics::counter!("cofre_login_delayed_total").increment(1);
            return Err(Error::new(
                ErrorKind::TooMany,
                ErrorCode::LoginDelayed,
                format!(
                    "too many failed logins for this user from your address: try again after {} \
                     (other addresses and SSH keys are not affected)",
                    rfc3339(until)
                ),
            ));
        }
        if rules.account_locked(&all, now) {
            if audited {
                self.record(
                    NewAuditEntry::new(input.username, action, &*object)
                        .outcome("denied")
                        .detail("why", "account locked")
                        .detail("source", input.source),
                )
                .await?;
            }
            return Err(Error::new(
                ErrorKind::Locked,
                ErrorCode::AccountLocked,
                format!(
                    "password logins are locked after failures from {} addresses; they open again \
                     {} minutes after the last one, or an admin unlocks with `cofre user unlock` \
                     (SSH keys at the gateway still work)",
                    rules.sources, self.config.lockout_minutes
                ),
            ));
        }
        Ok(())
    }

    /// Counts one failure of an existing user from this source inside `tx` and commits it with
    /// `entry` (given the count, the wait and the lock). When the account lock starts (or goes
    /// on), the user's tokens end in this transaction.
    pub(crate) async fn count_failure(
        &self,
        mut tx: cofre_store::WriteTx,
        user: &UserRow,
        source: &str,
        rows: &[(String, SourceFailures)],
        entry: NewAuditEntry,
    ) -> Result<()> {
        let now = self.now().unix_timestamp();
        let rules = self.accounts().lockout_rules();
        let key = source_key(source);
        let before = rows.iter().find(|(s, _)| *s == key).map(|(_, r)| *r);
        let after = rules.after_failure(before, now);
        tx.set_login_failures(&user.username, &key, &after, now - rules.max_seconds)
            .await?;
        let mut all: Vec<SourceFailures> = rows
            .iter()
            .filter(|(s, _)| *s != key)
            .map(|(_, r)| *r)
            .collect();
        all.push(after);
        let locked = rules.account_locked(&all, now);
        if locked {
            // An account under a distributed guess: whatever was already logged in ends too.
            tx.set_locked_until(user.id, Some(now + rules.max_seconds))
                .await?;
            tx.delete_tokens_of(user.id).await?;
        }
        let mut entry = entry
            .detail("failures", after.failures)
            .detail("source", source);
        if let Some(until) = after.blocked_until {
            entry = entry.detail("waits_until", rfc3339(until));
        }
        if locked {
            entry = entry.detail("locked", true);
        }
        self.commit(tx, entry).await?;
        metrics::counter!("cofre_login_failures_total").increment(1);
        Ok(())
    }
}

impl Accounts<'_> {
    /// Checks a user's password (and TOTP), counting failures per user and source address and
    /// auditing them. On success returns the user, the TOTP step used, and the write transaction
    /// in which the caller records the success together with its own audit entry.
    pub(crate) async fn verify_login(
        &self,
        input: &LoginInput<'_>,
    ) -> Result<(UserRow, Option<i64>, cofre_store::WriteTx)> {
        let invalid = || {
            Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::InvalidCredentials,
                "invalid username or password",
            )
        };
        let now = self.now().unix_timestamp();
        let object = format!("user:{}", input.username);
        let user = self.store.user_by_name(input.username).await?;
        let rows = match &user {
            Some(_) => self.store.login_failures(input.username).await?,
            None => self.unknown_failures.rows(input.username),
        };
        self.refuse_if_held(input, &rows, "auth.login_refused", user.is_some())
            .await?;
        let Some(user) = user else {
            // The same work and the same answer as a wrong password for a real user.
            verify_password(input.password, DUMMY_HASH.to_owned()).await;
            let after = self.unknown_failures.fail(
                input.username,
                input.source,
                now,
                &self.lockout_rules(),
            );
            if !input.aggregated {
                self.record(
                    NewAuditEntry::new(input.username, "auth.login_failed", object)
                        .outcome("denied")
                        .detail("why", "unknown user")
                        .detail("failures", after.failures)
                        .detail("source", input.source),
                )
                .await?;
            }
            metrics::counter!("cofre_login_failures_total").increment(1);
            return Err(invalid());
        };
        let password_ok = verify_password(input.password, user.password_hash.clone()).await;
        let mut totp_step = None;
        let mut failure = (!password_ok).then_some("wrong password");
        if password_ok && user.totp_enabled {
            match input.totp_code {
                None => {
                    return Err(Error::new(
                        ErrorKind::Unauthorized,
                        ErrorCode::TotpRequired,
                        "this account uses TOTP: give the 6-digit code (--totp)",
                    )
                    .with_field("totp_code"))
                }
                Some(code) => match self.totp_step_of(&user, code, now)? {
                    Some(step) => totp_step = i64::try_from(step).ok(),
                    None => failure = Some("wrong or reused TOTP code"),
                },
            }
        }
        if failure.is_none() && user.disabled_at.is_some() {
            self.record(
                NewAuditEntry::new(input.username, "auth.login_refused", &*object)
                    .outcome("denied")
                    .detail("why", "account disabled")
                    .detail("source", input.source),
            )
            .await?;
            return Err(account_disabled());
        }
        let mut tx = self.store.write().await?;
        // Read again under the write lock: of a burst of concurrent guesses from one address,
        // those after the threshold are refused here even if their password was right.
        let rows = tx.login_failures(input.username).await?;
        {
            let rules = self.lockout_rules();
            let key = source_key(input.source);
            let here = rows.iter().find(|(s, _)| *s == key).map(|(_, r)| r);
            let all: Vec<SourceFailures> = rows.iter().map(|(_, r)| *r).collect();
            if rules.waiting(here, now).is_some() || rules.account_locked(&all, now) {
                drop(tx);
                self.refuse_if_held(input, &rows, "auth.login_refused", true)
                    .await?;
                return Err(invalid());
            }
        }
        let last_step = tx.totp_last_step(user.id).await?;
        if let (None, Some(step)) = (failure, totp_step) {
            // Another login with the same code committed while this one checked it.
            if last_step.is_some_and(|l| l >= step) {
                failure = Some("wrong or reused TOTP code");
                totp_step = None;
            }
        }
        if let Some(why) = failure {
            self.count_failure(
                tx,
                &user,
                input.source,
                &rows,
                NewAuditEntry::new(input.username, "auth.login_failed", &*object)
                    .outcome("denied")
                    .detail("why", why),
            )
            .await?;
            return Err(if why.contains("TOTP") {
                totp_invalid()
            } else {
                invalid()
            });
        }
        tx.clear_login_failures(input.username, Some(&source_key(input.source)))
            .await?;
        Ok((user, totp_step, tx))
    }

    pub async fn login(&self, input: LoginInput<'_>) -> Result<LoginResponse> {
        let now = self.now().unix_timestamp();
        let object = format!("user:{}", input.username);
        let (user, totp_step, mut tx) = self.verify_login(&input).await?;
        // The emergency lockdown: no token for anyone but an admin (audited as refused).
        let role = Role::parse(&user.role)
            .ok_or_else(|| Error::internal("reading a user", "unknown role in the database"))?;
        if let Some(refusal) = self.lockdown_refusal(role).await? {
            drop(tx);
            self.record(
                NewAuditEntry::new(input.username, "auth.login_refused", &*object)
                    .outcome("denied")
                    .detail("why", refusal.code.as_str())
                    .detail("source", input.source),
            )
            .await?;
            return Err(refusal);
        }
        tx.record_login_success(user.id, totp_step).await?;
        let (scope, ttl) = if user.must_change_password {
            (
                TokenScope::PasswordChange,
                PASSWORD_CHANGE_TOKEN_MINUTES * 60,
            )
        } else {
            (
                TokenScope::Session,
                i64::try_from(self.config.token_ttl_minutes * 60).unwrap_or(3600),
            )
        };
        let (token_text, token_hash) = token::generate_token();
        let expires = now + ttl;
        tx.insert_token(
            &token_hash,
            user.id,
            scope.as_str(),
            &self.now_text(),
            expires,
        )
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new(input.username, "auth.login", object)
                .detail("scope", scope.as_str())
                .detail("totp", user.totp_enabled)
                .detail("source", input.source),
        )
        .await?;
        let groups = self.store.user_groups(user.id).await?;
        Ok(LoginResponse {
            token: SecretString::new(token_text.to_string()),
            expires_at: rfc3339(expires),
            password_change_required: user.must_change_password,
            next_step: None,
            user: user_info(&user, groups, now),
        })
    }

    pub async fn logout(&self, who: &Principal) -> Result<()> {
        let mut tx = self.store.write().await?;
        tx.delete_token(&who.token_hash).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "auth.logout",
                format!("user:{}", who.username),
            ),
        )
        .await
    }

    pub async fn whoami(&self, who: &Principal) -> Result<UserInfo> {
        who.require(Action::OwnAccount)?;
        let user = self
            .store
            .user_by_name(&who.username)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        Ok(user_info(
            &user,
            who.groups.clone(),
            self.now().unix_timestamp(),
        ))
    }

    /// Sets a new password and ends every token of the user. A caller that came in with a one-time
    /// password gets a new session token back (it passed TOTP at login already).
    pub async fn change_password(
        &self,
        who: &Principal,
        current: &str,
        new: &str,
        source: &str,
    ) -> Result<ChangePasswordResponse> {
        who.require(Action::ChangeOwnPassword)?;
        {
            // zxcvbn's matching takes a while on long inputs: off the async workers.
            let pw = zeroize::Zeroizing::new(new.to_owned());
            let inputs = [who.username.clone(), self.instance_id().to_owned()];
            tokio::task::spawn_blocking(move || {
                check_new_password(&pw, &[inputs[0].as_str(), inputs[1].as_str()])
            })
            .await
            .map_err(|e| Error::internal("checking a password", e))??;
        }
        if current == new {
            return Err(Error::invalid(
                "new_password",
                "new_password: must differ from the current password",
            ));
        }
        let user = self
            .store
            .user_by_name(&who.username)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        // A stolen token must not become a password oracle: wrong current passwords count
        // towards the same per-address back-off as wrong logins.
        let as_login = LoginInput {
            username: &who.username,
            password: current,
            totp_code: None,
            source,
            aggregated: false,
        };
        let rows = self.store.login_failures(&who.username).await?;
        self.refuse_if_held(&as_login, &rows, "auth.password_change", true)
            .await?;
        if !verify_password(current, user.password_hash.clone()).await {
            let mut tx = self.store.write().await?;
            let rows = tx.login_failures(&who.username).await?;
            self.count_failure(
                tx,
                &user,
                source,
                &rows,
                NewAuditEntry::new(
                    &who.username,
                    "auth.password_change",
                    format!("user:{}", who.username),
                )
                .outcome("denied")
                .detail("why", "wrong current password"),
            )
            .await?;
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::InvalidCredentials,
                "current_password is wrong",
            )
            .with_field("current_password"));
        }
        let hash = hash_password(new.to_owned()).await?;
        let mut tx = self.store.write().await?;
        tx.set_password(user.id, &hash, false).await?;
        tx.delete_tokens_of(user.id).await?;
        let mut response = ChangePasswordResponse {
            ok: true,
            token: None,
            expires_at: None,
        };
        if who.scope == TokenScope::PasswordChange {
            let (token_text, token_hash) = token::generate_token();
            let expires = self.now().unix_timestamp()
                + i64::try_from(self.config.token_ttl_minutes * 60).unwrap_or(3600);
            tx.insert_token(
                &token_hash,
                user.id,
                TokenScope::Session.as_str(),
                &self.now_text(),
                expires,
            )
            .await?;
            response.token = Some(SecretString::new(token_text.to_string()));
            response.expires_at = time::OffsetDateTime::from_unix_timestamp(expires)
                .map(timestamp)
                .ok();
        }
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "auth.password_change",
                format!("user:{}", who.username),
            ),
        )
        .await?;
        if user.must_change_password && user.username == "admin" {
            // The first admin's one-time password is spent: leave no stale copy of it on disk.
            let _ = std::fs::remove_file(self.config.data_dir.join("initial-admin-password"));
        }
        Ok(response)
    }
}

impl App {
    /// The TOTP step `code` is for, if it is the user's code now and newer than the last step
    /// used (as the user row says; a caller re-reads that under the write lock).
    pub(crate) fn totp_step_of(&self, user: &UserRow, code: &str, now: i64) -> Result<Option<u64>> {
        let seed = self.open_totp_seed(user)?;
        let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
        Ok(totp::verify(
            &seed,
            code.trim(),
            u64::try_from(now).unwrap_or(0),
            last,
        ))
    }

    pub(crate) fn open_totp_seed(&self, user: &UserRow) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let (wrapped_key, ciphertext) = user
            .totp_sealed
            .clone()
            .ok_or_else(|| Error::internal("checking TOTP", "no TOTP seed stored"))?;
        let sealed = SealedSecret {
            wrapped_key,
            ciphertext,
        };
        let aad = format!("cofre:totp:{}", user.id);
        self.with_master(|mk| envelope::open(mk, &sealed, aad.as_bytes()))?
            .map_err(|e| Error::internal("opening the TOTP seed", e))
    }
}

impl App {
    /// An emergency action's step-up: the acting user's own current TOTP code, used up in the
    /// action's transaction (`tx`), so one code serves one action. An account without TOTP
    /// cannot take one (`totp_not_enrolled`): a stolen token alone must not end every session.
    pub(crate) async fn check_step_up(
        &self,
        tx: &mut cofre_store::WriteTx,
        who: &Principal,
        code: &str,
    ) -> Result<()> {
        let user = self
            .store
            .user_by_name(who.username())
            .await?
            .ok_or_else(|| Error::not_found(format!("user {}", who.username())))?;
        if !user.totp_enabled {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::TotpNotEnrolled,
                "totp_code: an emergency action needs your TOTP, and this account has none (enrol with `cofre totp enroll`)",
            )
            .with_field("totp_code"));
        }
        let invalid = || {
            Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::TotpInvalid,
                "totp_code: wrong or reused TOTP code",
            )
            .with_field("totp_code")
        };
        let seed = self.open_totp_seed(&user)?;
        let t = u64::try_from(self.now().unix_timestamp()).unwrap_or(0);
        let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
        let step = totp::verify(&seed, code.trim(), t, last)
            .and_then(|s| i64::try_from(s).ok())
            .ok_or_else(invalid)?;
        if !tx.use_totp_step(user.id, step).await? {
            return Err(invalid());
        }
        Ok(())
    }
}

impl Accounts<'_> {
    /// Starts TOTP enrolment: a new seed, shown once, active after `confirm_totp`.
    pub async fn enroll_totp(
        &self,
        who: &Principal,
        reauth: &TotpEnrollRequest,
        source: &str,
    ) -> Result<TotpEnrollResponse> {
        who.require_own_totp()?;
        let user = self
            .store
            .user_by_name(&who.username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {}", who.username)))?;
        let seed = totp::generate_secret();
        let aad = format!("cofre:totp:{}", who.user_id);
        let sealed = self
            .with_master(|mk| envelope::seal(mk, &seed, aad.as_bytes()))?
            .map_err(|e| Error::internal("sealing the TOTP seed", e))?;
        let mut tx = if user.totp_enabled {
            // Replacing a second factor in use: prove both factors again, as at login (the same
            // failure counting, lockout, replay check and audit), so a stolen token cannot.
            let needs = |field: &str| {
                Error::invalid(
                    field,
                    format!(
                        "{field}: replacing the TOTP in use needs your password and a current code \
                         (cofre totp enroll --totp CODE)"
                    ),
                )
            };
            let password = reauth.password.as_ref().ok_or_else(|| needs("password"))?;
            let code = reauth
                .totp_code
                .as_deref()
                .ok_or_else(|| needs("totp_code"))?;
            let (checked, step, mut tx) = self
                .verify_login(&LoginInput {
                    username: &who.username,
                    password: password.expose(),
                    totp_code: Some(code),
                    source,
                    aggregated: false,
                })
                .await?;
            tx.record_login_success(checked.id, step).await?;
            tx
        } else {
            self.store.write().await?
        };
        tx.set_totp_pending(who.user_id, &sealed.wrapped_key, &sealed.ciphertext)
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "auth.totp_enroll",
                format!("user:{}", who.username),
            )
            .detail("replacing", user.totp_enabled),
        )
        .await?;
        Ok(TotpEnrollResponse {
            secret_base32: SecretString::new(totp::secret_base32(&seed)),
            otpauth_uri: SecretString::new(totp::otpauth_uri(&seed, &who.username, "Cofre")),
        })
    }

    pub async fn confirm_totp(&self, who: &Principal, code: &str) -> Result<()> {
        who.require_own_totp()?;
        let user = self
            .store
            .user_by_name(&who.username)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        if user.totp_sealed.is_none() {
            return Err(Error::new(
                ErrorKind::BadRequest,
                ErrorCode::TotpNotEnrolling,
                "start with `cofre totp enroll`",
            ));
        }
        let seed = self.open_totp_seed(&user)?;
        let now = u64::try_from(self.now().unix_timestamp()).unwrap_or(0);
        let step = totp::verify(&seed, code.trim(), now, None).ok_or_else(|| {
            Error::invalid(
                "code",
                "code: does not match; check the authenticator's clock",
            )
        })?;
        let mut tx = self.store.write().await?;
        tx.enable_totp(user.id, i64::try_from(step).unwrap_or(0))
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "auth.totp_enabled",
                format!("user:{}", who.username),
            ),
        )
        .await
    }

    /// Creates a user. One with a deciding role, or in a group that a policy names, widens
    /// access: dual-controlled (and its one-time password then goes to the approving admin).
    pub async fn create_user(
        &self,
        who: &Principal,
        username: &str,
        role: &str,
        groups: &[String],
        email: Option<&str>,
    ) -> Result<Applied<CreateUserResponse>> {
        who.require(Action::ManageUsers)?;
        let change = Change::UserCreate {
            username: username.to_owned(),
            role: role.to_owned(),
            groups: groups.to_vec(),
            email: email.map(str::to_owned),
        };
        let applied = self.approvals().propose_change(who, change).await?;
        let otp = match applied {
            Applied::Held(c) => return Ok(Applied::Held(c)),
            Applied::Done(Output::User {
                one_time_password, ..
            }) => one_time_password,
            Applied::Done(_) => {
                return Err(Error::internal("creating a user", "unexpected output"))
            }
        };
        Ok(Applied::Done(CreateUserResponse {
            user: self.user_info_of(username).await?,
            one_time_password: otp,
        }))
    }

    /// Changes a user's role; gaining admin or approver is dual-controlled.
    pub async fn set_role(
        &self,
        who: &Principal,
        username: &str,
        role: &str,
    ) -> Result<Applied<UserInfo>> {
        who.require(Action::ManageUsers)?;
        let change = Change::SetRole {
            username: username.to_owned(),
            role: role.to_owned(),
        };
        match self.approvals().propose_change(who, change).await? {
            Applied::Held(c) => Ok(Applied::Held(c)),
            Applied::Done(_) => Ok(Applied::Done(self.user_info_of(username).await?)),
        }
    }

    /// Sets or clears a user's email address (where request notifications go).
    pub async fn set_email(
        &self,
        who: &Principal,
        username: &str,
        email: Option<&str>,
    ) -> Result<UserInfo> {
        who.require(Action::ManageUsers)?;
        if let Some(e) = email {
            check_email(e)?;
        }
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        tx.set_email(user.id, email).await?;
        tx.record_account_change(user.id, &who.username, "email", self.now().unix_timestamp())
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "user.set_email", format!("user:{username}"))
                .detail("email", email.unwrap_or("")),
        )
        .await?;
        self.user_info_of(username).await
    }

    pub async fn list_users(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<UserInfo>> {
        who.require(Action::ManageUsers)?;
        let limit = page_limit(limit)?;
        let rows = self.store.users_page(cursor, limit + 1).await?;
        let now = self.now().unix_timestamp();
        Ok(paginate(
            rows,
            limit,
            |(u, _)| u.username.clone(),
            |(u, g)| user_info(&u, g, now),
        ))
    }

    pub async fn get_user(&self, who: &Principal, username: &str) -> Result<UserInfo> {
        who.require(Action::ManageUsers)?;
        self.user_info_of(username).await
    }

    pub async fn unlock_user(&self, who: &Principal, username: &str) -> Result<()> {
        who.require(Action::ManageUsers)?;
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        tx.unlock_user(user.id).await?;
        tx.clear_login_failures(username, None).await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "user.unlock", format!("user:{username}")),
        )
        .await
    }

    /// A new one-time password for a user who lost theirs; ends the user's tokens. For another
    /// user it is dual-controlled: held, the password goes to the approving admin, never to the
    /// admin who asked.
    pub async fn reset_password(&self, who: &Principal, username: &str) -> Result<Applied<Reset>> {
        who.require(Action::ManageUsers)?;
        if let Some(u) = self.store.user_by_name(username).await? {
            if let Some((provider, _)) = self.store.sso_last_login(u.id).await? {
                // A password would outlive the provider: leaving there would no longer end access.
                return Err(Error::invalid(
                    "username",
                    format!(
                        "username: {username} signs in through {provider} and has no Cofre password to reset"
                    ),
                ));
            }
        }
        let change = Change::ResetPassword {
            username: username.to_owned(),
        };
        self.approvals()
            .propose_change(who, change)
            .await?
            .map(|o| match o {
                Output::OneTimePassword(p) => Ok(Reset::Shown(p)),
                Output::OneTimePasswordSent(to) => Ok(Reset::Sent(to)),
                _ => Err(Error::internal("resetting a password", "unexpected output")),
            })
    }

    pub async fn create_group(&self, who: &Principal, name: &str) -> Result<GroupInfo> {
        who.require(Action::ManageUsers)?;
        check_identifier("name", name)?;
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        tx.insert_group(name, &now).await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "group.create", format!("group:{name}")),
        )
        .await?;
        Ok(GroupInfo {
            name: name.to_owned(),
            members: vec![],
        })
    }

    /// Adds a member; to a group that a policy or an approval level names, dual-controlled.
    pub async fn add_group_member(
        &self,
        who: &Principal,
        group: &str,
        username: &str,
    ) -> Result<Applied<()>> {
        who.require(Action::ManageUsers)?;
        if !self.store.group_exists(group).await? {
            return Err(Error::not_found(format!("group {group}")));
        }
        let change = Change::AddMember {
            group: group.to_owned(),
            username: username.to_owned(),
        };
        self.approvals()
            .propose_change(who, change)
            .await?
            .map(|_| Ok(()))
    }

    pub async fn list_groups(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<GroupInfo>> {
        who.require(Action::ManageUsers)?;
        let limit = page_limit(limit)?;
        let rows = self.store.groups_page(cursor, limit + 1).await?;
        Ok(paginate(
            rows,
            limit,
            |(n, _)| n.clone(),
            |(name, members)| GroupInfo { name, members },
        ))
    }
}
