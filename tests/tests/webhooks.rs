//! Webhooks over real HTTP into the real server: what is stored, what is refused.

use switchboard_e2e::{SECRET, Sandbox, seed};
use switchboard_proto::v1;

const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

#[tokio::test]
async fn livechat_seed_webhooks_become_one_closed_conversation() {
    let sandbox = Sandbox::start().await;
    let (status, body) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_STARTED)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_ENDED)
        .await;
    assert_eq!(status, 200, "{body}");

    let mut client = sandbox.client().await;
    let conversation = client
        .get_conversation(v1::GetConversationRequest {
            id: "livechat/PO13".into(),
            view: v1::ConversationView::Full as i32,
        })
        .await
        .expect("conversation exists")
        .into_inner();
    assert_eq!(conversation.status(), v1::ConversationStatus::Closed);
    assert_eq!(conversation.vendor, "livechat");
    assert_eq!(conversation.started_at.map(|t| t.seconds), Some(1552126412));
    assert_eq!(conversation.ended_at.map(|t| t.seconds), Some(1552126503));
    let texts: Vec<&str> = conversation
        .messages
        .iter()
        .filter(|m| m.author_role() != v1::Role::System)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "Hello. How may I help you?",
            "hello! how's it going?",
            "Hi, good."
        ],
        "the greeting sent in both webhooks is one message"
    );
    assert_eq!(conversation.messages[1].author_role(), v1::Role::Visitor);
    assert_eq!(
        conversation.visitor.as_ref().map(|v| v.id.as_str()),
        Some("S1551")
    );

    let listed = sandbox
        .list_all(v1::ListConversationsRequest::default())
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "livechat/PO13");
    assert!(listed[0].messages.is_empty(), "BASIC view omits messages");
    assert_eq!(
        listed[0].message_count as usize,
        conversation.messages.len()
    );

    let events = sandbox.read_events(0, sandbox.head() as usize).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=sandbox.head()).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .any(|e| e.kind() == v1::EventKind::ChatStarted)
    );
    assert!(events.iter().any(|e| e.kind() == v1::EventKind::ChatEnded));
    assert!(
        events
            .iter()
            .all(|e| e.conversation_id.as_deref() == Some("livechat/PO13"))
    );
}

#[tokio::test]
async fn redelivery_appends_nothing_and_still_succeeds() {
    let sandbox = Sandbox::start().await;
    let (status, _) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_STARTED)
        .await;
    assert_eq!(status, 200);
    let head = sandbox.head();
    assert!(head >= 1);
    let (status, body) = sandbox
        .post("livechat", "", &[TOKEN], seed::CHAT_STARTED)
        .await;
    assert_eq!(status, 200, "a redelivery is answered with success: {body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["appended"], 0);
    assert!(reply["duplicates"].as_u64().unwrap() >= 1);
    assert_eq!(sandbox.head(), head, "nothing new in the log");
}

#[tokio::test]
async fn bad_webhooks_get_a_reason_and_store_nothing() {
    let sandbox = Sandbox::start_with_limit(4096).await;

    let (status, body) = sandbox.post("nope", "", &[TOKEN], seed::CHAT_STARTED).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nope"), "{body}");

    let (status, body) = sandbox.post("livechat", "", &[], seed::CHAT_STARTED).await;
    assert_eq!(status, 401, "missing token: {body}");
    let (status, body) = sandbox
        .post(
            "livechat",
            "",
            &[("x-switchboard-token", "wrong")],
            seed::CHAT_STARTED,
        )
        .await;
    assert_eq!(status, 401, "wrong token: {body}");

    let (status, body) = sandbox
        .post(
            "livechat",
            "",
            &[TOKEN],
            "{\"event_type\": \"chat_started\"",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["error"], "invalid_argument");
    assert!(!reply["message"].as_str().unwrap().is_empty());

    // Authentic (verified) and valid JSON, but the plugin cannot map it: not refused (the
    // vendor would drop it) but held in the quarantine, and nothing appended.
    let (status, body) = sandbox
        .post(
            "livechat",
            "",
            &[TOKEN],
            "{\"event_type\": \"chat_started\"}",
        )
        .await;
    assert_eq!(status, 200, "no chat: {body}");
    let held = sandbox
        .client()
        .await
        .list_quarantine(v1::ListQuarantineRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.webhooks.len(), 1);
    assert_eq!(held.webhooks[0].connection_id, "livechat");

    let huge = format!(
        "{{\"event_type\":\"chat_started\",\"pad\":\"{}\"}}",
        "x".repeat(8192)
    );
    let (status, body) = sandbox.post("livechat", "", &[TOKEN], huge).await;
    assert_eq!(status, 413, "{body}");

    assert_eq!(
        sandbox.head(),
        0,
        "no refused or held webhook appended anything"
    );
    let listed = sandbox
        .list_all(v1::ListConversationsRequest::default())
        .await;
    assert!(listed.is_empty());
}

#[tokio::test]
async fn health_endpoints_answer() {
    let sandbox = Sandbox::start().await;
    let healthz = sandbox
        .http
        .get(format!("{}/healthz", sandbox.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = sandbox
        .http
        .get(format!("{}/readyz", sandbox.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
}
