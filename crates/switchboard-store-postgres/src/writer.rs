//! The write path: one task per store takes the waiting commands (appends, sync errors,
//! ticket updates) and runs them as ONE transaction that starts by locking the `sb_state`
//! row. That lock serializes every writer of every replica until its COMMIT, so sequences are
//! handed out in commit order without gaps, and read-modify-writes (conversations, tickets,
//! the quarantine's totals) see the latest committed state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, EventPayload, IncomingEvent, Sequence,
    Ticket,
};
use switchboard_store::{
    AppendReceipt, AppendRequest, QuarantineLimits, QuarantineOp, QuarantineTotals, Quarantined,
    StoreError, SyncState, TicketUpdate,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error};

use crate::error;
use crate::rows::{self, StoredMessage, StoredTicket};

/// What the writer task is asked to do.
pub(crate) enum Command {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    SyncError {
        connection: ConnectionId,
        message: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    UpdateTicket {
        update: Box<TicketUpdate>,
        reply: oneshot::Sender<Result<Ticket, StoreError>>,
    },
}

enum Outcome {
    Append(AppendReceipt),
    Done,
    Ticket(Box<Result<Ticket, StoreError>>),
}

impl Command {
    fn fail(self, error: StoreError) {
        // A caller that stopped waiting is no longer interested in the answer.
        match self {
            Command::Append { reply, .. } => drop(reply.send(Err(error))),
            Command::SyncError { reply, .. } => drop(reply.send(Err(error))),
            Command::UpdateTicket { reply, .. } => drop(reply.send(Err(error))),
        }
    }

    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Command::Append { reply, .. }, Outcome::Append(receipt)) => {
                drop(reply.send(Ok(receipt)))
            }
            (Command::SyncError { reply, .. }, _) => drop(reply.send(Ok(()))),
            (Command::UpdateTicket { reply, .. }, Outcome::Ticket(result)) => {
                drop(reply.send(*result))
            }
            (command, _) => command.fail(StoreError::Commit("mismatched outcome".into())),
        }
    }
}

/// About how many bytes of bodies a group carries at most (one request alone may carry more):
/// PostgreSQL takes a statement's array of raw bodies as one value, bounded at 1 GiB.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

impl Command {
    /// The bodies this command writes, about (raw bodies, quarantined bodies, payloads are
    /// counted by their messages' text).
    fn bytes(&self) -> usize {
        match self {
            Command::Append { request, .. } => {
                let quarantined = match &request.quarantine {
                    Some(QuarantineOp::Hold(new)) => new.body.len(),
                    _ => 0,
                };
                let texts: usize = request
                    .events
                    .iter()
                    .map(|event| match &event.payload {
                        EventPayload::Conversation(patch) => {
                            patch.messages.iter().map(|m| m.text.len()).sum()
                        }
                        _ => 0,
                    })
                    .sum();
                request.raw.as_ref().map_or(0, String::len) + quarantined + texts
            }
            Command::SyncError { message, .. } => message.len(),
            Command::UpdateTicket { .. } => 0,
        }
    }
}

/// A copy of an error for each command of a failed group.
fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::InvalidArgument(m) => StoreError::InvalidArgument(m.clone()),
        StoreError::Corrupt { key, reason } => StoreError::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        other => StoreError::Commit(other.to_string()),
    }
}

/// What the writer task needs.
pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) head: Arc<watch::Sender<Sequence>>,
    pub(crate) channel: String,
    pub(crate) max_batch: usize,
    pub(crate) quarantine: QuarantineLimits,
}

/// Moves the head forward (never back): the writer after its commits, the listener on
/// notifications and polls.
pub(crate) fn advance(head: &watch::Sender<Sequence>, to: u64) {
    head.send_if_modified(|current| {
        if to > current.0 {
            *current = Sequence(to);
            true
        } else {
            false
        }
    });
}

impl Writer {
    /// Runs until every sender is gone and the channel is drained.
    pub(crate) async fn run(self, mut commands: mpsc::Receiver<Command>) {
        let max_batch = self.max_batch.max(1);
        let mut group = Vec::with_capacity(max_batch);
        while let Some(first) = commands.recv().await {
            let mut bytes = first.bytes();
            group.push(first);
            while group.len() < max_batch && bytes < MAX_GROUP_BYTES {
                match commands.try_recv() {
                    Ok(command) => {
                        bytes += command.bytes();
                        group.push(command);
                    }
                    Err(_) => break,
                }
            }
            let commands = std::mem::replace(&mut group, Vec::with_capacity(max_batch));
            let started = std::time::Instant::now();
            match self.commit(&commands).await {
                Ok((outcomes, head, appended)) => {
                    advance(&self.head, head);
                    metrics::counter!("switchboard_events_appended_total").increment(appended);
                    metrics::histogram!("switchboard_store_batch_size").record(appended as f64);
                    metrics::histogram!("switchboard_store_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    debug!(requests = commands.len(), appended, head, "group committed");
                    for (command, outcome) in commands.into_iter().zip(outcomes) {
                        command.answer(outcome);
                    }
                }
                Err(e) => {
                    error!(error = %e, requests = commands.len(), "group commit failed (rolled back, or its COMMIT unconfirmed)");
                    for command in commands {
                        command.fail(copy(&e));
                    }
                }
            }
        }
    }

    /// One transaction for the group: the answers, the head after it and how many events it
    /// appended.
    async fn commit(&self, commands: &[Command]) -> Result<(Vec<Outcome>, u64, u64), StoreError> {
        let mut client = self.pool.get().await.map_err(error::pool)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| error::pg("starting a transaction", e))?;
        let mut group = Group::lock(&tx, self.quarantine).await?;
        group.preload(commands).await?;
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            outcomes.push(match command {
                Command::Append { request, .. } => {
                    Outcome::Append(group.append(request, true).await?)
                }
                Command::SyncError {
                    connection,
                    message,
                    ..
                } => {
                    group.sync_state(connection).await?.last_error = Some(message.clone());
                    Outcome::Done
                }
                Command::UpdateTicket { update, .. } => match group.update_ticket(update).await? {
                    Ok((request, ticket)) => {
                        group.append(&request, false).await?;
                        Outcome::Ticket(Box::new(Ok(ticket)))
                    }
                    Err(refused) => Outcome::Ticket(Box::new(Err(refused))),
                },
            });
        }
        let start = group.start_head;
        let head = group.finish(&self.channel).await?;
        tx.commit()
            .await
            .map_err(|e| error::pg("committing the transaction", e))?;
        Ok((outcomes, head, head - start))
    }
}

/// A conversation the group touched: its stored state with the messages loaded so far.
struct Touched {
    conversation: Conversation,
    existed: bool,
    dirty: bool,
    /// Message keys read from the database (present or not).
    loaded: HashSet<String>,
    /// Message keys this group changed.
    changed: HashSet<String>,
}

/// A new row of the log.
struct NewEvent {
    sequence: i64,
    id: String,
    connection: String,
    dedup_key: Vec<u8>,
    vendor: Vec<u8>,
    received_at: i64,
    request_id: Option<Vec<u8>>,
    kind: &'static str,
    vendor_event: Vec<u8>,
    occurred_at: i64,
    payload: String,
    raw: Option<Vec<u8>>,
}

/// The state of one group's transaction: the locked counters and every change, in memory,
/// until [`Group::finish`] writes them with a few set-based statements.
struct Group<'a, 't> {
    tx: &'a Transaction<'t>,
    start_head: u64,
    next: u64,
    quarantine: QuarantineTotals,
    quarantine_changed: bool,
    limits: QuarantineLimits,
    appended_keys: HashSet<(ConnectionId, String)>,
    /// The dedup keys of the group's appends the log already held, as `(connection, key)`.
    known: HashSet<(String, Vec<u8>)>,
    events: Vec<NewEvent>,
    conversations: HashMap<Vec<u8>, Touched>,
    tickets: HashMap<Vec<u8>, Option<StoredTicket>>,
    agents: HashMap<(ConnectionId, String), Option<Agent>>,
    sync: HashMap<ConnectionId, SyncState>,
    quarantined: HashMap<u64, Option<Quarantined>>,
}

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| error::pg(context, e)
}

impl<'a, 't> Group<'a, 't> {
    /// Locks the state row: from here until COMMIT no other writer of any replica runs.
    async fn lock(tx: &'a Transaction<'t>, limits: QuarantineLimits) -> Result<Self, StoreError> {
        let statement = tx
            .prepare_cached(
                "SELECT head, quarantine_next_id, quarantine_entries, quarantine_bytes FROM sb_state WHERE id = 1 FOR UPDATE",
            )
            .await
            .map_err(pg("locking the head"))?;
        let row = tx
            .query_one(&statement, &[])
            .await
            .map_err(pg("locking the head"))?;
        let get = |i: usize| -> Result<i64, StoreError> { row.try_get(i).map_err(pg("sb_state")) };
        let head = get(0)? as u64;
        Ok(Group {
            tx,
            start_head: head,
            next: head + 1,
            quarantine: QuarantineTotals {
                next_id: get(1)? as u64,
                entries: get(2)? as u64,
                bytes: get(3)? as u64,
            },
            quarantine_changed: false,
            limits,
            appended_keys: HashSet::new(),
            known: HashSet::new(),
            events: Vec::new(),
            conversations: HashMap::new(),
            tickets: HashMap::new(),
            agents: HashMap::new(),
            sync: HashMap::new(),
            quarantined: HashMap::new(),
        })
    }

    /// Appends one request's new events in memory. `preloaded`: [`Group::preload`] read what
    /// the request needs (its dedup keys above all); otherwise it is read now.
    async fn append(
        &mut self,
        request: &AppendRequest,
        preloaded: bool,
    ) -> Result<AppendReceipt, StoreError> {
        let mut receipt = AppendReceipt::default();
        let known: HashSet<Vec<u8>> = if preloaded {
            let connection = request.connection.as_str();
            request
                .events
                .iter()
                .map(|e| e.dedup_key.as_bytes().to_vec())
                .filter(|key| self.known.contains(&(connection.to_owned(), key.clone())))
                .collect()
        } else {
            self.known_keys(request).await?
        };
        let fresh: Vec<&IncomingEvent> = request
            .events
            .iter()
            .filter(|e| !known.contains(e.dedup_key.as_bytes()))
            .collect();
        self.load_for(request, &fresh).await?;
        let mut raw = request.raw.as_deref();
        for incoming in &request.events {
            let seen = (request.connection.clone(), incoming.dedup_key.clone());
            if known.contains(incoming.dedup_key.as_bytes()) || self.appended_keys.contains(&seen) {
                receipt.duplicates += 1;
                continue;
            }
            let sequence = Sequence(self.next);
            self.next += 1;
            self.project(request, incoming, sequence)?;
            self.events.push(NewEvent {
                sequence: sequence.0 as i64,
                id: uuid::Uuid::now_v7().to_string(),
                connection: request.connection.as_str().to_owned(),
                dedup_key: incoming.dedup_key.as_bytes().to_vec(),
                vendor: request.vendor.as_bytes().to_vec(),
                received_at: request.received_at.as_millis(),
                request_id: request.request_id.as_ref().map(|r| r.as_bytes().to_vec()),
                kind: incoming.kind.as_str(),
                vendor_event: incoming.vendor_event.as_bytes().to_vec(),
                occurred_at: incoming.occurred_at.as_millis(),
                payload: rows::encode(&incoming.payload)?,
                raw: raw.take().map(|raw| raw.as_bytes().to_vec()),
            });
            self.appended_keys.insert(seen);
            receipt.appended.push(sequence);
        }
        if let Some(op) = &request.quarantine {
            self.change_quarantine(request, op, &mut receipt).await?;
        }
        if let Some(update) = &request.sync {
            let state = self.sync_state(&request.connection).await?;
            state.cursor = Some(update.cursor.clone());
            state.records_pulled = state.records_pulled.saturating_add(update.records);
            state.last_success = Some(update.at);
            state.last_error = None;
        }
        Ok(receipt)
    }

    /// Reads, in one statement per kind, what the whole group needs: which of its dedup keys
    /// the log holds, the conversations, messages and tickets its new events change (rows
    /// locked until COMMIT), the tickets its updates change and the sync states it moves. The
    /// commands then run in memory; a group costs a few round trips, not a few per request.
    async fn preload(&mut self, commands: &[Command]) -> Result<(), StoreError> {
        let mut connections = Vec::new();
        let mut keys = Vec::new();
        for command in commands {
            if let Command::Append { request, .. } = command {
                for event in &request.events {
                    connections.push(request.connection.as_str());
                    keys.push(event.dedup_key.as_bytes());
                }
            }
        }
        if !keys.is_empty() {
            let statement = self
                .tx
                .prepare_cached(
                    "SELECT e.connection, e.dedup_key FROM sb_events e JOIN unnest($1::text[], $2::bytea[]) AS k(connection, dedup_key) ON e.connection = k.connection AND e.dedup_key = k.dedup_key",
                )
                .await
                .map_err(pg("reading dedup keys"))?;
            let rows = self
                .tx
                .query(&statement, &[&connections, &keys])
                .await
                .map_err(pg("reading dedup keys"))?;
            for row in rows {
                self.known.insert((
                    row.try_get(0).map_err(pg("reading dedup keys"))?,
                    row.try_get(1).map_err(pg("reading dedup keys"))?,
                ));
            }
        }
        let mut conversations: Vec<(Vec<u8>, ConversationId, &str)> = Vec::new();
        let mut seen_conversations = HashSet::new();
        let mut messages: Vec<(Vec<u8>, String)> = Vec::new();
        let mut tickets: Vec<Vec<u8>> = Vec::new();
        let mut sync: Vec<ConnectionId> = Vec::new();
        for command in commands {
            match command {
                Command::Append { request, .. } => {
                    let connection = request.connection.as_str();
                    for event in &request.events {
                        let known = (connection.to_owned(), event.dedup_key.as_bytes().to_vec());
                        if self.known.contains(&known) {
                            continue;
                        }
                        match &event.payload {
                            EventPayload::Conversation(patch) => {
                                let key = rows::key(&request.connection, &patch.external_id);
                                if seen_conversations.insert(key.clone()) {
                                    let id = ConversationId::new(
                                        request.connection.clone(),
                                        patch.external_id.clone(),
                                    );
                                    conversations.push((key.clone(), id, &request.vendor));
                                }
                                for message in &patch.messages {
                                    messages.push((key.clone(), message.key.clone()));
                                }
                            }
                            EventPayload::Ticket(ticket) => {
                                tickets.push(rows::key(&request.connection, &ticket.external_id));
                            }
                            EventPayload::Agent { .. }
                            | EventPayload::Vendor { .. }
                            | EventPayload::Contact(_) => {}
                        }
                    }
                    if request.sync.is_some() {
                        sync.push(request.connection.clone());
                    }
                }
                Command::UpdateTicket { update, .. } => {
                    tickets.push(rows::key(&update.id.connection, &update.id.external_id));
                }
                Command::SyncError { connection, .. } => sync.push(connection.clone()),
            }
        }
        tickets.sort();
        tickets.dedup();
        messages.sort();
        messages.dedup();
        sync.sort();
        sync.dedup();
        self.load_conversations(&conversations).await?;
        self.load_messages(&messages).await?;
        self.load_tickets(&tickets).await?;
        self.load_sync(&sync).await
    }

    /// The request's dedup keys the log already holds (committed by any replica: the lock
    /// makes every earlier commit visible).
    async fn known_keys(&self, request: &AppendRequest) -> Result<HashSet<Vec<u8>>, StoreError> {
        if request.events.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<&[u8]> = request
            .events
            .iter()
            .map(|e| e.dedup_key.as_bytes())
            .collect();
        let statement = self
            .tx
            .prepare_cached(
                "SELECT dedup_key FROM sb_events WHERE connection = $1 AND dedup_key = ANY($2::bytea[])",
            )
            .await
            .map_err(pg("reading dedup keys"))?;
        let rows = self
            .tx
            .query(&statement, &[&request.connection.as_str(), &keys])
            .await
            .map_err(pg("reading dedup keys"))?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, Vec<u8>>(0)
                    .map_err(pg("reading dedup keys"))
            })
            .collect()
    }

    /// Reads, in a few statements, every conversation, message and ticket the new events of a
    /// request change and the group has not read yet (rows locked until COMMIT).
    async fn load_for(
        &mut self,
        request: &AppendRequest,
        events: &[&IncomingEvent],
    ) -> Result<(), StoreError> {
        let mut conversations: Vec<(Vec<u8>, ConversationId, &str)> = Vec::new();
        let mut messages: Vec<(Vec<u8>, String)> = Vec::new();
        let mut tickets: Vec<Vec<u8>> = Vec::new();
        for event in events {
            match &event.payload {
                EventPayload::Conversation(patch) => {
                    let key = rows::key(&request.connection, &patch.external_id);
                    if !self.conversations.contains_key(&key)
                        && !conversations.iter().any(|(k, _, _)| *k == key)
                    {
                        let id = ConversationId::new(
                            request.connection.clone(),
                            patch.external_id.clone(),
                        );
                        conversations.push((key.clone(), id, &request.vendor));
                    }
                    for message in &patch.messages {
                        let loaded = self
                            .conversations
                            .get(&key)
                            .is_some_and(|t| t.loaded.contains(&message.key));
                        if !loaded {
                            messages.push((key.clone(), message.key.clone()));
                        }
                    }
                }
                EventPayload::Ticket(ticket) => {
                    let key = rows::key(&request.connection, &ticket.external_id);
                    if !self.tickets.contains_key(&key) && !tickets.contains(&key) {
                        tickets.push(key);
                    }
                }
                EventPayload::Agent { .. }
                | EventPayload::Vendor { .. }
                | EventPayload::Contact(_) => {}
            }
        }
        self.load_conversations(&conversations).await?;
        self.load_messages(&messages).await?;
        self.load_tickets(&tickets).await
    }

    /// Reads (and locks) conversations by key; one not stored starts as
    /// `Conversation::new(id, vendor)`.
    async fn load_conversations(
        &mut self,
        wanted: &[(Vec<u8>, ConversationId, &str)],
    ) -> Result<(), StoreError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<&[u8]> = wanted.iter().map(|(key, _, _)| key.as_slice()).collect();
        let statement = self
            .tx
            .prepare_cached(
                "SELECT id, body FROM sb_conversations WHERE id = ANY($1::bytea[]) FOR UPDATE",
            )
            .await
            .map_err(pg("reading conversations"))?;
        let rows = self
            .tx
            .query(&statement, &[&keys])
            .await
            .map_err(pg("reading conversations"))?;
        for row in rows {
            let key: Vec<u8> = row.try_get(0).map_err(pg("reading conversations"))?;
            let body: String = row.try_get(1).map_err(pg("reading conversations"))?;
            let conversation: Conversation = rows::decode(
                || format!("sb_conversations {}", String::from_utf8_lossy(&key)),
                &body,
            )?;
            self.conversations.insert(
                key,
                Touched {
                    conversation,
                    existed: true,
                    dirty: false,
                    loaded: HashSet::new(),
                    changed: HashSet::new(),
                },
            );
        }
        for (key, id, vendor) in wanted {
            if !self.conversations.contains_key(key) {
                self.conversations.insert(
                    key.clone(),
                    Touched {
                        conversation: Conversation::new(id.clone(), *vendor),
                        existed: false,
                        dirty: false,
                        loaded: HashSet::new(),
                        changed: HashSet::new(),
                    },
                );
            }
        }
        Ok(())
    }

    async fn load_messages(&mut self, wanted: &[(Vec<u8>, String)]) -> Result<(), StoreError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let conversations: Vec<&[u8]> = wanted.iter().map(|(c, _)| c.as_slice()).collect();
        let keys: Vec<&[u8]> = wanted.iter().map(|(_, k)| k.as_bytes()).collect();
        let statement = self
            .tx
            .prepare_cached(
                "SELECT m.conversation, m.key, m.body FROM sb_messages m JOIN unnest($1::bytea[], $2::bytea[]) AS w(conversation, key) ON m.conversation = w.conversation AND m.key = w.key",
            )
            .await
            .map_err(pg("reading messages"))?;
        let rows = self
            .tx
            .query(&statement, &[&conversations, &keys])
            .await
            .map_err(pg("reading messages"))?;
        for row in rows {
            let conversation: Vec<u8> = row.try_get(0).map_err(pg("reading messages"))?;
            let what = || format!("sb_messages {}", String::from_utf8_lossy(&conversation));
            let key = rows::text(row.try_get(1).map_err(pg("reading messages"))?, what)?;
            let body: String = row.try_get(2).map_err(pg("reading messages"))?;
            let message: StoredMessage = rows::decode(what, &body)?;
            if let Some(touched) = self.conversations.get_mut(&conversation) {
                touched.conversation.messages.insert(key, message);
            }
        }
        for (conversation, key) in wanted {
            if let Some(touched) = self.conversations.get_mut(conversation) {
                touched.loaded.insert(key.clone());
            }
        }
        Ok(())
    }

    async fn load_tickets(&mut self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let statement = self
            .tx
            .prepare_cached(
                "SELECT key, sequence, body FROM sb_tickets WHERE key = ANY($1::bytea[]) FOR UPDATE",
            )
            .await
            .map_err(pg("reading tickets"))?;
        let rows = self
            .tx
            .query(&statement, &[&keys])
            .await
            .map_err(pg("reading tickets"))?;
        for key in keys {
            self.tickets.insert(key.clone(), None);
        }
        for row in rows {
            let key: Vec<u8> = row.try_get(0).map_err(pg("reading tickets"))?;
            let sequence: i64 = row.try_get(1).map_err(pg("reading tickets"))?;
            let body: String = row.try_get(2).map_err(pg("reading tickets"))?;
            let ticket: Ticket = rows::decode(
                || format!("sb_tickets {}", String::from_utf8_lossy(&key)),
                &body,
            )?;
            self.tickets.insert(
                key,
                Some(StoredTicket {
                    ticket,
                    sequence,
                    dirty: false,
                }),
            );
        }
        Ok(())
    }

    /// Applies one new event to the projections in memory (everything it needs was loaded).
    fn project(
        &mut self,
        request: &AppendRequest,
        incoming: &IncomingEvent,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        match &incoming.payload {
            EventPayload::Conversation(patch) => {
                let key = rows::key(&request.connection, &patch.external_id);
                let touched = self.conversations.get_mut(&key).ok_or_else(|| {
                    StoreError::Commit("a conversation was not loaded before its event".into())
                })?;
                let before: Vec<Option<StoredMessage>> = patch
                    .messages
                    .iter()
                    .map(|m| touched.conversation.messages.get(&m.key).cloned())
                    .collect();
                touched
                    .conversation
                    .apply(patch, incoming.occurred_at, &incoming.dedup_key);
                touched.dirty = true;
                for (message, before) in patch.messages.iter().zip(before) {
                    if touched.conversation.messages.get(&message.key) != before.as_ref() {
                        touched.changed.insert(message.key.clone());
                    }
                }
            }
            EventPayload::Ticket(ticket) => {
                let key = rows::key(&request.connection, &ticket.external_id);
                let slot = self.tickets.entry(key).or_insert(None);
                let newer = slot.as_ref().is_none_or(|current| {
                    (current.ticket.updated_at, current.sequence)
                        < (ticket.updated_at, sequence.0 as i64)
                });
                if newer {
                    *slot = Some(StoredTicket {
                        ticket: ticket.clone(),
                        sequence: sequence.0 as i64,
                        dirty: true,
                    });
                }
            }
            EventPayload::Agent { agent, deleted } => {
                self.agents.insert(
                    (request.connection.clone(), agent.login.clone()),
                    (!deleted).then(|| agent.clone()),
                );
            }
            EventPayload::Vendor { .. } | EventPayload::Contact(_) => {}
        }
        Ok(())
    }

    /// The append a ticket update becomes, with the updated ticket; the inner error when the
    /// update is refused (nothing is written for it then).
    async fn update_ticket(
        &mut self,
        update: &TicketUpdate,
    ) -> Result<Result<(AppendRequest, Ticket), StoreError>, StoreError> {
        let key = rows::key(&update.id.connection, &update.id.external_id);
        if !self.tickets.contains_key(&key) {
            self.load_tickets(std::slice::from_ref(&key)).await?;
        }
        let current = self
            .tickets
            .get(&key)
            .and_then(|slot| slot.as_ref())
            .map(|stored| stored.ticket.clone());
        Ok(update.apply(current))
    }

    async fn load_sync(&mut self, connections: &[ConnectionId]) -> Result<(), StoreError> {
        let missing: Vec<&str> = connections
            .iter()
            .filter(|c| !self.sync.contains_key(*c))
            .map(ConnectionId::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let statement = self
            .tx
            .prepare_cached(
                "SELECT connection, body FROM sb_sync WHERE connection = ANY($1::text[]) FOR UPDATE",
            )
            .await
            .map_err(pg("reading the sync state"))?;
        let rows = self
            .tx
            .query(&statement, &[&missing])
            .await
            .map_err(pg("reading the sync state"))?;
        for row in rows {
            let connection: String = row.try_get(0).map_err(pg("reading the sync state"))?;
            let body: String = row.try_get(1).map_err(pg("reading the sync state"))?;
            let state: SyncState = rows::decode(|| format!("sb_sync {connection}"), &body)?;
            let connection = ConnectionId::new(connection)
                .map_err(|e| error::corrupt("sb_sync", format!("connection id {}", e.0)))?;
            self.sync.insert(connection, state);
        }
        for connection in connections {
            self.sync.entry(connection.clone()).or_default();
        }
        Ok(())
    }

    async fn sync_state(
        &mut self,
        connection: &ConnectionId,
    ) -> Result<&mut SyncState, StoreError> {
        if !self.sync.contains_key(connection) {
            let statement = self
                .tx
                .prepare_cached("SELECT body FROM sb_sync WHERE connection = $1 FOR UPDATE")
                .await
                .map_err(pg("reading the sync state"))?;
            let row = self
                .tx
                .query_opt(&statement, &[&connection.as_str()])
                .await
                .map_err(pg("reading the sync state"))?;
            let state = match row {
                Some(row) => {
                    let body: String = row.try_get(0).map_err(pg("reading the sync state"))?;
                    rows::decode(|| format!("sb_sync {connection}"), &body)?
                }
                None => SyncState::default(),
            };
            self.sync.insert(connection.clone(), state);
        }
        self.sync
            .get_mut(connection)
            .ok_or_else(|| StoreError::Commit("the sync state vanished".into()))
    }

    async fn quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        if let Some(entry) = self.quarantined.get(&id) {
            return Ok(entry.clone());
        }
        crate::read::quarantined(self.tx, id).await
    }

    async fn change_quarantine(
        &mut self,
        request: &AppendRequest,
        op: &QuarantineOp,
        receipt: &mut AppendReceipt,
    ) -> Result<(), StoreError> {
        let current = match op.target() {
            Some(id) => self.quarantined(id).await?,
            None => None,
        };
        if let Some((id, entry)) = self
            .quarantine
            .apply(request, op, current, self.limits, receipt)
        {
            self.quarantined.insert(id, entry);
        }
        self.quarantine_changed = true;
        Ok(())
    }

    /// Writes every change of the group, moves the head and queues the notification (sent by
    /// PostgreSQL at COMMIT). Returns the new head.
    async fn finish(self, channel: &str) -> Result<u64, StoreError> {
        let tx = self.tx;
        let head = self.next - 1;
        let mut new_conversations = 0i64;
        let mut conversation_rows = ConversationRows::default();
        let mut message_rows = MessageRows::default();
        for (key, mut touched) in self.conversations {
            if !touched.dirty {
                continue;
            }
            if !touched.existed {
                new_conversations += 1;
            }
            for message_key in &touched.changed {
                if let Some(message) = touched.conversation.messages.get(message_key) {
                    message_rows.conversation.push(key.clone());
                    message_rows.key.push(message_key.as_bytes().to_vec());
                    message_rows.body.push(rows::encode(message)?);
                }
            }
            let conversation = &mut touched.conversation;
            conversation_rows
                .connection
                .push(conversation.id.connection.as_str().to_owned());
            conversation_rows
                .vendor
                .push(conversation.vendor.as_bytes().to_vec());
            conversation_rows.status.push(conversation.status.as_str());
            conversation_rows
                .started_at
                .push(conversation.started_at.map(|t| t.as_millis()));
            conversation_rows
                .updated_at
                .push(conversation.updated_at.as_millis());
            conversation_rows.sort_at.push(rows::sort_at(conversation));
            conversation_rows
                .body
                .push(rows::conversation_body(conversation)?);
            conversation_rows.id.push(key);
        }
        // Sent together: the connection pipelines them, one round trip for all.
        futures::try_join!(
            write_events(tx, &self.events),
            conversation_rows.write(tx),
            message_rows.write(tx),
            write_tickets(tx, self.tickets),
            write_agents(tx, self.agents),
        )?;
        for (connection, state) in self.sync {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO sb_sync (connection, body) VALUES ($1, $2) ON CONFLICT (connection) DO UPDATE SET body = EXCLUDED.body",
                )
                .await
                .map_err(pg("saving the sync state"))?;
            tx.execute(&statement, &[&connection.as_str(), &rows::encode(&state)?])
                .await
                .map_err(pg("saving the sync state"))?;
        }
        for (id, entry) in self.quarantined {
            crate::read::write_quarantined(tx, id, entry.as_ref()).await?;
        }
        let changed = head != self.start_head || new_conversations > 0 || self.quarantine_changed;
        if changed {
            let statement = tx
                .prepare_cached(
                    "UPDATE sb_state SET head = $1, conversations = conversations + $2, quarantine_next_id = $3, quarantine_entries = $4, quarantine_bytes = $5 WHERE id = 1",
                )
                .await
                .map_err(pg("moving the head"))?;
            tx.execute(
                &statement,
                &[
                    &(head as i64),
                    &new_conversations,
                    &(self.quarantine.next_id as i64),
                    &(self.quarantine.entries as i64),
                    &(self.quarantine.bytes as i64),
                ],
            )
            .await
            .map_err(pg("moving the head"))?;
        }
        if head != self.start_head {
            let statement = tx
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(pg("announcing the head"))?;
            tx.execute(&statement, &[&channel, &head.to_string()])
                .await
                .map_err(pg("announcing the head"))?;
        }
        Ok(head)
    }
}

async fn write_events(tx: &Transaction<'_>, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let e = events;
    let sequence: Vec<i64> = e.iter().map(|e| e.sequence).collect();
    let id: Vec<&str> = e.iter().map(|e| e.id.as_str()).collect();
    let connection: Vec<&str> = e.iter().map(|e| e.connection.as_str()).collect();
    let dedup_key: Vec<&[u8]> = e.iter().map(|e| e.dedup_key.as_slice()).collect();
    let vendor: Vec<&[u8]> = e.iter().map(|e| e.vendor.as_slice()).collect();
    let received_at: Vec<i64> = e.iter().map(|e| e.received_at).collect();
    let request_id: Vec<Option<&[u8]>> = e.iter().map(|e| e.request_id.as_deref()).collect();
    let kind: Vec<&str> = e.iter().map(|e| e.kind).collect();
    let vendor_event: Vec<&[u8]> = e.iter().map(|e| e.vendor_event.as_slice()).collect();
    let occurred_at: Vec<i64> = e.iter().map(|e| e.occurred_at).collect();
    let payload: Vec<&str> = e.iter().map(|e| e.payload.as_str()).collect();
    let raw: Vec<Option<&[u8]>> = e.iter().map(|e| e.raw.as_deref()).collect();
    let statement = tx
        .prepare_cached(
            "INSERT INTO sb_events (sequence, id, connection, dedup_key, vendor, received_at, request_id, kind, vendor_event, occurred_at, payload, raw) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::bigint[], $7::bytea[], $8::text[], $9::bytea[], $10::bigint[], $11::text[], $12::bytea[])",
        )
        .await
        .map_err(pg("appending events"))?;
    tx.execute(
        &statement,
        &[
            &sequence,
            &id,
            &connection,
            &dedup_key,
            &vendor,
            &received_at,
            &request_id,
            &kind,
            &vendor_event,
            &occurred_at,
            &payload,
            &raw,
        ],
    )
    .await
    .map_err(pg("appending events"))?;
    Ok(())
}

#[derive(Default)]
struct ConversationRows {
    id: Vec<Vec<u8>>,
    connection: Vec<String>,
    vendor: Vec<Vec<u8>>,
    status: Vec<&'static str>,
    started_at: Vec<Option<i64>>,
    updated_at: Vec<i64>,
    sort_at: Vec<i64>,
    body: Vec<String>,
}

impl ConversationRows {
    async fn write(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.id.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO sb_conversations (id, connection, vendor, status, started_at, updated_at, sort_at, body) \
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[]) \
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at, sort_at = EXCLUDED.sort_at, body = EXCLUDED.body",
            )
            .await
            .map_err(pg("saving conversations"))?;
        tx.execute(
            &statement,
            &[
                &self.id,
                &self.connection,
                &self.vendor,
                &self.status,
                &self.started_at,
                &self.updated_at,
                &self.sort_at,
                &self.body,
            ],
        )
        .await
        .map_err(pg("saving conversations"))?;
        Ok(())
    }
}

#[derive(Default)]
struct MessageRows {
    conversation: Vec<Vec<u8>>,
    key: Vec<Vec<u8>>,
    body: Vec<String>,
}

impl MessageRows {
    async fn write(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.key.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO sb_messages (conversation, key, body) SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[]) \
                 ON CONFLICT (conversation, key) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .map_err(pg("saving messages"))?;
        tx.execute(&statement, &[&self.conversation, &self.key, &self.body])
            .await
            .map_err(pg("saving messages"))?;
        Ok(())
    }
}

async fn write_tickets(
    tx: &Transaction<'_>,
    tickets: HashMap<Vec<u8>, Option<StoredTicket>>,
) -> Result<(), StoreError> {
    let mut key = Vec::new();
    let mut connection = Vec::new();
    let mut status = Vec::new();
    let mut updated_at = Vec::new();
    let mut sequence = Vec::new();
    let mut body = Vec::new();
    for (k, stored) in tickets {
        let Some(stored) = stored.filter(|s| s.dirty) else {
            continue;
        };
        let split = k.iter().position(|b| *b == b'/').unwrap_or(k.len());
        connection.push(String::from_utf8_lossy(&k[..split]).into_owned());
        key.push(k);
        status.push(stored.ticket.status.as_str());
        updated_at.push(stored.ticket.updated_at.as_millis());
        sequence.push(stored.sequence);
        body.push(rows::encode(&stored.ticket)?);
    }
    if key.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO sb_tickets (key, connection, status, updated_at, sequence, body) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) \
             ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, sequence = EXCLUDED.sequence, body = EXCLUDED.body",
        )
        .await
        .map_err(pg("saving tickets"))?;
    tx.execute(
        &statement,
        &[&key, &connection, &status, &updated_at, &sequence, &body],
    )
    .await
    .map_err(pg("saving tickets"))?;
    Ok(())
}

async fn write_agents(
    tx: &Transaction<'_>,
    agents: HashMap<(ConnectionId, String), Option<Agent>>,
) -> Result<(), StoreError> {
    let (mut put_connection, mut put_login, mut put_body) = (Vec::new(), Vec::new(), Vec::new());
    let (mut gone_connection, mut gone_login) = (Vec::new(), Vec::new());
    for ((connection, login), agent) in agents {
        match agent {
            Some(agent) => {
                put_connection.push(connection.as_str().to_owned());
                put_login.push(login.into_bytes());
                put_body.push(rows::encode(&agent)?);
            }
            None => {
                gone_connection.push(connection.as_str().to_owned());
                gone_login.push(login.into_bytes());
            }
        }
    }
    if !put_login.is_empty() {
        let statement = tx
            .prepare_cached(
                "INSERT INTO sb_agents (connection, login, body) SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[]) \
                 ON CONFLICT (connection, login) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .map_err(pg("saving agents"))?;
        tx.execute(&statement, &[&put_connection, &put_login, &put_body])
            .await
            .map_err(pg("saving agents"))?;
    }
    if !gone_login.is_empty() {
        let statement = tx
            .prepare_cached(
                "DELETE FROM sb_agents a USING unnest($1::text[], $2::bytea[]) AS g(connection, login) WHERE a.connection = g.connection AND a.login = g.login",
            )
            .await
            .map_err(pg("removing agents"))?;
        tx.execute(&statement, &[&gone_connection, &gone_login])
            .await
            .map_err(pg("removing agents"))?;
    }
    Ok(())
}
