//! The settings and secrets a LiveTex connection may set; any other key is refused at
//! start-up by [`check`], naming the allowed ones.

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, Error, Secret};

/// The settings of a LiveTex connection (`settings = { ... }`), all optional; only the
/// connector reads them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The LiveTex personal account's e-mail, which the connector logs in with (with the
    /// secret `password`).
    pub login: Option<String>,
    /// Rows per statistics API page, 1 to [`crate::MAX_PAGE_SIZE`], default
    /// [`crate::DEFAULT_PAGE_SIZE`].
    pub page_size: Option<String>,
    /// LiveTex's `fields` parameter for the `chats` table, verbatim (default: LiveTex's own).
    pub chats_fields: Option<String>,
    /// LiveTex's `fields` parameter for the `leads` table, verbatim (default: LiveTex's own).
    pub leads_fields: Option<String>,
    /// The statistics API's base URL, default [`crate::DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// The longest one API call attempt may take, in milliseconds (default 10000).
    pub request_timeout_ms: Option<String>,
    /// The longest an API call may take over all its attempts, in milliseconds (default 60000).
    pub deadline_ms: Option<String>,
    /// Attempts per API call, the first one included (default 6).
    pub max_attempts: Option<String>,
}

/// The secrets of a LiveTex connection (`secrets = { ... }` or
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The webhook token LiveTex's URL carries (`?token=` or `X-Switchboard-Token`).
    pub webhook_secret: Option<Secret>,
    /// The older name of `webhook_secret`, read when that is not set.
    pub webhook_key: Option<Secret>,
    /// The personal account's password, which the connector logs in with.
    pub password: Option<Secret>,
}

/// Refuses a connection with a setting or secret LiveTex does not know, naming it and the
/// allowed keys. Both factories call it first.
pub fn check(config: &ConnectionConfig) -> Result<(), Error> {
    config.typed::<Settings, Secrets>().map(|_| ())
}

#[cfg(test)]
mod tests {
    use switchboard_core::{ConnectionId, ErrorCode, field_names};
    use switchboard_vendor_client::CLIENT_SETTING_KEYS;

    use super::*;
    use crate::{connector, webhook_source};

    const SECRET: &str = "lt-secret-value-2b7e";

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
            .with_setting("login", "owner@example.ru")
            .with_secret("password", "password-value-4a")
            .with_secret("webhook_secret", SECRET)
    }

    #[test]
    fn the_shared_client_settings_are_allowed() {
        let allowed = field_names::<Settings>().unwrap();
        for key in CLIENT_SETTING_KEYS {
            assert!(allowed.contains(&key), "{key}");
        }
    }

    #[test]
    fn both_factories_refuse_a_misspelt_secret_naming_it_and_the_allowed_names() {
        assert!(webhook_source(&config()).is_ok());
        assert!(connector(&config()).is_ok());
        let misspelt = config().with_secret("webhok_secret", SECRET);
        for error in [
            webhook_source(&misspelt).map(|_| ()).unwrap_err(),
            connector(&misspelt).map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            let message = &error.message;
            assert!(
                message.contains("unknown secret `webhok_secret`"),
                "{message}"
            );
            for name in ["`webhook_secret`", "`webhook_key`", "`password`"] {
                assert!(message.contains(name), "{message}");
            }
            assert!(
                message.contains("SWITCHBOARD_SECRET__LIVETEX__WEBHOK_SECRET"),
                "{message}"
            );
            assert!(!message.contains(SECRET), "{message}");
            assert!(!message.contains("password-value-4a"), "{message}");
        }
    }

    #[test]
    fn both_factories_refuse_a_misspelt_setting_naming_it_and_the_allowed_names() {
        let misspelt = config().with_setting("loign", "owner@example.ru");
        for error in [
            webhook_source(&misspelt).map(|_| ()).unwrap_err(),
            connector(&misspelt).map(|_| ()).unwrap_err(),
        ] {
            let message = &error.message;
            assert!(message.contains("unknown setting `loign`"), "{message}");
            for name in ["`login`", "`page_size`", "`chats_fields`", "`leads_fields`"] {
                assert!(message.contains(name), "{message}");
            }
            assert!(!message.contains(SECRET), "{message}");
        }
    }
}
