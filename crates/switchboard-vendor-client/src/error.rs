//! From a vendor's HTTP answer to Switchboard's [`Error`].

use std::time::Duration;

use switchboard_core::{Error, ErrorCode};

/// The most characters of a vendor's message kept in an error.
const MAX_VENDOR_MESSAGE: usize = 200;

/// Maps a vendor's non-2xx answer to an [`Error`] whose message names the vendor, the status
/// and the vendor's own message.
///
/// 429 gives `ResourceExhausted`; 5xx `Unavailable`; 401 and 403 `FailedPrecondition` (the
/// vendor refused the connection's credentials); 404 `NotFound`; 400 and 422
/// `InvalidArgument`; 409 `AlreadyExists`; other 4xx `FailedPrecondition`. The vendor's message
/// is read from the JSON fields `error.message`, `message`, `error_description` or `error`,
/// else it is the first 200 characters of the body.
///
/// It knows no secrets, so it removes none: a connector holding a [`VendorClient`] uses
/// [`VendorClient::error_for`] instead, which removes the connection's secrets (and any others
/// given) as `send()` does.
///
/// [`VendorClient`]: crate::VendorClient
/// [`VendorClient::error_for`]: crate::VendorClient::error_for
pub fn error_for(vendor: &str, status: u16, body: &[u8]) -> Error {
    status_error(vendor, status, &vendor_message(body, &[]), None)
}

/// [`error_for`] with the wait the vendor asked for (429's `Retry-After`).
pub(crate) fn status_error(
    vendor: &str,
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
) -> Error {
    let (code, text) = match status {
        429 => {
            let advice = match retry_after {
                Some(wait) => format!("retry after {} s", seconds(wait)),
                None => "retry later or lower the connection's rate_limit".to_owned(),
            };
            (
                ErrorCode::ResourceExhausted,
                format!("{vendor} rate limit reached (HTTP 429: {message}): {advice}"),
            )
        }
        401 | 403 => (
            ErrorCode::FailedPrecondition,
            format!(
                "the vendor refused the connection's credentials ({vendor} HTTP {status}: {message}): \
                 check the connection's secrets"
            ),
        ),
        404 => (
            ErrorCode::NotFound,
            format!(
                "{vendor} found no such resource (HTTP 404: {message}): check the id and the \
                 connection's base_url"
            ),
        ),
        400 | 422 => (
            ErrorCode::InvalidArgument,
            format!(
                "{vendor} rejected the request (HTTP {status}: {message}): check the request's values"
            ),
        ),
        409 => (
            ErrorCode::AlreadyExists,
            format!(
                "{vendor} reports a conflict (HTTP 409: {message}): it exists already or changed \
                 meanwhile"
            ),
        ),
        400..=499 => (
            ErrorCode::FailedPrecondition,
            format!(
                "{vendor} refused the request (HTTP {status}: {message}): check the connection's \
                 settings and the vendor account"
            ),
        ),
        500..=599 => (
            ErrorCode::Unavailable,
            format!("{vendor} is failing (HTTP {status}: {message}): retry later"),
        ),
        _ => (
            ErrorCode::Unavailable,
            format!(
                "{vendor} answered an unexpected HTTP {status} ({message}): check the \
                 connection's base_url"
            ),
        ),
    };
    Error::new(code, text)
}

/// The vendor's own message: a JSON error field, else the start of the body; `secrets` are
/// removed before it is cut short, so no part of one survives at the cut.
pub(crate) fn vendor_message(body: &[u8], secrets: &[&str]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        for pointer in ["/error/message", "/message", "/error_description", "/error"] {
            if let Some(text) = json.pointer(pointer).and_then(|v| v.as_str()) {
                let text = clean(&redact(text.to_owned(), secrets));
                if !text.is_empty() {
                    return text;
                }
            }
        }
    }
    let text = clean(&redact(String::from_utf8_lossy(body).into_owned(), secrets));
    if text.is_empty() {
        "empty body".to_owned()
    } else {
        text
    }
}

/// One line, no control characters, at most [`MAX_VENDOR_MESSAGE`] characters.
fn clean(text: &str) -> String {
    let mut out = String::new();
    for (count, c) in text.trim().chars().enumerate() {
        if count == MAX_VENDOR_MESSAGE {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.trim_end().to_owned()
}

/// A duration as seconds for a message: `3`, `0.25`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.2}", d.as_secs_f64())
    }
}

/// Replaces every secret in `text` with `[redacted]`, as is and form-encoded (a vendor that
/// echoes a form body echoes `p%40ss`, not `p@ss`).
pub(crate) fn redact(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let encoded = serde_urlencoded::to_string([("", *secret)])
            .ok()
            .and_then(|pair| pair.strip_prefix('=').map(str::to_owned));
        for variant in std::iter::once(*secret).chain(encoded.as_deref()) {
            if text.contains(variant) {
                text = text.replace(variant, "[redacted]");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        let cases = [
            (429, ErrorCode::ResourceExhausted),
            (500, ErrorCode::Unavailable),
            (502, ErrorCode::Unavailable),
            (503, ErrorCode::Unavailable),
            (401, ErrorCode::FailedPrecondition),
            (403, ErrorCode::FailedPrecondition),
            (404, ErrorCode::NotFound),
            (400, ErrorCode::InvalidArgument),
            (422, ErrorCode::InvalidArgument),
            (409, ErrorCode::AlreadyExists),
            (405, ErrorCode::FailedPrecondition),
            (410, ErrorCode::FailedPrecondition),
            (302, ErrorCode::Unavailable),
        ];
        for (status, code) in cases {
            let error = error_for("livechat", status, br#"{"message":"nope"}"#);
            assert_eq!(error.code, code, "HTTP {status}");
            assert!(error.message.contains("livechat"), "{}", error.message);
            assert!(
                error.message.contains(&status.to_string()),
                "{}",
                error.message
            );
            assert!(error.message.contains("nope"), "{}", error.message);
            assert!(!error.message.ends_with('.'), "{}", error.message);
        }
        assert!(
            error_for("livetex", 401, b"")
                .message
                .contains("the vendor refused the connection's credentials")
        );
    }

    #[test]
    fn the_vendor_message_comes_from_the_usual_fields() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"error":{"type":"x","message":"Chat not found"}}"#,
                "Chat not found",
            ),
            (br#"{"message":"Invalid token"}"#, "Invalid token"),
            (
                br#"{"error":"invalid_grant","error_description":"Bad password"}"#,
                "Bad password",
            ),
            (br#"{"error":"invalid_client"}"#, "invalid_client"),
            (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
            (b"", "empty body"),
            (b"line one\nline two", "line one line two"),
            (br#"{"error":{"code":7}}"#, r#"{"error":{"code":7}}"#),
        ];
        for (body, expected) in cases {
            assert_eq!(vendor_message(body, &[]), expected);
        }
    }

    #[test]
    fn long_bodies_are_cut_to_200_characters() {
        let body = "é".repeat(1000);
        let message = vendor_message(body.as_bytes(), &[]);
        assert_eq!(message.chars().count(), 201);
        assert!(message.ends_with('…'));
        assert_eq!(
            vendor_message(&[0xff, 0xfe, b'a'], &[]),
            "\u{fffd}\u{fffd}a"
        );
    }

    #[test]
    fn retry_after_is_in_the_429_message() {
        let error = status_error("smartsupp", 429, "slow down", Some(Duration::from_secs(30)));
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
        assert_eq!(
            error.message,
            "smartsupp rate limit reached (HTTP 429: slow down): retry after 30 s"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let text = redact("token abc123 echoed abc123".to_owned(), &["abc123", ""]);
        assert_eq!(text, "token [redacted] echoed [redacted]");
        let text = redact(
            "grant_type=password&password=p%40ss+w%2Frd&x=1".to_owned(),
            &["p@ss w/rd"],
        );
        assert_eq!(text, "grant_type=password&password=[redacted]&x=1");
    }

    #[test]
    fn a_secret_at_the_cut_is_removed_before_cutting() {
        // The secret straddles the 200th character: cutting first would keep its start.
        let secret = "0123456789abcdef";
        let body = format!("{}{secret}", "x".repeat(188));
        let message = vendor_message(body.as_bytes(), &[secret]);
        assert!(!message.contains("01234"), "{message}");
        assert!(message.ends_with("[redacted]"), "{message}");
        let json = format!(r#"{{"message":"{}{secret}"}}"#, "y".repeat(190));
        let message = vendor_message(json.as_bytes(), &[secret]);
        assert!(!message.contains("01234"), "{message}");
    }
}
