//! Fake vendor servers on loopback for connector tests.
//!
//! Each vendor module builds an axum [`Router`] that implements the vendor's documented
//! endpoints (paging, filters, auth failures, the vendor's own limits). [`FakeServer::start`]
//! serves it on `127.0.0.1:0` behind a layer that records every request ([`RequestLog`]) and
//! plays scripted faults ([`Faults`]): 429 with `Retry-After`, 5xx, slow responses. Tests
//! script faults, run the connector against [`FakeServer::base_url`], then assert on the log.

pub mod livechat;
pub mod livetex;
pub mod smartsupp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The largest request body the recorder keeps.
const MAX_RECORDED_BODY: usize = 16 * 1024 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The status the fake answered with.
    pub status: StatusCode,
    /// When it arrived (tokio's clock, so paused-clock tests see virtual time).
    pub at: tokio::time::Instant,
}

impl Recorded {
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Every request a fake server received, in arrival order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Recorded>>>);

impl RequestLog {
    /// A copy of every request so far.
    pub fn all(&self) -> Vec<Recorded> {
        lock(&self.0).clone()
    }

    /// Requests to one path.
    pub fn to_path(&self, path: &str) -> Vec<Recorded> {
        lock(&self.0)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests arrived.
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// Whether none arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every request.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    fn push(&self, recorded: Recorded) {
        lock(&self.0).push(recorded);
    }
}

/// A scripted fault, played for one request before the vendor logic sees it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and body; `retry_after` adds a `Retry-After` header (seconds).
    Status {
        /// The status.
        status: u16,
        /// `Retry-After` in seconds, if any.
        retry_after: Option<u64>,
        /// The body (JSON text, as vendors answer).
        body: String,
    },
    /// Wait this long, then let the vendor logic answer.
    Delay(Duration),
}

impl Fault {
    /// 429 with `Retry-After: secs`.
    pub fn too_many_requests(secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: Some(secs),
            body: r#"{"error":{"type":"too_many_requests","message":"Requests limit reached"}}"#
                .to_owned(),
        }
    }

    /// A 500 with a vendor-shaped error body.
    pub fn internal_error() -> Fault {
        Fault::Status {
            status: 500,
            retry_after: None,
            body: r#"{"error":{"type":"internal","message":"Internal server error"}}"#.to_owned(),
        }
    }

    /// A 503 with a vendor-shaped error body.
    pub fn unavailable() -> Fault {
        Fault::Status {
            status: 503,
            retry_after: None,
            body: r#"{"error":{"type":"service_unavailable","message":"Service unavailable"}}"#
                .to_owned(),
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    queue: VecDeque<Fault>,
    always: Option<Fault>,
    every_nth: Option<(u64, Fault)>,
    seen: u64,
}

/// Faults to play, shared with the running server. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

impl Faults {
    /// Plays `fault` for the next request (after those already queued).
    pub fn push(&self, fault: Fault) {
        lock(&self.0).queue.push_back(fault);
    }

    /// Plays `fault` for the next `times` requests.
    pub fn push_n(&self, fault: Fault, times: usize) {
        let mut state = lock(&self.0);
        for _ in 0..times {
            state.queue.push_back(fault.clone());
        }
    }

    /// Plays `fault` for every request until [`Faults::clear`] (a vendor that stays down).
    pub fn always(&self, fault: Fault) {
        lock(&self.0).always = Some(fault);
    }

    /// Plays `fault` for every `n`th request (intermittent failures).
    pub fn every_nth(&self, n: u64, fault: Fault) {
        lock(&self.0).every_nth = Some((n.max(1), fault));
    }

    /// Removes every scripted fault.
    pub fn clear(&self) {
        let mut state = lock(&self.0);
        state.queue.clear();
        state.always = None;
        state.every_nth = None;
    }

    fn next(&self) -> Option<Fault> {
        let mut state = lock(&self.0);
        state.seen += 1;
        if let Some(fault) = state.queue.pop_front() {
            return Some(fault);
        }
        if let Some(fault) = &state.always {
            return Some(fault.clone());
        }
        match &state.every_nth {
            Some((n, fault)) if state.seen.is_multiple_of(*n) => Some(fault.clone()),
            _ => None,
        }
    }
}

#[derive(Clone)]
struct Shared {
    log: RequestLog,
    faults: Faults,
}

async fn record_and_fault(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let at = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_RECORDED_BODY).await.unwrap_or_default();
    let mut recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
        status: StatusCode::OK,
        at,
    };
    let response = match shared.faults.next() {
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            if let Some(secs) = retry_after
                && let Ok(value) = secs.to_string().parse()
            {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        None => next.run(Request::from_parts(parts, Body::from(body))).await,
    };
    recorded.status = response.status();
    shared.log.push(recorded);
    response
}

/// A fake vendor server running on loopback. Stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    /// Every request received.
    pub log: RequestLog,
    /// Scripted faults.
    pub faults: Faults,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serves `router` on `127.0.0.1:0` behind the recording and fault layer. Call inside a
    /// tokio runtime.
    pub async fn start(router: Router) -> std::io::Result<FakeServer> {
        crate::install_crypto_provider();
        let log = RequestLog::default();
        let faults = Faults::default();
        let shared = Shared {
            log: log.clone(),
            faults: faults.clone(),
        };
        let app = router.layer(middleware::from_fn_with_state(shared, record_and_fault));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake vendor server stopped: {error}");
            }
        });
        Ok(FakeServer {
            addr,
            log,
            faults,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn body_of(response: reqwest::Response) -> (u16, Option<String>, String) {
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, retry, response.text().await.unwrap_or_default())
    }

    #[tokio::test]
    async fn records_requests_and_plays_faults_in_order() {
        let server = FakeServer::start(Router::new().route("/ping", get(|| async { "pong" })))
            .await
            .expect("fake server starts");
        server.faults.push(Fault::too_many_requests(7));
        server.faults.push(Fault::internal_error());
        let client = reqwest::Client::new();
        let url = format!("{}/ping?x=1", server.base_url());
        let first = body_of(client.get(&url).send().await.expect("reaches fake")).await;
        let second = body_of(client.get(&url).send().await.expect("reaches fake")).await;
        let third = body_of(client.get(&url).send().await.expect("reaches fake")).await;
        assert_eq!((first.0, first.1.as_deref()), (429, Some("7")));
        assert_eq!(second.0, 500);
        assert_eq!((third.0, third.2.as_str()), (200, "pong"));
        let log = server.log.to_path("/ping");
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].query, "x=1");
        assert_eq!(
            log.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
            [429, 500, 200]
        );
    }

    #[tokio::test]
    async fn every_nth_and_always_faults() {
        let server = FakeServer::start(Router::new().route("/ping", get(|| async { "pong" })))
            .await
            .expect("fake server starts");
        server.faults.every_nth(3, Fault::unavailable());
        let client = reqwest::Client::new();
        let url = format!("{}/ping", server.base_url());
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(
                client
                    .get(&url)
                    .send()
                    .await
                    .expect("reaches")
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
        server.faults.always(Fault::internal_error());
        let status = client.get(&url).send().await.expect("reaches").status();
        assert_eq!(status.as_u16(), 500);
        server.faults.clear();
        let status = client.get(&url).send().await.expect("reaches").status();
        assert_eq!(status.as_u16(), 200);
    }
}
