//! Tickets: hub-native tickets kept in the store, and vendor-held tickets (a connection whose
//! connector has a [`TicketApi`]) acted on at the vendor and mirrored into the store.
//!
//! - **Hub-native.** A create appends a `ticket_created` event. An update is a command the
//!   store runs itself ([`Storage::update_ticket`]: read, [`Ticket::apply_change`], append, in
//!   one serialized step), so concurrent updates never lose each other's changes.
//! - **Vendor-held.** The vendor is changed first; the store only mirrors what the vendor
//!   answered (the mirror's dedup key is the ticket's content, so an unchanged ticket appends
//!   nothing).
//! - **Idempotency.** A create with an idempotency key appends under a dedup key made from it,
//!   so a retry answers with the first create's ticket. A vendor create holds the key in the
//!   store ([`Storage::claim_idempotency_key`], with a lease of [`CREATE_LEASE`]) while it talks
//!   to the vendor: a retry arriving meanwhile is refused with [`CreateRefused::InProgress`]
//!   (the gRPC door reports ABORTED: retry), instead of creating a second ticket at the
//!   vendor. The key is released however the create ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{
    ConnectionId, Error, EventKind, EventPayload, IncomingEvent, NewTicket, Participant, Ticket,
    TicketApi, TicketChange, TicketEvent, TicketId, TicketOrigin, TicketQuery, TicketSource,
    TicketStatus, Timestamp,
};
use switchboard_store::{Claim, Storage, TicketListQuery, TicketUpdate};
use tracing::{info, warn};

use crate::connections::{Connection, Connections};

/// How long a vendor create holds its idempotency key at most: past it, a create that never
/// finished (a crashed replica) no longer blocks retries.
pub const CREATE_LEASE: Duration = Duration::from_secs(5 * 60);

/// Why a create was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefused {
    /// A create with the same idempotency key is in flight (at the vendor): retry it in a
    /// moment to get its ticket.
    InProgress {
        /// The idempotency key.
        key: String,
    },
    /// Any other refusal (nothing was created).
    Error(Error),
}

impl std::fmt::Display for CreateRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateRefused::InProgress { key } => write!(
                f,
                "a create with idempotency key {key:?} is in progress; retry it in a moment to get its ticket"
            ),
            CreateRefused::Error(error) => write!(f, "{}", error.message),
        }
    }
}

impl From<Error> for CreateRefused {
    fn from(error: Error) -> Self {
        CreateRefused::Error(error)
    }
}

impl From<switchboard_store::StoreError> for CreateRefused {
    fn from(error: switchboard_store::StoreError) -> Self {
        CreateRefused::Error(error.into())
    }
}

impl From<CreateRefused> for Error {
    /// A create in progress is UNAVAILABLE (retry) as a core error.
    fn from(refused: CreateRefused) -> Self {
        match refused {
            CreateRefused::Error(error) => error,
            in_progress @ CreateRefused::InProgress { .. } => {
                Error::unavailable(in_progress.to_string())
            }
        }
    }
}

/// A ticket to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTicket {
    /// The connection (its vendor holds the ticket when its connector has a ticket API).
    pub connection_id: String,
    /// The first message; required.
    pub message: String,
    /// The requester's e-mail; required.
    pub requester_email: String,
    /// The requester's name.
    pub requester_name: Option<String>,
    /// The subject.
    pub subject: String,
    /// The assignee's id.
    pub assignee_id: Option<String>,
    /// Where the ticket came from (a kind, e.g. `chat`).
    pub source_type: Option<String>,
    /// Where the ticket came from (a link).
    pub source_url: Option<String>,
    /// Free-form attributes (hub-native tickets keep them).
    pub attributes: BTreeMap<String, String>,
    /// A retry with the same key answers with the first create's ticket (1 to 200
    /// characters).
    pub idempotency_key: Option<String>,
}

/// Which tickets to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTickets {
    /// Only these connections (none: all). Exactly one whose vendor holds tickets lists at
    /// the vendor.
    pub connections: Vec<ConnectionId>,
    /// Only these statuses (a vendor's list takes at most one).
    pub statuses: Vec<TicketStatus>,
    /// Created in `[from, to)`: only a vendor's list filters by it.
    pub created: Option<(Option<Timestamp>, Option<Timestamp>)>,
    /// Tickets per page (already checked by the door).
    pub page_size: usize,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

/// A page of tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketList {
    /// The tickets with their connection.
    pub tickets: Vec<(ConnectionId, Ticket)>,
    /// Where the next page starts, if there is one.
    pub next_page_token: Option<String>,
}

/// The tickets service.
#[derive(Clone)]
pub struct Tickets {
    storage: Arc<dyn Storage>,
    connections: Connections,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

/// The dedup key of a ticket create made with an idempotency key: hub-native and vendor creates
/// share it, so a retry finds the first create's event whichever kind it was.
fn idempotent_create_key(key: &str) -> String {
    format!("ticket_create:{key}")
}

/// The connection's vendor ticket API, if its connector has one.
fn vendor_ticket_api(connection: &Connection) -> Option<&dyn TicketApi> {
    connection.connector.as_deref().and_then(|c| c.tickets())
}

const NOTHING_CHANGES: &str = "update changes nothing; set at least one of message, subject, status, assignee_id, requester_email, requester_name, set_tags";

impl Tickets {
    /// The service over `storage` and `connections`.
    pub fn new(storage: Arc<dyn Storage>, connections: Connections) -> Self {
        Tickets {
            storage,
            connections,
        }
    }

    /// Creates a ticket: at the vendor when the connection's vendor holds tickets, else in
    /// the store. Answers with the ticket's connection and the ticket.
    pub async fn create(
        &self,
        create: CreateTicket,
    ) -> Result<(ConnectionId, Ticket), CreateRefused> {
        let connection = super::connection(
            &self.connections,
            &create.connection_id,
            "create.connection_id",
        )?;
        if create.message.trim().is_empty() {
            return Err(Error::invalid("create.message is required").into());
        }
        if !create.requester_email.contains('@') {
            return Err(Error::invalid(
                "create.requester_email is required and must be an e-mail address",
            )
            .into());
        }
        if create
            .idempotency_key
            .as_deref()
            .is_some_and(|key| key.is_empty() || key.len() > 200)
        {
            return Err(
                Error::invalid("create.idempotency_key must be 1 to 200 characters").into(),
            );
        }
        if vendor_ticket_api(&connection).is_some() {
            return self.create_at_vendor(&connection, create).await;
        }
        let id = connection.config.id.clone();
        let (external_id, dedup_key) = match create.idempotency_key.as_deref() {
            Some(key) => (
                format!(
                    "hub-{}",
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes())
                ),
                idempotent_create_key(key),
            ),
            None => {
                let fresh = uuid::Uuid::now_v7();
                (format!("hub-{fresh}"), format!("ticket_create:{fresh}"))
            }
        };
        let now = Timestamp::now();
        let requester = Participant {
            id: create.requester_email.clone(),
            name: create.requester_name.clone(),
            email: Some(create.requester_email.clone()),
            ..Participant::default()
        };
        let source = TicketSource {
            id: None,
            kind: create.source_type.clone(),
            url: create.source_url.clone(),
        };
        let source = Some(source).filter(|s| s.kind.is_some() || s.url.is_some());
        let ticket = Ticket {
            external_id: external_id.clone(),
            origin: TicketOrigin::HubNative,
            subject: create.subject.clone(),
            status: TicketStatus::Open,
            requester: Some(requester.clone()),
            assignee: create.assignee_id.clone().map(|id| Participant {
                id,
                ..Participant::default()
            }),
            groups: Vec::new(),
            tags: Vec::new(),
            attributes: create.attributes.clone().into_iter().collect(),
            source: source.clone(),
            events: vec![TicketEvent {
                author: Some(requester),
                author_type: Some("client".to_owned()),
                date: Some(now),
                message: create.message.clone(),
                kind: Some("message".to_owned()),
                is_private: false,
                source,
            }],
            created_at: now,
            updated_at: now,
        };
        let appended = self
            .append_ticket(
                &connection,
                EventKind::TicketCreated,
                dedup_key,
                ticket.clone(),
            )
            .await?;
        if appended == 0 {
            // A retried create: answer with the ticket the first one made.
            let existing = self.load(&TicketId::new(id.clone(), external_id)).await?;
            return Ok((id, existing));
        }
        info!(connection = %id, ticket = %ticket.external_id, "ticket created");
        Ok((id, ticket))
    }

    /// A ticket: fetched from the vendor (and mirrored) when its vendor holds it, else from
    /// the store.
    pub async fn get(&self, id: &TicketId) -> Result<Ticket, Error> {
        match self.vendor_tickets_of(id.connection.as_str()) {
            Some((connection, api)) => {
                let ticket = api.get(&id.external_id).await?;
                self.mirror(&connection, &ticket).await?;
                Ok(ticket)
            }
            None => self.load(id).await,
        }
    }

    /// Changes a ticket: at the vendor (then mirrored) when its vendor holds it, else in the
    /// store, which serializes concurrent updates itself.
    pub async fn update(&self, id: &TicketId, change: TicketChange) -> Result<Ticket, Error> {
        let connection = self
            .connections
            .get(id.connection.as_str())
            .ok_or_else(|| {
                Error::failed_precondition(format!(
                    "ticket {id} belongs to connection {}, which is no longer configured",
                    id.connection
                ))
            })?;
        let change = TicketChange {
            message: change.message.filter(|m| !m.trim().is_empty()),
            ..change
        };
        if let Some(email) = change.requester.as_ref().and_then(|r| r.email.as_ref())
            && !email.contains('@')
        {
            return Err(Error::invalid(
                "update.requester_email must be an e-mail address",
            ));
        }
        if change == TicketChange::default() {
            return Err(Error::invalid(NOTHING_CHANGES));
        }
        if let Some(api) = vendor_ticket_api(connection) {
            let mut ticket = api.update(&id.external_id, &change).await?;
            ticket.origin = TicketOrigin::Vendor;
            self.mirror(connection, &ticket).await?;
            info!(connection = %id.connection, ticket = %id.external_id, "ticket updated at the vendor");
            return Ok(ticket);
        }
        let ticket = self
            .storage
            .update_ticket(TicketUpdate {
                id: id.clone(),
                vendor: connection.plugin.vendor.to_owned(),
                change,
                at: Timestamp::now(),
            })
            .await?;
        Ok(ticket)
    }

    /// A page of tickets: from the vendor (each mirrored) when exactly one connection is named
    /// and its vendor holds tickets, else from the store.
    pub async fn list(&self, list: ListTickets) -> Result<TicketList, Error> {
        if let [only] = list.connections.as_slice()
            && let Some((connection, api)) = self.vendor_tickets_of(only.as_str())
        {
            return self.list_at_vendor(&connection, api, list).await;
        }
        if list.created.is_some() {
            return Err(Error::invalid(
                "list.created filters only a vendor's ticket list: give exactly one connection whose vendor holds tickets",
            ));
        }
        let query = TicketListQuery {
            connections: list.connections,
            statuses: list.statuses,
            page_size: list.page_size,
            page_token: list.page_token,
        };
        let page = self.storage.list_tickets(&query).await?;
        Ok(TicketList {
            tickets: page.tickets,
            next_page_token: page.next_page_token,
        })
    }

    async fn load(&self, id: &TicketId) -> Result<Ticket, Error> {
        self.storage
            .get_ticket(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no ticket {id}")))
    }

    async fn append_ticket(
        &self,
        connection: &Connection,
        kind: EventKind,
        dedup_key: String,
        ticket: Ticket,
    ) -> Result<usize, Error> {
        super::append_event(
            self.storage.as_ref(),
            &connection.config.id,
            connection.plugin.vendor,
            IncomingEvent {
                dedup_key,
                kind,
                vendor_event: format!("switchboard.{}", kind.as_str()),
                occurred_at: ticket.updated_at,
                payload: EventPayload::Ticket(ticket),
            },
        )
        .await
    }

    /// The connection and its vendor ticket API, when tickets of `connection` live at the
    /// vendor.
    fn vendor_tickets_of(&self, connection: &str) -> Option<(Arc<Connection>, &dyn TicketApi)> {
        let connection = self.connections.get(connection)?;
        let api = vendor_ticket_api(connection)?;
        Some((Arc::clone(connection), api))
    }

    /// Appends the vendor's view of a ticket (see the module docs).
    async fn mirror(&self, connection: &Connection, ticket: &Ticket) -> Result<(), Error> {
        let content = serde_json::to_vec(ticket).unwrap_or_default();
        let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &content);
        self.append_ticket(
            connection,
            EventKind::TicketUpdated,
            format!("ticket:{}:{digest}", ticket.external_id),
            ticket.clone(),
        )
        .await?;
        Ok(())
    }

    async fn create_at_vendor(
        &self,
        connection: &Arc<Connection>,
        create: CreateTicket,
    ) -> Result<(ConnectionId, Ticket), CreateRefused> {
        let id = connection.config.id.clone();
        let claim = match create.idempotency_key.as_deref() {
            Some(key) => {
                let dedup_key = idempotent_create_key(key);
                if let Some(ticket) = self.created_ticket(&id, &dedup_key).await? {
                    return Ok((id, ticket));
                }
                match self
                    .storage
                    .claim_idempotency_key(&id, key, CREATE_LEASE)
                    .await?
                {
                    Claim::Claimed => {}
                    Claim::Busy => {
                        return Err(CreateRefused::InProgress {
                            key: key.to_owned(),
                        });
                    }
                }
                let claim = ClaimGuard {
                    storage: self.storage.clone(),
                    connection: id.clone(),
                    key: key.to_owned(),
                };
                // The first create may have finished between the lookup and the claim.
                if let Some(ticket) = self.created_ticket(&id, &dedup_key).await? {
                    return Ok((id, ticket));
                }
                Some(claim)
            }
            None => None,
        };
        let new = NewTicket {
            message: create.message.clone(),
            requester: Participant {
                id: create.requester_email.clone(),
                name: create.requester_name.clone(),
                email: Some(create.requester_email.clone()),
                ..Participant::default()
            },
            subject: create.subject.clone(),
            assignee_id: create.assignee_id.clone(),
            source_kind: create.source_type.clone(),
            source_url: create.source_url.clone(),
        };
        // The vendor call and the record of what it made run in their own task: a caller that
        // gives up (deadline, cancel) cannot split them, so a retry with the same idempotency
        // key finds the ticket instead of creating a second one at the vendor.
        let service = self.clone();
        let owned = Arc::clone(connection);
        let key = create.idempotency_key;
        let task = tokio::spawn(async move {
            let created = async {
                let api = vendor_ticket_api(&owned).ok_or_else(|| {
                    Error::failed_precondition(format!(
                        "connection {} no longer has a vendor ticket API",
                        owned.config.id
                    ))
                })?;
                let mut ticket = api.create(&new).await?;
                ticket.origin = TicketOrigin::Vendor;
                let dedup_key = match key.as_deref() {
                    Some(key) => idempotent_create_key(key),
                    None => format!("ticket_create:vendor:{}", ticket.external_id),
                };
                service
                    .append_ticket(
                        &owned,
                        EventKind::TicketCreated,
                        dedup_key,
                        ticket.clone(),
                    )
                    .await?;
                info!(connection = %owned.config.id, ticket = %ticket.external_id, "ticket created at the vendor");
                Ok::<_, Error>(ticket)
            }
            .await;
            if let Some(claim) = claim {
                claim.release().await;
            }
            created
        });
        let ticket = task
            .await
            .map_err(|e| Error::internal(format!("the ticket create stopped: {e}")))??;
        Ok((id, ticket))
    }

    /// The ticket a create with this dedup key made, if one did.
    async fn created_ticket(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Ticket>, Error> {
        let Some(event) = self
            .storage
            .event_by_dedup_key(connection, dedup_key)
            .await?
        else {
            return Ok(None);
        };
        match event.incoming.payload {
            EventPayload::Ticket(created) => {
                let id = TicketId::new(connection.clone(), created.external_id.clone());
                Ok(Some(self.storage.get_ticket(&id).await?.unwrap_or(created)))
            }
            _ => Ok(None),
        }
    }

    async fn list_at_vendor(
        &self,
        connection: &Connection,
        api: &dyn TicketApi,
        list: ListTickets,
    ) -> Result<TicketList, Error> {
        if list.statuses.len() > 1 {
            return Err(Error::invalid(format!(
                "the {} ticket list filters by at most one status; give one, or none",
                connection.plugin.vendor
            )));
        }
        let (created_from, created_to) = list.created.unwrap_or_default();
        let query = TicketQuery {
            status: list.statuses.first().copied(),
            created_from,
            created_to,
            page_token: list.page_token,
        };
        let page = api.list(&query).await?;
        let mut tickets = Vec::with_capacity(page.tickets.len());
        for mut ticket in page.tickets {
            ticket.origin = TicketOrigin::Vendor;
            self.mirror(connection, &ticket).await?;
            tickets.push((connection.config.id.clone(), ticket));
        }
        Ok(TicketList {
            tickets,
            next_page_token: page.next_page_token,
        })
    }
}

/// Holds a vendor create's idempotency key; releases it when dropped, however the create
/// ended (the release runs in a task of its own; a release that fails leaves the key to its
/// lease).
struct ClaimGuard {
    storage: Arc<dyn Storage>,
    connection: ConnectionId,
    key: String,
}

impl ClaimGuard {
    /// Releases the key now (the normal end of a create).
    async fn release(mut self) {
        let key = std::mem::take(&mut self.key);
        if let Err(error) = self
            .storage
            .release_idempotency_key(&self.connection, &key)
            .await
        {
            warn!(connection = %self.connection, %error, "an idempotency key could not be released; its lease frees it");
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.key.is_empty() {
            // Released already.
            return;
        }
        let storage = self.storage.clone();
        let connection = self.connection.clone();
        let key = std::mem::take(&mut self.key);
        let release = async move {
            if let Err(error) = storage.release_idempotency_key(&connection, &key).await {
                warn!(%connection, %error, "an idempotency key could not be released; its lease frees it");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(release);
            }
            Err(_) => warn!(
                connection = %self.connection,
                "no runtime to release an idempotency key; its lease frees it"
            ),
        }
    }
}
