//! Erasure ([`Storage::erase_contact`](crate::Storage::erase_contact)): the rules both backends
//! share (what a plan may name, the `contact_erased` event that records it), and, for the sled
//! store, compaction.
//!
//! What is erased from each conversation, ticket and event is `switchboard_core`'s
//! `erase_personal` (see the `erase` module there): names, e-mails, phones, attributes, message
//! text, attachments' names and URLs, vendor payloads and raw bodies; sequences, ids, kinds,
//! times, statuses, tags and agents stay.
//!
//! # A plan
//!
//! An [`ErasurePlan`] names conversations, tickets and log events. Each must exist: an unknown
//! conversation, ticket or sequence is [`StoreError::NotFound`]. Each event must be about the
//! plan: a conversation event about a conversation of the plan, a ticket event about a ticket
//! of the plan, or a vendor event (the finder places those by their subject); any other event
//! (another conversation's or ticket's, an agent's, a contact change) is
//! [`StoreError::InvalidArgument`]. A refused plan changes nothing. Repeated entries count once.
//!
//! # Old versions on disk (sled)
//!
//! sled 0.34 is log-structured: a rewritten value is written anew and its old version stays in
//! the `db` file until sled reuses that segment (only a free segment at the end of the file is
//! truncated; `segment_cleanup_threshold` does nothing since 0.31). So after an erasure the
//! store's files still hold the erased values, though no read returns them. [`Store::compact`]
//! (offline: the server stopped) rewrites the store into a fresh sled database beside it,
//! holding each key's current value once, and swaps it in; after it the data directory holds
//! none of the erased values. An erasure marks the store ([`Store::needs_compaction`]) until
//! it is compacted. A compaction interrupted before the swap leaves the store as it was; one
//! interrupted during the swap is finished by the next [`Store::open`] or [`Store::compact`].
//!
//! [`Store::compact`]: crate::Store::compact
//! [`Store::needs_compaction`]: crate::Store::needs_compaction
//! [`Store::open`]: crate::Store::open

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use switchboard_core::{
    ConnectionId, ContactChange, ConversationId, Event, EventKind, EventPayload, IncomingEvent,
    SYSTEM_VENDOR, TicketId,
};
use tracing::info;

use crate::{AppendRequest, ErasurePlan, StoreError};

/// The most bytes of a contact's name in a plan (it is named in the `contact_erased` event's
/// dedup key).
const MAX_CONTACT_BYTES: usize = 200;

impl ErasurePlan {
    /// The plan with its lists sorted and without repeats, checked for what needs no store: a
    /// contact's name that is not empty, no sequence 0, no conversation or ticket of the
    /// system connection.
    pub fn normalized(&self) -> Result<ErasurePlan, StoreError> {
        if self.contact.trim().is_empty() || self.contact.len() > MAX_CONTACT_BYTES {
            return Err(StoreError::InvalidArgument(format!(
                "an erasure names the contact it erases (1 to {MAX_CONTACT_BYTES} bytes)"
            )));
        }
        let mut conversations: Vec<ConversationId> = self.conversations.clone();
        conversations.sort();
        conversations.dedup();
        let mut tickets: Vec<TicketId> = self.tickets.clone();
        tickets.sort();
        tickets.dedup();
        let events: BTreeSet<_> = self.events.iter().copied().collect();
        if events.iter().any(|s| s.0 == 0) {
            return Err(StoreError::NotFound(
                "event 0 is not in the log (sequences start at 1)".into(),
            ));
        }
        for id in &conversations {
            if id.connection.is_system() || id.external_id.is_empty() {
                return Err(StoreError::InvalidArgument(format!(
                    "conversation {id} is not a conversation of a vendor connection"
                )));
            }
        }
        for id in &tickets {
            if id.connection.is_system() || id.external_id.is_empty() {
                return Err(StoreError::InvalidArgument(format!(
                    "ticket {id} is not a ticket of a vendor connection"
                )));
            }
        }
        Ok(ErasurePlan {
            contact: self.contact.clone(),
            conversations,
            tickets,
            events: events.into_iter().collect(),
            at: self.at,
        })
    }

    /// Refuses an event the plan may not erase (see the [module docs](self)): `Ok` for a
    /// conversation event of one of its conversations, a ticket event of one of its tickets,
    /// or a vendor event.
    pub fn check_event(&self, event: &Event) -> Result<(), StoreError> {
        let refused = |what: String| {
            Err(StoreError::InvalidArgument(format!(
                "event {} is {what}, not of contact {}; nothing was erased",
                event.sequence, self.contact
            )))
        };
        match &event.incoming.payload {
            EventPayload::Conversation(patch) => {
                let id = ConversationId::new(event.connection.clone(), patch.external_id.clone());
                if self.conversations.contains(&id) {
                    Ok(())
                } else {
                    refused(format!(
                        "about conversation {id}, which the erasure does not name"
                    ))
                }
            }
            EventPayload::Ticket(ticket) => {
                let id = TicketId::new(event.connection.clone(), ticket.external_id.clone());
                if self.tickets.contains(&id) {
                    Ok(())
                } else {
                    refused(format!(
                        "about ticket {id}, which the erasure does not name"
                    ))
                }
            }
            EventPayload::Vendor { .. } => Ok(()),
            EventPayload::Agent { .. } => refused("an agent's event".into()),
            EventPayload::Contact(_) => refused("a change of contacts".into()),
        }
    }

    /// The append that records the erasure: one `contact_erased` event on the system
    /// connection, holding the counts of the (normalized) plan and no personal data.
    pub fn record(&self) -> AppendRequest {
        let change = ContactChange::Erased {
            contact: self.contact.clone(),
            conversations: self.conversations.len() as u64,
            tickets: self.tickets.len() as u64,
            events: self.events.len() as u64,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let event = IncomingEvent {
            dedup_key: switchboard_core::dedup_key(&["contact_erased", &self.contact, &id]),
            kind: EventKind::ContactErased,
            vendor_event: format!("switchboard.{}", EventKind::ContactErased.as_str()),
            occurred_at: self.at,
            payload: EventPayload::Contact(change),
        };
        AppendRequest::new(ConnectionId::system(), SYSTEM_VENDOR, vec![event])
    }
}

/// `meta/compact`: present (empty) while an erasure's old versions may remain in sled's files.
pub(crate) const COMPACT_KEY: &[u8] = b"meta/compact";

/// The directory a compaction builds the new database in, inside the store's directory.
const COMPACT_DIR: &str = ".switchboard-compact";
/// Present (fsynced, listing the new database's files) once the new database is complete:
/// from then on the swap is finished, whoever finds it.
const SWAP_MARKER: &str = ".switchboard-compact-swap";

/// What [`crate::Store::compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactReport {
    /// Keys copied.
    pub keys: u64,
    /// Bytes of the store's files before.
    pub bytes_before: u64,
    /// Bytes of the store's files after.
    pub bytes_after: u64,
}

/// The bytes of sled's files in `dir` (`conf`, `db`, `snap.*`, `blobs/`).
fn sled_bytes(dir: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    let entries =
        std::fs::read_dir(dir).map_err(StoreError::io_in(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io_in(format!("reading {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !crate::is_sled_file(&name) {
            continue;
        }
        total += tree_bytes(&entry.path())?;
    }
    Ok(total)
}

fn tree_bytes(path: &Path) -> Result<u64, StoreError> {
    let meta = std::fs::metadata(path)
        .map_err(StoreError::io_in(format!("reading {}", path.display())))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in
        std::fs::read_dir(path).map_err(StoreError::io_in(format!("reading {}", path.display())))?
    {
        let entry = entry.map_err(StoreError::io_in(format!("reading {}", path.display())))?;
        total += tree_bytes(&entry.path())?;
    }
    Ok(total)
}

/// fsyncs `path`, and everything under it if it is a directory.
fn sync_tree(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)
            .map_err(StoreError::io_in(format!("reading {}", path.display())))?
        {
            let entry = entry.map_err(StoreError::io_in(format!("reading {}", path.display())))?;
            sync_tree(&entry.path())?;
        }
        crate::writer::sync_directory(path)
    } else {
        File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(StoreError::io_in(format!("fsyncing {}", path.display())))
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// Rewrites the store in `dir` into a fresh sled database and swaps it in (see the
/// [module docs](self)). The store must not be open.
pub(crate) fn compact(dir: &Path) -> Result<CompactReport, StoreError> {
    finish_swap(dir)?;
    let bytes_before = sled_bytes(dir)?;
    let keys = build_copy(dir)?;
    mark_swap(dir)?;
    finish_swap(dir)?;
    let report = CompactReport {
        keys,
        bytes_before,
        bytes_after: sled_bytes(dir)?,
    };
    info!(dir = %dir.display(), keys, bytes_before, bytes_after = report.bytes_after, "store compacted");
    Ok(report)
}

/// Copies every key of the store in `dir` but [`COMPACT_KEY`] into a new sled database in
/// `dir/`[`COMPACT_DIR`] (made afresh), fsynced. Returns how many keys it copied.
fn build_copy(dir: &Path) -> Result<u64, StoreError> {
    let new_dir = dir.join(COMPACT_DIR);
    // A compaction that stopped before its swap marker left a partial copy: start again.
    remove(&new_dir)?;
    let keys = {
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        // A store closed a moment ago in this process may hold sled's lock briefly.
        let wait_until = std::time::Instant::now() + crate::LOCK_WAIT;
        let old = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if crate::is_lock_busy(&e) && std::time::Instant::now() < wait_until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(|e| crate::sled_open_error(dir, e))?,
            }
        };
        match old.get(crate::keys::SCHEMA_VERSION_KEY)? {
            Some(version)
                if version.as_ref() == crate::keys::SCHEMA_VERSION.to_string().as_bytes() => {}
            _ => {
                return Err(StoreError::InvalidArgument(format!(
                    "{} is not a store of schema {}: open it with this build first (which upgrades it), then compact",
                    dir.display(),
                    crate::keys::SCHEMA_VERSION
                )));
            }
        }
        let new = sled::Config::new()
            .path(&new_dir)
            .flush_every_ms(None)
            .open()
            .map_err(|e| crate::sled_open_error(&new_dir, e))?;
        // The log's entries are copied into new segment files: only the bytes a pointer
        // reaches (an erased entry's old version, a failed group's bytes are left behind), and
        // entries a schema-5 store kept inside sled move to the files too), in frames, each
        // entry compressed with its frame rather than on its own. Messages' records are
        // copied too, each on its own.
        let old_log = crate::segments::LogFiles::open(dir)?;
        let new_log = crate::segments::LogFiles::open(&new_dir)?;
        // A store that did not close cleanly may have acknowledged groups that only its
        // journal holds (sled's file lags it): replayed first, as an open would.
        if old.contains_key(crate::keys::OPEN_KEY)? {
            crate::replay_journal(&old, &old_log)?;
        }
        let mut keys = 0u64;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let mut grouper = crate::segments::Grouper::default();
        for entry in old.iter() {
            let (key, value) = entry?;
            // Where this store's journal goes on names files the copy does not have; the next
            // open starts its journal afresh.
            if key.as_ref() == COMPACT_KEY || key.as_ref() == crate::writer::journal::JOURNAL_KEY {
                continue;
            }
            if key.starts_with(crate::keys::LOG_PREFIX) {
                // An entry that does not read (or a group that does not decode) is kept as it
                // is: readers get stand-ins for it (its pointer says how many events), before
                // and after, its checksum never matching again. The entries before it keep
                // their own key.
                match crate::segments::expand(&key, &value) {
                    Err(error) => {
                        crate::unreadable_record(&key, &error);
                        grouper.flush_into(&mut batch);
                        batch.insert(key.clone(), value.clone());
                    }
                    Ok(group) => {
                        for (key, value) in group {
                            match old_log
                                .entry(&key, &value)
                                .and_then(|bytes| Ok((crate::record::sequence_of(&key)?, bytes)))
                            {
                                Ok((first, bytes)) => {
                                    let bytes = crate::record::unpacked_entry(&key, &bytes);
                                    grouper.push_into(first, new_log.append(&bytes)?, &mut batch);
                                }
                                Err(error) => {
                                    crate::unreadable_record(&key, &error);
                                    grouper.flush_into(&mut batch);
                                    batch.insert(key, value.into_owned());
                                }
                            }
                        }
                    }
                }
            } else if key.starts_with(crate::keys::MESSAGE_PREFIX) {
                // A message's record: copied on its own, as the writer writes it (one a store
                // of schema 7 or before kept inside sled moves to the files).
                match old_log.record(&key, &value) {
                    Ok(bytes) => batch.insert(key, new_log.append_record(&bytes)?),
                    Err(error) => {
                        // Left out of reads before and after, like an unreadable entry.
                        crate::unreadable_record(&key, &error);
                        batch.insert(key, value);
                    }
                }
            } else {
                batch.insert(key, value);
            }
            keys += 1;
            pending += 1;
            if pending == 10_000 {
                new.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        grouper.flush_into(&mut batch);
        new_log.write_buffered()?;
        new.apply_batch(batch)?;
        new.flush()?;
        drop(new);
        drop(old);
        keys
    };
    sync_tree(&new_dir)?;
    Ok(keys)
}

/// Writes the swap marker (listing the new database's files), durably: from here on the swap
/// is finished by whoever finds the marker.
fn mark_swap(dir: &Path) -> Result<(), StoreError> {
    let new_dir = dir.join(COMPACT_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&new_dir)
        .map_err(StoreError::io_in(format!("reading {}", new_dir.display())))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let marker = dir.join(SWAP_MARKER);
    std::fs::write(&marker, names.join("\n"))
        .map_err(StoreError::io_in(format!("writing {}", marker.display())))?;
    sync_tree(&marker)?;
    crate::writer::sync_directory(dir)
}

/// Finishes a swap whose marker is present: removes the old database's files (unless some of
/// the new ones were moved already, which happens only after every old one is gone), moves
/// the new ones in, and removes the marker. Nothing to do without a marker.
pub(crate) fn finish_swap(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(SWAP_MARKER);
    let listed = match std::fs::read_to_string(&marker) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("reading {}", marker.display()), e)),
    };
    let new_dir = dir.join(COMPACT_DIR);
    let names: Vec<&str> = listed.lines().filter(|n| !n.is_empty()).collect();
    let unmoved: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| new_dir.join(name).exists())
        .collect();
    if unmoved.len() == names.len() {
        let entries = std::fs::read_dir(dir)
            .map_err(StoreError::io_in(format!("reading {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io_in(format!("reading {}", dir.display())))?;
            if crate::is_sled_file(&entry.file_name().to_string_lossy()) {
                remove(&entry.path())?;
            }
        }
        crate::writer::sync_directory(dir)?;
    }
    for name in unmoved {
        let (from, to) = (new_dir.join(name), dir.join(name));
        std::fs::rename(&from, &to).map_err(StoreError::io_in(format!(
            "moving {} to {}",
            from.display(),
            to.display()
        )))?;
    }
    crate::writer::sync_directory(dir)?;
    remove(&marker)?;
    remove(&new_dir)?;
    crate::writer::sync_directory(dir)
}

#[cfg(test)]
mod tests {
    use switchboard_core::{
        ConnectionId, ConversationPatch, EventKind, EventPayload, IncomingEvent, Sequence,
        Timestamp,
    };

    use super::*;
    use crate::Store;

    async fn filled(dir: &Path) {
        let store = Store::open(dir).unwrap();
        let events = (0..20)
            .map(|i| IncomingEvent {
                dedup_key: format!("k{i}"),
                kind: EventKind::ChatStarted,
                vendor_event: "chat_started".into(),
                occurred_at: Timestamp::from_secs(1_700_000_000 + i).unwrap(),
                payload: EventPayload::Conversation(ConversationPatch::new(format!("c{i}"))),
            })
            .collect();
        store
            .append(AppendRequest::new(
                ConnectionId::new("lc").unwrap(),
                "livechat",
                events,
            ))
            .await
            .unwrap();
        store.close().await.unwrap();
    }

    async fn reads_whole(dir: &Path) {
        let store = Store::open(dir).unwrap();
        assert_eq!(store.head(), Sequence(20));
        assert_eq!(store.read_events(Sequence::ZERO, 100).unwrap().len(), 20);
        assert_eq!(store.conversation_count().unwrap(), 20);
        store.close().await.unwrap();
        let leftovers: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".switchboard-compact"))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_the_marker_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path()).await;
        build_copy(dir.path()).unwrap();
        // The next open ignores the copy; the next compaction starts it again.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head(), Sequence(20));
        store.close().await.unwrap();
        drop(store);
        compact(dir.path()).unwrap();
        reads_whole(dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_the_marker_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path()).await;
        build_copy(dir.path()).unwrap();
        mark_swap(dir.path()).unwrap();
        reads_whole(dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_in_the_middle_of_the_moves_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path()).await;
        build_copy(dir.path()).unwrap();
        mark_swap(dir.path()).unwrap();
        // The old files are gone and one new file moved when the crash comes.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if crate::is_sled_file(&entry.file_name().to_string_lossy()) {
                remove(&entry.path()).unwrap();
            }
        }
        let new_dir = dir.path().join(COMPACT_DIR);
        std::fs::rename(new_dir.join("conf"), dir.path().join("conf")).unwrap();
        reads_whole(dir.path()).await;
    }
}
