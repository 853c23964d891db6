//! Dual control through the services, with a clock the test moves: a second admin made by the
//! first does not count on the first's changes or access requests until the cooling-off period
//! has passed, and counts from then on.

use cofre_app::config::ServerConfig;
use cofre_app::services::governance::Applied;
use cofre_app::services::{App, Principal};
use cofre_core::approval::Verdict;
use cofre_core::role::{Mode, Role};
use cofre_proto::requests::CreateAccessRequest;
use cofre_proto::{CreatePolicyRequest, CreateTargetRequest, SecretString};
use std::sync::atomic::Ordering;

const START: i64 = 1_795_428_000;
const DAY: i64 = 86_400;

async fn principal(app: &App, name: &str, role: Role, groups: &[&str]) -> Principal {
    let user = app.store.user_by_name(name).await.unwrap().unwrap();
    Principal::for_tests(user.id, name, role, groups, Mode::OnPrem)
}

#[tokio::test]
async fn a_fresh_second_admin_counts_only_after_cooling_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    assert_eq!(config.governance.cooling_off_days, 7);
    let (app, now) = crate::app_at(config, START).await;
    let admin = principal(&app, "admin", Role::Admin, &["vault"]).await;

    // Alone: applied (unilateral).
    app.accounts().create_group(&admin, "vault").await.unwrap();
    app.accounts().create_group(&admin, "leads").await.unwrap();
    let made = app
        .accounts()
        .create_user(&admin, "bob", "admin", &["leads".into()], None)
        .await
        .unwrap();
    assert!(matches!(made, Applied::Done(_)));
    app.accounts()
        .add_group_member(&admin, "vault", "admin")
        .await
        .unwrap();
    let bob = principal(&app, "bob", Role::Admin, &["leads"]).await;

    // Two admins: a widening policy waits.
    let policy = CreatePolicyRequest {
        name: "four-eyes".into(),
        group: "vault".into(),
        targets: vec!["tag:prod".into()],
        allow: vec!["reveal".into()],
        outcome: "approve".into(),
        levels: Some("leads:1".into()),
        ..Default::default()
    };
    let Applied::Held(change) = app.vault().create_policy(&admin, &policy).await.unwrap() else {
        panic!("a widening policy with two admins is held");
    };
    let refused = app
        .approvals()
        .decide_change(&bob, &change.id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "cooling_off", "{refused:?}");

    // Bob made by admin does not count on admin's access requests either.
    now.store(START + 7 * DAY - 1, Ordering::SeqCst);
    let still = app
        .approvals()
        .decide_change(&bob, &change.id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(still.code.as_str(), "cooling_off");

    // Seven days on, bob counts.
    now.store(START + 7 * DAY + 1, Ordering::SeqCst);
    let decided = app
        .approvals()
        .decide_change(&bob, &change.id, Verdict::Approve, Some("ok"))
        .await
        .unwrap();
    assert_eq!(decided.change.state, "approved");
    assert!(decided.one_time_password.is_none());

    // And an access request of admin, decided by bob (in leads), is refused while bob is fresh:
    // a new approver made now by admin.
    app.vault()
        .create_target(
            &admin,
            &CreateTargetRequest {
                name: "db01".into(),
                host: "127.0.0.1".into(),
                port: Some(22),
                protocol: None,
                tags: vec!["prod".into()],
            },
        )
        .await
        .unwrap();
    app.vault()
        .put_credential(
            &admin,
            "db01",
            "root",
            Some(&SecretString::new("s3cret".into())),
            None,
            false,
        )
        .await
        .unwrap();
    let Applied::Held(change) = app
        .accounts()
        .create_user(&admin, "ap1", "approver", &["leads".into()], None)
        .await
        .unwrap()
    else {
        panic!("a new approver with two admins is held");
    };
    let decided = app
        .approvals()
        .decide_change(&bob, &change.id, Verdict::Approve, None)
        .await
        .unwrap();
    assert!(
        decided.one_time_password.is_some(),
        "the approving admin gets the new user's password"
    );
    let ap1 = principal(&app, "ap1", Role::Approver, &["leads"]).await;
    let request = app
        .approvals()
        .create_request(
            &admin,
            &CreateAccessRequest {
                target: "db01".into(),
                account: "root".into(),
                reason: "INC-9".into(),
                access: None,
                start: None,
                duration: None,
            },
        )
        .await
        .unwrap();
    let refused = app
        .approvals()
        .decide_request(&ap1, &request.id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code.as_str(),
        "cooling_off",
        "admin proposed ap1: {refused:?}"
    );
    // Bob counts on admin's request now (seven days passed since admin made him).
    let approved = app
        .approvals()
        .decide_request(&bob, &request.id, Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(approved.state, "approved");
}
