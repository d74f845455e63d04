//! The settings and secrets a LiveChat connection may set; any other key is refused at
//! start-up by [`check`], naming the allowed ones.

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, Error, Secret};

/// The settings of a LiveChat connection (`settings = { ... }`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Account ID (a UUID, shown beside the personal access token in the Developer
    /// Console): the HTTP Basic user of the connector's API calls.
    pub account_id: Option<String>,
    /// The account's e-mail, used only for the deprecated ticket API (REST v2).
    pub login: Option<String>,
    /// The Agent Chat and Configuration API version: `3.6` (default, stable) or `3.5` (legacy).
    pub api_version: Option<String>,
    /// The REST API v2's base URL (tickets), default [`crate::DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// The Agent Chat API's base URL (archive sync), default
    /// [`crate::DEFAULT_AGENT_API_BASE_URL`].
    pub agent_api_base_url: Option<String>,
    /// The Configuration API's base URL (agents), default
    /// [`crate::DEFAULT_CONFIGURATION_API_BASE_URL`].
    pub configuration_api_base_url: Option<String>,
    /// Archived chats per `list_archives` call, 1 to 100, default
    /// [`crate::DEFAULT_ARCHIVE_PAGE_SIZE`].
    pub archive_page_size: Option<String>,
    /// The longest one API call attempt may take, in milliseconds (default 10000).
    pub request_timeout_ms: Option<String>,
    /// The longest an API call may take over all its attempts, in milliseconds (default 60000).
    pub deadline_ms: Option<String>,
    /// Attempts per API call, the first one included (default 6).
    pub max_attempts: Option<String>,
}

/// The secrets of a LiveChat connection (`secrets = { ... }` or
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The v3.x webhook's `secret_key`, also accepted as the legacy webhooks' token.
    pub webhook_secret: Option<Secret>,
    /// The HTTP Basic user legacy webhooks bring (with `basic_password`).
    pub basic_user: Option<Secret>,
    /// The HTTP Basic password legacy webhooks bring (with `basic_user`).
    pub basic_password: Option<Secret>,
    /// The personal access token the connector authenticates with.
    pub personal_access_token: Option<Secret>,
    /// The older name of `personal_access_token`, read when that is not set.
    pub api_key: Option<Secret>,
}

/// Refuses a connection with a setting or secret LiveChat does not know, naming it and the
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

    const SECRET: &str = "lc-secret-value-3f9a";

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("livechat-eu").unwrap(), "livechat")
            .with_setting("account_id", "d24fa41e-bc16-41b8-a15b-9ca45ff7e0cf")
            .with_secret("personal_access_token", "pat-value-77")
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
            for name in [
                "`webhook_secret`",
                "`basic_user`",
                "`personal_access_token`",
            ] {
                assert!(message.contains(name), "{message}");
            }
            assert!(
                message.contains("SWITCHBOARD_SECRET__LIVECHAT_EU__WEBHOK_SECRET"),
                "{message}"
            );
            assert!(!message.contains(SECRET), "{message}");
            assert!(!message.contains("pat-value-77"), "{message}");
        }
    }

    #[test]
    fn both_factories_refuse_a_misspelt_setting_naming_it_and_the_allowed_names() {
        let misspelt = config().with_setting("acount_id", "x");
        for error in [
            webhook(&misspelt).map(|_| ()).unwrap_err(),
            connector(&misspelt).map(|_| ()).unwrap_err(),
        ] {
            let message = &error.message;
            assert!(message.contains("unknown setting `acount_id`"), "{message}");
            for name in ["`account_id`", "`api_version`", "`archive_page_size`"] {
                assert!(message.contains(name), "{message}");
            }
            assert!(!message.contains(SECRET), "{message}");
        }
    }
}
