//! The services' error as an HTTP answer. A type of this crate, because the orphan rule keeps
//! axum's `IntoResponse` off cofre-app's `Error` (and cofre-app knows nothing of HTTP).

pub use cofre_app::error::{ErrorCode, ErrorKind};

#[derive(Debug, Clone)]
pub struct Error(pub cofre_app::error::Error);

impl From<cofre_app::error::Error> for Error {
    fn from(e: cofre_app::error::Error) -> Self {
        Error(e)
    }
}

impl std::ops::Deref for Error {
    type Target = cofre_app::error::Error;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Error {
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Error(cofre_app::error::Error::new(kind, code, message))
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error(cofre_app::error::Error::invalid(field, message))
    }
    pub fn sealed() -> Self {
        Error(cofre_app::error::Error::sealed())
    }
}

impl From<cofre_core::FieldError> for Error {
    fn from(e: cofre_core::FieldError) -> Self {
        Error(e.into())
    }
}
