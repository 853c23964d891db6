//! The `cofre-opener` binary on its own: what it is built from (`cargo tree`) and that it opens a
//! break-glass file with nothing around it (empty environment, no network).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod opener;
