//! The three LiveTex tables (dialogs, leads, conversations) mapped to events. The webhook uses
//! these for whole-row events, and the pull sync will use them for the rows it pages through,
//! so a row means the same thing whichever way it arrives.

use std::collections::BTreeMap;

use serde_json::Value;
use switchboard_core::{
    ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, IncomingEvent, Message,
    Participant, Rating, Role, Segment, Timestamp,
};

use crate::fields::Fields;
use crate::messages::{Authors, MessageParts, build_message, message_from};

/// Maps one row of the dialogs table (`chat_id`, `created_at`, `is_closed`, `closed_at`,
/// `employee_*`, `rating_value`, `messages`...) to its events: one event carrying the dialog as
/// a [`Segment`] of its conversation (`conversation_id`), with the dialog's agent, rating and
/// messages.
///
/// The kind says where the dialog stands: [`EventKind::ChatStarted`] while it is open,
/// [`EventKind::ChatUpdated`] once it is closed but the conversation goes on, and
/// [`EventKind::ChatEnded`] (status closed) when `is_closed` says the whole conversation is
/// closed.
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`], naming the field, when `chat_id`,
/// `conversation_id` or `created_at` is missing or any known column has the wrong type or an
/// absurd value.
///
/// ```
/// let row = serde_json::json!({
///     "chat_id": "c-1001-1", "conversation_id": "c-1001",
///     "created_at": "2024-03-01 09:00:00", "closed_at": "2024-03-01 09:12:30",
///     "is_closed": false, "employee_id": 501, "employee_first_name": "Анна",
///     "rating_value": 5,
/// });
/// let events = switchboard_plugin_livetex::dialog_to_events(&row).unwrap();
/// assert_eq!(events[0].conversation_external_id(), Some("c-1001"));
/// ```
pub fn dialog_to_events(row: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let row = Fields::of(row, "dialog")?;
    Ok(vec![dialog_event(&row, "dialog")?])
}

/// Maps one row of the leads table (an offline request: `lead_id`, contact data, `text`,
/// `utm_*`, `assigned_to`, `completed_by`...) to its events: one
/// [`EventKind::OfflineMessage`] on the lead's conversation (`conversation_id`, or
/// `lead:<lead_id>` when the lead has none), status offline, with the contact data on the
/// visitor and the text as the visitor's message.
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`], naming the field, when `lead_id` or
/// `created_at` is missing or any known column has the wrong type or an absurd value.
pub fn lead_to_events(row: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let row = Fields::of(row, "lead")?;
    Ok(vec![lead_event(&row, "lead")?])
}

/// Maps one row of the conversations table (`conversation_id`, `conversation_creation_time`,
/// `conversation_closed_time`, `conversation_custom_info`, `discourser_id`,
/// `discourser_info`) to its events: [`EventKind::ChatStarted`] while open,
/// [`EventKind::ChatEnded`] (status closed) once `conversation_closed_time` is set.
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`], naming the field, when `conversation_id`
/// or `conversation_creation_time` is missing or any known column has the wrong type or an
/// absurd value.
pub fn conversation_to_events(row: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let row = Fields::of(row, "conversation")?;
    Ok(vec![conversation_event(&row, "conversation")?])
}

/// A dialog row as one event; `vendor_event` is `dialog` or `dialog_closed`.
pub(crate) fn dialog_event(row: &Fields<'_>, vendor_event: &str) -> Result<IncomingEvent, Error> {
    let chat_id = row.required_string("chat_id")?;
    let conversation_id = row.required_string("conversation_id")?;
    let created_at = row.required_time("created_at")?;
    let closed_at = row.time("closed_at")?;
    if let Some(closed) = closed_at {
        not_before(row, "closed_at", closed, "created_at", created_at)?;
    }
    let is_closed = row.bool("is_closed")?.unwrap_or(false);
    let conversation_created_at = row.time("conversation_created_at")?;

    let agent = employee(row)?;
    let visitor = dialog_visitor(row)?;
    let rating = row.rating("rating_value")?.map(|score| Rating {
        score: Some(score),
        scale: None,
        label: None,
        comment: None,
    });
    let rating = match (rating, row.string("rating_type")?) {
        (Some(rating), scale) => Some(Rating {
            scale: scale.map(str::to_owned),
            ..rating
        }),
        (None, _) => None,
    };

    let mut segment_attributes = BTreeMap::new();
    for field in ["duration", "answer_time_avg", "first_answer_time"] {
        if let Some(seconds) = row.seconds(field)? {
            segment_attributes.insert(field.to_owned(), seconds);
        }
    }
    for field in ["result", "communication_type", "employee_remark_text"] {
        if let Some(text) = row.string(field)? {
            segment_attributes.insert(field.to_owned(), text.to_owned());
        }
    }
    if let Some(remark_id) = row.int_id("employee_remark_id")? {
        segment_attributes.insert("employee_remark_id".to_owned(), remark_id.to_string());
    }
    if let Some(count) = row.count("message_count")? {
        segment_attributes.insert("message_count".to_owned(), count.to_string());
    }
    if let Some(visitor_id) = row.string("visitor_id")? {
        segment_attributes.insert("visitor_id".to_owned(), visitor_id.to_owned());
    }

    let authors = Authors {
        visitor: visitor.as_ref(),
        agent: agent.as_ref(),
    };
    let mut messages: BTreeMap<String, Message> = BTreeMap::new();
    for item in row.objects("messages")? {
        let message = message_from(&item, chat_id, None, None, &authors)?;
        messages.insert(message.key.clone(), message);
    }
    if let Some(first) = first_message(row, chat_id, &authors)? {
        messages.entry(first.key.clone()).or_insert(first);
    }

    let mut patch = ConversationPatch::new(conversation_id);
    patch.status = Some(if is_closed {
        ConversationStatus::Closed
    } else {
        ConversationStatus::Open
    });
    patch.started_at = Some(conversation_created_at.unwrap_or(created_at));
    if is_closed {
        patch.ended_at = closed_at;
    }
    patch.visitor = visitor;
    patch.agents_joined.extend(agent.clone());
    patch.assigned_agent = agent.as_ref().map(|a| a.id.clone());
    patch.rating.clone_from(&rating);
    patch.page_url = row.string("conversation_int_referer")?.map(str::to_owned);
    patch.messages = messages.into_values().collect();
    for field in ["conversation_result", "site_url", "communication_type"] {
        if let Some(text) = row.string(field)? {
            patch.attributes.insert(field.to_owned(), text.to_owned());
        }
    }
    if let Some(site_id) = row.int_id("site_id")? {
        patch
            .attributes
            .insert("site_id".to_owned(), site_id.to_string());
    }
    patch.segments.push(Segment {
        id: chat_id.to_owned(),
        agent,
        started_at: Some(created_at),
        ended_at: closed_at,
        rating,
        attributes: segment_attributes,
    });

    let kind = if is_closed {
        EventKind::ChatEnded
    } else if closed_at.is_some() {
        EventKind::ChatUpdated
    } else {
        EventKind::ChatStarted
    };
    let occurred_at = closed_at.unwrap_or(created_at);
    Ok(row_event(
        "dialog",
        chat_id,
        kind,
        vendor_event,
        occurred_at,
        patch,
    ))
}

/// A lead row as one event.
pub(crate) fn lead_event(row: &Fields<'_>, vendor_event: &str) -> Result<IncomingEvent, Error> {
    let lead_id = row.required_string("lead_id")?;
    let created_at = row.required_time("created_at")?;
    let closed_at = row.time("closed_at")?;
    if let Some(closed) = closed_at {
        not_before(row, "closed_at", closed, "created_at", created_at)?;
    }
    let conversation_created_at = row.time("conversation_created_at")?;
    let external_id = match row.string("conversation_id")? {
        Some(id) => id.to_owned(),
        None => format!("lead:{lead_id}"),
    };

    let visitor = Participant {
        id: match row.string("conversation_visitor_id")? {
            Some(id) => id.to_owned(),
            None => format!("lead:{lead_id}"),
        },
        name: row.string("name")?.map(str::to_owned),
        email: row.string("email")?.map(str::to_owned),
        phone: row.string("phone")?.map(str::to_owned),
        attributes: BTreeMap::new(),
    };

    let mut patch = ConversationPatch::new(external_id);
    patch.status = Some(ConversationStatus::Offline);
    patch.started_at = Some(conversation_created_at.unwrap_or(created_at));
    patch.ended_at = closed_at;
    patch.page_url = row.string("conversation_int_referer")?.map(str::to_owned);
    patch
        .attributes
        .insert("lead_id".to_owned(), lead_id.to_owned());
    for field in [
        "lead_type",
        "site_url",
        "employee_remark_text",
        "conversation_result",
        "utm_source",
        "utm_campaign",
        "utm_content",
        "utm_medium",
        "utm_term",
    ] {
        if let Some(text) = row.string(field)? {
            patch.attributes.insert(field.to_owned(), text.to_owned());
        }
    }
    for field in [
        "site_id",
        "assigned_to",
        "completed_by",
        "employee_remark_id",
    ] {
        if let Some(id) = row.int_id(field)? {
            patch.attributes.insert(field.to_owned(), id.to_string());
        }
    }
    if let Some(seconds) = row.seconds("result")? {
        patch.attributes.insert("lead_result".to_owned(), seconds);
    }
    if let Some(managed) = row.bool("is_managed")? {
        patch
            .attributes
            .insert("is_managed".to_owned(), managed.to_string());
    }
    if let Some(assigned) = row.int_id("assigned_to")? {
        patch.assigned_agent = Some(assigned.to_string());
    }
    if let Some(text) = row.string("text")? {
        patch.messages.push(Message {
            key: format!("lead:{lead_id}"),
            author_role: Role::Visitor,
            author_id: Some(visitor.id.clone()),
            author_name: visitor.name.clone(),
            text: text.to_owned(),
            attachments: Vec::new(),
            sent_at: created_at,
            automatic: false,
            data: None,
        });
    }
    patch.visitor = Some(visitor);

    let occurred_at = closed_at.unwrap_or(created_at);
    Ok(row_event(
        "lead",
        lead_id,
        EventKind::OfflineMessage,
        vendor_event,
        occurred_at,
        patch,
    ))
}

/// A conversation row as one event.
pub(crate) fn conversation_event(
    row: &Fields<'_>,
    vendor_event: &str,
) -> Result<IncomingEvent, Error> {
    let conversation_id = row.required_string("conversation_id")?;
    let created_at = row.required_time("conversation_creation_time")?;
    let closed_at = row.time("conversation_closed_time")?;
    if let Some(closed) = closed_at {
        not_before(
            row,
            "conversation_closed_time",
            closed,
            "conversation_creation_time",
            created_at,
        )?;
    }
    let custom_info = row.string_map("conversation_custom_info")?;
    let discourser_info = row.string_map("discourser_info")?;

    let mut patch = ConversationPatch::new(conversation_id);
    patch.status = Some(if closed_at.is_some() {
        ConversationStatus::Closed
    } else {
        ConversationStatus::Open
    });
    patch.started_at = Some(created_at);
    patch.ended_at = closed_at;
    if let Some(discourser_id) = row.string("discourser_id")? {
        let mut visitor = Participant {
            id: discourser_id.to_owned(),
            ..Participant::default()
        };
        for (key, value) in discourser_info {
            match key {
                "name" => visitor.name = Some(value.to_owned()),
                "email" => visitor.email = Some(value.to_owned()),
                "phone" => visitor.phone = Some(value.to_owned()),
                _ => {
                    visitor.attributes.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        patch.visitor = Some(visitor);
    }
    for (key, value) in custom_info {
        patch
            .attributes
            .insert(format!("custom.{key}"), value.to_owned());
    }

    let kind = if closed_at.is_some() {
        EventKind::ChatEnded
    } else {
        EventKind::ChatStarted
    };
    let occurred_at = closed_at.unwrap_or(created_at);
    Ok(row_event(
        "conversation",
        conversation_id,
        kind,
        vendor_event,
        occurred_at,
        patch,
    ))
}

/// The dialog's operator, from `employee_id`, `employee_first_name`, `employee_last_name` and
/// `employee_email`. Shared by dialog rows and operator messages so both name the agent alike.
pub(crate) fn employee(row: &Fields<'_>) -> Result<Option<Participant>, Error> {
    let first = row.string("employee_first_name")?;
    let last = row.string("employee_last_name")?;
    let email = row.string("employee_email")?;
    let Some(id) = row.int_id("employee_id")? else {
        return Ok(None);
    };
    let name = match (first, last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (one, other) => one.or(other).map(str::to_owned),
    };
    Ok(Some(Participant {
        id: id.to_string(),
        name,
        email: email.map(str::to_owned),
        phone: None,
        attributes: BTreeMap::new(),
    }))
}

/// The visitor of a dialog row: `visitor_id` (else `conversation_visitor_id`), `visitor_name`,
/// and the pre-chat fields as attributes (`prechat.<name>`, `prechat_hidden.<name>`).
fn dialog_visitor(row: &Fields<'_>) -> Result<Option<Participant>, Error> {
    let visitor_id = row.string("visitor_id")?;
    let conversation_visitor_id = row.string("conversation_visitor_id")?;
    let name = row.string("visitor_name")?;
    let prechats = row.name_values("prechats_chat")?;
    let hidden = row.name_values("prechats_hidden")?;
    let Some(id) = visitor_id.or(conversation_visitor_id) else {
        return Ok(None);
    };
    let mut attributes = BTreeMap::new();
    for (key, value) in prechats {
        attributes.insert(format!("prechat.{key}"), value.to_owned());
    }
    for (key, value) in hidden {
        attributes.insert(format!("prechat_hidden.{key}"), value.to_owned());
    }
    Ok(Some(Participant {
        id: id.to_owned(),
        name: name.map(str::to_owned),
        email: None,
        phone: None,
        attributes,
    }))
}

/// The message described by the `first_message_*` columns, if `first_message_id` is set.
fn first_message(
    row: &Fields<'_>,
    chat_id: &str,
    authors: &Authors<'_>,
) -> Result<Option<Message>, Error> {
    let id = row.string("first_message_id")?;
    let text = row.string("first_message_text")?;
    let sent_at = row.time("first_message_created_at")?;
    let creator = row.string("first_message_creator")?;
    let Some(id) = id else {
        return Ok(None);
    };
    let sent_at = sent_at.ok_or_else(|| {
        Error::invalid(format!(
            "`{}` is required when `{}` is set",
            row.name("first_message_created_at"),
            row.name("first_message_id")
        ))
    })?;
    let message = build_message(
        MessageParts {
            chat_id,
            id,
            text: text.unwrap_or_default(),
            sent_at,
            creator: creator.unwrap_or("visitor"),
            attachments: Vec::new(),
        },
        authors,
    );
    Ok(Some(message))
}

/// Refuses a close before the start.
fn not_before(
    row: &Fields<'_>,
    later: &str,
    later_at: Timestamp,
    earlier: &str,
    earlier_at: Timestamp,
) -> Result<(), Error> {
    if later_at < earlier_at {
        return Err(Error::invalid(format!(
            "`{}` ({later_at}) is before `{}` ({earlier_at}): send the dialog's real times",
            row.name(later),
            row.name(earlier)
        )));
    }
    Ok(())
}

/// A row's event. Its dedup key is `<table>:<id>:<time>:<fingerprint>`: the same row sent
/// twice (by webhook and by the pull sync, or redelivered) has the same key and appends
/// nothing, while a row that changed (closed, rated, remarked) is a new event.
fn row_event(
    table: &str,
    id: &str,
    kind: EventKind,
    vendor_event: &str,
    occurred_at: Timestamp,
    patch: ConversationPatch,
) -> IncomingEvent {
    let fingerprint = fingerprint(&patch);
    IncomingEvent {
        dedup_key: format!("{table}:{id}:{occurred_at}:{fingerprint:016x}"),
        kind,
        vendor_event: vendor_event.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    }
}

/// FNV-1a (64 bit) of the normalized patch: stable across runs and machines, and the same for
/// two rows that mean the same thing however their dates were written.
fn fingerprint(patch: &ConversationPatch) -> u64 {
    // Serializing a patch of strings, maps and numbers cannot fail; an empty fallback would
    // still give a deterministic key.
    let bytes = serde_json::to_vec(patch).unwrap_or_default();
    fnv1a(&bytes)
}

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
