//! [`MemoryIndex`]: a complete [`FindIndex`] in memory. It is the reference the shared suite
//! ([`crate::suite`]) is written against, and the index of the engine's tests; it keeps
//! nothing across restarts, so a finder over it rebuilds from the log when the process starts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use async_trait::async_trait;
use switchboard_core::{ConversationId, Sequence, TicketId, Timestamp};

use crate::index::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    IndexError, TicketDoc,
};
use crate::normalize;

/// The list order of conversations, the stores' order: `sort_key` descending, then the id's
/// text (`connection/external id`) descending, byte by byte. `Less` means "listed first".
pub fn list_order(a: (Timestamp, &ConversationId), b: (Timestamp, &ConversationId)) -> Ordering {
    b.0.cmp(&a.0)
        .then_with(|| b.1.to_string().as_bytes().cmp(a.1.to_string().as_bytes()))
}

/// The order of a contact's tickets: `updated_at` descending, then the id's text descending.
/// `Less` means "listed first".
pub fn ticket_order(a: &TicketDoc, b: &TicketDoc) -> Ordering {
    b.updated_at
        .cmp(&a.updated_at)
        .then_with(|| b.id.to_string().as_bytes().cmp(a.id.to_string().as_bytes()))
}

/// Whether a doc matches every filter of `query` (not its `after` and `limit`).
pub fn matches(doc: &ConversationDoc, query: &FindQuery) -> bool {
    fn any_of<T: PartialEq>(wanted: &[T], have: &[T]) -> bool {
        wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
    }
    fn in_range(at: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
        from.is_none_or(|from| at >= from) && to.is_none_or(|to| at < to)
    }
    let started = query.started_from.is_none() && query.started_to.is_none()
        || doc
            .started_at
            .is_some_and(|at| in_range(at, query.started_from, query.started_to));
    (query.connections.is_empty() || query.connections.contains(&doc.id.connection))
        && (query.vendors.is_empty() || query.vendors.contains(&doc.vendor))
        && (query.statuses.is_empty() || query.statuses.contains(&doc.status))
        && started
        && in_range(doc.updated_at, query.updated_from, query.updated_to)
        && any_of(&query.emails, &doc.emails)
        && any_of(&query.phones, &doc.phones)
        && any_of(&query.visitor_ids, &doc.visitor_ids)
        && any_of(&query.agent_ids, &doc.agent_ids)
        && any_of(&query.tags, &doc.tags)
        && (query.contacts.is_empty()
            || doc
                .contact
                .as_ref()
                .is_some_and(|c| query.contacts.contains(c)))
        && query.terms.iter().all(|term| doc.terms.contains(term))
}

/// Whether a contact matches `query`'s identity and name terms (not its `after` and `limit`).
pub fn contact_matches(contact: &ContactRecord, query: &ContactQuery) -> bool {
    query
        .identity
        .as_ref()
        .is_none_or(|key| contact.identities.contains(key))
        && (query.name_terms.is_empty()
            || contact.names.iter().any(|name| {
                let terms = normalize::terms(name);
                query.name_terms.iter().all(|t| terms.contains(t))
            }))
}

#[derive(Debug, Default)]
struct State {
    position: Sequence,
    conversations: BTreeMap<ConversationId, ConversationDoc>,
    tickets: BTreeMap<TicketId, TicketDoc>,
    contacts: BTreeMap<String, ContactRecord>,
    identities: BTreeMap<String, String>,
    events: BTreeMap<Sequence, EventRef>,
}

/// A [`FindIndex`] in memory (see the module docs).
#[derive(Debug, Default)]
pub struct MemoryIndex {
    state: RwLock<State>,
}

impl MemoryIndex {
    /// An empty index at position 0.
    pub fn new() -> Self {
        MemoryIndex::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, IndexError> {
        self.state
            .read()
            .map_err(|_| IndexError::Corrupt("a writer of the memory index panicked".into()))
    }
}

#[async_trait]
impl FindIndex for MemoryIndex {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn position(&self) -> Result<Sequence, IndexError> {
        Ok(self.read()?.position)
    }

    async fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        let mut state = self
            .state
            .write()
            .map_err(|_| IndexError::Corrupt("a writer of the memory index panicked".into()))?;
        if batch.position <= state.position {
            return Err(IndexError::Unavailable(format!(
                "the index is at {} already, not before this batch's {}: another finder wrote it",
                state.position, batch.position
            )));
        }
        for doc in batch.conversations {
            state.conversations.insert(doc.id.clone(), doc);
        }
        for doc in batch.tickets {
            state.tickets.insert(doc.id.clone(), doc);
        }
        for contact in batch.contacts {
            state.contacts.insert(contact.id.clone(), contact);
        }
        for (key, contact) in batch.identities {
            match contact {
                Some(contact) => state.identities.insert(key, contact),
                None => state.identities.remove(&key),
            };
        }
        for event in batch.events {
            state.events.insert(event.sequence, event);
        }
        state.position = batch.position;
        Ok(())
    }

    async fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError> {
        let state = self.read()?;
        let mut out = Vec::new();
        for key in keys {
            if let Some(contact) = state.identities.get(key)
                && !out.iter().any(|(k, _): &(String, String)| k == key)
            {
                out.push((key.clone(), contact.clone()));
            }
        }
        Ok(out)
    }

    async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError> {
        Ok(self.read()?.contacts.get(id).cloned())
    }

    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRecord>, IndexError> {
        let state = self.read()?;
        let wanted: BTreeSet<&String> = ids.iter().collect();
        Ok(wanted
            .into_iter()
            .filter_map(|id| state.contacts.get(id).cloned())
            .collect())
    }

    async fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError> {
        let state = self.read()?;
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(state
            .contacts
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, contact)| contact)
            .filter(|contact| contact_matches(contact, query))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
        let state = self.read()?;
        let mut found: Vec<(Timestamp, ConversationId)> = state
            .conversations
            .values()
            .filter(|doc| {
                query.after.as_ref().is_none_or(|(at, id)| {
                    list_order((doc.sort_key, &doc.id), (*at, id)) == Ordering::Greater
                })
            })
            .filter(|doc| matches(doc, query))
            .map(|doc| (doc.sort_key, doc.id.clone()))
            .collect();
        found.sort_by(|a, b| list_order((a.0, &a.1), (b.0, &b.1)));
        found.truncate(query.limit);
        Ok(found)
    }

    async fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError> {
        let state = self.read()?;
        let ids: BTreeSet<&ConversationId> = ids.iter().collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| state.conversations.get(id).cloned())
            .collect())
    }

    async fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError> {
        let state = self.read()?;
        let mut found: Vec<TicketDoc> = state
            .tickets
            .values()
            .filter(|t| t.contact.as_ref().is_some_and(|c| contacts.contains(c)))
            .cloned()
            .collect();
        found.sort_by(ticket_order);
        found.truncate(limit);
        Ok(found)
    }

    async fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError> {
        let state = self.read()?;
        Ok(state
            .events
            .values()
            .filter(|e| {
                e.conversation
                    .as_ref()
                    .is_some_and(|c| conversations.contains(c))
                    || e.ticket.as_ref().is_some_and(|t| tickets.contains(t))
            })
            .map(|e| e.sequence)
            .collect())
    }

    /// Nothing to do: a replaced or forgotten value is gone from memory once the batch applies.
    async fn purge(&self) -> Result<(), IndexError> {
        Ok(())
    }
}
