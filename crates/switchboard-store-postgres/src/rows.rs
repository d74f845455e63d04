//! How the model is laid out in rows: keys, the conversation without its messages, events.

use serde::{Deserialize, Serialize};
use switchboard_core::{
    ConnectionId, Conversation, ConversationId, Event, EventKind, EventPayload, IncomingEvent, Lww,
    Message, Sequence, Ticket, Timestamp,
};
use switchboard_store::{StoreError, UNREADABLE_EVENT};
use tokio_postgres::Row;

use crate::error;

/// `connection/external id` as bytes: the key of conversations and tickets, and the order
/// they are listed in (byte order, as on sled).
pub(crate) fn key(connection: &ConnectionId, external_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(connection.as_str().len() + 1 + external_id.len());
    key.extend_from_slice(connection.as_str().as_bytes());
    key.push(b'/');
    key.extend_from_slice(external_id.as_bytes());
    key
}

pub(crate) fn conversation_key(id: &ConversationId) -> Vec<u8> {
    key(&id.connection, &id.external_id)
}

/// The time conversations are listed by: when it started if known, else when it last changed.
pub(crate) fn sort_at(conversation: &Conversation) -> i64 {
    conversation
        .started_at
        .unwrap_or(conversation.updated_at)
        .as_millis()
}

/// The conversation's row body: everything but its messages (rows of their own) and the
/// event keys of a merge in memory (a store keeps only the event count).
pub(crate) fn conversation_body(conversation: &mut Conversation) -> Result<String, StoreError> {
    let messages = std::mem::take(&mut conversation.messages);
    let keys = std::mem::take(&mut conversation.event_keys);
    let body = serde_json::to_string(conversation);
    conversation.messages = messages;
    conversation.event_keys = keys;
    body.map_err(|e| StoreError::Commit(format!("encoding a conversation: {e}")))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: impl FnOnce() -> String,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| error::corrupt(what(), e))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Commit(format!("encoding a record: {e}")))
}

pub(crate) fn text(bytes: Vec<u8>, what: impl FnOnce() -> String) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| error::corrupt(what(), e))
}

pub(crate) fn millis(value: i64, what: impl FnOnce() -> String) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(value).ok_or_else(|| error::corrupt(what(), "a time out of range"))
}

/// A message row's body.
pub(crate) type StoredMessage = Lww<Message>;

/// A ticket as its row holds it (the sequence that set it is a column).
#[derive(Debug)]
pub(crate) struct StoredTicket {
    pub(crate) ticket: Ticket,
    pub(crate) sequence: i64,
    /// Whether this group changed it.
    pub(crate) dirty: bool,
}

/// The columns of `sb_events` a reader selects, in this order.
pub(crate) const EVENT_COLUMNS: &str = "sequence, id, connection, dedup_key, vendor, received_at, request_id, kind, vendor_event, occurred_at, payload, raw";

/// An event from a row of [`EVENT_COLUMNS`]. A row whose payload (or kind) does not decode
/// is served as a stand-in that keeps its sequence, so readers see no gap.
pub(crate) fn event(row: &Row) -> Result<Event, StoreError> {
    let column = |e: tokio_postgres::Error| error::corrupt("sb_events", error::chain(&e));
    let sequence: i64 = row.try_get(0).map_err(column)?;
    let what = || format!("sb_events sequence {sequence}");
    let connection: String = row.try_get(2).map_err(column)?;
    let connection = ConnectionId::new(connection).map_err(|e| error::corrupt(what(), e.0))?;
    let dedup_key = text(row.try_get(3).map_err(column)?, what)?;
    let kind_text: String = row.try_get(7).map_err(column)?;
    let payload_text: String = row.try_get(10).map_err(column)?;
    let raw: Option<Vec<u8>> = row.try_get(11).map_err(column)?;
    let decoded = EventKind::parse(&kind_text)
        .ok_or_else(|| error::corrupt(what(), format!("unknown kind {kind_text}")))
        .and_then(|kind| Ok((kind, decode::<EventPayload>(what, &payload_text)?)));
    let occurred_at = millis(row.try_get(9).map_err(column)?, what)?;
    let (kind, vendor_event, payload, raw) = match decoded {
        Ok((kind, payload)) => (
            kind,
            text(row.try_get(8).map_err(column)?, what)?,
            payload,
            raw.map(|raw| text(raw, what)).transpose()?,
        ),
        Err(reason) => {
            tracing::error!(sequence, error = %reason, "a stored event cannot be decoded; serving a stand-in");
            let data = serde_json::json!({
                "error": "this log entry cannot be decoded; its event is lost to readers",
                "reason": reason.to_string(),
                "sequence": sequence,
            });
            (
                EventKind::VendorEvent,
                UNREADABLE_EVENT.to_owned(),
                EventPayload::Vendor {
                    subject: None,
                    data,
                },
                None,
            )
        }
    };
    let request_id: Option<Vec<u8>> = row.try_get(6).map_err(column)?;
    Ok(Event {
        sequence: Sequence(sequence as u64),
        id: row.try_get(1).map_err(column)?,
        connection,
        vendor: text(row.try_get(4).map_err(column)?, what)?,
        received_at: millis(row.try_get(5).map_err(column)?, what)?,
        request_id: request_id.map(|r| text(r, what)).transpose()?,
        incoming: IncomingEvent {
            dedup_key,
            kind,
            vendor_event,
            occurred_at,
            payload,
        },
        raw,
    })
}
