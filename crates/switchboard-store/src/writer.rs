//! The writer thread: group commit of appends into one atomic sled batch, then flush and fsync.

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
    Agent, ConnectionId, Conversation, ConversationId, Event, EventKind, EventPayload,
    IncomingEvent, Lww, Message, Sequence, Ticket,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info};

use crate::conversations;
use crate::keys::{self, IndexFamily};
use crate::quarantine::{self, QuarantineLimits, QuarantineOp, QuarantineTotals, Quarantined};
use crate::record::{encode, encode_request, load};
use crate::tail::TailCache;
use crate::{AppendReceipt, AppendRequest, StoreError, StoreOptions, SyncState, TicketUpdate};

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Append events (and maybe save a sync cursor).
    Append {
        request: AppendRequest,
        /// Each event's log record, encoded by the caller (off the writer thread).
        prepared: Option<Box<PreparedRequest>>,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    /// Record the last sync error of a connection.
    SyncError {
        connection: ConnectionId,
        message: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Read a ticket, apply a change, append the result: one serialized step. `request` is
    /// the append it became, once prepared.
    UpdateTicket {
        update: Box<TicketUpdate>,
        request: Option<Box<AppendRequest>>,
        reply: oneshot::Sender<Result<Ticket, StoreError>>,
    },
}

/// A request's log entry, encoded (and compressed) before it reaches the writer, so that this
/// work is spread over every core: the entry as if every event is new, and the events' ids.
pub(crate) struct PreparedRequest {
    pub(crate) ids: Vec<String>,
    pub(crate) record: Vec<u8>,
}

impl PreparedRequest {
    /// The entry of all of `request`'s events (`None` for a request without events).
    pub(crate) fn for_request(request: &AppendRequest) -> Result<Option<Box<Self>>, StoreError> {
        if request.events.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = request
            .events
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let events: Vec<(&str, &IncomingEvent)> = ids
            .iter()
            .map(String::as_str)
            .zip(&request.events)
            .collect();
        let record = encode_request(request, &events)?;
        Ok(Some(Box::new(PreparedRequest { ids, record })))
    }
}

/// What a command of a group did, answered once the group is durable.
pub(crate) enum Outcome {
    Append(AppendReceipt),
    Done,
    Ticket(Box<Result<Ticket, StoreError>>),
}

impl Command {
    fn fail(self, error: impl Fn() -> StoreError) {
        // A caller that stopped waiting is no longer interested in the answer.
        match self {
            Command::Append { reply, .. } => drop(reply.send(Err(error()))),
            Command::SyncError { reply, .. } => drop(reply.send(Err(error()))),
            Command::UpdateTicket { reply, .. } => drop(reply.send(Err(error()))),
        }
    }

    /// The append this command is (or became), if any.
    fn request(&self) -> Option<&AppendRequest> {
        match self {
            Command::Append { request, .. } => Some(request),
            Command::UpdateTicket { request, .. } => request.as_deref(),
            Command::SyncError { .. } => None,
        }
    }

    fn answer(self, outcome: Outcome) {
        // A caller that stopped waiting is no longer interested; its events are stored.
        match (self, outcome) {
            (Command::Append { reply, .. }, Outcome::Append(receipt)) => {
                drop(reply.send(Ok(receipt)))
            }
            (Command::SyncError { reply, .. }, _) => drop(reply.send(Ok(()))),
            (Command::UpdateTicket { reply, .. }, Outcome::Ticket(result)) => {
                drop(reply.send(*result))
            }
            (command, _) => command.fail(|| StoreError::Commit("mismatched outcome".into())),
        }
    }
}

/// A ticket as stored: its state and the sequence of the event that set it, the tie-breaker of
/// last-writer-wins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredTicket {
    pub(crate) ticket: Ticket,
    pub(crate) sequence: Sequence,
}

/// The files whose contents must reach the disk before an append is acknowledged: sled's `db`
/// file and any blob files sled wrote for large values (sled never fsyncs those itself).
pub(crate) struct DurableFiles {
    dir: PathBuf,
    data: File,
    synced_blobs: HashSet<OsString>,
    enabled: bool,
}

impl DurableFiles {
    /// Opens `<dir>/db` and fsyncs `dir` itself, so that the files sled created are found
    /// after a power loss.
    pub(crate) fn open(dir: &Path, enabled: bool) -> Result<Self, StoreError> {
        let data_path = dir.join("db");
        let data = File::open(&data_path)
            .map_err(|e| StoreError::io(format!("opening {}", data_path.display()), e))?;
        if enabled {
            sync_directory(dir)?;
        }
        Ok(DurableFiles {
            dir: dir.to_owned(),
            data,
            synced_blobs: HashSet::new(),
            enabled,
        })
    }

    /// fdatasyncs the `db` file and every blob file not synced yet (and then the blob directory).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.data.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced_blobs.len());
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // sled removed it meanwhile (blob garbage collection).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
            }
            present.insert(name);
        }
        if synced_any {
            File::open(&blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

pub(crate) fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsyncing the directory {}", dir.display()), e))
}

/// Set once a write reached sled but may not have reached the disk: from then on every write
/// is refused. Shared by the two stages of the writer.
#[derive(Clone, Default)]
pub(crate) struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, reason: String) {
        let mut failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // The first failure is the one worth reporting.
        failed.get_or_insert(reason);
    }
}

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
}

/// The first stage of the writer: owns every write to the tree. It prepares a group (dedup,
/// projections, encoding) and applies it as one atomic sled batch, then hands it to the
/// [`Flusher`]; while the flusher waits for the disk, it prepares the next group.
pub(crate) struct Writer {
    pub(crate) db: sled::Db,
    pub(crate) options: StoreOptions,
    /// The last sequence applied to sled (durable or not yet).
    pub(crate) head: u64,
    pub(crate) failed: Failure,
}

/// The second stage: flushes and fsyncs applied groups in order, then answers their requests
/// and moves the durable head. Several groups waiting together share one flush.
pub(crate) struct Flusher {
    pub(crate) db: sled::Db,
    pub(crate) files: DurableFiles,
    /// The last durable sequence.
    pub(crate) head: u64,
    pub(crate) head_tx: Arc<watch::Sender<Sequence>>,
    pub(crate) failed: Failure,
    /// The newest durable events, for subscribers tailing the log.
    pub(crate) tail: Arc<TailCache>,
}

/// Runs both stages until every sender is gone and the channel is drained, then flushes.
pub(crate) fn run(
    mut writer: Writer,
    flusher: Flusher,
    mut commands: mpsc::Receiver<Command>,
    stopped: watch::Sender<bool>,
) -> Result<(), StoreError> {
    // While the flusher makes group N durable, group N+1 may wait for it here and the writer
    // prepares and applies N+2; it blocks handing N+2 over until the flusher takes N+1. The
    // flusher then makes every group waiting durable with one flush.
    let (staged_tx, staged_rx) = std::sync::mpsc::sync_channel::<Staged>(1);
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
        } = match self.prepare(&mut commands) {
            Ok(prepared) => prepared,
            Err(e) => {
                // Nothing was written: the store stays usable.
                error!(error = %e, requests = commands.len(), "group commit failed before writing");
                let message = e.to_string();
                for command in commands {
                    command.fail(|| StoreError::Commit(message.clone()));
                }
                return None;
            }
        };
        if let Err(e) = self.db.apply_batch(batch) {
            // sled may hold part of the batch in memory: refuse every write from now on.
            let reason = format!("applying the batch: {e}");
            error!(error = %reason, requests = commands.len(), "group commit failed; refusing further writes");
            self.failed.set(reason.clone());
            for command in commands {
                command.fail(|| StoreError::Failed(reason.clone()));
            }
            return None;
        }
        let appended = new_head - self.head;
        self.head = new_head;
        Some(Staged {
            commands,
            receipts,
            events,
            head: new_head,
            appended,
            started,
        })
    }

    fn prepare(&self, commands: &mut [Command]) -> Result<Prepared, StoreError> {
        let mut pending = Pending::new(&self.db, self.head, self.options.quarantine);
        let mut receipts = Vec::with_capacity(commands.len());
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
            }
        }
        let appended = std::mem::take(&mut pending.appended);
        let (batch, head) = pending.finish()?;
        Ok(Prepared {
            batch,
            head,
            receipts,
            appended,
        })
    }
}

impl Flusher {
    fn run(mut self, staged: std::sync::mpsc::Receiver<Staged>) -> Result<(), StoreError> {
        while let Ok(first) = staged.recv() {
            let mut groups = vec![first];
            groups.extend(staged.try_iter());
            self.make_durable(groups);
        }
        if self.failed.get().is_some() {
            return Ok(());
        }
        self.db.flush().map_err(StoreError::from).and_then(|_| {
            self.files
                .sync()
                .map_err(|e| StoreError::io("the final fsync of the store", e))
        })
    }

    /// Flushes and fsyncs once for all `groups` (applied in this order), then answers them.
    pub(crate) fn make_durable(&mut self, groups: Vec<Staged>) {
        let durable = match self.failed.get() {
            Some(reason) => Err(reason),
            None => self
                .db
                .flush()
                .map_err(|e| format!("flushing: {e}"))
                .and_then(|_| self.files.sync().map_err(|e| format!("fdatasync: {e}"))),
        };
        if let Err(reason) = durable {
            // sled may hold part or all of these groups in memory without them being on disk:
            // the only safe answer is to refuse every write until an operator restarts.
            error!(error = %reason, groups = groups.len(), "group commit failed; refusing further writes");
            self.failed.set(reason.clone());
            for group in groups {
                for command in group.commands {
                    command.fail(|| StoreError::Failed(reason.clone()));
                }
            }
            return;
        }
        let Some(last) = groups.last() else {
            return;
        };
        let new_head = last.head;
        // Into the tail cache before the head announces them, so woken readers find them.
        if self.tail.capacity() > 0 {
            self.tail
                .push(groups.iter().flat_map(Staged::new_events).collect());
        }
        if new_head != self.head {
            self.head = new_head;
            self.head_tx.send_replace(Sequence(new_head));
        }
        for group in groups {
            let seconds = group.started.elapsed().as_secs_f64();
            metrics::histogram!("switchboard_store_batch_size").record(group.appended as f64);
            metrics::histogram!("switchboard_store_commit_seconds").record(seconds);
            metrics::counter!("switchboard_events_appended_total").increment(group.appended);
            debug!(
                requests = group.commands.len(),
                appended = group.appended,
                head = group.head,
                micros = (seconds * 1e6) as u64,
                "group commit"
            );
            for (command, outcome) in group.commands.into_iter().zip(group.receipts) {
                command.answer(outcome);
            }
        }
    }
}

/// A conversation touched in the current group commit: as stored before it, and now.
struct Touched {
    /// The header as stored before this group.
    original: Option<Conversation>,
    /// The header, with the messages this group read or wrote.
    current: Conversation,
    /// Those messages as stored before this group (`None`: not stored).
    stored_messages: BTreeMap<String, Option<Lww<Message>>>,
}

/// The overlay of one group commit: every change, in memory, until it becomes one sled batch.
/// Later events of the batch read the overlay first, so they see the earlier ones.
struct Pending<'a> {
    tree: &'a sled::Tree,
    start_head: u64,
    next: u64,
    writes: sled::Batch,
    appended_keys: HashSet<Vec<u8>>,
    conversations: HashMap<Vec<u8>, Touched>,
    tickets: HashMap<Vec<u8>, StoredTicket>,
    agents: HashMap<Vec<u8>, Option<Agent>>,
    sync: HashMap<Vec<u8>, SyncState>,
    appended: Vec<AppendedEvent>,
    quarantine_limits: QuarantineLimits,
    /// The quarantine's totals once read (and changed) in this group.
    quarantine_totals: Option<QuarantineTotals>,
    /// Quarantine entries written (`Some`) or removed (`None`) in this group.
    quarantined: HashMap<u64, Option<Quarantined>>,
}

/// Where a newly appended event of a group came from, so that the flusher can put it in the
/// tail cache without the writer spending time on it.
pub(crate) struct AppendedEvent {
    /// The command of the group.
    command: usize,
    /// The event of its request.
    index: usize,
    sequence: Sequence,
    id: String,
    /// Whether the request's raw body is stored on this event.
    with_raw: bool,
}

impl<'a> Pending<'a> {
    fn new(tree: &'a sled::Tree, head: u64, quarantine_limits: QuarantineLimits) -> Self {
        Pending {
            tree,
            start_head: head,
            next: head + 1,
            writes: sled::Batch::default(),
            appended_keys: HashSet::new(),
            conversations: HashMap::new(),
            tickets: HashMap::new(),
            agents: HashMap::new(),
            sync: HashMap::new(),
            appended: Vec::new(),
            quarantine_limits,
            quarantine_totals: None,
            quarantined: HashMap::new(),
        }
    }

    fn quarantine_totals(&mut self) -> Result<QuarantineTotals, StoreError> {
        if let Some(totals) = self.quarantine_totals {
            return Ok(totals);
        }
        let totals = load(self.tree, quarantine::META_KEY)?.unwrap_or_default();
        self.quarantine_totals = Some(totals);
        Ok(totals)
    }

    fn quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        match self.quarantined.get(&id) {
            Some(entry) => Ok(entry.clone()),
            None => load(self.tree, &quarantine::key(id)),
        }
    }

    fn change_quarantine(
        &mut self,
        request: &AppendRequest,
        op: &QuarantineOp,
        receipt: &mut AppendReceipt,
    ) -> Result<(), StoreError> {
        let mut totals = self.quarantine_totals()?;
        match op {
            QuarantineOp::Hold(new) => {
                let id = totals.next_id.max(1);
                let entry = Quarantined {
                    id,
                    connection: request.connection.clone(),
                    vendor: request.vendor.clone(),
                    received_at: request.received_at,
                    request_id: request.request_id.clone(),
                    reason: new.reason.clone(),
                    headers: new.headers.clone(),
                    query: new.query.clone(),
                    body: new.body.clone(),
                    attempts: 0,
                    last_attempt_at: None,
                };
                let size = entry.size();
                if totals.entries >= self.quarantine_limits.max_entries
                    || totals.bytes.saturating_add(size) > self.quarantine_limits.max_bytes
                {
                    receipt.quarantine_full = true;
                    return Ok(());
                }
                totals.next_id = id + 1;
                totals.entries += 1;
                totals.bytes += size;
                self.quarantined.insert(id, Some(entry));
                receipt.quarantined = Some(id);
            }
            QuarantineOp::Release(id) => {
                if let Some(entry) = self.quarantined(*id)? {
                    totals.entries = totals.entries.saturating_sub(1);
                    totals.bytes = totals.bytes.saturating_sub(entry.size());
                    self.quarantined.insert(*id, None);
                }
            }
            QuarantineOp::Attempt { id, reason, at } => {
                if let Some(mut entry) = self.quarantined(*id)? {
                    totals.bytes = totals.bytes.saturating_sub(entry.size());
                    entry.reason = reason.clone();
                    entry.attempts = entry.attempts.saturating_add(1);
                    entry.last_attempt_at = Some(*at);
                    totals.bytes = totals.bytes.saturating_add(entry.size());
                    self.quarantined.insert(*id, Some(entry));
                }
            }
        }
        self.quarantine_totals = Some(totals);
        Ok(())
    }

    /// Appends `request`'s new events as one log entry; `prepared` is that entry when the
    /// caller encoded it already (see [`PreparedRequest`]), else it is encoded here.
    fn append(
        &mut self,
        command: usize,
        request: &AppendRequest,
        prepared: Option<&mut PreparedRequest>,
    ) -> Result<AppendReceipt, StoreError> {
        let mut receipt = AppendReceipt::default();
        let mut new = Vec::with_capacity(request.events.len());
        for (index, incoming) in request.events.iter().enumerate() {
            let dedup = keys::dedup_key(&request.connection, &incoming.dedup_key);
            if self.appended_keys.contains(&dedup) || self.tree.contains_key(&dedup)? {
                receipt.duplicates += 1;
                continue;
            }
            let sequence = Sequence(self.next);
            self.next += 1;
            self.project(request, incoming, sequence)?;
            self.writes
                .insert(dedup.as_slice(), &keys::be(sequence.0)[..]);
            self.appended_keys.insert(dedup);
            receipt.appended.push(sequence);
            new.push(index);
        }
        if let Some(&first_index) = new.first() {
            let first = receipt.appended[0];
            let ids: Vec<String> = match &prepared {
                Some(ready) => new.iter().map(|&i| ready.ids[i].clone()).collect(),
                None => new
                    .iter()
                    .map(|_| uuid::Uuid::now_v7().to_string())
                    .collect(),
            };
            // The caller's entry holds every event of the request: it fits when none was a
            // duplicate, else the entry of the new ones is encoded here.
            let record = match prepared {
                Some(ready) if new.len() == request.events.len() => {
                    std::mem::take(&mut ready.record)
                }
                _ => {
                    let events: Vec<(&str, &IncomingEvent)> = new
                        .iter()
                        .zip(&ids)
                        .map(|(&i, id)| (id.as_str(), &request.events[i]))
                        .collect();
                    encode_request(request, &events)?
                }
            };
            self.writes.insert(keys::log_key(first.0), record);
            for ((&index, id), &sequence) in new.iter().zip(ids).zip(&receipt.appended) {
                self.appended.push(AppendedEvent {
                    command,
                    index,
                    sequence,
                    id,
                    with_raw: index == first_index && request.raw.is_some(),
                });
            }
        }
        if let Some(op) = &request.quarantine {
            self.change_quarantine(request, op, &mut receipt)?;
        }
        if let Some(update) = &request.sync {
            let state = self.sync_state(&request.connection)?;
            state.cursor = Some(update.cursor.clone());
            state.records_pulled = state.records_pulled.saturating_add(update.records);
            state.last_success = Some(update.at);
            state.last_error = None;
        }
        Ok(receipt)
    }

    fn project(
        &mut self,
        request: &AppendRequest,
        incoming: &IncomingEvent,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        match &incoming.payload {
            EventPayload::Conversation(patch) => {
                let id = ConversationId::new(request.connection.clone(), patch.external_id.clone());
                let touched = match self.conversations.entry(keys::conversation_key(&id)) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let original = conversations::load_header(self.tree, &id)?;
                        let current = original
                            .clone()
                            .unwrap_or_else(|| Conversation::new(id, request.vendor.clone()));
                        entry.insert(Touched {
                            original,
                            current,
                            stored_messages: BTreeMap::new(),
                        })
                    }
                };
                // The merge compares a message with the stored one of the same key: read
                // those (only those) first.
                for message in &patch.messages {
                    if touched.stored_messages.contains_key(&message.key) {
                        continue;
                    }
                    let stored = if touched.original.is_some() {
                        conversations::load_message(self.tree, &touched.current.id, &message.key)?
                    } else {
                        None
                    };
                    if let Some(stored) = &stored {
                        touched
                            .current
                            .messages
                            .insert(message.key.clone(), stored.clone());
                    }
                    touched.stored_messages.insert(message.key.clone(), stored);
                }
                touched
                    .current
                    .apply(patch, incoming.occurred_at, &incoming.dedup_key);
            }
            EventPayload::Ticket(ticket) => {
                let key = keys::ticket_key(&request.connection, &ticket.external_id);
                let current = match self.tickets.get(&key) {
                    Some(stored) => Some((stored.ticket.updated_at, stored.sequence)),
                    None => load::<StoredTicket>(self.tree, &key)?
                        .map(|stored| (stored.ticket.updated_at, stored.sequence)),
                };
                if current.is_none_or(|current| current < (ticket.updated_at, sequence)) {
                    self.tickets.insert(
                        key,
                        StoredTicket {
                            ticket: ticket.clone(),
                            sequence,
                        },
                    );
                }
            }
            EventPayload::Agent { agent, deleted } => {
                let key = keys::agent_key(&request.connection, &agent.login);
                self.agents.insert(key, (!deleted).then(|| agent.clone()));
            }
            EventPayload::Vendor { .. } => {}
        }
        Ok(())
    }

    /// The append a ticket update becomes, with the updated ticket; the inner error when the
    /// update is refused (nothing is written for it then).
    fn update_ticket(
        &mut self,
        update: &TicketUpdate,
    ) -> Result<Result<(AppendRequest, Ticket), StoreError>, StoreError> {
        let key = keys::ticket_key(&update.id.connection, &update.id.external_id);
        let current = match self.tickets.get(&key) {
            Some(stored) => Some(stored.ticket.clone()),
            None => load::<StoredTicket>(self.tree, &key)?.map(|stored| stored.ticket),
        };
        let Some(mut ticket) = current else {
            return Ok(Err(StoreError::NotFound(format!(
                "no ticket {}",
                update.id
            ))));
        };
        match ticket.apply_change(&update.change, update.at) {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Err(StoreError::Refused(switchboard_core::Error::invalid(
                    "the update changes nothing; set at least one of message, subject, status, assignee, requester, tags",
                ))));
            }
            Err(refused) => return Ok(Err(StoreError::Refused(refused))),
        }
        let event = IncomingEvent {
            dedup_key: format!(
                "ticket_update:{}:{}",
                update.id.external_id,
                uuid::Uuid::now_v7()
            ),
            kind: EventKind::TicketUpdated,
            vendor_event: format!("switchboard.{}", EventKind::TicketUpdated.as_str()),
            occurred_at: ticket.updated_at,
            payload: EventPayload::Ticket(ticket.clone()),
        };
        let mut request = AppendRequest::new(
            update.id.connection.clone(),
            update.vendor.clone(),
            vec![event],
        );
        request.received_at = update.at;
        Ok(Ok((request, ticket)))
    }

    fn sync_state(&mut self, connection: &ConnectionId) -> Result<&mut SyncState, StoreError> {
        Ok(match self.sync.entry(keys::sync_key(connection)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let state = load(self.tree, entry.key())?.unwrap_or_default();
                entry.insert(state)
            }
        })
    }

    /// Turns the overlay into one sled batch; returns it with the new head.
    fn finish(self) -> Result<(sled::Batch, u64), StoreError> {
        let mut batch = self.writes;
        let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
        for (_, touched) in self.conversations {
            let index_keys = |conversation: &Conversation| {
                let position = keys::position(conversation);
                IndexFamily::of(conversation).map(|family| {
                    let mut key = family.prefix();
                    key.extend_from_slice(&position);
                    key
                })
            };
            let new_index = index_keys(&touched.current);
            let old_index = match &touched.original {
                Some(original) => {
                    for family in IndexFamily::of(original) {
                        *counts.entry(family.count_key()).or_default() -= 1;
                    }
                    index_keys(original).to_vec()
                }
                None => Vec::new(),
            };
            for family in IndexFamily::of(&touched.current) {
                *counts.entry(family.count_key()).or_default() += 1;
            }
            for stale in old_index.iter().filter(|k| !new_index.contains(k)) {
                batch.remove(stale.as_slice());
            }
            let key = keys::conversation_key(&touched.current.id);
            for fresh in new_index.iter().filter(|k| !old_index.contains(k)) {
                batch.insert(fresh.as_slice(), key.as_slice());
            }
            conversations::encode_changes(touched.current, &touched.stored_messages, &mut batch)?;
        }
        for (key, delta) in counts {
            if delta == 0 {
                continue;
            }
            let base = match self.tree.get(&key)? {
                Some(bytes) => keys::read_be(&bytes)
                    .ok_or_else(|| StoreError::corrupt(&key, "not an 8-byte counter"))?,
                None => 0,
            };
            let value = base
                .checked_add_signed(delta)
                .ok_or_else(|| StoreError::corrupt(&key, "the counter would go below zero"))?;
            batch.insert(key, &keys::be(value)[..]);
        }
        for (key, stored) in self.tickets {
            batch.insert(key, encode(&stored)?);
        }
        for (key, agent) in self.agents {
            match agent {
                Some(agent) => batch.insert(key, encode(&agent)?),
                None => batch.remove(key),
            }
        }
        for (key, state) in self.sync {
            batch.insert(key, encode(&state)?);
        }
        for (id, entry) in self.quarantined {
            match entry {
                Some(entry) => batch.insert(quarantine::key(id), encode(&entry)?),
                None => batch.remove(quarantine::key(id)),
            }
        }
        if let Some(totals) = self.quarantine_totals {
            batch.insert(quarantine::META_KEY, encode(&totals)?);
        }
        let head = self.next - 1;
        if head != self.start_head {
            batch.insert(keys::HEAD_KEY, &keys::be(head)[..]);
        }
        Ok((batch, head))
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{
        ConversationPatch, ConversationStatus, EventKind, IncomingEvent, Timestamp,
    };

    use super::*;
    use crate::query;

    struct Stages {
        writer: Writer,
        flusher: Flusher,
    }

    impl Stages {
        /// Both stages, one after the other, for one group.
        fn commit(&mut self, commands: Vec<Command>) {
            if let Some(staged) = self.writer.stage(commands) {
                self.flusher.make_durable(vec![staged]);
            }
        }
    }

    fn writer(dir: &Path) -> (Stages, watch::Receiver<Sequence>) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let files = DurableFiles::open(dir, true).unwrap();
        let (head_tx, head) = watch::channel(Sequence::ZERO);
        let failed = Failure::default();
        let writer = Writer {
            db: db.clone(),
            options: StoreOptions::default(),
            head: 0,
            failed: failed.clone(),
        };
        let flusher = Flusher {
            db,
            files,
            head: 0,
            head_tx: Arc::new(head_tx),
            failed,
            tail: Arc::new(TailCache::new(16)),
        };
        (Stages { writer, flusher }, head)
    }

    fn event(key: &str, status: ConversationStatus) -> IncomingEvent {
        let mut patch = ConversationPatch::new("c1");
        patch.status = Some(status);
        IncomingEvent {
            dedup_key: key.into(),
            kind: EventKind::ChatUpdated,
            vendor_event: "x".into(),
            occurred_at: Timestamp::from_secs(10).unwrap(),
            payload: EventPayload::Conversation(patch),
        }
    }

    fn append(
        events: Vec<IncomingEvent>,
    ) -> (
        Command,
        oneshot::Receiver<Result<AppendReceipt, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest::new(ConnectionId::new("lc").unwrap(), "livechat", events);
        (
            Command::Append {
                request,
                prepared: None,
                reply,
            },
            answer,
        )
    }

    #[test]
    fn one_group_dedups_across_its_requests_and_sees_its_own_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stages, head) = writer(dir.path());
        let (first, first_answer) = append(vec![event("a", ConversationStatus::Open)]);
        let (second, second_answer) = append(vec![
            event("a", ConversationStatus::Open),
            event("b", ConversationStatus::Closed),
        ]);
        stages.commit(vec![first, second]);

        let first = first_answer.blocking_recv().unwrap().unwrap();
        assert_eq!(first.appended, vec![Sequence(1)]);
        let second = second_answer.blocking_recv().unwrap().unwrap();
        assert_eq!(second.appended, vec![Sequence(2)]);
        assert_eq!(second.duplicates, 1);
        assert_eq!(*head.borrow(), Sequence(2));

        // Both events folded into one conversation, indexed once, under its final status.
        let key =
            keys::conversation_key(&ConversationId::new(ConnectionId::new("lc").unwrap(), "c1"));
        let conversation: Conversation = load(&stages.writer.db, &key).unwrap().unwrap();
        assert_eq!(conversation.status, ConversationStatus::Closed);
        assert_eq!(conversation.event_count, 2);
        assert_eq!(query::conversation_count(&stages.writer.db).unwrap(), 1);
        assert_eq!(
            stages
                .writer
                .db
                .scan_prefix(IndexFamily::All.prefix())
                .count(),
            1
        );
        let open = IndexFamily::Status(ConversationStatus::Open);
        let closed = IndexFamily::Status(ConversationStatus::Closed);
        assert_eq!(stages.writer.db.scan_prefix(open.prefix()).count(), 0);
        assert_eq!(stages.writer.db.scan_prefix(closed.prefix()).count(), 1);
        assert_eq!(stages.writer.db.get(open.count_key()).unwrap(), None);
    }

    #[test]
    fn a_failed_writer_refuses_every_write_and_keeps_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stages, head) = writer(dir.path());
        stages
            .writer
            .failed
            .set("fdatasync: Input/output error".into());
        let (command, answer) = append(vec![event("a", ConversationStatus::Open)]);
        let (reply, sync_answer) = oneshot::channel();
        let sync_error = Command::SyncError {
            connection: ConnectionId::new("lc").unwrap(),
            message: "x".into(),
            reply,
        };
        stages.commit(vec![command, sync_error]);
        let error = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
        assert_eq!(error.code(), switchboard_core::ErrorCode::Unavailable);
        assert!(sync_answer.blocking_recv().unwrap().is_err());
        assert_eq!(*head.borrow(), Sequence::ZERO);
        assert_eq!(stages.writer.db.scan_prefix(keys::LOG_PREFIX).count(), 0);
    }

    #[test]
    fn an_unreadable_record_fails_the_group_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stages, head) = writer(dir.path());
        let key =
            keys::conversation_key(&ConversationId::new(ConnectionId::new("lc").unwrap(), "c1"));
        stages.writer.db.insert(&key, &b"not json"[..]).unwrap();
        let mut other = event("other", ConversationStatus::Open);
        if let EventPayload::Conversation(patch) = &mut other.payload {
            patch.external_id = "c2".into();
        }
        let (good, good_answer) = append(vec![other]);
        let (bad, bad_answer) = append(vec![event("a", ConversationStatus::Open)]);
        stages.commit(vec![good, bad]);
        for answer in [good_answer, bad_answer] {
            let error = answer.blocking_recv().unwrap().unwrap_err();
            assert!(matches!(error, StoreError::Commit(_)), "{error:?}");
        }
        assert_eq!(*head.borrow(), Sequence::ZERO);
        assert_eq!(stages.writer.head, 0);
        assert_eq!(stages.writer.db.scan_prefix(keys::LOG_PREFIX).count(), 0);
        // Nothing was written, so the writer carries on.
        assert!(stages.writer.failed.get().is_none());
    }

    #[test]
    fn staged_groups_are_answered_only_by_the_flush_and_share_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stages, head) = writer(dir.path());
        let (first, mut first_answer) = append(vec![event("a", ConversationStatus::Open)]);
        let (second, mut second_answer) = append(vec![event("b", ConversationStatus::Closed)]);
        let staged_first = stages.writer.stage(vec![first]).unwrap();
        // The second group is prepared over the first one's writes, before any flush.
        let staged_second = stages.writer.stage(vec![second]).unwrap();
        assert_eq!(stages.writer.head, 2);
        assert!(
            first_answer.try_recv().is_err(),
            "answered before the flush"
        );
        assert!(
            second_answer.try_recv().is_err(),
            "answered before the flush"
        );
        assert_eq!(*head.borrow(), Sequence::ZERO);

        stages
            .flusher
            .make_durable(vec![staged_first, staged_second]);
        assert_eq!(
            first_answer.try_recv().unwrap().unwrap().appended,
            vec![Sequence(1)]
        );
        assert_eq!(
            second_answer.try_recv().unwrap().unwrap().appended,
            vec![Sequence(2)]
        );
        assert_eq!(*head.borrow(), Sequence(2));
    }

    #[test]
    fn a_failed_flush_refuses_every_group_waiting_for_it_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stages, head) = writer(dir.path());
        let (first, first_answer) = append(vec![event("a", ConversationStatus::Open)]);
        let (second, second_answer) = append(vec![event("b", ConversationStatus::Open)]);
        let staged_first = stages.writer.stage(vec![first]).unwrap();
        let staged_second = stages.writer.stage(vec![second]).unwrap();
        // As if the flush of the first failed: the flusher records it before answering.
        stages
            .flusher
            .failed
            .set("fdatasync: Input/output error".into());
        stages.flusher.make_durable(vec![staged_first]);
        stages.flusher.make_durable(vec![staged_second]);
        for answer in [first_answer, second_answer] {
            let error = answer.blocking_recv().unwrap().unwrap_err();
            assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
        }
        assert_eq!(*head.borrow(), Sequence::ZERO);
        // The writer refuses from now on without touching sled.
        let (third, third_answer) = append(vec![event("c", ConversationStatus::Open)]);
        assert!(stages.writer.stage(vec![third]).is_none());
        let error = third_answer.blocking_recv().unwrap().unwrap_err();
        assert!(error.to_string().contains("Input/output error"), "{error}");
    }
}
