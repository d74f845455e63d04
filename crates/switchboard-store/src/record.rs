//! How a log entry is stored.
//!
//! **Schema 3** (written now): one byte [`BINARY_RECORD`], then a postcard record of the
//! event's head fields (sequence aside: the key holds it), its payload as JSON text, and the raw
//! body as bytes. Vendor JSON is never nested inside another JSON document: the raw body is
//! stored as the bytes that arrived (no escaping, no re-encoding), and the payload's JSON is a
//! document of its own, so its depth is only the depth the store validated
//! ([`MAX_VALUE_DEPTH`]).
//!
//! **Schema 2** entries (a JSON object of a flat, store-private shape: every field at one level,
//! the payload externally tagged) are still read: they start with `{`, which no binary record
//! does, so an upgraded store keeps its log as it was.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard_core::{
    Agent, ConnectionId, ConversationPatch, Event, EventKind, EventPayload, IncomingEvent,
    Sequence, Ticket, Timestamp,
};

use crate::StoreError;

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum PayloadOut<'a> {
    Conversation(&'a ConversationPatch),
    Ticket(&'a Ticket),
    Agent {
        agent: &'a Agent,
        deleted: bool,
    },
    Vendor {
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        data: &'a serde_json::Value,
    },
}

#[derive(Deserialize)]
struct EventIn {
    sequence: u64,
    id: String,
    connection: ConnectionId,
    vendor: String,
    received_at: Timestamp,
    #[serde(default)]
    request_id: Option<String>,
    dedup_key: String,
    kind: EventKind,
    vendor_event: String,
    occurred_at: Timestamp,
    payload: PayloadIn,
    #[serde(default)]
    raw: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PayloadIn {
    Conversation(ConversationPatch),
    Ticket(Ticket),
    Agent {
        agent: Agent,
        #[serde(default)]
        deleted: bool,
    },
    Vendor {
        #[serde(default)]
        subject: Option<String>,
        data: serde_json::Value,
    },
}

/// What the writer knows of a new log entry; borrowed, so encoding copies nothing first.
pub(crate) struct NewEvent<'a> {
    pub(crate) id: &'a str,
    pub(crate) connection: &'a ConnectionId,
    pub(crate) vendor: &'a str,
    pub(crate) received_at: Timestamp,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) incoming: &'a IncomingEvent,
    pub(crate) raw: Option<&'a str>,
}

/// The first bytes of a zstd frame: a stored value that starts with them is compressed.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Values shorter than this are stored as they are: compressing them saves too little.
const PACK_ABOVE: usize = 200;

/// The zstd level: the fastest, which still shrinks JSON and raw bodies 2-4 times.
const ZSTD_LEVEL: i32 = 1;

/// A value as stored: zstd-compressed when it is long enough and compression pays off,
/// else as it is. Neither JSON (`{`, `[`, `"`...) nor a binary log record
/// ([`BINARY_RECORD`]) starts with the zstd magic, so [`unpack`] tells them apart.
pub(crate) fn pack(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() < PACK_ABOVE {
        return bytes;
    }
    match zstd::bulk::compress(&bytes, ZSTD_LEVEL) {
        Ok(packed) if packed.len() < bytes.len() => packed,
        _ => bytes,
    }
}

/// The value [`pack`] was given.
pub(crate) fn unpack<'a>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
    if bytes.starts_with(&ZSTD_MAGIC) {
        zstd::stream::decode_all(bytes)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StoreError::corrupt(key, format!("cannot decompress: {e}")))
    } else {
        Ok(std::borrow::Cow::Borrowed(bytes))
    }
}

/// Encodes a stored record (a conversation, ticket, agent or sync state): JSON, packed.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map(pack)
        .map_err(|e| StoreError::Commit(format!("cannot encode a record: {e}")))
}

/// Decodes a stored value; one that does not decode is corrupt at `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let bytes = unpack(key, bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(key, e))
}

/// The stored value at `key`, decoded, if any.
pub(crate) fn load<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

/// The first byte of a schema-3 log record (a schema-2 record, JSON, starts with `{`).
pub(crate) const BINARY_RECORD: u8 = 0x03;

/// A schema-3 log record: the event without its sequence (the key holds it).
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    id: &'a str,
    connection: &'a str,
    vendor: &'a str,
    received_at: i64,
    request_id: Option<&'a str>,
    dedup_key: &'a str,
    kind: &'a str,
    vendor_event: &'a str,
    occurred_at: i64,
    /// The payload, JSON of [`PayloadOut`] / [`PayloadIn`].
    payload: &'a str,
    /// The raw body as it arrived.
    raw: Option<&'a str>,
}

/// The payload's JSON, as a schema-3 record holds it. Callers may encode it before handing
/// the event to the writer, so that this work is spread over every core.
pub(crate) fn encode_payload(payload: &EventPayload) -> Result<String, StoreError> {
    let out = match payload {
        EventPayload::Conversation(patch) => PayloadOut::Conversation(patch),
        EventPayload::Ticket(ticket) => PayloadOut::Ticket(ticket),
        EventPayload::Agent { agent, deleted } => PayloadOut::Agent {
            agent,
            deleted: *deleted,
        },
        EventPayload::Vendor { subject, data } => PayloadOut::Vendor {
            subject: subject.as_deref(),
            data,
        },
    };
    serde_json::to_string(&out)
        .map_err(|e| StoreError::Commit(format!("cannot encode an event's payload: {e}")))
}

/// Encodes a log record; `payload` is [`encode_payload`] of the event's payload.
pub(crate) fn encode_event(event: &NewEvent<'_>, payload: &str) -> Result<Vec<u8>, StoreError> {
    let incoming = event.incoming;
    let record = Record {
        id: event.id,
        connection: event.connection.as_str(),
        vendor: event.vendor,
        received_at: event.received_at.as_millis(),
        request_id: event.request_id,
        dedup_key: &incoming.dedup_key,
        kind: incoming.kind.as_str(),
        vendor_event: &incoming.vendor_event,
        occurred_at: incoming.occurred_at.as_millis(),
        payload,
        raw: event.raw,
    };
    let mut out = Vec::with_capacity(
        64 + payload.len()
            + event.raw.map_or(0, str::len)
            + incoming.dedup_key.len()
            + incoming.vendor_event.len(),
    );
    out.push(BINARY_RECORD);
    postcard::to_extend(&record, out)
        .map(pack)
        .map_err(|e| StoreError::Commit(format!("cannot encode an event: {e}")))
}

/// The most levels of JSON nesting the store accepts in a vendor value (an event's `data`, a
/// message's `data`). Stored records wrap such a value in at most eight more levels, far
/// below the 128 that serde_json reads back, so whatever is stored always decodes.
pub const MAX_VALUE_DEPTH: usize = 64;

/// How deep `value` nests (a scalar is 0, `[]` or `{}` is 1), without recursion.
pub(crate) fn value_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// The fields of a log entry before its payload: they are flat, so they decode even when the
/// payload does not. They repeat `EventIn`'s first fields on purpose: `EventIn` cannot embed
/// this with `#[serde(flatten)]` without decoding through serde's buffering path, the cost the
/// flat shape exists to avoid (see the module docs).
#[derive(Deserialize)]
struct EventHead {
    sequence: u64,
    id: String,
    connection: ConnectionId,
    vendor: String,
    received_at: Timestamp,
    #[serde(default)]
    request_id: Option<String>,
    dedup_key: String,
    kind: EventKind,
    vendor_event: String,
    occurred_at: Timestamp,
}

/// The `vendor_event` of a stand-in for a log entry that cannot be decoded.
pub const UNREADABLE_EVENT: &str = "switchboard.unreadable";

/// A log entry that does not decode, as a stand-in that keeps its place in the log: same
/// sequence and (where its head decodes) the same id, connection and times; kind
/// `vendor_event`, `vendor_event` [`UNREADABLE_EVENT`], and the reason in its data. `None`
/// when not even the sequence can be known.
pub(crate) fn stand_in_event(key: &[u8], bytes: &[u8], reason: &StoreError) -> Option<Event> {
    let sequence = crate::keys::read_be(key.strip_prefix(crate::keys::LOG_PREFIX)?)?;
    let unpacked = unpack(key, bytes).unwrap_or_default();
    let bytes = &*unpacked;
    let binary_head = || -> Option<EventHead> {
        let record = decode_record(key, bytes).ok()?;
        Some(EventHead {
            sequence,
            id: record.id.to_owned(),
            connection: ConnectionId::new(record.connection).ok()?,
            vendor: record.vendor.to_owned(),
            received_at: Timestamp::from_millis(record.received_at)?,
            request_id: record.request_id.map(str::to_owned),
            dedup_key: record.dedup_key.to_owned(),
            kind: EventKind::parse(record.kind)?,
            vendor_event: record.vendor_event.to_owned(),
            occurred_at: Timestamp::from_millis(record.occurred_at)?,
        })
    };
    // Field names are never escaped, so the first `,"payload":` ends a JSON record's flat head.
    let head = if bytes.first() != Some(&b'{') {
        binary_head()
    } else {
        bytes
            .windows(PAYLOAD_FIELD.len())
            .position(|w| w == PAYLOAD_FIELD)
            .and_then(|end| {
                let mut head = bytes[..end].to_vec();
                head.push(b'}');
                serde_json::from_slice::<EventHead>(&head).ok()
            })
            .filter(|head| head.sequence == sequence)
    };
    let mut data = serde_json::json!({
        "error": "this log entry cannot be decoded; its event is lost to readers",
        "reason": reason.to_string(),
        "sequence": sequence,
    });
    let fallback_time = Timestamp::from_millis(0)?;
    let (id, connection, vendor, received_at, request_id, dedup_key, occurred_at, original) =
        match head {
            Some(h) => (
                h.id,
                h.connection,
                h.vendor,
                h.received_at,
                h.request_id,
                h.dedup_key,
                h.occurred_at,
                Some((h.kind, h.vendor_event)),
            ),
            None => (
                format!("unreadable-{sequence}"),
                ConnectionId::new("switchboard").ok()?,
                "switchboard".to_owned(),
                fallback_time,
                None,
                format!("unreadable:{sequence}"),
                fallback_time,
                None,
            ),
        };
    if let Some((kind, vendor_event)) = original {
        data["kind"] = serde_json::to_value(kind).ok()?;
        data["vendor_event"] = serde_json::Value::String(vendor_event);
    }
    Some(Event {
        sequence: Sequence(sequence),
        id,
        connection,
        vendor,
        received_at,
        request_id,
        incoming: IncomingEvent {
            dedup_key,
            kind: EventKind::VendorEvent,
            vendor_event: UNREADABLE_EVENT.to_owned(),
            occurred_at,
            payload: EventPayload::Vendor {
                subject: None,
                data,
            },
        },
        raw: None,
    })
}

const PAYLOAD_FIELD: &[u8] = b",\"payload\":";

fn time(key: &[u8], millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(millis)
        .ok_or_else(|| StoreError::corrupt(key, format!("time {millis} out of range")))
}

/// The sequence a log key holds.
fn sequence_of(key: &[u8]) -> Result<u64, StoreError> {
    key.strip_prefix(crate::keys::LOG_PREFIX)
        .and_then(crate::keys::read_be)
        .ok_or_else(|| StoreError::corrupt(key, "not a log key"))
}

/// The head of a binary record, with its payload and raw body still encoded.
fn decode_record<'a>(key: &[u8], bytes: &'a [u8]) -> Result<Record<'a>, StoreError> {
    let body = bytes
        .strip_prefix(&[BINARY_RECORD])
        .ok_or_else(|| StoreError::corrupt(key, "unknown record format"))?;
    postcard::from_bytes(body).map_err(|e| StoreError::corrupt(key, e))
}

fn payload_of(stored: PayloadIn) -> EventPayload {
    match stored {
        PayloadIn::Conversation(patch) => EventPayload::Conversation(patch),
        PayloadIn::Ticket(ticket) => EventPayload::Ticket(ticket),
        PayloadIn::Agent { agent, deleted } => EventPayload::Agent { agent, deleted },
        PayloadIn::Vendor { subject, data } => EventPayload::Vendor { subject, data },
    }
}

pub(crate) fn decode_event(key: &[u8], bytes: &[u8]) -> Result<Event, StoreError> {
    let bytes = &*unpack(key, bytes)?;
    if bytes.first() != Some(&b'{') {
        let record = decode_record(key, bytes)?;
        let payload: PayloadIn = decode(key, record.payload.as_bytes())?;
        let kind = EventKind::parse(record.kind)
            .ok_or_else(|| StoreError::corrupt(key, format!("unknown kind {}", record.kind)))?;
        return Ok(Event {
            sequence: Sequence(sequence_of(key)?),
            id: record.id.to_owned(),
            connection: ConnectionId::new(record.connection)
                .map_err(|e| StoreError::corrupt(key, e))?,
            vendor: record.vendor.to_owned(),
            received_at: time(key, record.received_at)?,
            request_id: record.request_id.map(str::to_owned),
            incoming: IncomingEvent {
                dedup_key: record.dedup_key.to_owned(),
                kind,
                vendor_event: record.vendor_event.to_owned(),
                occurred_at: time(key, record.occurred_at)?,
                payload: payload_of(payload),
            },
            raw: record.raw.map(str::to_owned),
        });
    }
    let stored: EventIn = decode(key, bytes)?;
    let payload = payload_of(stored.payload);
    Ok(Event {
        sequence: Sequence(stored.sequence),
        id: stored.id,
        connection: stored.connection,
        vendor: stored.vendor,
        received_at: stored.received_at,
        request_id: stored.request_id,
        incoming: IncomingEvent {
            dedup_key: stored.dedup_key,
            kind: stored.kind,
            vendor_event: stored.vendor_event,
            occurred_at: stored.occurred_at,
            payload,
        },
        raw: stored.raw,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_core::Message;

    use super::*;

    fn round_trip(incoming: IncomingEvent, raw: Option<&str>, request_id: Option<&str>) {
        let connection = ConnectionId::new("lc").unwrap();
        let new = NewEvent {
            id: "0190-id",
            connection: &connection,
            vendor: "livechat",
            received_at: Timestamp::from_millis(1_700_000_000_123).unwrap(),
            request_id,
            incoming: &incoming,
            raw,
        };
        let payload = encode_payload(&new.incoming.payload).unwrap();
        let bytes = encode_event(&new, &payload).unwrap();
        assert!(
            bytes[0] == BINARY_RECORD || bytes.starts_with(&ZSTD_MAGIC),
            "a binary record, packed or not"
        );
        let decoded = decode_event(&crate::keys::log_key(42), &bytes).unwrap();
        let expected = Event {
            sequence: Sequence(42),
            id: "0190-id".into(),
            connection: connection.clone(),
            vendor: "livechat".into(),
            received_at: new.received_at,
            request_id: request_id.map(str::to_owned),
            incoming,
            raw: raw.map(str::to_owned),
        };
        assert_eq!(decoded, expected);
    }

    fn incoming(payload: EventPayload) -> IncomingEvent {
        IncomingEvent {
            dedup_key: "k:1".into(),
            kind: EventKind::Message,
            vendor_event: "incoming_event".into(),
            occurred_at: Timestamp::from_secs(1_600_000_000).unwrap(),
            payload,
        }
    }

    #[test]
    fn every_payload_round_trips() {
        let mut patch = ConversationPatch::new("c\"1\u{e9}");
        let message: Message = serde_json::from_value(serde_json::json!({
            "key": "m1", "author_role": "visitor", "author_id": "v1",
            "text": "hi \n there", "sent_at": 1_600_000_000_000_i64,
            "data": {"lat": 1.5}
        }))
        .unwrap();
        patch.messages.push(message);
        round_trip(
            incoming(EventPayload::Conversation(patch)),
            Some("{\"raw\": true}"),
            Some("req-1"),
        );
        let ticket: Ticket = serde_json::from_value(serde_json::json!({
            "external_id": "T1", "origin": "vendor", "status": "open", "subject": "s",
            "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        round_trip(incoming(EventPayload::Ticket(ticket)), None, None);
        let agent: Agent =
            serde_json::from_value(serde_json::json!({"login": "a@example.com"})).unwrap();
        round_trip(
            incoming(EventPayload::Agent {
                agent: agent.clone(),
                deleted: true,
            }),
            None,
            None,
        );
        round_trip(
            incoming(EventPayload::Agent {
                agent,
                deleted: false,
            }),
            None,
            None,
        );
        let data = serde_json::json!({"nested": {"list": [1, 2.5, null, "x"]}, "map": BTreeMap::from([("a", 1)])});
        round_trip(
            incoming(EventPayload::Vendor {
                subject: Some("chat 7".into()),
                data: data.clone(),
            }),
            None,
            None,
        );
        round_trip(
            incoming(EventPayload::Vendor {
                subject: None,
                data,
            }),
            None,
            None,
        );
    }

    #[test]
    fn long_values_are_packed_short_ones_kept_and_both_unpack() {
        let long = serde_json::to_vec(&serde_json::json!({"text": "hello ".repeat(100)})).unwrap();
        let packed = pack(long.clone());
        assert!(packed.starts_with(&ZSTD_MAGIC));
        assert!(
            packed.len() < long.len() / 4,
            "{} of {}",
            packed.len(),
            long.len()
        );
        assert_eq!(&*unpack(b"k", &packed).unwrap(), long.as_slice());
        let short = b"{\"a\":1}".to_vec();
        assert_eq!(pack(short.clone()), short);
        assert_eq!(&*unpack(b"k", &short).unwrap(), short.as_slice());
        // A damaged frame is corrupt, named by its key.
        let mut damaged = packed;
        let last = damaged.len() - 1;
        damaged[last] ^= 0xFF;
        damaged.truncate(last - 4);
        assert!(matches!(
            unpack(b"k", &damaged),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_record_that_does_not_decode_is_corrupt() {
        let error = decode_event(b"log/1", b"{\"sequence\": 1}").unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }
}
