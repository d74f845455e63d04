//! LiveTex messages, from a dialog row's `messages` / `first_message_*` columns or from a
//! message webhook, normalized the same way so that one message arriving both ways merges
//! into one.

use serde_json::json;
use switchboard_core::{Attachment, Error, Message, Participant, Role, Timestamp};

use crate::fields::Fields;

/// Who a message's `creator` points at, in the dialog it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authors<'a> {
    /// The dialog's visitor.
    pub(crate) visitor: Option<&'a Participant>,
    /// The dialog's operator.
    pub(crate) agent: Option<&'a Participant>,
}

/// What a message is made of, once read.
#[derive(Debug, Clone)]
pub(crate) struct MessageParts<'a> {
    /// The dialog (`chat_id`) the message belongs to.
    pub(crate) chat_id: &'a str,
    /// LiveTex's message id.
    pub(crate) id: &'a str,
    /// The text.
    pub(crate) text: &'a str,
    /// When it was sent.
    pub(crate) sent_at: Timestamp,
    /// LiveTex's `creator`: `visitor`, `employee`, `bot`, `system`.
    pub(crate) creator: &'a str,
    /// Files.
    pub(crate) attachments: Vec<Attachment>,
}

/// The key of a message within its conversation: unique across the conversation's dialogs.
pub(crate) fn message_key(chat_id: &str, message_id: &str) -> String {
    format!("{chat_id}:{message_id}")
}

/// Reads a message object: `id` (required), `text`, `created_at` (required unless
/// `default_time` is given), `creator` (required unless `default_creator` is given) and
/// `attachments`.
pub(crate) fn message_from(
    item: &Fields<'_>,
    chat_id: &str,
    default_creator: Option<&str>,
    default_time: Option<Timestamp>,
    authors: &Authors<'_>,
) -> Result<Message, Error> {
    let id = item.required_string("id")?;
    let text = item.string("text")?.unwrap_or_default();
    let sent_at = match (item.time("created_at")?, default_time) {
        (Some(at), _) | (None, Some(at)) => at,
        (None, None) => item.required_time("created_at")?,
    };
    let creator = match (item.string("creator")?, default_creator) {
        (Some(creator), _) | (None, Some(creator)) => creator,
        (None, None) => item.required_string("creator")?,
    };
    let mut attachments = Vec::new();
    for file in item.objects("attachments")? {
        attachments.push(Attachment {
            url: file.string("url")?.map(str::to_owned),
            name: file.string("name")?.map(str::to_owned),
            size: file.int_id("size")?,
            content_type: file.string("type")?.map(str::to_owned),
        });
    }
    Ok(build_message(
        MessageParts {
            chat_id,
            id,
            text,
            sent_at,
            creator,
            attachments,
        },
        authors,
    ))
}

/// Builds the normalized message: `visitor` -> visitor, `employee`/`operator` -> agent (the
/// dialog's operator), `bot` -> bot (automatic), anything else -> system, with the creator kept
/// in `data`.
pub(crate) fn build_message(parts: MessageParts<'_>, authors: &Authors<'_>) -> Message {
    let (role, author, data) = match parts.creator {
        "visitor" | "client" => (Role::Visitor, authors.visitor, None),
        "employee" | "operator" => (Role::Agent, authors.agent, None),
        "bot" => (Role::Bot, None, None),
        "system" => (Role::System, None, None),
        other => (Role::System, None, Some(json!({ "creator": other }))),
    };
    Message {
        key: message_key(parts.chat_id, parts.id),
        author_role: role,
        author_id: author.map(|a| a.id.clone()),
        author_name: author.and_then(|a| a.name.clone()),
        text: parts.text.to_owned(),
        attachments: parts.attachments,
        sent_at: parts.sent_at,
        automatic: role == Role::Bot,
        data,
    }
}
