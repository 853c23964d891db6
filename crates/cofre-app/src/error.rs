//! The one error type of the services: a stable `code`, a human message, the offending field, and a
//! kind that the HTTP layer maps to a status. Messages never carry secrets.

use cofre_core::FieldError;
pub use cofre_proto::ErrorCode;
use cofre_store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    Locked,
    /// Too many attempts from here: wait (429).
    TooMany,
    Sealed,
    /// The service is switched off for now (503), e.g. the application disabled by Orbit.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, ErrorCode::InvalidField, message).with_field(field)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, ErrorCode::Forbidden, message)
    }
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorKind::NotFound,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }
    pub fn sealed() -> Self {
        Self::new(
            ErrorKind::Sealed,
            ErrorCode::Sealed,
            "the server is sealed: unseal it with `cofre operator unseal` (k of n shares)",
        )
    }
    /// Logs the detail for operators and tells the client only that something failed inside.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %detail, "internal error");
        Self::new(
            ErrorKind::Internal,
            ErrorCode::Internal,
            format!("internal error while {context}; the server log has details"),
        )
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::invalid(&e.field, format!("{}: {}", e.field, e.reason))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what } => Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                format!("{what} already exists"),
            ),
            StoreError::NotFound { what } => Error::not_found(what),
            other => Error::internal("using the database", other),
        }
    }
}
