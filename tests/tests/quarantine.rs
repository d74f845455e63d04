//! The quarantine end to end: a verified webhook its plugin cannot map is held durably,
//! answered with success, listed, and appended once a (simulated) plugin upgrade can map it;
//! retrying twice appends once.
//!
//! The plugin under test is registered here, in this test binary only: `flaky` maps a body
//! `{"chat": ID, "text": ...}` only once [`UPGRADED`] is set, as a plugin upgrade would.

use std::sync::atomic::{AtomicBool, Ordering};

use switchboard_core::{
    ConnectionConfig, ConnectionId, ConversationPatch, Error, EventKind, EventPayload,
    IncomingEvent, Plugin, Timestamp, WebhookRequest, WebhookSource,
};
use switchboard_e2e::Sandbox;
use switchboard_proto::v1;

static UPGRADED: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Flaky;

impl WebhookSource for Flaky {
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        match request.header("x-flaky-token") {
            Some("let-me-in") => Ok(()),
            _ => Err(Error::unauthenticated("wrong or no x-flaky-token")),
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        let body: serde_json::Value = serde_json::from_slice(request.body)
            .map_err(|e| Error::invalid(format!("not JSON: {e}")))?;
        if !UPGRADED.load(Ordering::SeqCst) {
            return Err(Error::invalid(
                "flaky 1.0 does not know this shape (field `chat`)",
            ));
        }
        let chat = body["chat"]
            .as_str()
            .ok_or_else(|| Error::invalid("no chat"))?;
        Ok(vec![IncomingEvent {
            dedup_key: format!("started:{chat}"),
            kind: EventKind::ChatStarted,
            vendor_event: "started".to_owned(),
            occurred_at: Timestamp::from_secs(1_700_000_000).expect("time"),
            payload: EventPayload::Conversation(ConversationPatch::new(chat)),
        }])
    }
}

fn flaky_webhook(_: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    Ok(Box::new(Flaky))
}

switchboard_core::inventory::submit! {
    Plugin {
        vendor: "flaky",
        description: "a test plugin that learns a shape on upgrade",
        verification: "x-flaky-token",
        webhook: Some(flaky_webhook),
        connector: None,
    }
}

async fn list(sandbox: &Sandbox) -> v1::ListQuarantineResponse {
    sandbox
        .client()
        .await
        .list_quarantine(v1::ListQuarantineRequest::default())
        .await
        .expect("list")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmappable_authentic_webhook_is_held_and_appended_after_an_upgrade() {
    let mut sandbox = Sandbox::start_with(|config| {
        config.connections.push(ConnectionConfig::new(
            ConnectionId::new("flaky").expect("id"),
            "flaky",
        ));
    })
    .await;
    let token = [("x-flaky-token", "let-me-in")];
    // Malformed JSON and failed verification keep their 400 and 401, and hold nothing.
    let (status, _) = sandbox.post("flaky", "", &token, "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = sandbox
        .post("flaky", "", &[], r#"{"chat":"C1","text":"hi"}"#)
        .await;
    assert_eq!(status, 401);
    // Authentic and valid JSON, but unmappable: success, held. Twice the same delivery, and
    // one more chat.
    for body in [
        r#"{"chat":"C1","text":"hi"}"#,
        r#"{"chat":"C1","text":"hi"}"#,
        r#"{"chat":"C2","text":"hello"}"#,
    ] {
        let (status, reply) = sandbox.post("flaky", "", &token, body).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(sandbox.head(), 0, "nothing appended while unmappable");
    let held = list(&sandbox).await;
    assert_eq!(held.total_entries, 3);
    assert_eq!(held.webhooks.len(), 3);
    let first = &held.webhooks[0];
    assert_eq!(first.connection_id, "flaky");
    assert!(
        first.reason.contains("does not know this shape"),
        "{first:?}"
    );
    assert_eq!(first.body, r#"{"chat":"C1","text":"hi"}"#);
    assert!(first.request_id.is_some());
    let metrics = sandbox
        .http
        .get(format!("{}/metrics", sandbox.http_base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // (Metrics are per process, and other tests of this binary quarantine too.)
    let held_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"switchboard_quarantined_total{connection="flaky"} "#))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the quarantined counter");
    assert!(held_count >= 3, "{metrics}");
    assert!(
        metrics.contains("switchboard_quarantine_entries "),
        "{metrics}"
    );

    // Durable: still there after a restart.
    sandbox.restart().await;
    assert_eq!(list(&sandbox).await.total_entries, 3);

    // A retry before the upgrade changes nothing but the attempt count.
    let mut client = sandbox.client().await;
    let outcome = client
        .retry_quarantine(v1::RetryQuarantineRequest {
            ids: vec![],
            all: true,
        })
        .await
        .expect("retry")
        .into_inner();
    assert!(outcome.released.is_empty());
    assert_eq!(outcome.still_failing.len(), 3);
    assert_eq!(list(&sandbox).await.webhooks[0].attempts, 1);
    assert_eq!(sandbox.head(), 0);

    // The upgrade: all three map now; the redelivery of C1 appends nothing.
    UPGRADED.store(true, Ordering::SeqCst);
    let outcome = client
        .retry_quarantine(v1::RetryQuarantineRequest {
            ids: vec![],
            all: true,
        })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(outcome.released.len(), 3);
    assert_eq!((outcome.appended, outcome.duplicates), (2, 1));
    assert!(outcome.still_failing.is_empty());
    assert_eq!(sandbox.head(), 2);
    let emptied = list(&sandbox).await;
    assert_eq!((emptied.total_entries, emptied.webhooks.len()), (0, 0));
    // Retrying a released entry again appends nothing: it is gone.
    let again = client
        .retry_quarantine(v1::RetryQuarantineRequest {
            ids: vec![first.id],
            all: false,
        })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.not_found, vec![first.id]);
    assert_eq!(sandbox.head(), 2);
    // The events went through the normal path: conversations, with the held body as raw.
    let events = sandbox.read_events(0, 2).await;
    assert_eq!(
        events[0].raw.as_deref(),
        Some(r#"{"chat":"C1","text":"hi"}"#)
    );
    let conversations = sandbox
        .list_all(v1::ListConversationsRequest {
            connection_ids: vec!["flaky".to_owned()],
            ..Default::default()
        })
        .await;
    assert_eq!(conversations.len(), 2);
    UPGRADED.store(false, Ordering::SeqCst);
}

#[tokio::test]
async fn retry_needs_ids_or_all() {
    let sandbox = Sandbox::start().await;
    let status = sandbox
        .client()
        .await
        .retry_quarantine(v1::RetryQuarantineRequest {
            ids: vec![],
            all: false,
        })
        .await
        .expect_err("neither");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_full_quarantine_answers_503_so_the_vendor_redelivers_later() {
    let sandbox = Sandbox::start_with(|config| {
        config.connections.push(ConnectionConfig::new(
            ConnectionId::new("flaky").expect("id"),
            "flaky",
        ));
        config.limits.quarantine_max_entries = 1;
    })
    .await;
    let token = [("x-flaky-token", "let-me-in")];
    let (status, _) = sandbox
        .post("flaky", "", &token, r#"{"shape":"new","n":1}"#)
        .await;
    assert_eq!(status, 200);
    let (status, reply) = sandbox
        .post("flaky", "", &token, r#"{"shape":"new","n":2}"#)
        .await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("quarantine is full"), "{reply}");
    assert_eq!(list(&sandbox).await.total_entries, 1);
}
