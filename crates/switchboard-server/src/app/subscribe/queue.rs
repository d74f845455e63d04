//! Subscription internals: events converted to their wire form once for all subscribers, the
//! memory budgets of what is queued for subscribers, and the per-subscriber stream that hands
//! batches of them to the transport.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use switchboard_core::{ConnectionId, ConversationId, Error, Event, EventKind, Sequence};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    /// The wire form's encoded size: what it costs a subscriber's budget.
    pub(super) size: usize,
}

impl Converted {
    pub(super) fn new(event: Event) -> Self {
        let sequence = event.sequence;
        let connection = event.connection.clone();
        let kind = event.incoming.kind;
        let conversation = event.conversation_id();
        let wire = convert::event_owned(event);
        Converted {
            sequence,
            connection,
            kind,
            conversation,
            size: prost::Message::encoded_len(&wire),
            wire,
        }
    }
}

/// A ring of recently converted events shared by every subscriber of a service: the first
/// reader to convert an event leaves it here, the others take an `Arc` of it instead of
/// converting (and re-serializing the payload of) the same event again. Bounded in events and
/// in bytes: past [`CONVERTED_BYTES`] the oldest events are dropped (readers then convert them
/// again from the store's tail cache or the log).
#[derive(Debug)]
pub(super) struct ConvertedRing {
    slots: RwLock<Slots>,
    max_bytes: usize,
}

#[derive(Debug)]
struct Slots {
    slots: Vec<Option<Arc<Converted>>>,
    bytes: usize,
    /// How many times the ring was cleared: events read before a clear are not kept after it.
    epoch: u64,
}

/// Most bytes of converted events the ring holds (raw bodies dominate).
pub(super) const CONVERTED_BYTES: usize = 64 * 1024 * 1024;

impl ConvertedRing {
    pub(super) fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, CONVERTED_BYTES)
    }

    pub(super) fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        ConvertedRing {
            slots: RwLock::new(Slots {
                slots: vec![None; capacity],
                bytes: 0,
                epoch: 0,
            }),
            max_bytes,
        }
    }

    fn slot(sequence: u64, len: usize) -> usize {
        // `len` fits a u64 and the remainder is below `len`, so both conversions are exact.
        (sequence % len as u64) as usize
    }

    /// The events `after + 1, after + 2, ...` up to `to` (inclusive) held here, stopping at the
    /// first one missing: possibly none.
    pub(super) fn run(&self, after: Sequence, to: Sequence) -> Vec<Arc<Converted>> {
        let held = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let slots = &held.slots;
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

    /// The ring's epoch: take it before reading events from the store, and keep them with
    /// [`ConvertedRing::put_since`].
    pub(super) fn epoch(&self) -> u64 {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// Forgets every event held (an erasure rewrote some of them) and starts a new epoch, so
    /// that events read before now are not kept afterwards.
    pub(super) fn clear(&self) {
        let mut held = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        held.slots.iter_mut().for_each(|slot| *slot = None);
        held.bytes = 0;
        held.epoch += 1;
    }

    /// Keeps `events`, each unless its slot holds a newer event already; then drops the
    /// oldest events while the ring holds more than its bytes.
    #[cfg(test)]
    pub(super) fn put(&self, events: &[Arc<Converted>]) {
        self.put_since(self.epoch(), events);
    }

    /// [`ConvertedRing::put`] of events read in `epoch`: nothing when the ring was cleared
    /// since (they may be older than an erasure).
    pub(super) fn put_since(&self, epoch: u64, events: &[Arc<Converted>]) {
        let mut held = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let len = held.slots.len();
        if len == 0 || held.epoch != epoch {
            return;
        }
        for event in events {
            let index = Self::slot(event.sequence.0, len);
            let replaced = match &held.slots[index] {
                Some(current) if current.sequence >= event.sequence => continue,
                Some(current) => current.size,
                None => 0,
            };
            held.slots[index] = Some(event.clone());
            held.bytes = held.bytes - replaced + event.size;
        }
        if held.bytes > self.max_bytes {
            let mut occupied: Vec<(Sequence, usize)> = held
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| slot.as_ref().map(|e| (e.sequence, i)))
                .collect();
            occupied.sort_unstable();
            for (_, index) in occupied {
                if held.bytes <= self.max_bytes {
                    break;
                }
                if let Some(dropped) = held.slots[index].take() {
                    held.bytes -= dropped.size;
                }
            }
        }
    }
}

/// The bytes of the memory budgets a queued batch holds: its subscriber's and the share of
/// the budget of all subscribers. Dropped (given back) once the batch has been handed to the
/// transport.
#[derive(Debug)]
pub(super) struct Budget {
    _subscriber: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// Memory budgets of StreamEvents, in bytes of events in wire form.
#[derive(Debug, Clone)]
pub(super) struct Budgets {
    subscriber: usize,
    all: Arc<Semaphore>,
    all_bytes: usize,
}

/// Semaphores count in u32: budgets are capped at 4 GiB.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

impl Budgets {
    pub(super) fn new(subscriber: usize, all: usize) -> Self {
        let all_bytes = permits(all) as usize;
        Budgets {
            subscriber: permits(subscriber) as usize,
            all: Arc::new(Semaphore::new(all_bytes)),
            all_bytes,
        }
    }

    /// One subscriber's budget.
    pub(super) fn for_subscriber(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.subscriber))
    }

    /// The bytes of one subscriber's budget.
    pub(super) fn subscriber_bytes(&self) -> usize {
        self.subscriber
    }

    /// Waits until `bytes` fit both the subscriber's budget and the budget of all (a batch
    /// larger than a budget takes all of it).
    pub(super) async fn acquire(&self, mine: &Arc<Semaphore>, bytes: usize) -> Option<Budget> {
        let own = permits(bytes.min(self.subscriber));
        let shared = permits(bytes.min(self.all_bytes));
        let subscriber = mine.clone().acquire_many_owned(own).await.ok()?;
        let all = self.all.clone().acquire_many_owned(shared).await.ok()?;
        Some(Budget {
            _subscriber: subscriber,
            _all: all,
        })
    }
}

/// A batch of events queued for a subscriber, with the budget it holds.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) events: Vec<Arc<Converted>>,
    pub(super) budget: Option<Budget>,
}

/// How a subscriber's stream ends.
enum End {
    /// It goes on.
    Open,
    /// After the queued events, this error.
    Error(Error),
    /// After the queued events, nothing.
    Done,
}

struct OutboxState {
    queue: VecDeque<Queued>,
    end: End,
    waker: Option<Waker>,
    consumer_gone: bool,
}

/// Between one subscriber's reader task and its transport: a queue of batches whose memory is
/// bounded by the budgets they hold (not by a count of events), which the reader can also
/// empty at once when it ends a subscriber that stopped reading.
pub(super) struct Outbox {
    state: Mutex<OutboxState>,
    gone: Notify,
}

impl Outbox {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                queue: VecDeque::new(),
                end: End::Open,
                waker: None,
                consumer_gone: false,
            }),
            gone: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a batch; false when the subscriber is gone.
    pub(super) fn push(&self, queued: Queued) -> bool {
        let mut state = self.lock();
        if state.consumer_gone {
            return false;
        }
        state.queue.push_back(queued);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        true
    }

    /// Ends the stream after what is queued, with `error` if any. `discard` drops what is
    /// queued first (and frees its budget): for a subscriber that stopped reading.
    pub(super) fn end(&self, error: Option<Error>, discard: bool) {
        let mut state = self.lock();
        if discard {
            state.queue.clear();
        }
        state.end = error.map_or(End::Done, End::Error);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once the subscriber has gone (its stream was dropped).
    pub(super) async fn gone(&self) {
        loop {
            let notified = self.gone.notified();
            if self.lock().consumer_gone {
                return;
            }
            notified.await;
        }
    }

    /// Whether the subscriber has gone.
    #[cfg(test)]
    pub(super) fn is_gone(&self) -> bool {
        self.lock().consumer_gone
    }
}

/// The subscriber's side: flattens the batches into the messages the transport encodes (a clone of a
/// shared wire form, made just before it is encoded; an unshared one is moved). A batch's
/// budget is given back once its last event has been handed over.
pub(super) struct BatchStream {
    outbox: Arc<Outbox>,
    current: std::vec::IntoIter<Arc<Converted>>,
    budget: Option<Budget>,
    finished: bool,
}

impl BatchStream {
    pub(super) fn new(outbox: Arc<Outbox>) -> Self {
        BatchStream {
            outbox,
            current: Vec::new().into_iter(),
            budget: None,
            finished: false,
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        let mut state = self.outbox.lock();
        state.consumer_gone = true;
        state.queue.clear();
        drop(state);
        self.outbox.gone.notify_one();
    }
}

impl Stream for BatchStream {
    type Item = Result<v1::Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.current.next() {
                // Shared with the ring or other subscribers: cloned; else moved.
                let wire = Arc::try_unwrap(event)
                    .map_or_else(|shared| shared.wire.clone(), |own| own.wire);
                return Poll::Ready(Some(Ok(wire)));
            }
            this.budget = None;
            if this.finished {
                return Poll::Ready(None);
            }
            let mut state = this.outbox.lock();
            if let Some(queued) = state.queue.pop_front() {
                this.current = queued.events.into_iter();
                this.budget = queued.budget;
                continue;
            }
            match std::mem::replace(&mut state.end, End::Done) {
                End::Open => {
                    state.end = End::Open;
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                End::Error(error) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                End::Done => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
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
    use switchboard_core::{ConversationPatch, ErrorCode, EventPayload, IncomingEvent, Timestamp};

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
    fn the_ring_drops_its_oldest_events_past_its_bytes() {
        let size = event(1).size;
        let ring = ConvertedRing::with_max_bytes(16, size * 3);
        ring.put(&[event(1), event(2), event(3), event(4), event(5)]);
        // Only the newest three fit.
        assert!(ring.run(Sequence(0), Sequence(5)).is_empty());
        assert_eq!(sequences(&ring.run(Sequence(2), Sequence(5))), [3, 4, 5]);
        ring.put(&[event(6)]);
        assert!(ring.run(Sequence(2), Sequence(6)).is_empty());
        assert_eq!(sequences(&ring.run(Sequence(3), Sequence(6))), [4, 5, 6]);
    }

    #[test]
    fn a_cleared_ring_holds_nothing_and_refuses_events_read_before_the_clear() {
        let ring = ConvertedRing::new(8);
        ring.put(&[event(1), event(2), event(3)]);
        let before = ring.epoch();
        ring.clear();
        assert!(ring.run(Sequence(0), Sequence(3)).is_empty());
        // A reader that read 1..3 before the erasure cannot put them back.
        ring.put_since(before, &[event(1), event(2), event(3)]);
        assert!(ring.run(Sequence(0), Sequence(3)).is_empty());
        // Events read after it are kept.
        ring.put_since(ring.epoch(), &[event(1), event(2)]);
        assert_eq!(sequences(&ring.run(Sequence(0), Sequence(3))), [1, 2]);
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

    fn queued(events: Vec<Arc<Converted>>) -> Queued {
        Queued {
            events,
            budget: None,
        }
    }

    #[tokio::test]
    async fn the_stream_flattens_batches_and_ends_with_the_error() {
        let outbox = Outbox::new();
        assert!(outbox.push(queued(vec![event(1), event(2)])));
        assert!(outbox.push(queued(vec![event(3)])));
        outbox.end(Some(Error::unavailable("bye")), false);
        let items: Vec<_> =
            futures::StreamExt::collect::<Vec<_>>(BatchStream::new(outbox.clone())).await;
        let got: Vec<Result<u64, ErrorCode>> = items
            .into_iter()
            .map(|r| r.map(|e| e.sequence).map_err(|e| e.code))
            .collect();
        assert_eq!(got, [Ok(1), Ok(2), Ok(3), Err(ErrorCode::Unavailable)]);
        // The stream was dropped: the reader learns the subscriber is gone.
        assert!(outbox.is_gone());
        assert!(!outbox.push(queued(vec![event(4)])));
    }

    #[tokio::test]
    async fn budgets_are_held_until_the_batch_is_handed_over_and_freed_when_discarded() {
        let budgets = Budgets::new(1000, 1500);
        let mine = budgets.for_subscriber();
        let other = budgets.for_subscriber();
        let first = budgets.acquire(&mine, 600).await.expect("room");
        assert_eq!(mine.available_permits(), 400);
        // Over one subscriber's budget: it waits.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budgets.acquire(&mine, 600),
        )
        .await;
        assert!(waiting.is_err());
        // The budget of all is shared: another subscriber gets what is left of it, no more.
        let second = budgets.acquire(&other, 900).await.expect("room");
        let over_all = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budgets.acquire(&other, 50),
        )
        .await;
        assert!(over_all.is_err());
        drop(second);

        let outbox = Outbox::new();
        let mut stream = BatchStream::new(outbox.clone());
        outbox.push(Queued {
            events: vec![event(1)],
            budget: Some(first),
        });
        // Handing the event over keeps the budget until the next poll finds the batch empty.
        let got = futures::StreamExt::next(&mut stream).await;
        assert_eq!(got.map(|r| r.map(|e| e.sequence).ok()), Some(Some(1)));
        assert_eq!(mine.available_permits(), 400);
        let pending = futures::poll!(futures::StreamExt::next(&mut stream));
        assert!(pending.is_pending());
        assert_eq!(mine.available_permits(), 1000);

        // A discarded queue frees its budget at once, though nobody reads.
        let held = budgets.acquire(&mine, 700).await.expect("room");
        outbox.push(Queued {
            events: vec![event(2)],
            budget: Some(held),
        });
        assert_eq!(mine.available_permits(), 300);
        outbox.end(
            Some(Error::new(ErrorCode::ResourceExhausted, "stalled")),
            true,
        );
        assert_eq!(mine.available_permits(), 1000);
        let end = futures::StreamExt::next(&mut stream).await;
        assert_eq!(
            end.map(|r| r.map(|e| e.sequence).map_err(|e| e.code)),
            Some(Err(ErrorCode::ResourceExhausted))
        );
    }
}
