//! Service-level tests of cofre-app: the use cases on a real store (SQLite and PostgreSQL) with
//! a clock the test moves. One binary, modules per area.

// A failed test is a panic: the workspace's errors-are-values lints stop at the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod approvals;
mod audit_batch;
mod audit_time_search;
mod governance;
mod siem;
