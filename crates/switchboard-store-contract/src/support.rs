//! Builders and readers the cases share.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard_core::{
    Agent, ConnectionId, ConversationPatch, ConversationStatus, Event, EventKind, EventPayload,
    IncomingEvent, Message, Participant, Role, Sequence, Ticket, TicketOrigin, TicketStatus,
    Timestamp,
};
use switchboard_store::{AppendReceipt, AppendRequest, Storage, StoreError};

pub(crate) type Store = Arc<dyn Storage>;

/// A connection id (`contract-<name>`).
pub(crate) fn conn(name: &str) -> ConnectionId {
    ConnectionId::new(format!("contract-{name}")).expect("a valid connection id")
}

/// 2023-11-14T22:13:20Z plus `offset` seconds.
pub(crate) fn at(offset: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + offset).expect("a valid timestamp")
}

pub(crate) fn conversation_event(
    key: &str,
    kind: EventKind,
    when: i64,
    patch: ConversationPatch,
) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind,
        vendor_event: format!("vendor.{}", kind.as_str()),
        occurred_at: at(when),
        payload: EventPayload::Conversation(patch),
    }
}

pub(crate) fn started(key: &str, chat: &str, when: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(at(when));
    conversation_event(key, EventKind::ChatStarted, when, patch)
}

pub(crate) fn with_status(
    key: &str,
    chat: &str,
    when: i64,
    status: ConversationStatus,
) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(status);
    patch.started_at = Some(at(when));
    conversation_event(key, EventKind::ChatUpdated, when, patch)
}

pub(crate) fn chat_message(key: &str, when: i64, text: &str) -> Message {
    Message {
        key: key.to_owned(),
        author_role: Role::Visitor,
        author_id: Some("visitor-1".into()),
        author_name: Some("Visitor".into()),
        text: text.to_owned(),
        attachments: vec![],
        sent_at: at(when),
        automatic: false,
        data: None,
    }
}

pub(crate) fn message(key: &str, chat: &str, when: i64, text: &str) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.messages.push(chat_message(key, when, text));
    conversation_event(key, EventKind::Message, when, patch)
}

pub(crate) fn vendor_event(key: &str, when: i64, data: serde_json::Value) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind: EventKind::VendorEvent,
        vendor_event: "vendor.something_else".into(),
        occurred_at: at(when),
        payload: EventPayload::Vendor {
            subject: Some(format!("subject-of-{key}")),
            data,
        },
    }
}

pub(crate) fn ticket(id: &str, status: TicketStatus, updated: i64, subject: &str) -> Ticket {
    Ticket {
        external_id: id.to_owned(),
        origin: TicketOrigin::HubNative,
        subject: subject.to_owned(),
        status,
        requester: Some(Participant {
            id: "req@example.com".into(),
            email: Some("req@example.com".into()),
            name: Some("Requester".into()),
            ..Participant::default()
        }),
        assignee: None,
        groups: vec![],
        tags: vec!["first".into()],
        source: None,
        events: vec![],
        attributes: BTreeMap::from([("priority".to_owned(), "high".to_owned())]),
        created_at: at(0),
        updated_at: at(updated),
    }
}

pub(crate) fn ticket_event(key: &str, ticket: Ticket) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind: EventKind::TicketUpdated,
        vendor_event: "vendor.ticket_updated".into(),
        occurred_at: ticket.updated_at,
        payload: EventPayload::Ticket(ticket),
    }
}

pub(crate) fn agent(login: &str, name: &str) -> Agent {
    Agent {
        login: login.to_owned(),
        name: Some(name.to_owned()),
        permission: Some("normal".into()),
        job_title: Some("Support Agent".into()),
        ..Agent::default()
    }
}

pub(crate) fn agent_event(key: &str, agent: Agent, deleted: bool, when: i64) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind: EventKind::AgentUpdated,
        vendor_event: "vendor.agent_updated".into(),
        occurred_at: at(when),
        payload: EventPayload::Agent { agent, deleted },
    }
}

/// A request of `events` on `connection` (vendor `vendor`), received at `at(0)`.
pub(crate) fn request(
    connection: &ConnectionId,
    vendor: &str,
    events: Vec<IncomingEvent>,
) -> AppendRequest {
    let mut request = AppendRequest::new(connection.clone(), vendor, events);
    request.received_at = at(0);
    request
}

/// Appends, failing the case with `what` if the store refuses.
pub(crate) async fn append(store: &Store, what: &str, request: AppendRequest) -> AppendReceipt {
    match store.append(request).await {
        Ok(receipt) => receipt,
        Err(error) => panic!("{what}: append failed: {error} ({error:?})"),
    }
}

/// Sequences as numbers.
pub(crate) fn seqs(sequences: impl IntoIterator<Item = Sequence>) -> Vec<u64> {
    sequences.into_iter().map(|s| s.0).collect()
}

/// Every event of the log, read in pages of at most 1000.
pub(crate) async fn read_all(store: &Store) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    loop {
        let after = events.last().map_or(Sequence::ZERO, |e| e.sequence);
        let page = store
            .read_events(after, 1000, usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("read_events after {after} failed: {e}"));
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Fails unless `result` is the error `expected` describes.
pub(crate) fn expect_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, StoreError>,
    expected: &str,
    matches: impl Fn(&StoreError) -> bool,
) -> StoreError {
    match result {
        Ok(value) => panic!("{what}: expected {expected}, got Ok({value:?})"),
        Err(error) if matches(&error) => error,
        Err(error) => panic!("{what}: expected {expected}, got {error:?} ({error})"),
    }
}
