//! The gRPC front door: the `switchboard.v1.Switchboard` service.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchboard_core::{
    ConnectionId, ConversationId, Error, ErrorCode, Event, EventKind, EventPayload, IncomingEvent,
    Participant, Sequence, Ticket, TicketEvent, TicketId, TicketOrigin, TicketSource, TicketStatus,
    Timestamp,
};
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_server::Switchboard;
use switchboard_store::{AppendRequest, ConversationQuery, Store, StoreError, TicketListQuery};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::connections::Connections;

/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size when the client asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Events read from the store per step of a stream.
const STREAM_READ_BATCH: usize = 512;
/// Events buffered per subscriber between the reader task and the transport. A slow subscriber
/// fills this and then its reader waits: the server holds at most this many of its events.
const STREAM_BUFFER: usize = 256;

/// A core error as a gRPC status.
pub fn status(error: &Error) -> Status {
    Status::new(
        tonic::Code::from(error.code.grpc_code()),
        error.message.clone(),
    )
}

fn store_status(error: StoreError) -> Status {
    status(&Error::new(error.code(), error.to_string()))
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// The service.
#[derive(Debug, Clone)]
pub struct SwitchboardService {
    store: Store,
    connections: Connections,
    vendors: Arc<Vec<&'static str>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl SwitchboardService {
    /// A service over the store and connections. Streams end when `shutdown` turns true.
    pub fn new(
        store: Store,
        connections: Connections,
        vendors: Vec<&'static str>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        SwitchboardService {
            store,
            connections,
            vendors: Arc::new(vendors),
            shutdown,
        }
    }

    fn check_vendors(&self, vendors: &[String]) -> Result<(), Status> {
        for vendor in vendors {
            if !self.vendors.contains(&vendor.as_str()) {
                return Err(invalid(format!(
                    "unknown vendor {vendor:?}; known vendors: {}",
                    self.vendors.join(", ")
                )));
            }
        }
        Ok(())
    }
}

fn connection_ids(ids: &[String], field: &str) -> Result<Vec<ConnectionId>, Status> {
    ids.iter()
        .map(|id| ConnectionId::new(id.clone()).map_err(|e| invalid(format!("{field}: {e}"))))
        .collect()
}

fn page_size(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(invalid(format!(
            "page_size {n} is too large; use 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
        ))),
        n => Ok(n as usize),
    }
}

fn time_range(
    range: Option<&v1::TimeRange>,
    field: &str,
) -> Result<(Option<Timestamp>, Option<Timestamp>), Status> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let bound = |t: Option<&prost_types::Timestamp>, which: &str| {
        t.map(|t| {
            convert::from_timestamp(t).ok_or_else(|| {
                invalid(format!(
                    "{field}.{which} is out of range; use a time between 1970 and 9999"
                ))
            })
        })
        .transpose()
    };
    let start = bound(range.start.as_ref(), "start")?;
    let end = bound(range.end.as_ref(), "end")?;
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(invalid(format!("{field}.start must be before {field}.end")));
    }
    Ok((start, end))
}

/// Why a caught-up subscriber's reader woke up.
enum Wake {
    HeadMoved,
    StoreClosed,
    ShuttingDown,
    SubscriberGone,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send + 'static>>;

/// What a subscriber asked to see.
#[derive(Debug, Clone, Default)]
struct StreamFilter {
    connections: Vec<ConnectionId>,
    vendors: Vec<String>,
    kinds: Vec<EventKind>,
    conversations: Vec<ConversationId>,
}

impl StreamFilter {
    fn matches(&self, event: &Event) -> bool {
        (self.connections.is_empty() || self.connections.contains(&event.connection))
            && (self.vendors.is_empty() || self.vendors.contains(&event.vendor))
            && (self.kinds.is_empty() || self.kinds.contains(&event.incoming.kind))
            && (self.conversations.is_empty()
                || event
                    .conversation_id()
                    .is_some_and(|id| self.conversations.contains(&id)))
    }
}

/// The first sequence whose event was received at or after `at`, minus one (the cursor to
/// start after). Events are appended in receive order, so a binary search over the log works.
fn cursor_at_time(store: &Store, at: Timestamp) -> Result<Sequence, StoreError> {
    let (mut low, mut high) = (0u64, store.head().0);
    // Invariant: events <= low were received before `at`; the answer is in [low, high].
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        let event = store.read_events(Sequence(mid - 1), 1)?;
        match event.first() {
            Some(e) if e.received_at < at => low = mid,
            _ => high = mid - 1,
        }
    }
    Ok(Sequence(low))
}

#[tonic::async_trait]
impl Switchboard for SwitchboardService {
    async fn list_conversations(
        &self,
        request: Request<v1::ListConversationsRequest>,
    ) -> Result<Response<v1::ListConversationsResponse>, Status> {
        let r = request.into_inner();
        self.check_vendors(&r.vendors)?;
        let statuses = r
            .statuses()
            .map(|s| {
                convert::from_status(s).ok_or_else(|| {
                    invalid("statuses: CONVERSATION_STATUS_UNSPECIFIED is not a status")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (started_from, started_to) = time_range(r.started.as_ref(), "started")?;
        let (updated_from, updated_to) = time_range(r.updated.as_ref(), "updated")?;
        let query = ConversationQuery {
            connections: connection_ids(&r.connection_ids, "connection_ids")?,
            vendors: r.vendors.clone(),
            statuses,
            started_from,
            started_to,
            updated_from,
            updated_to,
            page_size: page_size(r.page_size)?,
            page_token: Some(r.page_token.clone()).filter(|t| !t.is_empty()),
        };
        let with_messages = r.view() == v1::ConversationView::Full;
        let store = self.store.clone();
        let page = tokio::task::spawn_blocking(move || store.list_conversations(&query))
            .await
            .map_err(|e| Status::internal(format!("listing failed: {e}")))?
            .map_err(store_status)?;
        Ok(Response::new(v1::ListConversationsResponse {
            conversations: page
                .conversations
                .iter()
                .map(|c| convert::conversation(c, with_messages))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<v1::GetConversationRequest>,
    ) -> Result<Response<v1::Conversation>, Status> {
        let r = request.into_inner();
        let id = ConversationId::parse(&r.id).map_err(|e| invalid(e.to_string()))?;
        let conversation = self
            .store
            .get_conversation(&id)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no conversation {id}")))?;
        let with_messages = r.view() != v1::ConversationView::Basic;
        Ok(Response::new(convert::conversation(
            &conversation,
            with_messages,
        )))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let r = request.into_inner();
        self.check_vendors(&r.vendors)?;
        let kinds = r
            .kinds()
            .map(|k| {
                convert::from_kind(k)
                    .ok_or_else(|| invalid("kinds: EVENT_KIND_UNSPECIFIED is not a kind"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let conversations = r
            .conversation_ids
            .iter()
            .map(|id| {
                ConversationId::parse(id).map_err(|e| invalid(format!("conversation_ids: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = StreamFilter {
            connections: connection_ids(&r.connection_ids, "connection_ids")?,
            vendors: r.vendors.clone(),
            kinds,
            conversations,
        };
        let head = self.store.head();
        let mut cursor = match &r.start {
            None | Some(v1::stream_events_request::Start::FromBeginning(_)) => Sequence::ZERO,
            Some(v1::stream_events_request::Start::AfterSequence(after)) => {
                if *after > head.0 {
                    return Err(Status::out_of_range(format!(
                        "after_sequence {after} is beyond the head of the log ({head}); \
                         resume from a sequence you received"
                    )));
                }
                Sequence(*after)
            }
            Some(v1::stream_events_request::Start::AtHead(_)) => head,
            Some(v1::stream_events_request::Start::AtTime(t)) => {
                let at = convert::from_timestamp(t).ok_or_else(|| {
                    invalid("at_time is out of range; use a time between 1970 and 9999")
                })?;
                cursor_at_time(&self.store, at).map_err(store_status)?
            }
        };
        let store = self.store.clone();
        let mut head_rx = self.store.subscribe_head();
        let mut shutdown = self.shutdown.clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        info!(after = %cursor, "subscriber started");
        tokio::spawn(async move {
            loop {
                let batch = match store.read_events(cursor, STREAM_READ_BATCH) {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = tx.send(Err(store_status(error))).await;
                        return;
                    }
                };
                if batch.is_empty() {
                    // Caught up: wait until the head moves past the cursor, or shutdown.
                    let wake = tokio::select! {
                        moved = head_rx.wait_for(|h| *h > cursor) => {
                            if moved.is_ok() { Wake::HeadMoved } else { Wake::StoreClosed }
                        }
                        _ = shutdown.wait_for(|s| *s) => Wake::ShuttingDown,
                        () = tx.closed() => Wake::SubscriberGone,
                    };
                    let reason = match wake {
                        Wake::HeadMoved => continue,
                        Wake::SubscriberGone => return,
                        Wake::StoreClosed => "the store closed; reconnect with after_sequence",
                        Wake::ShuttingDown => {
                            "the server is shutting down; reconnect with after_sequence"
                        }
                    };
                    let _ = tx.send(Err(Status::unavailable(reason))).await;
                    return;
                }
                for event in batch {
                    cursor = event.sequence;
                    if filter.matches(&event) && tx.send(Ok(convert::event(&event))).await.is_err()
                    {
                        debug!(at = %cursor, "subscriber went away");
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn manage_tickets(
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
                let ticket = self.load_ticket(&id)?;
                Reply::Ticket(convert::ticket(&id.connection, &ticket))
            }
            Operation::Update(update) => {
                let (connection, ticket) = self.update_ticket(update).await?;
                Reply::Ticket(convert::ticket(&connection, &ticket))
            }
            Operation::List(list) => {
                let statuses = list
                    .statuses()
                    .map(|s| {
                        convert::from_ticket_status(s).ok_or_else(|| {
                            invalid("statuses: TICKET_STATUS_UNSPECIFIED is not a status")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let query = TicketListQuery {
                    connections: connection_ids(&list.connection_ids, "connection_ids")?,
                    statuses,
                    page_size: page_size(list.page_size)?,
                    page_token: Some(list.page_token.clone()).filter(|t| !t.is_empty()),
                };
                let page = self.store.list_tickets(&query).map_err(store_status)?;
                Reply::List(v1::TicketList {
                    tickets: page
                        .tickets
                        .iter()
                        .map(|(connection, ticket)| convert::ticket(connection, ticket))
                        .collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            }
        };
        Ok(Response::new(v1::ManageTicketsResponse {
            result: Some(reply),
        }))
    }

    async fn list_connections(
        &self,
        _request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        let mut connections = Vec::new();
        for connection in self.connections.iter() {
            let state = self
                .store
                .sync_state(&connection.config.id)
                .map_err(store_status)?
                .unwrap_or_default();
            connections.push(v1::Connection {
                id: connection.config.id.to_string(),
                vendor: connection.plugin.vendor.to_owned(),
                webhook_path: format!("/webhooks/{}", connection.config.id),
                verification: connection.plugin.verification.to_owned(),
                verification_enabled: connection.config.verify,
                vendor_tickets: connection
                    .connector
                    .as_ref()
                    .is_some_and(|c| c.tickets().is_some()),
                sync: Some(v1::SyncState {
                    supported: connection.connector.is_some(),
                    cursor: state.cursor,
                    last_success: state.last_success.map(convert::timestamp),
                    last_error: state.last_error,
                    records_pulled: state.records_pulled,
                }),
            });
        }
        Ok(Response::new(v1::ListConnectionsResponse { connections }))
    }
}

impl SwitchboardService {
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
        let receipt = self
            .store
            .append(AppendRequest {
                connection: connection.clone(),
                vendor: vendor.to_owned(),
                request_id: None,
                received_at: Timestamp::now(),
                raw: None,
                events: vec![IncomingEvent {
                    dedup_key,
                    kind,
                    vendor_event: format!("switchboard.{}", kind.as_str()),
                    occurred_at: ticket.updated_at,
                    payload: EventPayload::Ticket(ticket),
                }],
                sync: None,
            })
            .await
            .map_err(store_status)?;
        Ok(receipt.appended.len())
    }

    async fn create_ticket(
        &self,
        create: v1::CreateTicket,
    ) -> Result<(ConnectionId, Ticket), Status> {
        let connection = self.connections.get(&create.connection_id).ok_or_else(|| {
            Status::not_found(format!(
                "no connection {:?}; ListConnections shows the configured ones",
                create.connection_id
            ))
        })?;
        if create.message.trim().is_empty() {
            return Err(invalid("create.message is required"));
        }
        if !create.requester_email.contains('@') {
            return Err(invalid(
                "create.requester_email is required and must be an e-mail address",
            ));
        }
        let id = connection.config.id.clone();
        let (external_id, dedup_key) = match create.idempotency_key.as_deref() {
            Some(key) if key.is_empty() || key.len() > 200 => {
                return Err(invalid(
                    "create.idempotency_key must be 1 to 200 characters",
                ));
            }
            Some(key) => (
                format!(
                    "hub-{}",
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes())
                ),
                format!("ticket_create:{key}"),
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

/// Maps an [`ErrorCode`] to a gRPC status code; exposed for tests.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    tonic::Code::from(code.grpc_code())
}
