//! The writer: group commit of appends into one atomic sled batch, then fdatasync of its journal.
//!
//! - [`command`]: what callers send (appends with their log entry encoded by the caller,
//!   sync errors, ticket updates) and how each is answered;
//! - [`pending`]: the overlay of one group: dedup, sequences, projections, the sled batch;
//! - [`seen`]: the dedup keys the tree holds, as a Bloom filter, so that a new key costs no
//!   sled read;
//! - this module: the first stage ([`Writer`]), which prepares and applies groups;
//! - [`flusher`]: the second stage, which makes them durable and answers them;
//! - [`durable`]: the files to fsync and the failure latch;
//! - [`journal`]: a group's sled writes as a record in the segment files, replayed at open
//!   after a crash (an append is answered once that record is durable, before sled's flush).

mod command;
mod durable;
mod erase;
mod flusher;
pub(crate) mod journal;
mod pending;
mod seen;
#[cfg(test)]
mod tests;

pub(crate) use command::{Command, Outcome, PreparedRequest};
pub(crate) use durable::{DurableFiles, Failure, sync_directory};
pub(crate) use flusher::Flusher;
use journal::Writes;
pub(crate) use pending::StoredTicket;
use pending::{AppendedEvent, Finished, Pending, Touched};
use seen::SeenKeys;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, EventPayload, IncomingEvent, Lww,
    Message, Sequence, Ticket,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info};

use crate::conversations;
use crate::keys::{self, IndexFamily};
use crate::projection::Projection;
use crate::quarantine::{self, QuarantineLimits, QuarantineOp, QuarantineTotals, Quarantined};
use crate::record::{encode, encode_request, load};
use crate::segments::{self, Grouper, LogFiles};
use crate::tail::TailCache;
use crate::{AppendReceipt, AppendRequest, StoreError, StoreOptions, SyncState, TicketUpdate};

/// A group applied to sled (in memory) and waiting for the flush that makes it durable.
pub(crate) struct Staged {
    commands: Vec<Command>,
    receipts: Vec<Outcome>,
    /// The new events, in sequence order.
    events: Vec<AppendedEvent>,
    /// The head once this group is durable.
    head: u64,
    /// Events this group appended.
    appended: u64,
    /// The events of log entries this group rewrote (erasures), as they now read.
    rewritten: Vec<Event>,
    /// The sequence through which this group wrote the conversations, if it wrote them.
    projected: Option<u64>,
    /// Whether sled must be flushed before this group is answered (an erasure: see
    /// [`journal`]).
    barrier: bool,
    started: Instant,
}

impl Staged {
    /// The events this group appended, whole, in sequence order.
    fn new_events(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.iter().filter_map(|appended| {
            let request = self.commands.get(appended.command)?.request()?;
            Some(Event {
                sequence: appended.sequence,
                id: appended.id.clone(),
                connection: request.connection.clone(),
                vendor: request.vendor.clone(),
                received_at: request.received_at,
                request_id: request.request_id.clone(),
                incoming: request.events[appended.index].clone(),
                raw: if appended.with_raw {
                    request.raw.clone()
                } else {
                    None
                },
            })
        })
    }
}

/// A prepared group: its sled batch, the head after it, the answers and the new events.
struct Prepared {
    batch: sled::Batch,
    head: u64,
    receipts: Vec<Outcome>,
    appended: Vec<AppendedEvent>,
    rewritten: Vec<Event>,
    /// Whether the batch writes the changed conversations.
    projects: bool,
    /// The changed conversations it does not write.
    deferred: HashMap<Vec<u8>, Touched>,
    /// Whether it wrote a journal record (numbered [`Writer::journal`]).
    journaled: bool,
    /// Whether that record is a barrier.
    barrier: bool,
}

/// The first stage of the writer: owns every write to the tree. It prepares a group (dedup,
/// projections, encoding) and applies it as one atomic sled batch, then hands it to the
/// [`Flusher`]; while the flusher waits for the disk, it prepares the next group.
pub(crate) struct Writer {
    pub(crate) db: sled::Db,
    /// The log entries' segment files.
    pub(crate) log: Arc<LogFiles>,
    pub(crate) options: StoreOptions,
    /// The last sequence applied to sled (durable or not yet).
    pub(crate) head: u64,
    pub(crate) failed: Failure,
    /// The last sequence whose conversations are applied to sled (`meta/projected`).
    projected: u64,
    /// Conversations changed by the groups after `projected`, held in memory until a group
    /// writes them (see [`crate::projection`]).
    deferred: HashMap<Vec<u8>, Touched>,
    /// When the oldest change held in `deferred` was made.
    deferred_since: Option<Instant>,
    projection: Arc<Projection>,
    /// Set once the command channel is closed: the last group writes everything it holds.
    closing: bool,
    /// The number of the next journal record (set at open, from `meta/journal`).
    pub(crate) journal: u64,
    /// The dedup keys the tree holds.
    seen: SeenKeys,
}

/// How many applied groups may wait for the flusher before the writer blocks handing one over.
/// With one, the writer stopped for every flush that outlasted its next group; with eight it
/// keeps preparing and applying while the flusher waits for the disk, and the flusher makes
/// all of them durable with its next flush. Measured in alternating pairs (session 13,
/// BENCHMARKS.md): +7 to +8 % webhooks/s over HTTP and +3 to +12 % on the store floor, p99
/// unchanged. Groups applied but not yet durable are answered only by a flush, so the depth
/// changes nothing of what an acknowledgement means.
pub(crate) const STAGED_GROUPS: usize = 8;

/// Runs both stages until every sender is gone and the channel is drained, then flushes.
pub(crate) fn run(
    mut writer: Writer,
    flusher: Flusher,
    mut commands: mpsc::Receiver<Command>,
    stopped: watch::Sender<bool>,
) -> Result<(), StoreError> {
    // While the flusher makes group N durable, up to `STAGED_GROUPS` later groups may wait for
    // it here and the writer prepares and applies the next; it blocks handing one over when
    // the queue is full. The flusher then makes every group waiting durable with one flush.
    let (staged_tx, staged_rx) = std::sync::mpsc::sync_channel::<Staged>(STAGED_GROUPS);
    let flusher = std::thread::Builder::new()
        .name("switchboard-store-flusher".into())
        .spawn(move || flusher.run(staged_rx))
        .map_err(|e| StoreError::io("starting the store flusher thread", e))?;
    let max_batch = writer.options.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = commands.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let group = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        if let Some(staged) = writer.stage(group)
            && let Err(std::sync::mpsc::SendError(staged)) = staged_tx.send(staged)
        {
            // The flusher is gone (it panicked): nobody can make this group durable.
            writer.failed.set("the store flusher stopped".into());
            for command in staged.commands {
                command.fail(|| StoreError::WriterGone);
            }
        }
    }
    // Nothing is left held in memory: the conversations are written before the final flush.
    writer.closing = true;
    if (!writer.deferred.is_empty() || writer.projected < writer.head)
        && let Some(staged) = writer.stage(Vec::new())
        && let Err(std::sync::mpsc::SendError(staged)) = staged_tx.send(staged)
    {
        writer.failed.set("the store flusher stopped".into());
        drop(staged);
    }
    drop(staged_tx);
    let result = match flusher.join() {
        Ok(result) => result,
        Err(_) => Err(StoreError::WriterGone),
    };
    info!(head = writer.head, "store writer stopped");
    stopped.send_replace(true);
    result
}

impl Writer {
    /// The writer of a store whose log ends at `head` and whose conversations are written
    /// through `projected`; the conversations of the log after it are rebuilt in memory.
    pub(crate) fn new(
        db: sled::Db,
        log: Arc<LogFiles>,
        options: StoreOptions,
        head: u64,
        projected: u64,
        failed: Failure,
        projection: Arc<Projection>,
    ) -> Result<Writer, StoreError> {
        let seen = SeenKeys::start(sled::Tree::clone(&db), head);
        let mut writer = Writer {
            db,
            log,
            options,
            head,
            failed,
            projected,
            deferred: HashMap::new(),
            deferred_since: None,
            projection,
            closing: false,
            journal: 0,
            seen,
        };
        writer.reproject()?;
        Ok(writer)
    }

    /// fdatasyncs the segment files when the group appended records (messages): their
    /// pointers are in its batch, which sled may write before the flusher syncs the files,
    /// and unlike a log entry's, nothing at open would catch a pointer whose bytes were lost.
    fn sync_records(&self) -> Result<(), StoreError> {
        if self.log.take_records_appended() && self.options.fsync {
            self.log
                .sync()
                .map_err(|e| StoreError::io("the fdatasync of the messages' segment files", e))?;
        }
        Ok(())
    }

    /// Prepares one group and applies it to sled as one atomic batch; `None` if it failed
    /// (every request of it has been answered then).
    pub(crate) fn stage(&mut self, mut commands: Vec<Command>) -> Option<Staged> {
        if let Some(reason) = self.failed.get() {
            for command in commands {
                command.fail(|| StoreError::Failed(reason.clone()));
            }
            return None;
        }
        let started = Instant::now();
        let Prepared {
            batch,
            head: new_head,
            receipts,
            appended: events,
            rewritten,
            projects,
            deferred,
            journaled,
            barrier,
        } = match self.prepare(&mut commands) {
            Ok(prepared) => prepared,
            Err(e @ (StoreError::Sled(sled::Error::Io(_)) | StoreError::Io { .. })) => {
                // The disk failed under a read: sled writes while it reads (it consolidates
                // pages), so it may hold a half-written buffer. As after a failed batch, every
                // write is refused until a restart.
                let reason = format!("reading for a group: {e}");
                error!(error = %reason, requests = commands.len(), "group commit failed; refusing further writes");
                self.failed.set(reason.clone());
                for command in commands {
                    command.fail(|| StoreError::Failed(reason.clone()));
                }
                return None;
            }
            Err(e) => {
                // Nothing was written: the store stays usable. The conversations held in
                // memory may have taken part of the failed group: they are rebuilt from the
                // log.
                self.log.discard_buffered();
                error!(error = %e, requests = commands.len(), "group commit failed before writing");
                let message = e.to_string();
                for command in commands {
                    command.fail(|| StoreError::Commit(message.clone()));
                }
                if let Err(e) = self.reproject() {
                    let reason = format!("rebuilding the conversations held in memory: {e}");
                    error!(error = %reason, "refusing further writes");
                    self.failed.set(reason);
                }
                return None;
            }
        };
        // The group's log entries, in one write, before the pointers to them; the records it
        // appended durable before sled may write their pointers (see `segments`).
        if let Err(e) = self
            .log
            .write_buffered()
            .and_then(|()| self.sync_records())
            .and_then(|()| self.db.apply_batch(batch).map_err(StoreError::from))
        {
            // sled may hold part of the batch in memory: refuse every write from now on.
            let reason = format!("applying the batch: {e}");
            error!(error = %reason, requests = commands.len(), "group commit failed; refusing further writes");
            self.failed.set(reason.clone());
            for command in commands {
                command.fail(|| StoreError::Failed(reason.clone()));
            }
            return None;
        }
        if journaled {
            self.journal += 1;
        }
        self.seen.applied();
        if !rewritten.is_empty() {
            // An erasure rewrote entries: the frames read before hold their old bytes.
            self.log.forget_read_frames();
        }
        let appended = new_head - self.head;
        self.head = new_head;
        let projected = if projects {
            self.projected = new_head;
            self.deferred_since = None;
            Some(new_head)
        } else {
            if !deferred.is_empty() && self.deferred_since.is_none() {
                self.deferred_since = Some(started);
            }
            None
        };
        self.deferred = deferred;
        self.note_dirty();
        Some(Staged {
            commands,
            receipts,
            events,
            head: new_head,
            appended,
            rewritten,
            projected,
            barrier,
            started,
        })
    }

    /// Tells the ticker whether conversations (or `meta/projected`) wait to be written.
    fn note_dirty(&self) {
        self.projection
            .set_dirty(!self.deferred.is_empty() || self.projected < self.head);
    }

    /// Whether the group about to be prepared writes the conversations held in memory.
    fn must_project(&self, commands: &[Command]) -> bool {
        let interval = self.options.projection_interval;
        self.closing
            || interval.is_zero()
            || self.projection.wanted() > self.projected
            || self.deferred.len() >= self.options.projection_max_conversations
            || self
                .deferred_since
                .is_some_and(|since| since.elapsed() >= interval)
            // An erasure rewrites conversations and log entries together.
            || commands.iter().any(|c| matches!(c, Command::Erase { .. }))
    }

    /// Rebuilds the conversations held in memory from the log after `projected` (at open,
    /// after a crash; after a group that failed before writing).
    pub(crate) fn reproject(&mut self) -> Result<(), StoreError> {
        let mut pending = Pending::new(
            &self.db,
            &self.log,
            &mut self.seen,
            self.head,
            self.options.quarantine,
            self.projected,
            HashMap::new(),
        );
        let mut replayed = 0u64;
        if self.projected < self.head {
            let start = match self
                .db
                .range(keys::log_key(0)..=keys::log_key(self.projected + 1))
                .next_back()
            {
                Some(entry) => crate::record::sequence_of(&entry?.0)?,
                None => self.projected + 1,
            };
            for entry in self
                .db
                .range(keys::log_key(start)..=keys::log_key(self.head))
            {
                let (group_key, group_value) = entry?;
                for (key, value) in segments::expand(&group_key, &group_value)? {
                    let wanted = self.projected + 1..=self.head;
                    let events =
                        match self.log.entry(&key, &value).and_then(|value| {
                            crate::record::decode_entry_range(&key, &value, wanted)
                        }) {
                            Ok(events) => events,
                            Err(error) => {
                                // As listings do with an unreadable record: skipped and reported.
                                crate::unreadable_record(&key, &error);
                                continue;
                            }
                        };
                    for event in events {
                        if event.sequence.0 <= self.projected || event.sequence.0 > self.head {
                            continue;
                        }
                        pending.project_conversation(
                            &event.connection,
                            &event.vendor,
                            &event.incoming,
                        )?;
                        replayed += 1;
                    }
                }
            }
        }
        self.deferred = std::mem::take(&mut pending.conversations);
        self.deferred_since = (self.projected < self.head).then(Instant::now);
        self.note_dirty();
        if replayed > 0 {
            info!(
                from = self.projected,
                to = self.head,
                events = replayed,
                conversations = self.deferred.len(),
                "conversations rebuilt from the log"
            );
        }
        Ok(())
    }

    fn prepare(&mut self, commands: &mut [Command]) -> Result<Prepared, StoreError> {
        let projects = self.must_project(commands);
        let mut pending = Pending::new(
            &self.db,
            &self.log,
            &mut self.seen,
            self.head,
            self.options.quarantine,
            self.projected,
            std::mem::take(&mut self.deferred),
        );
        let mut receipts = Vec::with_capacity(commands.len());
        let mut rewritten = Vec::new();
        for (i, command) in commands.iter_mut().enumerate() {
            match command {
                Command::Append {
                    request, prepared, ..
                } => receipts.push(Outcome::Append(pending.append(
                    i,
                    request,
                    prepared.as_deref_mut(),
                )?)),
                Command::SyncError {
                    connection,
                    message,
                    ..
                } => {
                    pending.sync_state(connection)?.last_error = Some(message.clone());
                    receipts.push(Outcome::Done);
                }
                Command::UpdateTicket {
                    update, request, ..
                } => match pending.update_ticket(update)? {
                    Ok((append, ticket)) => {
                        pending.append(i, &append, None)?;
                        *request = Some(Box::new(append));
                        receipts.push(Outcome::Ticket(Box::new(Ok(ticket))));
                    }
                    Err(refused) => receipts.push(Outcome::Ticket(Box::new(Err(refused)))),
                },
                Command::Project => receipts.push(Outcome::Done),
                Command::Erase { plan, record, .. } => match pending.check_erasure(plan)? {
                    Ok(checked) => {
                        let (report, events) = pending.erase(i, plan, checked, record)?;
                        rewritten.extend(events);
                        receipts.push(Outcome::Erased(Box::new(Ok(report))));
                    }
                    Err(refused) => receipts.push(Outcome::Erased(Box::new(Err(refused)))),
                },
            }
        }
        let appended = std::mem::take(&mut pending.appended);
        // Nothing held: `meta/projected` moves with the head at the cost of one key.
        let projects = projects || pending.conversations.is_empty();
        let Finished {
            mut writes,
            head,
            deferred,
        } = pending.finish(projects)?;
        // The journal record follows the group's frame; sled learns where the next one goes.
        let barrier = commands.iter().any(|c| matches!(c, Command::Erase { .. }));
        let journaled = barrier || writes.is_journaled();
        if journaled {
            let (segment, offset) = self
                .log
                .append_journal(writes.record(self.journal, barrier))?;
            let next = journal::Position {
                segment,
                offset,
                number: self.journal + 1,
            };
            writes
                .batch
                .insert(journal::JOURNAL_KEY, &next.encode()[..]);
        }
        Ok(Prepared {
            batch: writes.batch,
            head,
            receipts,
            appended,
            rewritten,
            projects,
            deferred,
            journaled,
            barrier,
        })
    }
}
