//! Single sign-on: identity providers, the link of an IdP subject to a user, and the logins on
//! their way through a provider.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoProviderRow {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    /// The client secret sealed under the master key: (wrapped data key, ciphertext).
    pub secret_sealed: (Vec<u8>, Vec<u8>),
    pub groups_claim: String,
    pub username_claim: String,
    /// Space-separated scopes the authorization request asks for.
    pub scopes: String,
    /// JSON list of mapping texts.
    pub mappings: String,
    pub default_role: Option<String>,
    /// JSON list of domains.
    pub allowed_domains: String,
    pub created_by: String,
    pub created_at: String,
}

/// A login sent to a provider (`sso_logins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoLoginRow {
    pub state_hash: String,
    pub provider: String,
    pub nonce: String,
    /// The PKCE verifier sealed under the master key.
    pub verifier_sealed: (Vec<u8>, Vec<u8>),
    pub redirect_uri: String,
    pub browser_hash: Option<String>,
    pub expires_at: i64,
}

const COLUMNS: &str = "name, issuer, client_id, secret_wrapped_key, secret_ciphertext, \
    groups_claim, username_claim, scopes, mappings, default_role, allowed_domains, created_by, created_at";

fn row_of(row: &sqlx::any::AnyRow) -> Result<SsoProviderRow> {
    Ok(SsoProviderRow {
        name: row.try_get(0)?,
        issuer: row.try_get(1)?,
        client_id: row.try_get(2)?,
        secret_sealed: (row.try_get(3)?, row.try_get(4)?),
        groups_claim: row.try_get(5)?,
        username_claim: row.try_get(6)?,
        scopes: row.try_get(7)?,
        mappings: row.try_get(8)?,
        default_role: row.try_get(9)?,
        allowed_domains: row.try_get(10)?,
        created_by: row.try_get(11)?,
        created_at: row.try_get(12)?,
    })
}

impl Store {
    pub async fn sso_providers(&self) -> Result<Vec<SsoProviderRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sso_providers ORDER BY name"
        ))
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(row_of).collect()
    }

    pub async fn sso_provider(&self, name: &str) -> Result<Option<SsoProviderRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sso_providers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(row_of).transpose()
    }
}

fn login_of(row: &sqlx::any::AnyRow) -> Result<SsoLoginRow> {
    Ok(SsoLoginRow {
        state_hash: row.try_get(0)?,
        provider: row.try_get(1)?,
        nonce: row.try_get(2)?,
        verifier_sealed: (row.try_get(3)?, row.try_get(4)?),
        redirect_uri: row.try_get(5)?,
        browser_hash: row.try_get(6)?,
        expires_at: row.try_get(7)?,
    })
}

const LOGIN_COLUMNS: &str = "state_hash, provider, nonce, verifier_wrapped_key, \
    verifier_ciphertext, redirect_uri, browser_hash, expires_at";

impl Store {
    /// The provider and the last SSO login (unix seconds) of a user linked to an IdP identity.
    pub async fn sso_last_login(&self, user_id: i64) -> Result<Option<(String, i64)>> {
        let mut c = self.read().await?;
        let row =
            sqlx::query("SELECT provider, last_login_at FROM sso_identities WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *c)
                .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The login of a `state`, left in place (see `WriteTx::take_sso_login`).
    pub async fn sso_login(&self, state_hash: &str) -> Result<Option<SsoLoginRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {LOGIN_COLUMNS} FROM sso_logins WHERE state_hash = $1"
        ))
        .bind(state_hash)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(login_of).transpose()
    }
}

impl WriteTx {
    pub async fn insert_sso_provider(&mut self, p: &SsoProviderRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO sso_providers ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&p.name)
        .bind(&p.issuer)
        .bind(&p.client_id)
        .bind(&p.secret_sealed.0)
        .bind(&p.secret_sealed.1)
        .bind(&p.groups_claim)
        .bind(&p.username_claim)
        .bind(&p.scopes)
        .bind(&p.mappings)
        .bind(&p.default_role)
        .bind(&p.allowed_domains)
        .bind(&p.created_by)
        .bind(&p.created_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("sso provider {}", p.name)))?;
        Ok(())
    }

    /// Removes a provider and its logins in flight; its users stay (linked, but no longer able
    /// to log in through it). Whether there was one.
    pub async fn delete_sso_provider(&mut self, name: &str) -> Result<bool> {
        sqlx::query("DELETE FROM sso_logins WHERE provider = $1")
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        let done = sqlx::query("DELETE FROM sso_providers WHERE name = $1")
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn sso_provider(&mut self, name: &str) -> Result<Option<SsoProviderRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sso_providers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(row_of).transpose()
    }

    /// Stores a login on its way to the provider, and forgets those expired by `now`.
    pub async fn insert_sso_login(&mut self, l: &SsoLoginRow, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM sso_logins WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO sso_logins (state_hash, provider, nonce, verifier_wrapped_key, \
             verifier_ciphertext, redirect_uri, browser_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&l.state_hash)
        .bind(&l.provider)
        .bind(&l.nonce)
        .bind(&l.verifier_sealed.0)
        .bind(&l.verifier_sealed.1)
        .bind(&l.redirect_uri)
        .bind(&l.browser_hash)
        .bind(l.expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Logins in flight (not expired by `now`).
    pub async fn sso_logins_in_flight(&mut self, now: i64) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM sso_logins WHERE expires_at > $1")
                .bind(now)
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    /// Takes (reads and deletes) the login of a `state`: a second callback with it finds none.
    pub async fn take_sso_login(&mut self, state_hash: &str) -> Result<Option<SsoLoginRow>> {
        let row = sqlx::query(&format!(
            "SELECT {LOGIN_COLUMNS} FROM sso_logins WHERE state_hash = $1"
        ))
        .bind(state_hash)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query("DELETE FROM sso_logins WHERE state_hash = $1")
            .bind(state_hash)
            .execute(&mut *self.tx)
            .await?;
        login_of(&row).map(Some)
    }

    /// The user an IdP subject is linked to.
    pub async fn sso_user_id(&mut self, issuer: &str, subject: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM sso_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    pub async fn link_sso_identity(
        &mut self,
        issuer: &str,
        subject: &str,
        user_id: i64,
        provider: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sso_identities (issuer, subject, user_id, provider, linked_at, \
             last_login_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user_id)
        .bind(provider)
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("the IdP identity of user {user_id}")))?;
        Ok(())
    }

    pub async fn touch_sso_identity(
        &mut self,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sso_identities SET last_login_at = $1 WHERE issuer = $2 AND subject = $3",
        )
        .bind(now)
        .bind(issuer)
        .bind(subject)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The names of the groups a user is in, read inside the transaction.
    pub async fn groups_of(&mut self, user_id: i64) -> Result<Vec<String>> {
        crate::users::groups_of(&mut self.tx, user_id).await
    }
}
