//! Behaviour of the LiveChat webhook source on the seed bodies and on hand-made edge cases.

use switchboard_core::{
    ConnectionConfig, ConnectionId, Conversation, ConversationId, ConversationStatus, Error,
    ErrorCode, EventKind, EventPayload, IncomingEvent, Registry, Role, TicketOrigin, TicketStatus,
    Timestamp, WebhookRequest, WebhookSource,
};

const CHAT_STARTED: &[u8] = include_bytes!("../fixtures/legacy_chat_started.json");
const CHAT_ENDED: &[u8] = include_bytes!("../fixtures/legacy_chat_ended.json");
const TICKET_CREATED: &[u8] = include_bytes!("../fixtures/legacy_ticket_created.json");
const INCOMING_CHAT: &[u8] = include_bytes!("../fixtures/v3_incoming_chat.json");
const INCOMING_EVENT: &[u8] = include_bytes!("../fixtures/v3_incoming_event_message.json");
const UNKNOWN_ACTION: &[u8] = include_bytes!("../fixtures/v3_unknown_action.json");

const SECRET: &str = "lc-webhook-secret";

fn config() -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("livechat").unwrap(), "livechat")
        .with_secret("webhook_secret", SECRET)
        .with_secret("basic_user", "livechat")
        .with_secret("basic_password", "hunter2-basic")
}

fn received_at() -> Timestamp {
    Timestamp::from_secs(1_704_067_200).unwrap()
}

fn source(config: &ConnectionConfig) -> Box<dyn WebhookSource> {
    switchboard_plugin_livechat::webhook(config).unwrap()
}

fn request<'a>(
    config: &'a ConnectionConfig,
    headers: &'a [(String, String)],
    query: &'a [(String, String)],
    body: &'a [u8],
) -> WebhookRequest<'a> {
    WebhookRequest {
        connection: config,
        headers,
        query,
        body,
        received_at: received_at(),
    }
}

fn parse(body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let config = config();
    source(&config).parse(&request(&config, &[], &[], body))
}

fn verify(headers: &[(&str, &str)], query: &[(&str, &str)], body: &[u8]) -> Result<(), Error> {
    let config = config();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    source(&config).verify(&request(&config, &headers, &query, body))
}

fn patch(event: &IncomingEvent) -> &switchboard_core::ConversationPatch {
    match &event.payload {
        EventPayload::Conversation(patch) => patch,
        other => panic!("expected a conversation patch, got {other:?}"),
    }
}

fn fold(events: &[&IncomingEvent]) -> Conversation {
    let id = ConversationId::new(ConnectionId::new("livechat").unwrap(), "PO13");
    let mut conversation = Conversation::new(id, "livechat");
    for event in events {
        conversation.apply(patch(event), event.occurred_at, &event.dedup_key);
    }
    conversation
}

#[test]
fn seed_chat_started_is_an_open_chat_and_its_greeting() {
    let events = parse(CHAT_STARTED).unwrap();
    assert_eq!(events.len(), 2);
    let started = &events[0];
    assert_eq!(started.dedup_key, "chat_started:7ddaabb");
    assert_eq!(started.kind, EventKind::ChatStarted);
    assert_eq!(
        started.occurred_at,
        Timestamp::from_secs(1552126412).unwrap()
    );
    let p = patch(started);
    assert_eq!(p.external_id, "PO13");
    assert_eq!(p.status, Some(ConversationStatus::Open));
    let visitor = p.visitor.as_ref().unwrap();
    assert_eq!(visitor.id, "S1551");
    assert_eq!(visitor.attributes["country"], "Japan");
    assert_eq!(visitor.attributes["pre_chat_survey.2002"], "name@gmail.com");
    assert!(
        !visitor.attributes.contains_key("city"),
        "empty strings are dropped"
    );
    assert_eq!(p.agents_joined[0].id, "name@gmail.com");
    assert_eq!(p.attributes["groups"], "0");
    assert_eq!(p.page_url.as_deref(), Some("URL"));
    assert_eq!(p.referrer, None);

    let greeting = &patch(&events[1]).messages[0];
    assert_eq!(events[1].kind, EventKind::Message);
    assert_eq!(greeting.author_role, Role::Agent);
    assert_eq!(greeting.author_id.as_deref(), Some("name@gmail.com"));
    assert_eq!(greeting.text, "Hello. How may I help you?");
}

#[test]
fn seed_chat_ended_closes_the_chat_and_names_who_closed_it() {
    let events = parse(CHAT_ENDED).unwrap();
    let ended = &events[0];
    assert_eq!(ended.dedup_key, "chat_ended:349a820");
    assert_eq!(ended.kind, EventKind::ChatEnded);
    let p = patch(ended);
    assert_eq!(p.status, Some(ConversationStatus::Closed));
    assert_eq!(p.ended_at, Timestamp::from_secs(1552126503));
    assert_eq!(p.end_reason.as_deref(), Some("visitor_closed"));
    // Three messages and the `closed` chat event as a system message.
    assert_eq!(events.len(), 5);
    let roles: Vec<Role> = events[1..]
        .iter()
        .map(|e| patch(e).messages[0].author_role)
        .collect();
    assert_eq!(
        roles,
        [Role::Agent, Role::Visitor, Role::Agent, Role::System]
    );
    let visitor_message = &patch(&events[2]).messages[0];
    assert_eq!(visitor_message.author_id.as_deref(), Some("S1551"));
}

#[test]
fn the_same_message_in_chat_started_and_chat_ended_is_one_message() {
    let started = parse(CHAT_STARTED).unwrap();
    let ended = parse(CHAT_ENDED).unwrap();
    assert_eq!(started[1], {
        let mut e = ended[1].clone();
        e.vendor_event = "chat_started".into();
        e
    });
    let in_order: Vec<&IncomingEvent> = started.iter().chain(&ended).collect();
    let reversed: Vec<&IncomingEvent> = in_order.iter().rev().copied().collect();
    let a = fold(&in_order);
    assert_eq!(a, fold(&reversed));
    assert_eq!(a.status, ConversationStatus::Closed);
    assert_eq!(a.messages.len(), 4);
    assert_eq!(a.started_at, Timestamp::from_secs(1552126412));
}

#[test]
fn parsing_is_deterministic() {
    for body in [
        CHAT_STARTED,
        CHAT_ENDED,
        TICKET_CREATED,
        INCOMING_CHAT,
        UNKNOWN_ACTION,
    ] {
        assert_eq!(parse(body).unwrap(), parse(body).unwrap());
    }
}

#[test]
fn legacy_times_may_be_iso_strings_or_numeric_strings() {
    let body = String::from_utf8(CHAT_ENDED.to_vec())
        .unwrap()
        .replace(
            "\"started_timestamp\": 1552126412",
            "\"started_timestamp\": \"2019-03-09T10:13:32.000Z\"",
        )
        .replace(
            "\"ended_timestamp\": 1552126503",
            "\"ended_timestamp\": \"1552126503\"",
        );
    let events = parse(body.as_bytes()).unwrap();
    assert_eq!(events, parse(CHAT_ENDED).unwrap());
}

#[test]
fn without_event_unique_id_the_key_comes_from_the_chat() {
    let body = String::from_utf8(CHAT_STARTED.to_vec())
        .unwrap()
        .replace("\"event_unique_id\": \"7ddaabb\", ", "");
    let events = parse(body.as_bytes()).unwrap();
    assert_eq!(events[0].dedup_key, "chat_started:PO13:1552126412:-");
}

#[test]
fn ticket_created_is_a_vendor_ticket() {
    let events = parse(TICKET_CREATED).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::TicketCreated);
    assert_eq!(events[0].dedup_key, "ticket_created:8f3c1d2");
    let EventPayload::Ticket(ticket) = &events[0].payload else {
        panic!("expected a ticket");
    };
    assert_eq!(ticket.external_id, "JKL9QZ0F7");
    assert_eq!(ticket.origin, TicketOrigin::Vendor);
    assert_eq!(ticket.status, TicketStatus::Open);
    assert_eq!(
        ticket.requester.as_ref().unwrap().email.as_deref(),
        Some("customer@example.com")
    );
    assert_eq!(ticket.events.len(), 2);
    assert!(ticket.events[1].is_private);
    assert_eq!(
        ticket.created_at,
        Timestamp::parse_rfc3339("2019-03-09T10:20:11.000Z").unwrap()
    );
    assert_eq!(
        ticket.updated_at,
        Timestamp::parse_rfc3339("2019-03-09T10:24:56.500Z").unwrap()
    );
}

#[test]
fn v3_incoming_chat_and_incoming_event_share_message_keys() {
    let chat = parse(INCOMING_CHAT).unwrap();
    assert_eq!(chat[0].kind, EventKind::ChatStarted);
    assert_eq!(chat[0].dedup_key, "incoming_chat:PJ0MRSHTDG:K600PKZON8");
    let p = patch(&chat[0]);
    assert_eq!(
        p.visitor.as_ref().unwrap().name.as_deref(),
        Some("Thomas Anderson")
    );
    assert_eq!(
        p.page_url.as_deref(),
        Some("https://www.example.com/pricing")
    );
    assert_eq!(p.agents_joined[0].id, "l.wojciechowski@livechatinc.com");
    assert_eq!(
        chat[2].dedup_key,
        "event:PJ0MRSHTDG:K600PKZON8:K600PKZON8_2"
    );
    assert_eq!(patch(&chat[2]).messages[0].author_role, Role::Visitor);

    let event = parse(INCOMING_EVENT).unwrap();
    assert_eq!(event.len(), 1);
    assert_eq!(
        event[0].dedup_key,
        "event:PJ0MRSHTDG:K600PKZON8:K600PKZON8_3"
    );
    let message = &patch(&event[0]).messages[0];
    assert_eq!(message.key, "K600PKZON8/K600PKZON8_3");
    assert_eq!(message.author_role, Role::Agent);
}

#[test]
fn unknown_actions_are_kept_without_the_secret() {
    let events = parse(UNKNOWN_ACTION).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::VendorEvent);
    assert_eq!(events[0].vendor_event, "agent_deleted");
    let EventPayload::Vendor { subject, data } = &events[0].payload else {
        panic!("expected a vendor payload");
    };
    assert_eq!(subject.as_deref(), Some("former.agent@example.com"));
    assert!(data.get("secret_key").is_none());
    assert_eq!(data["payload"]["id"], "former.agent@example.com");
}

#[track_caller]
fn assert_invalid(body: &str, reason: &str) {
    let err = parse(body.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert!(
        err.message.contains(reason),
        "{:?} does not say {reason:?}",
        err.message
    );
}

#[test]
fn malformed_bodies_are_refused_with_the_field_named() {
    assert_invalid("", "empty");
    assert_invalid("{\"event_type\": ", "not valid JSON");
    assert_invalid("[1, 2]", "not a JSON object");
    assert_invalid("{}", "neither `action`");
    assert_invalid("{\"event_type\": 7}", "event_type must be a string");
    assert_invalid("{\"event_type\": \"chat_started\"}", "chat is missing");
    assert_invalid(
        "{\"event_type\": \"chat_started\", \"chat\": {\"started_timestamp\": 1}}",
        "chat.id is missing",
    );
    assert_invalid(
        "{\"event_type\": \"chat_started\", \"chat\": {\"id\": \"x\", \"started_timestamp\": 9223372036854775807}}",
        "chat.started_timestamp is not a valid time in seconds",
    );
    assert_invalid(
        "{\"event_type\": \"chat_ended\", \"chat\": {\"id\": \"x\", \"started_timestamp\": 1, \"ended_timestamp\": -1}}",
        "chat.ended_timestamp is not a valid time in seconds",
    );
    assert_invalid(
        "{\"event_type\": \"chat_started\", \"chat\": {\"id\": \"x\", \"started_timestamp\": 1, \"messages\": [{\"text\": \"hi\", \"timestamp\": \"soon\"}]}}",
        "chat.messages[0].timestamp is not a valid time",
    );
    assert_invalid("{\"action\": \"incoming_event\"}", "payload is missing");
    assert_invalid(
        "{\"action\": \"incoming_event\", \"payload\": {\"chat_id\": \"C\", \"thread_id\": \"T\", \"event\": {\"id\": \"e\", \"type\": \"message\", \"created_at\": \"99999-01-01T00:00:00Z\"}}}",
        "payload.event.created_at is not a valid RFC 3339 time",
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_invalid(&deep, "not valid JSON");
}

#[test]
fn v3_bodies_verify_by_secret_key() {
    assert!(verify(&[], &[], INCOMING_CHAT).is_ok());
    let wrong = String::from_utf8(INCOMING_CHAT.to_vec())
        .unwrap()
        .replace(SECRET, "guess");
    let err = verify(&[], &[], wrong.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("does not match"), "{err}");
    let err = verify(
        &[],
        &[],
        b"{\"action\": \"incoming_chat\", \"payload\": {}}",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("no secret_key"), "{err}");
    // A v3 body is not let in by a legacy token.
    let err = verify(
        &[("x-switchboard-token", SECRET)],
        &[],
        b"{\"action\": \"x\"}",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
}

#[test]
fn legacy_bodies_verify_by_token_or_basic_credentials() {
    assert!(verify(&[("x-switchboard-token", SECRET)], &[], CHAT_STARTED).is_ok());
    assert!(verify(&[], &[("token", SECRET)], CHAT_STARTED).is_ok());
    let basic = "Basic bGl2ZWNoYXQ6aHVudGVyMi1iYXNpYw==";
    assert!(verify(&[("authorization", basic)], &[], CHAT_STARTED).is_ok());
    for (headers, query) in [
        (vec![], vec![]),
        (vec![("x-switchboard-token", "guess")], vec![]),
        (vec![], vec![("token", "guess")]),
        (vec![("authorization", "Basic Z3Vlc3M6Z3Vlc3M=")], vec![]),
    ] {
        let err = verify(&headers, &query, CHAT_STARTED).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Unauthenticated,
            "{headers:?} {query:?}"
        );
    }
    // Not JSON at all: still judged by the credentials; parse refuses it later.
    assert!(verify(&[("x-switchboard-token", SECRET)], &[], b"\xff\xfe").is_ok());
}

/// Issue 10, item 6: with a duplicated `action`, the verifier (a derived struct, which refuses
/// duplicates) saw no v3 body and accepted the legacy Basic credential, while the mapping
/// (`serde_json::Value`, last value wins) read a v3 body that had no `secret_key`. Now one
/// parse decides, and a duplicated deciding or credential key is refused by verify and parse.
#[test]
fn duplicated_format_or_credential_keys_never_let_one_credential_pass_as_another() {
    let basic = "Basic bGl2ZWNoYXQ6aHVudGVyMi1iYXNpYw==";
    let smuggled = br#"{"action": "incoming_event", "action": "incoming_event", "payload": {"chat_id": "PJ0MRSHTDG", "thread_id": "K600PKZON8", "event": {"id": "K600PKZON8_9", "type": "message", "text": "forged", "author_id": "b7eff798-f8df-4364-8059-649c35c9ed0c", "created_at": "2019-12-17T07:58:00.000000Z"}}}"#;
    let err = verify(&[("authorization", basic)], &[], smuggled).unwrap_err();
    assert!(
        matches!(
            err.code,
            ErrorCode::InvalidArgument | ErrorCode::Unauthenticated
        ),
        "{err}"
    );
    assert!(err.message.contains("`action`"), "{err}");
    assert_invalid(
        std::str::from_utf8(smuggled).unwrap(),
        "repeats the key `action`",
    );

    // A v3 body without a secret_key is never let in by a legacy credential, however the
    // format keys are arranged.
    for body in [
        r#"{"event_type": "chat_started", "action": "incoming_event", "payload": {}}"#,
        r#"{"action": null, "event_type": "chat_started", "action": "incoming_event", "payload": {}}"#,
        r#"{"event_type": "chat_started", "event_type": "x", "chat": {"id": "C", "started_timestamp": 1}}"#,
        r#"{"action": "incoming_event", "secret_key": "lc-webhook-secret", "secret_key": "guess", "payload": {}}"#,
    ] {
        let err = verify(
            &[("authorization", basic), ("x-switchboard-token", SECRET)],
            &[],
            body.as_bytes(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err.code,
                ErrorCode::InvalidArgument | ErrorCode::Unauthenticated
            ),
            "{body}: {err}"
        );
    }
    // The right secret_key, once, still verifies.
    assert!(
        verify(
            &[],
            &[],
            br#"{"action": "thread_tagged", "secret_key": "lc-webhook-secret", "payload": {"chat_id": "C", "thread_id": "T", "tag": "x"}}"#
        )
        .is_ok()
    );
}
#[test]
fn the_factory_needs_a_secret_only_when_verifying() {
    let id = ConnectionId::new("livechat").unwrap();
    let mut bare = ConnectionConfig::new(id.clone(), "livechat");
    let err = switchboard_plugin_livechat::webhook(&bare).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("webhook_secret"), "{err}");
    bare.verify = false;
    assert!(switchboard_plugin_livechat::webhook(&bare).is_ok());
    let basic_only = ConnectionConfig::new(id, "livechat")
        .with_secret("basic_user", "u")
        .with_secret("basic_password", "p");
    assert!(switchboard_plugin_livechat::webhook(&basic_only).is_ok());
}

#[test]
fn the_plugin_is_registered() {
    let registry = Registry::from_inventory().unwrap();
    let plugin = registry.get("livechat").expect("livechat is registered");
    assert!(plugin.webhook.is_some());
    assert!(plugin.connector.is_some());
}

/// Shapes the docs show that were refused before: legacy `visitor_queued` with only the
/// visitor (Configuration API v2.0: `visitor_queued` cannot carry `chat`), an array payload
/// (`auto_accesses_updated`, webhooks v3.5/v3.6; the sample's own action is
/// `auto_access_added`), v3.5's `queue.queued_at_us`, and bots' 32-hex ids.
#[test]
fn documented_shapes_are_accepted() {
    // Visitor only, with the chat's id among the visitor's fields: the chat is queued.
    let events = parse(
        br#"{"event_type": "visitor_queued", "license_id": "1067", "visitor": {"id": "S1", "chat_id": "PO20", "name": "Ann", "page_current": "https://example.com/"}}"#,
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::ChatUpdated);
    let queued = patch(&events[0]);
    assert_eq!(queued.external_id, "PO20");
    assert_eq!(queued.status, Some(ConversationStatus::Queued));
    assert_eq!(queued.visitor.as_ref().map(|v| v.id.as_str()), Some("S1"));
    // Visitor only, no chat id: kept whole about the visitor.
    let events = parse(br#"{"event_type": "visitor_queued", "visitor": {"id": "S2"}}"#).unwrap();
    assert_eq!(events[0].kind, EventKind::VendorEvent);
    let EventPayload::Vendor { subject, .. } = &events[0].payload else {
        panic!("expected a vendor payload");
    };
    assert_eq!(subject.as_deref(), Some("S2"));
    // Neither chat nor visitor: refused, naming what is missing.
    assert_invalid(r#"{"event_type": "visitor_queued"}"#, "chat is missing");

    for action in ["auto_accesses_updated", "auto_access_added"] {
        let body = format!(
            r#"{{"action": "{action}", "payload": [{{"id": "a2710c4680fa15700ae046940a11a329", "status": "deleted"}}]}}"#
        );
        let events = parse(body.as_bytes()).unwrap();
        assert_eq!(events[0].kind, EventKind::VendorEvent);
        assert_eq!(events[0].vendor_event, action);
    }

    let transferred = |queue: &str| {
        let body = format!(
            r#"{{"action": "chat_transferred", "payload": {{"chat_id": "C", "thread_id": "T", "transferred_to": {{"agent_ids": ["a@example.com"]}}, "queue": {{"position": 1, "{queue}": "2019-12-09T12:01:18.909000Z"}}}}}}"#
        );
        parse(body.as_bytes()).unwrap().remove(0)
    };
    let v35 = transferred("queued_at_us");
    let v36 = transferred("queued_at");
    assert_eq!(v35.occurred_at.as_millis(), 1_575_892_878_909);
    assert_eq!(v35.occurred_at, v36.occurred_at);
    assert_eq!(v35.dedup_key, v36.dedup_key);

    let message = |author: &str| {
        let body = format!(
            r#"{{"action": "incoming_event", "payload": {{"chat_id": "C", "thread_id": "T", "event": {{"id": "T_1", "type": "message", "text": "hi", "author_id": "{author}", "created_at": "2019-12-17T07:57:43.000000Z"}}}}}}"#
        );
        patch(&parse(body.as_bytes()).unwrap()[0]).messages[0].author_role
    };
    assert_eq!(message("5c9871d5372c824cbf22d860a707a578"), Role::Bot);
    assert_eq!(
        message("b7eff798-f8df-4364-8059-649c35c9ed0c"),
        Role::Visitor
    );
    assert_eq!(message("smith@example.com"), Role::Agent);
}
