//! Server configuration: a TOML file, or the embedded default when there is none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, ConnectionId, RateLimit, Registry, Secret};

use crate::auth::{ApiKey, Scope};
pub use crate::tls::TlsConfig;

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
    /// API keys for the gRPC API.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySection>,
    /// TLS for both front doors.
    pub tls: Option<TlsSection>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[[api_keys]]`: one gRPC API key, configured by its hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// Unique name, shown in logs (never the key).
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`switchboard keys new` prints it).
    pub sha256: String,
    /// `conversations:read`, `events:stream`, `tickets:manage`, `admin`.
    pub scopes: Vec<String>,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[limits]`: every field optional; see [`Limits`] for the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest gRPC request message, bytes.
    pub grpc_max_decode_message_bytes: Option<usize>,
    /// Largest gRPC response message, bytes.
    pub grpc_max_encode_message_bytes: Option<usize>,
    /// Deadline of a unary gRPC call, milliseconds.
    pub grpc_request_timeout_ms: Option<u64>,
    /// Unary gRPC calls served at once; more are refused with RESOURCE_EXHAUSTED.
    pub grpc_max_concurrent_requests: Option<usize>,
    /// HTTP/2 keepalive ping interval of gRPC connections, milliseconds.
    pub grpc_keepalive_interval_ms: Option<u64>,
    /// How long to wait for a keepalive ping's answer before closing, milliseconds.
    pub grpc_keepalive_timeout_ms: Option<u64>,
    /// Webhooks handled at once; more are answered 429.
    pub webhook_max_concurrent: Option<usize>,
    /// `Retry-After` of a 429, seconds.
    pub webhook_retry_after_secs: Option<u64>,
    /// Longest TLS handshake, milliseconds.
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Longest time to receive a webhook's body, milliseconds; slower senders get 408.
    pub webhook_body_timeout_ms: Option<u64>,
    /// StreamEvents subscribers at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_stream_subscribers: Option<usize>,
    /// How long shutdown waits for open requests and streams, milliseconds.
    pub shutdown_grace_ms: Option<u64>,
    /// How long an HTTP/1 request's headers may take to arrive, milliseconds.
    pub http_header_read_timeout_ms: Option<u64>,
    /// How long a connection (either port) may carry no traffic before it is closed,
    /// milliseconds.
    pub connection_idle_timeout_ms: Option<u64>,
    /// Concurrent HTTP/2 streams per webhook connection.
    pub webhook_http2_max_streams: Option<usize>,
    /// Webhook bodies one peer address may be sending at once; more are answered 429.
    pub webhook_max_body_reads_per_peer: Option<usize>,
    /// Concurrent HTTP/2 streams per gRPC connection.
    pub grpc_max_concurrent_streams: Option<usize>,
    /// Bytes of events queued for one StreamEvents subscriber (read-ahead included).
    pub stream_subscriber_buffer_bytes: Option<usize>,
    /// Bytes of events queued for all StreamEvents subscribers together.
    pub stream_total_buffer_bytes: Option<usize>,
    /// How long a subscriber may leave its full buffer unread before its stream is ended with
    /// RESOURCE_EXHAUSTED, milliseconds.
    pub stream_stall_timeout_ms: Option<u64>,
    /// Most webhooks the quarantine holds.
    pub quarantine_max_entries: Option<usize>,
    /// Most bytes the quarantine holds.
    pub quarantine_max_bytes: Option<usize>,
}

/// `[http]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address, e.g. `0.0.0.0:8080`.
    pub addr: Option<SocketAddr>,
    /// Largest webhook body accepted, in bytes (default 1 MiB); larger ones get 413.
    pub body_limit_bytes: Option<usize>,
    /// Allow webhooks of connections with `verify = false` on a non-loopback address.
    #[serde(default)]
    pub allow_unverified: bool,
    /// Serve `/metrics` on this address of its own instead of the webhook port (which then
    /// has no `/metrics`).
    pub metrics_addr: Option<SocketAddr>,
}

/// `[grpc]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSection {
    /// Listen address, e.g. `0.0.0.0:50051`.
    pub addr: Option<SocketAddr>,
    /// Allow a non-loopback address with no `[[api_keys]]` (something in front authenticates).
    #[serde(default)]
    pub allow_unauthenticated: bool,
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
    /// Pull the vendor's history every this many seconds while serving (default: never; the
    /// connection must have a connector with its credentials configured).
    pub sync_interval_secs: Option<u64>,
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

/// API keys and the bind policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// gRPC API keys; empty means gRPC is not authenticated (allowed on loopback only, unless
    /// `allow_unauthenticated`).
    pub api_keys: Vec<ApiKey>,
    /// Serve gRPC on a non-loopback address without API keys.
    pub allow_unauthenticated: bool,
    /// Serve webhooks of connections with `verify = false` on a non-loopback address.
    pub allow_unverified_webhooks: bool,
}

/// Limits and timeouts of both front doors. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC request message (default 4 MiB).
    pub grpc_max_decode_message_bytes: usize,
    /// Largest gRPC response message (default 64 MiB: a FULL page of 1000 conversations).
    pub grpc_max_encode_message_bytes: usize,
    /// Deadline of unary gRPC calls (default 30 s); streams have none.
    pub grpc_request_timeout: Duration,
    /// Unary gRPC calls at once before RESOURCE_EXHAUSTED (default 256).
    pub grpc_max_concurrent_requests: usize,
    /// HTTP/2 keepalive ping interval on gRPC connections (default 30 s).
    pub grpc_keepalive_interval: Duration,
    /// Keepalive answer timeout before the connection is closed (default 20 s).
    pub grpc_keepalive_timeout: Duration,
    /// Webhooks at once before 429 (default 512).
    pub webhook_max_concurrent: usize,
    /// `Retry-After` of a 429 (default 1 s).
    pub webhook_retry_after: Duration,
    /// Longest TLS handshake (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Longest time to receive a webhook's body (default 10 s); slower senders get 408.
    pub webhook_body_timeout: Duration,
    /// StreamEvents subscribers at once (default 1024).
    pub max_stream_subscribers: usize,
    /// How long shutdown waits for open requests and streams before closing them (default 10 s).
    pub shutdown_grace: Duration,
    /// How long an HTTP/1 request's headers may take to arrive (default 10 s).
    pub http_header_read_timeout: Duration,
    /// How long a connection on either port may carry no traffic before it is closed
    /// (default 60 s; HTTP/2 keepalive pings count as traffic).
    pub connection_idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per webhook connection (default 32).
    pub webhook_http2_max_streams: usize,
    /// Webhook bodies one peer address may be sending at once (default 128); more get 429.
    pub webhook_max_body_reads_per_peer: usize,
    /// Concurrent HTTP/2 streams per gRPC connection (default 256).
    pub grpc_max_concurrent_streams: usize,
    /// Bytes of events queued for one StreamEvents subscriber, read-ahead included
    /// (default 2 MiB).
    pub stream_subscriber_buffer_bytes: usize,
    /// Bytes of events queued for all StreamEvents subscribers together (default 128 MiB).
    pub stream_total_buffer_bytes: usize,
    /// How long a subscriber may leave its full buffer unread before its stream ends with
    /// RESOURCE_EXHAUSTED (default 60 s).
    pub stream_stall_timeout: Duration,
    /// Most webhooks the quarantine holds (default 10,000); past it (or past
    /// `quarantine_max_bytes`, default 256 MiB) an unmappable webhook gets 503.
    pub quarantine_max_entries: usize,
    /// Most bytes the quarantine holds (default 256 MiB).
    pub quarantine_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            grpc_max_decode_message_bytes: 4 * 1024 * 1024,
            grpc_max_encode_message_bytes: 64 * 1024 * 1024,
            grpc_request_timeout: Duration::from_secs(30),
            grpc_max_concurrent_requests: 256,
            grpc_keepalive_interval: Duration::from_secs(30),
            grpc_keepalive_timeout: Duration::from_secs(20),
            webhook_max_concurrent: 512,
            webhook_retry_after: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(10),
            webhook_body_timeout: Duration::from_secs(10),
            max_stream_subscribers: crate::grpc::DEFAULT_MAX_SUBSCRIBERS,
            shutdown_grace: Duration::from_secs(10),
            http_header_read_timeout: Duration::from_secs(10),
            connection_idle_timeout: Duration::from_secs(60),
            webhook_http2_max_streams: 32,
            webhook_max_body_reads_per_peer: 128,
            grpc_max_concurrent_streams: 256,
            stream_subscriber_buffer_bytes: 2 * 1024 * 1024,
            stream_total_buffer_bytes: 128 * 1024 * 1024,
            stream_stall_timeout: Duration::from_secs(60),
            quarantine_max_entries: 10_000,
            quarantine_max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    fn from_section(section: &LimitsSection) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let positive = |name: &str, v: Option<u64>| -> Result<Option<u64>, ConfigError> {
            match v {
                Some(0) => Err(ConfigError::Invalid(format!(
                    "limits.{name} must be greater than 0"
                ))),
                other => Ok(other),
            }
        };
        let size = |name: &str, v: Option<usize>, default: usize| {
            positive(name, v.map(|v| v as u64)).map(|v| v.map_or(default, |v| v as usize))
        };
        let ms = |name: &str, v: Option<u64>, default: Duration| {
            positive(name, v).map(|v| v.map_or(default, Duration::from_millis))
        };
        Ok(Limits {
            grpc_max_decode_message_bytes: size(
                "grpc_max_decode_message_bytes",
                section.grpc_max_decode_message_bytes,
                d.grpc_max_decode_message_bytes,
            )?,
            grpc_max_encode_message_bytes: size(
                "grpc_max_encode_message_bytes",
                section.grpc_max_encode_message_bytes,
                d.grpc_max_encode_message_bytes,
            )?,
            grpc_request_timeout: ms(
                "grpc_request_timeout_ms",
                section.grpc_request_timeout_ms,
                d.grpc_request_timeout,
            )?,
            grpc_max_concurrent_requests: size(
                "grpc_max_concurrent_requests",
                section.grpc_max_concurrent_requests,
                d.grpc_max_concurrent_requests,
            )?,
            grpc_keepalive_interval: ms(
                "grpc_keepalive_interval_ms",
                section.grpc_keepalive_interval_ms,
                d.grpc_keepalive_interval,
            )?,
            grpc_keepalive_timeout: ms(
                "grpc_keepalive_timeout_ms",
                section.grpc_keepalive_timeout_ms,
                d.grpc_keepalive_timeout,
            )?,
            webhook_max_concurrent: size(
                "webhook_max_concurrent",
                section.webhook_max_concurrent,
                d.webhook_max_concurrent,
            )?,
            webhook_retry_after: positive(
                "webhook_retry_after_secs",
                section.webhook_retry_after_secs,
            )?
            .map_or(d.webhook_retry_after, Duration::from_secs),
            tls_handshake_timeout: ms(
                "tls_handshake_timeout_ms",
                section.tls_handshake_timeout_ms,
                d.tls_handshake_timeout,
            )?,
            webhook_body_timeout: ms(
                "webhook_body_timeout_ms",
                section.webhook_body_timeout_ms,
                d.webhook_body_timeout,
            )?,
            max_stream_subscribers: size(
                "max_stream_subscribers",
                section.max_stream_subscribers,
                d.max_stream_subscribers,
            )?,
            shutdown_grace: ms(
                "shutdown_grace_ms",
                section.shutdown_grace_ms,
                d.shutdown_grace,
            )?,
            http_header_read_timeout: ms(
                "http_header_read_timeout_ms",
                section.http_header_read_timeout_ms,
                d.http_header_read_timeout,
            )?,
            connection_idle_timeout: ms(
                "connection_idle_timeout_ms",
                section.connection_idle_timeout_ms,
                d.connection_idle_timeout,
            )?,
            webhook_http2_max_streams: size(
                "webhook_http2_max_streams",
                section.webhook_http2_max_streams,
                d.webhook_http2_max_streams,
            )?,
            webhook_max_body_reads_per_peer: size(
                "webhook_max_body_reads_per_peer",
                section.webhook_max_body_reads_per_peer,
                d.webhook_max_body_reads_per_peer,
            )?,
            grpc_max_concurrent_streams: size(
                "grpc_max_concurrent_streams",
                section.grpc_max_concurrent_streams,
                d.grpc_max_concurrent_streams,
            )?,
            stream_subscriber_buffer_bytes: size(
                "stream_subscriber_buffer_bytes",
                section.stream_subscriber_buffer_bytes,
                d.stream_subscriber_buffer_bytes,
            )?,
            stream_total_buffer_bytes: size(
                "stream_total_buffer_bytes",
                section.stream_total_buffer_bytes,
                d.stream_total_buffer_bytes,
            )?,
            stream_stall_timeout: ms(
                "stream_stall_timeout_ms",
                section.stream_stall_timeout_ms,
                d.stream_stall_timeout,
            )?,
            quarantine_max_entries: size(
                "quarantine_max_entries",
                section.quarantine_max_entries,
                d.quarantine_max_entries,
            )?,
            quarantine_max_bytes: size(
                "quarantine_max_bytes",
                section.quarantine_max_bytes,
                d.quarantine_max_bytes,
            )?,
        })
    }
}

fn api_keys(sections: &[ApiKeySection]) -> Result<Vec<ApiKey>, ConfigError> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for section in sections {
        let name = section.name.trim();
        if name.is_empty() {
            return Err(ConfigError::Invalid(
                "an [[api_keys]] entry has an empty name; give every key a name".to_owned(),
            ));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(ConfigError::Invalid(format!(
                "API key name {name:?} is used twice; names must be unique"
            )));
        }
        let sha256 = crate::auth::parse_hash(section.sha256.trim())
            .map_err(|e| ConfigError::Invalid(format!("API key {name:?}: {e}")))?;
        if let Some(other) = keys.iter().find(|k| k.sha256 == sha256) {
            return Err(ConfigError::Invalid(format!(
                "API keys {:?} and {name:?} have the same sha256; give each its own key",
                other.name
            )));
        }
        if section.scopes.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "API key {name:?} has no scopes; give it at least one of: {}",
                Scope::ALL.map(Scope::as_str).join(", ")
            )));
        }
        let scopes = section
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| ConfigError::Invalid(format!("API key {name:?}: {e}")))?;
        keys.push(ApiKey {
            name: name.to_owned(),
            sha256,
            scopes,
        });
    }
    Ok(keys)
}

impl Default for ServerConfig {
    /// Loopback addresses, the default data dir, no connections, no keys, default limits.
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
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

    /// The bind policy: refuses gRPC on a non-loopback address with no API key, and webhooks
    /// of connections with `verify = false` on a non-loopback address, unless allowed.
    /// [`crate::start`] calls it before binding anything.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.grpc_addr.ip().is_loopback()
            && self.security.api_keys.is_empty()
            && !self.security.allow_unauthenticated
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve gRPC on {} without authentication: anyone who can reach it \
                 could read every conversation. Add an [[api_keys]] entry (`switchboard keys new` \
                 makes one), bind gRPC to 127.0.0.1, or, if something in front of it \
                 authenticates, set [grpc] allow_unauthenticated = true or pass \
                 --allow-unauthenticated",
                self.grpc_addr
            )));
        }
        if !self.http_addr.ip().is_loopback() && !self.security.allow_unverified_webhooks {
            let unverified: Vec<&str> = self
                .connections
                .iter()
                .filter(|c| !c.verify)
                .map(|c| c.id.as_str())
                .collect();
            if !unverified.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "refusing to take webhooks on {} for connections with verification off ({}): \
                     anyone who can reach it could post fake events. Configure their secrets and \
                     verify = true, bind HTTP to 127.0.0.1, or set [http] allow_unverified = true \
                     or pass --allow-unauthenticated",
                    self.http_addr,
                    unverified.join(", ")
                )));
            }
        }
        Ok(())
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
            message: e.to_string(),
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
        for warning in config_warnings(&connections, &env) {
            tracing::warn!("{warning}");
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
            metrics_addr: file.http.metrics_addr,
            connections,
            embedded_default: false,
            security: SecurityConfig {
                api_keys: api_keys(&file.api_keys)?,
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

/// What a config file probably got wrong without being unusable: no connections at all, and
/// `SWITCHBOARD_SECRET__*` variables that name no configured connection (each named, never its
/// value). [`ServerConfig::from_toml`] logs each as a warning.
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
    fn no_connections_and_unmatched_secret_variables_are_warned_about_without_values() {
        let config = ServerConfig::from_toml("", &registry(), []).unwrap();
        let warnings = config_warnings(&config.connections, &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("no [[connections]]"), "{warnings:?}");

        let text = "[[connections]]\nid = \"acme-eu\"\nvendor = \"acme\"\n";
        let config = ServerConfig::from_toml(text, &registry(), []).unwrap();
        let env = [
            (
                "SWITCHBOARD_SECRET__ACME_EU__WEBHOOK_SECRET".to_owned(),
                "matched".to_owned(),
            ),
            (
                "SWITCHBOARD_SECRET__ACME_US__WEBHOOK_SECRET".to_owned(),
                "hunter2".to_owned(),
            ),
            (
                "SWITCHBOARD_SECRET__ACME_EU__".to_owned(),
                "hunter3".to_owned(),
            ),
        ];
        let warnings = config_warnings(&config.connections, &env);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("SWITCHBOARD_SECRET__ACME_US__WEBHOOK_SECRET"));
        assert!(warnings[0].contains("SWITCHBOARD_SECRET__ACME_EU__<KEY>"));
        assert!(warnings[1].contains("SWITCHBOARD_SECRET__ACME_EU__ "));
        assert!(!warnings.concat().contains("hunter"), "{warnings:?}");
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
    fn api_keys_limits_and_tls_are_read_and_checked() {
        let hash = crate::auth::key_hash_hex("sbk_test");
        let text = format!(
            r#"
            [grpc]
            addr = "0.0.0.0:50051"
            [[api_keys]]
            name = "backend"
            sha256 = "{hash}"
            scopes = ["conversations:read", "events:stream"]
            [tls]
            cert = "/etc/switchboard/cert.pem"
            key = "/etc/switchboard/key.pem"
            [limits]
            grpc_request_timeout_ms = 1500
            webhook_max_concurrent = 8
        "#
        );
        let config = ServerConfig::from_toml(&text, &registry(), []).unwrap();
        let key = &config.security.api_keys[0];
        assert_eq!(key.name, "backend");
        assert!(key.allows(Scope::EventsStream) && !key.allows(Scope::Admin));
        assert_eq!(
            config.limits.grpc_request_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(config.limits.webhook_max_concurrent, 8);
        assert_eq!(
            config.limits.grpc_max_concurrent_requests,
            Limits::default().grpc_max_concurrent_requests
        );
        assert_eq!(
            config.tls.as_ref().map(|t| t.cert.clone()),
            Some(PathBuf::from("/etc/switchboard/cert.pem"))
        );
        config.check_exposure().unwrap();
        assert!(
            !format!("{config:?}").contains(&hash),
            "hashes are not printed"
        );

        let key = |name: &str, sha: &str, scopes: &str| {
            format!("[[api_keys]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscopes = {scopes}\n")
        };
        let other = crate::auth::key_hash_hex("sbk_other");
        let cases = [
            (key("a", "abc", "[\"admin\"]"), "64 hex digits"),
            (key("a", &hash, "[\"root\"]"), "unknown scope \"root\""),
            (key("a", &hash, "[]"), "no scopes"),
            (key("", &hash, "[\"admin\"]"), "empty name"),
            (
                key("a", &hash, "[\"admin\"]") + &key("a", &other, "[\"admin\"]"),
                "used twice",
            ),
            (
                key("a", &hash, "[\"admin\"]") + &key("b", &hash, "[\"admin\"]"),
                "same sha256",
            ),
            (
                "[limits]\nwebhook_max_concurrent = 0".to_owned(),
                "greater than 0",
            ),
            ("[limits]\nmax_everything = 1".to_owned(), "unknown field"),
        ];
        for (text, expected) in cases {
            let err = ServerConfig::from_toml(&text, &registry(), []).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_bind_policy_refuses_open_non_loopback_addresses() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut config = ServerConfig::default();
        config.check_exposure().unwrap();
        config.grpc_addr = any;
        let err = config.check_exposure().unwrap_err().to_string();
        assert!(
            err.contains("api_keys") && err.contains("--allow-unauthenticated"),
            "{err}"
        );
        config.security.allow_unauthenticated = true;
        config.check_exposure().unwrap();

        let mut config = ServerConfig::embedded_default(&registry());
        config.http_addr = any;
        let err = config.check_exposure().unwrap_err().to_string();
        assert!(err.contains("verification off (acme)"), "{err}");
        config.security.allow_unverified_webhooks = true;
        config.check_exposure().unwrap();
        // Verified connections may take webhooks anywhere: the vendor's secret authenticates.
        let config = ServerConfig {
            http_addr: any,
            connections: vec![ConnectionConfig::new(
                ConnectionId::new("acme").unwrap(),
                "acme",
            )],
            ..ServerConfig::default()
        };
        config.check_exposure().unwrap();
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

    #[test]
    fn sync_intervals_are_read_per_connection_and_zero_is_refused() {
        let text = "[[connections]]\nid = \"a\"\nvendor = \"acme\"\nsync_interval_secs = 900\n\n[[connections]]\nid = \"b\"\nvendor = \"acme\"\n";
        let config = ServerConfig::from_toml(text, &registry(), []).unwrap();
        let a = ConnectionId::new("a").unwrap();
        assert_eq!(config.sync_intervals.len(), 1);
        assert_eq!(config.sync_intervals[&a], Duration::from_secs(900));
        let zero = text.replace("900", "0");
        let err = ServerConfig::from_toml(&zero, &registry(), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync_interval_secs"), "{err}");
    }
}
