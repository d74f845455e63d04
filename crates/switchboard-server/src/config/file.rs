//! The config file's shape: what TOML reads, before any check. Unknown fields are refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use switchboard_core::{RateLimit, Secret};

/// The config file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the sled store lives.
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL: keep the data there instead of the sled store (replicas).
    pub database_url: Option<String>,
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

/// `[limits]`: every field optional; see [`super::Limits`] for the defaults.
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
    /// How long a replica's lease on a connection's sync lasts without renewal, milliseconds.
    pub sync_lease_ttl_ms: Option<u64>,
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
