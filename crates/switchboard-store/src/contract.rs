//! The storage contract: what the application needs from a backend, and what every backend
//! promises. [`crate::Store`] (sled, embedded) implements it; so does the PostgreSQL backend.
//! One contract test suite (`switchboard-store-contract`) runs against each.
//!
//! # What every backend promises
//!
//! - **One durable step per append.** [`Storage::append`] resolves only once the request's
//!   events, their dedup keys, the projections they change, a sync cursor and a quarantine
//!   change are all durable together, or none of them is.
//! - **Sequences.** Every appended event gets exactly one sequence; sequences start at 1 and are
//!   gap-free in commit order. [`Storage::head`] is the last durable one, and
//!   [`Storage::read_events`] never returns an event past it, so a reader never sees N+1 before
//!   N, and never a sequence a crash could give to another event.
//! - **Dedup** is per connection and permanent: an event whose dedup key the connection already
//!   appended appends nothing and counts as a duplicate (in the same request, the same group,
//!   or years later).
//! - **Projections merge** ([`switchboard_core::Conversation::apply`]): any order of the same
//!   events gives the same conversation. Tickets are last-writer-wins by (`updated_at`,
//!   sequence); agents by the latest event.
//! - **Pages.** List calls return opaque page tokens bound to their filters; a token from other
//!   filters is [`StoreError::PageTokenMismatch`], one that does not decode
//!   [`StoreError::BadPageToken`]. Page sizes: 0 means [`crate::DEFAULT_PAGE_SIZE`], more than
//!   [`crate::MAX_PAGE_SIZE`] means that.
//! - **Commands run in the store.** [`Storage::update_ticket`] is a read-modify-write the backend
//!   serializes itself (sled: its one writer thread; PostgreSQL: a row lock), so two updates
//!   never lose each other's changes, whichever replica took them.
//!   [`Storage::claim_idempotency_key`] reserves a key for one caller at a time until it is
//!   released or its lease runs out; [`Storage::acquire_lease`] does the same for jobs (a
//!   connection's sync) that one replica at a time may run.

use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, EventKind, EventPayload,
    IncomingEvent, Sequence, Ticket, TicketChange, TicketId, Timestamp,
};
use tokio::sync::watch;

use crate::{
    AppendReceipt, AppendRequest, ConversationPage, ConversationQuery, QuarantineTotals,
    Quarantined, StoreError, SyncState, TicketListPage, TicketListQuery,
};

/// A hub-native ticket update to run in the store: read the ticket, apply the change, append a
/// `ticket_updated` event with the result, in one serialized step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketUpdate {
    /// The ticket.
    pub id: TicketId,
    /// Its connection's vendor (the event's vendor).
    pub vendor: String,
    /// What to change.
    pub change: TicketChange,
    /// When the change was asked for; the ticket's `updated_at` never moves backwards.
    pub at: Timestamp,
}

impl TicketUpdate {
    /// What the update makes of the stored ticket (`None`: there is none): the
    /// `ticket_updated` append to write and the updated ticket, or why it is refused
    /// ([`StoreError::NotFound`], [`StoreError::Refused`]). Every backend runs this between
    /// reading the ticket and writing, serialized.
    pub fn apply(&self, current: Option<Ticket>) -> Result<(AppendRequest, Ticket), StoreError> {
        let Some(mut ticket) = current else {
            return Err(StoreError::NotFound(format!("no ticket {}", self.id)));
        };
        match ticket.apply_change(&self.change, self.at) {
            Ok(true) => {}
            Ok(false) => {
                return Err(StoreError::Refused(switchboard_core::Error::invalid(
                    "the update changes nothing; set at least one of message, subject, status, assignee, requester, tags",
                )));
            }
            Err(refused) => return Err(StoreError::Refused(refused)),
        }
        let event = IncomingEvent {
            dedup_key: format!(
                "ticket_update:{}:{}",
                self.id.external_id,
                uuid::Uuid::now_v7()
            ),
            kind: EventKind::TicketUpdated,
            vendor_event: format!("switchboard.{}", EventKind::TicketUpdated.as_str()),
            occurred_at: ticket.updated_at,
            payload: EventPayload::Ticket(ticket.clone()),
        };
        let mut request =
            AppendRequest::new(self.id.connection.clone(), self.vendor.clone(), vec![event]);
        request.received_at = self.at;
        Ok((request, ticket))
    }
}

/// What [`Storage::erase_contact`] erases: one person's conversations, tickets and log
/// events, as the finder (`switchboard-find`) found them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasurePlan {
    /// The contact erased (named in the `contact_erased` event; not personal data).
    pub contact: String,
    /// Conversations whose personal data to erase.
    pub conversations: Vec<ConversationId>,
    /// Tickets whose personal data to erase.
    pub tickets: Vec<TicketId>,
    /// Log events whose stored payloads (and their requests' raw bodies) to erase.
    pub events: Vec<Sequence>,
    /// When the erasure was asked for.
    pub at: Timestamp,
}

/// What [`Storage::erase_contact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErasureReport {
    /// Conversations erased.
    pub conversations: u64,
    /// Tickets erased.
    pub tickets: u64,
    /// Log events erased.
    pub events: u64,
    /// The sequence of the `contact_erased` event that records it.
    pub sequence: Sequence,
}

/// What [`Storage::claim_idempotency_key`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key until it releases it or the lease runs out.
    Claimed,
    /// Another caller holds it.
    Busy,
}

/// The storage contract. Every method speaks [`StoreError`], whose
/// [`code`](StoreError::code) maps to the error codes both front doors report.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`sled`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Appends a request's events in one durable step (see the module docs). A request whose
    /// events are all duplicates succeeds with nothing appended.
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, StoreError>;

    /// Records the last error of a connection's pull sync (cleared by the next saved page).
    async fn record_sync_error(
        &self,
        connection: &ConnectionId,
        message: String,
    ) -> Result<(), StoreError>;

    /// Runs a hub-native ticket update in the store. [`StoreError::NotFound`] when there is no
    /// such ticket; [`StoreError::Refused`] when the change is refused or changes nothing.
    async fn update_ticket(&self, update: TicketUpdate) -> Result<Ticket, StoreError>;

    /// Reserves `key` of `connection` for one caller (a vendor create in flight) for at most
    /// `lease`.
    async fn claim_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Releases a key claimed with [`Storage::claim_idempotency_key`].
    async fn release_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
    ) -> Result<(), StoreError>;

    /// Takes or renews the lease `name` (e.g. `sync/<connection>`) for `holder` for `ttl`:
    /// `true` when `holder` holds it afterwards, `false` when another holder's lease has not
    /// run out. Replicas sharing a backend use it so that one of them runs a job at a time; a
    /// holder that dies stops renewing, and its lease runs out.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives up the lease `name` if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The last durable sequence (0 when the log is empty).
    fn head(&self) -> Sequence;

    /// A receiver of the head, updated after each durable commit that appended events (on any
    /// replica, for a shared backend).
    fn subscribe_head(&self) -> watch::Receiver<Sequence>;

    /// Up to `limit` events after `after`, ascending and gap-free, never past the head; stops
    /// once the events read reach about `max_bytes` (always at least one when there is one).
    async fn read_events(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Like [`Storage::read_events`], but only from memory: `Some` when the backend holds the
    /// whole range in memory (the newest events, what tailing subscribers read), `None` when
    /// it must be read with [`Storage::read_events`]. Never blocks.
    fn read_events_cached(
        &self,
        _after: Sequence,
        _limit: usize,
        _max_bytes: usize,
    ) -> Option<Vec<Event>> {
        None
    }

    /// The event `connection` appended under `dedup_key`, if any.
    async fn event_by_dedup_key(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError>;

    /// A conversation by id, with its messages.
    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError>;

    /// A page of conversations, newest first (the sort key is `started_at`, else
    /// `updated_at`; ties by id, descending).
    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError>;

    /// Conversations stored.
    async fn conversation_count(&self) -> Result<u64, StoreError>;

    /// A ticket by id.
    async fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError>;

    /// A page of tickets, grouped by connection and ordered by ticket id within one.
    async fn list_tickets(&self, query: &TicketListQuery) -> Result<TicketListPage, StoreError>;

    /// A connection's agents, ordered by login.
    async fn list_agents(&self, connection: &ConnectionId) -> Result<Vec<Agent>, StoreError>;

    /// A connection's pull-sync state, if it ever synced or failed to.
    async fn sync_state(&self, connection: &ConnectionId) -> Result<Option<SyncState>, StoreError>;

    /// Up to `limit` quarantined webhooks with ids above `after`, oldest first, only of
    /// `connections` if any are given; with the id to continue after when there are more.
    async fn list_quarantine(
        &self,
        after: u64,
        limit: usize,
        connections: &[ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), StoreError>;

    /// One quarantined webhook.
    async fn get_quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError>;

    /// How many webhooks the quarantine holds, and their bytes.
    async fn quarantine_totals(&self) -> Result<QuarantineTotals, StoreError>;

    /// Erases the personal data of `plan` (names, e-mails, phones, message text, attributes,
    /// raw bodies; exactly what `switchboard_core`'s `erase` module says) from the
    /// projections and from the log's stored payloads, keeping every sequence and the
    /// non-personal structure, and appends a `contact_erased` event on the system connection,
    /// in one durable step. A plan naming an unknown event, conversation or ticket
    /// ([`StoreError::NotFound`]) or an event not of its conversations and tickets
    /// ([`StoreError::InvalidArgument`]) is refused and changes nothing (see the store's
    /// `erase` module). The sled store's files keep old versions until `Store::compact`.
    async fn erase_contact(&self, plan: ErasurePlan) -> Result<ErasureReport, StoreError>;

    /// Why the store refuses writes, if it does (a failed disk, an unreachable database).
    fn failure(&self) -> Option<String>;

    /// Whether the store takes writes (for readiness checks).
    fn is_ready(&self) -> bool;

    /// Stops taking writes and makes everything acknowledged durable, giving up after `limit`;
    /// returns whether it closed in time. Nothing acknowledged is lost either way.
    async fn close_within(&self, limit: Duration) -> Result<bool, StoreError>;
}
