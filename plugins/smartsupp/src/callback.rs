//! The signed event callbacks: `{type: "event_callback", event, timestamp, account_id, app_id,
//! data}`. The seed does not describe them; the shapes of `data` follow Smartsupp's public API
//! (v2) objects as far as they are known, and every assumption is listed in the crate docs.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_core::{
    Attachment, ConversationPatch, ConversationStatus, Error, EventKind, EventPayload,
    IncomingEvent, Message, Participant, Rating, Role, Timestamp,
};

use crate::{dedup_key, invalid_body};

/// The envelope's `type`.
pub(crate) const EVENT_CALLBACK: &str = "event_callback";

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    #[allow(dead_code)] // reason: checked by the caller before this is parsed
    kind: String,
    event: String,
    timestamp: Time,
    #[serde(default)]
    account_id: Option<Id>,
    #[serde(default)]
    #[allow(dead_code)] // reason: identifies the app, which the HMAC has already checked
    app_id: Option<Id>,
    data: serde_json::Map<String, Value>,
}

/// An id, sent as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(u64),
}

impl Id {
    fn text(&self) -> Result<String, Error> {
        match self {
            Id::Text(text) if text.is_empty() => Err(Error::invalid(
                "an id in the Smartsupp event is empty; send the conversation, message, agent or contact id",
            )),
            Id::Text(text) => Ok(text.clone()),
            Id::Number(number) => Ok(number.to_string()),
        }
    }
}

/// A time: milliseconds (or seconds, below 10^11) since the epoch, or RFC 3339 text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Time {
    Number(i64),
    Text(String),
}

impl Time {
    fn timestamp(&self, field: &str) -> Result<Timestamp, Error> {
        let parsed = match self {
            Time::Number(n) if (0..100_000_000_000).contains(n) => Timestamp::from_secs(*n),
            Time::Number(n) => Timestamp::from_millis(*n),
            Time::Text(text) => Timestamp::parse_rfc3339(text),
        };
        parsed.ok_or_else(|| {
            Error::invalid(format!(
                "`{field}` is not a time between 1970 and 9999; send milliseconds since the epoch or RFC 3339"
            ))
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(default)]
    conversation: Option<Conversation>,
    #[serde(default)]
    conversation_id: Option<Id>,
    #[serde(default)]
    message: Option<CallbackMessage>,
    #[serde(default)]
    agent: Option<Agent>,
    #[serde(default)]
    contact: Option<Contact>,
    #[serde(default)]
    rating: Option<CallbackRating>,
}

#[derive(Debug, Deserialize)]
struct Conversation {
    id: Id,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created_at: Option<Time>,
    #[serde(default)]
    finished_at: Option<Time>,
    #[serde(default)]
    rating_value: Option<i64>,
    #[serde(default)]
    rating_text: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct CallbackMessage {
    id: Id,
    #[serde(default)]
    conversation_id: Option<Id>,
    /// `contact`, `agent`, `trigger`, `bot`...
    #[serde(default)]
    sub_type: Option<String>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    created_at: Option<Time>,
    #[serde(default)]
    agent_id: Option<Id>,
    #[serde(default)]
    trigger_id: Option<Id>,
    #[serde(default)]
    attachments: Option<Vec<CallbackAttachment>>,
}

/// A message's content: `{type: "text", text, data}` or plain text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Structured {
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        data: Option<Value>,
    },
}

#[derive(Debug, Deserialize)]
struct CallbackAttachment {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    id: Id,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Contact {
    id: Id,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallbackRating {
    value: i64,
    #[serde(default)]
    text: Option<String>,
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

/// Agents are `agent:<id>`, as the POST hook's `from` names them, so an agent is one
/// participant whichever format mentioned them.
fn agent_participant(agent: &Agent) -> Result<Participant, Error> {
    Ok(Participant {
        id: format!("agent:{}", agent.id.text()?),
        name: non_empty(agent.full_name.as_ref()).or_else(|| non_empty(agent.nickname.as_ref())),
        email: non_empty(agent.email.as_ref()),
        ..Participant::default()
    })
}

fn contact_participant(contact: &Contact) -> Result<Participant, Error> {
    Ok(Participant {
        id: contact.id.text()?,
        name: non_empty(contact.name.as_ref()),
        email: non_empty(contact.email.as_ref()),
        phone: non_empty(contact.phone.as_ref()),
        ..Participant::default()
    })
}

fn rating_score(value: i64) -> Result<i64, Error> {
    if (1..=5).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(format!(
            "the rating value is {value}; Smartsupp rates conversations 1 to 5"
        )))
    }
}

/// Parses an `event_callback` envelope (already known to be one) into its events.
pub(crate) fn parse(value: &Value, body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let envelope = Envelope::deserialize(value).map_err(|e| invalid_body("event callback", &e))?;
    if envelope.event.is_empty() {
        return Err(Error::invalid(
            "the Smartsupp event callback has an empty `event`; send the event name",
        ));
    }
    let occurred_at = envelope.timestamp.timestamp("timestamp")?;
    let at_key = occurred_at.as_millis().to_string();
    let data_value = Value::Object(envelope.data.clone());

    let known = matches!(
        envelope.event.as_str(),
        "conversation.opened"
            | "conversation.closed"
            | "conversation.rated"
            | "conversation.agent_assigned"
            | "conversation.agent_replied"
            | "conversation.contact_replied"
    );
    if !known {
        return Ok(vec![vendor_event(&envelope, value, occurred_at, body)?]);
    }

    let data =
        Data::deserialize(&data_value).map_err(|e| invalid_body("event callback data", &e))?;
    let conversation = match (&data.conversation, &data.conversation_id, &data.message) {
        (Some(conversation), _, _) => conversation.id.text()?,
        (None, Some(id), _) => id.text()?,
        (
            None,
            None,
            Some(CallbackMessage {
                conversation_id: Some(id),
                ..
            }),
        ) => id.text()?,
        _ => {
            return Err(Error::invalid(format!(
                "the Smartsupp `{}` event names no conversation; send data.conversation.id",
                envelope.event
            )));
        }
    };
    let mut patch = ConversationPatch::new(&conversation);
    if let Some(account) = &envelope.account_id {
        patch
            .attributes
            .insert("account_id".to_owned(), account.text()?);
    }
    if let Some(status) = data.conversation.as_ref().and_then(|c| c.status.as_ref()) {
        patch
            .attributes
            .insert("conversation.status".to_owned(), status.clone());
    }
    let event = envelope.event.as_str();
    let (kind, key) = match event {
        "conversation.opened" => {
            let c = data.conversation.as_ref();
            patch.status = Some(ConversationStatus::Open);
            patch.started_at = Some(match c.and_then(|c| c.created_at.as_ref()) {
                Some(at) => at.timestamp("data.conversation.created_at")?,
                None => occurred_at,
            });
            patch.referrer = c.and_then(|c| non_empty(c.referer.as_ref()));
            if let Some(domain) = c.and_then(|c| non_empty(c.domain.as_ref())) {
                patch.attributes.insert("domain".to_owned(), domain);
            }
            patch.tags_added = c.and_then(|c| c.tags.clone()).unwrap_or_default();
            if let Some(contact) = &data.contact {
                patch.visitor = Some(contact_participant(contact)?);
            }
            (
                EventKind::ChatStarted,
                dedup_key(&[event, &conversation, &at_key]),
            )
        }
        "conversation.closed" => {
            patch.status = Some(ConversationStatus::Closed);
            patch.ended_at = Some(
                match data
                    .conversation
                    .as_ref()
                    .and_then(|c| c.finished_at.as_ref())
                {
                    Some(at) => at.timestamp("data.conversation.finished_at")?,
                    None => occurred_at,
                },
            );
            (
                EventKind::ChatEnded,
                dedup_key(&[event, &conversation, &at_key]),
            )
        }
        "conversation.rated" => {
            let c = data.conversation.as_ref();
            let (value, text) = match (&data.rating, c.and_then(|c| c.rating_value)) {
                (Some(rating), _) => (rating.value, rating.text.as_ref()),
                (None, Some(value)) => (value, c.and_then(|c| c.rating_text.as_ref())),
                (None, None) => {
                    return Err(Error::invalid(
                        "the Smartsupp conversation.rated event has no rating; send data.rating.value or data.conversation.rating_value",
                    ));
                }
            };
            patch.rating = Some(Rating {
                score: Some(rating_score(value)?),
                scale: Some("1-5".to_owned()),
                label: None,
                comment: non_empty(text),
            });
            (
                EventKind::Rating,
                dedup_key(&[event, &conversation, &at_key]),
            )
        }
        "conversation.agent_assigned" => {
            let agent = data.agent.as_ref().ok_or_else(|| {
                Error::invalid(
                    "the Smartsupp conversation.agent_assigned event has no agent; send data.agent.id",
                )
            })?;
            let agent = agent_participant(agent)?;
            patch.assigned_agent = Some(agent.id.clone());
            let key = dedup_key(&[event, &conversation, &agent.id, &at_key]);
            patch.agents_joined.push(agent);
            (EventKind::ChatUpdated, key)
        }
        _ => {
            // conversation.agent_replied and conversation.contact_replied
            let message = data.message.as_ref().ok_or_else(|| {
                Error::invalid(format!(
                    "the Smartsupp {event} event has no message; send data.message with its id"
                ))
            })?;
            let from_agent = event == "conversation.agent_replied";
            let message_id = message.id.text()?;
            let sub_type = message.sub_type.as_deref().unwrap_or_default();
            let automatic = message.trigger_id.is_some() || matches!(sub_type, "trigger" | "bot");
            let (role, author_id, author_name) = if from_agent {
                let role = if sub_type == "bot" {
                    Role::Bot
                } else {
                    Role::Agent
                };
                match (&data.agent, &message.agent_id) {
                    (Some(agent), _) => {
                        let agent = agent_participant(agent)?;
                        let id = agent.id.clone();
                        let name = agent.name.clone();
                        if role == Role::Agent {
                            patch.agents_joined.push(agent);
                        }
                        (role, Some(id), name)
                    }
                    (None, Some(id)) => (role, Some(format!("agent:{}", id.text()?)), None),
                    (None, None) => (role, None, None),
                }
            } else {
                match &data.contact {
                    Some(contact) => {
                        let contact = contact_participant(contact)?;
                        let id = contact.id.clone();
                        let name = contact.name.clone();
                        patch.visitor = Some(contact);
                        (Role::Visitor, Some(id), name)
                    }
                    None => (Role::Visitor, None, None),
                }
            };
            let mut extra = serde_json::Map::new();
            let text = match &message.content {
                None => String::new(),
                Some(Content::Text(text)) => text.clone(),
                Some(Content::Structured { kind, text, data }) => {
                    if !matches!(kind.as_deref(), Some("text") | None) {
                        extra.insert("content_type".to_owned(), serde_json::json!(kind));
                    }
                    if let Some(data) = data {
                        extra.insert("content_data".to_owned(), data.clone());
                    }
                    text.clone().unwrap_or_default()
                }
            };
            if let Some(trigger) = &message.trigger_id {
                extra.insert("trigger_id".to_owned(), Value::String(trigger.text()?));
            }
            let sent_at = match &message.created_at {
                Some(at) => at.timestamp("data.message.created_at")?,
                None => occurred_at,
            };
            let attachments = message
                .attachments
                .iter()
                .flatten()
                .map(|a| Attachment {
                    url: non_empty(a.url.as_ref()),
                    name: non_empty(a.file_name.as_ref()),
                    size: a.size,
                    content_type: non_empty(a.mime_type.as_ref()),
                })
                .collect();
            patch.messages.push(Message {
                key: message_id.clone(),
                author_role: role,
                author_id,
                author_name,
                text,
                attachments,
                sent_at,
                automatic,
                data: (!extra.is_empty()).then_some(Value::Object(extra)),
            });
            (
                EventKind::Message,
                dedup_key(&[event, &conversation, &message_id]),
            )
        }
    };
    Ok(vec![IncomingEvent {
        dedup_key: key,
        kind,
        vendor_event: envelope.event.clone(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    }])
}

/// An event Switchboard does not model: kept whole, keyed by its name, time and a digest of
/// the body (it carries no id of its own).
fn vendor_event(
    envelope: &Envelope,
    value: &Value,
    occurred_at: Timestamp,
    body: &[u8],
) -> Result<IncomingEvent, Error> {
    let data = value.get("data").unwrap_or(&Value::Null);
    let subject = match data.get("conversation") {
        None | Some(Value::Null) => match data.get("conversation_id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(
                Id::deserialize(id)
                    .map_err(|e| invalid_body("event callback data.conversation_id", &e))?
                    .text()?,
            ),
        },
        Some(conversation) => {
            #[derive(Deserialize)]
            struct Subject {
                id: Id,
            }
            Some(
                Subject::deserialize(conversation)
                    .map_err(|e| invalid_body("event callback data.conversation", &e))?
                    .id
                    .text()?,
            )
        }
    };
    tracing::debug!(event = %envelope.event, "smartsupp event kept as a vendor event");
    let digest = hex::encode(Sha256::digest(body));
    Ok(IncomingEvent {
        dedup_key: dedup_key(&[
            &envelope.event,
            &occurred_at.as_millis().to_string(),
            &digest[..16],
        ]),
        kind: EventKind::VendorEvent,
        vendor_event: envelope.event.clone(),
        occurred_at,
        payload: EventPayload::Vendor {
            subject,
            data: value.clone(),
        },
    })
}
