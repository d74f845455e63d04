//! The settings and secrets a Tencent connection may set; any other key is refused at
//! start-up by [`check`], naming the allowed ones.

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, Error, Secret};

/// The settings of a Tencent connection (`settings = { ... }`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The IM app's SDKAppID: every callback's `SdkAppid` query parameter must equal it.
    /// Required when verification is on.
    pub sdk_app_id: Option<String>,
    /// How far a signed callback's `RequestTime` may be from its arrival, in whole seconds,
    /// default [`crate::DEFAULT_SIGN_MAX_AGE_SECS`].
    pub sign_max_age_secs: Option<String>,
}

/// The secrets of a Tencent connection (`secrets = { ... }` or
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`), all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The webhook authentication token set at Tencent (`Sign` = sha256(token +
    /// `RequestTime`)), also accepted as `?token=` or `X-Switchboard-Token`. Recommended.
    pub webhook_secret: Option<Secret>,
}

/// Refuses a connection with a setting or secret Tencent does not know, naming it and the
/// allowed keys. The webhook factory calls it first (the plugin has no connector).
pub fn check(config: &ConnectionConfig) -> Result<(), Error> {
    config.typed::<Settings, Secrets>().map(|_| ())
}

#[cfg(test)]
mod tests {
    use switchboard_core::{ConnectionId, ErrorCode};

    use super::*;
    use crate::webhook;

    const SECRET: &str = "tc-secret-value-6e0d";

    fn config() -> ConnectionConfig {
        ConnectionConfig::new(ConnectionId::new("tencent-cn").unwrap(), "tencent")
            .with_setting("sdk_app_id", "1400187352")
            .with_secret("webhook_secret", SECRET)
    }

    #[test]
    fn the_factory_refuses_a_misspelt_secret_naming_it_and_the_allowed_names() {
        assert!(webhook(&config()).is_ok());
        let misspelt = config().with_secret("webhok_secret", SECRET);
        let error = webhook(&misspelt).map(|_| ()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        let message = &error.message;
        assert!(
            message.contains("unknown secret `webhok_secret`"),
            "{message}"
        );
        assert!(message.contains("`webhook_secret`"), "{message}");
        assert!(
            message.contains("SWITCHBOARD_SECRET__TENCENT_CN__WEBHOK_SECRET"),
            "{message}"
        );
        assert!(!message.contains(SECRET), "{message}");
    }

    #[test]
    fn the_factory_refuses_a_misspelt_setting_naming_it_and_the_allowed_names() {
        let misspelt = config().with_setting("sdk_appid", "1400187352");
        let message = webhook(&misspelt).map(|_| ()).unwrap_err().message;
        assert!(message.contains("unknown setting `sdk_appid`"), "{message}");
        for name in ["`sdk_app_id`", "`sign_max_age_secs`"] {
            assert!(message.contains(name), "{message}");
        }
        assert!(!message.contains(SECRET), "{message}");
    }
}
