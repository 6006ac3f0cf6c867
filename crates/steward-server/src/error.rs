//! The one error type services return: a stable machine `code`, a human `message`, and a
//! kind that the API turns into an HTTP status and the CLI into an exit code.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value breaks a rule (400).
    Invalid,
    /// No credentials, or credentials that are wrong, expired or revoked (401).
    Unauthenticated,
    /// The caller's role may not do this (403).
    Forbidden,
    /// The thing named does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// Too many attempts: try again later (429), e.g. a sign-in lock after failed passwords.
    Throttled,
    /// Something failed inside Steward (500). The message says what; nothing was changed.
    Internal,
    /// A service Steward depends on (the PostgreSQL control plane) cannot be reached right
    /// now (503); nothing was changed, and the request can be retried.
    Unavailable,
    /// Another Steward node this request was passed on to did not answer (502); nothing was
    /// changed.
    BadGateway,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceError {
    #[serde(skip)]
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ServiceError {}

impl From<steward_store::StoreError> for ServiceError {
    fn from(e: steward_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        if e.is_unavailable() {
            return ServiceError::new(
                ErrorKind::Unavailable,
                "store_unavailable",
                format!("{e}; nothing was changed, try again when it is back"),
            );
        }
        ServiceError::internal(e.to_string())
    }
}

impl From<steward_core::Denied> for ServiceError {
    fn from(e: steward_core::Denied) -> Self {
        ServiceError::new(ErrorKind::Forbidden, "forbidden", e.to_string())
    }
}

impl From<steward_core::NameError> for ServiceError {
    fn from(e: steward_core::NameError) -> Self {
        ServiceError::invalid("invalid_name", e.to_string())
    }
}

impl From<steward_core::instance::UnknownValue> for ServiceError {
    fn from(e: steward_core::instance::UnknownValue) -> Self {
        ServiceError::invalid("invalid_value", e.to_string())
    }
}
