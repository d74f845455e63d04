//! Agents: listed, created and deleted at the vendor through a connection's
//! [`AgentApi`], and mirrored into the store as agent events, so
//! the store's agents and the event stream follow the vendor. Mirroring appends only what
//! changed: listing unchanged agents appends nothing.

use std::sync::Arc;

use switchboard_core::{
    Agent, AgentApi, Error, EventKind, EventPayload, IncomingEvent, NewAgent, Timestamp,
};
use switchboard_store::Storage;
use tracing::info;

use crate::connections::{Connection, Connections};

/// An agent to create, as a client asked for it (checked by [`Agents::create`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateAgent {
    /// The login: the agent's e-mail address.
    pub login: String,
    /// The display name.
    pub name: String,
    /// At least 5 characters, if given.
    pub password: Option<String>,
    /// `accepting chats` or `not accepting chats`.
    pub login_status: Option<String>,
    /// Defaults to `Support Agent`.
    pub job_title: Option<String>,
    /// The vendor's role name; its connector checks it.
    pub permission: Option<String>,
    /// 0 or more.
    pub max_chats_count: Option<i64>,
}

/// The agents service.
#[derive(Clone)]
pub struct Agents {
    storage: Arc<dyn Storage>,
    connections: Connections,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").finish_non_exhaustive()
    }
}

impl Agents {
    /// The service over `storage` and `connections`.
    pub fn new(storage: Arc<dyn Storage>, connections: Connections) -> Self {
        Agents {
            storage,
            connections,
        }
    }

    /// The vendor's agents of `connection_id`, mirrored.
    pub async fn list(&self, connection_id: &str) -> Result<Vec<Agent>, Error> {
        let connection = super::connection(&self.connections, connection_id, "list.connection_id")?;
        let agents = agent_api(&connection)?.list().await?;
        for agent in &agents {
            self.mirror(&connection, agent, false).await?;
        }
        Ok(agents)
    }

    /// Creates an agent at the vendor of `connection_id` and mirrors it.
    pub async fn create(&self, connection_id: &str, create: CreateAgent) -> Result<Agent, Error> {
        let connection =
            super::connection(&self.connections, connection_id, "create.connection_id")?;
        let new = new_agent(create)?;
        let agent = agent_api(&connection)?.create(&new).await?;
        self.mirror(&connection, &agent, false).await?;
        info!(connection = %connection.config.id, agent = %agent.login, "agent created at the vendor");
        Ok(agent)
    }

    /// Deletes the agent `login` at the vendor of `connection_id` and mirrors its deletion.
    pub async fn delete(&self, connection_id: &str, login: &str) -> Result<(), Error> {
        let connection =
            super::connection(&self.connections, connection_id, "delete.connection_id")?;
        if login.trim().is_empty() {
            return Err(Error::invalid(
                "delete.login is required: the agent's login e-mail",
            ));
        }
        agent_api(&connection)?.delete(login).await?;
        let gone = Agent {
            login: login.to_owned(),
            ..Agent::default()
        };
        self.mirror(&connection, &gone, true).await?;
        info!(connection = %connection.config.id, agent = %login, "agent deleted at the vendor");
        Ok(())
    }

    /// Appends an agent event when the vendor's view differs from the store's.
    async fn mirror(
        &self,
        connection: &Connection,
        agent: &Agent,
        deleted: bool,
    ) -> Result<(), Error> {
        let stored = self
            .storage
            .list_agents(&connection.config.id)
            .await?
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
        super::append_event(
            self.storage.as_ref(),
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

fn agent_api(connection: &Connection) -> Result<&dyn AgentApi, Error> {
    let no_api = || {
        Error::failed_precondition(format!(
            "connection {} ({}) cannot manage agents: {}",
            connection.config.id,
            connection.plugin.vendor,
            super::sync::unsupported_reason(connection)
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

/// Checks what can be checked without the vendor, then builds the connector's request.
fn new_agent(create: CreateAgent) -> Result<NewAgent, Error> {
    let login = create.login.trim().to_owned();
    if !looks_like_email(&login) {
        return Err(Error::invalid(
            "create.login must be the agent's e-mail address, e.g. jane@example.com",
        ));
    }
    let name = create.name.trim().to_owned();
    if name.is_empty() {
        return Err(Error::invalid(
            "create.name is required: the agent's display name",
        ));
    }
    if let Some(password) = &create.password
        && password.chars().count() < 5
    {
        return Err(Error::invalid(
            "create.password must be at least 5 characters",
        ));
    }
    // Which permissions (roles) exist is the vendor's business: its connector checks them
    // (LiveChat: viceowner, administrator, normal).
    if let Some(status) = &create.login_status
        && !["accepting chats", "not accepting chats"].contains(&status.as_str())
    {
        return Err(Error::invalid(
            "create.login_status must be \"accepting chats\" or \"not accepting chats\"",
        ));
    }
    if create.max_chats_count.is_some_and(|n| n < 0) {
        return Err(Error::invalid("create.max_chats_count must be 0 or more"));
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
    use switchboard_core::ErrorCode;

    use super::*;

    fn create() -> CreateAgent {
        CreateAgent {
            login: "jane@example.com".to_owned(),
            name: "Jane".to_owned(),
            password: Some("secret".to_owned()),
            ..CreateAgent::default()
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
        type Case = (fn(&mut CreateAgent), &'static str);
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
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains(field), "{}", error.message);
        }
    }
}
