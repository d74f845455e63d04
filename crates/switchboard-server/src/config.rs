//! Server configuration: a TOML file, or the embedded default when there is none.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, ConnectionId, RateLimit, Registry, Secret};

/// Default HTTP address of the embedded default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default gRPC address of the embedded default.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default data directory of the embedded default.
pub const DEFAULT_DATA_DIR: &str = "./switchboard-data";
/// Default webhook body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Prefix of environment variables that override secrets:
/// `SWITCHBOARD_SECRET__<CONNECTION>__<KEY>`, upper case, `-` written as `_`.
pub const SECRET_ENV_PREFIX: &str = "SWITCHBOARD_SECRET__";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is not usable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The config file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the sled store lives.
    pub data_dir: Option<PathBuf>,
    /// HTTP front door.
    #[serde(default)]
    pub http: HttpSection,
    /// gRPC front door.
    #[serde(default)]
    pub grpc: GrpcSection,
    /// Vendor accounts.
    #[serde(default)]
    pub connections: Vec<ConnectionSection>,
}

/// `[http]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address, e.g. `0.0.0.0:8080`.
    pub addr: Option<SocketAddr>,
    /// Largest webhook body accepted, in bytes (default 1 MiB); larger ones get 413.
    pub body_limit_bytes: Option<usize>,
}

/// `[grpc]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSection {
    /// Listen address, e.g. `0.0.0.0:50051`.
    pub addr: Option<SocketAddr>,
}

/// `[[connections]]`: one vendor account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSection {
    /// Unique id; the webhook URL is `/webhooks/{id}`.
    pub id: String,
    /// The plugin's vendor name (`switchboard plugins` lists them).
    pub vendor: String,
    /// Whether webhooks must pass verification (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// Vendor-specific settings (see the plugin's README).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Secrets; each can be overridden by `SWITCHBOARD_SECRET__<ID>__<KEY>`.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Calls allowed to the vendor's API per window (default: the vendor's documented limit).
    pub rate_limit: Option<RateLimit>,
}

fn yes() -> bool {
    true
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// gRPC listen address (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// Largest webhook body accepted.
    pub body_limit: usize,
    /// The connections.
    pub connections: Vec<ConnectionConfig>,
    /// True when running on the embedded default (no config file).
    pub embedded_default: bool,
}

impl ServerConfig {
    /// The embedded default: one connection per registered plugin, id = vendor name,
    /// verification off.
    pub fn embedded_default(registry: &Registry) -> Self {
        let connections = registry
            .plugins()
            .iter()
            .filter_map(|p| ConnectionId::new(p.vendor).ok().map(|id| (id, p.vendor)))
            .map(|(id, vendor)| {
                let mut config = ConnectionConfig::new(id, vendor);
                config.verify = false;
                config
            })
            .collect();
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default address"),
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default address"),
            body_limit: DEFAULT_BODY_LIMIT,
            connections,
            embedded_default: true,
        }
    }

    /// Reads a config file, applies secret overrides from `env`, and checks it against the
    /// registry.
    pub fn from_file(
        path: &Path,
        registry: &Registry,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, registry, env).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text; see [`ServerConfig::from_file`].
    pub fn from_toml(
        text: &str,
        registry: &Registry,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(SECRET_ENV_PREFIX))
            .collect();
        let mut connections: Vec<ConnectionConfig> = Vec::new();
        for section in file.connections {
            let id = ConnectionId::new(section.id.clone())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if connections.iter().any(|c| c.id == id) {
                return Err(ConfigError::Invalid(format!(
                    "connection id {id:?} is used twice; ids must be unique"
                )));
            }
            if registry.get(&section.vendor).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "connection {id}: unknown vendor {:?}; known vendors: {}",
                    section.vendor,
                    registry.vendors().join(", ")
                )));
            }
            if let Some(limit) = section.rate_limit
                && (limit.calls == 0 || limit.per_seconds == 0)
            {
                return Err(ConfigError::Invalid(format!(
                    "connection {id}: rate_limit needs calls > 0 and per_seconds > 0"
                )));
            }
            let mut config = ConnectionConfig::new(id.clone(), section.vendor);
            config.verify = section.verify;
            config.settings = section.settings;
            config.secrets = section.secrets;
            config.rate_limit = section.rate_limit;
            let prefix = format!("{SECRET_ENV_PREFIX}{}__", env_name(id.as_str()));
            for (name, value) in &env {
                if let Some(key) = name.strip_prefix(&prefix) {
                    config
                        .secrets
                        .insert(key.to_ascii_lowercase(), Secret::new(value.clone()));
                }
            }
            connections.push(config);
        }
        Ok(ServerConfig {
            data_dir: file
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            http_addr: file
                .http
                .addr
                .unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("valid default address")),
            grpc_addr: file
                .grpc
                .addr
                .unwrap_or_else(|| DEFAULT_GRPC_ADDR.parse().expect("valid default address")),
            body_limit: file.http.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
            connections,
            embedded_default: false,
        })
    }
}

/// `livechat-eu` -> `LIVECHAT_EU`, as used in environment variable names.
pub fn env_name(connection: &str) -> String {
    connection.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use switchboard_core::Plugin;

    use super::*;

    static TEST_PLUGIN: Plugin = Plugin {
        vendor: "acme",
        description: "test vendor",
        verification: "token",
        webhook: None,
        connector: None,
    };

    fn registry() -> Registry {
        Registry::from_plugins([&TEST_PLUGIN]).unwrap()
    }

    #[test]
    fn file_config_with_env_secret_override() {
        let text = r#"
            data_dir = "/var/lib/switchboard"
            [http]
            addr = "0.0.0.0:9000"
            body_limit_bytes = 2048
            [[connections]]
            id = "acme-eu"
            vendor = "acme"
            settings = { region = "eu" }
            secrets = { webhook_secret = "from-file" }
            rate_limit = { calls = 10, per_seconds = 60 }
        "#;
        let env = [
            (
                "SWITCHBOARD_SECRET__ACME_EU__WEBHOOK_SECRET".to_owned(),
                "from-env".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = ServerConfig::from_toml(text, &registry(), env).unwrap();
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(config.body_limit, 2048);
        let connection = &config.connections[0];
        assert!(connection.verify);
        assert_eq!(connection.setting("region"), Some("eu"));
        assert_eq!(
            connection.secret("webhook_secret").map(Secret::expose),
            Some("from-env")
        );
        assert!(!config.embedded_default);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases = [
            ("[[connections]]\nid = \"a\"\nvendor = \"zendesk\"", "acme"),
            (
                "[[connections]]\nid = \"a\"\nvendor = \"acme\"\n[[connections]]\nid = \"a\"\nvendor = \"acme\"",
                "twice",
            ),
            (
                "[[connections]]\nid = \"Bad Id\"\nvendor = \"acme\"",
                "invalid connection id",
            ),
            ("[htp]\naddr = \"x\"", "unknown field"),
            (
                "[[connections]]\nid = \"a\"\nvendor = \"acme\"\nrate_limit = { calls = 0, per_seconds = 1 }",
                "rate_limit",
            ),
        ];
        for (text, expected) in cases {
            let err = ServerConfig::from_toml(text, &registry(), []).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn embedded_default_has_one_unverified_connection_per_plugin() {
        let config = ServerConfig::embedded_default(&registry());
        assert!(config.embedded_default);
        assert_eq!(config.connections.len(), 1);
        assert_eq!(config.connections[0].id.as_str(), "acme");
        assert!(!config.connections[0].verify);
        assert_eq!(config.http_addr.to_string(), DEFAULT_HTTP_ADDR);
    }
}
