//! One step of the finder: a run of log events in, one [`IndexBatch`] out. The rules are in
//! the crate README ("When two participants become one contact"); this is them in code.
//!
//! A step reads the index as it was after the previous step and keeps everything it decides in
//! an overlay, so that a later event of the same step sees what an earlier one linked. Only the
//! log decides contacts (never a clock, never the store's projections, which may be ahead of
//! the step), so every replica and every rebuild gives the same contacts and ids. Documents
//! are rebuilt from the store's projections at the end of the step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use switchboard_core::{
    ConnectionId, ContactChange, Conversation, ConversationId, ERASED, Event, EventPayload,
    Participant, Role, Sequence, Ticket, TicketId, Timestamp,
};
use switchboard_store::Storage;
use tracing::warn;

use crate::engine::FindError;
use crate::index::{ContactRecord, ConversationDoc, EventRef, FindIndex, IndexBatch, TicketDoc};
use crate::normalize;

/// How many conversations one `find_conversations` call asks for while collecting a contact's.
const SCAN_PAGE: usize = 1000;
/// The most tickets of one contact a step or an erasure handles.
pub(crate) const MAX_CONTACT_TICKETS: usize = 1_000_000;
/// The longest `merged_into` chain followed (chains are short; this only stops a cycle that a
/// damaged index could hold).
const MAX_CHAIN: usize = 64;

/// The identity key of a visitor's vendor id on a connection.
pub fn visitor_key(connection: &ConnectionId, id: &str) -> String {
    format!("visitor:{connection}/{id}")
}

/// The identity keys of a participant, in the order that decides which contact a conversation
/// belongs to: vendor id (only with `connection`: a ticket's requester has none that links),
/// e-mail, phone in international form.
pub fn participant_keys(connection: Option<&ConnectionId>, person: &Participant) -> Vec<String> {
    keys_with(connection, person, normalize::phone_e164)
}

/// [`participant_keys`] with `e164` for [`normalize::phone_e164`] (a step remembers its answers:
/// parsing a phone number is the dearest part of linking).
fn keys_with(
    connection: Option<&ConnectionId>,
    person: &Participant,
    mut e164: impl FnMut(&str) -> Option<String>,
) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(connection) = connection {
        let id = person.id.trim();
        if !id.is_empty() && id != ERASED {
            keys.push(visitor_key(connection, id));
        }
    }
    if let Some(email) = person.email.as_deref().and_then(normalize::email) {
        keys.push(format!("email:{email}"));
    }
    if let Some(phone) = person.phone.as_deref().and_then(&mut e164) {
        keys.push(format!("phone:{phone}"));
    }
    keys
}

/// Builds the document of a conversation as the store holds it now.
pub fn conversation_doc(conversation: &Conversation, contact: Option<String>) -> ConversationDoc {
    doc_with(conversation, contact, normalize::phone_e164)
}

/// [`conversation_doc`] with `e164` for [`normalize::phone_e164`] (see [`keys_with`]).
fn doc_with(
    conversation: &Conversation,
    contact: Option<String>,
    e164: impl FnOnce(&str) -> Option<String>,
) -> ConversationDoc {
    let visitor = conversation.visitor.as_ref().map(|v| &v.value);
    let mut agent_ids: BTreeSet<String> = conversation.agents.keys().cloned().collect();
    if let Some(assigned) = &conversation.assigned_agent {
        agent_ids.insert(assigned.value.clone());
    }
    let mut terms = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add_terms = |text: &str| {
        for term in normalize::terms(text) {
            if seen.insert(term.clone()) {
                terms.push(term);
            }
        }
    };
    for message in conversation.messages.values() {
        let message = &message.value;
        if message.author_role == Role::Agent
            && let Some(id) = &message.author_id
        {
            agent_ids.insert(id.clone());
        }
        add_terms(&message.text);
    }
    if let Some(name) = visitor.and_then(|v| v.name.as_deref()) {
        add_terms(name);
    }
    agent_ids.retain(|id| !id.is_empty());
    ConversationDoc {
        id: conversation.id.clone(),
        vendor: conversation.vendor.clone(),
        status: conversation.status,
        sort_key: conversation.started_at.unwrap_or(conversation.updated_at),
        started_at: conversation.started_at,
        updated_at: conversation.updated_at,
        contact,
        emails: visitor
            .and_then(|v| v.email.as_deref())
            .and_then(normalize::email)
            .into_iter()
            .collect(),
        phones: visitor
            .and_then(|v| v.phone.as_deref())
            .and_then(|phone| e164(phone).or_else(|| normalize::phone(phone)))
            .into_iter()
            .collect(),
        visitor_ids: visitor
            .map(|v| v.id.trim())
            .filter(|id| !id.is_empty() && *id != ERASED)
            .map(String::from)
            .into_iter()
            .collect(),
        agent_ids: agent_ids.into_iter().collect(),
        tags: conversation
            .tags
            .iter()
            .filter(|(_, on)| on.value)
            .map(|(tag, _)| tag.clone())
            .collect(),
        terms,
    }
}

/// What a step produced: the batch and whether it applied an erasure.
#[derive(Debug)]
pub(crate) struct StepOutput {
    pub batch: IndexBatch,
    pub erased: bool,
}

/// The overlay of one step (see the module docs).
pub(crate) struct Step<'a> {
    index: &'a dyn FindIndex,
    storage: Arc<dyn Storage>,
    /// Identity keys looked up or changed: `None` points nowhere.
    identities: BTreeMap<String, Option<String>>,
    changed_identities: BTreeSet<String>,
    /// Contacts looked up or changed: `None` is no such contact.
    contacts: BTreeMap<String, Option<ContactRecord>>,
    changed_contacts: BTreeSet<String>,
    conversations: BTreeSet<ConversationId>,
    tickets: BTreeSet<TicketId>,
    /// Contacts whose conversations and tickets may now belong elsewhere.
    moved: BTreeSet<String>,
    events: Vec<EventRef>,
    erased: bool,
    /// [`normalize::phone_e164`]'s answers so far.
    phones: HashMap<String, Option<String>>,
}

impl<'a> Step<'a> {
    pub(crate) fn new(index: &'a dyn FindIndex, storage: Arc<dyn Storage>) -> Self {
        Step {
            index,
            storage,
            identities: BTreeMap::new(),
            changed_identities: BTreeSet::new(),
            contacts: BTreeMap::new(),
            changed_contacts: BTreeSet::new(),
            conversations: BTreeSet::new(),
            tickets: BTreeSet::new(),
            moved: BTreeSet::new(),
            events: Vec::new(),
            erased: false,
            phones: HashMap::new(),
        }
    }

    /// [`normalize::phone_e164`], remembered.
    fn e164(&mut self, phone: &str) -> Option<String> {
        if let Some(known) = self.phones.get(phone) {
            return known.clone();
        }
        let e164 = normalize::phone_e164(phone);
        self.phones.insert(phone.to_string(), e164.clone());
        e164
    }

    /// [`participant_keys`], with the phone parsed once per step.
    fn keys(&mut self, connection: Option<&ConnectionId>, person: &Participant) -> Vec<String> {
        keys_with(connection, person, |phone| self.e164(phone))
    }

    /// The participants an event links: each one's identity keys and name.
    fn event_keys(&mut self, event: &Event) -> Vec<(Vec<String>, Option<String>)> {
        match &event.incoming.payload {
            EventPayload::Conversation(patch) => patch
                .visitor
                .iter()
                .map(|v| (self.keys(Some(&event.connection), v), v.name.clone()))
                .collect(),
            EventPayload::Ticket(ticket) => ticket
                .requester
                .iter()
                .map(|r| (self.keys(None, r), r.name.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Starts from what the previous batch decides (its contacts and identity keys), for a
    /// step that runs while that batch is still being applied: what the index answers about
    /// anything else is the same before and after it.
    pub(crate) fn carry(
        &mut self,
        contacts: Vec<ContactRecord>,
        identities: Vec<(String, Option<String>)>,
    ) {
        for contact in contacts {
            self.contacts.insert(contact.id.clone(), Some(contact));
        }
        self.identities.extend(identities);
    }

    /// Whether [`Step::finish`] reads the index's lists of conversations and tickets (of
    /// contacts that lost identities, were merged or erased): then the previous batch must be
    /// applied first.
    pub(crate) fn reads_lists(&self) -> bool {
        !self.moved.is_empty()
    }

    /// The first part of a step: links the participants of `events` (ascending, gap-free,
    /// after the index's position) into contacts. Returns the last event's sequence.
    pub(crate) async fn link_events(&mut self, events: &[Event]) -> Result<Sequence, FindError> {
        let Some(last) = events.last() else {
            return Err(FindError::Unavailable(
                "a step needs at least one event".into(),
            ));
        };
        let position = last.sequence;
        let participants: Vec<_> = events.iter().map(|e| self.event_keys(e)).collect();
        let keys = participants
            .iter()
            .flatten()
            .flat_map(|(keys, _)| keys.iter().cloned())
            .collect();
        self.prefetch(keys).await?;
        for (event, participants) in events.iter().zip(participants) {
            self.event(event, participants).await?;
        }
        Ok(position)
    }

    /// Looks up every key not known yet in one call.
    async fn prefetch(&mut self, keys: Vec<String>) -> Result<(), FindError> {
        let unknown: Vec<String> = keys
            .into_iter()
            .filter(|k| !self.identities.contains_key(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let found: BTreeMap<String, String> =
            self.index.identities(&unknown).await?.into_iter().collect();
        let contacts: BTreeSet<String> = found.values().cloned().collect();
        for key in unknown {
            let contact = found.get(&key).cloned();
            self.identities.insert(key, contact);
        }
        self.load_contacts(contacts).await
    }

    /// Reads the contacts of these ids the step does not know yet, and those they are merged
    /// into, with one [`FindIndex::contacts`] call per link of the `merged_into` chains.
    async fn load_contacts(&mut self, ids: BTreeSet<String>) -> Result<(), FindError> {
        let mut wanted: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.contacts.contains_key(id))
            .collect();
        for _ in 0..MAX_CHAIN {
            if wanted.is_empty() {
                break;
            }
            let mut found: BTreeMap<String, ContactRecord> = self
                .index
                .contacts(&wanted)
                .await?
                .into_iter()
                .map(|record| (record.id.clone(), record))
                .collect();
            let mut next = BTreeSet::new();
            for id in wanted {
                let record = found.remove(&id);
                if let Some(into) = record.as_ref().and_then(|r| r.merged_into.as_ref())
                    && !self.contacts.contains_key(into)
                {
                    next.insert(into.clone());
                }
                self.contacts.insert(id, record);
            }
            next.retain(|id| !self.contacts.contains_key(id));
            wanted = next.into_iter().collect();
        }
        Ok(())
    }

    async fn identity(&mut self, key: &str) -> Result<Option<String>, FindError> {
        if !self.identities.contains_key(key) {
            self.prefetch(vec![key.to_string()]).await?;
        }
        Ok(self.identities.get(key).cloned().flatten())
    }

    fn point(&mut self, key: &str, contact: Option<&str>) {
        self.identities
            .insert(key.to_string(), contact.map(String::from));
        self.changed_identities.insert(key.to_string());
    }

    async fn contact(&mut self, id: &str) -> Result<Option<ContactRecord>, FindError> {
        if let Some(known) = self.contacts.get(id) {
            return Ok(known.clone());
        }
        let found = self.index.contact(id).await?;
        self.contacts.insert(id.to_string(), found.clone());
        Ok(found)
    }

    fn save(&mut self, contact: ContactRecord) {
        self.changed_contacts.insert(contact.id.clone());
        self.contacts.insert(contact.id.clone(), Some(contact));
    }

    /// The contact `id` is part of now: itself, or the end of its `merged_into` chain.
    async fn live(&mut self, id: &str) -> Result<String, FindError> {
        let mut current = id.to_string();
        for _ in 0..MAX_CHAIN {
            match self.contact(&current).await? {
                Some(ContactRecord {
                    merged_into: Some(next),
                    ..
                }) => current = next,
                _ => return Ok(current),
            }
        }
        Err(FindError::Unavailable(format!(
            "the index's contact {id} is merged in a chain longer than {MAX_CHAIN}; delete the index to rebuild it from the log"
        )))
    }

    async fn event(
        &mut self,
        event: &Event,
        participants: Vec<(Vec<String>, Option<String>)>,
    ) -> Result<(), FindError> {
        let sequence = event.sequence;
        let at = event.incoming.occurred_at;
        let mut reference = EventRef {
            sequence,
            conversation: None,
            ticket: None,
        };
        match &event.incoming.payload {
            EventPayload::Conversation(patch) => {
                let id = ConversationId::new(event.connection.clone(), patch.external_id.clone());
                self.conversations.insert(id.clone());
                reference.conversation = Some(id);
            }
            EventPayload::Ticket(ticket) => {
                let id = TicketId::new(event.connection.clone(), ticket.external_id.clone());
                self.tickets.insert(id.clone());
                reference.ticket = Some(id);
            }
            EventPayload::Vendor {
                subject: Some(subject),
                ..
            } if !subject.is_empty() => {
                // A vendor event names what it is about by the vendor's id only, which may be
                // a conversation or a ticket: it is remembered under both.
                let id = ConversationId::new(event.connection.clone(), subject.clone());
                reference.conversation = Some(id.clone());
                reference.ticket = Some(id);
            }
            EventPayload::Contact(change) if event.connection.is_system() => {
                self.change(change, sequence, at).await?;
            }
            EventPayload::Contact(_) => {
                warn!(
                    sequence = sequence.0,
                    connection = %event.connection,
                    "a contact change from a vendor connection is not applied: only the system connection's are"
                );
            }
            EventPayload::Vendor { .. } | EventPayload::Agent { .. } => {}
        }
        self.events.push(reference);
        for (keys, name) in participants {
            if !keys.is_empty() {
                self.link(&keys, name.as_deref(), at, sequence).await?;
            }
        }
        Ok(())
    }

    /// Links one participant's keys (see the README's rules).
    async fn link(
        &mut self,
        keys: &[String],
        name: Option<&str>,
        seen: Timestamp,
        sequence: Sequence,
    ) -> Result<(), FindError> {
        let mut linked: Vec<String> = Vec::new();
        for key in keys {
            if let Some(contact) = self.identity(key).await? {
                let live = self.live(&contact).await?;
                if !linked.contains(&live) {
                    linked.push(live);
                }
            }
        }
        let owner = if linked.is_empty() {
            // Only one participant per event links, and the index has applied nothing from
            // this event on (its position is before it): the id is free.
            let id = format!("c{}", sequence.0);
            self.save(ContactRecord {
                id: id.clone(),
                created_at_sequence: sequence,
                ..ContactRecord::default()
            });
            id
        } else {
            let mut by_age = Vec::new();
            for id in &linked {
                if let Some(record) = self.contact(id).await? {
                    by_age.push((record.created_at_sequence, record.id));
                }
            }
            by_age.sort();
            if let Some(((_, oldest), rest)) = by_age.split_first() {
                for (_, other) in rest {
                    if !self.separated(oldest, other).await? {
                        self.merge(oldest, other).await?;
                    }
                }
            }
            self.live(&linked[0]).await?
        };
        let Some(mut record) = self.contact(&owner).await? else {
            return Ok(());
        };
        for key in keys {
            if self.identity(key).await?.is_none() {
                self.point(key, Some(&owner));
                record.identities.insert(key.clone());
            }
        }
        if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
            record.names.insert(name.to_string());
        }
        record.last_seen = Some(record.last_seen.map_or(seen, |last| last.max(seen)));
        self.save(record);
        Ok(())
    }

    async fn separated(&mut self, a: &str, b: &str) -> Result<bool, FindError> {
        let a_record = self.contact(a).await?.unwrap_or_default();
        let b_record = self.contact(b).await?.unwrap_or_default();
        Ok(a_record.separated.contains(b) || b_record.separated.contains(a))
    }

    /// `from` becomes part of `into`: its identities, names and separations move.
    async fn merge(&mut self, into: &str, from: &str) -> Result<(), FindError> {
        let (Some(mut target), Some(mut source)) =
            (self.contact(into).await?, self.contact(from).await?)
        else {
            return Ok(());
        };
        for key in std::mem::take(&mut source.identities) {
            self.point(&key, Some(into));
            target.identities.insert(key);
        }
        target.names.append(&mut source.names);
        for other in std::mem::take(&mut source.separated) {
            if other == into {
                continue;
            }
            target.separated.insert(other.clone());
            if let Some(mut record) = self.contact(&other).await? {
                record.separated.insert(into.to_string());
                self.save(record);
            }
        }
        target.separated.remove(from);
        target.last_seen = target.last_seen.max(source.last_seen);
        source.last_seen = None;
        source.merged_into = Some(into.to_string());
        self.moved.insert(from.to_string());
        self.save(target);
        self.save(source);
        Ok(())
    }

    async fn change(
        &mut self,
        change: &ContactChange,
        sequence: Sequence,
        at: Timestamp,
    ) -> Result<(), FindError> {
        match change {
            ContactChange::Merged { into, from } => {
                let usable = |r: &Option<ContactRecord>| {
                    r.as_ref()
                        .is_some_and(|r| r.merged_into.is_none() && r.erased_at.is_none())
                };
                let target = self.contact(into).await?;
                let source = self.contact(from).await?;
                if into == from || !usable(&target) || !usable(&source) {
                    warn!(
                        sequence = sequence.0,
                        into,
                        from,
                        "a contact merge that does not apply (a contact missing, merged, erased, or the same) changes nothing"
                    );
                    return Ok(());
                }
                self.merge(into, from).await
            }
            ContactChange::Split {
                contact,
                new_contact,
                identities,
            } => {
                let Some(mut record) = self.contact(contact).await? else {
                    warn!(
                        sequence = sequence.0,
                        contact, "a split of no contact changes nothing"
                    );
                    return Ok(());
                };
                let leaving: BTreeSet<&String> = identities
                    .iter()
                    .filter(|key| record.identities.contains(*key))
                    .collect();
                if record.merged_into.is_some()
                    || record.erased_at.is_some()
                    || leaving.is_empty()
                    || new_contact == contact
                    || self.contact(new_contact).await?.is_some()
                {
                    warn!(
                        sequence = sequence.0,
                        contact,
                        new_contact,
                        "a split that does not apply (a merged or erased contact, no identity of it, or a new contact that exists) changes nothing"
                    );
                    return Ok(());
                }
                let mut split = ContactRecord {
                    id: new_contact.clone(),
                    created_at_sequence: sequence,
                    ..ContactRecord::default()
                };
                for key in leaving {
                    record.identities.remove(key);
                    split.identities.insert(key.clone());
                    self.point(key, Some(new_contact));
                }
                record.separated.insert(new_contact.clone());
                split.separated.insert(contact.clone());
                self.moved.insert(contact.clone());
                self.save(record);
                self.save(split);
                Ok(())
            }
            ContactChange::Erased { contact, .. } => {
                let mut record = match self.contact(contact).await? {
                    Some(record) => record,
                    // A rebuild from a log whose erased payloads no longer link anyone: the
                    // erasure is still recorded.
                    None => ContactRecord {
                        id: contact.clone(),
                        created_at_sequence: contact
                            .strip_prefix('c')
                            .and_then(|n| n.parse().ok())
                            .map_or(sequence, Sequence),
                        ..ContactRecord::default()
                    },
                };
                for key in std::mem::take(&mut record.identities) {
                    self.point(&key, None);
                }
                record.names.clear();
                record.erased_at = Some(at);
                self.moved.insert(contact.clone());
                self.erased = true;
                self.save(record);
                Ok(())
            }
        }
    }

    /// The contact a participant's keys give: that of the first key linked, as it is now.
    async fn contact_of(&mut self, keys: &[String]) -> Result<Option<String>, FindError> {
        for key in keys {
            if let Some(contact) = self.identity(key).await? {
                return Ok(Some(self.live(&contact).await?));
            }
        }
        Ok(None)
    }

    /// The second part of a step: the documents of what changed, as the store holds them now.
    pub(crate) async fn finish(mut self, position: Sequence) -> Result<StepOutput, FindError> {
        // Conversations and tickets of contacts that lost identities or were merged away.
        for contact in std::mem::take(&mut self.moved) {
            let mut query = crate::index::FindQuery {
                contacts: vec![contact.clone()],
                limit: SCAN_PAGE,
                ..crate::index::FindQuery::default()
            };
            loop {
                let page = self.index.find_conversations(&query).await?;
                let full = page.len() == SCAN_PAGE;
                query.after = page.last().cloned();
                self.conversations
                    .extend(page.into_iter().map(|(_, id)| id));
                if !full {
                    break;
                }
            }
            let tickets = self
                .index
                .contact_tickets(std::slice::from_ref(&contact), MAX_CONTACT_TICKETS)
                .await?;
            self.tickets.extend(tickets.into_iter().map(|t| t.id));
        }

        let mut conversations: Vec<(Conversation, Vec<String>)> = Vec::new();
        let ids: Vec<ConversationId> = std::mem::take(&mut self.conversations)
            .into_iter()
            .collect();
        for (id, found) in fetch_conversations(&self.storage, ids).await? {
            match found {
                Some(conversation) => {
                    let keys = conversation
                        .visitor
                        .as_ref()
                        .map(|v| self.keys(Some(&id.connection), &v.value))
                        .unwrap_or_default();
                    conversations.push((conversation, keys));
                }
                None => {
                    warn!(conversation = %id, "the log names a conversation the store does not hold; not indexed")
                }
            }
        }
        let mut tickets: Vec<(Ticket, TicketId, Vec<String>)> = Vec::new();
        for id in std::mem::take(&mut self.tickets) {
            match self.storage.get_ticket(&id).await? {
                Some(ticket) => {
                    let keys = ticket
                        .requester
                        .as_ref()
                        .map(|r| self.keys(None, r))
                        .unwrap_or_default();
                    tickets.push((ticket, id, keys));
                }
                None => {
                    warn!(ticket = %id, "the log names a ticket the store does not hold; not indexed")
                }
            }
        }
        let keys: Vec<String> = conversations
            .iter()
            .flat_map(|(_, keys)| keys.iter().cloned())
            .chain(tickets.iter().flat_map(|(_, _, keys)| keys.iter().cloned()))
            .collect();
        self.prefetch(keys).await?;

        let mut batch = IndexBatch {
            position,
            ..IndexBatch::default()
        };
        for (conversation, keys) in conversations {
            let contact = self.contact_of(&keys).await?;
            batch
                .conversations
                .push(doc_with(&conversation, contact, |phone| self.e164(phone)));
        }
        for (ticket, id, keys) in tickets {
            let contact = self.contact_of(&keys).await?;
            batch.tickets.push(TicketDoc {
                id,
                contact,
                updated_at: ticket.updated_at,
            });
        }
        for id in std::mem::take(&mut self.changed_contacts) {
            if let Some(Some(record)) = self.contacts.remove(&id) {
                batch.contacts.push(record);
            }
        }
        for key in std::mem::take(&mut self.changed_identities) {
            let contact = self.identities.get(&key).cloned().flatten();
            batch.identities.push((key, contact));
        }
        batch.events = self.events;
        Ok(StepOutput {
            batch,
            erased: self.erased,
        })
    }
}

/// Conversations fetched by one task at most; more are fetched by several tasks at once.
const FETCH_CHUNK: usize = 512;
/// The most tasks fetching a step's conversations at once.
const FETCH_TASKS: usize = 4;

/// The store's conversations of `ids`, in the order of `ids`: a few tasks at once when there
/// are many (the store's reads and decoding spread over the runtime's threads; a database
/// store's round trips overlap).
async fn fetch_conversations(
    storage: &Arc<dyn Storage>,
    ids: Vec<ConversationId>,
) -> Result<Vec<(ConversationId, Option<Conversation>)>, FindError> {
    async fn fetch(
        storage: Arc<dyn Storage>,
        ids: Vec<ConversationId>,
    ) -> Result<Vec<(ConversationId, Option<Conversation>)>, FindError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = storage.get_conversation(&id).await?;
            out.push((id, found));
        }
        Ok(out)
    }
    if ids.len() <= FETCH_CHUNK {
        return fetch(Arc::clone(storage), ids).await;
    }
    let per_task = ids.len().div_ceil(FETCH_TASKS).max(FETCH_CHUNK);
    let mut tasks = Vec::new();
    let mut rest = ids;
    while !rest.is_empty() {
        let tail = rest.split_off(per_task.min(rest.len()));
        tasks.push(tokio::spawn(fetch(Arc::clone(storage), rest)));
        rest = tail;
    }
    let mut out = Vec::new();
    for task in tasks {
        let chunk = task.await.map_err(|error| {
            FindError::Unavailable(format!("reading the step's conversations failed: {error}"))
        })??;
        out.extend(chunk);
    }
    Ok(out)
}
