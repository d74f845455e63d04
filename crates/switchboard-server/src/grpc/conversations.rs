//! `ListConversations`, `GetConversation` and `ListConnections`: reads of the store's
//! projections and of the configured connections.

use switchboard_core::ConversationId;
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_store::{ConversationQuery, FindFilters};
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{connection_ids, invalid, known_enums, page_size, status, texts, time_range};

impl SwitchboardService {
    pub(super) async fn list_conversations_rpc(
        &self,
        request: Request<v1::ListConversationsRequest>,
    ) -> Result<Response<v1::ListConversationsResponse>, Status> {
        let r = request.into_inner();
        self.app.check_vendors(&r.vendors).map_err(|e| status(&e))?;
        let statuses = known_enums(
            &r.statuses,
            "statuses",
            convert::from_status,
            "CONVERSATION_STATUS_UNSPECIFIED is not a status",
        )?;
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
            find: find_filters(&r)?,
            page_size: page_size(r.page_size)?,
            page_token: Some(r.page_token.clone()).filter(|t| !t.is_empty()),
        };
        let with_messages = r.view() == v1::ConversationView::Full;
        let found = self
            .app
            .find
            .list_conversations(&query)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ListConversationsResponse {
            conversations: found
                .page
                .conversations
                .iter()
                .map(|c| convert::conversation(c, with_messages))
                .collect(),
            next_page_token: found.page.next_page_token.unwrap_or_default(),
            indexed_through: found.indexed_through.map_or(0, |s| s.0),
        }))
    }

    pub(super) async fn get_conversation_rpc(
        &self,
        request: Request<v1::GetConversationRequest>,
    ) -> Result<Response<v1::Conversation>, Status> {
        let r = request.into_inner();
        let id = ConversationId::parse(&r.id).map_err(|e| invalid(e.to_string()))?;
        let conversation = self
            .app
            .storage()
            .get_conversation(&id)
            .await
            .map_err(|e| status(&e.into()))?
            .ok_or_else(|| Status::not_found(format!("no conversation {id}")))?;
        let with_messages = r.view() != v1::ConversationView::Basic;
        Ok(Response::new(convert::conversation(
            &conversation,
            with_messages,
        )))
    }

    pub(super) async fn list_connections_rpc(
        &self,
        _request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        let mut connections = Vec::new();
        for connection in self.app.connections().iter() {
            let state = self
                .app
                .storage()
                .sync_state(&connection.config.id)
                .await
                .map_err(|e| status(&e.into()))?
                .unwrap_or_default();
            connections.push(v1::Connection {
                id: connection.config.id.to_string(),
                vendor: connection.plugin.vendor.to_owned(),
                webhook_path: format!("/webhooks/{}", connection.config.id),
                verification: connection.plugin.verification.to_owned(),
                verification_enabled: connection.config.verify,
                verification_warning: connection.verification_warning(),
                vendor_tickets: connection
                    .connector
                    .as_ref()
                    .is_some_and(|c| c.tickets().is_some()),
                sync: Some(v1::SyncState {
                    supported: connection.connector.is_some(),
                    unsupported_reason: crate::app::sync::unsupported_reason(connection),
                    interval_seconds: connection.sync_interval.map_or(0, |d| d.as_secs()),
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

/// The request's finder filters. Empty strings in a list are refused (they would match
/// nothing, or everything, depending on the index); values are passed on as given, the finder
/// normalizes them.
fn find_filters(r: &v1::ListConversationsRequest) -> Result<FindFilters, Status> {
    Ok(FindFilters {
        emails: texts(&r.emails, "emails")?,
        phones: texts(&r.phones, "phones")?,
        visitor_ids: texts(&r.visitor_ids, "visitor_ids")?,
        agent_ids: texts(&r.agent_ids, "agent_ids")?,
        tags: texts(&r.tags, "tags")?,
        text: Some(r.text.trim().to_owned()).filter(|t| !t.is_empty()),
        contacts: texts(&r.contact_ids, "contact_ids")?,
    })
}
