//! Events: what plugins produce ([`IncomingEvent`]) and what the log holds ([`Event`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    Agent, ConnectionId, ConversationId, ConversationStatus, Message, Participant, Rating, Segment,
    Sequence, Ticket, Timestamp,
};

/// The unified kinds of events on the stream, whatever the vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A conversation started (or was queued).
    ChatStarted,
    /// A message was sent in a conversation.
    Message,
    /// A conversation ended.
    ChatEnded,
    /// A visitor asked and nobody answered.
    ChatMissed,
    /// A visitor left a message while no agent was available.
    OfflineMessage,
    /// A visitor rated a conversation.
    Rating,
    /// Something else about a conversation changed: transfer, tags, participants, queue.
    ChatUpdated,
    /// A ticket was created.
    TicketCreated,
    /// A ticket changed.
    TicketUpdated,
    /// An agent was created, changed or deleted.
    AgentUpdated,
    /// A vendor event Switchboard does not model; kept so that nothing is lost.
    VendorEvent,
    /// Two contacts were merged ([`crate::ContactChange::Merged`]).
    ContactMerged,
    /// A contact was split ([`crate::ContactChange::Split`]).
    ContactSplit,
    /// A contact's personal data was erased ([`crate::ContactChange::Erased`]).
    ContactErased,
}

impl EventKind {
    /// Every kind, in order.
    pub const ALL: [EventKind; 14] = [
        EventKind::ChatStarted,
        EventKind::Message,
        EventKind::ChatEnded,
        EventKind::ChatMissed,
        EventKind::OfflineMessage,
        EventKind::Rating,
        EventKind::ChatUpdated,
        EventKind::TicketCreated,
        EventKind::TicketUpdated,
        EventKind::AgentUpdated,
        EventKind::VendorEvent,
        EventKind::ContactMerged,
        EventKind::ContactSplit,
        EventKind::ContactErased,
    ];

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ChatStarted => "chat_started",
            EventKind::Message => "message",
            EventKind::ChatEnded => "chat_ended",
            EventKind::ChatMissed => "chat_missed",
            EventKind::OfflineMessage => "offline_message",
            EventKind::Rating => "rating",
            EventKind::ChatUpdated => "chat_updated",
            EventKind::TicketCreated => "ticket_created",
            EventKind::TicketUpdated => "ticket_updated",
            EventKind::AgentUpdated => "agent_updated",
            EventKind::VendorEvent => "vendor_event",
            EventKind::ContactMerged => "contact_merged",
            EventKind::ContactSplit => "contact_split",
            EventKind::ContactErased => "contact_erased",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one event says about one conversation. Every field is optional: an event carries only
/// what it knows, and [`crate::Conversation::apply`] merges it in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationPatch {
    /// The vendor's id of the conversation.
    pub external_id: String,
    /// The status this event implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConversationStatus>,
    /// When the conversation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Why it ended (`visitor_closed`, `agent_timeout`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The visitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<Participant>,
    /// Agents (or bots) who joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents_joined: Vec<Participant>,
    /// Ids of agents who left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents_left: Vec<String>,
    /// The agent now responsible (after a transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_agent: Option<String>,
    /// Messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Tags added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_added: Vec<String>,
    /// Tags removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_removed: Vec<String>,
    /// The visitor's rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    /// The page the chat started on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    /// The referrer of that page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Vendor-specific attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Segments (dialogs) of the conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// The vendor's thread this patch's status and start belong to, where a conversation is
    /// reopened as a new thread (LiveChat threads). A status only moves forward within its
    /// thread; the conversation has the status of its latest thread, so a reopened chat is
    /// open again. `None`: the conversation's one unnamed thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

impl ConversationPatch {
    /// An empty patch for the given conversation.
    pub fn new(external_id: impl Into<String>) -> Self {
        ConversationPatch {
            external_id: external_id.into(),
            ..ConversationPatch::default()
        }
    }
}

/// The normalized content of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventPayload {
    /// A change to a conversation.
    Conversation(ConversationPatch),
    /// A ticket's full state after the change.
    Ticket(Ticket),
    /// An agent's state after the change.
    Agent {
        /// The agent.
        agent: Agent,
        /// Whether the agent was deleted.
        #[serde(default)]
        deleted: bool,
    },
    /// An event Switchboard does not model, kept as the vendor sent it.
    Vendor {
        /// The vendor's id of what it is about, if any (a chat id...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// The vendor's data.
        data: serde_json::Value,
    },
    /// A change to contacts (on [`crate::ConnectionId::system`]).
    Contact(crate::ContactChange),
}

/// An event as a plugin produces it from a webhook or a sync page, before it has a place in
/// the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingEvent {
    /// Identifies the event within its connection: a redelivery carries the same key and
    /// appends nothing. Use the vendor's event id where it has one; otherwise derive it from
    /// fields that identify the event (never from the time it was received).
    pub dedup_key: String,
    /// The unified kind.
    pub kind: EventKind,
    /// The vendor's name for the event (`chat_started`, `incoming_event`, `Human.UserSendMsg`).
    pub vendor_event: String,
    /// When it happened, by the vendor's clock.
    pub occurred_at: Timestamp,
    /// What it says.
    pub payload: EventPayload,
}

impl IncomingEvent {
    /// The conversation this event is about, if it is about one.
    pub fn conversation_external_id(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::Conversation(patch) => Some(&patch.external_id),
            _ => None,
        }
    }
}

/// An event in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the global log: gap-free, assigned once at append.
    pub sequence: Sequence,
    /// A globally unique id.
    pub id: String,
    /// The connection it arrived through.
    pub connection: ConnectionId,
    /// The connection's vendor.
    pub vendor: String,
    /// When Switchboard received it.
    pub received_at: Timestamp,
    /// The id of the HTTP request (or sync page) that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The event itself.
    #[serde(flatten)]
    pub incoming: IncomingEvent,
    /// The raw body it was parsed from. Stored on the first event of each request only; the
    /// others of the same request share its `request_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl Event {
    /// The conversation this event is about, if any.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        self.incoming
            .conversation_external_id()
            .map(|id| ConversationId::new(self.connection.clone(), id))
    }

    /// The ticket this event is about, if any.
    pub fn ticket_id(&self) -> Option<ConversationId> {
        match &self.incoming.payload {
            EventPayload::Ticket(ticket) => Some(ConversationId::new(
                self.connection.clone(),
                ticket.external_id.clone(),
            )),
            _ => None,
        }
    }
}

/// Joins the parts of a dedup key with `:`, escaping `%` and `:` inside parts so that two
/// different part lists never give the same key (e.g. `dedup_key(&["msg", key, event])`).
/// Plugins build [`IncomingEvent::dedup_key`] with it when the vendor gives no event id.
pub fn dedup_key(parts: &[&str]) -> String {
    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(':');
        }
        for c in part.chars() {
            match c {
                '%' => key.push_str("%25"),
                ':' => key.push_str("%3A"),
                c => key.push(c),
            }
        }
    }
    key
}

#[cfg(test)]
mod dedup_key_tests {
    use super::dedup_key;

    #[test]
    fn parts_are_escaped_so_different_lists_never_collide() {
        assert_eq!(dedup_key(&["a", "b:c"]), "a:b%3Ac");
        assert_ne!(dedup_key(&["a:b", "c"]), dedup_key(&["a", "b:c"]));
        assert_eq!(dedup_key(&["50%"]), "50%25");
        assert_ne!(dedup_key(&["a%3Ab"]), dedup_key(&["a:b"]));
    }
}
