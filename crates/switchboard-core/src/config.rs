//! What a plugin is given to build a connection's webhook source or connector.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ConnectionId, Error};

/// A secret value (webhook secret, API key, password). Its `Debug` and `Display` print
/// `[redacted]`, so it cannot leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where it is used (a comparison, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A rate limit: at most `calls` per `per_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub calls: u32,
    /// The window, in seconds.
    pub per_seconds: u32,
}

/// One configured connection, as the plugin sees it. Vendor-specific values live in the two
/// maps, so a new vendor needs no change here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The connection's id; its webhook URL is `/webhooks/{id}`.
    pub id: ConnectionId,
    /// The plugin's vendor name.
    pub vendor: String,
    /// Whether webhooks must pass verification. Only the embedded default (no config file)
    /// turns this off, and says so loudly in the log.
    pub verify: bool,
    /// Non-secret settings (`sdk_app_id`, `license_id`, `base_url`...).
    pub settings: BTreeMap<String, String>,
    /// Secrets (`webhook_secret`, `basic_user`/`basic_password`, `api_key`, `password`...).
    pub secrets: BTreeMap<String, Secret>,
    /// A rate limit for calls to the vendor's API, if not the vendor's documented default.
    pub rate_limit: Option<RateLimit>,
}

impl ConnectionConfig {
    /// A connection with verification on and nothing configured.
    pub fn new(id: ConnectionId, vendor: impl Into<String>) -> Self {
        ConnectionConfig {
            id,
            vendor: vendor.into(),
            verify: true,
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
            rate_limit: None,
        }
    }

    /// Adds a setting (builder style).
    pub fn with_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a secret (builder style).
    pub fn with_secret(mut self, key: &str, value: impl Into<String>) -> Self {
        self.secrets.insert(key.to_owned(), Secret::new(value));
        self
    }

    /// A setting, if present and not empty.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A secret, if present and not empty.
    pub fn secret(&self, key: &str) -> Option<&Secret> {
        self.secrets.get(key).filter(|v| !v.expose().is_empty())
    }

    /// A setting that must be present, or an error naming it and the connection.
    pub fn required_setting(&self, key: &str) -> Result<&str, Error> {
        self.setting(key).ok_or_else(|| {
            Error::invalid(format!(
                "connection {} ({}) needs the setting `{key}`",
                self.id, self.vendor
            ))
        })
    }

    /// A secret that must be present, or an error naming it and the environment variable
    /// that can supply it (never its value).
    pub fn required_secret(&self, key: &str) -> Result<&Secret, Error> {
        self.secret(key).ok_or_else(|| {
            Error::invalid(format!(
                "connection {} ({}) needs the secret `{key}`: set it in the connection's \
                 `secrets` or in the environment variable {}",
                self.id,
                self.vendor,
                self.secret_env_var(key)
            ))
        })
    }

    /// The environment variable that supplies the secret `key` of this connection:
    /// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`, upper case, `-` written as `_`.
    pub fn secret_env_var(&self, key: &str) -> String {
        let upper = |s: &str| s.to_ascii_uppercase().replace('-', "_");
        format!(
            "SWITCHBOARD_SECRET__{}__{}",
            upper(self.id.as_str()),
            upper(key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = ConnectionConfig::new(ConnectionId::new("a").unwrap(), "v")
            .with_secret("webhook_secret", "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.secret("webhook_secret").map(Secret::expose),
            Some("hunter2")
        );
    }

    #[test]
    fn a_missing_secret_names_the_environment_variable_that_supplies_it() {
        let config = ConnectionConfig::new(ConnectionId::new("livechat-eu").unwrap(), "livechat");
        let error = config.required_secret("webhook_secret").unwrap_err();
        assert!(
            error
                .message
                .contains("SWITCHBOARD_SECRET__LIVECHAT_EU__WEBHOOK_SECRET"),
            "{error}"
        );
    }
}
