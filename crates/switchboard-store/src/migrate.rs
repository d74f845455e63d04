//! Schema versions and upgrades in place.
//!
//! | version | what changed |
//! |---|---|
//! | 1 | log entries in the core's serde shape (no longer read: refused with a clear error) |
//! | 2 | log entries as flat JSON; a conversation stored whole under `conv/` with every message and the dedup keys of its events |
//! | 3 | new log entries: one binary, compressed record per append request (schema-2 entries stay and are still read); a conversation's header under `conv/` (with an event count) and each message under `msg/`; two index families (connection, status) instead of four, a connection's counter naming its vendor |
//! | 4 | `meta/projected`: conversations may be written after the log (the writer holds them for up to `projection_interval`), and the log after `meta/projected` is replayed into them at open. Nothing else moves: upgrading from 3 writes the schema key, and the open that follows writes `meta/projected` at the head (schema 3 wrote conversations with every group). A build of schema 3 refuses a store of schema 4, whose conversations it would not replay |
//! | 5 | messages under `msg/` as a binary record (postcard behind the byte `0x05`) instead of JSON: about 100 bytes for a chat line that took 231. Nothing moves at the upgrade: upgrading from 4 writes the schema key, the JSON messages stay and are read as before, and each becomes a binary record when it is next written. A build of schema 4 refuses a store of schema 5, whose messages it would not read |
//! | 6 | log entries in append-only segment files (`<data dir>/log/*.seg`, see `segments`), sled keeping a 25-byte pointer with the entry's event count and CRC-32 under its `log/` key: an entry costs its bytes once, not twice as inside sled's nodes. Nothing moves at the upgrade: the entries of a schema-5 store stay inside sled and are read there; `switchboard compact` moves them to the files. A build of schema 5 refuses a store of schema 6 |
//! | 7 | dedup keys under `dh/` as the first 16 bytes of the SHA-256 of the connection and the vendor's dedup key (19 bytes, where `dedup/<connection>/<key>` took 50 or more); the upgrade rewrites them in batches of [`DEDUP_BATCH`], each one atomic sled batch, so that an interrupted upgrade resumes with the keys not yet moved. And a group's log entries written as one frame, compressed together (see `segments`), sled keeping a 29-byte pointer (the frame, the entry's place in it, its count and CRC-32): webhooks alike compress across entries, a long chat's entry to a tenth of its size on its own. Log entries do not move at the upgrade: schema-6 entries, each compressed on its own, stay and are read as before; `switchboard compact` rewrites them into frames. A build of schema 6 refuses a store of schema 7 |
//! | 8 | a message's record in the segment files, on its own (not in a frame), sled keeping a 21-byte pointer (file, offset, length, CRC-32) under its `msg/` key: sled's file is about four times the live bytes it holds on loads that insert, and messages were three quarters of a long chat's. And consecutive log entries of one frame under one `log/` key (the frame once, then each entry's length, count and CRC-32): sled's file grows by about the same for each key inserted, whatever its size. Nothing moves at the upgrade: the messages a store of schema 7 kept inside sled stay and are read there, each moving to the files when it is next written, and its log keys stay one per entry; `switchboard compact` moves the messages and groups the entries. A build of schema 7 refuses a store of schema 8, whose messages and shared keys it would not read |
//! | 9 | the journal: an append is acknowledged once its log entry and a journal record of its group's sled writes (log pointers, dedup keys, head, tickets, agents, sync states, quarantine) are fdatasynced in the segment files; sled is flushed every `sled_flush_interval`, and open replays into it the records past `meta/journal` (see the store's docs: Durability). Every item written to a segment file starts with a tag byte, so that the records can be found. Nothing moves at the upgrade: upgrading from 8 writes the schema key, and the journal starts with the upgraded run's first file. A build of schema 8 refuses a store of schema 9, whose acknowledged groups may be in its journal only |
//!
//! [`upgrade`] runs at open, before the writer starts, in batches of [`BATCH`] conversations,
//! each one atomic sled batch. `meta/schema_version` moves to the new version only after the
//! last batch is flushed. A crash in between leaves a store of the old version in which some
//! conversations are already split; the next open runs the upgrade again, and a conversation
//! already split (no messages, no event keys in its header) is left as it is. So the upgrade
//! may be interrupted at any point and the store still opens.

use std::path::Path;

use switchboard_core::Conversation;
use tracing::info;

use crate::StoreError;
use crate::header;
use crate::keys;
use crate::record::decode;

/// Conversations rewritten per atomic batch.
const BATCH: usize = 512;

/// Dedup keys moved per atomic batch.
const DEDUP_BATCH: usize = 10_000;

/// The versions [`upgrade`] can bring to [`keys::SCHEMA_VERSION`].
pub(crate) fn can_upgrade(found: u64) -> bool {
    (2..=8).contains(&found)
}

/// Upgrades the store from schema `found` to [`keys::SCHEMA_VERSION`], in place.
pub(crate) fn upgrade(db: &sled::Db, dir: &Path, found: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    info!(
        dir = %dir.display(),
        from = found,
        to = keys::SCHEMA_VERSION,
        "upgrading the store's schema in place (an interrupted upgrade resumes at the next start)"
    );
    // From 3 to 8, only the version moves, and the dedup keys from 6 or before (from 3,
    // `meta/projected` is written at the next open; from 4, JSON messages are still read; from
    // 5, entries inside sled are; from 6, entries on their own in segment files are; from 7,
    // messages inside sled are; from 8, the open that follows starts the journal).
    let (conversations, messages, dropped) = if found == 2 {
        split_conversations(db)?
    } else {
        (0, 0, 0)
    };
    let dedup_keys = hash_dedup_keys(db)?;
    db.insert(
        keys::SCHEMA_VERSION_KEY,
        keys::SCHEMA_VERSION.to_string().as_bytes(),
    )?;
    db.flush()?;
    info!(
        dir = %dir.display(),
        version = keys::SCHEMA_VERSION,
        conversations,
        messages,
        index_entries_dropped = dropped,
        dedup_keys,
        millis = started.elapsed().as_millis() as u64,
        "store schema upgraded"
    );
    Ok(())
}

/// Schema 6 to 7: each dedup key moved from `dedup/<connection>/<key>` to its hashed key,
/// batch by batch (each batch writes the new keys and removes the old ones together, so a
/// batch interrupted by a crash left nothing, and the next open moves what is left). Returns
/// how many it moved.
fn hash_dedup_keys(db: &sled::Db) -> Result<u64, StoreError> {
    let mut moved = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        for entry in db.scan_prefix(keys::TEXT_DEDUP_PREFIX).take(DEDUP_BATCH) {
            let (key, value) = entry?;
            let hashed = keys::rehash_text_dedup_key(&key)
                .ok_or_else(|| StoreError::corrupt(&key, "a dedup key without its connection"))?;
            batch.insert(hashed, value);
            batch.remove(key);
            in_batch += 1;
        }
        if in_batch == 0 {
            return Ok(moved);
        }
        db.apply_batch(batch)?;
        moved += in_batch as u64;
    }
}

/// Schema 2 to 3: each conversation split into its header and one key per message, the
/// dropped index families removed, connection counters named. Returns the conversations
/// split, the messages written and the index entries dropped.
fn split_conversations(db: &sled::Db) -> Result<(u64, u64, u64), StoreError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut split = 0u64;
    let mut messages = 0u64;
    for entry in db.scan_prefix(keys::CONVERSATION_PREFIX) {
        let (key, value) = entry?;
        let mut conversation: Conversation = match decode(&key, &value) {
            Ok(conversation) => conversation,
            Err(error) => {
                // Left as it is: listings skip it, as they did before the upgrade.
                crate::unreadable_record(&key, &error);
                continue;
            }
        };
        if conversation.messages.is_empty() && conversation.event_keys.is_empty() {
            continue;
        }
        conversation.event_count = conversation
            .event_count
            .max(conversation.event_keys.len() as u64);
        for (message_key, message) in &conversation.messages {
            batch.insert(
                keys::message_key(&conversation.id, message_key),
                crate::record::encode_message(message)?,
            );
            messages += 1;
        }
        batch.insert(key, header::encode_header(&conversation)?);
        split += 1;
        in_batch += 1;
        if in_batch == BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    db.apply_batch(batch)?;
    let dropped = drop_index_families(db)?;
    name_connection_vendors(db)?;
    db.flush()?;
    Ok((split, messages, dropped))
}

/// Removes the index families schema 3 no longer keeps (`all`, `vendor`) and their counters.
fn drop_index_families(db: &sled::Db) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    for prefix in [
        b"ix/all/".as_slice(),
        b"ix/vendor/",
        b"count/conv/all/",
        b"count/conv/vendor/",
    ] {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for entry in db.scan_prefix(prefix).take(4096) {
                batch.remove(entry?.0);
                n += 1;
            }
            if n == 0 {
                break;
            }
            db.apply_batch(batch)?;
            dropped += n;
        }
    }
    Ok(dropped)
}

/// Writes each connection's vendor after its counter (what a query by vendor scans), taken
/// from one of its conversations.
fn name_connection_vendors(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for entry in db.scan_prefix(keys::CONNECTION_COUNT_PREFIX) {
        let (key, value) = entry?;
        if value.len() > 8 {
            continue; // named already
        }
        let Some(count) = keys::read_be(&value) else {
            continue;
        };
        let connection = &key[keys::CONNECTION_COUNT_PREFIX.len()..];
        let mut prefix = keys::CONVERSATION_PREFIX.to_vec();
        prefix.extend_from_slice(connection);
        let vendor = db
            .scan_prefix(&prefix)
            .filter_map(Result::ok)
            .find_map(|(key, value)| header::decode_header(&key, &value).ok())
            .map(|conversation| conversation.vendor);
        if let Some(vendor) = vendor {
            batch.insert(key, keys::connection_count_value(count, &vendor));
        }
    }
    db.apply_batch(batch)?;
    Ok(())
}
