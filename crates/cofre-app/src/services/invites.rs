//! Invitations for third parties (issue 18). An admin invites an e-mail address to named targets
//! and accounts for a window (`create_invitation`); the invitee gets a one-time link by e-mail
//! (through the outbox, its body sealed: the link is a secret); on the external listener it sets
//! a password and enrols TOTP (`redeem_invitation`), later logs in with both (`invitee_login`),
//! and opens recorded web-terminal sessions to what the invitation covers, nothing else
//! (`start_session` asks `cofre_core::invite`). Revoking ends the live sessions at once.
//!
//! The link's token is random, stored only as its SHA-256, used once, and never logged or
//! audited. The invitee's session is a cookie MACed under a key derived from the master key; the
//! invitation is read again on every request, so a revocation or the end is felt by the next one.

use super::governance::{Applied, Change, Output};
use super::{page_limit, paginate, rfc3339, App, Approvals, Principal, Sessions, TokenScope};
use crate::config::SecondFactor;
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::invite::{self as inv, Invitation, State};
use cofre_core::role::{Action, Role};
use cofre_proto::requests::RequestInfo;
use cofre_proto::{ChangeInfo, InvitationInfo, InvitationSessionInfo, InviteRequest, Page};
use cofre_store::invites::{InvitationCodeRow, InvitationRow, InvitationSessionRow};
use cofre_store::WriteTx;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How long an invitee's login lasts (never past the invitation's end).
const SESSION_SECONDS: i64 = 12 * 3600;
/// The longest wait a run of failed logins earns.
const MAX_WAIT_SECONDS: i64 = 15 * 60;
const COOKIE_PURPOSE: &str = "cofre:invitee-session:v1";
/// The key mailed codes are kept under (as an HMAC, never the code itself).
const CODE_PURPOSE: &str = "cofre:invitee-code:v1";

/// What asking for an invitation did: kept (and the link sent), held for a second admin (an
/// admin's, under dual control), or waiting in the approval engine (a user's, where its
/// `invite` policy wants approval).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Invited {
    Done(InvitationInfo),
    Held(ChangeInfo),
    Requested(RequestInfo),
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn machine(row: &InvitationRow) -> Result<Invitation> {
    let state = State::parse(&row.state).ok_or_else(|| {
        Error::internal(
            "reading an invitation",
            format!("unknown state {:?}", row.state),
        )
    })?;
    Ok(Invitation {
        targets: split(&row.targets),
        accounts: split(&row.accounts),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        state,
        redeemed: row.redeemed_at.is_some(),
    })
}

fn info(row: &InvitationRow, now: i64) -> Result<InvitationInfo> {
    let status = machine(row)?.status(now);
    Ok(InvitationInfo {
        id: row.id.clone(),
        email: row.email.clone(),
        inviter: row.inviter.clone(),
        targets: split(&row.targets),
        accounts: split(&row.accounts),
        reason: row.reason.clone(),
        starts_at: rfc3339(row.starts_at),
        ends_at: rfc3339(row.ends_at),
        approve_each_session: row.approve_each_session,
        status: status.as_str().to_owned(),
        created_at: rfc3339(row.created_at),
        redeemed_at: row.redeemed_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        revoked_by: row.revoked_by.clone(),
        pending_sessions: Vec::new(),
    })
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("invitation {id}")).with_field("id")
}

/// A moment as an inviter types it: RFC 3339, seconds optional (`2026-12-03T13:00Z`), or `now`.
fn parse_moment(field: &str, text: Option<&str>, now: i64) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let t = match text.map(str::trim) {
        None | Some("") | Some("now") => return Ok(now),
        Some(t) => t,
    };
    let parsed = OffsetDateTime::parse(t, &Rfc3339).or_else(|e| {
        // `YYYY-MM-DDTHH:MM` then a zone: put the seconds in.
        match (t.get(..16), t.get(16..)) {
            (Some(head), Some(rest)) if !rest.starts_with(':') => {
                OffsetDateTime::parse(&format!("{head}:00{rest}"), &Rfc3339)
            }
            _ => Err(e),
        }
    });
    parsed.map(|t| t.unix_timestamp()).map_err(|_| {
        Error::invalid(
            field,
            format!("{field}: {t:?} is neither `now` nor an RFC 3339 time (2026-12-03T13:00Z)"),
        )
    })
}

/// What the invitee is told whatever went wrong with a link or a login: which of unknown,
/// used, revoked, expired or locked is only in the audit trail.
fn link_refused() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        ErrorCode::InvalidCredentials,
        "this invitation link is not valid (used, expired or revoked): ask whoever invited you",
    )
}

/// A failed login of an invitee (`id`, or an unknown one), for the audit trail: why, and from where.
fn login_failed(id: Option<&str>, why: &str, source: &str) -> NewAuditEntry {
    NewAuditEntry::new(
        &id.map_or_else(|| "anonymous".to_owned(), |i| format!("invitee:{i}")),
        "invite.login_failed",
        id.map_or_else(|| "invite:unknown".to_owned(), |i| format!("invite:{i}")),
    )
    .outcome("denied")
    .detail("why", why)
    .detail("source", source)
}

fn login_refused() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        ErrorCode::InvalidCredentials,
        "wrong e-mail address, password or code, or too many tries: try again in a few minutes",
    )
}

/// What the enrolment page shows for a valid link.
pub struct Enrolment {
    pub invitation: String,
    pub email: String,
    pub targets: Vec<String>,
    pub accounts: Vec<String>,
    pub starts_at: String,
    pub ends_at: String,
    /// A new TOTP seed to enrol (`[external] second_factor = "totp"`); `None` where the second
    /// factor is a mailed code.
    pub totp: Option<TotpEnrolment>,
}

/// The TOTP seed an enrolment page shows.
pub struct TotpEnrolment {
    /// The new TOTP seed, base32, and as an `otpauth://` URI.
    pub secret: Zeroizing<String>,
    pub uri: Zeroizing<String>,
    /// The seed sealed under the master key for this invitation: the form carries it back, so
    /// the page needs no server-side state and nobody can enrol a seed of their own.
    pub sealed_seed: String,
}

/// What the link's form or the password step leads to: logged in (TOTP), or a code mailed and
/// the ticket the code page carries back (`[external] second_factor = "email"`).
pub enum Redeemed {
    LoggedIn(InviteeLogin),
    CodeSent(CodeTicket),
}

/// The random ticket that ties the code page to its login: never in a URL, stored only as its
/// SHA-256. A wrong password gets a ticket too (one that names nothing), so the answer does not
/// say whether the password was right.
pub struct CodeTicket {
    pub ticket: Zeroizing<String>,
}

/// An invitee's login: the cookie's value and what it covers.
pub struct InviteeLogin {
    pub cookie: Zeroizing<String>,
    pub max_age_seconds: i64,
}

/// An invitee as a page sees it.
pub struct Invitee {
    pub principal: Principal,
    pub invitation: InvitationInfo,
}

fn seed_aad(id: &str) -> String {
    format!("cofre:invite-totp:{id}")
}

impl App {
    fn cookie_mac(&self, payload: &str) -> Result<String> {
        let key = self.with_master(|mk| Zeroizing::new(mk.derive_subkey(COOKIE_PURPOSE)))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
            .map_err(|e| Error::internal("signing a login", e))?;
        mac.update(payload.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// The HMAC a mailed code is kept as, bound to its invitation.
    fn code_mac(&self, invitation: &str, code: &str) -> Result<String> {
        let key = self.with_master(|mk| Zeroizing::new(mk.derive_subkey(CODE_PURPOSE)))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
            .map_err(|e| Error::internal("keeping a code", e))?;
        mac.update(invitation.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Makes a code for `row`'s invitee, keeps it (hashed) and queues it by e-mail inside `tx`
    /// (its body sealed in the outbox): the ticket the code page carries.
    async fn issue_code(
        &self,
        tx: &mut WriteTx,
        row: &InvitationRow,
        now: i64,
    ) -> Result<CodeTicket> {
        let code = cofre_crypto::token::generate_code(inv::CODE_DIGITS);
        let (ticket, ticket_hash) = cofre_crypto::token::generate_token();
        tx.put_invitation_code(&InvitationCodeRow {
            invitation_id: row.id.clone(),
            ticket_hash,
            code_mac: self.code_mac(&row.id, &code)?,
            expires_at: (now + i64::from(self.config.external.code_seconds)).min(row.ends_at),
            tries: 0,
        })
        .await?;
        let body = Zeroizing::new(format!(
            "Hello,\n\nYour code to log in to the recorded session ({reason}) is:\n\n    {code}\n\n\
             It works once, for {life}. If you did not just type your password, someone \
             else knows it: tell {inviter}, who invited you.\n",
            reason = row.reason,
            code = code.as_str(),
            life = match self.config.external.code_seconds {
                s if s % 60 == 0 => format!("{} minutes", s / 60),
                s => format!("{s} seconds"),
            },
            inviter = row.inviter,
        ));
        self.queue_secret_email(tx, &row.email, "[Cofre] your login code", &body)
            .await?;
        Ok(CodeTicket { ticket })
    }

    fn invitee_cookie(&self, row: &InvitationRow, now: i64) -> Result<InviteeLogin> {
        let expires = (now + SESSION_SECONDS).min(row.ends_at);
        let payload = format!("v1.{}.{expires}", row.id);
        let mac = self.cookie_mac(&payload)?;
        Ok(InviteeLogin {
            cookie: Zeroizing::new(format!("{payload}.{mac}")),
            max_age_seconds: (expires - now).max(0),
        })
    }

    fn invitee_principal_of(&self, row: &InvitationRow) -> Principal {
        Principal {
            user_id: 0,
            username: format!("invitee:{}", row.id),
            role: Role::User,
            groups: Vec::new(),
            scope: TokenScope::Session,
            token_hash: String::new(),
            mode: self.config.mode,
            via_key: None,
            source: None,
            support_grants: Vec::new(),
            invitation: Some(row.id.clone()),
            approved_session: None,
        }
    }

    /// An invitee's invitation, if it may act now (for `start_session` and `still_usable`).
    pub(crate) async fn invitation_usable(&self, id: &str) -> Result<InvitationRow> {
        let row = self
            .store
            .invitation(id)
            .await?
            .ok_or_else(|| Error::forbidden("the invitation is gone"))?;
        machine(&row)?
            .usable(self.now().unix_timestamp())
            .map_err(|r| {
                Error::new(
                    ErrorKind::Forbidden,
                    ErrorCode::RequestClosed,
                    r.to_string(),
                )
            })?;
        Ok(row)
    }

    /// Whether an invitee may open this session now, for `start_session`: the invitation's id,
    /// reason and end, or why not.
    pub(crate) async fn invitation_session(
        &self,
        id: &str,
        target: &str,
        account: &str,
    ) -> Result<std::result::Result<InvitationRow, inv::Refusal>> {
        let Some(row) = self.store.invitation(id).await? else {
            return Ok(Err(inv::Refusal::Revoked));
        };
        let now = self.now().unix_timestamp();
        Ok(machine(&row)?
            .session_may(target, account, now)
            .map(|()| row))
    }
}

/// An invitation checked and ready to keep: everything but its inviter and its link, which is
/// made only when the invitation is kept (after a second admin's approval when it was held), so a
/// held change holds no secret.
#[derive(Debug)]
pub(crate) struct InvitationDraft {
    pub(crate) email: String,
    pub(crate) targets: Vec<String>,
    pub(crate) accounts: Vec<String>,
    reason: String,
    pub(crate) starts_at: i64,
    pub(crate) ends_at: i64,
    pub(crate) approve_each_session: bool,
    base: String,
}

/// What a held invitation's change request shows the second admin.
pub(crate) fn invitation_diff(req: &InviteRequest) -> String {
    let mut diff = format!(
        "invitation for {}: targets {} as {}, from {} until {}, reason {:?}",
        req.email.trim().to_ascii_lowercase(),
        req.targets,
        req.accounts,
        req.from.as_deref().unwrap_or("approval"),
        req.until,
        req.reason.trim(),
    );
    if req.approve_each_session {
        diff.push_str(", each session approved");
    }
    diff
}

impl App {
    /// Checks an invitation as asked (now: `from` defaults to the moment this runs, which for a
    /// held one is its approval).
    pub(crate) async fn draft_invitation(&self, req: &InviteRequest) -> Result<InvitationDraft> {
        let now = self.now().unix_timestamp();
        let starts_at = parse_moment("from", req.from.as_deref(), now)?;
        let ends_at = parse_moment("until", Some(&req.until), now)?;
        let email = req.email.trim().to_ascii_lowercase();
        let ask = inv::Ask {
            email: &email,
            targets: &req.targets,
            accounts: &req.accounts,
            starts_at,
            ends_at,
            reason: &req.reason,
        };
        let invitation = inv::invite(&ask, now)?;
        for t in &invitation.targets {
            if self.store.target_by_name(t).await?.is_none() {
                return Err(Error::invalid("targets", format!("targets: no target {t}")));
            }
        }
        // Without both, the link could reach nobody or lead nowhere: fail before anything is kept.
        let Some(base) = self.config.external.base_url() else {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "invitations need the external listener: set [external] listen",
            ));
        };
        if self.config.notify.smtp_host.is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "invitations are sent by e-mail: set [notify] smtp_host",
            ));
        }
        Ok(InvitationDraft {
            email,
            targets: invitation.targets,
            accounts: invitation.accounts,
            reason: req.reason.trim().to_owned(),
            starts_at,
            ends_at,
            approve_each_session: req.approve_each_session,
            base,
        })
    }

    /// Keeps a checked invitation inside `tx` and queues its link to the invitee: the
    /// `invite.create` entry (the caller commits it) and the invitation.
    pub(crate) async fn keep_invitation(
        &self,
        tx: &mut WriteTx,
        inviter: &str,
        draft: InvitationDraft,
    ) -> Result<(NewAuditEntry, InvitationInfo)> {
        let now = self.now().unix_timestamp();
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(12);
        let (token, link_hash) = cofre_crypto::token::generate_token();
        let row = InvitationRow {
            id: id.clone(),
            email: draft.email,
            inviter: inviter.to_owned(),
            targets: draft.targets.join(","),
            accounts: draft.accounts.join(","),
            reason: draft.reason,
            starts_at: draft.starts_at,
            ends_at: draft.ends_at,
            approve_each_session: draft.approve_each_session,
            state: State::Active.as_str().to_owned(),
            created_at: now,
            link_hash,
            redeemed_at: None,
            password_hash: None,
            totp_sealed: None,
            totp_last_step: None,
            failed_logins: 0,
            retry_after: 0,
            revoked_at: None,
            revoked_by: None,
        };
        let factor = match self.config.external.second_factor {
            SecondFactor::Totp => "set a password and enrol an authenticator app",
            SecondFactor::Email => "set a password (each login then sends a code to this address)",
        };
        let body = Zeroizing::new(format!(
            "Hello,\n\n{inviter} invites you to a recorded terminal session on {targets} as \
             {accounts}, from {from} to {until}.\nReason: {reason}\n\nOpen this link in your \
             browser to {factor} (it works once):\n\n\
             {base}/invite/{token}\n\nEverything you do in the session is recorded. If you did \
             not expect this, ignore this e-mail.\n",
            inviter = row.inviter,
            targets = row.targets,
            accounts = row.accounts,
            from = rfc3339(row.starts_at),
            until = rfc3339(row.ends_at),
            reason = row.reason,
            base = draft.base,
            token = token.as_str(),
        ));
        tx.insert_invitation(&row).await?;
        self.queue_secret_email(
            tx,
            &row.email,
            "[Cofre] you are invited to a recorded session",
            &body,
        )
        .await?;
        let entry = NewAuditEntry::new(inviter, "invite.create", format!("invite:{id}"))
            .detail("email", row.email.as_str())
            .detail("targets", row.targets.as_str())
            .detail("accounts", row.accounts.as_str())
            .detail("from", rfc3339(row.starts_at))
            .detail("until", rfc3339(row.ends_at))
            .detail("reason", row.reason.as_str())
            .detail("approve_each_session", row.approve_each_session);
        Ok((entry, info(&row, now)?))
    }
}

impl Approvals<'_> {
    /// Someone invites a third party; the link goes to its address by e-mail.
    ///
    /// An admin's invitation gives someone new a session on the instance's targets, so it is
    /// dual-controlled like any other widening: held for a second admin where one exists
    /// (`[governance] dual_control`); policies are not consulted. Anyone else invites only where
    /// a policy gives it `invite` (and `session`: never beyond what it reaches itself) on each
    /// target, for a window inside those policies; an `approve` policy makes it an access
    /// request (`Approvals::invite_by_policy`).
    pub async fn create_invitation(&self, who: &Principal, req: &InviteRequest) -> Result<Invited> {
        if !cofre_core::role::role_may(who.mode, who.role, Action::ManageInvitations)
            || who.invitation().is_some()
        {
            return self.invite_by_policy(who, req).await;
        }
        who.require(Action::ManageInvitations)?;
        let change = Change::InviteCreate {
            invite: req.clone(),
        };
        let applied = self.propose_change(who, change).await?.map(|o| match o {
            Output::Invitation(i) => Ok(*i),
            _ => Err(Error::internal("inviting", "unexpected output")),
        })?;
        Ok(match applied {
            Applied::Done(i) => Invited::Done(i),
            Applied::Held(c) => Invited::Held(c),
        })
    }

    /// Every invitation (admins and auditors), newest id order.
    pub async fn list_invitations(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<InvitationInfo>> {
        who.require(Action::ViewInvitations)?;
        let limit = page_limit(limit)?;
        let now = self.now().unix_timestamp();
        let rows = self.store.invitation_page(None, cursor, limit + 1).await?;
        let page = paginate(rows, limit, |r| r.id.clone(), |r| info(&r, now));
        Ok(Page {
            items: page.items.into_iter().collect::<Result<_>>()?,
            next_cursor: page.next_cursor,
        })
    }

    pub async fn get_invitation(&self, who: &Principal, id: &str) -> Result<InvitationInfo> {
        who.require(Action::ViewInvitations)?;
        let row = self
            .store
            .invitation(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let mut shown = info(&row, self.now().unix_timestamp())?;
        shown.pending_sessions = self
            .store
            .pending_invitation_sessions(id)
            .await?
            .into_iter()
            .map(session_ask_info)
            .collect();
        Ok(shown)
    }

    /// Ends an invitation now: the link and the login are refused, the live sessions end.
    pub async fn revoke_invitation(&self, who: &Principal, id: &str) -> Result<InvitationInfo> {
        who.require(Action::ManageInvitations)?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let mut row = tx.invitation(id).await?.ok_or_else(|| not_found(id))?;
        let mut m = machine(&row)?;
        if let Err(refusal) = m.revoke() {
            drop(tx);
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::RequestClosed,
                refusal.to_string(),
            ));
        }
        if !tx.revoke_invitation(id, who.username(), now).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "the invitation changed meanwhile; look again",
            ));
        }
        row.state = m.state.as_str().to_owned();
        row.revoked_at = Some(now);
        row.revoked_by = Some(who.username().to_owned());
        tx.enqueue_notification(
            "email",
            &row.email,
            "[Cofre] your invitation was revoked",
            &format!(
                "Hello,\n\nThe invitation from {} ({}) was revoked by {}: its link, login and \
                 sessions no longer work.\n",
                row.inviter,
                row.reason,
                who.username()
            ),
            now,
        )
        .await?;
        let entry = NewAuditEntry::new(who.username(), "invite.revoke", format!("invite:{id}"))
            .detail("email", row.email.as_str());
        self.commit(tx, entry).await?;
        // Its live sessions end with it (on this node, like `session kill`).
        self.live.kill_by_request(
            id,
            &format!("the invitation {id} was revoked by {}", who.username()),
        );
        self.notifier_wake();
        info(&row, now)
    }
}

impl Sessions<'_> {
    /// The enrolment page of a one-time link: what it invites to and, with TOTP, a new seed.
    /// Refused (all alike) for an unknown, used, revoked or expired link.
    pub async fn open_invitation(&self, token: &str, source: &str) -> Result<Enrolment> {
        let row = self.redeemable_link(token, source, true).await?;
        let totp = match self.config.external.second_factor {
            SecondFactor::Email => None,
            SecondFactor::Totp => {
                let seed = cofre_crypto::totp::generate_secret();
                let sealed = self
                    .with_master(|mk| {
                        cofre_crypto::envelope::seal(mk, &seed, seed_aad(&row.id).as_bytes())
                    })?
                    .map_err(|e| Error::internal("sealing a TOTP seed", e))?;
                Some(TotpEnrolment {
                    secret: Zeroizing::new(cofre_crypto::totp::secret_base32(&seed)),
                    uri: Zeroizing::new(cofre_crypto::totp::otpauth_uri(
                        &seed, &row.email, "Cofre",
                    )),
                    sealed_seed: format!(
                        "{}.{}",
                        hex::encode(&sealed.wrapped_key),
                        hex::encode(&sealed.ciphertext)
                    ),
                })
            }
        };
        Ok(Enrolment {
            invitation: row.id.clone(),
            email: row.email.clone(),
            targets: split(&row.targets),
            accounts: split(&row.accounts),
            starts_at: rfc3339(row.starts_at),
            ends_at: rfc3339(row.ends_at),
            totp,
        })
    }

    /// The invitation of a link that may be redeemed now; refused alike otherwise (and, when
    /// `audit`, recorded as `invite.link_refused` with the reason).
    async fn redeemable_link(
        &self,
        token: &str,
        source: &str,
        audit: bool,
    ) -> Result<InvitationRow> {
        let hash = cofre_crypto::token::hash_token(token);
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx.invitation_by_link(&hash).await?;
        drop(tx);
        let Some(row) = row else {
            if audit {
                self.record(
                    NewAuditEntry::new("anonymous", "invite.link_refused", "invite:unknown")
                        .outcome("denied")
                        .detail("why", "no such link")
                        .detail("source", source),
                )
                .await?;
            }
            return Err(link_refused());
        };
        if let Err(why) = machine(&row)?.redeemable(now) {
            if audit {
                self.record(
                    NewAuditEntry::new(
                        "anonymous",
                        "invite.link_refused",
                        format!("invite:{}", row.id),
                    )
                    .outcome("denied")
                    .detail("why", why.to_string())
                    .detail("source", source),
                )
                .await?;
            }
            return Err(link_refused());
        }
        Ok(row)
    }

    /// Uses the one-time link: the invitee's password (zxcvbn 3, as users') and, with TOTP, a
    /// code of the seed the enrolment page showed: then the invitee is logged in. With mailed
    /// codes, the password only: a code goes to the invitation's address, and the invitee
    /// confirms it on the code page ([`Sessions::invitee_code`]). Once.
    pub async fn redeem_invitation(
        &self,
        token: &str,
        password: &str,
        sealed_seed: &str,
        code: &str,
        source: &str,
    ) -> Result<Redeemed> {
        let now = self.now().unix_timestamp();
        let row = self.redeemable_link(token, source, false).await?;
        super::accounts::check_new_password(password, &[row.email.as_str(), row.id.as_str()])?;
        let factor = self.config.external.second_factor;
        let totp = match factor {
            SecondFactor::Email => None,
            SecondFactor::Totp => {
                let (wrapped, ct) = sealed_seed
                    .split_once('.')
                    .and_then(|(a, b)| Some((hex::decode(a).ok()?, hex::decode(b).ok()?)))
                    .ok_or_else(|| {
                        Error::invalid("totp", "totp: reload the page and scan the new code")
                    })?;
                let sealed = cofre_crypto::envelope::SealedSecret {
                    wrapped_key: wrapped,
                    ciphertext: ct,
                };
                let seed = self
                    .with_master(|mk| {
                        cofre_crypto::envelope::open(mk, &sealed, seed_aad(&row.id).as_bytes())
                    })?
                    .map_err(|_| {
                        Error::invalid("totp", "totp: reload the page and scan the new code")
                    })?;
                let unix = u64::try_from(now).unwrap_or(0);
                let Some(step) = cofre_crypto::totp::verify(&seed, code, unix, None) else {
                    return Err(Error::invalid(
                        "code",
                        "code: not the authenticator's current code for the seed shown",
                    ));
                };
                Some((sealed, i64::try_from(step).unwrap_or(i64::MAX)))
            }
        };
        let phc = tokio::task::spawn_blocking({
            let pw = Zeroizing::new(password.to_owned());
            move || cofre_crypto::password::hash_password(&pw)
        })
        .await
        .map_err(|e| Error::internal("hashing a password", e))?
        .map_err(|e| Error::internal("hashing a password", e))?;
        let mut tx = self.store.write().await?;
        let redeemed = match &totp {
            Some((sealed, step)) => {
                tx.redeem_invitation(
                    &row.id,
                    &phc,
                    (&sealed.wrapped_key, &sealed.ciphertext),
                    *step,
                    now,
                )
                .await?
            }
            None => tx.redeem_invitation_by_email(&row.id, &phc, now).await?,
        };
        if !redeemed {
            // Another tab or another holder of the link got there first.
            return Err(link_refused());
        }
        let entry = NewAuditEntry::new(
            &format!("invitee:{}", row.id),
            "invite.redeem",
            format!("invite:{}", row.id),
        )
        .detail("email", row.email.as_str())
        .detail("second_factor", factor.as_str())
        .detail("source", source);
        if totp.is_some() {
            self.commit(tx, entry).await?;
            return Ok(Redeemed::LoggedIn(self.invitee_cookie(&row, now)?));
        }
        let ticket = self.issue_code(&mut tx, &row, now).await?;
        self.commit(tx, entry).await?;
        self.notifier_wake();
        Ok(Redeemed::CodeSent(ticket))
    }

    /// The password step of a login, shared by both second factors: the invitation whose
    /// password this is, with the write transaction its second factor is judged in; `None`
    /// (recorded, counted against the address's invitations) for an unknown address, a wrong
    /// password or a locked-out invitee. An unknown address costs the same argon2 check.
    async fn invitee_password(
        &self,
        email: &str,
        password: &str,
        source: &str,
        now: i64,
    ) -> Result<Option<(WriteTx, InvitationRow)>> {
        let email = email.trim().to_ascii_lowercase();
        let rows = self.store.redeemed_invitations_of(&email).await?;
        let candidates: Vec<(String, String)> = rows
            .iter()
            .filter(|r| machine(r).is_ok_and(|m| m.usable(now).is_ok()))
            .filter_map(|r| r.password_hash.clone().map(|h| (r.id.clone(), h)))
            .collect();
        let checked = tokio::task::spawn_blocking({
            let pw = Zeroizing::new(password.to_owned());
            move || {
                if candidates.is_empty() {
                    // The same cost as a known address: nothing tells the two apart.
                    let _ =
                        cofre_crypto::password::verify_password(&pw, super::accounts::DUMMY_HASH);
                    return None;
                }
                candidates
                    .into_iter()
                    .find(|(_, h)| cofre_crypto::password::verify_password(&pw, h))
                    .map(|(id, _)| id)
            }
        })
        .await
        .map_err(|e| Error::internal("checking a password", e))?;
        let Some(id) = checked else {
            // A wrong password counts against each of the address's invitations.
            for r in &rows {
                let mut tx = self.store.write().await?;
                let wait = self.wait_after(r.failed_logins + 1);
                tx.invitation_login_failed(&r.id, now + wait).await?;
                self.commit(tx, login_failed(Some(&r.id), "wrong password", source))
                    .await?;
            }
            if rows.is_empty() {
                self.record(login_failed(None, "no such invitee", source))
                    .await?;
            }
            return Ok(None);
        };
        let mut tx = self.store.write().await?;
        let Some(row) = tx.invitation(&id).await? else {
            return Ok(None);
        };
        if row.retry_after > now {
            drop(tx);
            self.record(login_failed(Some(&id), "locked out: waiting", source))
                .await?;
            return Ok(None);
        }
        Ok(Some((tx, row)))
    }

    /// A returning invitee with TOTP: e-mail, password and the authenticator's code, checked
    /// against each of that address's enrolled, active invitations.
    pub async fn invitee_login(
        &self,
        email: &str,
        password: &str,
        code: &str,
        source: &str,
    ) -> Result<InviteeLogin> {
        let now = self.now().unix_timestamp();
        let Some((mut tx, row)) = self.invitee_password(email, password, source, now).await? else {
            return Err(login_refused());
        };
        let id = row.id.clone();
        let seed = match &row.totp_sealed {
            Some((w, c)) => {
                let sealed = cofre_crypto::envelope::SealedSecret {
                    wrapped_key: w.clone(),
                    ciphertext: c.clone(),
                };
                self.with_master(|mk| {
                    cofre_crypto::envelope::open(mk, &sealed, seed_aad(&row.id).as_bytes())
                })?
                .map_err(|e| Error::internal("opening a TOTP seed", e))?
            }
            None => {
                // Enrolled with mailed codes; the instance asks for TOTP now.
                self.commit(tx, login_failed(Some(&id), "enrolled without TOTP", source))
                    .await?;
                return Err(login_refused());
            }
        };
        let last = row.totp_last_step.and_then(|s| u64::try_from(s).ok());
        let unix = u64::try_from(now).unwrap_or(0);
        let step =
            cofre_crypto::totp::verify(&seed, code, unix, last).and_then(|s| i64::try_from(s).ok());
        let used = match step {
            Some(step) => tx.invitation_login_succeeded(&id, step).await?,
            None => false,
        };
        if !used {
            let wait = self.wait_after(row.failed_logins + 1);
            tx.invitation_login_failed(&id, now + wait).await?;
            self.commit(
                tx,
                login_failed(Some(&id), "wrong or used TOTP code", source),
            )
            .await?;
            return Err(login_refused());
        }
        let entry = NewAuditEntry::new(
            &format!("invitee:{id}"),
            "invite.login",
            format!("invite:{id}"),
        )
        .detail("email", row.email.as_str())
        .detail("second_factor", "totp")
        .detail("source", source);
        self.commit(tx, entry).await?;
        self.invitee_cookie(&row, now)
    }

    /// The password step with mailed codes (`[external] second_factor = "email"`): a right
    /// password sends a code to the invitation's address. The answer is a ticket whatever
    /// happened, so the page that asks for the code cannot tell a right password from a wrong
    /// one, a known address from an unknown or a locked-out invitee from another.
    pub async fn invitee_login_by_email(
        &self,
        email: &str,
        password: &str,
        source: &str,
    ) -> Result<CodeTicket> {
        let now = self.now().unix_timestamp();
        let Some((mut tx, row)) = self.invitee_password(email, password, source, now).await? else {
            // A ticket that names nothing: its code page refuses every code.
            let (ticket, _) = cofre_crypto::token::generate_token();
            return Ok(CodeTicket { ticket });
        };
        let ticket = self.issue_code(&mut tx, &row, now).await?;
        let entry = NewAuditEntry::new(
            &format!("invitee:{}", row.id),
            "invite.code_sent",
            format!("invite:{}", row.id),
        )
        .detail("email", row.email.as_str())
        .detail("source", source);
        self.commit(tx, entry).await?;
        self.notifier_wake();
        Ok(ticket)
    }

    /// The code step: the ticket of the code page and the code the invitee read in its mail.
    /// Right, once, within its 10 minutes and 3 tries: logged in. Compared as HMACs in constant
    /// time; a wrong code counts as a failed login (lockout) and against the code's tries.
    pub async fn invitee_code(
        &self,
        ticket: &str,
        code: &str,
        source: &str,
    ) -> Result<InviteeLogin> {
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let Some(c) = tx
            .invitation_code_by_ticket(&cofre_crypto::token::hash_token(ticket))
            .await?
        else {
            drop(tx);
            self.record(login_failed(
                None,
                "no code for this login (wrong password, used or void code)",
                source,
            ))
            .await?;
            return Err(login_refused());
        };
        let id = c.invitation_id.clone();
        let row = match tx.invitation(&id).await? {
            Some(row) if machine(&row)?.usable(now).is_ok() => row,
            _ => {
                tx.delete_invitation_code(&id).await?;
                self.commit(
                    tx,
                    login_failed(Some(&id), "the invitation is not usable", source),
                )
                .await?;
                return Err(login_refused());
            }
        };
        if let Err(why) = inv::code_triable(c.expires_at, c.tries, now) {
            tx.delete_invitation_code(&id).await?;
            self.commit(tx, login_failed(Some(&id), &why.to_string(), source))
                .await?;
            return Err(login_refused());
        }
        let expected = self.code_mac(&id, code.trim())?;
        if !cofre_crypto::token::constant_time_eq(expected.as_bytes(), c.code_mac.as_bytes()) {
            if c.tries + 1 >= inv::CODE_TRIES {
                tx.delete_invitation_code(&id).await?;
            } else {
                tx.invitation_code_failed(&id).await?;
            }
            let wait = self.wait_after(row.failed_logins + 1);
            tx.invitation_login_failed(&id, now + wait).await?;
            self.commit(tx, login_failed(Some(&id), "wrong mailed code", source))
                .await?;
            return Err(login_refused());
        }
        // Used once.
        tx.delete_invitation_code(&id).await?;
        tx.invitation_code_login_succeeded(&id).await?;
        let entry = NewAuditEntry::new(
            &format!("invitee:{id}"),
            "invite.login",
            format!("invite:{id}"),
        )
        .detail("email", row.email.as_str())
        .detail("second_factor", "email")
        .detail("source", source);
        self.commit(tx, entry).await?;
        self.invitee_cookie(&row, now)
    }
    /// Seconds the next try waits after `failures` failed logins in a row.
    fn wait_after(&self, failures: i64) -> i64 {
        let threshold = i64::from(self.config.external.lockout_threshold);
        if failures < threshold {
            return 0;
        }
        let doublings = u32::try_from((failures - threshold).min(10)).unwrap_or(10);
        (30_i64 << doublings).min(MAX_WAIT_SECONDS)
    }

    /// The invitee a cookie stands for, if its MAC holds, it has not expired and the invitation
    /// may be used now; `None` otherwise (the page sends it to the login).
    pub async fn invitee(&self, cookie: &str) -> Result<Option<Invitee>> {
        let Some((payload, mac)) = cookie.rsplit_once('.') else {
            return Ok(None);
        };
        let expected = self.cookie_mac(payload)?;
        if !cofre_crypto::token::constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return Ok(None);
        }
        let mut parts = payload.split('.');
        let (Some("v1"), Some(id), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let now = self.now().unix_timestamp();
        if expires.parse::<i64>().map_or(true, |e| e <= now) {
            return Ok(None);
        }
        let Some(row) = self.store.invitation(id).await? else {
            return Ok(None);
        };
        if machine(&row)?.usable(now).is_err() || row.redeemed_at.is_none() {
            return Ok(None);
        }
        Ok(Some(Invitee {
            principal: self.invitee_principal_of(&row),
            invitation: info(&row, now)?,
        }))
    }
}

/// How long an invitee's session waits for its approval before it is refused.
pub const APPROVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

fn session_ask_info(r: InvitationSessionRow) -> InvitationSessionInfo {
    InvitationSessionInfo {
        id: r.id,
        target: r.target,
        account: r.account,
        source: r.source,
        state: r.state,
        asked_at: rfc3339(r.asked_at),
        decided_by: r.decided_by,
        comment: r.comment,
    }
}

impl Sessions<'_> {
    /// For an invitee whose invitation wants each session approved: asks for this one (the
    /// inviter and the admins are told) and returns the ask's id; `None` when no approval is
    /// needed. A pair the invitation does not cover is refused here, before anyone is asked.
    pub async fn ask_session_approval(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        source: &str,
    ) -> Result<Option<String>> {
        let Some(invitation) = who.invitation() else {
            return Ok(None);
        };
        let row = match self.invitation_session(invitation, target, account).await? {
            Ok(row) => row,
            // `start_session` records and refuses it as it does without approvals.
            Err(_) => return Ok(None),
        };
        if !row.approve_each_session {
            return Ok(None);
        }
        let now = self.now().unix_timestamp();
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(12);
        let ask = InvitationSessionRow {
            id: id.clone(),
            invitation_id: row.id.clone(),
            target: target.to_owned(),
            account: account.to_owned(),
            source: source.to_owned(),
            state: "pending".into(),
            asked_at: now,
            decided_by: None,
            decided_at: None,
            comment: None,
        };
        let mut tx = self.store.write().await?;
        tx.insert_invitation_session(&ask).await?;
        let subject = format!(
            "Invitation {}: {} asks for a session to {account}@{target}",
            row.id, row.email
        );
        let text = format!(
            "{subject}\n\nReason of the invitation: {}\nFrom: {source}\n\nDecide with: cofre invite \
             approve-session {} {id}  (or deny-session ... --comment WHY)\n",
            row.reason, row.id
        );
        let body = serde_json::json!({
            "event": "invite.session_asked",
            "invitation": row.id,
            "session_ask": id,
            "target": target,
            "account": account,
            "at": rfc3339(now),
        });
        self.queue_admin_notices(&mut tx, &subject, &text, &body)
            .await?;
        // The inviter decides too; an admin inviter was told above already.
        if self.config.notify.smtp_host.is_some() {
            if let Some(inviter) = tx.user_by_name(&row.inviter).await? {
                if let (Some(email), false) = (inviter.email, inviter.role == Role::Admin.as_str())
                {
                    let mail = format!("Hello {},\n\n{text}", row.inviter);
                    tx.enqueue_notification("email", &email, &subject, &mail, now)
                        .await?;
                }
            }
        }
        let entry = NewAuditEntry::new(
            who.username(),
            "invite.session_asked",
            format!("invite:{}", row.id),
        )
        .detail("session_ask", id.as_str())
        .detail("target", target)
        .detail("account", account)
        .detail("source", source);
        self.commit(tx, entry).await?;
        self.notifier_wake();
        Ok(Some(id))
    }

    /// Waits until the ask is decided (or `within` passes, or the invitation ends): approved,
    /// the principal that may open that one session; denied, the refusal with who and why.
    pub async fn wait_session_approval(
        &self,
        who: &Principal,
        ask: &str,
        within: std::time::Duration,
    ) -> Result<Principal> {
        let invitation = who
            .invitation()
            .ok_or_else(|| Error::forbidden("not an invitee"))?
            .to_owned();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let row = self
                .store
                .invitation_session(ask)
                .await?
                .filter(|r| r.invitation_id == invitation)
                .ok_or_else(|| Error::forbidden("no such session request"))?;
            match row.state.as_str() {
                "approved" => {
                    let mut p = who.clone();
                    p.approved_session = Some(row.id);
                    return Ok(p);
                }
                "pending" => {}
                _ => {
                    return Err(Error::new(
                        ErrorKind::Forbidden,
                        ErrorCode::RequestClosed,
                        format!(
                            "the session was denied by {}: {}",
                            row.decided_by.as_deref().unwrap_or("nobody"),
                            row.comment.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
            self.invitation_usable(&invitation).await?;
            if tokio::time::Instant::now() >= deadline {
                let mut tx = self.store.write().await?;
                if tx
                    .decide_invitation_session(
                        ask,
                        "expired",
                        "system",
                        self.now().unix_timestamp(),
                        "nobody decided in time",
                    )
                    .await?
                {
                    let entry = NewAuditEntry::new(
                        "system",
                        "invite.session_expired",
                        format!("invite:{invitation}"),
                    )
                    .detail("session_ask", ask);
                    self.commit(tx, entry).await?;
                }
                continue;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// For `start_session`: an invitation that wants each session approved opens one only with
    /// an approval the principal carries, and uses it up (audited).
    pub(crate) async fn use_session_approval(
        &self,
        who: &Principal,
        row: &InvitationRow,
        target: &str,
        account: &str,
    ) -> Result<bool> {
        if !row.approve_each_session {
            return Ok(true);
        }
        let Some(ask) = &who.approved_session else {
            return Ok(false);
        };
        let mut tx = self.store.write().await?;
        if !tx
            .use_invitation_session(ask, &row.id, target, account)
            .await?
        {
            return Ok(false);
        }
        let entry = NewAuditEntry::new(
            who.username(),
            "invite.session_used",
            format!("invite:{}", row.id),
        )
        .detail("session_ask", ask.as_str());
        self.commit(tx, entry).await?;
        Ok(true)
    }
}

impl Approvals<'_> {
    /// An admin (the inviter is one) approves or denies a waiting session of an invitation.
    pub async fn decide_invitation_session(
        &self,
        who: &Principal,
        invitation: &str,
        ask: &str,
        approve: bool,
        comment: Option<&str>,
    ) -> Result<InvitationSessionInfo> {
        // An admin decides any invitee's sessions; the inviter (a user whose policy lets them
        // invite) decides those of its own invitation, and nobody else does.
        if let Err(refused) = who.require(Action::ManageInvitations) {
            let inviter = self.store.invitation(invitation).await?.map(|i| i.inviter);
            if who.invitation.is_some() || inviter.as_deref() != Some(who.username()) {
                return Err(refused);
            }
        }
        let comment = comment.unwrap_or("").trim();
        cofre_core::names::check_text("comment", comment, 500)?;
        if !approve && comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say why the session is denied (at least 3 characters)",
            ));
        }
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .invitation_session(ask)
            .await?
            .filter(|r| r.invitation_id == invitation)
            .ok_or_else(|| Error::not_found(format!("session request {ask}")).with_field("ask"))?;
        let state = if approve { "approved" } else { "denied" };
        if !tx
            .decide_invitation_session(ask, state, who.username(), now, comment)
            .await?
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotPending,
                format!("the session request {ask} is {} already", row.state),
            ));
        }
        let entry = NewAuditEntry::new(
            who.username(),
            "invite.session_decide",
            format!("invite:{invitation}"),
        )
        .detail("session_ask", ask)
        .detail("verdict", if approve { "approve" } else { "deny" })
        .detail("comment", comment);
        self.commit(tx, entry).await?;
        let decided = self
            .store
            .invitation_session(ask)
            .await?
            .ok_or_else(|| Error::not_found(format!("session request {ask}")))?;
        Ok(session_ask_info(decided))
    }
}
