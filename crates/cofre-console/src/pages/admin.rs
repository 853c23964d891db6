//! The admin's users (add, unlock), groups (add, members) and policies (read). Changes that
//! widen access are held for a second admin by the services; the page says so.

use super::{next_link, urlencode, Paging};
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, notice, PageResult};
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use cofre_app::services::governance::Applied;
use maud::html;
use serde::Deserialize;

fn held(
    v: &Viewer,
    current: &str,
    title: &str,
    c: &cofre_proto::governance::ChangeInfo,
) -> axum::response::Response {
    layout::page(
        v,
        current,
        title,
        html! {
            (notice("This change widens access: it waits for a second admin's approval."))
            dl { dt { "Change" } dd { (c.id) } dt { "What" } dd { (c.diff) } }
            p { a href=(current) { "Back" } }
        },
    )
}

const ROLES: [&str; 6] = [
    "user", "approver", "auditor", "admin", "operator", "support",
];

pub(crate) async fn users(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .accounts()
        .list_users(&v.who, None, q.cursor.as_deref())
        .await?;
    Ok(layout::page(
        &v,
        "/users",
        "Users",
        html! {
            table {
                caption { "Users" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Groups" } th scope="col" { "TOTP" } th scope="col" { "State" } th scope="col" { "Actions" } } }
                tbody {
                    @for (i, u) in page.items.iter().enumerate() {
                        tr {
                            td { (u.username) }
                            td { (u.role) }
                            td { (u.groups.join(", ")) }
                            td { @if u.totp_enabled { "yes" } @else { "no" } }
                            td {
                                @if u.disabled { "disabled " }
                                @if u.locked { "locked " }
                                @if u.must_change_password { "must change password" }
                                @if !u.disabled && !u.locked && !u.must_change_password { "active" }
                            }
                            td {
                                @let base = format!("/users/{}", urlencode(&u.username));
                                @if u.locked {
                                    form method="post" action={ (base) "/unlock" } {
                                        (csrf_field(&v))
                                        button type="submit" { "Unlock " (u.username) }
                                    }
                                }
                                form method="post" action={ (base) "/role" } {
                                    (csrf_field(&v))
                                    label for={ "role-" (i) } { "Role of " (u.username) }
                                    select id={ "role-" (i) } name="role" {
                                        @for r in ROLES { option value=(r) selected[*r == u.role] { (r) } }
                                    }
                                    button type="submit" { "Set the role of " (u.username) }
                                }
                                form method="post" action={ (base) "/reset" } {
                                    (csrf_field(&v))
                                    button type="submit" { "Reset the password of " (u.username) }
                                }
                                @if u.disabled {
                                    form method="post" action={ (base) "/enable" } {
                                        (csrf_field(&v))
                                        button type="submit" { "Enable " (u.username) }
                                    }
                                } @else {
                                    form method="post" action={ (base) "/disable" } {
                                        (csrf_field(&v))
                                        label for={ "why-" (i) } { "Why disable " (u.username) }
                                        input id={ "why-" (i) } name="reason" required;
                                        button type="submit" { "Disable " (u.username) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (next_link("/users", page.next_cursor.as_deref()))
            h2 { "Add a user" }
            form method="post" action="/users" {
                (csrf_field(&v))
                label for="u-name" { "User name" } input id="u-name" name="username" required;
                label for="u-role" { "Role" }
                select id="u-role" name="role" {
                    @for r in ROLES { option value=(r) { (r) } }
                }
                label for="u-groups" { "Groups (comma-separated)" } input id="u-groups" name="groups";
                label for="u-email" { "Email (optional)" } input id="u-email" name="email" type="email";
                button type="submit" { "Add the user" }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct UserForm {
    username: String,
    role: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    email: Option<String>,
}

pub(crate) async fn create_user(State(c): State<Console>, ch: Change<UserForm>) -> PageResult {
    let f = ch.form;
    let groups: Vec<String> = f
        .groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let email = f.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let v = &ch.viewer;
    match c
        .app
        .accounts()
        .create_user(&v.who, &f.username, &f.role, &groups, email)
        .await?
    {
        Applied::Done(r) => Ok(layout::page(
            v,
            "/users",
            &format!("User {} added", r.user.username),
            html! {
                p { "Give the user this one-time password; they must change it at first login. It is shown once." }
                pre class="secret" { (r.one_time_password.expose()) }
                p { a href="/users" { "Back to users" } }
            },
        )),
        Applied::Held(ch) => Ok(held(v, "/users", "User held for approval", &ch)),
    }
}

#[derive(Deserialize)]
pub(crate) struct Empty {}

pub(crate) async fn unlock_user(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    c.app.accounts().unlock_user(&ch.viewer.who, &name).await?;
    Ok(Redirect::to("/users").into_response())
}

#[derive(Deserialize)]
pub(crate) struct RoleForm {
    role: String,
}

pub(crate) async fn set_role(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<RoleForm>,
) -> PageResult {
    let v = &ch.viewer;
    match c
        .app
        .accounts()
        .set_role(&v.who, &name, &ch.form.role)
        .await?
    {
        Applied::Done(_) => Ok(Redirect::to("/users").into_response()),
        Applied::Held(change) => Ok(held(v, "/users", "Role held for approval", &change)),
    }
}

/// A new one-time password: for another user the service holds it for a second admin, who is
/// the one to see it; the asking admin never does.
pub(crate) async fn reset_password(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    use cofre_app::services::accounts::Reset;
    let v = &ch.viewer;
    match c.app.accounts().reset_password(&v.who, &name).await? {
        Applied::Done(Reset::Shown(otp)) => Ok(layout::page(
            v,
            "/users",
            &format!("Password of {name} reset"),
            html! {
                p { "The new one-time password; it must be changed at the next login. It is shown once." }
                pre class="secret" { (otp.expose()) }
                p { a href="/users" { "Back to users" } }
            },
        )),
        Applied::Done(Reset::Sent(to)) => Ok(layout::page(
            v,
            "/users",
            &format!("Password of {name} reset"),
            html! {
                (notice(&format!("The one-time password went to {to}, and to nobody else.")))
                p { a href="/users" { "Back to users" } }
            },
        )),
        Applied::Held(change) => Ok(layout::page(
            v,
            "/users",
            "Reset held for a second admin",
            html! {
                (notice("Held for a second admin: the one who approves it receives the one-time password."))
                dl { dt { "Change" } dd { (change.id) } dt { "What" } dd { (change.diff) } }
                p { a href="/users" { "Back to users" } }
            },
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct DisableForm {
    reason: String,
}

pub(crate) async fn disable_user(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<DisableForm>,
) -> PageResult {
    c.app
        .accounts()
        .disable_user(&ch.viewer.who, &name, &ch.form.reason)
        .await?;
    Ok(Redirect::to("/users").into_response())
}

pub(crate) async fn enable_user(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    let v = &ch.viewer;
    match c.app.accounts().enable_user(&v.who, &name).await? {
        Applied::Done(_) => Ok(Redirect::to("/users").into_response()),
        Applied::Held(change) => Ok(held(v, "/users", "Enabling held for approval", &change)),
    }
}

pub(crate) async fn groups(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .accounts()
        .list_groups(&v.who, None, q.cursor.as_deref())
        .await?;
    Ok(layout::page(
        &v,
        "/groups",
        "Groups",
        html! {
            table {
                caption { "Groups and their members" }
                thead { tr { th scope="col" { "Group" } th scope="col" { "Members" } } }
                tbody { @for g in &page.items { tr { td { (g.name) } td { (g.members.join(", ")) } } } }
            }
            (next_link("/groups", page.next_cursor.as_deref()))
            h2 { "Add a group" }
            form method="post" action="/groups" {
                (csrf_field(&v))
                label for="g-name" { "Name" } input id="g-name" name="name" required;
                button type="submit" { "Add the group" }
            }
            h2 { "Add a member" }
            form method="post" action="/groups/members" {
                (csrf_field(&v))
                label for="m-group" { "Group" } input id="m-group" name="group" required;
                label for="m-user" { "User name" } input id="m-user" name="username" required;
                button type="submit" { "Add the member" }
            }
            h2 { "Remove a member" }
            form method="post" action="/groups/members/remove" {
                (csrf_field(&v))
                label for="r-group" { "Group" } input id="r-group" name="group" required;
                label for="r-user" { "User name" } input id="r-user" name="username" required;
                button type="submit" { "Remove the member" }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct GroupForm {
    name: String,
}

pub(crate) async fn create_group(State(c): State<Console>, ch: Change<GroupForm>) -> PageResult {
    c.app
        .accounts()
        .create_group(&ch.viewer.who, &ch.form.name)
        .await?;
    Ok(Redirect::to("/groups").into_response())
}

#[derive(Deserialize)]
pub(crate) struct MemberForm {
    group: String,
    username: String,
}

pub(crate) async fn add_member(State(c): State<Console>, ch: Change<MemberForm>) -> PageResult {
    let v = &ch.viewer;
    match c
        .app
        .accounts()
        .add_group_member(&v.who, &ch.form.group, &ch.form.username)
        .await?
    {
        Applied::Done(()) => Ok(Redirect::to("/groups").into_response()),
        Applied::Held(change) => Ok(held(v, "/groups", "Member held for approval", &change)),
    }
}

pub(crate) async fn remove_member(State(c): State<Console>, ch: Change<MemberForm>) -> PageResult {
    c.app
        .accounts()
        .remove_group_member(&ch.viewer.who, &ch.form.group, &ch.form.username)
        .await?;
    Ok(Redirect::to("/groups").into_response())
}

pub(crate) async fn remove_policy(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    let v = &ch.viewer;
    match c.app.vault().delete_policy(&v.who, &name).await? {
        Applied::Done(()) => Ok(Redirect::to("/policies").into_response()),
        Applied::Held(change) => Ok(held(v, "/policies", "Removal held for approval", &change)),
    }
}

pub(crate) async fn policies(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .vault()
        .list_policies(&v.who, None, q.cursor.as_deref())
        .await?;
    let manages = v
        .who
        .require(cofre_core::role::Action::ManagePolicies)
        .is_ok();
    Ok(layout::page(
        &v,
        "/policies",
        "Policies",
        html! {
            table {
                caption { "Policies (the most restrictive matching outcome wins)" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Group" } th scope="col" { "Targets" } th scope="col" { "Allows" } th scope="col" { "Outcome" } th scope="col" { "Limits" } th scope="col" { "Actions" } } }
                tbody {
                    @for p in &page.items {
                        tr {
                            td { (p.name) } td { (p.group) } td { (p.targets.join(", ")) }
                            td { (p.allow.join(", ")) } td { (p.outcome) }
                            td { (layout::json_view(&serde_json::to_value(&p.limits).unwrap_or_default())) }
                            td {
                                @if manages {
                                    a href={ "/policies/" (urlencode(&p.name)) "/edit" } { "Edit " (p.name) }
                                }
                                form method="post" action={ "/policies/" (urlencode(&p.name)) "/remove" } {
                                    (csrf_field(&v))
                                    button type="submit" { "Remove " (p.name) }
                                }
                            }
                        }
                    }
                }
            }
            (next_link("/policies", page.next_cursor.as_deref()))
            h2 { "Add a policy" }
            p { "One that grants what its group's policies do not yet, or a removal that could have restricted someone, waits for a second admin." }
            (policy_form(&v, "/policies", None))
        },
    ))
}

/// The add form (`current` none) or the edit form, prefilled from the policy as read and carrying
/// the version it was read at, so an edit made meanwhile by someone else is refused, not lost.
fn policy_form(
    v: &Viewer,
    action: &str,
    current: Option<&cofre_proto::PolicyInfo>,
) -> maud::Markup {
    let l = current.map(|p| p.limits.clone()).unwrap_or_default();
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    let allows = |a: &str| current.is_some_and(|p| p.allow.iter().any(|x| x == a));
    html! {
        form method="post" action=(action) {
            (csrf_field(v))
            @if let Some(p) = current {
                input type="hidden" name="version" value=(p.version);
                input type="hidden" name="name" value=(p.name);
                p { "Policy " strong { (p.name) } " (version " (p.version) ")" }
            } @else {
                label for="p-name" { "Name" } input id="p-name" name="name" required;
            }
            label for="p-group" { "Group" } input id="p-group" name="group" required value=[current.map(|p| p.group.as_str())];
            label for="p-targets" { "Targets (comma-separated: *, tag:TAG or names)" }
            input id="p-targets" name="targets" required value=[current.map(|p| p.targets.join(","))];
            fieldset {
                legend { "Allows" }
                input id="p-session" name="allow_session" type="checkbox" value="true" checked[allows("session")];
                label for="p-session" { "session" }
                input id="p-reveal" name="allow_reveal" type="checkbox" value="true" checked[allows("reveal")];
                label for="p-reveal" { "reveal" }
            }
            label for="p-outcome" { "Outcome" }
            select id="p-outcome" name="outcome" {
                @for o in ["allow", "justify", "approve"] {
                    option value=(o) selected[current.is_some_and(|p| p.outcome == o)] { (o) }
                }
            }
            label for="p-levels" { "Approval levels (for approve: leads:1,security:1)" } input id="p-levels" name="levels" value=(text(&l.levels));
            label for="p-max" { "Longest grant (e.g. 4h)" } input id="p-max" name="max_duration" value=(text(&l.max_duration));
            label for="p-hours" { "Hours (e.g. 08:00-20:00)" } input id="p-hours" name="hours" value=(text(&l.hours));
            label for="p-days" { "Days (e.g. mon-fri)" } input id="p-days" name="days" value=(text(&l.days));
            label for="p-from" { "First day (YYYY-MM-DD)" } input id="p-from" name="from" value=(text(&l.from));
            label for="p-until" { "Last day (YYYY-MM-DD)" } input id="p-until" name="until" value=(text(&l.until));
            label for="p-networks" { "Source networks (comma-separated CIDRs; empty: anywhere)" }
            input id="p-networks" name="networks" value=(l.networks.clone().unwrap_or_default().join(","));
            input id="p-emergency" name="emergency" type="checkbox" value="true" checked[l.emergency];
            label for="p-emergency" { "Emergency access" }
            input id="p-moderated" name="moderated" type="checkbox" value="true" checked[l.moderated];
            label for="p-moderated" { "Moderated sessions" }
            @if current.is_some() {
                p { "An empty field clears that option. An edit that widens access (old against new) waits for a second admin; one that only narrows applies at once." }
                button type="submit" { "Save the policy" }
            } @else {
                button type="submit" { "Add the policy" }
            }
        }
    }
}

pub(crate) async fn edit_policy_page(
    State(c): State<Console>,
    v: Viewer,
    Path(name): Path<String>,
) -> PageResult {
    // A form to change a policy is for those who may change one; auditors read the list.
    v.who.require(cofre_core::role::Action::ManagePolicies)?;
    let p = c.app.vault().get_policy(&v.who, &name).await?;
    let action = format!("/policies/{}/edit", urlencode(&p.name));
    Ok(layout::page(
        &v,
        "/policies",
        "Edit a policy",
        html! {
            (policy_form(&v, &action, Some(&p)))
            p { a href="/policies" { "Back to the policies" } }
        },
    ))
}

pub(crate) async fn edit_policy(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<PolicyForm>,
) -> PageResult {
    let v = &ch.viewer;
    let version = ch.form.version.clone();
    let req = policy_request(ch.form);
    match c
        .app
        .vault()
        .update_policy(&v.who, &name, version.as_deref(), &req)
        .await?
    {
        Applied::Done(_) => Ok(Redirect::to("/policies").into_response()),
        Applied::Held(change) => Ok(held(v, "/policies", "Edit held for approval", &change)),
    }
}

#[derive(Deserialize)]
pub(crate) struct PolicyForm {
    #[serde(default)]
    version: Option<String>,
    name: String,
    group: String,
    targets: String,
    #[serde(default)]
    allow_session: Option<String>,
    #[serde(default)]
    allow_reveal: Option<String>,
    outcome: String,
    #[serde(default)]
    levels: Option<String>,
    #[serde(default)]
    max_duration: Option<String>,
    #[serde(default)]
    hours: Option<String>,
    #[serde(default)]
    days: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    networks: String,
    #[serde(default)]
    emergency: Option<String>,
    #[serde(default)]
    moderated: Option<String>,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn given(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn policy_request(f: PolicyForm) -> cofre_proto::CreatePolicyRequest {
    let mut allow = Vec::new();
    if f.allow_session.is_some() {
        allow.push("session".to_owned());
    }
    if f.allow_reveal.is_some() {
        allow.push("reveal".to_owned());
    }
    cofre_proto::CreatePolicyRequest {
        name: f.name.trim().to_owned(),
        group: f.group.trim().to_owned(),
        targets: list(&f.targets),
        allow,
        outcome: f.outcome,
        levels: given(f.levels),
        max_duration: given(f.max_duration),
        hours: given(f.hours),
        days: given(f.days),
        from: given(f.from),
        until: given(f.until),
        emergency: f.emergency.is_some(),
        moderated: f.moderated.is_some(),
        networks: list(&f.networks),
    }
}

pub(crate) async fn create_policy(State(c): State<Console>, ch: Change<PolicyForm>) -> PageResult {
    let req = policy_request(ch.form);
    let v = &ch.viewer;
    match c.app.vault().create_policy(&v.who, &req).await? {
        Applied::Done(_) => Ok(Redirect::to("/policies").into_response()),
        Applied::Held(change) => Ok(held(v, "/policies", "Policy held for approval", &change)),
    }
}
