//! Prometheus metrics: the process-wide recorder, `/metrics` rendering, and the metrics the
//! server itself records.
//!
//! Any crate records through the `metrics` facade (`metrics::counter!("switchboard_...")`);
//! [`install`] puts the Prometheus recorder behind that facade once per process (tests start
//! several servers in one process; they all share it) and [`render`] serves the text format.
//! Every metric is listed, with its type, labels and meaning, in `docs/observability.md`.
//!
//! Each telemetry point the server records is one function here, so its name and labels live
//! in one place and logs and metrics are emitted side by side.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchboard_core::ErrorCode;
use tracing::warn;

/// Webhooks received, by `connection` and `outcome` (counter).
pub const WEBHOOKS_TOTAL: &str = "switchboard_webhooks_total";
/// Seconds from a webhook's arrival to its durable acknowledgement, by `connection` (histogram).
pub const INGEST_SECONDS: &str = "switchboard_ingest_seconds";
/// StreamEvents subscribers connected now (gauge).
pub const STREAM_SUBSCRIBERS: &str = "switchboard_stream_subscribers";
/// StreamEvents subscribers refused because the cap was reached (counter).
pub const STREAM_SUBSCRIBERS_REFUSED_TOTAL: &str = "switchboard_stream_subscribers_refused_total";
/// Counter: StreamEvents subscribers ended because they left their events unread past the
/// stall limit.
pub const STREAM_SUBSCRIBERS_STALLED_TOTAL: &str = "switchboard_stream_subscribers_stalled_total";
/// Counter by connection: verified webhooks their plugin could not map, held in the quarantine.
pub const QUARANTINED_TOTAL: &str = "switchboard_quarantined_total";
/// Gauge: webhooks held in the quarantine now.
pub const QUARANTINE_ENTRIES: &str = "switchboard_quarantine_entries";
/// Counter: unmappable webhooks refused (503) because the quarantine was full.
pub const QUARANTINE_FULL_TOTAL: &str = "switchboard_quarantine_full_total";
/// How far a subscriber is behind the head, sampled each time its reader reads a batch
/// (histogram, events).
pub const STREAM_LAG_EVENTS: &str = "switchboard_stream_lag_events";
/// Events sent to StreamEvents subscribers (counter).
pub const STREAM_EVENTS_SENT_TOTAL: &str = "switchboard_stream_events_sent_total";
/// gRPC requests finished, by `method` and `code` (counter).
pub const GRPC_REQUESTS_TOTAL: &str = "switchboard_grpc_requests_total";
/// Seconds from a gRPC request to its response headers, by `method` (histogram).
pub const GRPC_REQUEST_SECONDS: &str = "switchboard_grpc_request_seconds";

/// Counter: events appended to the log (recorded by the store's writer).
pub const EVENTS_APPENDED_TOTAL: &str = "switchboard_events_appended_total";
/// Histogram: events appended per group commit (recorded by the store's writer).
pub const STORE_BATCH_SIZE: &str = "switchboard_store_batch_size";
/// Histogram: seconds of one group commit (recorded by the store's writer).
pub const STORE_COMMIT_SECONDS: &str = "switchboard_store_commit_seconds";
/// Counter: stored records that could not be decoded when read (recorded by the store).
pub const STORE_UNREADABLE_RECORDS_TOTAL: &str = "switchboard_store_unreadable_records_total";
/// Gauge: the last log sequence the find index has applied (recorded by the finder).
pub const FIND_POSITION: &str = switchboard_find::POSITION_METRIC;
/// Gauge: events the find index has not applied yet, the log's head minus its position
/// (recorded by the finder).
pub const FIND_LAG_EVENTS: &str = switchboard_find::LAG_METRIC;
/// Counter by `front` (`http`, `http_peer`, `grpc`): requests refused by concurrency limits.
pub const LOAD_SHED_TOTAL: &str = "switchboard_load_shed_total";
/// Counter by `connection`: records pulled from the vendor's API.
pub const SYNC_RECORDS_TOTAL: &str = "switchboard_sync_records_total";
/// Counter by `connection`: pages pulled and stored with their cursor.
pub const SYNC_PAGES_TOTAL: &str = "switchboard_sync_pages_total";
/// Counter by `connection`: sync runs stopped by an error.
pub const SYNC_ERRORS_TOTAL: &str = "switchboard_sync_errors_total";
/// Gauge by `connection`: Unix time of the last sync run that finished.
pub const SYNC_LAST_SUCCESS: &str = "switchboard_sync_last_success_timestamp_seconds";
/// Counter by `connection`, `vendor`, `status`: HTTP calls to vendor APIs.
pub const VENDOR_API_CALLS_TOTAL: &str = "switchboard_vendor_api_calls_total";
/// Histogram by `vendor`: seconds of one vendor API attempt.
pub const VENDOR_API_CALL_SECONDS: &str = "switchboard_vendor_api_call_seconds";
/// Counter by `connection`, `vendor`: vendor API attempts retried.
pub const VENDOR_API_RETRIES_TOTAL: &str = "switchboard_vendor_api_retries_total";
/// Counter by `connection`, `vendor`: calls that waited for the rate limiter.
pub const VENDOR_RATE_LIMITED_WAITS_TOTAL: &str = "switchboard_vendor_rate_limited_waits_total";

/// The `front` label values of [`LOAD_SHED_TOTAL`].
pub const LOAD_SHED_FRONTS: [&str; 3] = ["http", "http_peer", "grpc"];

/// The outcomes of [`WEBHOOKS_TOTAL`], every one.
pub const WEBHOOK_OUTCOMES: [WebhookOutcome; 13] = [
    WebhookOutcome::Accepted,
    WebhookOutcome::Duplicate,
    WebhookOutcome::Unauthenticated,
    WebhookOutcome::Forbidden,
    WebhookOutcome::Invalid,
    WebhookOutcome::TooLarge,
    WebhookOutcome::NotFound,
    WebhookOutcome::Refused,
    WebhookOutcome::Overloaded,
    WebhookOutcome::Unavailable,
    WebhookOutcome::Timeout,
    WebhookOutcome::Failed,
    WebhookOutcome::Quarantined,
];

/// Buckets for latencies in seconds: 250 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for counts of events (batch sizes, lag): 0 to 1,000,000.
pub const COUNT_BUCKETS: &[f64] = &[
    0.0,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1_000.0,
    5_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];

/// How often histogram samples are folded into their buckets (keeps memory bounded between
/// scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later calls do
/// nothing. If another recorder was installed first (an embedding program's), that one keeps
/// receiving the metrics and `/metrics` says so.
pub fn install() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_batch_size".to_owned()), COUNT_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_events".to_owned()), COUNT_BUCKETS)
            })
            .and_then(|b| b.install_recorder());
        match built {
            Ok(handle) => {
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-upkeep".to_owned())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(UPKEEP_EVERY);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(error) = spawned {
                    warn!(%error, "cannot start the metrics upkeep thread; histograms are folded at scrape time only");
                }
                describe();
                register_at_zero();
                Some(handle)
            }
            Err(error) => {
                warn!(%error, "the Prometheus recorder is not installed; /metrics will be empty");
                None
            }
        }
    });
}

/// Registers every series without per-connection labels at zero, so `/metrics` shows them
/// (and alerts and dashboards can use them) before the first event.
fn register_at_zero() {
    for name in [
        STREAM_SUBSCRIBERS_REFUSED_TOTAL,
        STREAM_SUBSCRIBERS_STALLED_TOTAL,
        QUARANTINE_FULL_TOTAL,
        STREAM_EVENTS_SENT_TOTAL,
        EVENTS_APPENDED_TOTAL,
        STORE_UNREADABLE_RECORDS_TOTAL,
    ] {
        counter!(name).absolute(0);
    }
    for front in LOAD_SHED_FRONTS {
        counter!(LOAD_SHED_TOTAL, "front" => front).absolute(0);
    }
    // Incremented and decremented by subscribers, set by the quarantine: an increment of zero
    // registers without overwriting a value set before.
    gauge!(STREAM_SUBSCRIBERS).increment(0.0);
    gauge!(QUARANTINE_ENTRIES).increment(0.0);
    // A registered histogram is rendered with empty buckets.
    for name in [STREAM_LAG_EVENTS, STORE_BATCH_SIZE, STORE_COMMIT_SECONDS] {
        let _ = histogram!(name);
    }
    for (_, method) in known_methods() {
        let method = method.as_str();
        counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => grpc_code_name(tonic::Code::Ok))
            .increment(0);
        let _ = histogram!(GRPC_REQUEST_SECONDS, "method" => method);
    }
}

/// Registers the per-connection series of these `(connection, vendor)` pairs at zero (every
/// webhook outcome, ingest latency, the quarantine, sync and vendor API retry counters), so each
/// configured connection is on `/metrics` before its first webhook. Registering again changes
/// nothing. Series labelled with a value known only later (a vendor's HTTP status, the time of
/// the last sync) appear with their first sample.
pub fn register_connections<'a>(connections: impl IntoIterator<Item = (&'a str, &'a str)>) {
    install();
    for (connection, vendor) in connections {
        let _ = histogram!(INGEST_SECONDS, "connection" => connection.to_owned());
        let _ = histogram!(VENDOR_API_CALL_SECONDS, "vendor" => vendor.to_owned());
        for name in [VENDOR_API_RETRIES_TOTAL, VENDOR_RATE_LIMITED_WAITS_TOTAL] {
            counter!(name, "connection" => connection.to_owned(), "vendor" => vendor.to_owned())
                .increment(0);
        }
        for outcome in WEBHOOK_OUTCOMES {
            counter!(WEBHOOKS_TOTAL, "connection" => connection.to_owned(), "outcome" => outcome.as_str())
                .increment(0);
        }
        for name in [
            QUARANTINED_TOTAL,
            SYNC_RECORDS_TOTAL,
            SYNC_PAGES_TOTAL,
            SYNC_ERRORS_TOTAL,
        ] {
            counter!(name, "connection" => connection.to_owned()).increment(0);
        }
    }
}

/// The metrics in the Prometheus text format, or `None` when [`install`] could not install the
/// recorder (another one was installed first).
pub fn render() -> Option<String> {
    install();
    HANDLE.get().and_then(Option::as_ref).map(|handle| {
        handle.run_upkeep();
        handle.render()
    })
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        WEBHOOKS_TOTAL,
        "Webhooks received, by connection and outcome"
    );
    describe_histogram!(
        INGEST_SECONDS,
        Unit::Seconds,
        "Seconds from a webhook's arrival to its durable acknowledgement"
    );
    describe_gauge!(STREAM_SUBSCRIBERS, "StreamEvents subscribers connected now");
    describe_counter!(
        STREAM_SUBSCRIBERS_REFUSED_TOTAL,
        "StreamEvents subscribers refused because the subscriber cap was reached"
    );
    describe_counter!(
        QUARANTINED_TOTAL,
        "Verified webhooks their plugin could not map, held in the quarantine, by connection"
    );
    describe_gauge!(QUARANTINE_ENTRIES, "Webhooks held in the quarantine now");
    describe_counter!(
        QUARANTINE_FULL_TOTAL,
        "Unmappable webhooks answered 503 because the quarantine was full (the vendor redelivers)"
    );
    describe_counter!(
        STREAM_SUBSCRIBERS_STALLED_TOTAL,
        "StreamEvents subscribers ended because they left their events unread past the stall limit"
    );
    describe_histogram!(
        STREAM_LAG_EVENTS,
        "Events between the head of the log and a subscriber's last sent event, sampled per batch read"
    );
    describe_counter!(
        STREAM_EVENTS_SENT_TOTAL,
        "Events sent to StreamEvents subscribers"
    );
    describe_counter!(
        GRPC_REQUESTS_TOTAL,
        "gRPC requests finished, by method and status code"
    );
    describe_histogram!(
        GRPC_REQUEST_SECONDS,
        Unit::Seconds,
        "Seconds from a gRPC request to its response headers"
    );
    describe_counter!(
        EVENTS_APPENDED_TOTAL,
        "Events appended to the log (duplicates not counted)"
    );
    describe_histogram!(STORE_BATCH_SIZE, "Events appended per group commit");
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Seconds of one group commit, from its start to durability"
    );
    describe_counter!(
        STORE_UNREADABLE_RECORDS_TOTAL,
        "Stored records that could not be decoded when read"
    );
    describe_gauge!(
        FIND_POSITION,
        "The last log sequence the find index has applied"
    );
    describe_gauge!(
        FIND_LAG_EVENTS,
        "Events in the log the find index has not applied yet"
    );
    describe_counter!(
        LOAD_SHED_TOTAL,
        "Requests refused at once by the concurrency limits, by front"
    );
    describe_counter!(
        SYNC_RECORDS_TOTAL,
        "Records pulled from the vendor's API, by connection"
    );
    describe_counter!(
        SYNC_PAGES_TOTAL,
        "Pages pulled and stored with their cursor, by connection"
    );
    describe_counter!(
        SYNC_ERRORS_TOTAL,
        "Sync runs stopped by a vendor or store error, by connection"
    );
    describe_gauge!(
        SYNC_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last sync run that finished, by connection"
    );
    describe_counter!(
        VENDOR_API_CALLS_TOTAL,
        "HTTP calls to vendor APIs, one per attempt, by connection, vendor and status"
    );
    describe_histogram!(
        VENDOR_API_CALL_SECONDS,
        Unit::Seconds,
        "Seconds of one vendor API attempt, by vendor"
    );
    describe_counter!(
        VENDOR_API_RETRIES_TOTAL,
        "Vendor API attempts retried, by connection and vendor"
    );
    describe_counter!(
        VENDOR_RATE_LIMITED_WAITS_TOTAL,
        "Vendor API calls that waited for the connection's rate limiter"
    );
}

/// What became of a webhook: the `outcome` label of [`WEBHOOKS_TOTAL`]. A closed set, so the
/// label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified, parsed and stored; at least one event was new (or the body held none).
    Accepted,
    /// Verified, parsed and every event was already stored (a redelivery).
    Duplicate,
    /// Verification failed (401).
    Unauthenticated,
    /// Verification passed but the connection may not do this (403).
    Forbidden,
    /// The body could not be parsed, or the query string was malformed (400).
    Invalid,
    /// The body was larger than the limit (413).
    TooLarge,
    /// No such connection (404).
    NotFound,
    /// The connection takes no webhooks, or another precondition failed (409).
    Refused,
    /// Refused by load shedding or a rate limit (429).
    Overloaded,
    /// The store could not take it right now (503).
    Unavailable,
    /// A deadline passed (504).
    Timeout,
    /// Anything else (a bug; 500 or 501).
    Failed,
    /// Verified, but its plugin could not map it: held in the quarantine and answered with
    /// success.
    Quarantined,
}

impl WebhookOutcome {
    /// The outcome for a refusal with this code.
    pub fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => WebhookOutcome::Invalid,
            ErrorCode::NotFound => WebhookOutcome::NotFound,
            ErrorCode::Unauthenticated => WebhookOutcome::Unauthenticated,
            ErrorCode::PermissionDenied => WebhookOutcome::Forbidden,
            ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => WebhookOutcome::Refused,
            ErrorCode::ResourceExhausted => WebhookOutcome::Overloaded,
            ErrorCode::PayloadTooLarge => WebhookOutcome::TooLarge,
            ErrorCode::Unavailable => WebhookOutcome::Unavailable,
            ErrorCode::DeadlineExceeded => WebhookOutcome::Timeout,
            ErrorCode::Unimplemented | ErrorCode::Internal => WebhookOutcome::Failed,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unauthenticated => "unauthenticated",
            WebhookOutcome::Forbidden => "forbidden",
            WebhookOutcome::Invalid => "invalid",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::NotFound => "not_found",
            WebhookOutcome::Refused => "refused",
            WebhookOutcome::Overloaded => "overloaded",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::Timeout => "timeout",
            WebhookOutcome::Failed => "failed",
            WebhookOutcome::Quarantined => "quarantined",
        }
    }
}

/// The `connection` label for a webhook whose connection id is not configured: the id comes
/// from the URL, so it is not used as a label (anyone could grow the label set without bound).
pub const UNKNOWN_CONNECTION: &str = "unknown";

/// Counts one webhook.
pub fn webhook(connection: &str, outcome: WebhookOutcome) {
    counter!(WEBHOOKS_TOTAL, "connection" => connection.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Records the time from a webhook's arrival to its durable acknowledgement.
pub fn ingest_latency(connection: &str, elapsed: Duration) {
    histogram!(INGEST_SECONDS, "connection" => connection.to_owned()).record(elapsed.as_secs_f64());
}

/// Counts one subscriber refused by the cap.
pub fn subscriber_refused() {
    counter!(STREAM_SUBSCRIBERS_REFUSED_TOTAL).increment(1);
}

/// Counts a webhook held in the quarantine.
pub fn quarantine_held(connection: &str) {
    counter!(QUARANTINED_TOTAL, "connection" => connection.to_owned()).increment(1);
}

/// Counts an unmappable webhook refused because the quarantine was full.
pub fn quarantine_full() {
    counter!(QUARANTINE_FULL_TOTAL).increment(1);
}

/// Sets how many webhooks the quarantine holds.
pub fn quarantine_entries(entries: u64) {
    gauge!(QUARANTINE_ENTRIES).set(entries as f64);
}

/// Counts a subscriber ended for leaving its events unread.
pub fn subscriber_stalled() {
    counter!(STREAM_SUBSCRIBERS_STALLED_TOTAL).increment(1);
}

/// One StreamEvents subscriber's metrics: counts it in [`STREAM_SUBSCRIBERS`] while it lives.
#[derive(Debug)]
pub struct SubscriberMetrics {
    connected: Gauge,
    lag: Histogram,
    sent: Counter,
}

impl SubscriberMetrics {
    /// A subscriber connected.
    pub fn connected() -> Self {
        let connected = gauge!(STREAM_SUBSCRIBERS);
        connected.increment(1.0);
        SubscriberMetrics {
            connected,
            lag: histogram!(STREAM_LAG_EVENTS),
            sent: counter!(STREAM_EVENTS_SENT_TOTAL),
        }
    }

    /// The subscriber's reader is about to send events after `last_sent` while the head is at
    /// `head`.
    pub fn lag(&self, head: u64, last_sent: u64) {
        self.lag.record(head.saturating_sub(last_sent) as f64);
    }

    /// `n` events were handed to the subscriber.
    pub fn sent(&self, n: u64) {
        self.sent.increment(n);
    }
}

impl Drop for SubscriberMetrics {
    fn drop(&mut self) {
        self.connected.decrement(1.0);
    }
}

/// Counts one finished gRPC request.
pub fn grpc_request(method: &'static str, code: tonic::Code) {
    counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => grpc_code_name(code)).increment(1);
}

/// Records the time from a gRPC request to its response headers.
pub fn grpc_latency(method: &'static str, elapsed: Duration) {
    histogram!(GRPC_REQUEST_SECONDS, "method" => method).record(elapsed.as_secs_f64());
}

/// The canonical upper-case name of a gRPC status code (`OK`, `INVALID_ARGUMENT`...).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The request id header (gRPC metadata key), in requests and responses.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The `method` label of a call to a method no service here has (the path comes from the
/// client, so it is not used as a label).
pub const UNKNOWN_METHOD: &str = "unknown";

/// The Switchboard service's name; its methods are labelled by their bare name.
const SWITCHBOARD_SERVICE: &str = "switchboard.v1.Switchboard";

/// `(request path, method label)` of every method of every service the gRPC port serves,
/// read once from their descriptor sets.
fn known_methods() -> &'static [(String, String)] {
    static METHODS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message as _;
        let sets = [
            switchboard_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = Vec::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        let path = format!("/{full}/{}", method.name());
                        let label = if full == SWITCHBOARD_SERVICE {
                            method.name().to_owned()
                        } else {
                            format!("{full}/{}", method.name())
                        };
                        methods.push((path, label));
                    }
                }
            }
        }
        methods
    })
}

/// The `method` label for a request path: the bare method name for the Switchboard service
/// (`ListConversations`), `service/method` for the others (`grpc.health.v1.Health/Check`),
/// [`UNKNOWN_METHOD`] for a path no service has.
pub fn method_label(path: &str) -> &'static str {
    known_methods()
        .iter()
        .find(|(known, _)| known == path)
        .map_or(UNKNOWN_METHOD, |(_, label)| label.as_str())
}

/// A tower layer for the gRPC server (put it first, so it is outermost): counts every request
/// by method and status code ([`GRPC_REQUESTS_TOTAL`]), times it to its response headers
/// ([`GRPC_REQUEST_SECONDS`]), and gives it a request id (the client's `x-request-id` metadata
/// if sane, else a fresh one) that is set on the request, carried by its tracing span and
/// returned in the response metadata, refusals by inner layers included.
///
/// A unary call is counted when its status is sent (in the trailers, or in the headers for an
/// error answered at once); a stream when it ends, with the status it ended with, or
/// `CANCELLED` if the client went away first.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcObserveLayer;

impl<S> tower::Layer<S> for GrpcObserveLayer {
    type Service = GrpcObserve<S>;

    fn layer(&self, inner: S) -> GrpcObserve<S> {
        install();
        GrpcObserve { inner }
    }
}

/// The service made by [`GrpcObserveLayer`].
#[derive(Debug, Clone)]
pub struct GrpcObserve<S> {
    inner: S,
}

impl<S, B, R> tonic::codegen::Service<http::Request<B>> for GrpcObserve<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let method = method_label(request.uri().path());
        let id = request_id(
            request
                .headers()
                .get(&REQUEST_ID_HEADER)
                .map(http::HeaderValue::as_bytes),
        );
        // A request id is visible ASCII, so it is a valid header value.
        let header = http::HeaderValue::from_str(&id).ok();
        if let Some(header) = &header {
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, header.clone());
        }
        let span = tracing::info_span!("rpc", method, request_id = %id);
        let started = std::time::Instant::now();
        // The ready service answers this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let future = ready.call(request);
        Box::pin(async move {
            let response = future.instrument(span).await?;
            grpc_latency(method, started.elapsed());
            let (mut parts, body) = response.into_parts();
            if let Some(header) = header {
                parts.headers.insert(REQUEST_ID_HEADER, header);
            }
            let body = tonic::body::Body::new(body);
            // An error answered before any message carries its status in the headers.
            if let Some(code) = parts.headers.get("grpc-status") {
                grpc_request(method, tonic::Code::from_bytes(code.as_bytes()));
                return Ok(http::Response::from_parts(parts, body));
            }
            let body = tonic::body::Body::new(ObservedBody {
                inner: body,
                method,
                recorded: false,
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body that counts the call when its status goes by in the trailers.
struct ObservedBody {
    inner: tonic::body::Body,
    method: &'static str,
    recorded: bool,
}

impl ObservedBody {
    fn record(&mut self, code: tonic::Code) {
        if !self.recorded {
            self.recorded = true;
            grpc_request(self.method, code);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .map_or(tonic::Code::Unknown, |c| {
                            tonic::Code::from_bytes(c.as_bytes())
                        });
                    self.record(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.record(status.code()),
            Poll::Ready(None) => self.record(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before its status was sent: the client cancelled or went away.
        self.record(tonic::Code::Cancelled);
    }
}

/// A request id as given by a client (`X-Request-Id`), if it is a sane token: 1 to 128
/// visible ASCII characters. Anything else is replaced by a fresh id, so a client cannot put
/// spaces, control characters or megabytes into logs and stored events.
pub fn sane_request_id(given: Option<&[u8]>) -> Option<String> {
    let given = given?;
    let sane =
        !given.is_empty() && given.len() <= 128 && given.iter().all(|b| (0x21..=0x7e).contains(b));
    // Visible ASCII is UTF-8.
    sane.then(|| String::from_utf8_lossy(given).into_owned())
}

/// The client's request id if sane, else a fresh UUID v7 (time-ordered).
pub fn request_id(given: Option<&[u8]>) -> String {
    sane_request_id(given).unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(request_id(Some(b"abc-123_X.y")), "abc-123_X.y");
        let long = vec![b'a'; 128];
        assert_eq!(request_id(Some(&long)).len(), 128);
        for bad in [
            &b""[..],
            b"has space",
            b"tab\t",
            b"caf\xc3\xa9",
            b"nl\n",
            &[b'a'; 129],
        ] {
            let id = request_id(Some(bad));
            assert_ne!(id.as_bytes(), bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&request_id(None)).is_ok());
    }

    #[test]
    fn grpc_methods_are_labelled_from_the_descriptors_and_unknown_paths_are_not() {
        assert_eq!(
            method_label("/switchboard.v1.Switchboard/ListConversations"),
            "ListConversations"
        );
        assert_eq!(
            method_label("/switchboard.v1.Switchboard/StreamEvents"),
            "StreamEvents"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/switchboard.v1.Switchboard/Nope"),
            UNKNOWN_METHOD
        );
        assert_eq!(method_label("/x/y/z"), UNKNOWN_METHOD);
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            grpc_code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }

    #[test]
    fn every_error_code_has_a_bounded_outcome() {
        use ErrorCode::*;
        let codes = [
            InvalidArgument,
            NotFound,
            AlreadyExists,
            Unauthenticated,
            PermissionDenied,
            FailedPrecondition,
            ResourceExhausted,
            PayloadTooLarge,
            Unimplemented,
            Unavailable,
            DeadlineExceeded,
            Internal,
        ];
        for code in codes {
            let outcome = WebhookOutcome::of(code).as_str();
            assert!(outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(
            WebhookOutcome::of(Unauthenticated).as_str(),
            "unauthenticated"
        );
        assert_eq!(WebhookOutcome::of(PayloadTooLarge).as_str(), "too_large");
        assert_eq!(WebhookOutcome::of(ResourceExhausted).as_str(), "overloaded");
    }
}
