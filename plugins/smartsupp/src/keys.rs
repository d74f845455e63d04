//! The settings and secrets a Smartsupp connection may set; any other key is refused at
//! start-up by [`check`], naming the allowed ones.

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, Error, Secret};

/// The settings of a Smartsupp connection (`settings = { ... }`), all optional; only the
/// connector reads them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The order a sync walks the conversations in: `oldest_first` (default) or
    /// `newest_first`.
    pub sync_order: Option<String>,
    /// Conversations per search page, 1 to [`crate::MAX_PAGE_SIZE`], default
    /// [`crate::DEFAULT_PAGE_SIZE`].
    pub page_size: Option<String>,
    /// The REST API's base URL, default [`crate::DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// The longest one API call attempt may take, in milliseconds (default 10000).
    pub request_timeout_ms: Option<String>,
    /// The longest an API call may take over all its attempts, in milliseconds (default 60000).
    pub deadline_ms: Option<String>,
    /// Attempts per API call, the first one included (default 6).
    pub max_attempts: Option<String>,
}

/// The secrets of a Smartsupp connection (`secrets = { ... }` or
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The token the POST hook URL carries (`?token=` or `X-Switchboard-Token`).
    pub webhook_secret: Option<Secret>,
    /// The app secret event callbacks are signed with (HMAC-SHA256, `X-Smartsupp-Hmac`).
    pub app_secret: Option<Secret>,
    /// The account's REST API access token, which the connector needs.
    pub api_token: Option<Secret>,
}

/// Refuses a connection with a setting or secret Smartsupp does not know, naming it and the
/// allowed keys. Both factories call it first.
pub fn check(config: &ConnectionConfig) -> Result<(), Error> {
    config.typed::<Settings, Secrets>().map(|_| ())
}

#[cfg(test)]
mod tests {
    use switchboard_core::{ConnectionId, ErrorCode, field_names};
    use switchboard_vendor_client::CLIENT_SETTING_KEYS;

    use super::*;
    use crate::{connector, webhook};

    const SECRET: &str = "ss-secret-value-81c2";

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("smartsupp").unwrap(), "smartsupp")
            .with_setting("sync_order", "newest_first")
            .with_secret("api_token", "api-token-value-5d")
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
        assert!(webhook(&config()).is_ok());
        assert!(connector(&config()).is_ok());
        let misspelt = config().with_secret("webhok_secret", SECRET);
        for error in [
            webhook(&misspelt).map(|_| ()).unwrap_err(),
            connector(&misspelt).map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            let message = &error.message;
            assert!(
                message.contains("unknown secret `webhok_secret`"),
                "{message}"
            );
            for name in ["`webhook_secret`", "`app_secret`", "`api_token`"] {
                assert!(message.contains(name), "{message}");
            }
            assert!(
                message.contains("SWITCHBOARD_SECRET__SMARTSUPP__WEBHOK_SECRET"),
                "{message}"
            );
            assert!(!message.contains(SECRET), "{message}");
            assert!(!message.contains("api-token-value-5d"), "{message}");
        }
    }

    #[test]
    fn both_factories_refuse_a_misspelt_setting_naming_it_and_the_allowed_names() {
        let misspelt = config().with_setting("sync_ordre", "newest_first");
        for error in [
            webhook(&misspelt).map(|_| ()).unwrap_err(),
            connector(&misspelt).map(|_| ()).unwrap_err(),
        ] {
            let message = &error.message;
            assert!(
                message.contains("unknown setting `sync_ordre`"),
                "{message}"
            );
            for name in ["`sync_order`", "`page_size`", "`base_url`"] {
                assert!(message.contains(name), "{message}");
            }
            assert!(!message.contains(SECRET), "{message}");
        }
    }
}
