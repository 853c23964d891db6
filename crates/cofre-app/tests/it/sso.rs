//! Single sign-on through the services, with a clock the test moves: an SSO user's SSH key
//! opens gateway logins only while their last SSO login is at most `[sso] max_session_hours`
//! old, and an SSO user has no Cofre password an admin could reset. (The logins themselves,
//! through a real provider: crates/cofre/tests/it/sso.rs.)

use cofre_app::config::ServerConfig;
use cofre_app::services::Principal;
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::{Mode, Role};
use std::sync::atomic::Ordering;

const START: i64 = 1_795_428_000;
const HOUR: i64 = 3600;

#[tokio::test]
async fn an_sso_users_key_works_only_while_their_last_sso_login_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    assert_eq!(config.sso.max_session_hours, 8);
    let (app, now) = crate::app_at(config, START).await;

    // What an SSO login leaves behind: a user with no password, linked to its IdP subject, and
    // (added by the user afterwards) an SSH key.
    let mut tx = app.store.write().await.unwrap();
    let id = tx
        .insert_user(cofre_store::users::NewUser {
            username: "alice",
            role: "user",
            password_hash: "!sso",
            must_change_password: false,
            created_at: &app.now_text(),
        })
        .await
        .unwrap();
    tx.link_sso_identity("https://idp.example", "sub-1", id, "corp", START)
        .await
        .unwrap();
    tx.insert_ssh_key(id, "SHA256:test-key", "ssh-ed25519 AAAA", &app.now_text())
        .await
        .unwrap();
    tx.append_audit(
        app.now_text(),
        NewAuditEntry::new("test", "test.seed", "user:alice"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let sessions = app.sessions();
    now.store(START + 8 * HOUR, Ordering::SeqCst);
    sessions
        .login_by_key("alice", "SHA256:test-key", "127.0.0.1")
        .await
        .expect("within max_session_hours of the SSO login");
    now.store(START + 8 * HOUR + 1, Ordering::SeqCst);
    let refused = sessions
        .login_by_key("alice", "SHA256:test-key", "127.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "sso_refused", "{refused:?}");
    assert!(
        refused.message.contains("cofre login --sso corp"),
        "{refused:?}"
    );

    let user = app.store.user_by_name("admin").await.unwrap().unwrap();
    let admin = Principal::for_tests(user.id, "admin", Role::Admin, &[], Mode::OnPrem);
    let reset = app
        .accounts()
        .reset_password(&admin, "alice")
        .await
        .unwrap_err();
    assert_eq!(reset.field.as_deref(), Some("username"), "{reset:?}");
    assert!(reset.message.contains("signs in through corp"), "{reset:?}");
}
