//! Users, groups and authentication: login with lockout and TOTP, one-time passwords, tokens.

use super::governance::{Applied, Change, Output};
use super::{page_limit, paginate, timestamp, App, Principal, TokenScope};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_identifier;
use cofre_core::role::{Action, Role};
use cofre_crypto::{envelope, password, token, totp, SealedSecret};
use cofre_proto::{
    ChangePasswordResponse, CreateUserResponse, GroupInfo, LoginResponse, Page, SecretString,
    TotpEnrollRequest, TotpEnrollResponse, UserInfo,
};
use cofre_store::users::{NewUser, UserRow};

pub const MIN_PASSWORD_CHARS: usize = 12;
const PASSWORD_CHANGE_TOKEN_MINUTES: i64 = 10;

/// Argon2 is deliberately slow; keep it off the async workers.
pub(crate) async fn hash_password(pw: String) -> Result<String> {
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
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2kQFsVSWgzGIN6o1uEdVOG3VOmy3h0JX9U1ux6hfKqs";

fn check_new_password(pw: &str) -> Result<()> {
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
    Ok(())
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

pub(crate) fn account_disabled() -> Error {
    Error::new(
        ErrorKind::Forbidden,
        ErrorCode::AccountDisabled,
        "this account is disabled; an admin can enable it with `cofre user enable`",
    )
}

pub struct LoginInput<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub totp_code: Option<&'a str>,
    pub source: &'a str,
}

impl App {
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
            _ => return Err(unauthorized()),
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
        })
    }

    /// Checks a user's password (and TOTP), counting failures towards lockout and auditing them.
    /// On success returns the user, the TOTP step used, and the write transaction in which the
    /// caller records the success together with its own audit entry.
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
        let Some(user) = self.store.user_by_name(input.username).await? else {
            verify_password(input.password, DUMMY_HASH.to_owned()).await;
            self.record(
                NewAuditEntry::new(input.username, "auth.login_failed", object)
                    .outcome("denied")
                    .detail("why", "unknown user")
                    .detail("source", input.source),
            )
            .await?;
            metrics::counter!("cofre_login_failures_total").increment(1);
            return Err(invalid());
        };
        if let Some(until) = user.locked_until.filter(|t| *t > now) {
            self.record(
                NewAuditEntry::new(input.username, "auth.login_refused", &*object)
                    .outcome("denied")
                    .detail("why", "account locked")
                    .detail("source", input.source),
            )
            .await?;
            return Err(Error::new(
                ErrorKind::Locked,
                ErrorCode::AccountLocked,
                format!(
                    "account locked after repeated failures until {}; an admin can unlock it with `cofre user unlock`",
                    time::OffsetDateTime::from_unix_timestamp(until)
                        .map(timestamp)
                        .unwrap_or_default()
                ),
            ));
        }
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
                Some(code) => {
                    let seed = self.open_totp_seed(&user)?;
                    let t = u64::try_from(now).unwrap_or(0);
                    let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
                    match totp::verify(&seed, code.trim(), t, last) {
                        Some(step) => totp_step = i64::try_from(step).ok(),
                        None => failure = Some("wrong or reused TOTP code"),
                    }
                }
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
        let (failed_before, last_step) = tx.login_state(user.id).await?;
        if let (None, Some(step)) = (failure, totp_step) {
            // Another login with the same code committed while this one checked it.
            if last_step.is_some_and(|l| l >= step) {
                failure = Some("wrong or reused TOTP code");
                totp_step = None;
            }
        }
        if let Some(why) = failure {
            let failures = failed_before + 1;
            let lock = (failures >= i64::from(self.config.lockout_threshold)).then(|| {
                now + i64::try_from(self.config.lockout_minutes * 60).unwrap_or(i64::MAX / 2)
            });
            tx.record_login_failure(user.id, lock).await?;
            if lock.is_some() {
                // A locked account is one under attack: whatever was already logged in ends too.
                tx.delete_tokens_of(user.id).await?;
            }
            let mut entry = NewAuditEntry::new(input.username, "auth.login_failed", &*object)
                .outcome("denied")
                .detail("why", why)
                .detail("failures", failures)
                .detail("source", input.source);
            if lock.is_some() {
                entry = entry.detail("locked", true);
            }
            self.commit(tx, entry).await?;
            metrics::counter!("cofre_login_failures_total").increment(1);
            return Err(if why.contains("TOTP") {
                Error::new(
                    ErrorKind::Unauthorized,
                    ErrorCode::TotpInvalid,
                    "invalid TOTP code",
                )
                .with_field("totp_code")
            } else {
                invalid()
            });
        }
        Ok((user, totp_step, tx))
    }

    pub async fn login(&self, input: LoginInput<'_>) -> Result<LoginResponse> {
        let now = self.now().unix_timestamp();
        let object = format!("user:{}", input.username);
        let (user, totp_step, mut tx) = self.verify_login(&input).await?;
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
            expires_at: time::OffsetDateTime::from_unix_timestamp(expires)
                .map(timestamp)
                .unwrap_or_default(),
            password_change_required: user.must_change_password,
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
    ) -> Result<ChangePasswordResponse> {
        who.require(Action::ChangeOwnPassword)?;
        check_new_password(new)?;
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
        if !verify_password(current, user.password_hash.clone()).await {
            self.record(
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

    fn open_totp_seed(&self, user: &UserRow) -> Result<zeroize::Zeroizing<Vec<u8>>> {
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

    /// Starts TOTP enrolment: a new seed, shown once, active after `totp_confirm`.
    pub async fn totp_enroll(
        &self,
        who: &Principal,
        reauth: &TotpEnrollRequest,
        source: &str,
    ) -> Result<TotpEnrollResponse> {
        who.require(Action::OwnAccount)?;
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

    pub async fn totp_confirm(&self, who: &Principal, code: &str) -> Result<()> {
        who.require(Action::OwnAccount)?;
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
        let applied = self.propose(who, change).await?;
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
        match self.propose(who, change).await? {
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
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        let groups = self.store.user_groups(user.id).await?;
        Ok(user_info(&user, groups, self.now().unix_timestamp()))
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
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        let groups = self.store.user_groups(user.id).await?;
        Ok(user_info(&user, groups, self.now().unix_timestamp()))
    }

    pub async fn unlock_user(&self, who: &Principal, username: &str) -> Result<()> {
        who.require(Action::ManageUsers)?;
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        tx.unlock_user(user.id).await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "user.unlock", format!("user:{username}")),
        )
        .await
    }

    /// A new one-time password for a user who lost theirs; ends the user's tokens. For another
    /// user it is dual-controlled: held, the password goes to the approving admin, never to the
    /// admin who asked.
    pub async fn reset_password(
        &self,
        who: &Principal,
        username: &str,
    ) -> Result<Applied<SecretString>> {
        who.require(Action::ManageUsers)?;
        let change = Change::ResetPassword {
            username: username.to_owned(),
        };
        self.propose(who, change).await?.map(|o| match o {
            Output::OneTimePassword(p) => Ok(p),
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
        self.propose(who, change).await?.map(|_| Ok(()))
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
