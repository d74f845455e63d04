//! LiveTex's documented objects mapped to events: a chat (диалог) and a lead (лид) as the Web
//! API lists them, and a conversation (обращение) as the webhook integration sends it.
//!
//! Types and field names follow LiveTex's API schema (`splusminusx/api-schema-tools`,
//! `schema/merged/Types/{Chat,Conversation,Lead,Message,Visitor,Employee,Site}.json` at
//! a3177dbe): numeric ids (string ids for visitors), nested `employee`, `visitor`, `site` and
//! `conversation` objects, `datetime` values in Moscow time. The README marks each rule
//! documented or assumed.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use switchboard_core::{
    ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, IncomingEvent, Message,
    Participant, Rating, Role, Segment, Timestamp,
};

use crate::fields::Fields;

/// Maps one chat (диалог) as `GET /chats/list` returns it to its event: the chat as a
/// [`Segment`] of its conversation (`conversation.id`), with its operator (`employee`), its
/// visitor, its site, its messages and the visitor's vote.
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`], naming the field, when `id`,
/// `created_at` or the conversation's id is missing, or a known field has the wrong type or an
/// absurd value.
///
/// ```
/// let chat = serde_json::json!({
///     "id": 5001, "conversation": {"id": 9001}, "created_at": "2024-03-01T12:00:00",
///     "is_closed": true, "duration": 600, "result": "completed",
///     "employee": {"id": 501, "first_name": "Анна", "last_name": "Петрова"},
///     "visitor": {"id": "v-77", "name": "Мария"},
/// });
/// let events = switchboard_plugin_livetex::chat_to_events(&chat).unwrap();
/// assert_eq!(events[0].conversation_external_id(), Some("9001"));
/// ```
pub fn chat_to_events(chat: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let chat = Fields::of(chat, "chat")?;
    let conversation_id = match chat.object("conversation")? {
        Some(conversation) => conversation.required_id("id")?,
        None => chat.required_id("conversation_id")?,
    };
    let mut patch = ConversationPatch::new(conversation_id);
    let folded = fold_chat(&chat, &mut patch)?;
    patch.status = Some(folded.status);
    patch.started_at = Some(folded.started_at);
    if folded.status != ConversationStatus::Open {
        patch.ended_at = folded.ended_at;
    }
    let kind = if folded.status == ConversationStatus::Open {
        EventKind::ChatStarted
    } else {
        EventKind::ChatEnded
    };
    let occurred_at = folded.ended_at.unwrap_or(folded.started_at);
    Ok(vec![keyed_event(
        &format!("chat:{}", folded.id),
        kind,
        "chat",
        occurred_at,
        patch,
    )])
}

/// Maps one lead (лид: an offline request or a call-back) as `GET /leads/list` returns it to
/// its event: an [`EventKind::OfflineMessage`] on the lead's conversation (`conversation.id`,
/// or `lead:<id>` without one), status offline, the contact data on the visitor, the text as
/// the visitor's message and `answer_text` as the operator's answer.
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`], naming the field, when `id` or
/// `created_at` is missing or a known field has the wrong type or an absurd value.
pub fn lead_to_events(lead: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let lead = Fields::of(lead, "lead")?;
    Ok(vec![lead_event(&lead, None, "lead")?])
}

/// The webhook integration's body: `{"Conversation": {...}, "discourser": {...},
/// "employee": [...]}` (support.livetex.ru/hc/ru/articles/360007110438). One event for the
/// conversation (its chats as segments, their messages, the discourser as the visitor, the
/// employees who took part), and one per lead it holds.
pub(crate) fn conversation_to_events(body: &Fields<'_>) -> Result<Vec<IncomingEvent>, Error> {
    let conversation = body.required_object("Conversation")?;
    let conversation_id = conversation.required_id("id")?;
    let mut patch = ConversationPatch::new(conversation_id.clone());

    let created_at = conversation.time("created_at")?;
    let updated_at = conversation.time("updated_at")?;
    let closed_at = conversation.time("closed_at")?;
    if let Some(visitor) = conversation.object("visitor")? {
        patch.visitor = Some(visitor_of(&visitor)?);
    }
    site_attributes(&conversation, &mut patch)?;
    for field in [
        "result",
        "widget_type",
        "search_engine",
        "search_query",
        "country",
        "city",
        "entry_page",
    ] {
        if let Some(text) = scalar_text(&conversation, field)? {
            patch.attributes.insert(field.to_owned(), text);
        }
    }
    if let Some(seconds) = conversation.seconds("duration")? {
        patch.attributes.insert("duration".to_owned(), seconds);
    }
    patch.page_url = conversation.string("int_referer")?.map(str::to_owned);
    patch.referrer = conversation.string("ext_referer")?.map(str::to_owned);

    // Chats, in the order sent (chronological per the schema).
    let mut started_at = created_at;
    let mut latest = None;
    let mut any_open = false;
    for chat in conversation.objects("chats")? {
        let folded = fold_chat(&chat, &mut patch)?;
        started_at = Some(started_at.map_or(folded.started_at, |s| s.min(folded.started_at)));
        let end = folded.ended_at.unwrap_or(folded.started_at);
        latest = Some(latest.map_or(end, |l: Timestamp| l.max(end)));
        any_open |= folded.status == ConversationStatus::Open;
    }
    for message in &patch.messages {
        latest = Some(latest.map_or(message.sent_at, |l: Timestamp| l.max(message.sent_at)));
    }
    // The discourser is who the conversation was with: it completes (and wins over) the
    // visitor the conversation and its chats name.
    if let Some(discourser) = body.object("discourser")? {
        let known = patch.visitor.take();
        patch.visitor = discourser_of(&discourser, known, &conversation_id)?;
    }

    // The employees who took part, in the order of their participation; the last one is the
    // conversation's assignee.
    let mut employees = Vec::new();
    for item in body_employees(body)? {
        employees.push(employee_of(&item)?);
    }
    for item in conversation.objects("employees")? {
        employees.push(employee_of(&item)?);
    }
    for employee in employees {
        if !patch.agents_joined.iter().any(|a| a.id == employee.id) {
            patch.agents_joined.push(employee.clone());
        }
        patch.assigned_agent = Some(employee.id);
    }

    let is_closed = conversation.bool("is_closed")?;
    let closed = match is_closed {
        Some(flag) => flag,
        None => closed_at.is_some() || !any_open,
    };
    let ended_at = closed_at.or(updated_at).or(latest);
    let started_at = started_at.or(ended_at).ok_or_else(|| {
        Error::invalid(format!(
            "`{}` is required when the conversation has no chats with a `created_at`",
            conversation.name("created_at")
        ))
    })?;
    patch.started_at = Some(started_at);
    patch.status = Some(if closed {
        ConversationStatus::Closed
    } else {
        ConversationStatus::Open
    });
    if closed {
        patch.ended_at = ended_at;
    }
    let leads = conversation.objects("leads")?;
    if !leads.is_empty() && patch.segments.is_empty() {
        // A conversation of leads only (offline requests, call-backs) is offline.
        patch.status = Some(ConversationStatus::Offline);
    }
    let occurred_at = if closed {
        ended_at.unwrap_or(started_at)
    } else {
        updated_at.or(latest).unwrap_or(started_at)
    };
    let kind = if patch.status == Some(ConversationStatus::Offline) {
        EventKind::OfflineMessage
    } else if closed {
        EventKind::ChatEnded
    } else {
        EventKind::ChatUpdated
    };
    let visitor = patch.visitor.clone();
    let mut events = vec![keyed_event(
        &format!("conversation:{conversation_id}"),
        kind,
        "conversation",
        occurred_at,
        patch,
    )];
    for lead in leads {
        events.push(lead_event(
            &lead,
            Some((&conversation_id, visitor.as_ref())),
            "lead",
        )?);
    }
    Ok(events)
}

/// The top-level `employee` array of the webhook body (an object alone is read as a list of
/// one).
fn body_employees<'a>(body: &Fields<'a>) -> Result<Vec<Fields<'a>>, Error> {
    match body.map().get("employee") {
        Some(Value::Object(_)) => Ok(body.object("employee")?.into_iter().collect()),
        _ => body.objects("employee"),
    }
}

/// What folding one chat into a conversation patch found.
struct FoldedChat {
    id: String,
    status: ConversationStatus,
    started_at: Timestamp,
    ended_at: Option<Timestamp>,
}

/// Adds one chat to `patch`: its segment, messages, operator, visitor, site and vote.
fn fold_chat(chat: &Fields<'_>, patch: &mut ConversationPatch) -> Result<FoldedChat, Error> {
    let id = chat.required_id("id")?;
    let created_at = chat.required_time("created_at")?;
    let is_closed = chat.bool("is_closed")?.unwrap_or(false);
    let duration = chat.seconds("duration")?;
    let agent = chat
        .object("employee")?
        .map(|e| employee_of(&e))
        .transpose()?;
    let visitor = chat
        .object("visitor")?
        .map(|v| visitor_of(&v))
        .transpose()?;

    let ended_at = if is_closed {
        let seconds = chat
            .map()
            .get("duration")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        // `duration` is whole seconds to ten years at most (checked above): no overflow.
        #[allow(clippy::cast_possible_truncation)]
        let millis = (seconds * 1000.0) as i64;
        Timestamp::from_millis(created_at.as_millis() + millis)
    } else {
        None
    };

    let mut attributes = BTreeMap::new();
    if let Some(seconds) = duration {
        attributes.insert("duration".to_owned(), seconds);
    }
    for field in ["answer_time_avg", "first_answer_time", "queue_time"] {
        if let Some(seconds) = chat.seconds(field)? {
            attributes.insert(field.to_owned(), seconds);
        }
    }
    if let Some(count) = chat.count("message_count")? {
        attributes.insert("message_count".to_owned(), count.to_string());
    }
    let result = chat.string("result")?;
    if let Some(result) = result {
        attributes.insert("result".to_owned(), result.to_owned());
    }
    for flag in [
        "rem_auto",
        "rem_empty",
        "rem_long_answer",
        "rem_lost_in_queue",
        "rem_transfer",
        "is_contact_info_exist",
    ] {
        if chat.bool(flag)? == Some(true) {
            attributes.insert(flag.to_owned(), "true".to_owned());
        }
    }
    if let Some(remark) = chat.object("employee_remark")? {
        if let Some(id) = remark.id("id")? {
            attributes.insert("employee_remark_id".to_owned(), id);
        }
        if let Some(title) = scalar_text(&remark, "title")? {
            attributes.insert("employee_remark".to_owned(), title);
        }
    }
    let rating = match chat.string("visitor_vote")? {
        Some(vote @ ("positive" | "negative")) => Some(Rating {
            score: Some(if vote == "positive" { 1 } else { -1 }),
            scale: Some("positive/negative".to_owned()),
            label: Some(vote.to_owned()),
            comment: None,
        }),
        _ => None,
    };

    let mut messages: BTreeMap<String, Message> = BTreeMap::new();
    for item in chat.objects("messages")? {
        let message = message_of(&item, &id, agent.as_ref(), visitor.as_ref())?;
        messages.insert(message.key.clone(), message);
    }
    if let Some(first) = chat.object("first_message")? {
        let message = message_of(&first, &id, agent.as_ref(), visitor.as_ref())?;
        messages.entry(message.key.clone()).or_insert(message);
    }

    if patch.visitor.is_none() {
        patch.visitor = visitor;
    }
    if let Some(agent) = &agent {
        if !patch.agents_joined.iter().any(|a| a.id == agent.id) {
            patch.agents_joined.push(agent.clone());
        }
        patch.assigned_agent = Some(agent.id.clone());
    }
    if rating.is_some() {
        patch.rating.clone_from(&rating);
    }
    site_attributes(chat, patch)?;
    patch.messages.extend(messages.into_values());
    patch.segments.push(Segment {
        id: id.clone(),
        agent,
        started_at: Some(created_at),
        ended_at,
        rating,
        attributes,
    });
    let status = match (is_closed, result) {
        (false, _) => ConversationStatus::Open,
        (true, Some("missed")) => ConversationStatus::Missed,
        (true, _) => ConversationStatus::Closed,
    };
    Ok(FoldedChat {
        id,
        status,
        started_at: created_at,
        ended_at,
    })
}

/// A lead as one event; `within` is the webhook conversation it came in (its id and visitor),
/// if any.
fn lead_event(
    lead: &Fields<'_>,
    within: Option<(&str, Option<&Participant>)>,
    vendor_event: &str,
) -> Result<IncomingEvent, Error> {
    let id = lead.required_id("id")?;
    let created_at = lead.required_time("created_at")?;
    let completed_at = lead.time("completed_at")?;
    let nested = lead.object("conversation")?;
    let external_id = match (&nested, within) {
        (Some(conversation), _) => conversation.required_id("id")?,
        (None, Some((id, _))) => id.to_owned(),
        (None, None) => format!("lead:{id}"),
    };
    let nested_visitor = match &nested {
        Some(conversation) => conversation.object("visitor")?,
        None => None,
    };
    let known = within.and_then(|(_, visitor)| visitor.cloned());
    let mut visitor = match (nested_visitor, known) {
        (Some(visitor), _) => visitor_of(&visitor)?,
        (None, Some(known)) => known,
        (None, None) => Participant {
            id: format!("lead:{id}"),
            ..Participant::default()
        },
    };
    // The lead's own contact data is what the visitor typed into the form.
    if let Some(name) = lead.string("name")? {
        visitor.name = Some(name.to_owned());
    }
    if let Some(email) = lead.string("email")? {
        visitor.email = Some(email.to_owned());
    }
    if let Some(phone) = lead.string("phone")? {
        visitor.phone = Some(phone.to_owned());
    }

    let mut patch = ConversationPatch::new(external_id);
    patch.status = Some(ConversationStatus::Offline);
    patch.started_at = Some(created_at);
    patch.ended_at = completed_at;
    patch.page_url = lead.string("int_referer")?.map(str::to_owned);
    patch.referrer = lead.string("ext_referer")?.map(str::to_owned);
    patch.attributes.insert("lead_id".to_owned(), id.clone());
    for (field, attribute) in [("type", "lead_type"), ("result", "lead_result")] {
        if let Some(text) = lead.string(field)? {
            patch
                .attributes
                .insert(attribute.to_owned(), text.to_owned());
        }
    }
    if let Some(seconds) = lead.seconds("duration")? {
        patch.attributes.insert("lead_duration".to_owned(), seconds);
    }
    site_attributes(lead, &mut patch)?;
    let mut answerer = None;
    for field in ["created_by", "assigned_to", "completed_by"] {
        if let Some(employee) = lead.object(field)? {
            let employee = employee_of(&employee)?;
            patch
                .attributes
                .insert(field.to_owned(), employee.id.clone());
            if field == "assigned_to" {
                patch.assigned_agent = Some(employee.id.clone());
            }
            if field != "created_by" || answerer.is_none() {
                answerer = Some(employee.clone());
            }
            if !patch.agents_joined.iter().any(|a| a.id == employee.id) {
                patch.agents_joined.push(employee);
            }
        }
    }
    if let Some(text) = lead.string("text")? {
        patch.messages.push(Message {
            key: format!("lead:{id}"),
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
    if let Some(answer) = lead.string("answer_text")? {
        patch.messages.push(Message {
            key: format!("lead:{id}:answer"),
            author_role: Role::Agent,
            author_id: answerer.as_ref().map(|a| a.id.clone()),
            author_name: answerer.as_ref().and_then(|a| a.name.clone()),
            text: answer.to_owned(),
            attachments: Vec::new(),
            sent_at: completed_at.unwrap_or(created_at),
            automatic: false,
            data: None,
        });
    }
    patch.visitor = Some(visitor);
    let occurred_at = completed_at.unwrap_or(created_at);
    Ok(keyed_event(
        &format!("lead:{id}"),
        EventKind::OfflineMessage,
        vendor_event,
        occurred_at,
        patch,
    ))
}

/// A message (`Message`: `id`, `text`, `created_at`, `visitor` or `employee`, `is_delivered`).
/// Its key is `<chat id>:<message id>`, the same whether the chat came by webhook or by sync.
fn message_of(
    item: &Fields<'_>,
    chat_id: &str,
    chat_agent: Option<&Participant>,
    chat_visitor: Option<&Participant>,
) -> Result<Message, Error> {
    let id = item.required_id("id")?;
    let sent_at = item.required_time("created_at")?;
    let text = item.string("text")?.unwrap_or_default().to_owned();
    let employee = item
        .object("employee")?
        .map(|e| employee_of(&e))
        .transpose()?;
    let visitor = item
        .object("visitor")?
        .map(|v| visitor_of(&v))
        .transpose()?;
    let (role, author_id, author_name) = match (employee, visitor) {
        (Some(employee), _) => (
            Role::Agent,
            Some(employee.id),
            employee
                .name
                .or_else(|| chat_agent.and_then(|a| a.name.clone())),
        ),
        (None, Some(visitor)) => (
            Role::Visitor,
            Some(visitor.id),
            visitor
                .name
                .or_else(|| chat_visitor.and_then(|v| v.name.clone())),
        ),
        (None, None) => (Role::System, None, None),
    };
    let data = item
        .bool("is_delivered")?
        .map(|delivered| json!({ "is_delivered": delivered }));
    Ok(Message {
        key: format!("{chat_id}:{id}"),
        author_role: role,
        author_id,
        author_name,
        text,
        attachments: Vec::new(),
        sent_at,
        automatic: false,
        data,
    })
}

/// An employee (`Employee`: numeric `id`, `first_name`, `last_name`, `email`, `phone`).
fn employee_of(employee: &Fields<'_>) -> Result<Participant, Error> {
    let id = employee.required_id("id")?;
    let first = employee.string("first_name")?;
    let last = employee.string("last_name")?;
    let name = match (first, last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (one, other) => one.or(other).map(str::to_owned),
    };
    Ok(Participant {
        id,
        name,
        email: employee.string("email")?.map(str::to_owned),
        phone: employee.string("phone")?.map(str::to_owned),
        attributes: BTreeMap::new(),
    })
}

/// A visitor (`Visitor`: string `id`, `name`, `nickname`, `email`, `phone`, last city and
/// country).
fn visitor_of(visitor: &Fields<'_>) -> Result<Participant, Error> {
    let id = visitor.required_id("id")?;
    let mut attributes = BTreeMap::new();
    for field in ["nickname", "last_city", "last_country", "comment"] {
        if let Some(text) = visitor.string(field)? {
            attributes.insert(field.to_owned(), text.to_owned());
        }
    }
    Ok(Participant {
        id,
        name: visitor.string("name")?.map(str::to_owned),
        email: visitor.string("email")?.map(str::to_owned),
        phone: visitor.string("phone")?.map(str::to_owned),
        attributes,
    })
}

/// The webhook's `discourser` (собеседник). Its fields are read tolerantly: `id`, `name`,
/// `email`, `phone` when present, and every other scalar field as an attribute. Without an id
/// it describes the conversation's visitor (`known`) or, failing that, a visitor
/// `discourser:<conversation id>`. An empty discourser changes nothing.
fn discourser_of(
    discourser: &Fields<'_>,
    known: Option<Participant>,
    conversation_id: &str,
) -> Result<Option<Participant>, Error> {
    if discourser.map().values().all(Value::is_null) {
        return Ok(known);
    }
    let mut visitor = known.unwrap_or_default();
    if let Some(id) = discourser.id("id")? {
        visitor.id = id;
    }
    if visitor.id.is_empty() {
        visitor.id = format!("discourser:{conversation_id}");
    }
    for (key, value) in discourser.map() {
        let text = match value {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        match key.as_str() {
            "id" => {}
            "name" => visitor.name = Some(text),
            "email" => visitor.email = Some(text),
            "phone" => visitor.phone = Some(text),
            other => {
                visitor.attributes.insert(other.to_owned(), text);
            }
        }
    }
    Ok(Some(visitor))
}

/// `site` (`Site`: numeric `id`, `url`) as the attributes `site_id`, `site_url`.
fn site_attributes(record: &Fields<'_>, patch: &mut ConversationPatch) -> Result<(), Error> {
    if let Some(site) = record.object("site")? {
        if let Some(id) = site.id("id")? {
            patch.attributes.insert("site_id".to_owned(), id);
        }
        if let Some(url) = site.string("url")? {
            patch
                .attributes
                .insert("site_url".to_owned(), url.to_owned());
        }
    }
    Ok(())
}

/// A string or number field as text (`result` is documented as a string of `failure` /
/// `success` but typed `numeric`: both are read).
fn scalar_text(record: &Fields<'_>, field: &str) -> Result<Option<String>, Error> {
    match record.map().get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Error::invalid(format!(
            "`{}` must be a string or a number",
            record.name(field)
        ))),
    }
}

/// An event keyed `<prefix>:<time>:<fingerprint>`: the same record sent twice (redelivered, or
/// pulled again) appends nothing; a record that changed (closed, rated, answered) is a new
/// event.
fn keyed_event(
    prefix: &str,
    kind: EventKind,
    vendor_event: &str,
    occurred_at: Timestamp,
    patch: ConversationPatch,
) -> IncomingEvent {
    // Serializing a patch of strings, maps and numbers cannot fail; an empty fallback would
    // still give a deterministic key.
    let fingerprint = fnv1a(&serde_json::to_vec(&patch).unwrap_or_default());
    IncomingEvent {
        dedup_key: format!("{prefix}:{occurred_at}:{fingerprint:016x}"),
        kind,
        vendor_event: vendor_event.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    }
}

/// FNV-1a, 64 bit: stable across runs and machines.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
