//! The HTTP front door: `POST /webhooks/{connection_id}`, `GET /healthz`, `GET /readyz`,
//! `GET /metrics`.
//!
//! A thin adapter over [`crate::app::ingest`]: this door finds the connection, reads the body
//! under its limits (size, read deadline, slots per peer, store permits), decodes the query,
//! hands the delivery to the ingest service, and answers in the vendor's expected form.
//! A webhook is answered with success only after its events are durable. On any error
//! (unknown connection 404, body too large 413, failed verification 401, malformed body 400,
//! store unavailable 503) nothing is stored.
//!
//! Every request gets a request id: the client's `X-Request-Id` if it is a sane token (1 to 128
//! visible ASCII characters), else a fresh UUID v7. It is echoed in the `X-Request-Id` response
//! header, carried by the request's tracing span, stored in every event of a webhook
//! (`Event.request_id`) and put into Switchboard's own error bodies (`"request_id"`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchboard_core::{Error, ErrorCode, Timestamp, WebhookReply, WebhookSource};
use tracing::{Instrument, info, info_span, warn};

use crate::app::App;
pub use crate::app::ingest::MAX_BODY_DEPTH;
use crate::app::ingest::{Outcome, Webhook};
use crate::conn::{Peer, PeerBodyReads};
use crate::limits::WebhookLimit;
use crate::metrics::{self as telemetry, WebhookOutcome};

/// The request id header, in requests and responses.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The application services (ingest, and the store for readiness).
    pub app: App,
    /// Largest body accepted.
    pub body_limit: usize,
    /// Longest time a sender may take to deliver a webhook's body; a slower one gets 408 and
    /// frees its slot (the vendor redelivers, and redelivery appends nothing).
    pub body_timeout: std::time::Duration,
    /// Permits for webhooks' store work, taken once a body has arrived.
    pub permits: WebhookLimit,
    /// Body reads in flight per peer address.
    pub body_reads: PeerBodyReads,
    /// Whether `/metrics` is served here (else it has an address of its own).
    pub serve_metrics: bool,
}

impl HttpState {
    /// State with the default limits (tests and benches that build a router directly).
    pub fn new(app: App) -> Self {
        let limits = crate::config::Limits::default();
        HttpState {
            app,
            body_limit: crate::config::DEFAULT_BODY_LIMIT,
            body_timeout: limits.webhook_body_timeout,
            permits: WebhookLimit::new(limits.webhook_max_concurrent, limits.webhook_retry_after),
            body_reads: PeerBodyReads::new(limits.webhook_max_body_reads_per_peer),
            serve_metrics: true,
        }
    }
}

/// The request id of an HTTP request (a request extension set by the router).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The router. Installs the process's metrics recorder if it is not installed yet.
pub fn router(state: HttpState) -> Router {
    telemetry::install();
    let serve_metrics = state.serve_metrics;
    let mut router = Router::new()
        .route("/webhooks/{connection_id}", post(webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if serve_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .with_state(Arc::new(state))
        .layer(middleware::from_fn(request_id))
}

/// A router with `/metrics` alone, for `[http] metrics_addr`.
pub fn metrics_router() -> Router {
    telemetry::install();
    Router::new().route("/metrics", get(metrics))
}

/// Gives each request its id, runs it in a span carrying that id, and echoes the id.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = telemetry::request_id(
        request
            .headers()
            .get(&REQUEST_ID_HEADER)
            .map(HeaderValue::as_bytes),
    );
    let span = info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    );
    // A sane id is visible ASCII, so it is a valid header value.
    let header = HeaderValue::from_str(&id).ok();
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).instrument(span).await;
    if let Some(header) = header {
        response.headers_mut().insert(REQUEST_ID_HEADER, header);
    }
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let storage = state.app.storage();
    if storage.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if let Some(failure) = storage.failure()
        && storage.backend() == "postgres"
    {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the PostgreSQL database cannot be reached ({}), so no webhook can be \
                 stored; the server reconnects by itself once it is back\n",
                switchboard_core::cap_message(&failure)
            ),
        )
            .into_response()
    } else if let Some(failure) = storage.failure() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: a store write failed ({}), so no webhook can be stored; free disk \
                 space or fix the disk, then restart the server (it recovers every \
                 acknowledged event)\n",
                switchboard_core::cap_message(&failure)
            ),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store writer has stopped, so no webhook can be stored; \
             check the log for the store error and restart the server\n",
        )
            .into_response()
    }
}

async fn metrics() -> Response {
    match telemetry::render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not available: another metrics recorder was installed in this process\n",
        )
            .into_response(),
    }
}

fn reply_response(reply: WebhookReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    response
}

fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    serde_urlencoded_pairs(raw)
}

/// Decodes `a=1&b=%20x` into pairs, keeping order and repeats.
fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, Error> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Error::invalid("the query string has a bad %-escape"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::invalid("the query string is not UTF-8"))
}

async fn webhook(
    State(state): State<Arc<HttpState>>,
    Path(connection_id): Path<String>,
    RawQuery(query): RawQuery,
    Extension(RequestId(request_id)): Extension<RequestId>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let span = info_span!("webhook", connection = %connection_id);
    let arrival = Arrival {
        request_id: &request_id,
        peer: peer.map(|Extension(Peer(addr))| addr),
        at: arrived,
    };
    let (outcome, label, response) =
        handle_webhook(&state, &connection_id, query, headers, body, arrival)
            .instrument(span)
            .await;
    telemetry::webhook(label, outcome);
    response
}

/// Switchboard's own error body with the request id added; a vendor-specific reply (a
/// plugin's own `reply`) is left as the vendor expects it (the id is still in the header).
fn error_response(source: Option<&dyn WebhookSource>, error: &Error, request_id: &str) -> Response {
    // Messages may quote what the sender sent: never echo more than a bounded prefix.
    let capped = Error::new(error.code, switchboard_core::cap_message(&error.message));
    let error = &capped;
    let default = WebhookReply::default_for(Err(error));
    let reply = source.map_or_else(|| default.clone(), |s| s.reply(Err(error)));
    if reply != default {
        return reply_response(reply);
    }
    let body = serde_json::json!({
        "ok": false,
        "error": error.code.as_str(),
        "message": error.message,
        "request_id": request_id,
    });
    reply_response(WebhookReply {
        body: body.to_string().into_bytes(),
        ..default
    })
}

/// Where and when a webhook arrived.
#[derive(Debug, Clone, Copy)]
struct Arrival<'r> {
    /// Its request id.
    request_id: &'r str,
    /// Its peer, when served by [`crate::conn::serve_http`].
    peer: Option<std::net::SocketAddr>,
    /// When the handler got it.
    at: Instant,
}

/// Handles one webhook; returns its outcome and connection label with the response.
async fn handle_webhook<'a>(
    state: &'a HttpState,
    connection_id: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    arrival: Arrival<'_>,
) -> (WebhookOutcome, &'a str, Response) {
    let Arrival {
        request_id,
        peer,
        at: arrived,
    } = arrival;
    let Some(connection) = state.app.connections().get(connection_id) else {
        let error = Error::not_found(format!(
            "no connection {connection_id:?} is configured; check the URL (/webhooks/CONNECTION_ID)"
        ));
        warn!(outcome = "not_found", "webhook refused");
        return (
            WebhookOutcome::NotFound,
            telemetry::UNKNOWN_CONNECTION,
            error_response(None, &error, request_id),
        );
    };
    let label = connection.config.id.as_str();
    let Some(source) = connection.webhook.as_deref() else {
        let error = Error::failed_precondition(format!(
            "connection {connection_id} ({}) does not take webhooks",
            connection.plugin.vendor
        ));
        warn!(outcome = "refused", reason = %error.message, "webhook refused");
        return (
            WebhookOutcome::of(error.code),
            label,
            error_response(None, &error, request_id),
        );
    };
    let refuse = |error: Error| {
        let outcome = WebhookOutcome::of(error.code);
        warn!(outcome = outcome.as_str(), reason = %error.message, "webhook refused");
        (
            outcome,
            label,
            error_response(Some(source), &error, request_id),
        )
    };
    let too_large = Error::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the body is larger than the limit of {} bytes",
            state.body_limit
        ),
    );
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.body_limit as u64) {
        return refuse(too_large);
    }
    // While the body arrives the request holds only its peer's slot, not a store permit.
    let body_read = match peer {
        Some(peer) => match state.body_reads.try_start(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                warn!(%peer, outcome = "shed", "webhook refused: too many bodies in flight from one address");
                metrics::counter!("switchboard_load_shed_total", "front" => "http_peer")
                    .increment(1);
                return (
                    WebhookOutcome::of(ErrorCode::ResourceExhausted),
                    label,
                    crate::limits::overloaded(
                        format!(
                            "this address is sending its limit of {} webhook bodies at once",
                            state.body_reads.max()
                        ),
                        state.permits.retry_after(),
                    ),
                );
            }
        },
        None => None,
    };
    let body: Bytes = match tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, state.body_limit),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return refuse(too_large),
        Err(_) => {
            let (outcome, label, mut response) = refuse(Error::new(
                ErrorCode::DeadlineExceeded,
                format!(
                    "the body did not arrive within {} ms; send it faster or raise limits.webhook_body_timeout_ms",
                    state.body_timeout.as_millis()
                ),
            ));
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            return (outcome, label, response);
        }
    };
    drop(body_read);
    let Some(_permit) = state.permits.try_acquire() else {
        return (
            WebhookOutcome::of(ErrorCode::ResourceExhausted),
            label,
            state.permits.refusal(),
        );
    };
    let query = match parse_query(query.as_deref()) {
        Ok(query) => query,
        Err(error) => return refuse(error),
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let webhook = Webhook {
        headers: &headers,
        query: &query,
        body: &body,
        request_id: Some(request_id),
        received_at: Timestamp::now(),
    };
    match state.app.ingest.webhook(connection, webhook).await {
        Ok(ingested) => {
            let outcome = match ingested.outcome {
                Outcome::Accepted => WebhookOutcome::Accepted,
                Outcome::Duplicate => WebhookOutcome::Duplicate,
                Outcome::Quarantined(_) => WebhookOutcome::Quarantined,
            };
            if !matches!(ingested.outcome, Outcome::Quarantined(_)) {
                telemetry::ingest_latency(label, arrived.elapsed());
                info!(
                    outcome = outcome.as_str(),
                    events = ingested.events,
                    appended = ingested.summary.appended,
                    duplicates = ingested.summary.duplicates,
                    "webhook ingested"
                );
            }
            (
                outcome,
                label,
                reply_response(source.reply(Ok(&ingested.summary))),
            )
        }
        Err(error) => refuse(error),
    }
}

#[cfg(test)]
mod tests {
    use switchboard_store::Store;

    use super::*;
    use crate::Connections;
    use crate::app::AppOptions;

    fn app(store: &Store) -> App {
        App::new(
            Arc::new(store.clone()),
            Connections::default(),
            AppOptions::default(),
        )
    }

    #[test]
    fn query_pairs_are_decoded_in_order() {
        let pairs = serde_urlencoded_pairs(
            "SdkAppid=1400&CallbackCommand=Desk.SessionEventNotify&x=a%20b+c&flag",
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("SdkAppid".to_owned(), "1400".to_owned()),
                (
                    "CallbackCommand".to_owned(),
                    "Desk.SessionEventNotify".to_owned()
                ),
                ("x".to_owned(), "a b c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert!(serde_urlencoded_pairs("a=%zz").is_err());
        assert!(serde_urlencoded_pairs("a=%ff").is_err());
    }

    async fn call(router: &Router, request: Request) -> (StatusCode, HeaderMap, String) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let response = router.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn get(path: &str) -> Request {
        Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn readyz_answers_503_with_a_reason_once_the_writer_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let router = router(HttpState {
            body_limit: 1024,
            ..HttpState::new(app(&store))
        });
        let (status, _, body) = call(&router, get("/readyz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
        let (status, _, body) = call(&router, get("/healthz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

        store.close().await.expect("close");
        let (status, _, body) = call(&router, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("the store writer has stopped"), "{body}");
        // Alive, though not ready.
        let (status, _, _) = call(&router, get("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn request_ids_are_echoed_and_put_in_error_bodies_and_metrics_are_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let router = router(HttpState {
            body_limit: 1024,
            ..HttpState::new(app(&store))
        });
        let post = |id: Option<&str>| {
            let mut request = Request::post("/webhooks/no-such-connection");
            if let Some(id) = id {
                request = request.header("x-request-id", id);
            }
            request.body(Body::from("{}")).expect("request")
        };
        let (status, headers, body) = call(&router, post(Some("given-id-42"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[&REQUEST_ID_HEADER], "given-id-42");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert_eq!(body["request_id"], "given-id-42");
        assert_eq!(body["error"], "not_found");

        // An unsafe id is replaced by a fresh one.
        let (_, headers, body) = call(&router, post(Some("two words"))).await;
        let id = headers[&REQUEST_ID_HEADER]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert!(body.contains(&id));
        let (_, headers, _) = call(&router, post(None)).await;
        assert!(headers.contains_key(&REQUEST_ID_HEADER));

        let (status, headers, text) = call(&router, get("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ASCII")
                .starts_with("text/plain")
        );
        assert!(
            text.lines()
                .any(|line| line.starts_with("switchboard_webhooks_total{")
                    && line.contains(r#"connection="unknown""#)
                    && line.contains(r#"outcome="not_found""#)),
            "{text}"
        );
        store.close().await.expect("close");
    }
}
