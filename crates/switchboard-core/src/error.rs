//! One error-code vocabulary for both front doors: every error a user can see carries an
//! [`ErrorCode`], which maps to exactly one gRPC status code and one HTTP status.

use std::borrow::Cow;
use std::fmt;

/// The most bytes of an error message a front door sends back. Messages may quote what the
/// client sent (an id, a field), and a client can send megabytes: longer messages are cut
/// (at a character boundary) and say how long they were, so an error always fits a gRPC
/// `grpc-message` header and a small HTTP body.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// `message`, cut to at most [`MAX_ERROR_MESSAGE_BYTES`] (plus a short note of its length).
pub fn cap_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return Cow::Borrowed(message);
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... (message cut: {} bytes in all)",
        &message[..end],
        message.len()
    ))
}

/// What kind of failure happened, independent of the transport that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a field is out of range (gRPC 3, HTTP 400).
    InvalidArgument,
    /// The named thing does not exist (gRPC 5, HTTP 404).
    NotFound,
    /// It exists already (gRPC 6, HTTP 409).
    AlreadyExists,
    /// No valid credentials (gRPC 16, HTTP 401).
    Unauthenticated,
    /// Valid credentials without the right (gRPC 7, HTTP 403).
    PermissionDenied,
    /// The system is not in a state that allows this (gRPC 9, HTTP 412 for webhooks is odd, so 409).
    FailedPrecondition,
    /// A limit was hit: rate limit, quota, overload (gRPC 8, HTTP 429).
    ResourceExhausted,
    /// The body is larger than allowed (gRPC 8, HTTP 413).
    PayloadTooLarge,
    /// The operation is not supported here (gRPC 12, HTTP 501).
    Unimplemented,
    /// A dependency (a vendor API, the store writer) is down; retry later (gRPC 14, HTTP 503).
    Unavailable,
    /// The deadline passed (gRPC 4, HTTP 504).
    DeadlineExceeded,
    /// A bug or an unexpected failure (gRPC 13, HTTP 500).
    Internal,
}

impl ErrorCode {
    /// The gRPC status code number (`tonic::Code::from(i32)` reads it).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 3,
            ErrorCode::DeadlineExceeded => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::AlreadyExists => 6,
            ErrorCode::PermissionDenied => 7,
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => 8,
            ErrorCode::FailedPrecondition => 9,
            ErrorCode::Unimplemented => 12,
            ErrorCode::Internal => 13,
            ErrorCode::Unavailable => 14,
            ErrorCode::Unauthenticated => 16,
        }
    }

    /// The HTTP status code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }

    /// A stable snake_case name, used in JSON error bodies and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a code and a message a person can act on (no trailing period).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
}

impl Error {
    /// An error with the given code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The request or body is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    /// Verification failed: missing or wrong secret or signature.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unauthenticated, message)
    }

    /// The named thing does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::NotFound, message)
    }

    /// The operation cannot run in the current state or configuration.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::FailedPrecondition, message)
    }

    /// A dependency is down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    /// An unexpected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
}

/// `Result` with Switchboard's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_maps_to_one_grpc_and_http_status() {
        assert_eq!(ErrorCode::InvalidArgument.grpc_code(), 3);
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
        assert_eq!(ErrorCode::Unauthenticated.http_status(), 401);
        assert_eq!(ErrorCode::Unauthenticated.grpc_code(), 16);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::ResourceExhausted.grpc_code(), 8);
        assert_eq!(ErrorCode::Unavailable.grpc_code(), 14);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(cap_message("short"), "short");
        let long = format!("no conversation {}", "é".repeat(3_000_000));
        let capped = cap_message(&long);
        assert!(
            capped.len() < MAX_ERROR_MESSAGE_BYTES + 64,
            "{}",
            capped.len()
        );
        assert!(capped.starts_with("no conversation é"));
        assert!(capped.ends_with(&format!(" {} bytes in all)", long.len())));
    }
}
