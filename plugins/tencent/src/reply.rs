//! The reply Tencent expects: `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`.

use serde::Serialize;
use switchboard_core::{Error, ErrorCode, IngestSummary, WebhookReply};

/// The `ErrorCode` Switchboard answers Tencent with when it refuses a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TencentErrorCode {
    /// 0: accepted.
    Ok = 0,
    /// 1: the request is malformed (bad body, wrong CallbackCommand, too large).
    InvalidRequest = 1,
    /// 2: verification failed (SdkAppid or token).
    Unauthenticated = 2,
    /// 3: Switchboard could not store it now (internal error, store unavailable); retry.
    Unavailable = 3,
}

impl TencentErrorCode {
    /// The Tencent code for a Switchboard error code.
    pub fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument
            | ErrorCode::PayloadTooLarge
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::FailedPrecondition => TencentErrorCode::InvalidRequest,
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => {
                TencentErrorCode::Unauthenticated
            }
            ErrorCode::ResourceExhausted
            | ErrorCode::Unimplemented
            | ErrorCode::Unavailable
            | ErrorCode::DeadlineExceeded
            | ErrorCode::Internal => TencentErrorCode::Unavailable,
        }
    }
}

/// Field order matters: Tencent's documented reply is written in this order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Reply<'a> {
    action_status: &'a str,
    error_info: &'a str,
    error_code: u8,
}

/// The reply for an outcome: HTTP 200 and `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
/// on success; on failure `"ActionStatus":"FAIL"`, a [`TencentErrorCode`], the reason, and the
/// HTTP status of the error's code.
pub fn reply_for(outcome: Result<&IngestSummary, &Error>) -> WebhookReply {
    let (status, reply) = match outcome {
        Ok(_) => (
            200,
            Reply {
                action_status: "OK",
                error_info: "",
                error_code: TencentErrorCode::Ok as u8,
            },
        ),
        Err(error) => (
            error.code.http_status(),
            Reply {
                action_status: "FAIL",
                error_info: &error.message,
                error_code: TencentErrorCode::of(error.code) as u8,
            },
        ),
    };
    WebhookReply {
        status,
        content_type: "application/json",
        // Serializing a struct of strings and a number cannot fail.
        body: serde_json::to_vec(&reply).unwrap_or_default(),
    }
}
