//! Finding the customer: conversations by visitor e-mail, phone, visitor id, agent, tag,
//! contact and free text, and contacts (one person across connections and vendors) with
//! merge, split and erasure.
//!
//! The answers come from the finder ([`switchboard_find::engine::Finder`]), a projection of the
//! log kept off the store's write path: it reads the log a moment behind the head, so every
//! answer says how far its index had read (`indexed_through`). A conversation query with no
//! finder filter is the store's, exactly as before, and needs no finder.
//!
//! Merges and splits are events in the log (on the system connection
//! [`switchboard_core::SYSTEM_CONNECTION`]) so that every replica and every replay agrees;
//! an erasure is a store command ([`switchboard_store::Storage::erase_contact`]) planned from
//! what the finder knows of the contact.

use std::sync::Arc;

use switchboard_core::{Error, Sequence};
use switchboard_find::{ContactListQuery, ContactPage, ContactView, Finder, Found};
use switchboard_store::{ConversationPage, ConversationQuery, ErasureReport, Storage};

use crate::app::subscribe::Subscribe;

/// The finder's service. Cheap to clone.
#[derive(Clone)]
pub struct Find {
    storage: Arc<dyn Storage>,
    finder: Option<Arc<Finder>>,
    /// Subscriptions, whose events in wire form an erasure makes stale.
    subscribe: Subscribe,
}

impl std::fmt::Debug for Find {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Find")
            .field("finder", &self.finder.is_some())
            .finish_non_exhaustive()
    }
}

/// A page of conversations and, when the finder answered it, how far its index had read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationsFound {
    /// The page.
    pub page: ConversationPage,
    /// The last log sequence the finder's index had read; `None` when the store answered.
    pub indexed_through: Option<Sequence>,
}

impl Find {
    /// The service over `storage`, answering finder queries with `finder` (`None`: only
    /// queries the store answers alone work; the others are FAILED_PRECONDITION). An erasure
    /// makes `subscribe` forget the events it keeps in wire form.
    pub fn new(
        storage: Arc<dyn Storage>,
        finder: Option<Arc<Finder>>,
        subscribe: Subscribe,
    ) -> Self {
        Find {
            storage,
            finder,
            subscribe,
        }
    }

    /// The finder, if this service has one.
    pub fn finder(&self) -> Option<&Arc<Finder>> {
        self.finder.as_ref()
    }

    fn running(&self) -> Result<&Finder, Error> {
        self.finder.as_deref().ok_or_else(|| {
            Error::failed_precondition(
                "finding customers needs the finder, which this server was started without",
            )
        })
    }

    /// Conversations: by the store when `query` has no finder filter, else by the finder.
    pub async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationsFound, Error> {
        if query.find.is_empty() {
            let page = self.storage.list_conversations(query).await?;
            return Ok(ConversationsFound {
                page,
                indexed_through: None,
            });
        }
        let found = self.running()?.list_conversations(query).await?;
        Ok(ConversationsFound {
            page: found.value,
            indexed_through: Some(found.indexed_through),
        })
    }

    /// Contacts, ordered by id.
    pub async fn list_contacts(
        &self,
        query: &ContactListQuery,
    ) -> Result<Found<ContactPage>, Error> {
        Ok(self.running()?.list_contacts(query).await?)
    }

    /// One contact with at most `limit` of its conversations and of its tickets, newest first.
    pub async fn get_contact(&self, id: &str, limit: usize) -> Result<Found<ContactView>, Error> {
        Ok(self.running()?.get_contact(id, limit).await?)
    }

    /// Records that `from` is the same person as `into`.
    pub async fn merge_contacts(&self, into: &str, from: &str) -> Result<ContactView, Error> {
        Ok(self.running()?.merge_contacts(into, from).await?)
    }

    /// Records that `identities` of `contact` are another person; answers with the contact
    /// split and the new one.
    pub async fn split_contact(
        &self,
        contact: &str,
        identities: &[String],
    ) -> Result<(ContactView, ContactView), Error> {
        Ok(self.running()?.split_contact(contact, identities).await?)
    }

    /// Erases the personal data of `contact` everywhere it is kept: the store (projections
    /// and the log's payloads), the finder's index, and the events subscriptions keep in wire
    /// form. On the embedded store the old versions stay in its files until `switchboard
    /// compact` (offline) rewrites them.
    pub async fn erase_contact(&self, contact: &str) -> Result<ErasureReport, Error> {
        let result = self
            .running()?
            .erase_contact(contact)
            .await
            .map_err(Error::from);
        // Also after a failure: the store may have erased before the finder gave up waiting.
        self.subscribe.forget_converted();
        result
    }
}
