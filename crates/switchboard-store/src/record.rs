//! How records are stored: JSON for projections, a compact binary entry per append request for
//! the log, and zstd for any value long enough to gain from it ([`pack`]).
//!
//! **Log entries, schema 3** (written now): one [`RequestRecord`] per append request, keyed by
//! its first event's sequence, holding the request's new events and its raw body once. Vendor
//! JSON is never nested inside another JSON document: the raw body is stored as the text that
//! arrived (no escaping), and each payload's JSON is a document of its own, so its depth is
//! only the depth the store validated ([`MAX_VALUE_DEPTH`]). The request's events and its raw
//! body are compressed together, so the text a payload repeats from the body costs little.
//!
//! **Log entries, schema 2** (one JSON object per event, of a flat, store-private shape: every
//! field at one level, the payload externally tagged) are still read: they start with `{`,
//! which no request record does, so an upgraded store keeps its log as it was.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard_core::{
    Agent, Attachment, ConnectionId, ContactChange, ConversationPatch, Event, EventKind,
    EventPayload, IncomingEvent, Lww, Message, Role, Sequence, Stamp, Ticket, Timestamp,
};

use crate::{AppendRequest, StoreError};

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
    Contact(&'a ContactChange),
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
    Contact(ContactChange),
}

/// The first bytes of a zstd frame: a stored value that starts with them is compressed.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Values shorter than this are stored as they are: compressing them saves too little.
const PACK_ABOVE: usize = 400;

/// The zstd level: the fastest of the standard ones, which still shrinks JSON and raw bodies 2-4
/// times.
const ZSTD_LEVEL: i32 = 1;

/// The zstd level of conversation headers ([`pack_fast`]): one of zstd's fast negative levels.
/// A header is small (a few hundred bytes of postcard), so building entropy tables is most of
/// what compressing it costs. Measured against level 1 (session 15, BENCHMARKS.md): 2 to 6 %
/// more webhooks/s over HTTP, for 2 to 5 % more data dir per webhook.
const FAST_ZSTD_LEVEL: i32 = -3;

/// A value as stored: zstd-compressed when it is long enough and compression pays off,
/// else as it is. Neither JSON (`{`, `[`, `"`...) nor a binary log record
/// ([`BINARY_RECORD`]) starts with the zstd magic, so [`unpack`] tells them apart.
pub(crate) fn pack(bytes: Vec<u8>) -> Vec<u8> {
    // A compression context costs more to make than a small value costs to compress: one
    // per thread and level, reused.
    thread_local! {
        static COMPRESSOR: Compressor = const { std::cell::RefCell::new(None) };
    }
    pack_with(&COMPRESSOR, ZSTD_LEVEL, bytes)
}

/// [`pack`] at a faster level that compresses less ([`FAST_ZSTD_LEVEL`]); [`unpack`] reads
/// both.
pub(crate) fn pack_fast(bytes: Vec<u8>) -> Vec<u8> {
    thread_local! {
        static COMPRESSOR: Compressor = const { std::cell::RefCell::new(None) };
    }
    pack_with(&COMPRESSOR, FAST_ZSTD_LEVEL, bytes)
}

type Compressor = std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>>;

fn pack_with(
    compressor: &'static std::thread::LocalKey<Compressor>,
    level: i32,
    bytes: Vec<u8>,
) -> Vec<u8> {
    if bytes.len() < PACK_ABOVE {
        return bytes;
    }
    let packed = compressor.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(level).ok();
        }
        cell.as_mut().and_then(|c| c.compress(&bytes).ok())
    });
    match packed {
        Some(packed) if packed.len() < bytes.len() => packed,
        _ => bytes,
    }
}

/// The most a packed value may unpack to: far above any value the store writes (webhook
/// bodies are capped well below it), so a damaged frame cannot make a read allocate more.
const MAX_UNPACKED: usize = 1 << 30;

/// The value [`pack`] was given.
pub(crate) fn unpack<'a>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
    if bytes.starts_with(&ZSTD_MAGIC) {
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let corrupt =
            |reason: String| StoreError::corrupt(key, format!("cannot decompress: {reason}"));
        // `pack` writes whole frames, which say their size.
        let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
            Ok(Some(size)) if size <= MAX_UNPACKED as u64 => size as usize,
            Ok(Some(size)) => return Err(corrupt(format!("a frame of {size} bytes"))),
            Ok(None) | Err(_) => return Err(corrupt("no frame size".into())),
        };
        DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| corrupt(e.to_string()))?);
            }
            let decompressor = cell.as_mut().expect("made above");
            decompressor
                .decompress(bytes, size)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| corrupt(e.to_string()))
        })
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

/// The first byte of a schema-3 log entry (a schema-2 entry, JSON, starts with `{`).
pub(crate) const REQUEST_RECORD: u8 = 0x04;

/// A schema-3 log entry: the new events of one append request (a webhook, a sync page), under
/// the key of the first one's sequence; the others follow it, gap-free. The raw body is kept
/// once, and served on the first event. Laid out as [`REQUEST_RECORD`], the number of events
/// (u32, little-endian, outside the compressed part so that a damaged entry still says how many
/// sequences it holds), then the postcard of this: [`pack`]ed in schemas 3 to 6, as it is
/// since schema 7, whose segment files compress a group's entries together.
#[derive(Serialize, Deserialize)]
struct RequestRecord<'a> {
    connection: &'a str,
    vendor: &'a str,
    received_at: i64,
    request_id: Option<&'a str>,
    raw: Option<&'a str>,
    #[serde(borrow)]
    events: Vec<EventRecord<'a>>,
}

/// One event of a [`RequestRecord`].
#[derive(Serialize, Deserialize)]
struct EventRecord<'a> {
    id: &'a str,
    dedup_key: &'a str,
    kind: &'a str,
    vendor_event: &'a str,
    occurred_at: i64,
    /// JSON of [`PayloadOut`] / [`PayloadIn`]: a document of its own, never nested in another.
    payload: &'a str,
}

/// The payload's JSON, as a log record holds it.
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
        EventPayload::Contact(change) => PayloadOut::Contact(change),
    };
    serde_json::to_string(&out)
        .map_err(|e| StoreError::Commit(format!("cannot encode an event's payload: {e}")))
}

/// Encodes the log entry of `events` (each with its id), new events of `request`, the first
/// holding the raw body.
pub(crate) fn encode_request(
    request: &AppendRequest,
    events: &[(&str, &IncomingEvent)],
) -> Result<Vec<u8>, StoreError> {
    let payloads = events
        .iter()
        .map(|(_, incoming)| encode_payload(&incoming.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let record = RequestRecord {
        connection: request.connection.as_str(),
        vendor: &request.vendor,
        received_at: request.received_at.as_millis(),
        request_id: request.request_id.as_deref(),
        raw: request.raw.as_deref(),
        events: events
            .iter()
            .zip(&payloads)
            .map(|((id, incoming), payload)| EventRecord {
                id,
                dedup_key: &incoming.dedup_key,
                kind: incoming.kind.as_str(),
                vendor_event: &incoming.vendor_event,
                occurred_at: incoming.occurred_at.as_millis(),
                payload,
            })
            .collect(),
    };
    let body = postcard::to_allocvec(&record)
        .map_err(|e| StoreError::Commit(format!("cannot encode a log record: {e}")))?;
    let count = u32::try_from(events.len())
        .map_err(|_| StoreError::InvalidArgument("too many events in one request".into()))?;
    // Not compressed on its own: its frame in the segment file is (see `segments`).
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(REQUEST_RECORD);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// `entry` as schema 7 stores it in a frame: a request record compressed on its own (schemas 3
/// to 6) is decompressed, anything else is returned as it is (a record that does not
/// decompress too: it reads as damaged either way).
pub(crate) fn unpacked_entry<'a>(key: &[u8], entry: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if entry.first() != Some(&REQUEST_RECORD) || entry.len() < 5 {
        return std::borrow::Cow::Borrowed(entry);
    }
    match unpack(key, &entry[5..]) {
        Ok(std::borrow::Cow::Owned(body)) => {
            let mut out = Vec::with_capacity(5 + body.len());
            out.extend_from_slice(&entry[..5]);
            out.extend_from_slice(&body);
            std::borrow::Cow::Owned(out)
        }
        _ => std::borrow::Cow::Borrowed(entry),
    }
}

/// The log entry at `key` with the events at `erase` erased
/// ([`switchboard_core::Event::erase_personal`]) and its raw body dropped: the entry's new
/// bytes and all its events as they now read. The other events stay as they were (an event
/// whose payload did not decode stays a stand-in). A schema-2 entry is rewritten as a request
/// record of its one event.
pub(crate) fn erase_entry(
    key: &[u8],
    bytes: &[u8],
    erase: &std::collections::BTreeSet<u64>,
) -> Result<(Vec<u8>, Vec<Event>), StoreError> {
    let mut events = decode_entry(key, bytes)?;
    let Some(first) = events.first() else {
        return Err(StoreError::corrupt(key, "a log entry without events"));
    };
    let mut request =
        AppendRequest::new(first.connection.clone(), first.vendor.clone(), Vec::new());
    request.received_at = first.received_at;
    request.request_id = first.request_id.clone();
    for event in &mut events {
        if erase.contains(&event.sequence.0) {
            event.erase_personal();
        }
        event.raw = None;
    }
    let ids: Vec<(&str, &IncomingEvent)> = events
        .iter()
        .map(|event| (event.id.as_str(), &event.incoming))
        .collect();
    let record = encode_request(&request, &ids)?;
    Ok((record, events))
}

/// The first byte of a schema-5 message record (a schema-3/4 one, JSON, starts with `{`; a
/// packed one with the zstd magic).
pub(crate) const MESSAGE_RECORD: u8 = 0x05;

/// A message as stored under `msg/` since schema 5: postcard, not JSON, so a message costs its
/// text and ids rather than its field names as well (a chat line took 231 bytes as JSON, about
/// 100 as this). Laid out as [`MESSAGE_RECORD`] then the postcard of this, [`pack`]ed as a
/// whole when long. The message's `data` stays a JSON document of its own, never nested.
#[derive(Serialize, Deserialize)]
struct MessageRecord<'a> {
    stamp_at: i64,
    stamp_hash: u64,
    key: &'a str,
    /// [`ROLES`].
    role: u8,
    author_id: Option<&'a str>,
    author_name: Option<&'a str>,
    text: &'a str,
    #[serde(borrow)]
    attachments: Vec<AttachmentRecord<'a>>,
    sent_at: i64,
    automatic: bool,
    data: Option<String>,
}

/// One attachment of a [`MessageRecord`].
#[derive(Serialize, Deserialize)]
struct AttachmentRecord<'a> {
    url: Option<&'a str>,
    name: Option<&'a str>,
    size: Option<u64>,
    content_type: Option<&'a str>,
}

/// Encodes a message register as the store keeps it under `msg/`.
pub(crate) fn encode_message(message: &Lww<Message>) -> Result<Vec<u8>, StoreError> {
    let value = &message.value;
    let data = value
        .data
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Commit(format!("cannot encode a message's data: {e}")))?;
    let record = MessageRecord {
        stamp_at: message.stamp.0.as_millis(),
        stamp_hash: message.stamp.1,
        key: &value.key,
        role: ROLES
            .iter()
            .position(|role| *role == value.author_role)
            .expect("every role is in ROLES") as u8,
        author_id: value.author_id.as_deref(),
        author_name: value.author_name.as_deref(),
        text: &value.text,
        attachments: value
            .attachments
            .iter()
            .map(|a| AttachmentRecord {
                url: a.url.as_deref(),
                name: a.name.as_deref(),
                size: a.size,
                content_type: a.content_type.as_deref(),
            })
            .collect(),
        sent_at: value.sent_at.as_millis(),
        automatic: value.automatic,
        data,
    };
    postcard::to_extend(&record, vec![MESSAGE_RECORD])
        .map(pack)
        .map_err(|e| StoreError::Commit(format!("cannot encode a message: {e}")))
}

/// A role as one byte of a [`MessageRecord`]: its place here.
const ROLES: [Role; 4] = [Role::Visitor, Role::Agent, Role::Bot, Role::System];

/// Decodes a message register stored at `key`: a [`MESSAGE_RECORD`], or the JSON a store of
/// schema 3 or 4 wrote.
pub(crate) fn decode_message(key: &[u8], bytes: &[u8]) -> Result<Lww<Message>, StoreError> {
    let bytes = unpack(key, bytes)?;
    let Some((&MESSAGE_RECORD, body)) = bytes.split_first() else {
        return serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(key, e));
    };
    let record: MessageRecord<'_> =
        postcard::from_bytes(body).map_err(|e| StoreError::corrupt(key, e))?;
    let author_role = *ROLES
        .get(usize::from(record.role))
        .ok_or_else(|| StoreError::corrupt(key, format!("unknown role {}", record.role)))?;
    let data = record
        .data
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::corrupt(key, e))?;
    Ok(Lww {
        value: Message {
            key: record.key.to_owned(),
            author_role,
            author_id: record.author_id.map(str::to_owned),
            author_name: record.author_name.map(str::to_owned),
            text: record.text.to_owned(),
            attachments: record
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    url: a.url.map(str::to_owned),
                    name: a.name.map(str::to_owned),
                    size: a.size,
                    content_type: a.content_type.map(str::to_owned),
                })
                .collect(),
            sent_at: time(key, record.sent_at)?,
            automatic: record.automatic,
            data,
        },
        stamp: Stamp(time(key, record.stamp_at)?, record.stamp_hash),
    })
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

/// How many events (sequences) the log entry at `key` holds: 1 for a schema-2 entry, the
/// count in its header for a request record or in its pointer (for an entry in a segment
/// file: see [`crate::segments`]); `None` if not even that can be read.
pub(crate) fn entry_count(bytes: &[u8]) -> Option<u64> {
    let count = match bytes.first()? {
        b'{' => return Some(1),
        &REQUEST_RECORD => u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?),
        &crate::segments::POINTER | &crate::segments::FRAMED_POINTER => {
            crate::segments::Pointer::decode(bytes)?.count
        }
        _ => return None,
    };
    (count > 0).then_some(u64::from(count))
}

fn time(key: &[u8], millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(millis)
        .ok_or_else(|| StoreError::corrupt(key, format!("time {millis} out of range")))
}

/// The sequences the log entry at `key` holds, whose value (the entry or its pointer) is
/// `value`; `None` if either does not say.
pub(crate) fn entry_sequences(key: &[u8], value: &[u8]) -> Option<std::ops::Range<u64>> {
    let first = sequence_of(key).ok()?;
    Some(first..first.checked_add(entry_count(value)?)?)
}

/// The first sequence of the log entry at `key`.
pub(crate) fn sequence_of(key: &[u8]) -> Result<u64, StoreError> {
    key.strip_prefix(crate::keys::LOG_PREFIX)
        .and_then(crate::keys::read_be)
        .ok_or_else(|| StoreError::corrupt(key, "not a log key"))
}

fn payload_of(stored: PayloadIn) -> EventPayload {
    match stored {
        PayloadIn::Conversation(patch) => EventPayload::Conversation(patch),
        PayloadIn::Ticket(ticket) => EventPayload::Ticket(ticket),
        PayloadIn::Agent { agent, deleted } => EventPayload::Agent { agent, deleted },
        PayloadIn::Vendor { subject, data } => EventPayload::Vendor { subject, data },
        PayloadIn::Contact(change) => EventPayload::Contact(change),
    }
}

/// The events of the log entry at `key`, in sequence order. An event whose payload does not
/// decode is served as a stand-in (see [`stand_in`]) that keeps its head; an entry that does
/// not decode at all is an error (then see [`stand_ins`]).
pub(crate) fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    decode_entry_range(key, bytes, 0..=u64::MAX)
}

/// The events of the log entry at `key` whose sequences are in `wanted`, in sequence order,
/// as [`decode_entry`] decodes them. The payloads of the others are not decoded at all: a
/// request record holds a whole request (a sync page can be a thousand events), and parsing a
/// payload's JSON is most of what decoding an event costs, so a reader that wants a few events
/// of a large entry (a batch that ends inside it, one event by its dedup key) pays for those.
/// The entry's header is still checked whole (its count against its events), so an entry
/// that is damaged outside `wanted` is an error as it is for [`decode_entry`].
pub(crate) fn decode_entry_range(
    key: &[u8],
    bytes: &[u8],
    wanted: std::ops::RangeInclusive<u64>,
) -> Result<Vec<Event>, StoreError> {
    let first = sequence_of(key)?;
    if bytes.first() == Some(&b'{') {
        let event = decode_json_entry(key, bytes)?;
        return Ok(if wanted.contains(&event.sequence.0) {
            vec![event]
        } else {
            Vec::new()
        });
    }
    let count =
        entry_count(bytes).ok_or_else(|| StoreError::corrupt(key, "unknown record format"))?;
    let body = unpack(key, &bytes[5..])?;
    let record: RequestRecord<'_> =
        postcard::from_bytes(&body).map_err(|e| StoreError::corrupt(key, e))?;
    if record.events.len() as u64 != count {
        return Err(StoreError::corrupt(
            key,
            format!("it says {count} events and holds {}", record.events.len()),
        ));
    }
    let connection =
        ConnectionId::new(record.connection).map_err(|e| StoreError::corrupt(key, e))?;
    let received_at = time(key, record.received_at)?;
    // The indexes of the events wanted (the entry's sequences are `first..first + count`).
    if wanted.is_empty() || *wanted.end() < first {
        return Ok(Vec::new());
    }
    let from = wanted.start().saturating_sub(first);
    let to = (wanted.end() - first).saturating_add(1).min(count);
    if from >= to {
        return Ok(Vec::new());
    }
    let (from, to) = (from as usize, to as usize);
    let mut events = Vec::with_capacity(to - from);
    for (i, stored) in record.events.iter().enumerate().take(to).skip(from) {
        let kind = EventKind::parse(stored.kind)
            .ok_or_else(|| StoreError::corrupt(key, format!("unknown kind {}", stored.kind)))?;
        let head = EventHead {
            sequence: first + i as u64,
            id: stored.id.to_owned(),
            connection: connection.clone(),
            vendor: record.vendor.to_owned(),
            received_at,
            request_id: record.request_id.map(str::to_owned),
            dedup_key: stored.dedup_key.to_owned(),
            kind,
            vendor_event: stored.vendor_event.to_owned(),
            occurred_at: time(key, stored.occurred_at)?,
        };
        // The payload is text postcard already checked as UTF-8: `from_str` does not check
        // each of its strings again (`from_slice` does, a tenth of a replay's time).
        let event = match serde_json::from_str::<PayloadIn>(stored.payload) {
            Ok(payload) => Event {
                sequence: Sequence(head.sequence),
                id: head.id,
                connection: head.connection,
                vendor: head.vendor,
                received_at: head.received_at,
                request_id: head.request_id,
                incoming: IncomingEvent {
                    dedup_key: head.dedup_key,
                    kind: head.kind,
                    vendor_event: head.vendor_event,
                    occurred_at: head.occurred_at,
                    payload: payload_of(payload),
                },
                raw: if i == 0 {
                    record.raw.map(str::to_owned)
                } else {
                    None
                },
            },
            Err(error) => {
                let error = StoreError::corrupt(key, error);
                crate::unreadable_record(key, &error);
                stand_in(head.sequence, Some(head), &error)
            }
        };
        events.push(event);
    }
    Ok(events)
}

fn decode_json_entry(key: &[u8], bytes: &[u8]) -> Result<Event, StoreError> {
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

/// Stand-ins for every event of a log entry that does not decode, so that readers see no gap:
/// a schema-2 entry keeps its head where the head decodes; a request record keeps its
/// sequences (its count is outside the compressed part). Empty when not even the sequences
/// can be known.
pub(crate) fn stand_ins(key: &[u8], bytes: &[u8], reason: &StoreError) -> Vec<Event> {
    let Ok(first) = sequence_of(key) else {
        return Vec::new();
    };
    if bytes.first() == Some(&b'{') {
        // Field names are never escaped, so the first `,"payload":` ends the flat head.
        let head = bytes
            .windows(PAYLOAD_FIELD.len())
            .position(|w| w == PAYLOAD_FIELD)
            .and_then(|end| {
                let mut head = bytes[..end].to_vec();
                head.push(b'}');
                serde_json::from_slice::<EventHead>(&head).ok()
            })
            .filter(|head| head.sequence == first);
        return vec![stand_in(first, head, reason)];
    }
    let Some(count) = entry_count(bytes) else {
        return Vec::new();
    };
    (first..first + count)
        .map(|sequence| stand_in(sequence, None, reason))
        .collect()
}

/// A stand-in for the event at `sequence` that cannot be decoded: same sequence and (with its
/// head) the same id, connection and times; kind `vendor_event`, `vendor_event`
/// [`UNREADABLE_EVENT`], and the reason in its data.
fn stand_in(sequence: u64, head: Option<EventHead>, reason: &StoreError) -> Event {
    let mut data = serde_json::json!({
        "error": "this log entry cannot be decoded; its event is lost to readers",
        "reason": reason.to_string(),
        "sequence": sequence,
    });
    let fallback_time = Timestamp::from_millis(0).unwrap_or(Timestamp::MIN);
    let unknown = || ConnectionId::new("switchboard").expect("a valid connection id");
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
                unknown(),
                "switchboard".to_owned(),
                fallback_time,
                None,
                format!("unreadable:{sequence}"),
                fallback_time,
                None,
            ),
        };
    if let Some((kind, vendor_event)) = original {
        data["kind"] = serde_json::Value::String(kind.as_str().to_owned());
        data["vendor_event"] = serde_json::Value::String(vendor_event);
    }
    Event {
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
    }
}

const PAYLOAD_FIELD: &[u8] = b",\"payload\":";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_core::Message;

    use super::*;

    fn round_trip(incoming: IncomingEvent, raw: Option<&str>, request_id: Option<&str>) {
        let connection = ConnectionId::new("lc").unwrap();
        let mut request = AppendRequest::new(connection.clone(), "livechat", Vec::new());
        request.received_at = Timestamp::from_millis(1_700_000_000_123).unwrap();
        request.request_id = request_id.map(str::to_owned);
        request.raw = raw.map(str::to_owned);
        let mut second = incoming.clone();
        second.dedup_key.push_str(":2");
        let bytes =
            encode_request(&request, &[("0190-id", &incoming), ("0190-id2", &second)]).unwrap();
        assert_eq!(bytes[0], REQUEST_RECORD);
        assert_eq!(entry_count(&bytes), Some(2));
        let decoded = decode_entry(&crate::keys::log_key(42), &bytes).unwrap();
        let expected = vec![
            Event {
                sequence: Sequence(42),
                id: "0190-id".into(),
                connection: connection.clone(),
                vendor: "livechat".into(),
                received_at: request.received_at,
                request_id: request_id.map(str::to_owned),
                incoming,
                raw: raw.map(str::to_owned),
            },
            Event {
                sequence: Sequence(43),
                id: "0190-id2".into(),
                connection: connection.clone(),
                vendor: "livechat".into(),
                received_at: request.received_at,
                request_id: request_id.map(str::to_owned),
                incoming: second,
                raw: None,
            },
        ];
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
        // Both levels pack, and the same `unpack` reads either.
        let packed = pack(long.clone());
        for packed in [&packed, &pack_fast(long.clone())] {
            assert!(packed.starts_with(&ZSTD_MAGIC));
            assert!(
                packed.len() < long.len() / 4,
                "{} of {}",
                packed.len(),
                long.len()
            );
            assert_eq!(&*unpack(b"k", packed).unwrap(), long.as_slice());
        }
        let short = b"{\"a\":1}".to_vec();
        assert_eq!(pack(short.clone()), short);
        assert_eq!(pack_fast(short.clone()), short);
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

    /// A request record of `count` events from sequence 10, the event at `damaged` (if any)
    /// with a payload that is not JSON.
    fn entry_of(count: usize, damaged: Option<usize>) -> (Vec<u8>, Vec<IncomingEvent>) {
        let request = AppendRequest::new(ConnectionId::new("lc").unwrap(), "livechat", Vec::new());
        let events: Vec<IncomingEvent> = (0..count)
            .map(|i| {
                let mut event = incoming(EventPayload::Conversation(ConversationPatch::new(
                    format!("c{i}"),
                )));
                event.dedup_key = format!("k:{i}");
                event
            })
            .collect();
        let ids: Vec<String> = (0..count).map(|i| format!("id-{i}")).collect();
        let pairs: Vec<(&str, &IncomingEvent)> =
            ids.iter().map(String::as_str).zip(&events).collect();
        let mut bytes = encode_request(&request, &pairs).unwrap();
        if let Some(damaged) = damaged {
            // Re-encode with the payload of one event replaced by text that is not JSON.
            let body = unpack(b"k", &bytes[5..]).unwrap().into_owned();
            let mut record: RequestRecord<'_> = postcard::from_bytes(&body).unwrap();
            record.events[damaged].payload = "{not json";
            let body = postcard::to_allocvec(&record).unwrap();
            bytes.truncate(5);
            bytes.extend_from_slice(&pack(body));
        }
        (bytes, events)
    }

    #[test]
    fn a_range_of_an_entry_decodes_as_the_whole_entry_does() {
        let key = crate::keys::log_key(10);
        let (bytes, events) = entry_of(7, None);
        let whole = decode_entry(&key, &bytes).unwrap();
        assert_eq!(whole.len(), 7);
        for (event, incoming) in whole.iter().zip(&events) {
            assert_eq!(&event.incoming, incoming);
        }
        for (from, to) in [
            (10, 16),
            (0, 12),
            (12, 12),
            (13, 100),
            (16, 16),
            (0, u64::MAX),
        ] {
            let part = decode_entry_range(&key, &bytes, from..=to).unwrap();
            let expected: Vec<Event> = whole
                .iter()
                .filter(|e| (from..=to).contains(&e.sequence.0))
                .cloned()
                .collect();
            assert_eq!(part, expected, "{from}..={to}");
        }
        // Nothing of the entry wanted: nothing decoded, no error.
        for (from, to) in [(0, 9), (17, 30), (12, 11)] {
            assert!(
                decode_entry_range(&key, &bytes, from..=to)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn an_unreadable_payload_is_a_stand_in_only_where_it_is_wanted() {
        let key = crate::keys::log_key(10);
        let (bytes, _) = entry_of(5, Some(3));
        let whole = decode_entry(&key, &bytes).unwrap();
        let sequences: Vec<u64> = whole.iter().map(|e| e.sequence.0).collect();
        assert_eq!(sequences, [10, 11, 12, 13, 14]);
        assert_eq!(whole[3].incoming.vendor_event, UNREADABLE_EVENT);
        // The stand-in keeps its head.
        assert_eq!(whole[3].id, "id-3");
        assert_eq!(whole[3].incoming.dedup_key, "k:3");
        assert!(
            whole
                .iter()
                .filter(|e| e.sequence.0 != 13)
                .all(|e| e.incoming.vendor_event == "incoming_event")
        );
        // Around the damaged payload: not decoded, so every event read is whole.
        let before = decode_entry_range(&key, &bytes, 10..=12).unwrap();
        assert_eq!(before, whole[..3]);
        let after = decode_entry_range(&key, &bytes, 14..=20).unwrap();
        assert_eq!(after, whole[4..]);
        let just = decode_entry_range(&key, &bytes, 13..=13).unwrap();
        assert_eq!(just, whole[3..4]);
    }

    /// A schema-2 log entry (one JSON object per event, the payload externally tagged), as a
    /// schema-2 build wrote it: read whole, and by a range that holds its sequence or not.
    #[test]
    fn a_schema_2_entry_reads_in_and_out_of_a_range() {
        let key = crate::keys::log_key(5);
        let bytes = serde_json::to_vec(&serde_json::json!({
            "sequence": 5,
            "id": "old-5",
            "connection": "lc",
            "vendor": "livechat",
            "received_at": 1_700_000_000_000_i64,
            "dedup_key": "k:5",
            "kind": "chat_started",
            "vendor_event": "chat_started",
            "occurred_at": 1_600_000_000_000_i64,
            "payload": {"conversation": {"external_id": "c-old"}},
            "raw": "{\"body\":1}"
        }))
        .unwrap();
        let whole = decode_entry(&key, &bytes).unwrap();
        assert_eq!(whole.len(), 1);
        let event = &whole[0];
        assert_eq!(event.sequence, Sequence(5));
        assert_eq!(event.id, "old-5");
        assert_eq!(event.incoming.kind, EventKind::ChatStarted);
        assert_eq!(event.raw.as_deref(), Some("{\"body\":1}"));
        assert_eq!(
            event.incoming.payload,
            EventPayload::Conversation(ConversationPatch::new("c-old"))
        );
        assert_eq!(decode_entry_range(&key, &bytes, 5..=5).unwrap(), whole);
        assert_eq!(decode_entry_range(&key, &bytes, 1..=9).unwrap(), whole);
        assert!(decode_entry_range(&key, &bytes, 6..=9).unwrap().is_empty());
    }

    #[test]
    fn a_record_that_does_not_decode_is_corrupt() {
        let key = crate::keys::log_key(1);
        let error = decode_entry(&key, b"{\"sequence\": 1}").unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }

    fn register(message: Message) -> Lww<Message> {
        Lww {
            value: message,
            stamp: Stamp(
                Timestamp::from_millis(1_552_126_412_000).unwrap(),
                15_712_251_666_848_922_478,
            ),
        }
    }

    fn chat_line() -> Message {
        Message {
            key: "1552126412-c882b101f6199182".into(),
            author_role: Role::Agent,
            author_id: Some("name@gmail.com".into()),
            author_name: Some("NAME".into()),
            text: "Hello. How may I help you?".into(),
            attachments: Vec::new(),
            sent_at: Timestamp::from_millis(1_552_126_412_000).unwrap(),
            automatic: false,
            data: None,
        }
    }

    #[test]
    fn a_message_round_trips_in_a_record_smaller_than_its_json() {
        let line = register(chat_line());
        let bytes = encode_message(&line).unwrap();
        assert_eq!(bytes[0], MESSAGE_RECORD);
        let json = serde_json::to_vec(&line).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} bytes against {} as JSON",
            bytes.len(),
            json.len()
        );
        let key = b"msg/lc/c1\0\x01k".as_slice();
        assert_eq!(decode_message(key, &bytes).unwrap(), line);
        // What a store of schema 3 or 4 wrote is still read.
        assert_eq!(decode_message(key, &json).unwrap(), line);
        assert_eq!(decode_message(key, &pack(json)).unwrap(), line);

        // Every field, each role, nothing lost: attachments with and without their parts,
        // structured data, text long enough to be compressed.
        for role in [Role::Visitor, Role::Agent, Role::Bot, Role::System] {
            let mut full = chat_line();
            full.author_role = role;
            full.author_id = None;
            full.text = "Здравствуйте, 你好 ".repeat(100);
            full.automatic = true;
            full.attachments = vec![
                Attachment {
                    url: Some("https://cdn.example.com/a.png".into()),
                    name: Some("a.png".into()),
                    size: Some(1234),
                    content_type: Some("image/png".into()),
                },
                Attachment::default(),
            ];
            full.data =
                Some(serde_json::json!({"type": "location", "lat": 1.5, "tags": [1, {"a": null}]}));
            let full = register(full);
            let bytes = encode_message(&full).unwrap();
            assert_eq!(bytes[..4], ZSTD_MAGIC, "a long message is compressed");
            assert_eq!(decode_message(key, &bytes).unwrap(), full);
        }
    }

    #[test]
    fn a_message_record_that_does_not_decode_is_corrupt() {
        let key = b"msg/lc/c1\0\x01k".as_slice();
        let mut bytes = encode_message(&register(chat_line())).unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        let error = decode_message(key, truncated).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        // The role's byte follows the message key.
        let message_key = chat_line().key.into_bytes();
        let role_at = bytes
            .windows(message_key.len())
            .position(|window| window == message_key)
            .unwrap()
            + message_key.len();
        assert_eq!(bytes[role_at], 1, "an agent");
        bytes[role_at] = 9;
        let error = decode_message(key, &bytes).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }
}
