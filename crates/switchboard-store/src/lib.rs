//! The sled store behind Switchboard: an append-only event log with a global gap-free
//! sequence, a dedup index per connection, projections (conversations, tickets, agents, sync
//! state) with secondary indexes, and one writer thread doing group commit.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_core::{ConnectionId, ConversationPatch, EventKind, EventPayload,
//!     IncomingEvent, Sequence, Timestamp};
//! use switchboard_store::{AppendRequest, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let event = IncomingEvent {
//!     dedup_key: "chat_started:PO13".into(),
//!     kind: EventKind::ChatStarted,
//!     vendor_event: "chat_started".into(),
//!     occurred_at: Timestamp::from_secs(1_552_126_412).unwrap(),
//!     payload: EventPayload::Conversation(ConversationPatch::new("PO13")),
//! };
//! let request = AppendRequest::new(ConnectionId::new("livechat")?, "livechat", vec![event]);
//! let receipt = store.append(request.clone()).await?;
//! assert_eq!(receipt.appended, vec![Sequence(1)]);
//! // A redelivery appends nothing and still succeeds.
//! assert_eq!(store.append(request).await?.duplicates, 1);
//! assert_eq!(store.head(), Sequence(1));
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! # The storage contract
//!
//! [`Storage`] (in `contract`) is what the application needs from any backend and what each
//! promises; [`Store`] is the embedded sled backend, `switchboard-store-postgres` the shared
//! one, and `switchboard-store-contract` the one test suite both pass.
//!
//! # Key layout (schema 9)
//!
//! Everything lives in ONE sled tree (the default tree of `<data-dir>`), with one key prefix per
//! family. Numbers in keys are big-endian and fixed width, so byte order is numeric order;
//! descending orders store `u64::MAX - x`. Connection ids never contain `/`, so `<connection>/`
//! separates unambiguously; free-form strings followed by more key bytes (a conversation's id in
//! a message key) are escaped order-preservingly (`00` → `00 FF`, terminated by `00 01`).
//! Values of 400 bytes or more (JSON, message and header records; not log entries, which are
//! compressed in frames) are zstd-compressed when that makes them smaller, at level 1, headers
//! at the faster level -3 (a stored value that starts with zstd's magic is compressed; nothing
//! else starts with it).
//!
//! | key | value |
//! |---|---|
//! | `meta/schema_version` | ASCII decimal, `9` |
//! | `meta/head` | the last sequence, u64 BE |
//! | `meta/open` | empty; present while a process has the store open, removed by a clean close (found at open: the dedup keys past the head are dropped, see [`Store::open_with`]) |
//! | `meta/journal` | where the next journal record will be in the segment files and its number: file u32 LE, offset u64 LE, number u64 LE (schema 9, see [Durability](#durability)) |
//! | `meta/projected` | the last sequence whose conversations (`conv/`, `msg/`, `ix/`, `count/`) are written, u64 BE (see [Conversations after the log](#conversations-after-the-log)) |
//! | `log/<first sequence u64 BE>` | where one append request's entry (its new events and its raw body, binary: see [Log encoding](#log-encoding)) is in the segment files `<data dir>/log/*.seg`: 29 bytes naming its frame, its place in the frame, its length, event count and CRC-32 (schema 7, see `segments`); for consecutive entries of one frame, one key, the first's, naming the frame once and then each entry's length, count and CRC-32 (schema 8, `segments::Grouper`); 25 bytes naming the entry alone (schema 6, still read); in a store from before schema 6, the entry itself, still read |
//! | `dh/<16 bytes>` | the sequence of the event with that dedup key: the bytes are the first 16 of the SHA-256 of the connection's length (u64 LE), the connection and the dedup key (schema 7; `dedup/<connection>/<dedup key>` before, moved by the upgrade) |
//! | `conv/<connection>/<external id>` | the [`Conversation`]'s header: everything but its messages, with its event count: a binary record since schema 7 (postcard behind one marker byte, see `header`); JSON, as schemas 3 to 6 wrote it, is still read |
//! | `msg/<connection>/<escaped external id><message key>` | where one message's last-writer-wins register is in the segment files: 21 bytes naming its file, offset, length and CRC-32 (schema 8, see `segments`); the record there is binary (postcard, behind one marker byte). A store of schema 7 or before kept the record itself here (binary since schema 5; JSON, as schemas 3 and 4 wrote it), still read |
//! | `ix/conn/<connection>/<position>` | the `conv/...` key |
//! | `ix/status/<status>/<position>` | the `conv/...` key |
//! | `count/conv/conn/<c>/` | conversations of the connection, u64 BE, then its vendor's name |
//! | `count/conv/status/<s>/` | conversations in that status, u64 BE |
//! | `ticket/<connection>/<external id>` | the [`Ticket`] and the sequence that set it (JSON) |
//! | `agent/<connection>/<login>` | the [`Agent`] (JSON) |
//! | `sync/<connection>` | the [`SyncState`] (JSON) |
//! | `quarantine/<id u64 BE>`, `meta/quarantine` | held webhooks and their totals (JSON) |
//! | `meta/compact` | empty; present from an erasure until [`Store::compact`] |
//!
//! A *position* orders conversations newest first: the sort key (`started_at` if known, else
//! `updated_at`) as `u64::MAX - millis`, then the id `connection/external id`, escaped and with
//! every byte inverted (ties by id descending). Both index families hold the same positions, so
//! a page token is a position and works whichever family a query scans.
//!
//! What an event costs: one `dh/` key; its request's `log/` entry (shared by the request's
//! events); the header of each conversation it touches, one `msg/` key (and its record in the segment
//! files) per message that is new or changed, two index keys and the counters when a conversation is new or moves, all of
//! them once per projection write however many events and groups touched the conversation
//! since the last one (see below). A conversation of 200 messages is never rewritten whole.
//!
//! # Group commit
//!
//! Two dedicated threads own every write, a two-stage pipeline. [`Store::append`] sends its
//! request over a bounded tokio channel with a oneshot for the answer. The writer
//! (`switchboard-store-writer`) blocks for the first waiting request, then takes up to
//! [`StoreOptions::max_batch`] in all without waiting, and:
//! 1. For each event, in order: a dedup key already stored, or appended earlier in the same
//!    group, is a duplicate and appends nothing. (Whether it is stored is asked of sled only
//!    when an in-memory Bloom filter of the stored keys cannot rule it out: `writer::seen`,
//!    built after open by a thread of its own.) A new event gets the next sequence and a UUID
//!    v7 id, goes to `log/` and `dh/`, and is applied to the projections. Projections touched
//!    in the group live in an in-memory overlay, so later events of the group see earlier ones.
//! 2. The whole group (log, dedup, tickets, agents, sync cursors, `meta/head`, and the
//!    conversations when the group writes them) becomes ONE `sled::Batch`, written with one
//!    atomic `Tree::apply_batch`.
//! 3. It hands the group to the flusher (`switchboard-store-flusher`) and goes back to 1 for
//!    the next group, which therefore sees this one's writes. The CPU work of the next groups
//!    overlaps the disk wait of this one; up to `writer::STAGED_GROUPS` (8) groups wait in the
//!    hand-over channel, applied but not yet durable, besides the ones being flushed.
//!
//! Before applying a group's batch, the writer appends the group's **journal record** to the
//! segment files after its log entries (see [Durability](#durability)).
//!
//! The flusher takes every group waiting for it, in order, and for all of them together:
//! 4. `fdatasync` of the segment files written since its last one (the groups' log entries
//!    and journal records); `Db::flush` and `fdatasync` of sled's file too when the last was
//!    [`StoreOptions::sled_flush_interval`] ago (100 ms by default), or a group erases.
//! 5. Only then: the head watch channel announces the new head and every request gets its own
//!    answer. A request whose events are all duplicates succeeds too.
//!
//! A hub-native ticket update ([`Store::update_ticket`]) is a command of a group like an
//! append: the writer reads the ticket (from the group's overlay or the tree), applies the
//! change ([`switchboard_core::Ticket::apply_change`]) and appends the result as a
//! `ticket_updated` event, so concurrent updates never lose each other's changes.
//! Idempotency claims and job leases live in the store's memory: one process owns a sled store.
//!
//! An erasure ([`Store::erase_contact`]) is a command of a group too: the writer checks the
//! plan against the tree and the group's overlay (a refused plan fails its own command and
//! writes nothing), then rewrites in the group's batch every `log/` entry holding a planned
//! event (payloads erased, the raw body dropped; sequences, ids and dedup keys kept), the
//! planned conversations' headers and every one of their `msg/` keys, and the planned tickets,
//! and appends the `contact_erased` event. The flusher replaces the tail cache's copies of the
//! rewritten entries before it answers. sled keeps the old versions in its files until it
//! reuses their segments (measured: all of them are still there after the erasure), so an
//! erasure is complete on disk only after [`Store::compact`] (offline) rewrites the store into a
//! fresh database; see the `erase` module.
//!
//! Because one thread writes, read-modify-write of projections needs no transaction. Sequences
//! are assigned by that one thread in commit order, so they stay gap-free; groups become
//! durable, and are answered, in the same order. A redelivery answered as a duplicate of an
//! event in a group not yet durable is answered after that group is durable (it is in a later
//! group, flushed after it).
//!
//! # Conversations after the log
//!
//! Conversations are the one projection a group need not write. The writer keeps the
//! conversations changed since `meta/projected` in memory (the same overlay a group uses,
//! carried from group to group) and writes them, with `meta/projected` at the group's head,
//! in the batch of the first group for which one of these holds:
//! - they are [`StoreOptions::projection_interval`] old (20 ms by default; a ticker thread
//!   wakes an idle writer), or [`StoreOptions::projection_max_conversations`] are held;
//! - a reader is waiting for them;
//! - the group erases a contact, or the store is closing.
//!
//! A conversation that a thousand webhooks touch in that time is written once, not once per
//! group. An append is still answered only once its log entry and dedup keys are durable, so
//! nothing acknowledged depends on the conversations held in memory: after a crash, the log
//! after `meta/projected` is replayed into them at open (the merge is the same code), before
//! the writer takes anything else. A group that fails before writing rebuilds them from the
//! log the same way.
//!
//! Reads of conversations ([`Store::get_conversation`], [`Store::list_conversations`],
//! [`Store::conversation_count`]) keep the promise that whatever was acknowledged can be read
//! back: each notes the durable head when it starts, and when the conversations written are
//! behind it, asks the writer for them and waits (blocking; the async [`Storage`] methods off
//! the async workers) until a durable group carries them, about one group commit under load.
//! A store at rest never waits. Tickets, agents and sync states are written with every group,
//! as before.
//!
//! Metrics (the `metrics` facade): `switchboard_store_batch_size` (histogram: events appended
//! per group), `switchboard_store_commit_seconds` (histogram: from the start of a group's
//! preparation until it is durable), `switchboard_events_appended_total` (counter).
//!
//! # Durability
//!
//! An append is acknowledged only after its group is on disk: its log entries and its journal
//! record fdatasynced in the segment files (schema 9). sled's own file follows within
//! [`StoreOptions::sled_flush_interval`]: waiting for sled's flush with every group cost a
//! fifth of the webhooks/s (BENCHMARKS.md, session 14).
//!
//! **The journal** (`writer::journal`). A group's sled batch holds its log pointers, dedup
//! keys, head, tickets, agents, sync states and quarantine entries, each as a whole new value
//! (or a removal); the journal record carries exactly those, numbered, behind a CRC-32. The
//! conversations a batch writes (headers, messages, index entries, counters, `meta/projected`)
//! are not journaled: the log rebuilds them. Every journaled batch also sets `meta/journal`
//! to where the next record will be. At open after an unclean end, sled holds some prefix of
//! its batches (whatever it wrote before the crash, flushed or not); the records past its
//! `meta/journal` are replayed in order, each as one batch, and sled is flushed, before
//! anything else (the head, the dedup checks, the conversations' replay) is recovered. The
//! replay stops at the first record that is not whole, not numbered next, or whose log
//! pointers' bytes are not whole: nothing from there on was acknowledged. Applying a record
//! twice changes nothing (whole values, in order). An erasure's group is a **barrier**: it
//! rewrites conversations with the log entries, which the journal does not carry, so sled is
//! flushed before it is answered and a replay stops at its record. Each run's journal starts
//! in the first segment file it writes (`meta/journal` is set there at open, durably), so a
//! replay never reads an older run's records. `switchboard compact` replays an unclean store's
//! journal before copying it.
//!
//! sled 0.34 on Linux flushes with
//! `sync_file_range`, which persists neither file metadata nor the drive's cache, and writes
//! values too large for a log segment (about 128 KiB) to `blobs/` files that it never syncs.
//! So after `flush()` the writer calls `File::sync_data` on `<data-dir>/db` (a handle kept
//! open) and on every blob file it has not synced yet (then on `blobs/` itself); `<data-dir>` is
//! fsynced once at open. [`StoreOptions::fsync`]` = false` skips the fdatasyncs (benchmarks
//! only).
//!
//! If preparing a group fails before anything is written (a record that does not decode),
//! every request of the group gets [`StoreError::Commit`] and the store stays usable. If a read
//! for it fails on the disk (sled writes while it reads: it consolidates pages), or if
//! `apply_batch`, a flush or an fsync fails, the writer can no longer tell what reached the disk: every request of the group, of
//! any group applied after it and not yet answered, and every later write gets
//! [`StoreError::Failed`] (Unavailable) until the server is restarted.
//! The head never moves for a failed group. [`Store::read_events`] never returns events past the
//! durable head, so a subscriber never sees a sequence that a crash could give to another event;
//! tickets and agents may show a group's changes a moment before its flush completes.
//!
//! # Memory and the tail cache
//!
//! sled's page cache is bounded by [`StoreOptions::cache_capacity`] (default
//! [`DEFAULT_CACHE_CAPACITY`], 48 MiB; sled's own default is 1 GiB). sled counts serialized
//! sizes; its nodes in memory are larger, so the process holds more than this: at 1M events
//! replayed about 480 MiB with 48 MiB, 510 MiB with 64 MiB and 580 MiB with 128 MiB (see
//! BENCHMARKS.md, session 10).
//!
//! The flusher also keeps the newest [`StoreOptions::tail_cache_events`] durable events
//! decoded in memory (built from the requests, off the writer thread, and filled before the
//! head announces them). [`Store::read_events`] serves a range from it when it holds the whole
//! range, so subscribers tailing the log (often many, reading the same events) neither read
//! sled nor decode JSON; older ranges (a replay) are read from sled.
//!
//! # Log encoding
//!
//! A `log/` entry holds the new events of one append request (a webhook, a sync page, a ticket
//! command), under the key of the first one's sequence; the others follow it without a gap, so
//! the entry holding sequence N is the last key at or before `log/N`. The entry is a byte `04`,
//! the number of events (u32 LE, kept outside the compressed part so that a damaged entry still
//! says which sequences it holds), then the postcard encoding of the request's fields (connection,
//! vendor, received_at, request id, the raw body as the text that arrived) and each event's
//! head and payload (the payload as a JSON document of its own: vendor JSON is never nested
//! inside another JSON document). The caller of [`Store::append`] encodes the entry before it
//! reaches the writer (on its own core); the writer re-encodes only when some of the request's
//! events turn out to be duplicates. The entries of a group are compressed together, as one
//! zstd frame in the segment file (schema 7, see `segments`), so the text a payload repeats
//! from the raw body, and what one webhook repeats of the others, costs little. Entries of
//! schemas 3 to 6 were compressed one by one (after the count) and are still read.
//!
//! Schema-2 entries (one flat JSON object per event) are still read: they start with `{`.
//! An entry that does not decode is served as stand-in events that keep its sequences (kind
//! `vendor_event`, `vendor_event` [`UNREADABLE_EVENT`]); one event whose payload does not
//! decode keeps its head.
//!
//! # Listing and indexes
//!
//! [`Store::list_conversations`] scans either the connection families (the connections asked
//! for; for vendors, the connections of those vendors, named beside their counters; with neither,
//! every connection) or the status families of the statuses asked for, whichever holds fewer
//! conversations by the counters. Several families are merged in position order. The scan reads
//! positions in order and stops after `page_size + 1` matches.
//!
//! - **Indexed**: connections and vendors, or statuses (whichever is more selective), and the
//!   started range, which bounds the scan of any family (a conversation with a known start has
//!   `started_at` as its sort key).
//! - **Post-filters** on the conversations read: the filters of the families not scanned, and
//!   the updated range (`updated_from`/`updated_to`), which is not indexed.
//!
//! Page tokens are opaque: base64url of a kind byte, a hash of the query's filters (FNV-1a of
//! their canonical form) and the last position returned. A token that does not decode is
//! [`StoreError::BadPageToken`]; one used with other filters is
//! [`StoreError::PageTokenMismatch`] (both InvalidArgument). Page sizes: 0 means
//! [`DEFAULT_PAGE_SIZE`], larger than [`MAX_PAGE_SIZE`] means that.
//!
//! Tickets are listed in key order (grouped by connection, by ticket id within one), one
//! range scan per listed connection; the status filter is a post-filter. A ticket is
//! last-writer-wins by (`updated_at`, then the event's sequence). Agents are keyed by
//! (connection, login); a deletion removes the key.
//!
//! # Schema
//!
//! `meta/schema_version` is `9`. A store of schema 2 to 8 is upgraded in place by
//! [`Store::open`] (see `migrate`: from 2, conversations split into header and messages, the
//! dropped index families removed, connection counters named; from 3, only the version moves
//! and `meta/projected` is written at the head; from 4, only the version moves: its JSON
//! messages are still read, and each is rewritten as a binary record when it next changes;
//! from 5, only the version moves: its log entries stay inside sled and are read there, new
//! ones go to segment files, and `switchboard compact` moves the old ones out; from 6, the dedup
//! keys move to their hashed form in atomic batches, and the entries compressed one by one and
//! the JSON headers stay and are read; from 7, only the version moves: its messages stay inside
//! sled and are read there, each moving to the segment files when it next changes, and
//! `switchboard compact` moves them all; from 8, only the version moves: its files are read
//! through their pointers as before, and its journal starts with the first group of the
//! upgraded run), with log lines; an interrupted upgrade resumes at the next open, and schema-2 log entries
//! stay as they are. A build of schema 3 refuses a store of schema 4 (it would not replay the
//! conversations held back after the log), a build of schema 4 one of schema 5 (it would
//! not read its messages), a build of schema 5 one of schema 6 (its log is in files it
//! does not know), a build of schema 6 one of schema 7 (it would find no dedup key), and a build of schema 7
//! one of schema 8 (it would not read its messages), and a build of schema 8 one of schema 9
//! (sled's file may lag the journal, which it would not replay).
//! Any other version is refused
//! ([`StoreError::SchemaMismatch`], FailedPrecondition), and so is a non-empty tree without one
//! ([`StoreError::NotAStore`]). A non-empty `db` file from which sled reads nothing is refused
//! too: sled would silently start afresh over it. A new store writes `.switchboard-creating`
//! (fsynced) before sled creates anything and removes it once the schema key is on disk; a
//! marker found at open means a creation crashed before anything could be acknowledged, so
//! sled's files are removed and creation starts again. Opening recovers the head from the last
//! `log/` entry and checks it against `meta/head` (when a write failed part-way, sled may keep
//! part of its batch: the smaller of the two wins and what the failed, never acknowledged group
//! left past it is dropped, dedup keys included), then replays the log after
//! `meta/projected` into the conversations (none after a clean close). sled panics on some corrupt files;
//! [`Store::open`] turns those panics into [`StoreError::Open`].
//!
//! **Architecture Invariant:** only the writer thread writes to the tree (the schema key at
//! creation and `meta/projected` of an upgraded store aside, both before it starts); readers
//! never see half of a group.

mod contract;
mod conversations;
pub mod erase;
mod error;
mod header;
mod keys;
mod migrate;
pub mod paging;
mod projection;
mod quarantine;
mod query;
mod record;
mod segments;
mod tail;
mod types;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, Sequence, Ticket, TicketId,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use crate::contract::{Claim, ErasurePlan, ErasureReport, Storage, TicketUpdate};
pub use crate::erase::CompactReport;
pub use crate::error::StoreError;
use crate::projection::Projection;
pub use crate::quarantine::{
    NewQuarantined, QuarantineLimits, QuarantineOp, QuarantineTotals, Quarantined,
};
pub use crate::record::{MAX_VALUE_DEPTH, UNREADABLE_EVENT};
use crate::record::{decode, load};
use crate::tail::TailCache;
pub use crate::types::{
    AppendReceipt, AppendRequest, ConversationPage, ConversationQuery, DEFAULT_CACHE_CAPACITY,
    DEFAULT_PAGE_SIZE, FindFilters, MAX_PAGE_SIZE, StoreOptions, SyncState, SyncUpdate,
    TicketListPage, TicketListQuery,
};
use crate::writer::{Command, DurableFiles, Failure, Flusher, StoredTicket, Writer};

/// The store: cheap to clone (an `Arc` inside). The writer thread stops after [`Store::close`]
/// or when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    /// The log entries' segment files.
    log: Arc<segments::LogFiles>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    head: Arc<watch::Sender<Sequence>>,
    stopped: watch::Receiver<bool>,
    writer: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    tail: Arc<TailCache>,
    failed: Failure,
    /// How far the conversations in the tree have caught up with the log.
    projection: Arc<Projection>,
    /// Idempotency keys claimed, with when each lease runs out.
    claims: Mutex<HashMap<(ConnectionId, String), Instant>>,
    /// Job leases: name -> (holder, when it runs out).
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what it has and stop.
        lock(&self.commands).take();
        if self.failed.get().is_some() && !*self.stopped.borrow() {
            // A failed disk can block sled for ever: in the writer (never joined then) and in
            // sled's flush when its last handle drops (so one handle is leaked on purpose).
            // Everything acknowledged was durable before it was acknowledged.
            warn!("the store failed; not waiting for its writer or its final flush");
            std::mem::forget(self.db.clone());
            return;
        }
        if self.failed.get().is_some() {
            std::mem::forget(self.db.clone());
        }
        if let Some(writer) = lock(&self.writer).take() {
            match writer.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "the store writer stopped with an error"),
                Err(_) => warn!("the store writer panicked"),
            }
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("head", &self.head())
            .field("closed", &lock(&self.inner.commands).is_none())
            .finish()
    }
}

fn open_error(dir: &Path, reason: impl ToString) -> StoreError {
    StoreError::Open {
        path: dir.to_owned(),
        reason: reason.to_string(),
    }
}

/// The store's files are damaged: named, with the likely cause, and never blamed on
/// permissions.
fn corrupt_files(dir: &Path, file: &str, reason: impl ToString) -> StoreError {
    StoreError::CorruptFiles {
        path: dir.to_owned(),
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

/// Refuses to create a store in a directory that holds other things and no store (sled's
/// `conf` or `db`): the store's files would be mixed with someone else's. A directory with
/// only hidden entries or `lost+found` (a fresh file system) counts as empty.
fn refuse_foreign_directory(dir: &Path) -> Result<(), StoreError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing (created next) or unreadable (create/open says why)
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "conf" || name == "db" {
            return Ok(());
        }
        if !name.starts_with('.') && name != "lost+found" {
            found.push(name);
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let shown: Vec<String> = found.iter().take(3).map(|n| format!("`{n}`")).collect();
    let more = found.len().saturating_sub(shown.len());
    Err(StoreError::ForeignDirectory {
        path: dir.to_owned(),
        found: if more > 0 {
            format!("it has {} and {more} more", shown.join(", "))
        } else {
            format!("it has {}", shown.join(", "))
        },
    })
}

/// What a failed `sled::Config::open` means for the operator.
fn sled_open_error(dir: &Path, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(e) if is_lock_busy(&e) => StoreError::InUse {
            path: dir.to_owned(),
        },
        sled::Error::Io(e) => open_error(dir, e),
        sled::Error::Unsupported(reason) => corrupt_files(dir, "conf", reason),
        other => corrupt_files(dir, "db", other),
    }
}

/// Runs `f` with panics of this thread kept quiet (sled panics on some corrupt files; the
/// caller turns the panic into an error, so the default hook's message and backtrace would
/// only confuse). Panics of other threads are reported as before.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let me = std::thread::current().id();
    let others = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            others(info);
        }
    }));
    let result = catch_unwind(AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    result
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "sled panicked".to_owned())
}

impl Store {
    /// Opens or creates the store in `dir` with [`StoreOptions::default`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens or creates the store in `dir`: checks the schema version (refusing an unknown
    /// one), recovers the head from the log and starts the writer thread. An unreadable or
    /// corrupt directory is an error, never a panic.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        refuse_foreign_directory(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| open_error(dir, e))?;
        // A compaction interrupted in its swap is finished first.
        erase::finish_swap(dir)?;
        let creating = begin_creation(dir)?;
        // sled starts afresh, silently, over a `db` file it cannot read; a new store never
        // leaves its `db` file without the schema key (the creation marker covers the moment
        // before it is written), so such a file is corruption.
        let had_data = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(options.cache_capacity);
        // sled 0.34 panics on some kinds of corruption instead of returning an error.
        let open = || {
            quietly(|| config.open()).map_err(|panic| {
                corrupt_files(
                    dir,
                    "db",
                    format!("sled failed reading it: {}", panic_message(panic.as_ref())),
                )
            })
        };
        // A store closed a moment ago in this process may still hold sled's file lock while
        // sled's own background threads wind down: wait for it briefly. Another process
        // holding the store keeps the lock, and that is still refused after the wait.
        let lock_wait_until = Instant::now() + LOCK_WAIT;
        let db = loop {
            match open()? {
                Err(sled::Error::Io(e)) if is_lock_busy(&e) && Instant::now() < lock_wait_until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.map_err(|e| sled_open_error(dir, e))?,
            }
        };
        check_schema(&db, dir, had_data)?;
        if creating {
            finish_creation(dir)?;
        }
        let files = DurableFiles::open(dir, options.fsync)?;
        let log = segments::LogFiles::open(dir)?;
        let log = Arc::new(if options.fsync { log.zero_ahead() } else { log });
        // Whether the last run ended without a clean close (`meta/open` still there).
        let unclean = db.contains_key(keys::OPEN_KEY)?;
        if unclean {
            replay_journal(&db, &log)?;
        }
        let (head, cut_short) = recover_head(&db, &log, unclean)?;
        // This run's journal starts in the file it writes first (durable with the mark).
        let journal = writer::journal::Position::read(&db)?.map_or(0, |at| at.number);
        db.insert(
            writer::journal::JOURNAL_KEY,
            &writer::journal::Position {
                segment: log.next_segment(),
                offset: 0,
                number: journal,
            }
            .encode()[..],
        )?;
        mark_open(&db, head, unclean || cut_short)?;
        let projected = recover_projected(&db, head)?;
        let projection = Arc::new(Projection::new(projected));

        let (head_tx, _) = watch::channel(Sequence(head));
        let head_tx = Arc::new(head_tx);
        let (stopped_tx, stopped) = watch::channel(false);
        let (commands_tx, commands_rx) =
            mpsc::channel(options.max_batch.max(1).saturating_mul(4).max(1024));
        let failed = Failure::default();
        let tail = Arc::new(TailCache::with_max_bytes(
            options.tail_cache_events,
            options.tail_cache_bytes,
        ));
        let flusher = Flusher {
            tail: tail.clone(),
            db: db.clone(),
            log: log.clone(),
            files,
            head,
            head_tx: head_tx.clone(),
            failed: failed.clone(),
            projection: projection.clone(),
            sled_interval: options.sled_flush_interval,
            sled_flushed: Instant::now(),
            sled_dirty: false,
        };
        let interval = options.projection_interval;
        let mut writer = Writer::new(
            db.clone(),
            log.clone(),
            options,
            head,
            projected,
            failed.clone(),
            projection.clone(),
        )?;
        writer.journal = journal;
        let thread = std::thread::Builder::new()
            .name("switchboard-store-writer".into())
            .spawn(move || writer::run(writer, flusher, commands_rx, stopped_tx))
            .map_err(|e| StoreError::io("starting the store writer thread", e))?;
        if !interval.is_zero() {
            spawn_projection_ticker(commands_tx.downgrade(), projection.clone(), interval)?;
        }
        info!(dir = %dir.display(), head, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                db,
                log,
                commands: Mutex::new(Some(commands_tx)),
                head: head_tx,
                stopped,
                writer: Mutex::new(Some(thread)),
                tail,
                failed,
                projection,
                claims: Mutex::new(HashMap::new()),
                leases: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a request's events. Resolves only after the group commit holding it is applied
    /// in one atomic sled batch and durable (its log entry and journal record fdatasynced: see
    /// [Durability](crate#durability)); a request whose events are all duplicates succeeds
    /// with nothing appended.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, StoreError> {
        request.validate()?;
        let prepared = writer::PreparedRequest::for_request(&request)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append {
            request,
            prepared,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records the last error of a connection's pull sync (cleared by the next saved page).
    pub async fn record_sync_error(
        &self,
        connection: &ConnectionId,
        message: impl Into<String>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::SyncError {
            connection: connection.clone(),
            message: message.into(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a hub-native ticket update in the writer thread (see [`Storage::update_ticket`]).
    pub async fn update_ticket(&self, update: TicketUpdate) -> Result<Ticket, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::UpdateTicket {
            update: Box::new(update),
            request: None,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Erases a contact's personal data (see [`Storage::erase_contact`] and the `erase`
    /// module) in the writer thread, in one group: the plan is checked against the log and
    /// the projections (a refused plan changes nothing), then the log entries holding its
    /// events, its conversations (every message) and tickets are rewritten and the
    /// `contact_erased` event appended. Old versions stay in sled's files until
    /// [`Store::compact`]; [`Store::needs_compaction`] says so meanwhile.
    pub async fn erase_contact(&self, plan: ErasurePlan) -> Result<ErasureReport, StoreError> {
        let plan = plan.normalized()?;
        let record = plan.record();
        record.validate()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Erase {
            plan: Box::new(plan),
            record: Box::new(record),
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Whether an erasure happened since the store was last compacted: its files may still
    /// hold the erased values (no read returns them) until [`Store::compact`] runs.
    pub fn needs_compaction(&self) -> Result<bool, StoreError> {
        Ok(self.inner.db.contains_key(erase::COMPACT_KEY)?)
    }

    /// Rewrites the (closed) store in `dir` into a fresh sled database holding each key's
    /// current value once, and swaps it in, so that no old version of a rewritten value (an
    /// erased one above all) remains in its files. Run it with the server stopped, after an
    /// erasure: a store that is open elsewhere is [`StoreError::InUse`]. Crash-safe: an
    /// interrupted compaction leaves the store as it was, or is finished by the next open.
    pub fn compact(dir: &Path) -> Result<CompactReport, StoreError> {
        erase::compact(dir)
    }

    /// Reserves an idempotency key (see [`Storage::claim_idempotency_key`]). One process owns
    /// a sled store, so the claims live in its memory: a restart frees them all, as it ends
    /// every create that held one.
    pub fn claim_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
        lease: Duration,
    ) -> Claim {
        let now = Instant::now();
        let mut claims = lock(&self.inner.claims);
        claims.retain(|_, until| *until > now);
        match claims.entry((connection.clone(), key.to_owned())) {
            std::collections::hash_map::Entry::Occupied(_) => Claim::Busy,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(now + lease);
                Claim::Claimed
            }
        }
    }

    /// Releases a claimed idempotency key.
    pub fn release_idempotency_key(&self, connection: &ConnectionId, key: &str) {
        lock(&self.inner.claims).remove(&(connection.clone(), key.to_owned()));
    }

    /// Takes or renews a job lease (see [`Storage::acquire_lease`]). One process owns a sled
    /// store, so the leases live in its memory.
    pub fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut leases = lock(&self.inner.leases);
        match leases.get(name) {
            Some((current, until)) if current != holder && *until > now => false,
            _ => {
                leases.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                true
            }
        }
    }

    /// Gives up a job lease if `holder` holds it.
    pub fn release_lease(&self, name: &str, holder: &str) {
        let mut leases = lock(&self.inner.leases);
        if leases
            .get(name)
            .is_some_and(|(current, _)| current == holder)
        {
            leases.remove(name);
        }
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        let sender = lock(&self.inner.commands)
            .clone()
            .ok_or(StoreError::Closed)?;
        sender
            .send(command)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// The last durably appended sequence (0 when empty).
    pub fn head(&self) -> Sequence {
        *self.inner.head.borrow()
    }

    /// A receiver of the head, updated after each durable commit that appended events.
    pub fn subscribe_head(&self) -> watch::Receiver<Sequence> {
        self.inner.head.subscribe()
    }

    /// Up to `limit` events with sequences `after + 1`, `after + 2`..., ascending, never past
    /// the durable [`Store::head`].
    pub fn read_events(&self, after: Sequence, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events_bounded(after, limit, usize::MAX)
    }

    /// Like [`Store::read_events`], but stops once the events read reach about `max_bytes`
    /// (always at least one event when there is one): what bounds a reader's memory when
    /// events carry large raw bodies.
    pub fn read_events_bounded(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let head = self.head().0;
        if after.0 >= head || limit == 0 {
            return Ok(Vec::new());
        }
        if let Some(events) = self
            .inner
            .tail
            .read_bounded(after, limit, max_bytes, Sequence(head))
        {
            return Ok(events);
        }
        let wanted = after.0 + 1;
        // Only the payloads of the events asked for are decoded: an entry may hold a thousand.
        let last = head.min(after.0.saturating_add(limit as u64));
        // The entry holding `wanted` starts at it or before it (an entry holds a request's
        // events under its first sequence).
        let start = self.entry_start(wanted)?;
        let mut events = Vec::with_capacity(limit.min((head - after.0) as usize).min(1024));
        let mut read = 0usize;
        'keys: for group in self
            .inner
            .db
            .range(keys::log_key(start)..=keys::log_key(head))
        {
            let (group_key, group_value) = group?;
            for (key, value) in segments::expand(&group_key, &group_value)? {
                if read >= max_bytes || events.len() >= limit {
                    break 'keys;
                }
                // The entries of a group before the one holding `wanted` are not read.
                if record::entry_sequences(&key, &value).is_some_and(|held| held.end <= wanted) {
                    continue;
                }
                let decoded = match self.inner.log.entry(&key, &value).and_then(|value| {
                    // Decoded events take about three times their entry's bytes (an entry
                    // compressed on its own, from before schema 7, counts as it is stored).
                    read = read.saturating_add(value.len().saturating_mul(3));
                    record::decode_entry_range(&key, &value, wanted..=last)
                }) {
                    Ok(decoded) => decoded,
                    // One unreadable entry must not hide the others: it is reported and
                    // served as stand-ins that keep its sequences, so readers see no gap.
                    Err(error) => {
                        let stand_ins = record::stand_ins(&key, &value, &error);
                        if stand_ins.is_empty() {
                            return Err(error);
                        }
                        unreadable_record(&key, &error);
                        stand_ins
                    }
                };
                for event in decoded {
                    if event.sequence.0 < wanted || event.sequence.0 > head {
                        continue;
                    }
                    if events.len() >= limit {
                        break;
                    }
                    events.push(event);
                }
            }
        }
        Ok(events)
    }

    /// The first sequence of the `log/` key whose entries hold `sequence` (at most
    /// `sequence`).
    fn entry_start(&self, sequence: u64) -> Result<u64, StoreError> {
        match self
            .inner
            .db
            .range(keys::log_key(0)..=keys::log_key(sequence))
            .next_back()
        {
            Some(entry) => record::sequence_of(&entry?.0),
            None => Ok(sequence),
        }
    }

    /// The event a connection appended under `dedup_key`, if any (e.g. to answer a retried
    /// create with what the first one made).
    pub fn event_by_dedup_key(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        let Some(sequence) = self.inner.db.get(keys::dedup_key(connection, dedup_key))? else {
            return Ok(None);
        };
        let Some(sequence) = keys::read_be(&sequence) else {
            return Ok(None);
        };
        if sequence > self.head().0 {
            return Ok(None);
        }
        let group_key = keys::log_key(self.entry_start(sequence)?);
        let Some(group_value) = self.inner.db.get(&group_key)? else {
            return Ok(None);
        };
        for (key, value) in segments::expand(&group_key, &group_value)? {
            if record::entry_sequences(&key, &value).is_some_and(|held| !held.contains(&sequence)) {
                continue;
            }
            let value = self.inner.log.entry(&key, &value)?;
            return Ok(
                record::decode_entry_range(&key, &value, sequence..=sequence)?
                    .into_iter()
                    .find(|event| event.sequence.0 == sequence),
            );
        }
        Ok(None)
    }

    /// Like [`Store::read_events`], but only from the in-memory tail cache: `Some` when the
    /// cache holds the whole range `after + 1 ..= min(after + limit, head)` (what a subscriber
    /// tailing the log reads), `None` when the range must be read from sled (then call
    /// [`Store::read_events`] on a blocking thread). Never touches the disk, so it is fine on
    /// an async worker. `Some(empty)` when `after` is at or past the head.
    pub fn read_events_cached(&self, after: Sequence, limit: usize) -> Option<Vec<Event>> {
        self.read_events_cached_bounded(after, limit, usize::MAX)
    }

    /// Like [`Store::read_events_cached`], but stops once the events taken reach about
    /// `max_bytes` (always at least one).
    pub fn read_events_cached_bounded(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        let head = self.head();
        if after >= head || limit == 0 {
            return Some(Vec::new());
        }
        self.inner.tail.read_bounded(after, limit, max_bytes, head)
    }

    /// Up to `limit` quarantined webhooks with ids above `after`, oldest first, only of
    /// `connections` if any are given; with the id to continue after when there are more.
    /// An entry that does not decode is reported and skipped.
    pub fn list_quarantine(
        &self,
        after: u64,
        limit: usize,
        connections: &[ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), StoreError> {
        let start = quarantine::key(after.saturating_add(1));
        let end = quarantine::key(u64::MAX);
        let mut page = Vec::new();
        for entry in self.inner.db.range(start..=end) {
            let (key, value) = entry?;
            let entry: Quarantined = match decode(&key, &value) {
                Ok(entry) => entry,
                Err(error) => {
                    unreadable_record(&key, &error);
                    continue;
                }
            };
            if !connections.is_empty() && !connections.contains(&entry.connection) {
                continue;
            }
            if page.len() == limit {
                let last = page.last().map_or(after, |e: &Quarantined| e.id);
                return Ok((page, Some(last)));
            }
            page.push(entry);
        }
        Ok((page, None))
    }

    /// One quarantined webhook.
    pub fn get_quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        load(&self.inner.db, &quarantine::key(id))
    }

    /// How many webhooks the quarantine holds, and their bytes.
    pub fn quarantine_totals(&self) -> Result<QuarantineTotals, StoreError> {
        Ok(load(&self.inner.db, quarantine::META_KEY)?.unwrap_or_default())
    }

    /// A conversation by id, with every append acknowledged before the call (this may wait
    /// for the writer to write the conversations it holds, about one group commit).
    pub fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.wait_for_conversations()?;
        conversations::load_full(&self.inner.db, &self.inner.log, id)
    }

    /// A page of conversations, newest first; see the crate docs for which filters are indexed.
    /// Like [`Store::get_conversation`], it holds every append acknowledged before the call.
    pub fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.wait_for_conversations()?;
        query::list_conversations(&self.inner.db, &self.inner.log, query)
    }

    /// Whether the conversations in the tree hold every durable event (reads need not wait).
    fn conversations_caught_up(&self) -> bool {
        self.inner.projection.durable() >= self.head().0
    }

    /// Waits until the conversations in the tree hold every event durable now: asks the
    /// writer for them and waits for the group that writes them to be durable. Fails if
    /// the store failed or stopped without writing them.
    fn wait_for_conversations(&self) -> Result<(), StoreError> {
        let target = self.head().0;
        let projection = &self.inner.projection;
        if projection.durable() >= target {
            return Ok(());
        }
        projection.want(target);
        if let Some(commands) = lock(&self.inner.commands).as_ref() {
            // A full channel means the writer is busy: it reads `want` with its next group.
            let _ = commands.try_send(Command::Project);
        }
        loop {
            if projection.wait(target, Duration::from_millis(50)) {
                return Ok(());
            }
            if let Some(reason) = self.failure() {
                return Err(StoreError::Failed(reason));
            }
            if *self.inner.stopped.borrow() && projection.durable() < target {
                return Err(StoreError::WriterGone);
            }
        }
    }

    /// A ticket by id.
    pub fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        let key = keys::ticket_key(&id.connection, &id.external_id);
        Ok(load::<StoredTicket>(&self.inner.db, &key)?.map(|stored| stored.ticket))
    }

    /// A page of tickets, grouped by connection and ordered by ticket id.
    pub fn list_tickets(&self, query: &TicketListQuery) -> Result<TicketListPage, StoreError> {
        query::list_tickets(&self.inner.db, query)
    }

    /// A connection's agents, ordered by login.
    pub fn list_agents(&self, connection: &ConnectionId) -> Result<Vec<Agent>, StoreError> {
        self.inner
            .db
            .scan_prefix(keys::agent_prefix(connection))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    /// A connection's pull-sync state, if it ever synced or failed to.
    pub fn sync_state(&self, connection: &ConnectionId) -> Result<Option<SyncState>, StoreError> {
        load(&self.inner.db, &keys::sync_key(connection))
    }

    /// Events in the log (the log is gap-free from 1, so this is the head).
    pub fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self.head().0)
    }

    /// Conversations in the store (a counter, cheap), counting every append acknowledged
    /// before the call.
    pub fn conversation_count(&self) -> Result<u64, StoreError> {
        self.wait_for_conversations()?;
        query::conversation_count(&self.inner.db)
    }

    /// Whether the writer thread is running and accepting appends (for readiness checks).
    pub fn is_writer_running(&self) -> bool {
        lock(&self.inner.commands).is_some() && !*self.inner.stopped.borrow()
    }

    /// Why the store refuses every write, if it does: a flush or fsync failed (a full or
    /// failing disk), so sled may hold writes that are not on disk. Only a restart recovers.
    pub fn failure(&self) -> Option<String> {
        self.inner.failed.get()
    }

    /// Whether the store can take writes: its writer runs and no write has failed (for
    /// readiness checks).
    pub fn is_ready(&self) -> bool {
        self.is_writer_running() && self.failure().is_none()
    }

    /// Like [`Store::close`], but gives up after `limit`: a store whose disk failed may block
    /// for ever in sled's final flush. Every acknowledged append was made durable before it
    /// was acknowledged, so giving up loses nothing acknowledged. Returns whether it closed.
    pub async fn close_within(&self, limit: Duration) -> Result<bool, StoreError> {
        lock(&self.inner.commands).take();
        let mut stopped = self.inner.stopped.clone();
        if tokio::time::timeout(limit, stopped.wait_for(|stopped| *stopped))
            .await
            .is_err()
        {
            warn!(
                limit_ms = limit.as_millis() as u64,
                failure = self.failure().as_deref().unwrap_or("none"),
                "the store did not close in time; leaving it (every acknowledged write is on disk)"
            );
            return Ok(false);
        }
        self.close().await.map(|()| true)
    }

    /// Stops accepting appends, lets the writer answer everything it was sent, flushes and
    /// joins the thread. Later appends get [`StoreError::Closed`]. Calling it again is a no-op.
    pub async fn close(&self) -> Result<(), StoreError> {
        lock(&self.inner.commands).take();
        let mut stopped = self.inner.stopped.clone();
        // An error means the writer is gone already, which is what we wait for.
        let _ = stopped.wait_for(|stopped| *stopped).await;
        let writer = lock(&self.inner.writer).take();
        let Some(writer) = writer else {
            return Ok(());
        };
        writer.join().map_err(|_| StoreError::WriterGone)??;
        // A clean close: everything the writer was sent is durable. After a failed write the
        // mark stays, so that the next open checks what that write left.
        if self.failure().is_none() {
            self.inner.db.remove(keys::OPEN_KEY)?;
            self.inner.db.flush()?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Storage for Store {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, StoreError> {
        Store::append(self, request).await
    }

    async fn record_sync_error(
        &self,
        connection: &ConnectionId,
        message: String,
    ) -> Result<(), StoreError> {
        Store::record_sync_error(self, connection, message).await
    }

    async fn update_ticket(&self, update: TicketUpdate) -> Result<Ticket, StoreError> {
        Store::update_ticket(self, update).await
    }

    async fn erase_contact(&self, plan: ErasurePlan) -> Result<ErasureReport, StoreError> {
        Store::erase_contact(self, plan).await
    }

    async fn claim_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        Ok(Store::claim_idempotency_key(self, connection, key, lease))
    }

    async fn release_idempotency_key(
        &self,
        connection: &ConnectionId,
        key: &str,
    ) -> Result<(), StoreError> {
        Store::release_idempotency_key(self, connection, key);
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(Store::acquire_lease(self, name, holder, ttl))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        Store::release_lease(self, name, holder);
        Ok(())
    }

    fn head(&self) -> Sequence {
        Store::head(self)
    }

    fn subscribe_head(&self) -> watch::Receiver<Sequence> {
        Store::subscribe_head(self)
    }

    async fn read_events(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if let Some(events) = Store::read_events_cached_bounded(self, after, limit, max_bytes) {
            return Ok(events);
        }
        let store = self.clone();
        blocking(move || store.read_events_bounded(after, limit, max_bytes)).await
    }

    fn read_events_cached(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        Store::read_events_cached_bounded(self, after, limit, max_bytes)
    }

    async fn event_by_dedup_key(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        Store::event_by_dedup_key(self, connection, dedup_key)
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        if self.conversations_caught_up() {
            return Store::get_conversation(self, id);
        }
        // Waiting for the writer blocks: off the async workers.
        let (store, id) = (self.clone(), id.clone());
        blocking(move || store.get_conversation(&id)).await
    }

    async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        // A page scans index ranges and may read from disk: off the async workers.
        let (store, query) = (self.clone(), query.clone());
        blocking(move || store.list_conversations(&query)).await
    }

    async fn conversation_count(&self) -> Result<u64, StoreError> {
        if self.conversations_caught_up() {
            return Store::conversation_count(self);
        }
        let store = self.clone();
        blocking(move || store.conversation_count()).await
    }

    async fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        Store::get_ticket(self, id)
    }

    async fn list_tickets(&self, query: &TicketListQuery) -> Result<TicketListPage, StoreError> {
        let (store, query) = (self.clone(), query.clone());
        blocking(move || store.list_tickets(&query)).await
    }

    async fn list_agents(&self, connection: &ConnectionId) -> Result<Vec<Agent>, StoreError> {
        Store::list_agents(self, connection)
    }

    async fn sync_state(&self, connection: &ConnectionId) -> Result<Option<SyncState>, StoreError> {
        Store::sync_state(self, connection)
    }

    async fn list_quarantine(
        &self,
        after: u64,
        limit: usize,
        connections: &[ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), StoreError> {
        Store::list_quarantine(self, after, limit, connections)
    }

    async fn get_quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        Store::get_quarantined(self, id)
    }

    async fn quarantine_totals(&self) -> Result<QuarantineTotals, StoreError> {
        Store::quarantine_totals(self)
    }

    fn failure(&self) -> Option<String> {
        Store::failure(self)
    }

    fn is_ready(&self) -> bool {
        Store::is_ready(self)
    }

    async fn close_within(&self, limit: Duration) -> Result<bool, StoreError> {
        Store::close_within(self, limit).await
    }
}

/// Runs a read that may touch the disk on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| StoreError::Commit(format!("a store read stopped: {e}")))?
}

/// Reports a stored record that cannot be decoded (and is skipped or stood in for).
pub(crate) fn unreadable_record(key: &[u8], error: &StoreError) {
    metrics::counter!("switchboard_store_unreadable_records_total").increment(1);
    tracing::error!(
        key = %String::from_utf8_lossy(key),
        error = %error,
        "a stored record cannot be decoded; serving the others"
    );
}

/// How long [`Store::open`] waits for sled's file lock held by a store just closed in this
/// process.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Whether sled could not take its file lock because another handle still holds it.
fn is_lock_busy(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || error.to_string().contains("could not acquire lock")
}

/// Present while a new store is being created, until its schema key is on disk.
const CREATING_MARKER: &str = ".switchboard-creating";

/// The files sled keeps in a store's directory, and the log's segment files
/// ([`segments::LOG_DIR`]).
fn is_sled_file(name: &str) -> bool {
    name == "conf"
        || name == "db"
        || name == "blobs"
        || name.starts_with("snap.")
        || name == segments::LOG_DIR
}

/// Before a new store's first byte: writes the creation marker (durably). If a marker is
/// already there, a creation crashed before its schema key was on disk, so nothing was ever
/// acknowledged from this store: sled's half-made files are removed and creation starts
/// again. Returns whether this open creates the store.
fn begin_creation(dir: &Path) -> Result<bool, StoreError> {
    let marker = dir.join(CREATING_MARKER);
    let crashed = marker.exists();
    if crashed {
        warn!(dir = %dir.display(), "a store creation was interrupted here; starting it again");
        let entries = std::fs::read_dir(dir).map_err(|e| open_error(dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sled_file(&name) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
        }
    } else if dir.join("conf").exists() || dir.join("db").exists() {
        return Ok(false);
    }
    let file = std::fs::File::create(&marker)
        .and_then(|file| file.sync_all())
        .map_err(|e| StoreError::io(format!("writing {}", marker.display()), e));
    file?;
    writer::sync_directory(dir)?;
    Ok(true)
}

/// The schema key is on disk: the store exists.
fn finish_creation(dir: &Path) -> Result<(), StoreError> {
    // `flush` does not persist the file's metadata: fsync what sled created first.
    for name in ["conf", "db"] {
        let path = dir.join(name);
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(|e| StoreError::io(format!("fsyncing {}", path.display()), e))?;
    }
    let marker = dir.join(CREATING_MARKER);
    std::fs::remove_file(&marker)
        .map_err(|e| StoreError::io(format!("removing {}", marker.display()), e))?;
    writer::sync_directory(dir)
}

fn check_schema(db: &sled::Db, dir: &Path, had_data: bool) -> Result<(), StoreError> {
    match db.get(keys::SCHEMA_VERSION_KEY)? {
        Some(found) => {
            let found = String::from_utf8_lossy(&found).into_owned();
            match found.parse::<u64>().ok() {
                Some(keys::SCHEMA_VERSION) => Ok(()),
                Some(old) if migrate::can_upgrade(old) => migrate::upgrade(db, dir, old),
                _ => Err(StoreError::SchemaMismatch {
                    path: dir.to_owned(),
                    found,
                    expected: keys::SCHEMA_VERSION,
                }),
            }
        }
        None if db.is_empty() && had_data => Err(corrupt_files(
            dir,
            "db",
            "it is not empty but sled reads no data from it (truncated, or not a sled file)",
        )),
        None if db.is_empty() => {
            db.insert(
                keys::SCHEMA_VERSION_KEY,
                keys::SCHEMA_VERSION.to_string().as_bytes(),
            )?;
            db.flush()?;
            info!(dir = %dir.display(), version = keys::SCHEMA_VERSION, "store created");
            Ok(())
        }
        None => Err(StoreError::NotAStore {
            path: dir.to_owned(),
        }),
    }
}

/// Through which sequence the tree's conversations are written. A store without the key
/// (created or upgraded just now; schema 3 wrote conversations with every group) has them
/// through its head, and gets the key before any group can hold conversations back.
fn recover_projected(db: &sled::Db, head: u64) -> Result<u64, StoreError> {
    match db.get(keys::PROJECTED_KEY)? {
        Some(bytes) => {
            let projected = keys::read_be(&bytes).ok_or_else(|| {
                StoreError::corrupt(keys::PROJECTED_KEY, "not an 8-byte sequence")
            })?;
            if projected > head {
                // Only a group whose write failed part-way (see `recover_head`) leaves it
                // past the head; the conversations may keep that group's changes.
                warn!(
                    projected,
                    head,
                    "the store's last write had failed part-way: its conversations are taken as written through the head"
                );
                db.insert(keys::PROJECTED_KEY, &keys::be(head)[..])?;
                db.flush()?;
                return Ok(head);
            }
            Ok(projected)
        }
        None => {
            db.insert(keys::PROJECTED_KEY, &keys::be(head)[..])?;
            db.flush()?;
            Ok(head)
        }
    }
}

/// Wakes the writer every `interval` while it holds conversations, so that they are written
/// within about two intervals of their change even when no group follows. Stops with the
/// store (it holds no sender of its own).
fn spawn_projection_ticker(
    commands: mpsc::WeakSender<Command>,
    projection: Arc<Projection>,
    interval: Duration,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("switchboard-store-projection".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(commands) = commands.upgrade() else {
                    return;
                };
                if projection.is_dirty() {
                    let _ = commands.try_send(Command::Project);
                }
            }
        })
        .map(drop)
        .map_err(|e| StoreError::io("starting the store projection thread", e))
}

/// After an unclean end: the journal records sled's file lacks (the groups acknowledged since
/// its last flush) are replayed into it (see `writer::journal`).
pub(crate) fn replay_journal(db: &sled::Db, log: &segments::LogFiles) -> Result<(), StoreError> {
    let started = Instant::now();
    let replayed = writer::journal::replay(db, log)?;
    if replayed.records > 0 {
        info!(
            records = replayed.records,
            writes = replayed.writes,
            millis = started.elapsed().as_millis() as u64,
            "the last run did not close cleanly: the groups acknowledged after sled's last flush were replayed from the journal"
        );
    }
    Ok(())
}

/// The head, and whether what a write cut short left past it was dropped (then the dedup keys
/// are checked too: see [`mark_open`]).
fn recover_head(
    db: &sled::Db,
    log: &segments::LogFiles,
    unclean: bool,
) -> Result<(u64, bool), StoreError> {
    // After an unclean end, the newest entries whose bytes are not whole were never
    // acknowledged (see `segments`): the log ends at the last whole one. After a clean close
    // every entry was made durable, and one that does not read is damage, served as stand-ins.
    let mut whole = None;
    for entry in db.scan_prefix(keys::LOG_PREFIX).rev() {
        let (group_key, group_value) = entry?;
        // The entries of one key were written by one group, in one frame: whole or not
        // together.
        let mut group = segments::expand(&group_key, &group_value)?;
        if !unclean || group.iter().all(|(key, value)| log.is_whole(key, value)) {
            whole = group.pop().map(|(key, value)| (key, value.into_owned()));
            break;
        }
        warn!(
            key = %String::from_utf8_lossy(&group_key),
            entries = group.len(),
            "a log entry's bytes are not whole in its segment file (a power loss before it was acknowledged?): its group is dropped"
        );
    }
    let from_log = match whole {
        Some((key, value)) => {
            let first = record::sequence_of(&key)?;
            let count = record::entry_count(&value).ok_or_else(|| {
                StoreError::corrupt(
                    &key,
                    "the last log entry does not say how many events it holds",
                )
            })?;
            first + count - 1
        }
        None => 0,
    };
    let recorded = match db.get(keys::HEAD_KEY)? {
        Some(bytes) => keys::read_be(&bytes)
            .ok_or_else(|| StoreError::corrupt(keys::HEAD_KEY, "not an 8-byte sequence"))?,
        // No group ever wrote: the log must be empty too.
        None if from_log == 0 => 0,
        None => {
            return Err(StoreError::corrupt(
                keys::HEAD_KEY,
                format!("it is missing but the log ends at {from_log}"),
            ));
        }
    };
    if recorded == from_log {
        return Ok((from_log, false));
    }
    // Every group writes its log entries and `meta/head` in one batch, so they disagree only
    // when sled kept part of a batch whose write failed (a full disk: measured, about one
    // restart in six after filling a small disk). That group was never acknowledged (its
    // flush failed), and every acknowledged one is whole: the head is the smaller of the two.
    let head = recorded.min(from_log);
    drop_unacknowledged(db, head, recorded, from_log)?;
    Ok((head, true))
}

/// Marks the store open ([`keys::OPEN_KEY`]). With `check_dedup` (the mark was there already,
/// so the last run did not close cleanly, or [`recover_head`] dropped what a failed write
/// left), the dedup keys pointing past `head` are dropped: a write cut short may have kept
/// some of them, even while the head, the log and `meta/projected` agree, and a redelivery of
/// those events would be taken for a duplicate and never stored. One scan of the dedup keys,
/// only after an unclean end.
fn mark_open(db: &sled::Db, head: u64, check_dedup: bool) -> Result<(), StoreError> {
    if check_dedup {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let dropped = dedup_keys_past(db, head, &mut batch)?;
        if dropped > 0 {
            db.apply_batch(batch)?;
            warn!(
                head,
                dedup_keys_dropped = dropped,
                "the last run ended with a write cut short (a full or failing disk?): the dedup keys it left past the head are dropped; none of them was acknowledged"
            );
        } else {
            info!(
                head,
                millis = started.elapsed().as_millis() as u64,
                "the last run did not close cleanly; the dedup keys were checked and are whole"
            );
        }
    }
    db.insert(keys::OPEN_KEY, &[][..])?;
    db.flush()?;
    Ok(())
}

/// Adds to `batch` the removal of every dedup key that points past `head`; returns how many.
fn dedup_keys_past(db: &sled::Db, head: u64, batch: &mut sled::Batch) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    for entry in db.scan_prefix(keys::DEDUP_PREFIX) {
        let (key, value) = entry?;
        if keys::read_be(&value).is_some_and(|sequence| sequence > head) {
            batch.remove(key);
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Removes what a failed group left past `head`: its log entries (the dedup keys pointing past
/// it are dropped next, by [`mark_open`]), and moves `meta/head` to `head`
/// (`recover_projected`, which runs next, brings `meta/projected` back to it). Conversations that group's partial batch may have written
/// keep its changes.
fn drop_unacknowledged(
    db: &sled::Db,
    head: u64,
    recorded: u64,
    from_log: u64,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut entries = 0u64;
    for entry in db.range(keys::log_key(head + 1)..=keys::log_key(u64::MAX)) {
        batch.remove(entry?.0);
        entries += 1;
    }
    batch.insert(keys::HEAD_KEY, &keys::be(head)[..]);
    db.apply_batch(batch)?;
    db.flush()?;
    warn!(
        recorded,
        log_ends_at = from_log,
        head,
        log_entries_dropped = entries,
        "the store's last write had failed part-way (a full or failing disk?): what it left past the last whole group is dropped; nothing it dropped was acknowledged"
    );
    Ok(())
}
