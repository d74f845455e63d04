//! What the finder's single-test binaries share.

use switchboard_core::{
    ConversationPatch, ConversationStatus, EventKind, EventPayload, IncomingEvent, Timestamp,
};

/// A `chat_started` event opening conversation `chat`.
pub fn started(chat: &str) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Open);
    IncomingEvent {
        dedup_key: format!("start-{chat}"),
        kind: EventKind::ChatStarted,
        vendor_event: "chat_started".into(),
        occurred_at: Timestamp::from_secs(1_700_000_000).unwrap(),
        payload: EventPayload::Conversation(patch),
    }
}
