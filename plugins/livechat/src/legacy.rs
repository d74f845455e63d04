//! The legacy (v2) webhook format: one JSON object per event with `event_type`, the whole chat
//! (`chat{...}` with its transcript) and the `visitor`, or a `ticket` for `ticket_created`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use switchboard_core::{
    Attachment, ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, Group,
    IncomingEvent, Message, Participant, Role, Ticket, TicketEvent, TicketOrigin, TicketSource,
    TicketStatus, Timestamp,
};

use crate::json::{Child, Obj, canonical, fnv1a};

/// Parses a legacy body whose root object is `root`.
pub(crate) fn parse(root: Obj<'_>, received_at: Timestamp) -> Result<Vec<IncomingEvent>, Error> {
    let event_type = root.required_str("event_type")?;
    let unique_id = root.id("event_unique_id")?;
    match event_type {
        "chat_started" | "chat_ended" | "chat_changed" | "visitor_queued" => {
            chat_events(root, event_type, unique_id.as_deref(), received_at)
        }
        "ticket_created" => Ok(vec![ticket_created(
            root,
            unique_id.as_deref(),
            received_at,
        )?]),
        other => Ok(vec![vendor_event(
            root,
            other,
            unique_id.as_deref(),
            received_at,
        )?]),
    }
}

fn chat_events(
    root: Obj<'_>,
    event_type: &str,
    unique_id: Option<&str>,
    received_at: Timestamp,
) -> Result<Vec<IncomingEvent>, Error> {
    let Some(chat_child) = root.obj("chat")? else {
        // `chat` is a data type the webhook's owner chooses (Configuration API v2.0, "Create a
        // new webhook": `visitor_queued` cannot carry it at all); a body with only the visitor
        // is about the visitor.
        return visitor_only(root, event_type, unique_id, received_at);
    };
    let chat = chat_child.obj();
    let chat_id = chat.required_str("id")?;
    let started = match event_type {
        // A queued visitor's chat has not started yet; every other chat event has a start.
        "visitor_queued" => chat.secs("started_timestamp")?,
        _ => Some(chat.required_secs("started_timestamp")?),
    };
    let ended = match event_type {
        "chat_ended" => Some(chat.required_secs("ended_timestamp")?),
        _ => chat.secs("ended_timestamp")?,
    };

    let visitor = visitor(root)?;
    let visitor_id = visitor.as_ref().map(|v| v.id.clone());
    let mut messages = messages(chat, visitor_id.as_deref())?;
    let (system, end_reason) = system_events(chat)?;
    messages.extend(system);
    messages.extend(attachments(
        chat,
        visitor_id.as_deref(),
        started.unwrap_or(received_at),
    )?);

    let (kind, status) = match event_type {
        "chat_started" => (EventKind::ChatStarted, Some(ConversationStatus::Open)),
        "chat_ended" => (EventKind::ChatEnded, Some(ConversationStatus::Closed)),
        "visitor_queued" => (EventKind::ChatUpdated, Some(ConversationStatus::Queued)),
        _ if ended.is_some() => (EventKind::ChatUpdated, Some(ConversationStatus::Closed)),
        _ => (EventKind::ChatUpdated, None),
    };
    let occurred_at = match event_type {
        "chat_started" => started,
        "chat_ended" => ended,
        _ => messages
            .iter()
            .map(|m| m.sent_at)
            .chain(started)
            .chain(ended)
            .max(),
    }
    .unwrap_or(received_at);

    let mut patch = ConversationPatch::new(chat_id);
    patch.status = status;
    patch.started_at = started;
    patch.ended_at = ended;
    patch.end_reason = if ended.is_some() { end_reason } else { None };
    patch.page_url = chat.text("url")?;
    patch.referrer = chat.text("referer")?;
    patch.tags_added = chat.strings("tags")?;
    for agent in chat.objects("agents")? {
        let agent = agent.obj();
        let login = agent.required_str("login")?;
        patch.agents_joined.push(Participant {
            id: login.to_owned(),
            name: agent.text("name")?,
            email: login.contains('@').then(|| login.to_owned()),
            ..Participant::default()
        });
    }
    let groups = chat.ids("groups")?;
    if !groups.is_empty() {
        patch.attributes.insert("groups".into(), groups.join(","));
    }
    if let Some(license) = root.id("license_id")? {
        patch.attributes.insert("license_id".into(), license);
    }
    let survey = pre_chat_survey(root)?;
    let mut custom = BTreeMap::new();
    custom_variables(root, &mut custom)?;
    custom_variables(chat, &mut custom)?;
    if let Some(v) = root.obj("visitor")? {
        custom_variables(v.obj(), &mut custom)?;
    }
    match visitor {
        Some(mut visitor) => {
            fill_from_survey(&mut visitor, &survey);
            visitor.attributes.extend(custom);
            patch.visitor = Some(visitor);
        }
        None => {
            patch.attributes.extend(survey.answers);
            patch.attributes.extend(custom);
        }
    }

    let dedup_key = match unique_id {
        Some(id) => format!("{event_type}:{id}"),
        None => {
            let secs = |t: Option<Timestamp>| {
                t.map_or_else(|| "-".to_owned(), |t| (t.as_millis() / 1000).to_string())
            };
            let mut key = format!("{event_type}:{chat_id}:{}:{}", secs(started), secs(ended));
            if event_type == "chat_changed" {
                // A chat changes many times between the same start and end: the content tells
                // the changes apart, and a redelivery carries the same content.
                let content = root.get("chat").map(canonical).unwrap_or_default();
                key.push_str(&format!(":{:016x}", fnv1a(&[&content])));
            }
            key
        }
    };

    let mut events = Vec::with_capacity(messages.len() + 1);
    events.push(IncomingEvent {
        dedup_key,
        kind,
        vendor_event: event_type.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    });
    for message in messages {
        let mut patch = ConversationPatch::new(chat_id);
        let occurred_at = message.sent_at;
        let dedup_key = format!("message:{chat_id}:{}", message.key);
        patch.messages.push(message);
        events.push(IncomingEvent {
            dedup_key,
            kind: EventKind::Message,
            vendor_event: event_type.to_owned(),
            occurred_at,
            payload: EventPayload::Conversation(patch),
        });
    }
    Ok(events)
}

/// A legacy chat event that carries the visitor but no `chat` (`visitor_queued` always; the
/// other chat events when the webhook was registered without the `chat` data type). With the
/// chat's id among the visitor's fields (`chat_id`, as `GET /visitors` shows it) it updates that
/// chat; otherwise it is kept whole as a vendor event about the visitor, since there is no chat
/// to attach it to.
fn visitor_only(
    root: Obj<'_>,
    event_type: &str,
    unique_id: Option<&str>,
    received_at: Timestamp,
) -> Result<Vec<IncomingEvent>, Error> {
    let Some(mut visitor) = visitor(root)? else {
        return Err(Error::invalid(
            "chat is missing (and there is no visitor either): a legacy chat event carries the \
             chat, the visitor or both",
        ));
    };
    let visitor_obj = root.required_obj("visitor")?;
    let chat_id = visitor_obj.obj().id("chat_id")?;
    let survey = pre_chat_survey(root)?;
    fill_from_survey(&mut visitor, &survey);
    let Some(chat_id) = chat_id else {
        let data = Value::Object(root.map().clone());
        let dedup_key = match unique_id {
            Some(uid) => format!("{event_type}:{uid}"),
            None => format!("{event_type}:{:016x}", fnv1a(&[&canonical(&data)])),
        };
        return Ok(vec![IncomingEvent {
            dedup_key,
            kind: EventKind::VendorEvent,
            vendor_event: event_type.to_owned(),
            occurred_at: received_at,
            payload: EventPayload::Vendor {
                subject: Some(visitor.id),
                data,
            },
        }]);
    };
    let mut patch = ConversationPatch::new(&chat_id);
    let (kind, status) = match event_type {
        "chat_started" => (EventKind::ChatStarted, Some(ConversationStatus::Open)),
        "chat_ended" => (EventKind::ChatEnded, Some(ConversationStatus::Closed)),
        "visitor_queued" => (EventKind::ChatUpdated, Some(ConversationStatus::Queued)),
        _ => (EventKind::ChatUpdated, None),
    };
    patch.status = status;
    patch.page_url = visitor.attributes.get("page_current").cloned();
    if let Some(license) = root.id("license_id")? {
        patch.attributes.insert("license_id".into(), license);
    }
    patch.visitor = Some(visitor);
    let dedup_key = match unique_id {
        Some(uid) => format!("{event_type}:{uid}"),
        None => format!(
            "{event_type}:{chat_id}:{:016x}",
            fnv1a(&[&canonical(&Value::Object(root.map().clone()))])
        ),
    };
    Ok(vec![IncomingEvent {
        dedup_key,
        kind,
        vendor_event: event_type.to_owned(),
        occurred_at: received_at,
        payload: EventPayload::Conversation(patch),
    }])
}

/// Custom variables (`[{key, value}]`, Configuration API v2.0 archives and visitors; an object
/// of strings is read too) as attributes `custom_variables.{key}`.
fn custom_variables(parent: Obj<'_>, into: &mut BTreeMap<String, String>) -> Result<(), Error> {
    match parent.get("custom_variables") {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                if let Some(text) = scalar_text(value) {
                    into.insert(format!("custom_variables.{key}"), text);
                }
            }
        }
        Some(Value::Array(_)) => {
            for item in parent.objects("custom_variables")? {
                let item = item.obj();
                let Some(key) = item.text("key")? else {
                    continue;
                };
                let value = item.get("value").and_then(scalar_text).unwrap_or_default();
                into.insert(format!("custom_variables.{key}"), value);
            }
        }
        Some(_) => {
            return Err(Error::invalid(format!(
                "{} must be an array of {{key, value}} or an object",
                parent.path_of("custom_variables")
            )));
        }
    }
    Ok(())
}

/// A string, number or boolean as text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether an agent id looks like a LiveChat bot's (32 hex digits).
fn is_bot_id(id: &str) -> bool {
    crate::v3::is_bot_id(id)
}

/// Gives each message a key from its content, so that the same message in `chat_started` and
/// in `chat_ended` has the same key; identical messages in one chat get `~2`, `~3`...
struct Keys(HashMap<String, usize>);

impl Keys {
    fn new() -> Self {
        Keys(HashMap::new())
    }

    fn key(&mut self, prefix: &str, sent_at: Timestamp, parts: &[&str]) -> String {
        let base = format!(
            "{prefix}{}-{:016x}",
            sent_at.as_millis() / 1000,
            fnv1a(parts)
        );
        let seen = self.0.entry(base.clone()).or_insert(0);
        *seen += 1;
        if *seen == 1 {
            base
        } else {
            format!("{base}~{seen}")
        }
    }
}

fn role_of(user_type: &str) -> Role {
    match user_type {
        "agent" | "supervisor" => Role::Agent,
        "visitor" | "customer" => Role::Visitor,
        "bot" => Role::Bot,
        _ => Role::System,
    }
}

fn messages(chat: Obj<'_>, visitor_id: Option<&str>) -> Result<Vec<Message>, Error> {
    let mut keys = Keys::new();
    let mut out = Vec::new();
    for item in chat.objects("messages")? {
        let m = item.obj();
        let user_type = m.str("user_type")?.unwrap_or("visitor");
        let role = role_of(user_type);
        let agent_id = m.text("agent_id")?;
        let author_name = m.text("author_name")?;
        let text = m.str("text")?.unwrap_or_default();
        let sent_at = m.required_secs("timestamp")?;
        // A bot answering in a legacy chat is listed as an agent whose id is the bot's 32 hex
        // digits.
        let role = match (role, agent_id.as_deref()) {
            (Role::Agent, Some(id)) if is_bot_id(id) => Role::Bot,
            (role, _) => role,
        };
        let author_id = match role {
            Role::Visitor => visitor_id.map(str::to_owned),
            _ => agent_id.clone(),
        };
        let who = agent_id.as_deref().or(author_name.as_deref()).unwrap_or("");
        let key = keys.key("", sent_at, &[user_type, who, text]);
        let mut data = message_json(m.str("json")?);
        if user_type == "supervisor" {
            // A supervisor's message is a whisper to the agents (Configuration API v2.0
            // archives: `user_type: supervisor`), never shown to the visitor: marked like a v3
            // event whose visibility is `agents`.
            let mut map = serde_json::Map::new();
            map.insert("visibility".into(), Value::String("agents".into()));
            map.insert("user_type".into(), Value::String("supervisor".into()));
            if let Some(json) = data.take() {
                map.insert("json".into(), json);
            }
            data = Some(Value::Object(map));
        }
        out.push(Message {
            key,
            author_role: role,
            author_id,
            author_name,
            text: text.to_owned(),
            attachments: Vec::new(),
            sent_at,
            automatic: false,
            data,
        });
    }
    Ok(out)
}

/// The `json` field of a legacy message: structured content as a string (`""` or `"{}"` when
/// there is none). Kept as parsed JSON when it parses, else as the string.
fn message_json(json: Option<&str>) -> Option<Value> {
    let json = json?.trim();
    if json.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Null) => None,
        Ok(Value::Object(map)) if map.is_empty() => None,
        Ok(Value::Array(items)) if items.is_empty() => None,
        Ok(value) => Some(value),
        Err(_) => Some(Value::String(json.to_owned())),
    }
}

/// `chat.events` (`closed` and the like) become system messages; a `closed` event also tells
/// why the chat ended: `{user_type}_closed`, e.g. `visitor_closed`.
fn system_events(chat: Obj<'_>) -> Result<(Vec<Message>, Option<String>), Error> {
    let mut keys = Keys::new();
    let mut out = Vec::new();
    let mut end_reason: Option<(Timestamp, String)> = None;
    for item in chat.objects("events")? {
        let e = item.obj();
        // The archive form (Configuration API v2.0) writes `type: event` and the kind in
        // `event_type` (`closed`).
        let kind = match e.str("type")? {
            Some("event") | None => e.str("event_type")?.unwrap_or("event"),
            Some(kind) => kind,
        };
        let user_type = e.str("user_type")?;
        let text = e.str("text")?.unwrap_or_default();
        let sent_at = e.required_secs("timestamp")?;
        if kind == "closed" {
            let reason = format!("{}_closed", user_type.unwrap_or("system"));
            if end_reason.as_ref().is_none_or(|(at, _)| sent_at >= *at) {
                end_reason = Some((sent_at, reason));
            }
        }
        let mut data = serde_json::Map::new();
        data.insert("type".into(), Value::String(kind.to_owned()));
        if let Some(user_type) = user_type {
            data.insert("user_type".into(), Value::String(user_type.to_owned()));
        }
        out.push(Message {
            key: keys.key("event-", sent_at, &[kind, user_type.unwrap_or(""), text]),
            author_role: Role::System,
            author_id: None,
            author_name: None,
            text: text.to_owned(),
            attachments: Vec::new(),
            sent_at,
            automatic: false,
            data: Some(Value::Object(data)),
        });
    }
    Ok((out, end_reason.map(|(_, reason)| reason)))
}

/// `chat.attachments`: the captured bodies only show an empty array. Each element is read as a
/// file sent in the chat: an object with `url`, `name`, `size`, `content_type` (or `type`),
/// `user_type`, `author_name`, `agent_id`, `timestamp` (all optional), or a bare URL string.
fn attachments(
    chat: Obj<'_>,
    visitor_id: Option<&str>,
    default_at: Timestamp,
) -> Result<Vec<Message>, Error> {
    let mut keys = Keys::new();
    let mut out = Vec::new();
    let path = chat.path_of("attachments");
    for (i, item) in chat.array("attachments")?.iter().enumerate() {
        let (role, author_id, author_name, attachment, sent_at) = match item {
            Value::String(url) => (
                Role::Visitor,
                visitor_id.map(str::to_owned),
                None,
                Attachment {
                    url: Some(url.clone()),
                    ..Attachment::default()
                },
                default_at,
            ),
            Value::Object(map) => {
                let a = Child::new(map, format!("{path}[{i}]"));
                let a = a.obj();
                let user_type = a.str("user_type")?.unwrap_or("visitor");
                let content_type = match a.text("content_type")? {
                    Some(t) => Some(t),
                    None => a.text("type")?,
                };
                let role = role_of(user_type);
                let author_id = match role {
                    Role::Visitor => visitor_id.map(str::to_owned),
                    _ => a.text("agent_id")?,
                };
                (
                    role,
                    author_id,
                    a.text("author_name")?,
                    Attachment {
                        url: a.text("url")?,
                        name: a.text("name")?,
                        size: a.u64("size")?,
                        content_type,
                    },
                    a.secs("timestamp")?.unwrap_or(default_at),
                )
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{path}[{i}] must be an object or a URL string"
                )));
            }
        };
        let key = keys.key(
            "file-",
            sent_at,
            &[
                attachment.url.as_deref().unwrap_or(""),
                attachment.name.as_deref().unwrap_or(""),
            ],
        );
        out.push(Message {
            key,
            author_role: role,
            author_id,
            author_name,
            text: String::new(),
            attachments: vec![attachment],
            sent_at,
            automatic: false,
            data: None,
        });
    }
    Ok(out)
}

fn visitor(root: Obj<'_>) -> Result<Option<Participant>, Error> {
    let Some(visitor) = root.obj("visitor")? else {
        return Ok(None);
    };
    let v = visitor.obj();
    let mut attributes = BTreeMap::new();
    for field in [
        "country",
        "city",
        "region",
        "language",
        "page_current",
        "timezone",
        "ip",
    ] {
        if let Some(value) = v.text(field)? {
            attributes.insert(field.to_owned(), value);
        }
    }
    Ok(Some(Participant {
        id: v
            .id("id")?
            .ok_or_else(|| Error::invalid("visitor.id is missing"))?,
        name: v.text("name")?,
        email: v.text("email")?,
        phone: v.text("phone")?,
        attributes,
    }))
}

/// The answers of the pre-chat survey, as attributes `pre_chat_survey.{id}` (and
/// `pre_chat_survey.{id}.label`), plus the name and e-mail it gave.
struct Survey {
    answers: BTreeMap<String, String>,
    name: Option<String>,
    email: Option<String>,
}

fn pre_chat_survey(root: Obj<'_>) -> Result<Survey, Error> {
    let mut survey = Survey {
        answers: BTreeMap::new(),
        name: None,
        email: None,
    };
    for (i, item) in root.objects("pre_chat_survey")?.iter().enumerate() {
        let q = item.obj();
        let id = q.id("id")?.unwrap_or_else(|| i.to_string());
        let Some(answer) = survey_answer(q)? else {
            continue;
        };
        let label = match q.text("label")? {
            Some(label) => Some(label),
            // The archive form (Configuration API v2.0 `prechat_survey`) is `{key, value, id}`.
            None => q.text("key")?,
        };
        if let Some(label) = label {
            survey
                .answers
                .insert(format!("pre_chat_survey.{id}.label"), label);
        }
        match q.str("type")? {
            Some("name") => survey.name = Some(answer.clone()),
            Some("email") => survey.email = Some(answer.clone()),
            _ => {}
        }
        survey
            .answers
            .insert(format!("pre_chat_survey.{id}"), answer);
    }
    Ok(survey)
}

/// A survey answer as text: a string (`answer`, or `value` in the archive form), or the
/// choices of a checkbox question (`answer` or `answers` as an array of strings or of
/// `{id, label}` objects, as v3 `filled_form` writes them) joined with ", ".
fn survey_answer(q: Obj<'_>) -> Result<Option<String>, Error> {
    let value = q
        .get("answer")
        .or_else(|| q.get("answers"))
        .or_else(|| q.get("value"));
    let text = match value {
        None => None,
        Some(Value::Array(items)) => {
            let mut choices = Vec::new();
            for item in items {
                let choice = match item {
                    Value::Object(map) => map
                        .get("label")
                        .or_else(|| map.get("value"))
                        .or_else(|| map.get("id"))
                        .and_then(scalar_text),
                    other => scalar_text(other),
                };
                if let Some(choice) = choice.filter(|c| !c.is_empty()) {
                    choices.push(choice);
                }
            }
            Some(choices.join(", "))
        }
        Some(Value::Object(map)) => map
            .get("label")
            .or_else(|| map.get("value"))
            .and_then(scalar_text),
        Some(other) => scalar_text(other),
    };
    Ok(text.filter(|t| !t.is_empty()))
}

fn fill_from_survey(visitor: &mut Participant, survey: &Survey) {
    if visitor.name.is_none() {
        visitor.name.clone_from(&survey.name);
    }
    if visitor.email.is_none() {
        visitor.email.clone_from(&survey.email);
    }
    visitor
        .attributes
        .extend(survey.answers.iter().map(|(k, v)| (k.clone(), v.clone())));
}

fn ticket_created(
    root: Obj<'_>,
    unique_id: Option<&str>,
    received_at: Timestamp,
) -> Result<IncomingEvent, Error> {
    let ticket_child = root.required_obj("ticket")?;
    let t = ticket_child.obj();
    let id = t
        .id("id")?
        .ok_or_else(|| Error::invalid("ticket.id is missing"))?;
    let status = match t.str("status")? {
        None => TicketStatus::Open,
        Some(text) => TicketStatus::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
            Error::invalid(format!(
                "ticket.status {text:?} is not one of open, pending, solved, spam"
            ))
        })?,
    };
    let requester = match t.obj("requester")? {
        None => None,
        Some(r) => {
            let r = r.obj();
            let mail = r.text("mail")?;
            let name = r.text("name")?;
            let mut attributes = BTreeMap::new();
            if let Some(ip) = r.text("ip")? {
                attributes.insert("ip".to_owned(), ip);
            }
            Some(Participant {
                id: mail.clone().or_else(|| name.clone()).unwrap_or_default(),
                name,
                email: mail,
                phone: None,
                attributes,
            })
        }
    };
    let assignee = match t.obj("assignee")? {
        None => None,
        Some(a) => {
            let a = a.obj();
            Some(Participant {
                id: a.id("id")?.unwrap_or_default(),
                name: a.text("name")?,
                ..Participant::default()
            })
        }
    };
    let mut groups = Vec::new();
    for g in t.objects("groups")? {
        let g = g.obj();
        let id = g
            .id("id")?
            .ok_or_else(|| Error::invalid(format!("{} is missing", g.path_of("id"))))?;
        let id = id
            .parse::<i64>()
            .map_err(|_| Error::invalid(format!("{} must be an integer", g.path_of("id"))))?;
        groups.push(Group {
            id,
            name: g.text("name")?,
        });
    }
    let mut events = Vec::new();
    for e in t.objects("events")? {
        let e = e.obj();
        let (author, author_type) = match e.obj("author")? {
            None => (None, None),
            Some(a) => {
                let a = a.obj();
                (
                    Some(Participant {
                        id: a.id("id")?.unwrap_or_default(),
                        name: a.text("name")?,
                        ..Participant::default()
                    }),
                    a.text("type")?,
                )
            }
        };
        events.push(TicketEvent {
            author,
            author_type,
            date: e.secs("date")?,
            message: e.str("message")?.unwrap_or_default().to_owned(),
            kind: e.text("type")?,
            is_private: e.bool("is_private")?.unwrap_or(false),
            source: ticket_source(e)?,
        });
    }
    let earliest = events.iter().filter_map(|e| e.date).min();
    let latest = events.iter().filter_map(|e| e.date).max();
    let created_at = t.secs("date")?.or(earliest).unwrap_or(received_at);
    let updated_at = t
        .secs("modified")?
        .or(latest)
        .unwrap_or(created_at)
        .max(created_at);
    let ticket = Ticket {
        external_id: id.clone(),
        origin: TicketOrigin::Vendor,
        subject: t.str("subject")?.unwrap_or_default().to_owned(),
        status,
        requester,
        assignee,
        groups,
        tags: t.strings("tags")?,
        source: ticket_source(t)?,
        events,
        attributes: BTreeMap::new(),
        created_at,
        updated_at,
    };
    Ok(IncomingEvent {
        dedup_key: match unique_id {
            Some(uid) => format!("ticket_created:{uid}"),
            None => format!("ticket_created:{id}"),
        },
        kind: EventKind::TicketCreated,
        vendor_event: "ticket_created".to_owned(),
        occurred_at: created_at,
        payload: EventPayload::Ticket(ticket),
    })
}

fn ticket_source(parent: Obj<'_>) -> Result<Option<TicketSource>, Error> {
    let Some(s) = parent.obj("source")? else {
        return Ok(None);
    };
    let s = s.obj();
    Ok(Some(TicketSource {
        id: s.id("id")?,
        kind: s.text("type")?,
        url: s.text("url")?,
    }))
}

/// An `event_type` this plugin does not model: kept whole as a vendor event.
fn vendor_event(
    root: Obj<'_>,
    event_type: &str,
    unique_id: Option<&str>,
    received_at: Timestamp,
) -> Result<IncomingEvent, Error> {
    let chat_id = match root.obj("chat")? {
        Some(chat) => chat.obj().id("id")?,
        None => None,
    };
    let data = Value::Object(root.map().clone());
    let dedup_key = match unique_id {
        Some(uid) => format!("{event_type}:{uid}"),
        None => format!("{event_type}:{:016x}", fnv1a(&[&canonical(&data)])),
    };
    Ok(IncomingEvent {
        dedup_key,
        kind: EventKind::VendorEvent,
        vendor_event: event_type.to_owned(),
        occurred_at: received_at,
        payload: EventPayload::Vendor {
            subject: chat_id,
            data,
        },
    })
}
