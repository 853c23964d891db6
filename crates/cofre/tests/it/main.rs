//! Cofre's integration suite: real `cofre server` processes over HTTPS, the real CLI, real SQLite
//! and PostgreSQL databases (PostgreSQL at 127.0.0.1:5432 or COFRE_TEST_PG_URL).

// A failed test is a panic: the workspace's errors-are-values lints stop at the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod api_conformance;
mod approvals;
mod audit_export;
mod audit_search;
mod authz;
mod backup;
mod bad_input;
mod breakglass;
mod connect;
mod console;
mod console_browser;
mod copy_database;
mod crash;
mod dual_control;
mod flow;
mod gateway;
mod harness;
mod lists;
mod maintenance;
mod network;
mod nodes;
mod offboarding;
mod orbit;
mod policy_edit;
mod reveal;
mod rotation;
mod sealed;
mod secret_logs;
mod siem;
mod snapshot;
mod sso;
mod support;
mod tamper;
mod time_zone;
