//! The client's metrics, read through a recorder installed for this test binary only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use switchboard_core::{ConnectionConfig, ConnectionId, RateLimit};
use switchboard_testkit::fake::{FakeServer, Fault};
use switchboard_vendor_client::{ClientSettings, Method, VendorClient};

/// Counts per metric name and label set, e.g. `calls{connection=a,status=200}`.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Counts {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(name).map_or(0, |v| v.load(Ordering::SeqCst))
    }
}

/// A histogram that only counts its records.
struct RecordCount(Arc<AtomicU64>);

impl metrics::HistogramFn for RecordCount {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct TestRecorder(Counts);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.slot(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(RecordCount(self.0.slot(key))))
    }
}

fn client(id: &str, base_url: &str, limit: RateLimit) -> VendorClient {
    let config = ConnectionConfig::new(ConnectionId::new(id).expect("valid id"), "livechat")
        .with_setting("base_url", base_url);
    let mut settings =
        ClientSettings::from_connection(&config, "https://unused.example.com", limit)
            .expect("valid settings");
    settings.backoff_initial = Duration::from_millis(10);
    settings.backoff_max = Duration::from_millis(20);
    settings.request_timeout = Duration::from_millis(300);
    settings.max_attempts = 3;
    VendorClient::new(&config, settings).expect("client builds")
}

#[tokio::test]
async fn every_attempt_retry_and_limiter_wait_is_counted() {
    let counts = Counts::default();
    metrics::set_global_recorder(TestRecorder(counts.clone())).expect("first recorder");

    let server = FakeServer::start(Router::new().route("/ping", get(|| async { "pong" })))
        .await
        .expect("fake server starts");
    let slow = RateLimit {
        calls: 1,
        per_seconds: 1,
    };
    let fast = RateLimit {
        calls: 100,
        per_seconds: 1,
    };

    // A 500 then a 200; then a second call that waits on the limiter.
    server.faults.push(Fault::internal_error());
    let limited = client("m-limited", &server.base_url(), slow);
    limited
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("retried");
    limited
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect("waits, then succeeds");
    assert_eq!(
        counts.get(
            "switchboard_vendor_api_calls_total{connection=m-limited,status=500,vendor=livechat}"
        ),
        1
    );
    assert_eq!(
        counts.get(
            "switchboard_vendor_api_calls_total{connection=m-limited,status=200,vendor=livechat}"
        ),
        2
    );
    assert_eq!(
        counts.get("switchboard_vendor_api_retries_total{connection=m-limited,vendor=livechat}"),
        1
    );
    // The retry after the 500 and the second call both waited for the 1-per-second window.
    assert_eq!(
        counts.get(
            "switchboard_vendor_rate_limited_waits_total{connection=m-limited,vendor=livechat}"
        ),
        2
    );

    // Timeouts.
    server.faults.always(Fault::Delay(Duration::from_secs(2)));
    let timing_out = client("m-timeout", &server.base_url(), fast);
    timing_out
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("times out");
    assert_eq!(
        counts.get("switchboard_vendor_api_calls_total{connection=m-timeout,status=timeout,vendor=livechat}"),
        3
    );
    assert_eq!(
        counts.get("switchboard_vendor_api_retries_total{connection=m-timeout,vendor=livechat}"),
        2
    );

    // Nothing listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let unreachable = client("m-down", &format!("http://127.0.0.1:{port}"), fast);
    unreachable
        .request(Method::GET, "/ping")
        .send()
        .await
        .expect_err("unreachable");
    assert_eq!(
        counts.get("switchboard_vendor_api_calls_total{connection=m-down,status=unreachable,vendor=livechat}"),
        3
    );

    assert_eq!(
        counts.get("switchboard_vendor_api_call_seconds{vendor=livechat}"),
        9,
        "one duration per attempt"
    );
    assert_eq!(
        counts.get(
            "switchboard_vendor_rate_limited_waits_total{connection=m-timeout,vendor=livechat}"
        ),
        0
    );
}
