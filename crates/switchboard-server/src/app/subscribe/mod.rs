//! Event subscriptions: a subscriber's events from a cursor, replay and live tail in one code
//! path.
//!
//! A reader task per subscriber reads the log from the subscriber's cursor in batches (at most
//! [`READ_BATCH`] events and [`READ_BYTES`] bytes) and queues the events that match its
//! filter in its outbox; each queued batch holds its size in bytes from the subscriber's budget
//! and from the budget of all subscribers, given back when the transport takes it. When caught
//! up the reader waits on the store's head. A slow subscriber only slows its own reader (bounded
//! in bytes) and nothing is dropped; one that leaves its queue full past the stall limit is
//! ended with RESOURCE_EXHAUSTED (resume from the cursor) and its queue freed at once.
//!
//! Tailing readers take the newest events from the store's memory
//! ([`Storage::read_events_cached`]) and from a ring of events already converted to the wire
//! form, shared by every subscriber, so an event is converted once however many tail it.
//! Readers catching up read ahead and convert on the blocking pool. Readers stop at shutdown,
//! even mid-replay.
//!
//! A [`Subscription`] yields wire-form events ([`switchboard_proto::v1::Event`], the form both
//! the gRPC door and any other consumer send) or, last, the [`Error`] that ended it.

mod queue;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use switchboard_core::{
    ConnectionId, ConversationId, Error, ErrorCode, EventKind, Sequence, Timestamp,
};
use switchboard_proto::v1;
use switchboard_store::Storage;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use queue::{Budgets, Converted, ConvertedRing, Outbox, Queued};

/// Events read from the store per step of a reader.
pub const READ_BATCH: usize = 512;
/// Most bytes of stored events read per step (at least one event): with large raw bodies this,
/// not [`READ_BATCH`], bounds a read.
pub const READ_BYTES: usize = 2 * 1024 * 1024;
/// Batches a reader catching up reads and converts ahead of the one it sends (so reading,
/// converting and sending overlap on different cores).
const READ_AHEAD: u64 = 2;

/// Default for [`StreamOptions::max_subscribers`].
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 1024;

/// What a subscriber is told when the server stops under it.
const SHUTTING_DOWN: &str = "the server is shutting down; reconnect with after_sequence";

/// Limits of subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Most subscribers at once; one more is refused with RESOURCE_EXHAUSTED at once (each
    /// costs a reader task and a buffer of events).
    pub max_subscribers: usize,
    /// Bytes of events (in wire form) queued for one subscriber. A subscriber that reads
    /// slower than events come fills it, and then its reader waits. Besides it a subscriber
    /// costs at most one read batch in hand and the reads ahead, which are only made while the
    /// budget has room for them.
    pub subscriber_buffer_bytes: usize,
    /// Bytes of events queued for all subscribers together.
    pub total_buffer_bytes: usize,
    /// How long a reader waits for room in the budgets before it ends its subscriber's stream
    /// with RESOURCE_EXHAUSTED (and frees what was queued for it).
    pub stall_timeout: std::time::Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        let limits = crate::config::Limits::default();
        StreamOptions {
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            subscriber_buffer_bytes: limits.stream_subscriber_buffer_bytes,
            total_buffer_bytes: limits.stream_total_buffer_bytes,
            stall_timeout: limits.stream_stall_timeout,
        }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// With the first event of the log.
    #[default]
    FromBeginning,
    /// After this sequence (one the subscriber received; never beyond the head).
    After(Sequence),
    /// With the next event appended.
    AtHead,
    /// With the first event received at or after this time.
    AtTime(Timestamp),
}

/// Which events a subscriber sees; an empty list lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these connections.
    pub connections: Vec<ConnectionId>,
    /// Only these vendors (each must be one the server knows).
    pub vendors: Vec<String>,
    /// Only these kinds.
    pub kinds: Vec<EventKind>,
    /// Only events of these conversations.
    pub conversations: Vec<ConversationId>,
}

impl Filter {
    fn matches(&self, event: &Converted) -> bool {
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

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// [`Start::After`] a sequence beyond the head of the log (gRPC: OUT_OF_RANGE).
    BeyondHead {
        /// The sequence asked for.
        after: Sequence,
        /// The head.
        head: Sequence,
    },
    /// Any other refusal.
    Error(Error),
}

impl Refused {
    /// The refusal as a core error (a sequence beyond the head is INVALID_ARGUMENT).
    pub fn into_error(self) -> Error {
        match self {
            Refused::Error(error) => error,
            beyond @ Refused::BeyondHead { .. } => Error::invalid(beyond.to_string()),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BeyondHead { after, head } => write!(
                f,
                "after_sequence {after} is beyond the head of the log ({head}); \
                 resume from a sequence you received"
            ),
            Refused::Error(error) => write!(f, "{}", error.message),
        }
    }
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused::Error(error)
    }
}

/// One subscriber's events: wire-form events in log order, each once, then (when the
/// subscription ends other than by being dropped) the error that ended it. Dropping it stops
/// its reader.
pub struct Subscription {
    events: queue::BatchStream,
    /// Where the subscription started (the cursor its first event follows).
    pub after: Sequence,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<v1::Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().events).poll_next(cx)
    }
}

/// The subscription service.
#[derive(Clone)]
pub struct Subscribe {
    storage: Arc<dyn Storage>,
    vendors: Arc<Vec<&'static str>>,
    shutdown: watch::Receiver<bool>,
    options: StreamOptions,
    subscribers: Arc<tokio::sync::Semaphore>,
    /// The memory budgets of subscribers' queues.
    budgets: Budgets,
    /// The newest events in wire form, converted once for all subscribers.
    converted: Arc<ConvertedRing>,
}

impl std::fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribe")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why a caught-up subscriber's reader woke up.
enum Wake {
    HeadMoved,
    StoreClosed,
    ShuttingDown,
    SubscriberGone,
}

/// Where a subscriber's next events came from.
enum Source {
    /// The ring or the store's memory: the reader is tailing the log.
    Tail,
    /// The store's log: the reader is catching up, so it reads the following batches ahead.
    Log,
}

/// A batch of events in wire form, read and converted in a task of its own.
type LogRead = tokio::task::JoinHandle<Result<Vec<Arc<Converted>>, Error>>;

impl Subscribe {
    /// The service over `storage`; `vendors` are those filters may name; subscriptions end
    /// when `shutdown` turns true.
    pub fn new(
        storage: Arc<dyn Storage>,
        vendors: Arc<Vec<&'static str>>,
        shutdown: watch::Receiver<bool>,
        options: StreamOptions,
    ) -> Self {
        Subscribe {
            storage,
            vendors,
            shutdown,
            subscribers: Arc::new(tokio::sync::Semaphore::new(options.max_subscribers)),
            budgets: Budgets::new(options.subscriber_buffer_bytes, options.total_buffer_bytes),
            converted: Arc::new(ConvertedRing::new(queue::CONVERTED_EVENTS)),
            options,
        }
    }

    /// Forgets the events in wire form kept for tailing subscribers: after an erasure, which
    /// rewrote some of them (subscribers then read them again from the store). Readers that
    /// come upon a `contact_erased` event while tailing do it too, so that a replica that did
    /// not erase forgets them as well.
    pub fn forget_converted(&self) {
        self.converted.clear();
    }

    /// Opens a subscription. Refused at once, before any work, when the server already serves
    /// its limit of subscribers (RESOURCE_EXHAUSTED); refused when a filter names an unknown
    /// vendor or the start is beyond the head.
    pub async fn open(&self, start: Start, filter: Filter) -> Result<Subscription, Refused> {
        let permit = self.subscribers.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::subscriber_refused();
            Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the server already serves its limit of {} StreamEvents subscribers; \
                     close streams you no longer read, share one stream between consumers, \
                     or raise the server's subscriber limit",
                    self.options.max_subscribers
                ),
            )
        })?;
        super::check_vendors(&self.vendors, &filter.vendors)?;
        let head = self.storage.head();
        let mut cursor = match start {
            Start::FromBeginning => Sequence::ZERO,
            Start::After(after) if after > head => {
                return Err(Refused::BeyondHead { after, head });
            }
            Start::After(after) => after,
            Start::AtHead => head,
            Start::AtTime(at) => cursor_at_time(self.storage.as_ref(), at).await?,
        };
        let after = cursor;
        let storage = self.storage.clone();
        let converted = self.converted.clone();
        let mut head_rx = self.storage.subscribe_head();
        let mut shutdown = self.shutdown.clone();
        let outbox = Outbox::new();
        let queue = outbox.clone();
        let budgets = self.budgets.clone();
        let mine = budgets.for_subscriber();
        let stall_timeout = self.options.stall_timeout;
        info!(after = %cursor, "subscriber started");
        let reader = async move {
            // Held for the reader's life: the cap's permit and the subscriber gauge.
            let _permit = permit;
            let metrics = crate::metrics::SubscriberMetrics::connected();
            // Catching up, the next batch is read and converted while this one is sent.
            // Each read ahead is keyed by the cursor it reads after: the log has no gaps, so
            // batch k starts at `cursor + k * READ_BATCH`; one that does not start where the
            // reader is (a batch cut short by its byte bound) is dropped and read again.
            let mut ahead: VecDeque<(Sequence, LogRead)> = VecDeque::new();
            loop {
                let next = match ahead.pop_front() {
                    Some((after, read)) if after == cursor => {
                        join_log_read(read).await.map(|batch| (batch, Source::Log))
                    }
                    Some(_) => {
                        ahead.clear();
                        next_events(&storage, &converted, cursor).await
                    }
                    None => next_events(&storage, &converted, cursor).await,
                };
                let (batch, source) = match next {
                    Ok(next) => next,
                    Err(error) => {
                        queue.end(Some(error), false);
                        return;
                    }
                };
                let Some(last) = batch.last() else {
                    // Caught up: wait until the head moves past the cursor, or shutdown.
                    let wake = tokio::select! {
                        moved = head_rx.wait_for(|h| *h > cursor) => {
                            if moved.is_ok() { Wake::HeadMoved } else { Wake::StoreClosed }
                        }
                        _ = shutdown.wait_for(|s| *s) => Wake::ShuttingDown,
                        () = queue.gone() => Wake::SubscriberGone,
                    };
                    let reason = match wake {
                        Wake::HeadMoved => continue,
                        Wake::SubscriberGone => return,
                        Wake::StoreClosed => "the store closed; reconnect with after_sequence",
                        Wake::ShuttingDown => SHUTTING_DOWN,
                    };
                    queue.end(Some(Error::unavailable(reason)), false);
                    return;
                };
                if *shutdown.borrow() {
                    // Replaying a backlog never holds up a shutdown.
                    queue.end(Some(Error::unavailable(SHUTTING_DOWN)), true);
                    return;
                }
                metrics.lag(storage.head().0, cursor.0);
                let next_cursor = last.sequence;
                let batch_bytes: usize = batch.iter().map(|e| e.size).sum();
                if matches!(source, Source::Log) {
                    let head = storage.head();
                    let mut after = ahead.back().map_or(next_cursor, |(after, _)| {
                        Sequence(after.0.saturating_add(READ_BATCH as u64))
                    });
                    // Read ahead only what the subscriber's budget has room for (batches like
                    // this one): one that does not read gets no reads ahead.
                    let room = |reads: usize| {
                        mine.available_permits() >= batch_bytes.saturating_mul(reads + 2)
                    };
                    while after < head && (ahead.len() as u64) < READ_AHEAD && room(ahead.len()) {
                        ahead.push_back((after, read_log(&storage, after)));
                        after = Sequence(after.0.saturating_add(READ_BATCH as u64));
                    }
                }
                let matching: Vec<_> = batch.into_iter().filter(|e| filter.matches(e)).collect();
                let mut sent = 0;
                for chunk in queue::batches(matching) {
                    let count = chunk.len();
                    let bytes = chunk.iter().map(|e| e.size).sum::<usize>();
                    // The subscriber reads slower than we send: wait for room in its budget
                    // (and in the budget of all), but not past a shutdown or the stall limit.
                    let budget = tokio::select! {
                        budget = tokio::time::timeout(stall_timeout, budgets.acquire(&mine, bytes)) => budget,
                        _ = shutdown.wait_for(|s| *s) => {
                            metrics.sent(sent);
                            queue.end(Some(Error::unavailable(SHUTTING_DOWN)), true);
                            return;
                        }
                        () = queue.gone() => {
                            metrics.sent(sent);
                            debug!(at = %cursor, "subscriber went away");
                            return;
                        }
                    };
                    let Ok(Some(budget)) = budget else {
                        metrics.sent(sent);
                        crate::metrics::subscriber_stalled();
                        warn!(
                            at = %cursor,
                            budget_bytes = budgets.subscriber_bytes(),
                            "subscriber ended: it left its events unread"
                        );
                        queue.end(
                            Some(Error::new(
                                ErrorCode::ResourceExhausted,
                                format!(
                                    "this stream had {} bytes of events waiting unread for {} s, \
                                     so the server ended it; reconnect with after_sequence set to \
                                     the last sequence you received and read faster (or filter)",
                                    budgets.subscriber_bytes(),
                                    stall_timeout.as_secs()
                                ),
                            )),
                            true,
                        );
                        return;
                    };
                    if !queue.push(Queued {
                        events: chunk,
                        budget: Some(budget),
                    }) {
                        metrics.sent(sent);
                        debug!(at = %cursor, "subscriber went away");
                        return;
                    }
                    sent += count as u64;
                }
                cursor = next_cursor;
                metrics.sent(sent);
            }
        };
        tokio::spawn(reader.in_current_span());
        Ok(Subscription {
            events: queue::BatchStream::new(outbox),
            after,
        })
    }
}

/// The first sequence whose event was received at or after `at`, minus one (the cursor to
/// start after). Events are appended in receive order, so a binary search over the log works.
async fn cursor_at_time(storage: &dyn Storage, at: Timestamp) -> Result<Sequence, Error> {
    let (mut low, mut high) = (0u64, storage.head().0);
    // Invariant: events <= low were received before `at`; the answer is in [low, high].
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        let event = storage
            .read_events(Sequence(mid - 1), 1, usize::MAX)
            .await?;
        match event.first() {
            Some(e) if e.received_at < at => low = mid,
            _ => high = mid - 1,
        }
    }
    Ok(Sequence(low))
}

/// The events after `cursor` (up to [`READ_BATCH`], never past the durable head) read from the
/// log and converted, in a task of their own (the conversion on the blocking pool). Not left in
/// the ring: a reader catching up rarely shares its events, and its own copies move to the
/// transport uncloned.
fn read_log(storage: &Arc<dyn Storage>, cursor: Sequence) -> LogRead {
    let storage = storage.clone();
    tokio::spawn(async move {
        let events = storage.read_events(cursor, READ_BATCH, READ_BYTES).await?;
        tokio::task::spawn_blocking(move || {
            events
                .into_iter()
                .map(|event| Arc::new(Converted::new(event)))
                .collect()
        })
        .await
        .map_err(|error| Error::internal(format!("converting events failed: {error}")))
    })
}

async fn join_log_read(read: LogRead) -> Result<Vec<Arc<Converted>>, Error> {
    read.await
        .map_err(|error| Error::internal(format!("reading the event log failed: {error}")))?
}

/// The events after `cursor` (up to [`READ_BATCH`], never past the durable head) in wire form.
/// Tailing: from the ring of converted events when it holds the next ones, else from the
/// store's memory, converted here and left in the ring for the other subscribers. Catching up:
/// read from the log. Empty when the cursor is at the head.
async fn next_events(
    storage: &Arc<dyn Storage>,
    converted: &ConvertedRing,
    cursor: Sequence,
) -> Result<(Vec<Arc<Converted>>, Source), Error> {
    let head = storage.head();
    if cursor >= head {
        return Ok((Vec::new(), Source::Tail));
    }
    let to = Sequence(head.0.min(cursor.0.saturating_add(READ_BATCH as u64)));
    // The ring serves only a run that reaches the head: an erasure rewrites older events and
    // is itself the newest event, so a run that reaches the head past an erasure was put
    // after the reader that converted the erasure cleared the ring (see below), and one that
    // stops short of the head may be older than an erasure this replica has not seen yet.
    let mut shared = converted.run(cursor, to);
    if to == head && shared.last().is_some_and(|event| event.sequence == head) {
        let mut bytes = 0usize;
        if let Some(cut) = shared.iter().position(|event| {
            bytes = bytes.saturating_add(event.size);
            bytes > READ_BYTES
        }) {
            shared.truncate(cut.max(1));
        }
        return Ok((shared, Source::Tail));
    }
    let epoch = converted.epoch();
    match storage.read_events_cached(cursor, READ_BATCH, READ_BYTES) {
        Some(events) => {
            let events: Vec<_> = events
                .into_iter()
                .map(|event| Arc::new(Converted::new(event)))
                .collect();
            // An erasure (here or on another replica) rewrote events the ring may hold: they
            // are read again from the store, which serves them erased.
            if events.iter().any(|e| e.kind == EventKind::ContactErased) {
                converted.clear();
                converted.put_since(converted.epoch(), &events);
            } else {
                converted.put_since(epoch, &events);
            }
            Ok((events, Source::Tail))
        }
        None => Ok((join_log_read(read_log(storage, cursor)).await?, Source::Log)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use switchboard_core::{ConversationId, ConversationPatch, EventPayload, IncomingEvent};
    use switchboard_store::{AppendRequest, Store, StoreOptions};

    use super::*;

    fn service(store: &Store, options: StreamOptions) -> (Subscribe, watch::Sender<bool>) {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let service = Subscribe::new(
            Arc::new(store.clone()),
            Arc::new(vec!["livechat"]),
            shutdown_rx,
            options,
        );
        (service, shutdown)
    }

    async fn collect(service: &Subscribe, after: u64, until: u64) -> Vec<u64> {
        let mut stream = service
            .open(Start::After(Sequence(after)), Filter::default())
            .await
            .expect("subscription");
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

    /// An erasure done elsewhere (another replica, here straight on the store): a subscriber
    /// opened afterwards never gets the events in wire form kept from before it, though the
    /// ring held them all.
    #[tokio::test]
    async fn events_converted_before_an_erasure_are_not_served_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let connection = ConnectionId::new("livechat").expect("id");
        let at = Timestamp::from_secs(1_700_000_000).expect("time");
        for chat in ["a", "b"] {
            let mut patch = ConversationPatch::new(chat);
            patch.visitor = Some(switchboard_core::Participant {
                id: format!("v-{chat}"),
                name: Some(format!("Visitor {chat} Secretname")),
                ..Default::default()
            });
            store
                .append(AppendRequest {
                    connection: connection.clone(),
                    vendor: "livechat".to_owned(),
                    request_id: None,
                    received_at: at,
                    raw: Some(format!("{{\"name\":\"Visitor {chat} Secretname\"}}")),
                    events: vec![IncomingEvent {
                        kind: EventKind::ChatStarted,
                        vendor_event: "chat_started".to_owned(),
                        dedup_key: format!("start-{chat}"),
                        occurred_at: at,
                        payload: EventPayload::Conversation(patch),
                    }],
                    sync: None,
                    quarantine: None,
                })
                .await
                .expect("append");
        }
        let (service, shutdown) = service(&store, StreamOptions::default());
        let texts = |events: Vec<v1::Event>| -> Vec<String> {
            events.into_iter().map(|e| format!("{e:?}")).collect()
        };
        let read = async |service: &Subscribe, until: u64| {
            let mut stream = service
                .open(Start::After(Sequence::ZERO), Filter::default())
                .await
                .expect("subscription");
            let mut got = Vec::new();
            while got.last().map_or(0, |e: &v1::Event| e.sequence) < until {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .expect("no stall")
                    .expect("open")
                    .expect("an event");
                got.push(next);
            }
            got
        };
        // Tailing readers leave both events in the ring.
        let before = texts(read(&service, 2).await);
        assert!(
            before.iter().all(|e| e.contains("Secretname")),
            "{before:?}"
        );
        assert_eq!(service.converted.run(Sequence::ZERO, Sequence(2)).len(), 2);
        let report = store
            .erase_contact(switchboard_store::ErasurePlan {
                contact: "c1".to_owned(),
                conversations: vec![ConversationId::new(connection.clone(), "a")],
                tickets: Vec::new(),
                events: vec![Sequence(1)],
                at,
            })
            .await
            .expect("erase");
        assert_eq!(report.sequence, Sequence(3));
        let after = texts(read(&service, 3).await);
        assert!(!after[0].contains("Secretname"), "{}", after[0]);
        assert!(after[1].contains("Visitor b Secretname"), "{}", after[1]);
        // And once a reader came upon the erasure, the ring holds only what it read since.
        let again = texts(read(&service, 3).await);
        assert_eq!(again, after);
        let _ = shutdown.send(true);
        store.close().await.expect("close");
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
                    quarantine: None,
                })
                .await
                .expect("append");
        }
        let head = store.head();
        assert_eq!(head, Sequence(1400));
        let (service, shutdown) = service(&store, StreamOptions::default());
        for after in [0, 1, 511, 700, 1399] {
            let got = collect(&service, after, head.0).await;
            assert_eq!(
                got,
                (after + 1..=head.0).collect::<Vec<_>>(),
                "after {after}"
            );
        }
        let refused = service
            .open(Start::After(Sequence(1401)), Filter::default())
            .await
            .expect_err("beyond the head");
        assert_eq!(
            refused,
            Refused::BeyondHead {
                after: Sequence(1401),
                head
            }
        );
        let _ = shutdown.send(true);
        store.close().await.expect("close");
    }
}
