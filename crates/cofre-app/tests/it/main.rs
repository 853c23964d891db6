//! Service-level tests of cofre-server: the use cases on a real store (SQLite and PostgreSQL) with
//! a clock the test moves. One binary, modules per area.

mod approvals;
mod governance;
