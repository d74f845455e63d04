//! Secrets from the environment: `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>` overrides a
//! connection's secret, and a variable that names no configured connection is warned about
//! (by name, never by value).

use switchboard_core::{ConnectionConfig, Secret};

/// Prefix of environment variables that override secrets:
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`, upper case, `-` written as `_`.
pub const SECRET_ENV_PREFIX: &str = "SWITCHBOARD_SECRET__";

/// Sets each secret of `config` that a `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>` variable of
/// `env` names (the key lower-cased).
pub(super) fn override_secrets(config: &mut ConnectionConfig, env: &[(String, String)]) {
    let prefix = format!("{SECRET_ENV_PREFIX}{}__", env_name(config.id.as_str()));
    for (name, value) in env {
        if let Some(key) = name.strip_prefix(&prefix) {
            config
                .secrets
                .insert(key.to_ascii_lowercase(), Secret::new(value.clone()));
        }
    }
}

/// What a config file probably got wrong without being unusable: no connections at all, and
/// `SWITCHBOARD_SECRET__*` variables that name no configured connection (each named, never its
/// value). [`super::ServerConfig::from_toml`] logs each as a warning.
pub fn config_warnings(connections: &[ConnectionConfig], env: &[(String, String)]) -> Vec<String> {
    let mut warnings = Vec::new();
    if connections.is_empty() {
        warnings.push(
            "the config has no [[connections]]: no webhook will be accepted and nothing can be \
             synced; add a [[connections]] entry per vendor account (README.md, Configuration)"
                .to_owned(),
        );
    }
    for (name, _) in env {
        let Some(rest) = name.strip_prefix(SECRET_ENV_PREFIX) else {
            continue;
        };
        let matched = connections.iter().any(|c| {
            rest.strip_prefix(&env_name(c.id.as_str()))
                .and_then(|r| r.strip_prefix("__"))
                .is_some_and(|key| !key.is_empty())
        });
        if !matched {
            let known: Vec<String> = connections
                .iter()
                .map(|c| format!("{SECRET_ENV_PREFIX}{}__<KEY>", env_name(c.id.as_str())))
                .collect();
            warnings.push(format!(
                "the environment variable {name} names no configured connection, so it is \
                 ignored; secrets of this config come from {}",
                if known.is_empty() {
                    "nowhere (no connections)".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    warnings
}

/// `livechat-eu` -> `LIVECHAT_EU`, as used in environment variable names.
pub fn env_name(connection: &str) -> String {
    connection.to_ascii_uppercase().replace('-', "_")
}
