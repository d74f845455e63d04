//! Archived chats (Agent Chat API v3.x `list_archives`) as events that merge with what the v3.x
//! webhooks produce for the same chat, and the sync cursor.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::{
    ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, IncomingEvent, Timestamp,
};

use crate::json::{Obj, canonical, fnv1a};
use crate::v3;

/// The vendor event name of everything the sync produces.
pub(crate) const VENDOR_EVENT: &str = "list_archives";

/// Where a sync stands: the start time of the newest thread fully seen (`from`, the vendor's
/// own RFC 3339 text), the vendor's page id of the next page while a listing is under way, and
/// the threads that were still active when pulled, which every sync pulls again (by
/// `filters.thread_ids`) until they have ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Format version of the cursor.
    pub(crate) v: u32,
    /// Start time of the newest thread fully seen; a restart lists from here (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    /// The vendor's `next_page_id`, while a listing is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) page_id: Option<String>,
    /// Threads seen active: pulled again at the start of every sync until they have ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) active: Vec<ThreadRef>,
    /// This sync's pull of the once-active threads, while under way: those still to pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checking: Option<Vec<ThreadRef>>,
    /// This sync has pulled the once-active threads again and is listing new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) listing: bool,
}

/// A chat's thread, as kept in the cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThreadRef {
    /// Chat id.
    pub(crate) chat: String,
    /// Thread id.
    pub(crate) thread: String,
}

/// The most once-active threads a cursor keeps (the oldest are dropped beyond it, with a
/// warning: their ends then come from the webhooks).
pub(crate) const MAX_ACTIVE: usize = 1000;

impl Cursor {
    /// Records what a pulled chat says about its thread: active ones are pulled again later,
    /// ended ones no longer.
    pub(crate) fn note_thread(&mut self, chat: &Value) {
        let (Some(chat_id), Some(thread_id)) = (
            chat.get("id").and_then(Value::as_str),
            chat.pointer("/thread/id").and_then(Value::as_str),
        ) else {
            return;
        };
        let active = chat
            .pointer("/thread/active")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let known = self
            .active
            .iter()
            .position(|t| t.chat == chat_id && t.thread == thread_id);
        match (active, known) {
            (true, None) => {
                self.active.push(ThreadRef {
                    chat: chat_id.to_owned(),
                    thread: thread_id.to_owned(),
                });
                if self.active.len() > MAX_ACTIVE {
                    let dropped = self.active.remove(0);
                    tracing::warn!(
                        chat = %dropped.chat,
                        thread = %dropped.thread,
                        "more than {MAX_ACTIVE} LiveChat threads are active at once: the oldest \
                         is no longer pulled again; its end comes from the webhooks"
                    );
                }
            }
            (false, Some(i)) => {
                self.active.remove(i);
            }
            _ => {}
        }
    }
}

impl Cursor {
    pub(crate) fn parse(connection: &str, text: &str) -> Result<Cursor, Error> {
        let cursor: Cursor = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "connection {connection} (livechat): the saved sync cursor is not a LiveChat \
                 archive cursor ({e}): reset the connection's sync cursor to start over"
            ))
        })?;
        if cursor.v != 1 {
            return Err(Error::invalid(format!(
                "connection {connection} (livechat): the saved sync cursor has version {}, \
                 this build reads version 1: reset the connection's sync cursor",
                cursor.v
            )));
        }
        if let Some(from) = &cursor.from
            && Timestamp::parse_rfc3339(from).is_none()
        {
            return Err(Error::invalid(format!(
                "connection {connection} (livechat): the saved sync cursor's `from` {from:?} \
                     is not an RFC 3339 time: reset the connection's sync cursor"
            )));
        }
        Ok(cursor)
    }

    pub(crate) fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The later of two vendor time strings (by the instant they name).
pub(crate) fn later(a: Option<String>, b: Option<&str>) -> Option<String> {
    let at = |s: &str| Timestamp::parse_rfc3339(s);
    match (a, b) {
        (None, None) => None,
        (Some(a), None) => Some(a),
        (None, Some(b)) => at(b).map(|_| b.to_owned()),
        (Some(a), Some(b)) => match (at(&a), at(b)) {
            (Some(ta), Some(tb)) if tb > ta => Some(b.to_owned()),
            _ => Some(a),
        },
    }
}

/// Micro-second RFC 3339 (`2024-01-01T00:00:00.000000Z`), as the Agent Chat API writes times.
pub(crate) fn v3_time(at: Timestamp) -> String {
    format!("{}000Z", at.to_rfc3339().trim_end_matches('Z'))
}

/// The events of one archived chat (one chat with one `thread`):
/// - one snapshot event (`chat_ended` for an inactive thread, else `chat_started`) keyed
///   `archive:{chat}:{thread}:{hash of active, tags and last event id}`, so that a later, changed
///   snapshot of the same thread is a new event and the same snapshot fetched twice is one;
/// - one `message` event per thread event, built by the v3.x webhook code: same dedup key
///   (`event:{chat}:{thread}:{event id}`) and message key (`{thread}/{event id}`) as the
///   `incoming_chat` / `incoming_event` webhooks, so the store keeps each message once.
pub(crate) fn chat_events(chat_value: &Value) -> Result<Vec<IncomingEvent>, Error> {
    let chat = Obj::root(chat_value)?;
    let chat_id = chat.required_str("id")?;
    let thread_child = chat.required_obj("thread")?;
    let thread = thread_child.obj();
    let thread_id = thread.required_str("id")?;
    let created_at = thread.required_rfc3339("created_at")?;
    let active = thread.bool("active")?.unwrap_or(false);

    let mut patch = ConversationPatch::new(chat_id);
    patch.started_at = Some(created_at);
    // The same thread as the webhooks name: a status per thread, so a reopened chat is open.
    patch.thread = Some(thread_id.to_owned());
    patch.tags_added = thread.strings("tags")?;
    patch
        .attributes
        .insert("thread_id".into(), thread_id.to_owned());
    let roles = v3::chat_people(chat, thread, &mut patch)?;

    let mut messages = Vec::new();
    let mut last: Option<(Timestamp, String)> = None;
    for event in thread.objects("events")? {
        let message = v3::event_message(VENDOR_EVENT, chat_id, thread_id, event.obj(), &roles)?;
        let id = event.obj().required_str("id")?.to_owned();
        if last
            .as_ref()
            .is_none_or(|(at, _)| message.occurred_at >= *at)
        {
            last = Some((message.occurred_at, id));
        }
        messages.push(message);
    }
    let last_at = last
        .as_ref()
        .map_or(created_at, |(at, _)| (*at).max(created_at));
    let (kind, occurred_at) = if active {
        patch.status = Some(if thread.has("queue") {
            ConversationStatus::Queued
        } else {
            ConversationStatus::Open
        });
        (EventKind::ChatStarted, created_at)
    } else {
        // The archive gives no end time: the thread ended with its last event.
        patch.status = Some(ConversationStatus::Closed);
        patch.ended_at = Some(last_at);
        (EventKind::ChatEnded, last_at)
    };
    let state = fnv1a(&[
        if active { "active" } else { "inactive" },
        &patch.tags_added.join("\u{1f}"),
        last.as_ref().map_or("", |(_, id)| id.as_str()),
    ]);
    let mut events = Vec::with_capacity(messages.len() + 1);
    events.push(IncomingEvent {
        dedup_key: format!("archive:{chat_id}:{thread_id}:{state:016x}"),
        kind,
        vendor_event: VENDOR_EVENT.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    });
    events.extend(messages);
    Ok(events)
}

/// An archived chat this plugin cannot read, kept whole as a vendor event so nothing is lost
/// and the sync is not stuck on it.
pub(crate) fn unreadable_chat(chat: &Value, fallback_at: Timestamp) -> IncomingEvent {
    let subject = chat.get("id").and_then(Value::as_str).map(str::to_owned);
    let occurred_at = chat
        .pointer("/thread/created_at")
        .and_then(Value::as_str)
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or(fallback_at);
    IncomingEvent {
        dedup_key: format!(
            "archive_unreadable:{}:{:016x}",
            subject.as_deref().unwrap_or("-"),
            fnv1a(&[&canonical(chat)])
        ),
        kind: EventKind::VendorEvent,
        vendor_event: VENDOR_EVENT.to_owned(),
        occurred_at,
        payload: EventPayload::Vendor {
            subject,
            data: chat.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_core::Role;

    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let cursor = Cursor {
            v: 1,
            from: Some("2024-01-01T00:00:00.000000Z".into()),
            page_id: Some("abc".into()),
            ..Cursor::default()
        };
        assert_eq!(Cursor::parse("lc", &cursor.to_text()).unwrap(), cursor);
        // A cursor saved before threads were pulled again still reads.
        let old = Cursor::parse("lc", r#"{"v":1,"from":"2024-01-01T00:00:00.000000Z"}"#).unwrap();
        assert!(old.active.is_empty() && old.checking.is_none() && !old.listing);
        let mut busy = old.clone();
        busy.note_thread(&json!({"id": "C", "thread": {"id": "T", "active": true}}));
        busy.checking = Some(vec![]);
        busy.listing = true;
        assert_eq!(Cursor::parse("lc", &busy.to_text()).unwrap(), busy);
        busy.note_thread(&json!({"id": "C", "thread": {"id": "T", "active": false}}));
        assert!(busy.active.is_empty());
        for bad in [
            "",
            "{}",
            "\"text\"",
            r#"{"v":1,"from":"yesterday"}"#,
            r#"{"v":2}"#,
        ] {
            let err = Cursor::parse("lc", bad).unwrap_err();
            assert!(
                err.message.contains("reset the connection's sync cursor"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn later_picks_the_later_instant() {
        let a = "2024-01-01T00:00:00.000000Z".to_owned();
        let b = "2024-01-01T01:00:00+01:00"; // the same instant
        let c = "2024-01-02T00:00:00Z";
        assert_eq!(later(Some(a.clone()), Some(b)), Some(a.clone()));
        assert_eq!(later(Some(a.clone()), Some(c)), Some(c.to_owned()));
        assert_eq!(later(None, Some("garbage")), None);
        assert_eq!(
            v3_time(Timestamp::from_secs(1_704_067_200).unwrap()),
            "2024-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn an_inactive_thread_ends_with_its_last_event() {
        let chat = json!({
            "id": "CH1",
            "users": [{"id": "cust", "type": "customer", "name": "Ann"}, {"id": "a@example.com", "type": "agent"}],
            "thread": {
                "id": "TH1", "active": false, "created_at": "2024-01-01T00:00:00.000000Z", "tags": ["x"],
                "events": [
                    {"id": "TH1_2", "type": "message", "text": "bye", "author_id": "a@example.com", "created_at": "2024-01-01T00:05:00.000000Z"},
                    {"id": "TH1_1", "type": "message", "text": "hi", "author_id": "cust", "created_at": "2024-01-01T00:01:00.000000Z"}
                ]
            }
        });
        let events = chat_events(&chat).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].kind, EventKind::ChatEnded);
        assert!(events[0].dedup_key.starts_with("archive:CH1:TH1:"));
        let EventPayload::Conversation(patch) = &events[0].payload else {
            panic!("not a conversation")
        };
        assert_eq!(patch.status, Some(ConversationStatus::Closed));
        assert_eq!(
            patch.ended_at,
            Timestamp::parse_rfc3339("2024-01-01T00:05:00Z")
        );
        assert_eq!(patch.visitor.as_ref().map(|v| v.id.as_str()), Some("cust"));
        assert_eq!(events[1].dedup_key, "event:CH1:TH1:TH1_2");
        let EventPayload::Conversation(message) = &events[2].payload else {
            panic!("not a conversation")
        };
        assert_eq!(message.messages[0].author_role, Role::Visitor);
        assert_eq!(message.messages[0].key, "TH1/TH1_1");

        let mut changed = chat.clone();
        changed["thread"]["tags"] = json!(["x", "y"]);
        assert_ne!(
            chat_events(&changed).unwrap()[0].dedup_key,
            events[0].dedup_key
        );
        assert_eq!(chat_events(&chat).unwrap(), events);
    }
}
