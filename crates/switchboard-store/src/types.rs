//! The requests and answers of [`crate::Store`].

use serde::{Deserialize, Serialize};
use switchboard_core::{
    ConnectionId, Conversation, ConversationStatus, EventPayload, IncomingEvent, Sequence, Ticket,
    TicketStatus, Timestamp,
};

use crate::StoreError;
use crate::quarantine::{QuarantineLimits, QuarantineOp};
use crate::record::{MAX_VALUE_DEPTH, value_depth};

/// How a [`crate::Store`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most append requests the writer commits together in one group commit (at least 1).
    pub max_batch: usize,
    /// Whether to `fdatasync` the store's files after each flush. Only benchmarks of the floor
    /// turn this off: without it an acknowledged append may be lost on power loss.
    pub fsync: bool,
    /// The most bytes sled keeps in its page cache. Reads of a large store (a full replay,
    /// random lookups over millions of conversations) fill it; the process's resident memory
    /// grows up to about this plus the heap.
    pub cache_capacity: u64,
    /// How many of the newest events the store keeps decoded in memory for subscribers
    /// tailing the log (0: none; every read goes to sled).
    pub tail_cache_events: usize,
    /// About how many bytes of events the tail cache holds at most (raw bodies dominate);
    /// past it the oldest are dropped, whatever `tail_cache_events` says.
    pub tail_cache_bytes: usize,
    /// The quarantine's bounds.
    pub quarantine: QuarantineLimits,
    /// How long the writer may hold changed conversations (headers, messages, index entries)
    /// in memory before writing them to the tree, so that a conversation changed by many
    /// groups is written once. The log and dedup keys are durable before any append is
    /// answered whatever this says; the conversations are replayed from the log after a
    /// crash, and a read of conversations waits for them. `Duration::ZERO` writes them with
    /// every group. The default, 20 ms, was chosen by measurement (BENCHMARKS.md, session 14):
    /// since an append waits for no sled flush, the group that writes 50 ms of changed
    /// conversations was what the slowest webhooks waited behind (p99 32-43 ms with every
    /// request a new chat, 19.5 ms on the seed mix, against 21 and 15 ms at 20 ms, for 0-5 %
    /// fewer webhooks/s); `long-chats` measured the same data dir with both. Before the journal
    /// (schema 8 and earlier), 20 ms had rewritten long conversations' headers more often and
    /// 50 ms was kept.
    pub projection_interval: std::time::Duration,
    /// The most changed conversations held in memory before they are written, whatever
    /// [`StoreOptions::projection_interval`] says.
    pub projection_max_conversations: usize,
    /// How often sled's own file is flushed and fdatasynced (schema 9). An append is
    /// acknowledged once its log entry and its journal record (see the store's docs:
    /// Durability) are fdatasynced in the segment files; sled's flush follows at most this
    /// long after, and at close. After a crash, open replays the journal records sled's file
    /// lacks, about this long's worth. The default, 100 ms: 20 ms and 1 s measured the same
    /// (BENCHMARKS.md, session 14).
    pub sled_flush_interval: std::time::Duration,
}

/// The default [`StoreOptions::cache_capacity`]: 48 MiB (sled's own default is 1 GiB), which
/// keeps a server that replayed 1M events under 512 MiB resident. Since schema 8 sled holds
/// pointers where it held messages, and one key per frame of log entries, so this holds what
/// 128 MiB held before: the 1M-conversation queries measured the same with both (BENCHMARKS.md,
/// session 10).
pub const DEFAULT_CACHE_CAPACITY: u64 = 48 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 256,
            fsync: true,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            tail_cache_events: 4096,
            tail_cache_bytes: 64 * 1024 * 1024,
            quarantine: QuarantineLimits::default(),
            projection_interval: std::time::Duration::from_millis(20),
            projection_max_conversations: 4096,
            sled_flush_interval: std::time::Duration::from_millis(100),
        }
    }
}

/// Events from one webhook request (or one sync page) to append together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    /// The connection they arrived through.
    pub connection: ConnectionId,
    /// The connection's vendor.
    pub vendor: String,
    /// The id of the HTTP request or sync page that carried them.
    pub request_id: Option<String>,
    /// When Switchboard received them.
    pub received_at: Timestamp,
    /// The raw body; stored on the first newly appended event of this request only.
    pub raw: Option<String>,
    /// The events, in the order the plugin produced them.
    pub events: Vec<IncomingEvent>,
    /// A sync cursor to save in the same atomic batch as the events.
    pub sync: Option<SyncUpdate>,
    /// A change to the quarantine in the same atomic batch (hold an unmappable webhook, or
    /// release one whose events this request appends).
    pub quarantine: Option<QuarantineOp>,
}

impl AppendRequest {
    /// A request with the given events, received now, without request id, raw body or cursor.
    pub fn new(
        connection: ConnectionId,
        vendor: impl Into<String>,
        events: Vec<IncomingEvent>,
    ) -> Self {
        AppendRequest {
            connection,
            vendor: vendor.into(),
            request_id: None,
            received_at: Timestamp::now(),
            raw: None,
            events,
            sync: None,
            quarantine: None,
        }
    }
}

/// A sync cursor to save with the events of the page that produced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncUpdate {
    /// Where to resume.
    pub cursor: String,
    /// Records pulled by this page; added to the running total.
    pub records: u64,
    /// When the page was pulled.
    pub at: Timestamp,
}

/// Where a connection's pull sync stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Where to resume.
    pub cursor: Option<String>,
    /// When a page was last saved.
    pub last_success: Option<Timestamp>,
    /// The last error, cleared by the next successful page.
    pub last_error: Option<String>,
    /// Records pulled in total.
    pub records_pulled: u64,
}

/// What an append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The sequences of the newly appended events, in request order.
    pub appended: Vec<Sequence>,
    /// Events whose dedup key was already known; they appended nothing.
    pub duplicates: usize,
    /// The id of the quarantine entry a [`QuarantineOp::Hold`] made.
    pub quarantined: Option<u64>,
    /// A [`QuarantineOp::Hold`] did not fit the quarantine's bounds: nothing was held.
    pub quarantine_full: bool,
}

/// Which conversations to list. Empty lists mean "any"; several values are OR-ed; time ranges
/// are `[from, to)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationQuery {
    /// Only these connections.
    pub connections: Vec<ConnectionId>,
    /// Only these vendors.
    pub vendors: Vec<String>,
    /// Only these statuses.
    pub statuses: Vec<ConversationStatus>,
    /// Started at or after (conversations without a known start never match a started range).
    pub started_from: Option<Timestamp>,
    /// Started before.
    pub started_to: Option<Timestamp>,
    /// Last changed at or after.
    pub updated_from: Option<Timestamp>,
    /// Last changed before.
    pub updated_to: Option<Timestamp>,
    /// Filters by person, agent, tag and text: answered by the finder (`switchboard-find`),
    /// not by a store, which refuses a query that sets any of them.
    pub find: FindFilters,
    /// Conversations per page: 0 means 50, and more than 1000 means 1000.
    pub page_size: usize,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// The filters of a [`ConversationQuery`] that need the finder's index. Empty lists mean
/// "any"; several values in one list mean "any of these"; the lists and the text all hold
/// together, and with the query's other filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindFilters {
    /// Visitor e-mails, as given (the finder normalizes them).
    pub emails: Vec<String>,
    /// Visitor phones, as given (the finder normalizes them).
    pub phones: Vec<String>,
    /// Visitor ids (the vendor's).
    pub visitor_ids: Vec<String>,
    /// Agent ids (the vendor's): agents who took part.
    pub agent_ids: Vec<String>,
    /// Tags the conversation has now.
    pub tags: Vec<String>,
    /// Free text over message text and the visitor's name: every word must match.
    pub text: Option<String>,
    /// Contacts: conversations of these people.
    pub contacts: Vec<String>,
}

impl ConversationQuery {
    /// Refuses a query a store cannot answer alone: one with [`FindFilters`] set.
    pub fn check_store_filters(&self) -> Result<(), StoreError> {
        if self.find.is_empty() {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument(
                "filters by e-mail, phone, visitor, agent, tag, contact or text are answered by the finder, not the store".into(),
            ))
        }
    }
}

impl FindFilters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty()
            && self.phones.is_empty()
            && self.visitor_ids.is_empty()
            && self.agent_ids.is_empty()
            && self.tags.is_empty()
            && self.contacts.is_empty()
            && self.text.as_deref().is_none_or(|t| t.trim().is_empty())
    }
}

/// One page of conversations, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationPage {
    /// The conversations.
    pub conversations: Vec<Conversation>,
    /// Pass it as `page_token` (with the same filters) for the next page; `None` on the last.
    pub next_page_token: Option<String>,
}

/// Which tickets to list. Empty lists mean "any"; several values are OR-ed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketListQuery {
    /// Only these connections.
    pub connections: Vec<ConnectionId>,
    /// Only these statuses.
    pub statuses: Vec<TicketStatus>,
    /// Tickets per page: 0 means 50, and more than 1000 means 1000.
    pub page_size: usize,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// One page of tickets, grouped by connection and ordered by ticket id within a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketListPage {
    /// The tickets with their connection.
    pub tickets: Vec<(ConnectionId, Ticket)>,
    /// Pass it as `page_token` (with the same filters) for the next page; `None` on the last.
    pub next_page_token: Option<String>,
}

/// The default page size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page size.
pub const MAX_PAGE_SIZE: usize = 1000;

pub(crate) fn effective_page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

impl AppendRequest {
    /// Refuses what a plugin must never produce (an empty vendor, dedup key or id; vendor JSON
    /// nested deeper than [`MAX_VALUE_DEPTH`]), before anything is written: every backend
    /// checks this first.
    pub fn validate(&self) -> Result<(), StoreError> {
        let request = self;
        if request.vendor.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "the append for connection {} has an empty vendor; set the connection's vendor",
                request.connection
            )));
        }
        for (i, event) in request.events.iter().enumerate() {
            let problem = if event.dedup_key.is_empty() {
                Some("an empty dedup_key")
            } else {
                match &event.payload {
                    EventPayload::Conversation(patch) if patch.external_id.is_empty() => {
                        Some("a conversation patch with an empty external_id")
                    }
                    EventPayload::Ticket(ticket) if ticket.external_id.is_empty() => {
                        Some("a ticket with an empty external_id")
                    }
                    EventPayload::Agent { agent, .. } if agent.login.is_empty() => {
                        Some("an agent with an empty login")
                    }
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                return Err(StoreError::InvalidArgument(format!(
                    "event {i} ({}) from connection {} has {problem}; the {} plugin must set it",
                    event.vendor_event, request.connection, request.vendor
                )));
            }
            let values: Vec<&serde_json::Value> = match &event.payload {
                EventPayload::Vendor { data, .. } => vec![data],
                EventPayload::Conversation(patch) => patch
                    .messages
                    .iter()
                    .filter_map(|m| m.data.as_ref())
                    .collect(),
                _ => Vec::new(),
            };
            if let Some(depth) = values
                .into_iter()
                .map(value_depth)
                .find(|depth| *depth > MAX_VALUE_DEPTH)
            {
                return Err(StoreError::InvalidArgument(format!(
                    "event {i} ({}) from connection {} holds JSON nested {depth} levels deep; the \
                     store keeps at most {MAX_VALUE_DEPTH} levels so that every record reads back",
                    event.vendor_event, request.connection
                )));
            }
        }
        Ok(())
    }
}
