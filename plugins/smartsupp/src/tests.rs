use switchboard_core::{
    ConnectionId, Conversation, ConversationId, ConversationStatus, ErrorCode, EventKind, Registry,
    Role,
};

use super::*;

const TOKEN: &str = "hook-token-6c1f";
const APP: &str = "app-secret-93b7e0";

fn config() -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("smartsupp").unwrap(), VENDOR)
        .with_secret(WEBHOOK_SECRET, TOKEN)
        .with_secret(APP_SECRET, APP)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn run<T>(
    config: &ConnectionConfig,
    headers: &[(&str, &str)],
    query: &[(&str, &str)],
    body: &[u8],
    f: impl FnOnce(&WebhookRequest<'_>) -> T,
) -> T {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let request = WebhookRequest {
        connection: config,
        headers: &headers,
        query: &query,
        body,
        received_at: Timestamp::from_secs(1_700_000_000).unwrap(),
    };
    f(&request)
}

fn parse(body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    run(&config(), &[], &[], body, |r| SmartsuppWebhook.parse(r))
}

fn verify(headers: &[(&str, &str)], query: &[(&str, &str)], body: &[u8]) -> Result<(), Error> {
    run(&config(), headers, query, body, |r| {
        SmartsuppWebhook.verify(r)
    })
}

fn fold(events: &[IncomingEvent], id: &str) -> Conversation {
    let mut conversation = Conversation::new(
        ConversationId::new(ConnectionId::new("smartsupp").unwrap(), id),
        VENDOR,
    );
    for event in events {
        if let EventPayload::Conversation(patch) = &event.payload {
            assert_eq!(patch.external_id, id);
            conversation.apply(patch, event.occurred_at, &event.dedup_key);
        }
    }
    conversation
}

use switchboard_core::EventPayload;

#[test]
fn the_seed_hook_becomes_one_closed_conversation() {
    let events = parse(&fixture("post_hook_seed")).unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::ChatStarted,
            EventKind::Message,
            EventKind::ChatUpdated,
            EventKind::Message,
            EventKind::Message,
            EventKind::Message,
            EventKind::Message,
            EventKind::Rating,
            EventKind::ChatEnded,
        ]
    );
    assert_eq!(events[0].dedup_key, "chat_started:55039:1427470476687");
    assert_eq!(
        events[1].dedup_key,
        "message:55039:1427470476687:0:1427470439703"
    );
    assert_eq!(events[8].dedup_key, "chat_ended:55039:1427470476687");

    let conversation = fold(&events, "55039");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.started_at.unwrap().as_millis(),
        1_427_470_439_703
    );
    assert_eq!(
        conversation.ended_at.unwrap().as_millis(),
        1_427_470_476_687
    );
    assert_eq!(
        conversation.end_reason.as_ref().map(|r| r.value.as_str()),
        Some("visitor_closed")
    );
    assert_eq!(conversation.rating.as_ref().unwrap().value.score, Some(5));
    let visitor = &conversation.visitor.as_ref().unwrap().value;
    assert_eq!(visitor.id, "27671");
    assert_eq!(visitor.email.as_deref(), Some("dusan@domain.com"));
    assert_eq!(
        conversation.page_url.as_ref().unwrap().value,
        "http://developers.smartsupp.com/smartsupp/hook-post"
    );
    assert!(
        conversation.referrer.is_none(),
        "an empty referer is no referrer"
    );
    assert_eq!(conversation.attributes["variable.chatId"].value, "208");
    assert_eq!(conversation.attributes["variable.chatPackage"].value, "pro");
    let agents: Vec<&str> = conversation
        .current_agents()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(agents, ["agent:3"]);

    let messages = conversation.messages_in_order();
    assert_eq!(messages.len(), 6);
    let chat: Vec<(Role, &str, bool)> = messages
        .iter()
        .map(|m| (m.author_role, m.text.as_str(), m.automatic))
        .collect();
    assert_eq!(
        chat,
        [
            (Role::Visitor, "Hello", false),
            (Role::System, "agent.join", false),
            (Role::Agent, "This is triggered message", true),
            (Role::Agent, "Hi, how can i help you ?", false),
            (Role::Visitor, "tanks.", false),
            (Role::System, "close.visitorClose", false),
        ]
    );
    assert_eq!(
        messages[2].data,
        Some(serde_json::json!({"triggered_by": "Test Trigger"}))
    );
}

#[test]
fn parsing_twice_gives_the_same_events_and_keys() {
    for name in [
        "post_hook_seed",
        "callback_agent_replied",
        "callback_unknown_event",
    ] {
        let body = fixture(name);
        assert_eq!(parse(&body).unwrap(), parse(&body).unwrap(), "{name}");
    }
    let events = parse(&fixture("post_hook_seed")).unwrap();
    let mut keys: Vec<&str> = events.iter().map(|e| e.dedup_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), events.len(), "dedup keys must be distinct");
}

#[test]
fn missed_offline_and_dropped_chats_keep_their_own_status() {
    let missed = parse(&fixture("post_hook_missed")).unwrap();
    assert_eq!(missed[0].kind, EventKind::ChatMissed);
    assert_eq!(fold(&missed, "55101").status, ConversationStatus::Missed);

    let offline = parse(&fixture("post_hook_offline")).unwrap();
    assert_eq!(offline[0].kind, EventKind::OfflineMessage);
    let conversation = fold(&offline, "55102");
    assert_eq!(conversation.status, ConversationStatus::Offline);
    assert_eq!(conversation.messages.len(), 1);

    let dropped = parse(&fixture("post_hook_dropped")).unwrap();
    let conversation = fold(&dropped, "55103");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(conversation.end_reason.as_ref().unwrap().value, "dropped");
    assert!(conversation.messages_in_order()[0].automatic);
}

#[test]
fn agents_join_and_leave_through_system_entries() {
    let events = parse(&fixture("post_hook_agent_closed")).unwrap();
    let conversation = fold(&events, "55104");
    let agents: Vec<&str> = conversation
        .current_agents()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(agents, ["agent:12"]);
    assert_eq!(conversation.end_reason.unwrap().value, "agent_closed");
    let rating = conversation.rating.unwrap().value;
    assert_eq!(rating.score, Some(1));
    assert_eq!(
        rating.comment.as_deref(),
        Some("Too slow, and the answer did not help.")
    );
    // No visitor id: the visitor is known by the `from` of their messages.
    assert_eq!(conversation.visitor.unwrap().value.id, "visitor:Pq2Wm9sLe0");
}

#[test]
fn close_codes_become_snake_case_reasons() {
    assert_eq!(
        post_hook::end_reason_of("close.visitorClose").as_deref(),
        Some("visitor_closed")
    );
    assert_eq!(
        post_hook::end_reason_of("close.visitorLeft").as_deref(),
        Some("visitor_left")
    );
    assert_eq!(post_hook::end_reason_of("agent.join"), None);
}

#[test]
fn event_callbacks_fold_into_one_conversation() {
    let mut events = Vec::new();
    for name in [
        "callback_closed",
        "callback_agent_replied",
        "callback_opened",
        "callback_rated",
        "callback_trigger_replied",
        "callback_contact_replied",
        "callback_agent_assigned",
    ] {
        let mut parsed = parse(&fixture(name)).unwrap();
        assert_eq!(parsed.len(), 1, "{name}");
        events.append(&mut parsed);
    }
    let conversation = fold(&events, "cnv_8Hk2ZqWm");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.assigned_agent.as_ref().unwrap().value,
        "agent:3"
    );
    assert_eq!(conversation.rating.as_ref().unwrap().value.score, Some(5));
    assert_eq!(
        conversation.visitor.as_ref().unwrap().value.id,
        "ct_Qw8rT0ys"
    );
    let messages = conversation.messages_in_order();
    let roles: Vec<(Role, bool)> = messages
        .iter()
        .map(|m| (m.author_role, m.automatic))
        .collect();
    assert_eq!(
        roles,
        [
            (Role::Agent, true),
            (Role::Visitor, false),
            (Role::Agent, false)
        ]
    );
    assert_eq!(messages[1].attachments.len(), 1);
    assert_eq!(messages[2].author_id.as_deref(), Some("agent:3"));
}

#[test]
fn unknown_callback_events_are_kept() {
    let events = parse(&fixture("callback_unknown_event")).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::VendorEvent);
    assert_eq!(events[0].vendor_event, "contact.updated");
    let EventPayload::Vendor { data, subject } = &events[0].payload else {
        panic!("expected a vendor payload");
    };
    assert_eq!(subject, &None);
    assert_eq!(data["data"]["changes"][0], "email");
}

#[test]
fn malformed_bodies_are_refused_with_a_reason() {
    let cases: &[&[u8]] = &[
        b"",
        b"[]",
        b"{\"accountId\": 1}",
        b"{\"type\":\"event_callback\",\"event\":\"conversation.opened\",\"timestamp\":1714557600125,\"data\":{}}",
        b"\xff\xfe",
    ];
    for body in cases {
        let error = parse(body).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{body:?}");
    }
    let seed = String::from_utf8(fixture("post_hook_seed")).unwrap();
    for (from, to) in [
        ("\"rating\": 5", "\"rating\": 7"),
        ("\"endAt\": 1427470476687", "\"endAt\": 9427470476687000"),
        ("\"sentAt\": 1427470439703", "\"sentAt\": -1"),
        ("\"duration\": 36", "\"duration\": 1e300"),
        ("\"id\": 55039", "\"id\": \"55039\""),
    ] {
        let body = seed.replacen(from, to, 1);
        assert_ne!(body, seed);
        assert!(parse(body.as_bytes()).is_err(), "{to} accepted");
    }
}

#[test]
fn the_post_hook_needs_the_token() {
    let body = fixture("post_hook_seed");
    assert!(verify(&[("x-switchboard-token", TOKEN)], &[], &body).is_ok());
    assert!(verify(&[], &[("token", TOKEN)], &body).is_ok());
    let missing = verify(&[], &[], &body).unwrap_err();
    assert_eq!(missing.code, ErrorCode::Unauthenticated);
    assert!(verify(&[], &[("token", "nope")], &body).is_err());
    // The HMAC of the body is no substitute for the token on a POST hook.
    let signature = signature(APP.as_bytes(), &body);
    assert!(verify(&[(HMAC_HEADER, &signature)], &[], &body).is_err());
    // A connection without `webhook_secret` cannot accept POST hooks.
    let only_app =
        ConnectionConfig::new(ConnectionId::new("s").unwrap(), VENDOR).with_secret(APP_SECRET, APP);
    let error = run(&only_app, &[], &[("token", TOKEN)], &body, |r| {
        SmartsuppWebhook.verify(r)
    })
    .unwrap_err();
    assert!(
        error.message.contains("webhook_secret"),
        "{}",
        error.message
    );
}

#[test]
fn event_callbacks_need_the_hmac() {
    let body = fixture("callback_opened");
    let good = signature(APP.as_bytes(), &body);
    assert!(verify(&[(HMAC_HEADER, &good)], &[], &body).is_ok());
    assert!(verify(&[(HMAC_HEADER, &good.to_uppercase())], &[], &body).is_ok());
    assert!(verify(&[], &[], &body).is_err());
    assert!(
        verify(&[], &[("token", TOKEN)], &body).is_err(),
        "the token is no substitute"
    );
    let wrong = signature(b"another secret", &body);
    assert!(verify(&[(HMAC_HEADER, &wrong)], &[], &body).is_err());
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(verify(&[(HMAC_HEADER, &good)], &[], &tampered).is_err());
}

#[test]
fn the_signature_is_hex_hmac_sha256() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn the_factory_needs_a_secret_only_when_verifying() {
    let bare = ConnectionConfig::new(ConnectionId::new("smartsupp").unwrap(), VENDOR);
    let error = webhook(&bare).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("webhook_secret"));
    let mut open = bare.clone();
    open.verify = false;
    assert!(webhook(&open).is_ok());
    assert!(webhook(&bare.clone().with_secret(APP_SECRET, "x")).is_ok());
    assert!(webhook(&bare.with_secret(WEBHOOK_SECRET, "x")).is_ok());
}

#[test]
fn the_plugin_is_registered() {
    let registry = Registry::from_inventory().unwrap();
    let plugin = registry.get(VENDOR).expect("smartsupp is registered");
    assert!(plugin.webhook.is_some());
    let connector = plugin.connector.expect("smartsupp has a connector");
    let config = ConnectionConfig::new(ConnectionId::new("s").unwrap(), VENDOR);
    let error = connector(&config).expect_err("needs api_token");
    assert!(error.message.contains(API_TOKEN));
    assert!(connector(&config.with_secret(API_TOKEN, "t")).is_ok());
}

#[test]
fn dedup_key_parts_cannot_collide() {
    assert_eq!(dedup_key(&["a", "b:c"]), "a:b%3Ac");
    assert_ne!(dedup_key(&["a:b", "c"]), dedup_key(&["a", "b:c"]));
    assert_eq!(dedup_key(&["50%"]), "50%25");
}

/// Issue 10, item 6: a duplicated `type` must not let the hook token admit an event callback
/// (serde's derive refused the duplicate and fell back to the POST hook's token while the
/// mapping read the last value and parsed a callback).
#[test]
fn a_duplicated_format_key_is_refused_not_verified_with_the_other_credential() {
    let opened = String::from_utf8(fixture("callback_opened")).unwrap();
    let tail = opened.strip_prefix('{').unwrap();
    let bodies = [
        format!("{{\"type\":\"event_callback\",{tail}"),
        format!("{{\"type\":\"post_hook\",{tail}"),
        format!("{{\"event\":\"conversation.closed\",{tail}"),
    ];
    for body in &bodies {
        let body = body.as_bytes();
        for (headers, query) in [
            (vec![("x-switchboard-token", TOKEN)], vec![]),
            (vec![], vec![("token", TOKEN)]),
        ] {
            let error = verify(&headers, &query, body).expect_err("the token admitted it");
            assert!(
                matches!(
                    error.code,
                    ErrorCode::InvalidArgument | ErrorCode::Unauthenticated
                ),
                "{error}"
            );
        }
        // Even correctly signed, the ambiguous body is refused (400), by verify and parse.
        let signed = signature(APP.as_bytes(), body);
        let error = verify(&[(HMAC_HEADER, &signed)], &[], body).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{error}");
        assert!(error.message.contains("twice"), "{}", error.message);
        let error = parse(body).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
    }
    // Duplicates inside `data` decide neither the format nor a credential: still a callback,
    // still needing the HMAC.
    let nested = opened.replacen("\"data\":{", "\"data\":{\"x\":1,\"x\":2,", 1);
    assert_ne!(nested, opened);
    assert!(verify(&[], &[("token", TOKEN)], nested.as_bytes()).is_err());
    let signed = signature(APP.as_bytes(), nested.as_bytes());
    assert!(verify(&[(HMAC_HEADER, &signed)], &[], nested.as_bytes()).is_ok());
}

/// The POST hook is read straight into its fields: one of them given twice inside a nested
/// object is ambiguous and refused, like a top-level key; a key the hook does not read may
/// repeat.
#[test]
fn a_post_hook_field_given_twice_is_refused() {
    let seed = String::from_utf8(fixture("post_hook_seed")).unwrap();
    let twice = seed.replacen("\"rating\": 5", "\"rating\": 5, \"rating\": 1", 1);
    assert_ne!(twice, seed);
    let error = parse(twice.as_bytes()).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("duplicate field"),
        "{}",
        error.message
    );
    // Still the POST hook for verification: its token admits it, and parse refuses it.
    assert!(verify(&[], &[("token", TOKEN)], twice.as_bytes()).is_ok());
    let unread = seed.replacen("\"rating\": 5", "\"rating\": 5, \"x\": 1, \"x\": 2", 1);
    assert_eq!(
        parse(unread.as_bytes()).unwrap(),
        parse(seed.as_bytes()).unwrap()
    );
}

/// The payload examples of a production integration (fixtures `callback_sample_*`, see
/// fixtures/SOURCES.md): no `type`, `rating_value`/`rating_text` and `assigned` beside
/// `data.conversation`, bot replies with object content.
#[test]
fn the_production_samples_fold_into_one_conversation() {
    let mut events = Vec::new();
    for name in [
        "opened",
        "bot_replied",
        "contact_replied",
        "agent_assigned",
        "agent_joined",
        "agent_replied",
        "message_delivered",
        "agent_unassigned",
        "closed",
        "rated",
    ] {
        let body = fixture(&format!("callback_sample_{name}"));
        let signed = signature(APP.as_bytes(), &body);
        verify(&[(HMAC_HEADER, &signed)], &[], &body).unwrap();
        assert!(verify(&[], &[("token", TOKEN)], &body).is_err(), "{name}");
        events.extend(parse(&body).unwrap());
    }
    let conversation = fold(&events, "conv-001");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.end_reason.as_ref().map(|r| r.value.as_str()),
        Some("agent_closed")
    );
    let rating = &conversation.rating.as_ref().unwrap().value;
    assert_eq!(
        (rating.score, rating.comment.as_deref()),
        (Some(5), Some("Skvělá pomoc!"))
    );
    assert_eq!(
        conversation
            .assigned_agent
            .as_ref()
            .map(|a| a.value.as_str()),
        Some("agent:agent-001")
    );
    let messages = conversation.messages_in_order();
    let roles: Vec<(&str, Role)> = messages
        .iter()
        .map(|m| (m.key.as_str(), m.author_role))
        .collect();
    assert_eq!(
        roles,
        [
            ("msg-bot-001", Role::Bot),
            ("msg-001", Role::Visitor),
            ("msg-002", Role::Agent)
        ]
    );
    assert!(messages[0].automatic);
    assert_eq!(messages[0].text, "Vítejte! Jak vám mohu pomoci?");
    assert_eq!(messages[2].author_id.as_deref(), Some("agent:agent-001"));
    assert_eq!(
        conversation
            .visitor
            .as_ref()
            .map(|v| v.value.email.as_deref()),
        Some(Some("jana.novakova@example.com"))
    );
    assert_eq!(
        conversation
            .attributes
            .get("message.msg-002.delivery")
            .map(|a| a.value.as_str()),
        Some("delivered")
    );
    // `data` may be the conversation itself.
    let flat = parse(&fixture("callback_sample_closed_flat")).unwrap();
    assert_eq!(flat[0].conversation_external_id(), Some("conv-002"));
    assert_eq!(flat[0].kind, EventKind::ChatEnded);
    // contact.* events are kept, keyed by the contact.
    let contact = parse(&fixture("callback_sample_contact_created")).unwrap();
    assert_eq!(contact[0].kind, EventKind::VendorEvent);
    assert!(
        contact[0]
            .dedup_key
            .starts_with("contact.created:contact-001:")
    );
}
