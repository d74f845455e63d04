//! The embedded store's [`FindIndex`]: one tantivy index in a directory beside the sled data
//! directory.
//!
//! # Layout
//!
//! Everything lives in one tantivy index, so that one tantivy commit is one atomic step of the
//! finder: the documents of a batch and the batch's position (kept in the commit's payload,
//! `{"format":1,"position":N}` in `meta.json`) become visible together or not at all. A crash
//! before the commit leaves segment files that no commit names; tantivy ignores them on open
//! and removes them at its next garbage collection.
//!
//! Every document has a `kind` (`conversation`, `ticket`, `contact`, `identity`, `event`), a
//! `key` (`<kind>:<id>`, unique: a document is replaced by deleting its key, then adding it
//! again) and an `id` (the conversation's or ticket's `connection/vendor-id`, the contact id,
//! the identity key). Exact values are untokenized string fields (`raw`: indexed as given,
//! since [`crate::normalize`] has already normalized them); the few values the index sorts or
//! reads back per hit are fast fields (columns).
//!
//! | kind           | fields                                                                   |
//! |----------------|--------------------------------------------------------------------------|
//! | `conversation` | `id` (fast), `connection`, `vendor`, `status` (u64, fast), `sort` (the sort key, i64 ms, fast), `started` / `updated` (i64 ms, fast, ranged), `contact`, `email`, `phone`, `visitor`, `agent`, `tag`, `term` (one value per search term), `body` |
//! | `ticket`       | `id` (fast), `owner` (its contact, fast), `sort` (its `updated_at`), `body` |
//! | `contact`      | `id` (fast), `identity` (each identity key), `name` (the [`crate::normalize::terms`] of each name), `body` |
//! | `identity`     | `id` (the identity key), `owner` (its contact, fast)                     |
//! | `event`        | `ev_conversation`, `ev_ticket`, `sequence` (u64, fast)                   |
//!
//! Identities and events also get an `id` (empty for events) and a `sort` of 0: with a value
//! in every document, those two columns are dense and quicker to read.
//!
//! Every filter of a conversation query is on a field only conversation documents have, so a
//! filtered query needs no `kind` clause (a posting list as long as the index).
//!
//! `body` is a stored (zstd-compressed) JSON of the [`ConversationDoc`], [`TicketDoc`] or
//! [`ContactRecord`], read back only for the documents a query returns.
//!
//! # Order
//!
//! Conversations are listed by `sort` descending, then by the id's text (`connection/vendor-id`,
//! compared byte by byte, like the stores' own lists) descending. A query collects only the top
//! `limit` hits of each segment with a bounded heap keyed by the `sort` column and the segment's
//! ordinal of the `id` column (ordinals follow the bytes' order within a segment), skipping
//! anything not strictly after the page's `after`; the segments' tops are then merged by the
//! ids' text. So a page costs one column read per matching document and never a sort of every
//! match, and equal sort keys page without repeats or gaps. Tickets of a contact are listed the
//! same way by `updated_at` descending, then id descending; contacts by id ascending.
//!
//! # Erasure
//!
//! Deleted documents stay in their segment files until tantivy merges the segment. After an
//! erasure the finder calls [`FindIndex::purge`], which waits for background merges, merges all
//! segments into one without the deleted documents, and deletes the files nothing refers to.
//! Background merges (after commits) run on half the cores, so queries keep the other half.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_core::{ConversationId, ConversationStatus, Sequence, TicketId, Timestamp};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, SchemaBuilder, Value,
};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Score,
    SegmentOrdinal, SegmentReader, TantivyDocument, TantivyError, Term,
};

use crate::index::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    IndexError, TicketDoc,
};
use crate::normalize;

/// The version of the layout above, kept in every commit's payload: an index written by
/// another layout is refused (delete the directory; the finder rebuilds it from the log).
const FORMAT: u32 = 1;

/// Memory for the writer's indexing threads, per thread (tantivy needs at least 15 MB).
const WRITER_BYTES_PER_THREAD: usize = 32 << 20;

const CONVERSATION: &str = "conversation";
const TICKET: &str = "ticket";
const CONTACT: &str = "contact";
const IDENTITY: &str = "identity";
const EVENT: &str = "event";

/// The schema's fields.
#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    key: Field,
    id: Field,
    connection: Field,
    vendor: Field,
    status: Field,
    sort: Field,
    started: Field,
    updated: Field,
    contact: Field,
    owner: Field,
    email: Field,
    phone: Field,
    visitor: Field,
    agent: Field,
    tag: Field,
    term: Field,
    identity: Field,
    name: Field,
    ev_conversation: Field,
    ev_ticket: Field,
    sequence: Field,
    body: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = SchemaBuilder::new();
        let fields = Fields {
            kind: builder.add_text_field("kind", STRING),
            key: builder.add_text_field("key", STRING),
            id: builder.add_text_field("id", STRING | FAST),
            connection: builder.add_text_field("connection", STRING),
            vendor: builder.add_text_field("vendor", STRING),
            status: builder.add_u64_field("status", INDEXED | FAST),
            sort: builder.add_i64_field("sort", INDEXED | FAST),
            started: builder.add_i64_field("started", INDEXED | FAST),
            updated: builder.add_i64_field("updated", INDEXED | FAST),
            contact: builder.add_text_field("contact", STRING),
            owner: builder.add_text_field("owner", STRING | FAST),
            email: builder.add_text_field("email", STRING),
            phone: builder.add_text_field("phone", STRING),
            visitor: builder.add_text_field("visitor", STRING),
            agent: builder.add_text_field("agent", STRING),
            tag: builder.add_text_field("tag", STRING),
            term: builder.add_text_field("term", STRING),
            identity: builder.add_text_field("identity", STRING),
            name: builder.add_text_field("name", STRING),
            ev_conversation: builder.add_text_field("ev_conversation", STRING),
            ev_ticket: builder.add_text_field("ev_ticket", STRING),
            sequence: builder.add_u64_field("sequence", FAST),
            body: builder.add_bytes_field("body", STORED),
        };
        (builder.build(), fields)
    }

    fn text(&self, field: Field, value: &str) -> Term {
        Term::from_field_text(field, value)
    }

    fn kind_is(&self, kind: &str) -> Box<dyn Query> {
        term_query(self.text(self.kind, kind))
    }
}

/// What a commit's payload holds.
#[derive(Serialize, Deserialize)]
struct Payload {
    format: u32,
    position: u64,
}

/// The finder's index of the embedded store: a tantivy index in a directory. See the module
/// documentation for what it holds.
pub struct TantivyIndex {
    inner: Arc<Inner>,
}

struct Inner {
    index: Index,
    reader: IndexReader,
    /// `None` while [`FindIndex::purge`] replaces it, and from [`FindIndex::rest`] until the
    /// next batch.
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    /// The position of the last commit.
    position: AtomicU64,
    /// The writer's indexing threads.
    threads: usize,
}

impl std::fmt::Debug for TantivyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyIndex")
            .field("position", &self.inner.position.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(error.to_string())
}

fn tantivy_error(error: TantivyError) -> IndexError {
    match error {
        TantivyError::DataCorruption(corruption) => IndexError::Corrupt(format!("{corruption:?}")),
        TantivyError::SchemaError(message) => IndexError::Corrupt(message),
        TantivyError::LockFailure(_, _) => IndexError::Unavailable(
            "another finder has this index open for writing (one process per data directory)"
                .into(),
        ),
        other => IndexError::Unavailable(other.to_string()),
    }
}

impl TantivyIndex {
    /// Opens the index in `dir`, creating the directory and an empty index if absent. Only one
    /// `TantivyIndex` may have a directory open at a time (tantivy's writer lock).
    pub fn open(dir: &Path) -> Result<TantivyIndex, IndexError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        TantivyIndex::open_with_threads(dir, threads)
    }

    /// [`TantivyIndex::open`] with this many indexing threads (at least 1; each uses 32 MB
    /// while a batch is written). `open` uses one per core, up to 4.
    pub fn open_with_threads(dir: &Path, threads: usize) -> Result<TantivyIndex, IndexError> {
        let threads = threads.max(1);
        std::fs::create_dir_all(dir).map_err(|error| {
            IndexError::Unavailable(format!("cannot create {}: {error}", dir.display()))
        })?;
        let (schema, fields) = Fields::schema();
        let index = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir).map_err(tantivy_error)?;
            if index.schema() != schema {
                return Err(IndexError::Corrupt(format!(
                    "{} holds an index of another layout; delete it and the finder rebuilds it from the log",
                    dir.display()
                )));
            }
            index
        } else {
            Index::builder()
                .schema(schema)
                .settings(IndexSettings::default())
                .create_in_dir(dir)
                .map_err(tantivy_error)?
        };
        let position = read_position(&index)?;
        let writer = writer(&index, threads)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy_error)?;
        Ok(TantivyIndex {
            inner: Arc::new(Inner {
                index,
                reader,
                writer: Mutex::new(Some(writer)),
                fields,
                position: AtomicU64::new(position),
                threads,
            }),
        })
    }

    /// Runs `work` on tantivy's side of the fence: off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, IndexError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|error| IndexError::Unavailable(format!("the index task failed: {error}")))?
    }
}

/// A writer with `threads` indexing threads and half the cores for merging segments, so that
/// merges after a commit leave the other half to queries. It is made on a thread of lowered
/// priority ([`crate::priority`]), so that tantivy's threads, which start from it, run behind
/// ingest too.
fn writer(index: &Index, threads: usize) -> Result<IndexWriter, IndexError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = IndexWriterOptions::builder()
        .num_worker_threads(threads)
        .memory_budget_per_thread(WRITER_BYTES_PER_THREAD)
        .num_merge_threads((cores / 2).max(1))
        .build();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("switchboard-find".into())
            .spawn_scoped(scope, || {
                crate::priority::lower_this_thread();
                index.writer_with_options(options).map_err(tantivy_error)
            })
            .map_err(|error| {
                IndexError::Unavailable(format!("cannot start a thread for the index: {error}"))
            })?
            .join()
            .map_err(|_| IndexError::Unavailable("making the index's writer panicked".into()))?
    })
}

/// Rolls `writer` back to its last commit. One that cannot be rolled back (its directory
/// cannot be read, as on a failing disk) is left without indexing threads, and the next
/// `add_document` on it would block forever once tantivy's queue is full: it is dropped
/// instead, and [`Inner::writer`] makes a new one (or fails to, at once).
fn roll_back(writer: &mut Option<IndexWriter>) {
    if let Some(held) = writer.as_mut()
        && let Err(error) = held.rollback()
    {
        tracing::warn!(%error, "the index's writer could not be rolled back; it is replaced");
        *writer = None;
    }
}

fn read_position(index: &Index) -> Result<u64, IndexError> {
    let metas = index.load_metas().map_err(tantivy_error)?;
    let Some(payload) = metas.payload else {
        return Ok(0);
    };
    let payload: Payload = serde_json::from_str(&payload).map_err(|error| {
        IndexError::Corrupt(format!("the index's commit payload {payload:?}: {error}"))
    })?;
    if payload.format != FORMAT {
        return Err(IndexError::Corrupt(format!(
            "the index has layout {} and this build reads layout {FORMAT}; delete it and the finder rebuilds it from the log",
            payload.format
        )));
    }
    Ok(payload.position)
}

fn term_query(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

/// Any of `terms` (none: no clause).
fn any_of(terms: Vec<Term>) -> Option<Box<dyn Query>> {
    match terms.len() {
        0 => None,
        1 => terms.into_iter().next().map(term_query),
        _ => Some(Box::new(TermSetQuery::new(terms))),
    }
}

fn all_of(clauses: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if clauses.is_empty() {
        return Box::new(AllQuery);
    }
    Box::new(BooleanQuery::new(
        clauses.into_iter().map(|q| (Occur::Must, q)).collect(),
    ))
}

fn range(field: Field, from: Option<Timestamp>, to: Option<Timestamp>) -> Option<Box<dyn Query>> {
    if from.is_none() && to.is_none() {
        return None;
    }
    let lower = from.map_or(Bound::Unbounded, |t| {
        Bound::Included(Term::from_field_i64(field, t.as_millis()))
    });
    let upper = to.map_or(Bound::Unbounded, |t| {
        Bound::Excluded(Term::from_field_i64(field, t.as_millis()))
    });
    Some(Box::new(RangeQuery::new(lower, upper)))
}

fn status_number(status: ConversationStatus) -> u64 {
    ConversationStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0) as u64
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, IndexError> {
    serde_json::to_vec(value).map_err(|error| IndexError::Unavailable(error.to_string()))
}

impl Fields {
    fn base(&self, kind: &str, id: &str) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.kind, kind);
        doc.add_text(self.key, format!("{kind}:{id}"));
        doc.add_text(self.id, id);
        doc
    }

    fn key(&self, kind: &str, id: &str) -> Term {
        self.text(self.key, &format!("{kind}:{id}"))
    }

    fn conversation(&self, conversation: &ConversationDoc) -> Result<TantivyDocument, IndexError> {
        let id = conversation.id.to_string();
        let mut doc = self.base(CONVERSATION, &id);
        doc.add_text(self.connection, conversation.id.connection.as_str());
        doc.add_text(self.vendor, &conversation.vendor);
        doc.add_u64(self.status, status_number(conversation.status));
        doc.add_i64(self.sort, conversation.sort_key.as_millis());
        if let Some(started) = conversation.started_at {
            doc.add_i64(self.started, started.as_millis());
        }
        doc.add_i64(self.updated, conversation.updated_at.as_millis());
        if let Some(contact) = &conversation.contact {
            doc.add_text(self.contact, contact);
        }
        let lists = [
            (self.email, &conversation.emails),
            (self.phone, &conversation.phones),
            (self.visitor, &conversation.visitor_ids),
            (self.agent, &conversation.agent_ids),
            (self.tag, &conversation.tags),
            (self.term, &conversation.terms),
        ];
        for (field, values) in lists {
            let unique: BTreeSet<&String> = values.iter().collect();
            for value in unique {
                doc.add_text(field, value);
            }
        }
        doc.add_bytes(self.body, &json(conversation)?);
        Ok(doc)
    }

    fn ticket(&self, ticket: &TicketDoc) -> Result<TantivyDocument, IndexError> {
        let mut doc = self.base(TICKET, &ticket.id.to_string());
        if let Some(contact) = &ticket.contact {
            doc.add_text(self.owner, contact);
        }
        doc.add_i64(self.sort, ticket.updated_at.as_millis());
        doc.add_bytes(self.body, &json(ticket)?);
        Ok(doc)
    }

    fn contact(&self, contact: &ContactRecord) -> Result<TantivyDocument, IndexError> {
        let mut doc = self.base(CONTACT, &contact.id);
        doc.add_i64(self.sort, 0);
        for identity in &contact.identities {
            doc.add_text(self.identity, identity);
        }
        let terms: BTreeSet<String> = contact
            .names
            .iter()
            .flat_map(|name| normalize::terms(name))
            .collect();
        for term in terms {
            doc.add_text(self.name, term);
        }
        doc.add_bytes(self.body, &json(contact)?);
        Ok(doc)
    }

    fn identity(&self, key: &str, contact: &str) -> TantivyDocument {
        let mut doc = self.base(IDENTITY, key);
        doc.add_i64(self.sort, 0);
        doc.add_text(self.owner, contact);
        doc
    }

    fn event(&self, event: &EventRef) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.kind, EVENT);
        doc.add_text(self.key, format!("{EVENT}:{}", event.sequence.0));
        // Every document has an `id` and a `sort`, so both columns are dense (faster to read).
        doc.add_text(self.id, "");
        doc.add_i64(self.sort, 0);
        if let Some(conversation) = &event.conversation {
            doc.add_text(self.ev_conversation, conversation.to_string());
        }
        if let Some(ticket) = &event.ticket {
            doc.add_text(self.ev_ticket, ticket.to_string());
        }
        doc.add_u64(self.sequence, event.sequence.0);
        doc
    }
}

impl Inner {
    fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        let fields = &self.fields;
        // One batch at a time: the position checked is the position committed on.
        let mut guard = self.writer()?;
        let writer = guard
            .as_mut()
            .ok_or_else(|| IndexError::Unavailable("the index has no writer".into()))?;
        let position = self.position.load(Ordering::SeqCst);
        if batch.position.0 <= position {
            return Err(IndexError::Unavailable(format!(
                "the index is at {position} already, not before this batch's {}: another finder wrote it",
                batch.position
            )));
        }
        // Build every document first: a batch that cannot be encoded changes nothing.
        let mut operations: Vec<(Term, Option<TantivyDocument>)> = Vec::new();
        for conversation in &batch.conversations {
            let id = conversation.id.to_string();
            operations.push((
                fields.key(CONVERSATION, &id),
                Some(fields.conversation(conversation)?),
            ));
        }
        for ticket in &batch.tickets {
            operations.push((
                fields.key(TICKET, &ticket.id.to_string()),
                Some(fields.ticket(ticket)?),
            ));
        }
        for contact in &batch.contacts {
            operations.push((
                fields.key(CONTACT, &contact.id),
                Some(fields.contact(contact)?),
            ));
        }
        for (key, contact) in &batch.identities {
            operations.push((
                fields.key(IDENTITY, key),
                contact.as_deref().map(|c| fields.identity(key, c)),
            ));
        }
        let mut events = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            // The index holds no event after its position, so only an event at or before it
            // can be there already (a batch applied again).
            let replaces = (event.sequence.0 <= position)
                .then(|| fields.key(EVENT, &event.sequence.0.to_string()));
            events.push((replaces, fields.event(event)));
        }
        let payload = serde_json::to_string(&Payload {
            format: FORMAT,
            position: batch.position.0,
        })
        .map_err(unavailable)?;

        let written = (|| -> Result<(), TantivyError> {
            for (key, doc) in operations {
                writer.delete_term(key);
                if let Some(doc) = doc {
                    writer.add_document(doc)?;
                }
            }
            for (replaces, doc) in events {
                if let Some(key) = replaces {
                    writer.delete_term(key);
                }
                writer.add_document(doc)?;
            }
            let mut commit = writer.prepare_commit()?;
            commit.set_payload(&payload);
            commit.commit()?;
            Ok(())
        })();
        if let Err(error) = written {
            // Drop whatever of this batch was queued, so the next batch does not commit it.
            roll_back(&mut guard);
            return Err(tantivy_error(error));
        }
        // Readers first, then the position: whoever sees the new position (a finder's
        // `caught_up`) reads the batch.
        let reloaded = self.reader.reload();
        self.position.store(batch.position.0, Ordering::SeqCst);
        reloaded.map_err(|error| {
            IndexError::Unavailable(format!(
                "batch {} is committed but cannot be read yet: {error}",
                batch.position
            ))
        })?;
        Ok(())
    }

    fn new_writer(&self) -> Result<IndexWriter, IndexError> {
        writer(&self.index, self.threads)
    }

    /// The writer, locked, present. A task that panicked while writing leaves its writer to
    /// be rolled back to the last commit; a writer lost in a failed purge or rollback is made
    /// again.
    fn writer(&self) -> Result<MutexGuard<'_, Option<IndexWriter>>, IndexError> {
        let mut guard = self.writer_slot();
        if guard.is_none() {
            *guard = Some(self.new_writer()?);
        }
        Ok(guard)
    }

    /// The writer's slot, locked: empty after [`Inner::rest`] or a writer lost.
    fn writer_slot(&self) -> MutexGuard<'_, Option<IndexWriter>> {
        match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                roll_back(&mut guard);
                self.writer.clear_poison();
                guard
            }
        }
    }

    /// Retires the writer once its merges are done, so that its indexing and merging threads
    /// end. The allocator gives a thread's freed memory back to the OS only when that thread
    /// allocates again or ends, so threads left quiet after building the index from a long log
    /// keep tens of MB (about 50 MB after 1M events: BENCHMARKS.md, session 15). The next
    /// batch makes a new writer.
    fn rest(&self) -> Result<(), IndexError> {
        let mut guard = self.writer_slot();
        match guard.take() {
            Some(writer) => writer.wait_merging_threads().map_err(tantivy_error),
            None => Ok(()),
        }
    }

    fn purge(&self) -> Result<(), IndexError> {
        let mut guard = self.writer()?;
        // Background merges hold segments; wait for them by retiring the writer.
        let waited = guard.take().map(IndexWriter::wait_merging_threads);
        let mut writer = self.new_writer()?;
        let result = (|| -> Result<(), TantivyError> {
            waited.transpose()?;
            let ids = {
                // Segment metas are tracked: files of any alive are kept by the collection
                // below, so these go out of scope before it.
                let metas = self.index.searchable_segment_metas()?;
                let needed = metas.len() > 1 || metas.iter().any(|meta| meta.has_deletes());
                if needed {
                    metas.iter().map(|meta| meta.id()).collect()
                } else {
                    Vec::new()
                }
            };
            if !ids.is_empty() {
                writer.merge(&ids).wait()?;
            }
            // Readers hold the segments they search: move ours to the merged one first.
            self.reader.reload()?;
            writer.garbage_collect_files().wait()?;
            Ok(())
        })();
        *guard = Some(writer);
        result.map_err(tantivy_error)
    }

    /// The bodies of the documents matching `query` (at most `limit`).
    fn bodies(&self, query: &dyn Query, limit: usize) -> Result<Vec<Vec<u8>>, IndexError> {
        let searcher = self.reader.searcher();
        let addresses = searcher
            .search(query, &tantivy::collector::DocSetCollector)
            .map_err(tantivy_error)?;
        let mut addresses: Vec<DocAddress> = addresses.into_iter().collect();
        addresses.sort();
        addresses.truncate(limit);
        addresses
            .into_iter()
            .map(|address| self.body_at(&searcher, address))
            .collect()
    }

    fn body_at(
        &self,
        searcher: &tantivy::Searcher,
        address: DocAddress,
    ) -> Result<Vec<u8>, IndexError> {
        let doc: TantivyDocument = searcher.doc(address).map_err(tantivy_error)?;
        doc.get_first(self.fields.body)
            .and_then(|value| value.as_bytes())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| IndexError::Corrupt("a document without its body".into()))
    }

    fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let mut clauses = Vec::new();
        let lists: [(Field, Vec<&str>); 7] = [
            (
                f.connection,
                query.connections.iter().map(|c| c.as_str()).collect(),
            ),
            (f.vendor, query.vendors.iter().map(String::as_str).collect()),
            (f.email, query.emails.iter().map(String::as_str).collect()),
            (f.phone, query.phones.iter().map(String::as_str).collect()),
            (
                f.visitor,
                query.visitor_ids.iter().map(String::as_str).collect(),
            ),
            (
                f.agent,
                query.agent_ids.iter().map(String::as_str).collect(),
            ),
            (f.tag, query.tags.iter().map(String::as_str).collect()),
        ];
        for (field, values) in lists {
            if let Some(clause) = any_of(values.iter().map(|v| f.text(field, v)).collect()) {
                clauses.push(clause);
            }
        }
        if let Some(clause) = any_of(
            query
                .statuses
                .iter()
                .map(|s| Term::from_field_u64(f.status, status_number(*s)))
                .collect(),
        ) {
            clauses.push(clause);
        }
        let terms: BTreeSet<&String> = query.terms.iter().collect();
        for term in terms {
            clauses.push(term_query(f.text(f.term, term)));
        }
        clauses.extend(range(f.started, query.started_from, query.started_to));
        if let Some(clause) = any_of(
            query
                .contacts
                .iter()
                .map(|c| f.text(f.contact, c))
                .collect(),
        ) {
            clauses.push(clause);
        }
        clauses.extend(range(f.updated, query.updated_from, query.updated_to));
        // Only conversations have these fields, so the `kind` clause (a posting list as long
        // as the index) is needed only when no filter is set.
        if clauses.is_empty() {
            clauses.push(f.kind_is(CONVERSATION));
        }
        let top = TopByKey {
            limit: query.limit,
            id_descending: true,
            after: query
                .after
                .as_ref()
                .map(|(at, id)| (at.as_millis(), id.to_string())),
        };
        let searcher = self.reader.searcher();
        let hits = searcher
            .search(all_of(clauses).as_ref(), &top)
            .map_err(tantivy_error)?;
        hits.into_iter()
            .map(|hit| {
                let at = Timestamp::from_millis(hit.sort)
                    .ok_or_else(|| IndexError::Corrupt(format!("sort key {}", hit.sort)))?;
                let id = ConversationId::parse(&hit.id)
                    .map_err(|error| IndexError::Corrupt(error.to_string()))?;
                Ok((at, id))
            })
            .collect()
    }

    fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError> {
        let keys: Vec<Term> = ids
            .iter()
            .map(|id| self.fields.key(CONVERSATION, &id.to_string()))
            .collect();
        let Some(query) = any_of(keys) else {
            return Ok(Vec::new());
        };
        let mut docs = self
            .bodies(query.as_ref(), usize::MAX)?
            .iter()
            .map(|body| decode::<ConversationDoc>(body))
            .collect::<Result<Vec<_>, _>>()?;
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(docs)
    }

    fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError> {
        let terms: Vec<Term> = keys
            .iter()
            .map(|key| self.fields.key(IDENTITY, key))
            .collect();
        let Some(query) = any_of(terms) else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let found: HashMap<String, String> = searcher
            .search(query.as_ref(), &IdAndContact)
            .map_err(tantivy_error)?
            .into_iter()
            .collect();
        let mut seen = HashSet::new();
        Ok(keys
            .iter()
            .filter(|key| seen.insert(key.as_str()))
            .filter_map(|key| Some((key.clone(), found.get(key)?.clone())))
            .collect())
    }

    fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError> {
        let query = TermQuery::new(self.fields.key(CONTACT, id), IndexRecordOption::Basic);
        let bodies = self.bodies(&query, 1)?;
        bodies
            .first()
            .map(|body| decode::<ContactRecord>(body))
            .transpose()
    }

    fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRecord>, IndexError> {
        let keys: BTreeSet<Term> = ids.iter().map(|id| self.fields.key(CONTACT, id)).collect();
        let Some(query) = any_of(keys.into_iter().collect()) else {
            return Ok(Vec::new());
        };
        self.bodies(query.as_ref(), usize::MAX)?
            .iter()
            .map(|body| decode::<ContactRecord>(body))
            .collect()
    }

    fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let mut clauses = vec![f.kind_is(CONTACT)];
        if let Some(identity) = &query.identity {
            clauses.push(term_query(f.text(f.identity, identity)));
        }
        let terms: BTreeSet<&String> = query.name_terms.iter().collect();
        for term in terms {
            clauses.push(term_query(f.text(f.name, term)));
        }
        let query_terms: Vec<&String> = query.name_terms.iter().collect();
        let clauses = all_of(clauses);
        let searcher = self.reader.searcher();
        // The index finds contacts with every term in some name; a contact matches when one
        // name holds them all, which the records tell. Without name terms every hit matches.
        let mut after = query.after.clone();
        let mut out = Vec::new();
        loop {
            let wanted = query.limit - out.len();
            let page = if query_terms.is_empty() {
                wanted
            } else {
                wanted.saturating_mul(2).max(64)
            };
            let top = TopByKey {
                limit: page,
                id_descending: false,
                after: after.take().map(|id| (0, id)),
            };
            let hits = searcher
                .search(clauses.as_ref(), &top)
                .map_err(tantivy_error)?;
            let complete = hits.len() < page;
            for hit in hits {
                let contact: ContactRecord = decode(&self.body_at(&searcher, hit.address)?)?;
                after = Some(hit.id);
                let named = query_terms.is_empty()
                    || contact.names.iter().any(|name| {
                        let terms = normalize::terms(name);
                        query_terms.iter().all(|term| terms.contains(term))
                    });
                if named {
                    out.push(contact);
                    if out.len() == query.limit {
                        return Ok(out);
                    }
                }
            }
            if complete {
                return Ok(out);
            }
        }
    }

    fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let Some(of_contacts) = any_of(contacts.iter().map(|c| f.text(f.owner, c)).collect())
        else {
            return Ok(Vec::new());
        };
        let query = all_of(vec![f.kind_is(TICKET), of_contacts]);
        let top = TopByKey {
            limit,
            id_descending: true,
            after: None,
        };
        self.top_bodies(query.as_ref(), &top)
    }

    fn top_bodies<T: for<'de> Deserialize<'de>>(
        &self,
        query: &dyn Query,
        top: &TopByKey,
    ) -> Result<Vec<T>, IndexError> {
        let searcher = self.reader.searcher();
        let hits = searcher.search(query, top).map_err(tantivy_error)?;
        hits.into_iter()
            .map(|hit| decode::<T>(&self.body_at(&searcher, hit.address)?))
            .collect()
    }

    fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError> {
        let f = &self.fields;
        let terms: Vec<Term> = conversations
            .iter()
            .map(|c| f.text(f.ev_conversation, &c.to_string()))
            .chain(tickets.iter().map(|t| f.text(f.ev_ticket, &t.to_string())))
            .collect();
        let Some(about) = any_of(terms) else {
            return Ok(Vec::new());
        };
        let query = all_of(vec![f.kind_is(EVENT), about]);
        let searcher = self.reader.searcher();
        let mut sequences = searcher
            .search(query.as_ref(), &Sequences)
            .map_err(tantivy_error)?;
        sequences.sort_unstable();
        sequences.dedup();
        Ok(sequences.into_iter().map(Sequence).collect())
    }
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, IndexError> {
    serde_json::from_slice(body).map_err(|error| IndexError::Corrupt(error.to_string()))
}

#[async_trait]
impl FindIndex for TantivyIndex {
    fn backend(&self) -> &'static str {
        "tantivy"
    }

    async fn position(&self) -> Result<Sequence, IndexError> {
        Ok(Sequence(self.inner.position.load(Ordering::SeqCst)))
    }

    async fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        self.blocking(move |inner| inner.apply(batch)).await
    }

    async fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError> {
        let keys = keys.to_vec();
        self.blocking(move |inner| inner.identities(&keys)).await
    }

    async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError> {
        let id = id.to_string();
        self.blocking(move |inner| inner.contact(&id)).await
    }

    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRecord>, IndexError> {
        let ids = ids.to_vec();
        self.blocking(move |inner| inner.contacts(&ids)).await
    }

    async fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError> {
        let query = query.clone();
        self.blocking(move |inner| inner.list_contacts(&query))
            .await
    }

    async fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
        let query = query.clone();
        self.blocking(move |inner| inner.find_conversations(&query))
            .await
    }

    async fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError> {
        let ids = ids.to_vec();
        self.blocking(move |inner| inner.conversation_docs(&ids))
            .await
    }

    async fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError> {
        let contacts = contacts.to_vec();
        self.blocking(move |inner| inner.contact_tickets(&contacts, limit))
            .await
    }

    async fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError> {
        let conversations = conversations.to_vec();
        let tickets = tickets.to_vec();
        self.blocking(move |inner| inner.events_of(&conversations, &tickets))
            .await
    }

    async fn purge(&self) -> Result<(), IndexError> {
        self.blocking(Inner::purge).await
    }

    async fn rest(&self) -> Result<(), IndexError> {
        self.blocking(Inner::rest).await
    }
}

// ---------------------------------------------------------------------------------------------
// Collectors.

/// One hit of [`TopByKey`].
#[derive(Clone, Debug)]
struct Hit {
    sort: i64,
    id: String,
    address: DocAddress,
}

/// The first `limit` documents in the order `sort` descending, then `id` descending (or
/// ascending), strictly after `after`.
struct TopByKey {
    limit: usize,
    id_descending: bool,
    after: Option<(i64, String)>,
}

impl TopByKey {
    /// Whether (`sort`, `id`) comes before (`other_sort`, `other_id`) in the order.
    fn before(&self, sort: i64, id: &str, other_sort: i64, other_id: &str) -> bool {
        match sort.cmp(&other_sort) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                if self.id_descending {
                    id > other_id
                } else {
                    id < other_id
                }
            }
        }
    }
}

struct TopSegment {
    limit: usize,
    id_descending: bool,
    after: Option<(i64, String)>,
    segment: SegmentOrdinal,
    sort: Column<i64>,
    id: StrColumn,
    ords: Column<u64>,
    /// The best so far, the worst on top: `(sort, rank)` where a larger rank comes first.
    heap: BinaryHeap<Reverse<(i64, u64, DocId)>>,
    text: String,
    /// The sort keys of a block of documents (reused).
    sorts: Vec<Option<i64>>,
}

impl TopSegment {
    /// The within-segment rank of an id ordinal: larger comes first.
    fn rank(&self, ord: u64) -> u64 {
        if self.id_descending {
            ord
        } else {
            u64::MAX - ord
        }
    }
}

impl SegmentCollector for TopSegment {
    type Fruit = Vec<Hit>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let sort = self.sort.first(doc);
        self.consider(doc, sort);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        // One read of the sort column for the whole block.
        let mut sorts = std::mem::take(&mut self.sorts);
        sorts.clear();
        sorts.resize(docs.len(), None);
        self.sort.first_vals(docs, &mut sorts);
        for (doc, sort) in docs.iter().zip(&sorts) {
            self.consider(*doc, *sort);
        }
        self.sorts = sorts;
    }

    fn harvest(self) -> Vec<Hit> {
        self.harvest_hits()
    }
}

impl TopSegment {
    fn consider(&mut self, doc: DocId, sort: Option<i64>) {
        let Some(sort) = sort else {
            return;
        };
        let full = self.heap.len() >= self.limit;
        if full
            && let Some(Reverse((worst, _, _))) = self.heap.peek()
            && sort < *worst
        {
            return;
        }
        if let Some((after_sort, _)) = &self.after
            && sort > *after_sort
        {
            return;
        }
        let Some(ord) = self.ords.first(doc) else {
            return;
        };
        if let Some((after_sort, after_id)) = &self.after
            && sort == *after_sort
        {
            self.text.clear();
            if !matches!(self.id.ord_to_str(ord, &mut self.text), Ok(true)) {
                return;
            }
            let later = if self.id_descending {
                self.text.as_str() < after_id.as_str()
            } else {
                self.text.as_str() > after_id.as_str()
            };
            if !later {
                return;
            }
        }
        let entry = Reverse((sort, self.rank(ord), doc));
        if full {
            if let Some(worst) = self.heap.peek()
                && entry < *worst
            {
                self.heap.pop();
                self.heap.push(entry);
            }
        } else {
            self.heap.push(entry);
        }
    }

    fn harvest_hits(self) -> Vec<Hit> {
        let mut out = Vec::with_capacity(self.heap.len());
        let mut text = String::new();
        for Reverse((sort, _, doc)) in self.heap {
            let Some(ord) = self.ords.first(doc) else {
                continue;
            };
            text.clear();
            if matches!(self.id.ord_to_str(ord, &mut text), Ok(true)) {
                out.push(Hit {
                    sort,
                    id: text.clone(),
                    address: DocAddress::new(self.segment, doc),
                });
            }
        }
        out
    }
}

impl Collector for TopByKey {
    type Fruit = Vec<Hit>;
    type Child = TopSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TopSegment> {
        let fast = reader.fast_fields();
        let sort = fast.i64("sort")?;
        let id = fast
            .str("id")?
            .ok_or_else(|| TantivyError::SchemaError("the id column is missing".into()))?;
        let ords = id.ords().clone();
        Ok(TopSegment {
            limit: self.limit,
            id_descending: self.id_descending,
            after: self.after.clone(),
            segment,
            sort,
            id,
            ords,
            heap: BinaryHeap::with_capacity(self.limit.min(1 << 16) + 1),
            text: String::new(),
            sorts: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Hit>>) -> tantivy::Result<Vec<Hit>> {
        let mut all: Vec<Hit> = fruits.into_iter().flatten().collect();
        all.sort_by(|a, b| {
            if self.before(a.sort, &a.id, b.sort, &b.id) {
                std::cmp::Ordering::Less
            } else if self.before(b.sort, &b.id, a.sort, &a.id) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        all.truncate(self.limit);
        Ok(all)
    }
}

/// Every matching document's `sequence`.
struct Sequences;

struct SequencesSegment {
    column: Column<u64>,
    out: Vec<u64>,
}

impl SegmentCollector for SequencesSegment {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(sequence) = self.column.first(doc) {
            self.out.push(sequence);
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.out
    }
}

impl Collector for Sequences {
    type Fruit = Vec<u64>;
    type Child = SequencesSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SequencesSegment> {
        Ok(SequencesSegment {
            column: reader.fast_fields().u64("sequence")?,
            out: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

/// Every matching document's `id` and `contact`, read from their columns.
struct IdAndContact;

struct IdAndContactSegment {
    id: StrColumn,
    contact: StrColumn,
    out: Vec<(String, String)>,
}

impl SegmentCollector for IdAndContactSegment {
    type Fruit = Vec<(String, String)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let (Some(id), Some(contact)) = (self.id.ords().first(doc), self.contact.ords().first(doc))
        else {
            return;
        };
        let mut id_text = String::new();
        let mut contact_text = String::new();
        if matches!(self.id.ord_to_str(id, &mut id_text), Ok(true))
            && matches!(
                self.contact.ord_to_str(contact, &mut contact_text),
                Ok(true)
            )
        {
            self.out.push((id_text, contact_text));
        }
    }

    fn harvest(self) -> Vec<(String, String)> {
        self.out
    }
}

impl Collector for IdAndContact {
    type Fruit = Vec<(String, String)>;
    type Child = IdAndContactSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<IdAndContactSegment> {
        let fast = reader.fast_fields();
        let column = |name: &str| {
            fast.str(name)?
                .ok_or_else(|| TantivyError::SchemaError(format!("the {name} column is missing")))
        };
        Ok(IdAndContactSegment {
            id: column("id")?,
            contact: column("owner")?,
            out: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(String, String)>>,
    ) -> tantivy::Result<Vec<(String, String)>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}
