//! What the finder keeps, and the trait each backend's index implements: the embedded one
//! (tantivy beside the sled store) and PostgreSQL's (its own text search, in the shared
//! database). The finder engine ([`crate::Finder`]) is the same for both: it reads the log
//! in order and hands the index one [`IndexBatch`] at a time.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchboard_core::{
    ConnectionId, ConversationId, ConversationStatus, Sequence, TicketId, Timestamp,
};

/// What a conversation is found by: everything the filters of `ListConversations` ask about,
/// already normalized ([`crate::normalize`]). Rebuilt whole each time the conversation changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationDoc {
    /// The conversation.
    pub id: ConversationId,
    /// Its vendor.
    pub vendor: String,
    /// Its status.
    pub status: ConversationStatus,
    /// The list order: `started_at`, else `updated_at` (newest first; ties by id, descending).
    pub sort_key: Timestamp,
    /// When it started, if known (the `started` range filter).
    pub started_at: Option<Timestamp>,
    /// When it last changed (the `updated` range filter).
    pub updated_at: Timestamp,
    /// The contact of its visitor, if linked.
    pub contact: Option<String>,
    /// The visitor's e-mail ([`crate::normalize::email`]).
    pub emails: Vec<String>,
    /// The visitor's phone ([`crate::normalize::phone`]).
    pub phones: Vec<String>,
    /// The visitor's vendor id, as the vendor gives it.
    pub visitor_ids: Vec<String>,
    /// Every agent who took part (joined, assigned, or wrote), by vendor id.
    pub agent_ids: Vec<String>,
    /// Its tags now (removed ones are not here), as given.
    pub tags: Vec<String>,
    /// The search terms ([`crate::normalize::terms`]) of its messages' text and the visitor's
    /// name, without repeats.
    pub terms: Vec<String>,
}

/// A ticket as the finder knows it: whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketDoc {
    /// The ticket.
    pub id: TicketId,
    /// The contact of its requester, if linked.
    pub contact: Option<String>,
    /// When it last changed (a contact's tickets are listed newest first by it).
    pub updated_at: Timestamp,
}

/// One log event and what it is about: how an erasure finds the log entries it must rewrite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The event.
    pub sequence: Sequence,
    /// The conversation it is about, if any.
    pub conversation: Option<ConversationId>,
    /// The ticket it is about, if any.
    pub ticket: Option<TicketId>,
}

/// A contact: one person, across connections and vendors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    /// `c<sequence>`: the sequence of the event that created it (stable across replays).
    pub id: String,
    /// The sequence of that event (the older of two contacts is the one that remains when
    /// they are linked automatically).
    pub created_at_sequence: Sequence,
    /// Its identity keys: `email:<address>`, `phone:<E.164>`, `visitor:<connection>/<id>`.
    pub identities: BTreeSet<String>,
    /// Names it was seen with.
    pub names: BTreeSet<String>,
    /// Contacts it was split from or into: never linked with it automatically.
    pub separated: BTreeSet<String>,
    /// When it was merged into another contact: that contact.
    pub merged_into: Option<String>,
    /// When its personal data was erased.
    pub erased_at: Option<Timestamp>,
    /// The latest vendor time of anything linked to it.
    pub last_seen: Option<Timestamp>,
}

/// What one step of the finder changes, applied by the index in one atomic step together
/// with its new position, so that after a crash the finder resumes from the last batch
/// applied and never applies half of one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexBatch {
    /// The last sequence this batch covers: the index's position afterwards.
    pub position: Sequence,
    /// Conversation documents to write (replacing any of the same id).
    pub conversations: Vec<ConversationDoc>,
    /// Ticket documents to write (replacing any of the same id).
    pub tickets: Vec<TicketDoc>,
    /// Contacts to write (replacing any of the same id).
    pub contacts: Vec<ContactRecord>,
    /// Identity keys to point at a contact (`Some`) or to forget (`None`).
    pub identities: Vec<(String, Option<String>)>,
    /// Events to remember.
    pub events: Vec<EventRef>,
}

/// Which conversations to find. Empty lists mean "any"; several values in one list mean "any
/// of these"; different lists and `terms` must all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindQuery {
    /// Only these connections.
    pub connections: Vec<ConnectionId>,
    /// Only these vendors.
    pub vendors: Vec<String>,
    /// Only these statuses.
    pub statuses: Vec<ConversationStatus>,
    /// Started at or after.
    pub started_from: Option<Timestamp>,
    /// Started before.
    pub started_to: Option<Timestamp>,
    /// Last changed at or after.
    pub updated_from: Option<Timestamp>,
    /// Last changed before.
    pub updated_to: Option<Timestamp>,
    /// Visitor e-mails, normalized.
    pub emails: Vec<String>,
    /// Visitor phones, normalized.
    pub phones: Vec<String>,
    /// Visitor ids.
    pub visitor_ids: Vec<String>,
    /// Agent ids.
    pub agent_ids: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Contacts (the engine adds every contact merged into one asked for).
    pub contacts: Vec<String>,
    /// Search terms ([`crate::normalize::query_terms`]), every one of which must match.
    pub terms: Vec<String>,
    /// At most this many.
    pub limit: usize,
    /// Strictly after this position in the list order (the last of the previous page).
    pub after: Option<(Timestamp, ConversationId)>,
}

/// Which contacts to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactQuery {
    /// Only contacts with this identity key (`email:...`, `phone:...`, `visitor:...`).
    pub identity: Option<String>,
    /// Only contacts seen with a name holding every one of these terms.
    pub name_terms: Vec<String>,
    /// At most this many.
    pub limit: usize,
    /// Strictly after this contact id (contacts are listed by id).
    pub after: Option<String>,
}

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot be read or written now (a database away, a disk error); try again.
    #[error("the index is unavailable: {0}")]
    Unavailable(String),
    /// What the index holds does not decode.
    #[error("the index is corrupt: {0}")]
    Corrupt(String),
}

/// A backend's index. Written by one finder at a time (one process for the embedded store;
/// on PostgreSQL, the replica holding the `find` lease); read by every replica.
#[async_trait]
pub trait FindIndex: Send + Sync + 'static {
    /// A short name for logs (`tantivy`, `postgres`).
    fn backend(&self) -> &'static str;

    /// The last sequence applied (0: nothing yet).
    async fn position(&self) -> Result<Sequence, IndexError>;

    /// Applies `batch` and moves the position to `batch.position`, all or nothing. Once it
    /// returns, readers see the batch. A batch whose position is not past the index's position
    /// (another finder wrote past it) is refused with an error and changes nothing.
    async fn apply(&self, batch: IndexBatch) -> Result<(), IndexError>;

    /// The contacts these identity keys point at (keys pointing nowhere are left out).
    async fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError>;

    /// A contact by id.
    async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError>;

    /// The contacts of these ids that exist, in any order, each once: what the finder reads
    /// for a whole batch in one call. The default asks [`FindIndex::contact`] for each id; an
    /// index that can read many at once should.
    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRecord>, IndexError> {
        let mut seen = BTreeSet::new();
        let mut found = Vec::new();
        for id in ids {
            if seen.insert(id.as_str())
                && let Some(record) = self.contact(id).await?
            {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Contacts by [`ContactQuery`], ordered by id.
    async fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError>;

    /// Up to `query.limit` conversations matching `query` after `query.after`, in list order
    /// (`sort_key` descending, then id descending), with their sort keys.
    async fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError>;

    /// The conversation documents of these ids (those it has).
    async fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError>;

    /// The tickets of these contacts, newest first (`updated_at` descending, then id), at
    /// most `limit`.
    async fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError>;

    /// Every event remembered about these conversations and tickets, ascending.
    async fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError>;

    /// Makes sure nothing erased stays in the index's files (merges segments, drops deleted
    /// documents, vacuums): called after a batch that applied an erasure.
    async fn purge(&self) -> Result<(), IndexError>;

    /// The finder has caught up with the log after applying batches, and nothing waits to be
    /// written: the index may give back what it holds only for writing (threads, buffers). The
    /// next [`FindIndex::apply`] or [`FindIndex::purge`] takes them again, and answers do not
    /// change. The default does nothing.
    async fn rest(&self) -> Result<(), IndexError> {
        Ok(())
    }
}
