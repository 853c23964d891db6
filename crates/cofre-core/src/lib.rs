//! Cofre's pure domain: what a name may look like, what each role may do, how policies decide an
//! access, and how audit entries chain. Nothing here does I/O, reads a clock or touches a secret, so
//! every rule can be tested on its own and reused by every front end (HTTP, SSH gateway, CLI).

pub mod approval;
pub mod audit;
pub mod governance;
pub mod instance;
pub mod invite;
pub mod lockout;
pub mod maintenance;
pub mod names;
pub mod network;
pub mod password_policy;
pub mod policy;
pub mod role;
pub mod rotation_template;
pub mod siem;
pub mod sso;
pub mod support;
pub mod when;

/// A rejected input: which field and why. Front ends turn it into a 4xx with the field named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
