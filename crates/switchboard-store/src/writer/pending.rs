//! The overlay of one group commit: dedup, sequences and projections, until it becomes one
//! sled batch.

use super::*;

/// A ticket as stored: its state and the sequence of the event that set it, the tie-breaker of
/// last-writer-wins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredTicket {
    pub(crate) ticket: Ticket,
    pub(crate) sequence: Sequence,
}

/// A conversation touched in the current group commit: as stored before it, and now.
pub(super) struct Touched {
    /// The header as stored before this group.
    pub(super) original: Option<Conversation>,
    /// The header, with the messages this group read or wrote.
    pub(super) current: Conversation,
    /// Those messages as stored before this group (`None`: not stored).
    pub(super) stored_messages: BTreeMap<String, Option<Lww<Message>>>,
}

/// The overlay of one group commit: every change, in memory, until it becomes one sled batch.
/// Later events of the batch read the overlay first, so they see the earlier ones.
pub(super) struct Pending<'a> {
    pub(super) tree: &'a sled::Tree,
    /// Where new log entries go; sled gets a pointer to each.
    pub(super) log: &'a LogFiles,
    /// The dedup keys the tree holds.
    pub(super) seen: &'a mut SeenKeys,
    pub(super) start_head: u64,
    /// The sequence through which the tree's conversations are written (`meta/projected`).
    pub(super) projected: u64,
    pub(super) next: u64,
    pub(super) writes: Writes,
    /// The `log/` keys of the entries appended (written into `writes` as they fill).
    pub(super) log_keys: Grouper,
    /// The entries an erasure of this group rewrote, by first sequence: a later erasure of the
    /// group starts from them, not from the tree.
    pub(super) rewritten_entries: HashMap<u64, Vec<u8>>,
    pub(super) appended_keys: HashSet<Vec<u8>>,
    pub(super) conversations: HashMap<Vec<u8>, Touched>,
    pub(super) tickets: HashMap<Vec<u8>, StoredTicket>,
    pub(super) agents: HashMap<Vec<u8>, Option<Agent>>,
    pub(super) sync: HashMap<Vec<u8>, SyncState>,
    pub(super) appended: Vec<AppendedEvent>,
    pub(super) quarantine_limits: QuarantineLimits,
    /// The quarantine's totals once read (and changed) in this group.
    pub(super) quarantine_totals: Option<QuarantineTotals>,
    /// Quarantine entries written (`Some`) or removed (`None`) in this group.
    pub(super) quarantined: HashMap<u64, Option<Quarantined>>,
}

/// Where a newly appended event of a group came from, so that the flusher can put it in the
/// tail cache without the writer spending time on it.
pub(crate) struct AppendedEvent {
    /// The command of the group.
    pub(super) command: usize,
    /// The event of its request.
    pub(super) index: usize,
    pub(super) sequence: Sequence,
    pub(super) id: String,
    /// Whether the request's raw body is stored on this event.
    pub(super) with_raw: bool,
}

impl<'a> Pending<'a> {
    /// A group's overlay over `tree`, whose conversations start from `deferred`: those the
    /// writer holds changed in memory (see [`crate::projection`]).
    pub(super) fn new(
        tree: &'a sled::Tree,
        log: &'a LogFiles,
        seen: &'a mut SeenKeys,
        head: u64,
        quarantine_limits: QuarantineLimits,
        projected: u64,
        deferred: HashMap<Vec<u8>, Touched>,
    ) -> Self {
        Pending {
            tree,
            log,
            seen,
            start_head: head,
            projected,
            next: head + 1,
            writes: Writes::default(),
            log_keys: Grouper::default(),
            rewritten_entries: HashMap::new(),
            appended_keys: HashSet::new(),
            conversations: deferred,
            tickets: HashMap::new(),
            agents: HashMap::new(),
            sync: HashMap::new(),
            appended: Vec::new(),
            quarantine_limits,
            quarantine_totals: None,
            quarantined: HashMap::new(),
        }
    }

    pub(super) fn quarantine_totals(&mut self) -> Result<QuarantineTotals, StoreError> {
        if let Some(totals) = self.quarantine_totals {
            return Ok(totals);
        }
        let totals = load(self.tree, quarantine::META_KEY)?.unwrap_or_default();
        self.quarantine_totals = Some(totals);
        Ok(totals)
    }

    pub(super) fn quarantined(&self, id: u64) -> Result<Option<Quarantined>, StoreError> {
        match self.quarantined.get(&id) {
            Some(entry) => Ok(entry.clone()),
            None => load(self.tree, &quarantine::key(id)),
        }
    }

    pub(super) fn change_quarantine(
        &mut self,
        request: &AppendRequest,
        op: &QuarantineOp,
        receipt: &mut AppendReceipt,
    ) -> Result<(), StoreError> {
        let mut totals = self.quarantine_totals()?;
        let current = match op.target() {
            Some(id) => self.quarantined(id)?,
            None => None,
        };
        if let Some((id, entry)) =
            totals.apply(request, op, current, self.quarantine_limits, receipt)
        {
            self.quarantined.insert(id, entry);
        }
        self.quarantine_totals = Some(totals);
        Ok(())
    }

    /// Appends `request`'s new events as one log entry; `prepared` is that entry when the
    /// caller encoded it already (see [`PreparedRequest`]), else it is encoded here.
    pub(super) fn append(
        &mut self,
        command: usize,
        request: &AppendRequest,
        prepared: Option<&mut PreparedRequest>,
    ) -> Result<AppendReceipt, StoreError> {
        let mut receipt = AppendReceipt::default();
        let mut new = Vec::with_capacity(request.events.len());
        for (index, incoming) in request.events.iter().enumerate() {
            let dedup = keys::dedup_key(&request.connection, &incoming.dedup_key);
            if self.appended_keys.contains(&dedup)
                || (self.seen.may_hold(&dedup) && self.tree.contains_key(&dedup)?)
            {
                receipt.duplicates += 1;
                continue;
            }
            let sequence = Sequence(self.next);
            self.next += 1;
            self.project(request, incoming, sequence)?;
            self.seen.add(&dedup);
            self.writes.insert(&dedup, &keys::be(sequence.0));
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
            let pointer = self.log.append(&record)?;
            self.log_keys.push_into(first.0, pointer, &mut self.writes);
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

    pub(super) fn project(
        &mut self,
        request: &AppendRequest,
        incoming: &IncomingEvent,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        match &incoming.payload {
            EventPayload::Conversation(_) => {
                self.project_conversation(&request.connection, &request.vendor, incoming)?;
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
            EventPayload::Vendor { .. } | EventPayload::Contact(_) => {}
        }
        Ok(())
    }

    /// Merges a conversation event into the overlay (nothing for other events).
    pub(super) fn project_conversation(
        &mut self,
        connection: &ConnectionId,
        vendor: &str,
        incoming: &IncomingEvent,
    ) -> Result<(), StoreError> {
        let EventPayload::Conversation(patch) = &incoming.payload else {
            return Ok(());
        };
        let id = ConversationId::new(connection.clone(), patch.external_id.clone());
        let touched = match self.conversations.entry(keys::conversation_key(&id)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let original = conversations::load_header(self.tree, &id)?;
                let current = original
                    .clone()
                    .unwrap_or_else(|| Conversation::new(id, vendor.to_owned()));
                entry.insert(Touched {
                    original,
                    current,
                    stored_messages: BTreeMap::new(),
                })
            }
        };
        // The merge compares a message with the stored one of the same key: read those (only
        // those) first.
        for message in &patch.messages {
            if touched.stored_messages.contains_key(&message.key) {
                continue;
            }
            let stored = if touched.original.is_some() {
                match conversations::load_message(
                    self.tree,
                    self.log,
                    &touched.current.id,
                    &message.key,
                ) {
                    Ok(stored) => stored,
                    // A damaged record (its bytes lost in a power cut, a bad disk) is left out
                    // of reads: the event takes its place as if nothing were stored.
                    Err(error @ StoreError::Corrupt { .. }) => {
                        crate::unreadable_record(
                            &keys::message_key(&touched.current.id, &message.key),
                            &error,
                        );
                        None
                    }
                    Err(error) => return Err(error),
                }
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
        Ok(())
    }

    /// The append a ticket update becomes, with the updated ticket; the inner error when the
    /// update is refused (nothing is written for it then).
    pub(super) fn update_ticket(
        &mut self,
        update: &TicketUpdate,
    ) -> Result<Result<(AppendRequest, Ticket), StoreError>, StoreError> {
        let key = keys::ticket_key(&update.id.connection, &update.id.external_id);
        let current = match self.tickets.get(&key) {
            Some(stored) => Some(stored.ticket.clone()),
            None => load::<StoredTicket>(self.tree, &key)?.map(|stored| stored.ticket),
        };
        Ok(update.apply(current))
    }

    pub(super) fn sync_state(
        &mut self,
        connection: &ConnectionId,
    ) -> Result<&mut SyncState, StoreError> {
        Ok(match self.sync.entry(keys::sync_key(connection)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let state = load(self.tree, entry.key())?.unwrap_or_default();
                entry.insert(state)
            }
        })
    }

    /// Turns the overlay into one sled batch; returns it with the new head. With `project`,
    /// the changed conversations are written too (with `meta/projected` at the new head);
    /// without, they are handed back, to be held until a later group writes them.
    pub(super) fn finish(mut self, project: bool) -> Result<Finished, StoreError> {
        self.log_keys.flush_into(&mut self.writes);
        let mut writes = self.writes;
        // The conversations' writes are not journaled (see `journal`): the log rebuilds them.
        let batch = &mut writes.batch;
        let head = self.next - 1;
        let (to_write, deferred) = if project {
            if head != self.projected {
                batch.insert(keys::PROJECTED_KEY, &keys::be(head)[..]);
            }
            (self.conversations, HashMap::new())
        } else {
            (HashMap::new(), self.conversations)
        };
        let mut counts: HashMap<Vec<u8>, (i64, Option<String>)> = HashMap::new();
        for (_, touched) in to_write {
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
                        counts.entry(family.count_key()).or_default().0 -= 1;
                    }
                    index_keys(original).to_vec()
                }
                None => Vec::new(),
            };
            for family in IndexFamily::of(&touched.current) {
                let count = counts.entry(family.count_key()).or_default();
                count.0 += 1;
                if let IndexFamily::Connection(_) = family {
                    count.1 = Some(touched.current.vendor.clone());
                }
            }
            for stale in old_index.iter().filter(|k| !new_index.contains(k)) {
                batch.remove(stale.as_slice());
            }
            let key = keys::conversation_key(&touched.current.id);
            for fresh in new_index.iter().filter(|k| !old_index.contains(k)) {
                batch.insert(fresh.as_slice(), key.as_slice());
            }
            conversations::encode_changes(
                touched.current,
                &touched.stored_messages,
                self.log,
                batch,
            )?;
        }
        for (key, (delta, vendor)) in counts {
            if delta == 0 {
                continue;
            }
            let base = match self.tree.get(&key)? {
                Some(bytes) => bytes
                    .get(..8)
                    .and_then(keys::read_be)
                    .ok_or_else(|| StoreError::corrupt(&key, "not an 8-byte counter"))?,
                None => 0,
            };
            let value = base
                .checked_add_signed(delta)
                .ok_or_else(|| StoreError::corrupt(&key, "the counter would go below zero"))?;
            match vendor {
                // A connection's counter carries its vendor (what a query by vendor scans).
                Some(vendor) => batch.insert(key, keys::connection_count_value(value, &vendor)),
                None => batch.insert(key, &keys::be(value)[..]),
            }
        }
        // Journaled from here on.
        for (key, stored) in self.tickets {
            writes.insert(&key, &encode(&stored)?);
        }
        for (key, agent) in self.agents {
            match agent {
                Some(agent) => writes.insert(&key, &encode(&agent)?),
                None => writes.remove(&key),
            }
        }
        for (key, state) in self.sync {
            writes.insert(&key, &encode(&state)?);
        }
        for (id, entry) in self.quarantined {
            match entry {
                Some(entry) => writes.insert(&quarantine::key(id), &encode(&entry)?),
                None => writes.remove(&quarantine::key(id)),
            }
        }
        if let Some(totals) = self.quarantine_totals {
            writes.insert(quarantine::META_KEY, &encode(&totals)?);
        }
        if head != self.start_head {
            writes.insert(keys::HEAD_KEY, &keys::be(head));
        }
        Ok(Finished {
            writes,
            head,
            deferred,
        })
    }
}

/// A group turned into a sled batch.
pub(super) struct Finished {
    pub(super) writes: Writes,
    pub(super) head: u64,
    /// The changed conversations not written by this batch.
    pub(super) deferred: HashMap<Vec<u8>, Touched>,
}
