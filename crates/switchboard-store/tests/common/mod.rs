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
