//! Building blocks for webhook verification, shared by plugins so that every comparison is
//! constant-time and every failure message is alike.

use std::cell::Cell;

use base64::Engine;
use subtle::ConstantTimeEq;

use crate::{Error, WebhookRequest};

/// The header a secret token may be sent in.
pub const TOKEN_HEADER: &str = "x-switchboard-token";
/// The query parameter a secret token may be sent in.
pub const TOKEN_QUERY: &str = "token";

thread_local! {
    /// How many comparisons [`constant_time_eq`] made on this thread.
    static COMPARISONS: Cell<u64> = const { Cell::new(0) };
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Every secret, token and signature a plugin checks goes through this function (directly or
/// through the helpers and schemes of this module), never through `==`, which returns at the
/// first differing byte and so tells an attacker how much of a guess was right. The
/// conformance kit checks it with [`constant_time_comparisons`].
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    COMPARISONS.with(|count| count.set(count.get().wrapping_add(1)));
    a.ct_eq(b).into()
}

/// How many comparisons [`constant_time_eq`] has made on the calling thread so far. The
/// conformance kit reads it before and after a plugin's `verify` accepts a request: a verify
/// that accepts without a single constant-time comparison compared its credential some other
/// way (`==`).
pub fn constant_time_comparisons() -> u64 {
    COMPARISONS.with(Cell::get)
}

/// Checks a secret token sent in the `X-Switchboard-Token` header or the `token` query
/// parameter against the connection's secret named `secret_key`.
///
/// Returns `Ok(false)` when the request carries no token at all (so a caller can try another
/// method), `Ok(true)` when it matches, and an error when it carries a wrong one.
pub fn check_token(request: &WebhookRequest<'_>, secret_key: &str) -> Result<bool, Error> {
    let Some(expected) = request.connection.secret(secret_key) else {
        return Ok(false);
    };
    let sent = request
        .header(TOKEN_HEADER)
        .or_else(|| request.query_param(TOKEN_QUERY));
    match sent {
        None => Ok(false),
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => Ok(true),
        Some(_) => Err(Error::unauthenticated("the webhook token does not match")),
    }
}

/// Checks HTTP Basic credentials against the connection's `basic_user` and `basic_password`
/// secrets. Same three outcomes as [`check_token`].
pub fn check_basic_auth(request: &WebhookRequest<'_>) -> Result<bool, Error> {
    let (Some(user), Some(password)) = (
        request.connection.secret("basic_user"),
        request.connection.secret("basic_password"),
    ) else {
        return Ok(false);
    };
    let Some(header) = request.header("authorization") else {
        return Ok(false);
    };
    let Some(encoded) = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
    else {
        return Err(Error::unauthenticated(
            "the Authorization header is not HTTP Basic",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Error::unauthenticated("the Basic credentials are not valid base64"))?;
    let expected = format!("{}:{}", user.expose(), password.expose());
    if constant_time_eq(&decoded, expected.as_bytes()) {
        Ok(true)
    } else {
        Err(Error::unauthenticated("the Basic credentials do not match"))
    }
}
