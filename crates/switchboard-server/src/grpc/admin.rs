//! `SyncConnection` and `ManageAgents`: the RPCs that act on a vendor's API through a
//! connection's connector, over [`crate::app::sync`] and [`crate::app::agents`].

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{busy_status, invalid, status, timestamp};
use crate::app::agents::CreateAgent;
use crate::app::sync::{SyncOptions, SyncProgress};

/// The stream `SyncConnection` answers with.
pub(super) type SyncStream =
    Pin<Box<dyn Stream<Item = Result<v1::SyncProgress, Status>> + Send + 'static>>;

fn progress_message(p: &SyncProgress) -> v1::SyncProgress {
    v1::SyncProgress {
        connection_id: p.connection.to_string(),
        pages: p.pages,
        records: p.records,
        appended: p.appended,
        cursor: p.cursor.clone(),
        done: p.done,
        started_at: Some(convert::timestamp(p.started_at)),
        records_per_second: p.records_per_second,
    }
}

impl SwitchboardService {
    pub(super) async fn sync_connection_rpc(
        &self,
        request: Request<v1::SyncConnectionRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        let request = request.into_inner();
        let since = request
            .since
            .as_ref()
            .map(|t| timestamp(t, "since"))
            .transpose()?;
        let options = SyncOptions {
            since,
            from_scratch: request.from_scratch,
            max_pages: request.max_pages,
        };
        // ALREADY_EXISTS: a sync of the connection is running (here or on another replica).
        let reports = self
            .app
            .sync
            .start(&request.connection_id, options)
            .await
            .map_err(|e| busy_status(&e))?;
        let progress = ReceiverStream::new(reports).map(|report| match report {
            Ok(progress) => Ok(progress_message(&progress)),
            Err(error) => Err(busy_status(&error)),
        });
        Ok(Response::new(Box::pin(progress)))
    }

    pub(super) async fn manage_agents_rpc(
        &self,
        request: Request<v1::ManageAgentsRequest>,
    ) -> Result<Response<v1::ManageAgentsResponse>, Status> {
        use v1::manage_agents_request::Operation;
        use v1::manage_agents_response::Result as Reply;
        let operation = request
            .into_inner()
            .operation
            .ok_or_else(|| invalid("operation is required: one of list, create, delete"))?;
        let agents = &self.app.agents;
        let reply = match operation {
            Operation::List(list) => {
                let listed = agents
                    .list(&list.connection_id)
                    .await
                    .map_err(|e| status(&e))?;
                Reply::List(v1::AgentList {
                    agents: listed.iter().map(convert::agent).collect(),
                })
            }
            Operation::Create(create) => {
                let request = CreateAgent {
                    login: create.login,
                    name: create.name,
                    password: create.password,
                    login_status: create.login_status,
                    job_title: create.job_title,
                    permission: create.permission,
                    max_chats_count: create.max_chats_count,
                };
                let agent = agents
                    .create(&create.connection_id, request)
                    .await
                    .map_err(|e| status(&e))?;
                Reply::Agent(convert::agent(&agent))
            }
            Operation::Delete(delete) => {
                agents
                    .delete(&delete.connection_id, &delete.login)
                    .await
                    .map_err(|e| status(&e))?;
                Reply::Deleted(delete.login)
            }
        };
        Ok(Response::new(v1::ManageAgentsResponse {
            result: Some(reply),
        }))
    }
}
