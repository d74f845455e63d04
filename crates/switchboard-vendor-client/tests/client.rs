//! The client against a real loopback HTTP server (the testkit's fake vendor framework).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use switchboard_core::{ConnectionConfig, ConnectionId, ErrorCode, RateLimit, Secret};
use switchboard_testkit::fake::{FakeServer, Fault};
use switchboard_vendor_client::{ClientSettings, MAX_RETRY_AFTER, Method, VendorClient};
use tokio::time::Instant;

const SECRET: &str = "s3cr3t-api-key-4242";
const LIMIT: RateLimit = RateLimit {
    calls: 1000,
    per_seconds: 1,
};

/// Answers `code` with a vendor-shaped error whose message echoes the caller's credentials,
/// as careless vendors do.
async fn status(Path(code): Path<u16>, headers: HeaderMap) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "error": {"type": "x", "message": format!("vendor says {} to {auth} with key {SECRET}", code.as_u16())}
    });
    (code, axum::Json(body))
}

fn router() -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/api/v2/echo",
            any(|| async { axum::Json(serde_json::json!({"ok": true, "n": 7})) }),
        )
        .route("/status/{code}", any(status))
        .route("/not-json", get(|| async { "<html>hello</html>" }))
}

async fn server() -> FakeServer {
    FakeServer::start(router())
        .await
        .expect("fake server starts")
}

fn config(base_url: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("lc-test").expect("valid id"), "livechat")
        .with_setting("base_url", base_url)
        .with_secret("api_key", SECRET)
}

/// Fast settings for tests; `tune` changes what a test is about.
fn client_with(base_url: &str, tune: impl FnOnce(&mut ClientSettings)) -> VendorClient {
    let config = config(base_url);
    let mut settings =
        ClientSettings::from_connection(&config, "https://unused.example.com", LIMIT)
            .expect("valid settings");
    settings.backoff_initial = Duration::from_millis(10);
    settings.backoff_max = Duration::from_millis(50);
    settings.request_timeout = Duration::from_secs(2);
    settings.deadline = Duration::from_secs(10);
    tune(&mut settings);
    VendorClient::new(&config, settings).expect("client builds")
}

fn secret() -> Secret {
    Secret::new(SECRET)
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = server().await;
    server.faults.push(Fault::too_many_requests(1));
    let client = client_with(&server.base_url(), |_| {});
    let response = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("second attempt succeeds");
    assert_eq!(&response.body[..], b"pong");
    let log = server.log.all();
    assert_eq!(
        log.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(),
        [429, 200]
    );
    let gap = log[1].at - log[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(1800), "retried after {gap:?}");
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = server().await;
    server.faults.push_n(Fault::internal_error(), 2);
    server.faults.push(Fault::unavailable());
    let client = client_with(&server.base_url(), |_| {});
    let response = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("fourth attempt succeeds");
    assert_eq!(response.status, 200);
    assert_eq!(
        server
            .log
            .all()
            .iter()
            .map(|r| r.status.as_u16())
            .collect::<Vec<_>>(),
        [500, 500, 503, 200]
    );
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_map_to_their_code() {
    let server = server().await;
    let client = client_with(&server.base_url(), |_| {});
    let cases = [
        (400, ErrorCode::InvalidArgument),
        (401, ErrorCode::FailedPrecondition),
        (403, ErrorCode::FailedPrecondition),
        (404, ErrorCode::NotFound),
        (409, ErrorCode::AlreadyExists),
        (422, ErrorCode::InvalidArgument),
        (418, ErrorCode::FailedPrecondition),
    ];
    for (code, expected) in cases {
        server.log.clear();
        let error = client
            .request(Method::POST, &format!("/status/{code}"))
            .bearer(&secret())
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .expect_err("non-2xx is an error");
        assert_eq!(error.code, expected, "HTTP {code}: {}", error.message);
        assert_eq!(server.log.len(), 1, "HTTP {code} is not retried");
        let message = &error.message;
        assert!(
            message.starts_with("connection lc-test (livechat): "),
            "{message}"
        );
        assert!(message.contains(&format!("HTTP {code}")), "{message}");
        assert!(
            message.contains(&format!("vendor says {code} to Bearer")),
            "{message}"
        );
        assert!(!message.contains(SECRET), "the secret leaked: {message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    let error = client
        .request(Method::GET, "/status/401")
        .send()
        .await
        .expect_err("401");
    assert!(
        error
            .message
            .contains("the vendor refused the connection's credentials"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn send_raw_returns_the_final_answer_of_any_status() {
    let server = server().await;
    let client = client_with(&server.base_url(), |s| s.max_attempts = 2);
    let response = client
        .request(Method::GET, "/status/404")
        .send_raw()
        .await
        .expect("a 404 is an answer");
    assert_eq!(response.status, 404);
    server.faults.always(Fault::internal_error());
    let response = client
        .request(Method::GET, "/ping")
        .send_raw()
        .await
        .expect("a 500 is an answer once retries run out");
    assert_eq!(response.status, 500);
    assert_eq!(server.log.to_path("/ping").len(), 2);
}

#[tokio::test]
async fn a_vendor_that_stays_down_stops_at_the_deadline() {
    let server = server().await;
    server.faults.always(Fault::unavailable());
    let client = client_with(&server.base_url(), |s| {
        s.max_attempts = 1000;
        s.deadline = Duration::from_millis(800);
        s.backoff_initial = Duration::from_millis(50);
        s.backoff_max = Duration::from_millis(200);
    });
    let started = Instant::now();
    let error = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("the vendor stays down");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1000), "took {elapsed:?}");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("HTTP 503: Service unavailable"),
        "{}",
        error.message
    );
    assert!(
        server.log.len() >= 3,
        "retried: {} attempts",
        server.log.len()
    );
}

#[tokio::test]
async fn persistent_429_gives_resource_exhausted() {
    let server = server().await;
    server.faults.always(Fault::too_many_requests(1));
    let client = client_with(&server.base_url(), |s| {
        s.deadline = Duration::from_millis(2500);
    });
    let started = Instant::now();
    let error = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("always 429");
    let elapsed = started.elapsed();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(
        error.message.contains("Requests limit reached"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("retry after 1 s"),
        "{}",
        error.message
    );
    // Attempts at 0 s, 1 s and 2 s; a fourth at 3 s would pass the deadline, so it stops at once.
    assert_eq!(server.log.len(), 3);
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
}

#[tokio::test]
async fn a_slow_answer_hits_the_attempt_timeout_and_is_retried() {
    let server = server().await;
    server.faults.push(Fault::Delay(Duration::from_secs(3)));
    let client = client_with(&server.base_url(), |s| {
        s.request_timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let response = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("the second attempt is fast");
    let elapsed = started.elapsed();
    assert_eq!(&response.body[..], b"pong");
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn a_vendor_that_never_answers_in_time_is_unavailable() {
    let server = server().await;
    server.faults.always(Fault::Delay(Duration::from_secs(5)));
    let client = client_with(&server.base_url(), |s| {
        s.request_timeout = Duration::from_millis(200);
        s.max_attempts = 3;
    });
    let started = Instant::now();
    let error = client
        .request(Method::GET, "/ping")
        .query(&[("token", SECRET)])
        .send()
        .await
        .expect_err("every attempt times out");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("did not answer GET /ping"),
        "{}",
        error.message
    );
    assert!(error.message.contains("3 attempts"), "{}", error.message);
    assert!(!error.message.contains(SECRET), "{}", error.message);
}

#[tokio::test]
async fn an_unreachable_vendor_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = client_with(&format!("http://127.0.0.1:{port}"), |s| s.max_attempts = 3);
    let error = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("nothing listens");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error
            .message
            .contains("cannot reach livechat at http://127.0.0.1:"),
        "{}",
        error.message
    );
    assert!(error.message.contains("3 attempts"), "{}", error.message);
}

#[tokio::test]
async fn requests_reach_the_vendor_as_built() {
    let server = server().await;
    // A base_url with a path prefix and a trailing slash.
    let client = client_with(&format!("{}/api/", server.base_url()), |_| {});
    client
        .request(Method::POST, "/v2/echo")
        .query(&[("page", "2".to_owned()), ("q", "a b&c".to_owned())])
        .header("X-API-Version", "2")
        .basic_auth("login@example.com", &secret())
        .json(&serde_json::json!({"name": "Ann"}))
        .send()
        .await
        .expect("basic + json");
    client
        .request(Method::PUT, "v2/echo")
        .bearer(&secret())
        .form(&[("grant_type", "password"), ("scope", "a b")])
        .send()
        .await
        .expect("bearer + form");
    client
        .request(Method::GET, "/v2/echo")
        .secret_header("X-Api-Key", &secret())
        .send()
        .await
        .expect("secret header");
    let log = server.log.to_path("/api/v2/echo");
    assert_eq!(log.len(), 3);

    assert_eq!(log[0].method, Method::POST);
    assert_eq!(log[0].query, "page=2&q=a+b%26c");
    assert_eq!(log[0].header("x-api-version"), Some("2"));
    // base64("login@example.com:s3cr3t-api-key-4242")
    assert_eq!(
        log[0].header("authorization"),
        Some("Basic bG9naW5AZXhhbXBsZS5jb206czNjcjN0LWFwaS1rZXktNDI0Mg==")
    );
    assert_eq!(log[0].header("content-type"), Some("application/json"));
    assert_eq!(log[0].json(), serde_json::json!({"name": "Ann"}));

    assert_eq!(log[1].method, Method::PUT);
    assert_eq!(log[1].query, "");
    assert_eq!(
        log[1].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(
        log[1].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(&log[1].body[..], b"grant_type=password&scope=a+b");

    assert_eq!(log[2].method, Method::GET);
    assert_eq!(log[2].header("x-api-key"), Some(SECRET));
    assert_eq!(log[2].header("authorization"), None);
    assert!(log[2].body.is_empty());
}

#[tokio::test]
async fn send_json_parses_2xx_and_bad_json_is_unavailable() {
    #[derive(Debug, serde::Deserialize)]
    struct Echo {
        ok: bool,
        n: u32,
    }
    let server = server().await;
    let client = client_with(&server.base_url(), |_| {});
    let echo: Echo = client
        .request(Method::GET, "/api/v2/echo")
        .send_json()
        .await
        .expect("parses");
    assert!(echo.ok);
    assert_eq!(echo.n, 7);
    let error = client
        .request(Method::GET, "/not-json")
        .send_json::<Echo>()
        .await
        .expect_err("not JSON");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("not the expected JSON"),
        "{}",
        error.message
    );
    assert!(
        error.message.starts_with("connection lc-test (livechat): "),
        "{}",
        error.message
    );
    assert_eq!(
        server.log.to_path("/not-json").len(),
        1,
        "bad JSON is not retried"
    );
}

#[tokio::test]
async fn clones_share_the_limiter() {
    let server = server().await;
    let client = client_with(&server.base_url(), |s| {
        s.rate_limit = RateLimit {
            calls: 2,
            per_seconds: 1,
        };
    });
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..6 {
        // Three "parts" of a connector, each with its own clone.
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let path = ["/ping", "/api/v2/echo", "/ping"][i % 3];
            client.request(Method::GET, path).send().await.map(|_| ())
        }));
    }
    for call in calls {
        call.await.expect("task runs").expect("call succeeds");
    }
    let elapsed = started.elapsed();
    // Grants at 0, 0, 1, 1, 2, 2 s.
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(3500), "took {elapsed:?}");
    let mut arrivals: Vec<Instant> = server.log.all().iter().map(|r| r.at).collect();
    arrivals.sort();
    for pair in arrivals.windows(3) {
        let span = pair[2] - pair[0];
        // Arrival times carry a little loopback jitter on top of the exact grants.
        assert!(
            span >= Duration::from_millis(950),
            "3 calls within {span:?}"
        );
    }
}

#[tokio::test]
async fn no_call_when_the_rate_limit_leaves_none_before_the_deadline() {
    let server = server().await;
    let client = client_with(&server.base_url(), |s| {
        s.rate_limit = RateLimit {
            calls: 1,
            per_seconds: 60,
        };
        s.deadline = Duration::from_millis(500);
    });
    client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("the first call fits");
    let started = Instant::now();
    let error = client
        .clone()
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("the second does not");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "it refuses at once"
    );
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(
        error.message.contains("rate limit of 1 calls per 60 s"),
        "{}",
        error.message
    );
    assert_eq!(server.log.len(), 1);
}

#[tokio::test]
async fn debug_output_never_shows_credentials_or_query_values() {
    let client = client_with("http://127.0.0.1:9", |_| {});
    let request = client
        .request(Method::POST, "/v2/agents")
        .query(&[("api_key", SECRET)])
        .header("X-Trace", "visible-header-value")
        .secret_header("X-Api-Key", &secret())
        .basic_auth("login@example.com", &secret())
        .form(&[("password", SECRET)]);
    let printed = format!("{request:?} {client:?}");
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(!printed.contains("visible-header-value"), "{printed}");
    assert!(printed.contains("/v2/agents"), "{printed}");
    assert!(printed.contains("api_key"), "{printed}");
    assert!(printed.contains("lc-test"), "{printed}");
}

#[tokio::test]
async fn invalid_headers_fail_at_send_without_calling_the_vendor() {
    let server = server().await;
    let client = client_with(&server.base_url(), |_| {});
    let error = client
        .request(Method::GET, "/ping")
        .header("bad header", "x")
        .send()
        .await
        .expect_err("invalid header name");
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("`bad header`"), "{}", error.message);
    assert!(server.log.is_empty());
}

#[test]
fn settings_with_a_bad_base_url_are_refused() {
    let config = config("ftp://files.example.com");
    let error = ClientSettings::from_connection(&config, "https://api.example.com", LIMIT)
        .expect_err("ftp is refused");
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("http:// or https://"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_stops_at_once_and_holds_back_every_clone() {
    let server = server().await;
    server.faults.push(Fault::too_many_requests(100));
    let client = client_with(&server.base_url(), |s| {
        s.deadline = Duration::from_secs(5);
    });
    let started = Instant::now();
    let error = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("waiting 100 s would pass the deadline");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "it does not wait"
    );
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(
        error.message.contains("retry after 100 s"),
        "{}",
        error.message
    );
    // The vendor asked for 100 s of quiet: another part of the connector does not call either.
    let error = client
        .clone()
        .request(Method::GET, "/api/v2/echo")
        .send()
        .await
        .expect_err("held back");
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(error.message.contains("Retry-After"), "{}", error.message);
    assert_eq!(server.log.len(), 1);
}

/// A server whose `/slow` answers after 3 s the first time and at once afterwards, counting
/// every request that reaches it (a request dropped mid-wait still counts: it arrived).
async fn slow_once_server() -> (FakeServer, Arc<AtomicUsize>) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = arrived.clone();
    let router = router().route(
        "/slow",
        any(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                axum::Json(serde_json::json!({"created": true}))
            }
        }),
    );
    let server = FakeServer::start(router).await.expect("fake server starts");
    (server, arrived)
}

#[tokio::test]
async fn a_post_that_times_out_is_not_sent_again() {
    let (server, arrived) = slow_once_server().await;
    let client = client_with(&server.base_url(), |s| {
        s.request_timeout = Duration::from_millis(300);
    });
    let error = client
        .request(Method::POST, "/slow")
        .json(&serde_json::json!({"subject": "a ticket"}))
        .send()
        .await
        .expect_err("the only attempt times out");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("did not answer POST /slow"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("1 attempt, not retried as POST is not idempotent"),
        "{}",
        error.message
    );
    // Long enough for a retry (backoff at most 50 ms) to have arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(arrived.load(Ordering::SeqCst), 1, "the POST was sent twice");
}

#[tokio::test]
async fn a_post_marked_idempotent_is_retried_after_a_timeout() {
    let (server, arrived) = slow_once_server().await;
    let client = client_with(&server.base_url(), |s| {
        s.request_timeout = Duration::from_millis(300);
    });
    let response = client
        .request(Method::POST, "/slow")
        .idempotent()
        .json(&serde_json::json!({"filters": {}}))
        .send()
        .await
        .expect("the second attempt is fast");
    assert_eq!(response.status, 200);
    assert_eq!(arrived.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_answered_429_is_retried() {
    let server = server().await;
    server.faults.push(Fault::Status {
        status: 429,
        retry_after: None,
        body: r#"{"message":"slow down"}"#.to_owned(),
    });
    let client = client_with(&server.base_url(), |_| {});
    client
        .request(Method::POST, "/api/v2/echo")
        .json(&serde_json::json!({"subject": "a ticket"}))
        .send()
        .await
        .expect("the vendor refused the first attempt, so the second is safe");
    assert_eq!(
        server
            .log
            .all()
            .iter()
            .map(|r| (r.method.clone(), r.status.as_u16()))
            .collect::<Vec<_>>(),
        [(Method::POST, 429), (Method::POST, 200)]
    );
}

#[tokio::test]
async fn a_post_or_patch_answered_500_is_not_retried_unless_marked_idempotent() {
    let server = server().await;
    let client = client_with(&server.base_url(), |_| {});
    for method in [Method::POST, Method::PATCH] {
        server.log.clear();
        server.faults.push(Fault::internal_error());
        let error = client
            .request(method.clone(), "/api/v2/echo")
            .json(&serde_json::json!({"subject": "a ticket"}))
            .send()
            .await
            .expect_err("the 500 is final");
        assert_eq!(error.code, ErrorCode::Unavailable, "{method}");
        assert!(error.message.contains("HTTP 500"), "{}", error.message);
        assert_eq!(server.log.len(), 1, "{method} was sent again after a 500");
    }
    server.log.clear();
    server.faults.push(Fault::internal_error());
    client
        .request(Method::POST, "/api/v2/echo")
        .idempotent()
        .json(&serde_json::json!({"query": []}))
        .send()
        .await
        .expect("a search is retried");
    assert_eq!(server.log.len(), 2);
    // PUT is idempotent without being marked.
    server.log.clear();
    server.faults.push(Fault::internal_error());
    client
        .request(Method::PUT, "/api/v2/echo")
        .json(&serde_json::json!({"status": "solved"}))
        .send()
        .await
        .expect("a PUT is retried");
    assert_eq!(server.log.len(), 2);
}

#[tokio::test]
async fn a_post_is_retried_when_the_connection_cannot_be_opened() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = client_with(&format!("http://127.0.0.1:{port}"), |s| s.max_attempts = 3);
    let error = client
        .request(Method::POST, "/tickets")
        .json(&serde_json::json!({"subject": "a ticket"}))
        .send()
        .await
        .expect_err("nothing listens");
    assert_eq!(error.code, ErrorCode::Unavailable);
    // Nothing was sent, so retrying cannot create anything twice.
    assert!(error.message.contains("3 attempts"), "{}", error.message);
    assert!(!error.message.contains("not retried"), "{}", error.message);
}

#[tokio::test]
async fn a_day_long_retry_after_pauses_the_connection_for_15_minutes_at_most() {
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(15 * 60));
    let server = server().await;
    server.faults.push(Fault::too_many_requests(24 * 60 * 60));
    let client = client_with(&server.base_url(), |s| {
        s.deadline = Duration::from_secs(5);
    });
    let error = client
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("waiting would pass the deadline");
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(
        error.message.contains("retry after 900 s"),
        "{}",
        error.message
    );
    // The shared limiter is paused for 15 minutes, not a day.
    let error = client
        .clone()
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("held back");
    let next_in: f64 = error
        .message
        .split("next in ")
        .nth(1)
        .and_then(|rest| rest.split(" s)").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {}", error.message));
    assert!(next_in > 890.0 && next_in <= 900.0, "{}", error.message);
    assert_eq!(server.log.len(), 1);
}

#[tokio::test]
async fn error_for_on_a_raw_answer_redacts_like_send() {
    const REFRESH: &str = "refresh/token+42";
    let router = Router::new();
    let server = FakeServer::start(router).await.expect("fake server starts");
    // A token endpoint that echoes the form it was sent, as is and form-encoded.
    server.faults.push(Fault::Status {
        status: 500,
        retry_after: None,
        body: format!(
            r#"{{"error":"server_error","error_description":"failed for password={SECRET}&refresh_token=refresh%2Ftoken%2B42 ({REFRESH})"}}"#
        ),
    });
    let client = client_with(&server.base_url(), |_| {});
    let refresh = Secret::new(REFRESH);
    let response = client
        .request(Method::POST, "/oauth2/token")
        .form(&[("password", SECRET), ("refresh_token", REFRESH)])
        .send_raw()
        .await
        .expect("a 500 is an answer");
    assert_eq!(response.status, 500);
    let error = client.error_for(&response, &[&refresh]);
    assert_eq!(error.code, ErrorCode::Unavailable);
    let message = &error.message;
    assert!(
        message.starts_with("connection lc-test (livechat): livechat is failing (HTTP 500: "),
        "{message}"
    );
    assert!(!message.contains(SECRET), "the password leaked: {message}");
    assert!(
        !message.contains(REFRESH),
        "the refresh token leaked: {message}"
    );
    assert!(
        !message.contains("token%2B42"),
        "the refresh token leaked: {message}"
    );
    assert_eq!(message.matches("[redacted]").count(), 3, "{message}");
    // The free function knows no secrets: that is why connectors use the method.
    let unredacted = switchboard_vendor_client::error_for("livechat", 500, &response.body);
    assert!(unredacted.message.contains(SECRET));
}
