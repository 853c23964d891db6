//! The authorization matrix: every endpoint × every role (and anonymous, a bogus token, and a token
//! from a one-time-password login), allowed or refused as PRODUCT.md's role table says. The matrix
//! must cover every operation in /api/v1/openapi.json, so a new endpoint without a row fails here.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Admin,
    Approver,
    User,
    Auditor,
    Operator,
    Support,
    Anonymous,
    BogusToken,
    /// Logged in with a one-time password and has not changed it yet.
    PasswordChange,
}

const ROLES: [Who; 6] = [
    Who::Admin,
    Who::Approver,
    Who::User,
    Who::Auditor,
    Who::Operator,
    Who::Support,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 2xx.
    Ok,
    /// Not refused: neither 401 nor 403 (nor 5xx); used where the body is deliberately not accepted.
    Allowed,
    /// 403 for a role the table refuses (with an error code; not a policy refusal).
    Forbidden,
    /// 403 with this code (e.g. policy_denied: the role may reveal, but no policy grants it).
    Refused(&'static str),
    /// 401 (no or bad token).
    Unauthenticated,
}

/// Who may call an endpoint, as the role table says.
#[derive(Clone, Copy)]
enum Rule {
    /// healthz, metrics, openapi, seal-status, unseal, login.
    Public,
    /// Any logged-in user: own account only.
    OwnAccount,
    Roles(&'static [Who]),
    /// reveal: approver and user through policy (this matrix grants them one); admin only through
    /// policy like anyone (it has none here); the rest may not reveal at all.
    Reveal,
    /// invite create: an admin (dual control, policies not consulted); an approver or user only
    /// where a policy gives it `invite` (none here: 403 `policy_denied`); the rest never.
    Invite,
}

struct Row {
    method: &'static str,
    /// As in the OpenAPI document.
    template: &'static str,
    path: String,
    body: Option<Value>,
    rule: Rule,
    /// The call succeeds (2xx) when allowed; false where the body is deliberately refused (4xx).
    succeeds: bool,
}

fn row(
    method: &'static str,
    template: &'static str,
    path: &str,
    body: Option<Value>,
    rule: Rule,
) -> Row {
    Row {
        method,
        template,
        path: path.to_owned(),
        body,
        rule,
        succeeds: true,
    }
}

const ADMIN: &[Who] = &[Who::Admin];
/// Who may watch a live session (approvers only as a moderated session's moderator).
const WATCHERS: &[Who] = &[Who::Admin, Who::Approver, Who::Auditor];
/// A valid OpenSSH public key for the key rows.
const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKP/TY4zYuLWcNieFNPnyxvrVuIYqjgJoE+esWTppF4V";
/// `ssh-keygen -lf` of TEST_KEY.
const TEST_KEY_FINGERPRINT: &str = "SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU";
const LISTERS: &[Who] = &[Who::Admin, Who::Approver, Who::User];
const HISTORY: &[Who] = &[Who::Admin, Who::Auditor];
const AUDIT: &[Who] = &[Who::Admin, Who::Auditor];
const POLICY_READERS: &[Who] = &[Who::Admin, Who::Auditor];
/// Who may decide requests and review emergency access (with the group check in the service).
const DECIDERS: &[Who] = &[Who::Admin, Who::Approver];
/// Instance facts and change requests (read only).
const INSTANCE_READERS: &[Who] = &[Who::Admin, Who::Auditor];
/// Who asks for a support grant: only the vendor's support users.
const SUPPORT_ASKERS: &[Who] = &[Who::Support];
/// Who sees support grants: the customer's admins and auditors (all), support (its own).
const SUPPORT_READERS: &[Who] = &[Who::Admin, Who::Auditor, Who::Support];
/// Who ends a grant: the customer's admins, and its holder.
const SUPPORT_REVOKERS: &[Who] = &[Who::Admin, Who::Support];

fn expectation(rule: Rule, who: Who, succeeds: bool, template: &str) -> Expect {
    let allowed = if succeeds {
        Expect::Ok
    } else {
        Expect::Allowed
    };
    match (rule, who) {
        (Rule::Public, _) => allowed,
        (_, Who::Anonymous | Who::BogusToken) => Expect::Unauthenticated,
        (_, Who::PasswordChange) => {
            if template == "/api/v1/auth/password" {
                allowed
            } else {
                Expect::Refused("password_change_required")
            }
        }
        (Rule::OwnAccount, _) => allowed,
        (Rule::Roles(roles), w) => {
            if roles.contains(&w) {
                allowed
            } else {
                Expect::Forbidden
            }
        }
        (Rule::Reveal, Who::Approver | Who::User) => allowed,
        (Rule::Reveal, Who::Admin) => Expect::Refused("policy_denied"),
        (Rule::Reveal, _) => Expect::Forbidden,
        (Rule::Invite, Who::Admin) => allowed,
        (Rule::Invite, Who::Approver | Who::User) => Expect::Refused("policy_denied"),
        (Rule::Invite, _) => Expect::Forbidden,
    }
}

fn check(resp: &Resp, expect: Expect, who: Who) -> Result<(), String> {
    let ok = match expect {
        Expect::Ok => (200..300).contains(&resp.status),
        Expect::Allowed => ![401, 403].contains(&resp.status) && resp.status < 500,
        Expect::Forbidden => {
            resp.status == 403 && !resp.code().is_empty() && resp.code() != "policy_denied"
        }
        Expect::Refused(code) => resp.status == 403 && resp.code() == code,
        Expect::Unauthenticated => resp.status == 401 && !resp.code().is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{who:?} {}: expected {expect:?}, got {} {}",
            resp.what, resp.status, resp.text
        ))
    }
}

#[test]
fn authorization_matrix() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);

    // Fixtures: db01 (prod, covered by the ops policy) with a credential; db02 covered by nothing.
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5", "tags": ["prod"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db02", "host": "10.0.0.6", "tags": ["dev"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db01/credentials",
        Some(&admin),
        json!({"account": "root", "password": "pw-root-1"}),
    )
    .assert_ok();
    // A target nothing listens on, for the rotation rows: a rotation there fails at once.
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "rot01", "host": "127.0.0.1", "port": 1, "tags": ["dev"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/rot01/credentials",
        Some(&admin),
        json!({"account": "app", "password": "pw-app-1"}),
    )
    .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "spare"}))
        .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "ops-prod", "group": "ops", "targets": ["tag:prod"], "allow": ["session", "reveal"], "outcome": "allow"}),
    )
    .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "doomed", "group": "spare", "targets": ["db02"], "allow": ["session"], "outcome": "allow"}),
    )
    .assert_ok();
    api.create_user(&admin, "victim", "user", &[]);
    // `prober` is who everyone logs in as in the login row.
    let prober_otp = api.create_user(&admin, "prober", "support", &[]);
    let prober_pw = new_password("prober");
    api.first_login("prober", &prober_otp, &prober_pw);

    let mut tokens: BTreeMap<Who, Option<String>> = BTreeMap::new();
    let mut passwords: BTreeMap<Who, String> = BTreeMap::new();
    tokens.insert(Who::Admin, Some(admin.clone()));
    for (who, name, role, groups) in [
        (Who::Approver, "approver1", "approver", vec!["ops"]),
        (Who::User, "user1", "user", vec!["ops"]),
        (Who::Auditor, "auditor1", "auditor", vec![]),
        (Who::Operator, "operator1", "operator", vec![]),
        (Who::Support, "support1", "support", vec![]),
    ] {
        let (t, pw) = api.make_user(&admin, name, role, &groups);
        tokens.insert(who, Some(t));
        passwords.insert(who, pw);
    }
    tokens.insert(Who::Anonymous, None);
    tokens.insert(Who::BogusToken, Some(format!("cofre_{}", random_hex(40))));
    let fresh_otp = api.create_user(&admin, "fresh", "user", &["ops"]);
    let r = api.login("fresh", &fresh_otp);
    r.assert_ok();
    assert_eq!(r.body["password_change_required"], true);
    tokens.insert(
        Who::PasswordChange,
        Some(r.body["token"].as_str().unwrap().to_owned()),
    );
    // A completed break-glass ceremony (approver1 and user1 fetched their shares), so that export
    // has a key epoch to write under.
    api.post(
        "/api/v1/breakglass/ceremony",
        Some(&admin),
        json!({"custodians": ["approver1", "user1"], "threshold": 2}),
    )
    .assert_ok();
    for who in [Who::Approver, Who::User] {
        api.post(
            "/api/v1/breakglass/share",
            tokens[&who].as_deref(),
            json!({}),
        )
        .assert_ok();
    }

    // A backup target (a directory) and a manual job, for the backup rows.
    let backup_dir = inst.path().join("authz-backups");
    api.post(
        "/api/v1/backup/targets",
        Some(&admin),
        json!({"name": "authz-dir", "dir": backup_dir.to_str().unwrap()}),
    )
    .assert_ok();
    api.post(
        "/api/v1/backup/jobs",
        Some(&admin),
        json!({"name": "authz-job", "kind": "recordings", "target": "authz-dir", "schedule": "manual"}),
    )
    .assert_ok();

    // Non-admins list only the targets their policies cover.
    let names = |who: Who| -> Vec<String> {
        let r = api.get("/api/v1/targets", tokens[&who].as_deref());
        r.assert_ok();
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(Who::Admin), vec!["db01", "db02", "rot01"]);
    assert_eq!(
        names(Who::User),
        vec!["db01"],
        "a user sees only the targets its policies cover"
    );
    assert_eq!(names(Who::Approver), vec!["db01"]);

    // Per caller, what the offboarding rows take away: a user (in `spare`, with a key), a target
    // with a credential, a backup job on its own backup target.
    for who in tokens.keys() {
        let tag = format!("{who:?}").to_lowercase();
        api.create_user(&admin, &format!("off-{tag}"), "user", &["spare"]);
        api.post(
            &format!("/api/v1/users/off-{tag}/keys"),
            Some(&admin),
            json!({"public_key": TEST_KEY}),
        )
        .assert_ok();
        api.post(
            "/api/v1/targets",
            Some(&admin),
            json!({"name": format!("ot-{tag}"), "host": "10.0.0.7", "tags": ["dev"]}),
        )
        .assert_ok();
        api.post(
            &format!("/api/v1/targets/ot-{tag}/credentials"),
            Some(&admin),
            json!({"account": "root", "password": "pw-off-1"}),
        )
        .assert_ok();
        api.post(
            "/api/v1/backup/targets",
            Some(&admin),
            json!({"name": format!("obt-{tag}"), "dir": backup_dir.join(format!("off-{tag}")).to_str().unwrap()}),
        )
        .assert_ok();
        api.post(
            "/api/v1/backup/jobs",
            Some(&admin),
            json!({"name": format!("obj-{tag}"), "kind": "recordings", "target": format!("obt-{tag}"), "schedule": "manual"}),
        )
        .assert_ok();
        api.post(
            "/api/v1/siem",
            Some(&admin),
            json!({"name": format!("sd-{tag}"), "syslog": "udp://127.0.0.1:9", "format": "cef"}),
        )
        .assert_ok();
        api.post(
            "/api/v1/sso",
            Some(&admin),
            json!({"name": format!("sp-{tag}"), "issuer": "https://127.0.0.1:9", "client_id": "c", "client_secret": "s", "default_role": "user"}),
        )
        .assert_ok();
    }

    let who_list: Vec<Who> = tokens.keys().copied().collect();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    // Per caller, so that names created by one caller do not collide with another's.
    for &who in &who_list {
        let tag = format!("{who:?}").to_lowercase();
        let token = tokens[&who].clone();
        let own_pw = passwords
            .get(&who)
            .cloned()
            .unwrap_or_else(|| new_password("x"));
        let rows = vec![
            row("GET", "/healthz", "/healthz", None, Rule::Public),
            row("GET", "/metrics", "/metrics", None, Rule::Public),
            row(
                "GET",
                "/api/v1/openapi.json",
                "/api/v1/openapi.json",
                None,
                Rule::Public,
            ),
            row(
                "GET",
                "/api/v1/sys/seal-status",
                "/api/v1/sys/seal-status",
                None,
                Rule::Public,
            ),
            // Unsealing needs no login (holding a share is the credential); unsealed, it just reports.
            row(
                "POST",
                "/api/v1/sys/unseal",
                "/api/v1/sys/unseal",
                Some(json!({"share": "cofre-unseal-x"})),
                Rule::Public,
            ),
            row(
                "POST",
                "/api/v1/auth/login",
                "/api/v1/auth/login",
                Some(json!({"username": "prober", "password": prober_pw})),
                Rule::Public,
            ),
            row(
                "GET",
                "/api/v1/auth/whoami",
                "/api/v1/auth/whoami",
                None,
                Rule::OwnAccount,
            ),
            // Same current and new password: refused as a bad value (400), not as a permission.
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/auth/password",
                    "/api/v1/auth/password",
                    Some(json!({"current_password": own_pw, "new_password": own_pw})),
                    Rule::OwnAccount,
                )
            },
            row(
                "POST",
                "/api/v1/auth/totp/enroll",
                "/api/v1/auth/totp/enroll",
                Some(json!({})),
                Rule::OwnAccount,
            ),
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/auth/totp/confirm",
                    "/api/v1/auth/totp/confirm",
                    Some(json!({"code": "000000x"})),
                    Rule::OwnAccount,
                )
            },
            row(
                "GET",
                "/api/v1/users",
                "/api/v1/users",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users",
                "/api/v1/users",
                Some(json!({"username": format!("new-{tag}"), "role": "user", "groups": []})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/users/{username}",
                "/api/v1/users/user1",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users/{username}/unlock",
                "/api/v1/users/user1/unlock",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users/{username}/reset-password",
                "/api/v1/users/victim/reset-password",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/groups",
                "/api/v1/groups",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/groups",
                "/api/v1/groups",
                Some(json!({"name": format!("g-{tag}")})),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/groups/{name}/members",
                "/api/v1/groups/ops/members",
                Some(json!({"username": "victim"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/targets",
                "/api/v1/targets",
                None,
                Rule::Roles(LISTERS),
            ),
            row(
                "POST",
                "/api/v1/targets",
                "/api/v1/targets",
                Some(
                    json!({"name": format!("t-{tag}"), "host": "10.1.1.1", "port": 22, "tags": ["lab"]}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/targets/{name}",
                "/api/v1/targets/db01",
                None,
                Rule::Roles(LISTERS),
            ),
            row(
                "GET",
                "/api/v1/targets/{name}/credentials",
                "/api/v1/targets/db01/credentials",
                None,
                Rule::Roles(LISTERS),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials",
                "/api/v1/targets/db01/credentials",
                Some(json!({"account": format!("acct-{tag}"), "password": "pw-new-account"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "PUT",
                "/api/v1/targets/{name}/credentials/{account}",
                "/api/v1/targets/db01/credentials/root",
                Some(json!({"password": format!("pw-root-by-{tag}")})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/targets/{name}/credentials/{account}/history",
                "/api/v1/targets/db01/credentials/root/history",
                None,
                Rule::Roles(HISTORY),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials/{account}/reveal",
                "/api/v1/targets/db01/credentials/root/reveal",
                Some(json!({"reason": "matrix"})),
                Rule::Reveal,
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials/{account}/rotate",
                "/api/v1/targets/rot01/credentials/app/rotate",
                Some(json!({"method": "passwd"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "PUT",
                "/api/v1/targets/{name}/credentials/{account}/rotation",
                "/api/v1/targets/rot01/credentials/app/rotation",
                Some(json!({"every": "30d", "method": "passwd", "after_reveal": true})),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials/{account}/verify",
                "/api/v1/targets/rot01/credentials/app/verify",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/rotations",
                "/api/v1/rotations",
                None,
                Rule::Roles(HISTORY),
            ),
            row(
                "GET",
                "/api/v1/password-policy",
                "/api/v1/password-policy",
                None,
                Rule::Roles(HISTORY),
            ),
            row(
                "PUT",
                "/api/v1/password-policy",
                "/api/v1/password-policy",
                Some(json!({"length": 24, "classes": "upper,lower,digit,symbol"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/policies",
                "/api/v1/policies",
                None,
                Rule::Roles(POLICY_READERS),
            ),
            row(
                "POST",
                "/api/v1/policies",
                "/api/v1/policies",
                Some(
                    json!({"name": format!("p-{tag}"), "group": "ops", "targets": ["db02"], "allow": ["reveal"], "outcome": "justify"}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/policies/{name}",
                "/api/v1/policies/doomed",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/policies/{name}",
                "/api/v1/policies/ops-prod",
                None,
                Rule::Roles(POLICY_READERS),
            ),
            // An edit from a version that is not the policy's: the admin gets 409
            // `stale_version` (the round trip is `policy_edit`'s), everyone else 403 first.
            Row {
                succeeds: false,
                ..row(
                    "PUT",
                    "/api/v1/policies/{name}",
                    "/api/v1/policies/ops-prod?version=0000000000000000",
                    Some(
                        json!({"name": "ops-prod", "group": "ops", "targets": ["tag:prod"], "allow": ["session"], "outcome": "allow"}),
                    ),
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "GET",
                "/api/v1/audit",
                "/api/v1/audit",
                None,
                Rule::Roles(AUDIT),
            ),
            // The search: the same rule, its conditions checked only after it.
            row(
                "GET",
                "/api/v1/audit",
                "/api/v1/audit?actor=admin&action=auth.*&since=2026-01-01&until=2099-01-01",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "GET",
                "/api/v1/audit/export.csv",
                "/api/v1/audit/export.csv",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "GET",
                "/api/v1/audit/export.csv",
                "/api/v1/audit/export.csv?actor=admin&action=auth.*&since=2026-01-01&until=2099-01-01",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "GET",
                "/api/v1/audit/verify",
                "/api/v1/audit/verify",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "GET",
                "/api/v1/audit/verify/recordings",
                "/api/v1/audit/verify/recordings",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "GET",
                "/api/v1/breakglass",
                "/api/v1/breakglass",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/breakglass/export",
                "/api/v1/breakglass/export",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/breakglass/ceremony",
                "/api/v1/breakglass/ceremony",
                Some(json!({"custodians": ["approver1", "user1"], "threshold": 2})),
                Rule::Roles(ADMIN),
            ),
            // Any logged-in user may ask; a custodian with a waiting share gets it (once), anyone
            // else a 404 or 409, never 401/403.
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/breakglass/share",
                    "/api/v1/breakglass/share",
                    None,
                    Rule::OwnAccount,
                )
            },
            // Another user's SSH keys: admin only (one's own keys are `OwnAccount`, covered in
            // the gateway tests).
            row(
                "GET",
                "/api/v1/users/{username}/keys",
                "/api/v1/users/victim/keys",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users/{username}/keys",
                "/api/v1/users/victim/keys",
                Some(json!({"public_key": format!("{TEST_KEY} {tag}")})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/sessions",
                "/api/v1/sessions",
                None,
                Rule::Roles(AUDIT),
            ),
            // The live ones: approvers too, answered only the moderated sessions they may
            // moderate (none here; `console_browser`'s moderated test finds one).
            row(
                "GET",
                "/api/v1/sessions",
                "/api/v1/sessions?live=true",
                None,
                Rule::Roles(&[Who::Admin, Who::Approver, Who::Auditor]),
            ),
            // No such session: the roles allowed get 404, the others 403 before any lookup.
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/sessions/{id}/kill",
                    "/api/v1/sessions/no-such-session/kill",
                    Some(json!({})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/sessions/{id}/recording",
                    "/api/v1/sessions/no-such-session/recording",
                    None,
                    Rule::Roles(AUDIT),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/sessions/{id}/recording/verify",
                    "/api/v1/sessions/no-such-session/recording/verify",
                    None,
                    Rule::Roles(AUDIT),
                )
            },
            // Live control: watching (approvers only as moderators, which the service checks
            // on the live session), blocking input; no such session answers 404 to those allowed.
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/sessions/{id}/watch",
                    "/api/v1/sessions/no-such-session/watch",
                    None,
                    Rule::Roles(WATCHERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/sessions/{id}/lock",
                    "/api/v1/sessions/no-such-session/lock",
                    Some(json!({"reason": "matrix"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/sessions/{id}/unlock",
                    "/api/v1/sessions/no-such-session/unlock",
                    Some(json!({"reason": "matrix"})),
                    Rule::Roles(ADMIN),
                )
            },
            // The emergency panel: admin only. An empty reason is refused (400) before the TOTP
            // is asked, so the matrix neither ends sessions nor locks the instance down.
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/emergency/terminate-all",
                    "/api/v1/emergency/terminate-all",
                    Some(json!({"totp_code": "000000", "reason": ""})),
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "GET",
                "/api/v1/emergency/lockdown",
                "/api/v1/emergency/lockdown",
                None,
                Rule::Roles(ADMIN),
            ),
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/emergency/lockdown",
                    "/api/v1/emergency/lockdown",
                    Some(json!({"totp_code": "000000", "reason": ""})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/emergency/lockdown/lift",
                    "/api/v1/emergency/lockdown/lift",
                    Some(json!({"reason": ""})),
                    Rule::Roles(ADMIN),
                )
            },
            // Backups (Orbit: admin on-prem).
            row(
                "GET",
                "/api/v1/backup/status",
                "/api/v1/backup/status",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/backup/targets",
                "/api/v1/backup/targets",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/backup/targets",
                "/api/v1/backup/targets",
                Some(
                    json!({"name": format!("t-{tag}"), "dir": backup_dir.join(&tag).to_str().unwrap()}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/backup/targets/{name}/test",
                "/api/v1/backup/targets/authz-dir/test",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/backup/jobs",
                "/api/v1/backup/jobs",
                Some(
                    json!({"name": format!("j-{tag}"), "kind": "system", "target": "authz-dir", "schedule": "daily 03:00"}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/backup/jobs/{name}/run",
                "/api/v1/backup/jobs/authz-job/run",
                None,
                Rule::Roles(ADMIN),
            ),
            // No such run: admin gets 404, the others 403 before any lookup.
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/backup/runs/{id}",
                    "/api/v1/backup/runs/999999",
                    None,
                    Rule::Roles(ADMIN),
                )
            },
            // Snapshots (Orbit: admin in on-prem mode, which the matrix runs in).
            row(
                "GET",
                "/api/v1/snapshots",
                "/api/v1/snapshots",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/snapshots",
                "/api/v1/snapshots",
                Some(json!({"include_recordings": false})),
                Rule::Roles(ADMIN),
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/snapshots/jobs/{id}",
                    "/api/v1/snapshots/jobs/no-such-job",
                    None,
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/snapshots/{id}/verify",
                    "/api/v1/snapshots/no-such-snapshot/verify",
                    None,
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "POST",
                "/api/v1/snapshots/prune",
                "/api/v1/snapshots/prune",
                Some(json!({"dry_run": true})),
                Rule::Roles(ADMIN),
            ),
            // Access requests. The matrix's policy for ops is not `approve`, so a request by an
            // approver or user is refused as unneeded (409), the admin's as policy_denied (no
            // policy), and the other roles' by the role table; the ids below do not exist (404).
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests",
                    "/api/v1/requests",
                    Some(json!({"target": "db01", "account": "root", "reason": "matrix"})),
                    Rule::Reveal,
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests/emergency",
                    "/api/v1/requests/emergency",
                    Some(json!({"target": "db01", "account": "root", "reason": "matrix"})),
                    Rule::Reveal,
                )
            },
            row(
                "GET",
                "/api/v1/requests",
                "/api/v1/requests",
                None,
                Rule::OwnAccount,
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/requests/{id}",
                    "/api/v1/requests/no-such-request",
                    None,
                    Rule::OwnAccount,
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests/{id}/approve",
                    "/api/v1/requests/no-such-request/approve",
                    Some(json!({})),
                    Rule::Roles(DECIDERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests/{id}/deny",
                    "/api/v1/requests/no-such-request/deny",
                    Some(json!({"comment": "matrix says no"})),
                    Rule::Roles(DECIDERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests/{id}/cancel",
                    "/api/v1/requests/no-such-request/cancel",
                    None,
                    Rule::OwnAccount,
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/requests/{id}/review",
                    "/api/v1/requests/no-such-request/review",
                    Some(json!({"comment": "matrix review"})),
                    Rule::Roles(DECIDERS),
                )
            },
            row(
                "GET",
                "/api/v1/grants",
                "/api/v1/grants",
                None,
                Rule::OwnAccount,
            ),
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/grants/{id}/revoke",
                    "/api/v1/grants/no-such-request/revoke",
                    Some(json!({})),
                    Rule::OwnAccount,
                )
            },
            // Dual control. With one admin nothing is held, so the ids below do not exist (404):
            // allowed is "not refused"; dual_control.rs tests the decisions themselves.
            row(
                "PUT",
                "/api/v1/users/{username}/role",
                "/api/v1/users/victim/role",
                Some(json!({"role": "user"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/instance",
                "/api/v1/instance",
                None,
                Rule::Roles(INSTANCE_READERS),
            ),
            row(
                "GET",
                "/api/v1/nodes",
                "/api/v1/nodes",
                None,
                Rule::Roles(INSTANCE_READERS),
            ),
            row(
                "GET",
                "/api/v1/changes",
                "/api/v1/changes",
                None,
                Rule::Roles(INSTANCE_READERS),
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/changes/{id}",
                    "/api/v1/changes/nonexistent",
                    None,
                    Rule::Roles(INSTANCE_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/changes/{id}/approve",
                    "/api/v1/changes/nonexistent/approve",
                    Some(json!({"comment": "matrix"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/changes/{id}/deny",
                    "/api/v1/changes/nonexistent/deny",
                    Some(json!({"comment": "matrix"})),
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "PUT",
                "/api/v1/users/{username}/email",
                "/api/v1/users/user1/email",
                Some(json!({"email": "user1@example.test"})),
                Rule::Roles(ADMIN),
            ),
            // Offboarding (admin; one's own key is covered in the offboarding tests). In order:
            // each row leaves what the next one needs.
            row(
                "POST",
                "/api/v1/users/{username}/keys/remove",
                &format!("/api/v1/users/off-{tag}/keys/remove"),
                Some(json!({"fingerprint": TEST_KEY_FINGERPRINT})),
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/groups/{name}/members/{username}",
                &format!("/api/v1/groups/spare/members/off-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users/{username}/disable",
                &format!("/api/v1/users/off-{tag}/disable"),
                Some(json!({"reason": "authz matrix"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/users/{username}/enable",
                &format!("/api/v1/users/off-{tag}/enable"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/users/{username}",
                &format!("/api/v1/users/off-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/disable",
                &format!("/api/v1/targets/ot-{tag}/disable"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/enable",
                &format!("/api/v1/targets/ot-{tag}/enable"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials/{account}/disable",
                &format!("/api/v1/targets/ot-{tag}/credentials/root/disable"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/targets/{name}/credentials/{account}/enable",
                &format!("/api/v1/targets/ot-{tag}/credentials/root/enable"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/targets/{name}/credentials/{account}",
                &format!("/api/v1/targets/ot-{tag}/credentials/root"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/targets/{name}",
                &format!("/api/v1/targets/ot-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/backup/jobs/{name}",
                &format!("/api/v1/backup/jobs/obj-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/backup/targets/{name}",
                &format!("/api/v1/backup/targets/obt-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            // SIEM forwarding: the customer's admin manages it in every mode; auditors read it.
            row(
                "GET",
                "/api/v1/siem",
                "/api/v1/siem",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "POST",
                "/api/v1/siem",
                "/api/v1/siem",
                Some(
                    json!({"name": format!("s-{tag}"), "syslog": "udp://127.0.0.1:9", "format": "rfc5424"}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/siem/status",
                "/api/v1/siem/status",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "DELETE",
                "/api/v1/siem/{name}",
                &format!("/api/v1/siem/sd-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            // Single sign-on: identity providers are the admin's; a login page lists their
            // names to anyone, and anyone may start or finish a login (refused here as bad
            // values, before any provider is asked).
            row("GET", "/api/v1/sso", "/api/v1/sso", None, Rule::Roles(ADMIN)),
            row(
                "POST",
                "/api/v1/sso",
                "/api/v1/sso",
                Some(
                    json!({"name": format!("s-{tag}"), "issuer": "https://127.0.0.1:9", "client_id": "c", "client_secret": "s", "default_role": "user"}),
                ),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/sso/{name}/test",
                &format!("/api/v1/sso/sp-{tag}/test"),
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "DELETE",
                "/api/v1/sso/{name}",
                &format!("/api/v1/sso/sp-{tag}"),
                None,
                Rule::Roles(ADMIN),
            ),
            row("GET", "/api/v1/auth/sso", "/api/v1/auth/sso", None, Rule::Public),
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/auth/sso/{name}/begin",
                    &format!("/api/v1/auth/sso/sp-{tag}/begin"),
                    Some(json!({"redirect_uri": "https://elsewhere.example/cb"})),
                    Rule::Public,
                )
            },
            // Only an SSO login's pending token gives a TOTP code here: no session may.
            row(
                "POST",
                "/api/v1/auth/sso/totp",
                "/api/v1/auth/sso/totp",
                Some(json!({"totp_code": "123456"})),
                Rule::Roles(&[]),
            ),
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/auth/sso/finish",
                    "/api/v1/auth/sso/finish",
                    Some(json!({"state": "s".repeat(200), "code": "c"})),
                    Rule::Public,
                )
            },
            // Network policy (on-prem: the admin sets it, admin and auditor read it; the
            // operator's part in the vendor's modes is in orbit_follows_the_mode). An empty
            // list on an open listener changes nothing, so every caller's call is the same.
            row(
                "GET",
                "/api/v1/network",
                "/api/v1/network",
                None,
                Rule::Roles(AUDIT),
            ),
            row(
                "PUT",
                "/api/v1/network",
                "/api/v1/network",
                Some(json!({"listener": "gateway", "allow": []})),
                Rule::Roles(ADMIN),
            ),
            // Orbit's instance (admin on-prem; instance_management_follows_the_mode has the
            // other modes). In order: the admin's disable is undone by the next row.
            row(
                "PUT",
                "/api/v1/instance/type",
                "/api/v1/instance/type",
                Some(json!({"type": "testing"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/instance/disable",
                "/api/v1/instance/disable",
                Some(json!({"reason": "authz matrix"})),
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/instance/enable",
                "/api/v1/instance/enable",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "POST",
                "/api/v1/instance/promote",
                "/api/v1/instance/promote",
                Some(json!({"to": "production", "confirm": true})),
                Rule::Roles(ADMIN),
            ),
            // No release keys are configured here: the admin's upload is refused (400).
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/releases",
                    "/api/v1/releases",
                    Some(json!({})),
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "GET",
                "/api/v1/releases",
                "/api/v1/releases",
                None,
                Rule::Roles(ADMIN),
            ),
            // Maintenance windows (on-prem: the admin proposes and decides; admin and auditor
            // watch; maintenance::* has the other modes). No release is uploaded here and the
            // window does not exist: the allowed get 400/404, the others 403.
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/maintenance",
                    "/api/v1/maintenance",
                    Some(
                        json!({"release": "0.2.0-000000000000", "start": "2099-01-01T00:00:00Z", "duration": "1h"}),
                    ),
                    Rule::Roles(ADMIN),
                )
            },
            row(
                "GET",
                "/api/v1/maintenance",
                "/api/v1/maintenance",
                None,
                Rule::Roles(INSTANCE_READERS),
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/maintenance/{id}",
                    "/api/v1/maintenance/nosuchwindow",
                    None,
                    Rule::Roles(INSTANCE_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/maintenance/{id}/events",
                    "/api/v1/maintenance/nosuchwindow/events",
                    None,
                    Rule::Roles(INSTANCE_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/maintenance/{id}/approve",
                    "/api/v1/maintenance/nosuchwindow/approve",
                    Some(json!({"comment": "ok"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/maintenance/{id}/deny",
                    "/api/v1/maintenance/nosuchwindow/deny",
                    Some(json!({"comment": "not now"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/maintenance/{id}/cancel",
                    "/api/v1/maintenance/nosuchwindow/cancel",
                    None,
                    Rule::Roles(ADMIN),
                )
            },
            // Support grants (without one: support may ask and see its own, nothing else; see
            // support::* for what a grant opens). The grant does not exist: 404 for the allowed.
            row(
                "POST",
                "/api/v1/support",
                "/api/v1/support",
                Some(json!({"scope": "diagnostics", "reason": "matrix", "ticket": "T-1"})),
                Rule::Roles(SUPPORT_ASKERS),
            ),
            row(
                "GET",
                "/api/v1/support",
                "/api/v1/support",
                None,
                Rule::Roles(SUPPORT_READERS),
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/support/{id}",
                    "/api/v1/support/nosuchgrant",
                    None,
                    Rule::Roles(SUPPORT_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/support/{id}/activity",
                    "/api/v1/support/nosuchgrant/activity",
                    None,
                    Rule::Roles(SUPPORT_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/support/{id}/approve",
                    "/api/v1/support/nosuchgrant/approve",
                    Some(json!({"comment": "ok"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/support/{id}/deny",
                    "/api/v1/support/nosuchgrant/deny",
                    Some(json!({"comment": "not now"})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/support/{id}/revoke",
                    "/api/v1/support/nosuchgrant/revoke",
                    None,
                    Rule::Roles(SUPPORT_REVOKERS),
                )
            },
            // Invitations for third parties: admins invite and revoke, admins and auditors read;
            // approvers and users invite only where a policy gives them `invite` (ops-prod
            // does not: 403 policy_denied, before anything else is judged).
            // An admin's invitation here is refused with a 4xx (a window past 31 days; and this
            // server has no external listener): allowed, not done. The invitation does not
            // exist: 404 for the allowed. What an invitation does: gateway::invite
            // (a_user_invites_by_policy_and_its_approval_sends_the_link for the policy's side).
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/invitations",
                    "/api/v1/invitations",
                    Some(json!({"email": "ana@vendor.example", "targets": "db01",
                        "accounts": "root", "until": "2099-01-01T00:00:00Z", "reason": "matrix"})),
                    Rule::Invite,
                )
            },
            row(
                "GET",
                "/api/v1/invitations",
                "/api/v1/invitations",
                None,
                Rule::Roles(INSTANCE_READERS),
            ),
            Row {
                succeeds: false,
                ..row(
                    "GET",
                    "/api/v1/invitations/{id}",
                    "/api/v1/invitations/nosuchinvite",
                    None,
                    Rule::Roles(INSTANCE_READERS),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/invitations/{id}/revoke",
                    "/api/v1/invitations/nosuchinvite/revoke",
                    None,
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/invitations/{id}/sessions/{ask}/approve",
                    "/api/v1/invitations/nosuchinvite/sessions/nosuchask/approve",
                    Some(json!({})),
                    Rule::Roles(ADMIN),
                )
            },
            Row {
                succeeds: false,
                ..row(
                    "POST",
                    "/api/v1/invitations/{id}/sessions/{ask}/deny",
                    "/api/v1/invitations/nosuchinvite/sessions/nosuchask/deny",
                    Some(json!({"comment": "not now"})),
                    Rule::Roles(ADMIN),
                )
            },
            // Diagnostics: the customer's admin on-prem (support only under a `diagnostics`
            // grant, see support::*; the vendor's operator where it runs the instance, see
            // orbit_follows_the_mode).
            row(
                "GET",
                "/api/v1/diagnostics/config",
                "/api/v1/diagnostics/config",
                None,
                Rule::Roles(ADMIN),
            ),
            row(
                "GET",
                "/api/v1/diagnostics/logs",
                "/api/v1/diagnostics/logs?lines=10",
                None,
                Rule::Roles(ADMIN),
            ),
            // Last: it ends the token.
            row(
                "POST",
                "/api/v1/auth/logout",
                "/api/v1/auth/logout",
                None,
                Rule::OwnAccount,
            ),
        ];
        for r in &rows {
            covered.insert((r.method.to_owned(), r.template.to_owned()));
            let mut expect = expectation(r.rule, who, r.succeeds, r.template);
            if who == Who::PasswordChange && r.template == "/api/v1/auth/logout" {
                // Ending one's own token is harmless; accept either answer, but never a 401/5xx.
                expect = Expect::Allowed;
                let resp = api.call(r.method, &r.path, token.as_deref(), body_of(r));
                if !(resp.status == 403 && resp.code() == "password_change_required") {
                    if let Err(e) = check(&resp, expect, who) {
                        failures.push(e);
                    }
                }
                continue;
            }
            let resp = api.call(r.method, &r.path, token.as_deref(), body_of(r));
            if let Err(e) = check(&resp, expect, who) {
                failures.push(e);
            }
            if resp.status >= 400 && !resp.body.is_object() {
                failures.push(format!(
                    "{who:?} {}: error without a JSON body: {}",
                    resp.what, resp.text
                ));
            }
        }
        // After logout the token is dead.
        if ROLES.contains(&who) {
            let r = api.get("/api/v1/auth/whoami", token.as_deref());
            if r.status != 401 {
                failures.push(format!(
                    "{who:?}: the token still works after logout: {} {}",
                    r.status, r.text
                ));
            }
        }
    }

    // The matrix covers every operation the OpenAPI document lists, and vice versa.
    let doc = api.get("/api/v1/openapi.json", None);
    doc.assert_ok();
    let mut documented = BTreeSet::new();
    for (path, item) in doc.body["paths"]
        .as_object()
        .expect("paths in the OpenAPI document")
    {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(
        documented.len() >= 25,
        "the OpenAPI document lists too few operations: {documented:?}"
    );
    for (method, path) in documented.difference(&covered) {
        failures.push(format!(
            "{method} {path} is in the OpenAPI document but has no authorization matrix row"
        ));
    }
    for (method, path) in covered.difference(&documented) {
        if path != "/metrics" && path != "/api/v1/openapi.json" {
            failures.push(format!(
                "{method} {path} is missing from the OpenAPI document"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} authorization failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn body_of(r: &Row) -> Body<'static> {
    match &r.body {
        Some(v) => Body::Json(v.clone()),
        None => Body::None,
    }
}

/// Orbit (snapshots, backups) follows the deployment mode: the tenant admin on-prem (the matrix
/// above), admin and the vendor's operator in private-saas; in saas the operator manages the
/// snapshots, and the customer's admin sees them and keeps its credential backups
/// (duties_follow_the_mode has every cell).
#[test]
fn orbit_follows_the_mode() {
    for (mode, admin_manages) in [("private-saas", true), ("saas", false)] {
        let inst = Instance::new(Backend::Sqlite);
        let config = inst.path().join("cofre.toml");
        std::fs::write(&config, format!("mode = \"{mode}\"\n")).unwrap();
        let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
        let (admin, _) = admin_cli(&inst, &server);
        let (operator, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
        for (who, cli, manages) in [
            ("admin", &admin, admin_manages),
            ("operator", &operator, true),
        ] {
            for args in [&["snapshot", "list"][..], &["backup", "status"][..]] {
                let out = cli.run(args, None);
                assert_eq!(out.code, Some(0), "{mode}: {who} {args:?}: {}", out.all());
            }
            let out = cli.run(&["snapshot", "prune", "--dry-run"], None);
            assert_eq!(
                out.code == Some(0),
                manages,
                "{mode}: {who} prune: {}",
                out.all()
            );
            if !manages {
                assert!(out.all().contains("may not"), "{}", out.all());
            }
        }
        // Whatever the mode, the operator never reads credentials or the audit trail.
        operator.fail(&["audit", "verify"]);
        operator.fail(&["target", "list"]);
        // SIEM forwarding is the customer's in every mode: its admin, never the vendor.
        admin.ok(&["siem", "list"]);
        admin.ok(&["siem", "status"]);
        assert!(operator.fail(&["siem", "status"]).all().contains("may not"));
        operator.fail(&["siem", "add", "x", "--syslog", "udp://127.0.0.1:9"]);
        // Invitations are the customer's (its admins, or its users by policy): never the
        // vendor's operator, in any mode.
        assert!(operator
            .fail(&[
                "invite",
                "create",
                "--email",
                "ana@vendor.example",
                "--targets",
                "db01",
                "--accounts",
                "root",
                "--until",
                "2099-01-01T00:00Z",
                "--reason",
                "matrix",
            ])
            .all()
            .contains("may not"));
        // Network policy: the customer's admin in every mode, and the vendor's operator (its
        // own networks) where the vendor runs the instance.
        for cli in [&admin, &operator] {
            cli.ok(&["network", "show"]);
            cli.ok(&["network", "set", "--listener", "gateway", "--allow", ""]);
            // Diagnostics likewise: whoever runs the machine reads its redacted config and log.
            cli.ok(&["diagnostics", "config"]);
            cli.ok(&["diagnostics", "logs", "--lines", "5"]);
        }
    }
}

/// Whose backups a target or job is (README, "Who does what in each mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duty {
    Credentials,
    System,
}

const MODES: [&str; 3] = ["on-prem", "private-saas", "saas"];

/// README's table, cell by cell: who keeps backups of a duty in a mode.
fn keeps(mode: &str, who: Who, duty: Duty) -> bool {
    match (duty, mode) {
        // The break-glass files go to the customer's own server: its admins', in every mode.
        (Duty::Credentials, _) => who == Who::Admin,
        (Duty::System, "on-prem") => who == Who::Admin,
        (Duty::System, "private-saas") => matches!(who, Who::Admin | Who::Operator),
        (Duty::System, _) => who == Who::Operator,
    }
}

/// Taking, verifying and pruning snapshots: as the system backups.
fn manages_snapshots(mode: &str, who: Who) -> bool {
    keeps(mode, who, Duty::System)
}

/// Listing snapshots, their jobs and the schedule: who manages them, and the customer's admins
/// everywhere (in saas they see, not change).
fn views_snapshots(mode: &str, who: Who) -> bool {
    manages_snapshots(mode, who) || who == Who::Admin
}

/// Duties by mode (issue 13): every backup and snapshot endpoint × every role (and anonymous) ×
/// every mode, on a target, job and run of each duty; lists show only the caller's duties; a job
/// of one duty is refused on the other's target, naming the field. private-saas runs on
/// PostgreSQL, so the duty column (migration 0034) and its binding are held on both stores.
#[test]
fn duties_follow_the_mode() {
    let mut failures = Vec::new();
    for mode in MODES {
        let inst = Instance::new(if mode == "private-saas" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        });
        let config = inst.path().join("cofre.toml");
        std::fs::write(&config, format!("mode = \"{mode}\"\n")).unwrap();
        let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
        let api = server.api();
        let (admin, _) = admin_token(&server);
        let mut tokens: BTreeMap<Who, Option<String>> = BTreeMap::new();
        tokens.insert(Who::Admin, Some(admin.clone()));
        for (who, name, role) in [
            (Who::Approver, "approver1", "approver"),
            (Who::User, "user1", "user"),
            (Who::Auditor, "auditor1", "auditor"),
            (Who::Operator, "operator1", "operator"),
            (Who::Support, "support1", "support"),
        ] {
            tokens.insert(who, Some(api.make_user(&admin, name, role, &[]).0));
        }
        tokens.insert(Who::Anonymous, None);
        // Whoever keeps a duty in this mode sets up its fixtures.
        let keeper = |duty: Duty| {
            let who = [Who::Admin, Who::Operator]
                .into_iter()
                .find(|w| keeps(mode, *w, duty))
                .unwrap();
            tokens[&who].clone().unwrap()
        };
        let dir = inst.path().join("backups");
        let kind_of = |d: Duty| match d {
            Duty::Credentials => "credentials",
            Duty::System => "recordings",
        };
        let name_of = |d: Duty| match d {
            Duty::Credentials => "keys",
            Duty::System => "disk",
        };
        let duty_text = |d: Duty| match d {
            Duty::Credentials => "credentials",
            Duty::System => "system",
        };
        let mut runs = BTreeMap::new();
        for d in [Duty::Credentials, Duty::System] {
            let t = keeper(d);
            let n = name_of(d);
            api.post(
                "/api/v1/backup/targets",
                Some(&t),
                json!({"name": n, "duty": duty_text(d), "dir": dir.join(n).to_str().unwrap()}),
            )
            .assert_ok();
            api.post(
                "/api/v1/backup/jobs",
                Some(&t),
                json!({"name": format!("{n}-job"), "kind": kind_of(d), "target": n, "schedule": "manual"}),
            )
            .assert_ok();
            let run = api.post(
                &format!("/api/v1/backup/jobs/{n}-job/run"),
                Some(&t),
                json!({}),
            );
            run.assert_ok();
            runs.insert(n, run.body["id"].as_i64().unwrap());
            // Per caller, a job and a target to remove.
            for who in tokens.keys() {
                let tag = format!("{who:?}").to_lowercase();
                api.post(
                    "/api/v1/backup/targets",
                    Some(&t),
                    json!({"name": format!("rm-{n}-{tag}"), "duty": duty_text(d), "dir": dir.join(format!("rm-{n}-{tag}")).to_str().unwrap()}),
                )
                .assert_ok();
                api.post(
                    "/api/v1/backup/jobs",
                    Some(&t),
                    json!({"name": format!("rmj-{n}-{tag}"), "kind": kind_of(d), "target": n, "schedule": "manual"}),
                )
                .assert_ok();
            }
        }
        let snapshot_job = api.post(
            "/api/v1/snapshots",
            Some(&keeper(Duty::System)),
            json!({"include_recordings": false}),
        );
        snapshot_job.assert_ok();
        let snapshot_job = snapshot_job.body["id"].as_str().unwrap().to_owned();

        for (&who, token) in &tokens {
            let tag = format!("{who:?}").to_lowercase();
            let token = token.as_deref();
            let expect = |what: String, resp: Resp, allowed: bool, must_succeed: bool| {
                let ok = if who == Who::Anonymous {
                    resp.status == 401
                } else if allowed {
                    if must_succeed {
                        (200..300).contains(&resp.status)
                    } else {
                        ![401, 403].contains(&resp.status) && resp.status < 500
                    }
                } else {
                    resp.status == 403 && resp.code() == "forbidden"
                };
                (!ok).then(|| {
                    format!(
                        "{mode}: {who:?} {what}: expected {}, got {} {}",
                        if allowed { "allowed" } else { "403" },
                        resp.status,
                        resp.text
                    )
                })
            };
            for d in [Duty::Credentials, Duty::System] {
                let n = name_of(d);
                let may = keeps(mode, who, d);
                failures.extend(expect(
                    format!("add a {d:?} target"),
                    api.post(
                        "/api/v1/backup/targets",
                        token,
                        json!({"name": format!("t-{n}-{tag}"), "duty": duty_text(d), "dir": dir.join(format!("t-{n}-{tag}")).to_str().unwrap()}),
                    ),
                    may,
                    true,
                ));
                failures.extend(expect(
                    format!("test the {d:?} target"),
                    api.post(
                        &format!("/api/v1/backup/targets/{n}/test"),
                        token,
                        json!({}),
                    ),
                    may,
                    true,
                ));
                failures.extend(expect(
                    format!("add a {d:?} job"),
                    api.post(
                        "/api/v1/backup/jobs",
                        token,
                        json!({"name": format!("j-{n}-{tag}"), "kind": kind_of(d), "target": n, "schedule": "manual"}),
                    ),
                    may,
                    true,
                ));
                // The fixture's run may still be going (409): allowed, not refused.
                failures.extend(expect(
                    format!("run the {d:?} job"),
                    api.post(
                        &format!("/api/v1/backup/jobs/{n}-job/run"),
                        token,
                        json!({}),
                    ),
                    may,
                    false,
                ));
                failures.extend(expect(
                    format!("read the {d:?} run"),
                    api.get(&format!("/api/v1/backup/runs/{}", runs[n]), token),
                    may,
                    true,
                ));
                failures.extend(expect(
                    format!("remove a {d:?} job"),
                    api.call(
                        "DELETE",
                        &format!("/api/v1/backup/jobs/rmj-{n}-{tag}"),
                        token,
                        Body::None,
                    ),
                    may,
                    true,
                ));
                failures.extend(expect(
                    format!("remove a {d:?} target"),
                    api.call(
                        "DELETE",
                        &format!("/api/v1/backup/targets/rm-{n}-{tag}"),
                        token,
                        Body::None,
                    ),
                    may,
                    true,
                ));
                // A job of this duty on the other duty's target: a bad value (naming the field)
                // for whoever keeps both, refused for anyone else.
                let other = name_of(match d {
                    Duty::Credentials => Duty::System,
                    Duty::System => Duty::Credentials,
                });
                let r = api.post(
                    "/api/v1/backup/jobs",
                    token,
                    json!({"name": format!("x-{n}-{tag}"), "kind": kind_of(d), "target": other, "schedule": "manual"}),
                );
                let both = keeps(mode, who, Duty::Credentials) && keeps(mode, who, Duty::System);
                if both {
                    if !(r.status == 400 && r.field() == Some("target") && r.text.contains("holds"))
                    {
                        failures.push(format!(
                            "{mode}: {who:?} a {d:?} job on {other}: expected 400 naming target, got {} {}",
                            r.status, r.text
                        ));
                    }
                } else {
                    failures.extend(expect(format!("a {d:?} job on {other}"), r, false, true));
                }
            }
            // Lists: only the caller's duties.
            let any = keeps(mode, who, Duty::Credentials) || keeps(mode, who, Duty::System);
            for path in ["/api/v1/backup/status", "/api/v1/backup/targets"] {
                let r = api.get(path, token);
                if any && r.status == 200 {
                    let targets = if path.ends_with("status") {
                        &r.body["targets"]
                    } else {
                        &r.body
                    };
                    let mut seen: Vec<&str> = targets
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["duty"].as_str().unwrap_or("none"))
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    let mut want = Vec::new();
                    for d in [Duty::Credentials, Duty::System] {
                        if keeps(mode, who, d) {
                            want.push(duty_text(d));
                        }
                    }
                    if seen != want {
                        failures.push(format!(
                            "{mode}: {who:?} {path}: sees targets of {seen:?}, should see {want:?}"
                        ));
                    }
                    if let Some(jobs) = r.body.get("jobs").and_then(Value::as_array) {
                        for j in jobs {
                            let d = if j["duty"] == "credentials" {
                                Duty::Credentials
                            } else {
                                Duty::System
                            };
                            if !keeps(mode, who, d) {
                                failures.push(format!("{mode}: {who:?} {path}: sees job {j}"));
                            }
                        }
                    }
                }
                failures.extend(expect(path.to_owned(), r, any, true));
            }
            // Snapshots: seen by the customer's admins in every mode, managed as the system side.
            let view = views_snapshots(mode, who);
            let manage = manages_snapshots(mode, who);
            let r = api.get("/api/v1/snapshots", token);
            if view && r.status == 200 && r.body["schedule"]["time"] != "03:00" {
                failures.push(format!("{mode}: {who:?}: no schedule in {}", r.text));
            }
            failures.extend(expect("list snapshots".into(), r, view, true));
            failures.extend(expect(
                "follow a snapshot job".into(),
                api.get(&format!("/api/v1/snapshots/jobs/{snapshot_job}"), token),
                view,
                true,
            ));
            failures.extend(expect(
                "take a snapshot".into(),
                api.post(
                    "/api/v1/snapshots",
                    token,
                    json!({"include_recordings": false}),
                ),
                manage,
                false,
            ));
            failures.extend(expect(
                "verify a snapshot".into(),
                api.post(
                    "/api/v1/snapshots/no-such-snapshot/verify",
                    token,
                    json!({}),
                ),
                manage,
                false,
            ));
            failures.extend(expect(
                "prune snapshots".into(),
                api.post("/api/v1/snapshots/prune", token, json!({"dry_run": true})),
                manage,
                true,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} duty failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
