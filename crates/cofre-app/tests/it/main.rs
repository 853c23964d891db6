//! Service-level tests of cofre-app: the use cases on a real store (SQLite and PostgreSQL) with
//! a clock the test moves. One binary, modules per area.

// A failed test is a panic: the workspace's errors-are-values lints stop at the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod approvals;
mod audit_batch;
mod audit_time_search;
mod governance;
mod siem;
mod sso;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// An unsealed `App` on `config` (initialised on first use) whose clock reads `now` (unix
/// seconds), which the test moves.
pub(crate) async fn app_at(
    config: cofre_app::config::ServerConfig,
    start: i64,
) -> (Arc<cofre_app::services::App>, Arc<AtomicI64>) {
    let (first, _) = cofre_app::initialise(&config, cofre_app::SealChoice::KeyFile)
        .await
        .unwrap();
    let now = Arc::new(AtomicI64::new(start));
    let clock_now = now.clone();
    let clock: cofre_app::Clock = Arc::new(move || {
        time::OffsetDateTime::from_unix_timestamp(clock_now.load(Ordering::SeqCst)).unwrap()
    });
    let app =
        cofre_app::services::App::new(first.store.clone(), config, first.keyring.clone(), clock);
    app.unseal_from_key_file().unwrap();
    (app, now)
}
