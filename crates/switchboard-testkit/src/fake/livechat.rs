//! A fake of the LiveChat APIs the LiveChat connector calls, written from LiveChat's public
//! documents, not from the plugin: the repository `livechat/livechat-public-docs` at commit
//! `628955e80245804c2cf8cccb6f15898ba49002f9` (2026-06-12). Each endpoint names its page.
//!
//! - **Authentication** (`src/pages/authorization/personal-access-tokens/index.mdx`): HTTP
//!   Basic with the **Account ID** as the user and a **personal access token** as the password,
//!   for the Agent Chat API and the Configuration API. The deprecated REST API v2 shows
//!   `Basic <email>:<PAT>` and needs `X-API-Version: 2`
//!   (`src/pages/management/configuration-api/v2.0/index.mdx`, "Authentication").
//! - **Agent Chat API** v3.5 and v3.6: `POST /v3.x/agent/action/list_archives`.
//! - **Configuration API** v3.5 and v3.6: `POST /v3.x/configuration/action/list_agents`,
//!   `create_agent`, `delete_agent` (`src/pages/management/configuration-api/index.mdx`).
//!   Errors `{"error": {"type", "message"}}` (same page, "Errors").
//! - **REST API v2, tickets** (deprecated, no successor): `GET /tickets`, `GET /tickets/{id}`,
//!   `POST /tickets`, `PUT /tickets/{id}/tags` (`configuration-api/v2.0/index.mdx`, "Tickets").
//!   The documented answers of the single-ticket calls are the list form
//!   `{pages, total, tickets: [...]}`; tickets have `"groups": [0]` and times in seconds.
//! - **Limits**: LiveChat documents that limits exist (a `Too many requests` error) but no
//!   figure; the fake uses seed 000's 100 calls per 60 s (a low-code platform's throttle,
//!   `/work/shared/seeds/000_*`), per account, answered 429 with `Retry-After` (assumed).
//!
//! Data is seeded deterministically by the builder; [`FakeLiveChat::snapshot`] exposes the state
//! for assertions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_core::Timestamp;

use super::{FakeServer, lock};

/// The account's e-mail: the Basic user of the deprecated REST API v2 (tickets).
pub const LOGIN: &str = "owner@example.com";
/// The Account ID: the Basic user of the Agent Chat and Configuration APIs.
pub const ACCOUNT_ID: &str = "d24fa41e-bc16-41b8-a15b-9ca45ff7e0cf";
/// The personal access token the fake accepts by default (the Basic password of every API).
pub const API_KEY: &str = "lc-api-key-0123456789";
/// The same token under its documented name.
pub const PERSONAL_ACCESS_TOKEN: &str = API_KEY;
/// Tickets per page of `GET /tickets`, as documented ("each containing 25 tickets").
pub const TICKETS_PER_PAGE: usize = 25;
/// The first seeded chat starts at 2024-01-01T00:00:00Z; each next one 10 minutes later.
pub const FIRST_CHAT_SECS: i64 = 1_704_067_200;
/// Seconds between two seeded chats.
pub const CHAT_SPACING_SECS: i64 = 600;
/// The API versions the fake serves (`/v3.5/...`, `/v3.6/...`).
pub const VERSIONS: [&str; 2] = ["v3.5", "v3.6"];

/// A LiveChat agent as the fake keeps it (Configuration API "Agents").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeAgent {
    /// The agent's `id`: its login e-mail.
    pub login: String,
    /// Name.
    pub name: String,
    /// The agent's `role`: `owner`, `viceowner`, `administrator` or `normal`.
    pub permission: String,
    /// `avatar_path`.
    pub avatar: String,
    /// Job title.
    pub job_title: String,
    /// `accepting chats` or `not accepting chats`.
    pub login_status: String,
    /// Limit of concurrent chats (at most 20).
    pub max_chats_count: i64,
    /// Group ids (each with priority `normal`).
    pub groups: Vec<i64>,
}

/// A ticket as the fake keeps it (served in the documented ticket shape).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTicket {
    /// Ticket id.
    pub id: String,
    /// `open`, `pending`, `solved` or `spam`.
    pub status: String,
    /// Subject.
    pub subject: String,
    /// Requester e-mail.
    pub requester_mail: String,
    /// Requester name.
    pub requester_name: Option<String>,
    /// Assignee id (an agent login).
    pub assignee_id: Option<String>,
    /// Source type.
    pub source_type: String,
    /// Source URL.
    pub source_url: Option<String>,
    /// Group ids.
    pub groups: Vec<i64>,
    /// Tags.
    pub tags: Vec<String>,
    /// Opened (the documented `opened[0].from`).
    pub date: Timestamp,
    /// Last modified.
    pub modified: Timestamp,
    /// Its events (`{author, date, is_private, message, type, source}`, dates in seconds).
    pub events: Vec<Value>,
}

fn secs(at: Timestamp) -> i64 {
    at.as_millis().div_euclid(1000)
}

impl FakeTicket {
    /// The documented ticket object (`configuration-api/v2.0/index.mdx`, "Get list of
    /// tickets"): `assignee`, `events`, `id`, `requester{mail,name}`, `groups` (ids),
    /// `status`, `subject`, `modified` (seconds), `source{type}`, `opened[{from}]`,
    /// `firstResponse`, `tags`.
    pub fn to_json(&self, agents: &[FakeAgent]) -> Value {
        let mut requester = json!({ "mail": self.requester_mail });
        if let Some(name) = &self.requester_name {
            requester["name"] = json!(name);
        }
        let mut source = json!({ "type": self.source_type });
        if let Some(url) = &self.source_url {
            source["url"] = json!(url);
        }
        let mut v = json!({
            "events": self.events,
            "id": self.id,
            "requester": requester,
            "groups": self.groups,
            "status": self.status,
            "subject": self.subject,
            "modified": secs(self.modified),
            "source": source,
            "opened": [{ "from": secs(self.date) }],
            "firstResponse": {},
            "tags": self.tags,
        });
        if let Some(id) = &self.assignee_id {
            let name = agents
                .iter()
                .find(|a| &a.login == id)
                .map(|a| a.name.clone());
            v["assignee"] = json!({ "id": id, "name": name });
        }
        v
    }
}

/// The whole state of the fake, for assertions.
#[derive(Debug, Clone)]
pub struct FakeState {
    /// The accepted e-mail (REST API v2).
    pub login: String,
    /// The accepted Account ID (Agent Chat and Configuration APIs).
    pub account_id: String,
    /// The accepted personal access token.
    pub api_key: String,
    /// Archived chats (each one chat with one `thread`), in `list_archives` ascending order.
    pub chats: Vec<Value>,
    /// Tickets by id.
    pub tickets: BTreeMap<String, FakeTicket>,
    /// Agents, in creation order.
    pub agents: Vec<FakeAgent>,
    /// Calls allowed per window and the window.
    pub rate_limit: (usize, Duration),
    /// Page ids issued before this generation are refused as expired.
    pub page_generation: u64,
    /// How many calls were answered 429 by the limit.
    pub rate_limited: u64,
    next_ticket: u64,
    calls: VecDeque<tokio::time::Instant>,
}

/// The fake LiveChat: build it, then serve it with [`FakeLiveChat::start`]. Cheap to clone;
/// clones share the state.
#[derive(Debug, Clone)]
pub struct FakeLiveChat {
    state: Arc<Mutex<FakeState>>,
}

impl Default for FakeLiveChat {
    fn default() -> Self {
        Self::new()
    }
}

/// Micro-second RFC 3339, as the Agent Chat API writes times.
pub fn v3_time(at: Timestamp) -> String {
    let ms = at.to_rfc3339();
    // `...:ss.fffZ` -> `...:ss.fff000Z`
    format!("{}000Z", ms.trim_end_matches('Z'))
}

fn at_secs(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap_or_default()
}

/// The `i`th seeded archived chat (from 0), in the shape of the v3.6 `list_archives` sample and
/// data structures (`payloads/messaging/v3.6/agent-chat-api/users/customer.json`: `visit`):
/// chat id `C{i:09}`, thread `T{i:09}`, a customer `customer-{i:06}`, agent
/// `agent{i % 3}@example.com`, started `FIRST_CHAT_SECS + i * 600`, three events (customer
/// message, agent message, a system message), inactive, tagged `seed`.
pub fn seeded_chat(i: usize) -> Value {
    let start = FIRST_CHAT_SECS + i as i64 * CHAT_SPACING_SECS;
    let chat_id = format!("C{i:09}");
    let thread_id = format!("T{i:09}");
    let customer = format!("customer-{i:06}");
    let agent = format!("agent{}@example.com", i % 3);
    json!({
        "id": chat_id,
        "users": [
            {
                "id": customer,
                "type": "customer",
                "name": format!("Customer {i}"),
                "email": format!("customer{i}@example.org"),
                "present": false,
                "visit": {
                    "started_at": v3_time(at_secs(start - 60)),
                    "geolocation": { "country": "Poland", "country_code": "PL", "city": "Wroclaw" },
                    "last_pages": [{ "opened_at": v3_time(at_secs(start - 30)), "url": "https://www.example.com/pricing", "title": "Pricing" }]
                }
            },
            {
                "id": agent,
                "type": "agent",
                "name": format!("Agent {}", i % 3),
                "email": agent,
                "present": false,
                "visibility": "all"
            }
        ],
        "thread": {
            "id": thread_id,
            "active": false,
            "user_ids": [customer, agent],
            "events": [
                {
                    "id": format!("{thread_id}_1"),
                    "created_at": v3_time(at_secs(start + 5)),
                    "type": "message",
                    "text": format!("Hello, question number {i}"),
                    "author_id": customer,
                    "visibility": "all"
                },
                {
                    "id": format!("{thread_id}_2"),
                    "created_at": v3_time(at_secs(start + 30)),
                    "type": "message",
                    "text": "Hi! How can I help?",
                    "author_id": agent,
                    "visibility": "all"
                },
                {
                    "id": format!("{thread_id}_3"),
                    "created_at": v3_time(at_secs(start + 120)),
                    "type": "system_message",
                    "text": format!("Customer {i} closed the chat"),
                    "system_message_type": "manual_archived_customer",
                    "visibility": "all"
                }
            ],
            "properties": { "routing": { "idle": false } },
            "access": { "group_ids": [0] },
            "created_at": v3_time(at_secs(start)),
            "tags": ["seed"]
        },
        "access": { "group_ids": [0] },
        "properties": {},
        "is_followed": false
    })
}

/// The `i`th seeded ticket (from 0): id `TK{i:07}`, opened `FIRST_CHAT_SECS + i * 3600`,
/// status cycling open, pending, solved, spam.
pub fn seeded_ticket(i: usize) -> FakeTicket {
    let date = at_secs(FIRST_CHAT_SECS + i as i64 * 3600);
    let modified = at_secs(FIRST_CHAT_SECS + i as i64 * 3600 + 60);
    let mail = format!("requester{i}@example.org");
    let status = ["open", "pending", "solved", "spam"][i % 4];
    FakeTicket {
        id: format!("TK{i:07}"),
        status: status.to_owned(),
        subject: format!("Ticket {i}"),
        requester_mail: mail.clone(),
        requester_name: Some(format!("Requester {i}")),
        assignee_id: None,
        source_type: "chat-window".to_owned(),
        source_url: Some("https://www.example.com/contact".to_owned()),
        groups: vec![0],
        tags: Vec::new(),
        date,
        modified,
        events: vec![json!({
            "author": { "id": mail, "name": format!("Requester {i}"), "type": "client" },
            "date": secs(date),
            "is_private": false,
            "message": format!("Please help with issue {i}"),
            "type": "message",
            "source": { "type": "chat-window" }
        })],
    }
}

fn owner_agent(login: &str) -> FakeAgent {
    FakeAgent {
        login: login.to_owned(),
        name: "Account Owner".to_owned(),
        permission: "owner".to_owned(),
        avatar: "cdn.livechatinc.com/avatars/owner.png".to_owned(),
        job_title: "Support Agent".to_owned(),
        login_status: "accepting chats".to_owned(),
        max_chats_count: 6,
        groups: vec![0],
    }
}

fn chat_key(chat: &Value) -> (i64, String, String) {
    let created = chat["thread"]["created_at"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map_or(0, Timestamp::as_millis);
    (
        created,
        chat["id"].as_str().unwrap_or_default().to_owned(),
        chat["thread"]["id"].as_str().unwrap_or_default().to_owned(),
    )
}

impl FakeLiveChat {
    /// A fake with the default credentials ([`LOGIN`], [`ACCOUNT_ID`], [`API_KEY`]), the owner
    /// as the only agent, no chats, no tickets, and 100 calls per 60 s.
    pub fn new() -> Self {
        FakeLiveChat {
            state: Arc::new(Mutex::new(FakeState {
                login: LOGIN.to_owned(),
                account_id: ACCOUNT_ID.to_owned(),
                api_key: API_KEY.to_owned(),
                chats: Vec::new(),
                tickets: BTreeMap::new(),
                agents: vec![owner_agent(LOGIN)],
                rate_limit: (100, Duration::from_secs(60)),
                page_generation: 0,
                rate_limited: 0,
                next_ticket: 0,
                calls: VecDeque::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// Accepts these credentials instead of the defaults (the owner agent follows the login).
    pub fn with_credentials(self, login: &str, account_id: &str, token: &str) -> Self {
        {
            let mut s = self.state();
            let old = std::mem::replace(&mut s.login, login.to_owned());
            s.account_id = account_id.to_owned();
            s.api_key = token.to_owned();
            for agent in &mut s.agents {
                if agent.login == old {
                    agent.login = login.to_owned();
                }
            }
        }
        self
    }

    /// Adds `n` seeded archived chats ([`seeded_chat`] 0..n).
    pub fn with_archived_chats(self, n: usize) -> Self {
        for i in 0..n {
            self.add_archived_chat(seeded_chat(i));
        }
        self
    }

    /// Adds one archived chat as given (a chat with one `thread`).
    pub fn with_archived_chat(self, chat: Value) -> Self {
        self.add_archived_chat(chat);
        self
    }

    /// Adds `n` seeded tickets ([`seeded_ticket`] 0..n).
    pub fn with_tickets(self, n: usize) -> Self {
        {
            let mut s = self.state();
            for i in 0..n {
                let t = seeded_ticket(i);
                s.tickets.insert(t.id.clone(), t);
            }
            s.next_ticket = s.next_ticket.max(n as u64);
        }
        self
    }

    /// Adds `n` seeded agents `agent{i}@example.com` (role `normal`).
    pub fn with_agents(self, n: usize) -> Self {
        {
            let mut s = self.state();
            for i in 0..n {
                let mut agent = owner_agent(&format!("agent{i}@example.com"));
                agent.name = format!("Agent {i}");
                agent.permission = "normal".to_owned();
                s.agents.push(agent);
            }
        }
        self
    }

    /// Replaces the limit of 100 calls per 60 s.
    pub fn with_rate_limit(self, calls: usize, per: Duration) -> Self {
        self.state().rate_limit = (calls.max(1), per);
        self
    }

    /// Adds an archived chat while the fake runs; a chat with the same chat and thread ids
    /// replaces the one there (a thread that changed: tagged, ended, new events).
    pub fn add_archived_chat(&self, chat: Value) {
        let mut s = self.state();
        s.chats
            .retain(|c| (&c["id"], &c["thread"]["id"]) != (&chat["id"], &chat["thread"]["id"]));
        s.chats.push(chat);
        s.chats.sort_by_key(chat_key);
    }

    /// Makes every page id issued so far invalid (LiveChat's page ids expire: "The maximum
    /// duration of the `page_id` parameter before it expires is one month").
    pub fn expire_page_ids(&self) {
        self.state().page_generation += 1;
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> FakeState {
        self.state().clone()
    }

    /// The router serving every API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/tickets", get(list_tickets).post(create_ticket))
            .route("/tickets/{id}", get(get_ticket))
            .route("/tickets/{id}/tags", put(update_ticket_tags))
            .route("/{version}/agent/action/list_archives", post(list_archives))
            .route(
                "/{version}/configuration/action/list_agents",
                post(list_agents),
            )
            .route(
                "/{version}/configuration/action/create_agent",
                post(create_agent),
            )
            .route(
                "/{version}/configuration/action/delete_agent",
                post(delete_agent),
            )
            .with_state(self.clone())
    }

    /// Serves the fake on loopback.
    pub async fn start(&self) -> std::io::Result<FakeServer> {
        FakeServer::start(self.router()).await
    }
}

// ---------------------------------------------------------------------------------------------
// Auth, version and limit checks

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// REST API v2 (tickets): errors `{"error": "message"}` (assumed: the v2.0 page says only
    /// that "additional info is included in the body of the return call, JSON-formatted").
    Rest,
    /// Agent Chat API: errors `{"error": {"type", "message"}}`.
    AgentChat,
    /// Configuration API: errors `{"error": {"type", "message"}}`.
    Configuration,
}

fn error_response(api: Api, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match api {
        Api::Rest => json!({ "error": message }),
        Api::AgentChat | Api::Configuration => {
            json!({ "error": { "type": kind, "message": message } })
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A version in the path the fake serves (`v3.5`, `v3.6`); else LiveChat's
/// `unsupported_version` error (Configuration API "Possible errors"; status assumed 400).
fn admit_version(version: &str, api: Api) -> Result<(), Box<Response>> {
    if VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(Box::new(error_response(
            api,
            StatusCode::BAD_REQUEST,
            "unsupported_version",
            "Unsupported version",
        )))
    }
}

/// Checks Basic auth (REST v2: e-mail and token, with `X-API-Version: 2`; the v3 APIs:
/// Account ID and token) and the call limit, counted per account over every API.
fn admit(fake: &FakeLiveChat, api: Api, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let mut s = fake.state();
    let Some((user, token)) = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .map(|(l, k)| (l.to_owned(), k.to_owned()))
    else {
        return Err(Box::new(error_response(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication",
            "Authentication required: use HTTP Basic auth with your Account ID and personal access token",
        )));
    };
    let expected_user = match api {
        Api::Rest => &s.login,
        Api::AgentChat | Api::Configuration => &s.account_id,
    };
    if &user != expected_user || token != s.api_key {
        return Err(Box::new(error_response(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication",
            match api {
                Api::Rest => "Invalid e-mail or personal access token",
                _ => "Invalid Account ID or personal access token",
            },
        )));
    }
    if api == Api::Rest {
        let version = headers.get("x-api-version").and_then(|v| v.to_str().ok());
        if version.map(str::trim) != Some("2") {
            return Err(Box::new(error_response(
                api,
                StatusCode::BAD_REQUEST,
                "validation",
                "The X-API-Version header is missing or unsupported: send X-API-Version: 2",
            )));
        }
    }
    let (limit, window) = s.rate_limit;
    let now = tokio::time::Instant::now();
    while s
        .calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        s.calls.pop_front();
    }
    if s.calls.len() >= limit {
        let oldest = s.calls.front().copied().unwrap_or(now);
        let wait = window.saturating_sub(now.duration_since(oldest));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        s.rate_limited += 1;
        let mut response = error_response(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Requests limit reached",
        );
        if let Ok(value) = secs.max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Err(Box::new(response));
    }
    s.calls.push_back(now);
    Ok(())
}

fn base64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Standard or URL-safe base64, padded or not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        acc = (acc << 6) | base64_value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard padded base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn json_body(api: Api, body: &Bytes) -> Result<serde_json::Map<String, Value>, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        // The Configuration API's list actions take an empty payload.
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Box::new(error_response(
            api,
            StatusCode::BAD_REQUEST,
            "validation",
            "The request body must be a JSON object",
        ))),
    }
}

fn invalid(api: Api, message: &str) -> Response {
    error_response(api, StatusCode::BAD_REQUEST, "validation", message)
}

/// A plausible e-mail address: one `@`, something on each side, a dot in the domain.
pub fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration API: agents (`src/pages/management/configuration-api/index.mdx`, "Agents", and
// `payloads/management/v3.6/configuration-api/responses/agents/*.json`, at 628955e8)

/// An agent as `list_agents` answers it: `id`, `account_id`, `name`, `role`, `login_status`,
/// `avatar_path`, plus the optional `fields` asked for (`job_title`, `max_chats_count`,
/// `groups`).
fn agent_json(agent: &FakeAgent, index: usize, fields: &[&str]) -> Value {
    let mut v = json!({
        "id": agent.login,
        "account_id": format!("00000000-0000-4000-8000-{index:012}"),
        "name": agent.name,
        "role": agent.permission,
        "login_status": agent.login_status,
        "avatar_path": agent.avatar,
    });
    if fields.contains(&"job_title") {
        v["job_title"] = json!(agent.job_title);
    }
    if fields.contains(&"max_chats_count") {
        v["max_chats_count"] = json!(agent.max_chats_count);
    }
    if fields.contains(&"groups") {
        v["groups"] = Value::Array(
            agent
                .groups
                .iter()
                .map(|id| json!({ "id": id, "priority": "normal" }))
                .collect(),
        );
    }
    v
}

/// `POST /v3.x/configuration/action/list_agents`
/// (`src/pages/management/configuration-api/index.mdx` "List Agents" and
/// `payloads/management/v3.6/configuration-api/responses/agents/listAgents.json`, 628955e8):
/// `filters.group_ids`, `fields`.
async fn list_agents(
    AxumState(fake): AxumState<FakeLiveChat>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit_version(&version, Api::Configuration) {
        return *r;
    }
    if let Err(r) = admit(&fake, Api::Configuration, &headers) {
        return *r;
    }
    let body = match json_body(Api::Configuration, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let fields: Vec<&str> = body
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let groups: Option<Vec<i64>> = body
        .get("filters")
        .and_then(|f| f.get("group_ids"))
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_i64).collect());
    let s = fake.state();
    let agents: Vec<Value> = s
        .agents
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            groups
                .as_ref()
                .is_none_or(|g| a.groups.iter().any(|id| g.contains(id)))
        })
        .map(|(i, a)| agent_json(a, i, &fields))
        .collect();
    ok_json(StatusCode::OK, Value::Array(agents))
}

/// `POST /v3.x/configuration/action/create_agent`
/// (`src/pages/management/configuration-api/index.mdx` "Create Agent", 628955e8): `id` and `name`
/// required; `role` (`viceowner`, `administrator`, `normal`; default `normal`), `login_status`
/// (default `not accepting chats`), `job_title`, `max_chats_count` (at most 20, default 6),
/// `groups` (`[{id, priority}]`). Answers `{"id": ...}` (`createAgent.json`). An existing id
/// answers `already_exists` (a documented error type; HTTP 409 assumed).
async fn create_agent(
    AxumState(fake): AxumState<FakeLiveChat>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const API: Api = Api::Configuration;
    if let Err(r) = admit_version(&version, API) {
        return *r;
    }
    if let Err(r) = admit(&fake, API, &headers) {
        return *r;
    }
    let body = match json_body(API, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let Some(id) = text("id").filter(|l| looks_like_email(l)) else {
        return invalid(API, "id: must be the agent's e-mail");
    };
    let Some(name) = text("name").filter(|n| !n.trim().is_empty()) else {
        return invalid(API, "name: is required");
    };
    let role = text("role").unwrap_or_else(|| "normal".to_owned());
    if !["viceowner", "administrator", "normal"].contains(&role.as_str()) {
        return invalid(API, "role: must be one of viceowner, administrator, normal");
    }
    let login_status = text("login_status").unwrap_or_else(|| "not accepting chats".to_owned());
    if !["accepting chats", "not accepting chats"].contains(&login_status.as_str()) {
        return invalid(
            API,
            "login_status: must be accepting chats or not accepting chats",
        );
    }
    let max_chats_count = match body.get("max_chats_count") {
        None | Some(Value::Null) => 6,
        Some(v) => match v.as_i64() {
            Some(n @ 0..=20) => n,
            _ => return invalid(API, "max_chats_count: must be an integer from 0 to 20"),
        },
    };
    let groups = match body.get("groups") {
        None | Some(Value::Null) => vec![0],
        Some(Value::Array(items)) => {
            let mut ids = Vec::new();
            for item in items {
                match (item.get("id").and_then(Value::as_i64), item.get("priority")) {
                    (Some(id), Some(Value::String(_))) => ids.push(id),
                    _ => return invalid(API, "groups: each needs an id and a priority"),
                }
            }
            ids
        }
        Some(_) => return invalid(API, "groups: must be an array"),
    };
    let mut s = fake.state();
    if s.agents.iter().any(|a| a.login == id) {
        return error_response(
            API,
            StatusCode::CONFLICT,
            "already_exists",
            "Agent already exists",
        );
    }
    let agent = FakeAgent {
        avatar: format!("cdn.livechatinc.com/avatars/{}.png", s.agents.len()),
        login: id.clone(),
        name,
        permission: role,
        job_title: text("job_title").unwrap_or_default(),
        login_status,
        max_chats_count,
        groups,
    };
    s.agents.push(agent);
    ok_json(StatusCode::OK, json!({ "id": id }))
}

/// `POST /v3.x/configuration/action/delete_agent` `{id}`
/// (`src/pages/management/configuration-api/index.mdx` "Delete Agent", 628955e8): "No response
/// payload (200 OK)"; an unknown id answers `not_found` (404 assumed); the owner cannot be deleted
/// (assumed: `validation`, 400).
async fn delete_agent(
    AxumState(fake): AxumState<FakeLiveChat>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const API: Api = Api::Configuration;
    if let Err(r) = admit_version(&version, API) {
        return *r;
    }
    if let Err(r) = admit(&fake, API, &headers) {
        return *r;
    }
    let body = match json_body(API, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(id) = body.get("id").and_then(Value::as_str) else {
        return invalid(API, "id: is required");
    };
    let mut s = fake.state();
    let Some(index) = s.agents.iter().position(|a| a.login == id) else {
        return error_response(API, StatusCode::NOT_FOUND, "not_found", "Agent not found");
    };
    if s.agents[index].permission == "owner" {
        return invalid(API, "The owner of the license cannot be deleted");
    }
    s.agents.remove(index);
    ok_json(StatusCode::OK, json!({}))
}

// ---------------------------------------------------------------------------------------------
// REST API v2: tickets (`src/pages/management/configuration-api/v2.0/index.mdx`, "Tickets
// (deprecated)", at 628955e8)

fn parse_day(text: &str) -> Option<Timestamp> {
    let ok = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok {
        return None;
    }
    Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
}

const STATUSES: [&str; 4] = ["open", "pending", "solved", "spam"];

/// The list form every documented ticket answer uses.
fn ticket_page(tickets: &[Value], total: usize, pages: usize) -> Value {
    json!({ "pages": pages, "total": total, "tickets": tickets })
}

/// `GET /tickets` (`src/pages/management/configuration-api/v2.0/index.mdx` "Get list of tickets",
/// livechat-public-docs 628955e8): `page` (from 1), `date_from`/`date_to` (`YYYY-MM-DD`, "the
/// tickets with any of their activities matching the date"), `status`, `order` (by last
/// modification, default `desc`); 25 a page; `{pages, total, tickets}`.
async fn list_tickets(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let page = match query.get("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => return invalid(Api::Rest, "page: must be a positive integer"),
    };
    let mut from = None;
    let mut to = None;
    for (key, slot, add_day) in [("date_from", &mut from, false), ("date_to", &mut to, true)] {
        if let Some(text) = query.get(key) {
            match parse_day(text) {
                // date_to is inclusive: the whole day counts.
                Some(day) => {
                    *slot = Some(if add_day {
                        day.as_millis() + 86_400_000
                    } else {
                        day.as_millis()
                    });
                }
                None => {
                    return invalid(
                        Api::Rest,
                        &format!("{key}: invalid date format, use YYYY-MM-DD"),
                    );
                }
            }
        }
    }
    let status = query.get("status").cloned();
    if let Some(status) = &status
        && !STATUSES.contains(&status.as_str())
    {
        return invalid(
            Api::Rest,
            "status: must be one of open, pending, solved, spam",
        );
    }
    let asc = match query.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return invalid(Api::Rest, "order: must be asc or desc"),
    };
    let s = fake.state();
    let active_in_range = |t: &FakeTicket| {
        let mut times = t
            .events
            .iter()
            .filter_map(|e| e["date"].as_i64())
            .map(|secs| secs * 1000)
            .chain([t.date.as_millis(), t.modified.as_millis()]);
        times.any(|ms| from.is_none_or(|f| ms >= f) && to.is_none_or(|end| ms < end))
    };
    let mut tickets: Vec<&FakeTicket> = s
        .tickets
        .values()
        .filter(|t| active_in_range(t))
        .filter(|t| status.as_ref().is_none_or(|st| &t.status == st))
        .collect();
    tickets.sort_by(|a, b| (b.modified, &b.id).cmp(&(a.modified, &a.id)));
    if asc {
        tickets.reverse();
    }
    let total = tickets.len();
    let pages = total.div_ceil(TICKETS_PER_PAGE);
    let items: Vec<Value> = tickets
        .iter()
        .skip((page - 1) * TICKETS_PER_PAGE)
        .take(TICKETS_PER_PAGE)
        .map(|t| t.to_json(&s.agents))
        .collect();
    ok_json(StatusCode::OK, ticket_page(&items, total, pages))
}

fn ticket_not_found() -> Response {
    error_response(
        Api::Rest,
        StatusCode::NOT_FOUND,
        "not_found",
        "Ticket not found",
    )
}

/// `GET /tickets/<TICKET_ID>` (`src/pages/management/configuration-api/v2.0/index.mdx` "Get single
/// ticket", 628955e8): the documented answer is the list form with the ticket.
async fn get_ticket(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let s = fake.state();
    match s.tickets.get(&id) {
        Some(t) => ok_json(StatusCode::OK, ticket_page(&[t.to_json(&s.agents)], 1, 1)),
        None => ticket_not_found(),
    }
}

/// `POST /tickets` (`src/pages/management/configuration-api/v2.0/index.mdx` "Create a ticket",
/// 628955e8; JSON, as the cURL (JSON) sample): `message` and `requester.mail` required;
/// `requester.name`, `assignee.id`, `source.type` (`chat-window`, `mail` or `lc2`, default `lc2`),
/// `source.url`, `subject` (default `(no subject)`), `group` (group ids, default `[0]`). Answers
/// the list form with the new ticket.
async fn create_ticket(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let body = match json_body(Api::Rest, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let s_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let requester = body.get("requester");
    let Some(mail) = s_of(requester.and_then(|r| r.get("mail"))).filter(|m| looks_like_email(m))
    else {
        return invalid(Api::Rest, "requester[mail]: must be a valid e-mail address");
    };
    let Some(message) = s_of(body.get("message")).filter(|m| !m.trim().is_empty()) else {
        return invalid(Api::Rest, "message: is required");
    };
    let source = body.get("source");
    let source_type = s_of(source.and_then(|r| r.get("type"))).unwrap_or_else(|| "lc2".to_owned());
    if !["chat-window", "mail", "lc2"].contains(&source_type.as_str()) {
        return invalid(
            Api::Rest,
            "source[type]: must be one of chat-window, mail, lc2",
        );
    }
    let groups = match body.get("group") {
        None | Some(Value::Null) => vec![0],
        Some(Value::Array(items)) => {
            match items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>() {
                Some(ids) => ids,
                None => return invalid(Api::Rest, "group: must be an array of group ids"),
            }
        }
        Some(_) => return invalid(Api::Rest, "group: must be an array of group ids"),
    };
    let assignee = s_of(body.get("assignee").and_then(|a| a.get("id")));
    let mut s = fake.state();
    if let Some(id) = &assignee
        && !s.agents.iter().any(|a| &a.login == id)
    {
        return invalid(Api::Rest, "assignee[id]: no such agent");
    }
    let now = Timestamp::now();
    let id = format!("TK{:07}", s.next_ticket);
    s.next_ticket += 1;
    let name = s_of(requester.and_then(|r| r.get("name")));
    let ticket = FakeTicket {
        id: id.clone(),
        status: "open".to_owned(),
        subject: s_of(body.get("subject"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "(no subject)".to_owned()),
        requester_mail: mail.clone(),
        requester_name: name.clone(),
        assignee_id: assignee,
        source_url: s_of(source.and_then(|r| r.get("url")))
            .filter(|_| source_type == "chat-window"),
        source_type: source_type.clone(),
        groups,
        tags: Vec::new(),
        date: now,
        modified: now,
        events: vec![json!({
            "author": { "id": mail, "name": name, "type": "client" },
            "date": secs(now),
            "is_private": false,
            "message": message,
            "type": "message",
            "source": { "type": source_type },
        })],
    };
    let answer = ticket_page(&[ticket.to_json(&s.agents)], 1, 1);
    s.tickets.insert(id, ticket);
    ok_json(StatusCode::OK, answer)
}

/// `PUT /tickets/<TICKET_ID>/tags` `{"tag": [...]}`
/// (`src/pages/management/configuration-api/v2.0/index.mdx` "Update ticket tags", 628955e8; the
/// cURL (JSON) sample; `tag[]=` form fields also read): replaces the ticket's tags; answers the
/// list form with the ticket.
async fn update_ticket_tags(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let tags: Option<Vec<String>> = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => value
            .get("tag")
            .and_then(Value::as_array)
            .and_then(|items| {
                items
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect()
            }),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let tags: Vec<String> = text
                .split('&')
                .filter_map(|pair| pair.trim().strip_prefix("tag[]="))
                .map(str::to_owned)
                .collect();
            (!tags.is_empty()).then_some(tags)
        }
    };
    let Some(tags) = tags else {
        return invalid(Api::Rest, "tag: array of used tags is required");
    };
    let mut s = fake.state();
    let agents = s.agents.clone();
    let Some(ticket) = s.tickets.get_mut(&id) else {
        return ticket_not_found();
    };
    ticket.tags = tags;
    ticket.modified = Timestamp::now().max(ticket.modified);
    ok_json(
        StatusCode::OK,
        ticket_page(&[ticket.to_json(&agents)], 1, 1),
    )
}

// ---------------------------------------------------------------------------------------------
// Agent Chat API: list_archives

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
struct PageToken {
    g: u64,
    asc: bool,
    from: Option<i64>,
    to: Option<i64>,
    limit: usize,
    /// Position key: (created ms, chat id, thread id).
    key: (i64, String, String),
    /// `true`: the page after `key`; `false`: the page before it.
    next: bool,
}

fn encode_token(token: &PageToken) -> String {
    base64_encode(serde_json::to_string(token).unwrap_or_default().as_bytes())
}

fn decode_token(text: &str) -> Option<PageToken> {
    serde_json::from_slice(&base64_decode(text)?).ok()
}

fn archive_time(filters: Option<&Value>, key: &str) -> Result<Option<i64>, String> {
    match filters.and_then(|f| f.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Timestamp::parse_rfc3339(text)
            .map(|t| Some(t.as_millis()))
            .ok_or_else(|| format!("filters.{key}: must be an RFC 3339 date-time")),
        Some(_) => Err(format!("filters.{key}: must be an RFC 3339 date-time")),
    }
}

/// `POST /v3.x/agent/action/list_archives`: `src/pages/messaging/agent-chat-api/index.mdx`
/// ("List Archives", "Pagination") at 628955e8 (v3.5: `messaging/agent-chat-api/v3.5/index.mdx`).
/// Filters `from`/`to` (on the thread's start), `thread_ids` (at most 20, "cannot be used with
/// other filters or pagination"); `limit` 1..=100 default 10; `sort_order` default `desc`;
/// `page_id` alone (`filters`, `limit`, `sort_order` "can't be provided along with `page_id`").
async fn list_archives(
    AxumState(fake): AxumState<FakeLiveChat>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit_version(&version, Api::AgentChat) {
        return *r;
    }
    if let Err(r) = admit(&fake, Api::AgentChat, &headers) {
        return *r;
    }
    let body = match json_body(Api::AgentChat, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let s = fake.state();
    if let Some(ids) = body
        .get("filters")
        .and_then(|f| f.get("thread_ids"))
        .filter(|v| !v.is_null())
    {
        let Some(ids) = ids
            .as_array()
            .and_then(|ids| ids.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        else {
            return invalid(
                Api::AgentChat,
                "filters.thread_ids: must be an array of strings",
            );
        };
        if ids.len() > 20 {
            return invalid(Api::AgentChat, "filters.thread_ids: at most 20 thread ids");
        }
        let others = body
            .get("filters")
            .and_then(Value::as_object)
            .is_some_and(|f| f.iter().any(|(k, v)| k != "thread_ids" && !v.is_null()));
        if others
            || ["page_id", "sort_order", "limit"]
                .iter()
                .any(|k| body.get(*k).is_some_and(|v| !v.is_null()))
        {
            return invalid(
                Api::AgentChat,
                "filters.thread_ids cannot be used with other filters or pagination",
            );
        }
        let chats: Vec<Value> = s
            .chats
            .iter()
            .filter(|c| c["thread"]["id"].as_str().is_some_and(|t| ids.contains(&t)))
            .cloned()
            .collect();
        return ok_json(
            StatusCode::OK,
            json!({ "chats": chats, "found_chats": chats.len() }),
        );
    }
    let token = match body.get("page_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(page_id)) => {
            if ["filters", "sort_order", "limit"]
                .iter()
                .any(|k| body.get(*k).is_some_and(|v| !v.is_null()))
            {
                return invalid(
                    Api::AgentChat,
                    "page_id cannot be combined with filters, sort_order or limit",
                );
            }
            match decode_token(page_id) {
                Some(token) if token.g == s.page_generation => Some(token),
                Some(_) => return invalid(Api::AgentChat, "page_id: expired, start over"),
                None => return invalid(Api::AgentChat, "page_id: invalid"),
            }
        }
        Some(_) => return invalid(Api::AgentChat, "page_id: must be a string"),
    };
    let (asc, from, to, limit, position) = match token {
        Some(t) => (t.asc, t.from, t.to, t.limit, Some((t.key, t.next))),
        None => {
            let asc = match body.get("sort_order") {
                None | Some(Value::Null) => false,
                Some(Value::String(o)) if o == "asc" => true,
                Some(Value::String(o)) if o == "desc" => false,
                Some(_) => return invalid(Api::AgentChat, "sort_order: must be asc or desc"),
            };
            let limit = match body.get("limit") {
                None | Some(Value::Null) => 10,
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=100) => n as usize,
                    _ => {
                        return invalid(Api::AgentChat, "limit: must be an integer from 1 to 100");
                    }
                },
            };
            let filters = body.get("filters");
            if filters.is_some_and(|f| !f.is_object() && !f.is_null()) {
                return invalid(Api::AgentChat, "filters: must be an object");
            }
            let from = match archive_time(filters, "from") {
                Ok(v) => v,
                Err(m) => return invalid(Api::AgentChat, &m),
            };
            let to = match archive_time(filters, "to") {
                Ok(v) => v,
                Err(m) => return invalid(Api::AgentChat, &m),
            };
            (asc, from, to, limit, None)
        }
    };
    let mut matching: Vec<(&Value, (i64, String, String))> = s
        .chats
        .iter()
        .map(|c| (c, chat_key(c)))
        .filter(|(_, k)| from.is_none_or(|f| k.0 >= f) && to.is_none_or(|t| k.0 <= t))
        .collect();
    if !asc {
        matching.reverse();
    }
    let found = matching.len();
    // `a` comes before `b` in the requested order.
    let before = |a: &(i64, String, String), b: &(i64, String, String)| {
        if asc { a < b } else { a > b }
    };
    let (start, end) = match &position {
        None => (0, limit.min(found)),
        Some((key, true)) => {
            let start = matching
                .iter()
                .position(|(_, k)| before(key, k))
                .unwrap_or(found);
            (start, (start + limit).min(found))
        }
        Some((key, false)) => {
            let end = matching
                .iter()
                .position(|(_, k)| !before(k, key))
                .unwrap_or(found);
            (end.saturating_sub(limit), end)
        }
    };
    let page = &matching[start..end];
    let token = |key: &(i64, String, String), next: bool| {
        encode_token(&PageToken {
            g: s.page_generation,
            asc,
            from,
            to,
            limit,
            key: key.clone(),
            next,
        })
    };
    let mut answer = json!({
        "chats": page.iter().map(|(c, _)| (*c).clone()).collect::<Vec<_>>(),
        "found_chats": found,
    });
    if end < found
        && let Some((_, last)) = page.last()
    {
        answer["next_page_id"] = json!(token(last, true));
    }
    if start > 0
        && let Some((_, first)) = page.first()
    {
        answer["previous_page_id"] = json!(token(first, false));
    }
    ok_json(StatusCode::OK, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in ["", "a", "ab", "abc", "owner@example.com:lc-api-key"] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).as_deref(), Some(text.as_bytes()));
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn seeded_data_is_deterministic_and_ordered() {
        let fake = FakeLiveChat::new().with_archived_chats(3).with_tickets(2);
        let state = fake.snapshot();
        assert_eq!(state.chats[0], seeded_chat(0));
        assert_eq!(state.chats[2]["id"], "C000000002");
        assert_eq!(
            state.chats[1]["thread"]["created_at"],
            "2024-01-01T00:10:00.000000Z"
        );
        assert_eq!(state.tickets.len(), 2);
        assert_eq!(state.agents[0].login, LOGIN);
        // The documented ticket shape: groups as ids, times in seconds, no `date`.
        let ticket = state.tickets["TK0000000"].to_json(&state.agents);
        assert_eq!(ticket["groups"], json!([0]));
        assert_eq!(ticket["modified"], json!(FIRST_CHAT_SECS + 60));
        assert!(ticket.get("date").is_none());
    }

    #[test]
    fn a_chat_with_the_same_thread_replaces_the_old_one() {
        let fake = FakeLiveChat::new().with_archived_chats(2);
        let mut ended = seeded_chat(1);
        ended["thread"]["tags"] = json!(["seed", "later"]);
        fake.add_archived_chat(ended.clone());
        let chats = fake.snapshot().chats;
        assert_eq!(chats.len(), 2);
        assert_eq!(chats[1], ended);
    }

    #[test]
    fn days_parse_strictly() {
        assert!(parse_day("2024-01-31").is_some());
        for bad in ["2024-1-31", "2024/01/31", "yesterday", "2024-01-31T00"] {
            assert!(parse_day(bad).is_none(), "{bad}");
        }
    }
}
