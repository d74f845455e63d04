use switchboard_core::{ConnectionId, Conversation, ConversationId, ErrorCode, Registry};

use super::*;

const APP: &str = "1400187352";

fn config() -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("tencent").unwrap(), VENDOR)
        .with_setting(SDK_APP_ID, APP)
}

fn seed_query() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SdkAppid", APP),
        ("CallbackCommand", CALLBACK_COMMAND),
        ("contenttype", "json"),
        ("ClientIP", "127.0.0.1"),
        ("OptPlatform", "iOS"),
    ]
}

fn fixture(name: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let body = std::fs::read(format!("{root}/fixtures/{name}.json")).unwrap();
    let meta: Value = serde_json::from_slice(
        &std::fs::read(format!("{root}/fixtures/{name}.request.json")).unwrap(),
    )
    .unwrap();
    let query = meta["query"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (body, query)
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(format!("{}/fixtures", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json") && !n.ends_with(".request.json"))
            .map(|n| n.trim_end_matches(".json").to_owned())
            .collect();
    names.sort();
    names
}

fn with_request<T>(
    config: &ConnectionConfig,
    headers: &[(String, String)],
    query: &[(String, String)],
    body: &[u8],
    f: impl FnOnce(&WebhookRequest<'_>) -> T,
) -> T {
    f(&WebhookRequest {
        connection: config,
        headers,
        query,
        body,
        received_at: Timestamp::from_secs(1_700_000_000).unwrap(),
    })
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse_with(query: &[(&str, &str)], body: &[u8]) -> Result<IncomingEvent, Error> {
    let events = with_request(&config(), &[], &owned(query), body, |r| {
        TencentWebhook.parse(r)
    })?;
    assert_eq!(events.len(), 1);
    Ok(events.into_iter().next().unwrap())
}

fn parse_fixture(name: &str) -> IncomingEvent {
    let (body, query) = fixture(name);
    let mut events = with_request(&config(), &[], &query, &body, |r| TencentWebhook.parse(r))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn session(prefix: &str) -> Conversation {
    let mut conversation: Option<Conversation> = None;
    // Reverse order: folding must not depend on arrival order.
    for name in fixture_names()
        .iter()
        .rev()
        .filter(|n| n.starts_with(prefix))
    {
        let event = parse_fixture(name);
        if let EventPayload::Conversation(patch) = &event.payload {
            let conversation = conversation.get_or_insert_with(|| {
                Conversation::new(
                    ConversationId::new(ConnectionId::new("tencent").unwrap(), &patch.external_id),
                    VENDOR,
                )
            });
            assert_eq!(conversation.id.external_id, patch.external_id, "{name}");
            conversation.apply(patch, event.occurred_at, &event.dedup_key);
        }
    }
    conversation.unwrap()
}

#[test]
fn the_seed_body_is_a_visitor_message_in_the_bot_phase() {
    let event = parse_fixture("a02_seed_chatbot_user_send_msg");
    assert_eq!(event.kind, EventKind::Message);
    assert_eq!(event.vendor_event, "ChatBot.UserSendMsg");
    assert_eq!(
        event.dedup_key,
        "msg:152_1600012345_abcdefg:ChatBot.UserSendMsg"
    );
    assert_eq!(event.occurred_at.as_millis(), 1_725_540_020_017);
    let EventPayload::Conversation(patch) = &event.payload else {
        panic!("expected a conversation patch");
    };
    assert_eq!(patch.external_id, "2baf4d84-beb4-4607-a1ea-6ebcaef3e0e6");
    assert!(
        patch.rating.is_none(),
        "stars on a message event are no rating"
    );
    let message = &patch.messages[0];
    assert_eq!(message.key, "152_1600012345_abcdefg");
    assert_eq!(message.author_role, Role::Visitor);
    assert_eq!(message.author_id.as_deref(), Some("your_user_id"));
    assert_eq!(message.text, "请问如何申请退费?");
    assert!(!message.automatic);
    assert_eq!(patch.attributes["channel_type"], "SDK");
    assert_eq!(
        patch.attributes["cloud_custom_data"],
        "your cloud custom data"
    );
    assert_eq!(patch.attributes["client_ip"], "127.0.0.1");
}

#[test]
fn all_seventeen_event_types_are_mapped() {
    let mut seen = BTreeMap::new();
    for name in fixture_names() {
        let event = parse_fixture(&name);
        seen.insert(event.vendor_event.clone(), event.kind);
    }
    let expected = [
        ("SessionBegin", EventKind::ChatStarted),
        ("ChatBot.UserSendMsg", EventKind::Message),
        ("ChatBot.RobotSendMsg", EventKind::Message),
        ("Human.UserSendMsg", EventKind::Message),
        ("Human.AgentSendMsg", EventKind::Message),
        ("TransferringToHuman", EventKind::ChatUpdated),
        ("TransferringToHumanWait", EventKind::ChatUpdated),
        ("TransferToHumanSuccess", EventKind::ChatUpdated),
        ("NoAgentOnline", EventKind::ChatUpdated),
        ("AgentForward", EventKind::ChatUpdated),
        ("SatisfactionSelected", EventKind::Rating),
        ("SessionUserEnd", EventKind::ChatEnded),
        ("SessionAgentEnd", EventKind::ChatEnded),
        ("SessionUserTimeoutEnd", EventKind::ChatEnded),
        ("SessionAgentTimeoutEnd", EventKind::ChatEnded),
        ("SessionPendingAutoFinishEnd", EventKind::ChatEnded),
        ("SessionEnd", EventKind::ChatEnded),
        ("SessionTagged", EventKind::VendorEvent),
    ];
    for (event, kind) in expected {
        assert_eq!(seen.get(event), Some(&kind), "{event}");
    }
    assert_eq!(seen.len(), expected.len());
}

#[test]
fn session_a_folds_into_a_rated_closed_conversation() {
    let conversation = session("a");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.started_at.unwrap().as_millis(),
        1_725_540_019_500
    );
    assert_eq!(
        conversation.ended_at.unwrap().as_millis(),
        1_725_540_195_020
    );
    assert_eq!(conversation.end_reason.as_ref().unwrap().value, "user_end");
    assert_eq!(
        conversation.assigned_agent.as_ref().unwrap().value,
        "lily@qq.com"
    );
    let rating = &conversation.rating.as_ref().unwrap().value;
    assert_eq!(
        (rating.score, rating.scale.as_deref()),
        (Some(4), Some("1-5"))
    );
    assert_eq!(conversation.attributes["human_transfer"].value, "succeeded");
    let agents: Vec<&str> = conversation
        .current_agents()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(agents, ["lily@qq.com", "test@qq.com"]);
    let messages = conversation.messages_in_order();
    let roles: Vec<(Role, bool)> = messages
        .iter()
        .map(|m| (m.author_role, m.automatic))
        .collect();
    assert_eq!(
        roles,
        [
            (Role::Visitor, false),
            (Role::Bot, true),
            (Role::Visitor, false),
            (Role::Agent, false),
            (Role::Agent, false),
        ]
    );
    // The image: the original as the attachment, every size kept in data, text alongside.
    assert_eq!(messages[2].text, "这是订单截图");
    assert_eq!(
        messages[2].attachments[0].url.as_deref(),
        Some("https://im.example.qcloud.com/1400187352/orig/26dc4b3f.jpg")
    );
    assert_eq!(
        messages[2].data.as_ref().unwrap()[0]["MsgContent"]["ImageInfoArray"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        messages[4].attachments[0].name.as_deref(),
        Some("退款申请表.pdf")
    );
    assert_eq!(messages[4].author_id.as_deref(), Some("lily@qq.com"));
}

#[test]
fn session_b_stays_unanswered_and_auto_finishes() {
    let conversation = session("b");
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(
        conversation.end_reason.as_ref().unwrap().value,
        "pending_auto_finish"
    );
    assert_eq!(
        conversation.attributes["human_transfer"].value,
        "no_agent_online"
    );
    assert!(conversation.assigned_agent.is_none());
    let messages = conversation.messages_in_order();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].attachments[0].content_type.as_deref(),
        Some("sound")
    );
    let location = &messages[0].data.as_ref().unwrap()[1];
    assert_eq!(location["MsgType"], "TIMLocationElem");
    assert_eq!(location["MsgContent"]["Latitude"], 22.540503);
    assert_eq!(
        messages[1].attachments[0].content_type.as_deref(),
        Some("video/mp4")
    );
}

#[test]
fn unknown_elements_and_events_are_kept() {
    let conversation = session("c");
    assert_eq!(
        conversation.end_reason.as_ref().unwrap().value,
        "agent_timeout"
    );
    assert_eq!(conversation.attributes["is_contact_user"].value, "true");
    let message = conversation
        .messages_in_order()
        .into_iter()
        .find(|m| m.author_role == Role::Visitor)
        .unwrap();
    let data = message.data.as_ref().unwrap();
    assert_eq!(data[0]["MsgType"], "TIMCustomElem");
    assert_eq!(data[1]["MsgType"], "TIMRelayElem");
    assert_eq!(data[1]["MsgContent"]["MsgNum"], 2);

    let event = parse_fixture("c04_unknown_event");
    assert_eq!(event.kind, EventKind::VendorEvent);
    let EventPayload::Vendor { subject, data } = &event.payload else {
        panic!("expected a vendor payload");
    };
    assert_eq!(
        subject.as_deref(),
        Some("e5d9b1f0-6a2c-4c7d-8f3e-0b4a9c2d7e61")
    );
    assert_eq!(data["Event"], "SessionTagged");

    assert_eq!(session("d").end_reason.unwrap().value, "user_timeout");
    assert_eq!(session("e").end_reason.unwrap().value, "agent_end");
}

#[test]
fn dedup_keys_prefer_request_id_then_msg_key_then_fields() {
    assert_eq!(
        parse_fixture("a07_human_user_send_msg_image").dedup_key,
        "request:b3f0c1d2-0007-4a8e-9c11-2baf4d840007"
    );
    assert_eq!(
        parse_fixture("b04_human_user_send_msg_sound_location").dedup_key,
        "msg:201_1725600020_qwertyu:Human.UserSendMsg"
    );
    assert_eq!(
        parse_fixture("b03_no_agent_online").dedup_key,
        "event:7c1e0a52-3f4d-4b8e-9a61-d2f5c0b9e114:NoAgentOnline:1725600004300"
    );
    let mut keys: Vec<String> = fixture_names()
        .iter()
        .map(|n| parse_fixture(n).dedup_key)
        .collect();
    let count = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), count, "every fixture has its own dedup key");
}

#[test]
fn the_callback_command_must_be_the_session_event_notify() {
    let (body, _) = fixture("a02_seed_chatbot_user_send_msg");
    let mut query = seed_query();
    query[1].1 = "C2C.CallbackAfterSendMsg";
    let error = parse_with(&query, &body).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("Desk.SessionEventNotify"),
        "{}",
        error.message
    );

    // The body's command counts too, and one of the two must be there.
    let text = String::from_utf8(body.clone()).unwrap();
    let other = text.replace("\"Desk.SessionEventNotify\"", "\"Desk.Other\"");
    assert!(parse_with(&seed_query(), other.as_bytes()).is_err());
    let without = text.replace("\"CallbackCommand\": \"Desk.SessionEventNotify\",", "");
    assert_ne!(without, text);
    assert!(parse_with(&seed_query(), without.as_bytes()).is_ok());
    let no_query: Vec<(&str, &str)> = seed_query()
        .into_iter()
        .filter(|(k, _)| *k != "CallbackCommand")
        .collect();
    assert!(parse_with(&no_query, &body).is_ok());
    assert!(parse_with(&no_query, without.as_bytes()).is_err());

    let mut xml = seed_query();
    xml[2].1 = "xml";
    assert!(parse_with(&xml, &body).is_err());
}

#[test]
fn malformed_callbacks_are_refused() {
    let (body, _) = fixture("a02_seed_chatbot_user_send_msg");
    let text = String::from_utf8(body).unwrap();
    for (from, to) in [
        (
            "\"EventTime\": 1725540020017",
            "\"EventTime\": 99999999999999999",
        ),
        (
            "\"EventTime\": 1725540020017",
            "\"EventTime\": \"1725540020017\"",
        ),
        (
            "\"SessionId\": \"2baf4d84-beb4-4607-a1ea-6ebcaef3e0e6\"",
            "\"SessionId\": \"\"",
        ),
        ("\"SatisfactionSelected\": 5", "\"SatisfactionSelected\": 6"),
        ("{\"Text\": \"请问如何申请退费?\"}", "{\"Text\": 7}"),
        ("\"MsgBody\": [", "\"Nothing\": ["),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        let error = parse_with(&seed_query(), bad.as_bytes()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{to}");
    }
    for body in [&b""[..], b"[]", b"{}", b"\xff"] {
        assert!(parse_with(&seed_query(), body).is_err());
    }
    let (rating, query) = fixture("a11_satisfaction_selected");
    let no_stars = String::from_utf8(rating)
        .unwrap()
        .replace("\"SatisfactionSelected\":4", "\"SatisfactionSelected\":0");
    let query: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(parse_with(&query, no_stars.as_bytes()).is_err());
    let (located, query) = fixture("b04_human_user_send_msg_sound_location");
    let off_earth = String::from_utf8(located)
        .unwrap()
        .replace("22.540503", "922.5");
    let query: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(parse_with(&query, off_earth.as_bytes()).is_err());
}

#[test]
fn verification_checks_the_sdk_app_id_and_the_optional_token() {
    let (body, query) = fixture("a02_seed_chatbot_user_send_msg");
    let verify =
        |config: &ConnectionConfig, headers: &[(&str, &str)], query: &[(String, String)]| {
            with_request(config, &owned(headers), query, &body, |r| {
                TencentWebhook.verify(r)
            })
        };
    assert!(verify(&config(), &[], &query).is_ok());
    let wrong = config().with_setting(SDK_APP_ID, "1400000000");
    assert_eq!(
        verify(&wrong, &[], &query).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    let stripped: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "SdkAppid")
        .cloned()
        .collect();
    assert!(verify(&config(), &[], &stripped).is_err());
    let unconfigured = ConnectionConfig::new(ConnectionId::new("t").unwrap(), VENDOR);
    assert!(verify(&unconfigured, &[], &query).is_err());

    let with_token = config().with_secret(WEBHOOK_SECRET, "tok-77");
    assert!(
        verify(&with_token, &[], &query).is_err(),
        "the token is required once configured"
    );
    let mut tokened = query.clone();
    tokened.push(("token".to_owned(), "tok-77".to_owned()));
    assert!(verify(&with_token, &[], &tokened).is_ok());
    assert!(verify(&with_token, &[("x-switchboard-token", "tok-77")], &query).is_ok());
    assert!(verify(&with_token, &[("x-switchboard-token", "tok-78")], &query).is_err());
}

/// The example of Tencent's webhook authentication (cloud.tencent.com/document/product/269/117703,
/// 安全问题): Token `xxxxyyyy`, RequestTime `1669872112`, Sign
/// `sha256(xxxxyyyy1669872112)`.
const DOC_TOKEN: &str = "xxxxyyyy";
const DOC_TIME: &str = "1669872112";
const DOC_SIGN: &str = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";

fn verify_signed(
    config: &ConnectionConfig,
    extra: &[(&str, &str)],
    received_secs: i64,
) -> Result<(), Error> {
    let (body, mut query) = fixture("a02_seed_chatbot_user_send_msg");
    query.extend(owned(extra));
    TencentWebhook.verify(&WebhookRequest {
        connection: config,
        headers: &[],
        query: &query,
        body: &body,
        received_at: Timestamp::from_secs(received_secs).unwrap(),
    })
}

#[test]
fn tencents_webhook_authentication_sign_is_checked_with_the_documented_example() {
    let signed = config().with_secret(WEBHOOK_SECRET, DOC_TOKEN);
    let at: i64 = DOC_TIME.parse().unwrap();
    let doc = [("Sign", DOC_SIGN), ("RequestTime", DOC_TIME)];
    verify_signed(&signed, &doc, at).unwrap();
    verify_signed(&signed, &doc, at + 60).unwrap();
    verify_signed(&signed, &doc, at - 60).unwrap();
    let upper = DOC_SIGN.to_ascii_uppercase();
    verify_signed(&signed, &[("Sign", &upper), ("RequestTime", DOC_TIME)], at).unwrap();

    // Older than a minute: a replay (or a clock to fix), unless the window is widened.
    let stale = verify_signed(&signed, &doc, at + 61).unwrap_err();
    assert_eq!(stale.code, ErrorCode::Unauthenticated);
    assert!(
        stale.message.contains("sign_max_age_secs"),
        "{}",
        stale.message
    );
    let wide = signed.clone().with_setting(SIGN_MAX_AGE_SETTING, "3600");
    verify_signed(&wide, &doc, at + 600).unwrap();

    // Another token, another time, a half signature, a signature that is not a time.
    let other = config().with_secret(WEBHOOK_SECRET, "xxxxyyyz");
    assert!(verify_signed(&other, &doc, at).is_err());
    let later = [("Sign", DOC_SIGN), ("RequestTime", "1669872113")];
    assert!(verify_signed(&signed, &later, at).is_err());
    assert!(verify_signed(&signed, &[("Sign", DOC_SIGN)], at).is_err());
    assert!(verify_signed(&signed, &[("RequestTime", DOC_TIME)], at).is_err());
    let not_a_time = [("Sign", DOC_SIGN), ("RequestTime", "soon")];
    assert!(verify_signed(&signed, &not_a_time, at).is_err());
    // A right token does not excuse a wrong signature.
    let mixed = [
        ("Sign", "00"),
        ("RequestTime", DOC_TIME),
        ("token", DOC_TOKEN),
    ];
    assert!(verify_signed(&signed, &mixed, at).is_err());
    // Without a secret the SdkAppid check alone decides, whatever Sign says.
    verify_signed(&config(), &[("Sign", "00"), ("RequestTime", "0")], at).unwrap();
    // The SdkAppid is still checked on a signed callback.
    let wrong_app = signed.clone().with_setting(SDK_APP_ID, "1400000000");
    assert!(verify_signed(&wrong_app, &doc, at).is_err());
}

#[test]
fn the_signed_fixture_verifies_with_its_token_when_it_arrives() {
    let (body, query) = fixture("f01_signed_human_user_send_msg");
    let signed = config().with_secret(WEBHOOK_SECRET, "tencent-desk-token-51c0");
    let at = |secs: i64| WebhookRequest {
        connection: &signed,
        headers: &[],
        query: &query,
        body: &body,
        received_at: Timestamp::from_secs(secs).unwrap(),
    };
    TencentWebhook.verify(&at(1_725_540_025)).unwrap();
    assert!(TencentWebhook.verify(&at(1_725_540_100)).is_err());
}

#[test]
fn a_bad_sign_max_age_setting_is_refused_at_start_up() {
    let bad = config().with_setting(SIGN_MAX_AGE_SETTING, "a minute");
    let error = webhook(&bad).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains(SIGN_MAX_AGE_SETTING),
        "{}",
        error.message
    );
}

#[test]
fn the_reply_is_byte_exact() {
    let ok = TencentWebhook.reply(Ok(&IngestSummary {
        appended: 1,
        duplicates: 0,
    }));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.content_type, "application/json");
    assert_eq!(
        ok.body,
        br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    );
    let redelivered = TencentWebhook.reply(Ok(&IngestSummary {
        appended: 0,
        duplicates: 1,
    }));
    assert_eq!(redelivered, ok);

    let bad = TencentWebhook.reply(Err(&Error::invalid("Event is empty; send the event type")));
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        br#"{"ActionStatus":"FAIL","ErrorInfo":"Event is empty; send the event type","ErrorCode":1}"#
    );
    let auth = TencentWebhook.reply(Err(&Error::unauthenticated("no \"SdkAppid\"")));
    assert_eq!(auth.status, 401);
    assert_eq!(
        auth.body,
        br#"{"ActionStatus":"FAIL","ErrorInfo":"no \"SdkAppid\"","ErrorCode":2}"#
    );
    let down = TencentWebhook.reply(Err(&Error::unavailable("the store is busy; retry")));
    assert_eq!(down.status, 503);
    assert_eq!(
        down.body,
        br#"{"ActionStatus":"FAIL","ErrorInfo":"the store is busy; retry","ErrorCode":3}"#
    );
    assert_eq!(
        TencentErrorCode::of(ErrorCode::PayloadTooLarge),
        TencentErrorCode::InvalidRequest
    );
    assert_eq!(
        TencentErrorCode::of(ErrorCode::Internal),
        TencentErrorCode::Unavailable
    );
}

#[test]
fn the_factory_needs_the_sdk_app_id_only_when_verifying() {
    let bare = ConnectionConfig::new(ConnectionId::new("tencent").unwrap(), VENDOR);
    let error = webhook(&bare).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("sdk_app_id"));
    let mut open = bare.clone();
    open.verify = false;
    assert!(webhook(&open).is_ok());
    assert!(webhook(&config()).is_ok());
}

#[test]
fn the_plugin_is_registered() {
    let registry = Registry::from_inventory().unwrap();
    let plugin = registry.get(VENDOR).expect("tencent is registered");
    assert!(plugin.webhook.is_some());
    assert!(plugin.connector.is_none());
}
