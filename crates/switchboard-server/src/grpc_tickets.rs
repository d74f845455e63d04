//! `ManageTickets`: hub-native tickets kept in the store, and vendor-held tickets (a
//! connection whose connector has a ticket API) acted on at the vendor and mirrored into the
//! store. A child module of `grpc`, so it shares the service's state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_core::{
    ConnectionId, EventKind, EventPayload, IncomingEvent, NewTicket, Participant, Ticket,
    TicketApi, TicketChange, TicketEvent, TicketId, TicketOrigin, TicketQuery, TicketSource,
    TicketStatus, Timestamp,
};
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_store::TicketListQuery;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{
    SwitchboardService, connection_ids, invalid, known_enums, page_size, status, store_status,
    time_range,
};
use crate::connections::Connection;

impl SwitchboardService {
    pub(super) async fn manage_tickets_rpc(
        &self,
        request: Request<v1::ManageTicketsRequest>,
    ) -> Result<Response<v1::ManageTicketsResponse>, Status> {
        use v1::manage_tickets_request::Operation;
        use v1::manage_tickets_response::Result as Reply;
        let operation = request
            .into_inner()
            .operation
            .ok_or_else(|| invalid("operation is required: one of create, get, update, list"))?;
        let reply = match operation {
            Operation::Create(create) => {
                let (connection, ticket) = self.create_ticket(create).await?;
                Reply::Ticket(convert::ticket(&connection, &ticket))
            }
            Operation::Get(get) => {
                let id = TicketId::parse(&get.id).map_err(|e| invalid(e.to_string()))?;
                let ticket = match self.vendor_tickets_of(id.connection.as_str()) {
                    Some((connection, api)) => {
                        let ticket = api.get(&id.external_id).await.map_err(|e| status(&e))?;
                        self.mirror_ticket(&connection, &ticket).await?;
                        ticket
                    }
                    None => self.load_ticket(&id)?,
                };
                Reply::Ticket(convert::ticket(&id.connection, &ticket))
            }
            Operation::Update(update) => {
                let (connection, ticket) = self.update_ticket(update).await?;
                Reply::Ticket(convert::ticket(&connection, &ticket))
            }
            Operation::List(list) if list.connection_ids.len() == 1 => {
                match self.vendor_tickets_of(&list.connection_ids[0]) {
                    Some((connection, api)) => {
                        Reply::List(self.list_vendor_tickets(&connection, api, list).await?)
                    }
                    None => Reply::List(self.list_stored_tickets(list)?),
                }
            }
            Operation::List(list) => Reply::List(self.list_stored_tickets(list)?),
        };
        Ok(Response::new(v1::ManageTicketsResponse {
            result: Some(reply),
        }))
    }

    fn list_stored_tickets(&self, list: v1::ListTickets) -> Result<v1::TicketList, Status> {
        if list.created.is_some() {
            return Err(invalid(
                "list.created filters only a vendor's ticket list: give exactly one connection whose vendor holds tickets",
            ));
        }
        let statuses = known_enums(
            &list.statuses,
            "statuses",
            convert::from_ticket_status,
            "TICKET_STATUS_UNSPECIFIED is not a status",
        )?;
        let query = TicketListQuery {
            connections: connection_ids(&list.connection_ids, "connection_ids")?,
            statuses,
            page_size: page_size(list.page_size)?,
            page_token: Some(list.page_token.clone()).filter(|t| !t.is_empty()),
        };
        let page = self.store.list_tickets(&query).map_err(store_status)?;
        Ok(v1::TicketList {
            tickets: page
                .tickets
                .iter()
                .map(|(connection, ticket)| convert::ticket(connection, ticket))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    fn load_ticket(&self, id: &TicketId) -> Result<Ticket, Status> {
        self.store
            .get_ticket(id)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no ticket {id}")))
    }

    async fn append_ticket(
        &self,
        connection: &ConnectionId,
        vendor: &str,
        kind: EventKind,
        dedup_key: String,
        ticket: Ticket,
    ) -> Result<usize, Status> {
        self.append_event(
            connection,
            vendor,
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

    async fn create_ticket(
        &self,
        create: v1::CreateTicket,
    ) -> Result<(ConnectionId, Ticket), Status> {
        let connection = self.connection(&create.connection_id, "create.connection_id")?;
        if create.message.trim().is_empty() {
            return Err(invalid("create.message is required"));
        }
        if !create.requester_email.contains('@') {
            return Err(invalid(
                "create.requester_email is required and must be an e-mail address",
            ));
        }
        if create
            .idempotency_key
            .as_deref()
            .is_some_and(|key| key.is_empty() || key.len() > 200)
        {
            return Err(invalid(
                "create.idempotency_key must be 1 to 200 characters",
            ));
        }
        if vendor_ticket_api(&connection).is_some() {
            return self.create_vendor_ticket(&connection, create).await;
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
            attributes: create
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source: Some(source.clone()).filter(|s| s.kind.is_some() || s.url.is_some()),
            events: vec![TicketEvent {
                author: Some(requester),
                author_type: Some("client".to_owned()),
                date: Some(now),
                message: create.message.clone(),
                kind: Some("message".to_owned()),
                is_private: false,
                source: Some(source).filter(|s| s.kind.is_some() || s.url.is_some()),
            }],
            created_at: now,
            updated_at: now,
        };
        let appended = self
            .append_ticket(
                &id,
                connection.plugin.vendor,
                EventKind::TicketCreated,
                dedup_key,
                ticket.clone(),
            )
            .await?;
        if appended == 0 {
            // A retried create: answer with the ticket the first one made.
            let existing = self.load_ticket(&TicketId::new(id.clone(), external_id))?;
            return Ok((id, existing));
        }
        info!(connection = %id, ticket = %ticket.external_id, "ticket created");
        Ok((id, ticket))
    }

    async fn update_ticket(
        &self,
        update: v1::UpdateTicket,
    ) -> Result<(ConnectionId, Ticket), Status> {
        let id = TicketId::parse(&update.id).map_err(|e| invalid(e.to_string()))?;
        let connection = self
            .connections
            .get(id.connection.as_str())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "ticket {id} belongs to connection {}, which is no longer configured",
                    id.connection
                ))
            })?;
        if let Some(api) = vendor_ticket_api(connection) {
            let connection = Arc::clone(connection);
            return self
                .update_vendor_ticket(&connection, api, &id, update)
                .await;
        }
        let _serialized = self.ticket_updates.lock().await;
        let mut ticket = self.load_ticket(&id)?;
        let status_change = match update.status() {
            v1::TicketStatus::Unspecified => None,
            other => convert::from_ticket_status(other),
        };
        let now = Timestamp::now().max(ticket.updated_at);
        let mut changed = false;
        if let Some(subject) = update.subject.clone() {
            ticket.subject = subject;
            changed = true;
        }
        if let Some(status) = status_change {
            ticket.status = status;
            changed = true;
        }
        if let Some(assignee) = update.assignee_id.clone() {
            ticket.assignee = Some(Participant {
                id: assignee,
                ..Participant::default()
            });
            changed = true;
        }
        if update.requester_email.is_some() || update.requester_name.is_some() {
            let mut requester = ticket.requester.clone().unwrap_or_default();
            if let Some(email) = update.requester_email.clone() {
                if !email.contains('@') {
                    return Err(invalid("update.requester_email must be an e-mail address"));
                }
                requester.id = email.clone();
                requester.email = Some(email);
            }
            if let Some(name) = update.requester_name.clone() {
                requester.name = Some(name);
            }
            ticket.requester = Some(requester);
            changed = true;
        }
        if update.set_tags {
            ticket.tags = update.tags.clone();
            changed = true;
        }
        if let Some(message) = update.message.clone().filter(|m| !m.trim().is_empty()) {
            ticket.events.push(TicketEvent {
                author: None,
                author_type: Some("agent".to_owned()),
                date: Some(now),
                message,
                kind: Some("message".to_owned()),
                is_private: false,
                source: None,
            });
            changed = true;
        }
        if !changed {
            return Err(invalid(
                "update changes nothing; set at least one of message, subject, status, assignee_id, requester_email, requester_name, set_tags",
            ));
        }
        ticket.updated_at = now;
        self.append_ticket(
            &id.connection,
            connection.plugin.vendor,
            EventKind::TicketUpdated,
            format!("ticket_update:{}:{}", id.external_id, uuid::Uuid::now_v7()),
            ticket.clone(),
        )
        .await?;
        Ok((id.connection, ticket))
    }
}

/// Vendor creates in flight, by connection and idempotency key: a retry that arrives while the
/// first create is still talking to the vendor is told to retry, instead of creating a second
/// ticket.
#[derive(Clone, Debug, Default)]
pub(super) struct InFlightCreates(Arc<Mutex<HashSet<(ConnectionId, String)>>>);

/// Frees an idempotency key when its create ends.
#[derive(Debug)]
pub(super) struct InFlight {
    key: (ConnectionId, String),
    set: Arc<Mutex<HashSet<(ConnectionId, String)>>>,
}

impl InFlightCreates {
    fn claim(&self, connection: &ConnectionId, key: &str) -> Option<InFlight> {
        let key = (connection.clone(), key.to_owned());
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(key.clone()).then(|| InFlight {
            key,
            set: Arc::clone(&self.0),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
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

impl SwitchboardService {
    /// The connection and its vendor ticket API, when tickets of `connection` live at the vendor.
    fn vendor_tickets_of(&self, connection: &str) -> Option<(Arc<Connection>, &dyn TicketApi)> {
        let connection = self.connections.get(connection)?;
        let api = vendor_ticket_api(connection)?;
        Some((Arc::clone(connection), api))
    }

    /// Appends the vendor's view of a ticket, so the store and the event stream follow the
    /// vendor. The dedup key is the ticket's content: mirroring an unchanged ticket appends
    /// nothing, a changed one appends a ticket_updated event.
    async fn mirror_ticket(&self, connection: &Connection, ticket: &Ticket) -> Result<(), Status> {
        let content = serde_json::to_vec(ticket).unwrap_or_default();
        let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &content);
        self.append_ticket(
            &connection.config.id,
            connection.plugin.vendor,
            EventKind::TicketUpdated,
            format!("ticket:{}:{digest}", ticket.external_id),
            ticket.clone(),
        )
        .await?;
        Ok(())
    }

    async fn create_vendor_ticket(
        &self,
        connection: &Arc<Connection>,
        create: v1::CreateTicket,
    ) -> Result<(ConnectionId, Ticket), Status> {
        let id = connection.config.id.clone();
        let in_flight = match create.idempotency_key.as_deref() {
            Some(key) => {
                let dedup_key = idempotent_create_key(key);
                if let Some(ticket) = self.created_ticket(&id, &dedup_key)? {
                    return Ok((id, ticket));
                }
                let guard = self.idempotency.claim(&id, key).ok_or_else(|| {
                    Status::aborted(format!(
                        "a create with idempotency key {key:?} is in progress; retry it in a moment to get its ticket"
                    ))
                })?;
                // The first create may have finished between the lookup and the claim.
                if let Some(ticket) = self.created_ticket(&id, &dedup_key)? {
                    return Ok((id, ticket));
                }
                Some(guard)
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
        let key = create.idempotency_key.clone();
        let task = tokio::spawn(async move {
            let _in_flight = in_flight;
            let api = vendor_ticket_api(&owned).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "connection {} no longer has a vendor ticket API",
                    owned.config.id
                ))
            })?;
            let mut ticket = api.create(&new).await.map_err(|e| status(&e))?;
            ticket.origin = TicketOrigin::Vendor;
            let dedup_key = match key.as_deref() {
                Some(key) => idempotent_create_key(key),
                None => format!("ticket_create:vendor:{}", ticket.external_id),
            };
            service
                .append_ticket(
                    &owned.config.id,
                    owned.plugin.vendor,
                    EventKind::TicketCreated,
                    dedup_key,
                    ticket.clone(),
                )
                .await?;
            info!(connection = %owned.config.id, ticket = %ticket.external_id, "ticket created at the vendor");
            Ok::<_, Status>(ticket)
        });
        let ticket = task
            .await
            .map_err(|e| Status::internal(format!("the ticket create stopped: {e}")))??;
        Ok((id, ticket))
    }

    /// The ticket a create with this dedup key made, if one did.
    fn created_ticket(
        &self,
        connection: &ConnectionId,
        dedup_key: &str,
    ) -> Result<Option<Ticket>, Status> {
        let Some(event) = self
            .store
            .event_by_dedup_key(connection, dedup_key)
            .map_err(store_status)?
        else {
            return Ok(None);
        };
        match event.incoming.payload {
            EventPayload::Ticket(created) => {
                let id = TicketId::new(connection.clone(), created.external_id.clone());
                Ok(Some(
                    self.store
                        .get_ticket(&id)
                        .map_err(store_status)?
                        .unwrap_or(created),
                ))
            }
            _ => Ok(None),
        }
    }

    async fn update_vendor_ticket(
        &self,
        connection: &Arc<Connection>,
        api: &dyn TicketApi,
        id: &TicketId,
        update: v1::UpdateTicket,
    ) -> Result<(ConnectionId, Ticket), Status> {
        let status_change = match update.status() {
            v1::TicketStatus::Unspecified => None,
            other => convert::from_ticket_status(other),
        };
        if let Some(email) = &update.requester_email
            && !email.contains('@')
        {
            return Err(invalid("update.requester_email must be an e-mail address"));
        }
        let requester =
            (update.requester_email.is_some() || update.requester_name.is_some()).then(|| {
                Participant {
                    id: update.requester_email.clone().unwrap_or_default(),
                    name: update.requester_name.clone(),
                    email: update.requester_email.clone(),
                    ..Participant::default()
                }
            });
        let change = TicketChange {
            message: update.message.clone().filter(|m| !m.trim().is_empty()),
            subject: update.subject.clone(),
            status: status_change,
            assignee_id: update.assignee_id.clone(),
            requester,
            tags: update.set_tags.then(|| update.tags.clone()),
        };
        if change == TicketChange::default() {
            return Err(invalid(
                "update changes nothing; set at least one of message, subject, status, assignee_id, requester_email, requester_name, set_tags",
            ));
        }
        let mut ticket = api
            .update(&id.external_id, &change)
            .await
            .map_err(|e| status(&e))?;
        ticket.origin = TicketOrigin::Vendor;
        self.mirror_ticket(connection, &ticket).await?;
        info!(connection = %id.connection, ticket = %id.external_id, "ticket updated at the vendor");
        Ok((id.connection.clone(), ticket))
    }

    async fn list_vendor_tickets(
        &self,
        connection: &Arc<Connection>,
        api: &dyn TicketApi,
        list: v1::ListTickets,
    ) -> Result<v1::TicketList, Status> {
        let statuses = known_enums(
            &list.statuses,
            "statuses",
            convert::from_ticket_status,
            "TICKET_STATUS_UNSPECIFIED is not a status",
        )?;
        let status_filter = statuses.first().copied();
        if statuses.len() > 1 {
            return Err(invalid(format!(
                "the {} ticket list filters by at most one status; give one, or none",
                connection.plugin.vendor
            )));
        }
        page_size(list.page_size)?;
        let (created_from, created_to) = time_range(list.created.as_ref(), "list.created")?;
        let query = TicketQuery {
            status: status_filter,
            created_from,
            created_to,
            page_token: Some(list.page_token.clone()).filter(|t| !t.is_empty()),
        };
        let page = api.list(&query).await.map_err(|e| status(&e))?;
        let mut tickets = Vec::with_capacity(page.tickets.len());
        for mut ticket in page.tickets {
            ticket.origin = TicketOrigin::Vendor;
            self.mirror_ticket(connection, &ticket).await?;
            tickets.push(convert::ticket(&connection.config.id, &ticket));
        }
        Ok(v1::TicketList {
            tickets,
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }
}
