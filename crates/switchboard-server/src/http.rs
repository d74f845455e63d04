//! The HTTP front door: `POST /webhooks/{connection_id}`, `GET /healthz`, `GET /readyz`.
//!
//! A webhook is answered with success only after its events are durable. On any error
//! (unknown connection 404, body too large 413, failed verification 401, malformed body 400,
//! store unavailable 503) nothing is stored.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchboard_core::{Error, ErrorCode, IngestSummary, Timestamp, WebhookReply, WebhookRequest};
use switchboard_store::{AppendRequest, Store};
use tracing::{Instrument, info, info_span, warn};

use crate::connections::Connections;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The store.
    pub store: Store,
    /// The connections.
    pub connections: Connections,
    /// Largest body accepted.
    pub body_limit: usize,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/webhooks/{connection_id}", post(webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(state))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    if state.store.is_writer_running() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store writer is not running\n",
        )
            .into_response()
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
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = info_span!("webhook", connection = %connection_id, request_id = %request_id);
    handle_webhook(state, connection_id, query, headers, body, request_id)
        .instrument(span)
        .await
}

async fn handle_webhook(
    state: Arc<HttpState>,
    connection_id: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    request_id: String,
) -> Response {
    let Some(connection) = state.connections.get(&connection_id) else {
        warn!(outcome = "unknown_connection", "webhook refused");
        return reply_response(WebhookReply::default_for(Err(&Error::not_found(format!(
            "no connection {connection_id:?} is configured; check the URL (/webhooks/CONNECTION_ID)"
        )))));
    };
    let Some(source) = connection.webhook.as_deref() else {
        return reply_response(WebhookReply::default_for(Err(&Error::failed_precondition(
            format!(
                "connection {connection_id} ({}) does not take webhooks",
                connection.plugin.vendor
            ),
        ))));
    };
    let refuse = |error: Error| {
        warn!(outcome = error.code.as_str(), reason = %error.message, "webhook refused");
        reply_response(source.reply(Err(&error)))
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
    let body: Bytes = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => return refuse(too_large),
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
    let received_at = Timestamp::now();
    let request = WebhookRequest {
        connection: &connection.config,
        headers: &headers,
        query: &query,
        body: &body,
        received_at,
    };
    if connection.config.verify
        && let Err(error) = source.verify(&request)
    {
        return refuse(error);
    }
    let events = match source.parse(&request) {
        Ok(events) => events,
        Err(error) => return refuse(error),
    };
    let count = events.len();
    let append = AppendRequest {
        connection: connection.config.id.clone(),
        vendor: connection.plugin.vendor.to_owned(),
        request_id: Some(request_id),
        received_at,
        raw: Some(source.raw_for_storage(&request)),
        events,
        sync: None,
    };
    match state.store.append(append).await {
        Ok(receipt) => {
            let summary = IngestSummary {
                appended: receipt.appended.len(),
                duplicates: receipt.duplicates,
            };
            info!(
                outcome = "accepted",
                events = count,
                appended = summary.appended,
                duplicates = summary.duplicates,
                "webhook ingested"
            );
            reply_response(source.reply(Ok(&summary)))
        }
        Err(error) => refuse(Error::new(
            error.code(),
            format!("the event could not be stored: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
