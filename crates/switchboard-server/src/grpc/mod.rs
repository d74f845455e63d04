//! The gRPC front door: the `switchboard.v1.Switchboard` service, a thin adapter over the
//! application services ([`crate::app`]). Each RPC decodes its request into plain values
//! (refusing malformed fields with INVALID_ARGUMENT), calls one service, and encodes the answer
//! or maps the service's [`switchboard_core::Error`] to a status.
//!
//! | module | RPCs |
//! |---|---|
//! | `conversations` | ListConversations, GetConversation, ListConnections |
//! | `stream` | StreamEvents |
//! | `tickets` | ManageTickets |
//! | `admin` | SyncConnection, ManageAgents |
//! | `quarantine` | ListQuarantine, RetryQuarantine |
//! | `find` | ListContacts, GetContact, MergeContacts, SplitContact, EraseContact |
//! | `fields` | request fields into values, errors into statuses |

use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_server::Switchboard;
use tonic::{Request, Response, Status};

use crate::app::App;

mod admin;
mod conversations;
mod fields;
mod find;
mod quarantine;
mod stream;
mod tickets;

pub use crate::app::subscribe::{DEFAULT_MAX_SUBSCRIBERS, StreamOptions};
pub use fields::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, grpc_code, status};

/// The service.
#[derive(Debug, Clone)]
pub struct SwitchboardService {
    app: App,
}

impl SwitchboardService {
    /// The service over the application's services.
    pub fn new(app: App) -> Self {
        SwitchboardService { app }
    }

    /// The application services it adapts.
    pub fn app(&self) -> &App {
        &self.app
    }
}

#[tonic::async_trait]
impl Switchboard for SwitchboardService {
    async fn list_conversations(
        &self,
        request: Request<v1::ListConversationsRequest>,
    ) -> Result<Response<v1::ListConversationsResponse>, Status> {
        self.list_conversations_rpc(request).await
    }

    async fn get_conversation(
        &self,
        request: Request<v1::GetConversationRequest>,
    ) -> Result<Response<v1::Conversation>, Status> {
        self.get_conversation_rpc(request).await
    }

    type StreamEventsStream = stream::EventStream;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        self.stream_events_rpc(request).await
    }

    async fn manage_tickets(
        &self,
        request: Request<v1::ManageTicketsRequest>,
    ) -> Result<Response<v1::ManageTicketsResponse>, Status> {
        self.manage_tickets_rpc(request).await
    }

    type SyncConnectionStream = admin::SyncStream;

    async fn sync_connection(
        &self,
        request: Request<v1::SyncConnectionRequest>,
    ) -> Result<Response<Self::SyncConnectionStream>, Status> {
        self.sync_connection_rpc(request).await
    }

    async fn manage_agents(
        &self,
        request: Request<v1::ManageAgentsRequest>,
    ) -> Result<Response<v1::ManageAgentsResponse>, Status> {
        self.manage_agents_rpc(request).await
    }

    async fn list_quarantine(
        &self,
        request: Request<v1::ListQuarantineRequest>,
    ) -> Result<Response<v1::ListQuarantineResponse>, Status> {
        self.list_quarantine_rpc(request).await
    }

    async fn retry_quarantine(
        &self,
        request: Request<v1::RetryQuarantineRequest>,
    ) -> Result<Response<v1::RetryQuarantineResponse>, Status> {
        self.retry_quarantine_rpc(request).await
    }

    async fn list_connections(
        &self,
        request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        self.list_connections_rpc(request).await
    }

    async fn list_contacts(
        &self,
        request: Request<v1::ListContactsRequest>,
    ) -> Result<Response<v1::ListContactsResponse>, Status> {
        self.list_contacts_rpc(request).await
    }

    async fn get_contact(
        &self,
        request: Request<v1::GetContactRequest>,
    ) -> Result<Response<v1::ContactView>, Status> {
        self.get_contact_rpc(request).await
    }

    async fn merge_contacts(
        &self,
        request: Request<v1::MergeContactsRequest>,
    ) -> Result<Response<v1::ContactView>, Status> {
        self.merge_contacts_rpc(request).await
    }

    async fn split_contact(
        &self,
        request: Request<v1::SplitContactRequest>,
    ) -> Result<Response<v1::SplitContactResponse>, Status> {
        self.split_contact_rpc(request).await
    }

    async fn erase_contact(
        &self,
        request: Request<v1::EraseContactRequest>,
    ) -> Result<Response<v1::EraseContactResponse>, Status> {
        self.erase_contact_rpc(request).await
    }
}
