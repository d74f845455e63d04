//! JSON log lines of a webhook carry its request id and connection.
//!
//! This is the only test in its binary on purpose. tracing caches each call site's interest
//! process-wide when the site is first reached; a test on another thread reaching the request
//! span's site while this test installs its subscriber could cache "never" for it, and the span
//! would be missing from the captured lines (CI saw exactly that once in the library's tests).

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use switchboard_server::Connections;
use switchboard_server::app::{App, AppOptions};
use switchboard_server::http::{HttpState, router};
use switchboard_store::Store;
use tower::ServiceExt as _;

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn json_logs_of_a_webhook_carry_its_request_id_and_connection() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the thread's default covers the handler.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let app = App::new(
        Arc::new(store.clone()),
        Connections::default(),
        AppOptions::default(),
    );
    let router = router(HttpState {
        body_limit: 1024,
        ..HttpState::new(app)
    });
    let request = Request::post("/webhooks/nowhere")
        .header("x-request-id", "log-req-3")
        .body(Body::from("{}"))
        .expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    store.close().await.expect("close");

    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8");
    let refused: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .filter(|line: &serde_json::Value| line["fields"]["message"] == "webhook refused")
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    let line = &refused[0];
    assert_eq!(line["fields"]["outcome"], "not_found", "{line}");
    let spans = line["spans"].as_array().expect("span list");
    assert!(
        spans.iter().any(|s| s["request_id"] == "log-req-3"),
        "{line}"
    );
    assert!(spans.iter().any(|s| s["connection"] == "nowhere"), "{line}");
}
