//! Invitations for third parties. Changes read the row inside the [`WriteTx`], after the audit
//! head's lock, so a redemption racing another (or a revocation) is judged after it.

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub inviter: String,
    pub targets: String,
    pub accounts: String,
    pub reason: String,
    /// Unix seconds, as are the other moments.
    pub starts_at: i64,
    pub ends_at: i64,
    pub approve_each_session: bool,
    pub state: String,
    pub created_at: i64,
    pub link_hash: String,
    pub redeemed_at: Option<i64>,
    pub password_hash: Option<String>,
    /// The TOTP seed sealed under the master key: (wrapped data key, ciphertext).
    pub totp_sealed: Option<(Vec<u8>, Vec<u8>)>,
    pub totp_last_step: Option<i64>,
    pub failed_logins: i64,
    pub retry_after: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// A code mailed to an invitee (`invitation_codes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationCodeRow {
    pub invitation_id: String,
    /// SHA-256 of the ticket the code page carries.
    pub ticket_hash: String,
    /// HMAC of the code (never the code).
    pub code_mac: String,
    pub expires_at: i64,
    /// Wrong tries so far.
    pub tries: i64,
}

const COLUMNS: &str = "id, email, inviter, targets, accounts, reason, starts_at, ends_at, \
    approve_each_session, state, created_at, link_hash, redeemed_at, password_hash, \
    totp_wrapped_key, totp_ciphertext, totp_last_step, failed_logins, retry_after, revoked_at, \
    revoked_by";

fn row_of(row: &sqlx::any::AnyRow) -> Result<InvitationRow> {
    let wrapped: Option<Vec<u8>> = row.try_get(14)?;
    let ct: Option<Vec<u8>> = row.try_get(15)?;
    Ok(InvitationRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        inviter: row.try_get(2)?,
        targets: row.try_get(3)?,
        accounts: row.try_get(4)?,
        reason: row.try_get(5)?,
        starts_at: row.try_get(6)?,
        ends_at: row.try_get(7)?,
        approve_each_session: row.try_get::<i64, _>(8)? != 0,
        state: row.try_get(9)?,
        created_at: row.try_get(10)?,
        link_hash: row.try_get(11)?,
        redeemed_at: row.try_get(12)?,
        password_hash: row.try_get(13)?,
        totp_sealed: wrapped.zip(ct),
        totp_last_step: row.try_get(16)?,
        failed_logins: row.try_get(17)?,
        retry_after: row.try_get(18)?,
        revoked_at: row.try_get(19)?,
        revoked_by: row.try_get(20)?,
    })
}

impl Store {
    pub async fn invitation(&self, id: &str) -> Result<Option<InvitationRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM invitations WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(row_of).transpose()
    }

    /// Invitations by id after `after`, all of them or only `inviter`'s.
    pub async fn invitation_page(
        &self,
        inviter: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InvitationRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE id > $1 AND ($2 = '' OR inviter = $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(after.unwrap_or(""))
        .bind(inviter.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// The redeemed, active invitations of `email` (what a returning invitee's login is checked
    /// against).
    pub async fn redeemed_invitations_of(&self, email: &str) -> Result<Vec<InvitationRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE email = $1 AND state = 'active' \
             AND redeemed_at IS NOT NULL ORDER BY id"
        ))
        .bind(email)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(row_of).collect()
    }
}

impl WriteTx {
    pub async fn invitation(&mut self, id: &str) -> Result<Option<InvitationRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM invitations WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(row_of).transpose()
    }

    pub async fn invitation_by_link(&mut self, link_hash: &str) -> Result<Option<InvitationRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE link_hash = $1"
        ))
        .bind(link_hash)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(row_of).transpose()
    }

    pub async fn insert_invitation(&mut self, r: &InvitationRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO invitations (id, email, inviter, targets, accounts, reason, starts_at, \
             ends_at, approve_each_session, state, created_at, link_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.email)
        .bind(&r.inviter)
        .bind(&r.targets)
        .bind(&r.accounts)
        .bind(&r.reason)
        .bind(r.starts_at)
        .bind(r.ends_at)
        .bind(i64::from(r.approve_each_session))
        .bind(&r.state)
        .bind(r.created_at)
        .bind(&r.link_hash)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("invitation {}", r.id)))?;
        Ok(())
    }

    /// Stores the invitee's password and TOTP seed, if the link was not used meanwhile.
    pub async fn redeem_invitation(
        &mut self,
        id: &str,
        password_hash: &str,
        totp_sealed: (&[u8], &[u8]),
        totp_step: i64,
        at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitations SET redeemed_at = $1, password_hash = $2, totp_wrapped_key = $3, \
             totp_ciphertext = $4, totp_last_step = $5 \
             WHERE id = $6 AND redeemed_at IS NULL AND state = 'active'",
        )
        .bind(at)
        .bind(password_hash)
        .bind(totp_sealed.0.to_vec())
        .bind(totp_sealed.1.to_vec())
        .bind(totp_step)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses the link without a TOTP seed (`[external] second_factor = "email"`): the password only.
    pub async fn redeem_invitation_by_email(
        &mut self,
        id: &str,
        password_hash: &str,
        at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitations SET redeemed_at = $1, password_hash = $2 \
             WHERE id = $3 AND redeemed_at IS NULL AND state = 'active'",
        )
        .bind(at)
        .bind(password_hash)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps the code mailed to an invitee (replacing any earlier one) and resets its failures'
    /// wait: the password was right.
    pub async fn put_invitation_code(&mut self, c: &InvitationCodeRow) -> Result<()> {
        sqlx::query("DELETE FROM invitation_codes WHERE invitation_id = $1")
            .bind(&c.invitation_id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO invitation_codes (invitation_id, ticket_hash, code_mac, expires_at, tries) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.invitation_id)
        .bind(&c.ticket_hash)
        .bind(&c.code_mac)
        .bind(c.expires_at)
        .bind(c.tries)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The code a login's ticket stands for.
    pub async fn invitation_code_by_ticket(
        &mut self,
        ticket_hash: &str,
    ) -> Result<Option<InvitationCodeRow>> {
        let row = sqlx::query(
            "SELECT invitation_id, ticket_hash, code_mac, expires_at, tries FROM invitation_codes \
             WHERE ticket_hash = $1",
        )
        .bind(ticket_hash)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(InvitationCodeRow {
                invitation_id: r.try_get(0)?,
                ticket_hash: r.try_get(1)?,
                code_mac: r.try_get(2)?,
                expires_at: r.try_get(3)?,
                tries: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Counts a wrong code.
    pub async fn invitation_code_failed(&mut self, invitation_id: &str) -> Result<()> {
        sqlx::query("UPDATE invitation_codes SET tries = tries + 1 WHERE invitation_id = $1")
            .bind(invitation_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Forgets a code: used, expired or out of tries. Whether it was there.
    pub async fn delete_invitation_code(&mut self, invitation_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM invitation_codes WHERE invitation_id = $1")
            .bind(invitation_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A login by mailed code succeeded: the failures are forgotten.
    pub async fn invitation_code_login_succeeded(&mut self, id: &str) -> Result<()> {
        sqlx::query("UPDATE invitations SET failed_logins = 0, retry_after = 0 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Counts a failed login and sets when the next may be tried.
    pub async fn invitation_login_failed(&mut self, id: &str, retry_after: i64) -> Result<()> {
        sqlx::query(
            "UPDATE invitations SET failed_logins = failed_logins + 1, retry_after = $1 \
             WHERE id = $2",
        )
        .bind(retry_after)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// A successful login: the count is cleared and the TOTP step used up, if it is newer than
    /// the last one (false: the code was used already).
    pub async fn invitation_login_succeeded(&mut self, id: &str, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitations SET failed_logins = 0, retry_after = 0, totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes an active invitation (false if it was not active any more).
    /// Revokes every invitation `inviter` made that could still be used at `at`; returns their
    /// (id, email, reason).
    pub async fn revoke_invitations_of_inviter(
        &mut self,
        inviter: &str,
        by: &str,
        at: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT id, email, reason FROM invitations              WHERE inviter = $1 AND state = 'active' AND ends_at > $2 ORDER BY id",
        )
        .bind(inviter)
        .bind(at)
        .fetch_all(&mut *self.tx)
        .await?;
        let found = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<(String, String, String)>>>()?;
        for (id, _, _) in &found {
            self.revoke_invitation(id, by, at).await?;
        }
        Ok(found)
    }

    pub async fn revoke_invitation(&mut self, id: &str, by: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitations SET state = 'revoked', revoked_at = $1, revoked_by = $2 \
             WHERE id = $3 AND state = 'active'",
        )
        .bind(at)
        .bind(by)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A session of an `--approve-each-session` invitation, waiting for (or past) its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationSessionRow {
    pub id: String,
    pub invitation_id: String,
    pub target: String,
    pub account: String,
    pub source: String,
    pub state: String,
    pub asked_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub comment: Option<String>,
}

const ASK_COLUMNS: &str =
    "id, invitation_id, target, account, source, state, asked_at, decided_by, decided_at, comment";

fn ask_of(row: &sqlx::any::AnyRow) -> Result<InvitationSessionRow> {
    Ok(InvitationSessionRow {
        id: row.try_get(0)?,
        invitation_id: row.try_get(1)?,
        target: row.try_get(2)?,
        account: row.try_get(3)?,
        source: row.try_get(4)?,
        state: row.try_get(5)?,
        asked_at: row.try_get(6)?,
        decided_by: row.try_get(7)?,
        decided_at: row.try_get(8)?,
        comment: row.try_get(9)?,
    })
}

impl Store {
    pub async fn invitation_session(&self, id: &str) -> Result<Option<InvitationSessionRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {ASK_COLUMNS} FROM invitation_sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(ask_of).transpose()
    }

    /// An invitation's sessions waiting for a decision, oldest first.
    pub async fn pending_invitation_sessions(
        &self,
        invitation: &str,
    ) -> Result<Vec<InvitationSessionRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {ASK_COLUMNS} FROM invitation_sessions WHERE invitation_id = $1 \
             AND state = 'pending' ORDER BY asked_at, id"
        ))
        .bind(invitation)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(ask_of).collect()
    }
}

impl WriteTx {
    pub async fn insert_invitation_session(&mut self, r: &InvitationSessionRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO invitation_sessions ({ASK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&r.id)
        .bind(&r.invitation_id)
        .bind(&r.target)
        .bind(&r.account)
        .bind(&r.source)
        .bind(&r.state)
        .bind(r.asked_at)
        .bind(r.decided_by.as_deref())
        .bind(r.decided_at)
        .bind(r.comment.as_deref())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("invitation session {}", r.id)))?;
        Ok(())
    }

    pub async fn invitation_session(&mut self, id: &str) -> Result<Option<InvitationSessionRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ASK_COLUMNS} FROM invitation_sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(ask_of).transpose()
    }

    /// Moves a waiting session to `state` (approved, denied, expired), if it still waits.
    pub async fn decide_invitation_session(
        &mut self,
        id: &str,
        state: &str,
        by: &str,
        at: i64,
        comment: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitation_sessions SET state = $1, decided_by = $2, decided_at = $3, \
             comment = $4 WHERE id = $5 AND state = 'pending'",
        )
        .bind(state)
        .bind(by)
        .bind(at)
        .bind(comment)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses the approval `id` for a session to `target`/`account` (once): false if it is not an
    /// approved, unused approval of this invitation for that pair.
    pub async fn use_invitation_session(
        &mut self,
        id: &str,
        invitation: &str,
        target: &str,
        account: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invitation_sessions SET state = 'used' WHERE id = $1 AND invitation_id = $2 \
             AND target = $3 AND account = $4 AND state = 'approved'",
        )
        .bind(id)
        .bind(invitation)
        .bind(target)
        .bind(account)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
