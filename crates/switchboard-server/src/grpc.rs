//! The gRPC front door: the `switchboard.v1.Switchboard` service.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchboard_core::{
    ConnectionId, ConversationId, Error, ErrorCode, IncomingEvent, Sequence, Timestamp,
};
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_server::Switchboard;
use switchboard_store::{AppendRequest, ConversationQuery, Store, StoreError};
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, warn};

use crate::connections::Connections;
use crate::sync::SyncRunner;

#[path = "grpc_admin.rs"]
mod admin;
#[path = "grpc_quarantine.rs"]
mod quarantine;
#[path = "grpc_stream.rs"]
mod stream;
#[path = "grpc_tickets.rs"]
mod tickets;

/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size when the client asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Events read from the store per step of a stream.
const STREAM_READ_BATCH: usize = 512;
/// Most bytes of stored events read per step of a stream (at least one event): with large raw
/// bodies this, not [`STREAM_READ_BATCH`], bounds a read.
const STREAM_READ_BYTES: usize = 2 * 1024 * 1024;

/// A core error as a gRPC status.
pub fn status(error: &Error) -> Status {
    Status::new(grpc_code(error.code), error.message.clone())
}

fn store_status(error: StoreError) -> Status {
    status(&error.into())
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// Default for [`StreamOptions::max_subscribers`].
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 1024;

/// Limits of StreamEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Most StreamEvents subscribers connected at once; one more is refused with
    /// RESOURCE_EXHAUSTED at once (each costs a reader task and a buffer of events).
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

/// The service.
#[derive(Debug, Clone)]
pub struct SwitchboardService {
    store: Store,
    connections: Connections,
    vendors: Arc<Vec<&'static str>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    stream: StreamOptions,
    subscribers: Arc<tokio::sync::Semaphore>,
    /// The memory budgets of subscribers' queues.
    budgets: stream::Budgets,
    /// Unmappable webhooks, held.
    quarantine: crate::quarantine::QuarantineService,
    /// The newest events in wire form, converted once for all subscribers.
    converted: Arc<stream::ConvertedRing>,
    sync: SyncRunner,
    idempotency: tickets::InFlightCreates,
    /// Serializes read-modify-write updates of hub-native tickets, so concurrent updates of a
    /// ticket never lose one another's changes (this process is the store's only writer).
    ticket_updates: Arc<tokio::sync::Mutex<()>>,
}

impl SwitchboardService {
    /// A service over the store and connections. Streams end when `shutdown` turns true.
    pub fn new(
        store: Store,
        connections: Connections,
        vendors: Vec<&'static str>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        stream: StreamOptions,
    ) -> Self {
        SwitchboardService {
            quarantine: crate::quarantine::QuarantineService::new(
                store.clone(),
                connections.clone(),
            ),
            store,
            connections,
            vendors: Arc::new(vendors),
            shutdown,
            stream,
            subscribers: Arc::new(tokio::sync::Semaphore::new(stream.max_subscribers)),
            budgets: stream::Budgets::new(
                stream.subscriber_buffer_bytes,
                stream.total_buffer_bytes,
            ),
            converted: Arc::new(stream::ConvertedRing::new(stream::CONVERTED_EVENTS)),
            sync: SyncRunner::default(),
            idempotency: tickets::InFlightCreates::default(),
            ticket_updates: Arc::default(),
        }
    }

    /// Shares `runner` with the periodic sync, so a `SyncConnection` call and a scheduled sync
    /// of the same connection never run at once.
    pub fn with_sync_runner(mut self, runner: SyncRunner) -> Self {
        self.sync = runner;
        self
    }

    /// Appends one event the service itself made (no webhook, no raw body); returns how many
    /// were appended: 0 when its dedup key is already in the log.
    async fn append_event(
        &self,
        connection: &ConnectionId,
        vendor: &str,
        event: IncomingEvent,
    ) -> Result<usize, Status> {
        let receipt = self
            .store
            .append(AppendRequest {
                connection: connection.clone(),
                vendor: vendor.to_owned(),
                request_id: None,
                received_at: Timestamp::now(),
                raw: None,
                events: vec![event],
                sync: None,
                quarantine: None,
            })
            .await
            .map_err(store_status)?;
        Ok(receipt.appended.len())
    }

    fn check_vendors(&self, vendors: &[String]) -> Result<(), Status> {
        for vendor in vendors {
            if !self.vendors.contains(&vendor.as_str()) {
                return Err(invalid(format!(
                    "unknown vendor {vendor:?}; known vendors: {}",
                    self.vendors.join(", ")
                )));
            }
        }
        Ok(())
    }
}

fn connection_ids(ids: &[String], field: &str) -> Result<Vec<ConnectionId>, Status> {
    ids.iter()
        .map(|id| ConnectionId::new(id.clone()).map_err(|e| invalid(format!("{field}: {e}"))))
        .collect()
}

fn page_size(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(invalid(format!(
            "page_size {n} is too large; use 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
        ))),
        n => Ok(n as usize),
    }
}

/// A request's timestamp, refused when it is outside what the core's time can hold.
fn timestamp(t: &prost_types::Timestamp, field: &str) -> Result<Timestamp, Status> {
    convert::from_timestamp(t).ok_or_else(|| {
        invalid(format!(
            "{field} is out of range; use a time between 1970 and 9999"
        ))
    })
}

fn time_range(
    range: Option<&v1::TimeRange>,
    field: &str,
) -> Result<(Option<Timestamp>, Option<Timestamp>), Status> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let bound = |t: Option<&prost_types::Timestamp>, which: &str| {
        t.map(|t| timestamp(t, &format!("{field}.{which}")))
            .transpose()
    };
    let start = bound(range.start.as_ref(), "start")?;
    let end = bound(range.end.as_ref(), "end")?;
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(invalid(format!("{field}.start must be before {field}.end")));
    }
    Ok((start, end))
}

/// Decodes a repeated enum field, refusing numbers this server does not know: prost's accessors
/// skip them silently, which would turn a filter into "everything".
fn known_enums<E: TryFrom<i32>, T>(
    raw: &[i32],
    field: &str,
    map: impl Fn(E) -> Option<T>,
    unspecified: &str,
) -> Result<Vec<T>, Status> {
    raw.iter()
        .map(|&n| {
            let value = E::try_from(n).map_err(|_| {
                invalid(format!(
                    "{field}: {n} is not a value this server knows; upgrade the server or drop it"
                ))
            })?;
            map(value).ok_or_else(|| invalid(format!("{field}: {unspecified}")))
        })
        .collect()
}

/// What a subscriber is told when the server stops under it.
const SHUTTING_DOWN: &str = "the server is shutting down; reconnect with after_sequence";

/// Why a caught-up subscriber's reader woke up.
enum Wake {
    HeadMoved,
    StoreClosed,
    ShuttingDown,
    SubscriberGone,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send + 'static>>;

/// The first sequence whose event was received at or after `at`, minus one (the cursor to
/// start after). Events are appended in receive order, so a binary search over the log works.
fn cursor_at_time(store: &Store, at: Timestamp) -> Result<Sequence, StoreError> {
    let (mut low, mut high) = (0u64, store.head().0);
    // Invariant: events <= low were received before `at`; the answer is in [low, high].
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        let event = store.read_events(Sequence(mid - 1), 1)?;
        match event.first() {
            Some(e) if e.received_at < at => low = mid,
            _ => high = mid - 1,
        }
    }
    Ok(Sequence(low))
}

/// Where a subscriber's next events came from.
enum Source {
    /// The service's ring or the store's tail cache: the reader is tailing the log.
    Tail,
    /// sled: the reader is catching up, so it reads the following batches ahead.
    Log,
}

/// A batch of events in wire form, read and converted on a blocking thread.
type LogRead = tokio::task::JoinHandle<Result<Vec<Arc<stream::Converted>>, StoreError>>;

/// Batches a reader catching up reads and converts ahead of the one it sends (on the blocking
/// pool, so reading, converting and sending overlap on different cores).
const READ_AHEAD: u64 = 2;

/// The events after `cursor` (up to [`STREAM_READ_BATCH`], never past the durable head) read
/// from sled and converted, on a blocking thread. Not left in the service's ring: a reader
/// catching up rarely shares its events, and its own copies move to the transport uncloned.
fn read_log(store: &Store, cursor: Sequence) -> LogRead {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let events = store.read_events_bounded(cursor, STREAM_READ_BATCH, STREAM_READ_BYTES)?;
        Ok(events
            .into_iter()
            .map(|event| Arc::new(stream::Converted::new(event)))
            .collect())
    })
}

async fn join_log_read(read: LogRead) -> Result<Vec<Arc<stream::Converted>>, Status> {
    read.await
        .map_err(|error| Status::internal(format!("reading the event log failed: {error}")))?
        .map_err(store_status)
}

/// The events after `cursor` (up to [`STREAM_READ_BATCH`], never past the durable head) in wire
/// form. Tailing: from the service's ring of converted events when it holds the next ones,
/// else from the store's tail cache, converted here and left in the ring for the other
/// subscribers. Catching up: read from sled on a blocking thread. Empty when the cursor is at
/// the head.
async fn next_events(
    store: &Store,
    converted: &stream::ConvertedRing,
    cursor: Sequence,
) -> Result<(Vec<Arc<stream::Converted>>, Source), Status> {
    let head = store.head();
    if cursor >= head {
        return Ok((Vec::new(), Source::Tail));
    }
    let to = Sequence(
        head.0
            .min(cursor.0.saturating_add(STREAM_READ_BATCH as u64)),
    );
    let mut shared = converted.run(cursor, to);
    let mut bytes = 0usize;
    if let Some(cut) = shared.iter().position(|event| {
        bytes = bytes.saturating_add(event.size);
        bytes > STREAM_READ_BYTES
    }) {
        shared.truncate(cut.max(1));
    }
    if !shared.is_empty() {
        return Ok((shared, Source::Tail));
    }
    match store.read_events_cached_bounded(cursor, STREAM_READ_BATCH, STREAM_READ_BYTES) {
        Some(events) => {
            let events: Vec<_> = events
                .into_iter()
                .map(|event| Arc::new(stream::Converted::new(event)))
                .collect();
            converted.put(&events);
            Ok((events, Source::Tail))
        }
        None => Ok((join_log_read(read_log(store, cursor)).await?, Source::Log)),
    }
}

#[tonic::async_trait]
impl Switchboard for SwitchboardService {
    async fn list_conversations(
        &self,
        request: Request<v1::ListConversationsRequest>,
    ) -> Result<Response<v1::ListConversationsResponse>, Status> {
        let r = request.into_inner();
        self.check_vendors(&r.vendors)?;
        let statuses = known_enums(
            &r.statuses,
            "statuses",
            convert::from_status,
            "CONVERSATION_STATUS_UNSPECIFIED is not a status",
        )?;
        let (started_from, started_to) = time_range(r.started.as_ref(), "started")?;
        let (updated_from, updated_to) = time_range(r.updated.as_ref(), "updated")?;
        let query = ConversationQuery {
            connections: connection_ids(&r.connection_ids, "connection_ids")?,
            vendors: r.vendors.clone(),
            statuses,
            started_from,
            started_to,
            updated_from,
            updated_to,
            page_size: page_size(r.page_size)?,
            page_token: Some(r.page_token.clone()).filter(|t| !t.is_empty()),
        };
        let with_messages = r.view() == v1::ConversationView::Full;
        let store = self.store.clone();
        let page = tokio::task::spawn_blocking(move || store.list_conversations(&query))
            .await
            .map_err(|e| Status::internal(format!("listing failed: {e}")))?
            .map_err(store_status)?;
        Ok(Response::new(v1::ListConversationsResponse {
            conversations: page
                .conversations
                .iter()
                .map(|c| convert::conversation(c, with_messages))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<v1::GetConversationRequest>,
    ) -> Result<Response<v1::Conversation>, Status> {
        let r = request.into_inner();
        let id = ConversationId::parse(&r.id).map_err(|e| invalid(e.to_string()))?;
        let conversation = self
            .store
            .get_conversation(&id)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no conversation {id}")))?;
        let with_messages = r.view() != v1::ConversationView::Basic;
        Ok(Response::new(convert::conversation(
            &conversation,
            with_messages,
        )))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        // Refuse before any work: a client over the cap learns it at once.
        let permit = self.subscribers.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::subscriber_refused();
            Status::resource_exhausted(format!(
                "the server already serves its limit of {} StreamEvents subscribers; \
                 close streams you no longer read, share one stream between consumers, \
                 or raise the server's subscriber limit",
                self.stream.max_subscribers
            ))
        })?;
        let r = request.into_inner();
        self.check_vendors(&r.vendors)?;
        let kinds = known_enums(
            &r.kinds,
            "kinds",
            convert::from_kind,
            "EVENT_KIND_UNSPECIFIED is not a kind",
        )?;
        let conversations = r
            .conversation_ids
            .iter()
            .map(|id| {
                ConversationId::parse(id).map_err(|e| invalid(format!("conversation_ids: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = stream::StreamFilter {
            connections: connection_ids(&r.connection_ids, "connection_ids")?,
            vendors: r.vendors.clone(),
            kinds,
            conversations,
        };
        let head = self.store.head();
        let mut cursor = match &r.start {
            None | Some(v1::stream_events_request::Start::FromBeginning(_)) => Sequence::ZERO,
            Some(v1::stream_events_request::Start::AfterSequence(after)) => {
                if *after > head.0 {
                    return Err(Status::out_of_range(format!(
                        "after_sequence {after} is beyond the head of the log ({head}); \
                         resume from a sequence you received"
                    )));
                }
                Sequence(*after)
            }
            Some(v1::stream_events_request::Start::AtHead(_)) => head,
            Some(v1::stream_events_request::Start::AtTime(t)) => {
                let at = timestamp(t, "at_time")?;
                // A binary search over the log: sled reads, off the async workers.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || cursor_at_time(&store, at))
                    .await
                    .map_err(|error| {
                        Status::internal(format!("finding the start of the stream failed: {error}"))
                    })?
                    .map_err(store_status)?
            }
        };
        let store = self.store.clone();
        let converted = self.converted.clone();
        let mut head_rx = self.store.subscribe_head();
        let mut shutdown = self.shutdown.clone();
        let outbox = stream::Outbox::new();
        let queue = outbox.clone();
        let budgets = self.budgets.clone();
        let mine = budgets.for_subscriber();
        let stall_timeout = self.stream.stall_timeout;
        info!(after = %cursor, "subscriber started");
        let reader = async move {
            // Held for the reader's life: the cap's permit and the subscriber gauge.
            let _permit = permit;
            let metrics = crate::metrics::SubscriberMetrics::connected();
            // Catching up, the next batch is read and converted while this one is sent.
            // Each read ahead is keyed by the cursor it reads after: the log has no gaps, so
            // batch k starts at `cursor + k * STREAM_READ_BATCH`; one that does not start where
            // the reader is (a batch cut short by its byte bound) is dropped and read again.
            let mut ahead: std::collections::VecDeque<(Sequence, LogRead)> =
                std::collections::VecDeque::new();
            loop {
                let next = match ahead.pop_front() {
                    Some((after, read)) if after == cursor => {
                        join_log_read(read).await.map(|batch| (batch, Source::Log))
                    }
                    Some(_) => {
                        ahead.clear();
                        next_events(&store, &converted, cursor).await
                    }
                    None => next_events(&store, &converted, cursor).await,
                };
                let (batch, source) = match next {
                    Ok(next) => next,
                    Err(status) => {
                        queue.end(Some(status), false);
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
                    queue.end(Some(Status::unavailable(reason)), false);
                    return;
                };
                if *shutdown.borrow() {
                    // Replaying a backlog never holds up a shutdown.
                    queue.end(Some(Status::unavailable(SHUTTING_DOWN)), true);
                    return;
                }
                metrics.lag(store.head().0, cursor.0);
                let next_cursor = last.sequence;
                let batch_bytes: usize = batch.iter().map(|e| e.size).sum();
                if matches!(source, Source::Log) {
                    let head = store.head();
                    let mut after = ahead.back().map_or(next_cursor, |(after, _)| {
                        Sequence(after.0.saturating_add(STREAM_READ_BATCH as u64))
                    });
                    // Read ahead only what the subscriber's budget has room for (batches like
                    // this one): one that does not read gets no reads ahead.
                    let room = |reads: usize| {
                        mine.available_permits() >= batch_bytes.saturating_mul(reads + 2)
                    };
                    while after < head && (ahead.len() as u64) < READ_AHEAD && room(ahead.len()) {
                        ahead.push_back((after, read_log(&store, after)));
                        after = Sequence(after.0.saturating_add(STREAM_READ_BATCH as u64));
                    }
                }
                let matching: Vec<_> = batch.into_iter().filter(|e| filter.matches(e)).collect();
                let mut sent = 0;
                for chunk in stream::batches(matching) {
                    let count = chunk.len();
                    let bytes = chunk.iter().map(|e| e.size).sum::<usize>();
                    // The subscriber reads slower than we send: wait for room in its budget
                    // (and in the budget of all), but not past a shutdown or the stall limit.
                    let budget = tokio::select! {
                        budget = tokio::time::timeout(stall_timeout, budgets.acquire(&mine, bytes)) => budget,
                        _ = shutdown.wait_for(|s| *s) => {
                            metrics.sent(sent);
                            queue.end(Some(Status::unavailable(SHUTTING_DOWN)), true);
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
                            Some(Status::resource_exhausted(format!(
                                "this stream had {} bytes of events waiting unread for {} s, \
                                 so the server ended it; reconnect with after_sequence set to \
                                 the last sequence you received and read faster (or filter)",
                                budgets.subscriber_bytes(),
                                stall_timeout.as_secs()
                            ))),
                            true,
                        );
                        return;
                    };
                    if !queue.push(stream::Queued {
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
        Ok(Response::new(Box::pin(stream::BatchStream::new(outbox))))
    }

    async fn manage_tickets(
        &self,
        request: Request<v1::ManageTicketsRequest>,
    ) -> Result<Response<v1::ManageTicketsResponse>, Status> {
        self.manage_tickets_rpc(request).await
    }

    type SyncConnectionStream = admin::SyncStream;

    async fn sync_connection(
        &self,
        request: Request<v1::SyncConnectionRequest>,
    ) -> Result<Response<Self::SyncConnectionStream>, Status> {
        self.sync_connection_rpc(request).await
    }

    async fn manage_agents(
        &self,
        request: Request<v1::ManageAgentsRequest>,
    ) -> Result<Response<v1::ManageAgentsResponse>, Status> {
        self.manage_agents_rpc(request).await
    }

    async fn list_quarantine(
        &self,
        request: Request<v1::ListQuarantineRequest>,
    ) -> Result<Response<v1::ListQuarantineResponse>, Status> {
        self.list_quarantine_rpc(request).await
    }

    async fn retry_quarantine(
        &self,
        request: Request<v1::RetryQuarantineRequest>,
    ) -> Result<Response<v1::RetryQuarantineResponse>, Status> {
        self.retry_quarantine_rpc(request).await
    }

    async fn list_connections(
        &self,
        _request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        let mut connections = Vec::new();
        for connection in self.connections.iter() {
            let state = self
                .store
                .sync_state(&connection.config.id)
                .map_err(store_status)?
                .unwrap_or_default();
            connections.push(v1::Connection {
                id: connection.config.id.to_string(),
                vendor: connection.plugin.vendor.to_owned(),
                webhook_path: format!("/webhooks/{}", connection.config.id),
                verification: connection.plugin.verification.to_owned(),
                verification_enabled: connection.config.verify,
                verification_warning: connection.verification_warning(),
                vendor_tickets: connection
                    .connector
                    .as_ref()
                    .is_some_and(|c| c.tickets().is_some()),
                sync: Some(v1::SyncState {
                    supported: connection.connector.is_some(),
                    unsupported_reason: crate::sync::unsupported_reason(connection),
                    interval_seconds: connection.sync_interval.map_or(0, |d| d.as_secs()),
                    cursor: state.cursor,
                    last_success: state.last_success.map(convert::timestamp),
                    last_error: state.last_error,
                    records_pulled: state.records_pulled,
                }),
            });
        }
        Ok(Response::new(v1::ListConnectionsResponse { connections }))
    }
}

/// Maps an [`ErrorCode`] to a gRPC status code.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    tonic::Code::from(code.grpc_code())
}

#[cfg(test)]
mod stream_cap_tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn subscribers_over_the_cap_are_refused_at_once_and_a_freed_slot_is_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let service = SwitchboardService::new(
            store.clone(),
            Connections::default(),
            Vec::new(),
            shutdown_rx,
            StreamOptions {
                max_subscribers: 2,
                ..StreamOptions::default()
            },
        );
        let open = || service.stream_events(Request::new(v1::StreamEventsRequest::default()));
        let first = open().await.expect("first subscriber");
        let second = open().await.expect("second subscriber");
        let refused = open().await.err().expect("a third subscriber is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("limit of 2 StreamEvents subscribers"),
            "{}",
            refused.message()
        );

        // Going away frees the slot: the caught-up reader notices the closed channel.
        drop(first);
        let mut third = None;
        for _ in 0..200 {
            match open().await {
                Ok(stream) => {
                    third = Some(stream);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        assert!(
            third.is_some(),
            "the slot of a gone subscriber is never freed"
        );
        assert_eq!(
            open().await.err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );

        drop((second, third));
        let _ = shutdown.send(true);
        store.close().await.expect("close");
    }
}
