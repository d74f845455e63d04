//! A fake of the LiveChat APIs the LiveChat connector calls, following the vendor's documented
//! behaviour (seed 000 for the REST API, LiveChat's public Agent Chat API v3.5 docs for
//! `list_archives`).
//!
//! - **REST API v2** (`https://api.livechatinc.com`): HTTP Basic auth with the account's login
//!   and API key, the header `X-API-Version: 2` on every call. `GET /agents`, `POST /agents`,
//!   `DELETE /agents/{login}`, `GET /tickets` (25 per page, `page`, `date_from`, `date_to`
//!   as `YYYY-MM-DD`, `status`), `GET /tickets/{id}`, `POST /tickets`, `PUT /tickets/{id}`.
//!   Errors are `{"error": "message"}`.
//! - **Agent Chat API v3.5**: `POST /v3.5/agent/action/list_archives` with a JSON body
//!   (`filters.from`/`filters.to`, `limit` 1..=100 default 10, `sort_order` default `desc`, or
//!   only `page_id`); answers `chats`, `found_chats`, `next_page_id`, `previous_page_id`.
//!   Errors are `{"error": {"type": "...", "message": "..."}}`. Page ids stop working after
//!   [`FakeLiveChat::expire_page_ids`].
//! - The documented limit of 100 calls per 60 s per connection (per login), counted over both
//!   APIs for authenticated calls; beyond it a 429 with `Retry-After`.
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
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_core::Timestamp;

use super::{FakeServer, lock};

/// The account login the fake accepts by default.
pub const LOGIN: &str = "owner@example.com";
/// The API key the fake accepts by default.
pub const API_KEY: &str = "lc-api-key-0123456789";
/// Tickets per page of `GET /tickets`, as documented.
pub const TICKETS_PER_PAGE: usize = 25;
/// The first seeded chat starts at 2024-01-01T00:00:00Z; each next one 10 minutes later.
pub const FIRST_CHAT_SECS: i64 = 1_704_067_200;
/// Seconds between two seeded chats.
pub const CHAT_SPACING_SECS: i64 = 600;

/// A LiveChat agent as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeAgent {
    /// Login e-mail.
    pub login: String,
    /// Name.
    pub name: String,
    /// `owner`, `administrator` or `normal`.
    pub permission: String,
    /// Avatar path.
    pub avatar: String,
    /// Job title.
    pub job_title: String,
    /// `accepting chats` or `not accepting chats`.
    pub login_status: String,
    /// `accepting chats`, `not accepting chats` or `offline`.
    pub status: String,
    /// Limit of concurrent chats.
    pub max_chats_count: i64,
    /// Group ids.
    pub groups: Vec<i64>,
    /// The password it was created with, if any (never served).
    #[serde(skip)]
    pub password: Option<String>,
}

/// A ticket as the fake keeps it (serialized as LiveChat's TicketResponse).
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
    /// Requester IP.
    pub requester_ip: Option<String>,
    /// Assignee id (an agent login).
    pub assignee_id: Option<String>,
    /// Source type.
    pub source_type: String,
    /// Source URL.
    pub source_url: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Created.
    pub date: Timestamp,
    /// Last modified.
    pub modified: Timestamp,
    /// Its events (`{author, date, is_private, message, type, source}`).
    pub events: Vec<Value>,
}

impl FakeTicket {
    fn requester(&self) -> Value {
        let mut r = json!({ "mail": self.requester_mail });
        if let Some(name) = &self.requester_name {
            r["name"] = json!(name);
        }
        if let Some(ip) = &self.requester_ip {
            r["ip"] = json!(ip);
        }
        r
    }

    fn source(&self) -> Value {
        let mut s = json!({ "id": format!("src-{}", self.id), "type": self.source_type });
        if let Some(url) = &self.source_url {
            s["url"] = json!(url);
        }
        s
    }

    /// The ListTicketsResponse element.
    pub fn summary_json(&self) -> Value {
        json!({
            "id": self.id,
            "date": rest_time(self.date),
            "modified": rest_time(self.modified),
            "requester": self.requester(),
            "source": self.source(),
            "status": self.status,
            "subject": self.subject,
        })
    }

    /// The TicketResponse.
    pub fn full_json(&self, agents: &[FakeAgent]) -> Value {
        let mut v = self.summary_json();
        v["events"] = Value::Array(self.events.clone());
        v["groups"] = json!([{ "id": 0, "name": "General" }]);
        v["currentGroup"] = json!({ "id": 0, "name": "General" });
        v["tags"] = json!(self.tags);
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
    /// The accepted login.
    pub login: String,
    /// The accepted API key.
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
    calls: HashMap<String, VecDeque<tokio::time::Instant>>,
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

/// `yyyy-MM-ddTHH:mm:ss.fffZ`, as the REST API writes times.
pub fn rest_time(at: Timestamp) -> String {
    at.to_rfc3339()
}

fn at_secs(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap_or_default()
}

/// The `i`th seeded archived chat (from 0): chat id `C{i:09}`, thread `T{i:09}`, a customer
/// `customer-{i:06}`, agent `agent{i % 3}@example.com`, started `FIRST_CHAT_SECS + i * 600`,
/// three events (customer message, agent message, a system message), inactive, tagged `seed`.
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
                "last_visit": {
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

/// The `i`th seeded ticket (from 0): id `TK{i:07}`, created `FIRST_CHAT_SECS + i * 3600`,
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
        requester_ip: Some("198.51.100.7".to_owned()),
        assignee_id: None,
        source_type: "chat-window".to_owned(),
        source_url: Some("https://www.example.com/contact".to_owned()),
        tags: Vec::new(),
        date,
        modified,
        events: vec![json!({
            "author": { "id": mail, "name": format!("Requester {i}"), "type": "client" },
            "date": rest_time(date),
            "is_private": false,
            "message": format!("Please help with issue {i}"),
            "type": "message",
            "source": { "type": "chat-window", "url": "https://www.example.com/contact" }
        })],
    }
}

fn owner_agent(login: &str) -> FakeAgent {
    FakeAgent {
        login: login.to_owned(),
        name: "Account Owner".to_owned(),
        permission: "owner".to_owned(),
        avatar: "livechat.s3.amazonaws.com/1011121/all/avatars/owner.jpg".to_owned(),
        job_title: "Support Agent".to_owned(),
        login_status: "accepting chats".to_owned(),
        status: "accepting chats".to_owned(),
        max_chats_count: 6,
        groups: vec![0],
        password: None,
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
    /// A fake with the default credentials ([`LOGIN`], [`API_KEY`]), the owner as the only
    /// agent, no chats, no tickets, and the documented limit of 100 calls per 60 s.
    pub fn new() -> Self {
        FakeLiveChat {
            state: Arc::new(Mutex::new(FakeState {
                login: LOGIN.to_owned(),
                api_key: API_KEY.to_owned(),
                chats: Vec::new(),
                tickets: BTreeMap::new(),
                agents: vec![owner_agent(LOGIN)],
                rate_limit: (100, Duration::from_secs(60)),
                page_generation: 0,
                rate_limited: 0,
                next_ticket: 0,
                calls: HashMap::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// Accepts these credentials instead of the defaults (the owner agent follows the login).
    pub fn with_credentials(self, login: &str, api_key: &str) -> Self {
        {
            let mut s = self.state();
            let old = std::mem::replace(&mut s.login, login.to_owned());
            s.api_key = api_key.to_owned();
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

    /// Adds one archived chat as given (a v3.5 chat with one `thread`).
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

    /// Adds `n` seeded agents `agent{i}@example.com` (normal permission).
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

    /// Adds an archived chat while the fake runs.
    pub fn add_archived_chat(&self, chat: Value) {
        let mut s = self.state();
        s.chats.push(chat);
        s.chats.sort_by_key(chat_key);
    }

    /// Makes every page id issued so far invalid (LiveChat's page ids expire).
    pub fn expire_page_ids(&self) {
        self.state().page_generation += 1;
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> FakeState {
        self.state().clone()
    }

    /// The router serving both APIs.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/agents", get(list_agents).post(create_agent))
            .route("/agents/{login}", axum::routing::delete(delete_agent))
            .route("/tickets", get(list_tickets).post(create_ticket))
            .route("/tickets/{id}", get(get_ticket).put(update_ticket))
            .route("/v3.5/agent/action/list_archives", post(list_archives))
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
    Rest,
    AgentChat,
}

fn error_response(api: Api, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match api {
        Api::Rest => json!({ "error": message }),
        Api::AgentChat => json!({ "error": { "type": kind, "message": message } }),
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

/// Checks Basic auth, the API version header (REST only) and the call limit.
fn admit(fake: &FakeLiveChat, api: Api, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let mut s = fake.state();
    let Some((login, key)) = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .map(|(l, k)| (l.to_owned(), k.to_owned()))
    else {
        return Err(Box::new(error_response(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication",
            "Authentication required: use HTTP Basic auth with your login and API key",
        )));
    };
    if login != s.login || key != s.api_key {
        return Err(Box::new(error_response(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication",
            "Invalid login or API key",
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
    let calls = s.calls.entry(login).or_default();
    while calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        calls.pop_front();
    }
    if calls.len() >= limit {
        let oldest = calls.front().copied().unwrap_or(now);
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
    calls.push_back(now);
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

// ---------------------------------------------------------------------------------------------
// Agents

fn agent_summary(agent: &FakeAgent) -> Value {
    json!({
        "login": agent.login,
        "name": agent.name,
        "permission": agent.permission,
        "avatar": agent.avatar,
        "status": agent.status,
    })
}

fn agent_full(agent: &FakeAgent) -> Value {
    json!({
        "login": agent.login,
        "name": agent.name,
        "permission": agent.permission,
        "avatar": agent.avatar,
        "job_title": agent.job_title,
        "login_status": agent.login_status,
        "status": agent.status,
        "max_chats_count": agent.max_chats_count,
        "groups": agent.groups.iter().map(|id| json!({ "id": id, "name": if *id == 0 { "General" } else { "Group" } })).collect::<Vec<_>>(),
    })
}

async fn list_agents(AxumState(fake): AxumState<FakeLiveChat>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let s = fake.state();
    ok_json(
        StatusCode::OK,
        Value::Array(s.agents.iter().map(agent_summary).collect()),
    )
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

async fn create_agent(
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
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let Some(login) = text("login").filter(|l| looks_like_email(l)) else {
        return invalid(Api::Rest, "login: must be a valid e-mail address");
    };
    let Some(name) = text("name").filter(|n| !n.trim().is_empty()) else {
        return invalid(Api::Rest, "name: is required");
    };
    let password = text("password");
    if password.as_ref().is_some_and(|p| p.chars().count() < 5) {
        return invalid(Api::Rest, "password: must be at least 5 characters long");
    }
    let permission = text("permission").unwrap_or_else(|| "normal".to_owned());
    if !["owner", "administrator", "normal"].contains(&permission.as_str()) {
        return invalid(
            Api::Rest,
            "permission: must be one of owner, administrator, normal",
        );
    }
    let login_status = text("login_status").unwrap_or_else(|| "accepting chats".to_owned());
    if !["accepting chats", "not accepting chats"].contains(&login_status.as_str()) {
        return invalid(
            Api::Rest,
            "login_status: must be accepting chats or not accepting chats",
        );
    }
    let max_chats_count = match body.get("max_chats_count") {
        None | Some(Value::Null) => 6,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 0 => v,
            _ => return invalid(Api::Rest, "max_chats_count: must be a non-negative integer"),
        },
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(v) if v >= 0 => v,
            _ => return invalid(Api::Rest, "max_chats_count: must be a non-negative integer"),
        },
        Some(_) => return invalid(Api::Rest, "max_chats_count: must be a non-negative integer"),
    };
    let mut s = fake.state();
    if s.agents.iter().any(|a| a.login == login) {
        return error_response(
            Api::Rest,
            StatusCode::CONFLICT,
            "conflict",
            "Agent with this login already exists",
        );
    }
    let agent = FakeAgent {
        avatar: format!(
            "livechat.s3.amazonaws.com/1011121/all/avatars/{}.jpg",
            s.agents.len()
        ),
        login,
        name,
        permission,
        job_title: text("job_title").unwrap_or_else(|| "Support Agent".to_owned()),
        status: if login_status == "accepting chats" {
            "accepting chats".to_owned()
        } else {
            "not accepting chats".to_owned()
        },
        login_status,
        max_chats_count,
        groups: vec![0],
        password,
    };
    let answer = agent_full(&agent);
    s.agents.push(agent);
    ok_json(StatusCode::OK, answer)
}

async fn delete_agent(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    Path(login): Path<String>,
) -> Response {
    if let Err(r) = admit(&fake, Api::Rest, &headers) {
        return *r;
    }
    let mut s = fake.state();
    let Some(index) = s.agents.iter().position(|a| a.login == login) else {
        return error_response(
            Api::Rest,
            StatusCode::NOT_FOUND,
            "not_found",
            "Agent not found",
        );
    };
    if s.agents[index].permission == "owner" {
        return invalid(Api::Rest, "The owner of the account cannot be removed");
    }
    s.agents.remove(index);
    ok_json(
        StatusCode::OK,
        json!({ "result": format!("{login} removed successfully") }),
    )
}

// ---------------------------------------------------------------------------------------------
// Tickets

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
    if let Some(status) = &status {
        if !STATUSES.contains(&status.as_str()) {
            return invalid(
                Api::Rest,
                "status: must be one of open, pending, solved, spam",
            );
        }
    }
    let s = fake.state();
    let mut tickets: Vec<&FakeTicket> = s
        .tickets
        .values()
        .filter(|t| from.is_none_or(|f| t.date.as_millis() >= f))
        .filter(|t| to.is_none_or(|end| t.date.as_millis() < end))
        .filter(|t| status.as_ref().is_none_or(|st| &t.status == st))
        .collect();
    // Newest first, as LiveChat lists them.
    tickets.sort_by(|a, b| (b.date, &b.id).cmp(&(a.date, &a.id)));
    let total = tickets.len();
    let pages = total.div_ceil(TICKETS_PER_PAGE);
    let items: Vec<Value> = tickets
        .iter()
        .skip((page - 1) * TICKETS_PER_PAGE)
        .take(TICKETS_PER_PAGE)
        .map(|t| t.summary_json())
        .collect();
    ok_json(
        StatusCode::OK,
        json!({ "tickets": items, "total": total, "pages": pages }),
    )
}

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
        Some(t) => ok_json(StatusCode::OK, t.full_json(&s.agents)),
        None => error_response(
            Api::Rest,
            StatusCode::NOT_FOUND,
            "not_found",
            "Ticket not found",
        ),
    }
}

struct TicketFields {
    message: Option<String>,
    mail: Option<String>,
    name: Option<String>,
    subject: Option<String>,
    assignee: Option<String>,
    source_type: Option<String>,
    source_url: Option<String>,
    status: Option<String>,
    tags: Option<Vec<String>>,
}

/// Admits a REST ticket write (create or update) and reads its fields from the JSON body.
fn admit_ticket_request(
    fake: &FakeLiveChat,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<TicketFields, Box<Response>> {
    admit(fake, Api::Rest, headers)?;
    ticket_fields(&json_body(Api::Rest, body)?)
}

fn ticket_fields(body: &serde_json::Map<String, Value>) -> Result<TicketFields, Box<Response>> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let requester = body.get("requester");
    let source = body.get("source");
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Box::new(invalid(Api::Rest, "tags: must be an array of strings")))?,
        ),
        Some(_) => {
            return Err(Box::new(invalid(
                Api::Rest,
                "tags: must be an array of strings",
            )));
        }
    };
    let fields = TicketFields {
        message: s(body.get("message")),
        mail: s(requester.and_then(|r| r.get("mail"))),
        name: s(requester.and_then(|r| r.get("name"))),
        subject: s(body.get("subject")),
        assignee: s(body.get("assignee").and_then(|a| a.get("id"))),
        source_type: s(source.and_then(|r| r.get("type"))),
        source_url: s(source.and_then(|r| r.get("url"))),
        status: s(body.get("status")),
        tags,
    };
    match &fields.mail {
        Some(mail) if looks_like_email(mail) => {}
        _ => {
            return Err(Box::new(invalid(
                Api::Rest,
                "requester.mail: must be a valid e-mail address",
            )));
        }
    }
    if let Some(kind) = &fields.source_type {
        if !["chat-window", "mail", "facebook", "lc2", "agent-app-manual"].contains(&kind.as_str())
        {
            return Err(Box::new(invalid(
                Api::Rest,
                "source.type: must be one of chat-window, mail, facebook, lc2, agent-app-manual",
            )));
        }
    }
    if let Some(status) = &fields.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(Box::new(invalid(
                Api::Rest,
                "status: must be one of open, pending, solved, spam",
            )));
        }
    }
    Ok(fields)
}

fn check_assignee(s: &FakeState, assignee: Option<&String>) -> Result<(), Box<Response>> {
    match assignee {
        Some(id) if !s.agents.iter().any(|a| &a.login == id) => {
            Err(Box::new(invalid(Api::Rest, "assignee.id: no such agent")))
        }
        _ => Ok(()),
    }
}

fn message_event(fields: &TicketFields, message: &str, at: Timestamp, author_id: &str) -> Value {
    let mut source = json!({ "type": fields.source_type.as_deref().unwrap_or("agent-app-manual") });
    if let Some(url) = &fields.source_url {
        source["url"] = json!(url);
    }
    json!({
        "author": { "id": author_id, "name": fields.name, "type": "client" },
        "date": rest_time(at),
        "is_private": false,
        "message": message,
        "type": "message",
        "source": source,
    })
}

async fn create_ticket(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match admit_ticket_request(&fake, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(message) = fields.message.clone().filter(|m| !m.trim().is_empty()) else {
        return invalid(Api::Rest, "message: is required");
    };
    let mut s = fake.state();
    if let Err(r) = check_assignee(&s, fields.assignee.as_ref()) {
        return *r;
    }
    let now = Timestamp::now();
    let id = format!("TK{:07}", s.next_ticket);
    s.next_ticket += 1;
    let mail = fields.mail.clone().unwrap_or_default();
    let ticket = FakeTicket {
        id: id.clone(),
        status: "open".to_owned(),
        subject: fields.subject.clone().unwrap_or_default(),
        requester_mail: mail.clone(),
        requester_name: fields.name.clone(),
        requester_ip: None,
        assignee_id: fields.assignee.clone(),
        source_type: fields
            .source_type
            .clone()
            .unwrap_or_else(|| "agent-app-manual".to_owned()),
        source_url: fields.source_url.clone(),
        tags: fields.tags.clone().unwrap_or_default(),
        date: now,
        modified: now,
        events: vec![message_event(&fields, &message, now, &mail)],
    };
    let answer = ticket.full_json(&s.agents);
    s.tickets.insert(id, ticket);
    ok_json(StatusCode::OK, answer)
}

async fn update_ticket(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match admit_ticket_request(&fake, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let mut s = fake.state();
    if let Err(r) = check_assignee(&s, fields.assignee.as_ref()) {
        return *r;
    }
    let agents = s.agents.clone();
    let Some(ticket) = s.tickets.get_mut(&id) else {
        return error_response(
            Api::Rest,
            StatusCode::NOT_FOUND,
            "not_found",
            "Ticket not found",
        );
    };
    let now = Timestamp::now().max(ticket.modified);
    if let Some(mail) = &fields.mail {
        ticket.requester_mail.clone_from(mail);
    }
    if fields.name.is_some() {
        ticket.requester_name.clone_from(&fields.name);
    }
    if let Some(subject) = &fields.subject {
        ticket.subject.clone_from(subject);
    }
    if fields.assignee.is_some() {
        ticket.assignee_id.clone_from(&fields.assignee);
    }
    if let Some(kind) = &fields.source_type {
        ticket.source_type.clone_from(kind);
    }
    if fields.source_url.is_some() {
        ticket.source_url.clone_from(&fields.source_url);
    }
    if let Some(status) = &fields.status {
        ticket.status.clone_from(status);
    }
    if let Some(tags) = &fields.tags {
        ticket.tags.clone_from(tags);
    }
    if let Some(message) = fields.message.as_ref().filter(|m| !m.trim().is_empty()) {
        let author = ticket.requester_mail.clone();
        ticket
            .events
            .push(message_event(&fields, message, now, &author));
    }
    ticket.modified = now;
    ok_json(StatusCode::OK, ticket.full_json(&agents))
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

async fn list_archives(
    AxumState(fake): AxumState<FakeLiveChat>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&fake, Api::AgentChat, &headers) {
        return *r;
    }
    let body = match json_body(Api::AgentChat, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let s = fake.state();
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
    if end < found {
        if let Some((_, last)) = page.last() {
            answer["next_page_id"] = json!(token(last, true));
        }
    }
    if start > 0 {
        if let Some((_, first)) = page.first() {
            answer["previous_page_id"] = json!(token(first, false));
        }
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
    }

    #[test]
    fn days_parse_strictly() {
        assert!(parse_day("2024-01-31").is_some());
        for bad in ["2024-1-31", "2024/01/31", "yesterday", "2024-01-31T00"] {
            assert!(parse_day(bad).is_none(), "{bad}");
        }
    }
}
