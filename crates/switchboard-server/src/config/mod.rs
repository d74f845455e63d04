//! Server configuration: a TOML file, or the embedded default when there is none.
//!
//! | module | holds |
//! |---|---|
//! | `file` | the config file's shape ([`FileConfig`] and its sections), as TOML reads it |
//! | `limits` | [`Limits`]: limits and timeouts of both front doors, with their defaults |
//! | `security` | [`SecurityConfig`]: API keys and the bind policy ([`ServerConfig::check_exposure`]) |
//! | `env` | secret overrides from `SWITCHBOARD_SECRET__*` variables and their warnings |
//!
//! This module turns a file (or the embedded default) into a [`ServerConfig`].

mod database;
mod env;
mod file;
mod limits;
mod security;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_core::{ConnectionConfig, ConnectionId, Registry};

pub use crate::tls::TlsConfig;
pub use database::{DatabaseUrl, redact};
pub use env::{SECRET_ENV_PREFIX, config_warnings, env_name};
pub use file::{
    ApiKeySection, ConnectionSection, FileConfig, GrpcSection, HttpSection, LimitsSection,
    TlsSection,
};
pub use limits::Limits;
pub use security::SecurityConfig;

/// Default HTTP address of the embedded default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default gRPC address of the embedded default.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default data directory of the embedded default.
pub const DEFAULT_DATA_DIR: &str = "./switchboard-data";
/// Default webhook body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

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

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the embedded sled store lives (unused with a `database_url`).
    pub data_dir: PathBuf,
    /// The PostgreSQL database to keep the data in (several replicas may share it); `None`:
    /// the embedded sled store at `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// HTTP listen address (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// gRPC listen address (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// Largest webhook body accepted.
    pub body_limit: usize,
    /// Where `/metrics` is served on its own; `None` serves it on the webhook port.
    pub metrics_addr: Option<SocketAddr>,
    /// The connections.
    pub connections: Vec<ConnectionConfig>,
    /// True when running on the embedded default (no config file).
    pub embedded_default: bool,
    /// API keys and the bind policy.
    pub security: SecurityConfig,
    /// Limits and timeouts.
    pub limits: Limits,
    /// TLS for both front doors; `None` serves plain text.
    pub tls: Option<TlsConfig>,
    /// Periodic pull sync: the interval of each connection that has one.
    pub sync_intervals: BTreeMap<ConnectionId, Duration>,
}

impl Default for ServerConfig {
    /// Loopback addresses, the default data dir, no connections, no keys, default limits.
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default address"),
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default address"),
            body_limit: DEFAULT_BODY_LIMIT,
            metrics_addr: None,
            connections: Vec::new(),
            embedded_default: false,
            security: SecurityConfig::default(),
            limits: Limits::default(),
            tls: None,
            sync_intervals: BTreeMap::new(),
        }
    }
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
            connections,
            embedded_default: true,
            ..ServerConfig::default()
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
        let mut config = Self::from_toml(&text, registry, env).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        // Relative TLS paths are relative to the config file, not to the working directory.
        if let (Some(tls), Some(dir)) = (config.tls.as_mut(), path.parent()) {
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(config)
    }

    /// Parses TOML text; see [`ServerConfig::from_file`].
    pub fn from_toml(
        text: &str,
        registry: &Registry,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: parse_message(text, &e),
        })?;
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(SECRET_ENV_PREFIX))
            .collect();
        let mut connections: Vec<ConnectionConfig> = Vec::new();
        let mut sync_intervals = BTreeMap::new();
        for section in file.connections {
            let id = ConnectionId::new(section.id.clone())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if id.is_system() {
                return Err(ConfigError::Invalid(format!(
                    "connection id \"{id}\" is reserved: Switchboard writes its own events (contact \
                     merges, splits and erasures) under it; choose another id"
                )));
            }
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
            match section.sync_interval_secs {
                Some(0) => {
                    return Err(ConfigError::Invalid(format!(
                        "connection {id}: sync_interval_secs must be at least 1; leave it out for no periodic sync"
                    )));
                }
                Some(secs) => {
                    sync_intervals.insert(id.clone(), Duration::from_secs(secs));
                }
                None => {}
            }
            let mut config = ConnectionConfig::new(id.clone(), section.vendor);
            config.verify = section.verify;
            config.settings = section.settings;
            config.secrets = section.secrets;
            config.rate_limit = section.rate_limit;
            env::override_secrets(&mut config, &env);
            connections.push(config);
        }
        for warning in config_warnings(&connections, &env) {
            tracing::warn!("{warning}");
        }
        Ok(ServerConfig {
            data_dir: file
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: file
                .database_url
                .as_deref()
                .map(|url| DatabaseUrl::parse(url, "database_url in the config file"))
                .transpose()?,
            http_addr: file
                .http
                .addr
                .unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("valid default address")),
            grpc_addr: file
                .grpc
                .addr
                .unwrap_or_else(|| DEFAULT_GRPC_ADDR.parse().expect("valid default address")),
            body_limit: file.http.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
            metrics_addr: file.http.metrics_addr,
            connections,
            embedded_default: false,
            security: SecurityConfig {
                api_keys: security::api_keys(&file.api_keys)?,
                allow_unauthenticated: file.grpc.allow_unauthenticated,
                allow_unverified_webhooks: file.http.allow_unverified,
            },
            limits: Limits::from_section(&file.limits)?,
            tls: file.tls.map(|t| TlsConfig {
                cert: t.cert,
                key: t.key,
            }),
            sync_intervals,
        })
    }
}

/// A TOML error as one line: where (line and column) and what, without the snippet of the file
/// that the parser's own text carries (it would print the offending line, which may hold a
/// secret or the database URL's password).
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let what = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}
