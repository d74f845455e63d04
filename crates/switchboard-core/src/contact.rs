//! Contacts: one person across connections and vendors. The links between conversations and
//! contacts are derived from the log; the changes a person asks for (merge, split, erasure)
//! are events in the log too, so that every replica and every replay agrees.

use serde::{Deserialize, Serialize};

use crate::ConnectionId;

/// The connection of events Switchboard writes itself about no vendor connection (contact
/// merges, splits and erasures). No configured connection may take this id.
pub const SYSTEM_CONNECTION: &str = "switchboard";

/// The vendor name of those events.
pub const SYSTEM_VENDOR: &str = "switchboard";

impl ConnectionId {
    /// The connection of events Switchboard writes itself ([`SYSTEM_CONNECTION`]).
    pub fn system() -> ConnectionId {
        ConnectionId::new(SYSTEM_CONNECTION).expect("a valid connection id")
    }

    /// Whether this is [`ConnectionId::system`].
    pub fn is_system(&self) -> bool {
        self.as_str() == SYSTEM_CONNECTION
    }
}

/// A change to contacts asked for by a person, kept in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ContactChange {
    /// `from` is the same person as `into`: its identities, conversations and tickets move to
    /// `into`, and `from` names `into` from then on.
    Merged {
        /// The contact that remains.
        into: String,
        /// The contact merged into it.
        from: String,
    },
    /// `identities` of `contact` are another person: they leave it for the new contact
    /// `new_contact`, with the conversations and tickets they identify, and the two contacts
    /// are never linked automatically again.
    Split {
        /// The contact split.
        contact: String,
        /// The contact created for the identities that leave.
        new_contact: String,
        /// The identity keys that leave (`email:...`, `phone:...`, `visitor:<connection>/<id>`).
        identities: Vec<String>,
    },
    /// The personal data of `contact` was erased from projections, indexes and the log's
    /// stored payloads. The event itself holds no personal data: counts only.
    Erased {
        /// The contact erased.
        contact: String,
        /// Conversations whose personal data was erased.
        conversations: u64,
        /// Tickets whose personal data was erased.
        tickets: u64,
        /// Log events whose payloads were erased.
        events: u64,
    },
}

impl ContactChange {
    /// The contact the change is about (the one that remains, for a merge).
    pub fn contact(&self) -> &str {
        match self {
            ContactChange::Merged { into, .. } => into,
            ContactChange::Split { contact, .. } | ContactChange::Erased { contact, .. } => contact,
        }
    }
}
