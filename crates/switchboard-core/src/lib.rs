//! Switchboard's vocabulary: the normalized model of conversations, messages, tickets and
//! agents; the events that change them; the traits a vendor plugin implements; the registry
//! that finds plugins; and the error codes both front doors speak.
//!
//! **Architecture Invariant:** this crate knows nothing of tonic, axum, sled or HTTP clients.
//! Plugins depend on it alone.
//!
//! ```
//! use switchboard_core::{ConnectionId, Conversation, ConversationId, ConversationPatch,
//!     ConversationStatus, Timestamp};
//!
//! let id = ConversationId::new(ConnectionId::new("livechat").unwrap(), "PO13");
//! let mut conversation = Conversation::new(id, "livechat");
//! let mut ended = ConversationPatch::new("PO13");
//! ended.status = Some(ConversationStatus::Closed);
//! let mut started = ConversationPatch::new("PO13");
//! started.status = Some(ConversationStatus::Open);
//! // Out of order: the end arrives first. Status only moves forward.
//! conversation.apply(&ended, Timestamp::from_secs(1552126503).unwrap(), "349a820");
//! conversation.apply(&started, Timestamp::from_secs(1552126412).unwrap(), "7ddaabb");
//! assert_eq!(conversation.status, ConversationStatus::Closed);
//! ```

mod config;
mod contact;
mod conversation;
pub mod erase;
mod error;
mod event;
mod ids;
mod model;
mod plugin;
mod time;
pub mod toolkit;
mod typed;
pub mod verify;

pub use crate::config::{ConnectionConfig, RateLimit, Secret};
pub use crate::contact::{ContactChange, SYSTEM_CONNECTION, SYSTEM_VENDOR};
pub use crate::conversation::{Conversation, Lww, ParticipantFields, Stamp, ThreadStatus};
pub use crate::erase::ERASED;
pub use crate::error::{Error, ErrorCode, MAX_ERROR_MESSAGE_BYTES, Result, cap_message};
pub use crate::event::{
    ConversationPatch, Event, EventKind, EventPayload, IncomingEvent, dedup_key,
};
pub use crate::ids::{
    ConnectionId, ConversationId, InvalidConnectionId, InvalidConversationId, Sequence, TicketId,
};
pub use crate::model::{
    Agent, Attachment, ConversationStatus, Group, Message, Participant, Rating, Role, Segment,
    Ticket, TicketEvent, TicketOrigin, TicketSource, TicketStatus,
};
pub use crate::plugin::{
    AgentApi, Connector, ConnectorFactory, IngestSummary, NewAgent, NewTicket, Plugin, Registry,
    RegistryError, SyncPage, TicketApi, TicketChange, TicketPage, TicketQuery, WebhookFactory,
    WebhookReply, WebhookRequest, WebhookSource, json_without_fields, may_name_fields, unsupported,
};
pub use crate::time::Timestamp;
pub use crate::typed::field_names;

pub use async_trait::async_trait;
pub use inventory;
