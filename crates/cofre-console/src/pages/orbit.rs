//! Orbit at a glance: snapshots, backups and break-glass status, each what its service returns.
//! Parts that other issues add (maintenance, support, network) join as one more section here.

use crate::auth::Viewer;
use crate::layout::{self, PageResult};
use crate::Console;
use axum::extract::State;
use maud::{html, Markup};

fn section(title: &str, r: Result<serde_json::Value, cofre_app::error::Error>) -> Markup {
    html! {
        section aria-labelledby={ "s-" (title) } {
            h2 id={ "s-" (title) } { (title) }
            @match r {
                Ok(v) => { (layout::json_view(&v)) }
                Err(e) => { p role="alert" { (e.message) } }
            }
        }
    }
}

fn json<T: serde::Serialize>(
    r: Result<T, cofre_app::error::Error>,
) -> Result<serde_json::Value, cofre_app::error::Error> {
    r.and_then(|t| {
        serde_json::to_value(t).map_err(|e| cofre_app::error::Error::internal("rendering Orbit", e))
    })
}

pub(crate) async fn orbit(State(c): State<Console>, v: Viewer) -> PageResult {
    v.who.require(cofre_core::role::Action::Orbit)?;
    let orbit = c.app.orbit();
    let snapshots = json(orbit.list_snapshots(&v.who));
    let backups = json(orbit.get_backup_status(&v.who).await);
    let breakglass = json(orbit.get_breakglass_status(&v.who).await);
    Ok(layout::page(
        &v,
        "/orbit",
        "Orbit",
        html! {
            p { "Create, verify and run with " code { "cofre snapshot" } ", " code { "cofre backup" } " and " code { "cofre breakglass" } "." }
            (section("Snapshots", snapshots))
            (section("Backups", backups))
            (section("Break-glass", breakglass))
        },
    ))
}
