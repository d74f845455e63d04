//! The [`Finder`]: tails the log into a [`FindIndex`], and answers from it.
//!
//! It reads the events after the index's position in batches, links visitors into contacts
//! ([`step`], rules in the crate README), and applies one [`crate::IndexBatch`] per batch to
//! the index, atomically with the new position. With a backend shared by replicas, only the
//! replica holding the `find` lease writes; every replica reads.

pub mod step;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;
use switchboard_core::{
    ConnectionId, ContactChange, Conversation, ConversationId, EventKind, EventPayload,
    IncomingEvent, SYSTEM_VENDOR, Sequence, Ticket, Timestamp,
};
use switchboard_store::paging::{
    CONVERSATION_TOKEN, conversation_filters_hash, decode_token, encode_token, fnv1a,
};
use switchboard_store::{
    AppendRequest, ConversationPage, ConversationQuery, DEFAULT_PAGE_SIZE, ErasurePlan,
    ErasureReport, MAX_PAGE_SIZE, Storage, StoreError,
};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

use crate::index::{ContactQuery, ContactRecord, FindIndex, FindQuery, IndexError};
use crate::normalize;

use self::step::{MAX_CONTACT_TICKETS, Step, visitor_key};

/// Gauge: the last log sequence the find index has applied (sampled every `idle_poll`).
pub const POSITION_METRIC: &str = "switchboard_find_position";
/// Gauge: events in the log that the find index has not applied yet (the head minus
/// [`POSITION_METRIC`], sampled every `idle_poll`).
pub const LAG_METRIC: &str = "switchboard_find_lag_events";

/// The kind byte of a contact page token (conversation and ticket tokens are 1 and 2).
pub const CONTACT_TOKEN: u8 = 3;
/// The name of the lease the writing finder holds on a shared backend.
pub const LEASE: &str = "find";
/// How long a merge or split waits for the index to apply its event.
const COMMAND_WAIT: Duration = Duration::from_secs(5);
/// How long an erasure waits for the index to reach the head and to apply its event.
const ERASE_WAIT: Duration = Duration::from_secs(30);
/// About how many bytes of events one batch reads at most.
const BATCH_BYTES: usize = 64 * 1024 * 1024;
/// How long a blocking thread of the finder's runtime waits for work before it ends.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// The most conversations an erasure plans (a contact with more is refused).
const MAX_ERASE_CONVERSATIONS: usize = 1_000_000;

/// How a [`Finder`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinderOptions {
    /// The most events one batch reads and applies (at least 1; and about 64 MiB of events at
    /// most). A finder behind the log reads this many at once; one following it reads what is
    /// new since its last batch.
    pub batch_events: usize,
    /// This replica's name for the `find` lease.
    pub holder: String,
    /// How long the lease lasts unless renewed (each batch renews it).
    pub lease_ttl: Duration,
    /// How often to check the head (and the index's position) when no change is notified.
    pub idle_poll: Duration,
    /// The least time from one batch to the next while the log keeps growing: a finder
    /// following a busy log applies one batch (one commit of its index) per interval, not one
    /// per append. A batch goes at once after a quiet spell, when a whole batch is waiting, and
    /// when someone waits for the index ([`Finder::caught_up`], merge, split, erase).
    pub commit_interval: Duration,
}

impl Default for FinderOptions {
    fn default() -> Self {
        FinderOptions {
            batch_events: 10_000,
            holder: format!("finder-{}", std::process::id()),
            lease_ttl: Duration::from_secs(10),
            idle_poll: Duration::from_secs(1),
            commit_interval: Duration::from_secs(1),
        }
    }
}

/// Why the finder refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No such contact.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (an e-mail that is not one, an identity the contact lacks).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request does not apply to the contact as it is (merged, erased).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The finder or its index cannot answer now; retry.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IndexError> for FindError {
    fn from(error: IndexError) -> Self {
        match error {
            IndexError::Unavailable(_) => FindError::Unavailable(error.to_string()),
            IndexError::Corrupt(_) => FindError::Unavailable(format!(
                "{error}; stop the server and delete the index to rebuild it from the log"
            )),
        }
    }
}

impl From<FindError> for switchboard_core::Error {
    fn from(error: FindError) -> Self {
        match error {
            FindError::NotFound(m) => switchboard_core::Error::not_found(m),
            FindError::InvalidArgument(m) => switchboard_core::Error::invalid(m),
            FindError::FailedPrecondition(m) => switchboard_core::Error::failed_precondition(m),
            FindError::Unavailable(m) => switchboard_core::Error::unavailable(m),
            FindError::Store(e) => e.into(),
        }
    }
}

/// An answer and how far the index had read the log when it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<T> {
    /// The answer.
    pub value: T,
    /// The last log sequence the index had applied (at least).
    pub indexed_through: Sequence,
}

/// Which contacts to list. The filters all hold together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactListQuery {
    /// With this e-mail.
    pub email: Option<String>,
    /// With this phone, in international form (`+...` or `00...`).
    pub phone: Option<String>,
    /// With this vendor visitor id on this connection.
    pub visitor: Option<(ConnectionId, String)>,
    /// Seen with a name holding every word of this.
    pub name: Option<String>,
    /// Contacts per page: 0 means 50, more than 1000 means 1000.
    pub page_size: usize,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// One page of contacts, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactPage {
    /// The contacts (never one merged into another).
    pub contacts: Vec<ContactRecord>,
    /// Pass it as `page_token` (with the same filters) for the next page; `None` on the last.
    pub next_page_token: Option<String>,
}

/// A contact with its conversations and tickets, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactView {
    /// The contact.
    pub contact: ContactRecord,
    /// Its conversations, newest first (the list order).
    pub conversations: Vec<Conversation>,
    /// Its tickets with their connection, most recently changed first.
    pub tickets: Vec<(ConnectionId, Ticket)>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    index: Arc<dyn FindIndex>,
    options: FinderOptions,
    /// The index's position as this finder last saw it.
    applied: watch::Sender<Sequence>,
    /// The last erasure event this finder applied and purged after.
    purged: watch::Sender<Sequence>,
    /// The highest sequence someone waits for the index to apply: the task applies it without
    /// waiting out `commit_interval`.
    wanted: watch::Sender<Sequence>,
    /// The task applying the batch in flight (aborted with the finder's own task on drop).
    applying: Mutex<Option<AbortHandle>>,
}

/// The finder (see the module docs). Dropping it stops its task at once, as a crash would;
/// [`Finder::shutdown`] lets the batch in flight finish.
pub struct Finder {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    commands: tokio::sync::Mutex<()>,
    /// The finder's own runtime, whose threads run at a lower priority ([`crate::priority`]).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl fmt::Debug for Finder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finder")
            .field("index", &self.shared.index.backend())
            .field("storage", &self.shared.storage.backend())
            .field("options", &self.shared.options)
            .field("applied", &*self.shared.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Finder {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        if let Ok(mut applying) = self.shared.applying.lock()
            && let Some(applying) = applying.take()
        {
            applying.abort();
        }
        // Not waited for: a finder may be dropped inside another runtime, where blocking is
        // not allowed. `shutdown` has waited for the task already when it was called.
        if let Ok(mut runtime) = self.runtime.lock()
            && let Some(runtime) = runtime.take()
        {
            runtime.shutdown_background();
        }
    }
}

enum Progress {
    Applied,
    Idle,
    NotHolder,
}

impl Finder {
    /// Spawns the task that tails the log, on a runtime of its own whose threads run at a
    /// lower priority ([`crate::priority`]).
    pub fn start(
        storage: Arc<dyn Storage>,
        index: Arc<dyn FindIndex>,
        options: FinderOptions,
    ) -> Arc<Finder> {
        let options = FinderOptions {
            batch_events: options.batch_events.max(1),
            ..options
        };
        let shared = Arc::new(Shared {
            storage,
            index,
            options,
            applied: watch::channel(Sequence::ZERO).0,
            purged: watch::channel(Sequence::ZERO).0,
            wanted: watch::channel(Sequence::ZERO).0,
            applying: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        // Its own runtime (one worker, and the blocking threads the index's work runs on),
        // every thread of it lowered: ingest first when the cores are all busy. A blocking
        // thread ends after a second without work (tokio's default: ten): the allocator gives
        // a thread's freed memory back to the OS only once the thread allocates again or
        // ends, and these held 35-40 MB after a catch-up of 1M events (BENCHMARKS.md,
        // session 15).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .thread_name("switchboard-find")
            .on_thread_start(crate::priority::lower_this_thread)
            .enable_all()
            .build();
        let (task, runtime) = match runtime {
            Ok(runtime) => (runtime.spawn(run(shared.clone(), stopped)), Some(runtime)),
            Err(error) => {
                warn!(%error, "the finder's runtime could not start; it runs on the server's");
                (tokio::spawn(run(shared.clone(), stopped)), None)
            }
        };
        Arc::new(Finder {
            shared,
            stop,
            task: Mutex::new(Some(task)),
            commands: tokio::sync::Mutex::new(()),
            runtime: Mutex::new(runtime),
        })
    }

    /// Stops the task (waits for the batch in flight) and gives up the lease.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(error) = task.await
            && error.is_panic()
        {
            warn!(%error, "the finder's task panicked");
        }
    }

    /// The last sequence the index applied.
    pub async fn position(&self) -> Result<Sequence, FindError> {
        let position = self.shared.index.position().await?;
        self.shared.applied.send_if_modified(|seen| {
            let newer = position > *seen;
            if newer {
                *seen = position;
            }
            newer
        });
        Ok(position)
    }

    /// Waits until the index has applied `sequence` (true) or `within` passed (false).
    pub async fn caught_up(&self, sequence: Sequence, within: Duration) -> Result<bool, FindError> {
        if self.position().await? >= sequence {
            return Ok(true);
        }
        self.shared.wanted.send_if_modified(|wanted| {
            let more = sequence > *wanted;
            if more {
                *wanted = sequence;
            }
            more
        });
        let mut applied = self.shared.applied.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        let poll = self.shared.options.idle_poll.max(Duration::from_millis(10));
        loop {
            if *applied.borrow_and_update() >= sequence {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(self.position().await? >= sequence);
            }
            // Another replica may be the writer: look at the index itself now and then.
            let wake = (now + poll).min(deadline);
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep_until(wake) => {
                    if self.position().await? >= sequence {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// A page of conversations by the query's store filters and its `find` filters, newest
    /// first (sort key = `started_at`, else `updated_at`, descending; then id descending),
    /// with the stores' page-token rules. Each conversation is read from the store.
    pub async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<Found<ConversationPage>, FindError> {
        let page_size = page_size(query.page_size);
        let filters = conversation_filters_hash(query);
        let after = decode_token(query.page_token.as_deref(), CONVERSATION_TOKEN, filters)?
            .map(|position| decode_position(&position))
            .transpose()?;
        let find = &query.find;
        let mut emails = Vec::new();
        for email in &find.emails {
            emails.push(normalize::email(email).ok_or_else(|| {
                FindError::InvalidArgument(format!(
                    "{email:?} is not an e-mail address; filter by one like name@example.com"
                ))
            })?);
        }
        let mut phones = Vec::new();
        for phone in &find.phones {
            phones.push(normalize::phone(phone).ok_or_else(|| {
                FindError::InvalidArgument(format!(
                    "{phone:?} is not a phone number; give at least five digits, best in international form (+14155550123)"
                ))
            })?);
        }
        let terms = match find.text.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => {
                let terms = normalize::query_terms(text);
                if terms.is_empty() {
                    return Err(FindError::InvalidArgument(format!(
                        "the text {text:?} has no word to search for (letters or digits)"
                    )));
                }
                terms
            }
            _ => Vec::new(),
        };
        let mut contacts = Vec::new();
        for contact in &find.contacts {
            contacts.push(contact.clone());
            if let Some(live) = self.live_contact(contact).await?
                && live.id != *contact
            {
                contacts.push(live.id);
            }
        }
        let indexed_through = self.position().await?;
        let found = self
            .shared
            .index
            .find_conversations(&FindQuery {
                connections: query.connections.clone(),
                vendors: query.vendors.clone(),
                statuses: query.statuses.clone(),
                started_from: query.started_from,
                started_to: query.started_to,
                updated_from: query.updated_from,
                updated_to: query.updated_to,
                emails,
                phones,
                visitor_ids: find.visitor_ids.clone(),
                agent_ids: find.agent_ids.clone(),
                tags: find.tags.clone(),
                contacts,
                terms,
                limit: page_size + 1,
                after,
            })
            .await?;
        let more = found.len() > page_size;
        let found = &found[..found.len().min(page_size)];
        let conversations = self.conversations(found).await?;
        let next_page_token = if more {
            found.last().map(|(at, id)| {
                encode_token(CONVERSATION_TOKEN, filters, &encode_position(*at, id))
            })
        } else {
            None
        };
        Ok(Found {
            value: ConversationPage {
                conversations,
                next_page_token,
            },
            indexed_through,
        })
    }

    /// A page of contacts by id (merged ones left out: they are part of another).
    pub async fn list_contacts(
        &self,
        query: &ContactListQuery,
    ) -> Result<Found<ContactPage>, FindError> {
        let page_size = page_size(query.page_size);
        let mut identities = Vec::new();
        if let Some(email) = &query.email {
            let normalized = normalize::email(email).ok_or_else(|| {
                FindError::InvalidArgument(format!(
                    "{email:?} is not an e-mail address; give one like name@example.com"
                ))
            })?;
            identities.push(format!("email:{normalized}"));
        }
        if let Some(phone) = &query.phone {
            let normalized = normalize::phone_e164(phone).ok_or_else(|| {
                FindError::InvalidArgument(format!(
                    "{phone:?} is not a phone number in international form; contacts are linked by numbers like +14155550123"
                ))
            })?;
            identities.push(format!("phone:{normalized}"));
        }
        if let Some((connection, id)) = &query.visitor {
            if id.trim().is_empty() {
                return Err(FindError::InvalidArgument(
                    "the visitor id is empty; give the vendor's visitor id".into(),
                ));
            }
            identities.push(visitor_key(connection, id.trim()));
        }
        let name_terms = match query.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => {
                let terms = normalize::query_terms(name);
                if terms.is_empty() {
                    return Err(FindError::InvalidArgument(format!(
                        "the name {name:?} has no word to search for (letters or digits)"
                    )));
                }
                terms
            }
            _ => Vec::new(),
        };
        let filters = fnv1a(
            json!(["contacts", identities, name_terms,])
                .to_string()
                .as_bytes(),
        );
        let after = decode_token(query.page_token.as_deref(), CONTACT_TOKEN, filters)?
            .map(|bytes| String::from_utf8(bytes).map_err(|_| StoreError::BadPageToken))
            .transpose()?;
        let indexed_through = self.position().await?;
        let mut contacts = Vec::new();
        let mut cursor = after;
        loop {
            let chunk = self
                .shared
                .index
                .list_contacts(&ContactQuery {
                    identity: identities.first().cloned(),
                    name_terms: name_terms.clone(),
                    limit: page_size + 1,
                    after: cursor.clone(),
                })
                .await?;
            let exhausted = chunk.len() <= page_size;
            cursor = chunk.last().map(|c| c.id.clone()).or(cursor);
            contacts.extend(chunk.into_iter().filter(|c| {
                c.merged_into.is_none() && identities.iter().all(|k| c.identities.contains(k))
            }));
            if exhausted || contacts.len() > page_size {
                break;
            }
        }
        let next_page_token = if contacts.len() > page_size {
            contacts.truncate(page_size);
            contacts
                .last()
                .map(|c| encode_token(CONTACT_TOKEN, filters, c.id.as_bytes()))
        } else {
            None
        };
        Ok(Found {
            value: ContactPage {
                contacts,
                next_page_token,
            },
            indexed_through,
        })
    }

    /// A contact (following `merged_into` to the contact it is now part of), with its
    /// conversations and tickets, newest first, at most `limit` of each (0: 50; at most 1000).
    pub async fn get_contact(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Found<ContactView>, FindError> {
        let indexed_through = self.position().await?;
        let Some(contact) = self.live_contact(id).await? else {
            return Err(FindError::NotFound(format!("no contact {id}")));
        };
        let limit = page_size(limit);
        let found = self
            .shared
            .index
            .find_conversations(&FindQuery {
                contacts: vec![contact.id.clone()],
                limit,
                ..FindQuery::default()
            })
            .await?;
        let conversations = self.conversations(&found).await?;
        let mut tickets = Vec::new();
        for doc in self
            .shared
            .index
            .contact_tickets(std::slice::from_ref(&contact.id), limit)
            .await?
        {
            if let Some(ticket) = self.shared.storage.get_ticket(&doc.id).await? {
                tickets.push((doc.id.connection.clone(), ticket));
            }
        }
        Ok(Found {
            value: ContactView {
                contact,
                conversations,
                tickets,
            },
            indexed_through,
        })
    }

    /// Appends a `contact_merged` event (`from` becomes part of `into`) and waits (a few
    /// seconds at most) for the index to apply it; returns `into` as it is then.
    pub async fn merge_contacts(&self, into: &str, from: &str) -> Result<ContactView, FindError> {
        let _one_at_a_time = self.commands.lock().await;
        if into == from {
            return Err(FindError::InvalidArgument(format!(
                "cannot merge contact {into} with itself; name two contacts"
            )));
        }
        self.wait_for_head(COMMAND_WAIT).await?;
        self.usable_contact(into).await?;
        self.usable_contact(from).await?;
        let sequence = self
            .append_change(
                EventKind::ContactMerged,
                ContactChange::Merged {
                    into: into.to_string(),
                    from: from.to_string(),
                },
            )
            .await?;
        self.wait_applied(sequence, "merge").await?;
        Ok(self.get_contact(into, 0).await?.value)
    }

    /// Appends a `contact_split` event (the listed identities of `contact` leave it for a new
    /// contact, whose id is chosen here and carried by the event) and waits for the index to
    /// apply it; returns the contact split and the new contact.
    pub async fn split_contact(
        &self,
        contact: &str,
        identities: &[String],
    ) -> Result<(ContactView, ContactView), FindError> {
        let _one_at_a_time = self.commands.lock().await;
        self.wait_for_head(COMMAND_WAIT).await?;
        let record = self.usable_contact(contact).await?;
        let mut leaving: Vec<String> = Vec::new();
        for key in identities {
            let key = key.trim();
            if !record.identities.contains(key) {
                return Err(FindError::InvalidArgument(format!(
                    "contact {contact} has no identity {key:?}; its identities are {}",
                    record
                        .identities
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if !leaving.iter().any(|k| k == key) {
                leaving.push(key.to_string());
            }
        }
        if leaving.is_empty() {
            return Err(FindError::InvalidArgument(
                "name at least one identity to split off (email:..., phone:..., visitor:<connection>/<id>)".into(),
            ));
        }
        if leaving.len() == record.identities.len() {
            return Err(FindError::InvalidArgument(format!(
                "splitting every identity off contact {contact} would leave it empty; name only those of the other person"
            )));
        }
        let new_contact = new_contact_id(self.shared.storage.head());
        let sequence = self
            .append_change(
                EventKind::ContactSplit,
                ContactChange::Split {
                    contact: contact.to_string(),
                    new_contact: new_contact.clone(),
                    identities: leaving,
                },
            )
            .await?;
        self.wait_applied(sequence, "split").await?;
        let split = self.get_contact(contact, 0).await?.value;
        let created = self.get_contact(&new_contact, 0).await.map_err(|e| match e {
            FindError::NotFound(_) => FindError::FailedPrecondition(format!(
                "the split of {contact} (sequence {sequence}) did not apply: the contact changed meanwhile; look at it again"
            )),
            other => other,
        })?;
        Ok((split, created.value))
    }

    /// Erases a contact's personal data: waits for the index to reach the head, plans (its
    /// conversations, tickets and the events about them), has the store erase them and record
    /// a `contact_erased` event, waits for the index to apply it, and purges the index.
    pub async fn erase_contact(&self, id: &str) -> Result<ErasureReport, FindError> {
        let _one_at_a_time = self.commands.lock().await;
        self.wait_for_head(ERASE_WAIT).await?;
        let contact = self.usable_contact(id).await?;
        let mut conversations: Vec<ConversationId> = Vec::new();
        let mut query = FindQuery {
            contacts: vec![contact.id.clone()],
            limit: MAX_PAGE_SIZE,
            ..FindQuery::default()
        };
        loop {
            let page = self.shared.index.find_conversations(&query).await?;
            let full = page.len() == MAX_PAGE_SIZE;
            query.after = page.last().cloned();
            conversations.extend(page.into_iter().map(|(_, id)| id));
            if conversations.len() > MAX_ERASE_CONVERSATIONS {
                return Err(FindError::FailedPrecondition(format!(
                    "contact {id} has more than {MAX_ERASE_CONVERSATIONS} conversations; split it first"
                )));
            }
            if !full {
                break;
            }
        }
        let tickets: Vec<_> = self
            .shared
            .index
            .contact_tickets(std::slice::from_ref(&contact.id), MAX_CONTACT_TICKETS)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        let events = self
            .shared
            .index
            .events_of(&conversations, &tickets)
            .await?;
        let plan = ErasurePlan {
            contact: contact.id.clone(),
            conversations,
            tickets,
            events,
            at: Timestamp::now(),
        };
        let report = self.shared.storage.erase_contact(plan).await?;
        info!(
            contact = %contact.id,
            conversations = report.conversations,
            tickets = report.tickets,
            events = report.events,
            sequence = report.sequence.0,
            "contact erased"
        );
        if !self.caught_up(report.sequence, ERASE_WAIT).await? {
            return Err(FindError::Unavailable(format!(
                "the store erased contact {id} (sequence {}), but the finder's index has not applied it yet; its answers drop the data once it has (retry to see the report)",
                report.sequence
            )));
        }
        if *self.shared.purged.borrow() < report.sequence {
            self.shared.index.purge().await?;
        }
        Ok(report)
    }

    async fn live_contact(&self, id: &str) -> Result<Option<ContactRecord>, FindError> {
        let mut current = id.to_string();
        for _ in 0..64 {
            match self.shared.index.contact(&current).await? {
                Some(record) => match &record.merged_into {
                    Some(next) => current = next.clone(),
                    None => return Ok(Some(record)),
                },
                None => return Ok(None),
            }
        }
        Err(FindError::Unavailable(format!(
            "contact {id} is merged in a chain too long to follow; delete the index to rebuild it from the log"
        )))
    }

    /// The contact `id` itself, refused when it cannot take part in a change.
    async fn usable_contact(&self, id: &str) -> Result<ContactRecord, FindError> {
        let Some(record) = self.shared.index.contact(id).await? else {
            return Err(FindError::NotFound(format!("no contact {id}")));
        };
        if let Some(into) = &record.merged_into {
            return Err(FindError::FailedPrecondition(format!(
                "contact {id} was merged into {into}; use {into}"
            )));
        }
        if record.erased_at.is_some() {
            return Err(FindError::FailedPrecondition(format!(
                "contact {id} was erased; it cannot change any more"
            )));
        }
        Ok(record)
    }

    async fn wait_for_head(&self, within: Duration) -> Result<(), FindError> {
        let head = self.shared.storage.head();
        if self.caught_up(head, within).await? {
            Ok(())
        } else {
            Err(FindError::Unavailable(format!(
                "the finder's index is behind the log (at {}, the log at {head}); retry in a moment",
                self.position().await?
            )))
        }
    }

    async fn wait_applied(&self, sequence: Sequence, what: &str) -> Result<(), FindError> {
        if self.caught_up(sequence, COMMAND_WAIT).await? {
            Ok(())
        } else {
            Err(FindError::Unavailable(format!(
                "the {what} is in the log (sequence {sequence}) but the finder's index has not applied it yet; look at the contact again in a moment"
            )))
        }
    }

    async fn append_change(
        &self,
        kind: EventKind,
        change: ContactChange,
    ) -> Result<Sequence, FindError> {
        let at = Timestamp::now();
        let event = IncomingEvent {
            dedup_key: format!("{}:{}", kind.as_str(), uuid::Uuid::now_v7()),
            kind,
            vendor_event: format!("switchboard.{}", kind.as_str()),
            occurred_at: at,
            payload: EventPayload::Contact(change),
        };
        let mut request = AppendRequest::new(ConnectionId::system(), SYSTEM_VENDOR, vec![event]);
        request.received_at = at;
        let receipt = self.shared.storage.append(request).await?;
        receipt.appended.first().copied().ok_or_else(|| {
            FindError::Unavailable(
                "the store appended nothing for the contact change; retry".into(),
            )
        })
    }

    async fn conversations(
        &self,
        found: &[(Timestamp, ConversationId)],
    ) -> Result<Vec<Conversation>, FindError> {
        // A few reads in flight at once, in the page's order: on PostgreSQL each is a round
        // trip, and a page of 50 read one after another cost most of a query's time.
        let reads: Vec<_> = found
            .iter()
            .map(|(_, id)| {
                let storage = Arc::clone(&self.shared.storage);
                let id = id.clone();
                async move { storage.get_conversation(&id).await }
            })
            .collect();
        let fetched: Vec<Result<Option<Conversation>, StoreError>> = futures::stream::iter(reads)
            .buffered(PAGE_READS)
            .collect()
            .await;
        let mut out = Vec::with_capacity(found.len());
        for ((_, id), conversation) in found.iter().zip(fetched) {
            match conversation? {
                Some(conversation) => out.push(conversation),
                None => debug!(conversation = %id, "indexed but not in the store; left out"),
            }
        }
        Ok(out)
    }
}

/// A new contact's id for a split: `c<the sequence the split is expected to get>-<8 random hex
/// digits>`. Auto-created contacts are `c<sequence>` without a dash, so the two never collide.
fn new_contact_id(head: Sequence) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("c{}-{}", head.next().0, &random[..8])
}

/// How many of a page's conversations are read from the store at once.
const PAGE_READS: usize = 8;

fn page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// A position in the list order, as page tokens carry it: the sort key (8 bytes, big endian)
/// and the id's text.
fn encode_position(at: Timestamp, id: &ConversationId) -> Vec<u8> {
    let mut bytes = at.as_millis().to_be_bytes().to_vec();
    bytes.extend_from_slice(id.to_string().as_bytes());
    bytes
}

fn decode_position(bytes: &[u8]) -> Result<(Timestamp, ConversationId), FindError> {
    let bad = || FindError::Store(StoreError::BadPageToken);
    if bytes.len() < 9 {
        return Err(bad());
    }
    let (time, id) = bytes.split_at(8);
    let millis = i64::from_be_bytes(time.try_into().map_err(|_| bad())?);
    let at = Timestamp::from_millis(millis).ok_or_else(bad)?;
    let id = std::str::from_utf8(id).map_err(|_| bad())?;
    let id = ConversationId::parse(id).map_err(|_| bad())?;
    Ok((at, id))
}

/// A batch handed to the index, being applied while the next step runs.
struct InFlight {
    /// Applies the batch (and purges after an erasure).
    task: JoinHandle<Result<(), FindError>>,
    /// The batch's position: the index's once it is applied.
    position: Sequence,
    /// What the batch decides about contacts and identity keys: the next step starts from it.
    contacts: Vec<ContactRecord>,
    identities: Vec<(String, Option<String>)>,
}

impl InFlight {
    /// Waits for the batch to be applied.
    async fn settle(self) -> Result<(), FindError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(FindError::Unavailable(format!(
                "applying batch {} failed: {error}",
                self.position
            ))),
        }
    }
}

/// Waits for the batch in flight, if any, to be applied.
async fn settle(flight: &mut Option<InFlight>) -> Result<(), FindError> {
    match flight.take() {
        Some(flight) => flight.settle().await,
        None => Ok(()),
    }
}

/// The finder's task: follows the log into the index, and reports how far it is behind.
async fn run(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    // `report` never ends: the task ends when `follow` has wound down.
    tokio::select! {
        () = follow(Arc::clone(&shared), stop) => {}
        () = report(&shared) => {}
    }
}

/// Every `idle_poll`, puts the index's position and how far it is behind the log's head on the
/// process's metrics ([`POSITION_METRIC`], [`LAG_METRIC`]). The index is asked, not this
/// finder's own progress, so a replica that does not hold the lease reports the holder's.
async fn report(shared: &Shared) {
    let every = shared.options.idle_poll.max(Duration::from_millis(10));
    loop {
        match shared.index.position().await {
            Ok(position) => {
                let head = shared.storage.head();
                metrics::gauge!(POSITION_METRIC).set(position.0 as f64);
                metrics::gauge!(LAG_METRIC).set(head.0.saturating_sub(position.0) as f64);
            }
            Err(error) => debug!(%error, "the finder could not read its index's position"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Reads the log after the index's position into the index, batch after batch, until `stop`.
async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut head = shared.storage.subscribe_head();
    let mut wanted = shared.wanted.subscribe();
    let mut holding = false;
    let mut head_open = true;
    // When the last batch was applied (started): the next waits out `commit_interval` from it.
    let mut last_batch: Option<tokio::time::Instant> = None;
    let mut flight: Option<InFlight> = None;
    // Whether the index has rested since the last batch this finder applied.
    let mut rested = true;
    info!(
        index = shared.index.backend(),
        holder = %shared.options.holder,
        "the finder started"
    );
    loop {
        if *stop.borrow() {
            break;
        }
        if let Some(due) = last_batch.map(|at| at + shared.options.commit_interval)
            && tokio::time::Instant::now() < due
            && !urgent(&shared)
        {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.changed() => {}
                _ = wanted.changed() => {}
            }
            continue;
        }
        let started = tokio::time::Instant::now();
        let wait = match step_once(&shared, &mut holding, &mut flight).await {
            Ok(Progress::Applied) => {
                last_batch = Some(started);
                rested = false;
                continue;
            }
            Ok(Progress::Idle) => {
                if !rested {
                    rested = true;
                    rest(&shared, &mut flight).await;
                }
                true
            }
            Ok(Progress::NotHolder) => false,
            Err(error) => {
                warn!(%error, "the finder's batch failed; retrying");
                false
            }
        };
        let poll = tokio::time::sleep(shared.options.idle_poll);
        tokio::select! {
            _ = poll => {}
            _ = stop.changed() => {}
            changed = head.changed(), if wait && head_open => {
                if changed.is_err() {
                    head_open = false;
                }
            }
        }
    }
    if let Err(error) = settle(&mut flight).await {
        warn!(%error, "the finder's last batch failed");
    }
    if holding
        && let Err(error) = shared
            .storage
            .release_lease(LEASE, &shared.options.holder)
            .await
    {
        warn!(%error, "the finder could not give up its lease");
    }
    info!("the finder stopped");
}

/// Caught up after applying batches: once the batch in flight is applied, lets the index give
/// back what it holds for writing ([`FindIndex::rest`]). A finder following a busy log is never
/// idle between its batches and keeps it.
async fn rest(shared: &Shared, flight: &mut Option<InFlight>) {
    if let Err(error) = settle(flight).await {
        warn!(%error, "the finder's batch failed; retrying");
        return;
    }
    if let Err(error) = shared.index.rest().await {
        warn!(%error, "the finder's index could not rest");
    }
}

/// Whether the next batch should go now rather than after `commit_interval`: someone waits for
/// a sequence the index has not applied, or a whole batch is waiting.
fn urgent(shared: &Shared) -> bool {
    let applied = *shared.applied.borrow();
    *shared.wanted.borrow() > applied
        || shared.storage.head().0.saturating_sub(applied.0) >= shared.options.batch_events as u64
}

/// One step: reads the events after the index's position (or after the batch in flight),
/// links them while the batch in flight is applied, waits for it, and hands the index the new
/// batch, which is in flight when this returns `Applied`. One batch at most is in flight.
async fn step_once(
    shared: &Arc<Shared>,
    holding: &mut bool,
    flight: &mut Option<InFlight>,
) -> Result<Progress, FindError> {
    if flight.as_ref().is_some_and(|f| f.task.is_finished()) {
        settle(flight).await?;
    }
    let position = match flight {
        Some(flight) => flight.position,
        None => {
            let position = shared.index.position().await?;
            shared.applied.send_if_modified(|seen| {
                let changed = *seen != position;
                *seen = position;
                changed
            });
            position
        }
    };
    if position >= shared.storage.head() {
        return Ok(Progress::Idle);
    }
    let held = shared
        .storage
        .acquire_lease(LEASE, &shared.options.holder, shared.options.lease_ttl)
        .await?;
    if held != *holding {
        info!(holder = %shared.options.holder, held, "the finder's lease changed");
        *holding = held;
    }
    if !held {
        settle(flight).await?;
        return Ok(Progress::NotHolder);
    }
    let events = shared
        .storage
        .read_events(position, shared.options.batch_events, BATCH_BYTES)
        .await?;
    if events.is_empty() {
        return Ok(Progress::Idle);
    }
    let mut step = Step::new(shared.index.as_ref(), Arc::clone(&shared.storage));
    if let Some(flight) = flight.as_mut() {
        step.carry(
            std::mem::take(&mut flight.contacts),
            std::mem::take(&mut flight.identities),
        );
    }
    let output = async {
        let to = step.link_events(&events).await?;
        if step.reads_lists() {
            // It lists the index's conversations and tickets of some contacts: the batch in
            // flight may hold some of them.
            settle(flight).await?;
        }
        step.finish(to).await
    }
    .await;
    // Whatever this step decided, it decided on the batch in flight being applied.
    settle(flight).await?;
    let output = output?;
    let to = output.batch.position;
    debug!(from = position.0, to = to.0, "the finder applies a batch");
    let contacts = output.batch.contacts.clone();
    let identities = output.batch.identities.clone();
    let task = tokio::spawn({
        let shared = Arc::clone(shared);
        async move {
            shared.index.apply(output.batch).await?;
            shared.applied.send_replace(to);
            if output.erased {
                match shared.index.purge().await {
                    Ok(()) => {
                        shared.purged.send_replace(to);
                    }
                    Err(error) => warn!(%error, "the index could not purge after an erasure"),
                }
            }
            Ok(())
        }
    });
    if let Ok(mut applying) = shared.applying.lock() {
        *applying = Some(task.abort_handle());
    }
    *flight = Some(InFlight {
        task,
        position: to,
        contacts,
        identities,
    });
    Ok(Progress::Applied)
}
