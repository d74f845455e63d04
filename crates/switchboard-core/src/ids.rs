//! Identifiers: connections, conversations, tickets and log sequences.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One configured vendor account, e.g. `livechat-eu` (two LiveChat licenses are two connections).
///
/// 1 to 64 characters of `a-z`, `0-9`, `-` and `_`, so it is safe in URLs (`/webhooks/{id}`),
/// in log lines and as a store key prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnectionId(String);

/// Why a string is not a valid [`ConnectionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid connection id {0:?}: use 1 to 64 characters of lowercase letters, digits, '-' and '_'"
)]
pub struct InvalidConnectionId(pub String);

impl ConnectionId {
    /// Checks and wraps a connection id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidConnectionId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(ConnectionId(id))
        } else {
            Err(InvalidConnectionId(id))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConnectionId {
    type Error = InvalidConnectionId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ConnectionId::new(value)
    }
}

impl From<ConnectionId> for String {
    fn from(value: ConnectionId) -> Self {
        value.0
    }
}

impl FromStr for ConnectionId {
    type Err = InvalidConnectionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectionId::new(s)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation (or a ticket) across Switchboard: its connection plus the vendor's own id,
/// written `connection/vendor-id` (e.g. `livechat/PO13`).
///
/// The connection part never contains `/`, so the first `/` splits the two unambiguously even
/// when the vendor's id contains slashes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConversationId {
    /// The connection the conversation arrived through.
    pub connection: ConnectionId,
    /// The vendor's id for it (chat id, session id, channel id...).
    pub external_id: String,
}

/// Why a string is not a valid `connection/vendor-id` pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {0:?}: expected CONNECTION/VENDOR_ID, e.g. livechat/PO13")]
pub struct InvalidConversationId(pub String);

impl ConversationId {
    /// Pairs a connection with a vendor id.
    pub fn new(connection: ConnectionId, external_id: impl Into<String>) -> Self {
        ConversationId {
            connection,
            external_id: external_id.into(),
        }
    }

    /// Parses `connection/vendor-id`.
    pub fn parse(text: &str) -> Result<Self, InvalidConversationId> {
        let (connection, external) = text
            .split_once('/')
            .ok_or_else(|| InvalidConversationId(text.to_owned()))?;
        if external.is_empty() {
            return Err(InvalidConversationId(text.to_owned()));
        }
        let connection =
            ConnectionId::new(connection).map_err(|_| InvalidConversationId(text.to_owned()))?;
        Ok(ConversationId::new(connection, external))
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.connection, self.external_id)
    }
}

/// A ticket's id has the same shape as a conversation's: `connection/vendor-id`.
pub type TicketId = ConversationId;

/// A position in the global event log. The first event is 1; 0 means "before everything".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sequence(pub u64);

impl Sequence {
    /// Before the first event.
    pub const ZERO: Sequence = Sequence(0);

    /// The sequence after this one.
    pub fn next(self) -> Sequence {
        Sequence(self.0 + 1)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_url_safe() {
        assert!(ConnectionId::new("livechat-eu_2").is_ok());
        for bad in ["", "Live", "a/b", "a b", &"x".repeat(65)] {
            assert!(ConnectionId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn conversation_ids_split_at_first_slash() {
        let id = ConversationId::parse("tencent/2baf/4d84").unwrap();
        assert_eq!(id.connection.as_str(), "tencent");
        assert_eq!(id.external_id, "2baf/4d84");
        assert_eq!(id.to_string(), "tencent/2baf/4d84");
        assert!(ConversationId::parse("nope").is_err());
        assert!(ConversationId::parse("livechat/").is_err());
        assert!(ConversationId::parse("BAD/x").is_err());
    }
}
