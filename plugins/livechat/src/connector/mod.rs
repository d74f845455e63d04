//! The LiveChat connector: pulls archived chats (Agent Chat API `list_archives`), manages
//! agents (Configuration API `list_agents`, `create_agent`, `delete_agent`) and tickets (the
//! REST API v2, deprecated by LiveChat and without a successor), all through one
//! [`VendorClient`] rate limiter per connection.
//!
//! Sources (livechat/livechat-public-docs at 628955e80245804c2cf8cccb6f15898ba49002f9):
//! `src/pages/authorization/personal-access-tokens/index.mdx` (Basic auth, Account ID and
//! personal access token), `src/pages/messaging/agent-chat-api/index.mdx` (`list_archives`,
//! pagination), `src/pages/management/configuration-api/index.mdx` (agents, v3.6),
//! `src/pages/management/configuration-api/v2.0/index.mdx` (tickets, `X-API-Version: 2`,
//! `<email>:<PAT>`).

mod archive;
mod rest;
mod validate;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::{
    Agent, AgentApi, ConnectionConfig, Connector, Error, ErrorCode, NewAgent, NewTicket, RateLimit,
    Secret, SyncPage, Ticket, TicketApi, TicketChange, TicketPage, TicketQuery, Timestamp,
};
use switchboard_vendor_client::{ClientSettings, Method, VendorClient, VendorRequest};

use self::archive::{Cursor, ThreadRef};
use self::rest::{ConfigAgent, RestTicket, RestTicketList, ticket_answer};

/// The REST API v2's base URL (setting `base_url`): tickets.
pub const DEFAULT_BASE_URL: &str = "https://api.livechatinc.com";
/// The Agent Chat API's base URL (setting `agent_api_base_url`).
pub const DEFAULT_AGENT_API_BASE_URL: &str = "https://api.livechatinc.com";
/// The Configuration API's base URL (setting `configuration_api_base_url`).
pub const DEFAULT_CONFIGURATION_API_BASE_URL: &str = "https://api.livechatinc.com";
/// The API version used by default (setting `api_version`): v3.6, LiveChat's stable version;
/// v3.5 is the legacy one.
pub const DEFAULT_API_VERSION: &str = "3.6";
/// The path of `list_archives` in the default version (`/v{api_version}/agent/action/...`).
pub const LIST_ARCHIVES_PATH: &str = "/v3.6/agent/action/list_archives";
/// The default limit: seed 000 (a low-code platform's LiveChat connector) throttles at 100 calls
/// per 60 s per connection; LiveChat documents that limits exist ("Too many requests") but no
/// figure. 90 leaves a margin: the client's limiter grants the 101st call exactly one window
/// after the first, which a vendor counting closed windows would see as 101 in one window, and
/// network jitter moves calls by a little either way.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    calls: 90,
    per_seconds: 60,
};
/// Archived chats asked for per `list_archives` call (setting `archive_page_size`, 1..=100).
pub const DEFAULT_ARCHIVE_PAGE_SIZE: u32 = 100;
/// The most thread ids one `list_archives` call may filter by (`filters.thread_ids`).
const THREAD_IDS_PER_CALL: usize = 20;
/// The secret holding the personal access token (`api_key` is read too, the older name).
pub const PERSONAL_ACCESS_TOKEN: &str = "personal_access_token";

/// Builds the connector of a LiveChat connection. It needs the setting `account_id` and the
/// secret `personal_access_token` (or `api_key`); without them it refuses with an error naming
/// what is missing, and the server runs the connection's webhooks without sync, tickets or
/// agents.
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
    crate::keys::check(config)?;
    Ok(Box::new(LiveChatConnector::new(config)?))
}

/// The personal access token of a connection: `personal_access_token`, else `api_key`.
pub(crate) fn token_of(config: &ConnectionConfig) -> Option<&Secret> {
    config
        .secret(PERSONAL_ACCESS_TOKEN)
        .or_else(|| config.secret("api_key"))
}

/// The connection's `account_id` setting, trimmed, if set.
pub(crate) fn account_id_of(config: &ConnectionConfig) -> Option<&str> {
    config
        .setting("account_id")
        .map(str::trim)
        .filter(|a| !a.is_empty())
}

/// Why a connection's API credentials cannot work, if they cannot: a token without the
/// account id it belongs to (or the other way round), or an `api_version` LiveChat does not
/// have. `None` when the connection has no API credentials at all (webhooks only) or they are
/// complete. The webhook factory refuses such a connection at start-up, so a half-configured
/// sync never passes unnoticed.
pub(crate) fn incomplete_credentials(config: &ConnectionConfig) -> Option<Error> {
    let token = token_of(config).is_some();
    let account = account_id_of(config).is_some();
    let wants_api = token || account || config.setting("login").is_some();
    if !wants_api {
        return None;
    }
    LiveChatConnector::new(config).err()
}

/// The LiveChat connector of one connection.
#[derive(Debug, Clone)]
pub struct LiveChatConnector {
    connection: String,
    account_id: String,
    token: Secret,
    login: Option<String>,
    version: String,
    rest: VendorClient,
    agent_api: VendorClient,
    configuration_api: VendorClient,
    archive_page_size: u32,
}

fn base_url(config: &ConnectionConfig, key: &str, default: &str) -> String {
    config
        .setting(key)
        .unwrap_or(default)
        .trim()
        .trim_end_matches('/')
        .to_owned()
}

/// `3.6`, `v3.6` -> `3.6`: a v3 minor version from 3.5 on (3.5 is legacy, 3.6 stable, later
/// ones developer previews).
fn api_version(config: &ConnectionConfig) -> Result<String, Error> {
    let Some(text) = config.setting("api_version") else {
        return Ok(DEFAULT_API_VERSION.to_owned());
    };
    let version = text.trim().trim_start_matches(['v', 'V']);
    let minor = version
        .strip_prefix("3.")
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(minor) if minor >= 5 => Ok(format!("3.{minor}")),
        _ => Err(Error::invalid(format!(
            "connection {} (livechat): api_version {text:?} is not a LiveChat API version this \
             connector speaks: use 3.6 (the default, stable) or 3.5 (legacy)",
            config.id
        ))),
    }
}

impl LiveChatConnector {
    /// Reads the connection's settings and secrets and builds the three API clients, which
    /// share one rate limiter.
    pub fn new(config: &ConnectionConfig) -> Result<LiveChatConnector, Error> {
        let account_id = account_id_of(config);
        let token = token_of(config);
        let (Some(account_id), Some(token)) = (account_id, token) else {
            let missing = match (account_id.is_some(), token.is_some()) {
                (false, false) => {
                    "the setting `account_id` and the secret `personal_access_token` (or `api_key`)"
                }
                (false, true) => "the setting `account_id`",
                _ => "the secret `personal_access_token` (or `api_key`)",
            };
            return Err(Error::invalid(format!(
                "connection {id} (livechat) is missing {missing}: the connector (archive sync, \
                 agents, tickets) authenticates with HTTP Basic, the Account ID as the user and \
                 a personal access token as the password (Developer Console > Settings > \
                 Authorization > Personal Access Tokens shows both); set `account_id` = the \
                 Account ID and the token as the secret `personal_access_token` (or the env var \
                 SWITCHBOARD_SECRET__{ENV}__PERSONAL_ACCESS_TOKEN); webhooks work without them",
                id = config.id,
                ENV = config.id.as_str().to_ascii_uppercase().replace('-', "_"),
            )));
        };
        if account_id.contains('@') {
            return Err(Error::invalid(format!(
                "connection {} (livechat): account_id {account_id:?} is an e-mail: the Account \
                 ID is the UUID shown beside the personal access token in the Developer Console \
                 (put the e-mail in `login`, used only for the deprecated ticket API)",
                config.id
            )));
        }
        let version = api_version(config)?;
        let rest_settings =
            ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)?;
        let rest = VendorClient::new(config, rest_settings.clone())?;
        let mut agent_settings = rest_settings.clone();
        agent_settings.base_url =
            base_url(config, "agent_api_base_url", DEFAULT_AGENT_API_BASE_URL);
        let agent_api = VendorClient::with_limiter(config, agent_settings, rest.limiter().clone())?;
        let mut configuration_settings = rest_settings;
        configuration_settings.base_url = base_url(
            config,
            "configuration_api_base_url",
            DEFAULT_CONFIGURATION_API_BASE_URL,
        );
        let configuration_api =
            VendorClient::with_limiter(config, configuration_settings, rest.limiter().clone())?;
        let archive_page_size = match config.setting("archive_page_size") {
            None => DEFAULT_ARCHIVE_PAGE_SIZE,
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n @ 1..=100) => n,
                _ => {
                    return Err(Error::invalid(format!(
                        "connection {} (livechat): archive_page_size {text:?} must be a number \
                         from 1 to 100 (LiveChat's limit)",
                        config.id
                    )));
                }
            },
        };
        Ok(LiveChatConnector {
            connection: config.id.to_string(),
            account_id: account_id.to_owned(),
            token: token.clone(),
            login: config
                .setting("login")
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
            version,
            rest,
            agent_api,
            configuration_api,
            archive_page_size,
        })
    }

    /// The API version the connector calls (`3.6` unless `api_version` says otherwise).
    pub fn api_version(&self) -> &str {
        &self.version
    }

    /// A REST API v2 call (tickets): Basic auth with the account's e-mail (`login`) and the
    /// personal access token, `X-API-Version: 2` (Configuration API v2.0, "Authentication").
    fn rest(&self, method: Method, path: &str) -> Result<VendorRequest, Error> {
        let login = self.login.as_deref().ok_or_else(|| {
            Error::failed_precondition(format!(
                "connection {} (livechat) has no `login`: LiveChat's ticket API (REST v2, \
                 deprecated) authenticates with the account's e-mail and the personal access \
                 token; set the setting `login` to that e-mail",
                self.connection
            ))
        })?;
        Ok(self
            .rest
            .request(method, path)
            .header("X-API-Version", "2")
            .basic_auth(login, &self.token))
    }

    /// A Configuration API action (`/v{version}/configuration/action/{action}`), Basic auth
    /// with the Account ID and the personal access token.
    fn configuration(&self, action: &str) -> VendorRequest {
        self.configuration_api
            .request(
                Method::POST,
                &format!("/v{}/configuration/action/{action}", self.version),
            )
            .basic_auth(&self.account_id, &self.token)
    }

    async fn list_archives(&self, body: &Value) -> Result<Archives, Error> {
        self.agent_api
            .request(
                Method::POST,
                &format!("/v{}/agent/action/list_archives", self.version),
            )
            // A read-only search: safe to retry after a timeout or a 5xx.
            .idempotent()
            .basic_auth(&self.account_id, &self.token)
            .json(body)
            .send_json::<Archives>()
            .await
    }

    fn first_page(&self, from: Option<&str>) -> Value {
        let mut body = json!({ "sort_order": "asc", "limit": self.archive_page_size });
        if let Some(from) = from {
            body["filters"] = json!({ "from": from });
        }
        body
    }

    async fn ticket_by_id(&self, external_id: &str) -> Result<RestTicket, Error> {
        let answer = self
            .rest(
                Method::GET,
                &format!("/tickets/{}", path_segment(external_id)?),
            )?
            .send_json::<Value>()
            .await?;
        ticket_answer(answer, Some(external_id))
    }

    /// Pulls again (by `filters.thread_ids`, at most 20 a call) the once-active threads this
    /// sync has still to check; returns the page's events.
    async fn recheck(
        &self,
        cursor: &mut Cursor,
    ) -> Result<Vec<switchboard_core::IncomingEvent>, Error> {
        let checking = cursor.checking.get_or_insert_with(Vec::new);
        let take = checking.len().min(THREAD_IDS_PER_CALL);
        let batch: Vec<ThreadRef> = checking.drain(..take).collect();
        let ids: Vec<&str> = batch.iter().map(|t| t.thread.as_str()).collect();
        // `thread_ids` "cannot be used with other filters or pagination".
        let answer = self
            .list_archives(&json!({ "filters": { "thread_ids": ids } }))
            .await?;
        let received = Timestamp::now();
        let mut events = Vec::new();
        for wanted in &batch {
            let found = answer.chats.iter().find(|c| {
                c.get("id").and_then(Value::as_str) == Some(wanted.chat.as_str())
                    && c.pointer("/thread/id").and_then(Value::as_str)
                        == Some(wanted.thread.as_str())
            });
            let Some(chat) = found else {
                tracing::warn!(
                    connection = %self.connection,
                    chat = %wanted.chat,
                    thread = %wanted.thread,
                    "a once-active LiveChat thread is no longer listed (deleted, or beyond the plan's history): no longer pulled again"
                );
                continue;
            };
            events.extend(self.chat_events(chat, received));
            cursor.note_thread(chat);
        }
        if cursor.checking.as_ref().is_some_and(Vec::is_empty) {
            cursor.checking = None;
            cursor.listing = true;
        }
        Ok(events)
    }

    fn chat_events(
        &self,
        chat: &Value,
        received: Timestamp,
    ) -> Vec<switchboard_core::IncomingEvent> {
        match archive::chat_events(chat) {
            Ok(events) => events,
            Err(error) => {
                let chat_id = chat.get("id").and_then(Value::as_str).unwrap_or("?");
                tracing::warn!(
                    connection = %self.connection,
                    chat = chat_id,
                    error = %error.message,
                    "unreadable archived LiveChat chat kept as a vendor event"
                );
                vec![archive::unreadable_chat(chat, received)]
            }
        }
    }
}

/// `list_archives` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Archives {
    chats: Vec<Value>,
    found_chats: Option<u64>,
    next_page_id: Option<String>,
    previous_page_id: Option<String>,
}

/// Percent-encodes one path segment (keeps unreserved characters and `@`).
fn path_segment(text: &str) -> Result<String, Error> {
    if text.trim().is_empty() {
        return Err(Error::invalid("the id is empty: give the vendor's id"));
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// `YYYY-MM-DD` of an instant (UTC).
fn day_of(at: Timestamp) -> String {
    at.to_rfc3339()[..10].to_owned()
}

#[async_trait]
impl Connector for LiveChatConnector {
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        since: Option<Timestamp>,
    ) -> Result<SyncPage, Error> {
        let mut next = match cursor {
            Some(text) => Cursor::parse(&self.connection, text)?,
            None => Cursor {
                v: 1,
                from: since.map(archive::v3_time),
                ..Cursor::default()
            },
        };
        // A sync first pulls again the threads that were still active (until they have ended),
        // then lists the threads started since `from`.
        if next.page_id.is_none() && !next.listing {
            if next.checking.is_none() {
                next.checking = Some(std::mem::take(&mut next.active));
            }
            if next.checking.as_ref().is_some_and(|c| !c.is_empty()) {
                let events = self.recheck(&mut next).await?;
                return Ok(SyncPage {
                    events,
                    next_cursor: next.to_text(),
                    done: false,
                });
            }
            next.checking = None;
            next.listing = true;
        }
        let answer = match next.page_id.take() {
            Some(page_id) => match self.list_archives(&json!({ "page_id": page_id })).await {
                Ok(answer) => answer,
                Err(error) if error.code == ErrorCode::InvalidArgument => {
                    tracing::warn!(
                        connection = %self.connection,
                        from = next.from.as_deref().unwrap_or("the beginning"),
                        error = %error.message,
                        "LiveChat refused the saved page_id (expired?); listing again from the cursor's time"
                    );
                    self.list_archives(&self.first_page(next.from.as_deref()))
                        .await?
                }
                Err(error) => return Err(error),
            },
            None => {
                self.list_archives(&self.first_page(next.from.as_deref()))
                    .await?
            }
        };
        let received = Timestamp::now();
        let mut events = Vec::new();
        for chat in &answer.chats {
            events.extend(self.chat_events(chat, received));
            next.note_thread(chat);
            next.from = archive::later(
                next.from.take(),
                chat.pointer("/thread/created_at").and_then(Value::as_str),
            );
        }
        next.page_id = answer.next_page_id.filter(|p| !p.is_empty());
        let done = next.page_id.is_none();
        if done {
            // The next sync starts again by pulling the still-active threads.
            next.listing = false;
        }
        tracing::debug!(
            connection = %self.connection,
            chats = answer.chats.len(),
            found_chats = answer.found_chats,
            has_previous = answer.previous_page_id.is_some(),
            active = next.active.len(),
            done,
            "pulled a page of LiveChat archives"
        );
        Ok(SyncPage {
            events,
            next_cursor: next.to_text(),
            done,
        })
    }

    fn tickets(&self) -> Option<&dyn TicketApi> {
        Some(self)
    }

    fn agents(&self) -> Option<&dyn AgentApi> {
        Some(self)
    }
}

#[async_trait]
impl TicketApi for LiveChatConnector {
    /// `POST /tickets` (Configuration API v2.0, "Create a ticket"): `message`,
    /// `requester{mail,name}`, `subject`, `assignee{id}`, `source{type,url}`.
    async fn create(&self, ticket: &NewTicket) -> Result<Ticket, Error> {
        validate::new_ticket(ticket)?;
        let mut requester = json!({ "mail": validate::requester_mail(&ticket.requester) });
        if let Some(name) = ticket.requester.name.as_deref().filter(|n| !n.is_empty()) {
            requester["name"] = json!(name);
        }
        let mut body = json!({ "message": ticket.message, "requester": requester });
        if !ticket.subject.is_empty() {
            body["subject"] = json!(ticket.subject);
        }
        if let Some(id) = ticket.assignee_id.as_deref().filter(|i| !i.is_empty()) {
            body["assignee"] = json!({ "id": id });
        }
        if ticket.source_kind.is_some() || ticket.source_url.is_some() {
            let mut source = json!({});
            if let Some(kind) = &ticket.source_kind {
                source["type"] = json!(kind);
            }
            if let Some(url) = &ticket.source_url {
                source["url"] = json!(url);
            }
            body["source"] = source;
        }
        let answer = self
            .rest(Method::POST, "/tickets")?
            .json(&body)
            .send_json::<Value>()
            .await?;
        ticket_answer(answer, None)?.to_core()
    }

    async fn get(&self, external_id: &str) -> Result<Ticket, Error> {
        self.ticket_by_id(external_id).await?.to_core()
    }

    /// `PUT /tickets/<id>/tags` `{"tag": [...]}`, the one update LiveChat documents; any other
    /// change is refused before the call (`failed_precondition`, with the reason).
    async fn update(&self, external_id: &str, change: &TicketChange) -> Result<Ticket, Error> {
        validate::ticket_change(change)?;
        let tags = change.tags.clone().unwrap_or_default();
        let path = format!("/tickets/{}/tags", path_segment(external_id)?);
        let answer = self
            .rest(Method::PUT, &path)?
            // Replacing the tags with the same tags twice is the same change.
            .idempotent()
            .json(&json!({ "tag": tags }))
            .send()
            .await?;
        // The documented answer is the ticket (in the list form); anything else: read it.
        match answer
            .json::<Value>()
            .ok()
            .and_then(|value| ticket_answer(value, Some(external_id)).ok())
        {
            Some(ticket) => ticket.to_core(),
            None => self.ticket_by_id(external_id).await?.to_core(),
        }
    }

    async fn list(&self, query: &TicketQuery) -> Result<TicketPage, Error> {
        let page = match query.page_token.as_deref() {
            None | Some("") => 1,
            Some(token) => token
                .parse::<u64>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "page token {token:?} is not a LiveChat page number: pass the \
                     next_page_token of the previous page, or none for the first"
                    ))
                })?,
        };
        if let (Some(from), Some(to)) = (query.created_from, query.created_to)
            && from >= to
        {
            return Err(Error::invalid(
                "created_from must be before created_to: swap or widen the range",
            ));
        }
        let mut params = vec![("page", page.to_string())];
        if let Some(from) = query.created_from {
            params.push(("date_from", day_of(from)));
        }
        if let Some(to) = query.created_to {
            // created_to is exclusive; LiveChat's date_to is an inclusive day.
            let last = Timestamp::from_millis(to.as_millis().saturating_sub(1)).unwrap_or(to);
            params.push(("date_to", day_of(last)));
        }
        if let Some(status) = query.status {
            params.push(("status", status.as_str().to_owned()));
        }
        let list = self
            .rest(Method::GET, "/tickets")?
            .query(&params)
            .send_json::<RestTicketList>()
            .await?;
        let mut tickets = Vec::with_capacity(list.tickets.len());
        for ticket in &list.tickets {
            let ticket = ticket.to_core()?;
            // LiveChat filters by days of any activity: keep the exact creation range asked for.
            if query
                .created_from
                .is_some_and(|from| ticket.created_at < from)
                || query.created_to.is_some_and(|to| ticket.created_at >= to)
            {
                continue;
            }
            tickets.push(ticket);
        }
        tracing::debug!(connection = %self.connection, page, pages = list.pages, total = list.total, "listed LiveChat tickets");
        Ok(TicketPage {
            tickets,
            next_page_token: (page < list.pages).then(|| (page + 1).to_string()),
        })
    }
}

#[async_trait]
impl AgentApi for LiveChatConnector {
    /// `list_agents` with the optional fields the model holds.
    async fn list(&self) -> Result<Vec<Agent>, Error> {
        self.configuration("list_agents")
            .idempotent()
            .json(&json!({ "fields": ["job_title", "max_chats_count", "groups"] }))
            .send_json::<Vec<ConfigAgent>>()
            .await?
            .iter()
            .map(ConfigAgent::to_core)
            .collect()
    }

    /// `create_agent` `{id, name, role, login_status, job_title, max_chats_count}`; it answers
    /// only `{id}`, so the agent is what was sent.
    async fn create(&self, agent: &NewAgent) -> Result<Agent, Error> {
        validate::new_agent(agent)?;
        let login = agent.login.trim();
        let job_title = agent
            .job_title
            .clone()
            .unwrap_or_else(|| validate::DEFAULT_JOB_TITLE.to_owned());
        let mut body = json!({
            "id": login,
            "name": agent.name.trim(),
            "job_title": job_title,
        });
        if let Some(role) = &agent.permission {
            body["role"] = json!(role);
        }
        if let Some(status) = &agent.login_status {
            body["login_status"] = json!(status);
        }
        if let Some(count) = agent.max_chats_count {
            body["max_chats_count"] = json!(count);
        }
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let created = self
            .configuration("create_agent")
            .json(&body)
            .send_json::<Created>()
            .await?;
        Ok(Agent {
            login: if created.id.is_empty() {
                login.to_owned()
            } else {
                created.id
            },
            name: Some(agent.name.trim().to_owned()),
            // `create_agent` defaults the role to `normal` and the login status to
            // `not accepting chats`.
            permission: Some(
                agent
                    .permission
                    .clone()
                    .unwrap_or_else(|| "normal".to_owned()),
            ),
            job_title: Some(job_title),
            login_status: Some(
                agent
                    .login_status
                    .clone()
                    .unwrap_or_else(|| "not accepting chats".to_owned()),
            ),
            status: None,
            avatar: None,
            max_chats_count: agent.max_chats_count,
            groups: Vec::new(),
        })
    }

    /// `delete_agent` `{id}`.
    async fn delete(&self, login: &str) -> Result<(), Error> {
        validate::agent_login(login)?;
        self.configuration("delete_agent")
            .json(&json!({ "id": login.trim() }))
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::ConnectionId;

    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a@b.co").unwrap(), "a@b.co");
        assert_eq!(path_segment("x/y z").unwrap(), "x%2Fy%20z");
        assert!(path_segment(" ").is_err());
    }

    #[test]
    fn days_are_utc() {
        let t = Timestamp::parse_rfc3339("2024-03-01T23:59:59.999Z").unwrap();
        assert_eq!(day_of(t), "2024-03-01");
    }

    #[test]
    fn the_factory_names_what_is_missing() {
        let base = ConnectionConfig::new(ConnectionId::new("lc-eu").unwrap(), "livechat");
        let err = connector(&base).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(
            err.message.contains("`account_id`")
                && err.message.contains("`personal_access_token`")
                && err.message.contains("`api_key`"),
            "{err}"
        );
        assert!(
            err.message
                .contains("SWITCHBOARD_SECRET__LC_EU__PERSONAL_ACCESS_TOKEN"),
            "{err}"
        );
        assert!(incomplete_credentials(&base).is_none(), "webhooks only");
        // The old configuration (login e-mail + API key) names the missing account id.
        let old = base
            .clone()
            .with_setting("login", "me@example.com")
            .with_secret("api_key", "k");
        let err = connector(&old).unwrap_err();
        assert!(
            err.message.contains("is missing the setting `account_id`"),
            "{err}"
        );
        assert!(incomplete_credentials(&old).is_some());
        let e_mail = old.clone().with_setting("account_id", "me@example.com");
        assert!(
            connector(&e_mail)
                .unwrap_err()
                .message
                .contains("is an e-mail")
        );
        let full = old.with_setting("account_id", "d24fa41e-bc16-41b8-a15b-9ca45ff7e0cf");
        let built = LiveChatConnector::new(&full).unwrap();
        assert_eq!(built.api_version(), "3.6");
        assert!(incomplete_credentials(&full).is_none());
        let legacy = full.clone().with_setting("api_version", "v3.5");
        assert_eq!(
            LiveChatConnector::new(&legacy).unwrap().api_version(),
            "3.5"
        );
        let unknown = full.clone().with_setting("api_version", "2");
        assert!(
            connector(&unknown)
                .unwrap_err()
                .message
                .contains("api_version")
        );
        let bad_size = full.clone().with_setting("archive_page_size", "500");
        assert!(
            connector(&bad_size)
                .unwrap_err()
                .message
                .contains("archive_page_size")
        );
    }
}
