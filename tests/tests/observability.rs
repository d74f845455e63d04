//! Observability over the real server: `/metrics` after real traffic, request ids from HTTP
//! intake to the stored event and through gRPC metadata, health and readiness.
//!
//! Every server in this process shares one metrics recorder, so each test holds [`SERIAL`]
//! and checks differences between two scrapes, never absolute values.

use std::time::Duration;

use switchboard_e2e::{SECRET, Sandbox, fixtures, seed};
use switchboard_proto::v1;
use tokio::sync::Mutex;

const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

/// Metrics are process-wide: tests that read them run one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn take(sandbox: &Sandbox) -> Scrape {
        let response = sandbox
            .http
            .get(format!("{}/metrics", sandbox.http_base()))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape(response.text().await.expect("body"))
    }

    /// The sum of the samples of `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest),
                    None => (series, ""),
                };
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
            })
            .sum()
    }
}

#[tokio::test]
async fn webhooks_are_counted_by_connection_and_outcome_and_timed_to_their_ack() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let before = Scrape::take(&sandbox).await;

    let mut acknowledged = 0.0;
    for fixture in fixtures("livechat") {
        let (status, body) = sandbox.post_fixture("livechat", &fixture).await;
        assert_eq!(status, 200, "{}: {body}", fixture.name);
        acknowledged += 1.0;
    }
    // Redelivery of the seed: the second one is a duplicate.
    for _ in 0..2 {
        let (status, body) = sandbox
            .post("livechat", "", &[TOKEN], seed::CHAT_STARTED)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    acknowledged += 2.0;
    let (status, _) = sandbox
        .post(
            "livechat",
            "",
            &[("x-switchboard-token", "wrong")],
            seed::CHAT_ENDED,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = sandbox.post("livechat", "", &[TOKEN], "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = sandbox
        .post("no-such-connection", "", &[TOKEN], seed::CHAT_STARTED)
        .await;
    assert_eq!(status, 404);

    let after = Scrape::take(&sandbox).await;
    let delta = |outcome: &str, connection: &str| {
        let labels = [("connection", connection), ("outcome", outcome)];
        after.value("switchboard_webhooks_total", &labels)
            - before.value("switchboard_webhooks_total", &labels)
    };
    let ok = delta("accepted", "livechat") + delta("duplicate", "livechat");
    assert_eq!(ok, acknowledged, "{}", after.0);
    assert!(delta("duplicate", "livechat") >= 1.0, "{}", after.0);
    assert_eq!(delta("unauthenticated", "livechat"), 1.0, "{}", after.0);
    assert_eq!(delta("invalid", "livechat"), 1.0, "{}", after.0);
    // The connection id in the URL is unknown, so it is not used as a label.
    assert_eq!(delta("not_found", "unknown"), 1.0, "{}", after.0);
    assert!(!after.0.contains("no-such-connection"));

    // Every acknowledged webhook was timed from arrival to durable ack.
    let count = |s: &Scrape| {
        s.value(
            "switchboard_ingest_seconds_count",
            &[("connection", "livechat")],
        )
    };
    assert_eq!(count(&after) - count(&before), acknowledged, "{}", after.0);
    let sum = after.value(
        "switchboard_ingest_seconds_sum",
        &[("connection", "livechat")],
    );
    assert!(sum > 0.0 && sum < 60.0 * acknowledged, "{sum}");
    assert!(
        after.0.contains("switchboard_ingest_seconds_bucket{") && after.0.contains("le=\"0.005\""),
        "latency buckets in seconds: {}",
        after.0
    );
}

/// Waits until the finder's gauges read `position` and a lag of 0; panics after 30 s with the
/// last scrape.
async fn finder_reaches(sandbox: &Sandbox, position: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = Scrape::take(sandbox).await;
        let seen = (
            scrape.value("switchboard_find_position", &[]),
            scrape.value("switchboard_find_lag_events", &[]),
        );
        if seen == (position as f64, 0.0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finder's gauges read {seen:?}, not ({position}, 0): {}",
            scrape.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_finders_position_and_lag_follow_the_log() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let scrape = Scrape::take(&sandbox).await;
    for name in ["switchboard_find_position", "switchboard_find_lag_events"] {
        assert!(
            scrape.0.contains(&format!("# TYPE {name} gauge")),
            "{name}: {}",
            scrape.0
        );
    }
    finder_reaches(&sandbox, 0).await;
    for fixture in fixtures("livechat") {
        let (status, body) = sandbox.post_fixture("livechat", &fixture).await;
        assert_eq!(status, 200, "{}: {body}", fixture.name);
    }
    let head = sandbox.head();
    assert!(head > 0);
    finder_reaches(&sandbox, head).await;
}

#[tokio::test]
async fn the_subscriber_gauge_goes_up_and_down_and_sent_events_and_lag_are_counted() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let before = Scrape::take(&sandbox).await;
    let subscribers = |s: &Scrape| s.value("switchboard_stream_subscribers", &[]);

    let mut client = sandbox.client().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = client
            .stream_events(v1::StreamEventsRequest::default())
            .await
            .expect("stream opens")
            .into_inner();
        streams.push(stream);
    }
    let (status, body) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_STARTED)
        .await;
    assert_eq!(status, 200, "{body}");
    for stream in &mut streams {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")
            .expect("stream open");
        assert_eq!(event.sequence, 1);
    }
    let during = Scrape::take(&sandbox).await;
    assert_eq!(
        subscribers(&during) - subscribers(&before),
        3.0,
        "{}",
        during.0
    );
    let sent = |s: &Scrape| s.value("switchboard_stream_events_sent_total", &[]);
    assert!(sent(&during) - sent(&before) >= 3.0, "{}", during.0);
    let lag_samples = |s: &Scrape| s.value("switchboard_stream_lag_events_count", &[]);
    assert!(
        lag_samples(&during) - lag_samples(&before) >= 3.0,
        "{}",
        during.0
    );

    drop(streams);
    // Each reader notices its subscriber is gone and leaves the gauge.
    let mut now = during;
    for _ in 0..200 {
        now = Scrape::take(&sandbox).await;
        if subscribers(&now) == subscribers(&before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(subscribers(&now), subscribers(&before), "{}", now.0);
}

#[tokio::test]
async fn a_request_id_travels_from_http_intake_to_the_stored_event() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let post = |id: Option<&str>, body: &'static str, token: &'static str| {
        let mut request = sandbox
            .http
            .post(format!("{}/webhooks/livechat", sandbox.http_base()))
            .header("content-type", "application/json")
            .header("x-switchboard-token", token)
            .body(body);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .expect("ASCII")
            .to_owned()
    };

    // A given sane id is kept, echoed and stored.
    let response = post(Some("vendor-req-0001"), seed::CHAT_STARTED, SECRET)
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(id_of(&response), "vendor-req-0001");
    // No id: one is made (a UUID), echoed and stored.
    let response = post(None, seed::CHAT_ENDED, SECRET).await.expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let generated = id_of(&response);
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(generated.as_bytes()[14], b'7', "a UUID v7: {generated}");

    let head = sandbox.head();
    let events = sandbox.read_events(0, head as usize).await;
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.request_id.as_deref())
        .collect();
    assert!(ids.contains(&"vendor-req-0001"), "{ids:?}");
    assert!(ids.contains(&generated.as_str()), "{ids:?}");
    for event in &events {
        let expected = if event.vendor_event == "chat_started" {
            "vendor-req-0001"
        } else {
            generated.as_str()
        };
        assert_eq!(event.request_id.as_deref(), Some(expected), "{event:?}");
    }

    // A refusal carries the id in the header and in the error body; an unsafe id is replaced.
    let response = post(Some("bad id with spaces"), seed::CHAT_STARTED, "wrong")
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    let replaced = id_of(&response);
    assert_ne!(replaced, "bad id with spaces");
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON body");
    assert_eq!(body["request_id"], replaced.as_str());
    assert_eq!(body["error"], "unauthenticated");
    let too_long = "x".repeat(129);
    let response = post(Some(&too_long), seed::CHAT_STARTED, SECRET)
        .await
        .expect("sent");
    assert_ne!(id_of(&response), too_long);
}

#[tokio::test]
async fn grpc_requests_are_counted_by_method_and_code_and_carry_request_ids() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let before = Scrape::take(&sandbox).await;
    let mut client = sandbox.client().await;

    let mut request = tonic::Request::new(v1::ListConnectionsRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-req-7".parse().expect("metadata"));
    let response = client.list_connections(request).await.expect("listed");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ASCII")),
        Some("grpc-req-7")
    );

    for id in ["not-a-conversation-id", "livechat/NOPE"] {
        let status = client
            .get_conversation(v1::GetConversationRequest {
                id: id.into(),
                view: 0,
            })
            .await
            .expect_err("refused");
        // Made by the server when the client gave none, and returned with the error.
        let made = status
            .metadata()
            .get("x-request-id")
            .expect("a request id on errors too")
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(made.len(), 36, "{made}");
    }

    let after = Scrape::take(&sandbox).await;
    let delta = |method: &str, code: &str| {
        let labels = [("method", method), ("code", code)];
        after.value("switchboard_grpc_requests_total", &labels)
            - before.value("switchboard_grpc_requests_total", &labels)
    };
    assert_eq!(delta("ListConnections", "OK"), 1.0, "{}", after.0);
    assert_eq!(
        delta("GetConversation", "INVALID_ARGUMENT"),
        1.0,
        "{}",
        after.0
    );
    assert_eq!(delta("GetConversation", "NOT_FOUND"), 1.0, "{}", after.0);
    let timed = |s: &Scrape, method: &str| {
        s.value(
            "switchboard_grpc_request_seconds_count",
            &[("method", method)],
        )
    };
    assert_eq!(
        timed(&after, "GetConversation") - timed(&before, "GetConversation"),
        2.0,
        "{}",
        after.0
    );
}

#[tokio::test]
async fn health_and_readiness_answer_with_request_ids() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = sandbox
            .http
            .get(format!("{}{path}", sandbox.http_base()))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
        assert_eq!(response.text().await.expect("body"), body);
    }
}

#[tokio::test]
async fn grpc_calls_refused_by_authentication_are_counted_and_carry_request_ids() {
    use switchboard_server::auth::{ApiKey, Scope, generate_key, key_hash_hex, parse_hash};
    let _serial = SERIAL.lock().await;
    let key = generate_key();
    let configured = vec![ApiKey {
        name: "ops".to_owned(),
        sha256: parse_hash(&key_hash_hex(&key)).expect("hash"),
        scopes: [Scope::Admin].into_iter().collect(),
    }];
    let sandbox = Sandbox::start_with(move |config| {
        config.security.api_keys = configured.clone();
    })
    .await;
    let before = Scrape::take(&sandbox).await;
    let mut client = sandbox.client().await;
    let mut request = tonic::Request::new(v1::ListConnectionsRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "no-key-1".parse().expect("metadata"));
    let status = client
        .list_connections(request)
        .await
        .expect_err("no API key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ASCII")),
        Some("no-key-1")
    );
    let after = Scrape::take(&sandbox).await;
    let labels = [("method", "ListConnections"), ("code", "UNAUTHENTICATED")];
    assert_eq!(
        after.value("switchboard_grpc_requests_total", &labels)
            - before.value("switchboard_grpc_requests_total", &labels),
        1.0,
        "{}",
        after.0
    );
}

#[tokio::test]
async fn a_vendor_shaped_refusal_keeps_its_shape_and_carries_the_request_id_in_the_header() {
    // Its server's finder sets the finder's gauges too.
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start().await;
    let fixture = fixtures("tencent").into_iter().next().expect("a fixture");
    let query: Vec<String> = fixture
        .query
        .iter()
        .map(|(k, v)| {
            let v = if k == "SdkAppid" { "999" } else { v.as_str() };
            format!(
                "{}={}",
                switchboard_e2e::encode(k),
                switchboard_e2e::encode(v)
            )
        })
        .collect();
    let response = sandbox
        .http
        .post(format!(
            "{}/webhooks/tencent?{}",
            sandbox.http_base(),
            query.join("&")
        ))
        .header("content-type", "application/json")
        .header("x-request-id", "tencent-req-9")
        .body(fixture.body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["x-request-id"], "tencent-req-9");
    let reply: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    assert_eq!(reply["ActionStatus"], "FAIL");
    assert!(reply.get("request_id").is_none(), "{reply}");
}

#[tokio::test]
async fn metrics_can_move_off_the_webhook_port() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::start_with(|config| {
        config.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let metrics = sandbox.metrics_addr().expect("a metrics address");
    let on_webhook_port = sandbox
        .http
        .get(format!("{}/metrics", sandbox.http_base()))
        .send()
        .await
        .expect("answer");
    assert_eq!(on_webhook_port.status(), 404);
    let scraped = sandbox
        .http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .expect("answer");
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.expect("text").contains("switchboard_"));
    // Only metrics there: no webhooks on the metrics address.
    let webhook = sandbox
        .http
        .post(format!("http://{metrics}/webhooks/livechat"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(webhook.status(), 404);
    // Health stays on the webhook port.
    let ready = sandbox
        .http
        .get(format!("{}/readyz", sandbox.http_base()))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 200);
}
