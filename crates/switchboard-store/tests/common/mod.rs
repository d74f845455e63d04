//! Builders shared by the store's integration tests.
#![allow(dead_code)] // reason: each test file uses a different subset of the builders

use switchboard_core::{
    ConnectionId, ConversationPatch, ConversationStatus, EventKind, EventPayload, IncomingEvent,
    Message, Role, Timestamp,
};
use switchboard_store::{AppendRequest, Store};

pub fn conn(id: &str) -> ConnectionId {
    ConnectionId::new(id).unwrap()
}

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap()
}

pub fn event(key: &str, kind: EventKind, at: i64, patch: ConversationPatch) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind,
        vendor_event: kind.as_str().to_owned(),
        occurred_at: ts(at),
        payload: EventPayload::Conversation(patch),
    }
}

pub fn started(key: &str, chat: &str, at: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(ts(at));
    event(key, EventKind::ChatStarted, at, patch)
}

pub fn message(key: &str, chat: &str, at: i64, text: &str) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.messages.push(Message {
        key: key.to_owned(),
        author_role: Role::Visitor,
        author_id: Some("visitor".into()),
        author_name: None,
        text: text.to_owned(),
        attachments: vec![],
        sent_at: ts(at),
        automatic: false,
        data: None,
    });
    event(key, EventKind::Message, at, patch)
}

pub fn ended(key: &str, chat: &str, at: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Closed);
    patch.ended_at = Some(ts(at));
    patch.tags_added.push("done".into());
    event(key, EventKind::ChatEnded, at, patch)
}

pub fn request(connection: &str, vendor: &str, events: Vec<IncomingEvent>) -> AppendRequest {
    let mut request = AppendRequest::new(conn(connection), vendor, events);
    request.received_at = ts(1_700_000_000);
    request
}

/// A store opened in a fresh temporary directory; keep the directory alive as long as the store.
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Where the bytes of the log entry at `key` are in its segment file: the file, the offset and
/// the length. sled's value for the key is the pointer (schema 6: `0x07`, then the file's
/// number u32, the offset u64, the length u32, the event count u32 and the CRC-32 u32, all
/// little-endian); the file is `<dir>/log/<number, 10 digits>.seg`.
pub fn segment_of(
    dir: &std::path::Path,
    db: &sled::Db,
    key: &[u8],
) -> (std::path::PathBuf, u64, usize) {
    let pointer = db.get(key).unwrap().expect("the entry");
    assert_eq!(pointer.len(), 25, "a pointer");
    assert_eq!(pointer[0], 0x07, "a pointer");
    let number = u32::from_le_bytes(pointer[1..5].try_into().unwrap());
    let offset = u64::from_le_bytes(pointer[5..13].try_into().unwrap());
    let len = u32::from_le_bytes(pointer[13..17].try_into().unwrap()) as usize;
    (
        dir.join("log").join(format!("{number:010}.seg")),
        offset,
        len,
    )
}

/// The bytes of the log entry at `key`, read from its segment file.
pub fn entry_bytes(dir: &std::path::Path, db: &sled::Db, key: &[u8]) -> Vec<u8> {
    let (file, offset, len) = segment_of(dir, db, key);
    let bytes = std::fs::read(file).unwrap();
    bytes[offset as usize..offset as usize + len].to_vec()
}

/// Appends one webhook of one message, `key` (its text too), to chat `c1` on connection `lc`.
pub async fn append_message(store: &Store, key: &str, at: i64) -> switchboard_store::AppendReceipt {
    store
        .append(request("lc", "livechat", vec![message(key, "c1", at, key)]))
        .await
        .unwrap()
}
