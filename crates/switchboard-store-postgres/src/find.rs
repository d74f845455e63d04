//! The finder's index on PostgreSQL: [`PgFindIndex`], a [`FindIndex`] over the `sb_find_*`
//! tables of migration `V3__find.sql`, in the same database (and schema) as the store.
//!
//! Text search is PostgreSQL's own, without its dictionaries: the finder hands over terms it
//! already normalized ([`switchboard_find::normalize`]: folded, CJK characters and pairs), they
//! are stored as they are with `array_to_tsvector`, and a query's terms are matched as quoted
//! lexemes of a `tsquery` (`'t1' & 't2'`), so Chinese, Cyrillic and Latin terms match exactly as
//! normalized. The exact-value filters (e-mail, phone, visitor id, agent id, tag) are `bytea[]`
//! columns with GIN indexes, asked with `&&` (any of); pages walk the btree
//! `(sort_key DESC, id DESC)`, a contact's conversations `(contact, sort_key DESC, id DESC)`.

use std::collections::BTreeSet;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use switchboard_core::{ConversationId, ConversationStatus, Sequence, TicketId, Timestamp};
use switchboard_find::normalize;
use switchboard_find::{
    ContactQuery, ContactRecord, ConversationDoc, FindIndex, FindQuery, IndexBatch, IndexError,
    TicketDoc,
};
use tokio_postgres::types::ToSql;

use crate::read::Params;
use crate::{PgStore, error};

/// The longest lexeme a tsvector or a tsquery holds, in bytes (PostgreSQL keeps a lexeme's
/// length in 11 bits and refuses, or mangles, a longer one). A longer term is not in the
/// tsvector (the document's `term_list` keeps it), and a conversation query asking for one
/// finds nothing; contacts are checked by their names themselves.
const MAX_TERM_BYTES: usize = 2046;

/// The most bytes of distinct lexemes one tsvector holds here (PostgreSQL's bound is 1 MiB).
/// A conversation whose distinct terms go past it has the rest left out of the index.
const MAX_TERMS_BYTES: usize = 1_000_000;

/// How many of the newest conversations (of those the other filters allow) a text query reads
/// first, in order, before it reads the words' GIN index instead: a word in more than about
/// one conversation in a hundred fills a page from there.
const NEWEST_SCAN: usize = 5000;

/// The finder's tables that hold personal data: after an erasure each is rewritten into new
/// files (see [`rewrite`]), so that no dead row version or index entry keeps an erased value.
const PERSONAL_TABLES: [&str; 3] = [
    "sb_find_conversations",
    "sb_find_contacts",
    "sb_find_identities",
];

/// The finder's other tables (ids, times and sequences only): vacuumed by `purge`.
const OTHER_TABLES: [&str; 3] = ["sb_find_tickets", "sb_find_events", "sb_find_state"];

/// The finder's index in the store's database: made by [`PgStore::find_index`], sharing the
/// store's connection pool (so its URL, TLS, schema and timeouts). Cheap to clone. Any number
/// of them, on any number of replicas, read the same tables; one writes at a time (the
/// replica holding the `find` lease), and [`FindIndex::apply`] refuses a batch that is not
/// past the position (another writer already reached it).
#[derive(Clone)]
pub struct PgFindIndex {
    pool: Pool,
}

impl std::fmt::Debug for PgFindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFindIndex").finish_non_exhaustive()
    }
}

impl PgStore {
    /// The finder's index in this store's database and schema (its tables come with the
    /// store's migrations), using this store's connection pool. After
    /// [`switchboard_store::Storage::close_within`] it answers [`IndexError::Unavailable`].
    pub fn find_index(&self) -> PgFindIndex {
        PgFindIndex {
            pool: self.inner.pool.clone(),
        }
    }
}

fn pg(context: &str, e: tokio_postgres::Error) -> IndexError {
    IndexError::Unavailable(format!("{context}: {}", error::chain(&e)))
}

fn corrupt(what: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt(what.to_string())
}

fn id_bytes(id: &ConversationId) -> Vec<u8> {
    id.to_string().into_bytes()
}

fn parse_id(bytes: &[u8]) -> Result<ConversationId, IndexError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| corrupt(format!("a conversation id is not UTF-8: {bytes:?}")))?;
    ConversationId::parse(text).map_err(corrupt)
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, IndexError> {
    String::from_utf8(bytes).map_err(|e| corrupt(format!("{what} is not UTF-8: {e}")))
}

fn texts(values: Vec<Vec<u8>>, what: &str) -> Result<Vec<String>, IndexError> {
    values.into_iter().map(|v| text(v, what)).collect()
}

fn bytes_of(values: &[String]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn timestamp(millis: i64) -> Result<Timestamp, IndexError> {
    Timestamp::from_millis(millis).ok_or_else(|| corrupt(format!("a time out of range: {millis}")))
}

fn sequence(value: Sequence) -> Result<i64, IndexError> {
    i64::try_from(value.0).map_err(|_| {
        IndexError::Unavailable(format!(
            "sequence {value} is past what PostgreSQL's bigint holds"
        ))
    })
}

/// The lexemes of a tsvector for `terms`: without repeats, without empty or too long ones
/// (or any with a NUL, which no normalized term has), within [`MAX_TERMS_BYTES`].
fn lexemes<'a>(terms: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let distinct: BTreeSet<&str> = terms
        .into_iter()
        .map(String::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TERM_BYTES && !t.contains('\0'))
        .collect();
    let mut total = 0;
    distinct
        .into_iter()
        .filter(|t| {
            total += t.len();
            total <= MAX_TERMS_BYTES
        })
        .collect()
}

/// A tsquery holding every one of `terms` as a literal lexeme (`'a' & 'b'`), or `None` when
/// one of them can be in no index (empty, too long, a NUL): then nothing matches.
fn tsquery(terms: &[String]) -> Option<String> {
    let mut query = String::new();
    for term in terms {
        if term.is_empty() || term.len() > MAX_TERM_BYTES || term.contains('\0') {
            return None;
        }
        if !query.is_empty() {
            query.push_str(" & ");
        }
        query.push('\'');
        for c in term.chars() {
            match c {
                '\'' => query.push_str("''"),
                '\\' => query.push_str("\\\\"),
                c => query.push(c),
            }
        }
        query.push('\'');
    }
    Some(query)
}

/// Whether one of `names` holds every one of `terms` (the terms of [`normalize::query_terms`]).
fn name_holds(names: &BTreeSet<String>, terms: &[String]) -> bool {
    terms.is_empty()
        || names.iter().any(|name| {
            let indexed = normalize::terms(name);
            terms.iter().all(|t| indexed.contains(t))
        })
}

/// `batch` with one entry per document, contact, identity key and event: the last one given
/// (as if applied in order), so that the batch's statements can run in any order.
fn last_of_each(mut batch: IndexBatch) -> IndexBatch {
    fn keep_last<T, K: Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
        let mut seen = BTreeSet::new();
        let mut kept: Vec<T> = Vec::with_capacity(items.len());
        for item in std::mem::take(items).into_iter().rev() {
            if seen.insert(key(&item)) {
                kept.push(item);
            }
        }
        kept.reverse();
        *items = kept;
    }
    keep_last(&mut batch.conversations, |d| d.id.clone());
    keep_last(&mut batch.tickets, |t| t.id.clone());
    keep_last(&mut batch.contacts, |c| c.id.clone());
    keep_last(&mut batch.identities, |(key, _)| key.clone());
    keep_last(&mut batch.events, |e| e.sequence);
    batch
}

impl PgFindIndex {
    async fn client(&self) -> Result<Object, IndexError> {
        self.pool.get().await.map_err(|e| match error::pool(e) {
            switchboard_store::StoreError::Unavailable(why) => IndexError::Unavailable(why),
            other => IndexError::Unavailable(other.to_string()),
        })
    }

    /// A conversation document from a row of [`CONVERSATION_COLUMNS`].
    fn conversation_doc(row: &tokio_postgres::Row) -> Result<ConversationDoc, IndexError> {
        let get = |e: tokio_postgres::Error| pg("reading a conversation document", e);
        let id: Vec<u8> = row.try_get("id").map_err(get)?;
        let status: String = row.try_get("status").map_err(get)?;
        let started_at: Option<i64> = row.try_get("started_at").map_err(get)?;
        let contact: Option<Vec<u8>> = row.try_get("contact").map_err(get)?;
        Ok(ConversationDoc {
            id: parse_id(&id)?,
            vendor: text(row.try_get("vendor").map_err(get)?, "a vendor")?,
            status: ConversationStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("an unknown status {status:?}")))?,
            sort_key: timestamp(row.try_get("sort_key").map_err(get)?)?,
            started_at: started_at.map(timestamp).transpose()?,
            updated_at: timestamp(row.try_get("updated_at").map_err(get)?)?,
            contact: contact.map(|c| text(c, "a contact id")).transpose()?,
            emails: texts(row.try_get("emails").map_err(get)?, "an e-mail")?,
            phones: texts(row.try_get("phones").map_err(get)?, "a phone")?,
            visitor_ids: texts(row.try_get("visitor_ids").map_err(get)?, "a visitor id")?,
            agent_ids: texts(row.try_get("agent_ids").map_err(get)?, "an agent id")?,
            tags: texts(row.try_get("tags").map_err(get)?, "a tag")?,
            terms: texts(row.try_get("term_list").map_err(get)?, "a term")?,
        })
    }
}

const UPSERT_CONVERSATION: &str = "INSERT INTO sb_find_conversations \
     (id, connection, vendor, status, sort_key, started_at, updated_at, contact, emails, phones, visitor_ids, agent_ids, tags, term_list, terms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, array_to_tsvector($15::text[])) \
     ON CONFLICT (id) DO UPDATE SET connection = EXCLUDED.connection, vendor = EXCLUDED.vendor, \
     status = EXCLUDED.status, sort_key = EXCLUDED.sort_key, started_at = EXCLUDED.started_at, \
     updated_at = EXCLUDED.updated_at, contact = EXCLUDED.contact, emails = EXCLUDED.emails, \
     phones = EXCLUDED.phones, visitor_ids = EXCLUDED.visitor_ids, agent_ids = EXCLUDED.agent_ids, \
     tags = EXCLUDED.tags, term_list = EXCLUDED.term_list, terms = EXCLUDED.terms";

// Tickets, identities and events go in one statement each per batch (arrays of their columns,
// unnested): a rebuild from the log writes one event row per event.
const UPSERT_TICKETS: &str = "INSERT INTO sb_find_tickets (id, contact, updated_at) \
     SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) \
     ON CONFLICT (id) DO UPDATE SET contact = EXCLUDED.contact, updated_at = EXCLUDED.updated_at";

const UPSERT_CONTACT: &str = "INSERT INTO sb_find_contacts (id, identities, name_terms, body) \
     VALUES ($1, $2, array_to_tsvector($3::text[]), $4) \
     ON CONFLICT (id) DO UPDATE SET identities = EXCLUDED.identities, name_terms = EXCLUDED.name_terms, body = EXCLUDED.body";

const UPSERT_IDENTITIES: &str = "INSERT INTO sb_find_identities (key, contact) \
     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET contact = EXCLUDED.contact";

const DELETE_IDENTITIES: &str = "DELETE FROM sb_find_identities WHERE key = ANY($1)";

const UPSERT_EVENTS: &str = "INSERT INTO sb_find_events (sequence, conversation, ticket) \
     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) \
     ON CONFLICT (sequence) DO UPDATE SET conversation = EXCLUDED.conversation, ticket = EXCLUDED.ticket";

const CONVERSATION_COLUMNS: &str = "id, vendor, status, sort_key, started_at, updated_at, contact, \
     emails, phones, visitor_ids, agent_ids, tags, term_list";

/// One row's values for [`UPSERT_CONVERSATION`].
struct ConversationRow {
    id: Vec<u8>,
    connection: String,
    vendor: Vec<u8>,
    status: &'static str,
    sort_key: i64,
    started_at: Option<i64>,
    updated_at: i64,
    contact: Option<Vec<u8>>,
    emails: Vec<Vec<u8>>,
    phones: Vec<Vec<u8>>,
    visitor_ids: Vec<Vec<u8>>,
    agent_ids: Vec<Vec<u8>>,
    tags: Vec<Vec<u8>>,
    term_list: Vec<Vec<u8>>,
    terms: Vec<String>,
}

impl ConversationRow {
    fn new(doc: &ConversationDoc) -> Self {
        ConversationRow {
            id: id_bytes(&doc.id),
            connection: doc.id.connection.as_str().to_owned(),
            vendor: doc.vendor.as_bytes().to_vec(),
            status: doc.status.as_str(),
            sort_key: doc.sort_key.as_millis(),
            started_at: doc.started_at.map(Timestamp::as_millis),
            updated_at: doc.updated_at.as_millis(),
            contact: doc.contact.as_ref().map(|c| c.as_bytes().to_vec()),
            emails: bytes_of(&doc.emails),
            phones: bytes_of(&doc.phones),
            visitor_ids: bytes_of(&doc.visitor_ids),
            agent_ids: bytes_of(&doc.agent_ids),
            tags: bytes_of(&doc.tags),
            term_list: bytes_of(&doc.terms),
            terms: lexemes(&doc.terms).into_iter().map(str::to_owned).collect(),
        }
    }
}

/// One row's values for [`UPSERT_CONTACT`].
struct ContactRow {
    id: Vec<u8>,
    identities: Vec<Vec<u8>>,
    name_terms: Vec<String>,
    body: String,
}

impl ContactRow {
    fn new(contact: &ContactRecord) -> Result<Self, IndexError> {
        let terms: Vec<String> = contact
            .names
            .iter()
            .flat_map(|name| normalize::terms(name))
            .collect();
        Ok(ContactRow {
            id: contact.id.as_bytes().to_vec(),
            identities: contact
                .identities
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            name_terms: lexemes(&terms).into_iter().map(str::to_owned).collect(),
            body: serde_json::to_string(contact)
                .map_err(|e| corrupt(format!("contact {} does not encode: {e}", contact.id)))?,
        })
    }
}

#[async_trait]
impl FindIndex for PgFindIndex {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn position(&self) -> Result<Sequence, IndexError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT position FROM sb_find_state WHERE id = 1", &[])
            .await
            .map_err(|e| pg("reading the finder's position", e))?;
        let position: i64 = row
            .try_get(0)
            .map_err(|e| pg("reading the finder's position", e))?;
        u64::try_from(position)
            .map(Sequence)
            .map_err(|_| corrupt(format!("the finder's position is {position}")))
    }

    async fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        let batch = last_of_each(batch);
        let position = sequence(batch.position)?;
        let conversations: Vec<ConversationRow> = batch
            .conversations
            .iter()
            .map(ConversationRow::new)
            .collect();
        let contacts = batch
            .contacts
            .iter()
            .map(ContactRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut event_sequences = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            event_sequences.push(sequence(event.sequence)?);
        }
        let event_conversations: Vec<Option<Vec<u8>>> = batch
            .events
            .iter()
            .map(|e| e.conversation.as_ref().map(id_bytes))
            .collect();
        let event_tickets: Vec<Option<Vec<u8>>> = batch
            .events
            .iter()
            .map(|e| e.ticket.as_ref().map(id_bytes))
            .collect();

        let context = "applying a batch to the finder's index";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| pg(context, e))?;
        // The state row's lock makes two writers (a lease that changed hands) take turns, and
        // lets the later one see where the earlier one left the index.
        let row = tx
            .query_one(
                "SELECT position FROM sb_find_state WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(|e| pg(context, e))?;
        let current: i64 = row.try_get(0).map_err(|e| pg(context, e))?;
        if position <= current {
            return Err(IndexError::Unavailable(format!(
                "the finder's index is at sequence {current}, not before this batch's {position}: another finder wrote it; read the position again"
            )));
        }

        let upsert_conversation = tx
            .prepare_cached(UPSERT_CONVERSATION)
            .await
            .map_err(|e| pg(context, e))?;
        let upsert_tickets = tx
            .prepare_cached(UPSERT_TICKETS)
            .await
            .map_err(|e| pg(context, e))?;
        let upsert_contact = tx
            .prepare_cached(UPSERT_CONTACT)
            .await
            .map_err(|e| pg(context, e))?;
        let upsert_identities = tx
            .prepare_cached(UPSERT_IDENTITIES)
            .await
            .map_err(|e| pg(context, e))?;
        let delete_identities = tx
            .prepare_cached(DELETE_IDENTITIES)
            .await
            .map_err(|e| pg(context, e))?;
        let upsert_events = tx
            .prepare_cached(UPSERT_EVENTS)
            .await
            .map_err(|e| pg(context, e))?;
        let move_position = tx
            .prepare_cached("UPDATE sb_find_state SET position = $1 WHERE id = 1")
            .await
            .map_err(|e| pg(context, e))?;

        let ticket_ids: Vec<Vec<u8>> = batch.tickets.iter().map(|t| id_bytes(&t.id)).collect();
        let ticket_contacts: Vec<Option<Vec<u8>>> = batch
            .tickets
            .iter()
            .map(|t| t.contact.as_ref().map(|c| c.as_bytes().to_vec()))
            .collect();
        let ticket_times: Vec<i64> = batch
            .tickets
            .iter()
            .map(|t| t.updated_at.as_millis())
            .collect();
        let (pointed, forgotten): (Vec<_>, Vec<_>) =
            batch.identities.iter().partition(|(_, c)| c.is_some());
        let pointed_keys: Vec<Vec<u8>> =
            pointed.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
        let pointed_contacts: Vec<Vec<u8>> = pointed
            .iter()
            .map(|(_, c)| c.as_deref().unwrap_or_default().as_bytes().to_vec())
            .collect();
        let forgotten_keys: Vec<Vec<u8>> = forgotten
            .iter()
            .map(|(k, _)| k.as_bytes().to_vec())
            .collect();
        let mut statements: Vec<(&tokio_postgres::Statement, Vec<&(dyn ToSql + Sync)>)> =
            Vec::new();
        for row in &conversations {
            statements.push((
                &upsert_conversation,
                vec![
                    &row.id,
                    &row.connection,
                    &row.vendor,
                    &row.status,
                    &row.sort_key,
                    &row.started_at,
                    &row.updated_at,
                    &row.contact,
                    &row.emails,
                    &row.phones,
                    &row.visitor_ids,
                    &row.agent_ids,
                    &row.tags,
                    &row.term_list,
                    &row.terms,
                ],
            ));
        }
        if !ticket_ids.is_empty() {
            statements.push((
                &upsert_tickets,
                vec![&ticket_ids, &ticket_contacts, &ticket_times],
            ));
        }
        for row in &contacts {
            statements.push((
                &upsert_contact,
                vec![&row.id, &row.identities, &row.name_terms, &row.body],
            ));
        }
        if !pointed_keys.is_empty() {
            statements.push((&upsert_identities, vec![&pointed_keys, &pointed_contacts]));
        }
        if !forgotten_keys.is_empty() {
            statements.push((&delete_identities, vec![&forgotten_keys]));
        }
        if !event_sequences.is_empty() {
            statements.push((
                &upsert_events,
                vec![&event_sequences, &event_conversations, &event_tickets],
            ));
        }
        statements.push((&move_position, vec![&position]));
        // Every statement is sent at once (tokio-postgres pipelines the queries of one
        // connection): one round trip's wait for the batch, not one per row. The first that
        // fails aborts the transaction, which is then dropped: rolled back, nothing written.
        futures::future::try_join_all(
            statements
                .iter()
                .map(|(statement, params)| tx.execute(*statement, params)),
        )
        .await
        .map_err(|e| pg(context, e))?;
        tx.commit().await.map_err(|e| pg(context, e))?;
        Ok(())
    }

    async fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let context = "reading identity keys";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT key, contact FROM sb_find_identities WHERE key = ANY($1) ORDER BY key",
            )
            .await
            .map_err(|e| pg(context, e))?;
        let rows = client
            .query(&statement, &[&bytes_of(keys)])
            .await
            .map_err(|e| pg(context, e))?;
        rows.iter()
            .map(|row| {
                Ok((
                    text(
                        row.try_get(0).map_err(|e| pg(context, e))?,
                        "an identity key",
                    )?,
                    text(row.try_get(1).map_err(|e| pg(context, e))?, "a contact id")?,
                ))
            })
            .collect()
    }

    async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError> {
        let context = "reading a contact";
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT body FROM sb_find_contacts WHERE id = $1")
            .await
            .map_err(|e| pg(context, e))?;
        let row = client
            .query_opt(&statement, &[&id.as_bytes()])
            .await
            .map_err(|e| pg(context, e))?;
        row.map(|row| {
            let body: String = row.try_get(0).map_err(|e| pg(context, e))?;
            serde_json::from_str(&body)
                .map_err(|e| corrupt(format!("contact {id:?} does not decode: {e}")))
        })
        .transpose()
    }

    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRecord>, IndexError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let context = "reading contacts";
        let keys: Vec<&[u8]> = ids
            .iter()
            .map(String::as_bytes)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, body FROM sb_find_contacts WHERE id = ANY($1)")
            .await
            .map_err(|e| pg(context, e))?;
        let rows = client
            .query(&statement, &[&keys])
            .await
            .map_err(|e| pg(context, e))?;
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0).map_err(|e| pg(context, e))?;
                let body: String = row.try_get(1).map_err(|e| pg(context, e))?;
                serde_json::from_str(&body).map_err(|e| {
                    corrupt(format!(
                        "contact {:?} does not decode: {e}",
                        String::from_utf8_lossy(&id)
                    ))
                })
            })
            .collect()
    }

    async fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let context = "listing contacts";
        // A term no tsvector holds (too long) is left to the check below.
        let names = if query.name_terms.is_empty() {
            None
        } else {
            tsquery(&query.name_terms)
        };
        let client = self.client().await?;
        let mut out = Vec::new();
        let mut after = query.after.clone();
        // The tsvector holds the terms of every name together; a contact matches when one of
        // its names holds them all, so rows are checked here and read on until the page is
        // full or none are left.
        let chunk = query.limit.clamp(1, 1000);
        loop {
            let mut params = Params::default();
            let mut conditions = Vec::new();
            if let Some(identity) = &query.identity {
                let p = params.push(vec![identity.as_bytes().to_vec()]);
                conditions.push(format!("identities @> {p}::bytea[]"));
            }
            if let Some(names) = &names {
                let p = params.push(names.clone());
                conditions.push(format!("name_terms @@ {p}::text::tsquery"));
            }
            if let Some(after) = &after {
                let p = params.push(after.as_bytes().to_vec());
                conditions.push(format!("id > {p}"));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let limit = params.push(chunk as i64);
            let sql =
                format!("SELECT id, body FROM sb_find_contacts {filter} ORDER BY id LIMIT {limit}");
            let rows = client
                .query(&sql, &params.refs())
                .await
                .map_err(|e| pg(context, e))?;
            let fetched = rows.len();
            for row in rows {
                let id = text(row.try_get(0).map_err(|e| pg(context, e))?, "a contact id")?;
                let body: String = row.try_get(1).map_err(|e| pg(context, e))?;
                let record: ContactRecord = serde_json::from_str(&body)
                    .map_err(|e| corrupt(format!("contact {id:?} does not decode: {e}")))?;
                after = Some(id);
                if name_holds(&record.names, &query.name_terms) {
                    out.push(record);
                    if out.len() == query.limit {
                        return Ok(out);
                    }
                }
            }
            if fetched < chunk {
                return Ok(out);
            }
        }
    }

    async fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut params = Params::default();
        let mut conditions = Vec::new();
        if !query.connections.is_empty() {
            let values: Vec<String> = query
                .connections
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect();
            let p = params.push(values);
            conditions.push(format!("connection = ANY({p}::text[])"));
        }
        if !query.vendors.is_empty() {
            let p = params.push(bytes_of(&query.vendors));
            conditions.push(format!("vendor = ANY({p}::bytea[])"));
        }
        if !query.statuses.is_empty() {
            let values: Vec<String> = query
                .statuses
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect();
            let p = params.push(values);
            conditions.push(format!("status = ANY({p}::text[])"));
        }
        // started_at, when known, is the sort key: bounding the sort key too lets the page
        // walk start and stop in the order index.
        if let Some(from) = query.started_from {
            let p = params.push(from.as_millis());
            conditions.push(format!("sort_key >= {p} AND started_at >= {p}"));
        }
        if let Some(to) = query.started_to {
            let p = params.push(to.as_millis());
            conditions.push(format!("sort_key < {p} AND started_at < {p}"));
        }
        if let Some(from) = query.updated_from {
            let p = params.push(from.as_millis());
            conditions.push(format!("updated_at >= {p}"));
        }
        if let Some(to) = query.updated_to {
            let p = params.push(to.as_millis());
            conditions.push(format!("updated_at < {p}"));
        }
        for (column, values) in [
            ("emails", &query.emails),
            ("phones", &query.phones),
            ("visitor_ids", &query.visitor_ids),
            ("agent_ids", &query.agent_ids),
            ("tags", &query.tags),
        ] {
            if !values.is_empty() {
                let p = params.push(bytes_of(values));
                conditions.push(format!("{column} && {p}::bytea[]"));
            }
        }
        if !query.contacts.is_empty() {
            let p = params.push(bytes_of(&query.contacts));
            conditions.push(format!("contact = ANY({p}::bytea[])"));
        }
        if let Some((at, id)) = &query.after {
            let t = params.push(at.as_millis());
            let k = params.push(id_bytes(id));
            conditions.push(format!("(sort_key, id) < ({t}::bigint, {k}::bytea)"));
        }
        let terms = if query.terms.is_empty() {
            None
        } else {
            let Some(terms) = tsquery(&query.terms) else {
                return Ok(Vec::new());
            };
            let p = params.push(terms);
            Some(format!("terms @@ {p}::text::tsquery"))
        };
        let limit = params.push(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let filter = |conditions: &[String]| {
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            }
        };
        let mut all = conditions.clone();
        all.extend(terms.clone());
        let plain = format!(
            "SELECT sort_key, id FROM sb_find_conversations {} ORDER BY sort_key DESC, id DESC LIMIT {limit}",
            filter(&all)
        );
        // The matching rows first, then their order: what a few rows match (an e-mail, a
        // rare word) is read from the GIN indexes, never by walking the order index past
        // every row that does not match (which the planner may choose when it guesses a
        // value is common: PostgreSQL's statistics cannot know every word and address).
        let matching_first = format!(
            "WITH matching AS MATERIALIZED (SELECT sort_key, id FROM sb_find_conversations {}) \
             SELECT sort_key, id FROM matching ORDER BY sort_key DESC, id DESC LIMIT {limit}",
            filter(&all)
        );
        // Each query is planned with its own values (never a cached generic plan): how many
        // rows a value matches decides the plan.
        let context = "finding conversations";
        let client = self.client().await?;
        let run = async |sql: &str| -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
            let rows = client
                .query(sql, &params.refs())
                .await
                .map_err(|e| pg(context, e))?;
            rows.iter()
                .map(|row| {
                    let sort_key: i64 = row.try_get(0).map_err(|e| pg(context, e))?;
                    let id: Vec<u8> = row.try_get(1).map_err(|e| pg(context, e))?;
                    Ok((timestamp(sort_key)?, parse_id(&id)?))
                })
                .collect()
        };
        let few =
            !query.emails.is_empty() || !query.phones.is_empty() || !query.visitor_ids.is_empty();
        if few {
            // A person's values match a handful of conversations.
            return run(&matching_first).await;
        }
        let Some(terms) = terms else {
            // The contact index, or the order index with filters the statistics know well
            // (connections, vendors, statuses, agents, tags).
            return run(&plain).await;
        };
        if !query.contacts.is_empty() {
            return run(&plain).await;
        }
        // Text: a common word fills the page from the newest conversations; look there
        // first, within a bound. A word rarer than that is read from the GIN index.
        let newest = format!(
            "SELECT sort_key, id FROM (SELECT sort_key, id, terms FROM sb_find_conversations {} \
             ORDER BY sort_key DESC, id DESC LIMIT {NEWEST_SCAN}) AS newest \
             WHERE {terms} ORDER BY sort_key DESC, id DESC LIMIT {limit}",
            filter(&conditions)
        );
        let page = run(&newest).await?;
        if page.len() == query.limit {
            return Ok(page);
        }
        run(&matching_first).await
    }

    async fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let context = "reading conversation documents";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM sb_find_conversations WHERE id = ANY($1) ORDER BY id"
            ))
            .await
            .map_err(|e| pg(context, e))?;
        let keys: Vec<Vec<u8>> = ids.iter().map(id_bytes).collect();
        let rows = client
            .query(&statement, &[&keys])
            .await
            .map_err(|e| pg(context, e))?;
        rows.iter().map(PgFindIndex::conversation_doc).collect()
    }

    async fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError> {
        if contacts.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let context = "reading a contact's tickets";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, contact, updated_at FROM sb_find_tickets WHERE contact = ANY($1) \
                 ORDER BY updated_at DESC, id DESC LIMIT $2",
            )
            .await
            .map_err(|e| pg(context, e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&bytes_of(contacts), &limit])
            .await
            .map_err(|e| pg(context, e))?;
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0).map_err(|e| pg(context, e))?;
                let contact: Option<Vec<u8>> = row.try_get(1).map_err(|e| pg(context, e))?;
                let updated_at: i64 = row.try_get(2).map_err(|e| pg(context, e))?;
                Ok(TicketDoc {
                    id: parse_id(&id)?,
                    contact: contact.map(|c| text(c, "a contact id")).transpose()?,
                    updated_at: timestamp(updated_at)?,
                })
            })
            .collect()
    }

    async fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError> {
        if conversations.is_empty() && tickets.is_empty() {
            return Ok(Vec::new());
        }
        let context = "reading the events of conversations and tickets";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT sequence FROM sb_find_events WHERE conversation = ANY($1) OR ticket = ANY($2) ORDER BY sequence",
            )
            .await
            .map_err(|e| pg(context, e))?;
        let conversations: Vec<Vec<u8>> = conversations.iter().map(id_bytes).collect();
        let tickets: Vec<Vec<u8>> = tickets.iter().map(id_bytes).collect();
        let rows = client
            .query(&statement, &[&conversations, &tickets])
            .await
            .map_err(|e| pg(context, e))?;
        rows.iter()
            .map(|row| {
                let sequence: i64 = row.try_get(0).map_err(|e| pg(context, e))?;
                u64::try_from(sequence)
                    .map(Sequence)
                    .map_err(|_| corrupt(format!("an event sequence {sequence}")))
            })
            .collect()
    }

    async fn purge(&self) -> Result<(), IndexError> {
        let context = "purging the finder's tables";
        let mut client = self.client().await?;
        // Rewriting a large table may take longer than the pool's statement_timeout: lifted
        // for this session, and put back (RESET returns to the connection's own setting)
        // whatever happens.
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(|e| pg(context, e))?;
        let mut result = Ok(());
        for table in PERSONAL_TABLES {
            result = rewrite(&mut client, table).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            for table in OTHER_TABLES {
                result = client
                    .batch_execute(&format!("VACUUM {table}"))
                    .await
                    .map_err(|e| pg(context, e));
                if result.is_err() {
                    break;
                }
            }
        }
        let reset = client
            .batch_execute("RESET statement_timeout")
            .await
            .map_err(|e| pg(context, e));
        result?;
        reset
    }
}

/// Rewrites `table` into new files and drops the old ones, so that nothing an erasure
/// replaced stays anywhere in the database's files: VACUUM makes dead row versions
/// unreachable but leaves their bytes in the pages' free space, and a GIN index keeps a key
/// (an erased e-mail, a word of an erased message) after its last row is gone.
///
/// Readers go on reading the old table meanwhile; they wait only for the swap at the end
/// (a few statements). Writers wait for the whole rewrite: it holds the finder's state row,
/// which [`FindIndex::apply`] locks first, so no batch can land in the old table after it
/// was copied. One transaction: a rewrite that fails leaves the table as it was.
async fn rewrite(client: &mut Object, table: &str) -> Result<(), IndexError> {
    let context = format!("rewriting {table} after an erasure");
    let context = context.as_str();
    let new = format!("{table}_purge");
    let tx = client.transaction().await.map_err(|e| pg(context, e))?;
    tx.query_one(
        "SELECT position FROM sb_find_state WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await
    .map_err(|e| pg(context, e))?;
    // The table's indexes as PostgreSQL describes them (so this follows any later
    // migration's), and which one is the primary key.
    let indexes = tx
        .query(
            "SELECT i.relname::text, pg_get_indexdef(i.oid), x.indisunique, c.conname::text \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid AND c.contype = 'p' \
             WHERE x.indrelid = $1::text::regclass ORDER BY i.relname",
            &[&table],
        )
        .await
        .map_err(|e| pg(context, e))?;
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {new}; \
         CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE); \
         INSERT INTO {new} SELECT * FROM {table};"
    ))
    .await
    .map_err(|e| pg(context, e))?;
    let mut renames = Vec::new();
    for index in &indexes {
        let name: String = index.try_get(0).map_err(|e| pg(context, e))?;
        let definition: String = index.try_get(1).map_err(|e| pg(context, e))?;
        let unique: bool = index.try_get(2).map_err(|e| pg(context, e))?;
        let constraint: Option<String> = index.try_get(3).map_err(|e| pg(context, e))?;
        let (_, method) = definition.split_once(" USING ").ok_or_else(|| {
            IndexError::Unavailable(format!(
                "{context}: index {name} has a definition this build does not read: {definition}"
            ))
        })?;
        let unique = if unique { "UNIQUE " } else { "" };
        tx.batch_execute(&format!(
            "CREATE {unique}INDEX \"{name}_purge\" ON {new} USING {method}"
        ))
        .await
        .map_err(|e| pg(context, e))?;
        renames.push(match constraint {
            Some(constraint) => format!(
                "ALTER TABLE {table} ADD CONSTRAINT \"{constraint}\" PRIMARY KEY USING INDEX \"{name}_purge\""
            ),
            None => format!("ALTER INDEX \"{name}_purge\" RENAME TO \"{name}\""),
        });
    }
    tx.batch_execute(&format!("ANALYZE {new}"))
        .await
        .map_err(|e| pg(context, e))?;
    tx.batch_execute(&format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; DROP TABLE {table}; ALTER TABLE {new} RENAME TO {table}; {}",
        renames.join("; ")
    ))
    .await
    .map_err(|e| pg(context, e))?;
    tx.commit().await.map_err(|e| pg(context, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_terms_become_quoted_lexemes() {
        let terms = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            tsquery(&terms(&["退款", "ёлка", "cafe"])).as_deref(),
            Some("'退款' & 'ёлка' & 'cafe'")
        );
        assert_eq!(
            tsquery(&terms(&["it's", "a\\b"])).as_deref(),
            Some("'it''s' & 'a\\\\b'")
        );
        assert_eq!(tsquery(&terms(&["ok", ""])), None);
        assert_eq!(
            tsquery(&[String::from("x").repeat(MAX_TERM_BYTES + 1)]),
            None
        );
    }

    #[test]
    fn lexemes_drop_repeats_and_what_no_tsvector_holds() {
        let long = "y".repeat(MAX_TERM_BYTES + 1);
        let terms = vec![
            "b".to_string(),
            "a".to_string(),
            "b".to_string(),
            String::new(),
            long,
            "n\0ul".to_string(),
        ];
        assert_eq!(lexemes(&terms), vec!["a", "b"]);
        let many: Vec<String> = (0..200_000).map(|i| format!("term{i:07}")).collect();
        let kept = lexemes(&many);
        assert!(kept.len() < many.len());
        assert!(kept.iter().map(|t| t.len()).sum::<usize>() <= MAX_TERMS_BYTES);
    }

    #[test]
    fn a_contact_matches_when_one_name_holds_every_term() {
        let names: BTreeSet<String> = ["Anna Petrova".to_string(), "Ivan".to_string()].into();
        let q = |t: &str| normalize::query_terms(t);
        assert!(name_holds(&names, &q("anna PETROVA")));
        assert!(!name_holds(&names, &q("anna ivan")));
        assert!(name_holds(&names, &[]));
    }
}
