//! How a connection's client behaves: where it calls, how fast, how long, how often it retries.

use std::time::Duration;

use switchboard_core::{ConnectionConfig, Error, RateLimit};

/// Per-attempt timeout when the connection sets no `request_timeout_ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Overall deadline (all attempts and waits) when the connection sets no `deadline_ms`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(60_000);
/// Attempts per call when the connection sets no `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// The first backoff cap; each retry doubles it up to [`DEFAULT_BACKOFF_MAX`].
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// The largest backoff cap.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The connection settings [`ClientSettings::from_connection`] reads: a plugin whose connector
/// uses it allows each of them in its settings struct (see
/// [`ConnectionConfig::typed`](switchboard_core::ConnectionConfig::typed)).
pub const CLIENT_SETTING_KEYS: [&str; 4] = [
    "base_url",
    "request_timeout_ms",
    "deadline_ms",
    "max_attempts",
];

/// How a [`VendorClient`](crate::VendorClient) calls one connection's vendor API.
///
/// Build it with [`ClientSettings::from_connection`]; the fields are public so tests and
/// connectors can tune them (e.g. a short `backoff_initial` in tests).
/// [`VendorClient::new`](crate::VendorClient::new) validates them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// `http://` or `https://` URL without a trailing slash; request paths are appended to it.
    pub base_url: String,
    /// At most `calls` calls per `per_seconds`, in any window, for every clone of the client.
    pub rate_limit: RateLimit,
    /// The longest one attempt may take (connect, send, read the whole answer).
    pub request_timeout: Duration,
    /// The longest a call may take, over all attempts, backoffs and rate-limit waits.
    pub deadline: Duration,
    /// Attempts per call, the first one included (at least 1).
    pub max_attempts: u32,
    /// The backoff cap before the first retry; the wait is random in `[0, cap]` (full jitter).
    pub backoff_initial: Duration,
    /// The largest backoff cap.
    pub backoff_max: Duration,
}

impl ClientSettings {
    /// Reads the connection's settings `base_url` (else `default_base_url`),
    /// `request_timeout_ms` (default 10000), `deadline_ms` (default 60000) and `max_attempts`
    /// (default 6), and its `rate_limit` (else `default_limit`, the vendor's documented limit).
    pub fn from_connection(
        config: &ConnectionConfig,
        default_base_url: &str,
        default_limit: RateLimit,
    ) -> Result<ClientSettings, Error> {
        let base_url = config.setting("base_url").unwrap_or(default_base_url);
        let settings = ClientSettings {
            base_url: normalize_base_url(config, base_url)?,
            rate_limit: config.rate_limit.unwrap_or(default_limit),
            request_timeout: positive_ms(config, "request_timeout_ms", DEFAULT_REQUEST_TIMEOUT)?,
            deadline: positive_ms(config, "deadline_ms", DEFAULT_DEADLINE)?,
            max_attempts: max_attempts(config)?,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
        };
        settings.validate(config)?;
        Ok(settings)
    }

    /// Checks every field; the error names the connection and what to change.
    pub(crate) fn validate(&self, config: &ConnectionConfig) -> Result<(), Error> {
        let who = who(config);
        if normalize_base_url(config, &self.base_url)? != self.base_url {
            return Err(Error::invalid(format!(
                "{who}: base_url `{}` must not end with a slash",
                self.base_url
            )));
        }
        let RateLimit { calls, per_seconds } = self.rate_limit;
        if calls == 0 || per_seconds == 0 {
            return Err(Error::invalid(format!(
                "{who}: rate_limit must allow at least 1 call per at least 1 second, \
                 got {calls} calls per {per_seconds} s: set both `calls` and `per_seconds` above 0"
            )));
        }
        if self.request_timeout.is_zero() || self.deadline.is_zero() {
            return Err(Error::invalid(format!(
                "{who}: request_timeout and deadline must be above 0"
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid(format!(
                "{who}: max_attempts must be at least 1"
            )));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(Error::invalid(format!(
                "{who}: backoff_initial must not exceed backoff_max"
            )));
        }
        Ok(())
    }
}

/// `connection ID (vendor)`, the prefix of every message about a connection.
pub(crate) fn who(config: &ConnectionConfig) -> String {
    format!("connection {} ({})", config.id, config.vendor)
}

fn normalize_base_url(config: &ConnectionConfig, raw: &str) -> Result<String, Error> {
    let who = who(config);
    let trimmed = raw.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|error| {
        Error::invalid(format!(
            "{who}: base_url `{raw}` is not a URL ({error}): use e.g. https://api.example.com/v2"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(format!(
            "{who}: base_url `{raw}` must start with http:// or https://"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(format!(
            "{who}: base_url `{raw}` has no host: use e.g. https://api.example.com/v2"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Printing the URL would print the credentials, so the message does not.
        return Err(Error::invalid(format!(
            "{who}: base_url must not carry credentials: put them in the connection's secrets"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid(format!(
            "{who}: base_url `{raw}` must not have a query or a fragment"
        )));
    }
    Ok(trimmed.to_owned())
}

fn positive_ms(config: &ConnectionConfig, key: &str, default: Duration) -> Result<Duration, Error> {
    let Some(raw) = config.setting(key) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(Error::invalid(format!(
            "{}: setting `{key}` must be a whole number of milliseconds above 0, got `{raw}`",
            who(config)
        ))),
    }
}

fn max_attempts(config: &ConnectionConfig) -> Result<u32, Error> {
    let Some(raw) = config.setting("max_attempts") else {
        return Ok(DEFAULT_MAX_ATTEMPTS);
    };
    match raw.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(format!(
            "{}: setting `max_attempts` must be a whole number above 0, got `{raw}`",
            who(config)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{ConnectionId, ErrorCode};

    const LIVECHAT: RateLimit = RateLimit {
        calls: 100,
        per_seconds: 60,
    };

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("lc").expect("valid id"), "livechat")
    }

    #[test]
    fn every_client_setting_key_is_read() {
        for key in CLIENT_SETTING_KEYS {
            let bad = config().with_setting(key, "not valid");
            let error = ClientSettings::from_connection(&bad, "https://api.example.com", LIVECHAT)
                .expect_err(key);
            assert!(error.message.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn defaults_come_from_the_connector() {
        let settings =
            ClientSettings::from_connection(&config(), "https://api.example.com/v3.5/", LIVECHAT)
                .expect("defaults are valid");
        assert_eq!(
            settings,
            ClientSettings {
                base_url: "https://api.example.com/v3.5".to_owned(),
                rate_limit: LIVECHAT,
                request_timeout: Duration::from_secs(10),
                deadline: Duration::from_secs(60),
                max_attempts: 6,
                backoff_initial: Duration::from_millis(250),
                backoff_max: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn connection_settings_override_defaults() {
        let mut config = config()
            .with_setting("base_url", "http://127.0.0.1:8080//")
            .with_setting("request_timeout_ms", "1500")
            .with_setting("deadline_ms", "9000")
            .with_setting("max_attempts", "2");
        config.rate_limit = Some(RateLimit {
            calls: 5,
            per_seconds: 1,
        });
        let settings =
            ClientSettings::from_connection(&config, "https://api.example.com", LIVECHAT)
                .expect("valid overrides");
        assert_eq!(settings.base_url, "http://127.0.0.1:8080");
        assert_eq!(settings.request_timeout, Duration::from_millis(1500));
        assert_eq!(settings.deadline, Duration::from_millis(9000));
        assert_eq!(settings.max_attempts, 2);
        assert_eq!(
            settings.rate_limit,
            RateLimit {
                calls: 5,
                per_seconds: 1
            }
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_message() {
        let cases = [
            (
                "base_url",
                "ftp://example.com",
                "must start with http:// or https://",
            ),
            ("base_url", "example.com", "is not a URL"),
            (
                "base_url",
                "https://user:hunter2@example.com",
                "must not carry credentials",
            ),
            (
                "base_url",
                "https://example.com/?a=1",
                "must not have a query",
            ),
            (
                "request_timeout_ms",
                "0",
                "`request_timeout_ms` must be a whole number",
            ),
            (
                "deadline_ms",
                "soon",
                "`deadline_ms` must be a whole number",
            ),
            (
                "max_attempts",
                "0",
                "`max_attempts` must be a whole number above 0",
            ),
        ];
        for (key, value, expected) in cases {
            let config = config().with_setting(key, value);
            let error =
                ClientSettings::from_connection(&config, "https://api.example.com", LIVECHAT)
                    .expect_err(&format!("{key}={value} is refused"));
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains(expected), "{key}: {}", error.message);
            assert!(
                error.message.starts_with("connection lc (livechat): "),
                "{}",
                error.message
            );
            assert!(!error.message.contains("hunter2"), "{}", error.message);
        }
    }

    #[test]
    fn a_zero_rate_limit_is_refused() {
        for limit in [
            RateLimit {
                calls: 0,
                per_seconds: 60,
            },
            RateLimit {
                calls: 10,
                per_seconds: 0,
            },
        ] {
            let mut config = config();
            config.rate_limit = Some(limit);
            let error =
                ClientSettings::from_connection(&config, "https://api.example.com", LIVECHAT)
                    .expect_err("zero limit is refused");
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains("rate_limit"), "{}", error.message);
        }
    }
}
