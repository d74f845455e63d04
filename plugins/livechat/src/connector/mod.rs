//! The LiveChat connector: pulls archived chats (Agent Chat API v3.5 `list_archives`) and
//! manages tickets and agents through the REST API v2 (seed 000), all through one
//! [`VendorClient`] rate limiter per connection (100 calls per 60 s by default, the documented
//! limit).

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

use self::archive::Cursor;
use self::rest::{RestAgent, RestTicket, RestTicketList};

/// The REST API's default base URL (setting `base_url`).
pub const DEFAULT_BASE_URL: &str = "https://api.livechatinc.com";
/// The Agent Chat API's default base URL (setting `agent_api_base_url`).
pub const DEFAULT_AGENT_API_BASE_URL: &str = "https://api.livechatinc.com";
/// The path of `list_archives` under the Agent Chat API base URL.
pub const LIST_ARCHIVES_PATH: &str = "/v3.5/agent/action/list_archives";
/// The documented limit: 100 API calls per 60 s per connection.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    calls: 100,
    per_seconds: 60,
};
/// Archived chats asked for per `list_archives` call (setting `archive_page_size`, 1..=100).
pub const DEFAULT_ARCHIVE_PAGE_SIZE: u32 = 100;

/// Builds the connector of a LiveChat connection. It needs the setting `login` (the account's
/// e-mail) and the secret `api_key`; without them it refuses with an error naming both, and the
/// server runs the connection's webhooks without sync, tickets or agents.
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
    Ok(Box::new(LiveChatConnector::new(config)?))
}

/// The LiveChat connector of one connection.
#[derive(Debug, Clone)]
pub struct LiveChatConnector {
    connection: String,
    login: String,
    api_key: Secret,
    agent_api_login: String,
    agent_api_key: Secret,
    rest: VendorClient,
    agent_api: VendorClient,
    archive_page_size: u32,
}

impl LiveChatConnector {
    /// Reads the connection's settings and secrets and builds the two API clients, which share
    /// one rate limiter.
    pub fn new(config: &ConnectionConfig) -> Result<LiveChatConnector, Error> {
        let login = config
            .setting("login")
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let api_key = config.secret("api_key");
        let (Some(login), Some(api_key)) = (login, api_key) else {
            let missing = match (login.is_some(), api_key.is_some()) {
                (false, false) => "the setting `login` and the secret `api_key`",
                (false, true) => "the setting `login`",
                _ => "the secret `api_key`",
            };
            return Err(Error::invalid(format!(
                "connection {id} (livechat) is missing {missing}: the connector (archive sync, \
                 tickets, agents) needs `login` = the LiveChat account's e-mail and `api_key` = \
                 its API key (or the env var SWITCHBOARD_SECRET__{ENV}__API_KEY); webhooks work \
                 without them",
                id = config.id,
                ENV = config.id.as_str().to_ascii_uppercase().replace('-', "_"),
            )));
        };
        let rest_settings =
            ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)?;
        let rest = VendorClient::new(config, rest_settings.clone())?;
        let mut agent_settings = rest_settings;
        agent_settings.base_url = config
            .setting("agent_api_base_url")
            .unwrap_or(DEFAULT_AGENT_API_BASE_URL)
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let agent_api = VendorClient::with_limiter(config, agent_settings, rest.limiter().clone())?;
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
            login: login.to_owned(),
            api_key: api_key.clone(),
            agent_api_login: config
                .setting("agent_api_login")
                .unwrap_or(login)
                .to_owned(),
            agent_api_key: config.secret("agent_api_key").unwrap_or(api_key).clone(),
            rest,
            agent_api,
            archive_page_size,
        })
    }

    /// A REST API v2 call: Basic auth with login and API key, `X-API-Version: 2`.
    fn rest(&self, method: Method, path: &str) -> VendorRequest {
        self.rest
            .request(method, path)
            .header("X-API-Version", "2")
            .basic_auth(&self.login, &self.api_key)
    }

    async fn list_archives(&self, body: &Value) -> Result<Archives, Error> {
        self.agent_api
            .request(Method::POST, LIST_ARCHIVES_PATH)
            // A read-only search: safe to retry after a timeout or a 5xx.
            .idempotent()
            .basic_auth(&self.agent_api_login, &self.agent_api_key)
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
        self.rest(
            Method::GET,
            &format!("/tickets/{}", path_segment(external_id)?),
        )
        .send_json::<RestTicket>()
        .await
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
        let saved = match cursor {
            Some(text) => Cursor::parse(&self.connection, text)?,
            None => Cursor {
                v: 1,
                from: since.map(archive::v3_time),
                page_id: None,
            },
        };
        let answer = match &saved.page_id {
            Some(page_id) => match self.list_archives(&json!({ "page_id": page_id })).await {
                Ok(answer) => answer,
                Err(error) if error.code == ErrorCode::InvalidArgument => {
                    tracing::warn!(
                        connection = %self.connection,
                        from = saved.from.as_deref().unwrap_or("the beginning"),
                        error = %error.message,
                        "LiveChat refused the saved page_id (expired?); listing again from the cursor's time"
                    );
                    self.list_archives(&self.first_page(saved.from.as_deref()))
                        .await?
                }
                Err(error) => return Err(error),
            },
            None => {
                self.list_archives(&self.first_page(saved.from.as_deref()))
                    .await?
            }
        };
        let received = Timestamp::now();
        let mut events = Vec::new();
        let mut from = saved.from.clone();
        for chat in &answer.chats {
            match archive::chat_events(chat) {
                Ok(chat_events) => events.extend(chat_events),
                Err(error) => {
                    let chat_id = chat.get("id").and_then(Value::as_str).unwrap_or("?");
                    tracing::warn!(
                        connection = %self.connection,
                        chat = chat_id,
                        error = %error.message,
                        "unreadable archived LiveChat chat kept as a vendor event"
                    );
                    events.push(archive::unreadable_chat(chat, received));
                }
            }
            from = archive::later(
                from,
                chat.pointer("/thread/created_at").and_then(Value::as_str),
            );
        }
        let next_page_id = answer.next_page_id.filter(|p| !p.is_empty());
        let done = next_page_id.is_none();
        tracing::debug!(
            connection = %self.connection,
            chats = answer.chats.len(),
            found_chats = answer.found_chats,
            has_previous = answer.previous_page_id.is_some(),
            done,
            "pulled a page of LiveChat archives"
        );
        Ok(SyncPage {
            events,
            next_cursor: Cursor {
                v: 1,
                from,
                page_id: next_page_id,
            }
            .to_text(),
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
        self.rest(Method::POST, "/tickets")
            .json(&body)
            .send_json::<RestTicket>()
            .await?
            .to_core()
    }

    async fn get(&self, external_id: &str) -> Result<Ticket, Error> {
        self.ticket_by_id(external_id).await?.to_core()
    }

    async fn update(&self, external_id: &str, change: &TicketChange) -> Result<Ticket, Error> {
        validate::ticket_change(change)?;
        let path = format!("/tickets/{}", path_segment(external_id)?);
        // LiveChat's update needs the requester's e-mail every time (seed 000): reuse the
        // ticket's own when the change does not set one.
        let (mail, name) = match &change.requester {
            Some(requester) => (
                validate::requester_mail(requester).map(str::to_owned),
                requester.name.clone(),
            ),
            None => self
                .ticket_by_id(external_id)
                .await?
                .requester_mail_and_name(),
        };
        let mail = mail.ok_or_else(|| {
            Error::failed_precondition(format!(
                "LiveChat ticket {external_id} has no requester e-mail, which an update needs: \
                 set requester.email in the change"
            ))
        })?;
        let mut requester = json!({ "mail": mail });
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            requester["name"] = json!(name);
        }
        let mut body = json!({ "requester": requester });
        if let Some(message) = &change.message {
            body["message"] = json!(message);
        }
        if let Some(subject) = &change.subject {
            body["subject"] = json!(subject);
        }
        if let Some(status) = change.status {
            body["status"] = json!(status.as_str());
        }
        if let Some(id) = &change.assignee_id {
            body["assignee"] = json!({ "id": id });
        }
        if let Some(tags) = &change.tags {
            body["tags"] = json!(tags);
        }
        self.rest(Method::PUT, &path)
            .json(&body)
            .send_json::<RestTicket>()
            .await?
            .to_core()
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
        if let (Some(from), Some(to)) = (query.created_from, query.created_to) {
            if from >= to {
                return Err(Error::invalid(
                    "created_from must be before created_to: swap or widen the range",
                ));
            }
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
            .rest(Method::GET, "/tickets")
            .query(&params)
            .send_json::<RestTicketList>()
            .await?;
        let mut tickets = Vec::with_capacity(list.tickets.len());
        for ticket in &list.tickets {
            let ticket = ticket.to_core()?;
            // LiveChat filters by whole days: keep the exact range asked for.
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
    async fn list(&self) -> Result<Vec<Agent>, Error> {
        self.rest(Method::GET, "/agents")
            .send_json::<Vec<RestAgent>>()
            .await?
            .iter()
            .map(RestAgent::to_core)
            .collect()
    }

    async fn create(&self, agent: &NewAgent) -> Result<Agent, Error> {
        validate::new_agent(agent)?;
        let mut body = json!({
            "login": agent.login.trim(),
            "name": agent.name.trim(),
            "job_title": agent.job_title.as_deref().unwrap_or(validate::DEFAULT_JOB_TITLE),
        });
        if let Some(status) = &agent.login_status {
            body["login_status"] = json!(status);
        }
        if let Some(permission) = &agent.permission {
            body["permission"] = json!(permission);
        }
        if let Some(password) = &agent.password {
            body["password"] = json!(password);
        }
        if let Some(count) = agent.max_chats_count {
            body["max_chats_count"] = json!(count);
        }
        self.rest(Method::POST, "/agents")
            .json(&body)
            .send_json::<RestAgent>()
            .await?
            .to_core()
    }

    async fn delete(&self, login: &str) -> Result<(), Error> {
        validate::agent_login(login)?;
        self.rest(
            Method::DELETE,
            &format!("/agents/{}", path_segment(login.trim())?),
        )
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
            err.message.contains("`login`") && err.message.contains("`api_key`"),
            "{err}"
        );
        assert!(
            err.message.contains("SWITCHBOARD_SECRET__LC_EU__API_KEY"),
            "{err}"
        );
        let only_login = base.clone().with_setting("login", "me@example.com");
        let err = connector(&only_login).unwrap_err();
        assert!(
            err.message.contains("is missing the secret `api_key`"),
            "{err}"
        );
        assert!(!err.message.contains("the setting `login`"), "{err}");
        let full = only_login.with_secret("api_key", "k");
        assert!(connector(&full).is_ok());
        let bad_size = full.clone().with_setting("archive_page_size", "500");
        assert!(
            connector(&bad_size)
                .unwrap_err()
                .message
                .contains("archive_page_size")
        );
    }
}
