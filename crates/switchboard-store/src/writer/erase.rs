//! An erasure as a command of a group: checked against the tree and the group's overlay
//! first (a refused plan writes nothing and fails only its own command), then the log
//! entries, conversations (header and every message) and tickets rewritten in the group's
//! batch, with the `contact_erased` event appended to it.

use std::collections::BTreeSet;

use super::*;
use crate::record::{erase_entry, unpacked_entry};
use crate::{ErasurePlan, ErasureReport};
use pending::Touched;

/// What an erasure changes, read and checked before anything is changed.
pub(super) struct Checked {
    /// For each `log/` key that holds a planned event, every entry under it, in order: its
    /// first sequence and its bytes (erased where it holds one). The key's entries are all
    /// written again, so that they keep sharing one key (see [`Grouper`]).
    keys: Vec<Vec<(u64, Vec<u8>)>>,
    /// The events of the entries erased, as they now read.
    events: Vec<Event>,
}

impl Pending<'_> {
    /// Reads and checks what `plan` (normalized) erases; the inner error refuses the plan.
    pub(super) fn check_erasure(
        &self,
        plan: &ErasurePlan,
    ) -> Result<Result<Checked, StoreError>, StoreError> {
        let planned: BTreeSet<u64> = plan.events.iter().map(|s| s.0).collect();
        if let Some(last) = planned.last()
            && *last > self.start_head
        {
            return Ok(Err(StoreError::NotFound(format!(
                "event {last} is not in the log (its head is {}); nothing was erased",
                self.start_head
            ))));
        }
        let (mut rewritten, mut erased) = (Vec::new(), Vec::new());
        let mut remaining = planned.iter().copied().peekable();
        while let Some(&wanted) = remaining.peek() {
            let Some(entry) = self
                .tree
                .range(keys::log_key(0)..=keys::log_key(wanted))
                .next_back()
            else {
                return Ok(Err(StoreError::NotFound(format!(
                    "event {wanted} is not in the log; nothing was erased"
                ))));
            };
            let (group_key, group_value) = entry?;
            // A damaged entry refuses the plan, not the group.
            let group = match segments::expand(&group_key, &group_value) {
                Ok(group) => group,
                Err(error) => return Ok(Err(error)),
            };
            let mut held = BTreeSet::new();
            let mut entries = Vec::with_capacity(group.len());
            for (key, value) in group {
                let Some(held_here) = crate::record::entry_sequences(&key, &value) else {
                    return Ok(Err(StoreError::corrupt(&key, "not a log entry")));
                };
                let first = held_here.start;
                let bytes = match self.rewritten_entries.get(&first) {
                    Some(bytes) => segments::Entry::Inline(bytes),
                    None => match self.log.entry(&key, &value) {
                        Ok(bytes) => bytes,
                        Err(error) => return Ok(Err(error)),
                    },
                };
                if planned.range(held_here).next().is_none() {
                    // Written again as it is, beside the erased ones of its key.
                    entries.push((first, unpacked_entry(&key, &bytes).into_owned()));
                    continue;
                }
                let (bytes, events) = match erase_entry(&key, &bytes, &planned) {
                    Ok(done) => done,
                    Err(error) => return Ok(Err(error)),
                };
                for event in &events {
                    held.insert(event.sequence.0);
                    if planned.contains(&event.sequence.0)
                        && let Err(refused) = plan.check_event(event)
                    {
                        return Ok(Err(refused));
                    }
                }
                entries.push((first, bytes));
                erased.extend(events);
            }
            if !held.contains(&wanted) {
                return Ok(Err(StoreError::NotFound(format!(
                    "event {wanted} is not in the log; nothing was erased"
                ))));
            }
            while remaining.next_if(|s| held.contains(s)).is_some() {}
            rewritten.push(entries);
        }
        for id in &plan.conversations {
            let key = keys::conversation_key(id);
            if !self.conversations.contains_key(&key) && !self.tree.contains_key(&key)? {
                return Ok(Err(StoreError::NotFound(format!(
                    "conversation {id} is not in the store; nothing was erased"
                ))));
            }
        }
        for id in &plan.tickets {
            let key = keys::ticket_key(&id.connection, &id.external_id);
            if !self.tickets.contains_key(&key) && !self.tree.contains_key(&key)? {
                return Ok(Err(StoreError::NotFound(format!(
                    "ticket {id} is not in the store; nothing was erased"
                ))));
            }
        }
        Ok(Ok(Checked {
            keys: rewritten,
            events: erased,
        }))
    }

    /// Erases what `checked` found for `plan` in the group's overlay and batch, and appends
    /// the `contact_erased` event `record` (command `command` of the group). Returns the
    /// events of every rewritten log entry, as they now read (for the tail cache).
    pub(super) fn erase(
        &mut self,
        command: usize,
        plan: &ErasurePlan,
        checked: Checked,
        record: &AppendRequest,
    ) -> Result<(ErasureReport, Vec<Event>), StoreError> {
        for entries in checked.keys {
            // The key's entries are grouped on their own: joined with the entries of another
            // key, they would leave that key in the tree with its old bytes. And no key this
            // group wrote before inside their range (an earlier erasure's, split at a frame's
            // end) may stay.
            self.log_keys.flush_into(&mut self.writes);
            for (first, _) in entries.iter().skip(1) {
                self.writes.remove(&keys::log_key(*first));
            }
            for (first, bytes) in entries {
                // The erased version goes to the segment file; the old bytes stay until a
                // compaction rewrites the files (as sled keeps old values until then).
                let pointer = self.log.append(&bytes)?;
                self.log_keys.push_into(first, pointer, &mut self.writes);
                self.rewritten_entries.insert(first, bytes);
            }
            self.log_keys.flush_into(&mut self.writes);
        }
        let rewritten = checked.events;
        for id in &plan.conversations {
            let touched = match self.conversations.entry(keys::conversation_key(id)) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let original = conversations::load_header(self.tree, id)?;
                    let Some(current) = original.clone() else {
                        return Err(StoreError::Commit(format!(
                            "conversation {id} vanished during its erasure"
                        )));
                    };
                    entry.insert(Touched {
                        original,
                        current,
                        stored_messages: BTreeMap::new(),
                    })
                }
            };
            // Every message is erased, so every one is read (those this group wrote are in
            // the overlay already).
            for entry in self.tree.scan_prefix(keys::message_prefix(id)) {
                let (key, value) = entry?;
                let stored = match conversations::read_message(self.log, &key, &value) {
                    Ok(stored) => stored,
                    Err(error) => {
                        // An unreadable message cannot be erased field by field: dropped.
                        crate::unreadable_record(&key, &error);
                        self.writes.remove(&key);
                        continue;
                    }
                };
                if touched.stored_messages.contains_key(&stored.value.key) {
                    continue;
                }
                touched
                    .current
                    .messages
                    .insert(stored.value.key.clone(), stored.clone());
                touched
                    .stored_messages
                    .insert(stored.value.key.clone(), Some(stored));
            }
            touched.current.erase_personal();
        }
        for id in &plan.tickets {
            let key = keys::ticket_key(&id.connection, &id.external_id);
            let stored = match self.tickets.get(&key) {
                Some(stored) => Some(stored.clone()),
                None => load::<StoredTicket>(self.tree, &key)?,
            };
            let Some(mut stored) = stored else {
                return Err(StoreError::Commit(format!(
                    "ticket {id} vanished during its erasure"
                )));
            };
            stored.ticket.erase_personal();
            self.tickets.insert(key, stored);
        }
        self.writes.insert(crate::erase::COMPACT_KEY, &[]);
        let receipt = self.append(command, record, None)?;
        let sequence = receipt.appended.first().copied().ok_or_else(|| {
            StoreError::Commit("the contact_erased event was not appended".into())
        })?;
        Ok((
            ErasureReport {
                conversations: plan.conversations.len() as u64,
                tickets: plan.tickets.len() as u64,
                events: plan.events.len() as u64,
                sequence,
            },
            rewritten,
        ))
    }
}
