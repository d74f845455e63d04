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

/// How a digest is written in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64, with padding.
    Base64,
}

/// The hash of an HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacHash {
    /// HMAC-SHA1 (older vendors).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
}

/// A verification scheme: where a request carries its credential and which of the connection's
/// secrets it is checked against, with constant-time comparison built in. A plugin declares
/// the schemes its vendor uses and calls [`verify_any`] from `WebhookSource::verify` and
/// [`require_any`] from its factory; it writes its own check only when no scheme fits (and
/// then compares with [`constant_time_eq`]).
///
/// ```
/// use switchboard_core::verify::{Encoding, HmacHash, Scheme, verify_any};
/// use switchboard_core::{ConnectionConfig, ConnectionId, Timestamp, WebhookRequest};
///
/// const SCHEMES: &[Scheme] = &[
///     Scheme::Hmac {
///         hash: HmacHash::Sha256,
///         encoding: Encoding::Hex,
///         header: "x-signature",
///         prefix: "sha256=",
///         secret: "app_secret",
///     },
///     Scheme::SecretInHeader { header: "x-switchboard-token", secret: "webhook_secret" },
/// ];
/// let config = ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme")
///     .with_secret("webhook_secret", "s3cret");
/// let headers = [("x-switchboard-token".to_owned(), "s3cret".to_owned())];
/// let request = WebhookRequest {
///     connection: &config,
///     headers: &headers,
///     query: &[],
///     body: b"{}",
///     received_at: Timestamp::from_secs(1_700_000_000).unwrap(),
/// };
/// assert!(verify_any(SCHEMES, &request).is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// The secret itself in a header (`X-Switchboard-Token: <secret>`).
    SecretInHeader {
        /// The header's name, lowercase.
        header: &'static str,
        /// The connection's secret it must equal.
        secret: &'static str,
    },
    /// The secret itself in a query parameter (`?token=<secret>`).
    SecretInQuery {
        /// The parameter's name (exact case).
        param: &'static str,
        /// The connection's secret it must equal.
        secret: &'static str,
    },
    /// HTTP Basic credentials in `Authorization`.
    Basic {
        /// The connection's secret holding the user name.
        user: &'static str,
        /// The connection's secret holding the password.
        password: &'static str,
    },
    /// An HMAC of the raw body, keyed by a secret, in a header.
    Hmac {
        /// SHA-1 or SHA-256.
        hash: HmacHash,
        /// Hex or base64.
        encoding: Encoding,
        /// The header's name, lowercase.
        header: &'static str,
        /// What the header value starts with before the digest (`sha256=`), or `""`.
        prefix: &'static str,
        /// The connection's secret that keys the HMAC.
        secret: &'static str,
    },
    /// The secret itself in a top-level string field of a JSON body (`{"secret_key": ...}`).
    /// Remove the field in `raw_for_storage`.
    TokenInBody {
        /// The field's name.
        field: &'static str,
        /// The connection's secret it must equal.
        secret: &'static str,
    },
}

impl Scheme {
    /// The connection secrets this scheme checks against.
    pub fn secrets(&self) -> Vec<&'static str> {
        match *self {
            Scheme::SecretInHeader { secret, .. }
            | Scheme::SecretInQuery { secret, .. }
            | Scheme::Hmac { secret, .. }
            | Scheme::TokenInBody { secret, .. } => vec![secret],
            Scheme::Basic { user, password } => vec![user, password],
        }
    }

    /// Whether the connection has every secret this scheme needs.
    pub fn configured(&self, connection: &crate::ConnectionConfig) -> bool {
        self.secrets()
            .iter()
            .all(|name| connection.secret(name).is_some())
    }

    /// Where the credential goes, for messages (`the x-signature header`).
    pub fn describe(&self) -> String {
        match self {
            Scheme::SecretInHeader { header, .. } => format!("the secret in the {header} header"),
            Scheme::SecretInQuery { param, .. } => {
                format!("the secret in the {param} query parameter")
            }
            Scheme::Basic { .. } => "HTTP Basic credentials".to_owned(),
            Scheme::Hmac { hash, header, .. } => {
                let hash = match hash {
                    HmacHash::Sha1 => "HMAC-SHA1",
                    HmacHash::Sha256 => "HMAC-SHA256",
                };
                format!("an {hash} of the body in the {header} header")
            }
            Scheme::TokenInBody { field, .. } => format!("the secret in the body field {field}"),
        }
    }

    /// Checks the request. `Ok(true)`: the credential is there and right. `Ok(false)`: the
    /// request carries no credential of this scheme, or the connection lacks its secrets (try
    /// another scheme). `Err(Unauthenticated)`: the credential is there and wrong.
    pub fn check(&self, request: &WebhookRequest<'_>) -> Result<bool, Error> {
        if !self.configured(request.connection) {
            return Ok(false);
        }
        let secret = |name: &str| {
            request
                .connection
                .secret(name)
                .map(|s| s.expose().as_bytes())
                .unwrap_or_default()
        };
        let wrong = || {
            Err(Error::unauthenticated(format!(
                "{} does not match",
                self.describe()
            )))
        };
        match *self {
            Scheme::SecretInHeader {
                header,
                secret: name,
            } => match request.header(header) {
                None => Ok(false),
                Some(sent) if constant_time_eq(sent.as_bytes(), secret(name)) => Ok(true),
                Some(_) => wrong(),
            },
            Scheme::SecretInQuery {
                param,
                secret: name,
            } => match request.query_param(param) {
                None => Ok(false),
                Some(sent) if constant_time_eq(sent.as_bytes(), secret(name)) => Ok(true),
                Some(_) => wrong(),
            },
            Scheme::Basic { user, password } => {
                let Some(header) = request.header("authorization") else {
                    return Ok(false);
                };
                let Some(encoded) = header
                    .get(..6)
                    .filter(|p| p.eq_ignore_ascii_case("basic "))
                    .and_then(|_| header.get(6..))
                else {
                    return Ok(false);
                };
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
                else {
                    return wrong();
                };
                let mut expected = secret(user).to_vec();
                expected.push(b':');
                expected.extend_from_slice(secret(password));
                if constant_time_eq(&decoded, &expected) {
                    Ok(true)
                } else {
                    wrong()
                }
            }
            Scheme::Hmac {
                hash,
                encoding,
                header,
                prefix,
                secret: name,
            } => {
                let Some(sent) = request.header(header) else {
                    return Ok(false);
                };
                let sent = sent.trim();
                let sent = match sent.get(..prefix.len()) {
                    Some(p) if p.eq_ignore_ascii_case(prefix) => &sent[prefix.len()..],
                    _ => return wrong(),
                };
                let decoded = match encoding {
                    Encoding::Hex => hex::decode(sent).ok(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(sent).ok(),
                };
                let Some(decoded) = decoded else {
                    return wrong();
                };
                let expected = hmac_digest(hash, secret(name), request.body);
                if constant_time_eq(&decoded, &expected) {
                    Ok(true)
                } else {
                    wrong()
                }
            }
            Scheme::TokenInBody {
                field,
                secret: name,
            } => {
                let Ok(serde_json::Value::Object(body)) =
                    serde_json::from_slice::<serde_json::Value>(request.body)
                else {
                    return Ok(false);
                };
                match body.get(field) {
                    None => Ok(false),
                    Some(serde_json::Value::String(sent))
                        if constant_time_eq(sent.as_bytes(), secret(name)) =>
                    {
                        Ok(true)
                    }
                    Some(_) => wrong(),
                }
            }
        }
    }
}

/// The HMAC of `body` keyed by `key`: what [`Scheme::Hmac`] compares with, and what a test or a
/// fixture-signing tool computes to sign a body.
pub fn hmac_digest(hash: HmacHash, key: &[u8], body: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    match hash {
        HmacHash::Sha1 => {
            let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        HmacHash::Sha256 => {
            let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Verifies a request with the first of `schemes` whose credential it carries: `Ok(())` if
/// that credential is right; `Unauthenticated` if it is wrong, or if the request carries none
/// of them (the message names what it could have sent).
pub fn verify_any(schemes: &[Scheme], request: &WebhookRequest<'_>) -> Result<(), Error> {
    for scheme in schemes {
        if scheme.check(request)? {
            return Ok(());
        }
    }
    let expected: Vec<String> = schemes
        .iter()
        .filter(|s| s.configured(request.connection))
        .map(Scheme::describe)
        .collect();
    Err(Error::unauthenticated(if expected.is_empty() {
        "the connection has none of the secrets its verification needs".to_owned()
    } else {
        format!("no credentials: send {}", expected.join(" or "))
    }))
}

/// For a webhook factory: with verification on, the connection must have the secrets of at
/// least one of `schemes`, or it would accept nothing (or, with a lax plugin, anything). The
/// error names the secrets and the environment variables that can supply them.
pub fn require_any(schemes: &[Scheme], connection: &crate::ConnectionConfig) -> Result<(), Error> {
    if !connection.verify || schemes.iter().any(|s| s.configured(connection)) {
        return Ok(());
    }
    let options: Vec<String> = schemes
        .iter()
        .map(|s| {
            s.secrets()
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect();
    let variables: Vec<String> = schemes
        .iter()
        .flat_map(Scheme::secrets)
        .map(|name| connection.secret_env_var(name))
        .fold(Vec::new(), |mut seen, v| {
            if !seen.contains(&v) {
                seen.push(v);
            }
            seen
        });
    Err(Error::invalid(format!(
        "connection {} ({}) verifies webhooks and needs the secret {}: set it in the \
         connection's `secrets` or in the environment ({})",
        connection.id,
        connection.vendor,
        options.join(" or "),
        variables.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionConfig, ConnectionId, ErrorCode, Timestamp};

    const SCHEMES: &[Scheme] = &[
        Scheme::Hmac {
            hash: HmacHash::Sha256,
            encoding: Encoding::Hex,
            header: "x-sig256",
            prefix: "sha256=",
            secret: "app_secret",
        },
        Scheme::Hmac {
            hash: HmacHash::Sha1,
            encoding: Encoding::Base64,
            header: "x-sig1",
            prefix: "",
            secret: "app_secret",
        },
        Scheme::Basic {
            user: "basic_user",
            password: "basic_password",
        },
        Scheme::SecretInHeader {
            header: "x-token",
            secret: "webhook_secret",
        },
        Scheme::SecretInQuery {
            param: "token",
            secret: "webhook_secret",
        },
        Scheme::TokenInBody {
            field: "secret_key",
            secret: "webhook_secret",
        },
    ];

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme")
            .with_secret("app_secret", "key")
            .with_secret("basic_user", "u")
            .with_secret("basic_password", "p")
            .with_secret("webhook_secret", "s3cret")
    }

    fn check(
        config: &ConnectionConfig,
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Error> {
        let own = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let (headers, query) = (own(headers), own(query));
        let request = WebhookRequest {
            connection: config,
            headers: &headers,
            query: &query,
            body,
            received_at: Timestamp::from_secs(1_700_000_000).unwrap(),
        };
        let before = constant_time_comparisons();
        let outcome = verify_any(SCHEMES, &request);
        if outcome.is_ok() {
            assert!(
                constant_time_comparisons() > before,
                "compared in constant time"
            );
        }
        outcome
    }

    fn code(outcome: Result<(), Error>) -> Option<ErrorCode> {
        outcome.err().map(|e| e.code)
    }

    #[test]
    fn hmac_sha256_hex_and_sha1_base64_of_the_body() {
        let body = b"{\"a\":1}";
        // The well-known HMAC values of the pangram keyed by "key".
        let sha256 = hex::encode(hmac_digest(HmacHash::Sha256, b"key", body));
        let sha1 = base64::engine::general_purpose::STANDARD.encode(hmac_digest(
            HmacHash::Sha1,
            b"key",
            body,
        ));
        assert_eq!(
            hex::encode(hmac_digest(
                HmacHash::Sha256,
                b"key",
                b"The quick brown fox jumps over the lazy dog"
            )),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(
            hex::encode(hmac_digest(
                HmacHash::Sha1,
                b"key",
                b"The quick brown fox jumps over the lazy dog"
            )),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        let c = config();
        let with_prefix = format!("sha256={sha256}");
        assert!(check(&c, &[("x-sig256", &with_prefix)], &[], body).is_ok());
        assert!(check(&c, &[("x-sig256", &with_prefix.to_uppercase())], &[], body).is_ok());
        assert!(check(&c, &[("x-sig1", &sha1)], &[], body).is_ok());
        // The same signature over another body, a signature without its prefix, garbage.
        for (header, value) in [
            ("x-sig256", with_prefix.as_str()),
            ("x-sig256", sha256.as_str()),
            ("x-sig1", "not base64!"),
        ] {
            let outcome = check(&c, &[(header, value)], &[], b"{\"a\":2}");
            assert_eq!(
                code(outcome),
                Some(ErrorCode::Unauthenticated),
                "{header}: {value}"
            );
        }
    }

    #[test]
    fn secrets_in_a_header_a_query_parameter_basic_auth_and_the_body() {
        let c = config();
        assert!(check(&c, &[("x-token", "s3cret")], &[], b"").is_ok());
        assert!(check(&c, &[], &[("token", "s3cret")], b"").is_ok());
        assert!(check(&c, &[("authorization", "Basic dTpw")], &[], b"").is_ok());
        assert!(check(&c, &[], &[], br#"{"secret_key":"s3cret"}"#).is_ok());
        for (headers, query, body) in [
            (&[("x-token", "s3creT")][..], &[][..], &b""[..]),
            (&[("x-token", "S3cret")][..], &[][..], &b""[..]),
            (&[][..], &[("token", "s3cre")][..], &b""[..]),
            (&[("authorization", "Basic dTpx")][..], &[][..], &b""[..]),
            (&[][..], &[][..], &br#"{"secret_key":"nope"}"#[..]),
            (&[][..], &[][..], &br#"{"secret_key":7}"#[..]),
            (&[][..], &[][..], &b"{}"[..]),
        ] {
            let outcome = check(&c, headers, query, body);
            assert_eq!(
                code(outcome),
                Some(ErrorCode::Unauthenticated),
                "{headers:?} {query:?}"
            );
        }
        let none = check(&c, &[], &[], b"{}").unwrap_err();
        assert!(none.message.contains("x-token header"), "{none}");
    }

    #[test]
    fn a_scheme_whose_secret_is_not_configured_is_skipped_and_factories_refuse_none() {
        let only_token = ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme")
            .with_secret("webhook_secret", "s3cret");
        // A signature header means nothing without app_secret; the token still verifies.
        assert!(
            check(
                &only_token,
                &[("x-sig256", "sha256=00"), ("x-token", "s3cret")],
                &[],
                b""
            )
            .is_ok()
        );
        assert!(require_any(SCHEMES, &only_token).is_ok());
        let bare = ConnectionConfig::new(ConnectionId::new("acme").unwrap(), "acme");
        let refused = require_any(SCHEMES, &bare).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
        assert!(
            refused
                .message
                .contains("`basic_user` and `basic_password`"),
            "{refused}"
        );
        assert!(
            refused
                .message
                .contains("SWITCHBOARD_SECRET__ACME__BASIC_PASSWORD"),
            "the variables that can supply them: {refused}"
        );
        let mut off = bare.clone();
        off.verify = false;
        assert!(require_any(SCHEMES, &off).is_ok());
        assert_eq!(
            code(check(&bare, &[("x-token", "s3cret")], &[], b"")),
            Some(ErrorCode::Unauthenticated)
        );
    }
}
