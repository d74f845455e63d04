//! The normalized model every vendor is mapped into.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Where a conversation stands. The order of the variants is the order a status may move in:
/// a conversation's status only moves forward, so merging two statuses takes the larger.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Nothing about the conversation has been received yet but an id (a message arrived first).
    #[default]
    Unknown,
    /// Waiting in a queue for an agent.
    Queued,
    /// Started and not yet ended.
    Open,
    /// Ended normally.
    Closed,
    /// The visitor asked and nobody answered (missed chat).
    Missed,
    /// The visitor left an offline message (no agent was available).
    Offline,
}

impl ConversationStatus {
    /// Every status, in order.
    pub const ALL: [ConversationStatus; 6] = [
        ConversationStatus::Unknown,
        ConversationStatus::Queued,
        ConversationStatus::Open,
        ConversationStatus::Closed,
        ConversationStatus::Missed,
        ConversationStatus::Offline,
    ];

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Unknown => "unknown",
            ConversationStatus::Queued => "queued",
            ConversationStatus::Open => "open",
            ConversationStatus::Closed => "closed",
            ConversationStatus::Missed => "missed",
            ConversationStatus::Offline => "offline",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Who wrote a message or took part in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The customer.
    Visitor,
    /// A human agent (operator, employee).
    Agent,
    /// An automated responder.
    Bot,
    /// The vendor's system (joins, closes, transfers).
    System,
}

impl Role {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
            Role::Bot => "bot",
            Role::System => "system",
        }
    }
}

/// A person or bot taking part in a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The vendor's id (an agent's login e-mail, a visitor id...).
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Anything else the vendor says about them (country, language, variables, pre-chat answers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A file, image or other media attached to a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Where to fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// MIME type or the vendor's kind (`image`, `file`, `sound`, `video`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// One message in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique within the conversation; the same message from two events has the same key.
    pub key: String,
    /// Who wrote it.
    pub author_role: Role,
    /// The author's vendor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    /// The author's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_name: Option<String>,
    /// The text, empty for attachment-only messages.
    #[serde(default)]
    pub text: String,
    /// Files and media.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// When it was sent, by the vendor's clock.
    pub sent_at: Timestamp,
    /// Sent automatically (a trigger, an auto-greeting, a bot), not typed by a person.
    #[serde(default)]
    pub automatic: bool,
    /// Structured content that is not text (locations, custom elements, unknown element types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A visitor's rating of a conversation (or of one segment of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// A numeric score, on the vendor's scale (`scale` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    /// The vendor's scale, e.g. `1-5` or `good/bad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    /// A label such as `good` or `rated_bad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The visitor's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A part of a conversation handled by one agent: LiveTex calls these dialogs, and one LiveTex
/// conversation holds several. Vendors without the notion leave a conversation without segments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The vendor's id for the segment (LiveTex `chat_id`).
    pub id: String,
    /// The agent who handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Participant>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The visitor's rating of this segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    /// Everything else (answer times, result, remark).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Where a ticket is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketOrigin {
    /// Kept by Switchboard itself: the connection's vendor has no ticket API.
    #[default]
    HubNative,
    /// Mirrored from the vendor's ticket system.
    Vendor,
}

/// A ticket's state, as LiveChat names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Waiting for an agent.
    #[default]
    Open,
    /// Waiting for the requester.
    Pending,
    /// Done.
    Solved,
    /// Junk.
    Spam,
}

impl TicketStatus {
    /// Every status.
    pub const ALL: [TicketStatus; 4] = [
        TicketStatus::Open,
        TicketStatus::Pending,
        TicketStatus::Solved,
        TicketStatus::Spam,
    ];

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::Pending => "pending",
            TicketStatus::Solved => "solved",
            TicketStatus::Spam => "spam",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where a ticket came from (LiveChat `source`: chat-window, mail, lc2, facebook...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSource {
    /// The source's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `chat-window`, `mail`, `lc2`, `facebook`, `agent-app-manual`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The page the ticket was sent from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One entry in a ticket's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketEvent {
    /// Who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Participant>,
    /// `agent` or `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_type: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<Timestamp>,
    /// The message or description.
    #[serde(default)]
    pub message: String,
    /// The vendor's type of the entry (`message`, `status_changed`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Visible to agents only.
    #[serde(default)]
    pub is_private: bool,
    /// Where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TicketSource>,
}

/// A group of agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The vendor's numeric id.
    pub id: i64,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A ticket, generalized from LiveChat's `TicketResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The vendor's (or the hub's) id for it.
    pub external_id: String,
    /// Hub-native or vendor-held.
    pub origin: TicketOrigin,
    /// Short description.
    #[serde(default)]
    pub subject: String,
    /// State.
    pub status: TicketStatus,
    /// Who asked (LiveChat `requester`: name, mail, ip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Participant>,
    /// Who is handling it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Participant>,
    /// Groups it belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TicketSource>,
    /// Its history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<TicketEvent>,
    /// Vendor values without a field of their own (a human ticket number, a priority, a
    /// custom field), kept so that nothing the vendor says is lost.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Ticket {
    /// Applies a hub-side change at `now` (never before the ticket's last change): the message
    /// becomes an agent message in its history, the other fields are replaced. Returns
    /// whether anything changed; `updated_at` moves only then. A requester e-mail must look
    /// like one.
    pub fn apply_change(
        &mut self,
        change: &crate::TicketChange,
        now: Timestamp,
    ) -> Result<bool, crate::Error> {
        let now = now.max(self.updated_at);
        let mut changed = false;
        if let Some(subject) = &change.subject {
            self.subject = subject.clone();
            changed = true;
        }
        if let Some(status) = change.status {
            self.status = status;
            changed = true;
        }
        if let Some(assignee) = &change.assignee_id {
            self.assignee = Some(Participant {
                id: assignee.clone(),
                ..Participant::default()
            });
            changed = true;
        }
        if let Some(update) = &change.requester {
            let mut requester = self.requester.clone().unwrap_or_default();
            if let Some(email) = &update.email {
                if !email.contains('@') {
                    return Err(crate::Error::invalid(
                        "the requester e-mail must be an e-mail address",
                    ));
                }
                requester.id = email.clone();
                requester.email = Some(email.clone());
            }
            if let Some(name) = &update.name {
                requester.name = Some(name.clone());
            }
            self.requester = Some(requester);
            changed = true;
        }
        if let Some(tags) = &change.tags {
            self.tags = tags.clone();
            changed = true;
        }
        if let Some(message) = change.message.as_ref().filter(|m| !m.trim().is_empty()) {
            self.events.push(TicketEvent {
                author: None,
                author_type: Some("agent".to_owned()),
                date: Some(now),
                message: message.clone(),
                kind: Some("message".to_owned()),
                is_private: false,
                source: None,
            });
            changed = true;
        }
        if changed {
            self.updated_at = now;
        }
        Ok(changed)
    }
}

/// An agent of a vendor account, generalized from LiveChat's agent schemas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Login e-mail; the agent's id.
    pub login: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `owner`, `administrator` or `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// Job title (LiveChat's default is "Support Agent").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// `accepting chats` or `not accepting chats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_status: Option<String>,
    /// `accepting chats`, `not accepting chats` or `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Avatar image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Limit of concurrent chats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chats_count: Option<i64>,
    /// Groups the agent belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
}
