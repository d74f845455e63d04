//! The current webhook format (Agent Chat API v3.x): an envelope with `webhook_id`,
//! `secret_key`, `action`, `organization_id` (v3.5+) or `license_id` (before), `payload` and
//! `additional_data`, one action per request.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use switchboard_core::{
    Attachment, ConversationPatch, ConversationStatus, Error, EventKind, EventPayload,
    IncomingEvent, Message, Participant, Role, Timestamp,
};

use crate::json::{Obj, canonical, fnv1a};

/// Parses a v3.x body whose root object is `root`.
pub(crate) fn parse(root: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let action = root.required_str("action")?;
    if !MODELLED.contains(&action) {
        // Unmodelled actions keep their payload whatever its shape: `auto_accesses_updated`
        // sends an array (webhooks v3.5/v3.6 docs).
        if !root.has("payload") {
            return Err(Error::invalid("payload is missing"));
        }
        return Ok(vec![vendor_event(root, action, received_at)?]);
    }
    let payload_child = root.required_obj("payload")?;
    let payload = payload_child.obj();
    match action {
        "incoming_chat" => incoming_chat(root, payload),
        "incoming_event" => incoming_event(payload),
        "chat_deactivated" => chat_deactivated(payload, received_at),
        "thread_tagged" | "thread_untagged" => thread_tag(action, payload, received_at),
        "chat_transferred" => chat_transferred(payload, received_at),
        "user_added_to_chat" => user_added(payload, received_at),
        "user_removed_from_chat" => user_removed(payload, received_at),
        _ => Ok(vec![vendor_event(root, action, received_at)?]),
    }
}

/// The actions mapped to conversation events; every other action is kept as a vendor event.
const MODELLED: [&str; 8] = [
    "incoming_chat",
    "incoming_event",
    "chat_deactivated",
    "thread_tagged",
    "thread_untagged",
    "chat_transferred",
    "user_added_to_chat",
    "user_removed_from_chat",
];

/// Whether an id looks like a LiveChat bot's: bots are created with 32 hex digits as their id
/// (Configuration API `create_bot`, and the `bot_created` webhook sample
/// `5c9871d5372c824cbf22d860a707a578`), unlike agents (e-mails) and customers (UUIDs).
pub(crate) fn is_bot_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Who wrote an event, when only the author's id is known. LiveChat agent ids are their login
/// e-mail addresses; customer ids are opaque UUIDs. Without an author it is the system.
fn role_of_id(author_id: Option<&str>) -> Role {
    match author_id {
        None => Role::System,
        Some(id) if id.contains('@') => Role::Agent,
        Some(id) if is_bot_id(id) => Role::Bot,
        Some(_) => Role::Visitor,
    }
}

pub(crate) fn role_of_type(user_type: &str) -> Role {
    match user_type {
        "customer" => Role::Visitor,
        "bot" => Role::Bot,
        _ => Role::Agent,
    }
}

fn conversation(
    dedup_key: String,
    kind: EventKind,
    action: &str,
    occurred_at: Timestamp,
    patch: ConversationPatch,
) -> IncomingEvent {
    IncomingEvent {
        dedup_key,
        kind,
        vendor_event: action.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    }
}

/// One thread event (`message`, `file`, `system_message`, `filled_form`, `rich_message`...)
/// as a message event. Its dedup key is the same whether it came inside `incoming_chat` or
/// alone in `incoming_event`, so the store keeps it once.
pub(crate) fn event_message(
    action: &str,
    chat_id: &str,
    thread_id: &str,
    event: Obj<'_>,
    roles: &HashMap<String, Role>,
) -> Result<IncomingEvent, Error> {
    let id = event.required_str("id")?;
    let kind = event.required_str("type")?;
    let sent_at = event.required_rfc3339("created_at")?;
    let author_id = event.text("author_id")?;
    let role = match (kind, author_id.as_deref()) {
        ("system_message", _) => Role::System,
        (_, Some(author)) if roles.contains_key(author) => roles[author],
        (_, author) => role_of_id(author),
    };
    let mut attachments = Vec::new();
    let mut data = serde_json::Map::new();
    match kind {
        "message" => {
            if let Some(visibility) = event.text("visibility")?.filter(|v| v != "all") {
                data.insert("visibility".into(), Value::String(visibility));
            }
        }
        "file" => attachments.push(Attachment {
            url: event.text("url")?,
            name: event.text("name")?,
            size: event.u64("size")?,
            content_type: event.text("content_type")?,
        }),
        "system_message" => {
            if let Some(t) = event.text("system_message_type")? {
                data.insert("system_message_type".into(), Value::String(t));
            }
        }
        _ => {
            // filled_form, rich_message, custom and anything newer: keep the vendor's event,
            // less what the message already says.
            data.clone_from(event.map());
            for said in ["id", "created_at", "author_id", "text"] {
                data.remove(said);
            }
        }
    }
    let message = Message {
        key: format!("{thread_id}/{id}"),
        author_role: role,
        author_id,
        author_name: None,
        text: event.str("text")?.unwrap_or_default().to_owned(),
        attachments,
        sent_at,
        automatic: false,
        data: (!data.is_empty()).then_some(Value::Object(data)),
    };
    let mut patch = ConversationPatch::new(chat_id);
    patch.messages.push(message);
    Ok(conversation(
        format!("event:{chat_id}:{thread_id}:{id}"),
        EventKind::Message,
        action,
        sent_at,
        patch,
    ))
}

fn incoming_chat(root: Obj<'_>, payload: Obj<'_>) -> Result<Vec<IncomingEvent>, Error> {
    let chat_child = payload.required_obj("chat")?;
    let chat = chat_child.obj();
    let chat_id = chat.required_str("id")?;
    let thread_child = match chat.obj("thread")? {
        Some(thread) => thread,
        // The chat data structure (agent-chat-api data structures, chat.json) lists `threads`;
        // the newest one is the one that came in.
        None if chat.has("threads") => chat
            .objects("threads")?
            .pop()
            .ok_or_else(|| Error::invalid(format!("{} is empty", chat.path_of("threads"))))?,
        None => chat.required_obj("thread")?,
    };
    let thread = thread_child.obj();
    let thread_id = thread.required_str("id")?;
    let created_at = thread.required_rfc3339("created_at")?;

    let mut patch = ConversationPatch::new(chat_id);
    patch.status = Some(if thread.has("queue") {
        ConversationStatus::Queued
    } else {
        ConversationStatus::Open
    });
    patch.started_at = Some(created_at);
    // A chat reopens as a new thread: its status is counted per thread.
    patch.thread = Some(thread_id.to_owned());
    patch.tags_added = thread.strings("tags")?;
    patch
        .attributes
        .insert("thread_id".into(), thread_id.to_owned());
    for owner in ["organization_id", "license_id"] {
        if let Some(id) = root.id(owner)? {
            patch.attributes.insert(owner.into(), id);
        }
    }
    let roles = chat_people(chat, thread, &mut patch)?;

    let mut events = vec![conversation(
        format!("incoming_chat:{chat_id}:{thread_id}"),
        EventKind::ChatStarted,
        "incoming_chat",
        created_at,
        patch,
    )];
    for event in thread.objects("events")? {
        events.push(event_message(
            "incoming_chat",
            chat_id,
            thread_id,
            event.obj(),
            &roles,
        )?);
    }
    Ok(events)
}

/// Fills a chat's groups (from the chat's `access`, else the thread's), its visitor and its
/// agents into `patch`, and returns each user's role by id. Webhooks (`incoming_chat`) and the
/// archive sync read chats the same way, so both give the same conversation.
pub(crate) fn chat_people(
    chat: Obj<'_>,
    thread: Obj<'_>,
    patch: &mut ConversationPatch,
) -> Result<HashMap<String, Role>, Error> {
    let access = match chat.obj("access")? {
        Some(access) => Some(access),
        None => thread.obj("access")?,
    };
    if let Some(access) = access {
        let groups = access.obj().ids("group_ids")?;
        if !groups.is_empty() {
            patch.attributes.insert("groups".into(), groups.join(","));
        }
    }
    let mut roles = HashMap::new();
    for user in chat.objects("users")? {
        let u = user.obj();
        let id = u.required_str("id")?;
        let role = role_of_type(u.str("type")?.unwrap_or("agent"));
        roles.insert(id.to_owned(), role);
        if role == Role::Visitor {
            let (visitor, page) = customer(u, id)?;
            if patch.visitor.is_none() {
                patch.visitor = Some(visitor);
                patch.page_url = page;
            }
        } else {
            patch.agents_joined.push(Participant {
                id: id.to_owned(),
                name: u.text("name")?,
                email: u.text("email")?,
                ..Participant::default()
            });
        }
    }
    Ok(roles)
}

/// A customer user of a chat: the visitor, and the page they are on.
pub(crate) fn customer(u: Obj<'_>, id: &str) -> Result<(Participant, Option<String>), Error> {
    let mut attributes = BTreeMap::new();
    let mut page = None;
    // v3.6 calls it `visit` (data structures, users/customer.json); earlier samples
    // `last_visit`.
    let visit = match u.obj("visit")? {
        Some(visit) => Some(visit),
        None => u.obj("last_visit")?,
    };
    if let Some(visit) = visit {
        let visit = visit.obj();
        if let Some(geo) = visit.obj("geolocation")? {
            let geo = geo.obj();
            for field in ["country", "country_code", "region", "city", "timezone"] {
                if let Some(value) = geo.text(field)? {
                    attributes.insert(field.to_owned(), value);
                }
            }
        }
        if let Some(last) = visit.objects("last_pages")?.last() {
            page = last.obj().text("url")?;
        }
        if let Some(page) = &page {
            attributes.insert("page_current".into(), page.clone());
        }
    }
    for fields in u.objects("session_fields")? {
        for (key, value) in fields.obj().map() {
            if let Value::String(value) = value {
                attributes.insert(format!("session.{key}"), value.clone());
            }
        }
    }
    Ok((
        Participant {
            id: id.to_owned(),
            name: u.text("name")?,
            email: u.text("email")?,
            phone: u.text("phone_number")?,
            attributes,
        },
        page,
    ))
}

fn incoming_event(payload: Obj<'_>) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.required_str("thread_id")?;
    let event = payload.required_obj("event")?;
    Ok(vec![event_message(
        "incoming_event",
        chat_id,
        thread_id,
        event.obj(),
        &HashMap::new(),
    )?])
}

fn chat_deactivated(payload: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.required_str("thread_id")?;
    let user_id = payload.text("user_id")?;
    let mut patch = ConversationPatch::new(chat_id);
    patch.status = Some(ConversationStatus::Closed);
    patch.thread = Some(thread_id.to_owned());
    // The payload carries no time: the chat ended when the webhook arrived.
    patch.ended_at = Some(received_at);
    patch.end_reason = Some(
        match role_of_id(user_id.as_deref()) {
            Role::Agent => "agent_closed",
            Role::Bot => "bot_closed",
            Role::Visitor => "customer_closed",
            _ => "deactivated",
        }
        .to_owned(),
    );
    if let Some(user_id) = user_id {
        patch.attributes.insert("closed_by".into(), user_id);
    }
    Ok(vec![conversation(
        format!("chat_deactivated:{chat_id}:{thread_id}"),
        EventKind::ChatEnded,
        "chat_deactivated",
        received_at,
        patch,
    )])
}

fn thread_tag(
    action: &str,
    payload: Obj<'_>,
    received_at: Timestamp,
) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.required_str("thread_id")?;
    let tag = payload.required_str("tag")?;
    let mut patch = ConversationPatch::new(chat_id);
    if action == "thread_tagged" {
        patch.tags_added.push(tag.to_owned());
    } else {
        patch.tags_removed.push(tag.to_owned());
    }
    Ok(vec![conversation(
        format!("{action}:{chat_id}:{thread_id}:{tag}"),
        EventKind::ChatUpdated,
        action,
        received_at,
        patch,
    )])
}

fn chat_transferred(payload: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.text("thread_id")?;
    let (agent_ids, group_ids) = match payload.obj("transferred_to")? {
        Some(to) => {
            let to = to.obj();
            (to.ids("agent_ids")?, to.ids("group_ids")?)
        }
        None => (Vec::new(), Vec::new()),
    };
    // v3.6 names the queue time `queued_at`, v3.5 `queued_at_us` (webhooks docs, both RFC 3339).
    let queued_at = match payload.obj("queue")? {
        Some(queue) => match queue.obj().rfc3339("queued_at")? {
            Some(at) => Some(at),
            None => queue.obj().rfc3339("queued_at_us")?,
        },
        None => None,
    };
    let mut patch = ConversationPatch::new(chat_id);
    patch.assigned_agent = agent_ids.first().cloned();
    if !group_ids.is_empty() {
        patch
            .attributes
            .insert("groups".into(), group_ids.join(","));
    }
    if let Some(reason) = payload.text("reason")? {
        patch.attributes.insert("transfer_reason".into(), reason);
    }
    if let Some(requester) = payload.text("requester_id")? {
        patch.attributes.insert("transferred_by".into(), requester);
    }
    if payload.has("queue") {
        patch.status = Some(ConversationStatus::Queued);
        patch.thread.clone_from(&thread_id);
    }
    let dedup_key = format!(
        "chat_transferred:{chat_id}:{}:{}:{}:{}",
        thread_id.as_deref().unwrap_or("-"),
        agent_ids.join(","),
        group_ids.join(","),
        queued_at.map_or(0, Timestamp::as_millis),
    );
    Ok(vec![conversation(
        dedup_key,
        EventKind::ChatUpdated,
        "chat_transferred",
        queued_at.unwrap_or(received_at),
        patch,
    )])
}

fn user_added(payload: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.text("thread_id")?;
    let user_child = payload.required_obj("user")?;
    let user = user_child.obj();
    let user_id = user.required_str("id")?;
    let user_type = match user.str("type")? {
        Some(t) => Some(t),
        None => payload.str("user_type")?,
    };
    let mut patch = ConversationPatch::new(chat_id);
    if user_type == Some("customer") {
        patch
            .attributes
            .insert("customer_id".into(), user_id.to_owned());
    } else {
        patch.agents_joined.push(Participant {
            id: user_id.to_owned(),
            name: user.text("name")?,
            email: user.text("email")?,
            ..Participant::default()
        });
    }
    if let Some(reason) = payload.text("reason")? {
        patch.attributes.insert("added_reason".into(), reason);
    }
    Ok(vec![conversation(
        format!(
            "user_added_to_chat:{chat_id}:{}:{user_id}",
            thread_id.as_deref().unwrap_or("-")
        ),
        EventKind::ChatUpdated,
        "user_added_to_chat",
        received_at,
        patch,
    )])
}

fn user_removed(payload: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let chat_id = payload.required_str("chat_id")?;
    let thread_id = payload.text("thread_id")?;
    let user_id = payload.required_str("user_id")?;
    let mut patch = ConversationPatch::new(chat_id);
    if payload.str("user_type")? == Some("customer") {
        patch
            .attributes
            .insert("customer_left".into(), user_id.to_owned());
    } else {
        patch.agents_left.push(user_id.to_owned());
    }
    if let Some(reason) = payload.text("reason")? {
        patch.attributes.insert("removed_reason".into(), reason);
    }
    Ok(vec![conversation(
        format!(
            "user_removed_from_chat:{chat_id}:{}:{user_id}",
            thread_id.as_deref().unwrap_or("-")
        ),
        EventKind::ChatUpdated,
        "user_removed_from_chat",
        received_at,
        patch,
    )])
}

/// An action this plugin does not model: kept whole (without `secret_key`) as a vendor event.
/// Its subject is the chat it is about (`payload.chat_id`, `payload.chat.id`,
/// `payload.active_chat.chat_id`) or the object it names (`payload.id`); a payload that is not
/// an object (`auto_accesses_updated` sends an array) has none.
fn vendor_event(
    root: Obj<'_>,
    action: &str,
    received_at: Timestamp,
) -> Result<IncomingEvent, Error> {
    let mut data = root.map().clone();
    data.remove("secret_key");
    let data = Value::Object(data);
    let subject = match root.get("payload") {
        Some(Value::Object(_)) => {
            let payload_child = root.required_obj("payload")?;
            let payload = payload_child.obj();
            // A vendor event is never refused for its shape: an id of another type is no subject.
            let nested = |field: &str, id: &str| -> Option<String> {
                let child = payload.obj(field).ok().flatten()?;
                child.obj().id(id).ok().flatten()
            };
            payload
                .id("chat_id")
                .ok()
                .flatten()
                .or_else(|| nested("chat", "id"))
                .or_else(|| nested("active_chat", "chat_id"))
                .or_else(|| payload.id("id").ok().flatten())
        }
        _ => None,
    };
    Ok(IncomingEvent {
        dedup_key: format!("{action}:{:016x}", fnv1a(&[&canonical(&data)])),
        kind: EventKind::VendorEvent,
        vendor_event: action.to_owned(),
        occurred_at: received_at,
        payload: EventPayload::Vendor { subject, data },
    })
}
