//! The LiveTex mapping: dialogs as segments, leads as offline conversations, delivery statuses
//! without text, verification of `webHookKey`.

use std::path::Path;

use serde_json::{Value, json};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Conversation, ConversationId, ConversationStatus, ErrorCode,
    EventKind, EventPayload, IncomingEvent, Registry, Role, Timestamp, WebhookRequest,
};
use switchboard_plugin_livetex::{
    conversation_to_events, dialog_to_events, lead_to_events, parse_webhook, webhook_source,
};

const KEY: &str = "lt-7f3c9a2e51d04b8c";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn events(name: &str) -> Vec<IncomingEvent> {
    parse_webhook(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fold(names: &[&str], external_id: &str) -> Conversation {
    let id = ConversationId::new(ConnectionId::new("livetex").unwrap(), external_id);
    let mut conversation = Conversation::new(id, "livetex");
    for name in names {
        for event in events(name) {
            if let EventPayload::Conversation(patch) = &event.payload {
                if patch.external_id == external_id {
                    conversation.apply(patch, event.occurred_at, &event.dedup_key);
                }
            }
        }
    }
    conversation
}

const CONVERSATION_1001: [&str; 8] = [
    "visitor_message",
    "operator_message",
    "message_delivered",
    "dialog_closed_first",
    "dialog_started_second",
    "dialog_closed_last",
    "conversation_row",
    "unknown_event",
];

fn config() -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
        .with_secret("webhook_key", KEY)
}

fn request<'a>(config: &'a ConnectionConfig, body: &'a [u8]) -> WebhookRequest<'a> {
    WebhookRequest {
        connection: config,
        headers: &[],
        query: &[],
        body,
        received_at: Timestamp::from_secs(1_709_300_000).unwrap(),
    }
}

fn patch_of(event: &IncomingEvent) -> &switchboard_core::ConversationPatch {
    match &event.payload {
        EventPayload::Conversation(patch) => patch,
        other => panic!("expected a conversation patch, got {other:?}"),
    }
}

#[test]
fn a_conversation_with_two_dialogs_has_two_segments_with_their_own_agents_and_ratings() {
    let conversation = fold(&CONVERSATION_1001, "c-1001");
    let segments = conversation.segments_in_order();
    assert_eq!(segments.len(), 2);
    let (first, second) = (segments[0], segments[1]);
    assert_eq!(first.id, "c-1001-1");
    assert_eq!(first.agent.as_ref().unwrap().id, "501");
    assert_eq!(
        first.agent.as_ref().unwrap().name.as_deref(),
        Some("Анна Смирнова")
    );
    assert_eq!(first.rating.as_ref().unwrap().score, Some(5));
    assert_eq!(first.attributes["first_answer_time"], "65");
    assert!(first.ended_at.is_some());
    assert_eq!(second.id, "c-1001-2");
    assert_eq!(second.agent.as_ref().unwrap().id, "502");
    assert_eq!(second.rating.as_ref().unwrap().score, Some(2));
    assert_eq!(second.attributes["result"], "closed_by_employee");

    // The conversation closed with its last dialog; both operators took part.
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.ended_at,
        Timestamp::parse_rfc3339("2024-03-01T09:40:00Z")
    );
    assert_eq!(
        conversation.started_at,
        Timestamp::parse_rfc3339("2024-03-01T09:00:00Z")
    );
    let agents: Vec<&str> = conversation
        .current_agents()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(agents, ["501", "502"]);
    assert_eq!(conversation.assigned_agent.as_ref().unwrap().value, "502");

    // Messages of both dialogs, keyed per dialog, the webhook copies merged with the rows'.
    let keys: Vec<&str> = conversation
        .messages_in_order()
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "c-1001-1:m-1",
            "c-1001-1:m-2",
            "c-1001-1:m-3",
            "c-1001-2:m-4",
            "c-1001-2:m-5"
        ]
    );
    assert_eq!(
        conversation.attributes["message_status.c-1001-1:m-2"].value,
        "delivered"
    );
    assert_eq!(conversation.attributes["custom.order_id"].value, "A-17");
}

#[test]
fn the_same_message_from_a_webhook_and_from_a_dialog_row_is_identical() {
    let from_webhook = patch_of(&events("operator_message")[0]).messages[0].clone();
    let row_events = events("dialog_closed_first");
    let from_row = patch_of(&row_events[0])
        .messages
        .iter()
        .find(|m| m.key == from_webhook.key)
        .unwrap()
        .clone();
    assert_eq!(from_webhook, from_row);
    let visitor_webhook = patch_of(&events("visitor_message")[0]).messages[0].clone();
    assert!(patch_of(&row_events[0]).messages.contains(&visitor_webhook));
}

#[test]
fn a_dialog_closes_the_conversation_only_when_is_closed() {
    let first = &events("dialog_closed_first")[0];
    assert_eq!(first.kind, EventKind::ChatUpdated);
    assert_eq!(patch_of(first).status, Some(ConversationStatus::Open));
    assert_eq!(patch_of(first).ended_at, None);
    assert!(patch_of(first).segments[0].ended_at.is_some());

    let last = &events("dialog_closed_last")[0];
    assert_eq!(last.kind, EventKind::ChatEnded);
    assert_eq!(patch_of(last).status, Some(ConversationStatus::Closed));
    assert_eq!(patch_of(last).ended_at, patch_of(last).segments[0].ended_at);

    let started = &events("dialog_started_second")[0];
    assert_eq!(started.kind, EventKind::ChatStarted);
    assert_eq!(patch_of(started).segments[0].ended_at, None);
}

#[test]
fn dialog_rows_of_one_conversation_fold_into_two_rated_segments() {
    let conversation = fold(&["dialog_row", "dialog_row_second"], "c-2002");
    let segments = conversation.segments_in_order();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].agent.as_ref().unwrap().id, "503");
    assert_eq!(
        segments[0].rating.as_ref().unwrap().scale.as_deref(),
        Some("like")
    );
    assert_eq!(segments[1].agent.as_ref().unwrap().id, "501");
    assert_eq!(segments[1].rating.as_ref().unwrap().score, Some(4));
    let messages = conversation.messages_in_order();
    let bot = messages.iter().find(|m| m.key == "c-2002-1:m-11").unwrap();
    assert_eq!(bot.author_role, Role::Bot);
    assert!(bot.automatic);
    let unknown_creator = messages.iter().find(|m| m.key == "c-2002-2:m-22").unwrap();
    assert_eq!(unknown_creator.author_role, Role::System);
    assert_eq!(unknown_creator.data, Some(json!({"creator": "archive"})));
}

#[test]
fn leads_are_offline_conversations() {
    let with = &events("lead_with_conversation")[0];
    assert_eq!(with.kind, EventKind::OfflineMessage);
    let patch = patch_of(with);
    assert_eq!(patch.external_id, "c-3003");
    assert_eq!(patch.status, Some(ConversationStatus::Offline));
    let visitor = patch.visitor.as_ref().unwrap();
    assert_eq!(visitor.phone.as_deref(), Some("+7 912 345-67-89"));
    assert_eq!(visitor.email.as_deref(), Some("svetlana@example.ru"));
    assert_eq!(patch.attributes["utm_campaign"], "wholesale_march");
    assert_eq!(patch.attributes["assigned_to"], "502");
    assert_eq!(patch.attributes["completed_by"], "502");
    assert_eq!(patch.messages[0].author_role, Role::Visitor);

    let without = &events("lead_without_conversation")[0];
    assert_eq!(without.kind, EventKind::OfflineMessage);
    assert_eq!(patch_of(without).external_id, "lead:77002");
    assert_eq!(patch_of(without).status, Some(ConversationStatus::Offline));
    assert!(!patch_of(without).attributes.contains_key("completed_by"));
}

#[test]
fn a_delivery_status_creates_no_text() {
    let event = &events("message_delivered")[0];
    assert_eq!(event.kind, EventKind::ChatUpdated);
    let patch = patch_of(event);
    assert!(patch.messages.is_empty());
    assert_eq!(patch.status, None);
    let conversation = fold(&["message_delivered"], "c-1001");
    assert!(conversation.messages.is_empty());
    assert_eq!(conversation.status, ConversationStatus::Unknown);

    let read = br#"{"event": "message_read", "conversation_id": "c-1", "chat_id": "c-1-1",
        "created_at": "2024-03-01 09:02:00", "message": {"id": "m-2"}}"#;
    let event = &parse_webhook(read).unwrap()[0];
    assert_eq!(event.dedup_key, "delivery:c-1-1:m-2:read");
    assert_eq!(
        patch_of(event).attributes["message_status.c-1-1:m-2"],
        "read"
    );
}

#[test]
fn unknown_events_are_kept_without_the_key() {
    let event = &events("unknown_event")[0];
    assert_eq!(event.kind, EventKind::VendorEvent);
    assert_eq!(event.vendor_event, "visitor_typing");
    let EventPayload::Vendor { subject, data } = &event.payload else {
        panic!("expected a vendor payload");
    };
    assert_eq!(subject.as_deref(), Some("c-1001"));
    assert!(data.get("webHookKey").is_none());
    assert_eq!(data["chat_id"], "c-1001-2");
}

fn row(name: &str, table: &str) -> Value {
    let body: Value = serde_json::from_slice(&fixture(name)).unwrap();
    body[table].clone()
}

#[test]
fn public_row_functions_match_the_webhook() {
    let dialog = row("dialog_row", "dialog");
    let mut from_row = dialog_to_events(&dialog).unwrap();
    let from_webhook = events("dialog_row");
    assert_eq!(from_row, from_webhook);
    from_row = lead_to_events(&row("lead_with_conversation", "lead")).unwrap();
    assert_eq!(from_row, events("lead_with_conversation"));
    from_row = conversation_to_events(&row("conversation_row", "conversation")).unwrap();
    assert_eq!(from_row, events("conversation_row"));
}

#[test]
fn dedup_keys_follow_meaning_not_spelling() {
    let dialog = row("dialog_closed_first", "dialog");
    let key = |row: &Value| dialog_to_events(row).unwrap()[0].dedup_key.clone();
    let original = key(&dialog);
    assert!(original.starts_with("dialog:c-1001-1:2024-03-01T09:12:30.000Z:"));

    // The same row with its dates written another way (as the pull sync might) is the same event.
    let mut respelled = dialog.clone();
    respelled["created_at"] = json!("2024-03-01T12:00:00+03:00");
    respelled["closed_at"] = json!(1_709_284_350);
    assert_eq!(key(&respelled), original);

    // A change of meaning (a rating given later) is a new event.
    let mut rerated = dialog.clone();
    rerated["rating_value"] = json!(4);
    assert_ne!(key(&rerated), original);

    // The dialog_closed webhook and the dialog row of the same dialog dedup each other.
    assert_eq!(events("dialog_closed_first")[0].dedup_key, original);
}

fn error_of(body: &Value) -> switchboard_core::Error {
    parse_webhook(body.to_string().as_bytes()).unwrap_err()
}

#[test]
fn malformed_bodies_are_refused_naming_the_field() {
    for body in [&b""[..], b"[]", b"{", b"\xff\xfe", b"{\"event\": 3}", b"{}"] {
        let err = parse_webhook(body).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{body:?}");
    }

    let mut dialog: Value = serde_json::from_slice(&fixture("dialog_closed_first")).unwrap();
    dialog["dialog"]["closed_at"] = json!(null);
    let err = error_of(&dialog);
    assert!(
        err.message.contains("`dialog.closed_at` is required"),
        "{err}"
    );

    dialog["dialog"]["closed_at"] = json!("2024-03-01 08:00:00");
    let err = error_of(&dialog);
    assert!(
        err.message.contains("is before `dialog.created_at`"),
        "{err}"
    );

    dialog["dialog"]["closed_at"] = json!("2224-03-01 08:00:00");
    assert!(error_of(&dialog).message.contains("`dialog.closed_at`"));

    let mut dialog: Value = serde_json::from_slice(&fixture("dialog_closed_first")).unwrap();
    dialog["dialog"]["messages"][1]["creator"] = json!(7);
    let err = error_of(&dialog);
    assert!(
        err.message.contains("`dialog.messages[1].creator`"),
        "{err}"
    );

    let mut dialog: Value = serde_json::from_slice(&fixture("dialog_row")).unwrap();
    dialog["dialog"]["rating_value"] = json!(1e9);
    assert!(error_of(&dialog).message.contains("`dialog.rating_value`"));
    dialog["dialog"]["rating_value"] = json!("5");
    assert!(error_of(&dialog).message.contains("`dialog.rating_value`"));

    let mut lead: Value = serde_json::from_slice(&fixture("lead_without_conversation")).unwrap();
    lead["lead"]["created_at"] = json!(-5);
    assert!(error_of(&lead).message.contains("`lead.created_at`"));
    lead["lead"]["created_at"] = json!(1_709_596_800);
    lead["lead"]["is_managed"] = json!("yes");
    assert!(error_of(&lead).message.contains("`lead.is_managed`"));

    let mut message: Value = serde_json::from_slice(&fixture("visitor_message")).unwrap();
    message.as_object_mut().unwrap().remove("chat_id");
    assert!(error_of(&message).message.contains("`chat_id` is required"));

    let mut unknown: Value = serde_json::from_slice(&fixture("unknown_event")).unwrap();
    unknown["conversation_id"] = json!(1001);
    assert!(error_of(&unknown).message.contains("`conversation_id`"));
}

#[test]
fn verify_checks_the_webhook_key() {
    let config = config();
    let source = webhook_source(&config).unwrap();
    let body = fixture("visitor_message");
    source.verify(&request(&config, &body)).unwrap();

    let wrong = ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
        .with_secret("webhook_key", "not-the-key");
    let err = source.verify(&request(&wrong, &body)).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(!err.message.contains(KEY));

    let mut stripped: Value = serde_json::from_slice(&body).unwrap();
    stripped.as_object_mut().unwrap().remove("webHookKey");
    let stripped = stripped.to_string().into_bytes();
    let err = source.verify(&request(&config, &stripped)).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);

    let number_key = br#"{"webHookKey": 7, "event": "x"}"#;
    let err = source.verify(&request(&config, number_key)).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);

    let unconfigured = ConnectionConfig {
        verify: false,
        ..ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
    };
    let err = source.verify(&request(&unconfigured, &body)).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
}

#[test]
fn the_factory_needs_a_key_only_when_verifying() {
    let bare = ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex");
    let err = webhook_source(&bare).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("webhook_key"), "{err}");
    let unverified = ConnectionConfig {
        verify: false,
        ..bare
    };
    let source = webhook_source(&unverified).unwrap();
    assert_eq!(
        source
            .parse(&request(&unverified, &fixture("lead_without_conversation")))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn livetex_is_registered() {
    let registry = Registry::from_inventory().unwrap();
    let plugin = registry.get("livetex").expect("livetex is registered");
    assert!(plugin.webhook.is_some());
    assert!(plugin.connector.is_some());
}
