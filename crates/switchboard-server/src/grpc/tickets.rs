//! `ManageTickets`: create, get, update and list, decoded into [`crate::app::tickets`]'s
//! requests.

use switchboard_core::{Participant, TicketChange, TicketId};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{connection_ids, invalid, known_enums, page_size, status, time_range};
use crate::app::tickets::{CreateRefused, CreateTicket, ListTickets};

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
        let tickets = &self.app.tickets;
        let reply = match operation {
            Operation::Create(create) => {
                let (connection, ticket) = tickets.create(create_request(create)).await.map_err(
                    |refused| match refused {
                        // The first create is still at the vendor: retry.
                        in_progress @ CreateRefused::InProgress { .. } => {
                            Status::aborted(in_progress.to_string())
                        }
                        CreateRefused::Error(error) => status(&error),
                    },
                )?;
                Reply::Ticket(convert::ticket(&connection, &ticket))
            }
            Operation::Get(get) => {
                let id = TicketId::parse(&get.id).map_err(|e| invalid(e.to_string()))?;
                let ticket = tickets.get(&id).await.map_err(|e| status(&e))?;
                Reply::Ticket(convert::ticket(&id.connection, &ticket))
            }
            Operation::Update(update) => {
                let id = TicketId::parse(&update.id).map_err(|e| invalid(e.to_string()))?;
                let ticket = tickets
                    .update(&id, change(update))
                    .await
                    .map_err(|e| status(&e))?;
                Reply::Ticket(convert::ticket(&id.connection, &ticket))
            }
            Operation::List(list) => {
                let statuses = known_enums(
                    &list.statuses,
                    "statuses",
                    convert::from_ticket_status,
                    "TICKET_STATUS_UNSPECIFIED is not a status",
                )?;
                let query = ListTickets {
                    connections: connection_ids(&list.connection_ids, "connection_ids")?,
                    statuses,
                    created: list
                        .created
                        .as_ref()
                        .map(|range| time_range(Some(range), "list.created"))
                        .transpose()?,
                    page_size: page_size(list.page_size)?,
                    page_token: Some(list.page_token).filter(|t| !t.is_empty()),
                };
                let page = tickets.list(query).await.map_err(|e| status(&e))?;
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
}

fn create_request(create: v1::CreateTicket) -> CreateTicket {
    CreateTicket {
        connection_id: create.connection_id,
        message: create.message,
        requester_email: create.requester_email,
        requester_name: create.requester_name,
        subject: create.subject,
        assignee_id: create.assignee_id,
        source_type: create.source_type,
        source_url: create.source_url,
        attributes: create.attributes.into_iter().collect(),
        idempotency_key: create.idempotency_key,
    }
}

fn change(update: v1::UpdateTicket) -> TicketChange {
    let status = match update.status() {
        v1::TicketStatus::Unspecified => None,
        other => convert::from_ticket_status(other),
    };
    let requester =
        (update.requester_email.is_some() || update.requester_name.is_some()).then(|| {
            Participant {
                id: update.requester_email.clone().unwrap_or_default(),
                name: update.requester_name.clone(),
                email: update.requester_email.clone(),
                ..Participant::default()
            }
        });
    TicketChange {
        message: update.message,
        subject: update.subject,
        status,
        assignee_id: update.assignee_id,
        requester,
        tags: update.set_tags.then_some(update.tags),
    }
}
