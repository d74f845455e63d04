//! StreamEvents internals: events converted to their wire form once for all subscribers, and
//! the per-subscriber stream that hands batches of them to the transport.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::Stream;
use switchboard_core::{ConnectionId, ConversationId, Event, EventKind, Sequence};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

/// Converted events the service keeps for subscribers tailing the log (the newest ones; a
/// slot holds the event whose sequence is congruent to it modulo this).
pub(super) const CONVERTED_EVENTS: usize = 4096;
/// Most events in one message between a reader task and its subscriber's transport.
pub(super) const SEND_BATCH: usize = 64;

/// One event in wire form, with what the stream filters look at.
#[derive(Debug)]
pub(super) struct Converted {
    pub(super) sequence: Sequence,
    pub(super) connection: ConnectionId,
    pub(super) kind: EventKind,
    pub(super) conversation: Option<ConversationId>,
    pub(super) wire: v1::Event,
}

impl Converted {
    pub(super) fn new(event: Event) -> Self {
        Converted {
            sequence: event.sequence,
            connection: event.connection.clone(),
            kind: event.incoming.kind,
            conversation: event.conversation_id(),
            wire: convert::event_owned(event),
        }
    }
}

/// What a subscriber asked to see.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamFilter {
    pub(super) connections: Vec<ConnectionId>,
    pub(super) vendors: Vec<String>,
    pub(super) kinds: Vec<EventKind>,
    pub(super) conversations: Vec<ConversationId>,
}

impl StreamFilter {
    pub(super) fn matches(&self, event: &Converted) -> bool {
        (self.connections.is_empty() || self.connections.contains(&event.connection))
            && (self.vendors.is_empty() || self.vendors.contains(&event.wire.vendor))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && (self.conversations.is_empty()
                || event
                    .conversation
                    .as_ref()
                    .is_some_and(|id| self.conversations.contains(id)))
    }
}

/// A ring of recently converted events shared by every subscriber of a service: the first
/// reader to convert an event leaves it here, the others take an `Arc` of it instead of
/// converting (and re-serializing the payload of) the same event again.
#[derive(Debug)]
pub(super) struct ConvertedRing {
    slots: RwLock<Vec<Option<Arc<Converted>>>>,
}

impl ConvertedRing {
    pub(super) fn new(capacity: usize) -> Self {
        ConvertedRing {
            slots: RwLock::new(vec![None; capacity]),
        }
    }

    fn slot(sequence: u64, len: usize) -> usize {
        // `len` fits a u64 and the remainder is below `len`, so both conversions are exact.
        (sequence % len as u64) as usize
    }

    /// The events `after + 1, after + 2, ...` up to `to` (inclusive) held here, stopping at the
    /// first one missing: possibly none.
    pub(super) fn run(&self, after: Sequence, to: Sequence) -> Vec<Arc<Converted>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let mut run = Vec::new();
        if slots.is_empty() {
            return run;
        }
        let mut sequence = after.0;
        while sequence < to.0 {
            sequence += 1;
            match &slots[Self::slot(sequence, slots.len())] {
                Some(held) if held.sequence.0 == sequence => run.push(held.clone()),
                _ => break,
            }
        }
        run
    }

    /// Keeps `events`, each unless its slot holds a newer event already.
    pub(super) fn put(&self, events: &[Arc<Converted>]) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let len = slots.len();
        if len == 0 {
            return;
        }
        for event in events {
            let slot = &mut slots[Self::slot(event.sequence.0, len)];
            if slot
                .as_ref()
                .is_none_or(|held| held.sequence < event.sequence)
            {
                *slot = Some(event.clone());
            }
        }
    }
}

/// What a reader task sends its subscriber's transport: a batch of events or the final error.
pub(super) type Batch = Result<Vec<Arc<Converted>>, Status>;

/// The subscriber's side: flattens the batches into the messages tonic encodes (a clone of a
/// shared wire form, made just before it is encoded; an unshared one is moved).
pub(super) struct BatchStream {
    rx: mpsc::Receiver<Batch>,
    current: std::vec::IntoIter<Arc<Converted>>,
}

impl BatchStream {
    pub(super) fn new(rx: mpsc::Receiver<Batch>) -> Self {
        BatchStream {
            rx,
            current: Vec::new().into_iter(),
        }
    }
}

impl Stream for BatchStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.current.next() {
                // Shared with the ring or other subscribers: cloned; else moved.
                let wire = Arc::try_unwrap(event)
                    .map_or_else(|shared| shared.wire.clone(), |own| own.wire);
                return Poll::Ready(Some(Ok(wire)));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => this.current = batch.into_iter(),
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A queue of events waiting to be sent, cut into batches of at most [`SEND_BATCH`].
pub(super) fn batches(events: Vec<Arc<Converted>>) -> VecDeque<Vec<Arc<Converted>>> {
    let mut out = VecDeque::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        out.push_back(events.by_ref().take(SEND_BATCH).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use switchboard_core::{ConversationPatch, EventPayload, IncomingEvent, Timestamp};

    use super::*;

    fn event(sequence: u64) -> Arc<Converted> {
        let event = Event {
            sequence: Sequence(sequence),
            id: format!("e{sequence}"),
            connection: ConnectionId::new("livechat").expect("id"),
            vendor: "livechat".to_owned(),
            received_at: Timestamp::from_secs(1_700_000_000).expect("time"),
            request_id: None,
            raw: None,
            incoming: IncomingEvent {
                kind: EventKind::ChatUpdated,
                vendor_event: "chat_updated".to_owned(),
                dedup_key: format!("d{sequence}"),
                occurred_at: Timestamp::from_secs(1_700_000_000).expect("time"),
                payload: EventPayload::Conversation(ConversationPatch::new("c")),
            },
        };
        Arc::new(Converted::new(event))
    }

    fn sequences(run: &[Arc<Converted>]) -> Vec<u64> {
        run.iter().map(|e| e.sequence.0).collect()
    }

    #[test]
    fn the_ring_returns_consecutive_events_up_to_the_first_missing_one() {
        let ring = ConvertedRing::new(8);
        ring.put(&[event(1), event(2), event(3), event(5)]);
        assert_eq!(sequences(&ring.run(Sequence(0), Sequence(10))), [1, 2, 3]);
        assert_eq!(sequences(&ring.run(Sequence(1), Sequence(2))), [2]);
        assert!(ring.run(Sequence(3), Sequence(10)).is_empty());
        assert!(ring.run(Sequence(5), Sequence(10)).is_empty());
    }

    #[test]
    fn the_ring_keeps_the_newest_event_of_each_slot() {
        let ring = ConvertedRing::new(4);
        ring.put(&[event(9), event(10)]);
        // 1 and 2 share slots with 9 and 10 (and with 5 and 6): older, so they are not kept.
        ring.put(&[event(1), event(2), event(5)]);
        assert!(ring.run(Sequence(0), Sequence(10)).is_empty());
        assert!(ring.run(Sequence(4), Sequence(10)).is_empty());
        assert_eq!(sequences(&ring.run(Sequence(8), Sequence(10))), [9, 10]);
        // A slot holding an older event takes the newer one: 11 replaces 3.
        ring.put(&[event(3)]);
        assert_eq!(sequences(&ring.run(Sequence(2), Sequence(3))), [3]);
        ring.put(&[event(11)]);
        assert!(ring.run(Sequence(2), Sequence(3)).is_empty());
        assert_eq!(sequences(&ring.run(Sequence(8), Sequence(12))), [9, 10, 11]);
    }

    #[test]
    fn batches_are_cut_at_the_send_batch_size_in_order() {
        let events: Vec<_> = (1..=(SEND_BATCH as u64 * 2 + 3)).map(event).collect();
        let cut = batches(events);
        assert_eq!(
            cut.iter().map(Vec::len).collect::<Vec<_>>(),
            [SEND_BATCH, SEND_BATCH, 3]
        );
        let flat: Vec<u64> = cut.iter().flat_map(|b| sequences(b)).collect();
        assert_eq!(flat, (1..=(SEND_BATCH as u64 * 2 + 3)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_stream_flattens_batches_and_ends_with_the_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(vec![event(1), event(2)])).await.expect("send");
        tx.send(Ok(vec![event(3)])).await.expect("send");
        tx.send(Err(Status::unavailable("bye")))
            .await
            .expect("send");
        drop(tx);
        let items: Vec<_> = futures::StreamExt::collect::<Vec<_>>(BatchStream::new(rx)).await;
        let got: Vec<Result<u64, tonic::Code>> = items
            .into_iter()
            .map(|r| r.map(|e| e.sequence).map_err(|s| s.code()))
            .collect();
        assert_eq!(got, [Ok(1), Ok(2), Ok(3), Err(tonic::Code::Unavailable)]);
    }
}

#[cfg(test)]
mod replay_tests {
    use std::time::Duration;

    use futures::StreamExt;
    use switchboard_core::{
        ConversationPatch, EventPayload, IncomingEvent, Sequence as Seq, Timestamp,
    };
    use switchboard_proto::v1::switchboard_server::Switchboard;
    use switchboard_store::{AppendRequest, Store, StoreOptions};
    use tonic::Request;

    use super::*;
    use crate::connections::Connections;
    use crate::grpc::{StreamOptions, SwitchboardService};

    async fn collect(service: &SwitchboardService, after: u64, until: u64) -> Vec<u64> {
        let request = v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AfterSequence(after)),
            ..Default::default()
        };
        let mut stream = service
            .stream_events(Request::new(request))
            .await
            .expect("stream")
            .into_inner();
        let mut got = Vec::new();
        while got.last().copied().unwrap_or(after) < until {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("no stall")
                .expect("the stream goes on")
                .expect("an event");
            got.push(event.sequence);
        }
        got
    }

    /// Replays longer than several read batches, from sled (no tail cache): the reads ahead
    /// must hand over every event once, in order, from any start.
    #[tokio::test]
    async fn replays_read_ahead_from_sled_deliver_every_event_once_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            tail_cache_events: 0,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), options).expect("store");
        let connection = ConnectionId::new("livechat").expect("id");
        let at = Timestamp::from_secs(1_700_000_000).expect("time");
        for request in 0..14u32 {
            let events = (0..100u32)
                .map(|i| IncomingEvent {
                    kind: EventKind::ChatUpdated,
                    vendor_event: "chat_updated".to_owned(),
                    dedup_key: format!("k{request}-{i}"),
                    occurred_at: at,
                    payload: EventPayload::Conversation(ConversationPatch::new(format!("c{i}"))),
                })
                .collect();
            store
                .append(AppendRequest {
                    connection: connection.clone(),
                    vendor: "livechat".to_owned(),
                    request_id: Some(format!("r{request}")),
                    received_at: at,
                    raw: Some("{}".to_owned()),
                    events,
                    sync: None,
                })
                .await
                .expect("append");
        }
        let head = store.head();
        assert_eq!(head, Seq(1400));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let service = SwitchboardService::new(
            store.clone(),
            Connections::default(),
            vec!["livechat"],
            shutdown_rx,
            StreamOptions::default(),
        );
        for after in [0, 1, 511, 700, 1399] {
            let got = collect(&service, after, head.0).await;
            assert_eq!(
                got,
                (after + 1..=head.0).collect::<Vec<_>>(),
                "after {after}"
            );
        }
        let _ = shutdown.send(true);
        store.close().await.expect("close");
    }
}
