//! The signed event callbacks: `{type: "event_callback", event, timestamp, account_id, app_id,
//! data}`. The seed does not describe them; the shapes of `data` follow Smartsupp's public API
//! (v2) objects as far as they are known, and every assumption is listed in the crate docs.

use serde::Deserialize;
use serde_json::{Value, json};
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
    // `type` (always "event_callback" in the docs) has decided the format already; it may be
    // absent (see `read_body`), so it is not read here.
    event: String,
    timestamp: Time,
    #[serde(default)]
    account_id: Option<Id>,
    // `app_id` identifies the app, which the HMAC has already checked.
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

    /// The id, or `None` when it is empty.
    fn present(&self) -> Option<String> {
        self.text().ok()
    }
}

fn present(id: Option<&Id>) -> Option<String> {
    id.and_then(Id::present)
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

/// `data` of a callback. Field names are snake_case in the callbacks; the API's camelCase
/// names (the OpenAPI spec) are accepted too, since pulled records are parsed here as well.
#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(default)]
    conversation: Option<Conversation>,
    #[serde(default, alias = "conversationId")]
    conversation_id: Option<Id>,
    #[serde(default)]
    message: Option<CallbackMessage>,
    #[serde(default)]
    agent: Option<Agent>,
    #[serde(default, alias = "agentId")]
    agent_id: Option<Id>,
    #[serde(default)]
    contact: Option<Contact>,
    #[serde(default)]
    rating: Option<RatingField>,
    #[serde(default, alias = "ratingValue")]
    rating_value: Option<i64>,
    #[serde(default, alias = "ratingText")]
    rating_text: Option<String>,
    /// `conversation.agent_assigned`: the assigned agent's id.
    #[serde(default)]
    assigned: Option<Id>,
    #[serde(default, alias = "assignedBy")]
    assigned_by: Option<Id>,
    /// `conversation.agent_unassigned`: the unassigned agent's id (assumed name).
    #[serde(default)]
    unassigned: Option<Id>,
    /// `conversation.closed`: how it was closed (`agent`...).
    #[serde(default, alias = "closeType")]
    close_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Conversation {
    id: Id,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, alias = "createdAt")]
    created_at: Option<Time>,
    #[serde(default, alias = "finishedAt")]
    finished_at: Option<Time>,
    #[serde(default, alias = "ratingValue")]
    rating_value: Option<i64>,
    #[serde(default, alias = "ratingText")]
    rating_text: Option<String>,
    /// The spec's `rating{value, text}` (or a bare number).
    #[serde(default)]
    rating: Option<RatingField>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default, alias = "contactId")]
    contact_id: Option<Id>,
    #[serde(default)]
    contact_name: Option<String>,
    #[serde(default)]
    contact_email: Option<String>,
    #[serde(default, alias = "assignedIds", alias = "assigned_agent_ids")]
    assigned_ids: Option<Vec<Id>>,
}

/// A rating: `{value, text}` (the spec's `conversation_rating`) or a bare number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RatingField {
    Value(i64),
    Object {
        value: Option<i64>,
        #[serde(default)]
        text: Option<String>,
    },
}

impl RatingField {
    fn parts(&self) -> (Option<i64>, Option<&String>) {
        match self {
            RatingField::Value(value) => (Some(*value), None),
            RatingField::Object { value, text } => (*value, text.as_ref()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CallbackMessage {
    id: Id,
    #[serde(default, alias = "chatId", alias = "conversationId")]
    conversation_id: Option<Id>,
    /// `contact`, `agent`, `trigger`, `bot`, `system`.
    #[serde(default, alias = "subType")]
    sub_type: Option<String>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default, alias = "createdAt")]
    created_at: Option<Time>,
    #[serde(default, alias = "agentId")]
    agent_id: Option<Id>,
    #[serde(default, alias = "triggerId")]
    trigger_id: Option<Id>,
    #[serde(default, alias = "triggerName")]
    trigger_name: Option<String>,
    /// The spec's `trigger{id, name}`.
    #[serde(default)]
    trigger: Option<Trigger>,
    #[serde(default, alias = "authorName")]
    author_name: Option<String>,
    #[serde(default, alias = "deliveryFailReason")]
    delivery_fail_reason: Option<String>,
    #[serde(default)]
    attachments: Option<Vec<CallbackAttachment>>,
}

#[derive(Debug, Deserialize)]
struct Trigger {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    name: Option<String>,
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
        html: Option<String>,
        #[serde(default)]
        data: Option<Value>,
    },
}

#[derive(Debug, Deserialize)]
struct CallbackAttachment {
    #[serde(default)]
    url: Option<String>,
    #[serde(default, alias = "fileName")]
    file_name: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, alias = "fileType")]
    mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    id: Id,
    #[serde(default, alias = "fullname")]
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

/// The conversation events this parser maps (the others are kept as vendor events, or, for
/// `contact.*`, as vendor events keyed by the contact).
pub(crate) const MAPPED_EVENTS: [&str; 14] = [
    "conversation.opened",
    "conversation.closed",
    "conversation.closed_by_contact",
    "conversation.rated",
    "conversation.agent_assigned",
    "conversation.agent_unassigned",
    "conversation.agent_joined",
    "conversation.agent_left",
    "conversation.agent_replied",
    "conversation.contact_replied",
    "conversation.bot_replied",
    "conversation.message_delivered",
    "conversation.message_delivery_failed",
    "conversation.message",
];

/// `agent:<id>` of the agent an event names: `data.agent`, else `data.<field>` for the first
/// of `fields` present.
fn named_agent(
    data: &Data,
    ids: &[Option<&Id>],
) -> Result<Option<(String, Option<Participant>)>, Error> {
    if let Some(agent) = &data.agent {
        let participant = agent_participant(agent)?;
        return Ok(Some((participant.id.clone(), Some(participant))));
    }
    Ok(ids
        .iter()
        .find_map(|id| present(*id))
        .map(|id| (format!("agent:{id}"), None)))
}

/// How a `close_type` reads as an end reason (assumed: the values are not documented; the
/// production integration shows `agent`).
fn close_reason(close_type: &str) -> String {
    match close_type {
        "agent" => "agent_closed".to_owned(),
        "contact" | "visitor" => "visitor_closed".to_owned(),
        other => other.to_owned(),
    }
}

/// Parses an event callback envelope (already known to be one) into its events.
pub(crate) fn parse(value: &Value, body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let envelope = Envelope::deserialize(value).map_err(|e| invalid_body("event callback", &e))?;
    if envelope.event.is_empty() {
        return Err(Error::invalid(
            "the Smartsupp event callback has an empty `event`; send the event name",
        ));
    }
    let occurred_at = envelope.timestamp.timestamp("timestamp")?;
    let event = envelope.event.as_str();
    if event.starts_with("contact.") {
        return Ok(vec![contact_event(&envelope, value, occurred_at, body)?]);
    }
    if !MAPPED_EVENTS.contains(&event) || event == "conversation.message" {
        return Ok(vec![vendor_event(&envelope, value, occurred_at, body)?]);
    }
    let at_key = occurred_at.as_millis().to_string();

    let mut data_value = Value::Object(envelope.data.clone());
    // opened/closed may carry the conversation itself as `data` (a production integration
    // reads it so); then it is read as `data.conversation`.
    if !envelope.data.contains_key("conversation")
        && !envelope.data.contains_key("message")
        && envelope.data.contains_key("id")
    {
        data_value = json!({"conversation": data_value});
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
                "the Smartsupp `{event}` event names no conversation; send data.conversation.id"
            )));
        }
    };
    let c = data.conversation.as_ref();
    let mut patch = ConversationPatch::new(&conversation);
    if let Some(account) = &envelope.account_id {
        patch
            .attributes
            .insert("account_id".to_owned(), account.text()?);
    }
    if let Some(status) = c.and_then(|c| c.status.as_ref()) {
        patch
            .attributes
            .insert("conversation.status".to_owned(), status.clone());
    }
    if let Some(ids) = c.and_then(|c| c.assigned_ids.as_ref()) {
        let ids: Vec<String> = ids
            .iter()
            .filter_map(Id::present)
            .map(|id| format!("agent:{id}"))
            .collect();
        patch
            .attributes
            .insert("assigned_ids".to_owned(), ids.join(","));
    }
    let (kind, key) = match event {
        "conversation.opened" => {
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
            patch.visitor = match (&data.contact, c) {
                (Some(contact), _) => Some(contact_participant(contact)?),
                (None, Some(c)) => present(c.contact_id.as_ref()).map(|id| Participant {
                    id,
                    name: non_empty(c.contact_name.as_ref()),
                    email: non_empty(c.contact_email.as_ref()),
                    ..Participant::default()
                }),
                (None, None) => None,
            };
            (
                EventKind::ChatStarted,
                dedup_key(&[event, &conversation, &at_key]),
            )
        }
        "conversation.closed" | "conversation.closed_by_contact" => {
            patch.status = Some(ConversationStatus::Closed);
            patch.ended_at = Some(match c.and_then(|c| c.finished_at.as_ref()) {
                Some(at) => at.timestamp("data.conversation.finished_at")?,
                None => occurred_at,
            });
            patch.end_reason = if event == "conversation.closed_by_contact" {
                Some("visitor_closed".to_owned())
            } else {
                non_empty(data.close_type.as_ref()).map(|t| close_reason(&t))
            };
            if let Some(agent) = present(data.agent_id.as_ref()) {
                patch
                    .attributes
                    .insert("closed_by".to_owned(), format!("agent:{agent}"));
            }
            (
                EventKind::ChatEnded,
                dedup_key(&[event, &conversation, &at_key]),
            )
        }
        "conversation.rated" => {
            let sources = [
                data.rating.as_ref().map(RatingField::parts),
                data.rating_value
                    .map(|v| (Some(v), data.rating_text.as_ref())),
                c.and_then(|c| c.rating.as_ref()).map(RatingField::parts),
                c.and_then(|c| c.rating_value)
                    .map(|v| (Some(v), c.and_then(|c| c.rating_text.as_ref()))),
            ];
            let Some((value, text)) = sources
                .into_iter()
                .flatten()
                .find_map(|(value, text)| value.map(|v| (v, text)))
            else {
                return Err(Error::invalid(
                    "the Smartsupp conversation.rated event has no rating; send data.rating_value (or data.rating.value)",
                ));
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
            let Some((agent, participant)) =
                named_agent(&data, &[data.assigned.as_ref(), data.agent_id.as_ref()])?
            else {
                return Err(Error::invalid(
                    "the Smartsupp conversation.agent_assigned event names no agent; send data.assigned (or data.agent.id)",
                ));
            };
            patch.assigned_agent = Some(agent.clone());
            if let Some(by) = present(data.assigned_by.as_ref()) {
                patch
                    .attributes
                    .insert("assigned_by".to_owned(), format!("agent:{by}"));
            }
            patch.agents_joined.extend(participant);
            (
                EventKind::ChatUpdated,
                dedup_key(&[event, &conversation, &agent, &at_key]),
            )
        }
        "conversation.agent_unassigned"
        | "conversation.agent_joined"
        | "conversation.agent_left" => {
            let agent = named_agent(
                &data,
                &[
                    data.unassigned.as_ref(),
                    data.assigned.as_ref(),
                    data.agent_id.as_ref(),
                ],
            )?;
            let key = match &agent {
                Some((id, _)) => dedup_key(&[event, &conversation, id, &at_key]),
                None => dedup_key(&[event, &conversation, &at_key]),
            };
            if let Some((id, participant)) = agent {
                match event {
                    "conversation.agent_joined" => {
                        patch.agents_joined.push(participant.unwrap_or(Participant {
                            id,
                            ..Participant::default()
                        }));
                    }
                    "conversation.agent_left" => patch.agents_left.push(id),
                    _ => {
                        patch.attributes.insert("unassigned_agent".to_owned(), id);
                    }
                }
            }
            (EventKind::ChatUpdated, key)
        }
        "conversation.message_delivered" | "conversation.message_delivery_failed" => {
            let message = data.message.as_ref().ok_or_else(|| {
                Error::invalid(format!(
                    "the Smartsupp {event} event has no message; send data.message with its id"
                ))
            })?;
            let id = message.id.text()?;
            let delivered = event == "conversation.message_delivered";
            patch.attributes.insert(
                format!("message.{id}.delivery"),
                if delivered { "delivered" } else { "failed" }.to_owned(),
            );
            if let Some(reason) = non_empty(message.delivery_fail_reason.as_ref()) {
                patch
                    .attributes
                    .insert(format!("message.{id}.delivery_fail_reason"), reason);
            }
            (
                EventKind::ChatUpdated,
                dedup_key(&[event, &conversation, &id]),
            )
        }
        _ => {
            // conversation.agent_replied, .contact_replied and .bot_replied
            let message = data.message.as_ref().ok_or_else(|| {
                Error::invalid(format!(
                    "the Smartsupp {event} event has no message; send data.message with its id"
                ))
            })?;
            let message_id = message.id.text()?;
            let sub_type = message.sub_type.as_deref().unwrap_or_default();
            let trigger_id = present(message.trigger_id.as_ref()).or_else(|| {
                message
                    .trigger
                    .as_ref()
                    .and_then(|t| present(t.id.as_ref()))
            });
            let trigger_name = non_empty(message.trigger_name.as_ref()).or_else(|| {
                message
                    .trigger
                    .as_ref()
                    .and_then(|t| non_empty(t.name.as_ref()))
            });
            let bot = event == "conversation.bot_replied" || sub_type == "bot";
            let automatic = bot || trigger_id.is_some() || sub_type == "trigger";
            let author_name_sent = non_empty(message.author_name.as_ref());
            let (role, author_id, author_name) = if event == "conversation.contact_replied" {
                match &data.contact {
                    Some(contact) => {
                        let contact = contact_participant(contact)?;
                        let id = contact.id.clone();
                        let name = contact.name.clone().or(author_name_sent);
                        patch.visitor = Some(contact);
                        (Role::Visitor, Some(id), name)
                    }
                    None => (
                        Role::Visitor,
                        c.and_then(|c| present(c.contact_id.as_ref())),
                        author_name_sent,
                    ),
                }
            } else {
                let role = if bot {
                    Role::Bot
                } else if sub_type == "system" {
                    Role::System
                } else {
                    Role::Agent
                };
                match (&data.agent, present(message.agent_id.as_ref())) {
                    (Some(agent), _) => {
                        let agent = agent_participant(agent)?;
                        let id = agent.id.clone();
                        let name = agent.name.clone().or(author_name_sent);
                        if role == Role::Agent {
                            patch.agents_joined.push(agent);
                        }
                        (role, Some(id), name)
                    }
                    (None, Some(id)) => (role, Some(format!("agent:{id}")), author_name_sent),
                    (None, None) => (role, None, author_name_sent.or(trigger_name.clone())),
                }
            };
            let mut extra = serde_json::Map::new();
            let text = match &message.content {
                None => String::new(),
                Some(Content::Text(text)) => text.clone(),
                Some(Content::Structured {
                    kind,
                    text,
                    html,
                    data,
                }) => {
                    if !matches!(kind.as_deref(), Some("text") | None) {
                        extra.insert("content_type".to_owned(), json!(kind));
                    }
                    if let Some(data) = data {
                        extra.insert("content_data".to_owned(), data.clone());
                    }
                    text.clone().or_else(|| html.clone()).unwrap_or_default()
                }
            };
            if let Some(trigger) = trigger_id {
                extra.insert("trigger_id".to_owned(), Value::String(trigger));
            }
            if let Some(name) = trigger_name {
                extra.insert("trigger_name".to_owned(), Value::String(name));
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

/// `contact.created`, `.updated`, `.acquired`, `.banned`, `.unbanned`: the model has no
/// contacts, so the event is kept whole, keyed by the contact and the time.
fn contact_event(
    envelope: &Envelope,
    value: &Value,
    occurred_at: Timestamp,
    body: &[u8],
) -> Result<IncomingEvent, Error> {
    let contact = match envelope.data.get("contact") {
        Some(contact) if !contact.is_null() => Some(
            Contact::deserialize(contact)
                .map_err(|e| invalid_body("event callback data.contact", &e))?
                .id
                .text()?,
        ),
        _ => None,
    };
    let Some(contact) = contact else {
        return vendor_event(envelope, value, occurred_at, body);
    };
    Ok(IncomingEvent {
        dedup_key: dedup_key(&[
            &envelope.event,
            &contact,
            &occurred_at.as_millis().to_string(),
        ]),
        kind: EventKind::VendorEvent,
        vendor_event: envelope.event.clone(),
        occurred_at,
        payload: EventPayload::Vendor {
            subject: None,
            data: value.clone(),
        },
    })
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
