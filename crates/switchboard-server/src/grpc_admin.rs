//! `SyncConnection` and `ManageAgents`: the RPCs that act on a vendor's API through a
//! connection's connector. A child module of `grpc`, so it shares the service's state.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchboard_core::{
    Agent, Error, ErrorCode, EventKind, EventPayload, IncomingEvent, NewAgent, Timestamp,
};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{SwitchboardService, invalid, status, store_status, timestamp};
use crate::connections::Connection;
use crate::sync::{SyncOptions, SyncProgress};

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

/// Maps a connector error to a status; a sync already running is ABORTED.
fn sync_status(error: &Error) -> Status {
    match error.code {
        ErrorCode::AlreadyExists => Status::aborted(error.message.clone()),
        _ => status(error),
    }
}

impl SwitchboardService {
    pub(super) fn connection(&self, id: &str, field: &str) -> Result<Arc<Connection>, Status> {
        if id.is_empty() {
            return Err(invalid(format!(
                "{field} is required; ListConnections shows the configured ones"
            )));
        }
        self.connections.get(id).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "no connection {id:?}; ListConnections shows the configured ones"
            ))
        })
    }

    pub(super) async fn sync_connection_rpc(
        &self,
        request: Request<v1::SyncConnectionRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        let request = request.into_inner();
        let connection = self.connection(&request.connection_id, "connection_id")?;
        let since = request
            .since
            .as_ref()
            .map(|t| timestamp(t, "since"))
            .transpose()?;
        if since.is_some_and(|s| s > Timestamp::now()) {
            return Err(invalid("since is in the future; give a time in the past"));
        }
        let options = SyncOptions {
            since,
            from_scratch: request.from_scratch,
            max_pages: request.max_pages,
        };
        let slot = self.sync.claim(&connection).map_err(|e| sync_status(&e))?;
        let (tx, rx) = mpsc::channel::<Result<v1::SyncProgress, Status>>(16);
        let store = self.store.clone();
        let runner = self.sync.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut last_sent = None;
            let page_tx = tx.clone();
            let result = runner
                .run(&store, &connection, &slot, options, |progress| {
                    // Progress is advisory: a slow client misses some, never the last one.
                    if page_tx.try_send(Ok(progress_message(progress))).is_ok() {
                        last_sent = Some(progress.pages);
                    }
                    !page_tx.is_closed() && !*shutdown.borrow()
                })
                .await;
            drop(slot);
            let last = match result {
                Ok(progress) if last_sent == Some(progress.pages) && progress.pages > 0 => None,
                Ok(progress) => Some(Ok(progress_message(&progress))),
                Err(error) => Some(Err(sync_status(&error))),
            };
            if let Some(last) = last {
                let _ = tx.send(last).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
        let reply = match operation {
            Operation::List(list) => {
                let connection = self.connection(&list.connection_id, "list.connection_id")?;
                let agents = agent_api(&connection)?
                    .list()
                    .await
                    .map_err(|e| status(&e))?;
                for agent in &agents {
                    self.mirror_agent(&connection, agent, false).await?;
                }
                Reply::List(v1::AgentList {
                    agents: agents.iter().map(convert::agent).collect(),
                })
            }
            Operation::Create(create) => {
                let connection = self.connection(&create.connection_id, "create.connection_id")?;
                let new = new_agent(create)?;
                let agent = agent_api(&connection)?
                    .create(&new)
                    .await
                    .map_err(|e| status(&e))?;
                self.mirror_agent(&connection, &agent, false).await?;
                info!(connection = %connection.config.id, agent = %agent.login, "agent created at the vendor");
                Reply::Agent(convert::agent(&agent))
            }
            Operation::Delete(delete) => {
                let connection = self.connection(&delete.connection_id, "delete.connection_id")?;
                if delete.login.trim().is_empty() {
                    return Err(invalid(
                        "delete.login is required: the agent's login e-mail",
                    ));
                }
                agent_api(&connection)?
                    .delete(&delete.login)
                    .await
                    .map_err(|e| status(&e))?;
                let gone = Agent {
                    login: delete.login.clone(),
                    ..Agent::default()
                };
                self.mirror_agent(&connection, &gone, true).await?;
                info!(connection = %connection.config.id, agent = %delete.login, "agent deleted at the vendor");
                Reply::Deleted(delete.login)
            }
        };
        Ok(Response::new(v1::ManageAgentsResponse {
            result: Some(reply),
        }))
    }

    /// Appends an agent event when the vendor's view differs from the store's, so the store's
    /// agents and the event stream follow the vendor; listing unchanged agents appends nothing.
    async fn mirror_agent(
        &self,
        connection: &Connection,
        agent: &Agent,
        deleted: bool,
    ) -> Result<(), Status> {
        let stored = self
            .store
            .list_agents(&connection.config.id)
            .map_err(store_status)?
            .into_iter()
            .find(|a| a.login == agent.login);
        let unchanged = if deleted {
            stored.is_none()
        } else {
            stored.as_ref() == Some(agent)
        };
        if unchanged {
            return Ok(());
        }
        let dedup_key = format!(
            "{}:{}:{}",
            if deleted { "agent_deleted" } else { "agent" },
            agent.login,
            uuid::Uuid::now_v7()
        );
        self.append_event(
            &connection.config.id,
            connection.plugin.vendor,
            IncomingEvent {
                dedup_key,
                kind: EventKind::AgentUpdated,
                vendor_event: if deleted {
                    "switchboard.agent_deleted".to_owned()
                } else {
                    "switchboard.agent_mirrored".to_owned()
                },
                occurred_at: Timestamp::now(),
                payload: EventPayload::Agent {
                    agent: agent.clone(),
                    deleted,
                },
            },
        )
        .await?;
        Ok(())
    }
}

fn agent_api(connection: &Connection) -> Result<&dyn switchboard_core::AgentApi, Status> {
    let no_api = || {
        Status::failed_precondition(format!(
            "connection {} ({}) cannot manage agents: {}",
            connection.config.id,
            connection.plugin.vendor,
            crate::sync::unsupported_reason(connection)
                .unwrap_or_else(|| "the vendor has no agent API".to_owned())
        ))
    };
    connection
        .connector
        .as_deref()
        .ok_or_else(no_api)?
        .agents()
        .ok_or_else(no_api)
}

/// Validates what the API can check without the vendor, then builds the connector's request.
fn new_agent(create: v1::CreateAgent) -> Result<NewAgent, Status> {
    let login = create.login.trim().to_owned();
    if !looks_like_email(&login) {
        return Err(invalid(
            "create.login must be the agent's e-mail address, e.g. jane@example.com",
        ));
    }
    let name = create.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("create.name is required: the agent's display name"));
    }
    if let Some(password) = &create.password
        && password.chars().count() < 5
    {
        return Err(invalid("create.password must be at least 5 characters"));
    }
    // Which permissions (roles) exist is the vendor's business: its connector checks them
    // (LiveChat: viceowner, administrator, normal).
    if let Some(status) = &create.login_status
        && !["accepting chats", "not accepting chats"].contains(&status.as_str())
    {
        return Err(invalid(
            "create.login_status must be \"accepting chats\" or \"not accepting chats\"",
        ));
    }
    if create.max_chats_count.is_some_and(|n| n < 0) {
        return Err(invalid("create.max_chats_count must be 0 or more"));
    }
    Ok(NewAgent {
        login,
        name,
        login_status: create.login_status,
        job_title: Some(
            create
                .job_title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| "Support Agent".to_owned()),
        ),
        permission: create.permission,
        password: create.password,
        max_chats_count: create.max_chats_count,
    })
}

fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> v1::CreateAgent {
        v1::CreateAgent {
            connection_id: "livechat".to_owned(),
            login: "jane@example.com".to_owned(),
            name: "Jane".to_owned(),
            password: Some("secret".to_owned()),
            ..v1::CreateAgent::default()
        }
    }

    #[test]
    fn permissions_are_left_to_the_vendor() {
        let mut request = create();
        request.permission = Some("viceowner".to_owned());
        let agent = new_agent(request).expect("the connector checks roles");
        assert_eq!(agent.permission.as_deref(), Some("viceowner"));
    }

    #[test]
    fn job_title_defaults_to_support_agent() {
        let agent = new_agent(create()).expect("valid");
        assert_eq!(agent.job_title.as_deref(), Some("Support Agent"));
        assert_eq!(agent.login, "jane@example.com");
    }

    #[test]
    fn invalid_agents_are_refused_with_the_field_named() {
        type Case = (fn(&mut v1::CreateAgent), &'static str);
        let cases: Vec<Case> = vec![
            (|c| c.login = "jane".to_owned(), "create.login"),
            (|c| c.login = "a b@example.com".to_owned(), "create.login"),
            (|c| c.name = " ".to_owned(), "create.name"),
            (|c| c.password = Some("1234".to_owned()), "create.password"),
            (
                |c| c.login_status = Some("away".to_owned()),
                "create.login_status",
            ),
            (|c| c.max_chats_count = Some(-1), "create.max_chats_count"),
        ];
        for (change, field) in cases {
            let mut request = create();
            change(&mut request);
            let error = new_agent(request).expect_err(field);
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains(field), "{}", error.message());
        }
    }
}
