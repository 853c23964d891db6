//! The page shell (skip link, navigation by role, main landmark), the headers every page
//! carries (CSP, no-store, no framing), and errors as pages.

use crate::assets;
use crate::auth::Viewer;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cofre_core::role::Action;
use maud::{html, Markup, DOCTYPE};
use rand::RngCore;

/// A page's Content-Security-Policy: nothing from another origin, no inline script or style,
/// no eval; `nonce` admits the style elements xterm.js makes (terminal.js gives them the nonce).
fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

pub(crate) fn nonce() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A download (the audit CSV) carries a page's headers too: it is never cached, framed, or
/// allowed to run anything should a browser render it.
pub(crate) fn download(mut res: Response) -> Response {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp(&nonce())) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn respond(status: StatusCode, nonce: &str, body: Markup) -> Response {
    let mut res = (status, body.into_string()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp(nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

/// One navigation entry per page the viewer's role reaches (what the services would refuse is
/// not offered; the services still decide).
fn nav(v: &Viewer, current: &str) -> Markup {
    let may = |a: Action| v.who.require(a).is_ok();
    let mut links: Vec<(&str, &str)> = vec![("/", "Home")];
    if may(Action::ListTargets) {
        links.push(("/targets", "Targets"));
    }
    if may(Action::UseCredentials) {
        links.push(("/requests", "My requests"));
    }
    if may(Action::DecideRequests) {
        links.push(("/inbox", "Inbox"));
    }
    if may(Action::ManageGrants) {
        links.push(("/grants", "Grants"));
    }
    if may(Action::ManageUsers) {
        links.push(("/users", "Users"));
        links.push(("/groups", "Groups"));
    }
    if may(Action::ViewPolicies) {
        links.push(("/policies", "Policies"));
    }
    if may(Action::ReadAudit) {
        links.push(("/audit", "Audit trail"));
    }
    // Approvers may not list sessions, but they see the moderated ones they may watch.
    if may(Action::ListSessions) || may(Action::WatchSessions) {
        links.push(("/sessions", "Live sessions"));
    }
    if may(Action::Emergency) {
        links.push(("/emergency", "Emergency"));
    }
    if may(Action::ReadRecordings) {
        links.push(("/recordings", "Recordings"));
    }
    // Orbit: whoever sees snapshots or keeps a kind of backups (in saas the customer's admins
    // keep the credential backups and see the snapshots).
    if may(Action::ViewSnapshots) || may(Action::SystemBackups) || may(Action::CredentialBackups) {
        links.push(("/orbit", "Orbit"));
    }
    // The support service decides by role (the vendor's own, the customer's admins and auditors).
    if matches!(
        v.who.role(),
        cofre_core::role::Role::Support
            | cofre_core::role::Role::Admin
            | cofre_core::role::Role::Auditor
    ) {
        links.push(("/support", "Support grants"));
    }
    html! {
        nav aria-label="Main" {
            ul {
                @for (href, label) in links {
                    li {
                        @if href == current {
                            a href=(href) aria-current="page" { (label) }
                        } @else {
                            a href=(href) { (label) }
                        }
                    }
                }
            }
            form method="post" action="/logout" class="logout" {
                (csrf_field(v))
                span { "Signed in as " strong { (v.who.username()) } " (" (v.who.role().as_str()) ")" }
                " "
                button type="submit" { "Log out" }
            }
        }
    }
}

pub(crate) fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

fn head(title: &str, nonce: &str, scripts: &[&str], styles: &[&str]) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="csp-nonce" content=(nonce);
            title { (title) " · Cofre" }
            link rel="stylesheet" href=(assets::url("console.css"));
            @for s in styles { link rel="stylesheet" href=(assets::url(s)); }
            script src=(assets::url("console.js")) defer {}
            @for s in scripts { script src=(assets::url(s)) defer {} }
        }
    }
}

/// A page for a logged-in viewer.
pub(crate) fn page(v: &Viewer, current: &str, title: &str, body: Markup) -> Response {
    page_with(v, current, title, &[], &[], body)
}

/// A page with its own scripts and style sheets (by plain asset name).
pub(crate) fn page_with(
    v: &Viewer,
    current: &str,
    title: &str,
    scripts: &[&str],
    styles: &[&str],
    body: Markup,
) -> Response {
    let nonce = nonce();
    respond(
        StatusCode::OK,
        &nonce,
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, &nonce, scripts, styles))
                body {
                    a href="#main" class="skip" { "Skip to content" }
                    header { p class="brand" { "Cofre" } (nav(v, current)) }
                    main id="main" tabindex="-1" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        },
    )
}

/// A page without navigation (login, errors before login).
pub(crate) fn bare(status: StatusCode, title: &str, body: Markup) -> Response {
    bare_with(status, title, &[], &[], body)
}

/// A page without navigation with its own scripts and style sheets (the external listener's
/// terminal).
pub(crate) fn bare_with(
    status: StatusCode,
    title: &str,
    scripts: &[&str],
    styles: &[&str],
    body: Markup,
) -> Response {
    let nonce = nonce();
    respond(
        status,
        &nonce,
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, &nonce, scripts, styles))
                body {
                    header { p class="brand" { "Cofre" } }
                    main id="main" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        },
    )
}

/// A refusal or failure, as a page with the status the API would answer.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            code: "bad_request",
            message: message.into(),
        }
    }
    pub(crate) fn csrf() -> PageError {
        PageError {
            status: StatusCode::FORBIDDEN,
            code: "csrf_failed",
            message: "this change did not come with the page's CSRF token (or came from another site); reload the page and try again".into(),
        }
    }
}

pub(crate) fn status_of(kind: cofre_app::error::ErrorKind) -> StatusCode {
    use cofre_app::error::ErrorKind;
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Locked => StatusCode::LOCKED,
        ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Sealed | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<cofre_app::error::Error> for PageError {
    fn from(e: cofre_app::error::Error) -> PageError {
        PageError {
            status: status_of(e.kind),
            code: e.code.as_str(),
            message: match e.field {
                Some(f) if !e.message.contains(&f) => format!("{f}: {}", e.message),
                _ => e.message,
            },
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            // Everyone but admins is refused while the instance is locked down: say so, not
            // "not allowed", so the user knows it is the instance and not their rights.
            _ if self.code == cofre_proto::ErrorCode::InstanceLockedDown.as_str() => {
                "Cofre is locked down"
            }
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::UNAUTHORIZED => "Not logged in",
            s if s.is_client_error() => "Not done",
            _ => "Something failed",
        };
        bare(
            self.status,
            title,
            html! {
                p role="alert" data-code=(self.code) { (self.message) }
                p { a href="/" { "Back to the console" } }
            },
        )
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

/// A message shown at the top of a page after a change (`role=status`, read by screen readers).
pub(crate) fn notice(text: &str) -> Markup {
    html! { p role="status" class="notice" { (text) } }
}

/// Any JSON value as a definition list or table, for pages that show what a service returns
/// as it is (Orbit's parts): a new part is a call and a heading, not a new template.
pub(crate) fn json_view(v: &serde_json::Value) -> Markup {
    use serde_json::Value;
    match v {
        Value::Null => html! { span class="none" { "none" } },
        Value::Bool(b) => html! { (if *b { "yes" } else { "no" }) },
        Value::Number(n) => html! { (n.to_string()) },
        Value::String(s) => html! { (s) },
        Value::Array(items) if items.is_empty() => html! { span class="none" { "none" } },
        Value::Array(items) => {
            let cols: Vec<String> = match items.first() {
                Some(Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            };
            if cols.is_empty() {
                html! { ul { @for i in items { li { (json_view(i)) } } } }
            } else {
                html! {
                    table {
                        thead { tr { @for c in &cols { th scope="col" { (c) } } } }
                        tbody {
                            @for i in items {
                                tr { @for c in &cols { td { (json_view(i.get(c).unwrap_or(&Value::Null))) } } }
                            }
                        }
                    }
                }
            }
        }
        Value::Object(m) => html! {
            dl { @for (k, val) in m { dt { (k) } dd { (json_view(val)) } } }
        },
    }
}
