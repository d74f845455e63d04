//! The POST hook: one finished conversation (chat, missed chat or offline message) per request,
//! as the Hungarian seed document describes it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::{
    ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, IncomingEvent, Message,
    Participant, Rating, Role,
};

use crate::{dedup_key, invalid_body, millis};

/// `vendor_event` of every event made from a POST hook (the hook has no event names).
pub(crate) const VENDOR_EVENT: &str = "post_hook";

/// The POST hook body. Field names follow the seed exactly.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostHook {
    account_id: u64,
    /// Milliseconds.
    begin_at: i64,
    /// Milliseconds.
    end_at: i64,
    channel: Channel,
    visitor: Visitor,
    #[serde(default)]
    paths: Option<Vec<PathEntry>>,
    messages: Vec<HookMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    id: u64,
    #[serde(default)]
    is_chat: Option<bool>,
    #[serde(default)]
    is_missed: Option<bool>,
    #[serde(default)]
    is_triggered: Option<bool>,
    #[serde(default)]
    is_offline: Option<bool>,
    #[serde(default)]
    is_completed: Option<bool>,
    #[serde(default)]
    is_dropped: Option<bool>,
    /// Seconds.
    #[serde(default)]
    duration: Option<u32>,
    /// Seconds.
    #[serde(default)]
    avg_response: Option<u32>,
    /// Seconds.
    #[serde(default)]
    first_response: Option<u32>,
    #[serde(default)]
    messages_count: Option<u32>,
    #[serde(default)]
    words_count: Option<u32>,
    /// `null` when the visitor did not rate.
    #[serde(default)]
    rating: Option<i64>,
    #[serde(default)]
    rating_desc: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    group: Option<Scalar>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default)]
    variables: Option<Variables>,
}

/// A string or a number (the visitor's group: `null` in the seed, its type is not documented).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
}

impl Scalar {
    fn to_text(&self) -> String {
        match self {
            Scalar::Text(text) => text.clone(),
            Scalar::Number(number) => number.to_string(),
        }
    }
}

/// Visitor variables: an object of `{label, value}`, or `[]` when there are none (as PHP's
/// `json_encode` writes an empty map).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Variables {
    Map(BTreeMap<String, Variable>),
    Empty([(); 0]),
}

#[derive(Debug, Deserialize)]
struct Variable {
    #[serde(default)]
    #[allow(dead_code)]
    // reason: documented vendor field; the label is kept in the raw body only
    label: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct PathEntry {
    url: String,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookMessage {
    /// `visitor`, `agent` or `system`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    from: Option<String>,
    content: String,
    /// Milliseconds.
    sent_at: i64,
    /// The trigger's name for automatic messages, `null` otherwise.
    #[serde(default)]
    triggered_by: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A variable's value as text: strings as they are, anything else as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `close.visitorClose` -> `visitor_closed`; other `close.*` codes in snake_case.
pub(crate) fn end_reason_of(code: &str) -> Option<String> {
    let reason = code.strip_prefix("close.")?;
    Some(match reason {
        "visitorClose" => "visitor_closed".to_owned(),
        "agentClose" => "agent_closed".to_owned(),
        other => {
            let mut snake = String::new();
            for c in other.chars() {
                if c.is_ascii_uppercase() {
                    if !snake.is_empty() {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            snake
        }
    })
}

/// Parses a POST hook body (a JSON object whose top-level keys are unique) into the
/// conversation's events. The body is read straight into the hook's fields: a field given twice
/// inside one of its objects is refused, as at the top level.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let hook: PostHook = serde_json::from_slice(body).map_err(|e| invalid_body("POST hook", &e))?;
    let begin = millis(hook.begin_at, "beginAt")?;
    let end = millis(hook.end_at, "endAt")?;
    let channel = &hook.channel;
    let conversation = channel.id.to_string();
    let end_key = hook.end_at.to_string();

    let offline = channel.is_offline == Some(true);
    let missed = channel.is_missed == Some(true);
    let dropped = channel.is_dropped == Some(true);
    let (start_kind, status) = if offline {
        (EventKind::OfflineMessage, ConversationStatus::Offline)
    } else if missed {
        (EventKind::ChatMissed, ConversationStatus::Missed)
    } else {
        (EventKind::ChatStarted, ConversationStatus::Open)
    };

    let rating = match channel.rating {
        None | Some(0) => None,
        Some(score @ 1..=5) => Some(Rating {
            score: Some(score),
            scale: Some("1-5".to_owned()),
            label: None,
            comment: non_empty(channel.rating_desc.clone()),
        }),
        Some(other) => {
            return Err(Error::invalid(format!(
                "channel.rating is {other}; Smartsupp rates chats 1 to 5 (or null when unrated)"
            )));
        }
    };

    let mut messages = Vec::with_capacity(hook.messages.len());
    for message in &hook.messages {
        messages.push((message, millis(message.sent_at, "messages[].sentAt")?));
    }

    let mut events = Vec::with_capacity(hook.messages.len() + 3);

    // The start: who, where from, what they filled in.
    let mut start = ConversationPatch::new(&conversation);
    start.status = Some(status);
    start.started_at = Some(begin);
    start.visitor = visitor_participant(&hook.visitor, &hook.messages);
    start.referrer = non_empty(hook.visitor.referer.clone());
    start
        .attributes
        .insert("account_id".to_owned(), hook.account_id.to_string());
    if let Some(Variables::Map(variables)) = &hook.visitor.variables {
        for (name, variable) in variables {
            let text = variable.value.as_ref().map(value_text).unwrap_or_default();
            start.attributes.insert(format!("variable.{name}"), text);
        }
    }
    for (i, path) in hook.paths.iter().flatten().enumerate() {
        if i == 0 {
            start.page_url = Some(path.url.clone());
        }
        start
            .attributes
            .insert(format!("path.{i}.url"), path.url.clone());
        if let Some(title) = path.title.as_ref().filter(|t| !t.is_empty()) {
            start
                .attributes
                .insert(format!("path.{i}.title"), title.clone());
        }
    }
    events.push(IncomingEvent {
        dedup_key: dedup_key(&[start_kind.as_str(), &conversation, &end_key]),
        kind: start_kind,
        vendor_event: VENDOR_EVENT.to_owned(),
        occurred_at: begin,
        payload: EventPayload::Conversation(start),
    });

    // One event per entry of `messages`, system entries included.
    let mut end_reason = None;
    for (index, (message, sent_at)) in messages.iter().enumerate() {
        let mut patch = ConversationPatch::new(&conversation);
        let mut kind = EventKind::Message;
        let triggered_by = non_empty(message.triggered_by.clone());
        let from = non_empty(message.from.clone());
        let name = non_empty(message.name.clone());
        let role = match message.kind.as_str() {
            "visitor" => Role::Visitor,
            "agent" => Role::Agent,
            _ => Role::System,
        };
        let mut data = serde_json::Map::new();
        if let Some(trigger) = &triggered_by {
            data.insert("triggered_by".to_owned(), Value::String(trigger.clone()));
        }
        if role == Role::System {
            if message.kind != "system" {
                data.insert("type".to_owned(), Value::String(message.kind.clone()));
            }
            let agent = from.as_ref().filter(|f| f.starts_with("agent:"));
            match (message.content.as_str(), agent) {
                ("agent.join", Some(agent)) => {
                    kind = EventKind::ChatUpdated;
                    patch.agents_joined.push(Participant {
                        id: agent.clone(),
                        name: name.clone(),
                        ..Participant::default()
                    });
                }
                ("agent.leave", Some(agent)) => {
                    kind = EventKind::ChatUpdated;
                    patch.agents_left.push(agent.clone());
                }
                (code, _) => {
                    if let Some(reason) = end_reason_of(code) {
                        end_reason = Some(reason);
                    }
                }
            }
        }
        patch.messages.push(Message {
            key: format!("{}-{index}", message.sent_at),
            author_role: role,
            author_id: from,
            author_name: name,
            text: message.content.clone(),
            attachments: Vec::new(),
            sent_at: *sent_at,
            automatic: triggered_by.is_some(),
            data: (!data.is_empty()).then_some(Value::Object(data)),
        });
        events.push(IncomingEvent {
            dedup_key: dedup_key(&[
                "message",
                &conversation,
                &end_key,
                &index.to_string(),
                &message.sent_at.to_string(),
            ]),
            kind,
            vendor_event: VENDOR_EVENT.to_owned(),
            occurred_at: *sent_at,
            payload: EventPayload::Conversation(patch),
        });
    }

    if let Some(rating) = rating {
        let mut patch = ConversationPatch::new(&conversation);
        patch.rating = Some(rating);
        events.push(IncomingEvent {
            dedup_key: dedup_key(&["rating", &conversation, &end_key]),
            kind: EventKind::Rating,
            vendor_event: VENDOR_EVENT.to_owned(),
            occurred_at: end,
            payload: EventPayload::Conversation(patch),
        });
    }

    // The end: final status, why, and the channel's statistics.
    let mut ended = ConversationPatch::new(&conversation);
    ended.status = Some(match status {
        ConversationStatus::Open => ConversationStatus::Closed,
        other => other,
    });
    ended.ended_at = Some(end);
    ended.end_reason = if dropped {
        Some("dropped".to_owned())
    } else {
        end_reason
    };
    let flags = [
        ("channel.is_chat", channel.is_chat),
        ("channel.is_missed", channel.is_missed),
        ("channel.is_triggered", channel.is_triggered),
        ("channel.is_offline", channel.is_offline),
        ("channel.is_completed", channel.is_completed),
        ("channel.is_dropped", channel.is_dropped),
    ];
    for (name, flag) in flags {
        if let Some(flag) = flag {
            ended.attributes.insert(name.to_owned(), flag.to_string());
        }
    }
    let counts = [
        ("channel.duration_secs", channel.duration),
        ("channel.avg_response_secs", channel.avg_response),
        ("channel.first_response_secs", channel.first_response),
        ("channel.messages_count", channel.messages_count),
        ("channel.words_count", channel.words_count),
    ];
    for (name, count) in counts {
        if let Some(count) = count {
            ended.attributes.insert(name.to_owned(), count.to_string());
        }
    }
    events.push(IncomingEvent {
        dedup_key: dedup_key(&[EventKind::ChatEnded.as_str(), &conversation, &end_key]),
        kind: EventKind::ChatEnded,
        vendor_event: VENDOR_EVENT.to_owned(),
        occurred_at: end,
        payload: EventPayload::Conversation(ended),
    });
    Ok(events)
}

/// The visitor: `visitor.id`, else the `from` of their first message.
fn visitor_participant(visitor: &Visitor, messages: &[HookMessage]) -> Option<Participant> {
    let id = visitor.id.map(|id| id.to_string()).or_else(|| {
        messages
            .iter()
            .find(|m| m.kind == "visitor")
            .and_then(|m| non_empty(m.from.clone()))
    })?;
    let mut attributes = BTreeMap::new();
    let fields = [
        ("note", &visitor.note),
        ("ip_address", &visitor.ip_address),
        ("city", &visitor.city),
        ("country_code", &visitor.country_code),
        ("country", &visitor.country),
        ("user_agent", &visitor.user_agent),
        ("platform", &visitor.platform),
    ];
    for (name, value) in fields {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            attributes.insert(name.to_owned(), value.clone());
        }
    }
    if let Some(group) = &visitor.group {
        let group = group.to_text();
        if !group.is_empty() {
            attributes.insert("group".to_owned(), group);
        }
    }
    Some(Participant {
        id,
        name: non_empty(visitor.name.clone()),
        email: non_empty(visitor.email.clone()),
        phone: None,
        attributes,
    })
}
