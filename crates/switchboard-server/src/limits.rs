//! Load shedding and deadlines for both front doors.
//!
//! - gRPC unary calls of the Switchboard service share one pool of `grpc_max_concurrent_requests`
//!   permits. A call that finds none free is answered RESOURCE_EXHAUSTED at once (never queued),
//!   and a call that runs longer than `grpc_request_timeout` is answered DEADLINE_EXCEEDED.
//!   Streaming calls (StreamEvents, SyncConnection) are neither counted nor timed out: they live
//!   as long as the subscriber wants.
//! - Webhooks share a pool of `webhook_max_concurrent` permits. A webhook that finds none free
//!   is answered `429 Too Many Requests` at once with `Retry-After` and a JSON reason; vendors
//!   redeliver, and redelivery is idempotent.
//!
//! A webhook's permit is taken once its body has arrived (within its size and time limits)
//! and held until the response is ready, so until the events are durable. While bodies
//! arrive, each peer address may have at most `webhook_max_body_reads_per_peer` of them in
//! flight ([`crate::conn::PeerBodyReads`]), so slow senders cannot hold every slot.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

use crate::auth::SERVICE_PATH;

/// Whether a gRPC path is a unary call of our service (limited and timed out).
pub fn is_limited_unary(path: &str) -> bool {
    path.strip_prefix(SERVICE_PATH)
        .is_some_and(|m| !matches!(m, "StreamEvents" | "SyncConnection"))
}

/// Concurrency limit with load shedding, and a deadline, for unary gRPC calls.
#[derive(Debug, Clone)]
pub struct GrpcLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
}

impl GrpcLimitLayer {
    /// At most `max` unary calls at once, each at most `timeout` long.
    pub fn new(max: usize, timeout: Duration) -> Self {
        GrpcLimitLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
            timeout,
        }
    }
}

impl<S> Layer<S> for GrpcLimitLayer {
    type Service = GrpcLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`GrpcLimitLayer`].
#[derive(Debug, Clone)]
pub struct GrpcLimit<S> {
    inner: S,
    layer: GrpcLimitLayer,
}

impl<S, B, R> Service<http::Request<B>> for GrpcLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !is_limited_unary(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            metrics::counter!("switchboard_load_shed_total", "front" => "grpc").increment(1);
            tracing::warn!(
                method = %request.uri().path(),
                limit = self.layer.max,
                outcome = "shed",
                "gRPC call refused: too many calls at once"
            );
            let status = Status::resource_exhausted(format!(
                "the server is handling its limit of {} calls at once; retry with backoff",
                self.layer.max
            ));
            return Box::pin(async move { Ok(status.into_http::<R>()) });
        };
        let timeout = self.layer.timeout;
        let call = inner.call(request);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call took longer than the server's limit of {} ms; narrow the request \
                     (e.g. a smaller page_size) or retry",
                    timeout.as_millis()
                ))
                .into_http::<R>()),
            }
        })
    }
}

/// State of the webhook limiter middleware.
#[derive(Debug, Clone)]
pub struct WebhookLimit {
    permits: Arc<Semaphore>,
    max: usize,
    retry_after: Duration,
}

impl WebhookLimit {
    /// At most `max` webhooks in flight; others get 429 with `Retry-After: retry_after`.
    pub fn new(max: usize, retry_after: Duration) -> Self {
        WebhookLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            retry_after,
        }
    }

    /// A permit for one webhook's store work, or `None` (counted and logged as shed) when
    /// none is free: answer [`WebhookLimit::refusal`] then. Taken after the body has arrived,
    /// so slow senders hold no permit while they trickle.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            metrics::counter!("switchboard_load_shed_total", "front" => "http").increment(1);
            tracing::warn!(
                limit = self.max,
                outcome = "shed",
                "webhook refused: too many webhooks at once"
            );
        }
        permit
    }

    /// The 429 answer for a webhook that found no permit.
    pub fn refusal(&self) -> Response {
        overloaded(
            format!(
                "the server is handling its limit of {} webhooks at once",
                self.max
            ),
            self.retry_after,
        )
    }

    /// The `Retry-After` of a 429.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// A 429 answer with `Retry-After` and a JSON reason.
pub fn overloaded(reason: String, retry_after: Duration) -> Response {
    let seconds = retry_after.as_secs().max(1);
    let body = serde_json::json!({
        "error": "overloaded",
        "reason": format!("{reason}; retry after {seconds} s"),
    });
    let mut response =
        (StatusCode::TOO_MANY_REQUESTS, Body::from(body.to_string())).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unary_calls_of_our_service_are_limited() {
        assert!(is_limited_unary(
            "/switchboard.v1.Switchboard/ListConversations"
        ));
        assert!(is_limited_unary(
            "/switchboard.v1.Switchboard/ManageTickets"
        ));
        assert!(!is_limited_unary(
            "/switchboard.v1.Switchboard/StreamEvents"
        ));
        assert!(!is_limited_unary(
            "/switchboard.v1.Switchboard/SyncConnection"
        ));
        assert!(!is_limited_unary("/grpc.health.v1.Health/Check"));
    }
}
