//! Users, groups, API tokens, and the login bookkeeping (failed attempts, lockout, TOTP step).

use crate::{bool_int, Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub password_hash: String,
    pub must_change_password: bool,
    /// Sealed TOTP seed (wrapped data key, ciphertext); present once enrolment started.
    pub totp_sealed: Option<(Vec<u8>, Vec<u8>)>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
    pub failed_logins: i64,
    /// Unix seconds.
    pub locked_until: Option<i64>,
    pub created_at: String,
    /// Where notifications about access requests go.
    pub email: Option<String>,
    /// Set while the user is disabled (offboarded): nothing of theirs authenticates.
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub user: UserRow,
    pub scope: String,
    pub expires_at: i64,
    pub groups: Vec<String>,
}

const USER_COLUMNS: &str = "u.id, u.username, u.role, u.password_hash, u.must_change_password, \
    u.totp_wrapped_key, u.totp_ciphertext, u.totp_enabled, u.totp_last_step, u.failed_logins, \
    u.locked_until, u.created_at, u.email, u.disabled_at, u.disabled_reason";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRow> {
    let wrapped: Option<Vec<u8>> = row.try_get("totp_wrapped_key")?;
    let ct: Option<Vec<u8>> = row.try_get("totp_ciphertext")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: row.try_get("role")?,
        password_hash: row.try_get("password_hash")?,
        must_change_password: row.try_get::<i64, _>("must_change_password")? != 0,
        totp_sealed: wrapped.zip(ct),
        totp_enabled: row.try_get::<i64, _>("totp_enabled")? != 0,
        totp_last_step: row.try_get("totp_last_step")?,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        created_at: row.try_get("created_at")?,
        email: row.try_get("email")?,
        disabled_at: row.try_get("disabled_at")?,
        disabled_reason: row.try_get("disabled_reason")?,
    })
}

async fn find_user(conn: &mut sqlx::AnyConnection, username: &str) -> Result<Option<UserRow>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

pub(crate) async fn groups_of(conn: &mut sqlx::AnyConnection, user_id: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT g.name FROM access_groups g JOIN access_group_members m ON m.group_id = g.id \
         WHERE m.user_id = $1 ORDER BY g.name",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// `$first, $first+1, ...`: `n` numbered placeholders, for an `IN (...)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        let mut c = self.read().await?;
        find_user(&mut c, username).await
    }

    pub async fn user_count(&self) -> Result<i64> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *c)
            .await?)
    }

    pub async fn user_groups(&self, user_id: i64) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        groups_of(&mut c, user_id).await
    }

    /// Users ordered by name, after `after`, with their groups.
    pub async fn users_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(UserRow, Vec<String>)>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username > $1 ORDER BY u.username LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        // The page's memberships in one query, not one per user.
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        let mut groups = std::collections::HashMap::<i64, Vec<String>>::new();
        if !ids.is_empty() {
            let sql = format!(
                "SELECT m.user_id, g.name FROM access_groups g JOIN access_group_members m ON m.group_id = g.id \
                 WHERE m.user_id IN ({}) ORDER BY g.name",
                placeholders(1, ids.len())
            );
            let mut q = sqlx::query(&sql);
            for id in &ids {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *c).await? {
                groups
                    .entry(row.try_get("user_id")?)
                    .or_default()
                    .push(row.try_get("name")?);
            }
        }
        Ok(users
            .into_iter()
            .map(|u| {
                let g = groups.remove(&u.id).unwrap_or_default();
                (u, g)
            })
            .collect())
    }

    /// The token's user and groups, if the token hash is known and not expired at `now`. One
    /// query (a row per group) because every authenticated request pays for it.
    pub async fn token_lookup(&self, token_hash: &str, now: i64) -> Result<Option<TokenRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, t.scope, t.expires_at, g.name AS group_name FROM api_tokens t \
             JOIN users u ON u.id = t.user_id \
             LEFT JOIN access_group_members m ON m.user_id = u.id \
             LEFT JOIN access_groups g ON g.id = m.group_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2 AND u.disabled_at IS NULL ORDER BY g.name"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut groups = Vec::new();
        for row in &rows {
            if let Some(g) = row.try_get::<Option<String>, _>("group_name")? {
                groups.push(g);
            }
        }
        Ok(Some(TokenRow {
            user: user_from_row(first)?,
            scope: first.try_get("scope")?,
            expires_at: first.try_get("expires_at")?,
            groups,
        }))
    }

    pub async fn group_exists(&self, name: &str) -> Result<bool> {
        let mut c = self.read().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_groups WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *c)
            .await?;
        Ok(n > 0)
    }

    /// Groups ordered by name, after `after`, with their members.
    pub async fn groups_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT id, name FROM access_groups WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            groups.push((
                row.try_get::<i64, _>("id")?,
                row.try_get::<String, _>("name")?,
            ));
        }
        // The page's members in one query, not one per group.
        let mut members = std::collections::HashMap::<i64, Vec<String>>::new();
        if !groups.is_empty() {
            let sql = format!(
                "SELECT m.group_id, u.username FROM users u JOIN access_group_members m ON m.user_id = u.id \
                 WHERE m.group_id IN ({}) ORDER BY u.username",
                placeholders(1, groups.len())
            );
            let mut q = sqlx::query(&sql);
            for (id, _) in &groups {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *c).await? {
                members
                    .entry(row.try_get("group_id")?)
                    .or_default()
                    .push(row.try_get("username")?);
            }
        }
        Ok(groups
            .into_iter()
            .map(|(id, name)| (name, members.remove(&id).unwrap_or_default()))
            .collect())
    }
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub role: &'a str,
    pub password_hash: &'a str,
    pub must_change_password: bool,
    pub created_at: &'a str,
}

/// A member of a group, as notifications need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub username: String,
    pub role: String,
    pub email: Option<String>,
}

impl WriteTx {
    pub async fn user_by_name(&mut self, username: &str) -> Result<Option<UserRow>> {
        find_user(&mut self.tx, username).await
    }

    pub async fn user_by_id(&mut self, user_id: i64) -> Result<Option<UserRow>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn set_email(&mut self, user_id: i64, email: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
            .bind(email)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Enabled members of any of `groups`, each once, by name (an offboarded user is told nothing
    /// more about requests).
    pub async fn members_of(&mut self, groups: &[String]) -> Result<Vec<Member>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=groups.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT u.username, u.role, u.email FROM users u \
             JOIN access_group_members m ON m.user_id = u.id \
             JOIN access_groups g ON g.id = m.group_id \
             WHERE g.name IN ({}) AND u.disabled_at IS NULL ORDER BY u.username",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for g in groups {
            q = q.bind(g);
        }
        let rows = q.fetch_all(&mut *self.tx).await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    username: r.try_get("username")?,
                    role: r.try_get("role")?,
                    email: r.try_get("email")?,
                })
            })
            .collect()
    }

    pub async fn insert_user(&mut self, user: NewUser<'_>) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO users (username, role, password_hash, must_change_password, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user.username)
        .bind(user.role)
        .bind(user.password_hash)
        .bind(bool_int(user.must_change_password))
        .bind(user.created_at)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("user {}", user.username)))
    }

    /// Creates the group if it does not exist; returns its id.
    pub async fn ensure_group(&mut self, name: &str, created_at: &str) -> Result<i64> {
        sqlx::query(
            "INSERT INTO access_groups (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT id FROM access_groups WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    pub async fn insert_group(&mut self, name: &str, created_at: &str) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO access_groups (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(created_at)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("group {name}")))
    }

    pub async fn add_member(&mut self, group_id: i64, user_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO access_group_members (group_id, user_id) VALUES ($1, $2) \
             ON CONFLICT (group_id, user_id) DO NOTHING",
        )
        .bind(group_id)
        .bind(user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn group_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM access_groups WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    pub async fn set_password(
        &mut self,
        user_id: i64,
        hash: &str,
        must_change: bool,
    ) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1, must_change_password = $2 WHERE id = $3")
            .bind(hash)
            .bind(bool_int(must_change))
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The last TOTP step used, as this transaction sees it: read under the write lock, so two
    /// logins at once cannot both use one TOTP code.
    pub async fn totp_last_step(&mut self, user_id: i64) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT totp_last_step FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    /// Uses up a TOTP step outside a login (an emergency action's step-up); false if this step
    /// or a later one was used already, so one code serves one action.
    pub async fn use_totp_step(&mut self, user_id: i64, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 \
             AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn record_login_success(
        &mut self,
        user_id: i64,
        totp_step: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, \
             totp_last_step = COALESCE($1, totp_last_step) WHERE id = $2",
        )
        .bind(totp_step)
        .bind(user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn unlock_user(&mut self, user_id: i64) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Stores a new (not yet confirmed) sealed TOTP seed; TOTP stays off until confirmed.
    pub async fn set_totp_pending(
        &mut self,
        user_id: i64,
        wrapped: &[u8],
        ct: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE users SET totp_wrapped_key = $1, totp_ciphertext = $2, totp_enabled = 0, \
             totp_last_step = NULL WHERE id = $3",
        )
        .bind(wrapped)
        .bind(ct)
        .bind(user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn enable_totp(&mut self, user_id: i64, step: i64) -> Result<()> {
        sqlx::query("UPDATE users SET totp_enabled = 1, totp_last_step = $1 WHERE id = $2")
            .bind(step)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn insert_token(
        &mut self,
        token_hash: &str,
        user_id: i64,
        scope: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, user_id, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(scope)
        .bind(created_at)
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn delete_token(&mut self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Ends every token of a user (password change or reset).
    pub async fn delete_tokens_of(&mut self, user_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
