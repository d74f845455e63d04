//! Limits and timeouts of both front doors, their documented defaults, and the `[limits]`
//! section read into them.

use std::time::Duration;

use super::{ConfigError, LimitsSection};

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
    /// How long a replica's lease on a connection's sync lasts without renewal (default 30 s;
    /// renewed every third of it while the sync runs): how long a replica that died mid-sync
    /// keeps the others from syncing that connection.
    pub sync_lease_ttl: Duration,
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
            sync_lease_ttl: Duration::from_secs(30),
        }
    }
}

impl Limits {
    pub(super) fn from_section(section: &LimitsSection) -> Result<Self, ConfigError> {
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
            sync_lease_ttl: ms(
                "sync_lease_ttl_ms",
                section.sync_lease_ttl_ms,
                d.sync_lease_ttl,
            )?,
        })
    }
}
