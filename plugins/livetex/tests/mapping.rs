//! Mapping and verification rules of the LiveTex plugin, one documented sample at a time.

use serde_json::json;
use switchboard_core::{
    ConnectionConfig, ConnectionId, ConversationStatus, ErrorCode, EventKind, EventPayload,
    IncomingEvent, Role, Timestamp, WebhookRequest,
};
use switchboard_plugin_livetex::{chat_to_events, lead_to_events, parse_webhook, webhook_source};

fn patch(event: &IncomingEvent) -> &switchboard_core::ConversationPatch {
    match &event.payload {
        EventPayload::Conversation(patch) => patch,
        other => panic!("not a conversation event: {other:?}"),
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
}

const BODY: &[u8] = br#"{"Conversation": {"id": 1, "created_at": "2024-03-01T12:00:00"},
    "discourser": {}, "employee": []}"#;

fn verify(
    config: &ConnectionConfig,
    headers: &[(String, String)],
    query: &[(String, String)],
) -> Result<(), switchboard_core::Error> {
    let source = webhook_source(config)?;
    source.verify(&WebhookRequest {
        connection: config,
        headers,
        query,
        body: BODY,
        received_at: Timestamp::now(),
    })
}

fn pair(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_owned(), v.to_owned())]
}

#[test]
fn the_webhook_is_verified_by_the_connection_token_in_the_url_or_a_header() {
    let config = config().with_secret("webhook_secret", "tok-1");
    verify(&config, &[], &pair("token", "tok-1")).unwrap();
    verify(&config, &pair("x-switchboard-token", "tok-1"), &[]).unwrap();
    let wrong = verify(&config, &[], &pair("token", "tok-2")).unwrap_err();
    assert_eq!(wrong.code, ErrorCode::Unauthenticated);
    let missing = verify(&config, &[], &[]).unwrap_err();
    assert_eq!(missing.code, ErrorCode::Unauthenticated);
    assert!(missing.message.contains("?token="), "{}", missing.message);
    // The older secret name still works.
    let legacy = self::config().with_secret("webhook_key", "tok-3");
    verify(&legacy, &[], &pair("token", "tok-3")).unwrap();
}

#[test]
fn the_messaging_apis_webhookkey_neither_verifies_nor_is_stored() {
    let config = config().with_secret("webhook_secret", "tok-1");
    let source = webhook_source(&config).unwrap();
    let body = br#"{"webHookKey": "tok-1", "Conversation": {"id": 1, "created_at": 1709283600}}"#;
    let request = WebhookRequest {
        connection: &config,
        headers: &[],
        query: &[],
        body,
        received_at: Timestamp::now(),
    };
    let error = source.verify(&request).unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    let stored = source.raw_for_storage(&request);
    assert!(!stored.contains("tok-1"), "{stored}");
    assert!(stored.contains("Conversation"), "{stored}");
}

#[test]
fn with_verification_on_a_connection_needs_a_token_secret() {
    let error = webhook_source(&config()).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("webhook_secret"),
        "{}",
        error.message
    );
    let mut open = config();
    open.verify = false;
    webhook_source(&open).unwrap();
}

#[test]
fn dates_without_an_offset_are_moscow_time() {
    let events = chat_to_events(&json!({
        "id": 1, "conversation": {"id": 2}, "created_at": "2024-03-01T12:00:00",
        "is_closed": true, "duration": 90,
    }))
    .unwrap();
    let patch = patch(&events[0]);
    let started = Timestamp::parse_rfc3339("2024-03-01T09:00:00Z").unwrap();
    assert_eq!(patch.started_at, Some(started));
    assert_eq!(
        patch.segments[0].ended_at,
        Timestamp::from_millis(started.as_millis() + 90_000)
    );
    assert_eq!(events[0].kind, EventKind::ChatEnded);
    let with_offset = chat_to_events(&json!({
        "id": 1, "conversation": {"id": 2}, "created_at": "2024-03-01T12:00:00+03:00",
    }))
    .unwrap();
    assert_eq!(patch_of(&with_offset).started_at, Some(started));
    assert_eq!(with_offset[0].kind, EventKind::ChatStarted);
}

fn patch_of(events: &[IncomingEvent]) -> &switchboard_core::ConversationPatch {
    patch(&events[0])
}

#[test]
fn a_chat_maps_to_a_segment_with_its_messages_by_author() {
    let events = chat_to_events(&json!({
        "id": 5001, "conversation": {"id": 9001}, "created_at": "2024-03-01T12:00:00",
        "is_closed": true, "result": "missed",
        "employee": {"id": 501, "first_name": "Анна", "last_name": "Смирнова"},
        "visitor": {"id": "v-1", "name": "Мария"},
        "site": {"id": 3101, "url": "shop.example.ru"},
        "visitor_vote": "negative",
        "messages": [
            {"id": 1, "text": "Алло", "created_at": "2024-03-01T12:00:01", "visitor": {"id": "v-1"}},
            {"id": 2, "text": "Да", "created_at": "2024-03-01T12:00:02", "employee": {"id": 501}},
            {"id": 3, "text": "", "created_at": "2024-03-01T12:00:03"}
        ],
        "a_field_not_in_the_schema": {"kept": "in the raw body"}
    }))
    .unwrap();
    let patch = patch_of(&events);
    assert_eq!(patch.external_id, "9001");
    assert_eq!(patch.status, Some(ConversationStatus::Missed));
    assert_eq!(patch.assigned_agent.as_deref(), Some("501"));
    assert_eq!(patch.attributes["site_url"], "shop.example.ru");
    assert_eq!(patch.segments[0].id, "5001");
    assert_eq!(patch.rating.as_ref().unwrap().score, Some(-1));
    let roles: Vec<(String, Role, Option<String>)> = patch
        .messages
        .iter()
        .map(|m| (m.key.clone(), m.author_role, m.author_name.clone()))
        .collect();
    assert_eq!(
        roles,
        [
            ("5001:1".to_owned(), Role::Visitor, Some("Мария".to_owned())),
            (
                "5001:2".to_owned(),
                Role::Agent,
                Some("Анна Смирнова".to_owned())
            ),
            ("5001:3".to_owned(), Role::System, None),
        ]
    );
}

#[test]
fn a_lead_is_an_offline_conversation_with_the_answer_as_the_operators_message() {
    let events = lead_to_events(&json!({
        "id": 70001, "created_at": "2024-03-01T12:00:00", "completed_at": "2024-03-01T13:00:00",
        "name": "Светлана", "email": "s@example.ru", "text": "Перезвоните", "type": "callback",
        "result": "completed", "answer_text": "Перезвонили",
        "completed_by": {"id": 502, "first_name": "Игорь"},
    }))
    .unwrap();
    let patch = patch_of(&events);
    assert_eq!(events[0].kind, EventKind::OfflineMessage);
    assert_eq!(patch.external_id, "lead:70001");
    assert_eq!(patch.status, Some(ConversationStatus::Offline));
    assert_eq!(
        patch.visitor.as_ref().unwrap().email.as_deref(),
        Some("s@example.ru")
    );
    assert_eq!(patch.messages[1].author_role, Role::Agent);
    assert_eq!(patch.messages[1].author_id.as_deref(), Some("502"));
    assert_eq!(patch.attributes["lead_type"], "callback");
    let in_conversation = lead_to_events(&json!({
        "id": 70002, "created_at": "2024-03-01T12:00:00", "conversation": {"id": 9001},
    }))
    .unwrap();
    assert_eq!(patch_of(&in_conversation).external_id, "9001");
}

#[test]
fn the_webhook_body_needs_a_conversation_with_an_id_and_nothing_else() {
    let minimal =
        parse_webhook(br#"{"Conversation": {"id": 7, "created_at": 1709283600}}"#).unwrap();
    assert_eq!(patch_of(&minimal).external_id, "7");
    for body in [
        &b"{}"[..],
        br#"{"Conversation": {"created_at": "2024-03-01T12:00:00"}}"#,
        br#"{"Conversation": {"id": 7}}"#,
        br#"{"Conversation": {"id": [7], "created_at": "2024-03-01T12:00:00"}}"#,
        br#"{"Conversation": {"id": 7, "created_at": "2024-03-01T12:00:00"}, "employee": [{"first_name": "x"}]}"#,
        b"not json",
    ] {
        let error = parse_webhook(body).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn an_open_chat_in_the_webhook_means_an_assignment_or_rating_not_a_close() {
    let body = json!({
        "Conversation": {"id": 7, "created_at": "2024-03-01T12:00:00", "updated_at": "2024-03-01T12:05:00",
            "chats": [{"id": 1, "created_at": "2024-03-01T12:00:00", "is_closed": false,
                       "visitor_vote": "positive"}]},
        "discourser": {"id": "v-1", "name": "Мария", "city": "Казань"},
        "employee": {"id": 501, "first_name": "Анна"},
    });
    let events = parse_webhook(body.to_string().as_bytes()).unwrap();
    let patch = patch_of(&events);
    assert_eq!(events[0].kind, EventKind::ChatUpdated);
    assert_eq!(patch.status, Some(ConversationStatus::Open));
    assert_eq!(patch.ended_at, None);
    assert_eq!(
        patch.rating.as_ref().unwrap().label.as_deref(),
        Some("positive")
    );
    let visitor = patch.visitor.as_ref().unwrap();
    assert_eq!(visitor.id, "v-1");
    assert_eq!(visitor.attributes["city"], "Казань");
    assert_eq!(patch.assigned_agent.as_deref(), Some("501"));
    assert_eq!(
        events[0].occurred_at,
        Timestamp::parse_rfc3339("2024-03-01T09:05:00Z").unwrap()
    );
}
