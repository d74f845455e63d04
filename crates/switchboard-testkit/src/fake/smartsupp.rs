//! A fake of Smartsupp's REST API v2 (`https://api.smartsupp.com`), enough for the Smartsupp
//! connector: searching conversations and reading their messages.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_testkit::fake::smartsupp::FakeSmartsupp;
//! let smartsupp = FakeSmartsupp::new().with_conversations(120);
//! let server = smartsupp.start().await?; // FakeServer: base_url(), log, faults
//! # let _ = server; Ok(()) }
//! ```
//!
//! # Source
//!
//! The fake follows Smartsupp's published OpenAPI description of its Core API ("Smartsupp Core
//! API" 1.0.0): `packages/generator/test/data/spec2.json` in the repository
//! `smartsupp/openapi-client` at commit 468370481ea17f4bfbb696f442638e91d59ba8f9 (2021-01-13;
//! the file was removed from the repository later), cited below as `SPEC`. Where SPEC is silent
//! the choice is marked *assumed*.
//!
//! # Endpoints
//!
//! Authentication (SPEC `components.securitySchemes.cookieAuth`: the cookie
//! `jwt_access_token`; the public docs and a production integration,
//! onpaj/Anela.Heblo `docs/integrations/smartsupp-api.md`, send the API token as
//! `Authorization: Bearer <token>`): either is accepted with [`FakeSmartsupp::token`]; anything
//! else is answered `401 {"code":"unauthorized","message":"..."}` (SPEC `error_payload`).
//!
//! `POST /v2/conversations/search` (SPEC `paths./v2/conversations/search.post`), JSON body:
//! - `size`: conversations per page, default 100 (SPEC); at most 250 unless the query
//!   parameter `allowExtraSize=true` (SPEC: "Allow fetch more then 250 items");
//! - `sort`: `[{"createdAt": "asc" | "desc"}]` or `[{"finishedAt": ...}]`, default
//!   `[{"createdAt": "desc"}]` (SPEC: only these two fields are sortable; any other is 400);
//!   only the first entry counts; *assumed*: ties are broken by the conversation's position,
//!   and conversations without `finishedAt` sort as the largest value;
//! - `after`: SPEC "array of numbers", nullable: the `after` of the previous response. The fake
//!   sends `[<sort field in ms>, <tie-breaker number>]` (*assumed* shape of the numbers);
//! - `query`: SPEC `[{field, value, op}]`; the fake knows `status` (a string or strings),
//!   `contactId`, and the ranges `createdAt` / `finishedAt` / `updatedAt` with
//!   `value = [from, to]` (the range form of docs.smartsupp.com/rest-api/overview's
//!   `finishedAt` example; either bound may be `null`, *assumed*; both inclusive); `op:
//!   "must_not"` negates a filter;
//! - `filters`: SPEC `{dateFrom, dateTo, contactId, ...}`; `dateFrom` / `dateTo` bound
//!   `createdAt` (*assumed*), `contactId` filters;
//! - `timezone`: accepted and ignored (every time the fake sends has a trailing `Z`).
//!
//! It answers SPEC's `{"after": [...] | null, "items": [conversation], "total": n}`; `after`
//! is `null` once the page reached the last match (*assumed*: SPEC only says nullable).
//!
//! `GET /v2/conversations/{id}/messages` (SPEC `paths./v2/conversations/{id}/messages.get`):
//! query `size` (default 50, SPEC; at most 100, *assumed*), `after` (SPEC: a number; the
//! `after` of the previous response), `order` (`asc` | `desc`, default `desc`, SPEC). It
//! answers `{"after": <number> | null, "items": [message], "total": n}`; `after` is the last
//! item's `createdAt` in milliseconds, `null` on the last page (*assumed*); the next page holds
//! the messages strictly after it in the order asked, so the fake never gives two messages of
//! one conversation the same millisecond. An unknown conversation is SPEC's 404 `{"code":
//! "not_found", "message": "Conversation not found"}`.
//!
//! Objects use SPEC's names (camelCase): a conversation (`components.schemas.conversation`) is
//! `{id, type: "chat", status (pending | open | served | closed), channel{type, id},
//! contactId, visitorId, createdAt, updatedAt, finishedAt, agentIds, assignedIds, groupId,
//! locIp, locCity, locCode, locCountry, rating{value (1 | 3 | 5), text} | null, referer,
//! domain, userAgent, tags, variables, important, isClosed, isOffline, isServed}`; a message
//! (`components.schemas.message`) is `{id, type: "message", sub_type (contact | agent | trigger
//! | bot), channel, chatId, groupId, agentId, visitorId, createdAt, content{type: "text",
//! text, data}, trigger{id, name} | null, responseTime, deliveryTo, deliveryStatus,
//! deliveryFailReason, deliveredAt, attachments}`. Times are RFC 3339 UTC with milliseconds.
//!
//! # Assumptions
//!
//! SPEC documents no rate limit and no 429: a fixed-window limit applies only when set with
//! [`FakeSmartsupp::with_rate_limit`] (429 with `Retry-After` in whole seconds, the
//! docs.smartsupp.com/rest-api/overview status table lists 429). A visitor writing again
//! ([`FakeSmartsupp::add_visitor_message`]) reopens a closed conversation (status `open`, no
//! `finishedAt`). [`FakeSmartsupp::corrupt_conversation`] is a test hook, not vendor
//! behaviour: the conversation is served with unreadable times.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use switchboard_core::Timestamp;

use super::{FakeServer, lock};

/// The search's page size when a request gives none (SPEC: `size` default 100).
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest search page without `allowExtraSize` (SPEC: "more then 250 items" needs it).
pub const MAX_PAGE_SIZE: usize = 250;
/// The messages page size when a request gives none (SPEC: `size` default 50).
pub const DEFAULT_MESSAGES_PAGE_SIZE: usize = 50;
/// The largest messages page the fake serves (assumed: SPEC gives no maximum).
pub const MAX_MESSAGES_PAGE_SIZE: usize = 100;
/// The access token a new fake accepts.
pub const DEFAULT_TOKEN: &str = "smartsupp-fake-token-6f2d";
/// The time of the first seeded conversation: 2024-05-01T00:00:00Z.
pub const SEED_START_MS: i64 = 1_714_521_600_000;

/// A seeded conversation and its messages.
#[derive(Debug, Clone)]
struct Conversation {
    /// Creation order; the search's tie-breaker.
    index: usize,
    id: String,
    status: &'static str,
    created_ms: i64,
    updated_ms: i64,
    finished_ms: Option<i64>,
    contact_id: String,
    visitor_id: String,
    agent_ids: Vec<String>,
    rating: Option<(i64, String)>,
    is_offline: bool,
    tags: Vec<String>,
    messages: Vec<MessageRecord>,
    /// Test hook: served with unreadable times.
    corrupt: bool,
}

#[derive(Debug, Clone)]
struct MessageRecord {
    id: String,
    created_ms: i64,
    sub_type: &'static str,
    agent_id: Option<String>,
    trigger: Option<(String, String)>,
    text: String,
}

#[derive(Debug)]
struct RateWindow {
    calls: u32,
    window: Duration,
    started: Instant,
    used: u32,
}

#[derive(Debug)]
struct FakeState {
    token: String,
    seed: u64,
    rng: u64,
    conversations: Vec<Conversation>,
    next_index: usize,
    clock_ms: i64,
    rate: Option<RateWindow>,
}

/// The fake Smartsupp API. Cheap to clone: clones share the data, so a test can change
/// conversations while the server runs.
#[derive(Debug, Clone)]
pub struct FakeSmartsupp {
    state: Arc<Mutex<FakeState>>,
}

impl Default for FakeSmartsupp {
    fn default() -> Self {
        Self::new()
    }
}

/// splitmix64: small, deterministic, good enough for fake data.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x0094_D49B_B133_11EB);
    z ^ (z >> 31)
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millis(ms)
        .unwrap_or(Timestamp::MIN)
        .to_rfc3339()
}

const VISITOR_TEXTS: [&str; 4] = [
    "Dobrý den, mohu vrátit zboží po 30 dnech?",
    "Kdy dorazí moje objednávka?",
    "Hello, is this in stock?",
    "Díky, to je vše.",
];
const AGENT_TEXTS: [&str; 3] = [
    "Dobrý den, vrácení je možné do 60 dnů.",
    "Objednávka je na cestě.",
    "Yes, we ship tomorrow.",
];
/// SPEC `conversation_rating.value`: "enum [1, 3, 5]", 5 best.
const RATINGS: [i64; 3] = [1, 3, 5];

impl FakeState {
    fn random(&mut self, below: u64) -> u64 {
        next_random(&mut self.rng) % below.max(1)
    }

    /// Makes conversation number `index`, starting at `start_ms`.
    fn make_conversation(&mut self, index: usize, start_ms: i64) -> Conversation {
        let id = format!("co{index:05}{:06x}", self.random(1 << 24));
        let contact_id = format!("ct{index:05}{:04x}", self.random(1 << 16));
        let visitor_id = format!("vi{index:05}{:04x}", self.random(1 << 16));
        let agent = format!("{}", 1 + self.random(4));
        let mut messages = Vec::new();
        let mut at = start_ms;
        let offline = self.random(10) == 0;
        if self.random(3) == 0 {
            messages.push(MessageRecord {
                id: String::new(),
                created_ms: at,
                sub_type: "trigger",
                agent_id: None,
                trigger: Some(("trg_welcome".to_owned(), "Welcome".to_owned())),
                text: "Potřebujete poradit?".to_owned(),
            });
            at += 500;
        }
        if self.random(4) == 0 {
            messages.push(MessageRecord {
                id: String::new(),
                created_ms: at,
                sub_type: "bot",
                agent_id: None,
                trigger: None,
                text: "Jsem robot, s čím pomohu?".to_owned(),
            });
            at += 700;
        }
        let turns = 1 + self.random(4) as usize;
        for turn in 0..turns {
            let text = VISITOR_TEXTS[self.random(VISITOR_TEXTS.len() as u64) as usize];
            messages.push(MessageRecord {
                id: String::new(),
                created_ms: at,
                sub_type: "contact",
                agent_id: None,
                trigger: None,
                text: format!("{text} ({turn})"),
            });
            at += 1_000 + self.random(60_000) as i64;
            if !offline {
                let text = AGENT_TEXTS[self.random(AGENT_TEXTS.len() as u64) as usize];
                messages.push(MessageRecord {
                    id: String::new(),
                    created_ms: at,
                    sub_type: "agent",
                    agent_id: Some(agent.clone()),
                    trigger: None,
                    text: text.to_owned(),
                });
                at += 1_000 + self.random(60_000) as i64;
            }
        }
        for (seq, message) in messages.iter_mut().enumerate() {
            message.id = format!("ms{index:05}{seq:03}");
        }
        let closed = self.random(4) != 0;
        let finished_ms = closed.then_some(at);
        let rating = (closed && self.random(3) == 0).then(|| {
            let value = RATINGS[self.random(RATINGS.len() as u64) as usize];
            (value, if value > 3 { "Díky!" } else { "" }.to_owned())
        });
        let tags = if self.random(5) == 0 {
            vec!["vip".to_owned()]
        } else {
            Vec::new()
        };
        Conversation {
            index,
            id,
            status: if closed {
                "closed"
            } else if offline {
                "open"
            } else {
                "served"
            },
            created_ms: start_ms,
            updated_ms: at,
            finished_ms,
            contact_id,
            visitor_id,
            agent_ids: if offline { Vec::new() } else { vec![agent] },
            rating,
            is_offline: offline,
            tags,
            messages,
            corrupt: false,
        }
    }

    fn add(&mut self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for nth in 0..count {
            let index = self.next_index;
            self.next_index += 1;
            // Starts spread over time (every 7th conversation starts at the same millisecond
            // as the one made before it in the same call, so sort ties are exercised), and
            // the updates interleave (long chats end later than short chats that began after
            // them). Conversations made by earlier calls never change here.
            let mut start = self.clock_ms + self.random(30 * 60_000) as i64;
            if index % 7 == 6
                && nth > 0
                && let Some(previous) = self.conversations.last()
            {
                start = previous.created_ms;
            }
            let conversation = self.make_conversation(index, start);
            self.clock_ms += 10 * 60_000;
            self.clock_ms = self.clock_ms.max(start);
            ids.push(conversation.id.clone());
            self.conversations.push(conversation);
        }
        ids
    }

    /// A time later than every time handed out so far.
    fn later(&mut self) -> i64 {
        let latest = self
            .conversations
            .iter()
            .map(|c| c.updated_ms.max(c.created_ms))
            .max()
            .unwrap_or(SEED_START_MS);
        self.clock_ms = self.clock_ms.max(latest) + 60_000;
        self.clock_ms
    }

    fn rate_limited(&mut self) -> Option<u64> {
        let rate = self.rate.as_mut()?;
        let now = Instant::now();
        if now.duration_since(rate.started) >= rate.window {
            rate.started = now;
            rate.used = 0;
        }
        if rate.used < rate.calls {
            rate.used += 1;
            return None;
        }
        let left = rate.window.saturating_sub(now.duration_since(rate.started));
        Some(left.as_millis().div_ceil(1000).max(1) as u64)
    }
}

impl Conversation {
    /// SPEC `components.schemas.conversation`.
    fn to_json(&self) -> Value {
        let (created, updated) = if self.corrupt {
            (json!("yesterday"), json!("today"))
        } else {
            (
                json!(rfc3339(self.created_ms)),
                json!(rfc3339(self.updated_ms)),
            )
        };
        json!({
            "id": self.id,
            "type": "chat",
            "status": self.status,
            "channel": {"type": "default", "id": null},
            "contactId": self.contact_id,
            "visitorId": self.visitor_id,
            "createdAt": created,
            "updatedAt": updated,
            "finishedAt": self.finished_ms.map(rfc3339),
            "agentIds": self.agent_ids,
            "assignedIds": self.agent_ids,
            "groupId": null,
            "locIp": "89.235.0.55",
            "locCity": "Brno",
            "locCode": "cz",
            "locCountry": "Czechia",
            "rating": self.rating.as_ref().map(|(value, text)| json!({"value": value, "text": text})),
            "referer": "https://www.google.com/",
            "domain": "shop.example.cz",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
            "tags": self.tags,
            "variables": {"orderCount": 3},
            "important": false,
            "isClosed": self.status == "closed",
            "isOffline": self.is_offline,
            "isServed": !self.agent_ids.is_empty(),
        })
    }

    fn sort_ms(&self, field: SortField) -> i64 {
        match field {
            SortField::CreatedAt => self.created_ms,
            SortField::FinishedAt => self.finished_ms.unwrap_or(i64::MAX),
        }
    }

    /// The search's `after` values of this conversation: the sort value, then the
    /// tie-breaker.
    fn sort_key(&self, field: SortField) -> (i64, i64) {
        (self.sort_ms(field), self.index as i64)
    }
}

impl MessageRecord {
    /// SPEC `components.schemas.message`.
    fn to_json(&self, conversation: &Conversation) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "sub_type": self.sub_type,
            "channel": {"type": "default", "id": null},
            "chatId": conversation.id,
            "groupId": null,
            "agentId": self.agent_id,
            "visitorId": (self.sub_type == "contact").then(|| conversation.visitor_id.clone()),
            "createdAt": rfc3339(self.created_ms),
            "content": {"type": "text", "text": self.text, "data": null},
            "trigger": self.trigger.as_ref().map(|(id, name)| json!({"id": id, "name": name})),
            "responseTime": null,
            "deliveryTo": null,
            "deliveryStatus": null,
            "deliveryFailReason": null,
            "deliveredAt": null,
            "attachments": [],
        })
    }
}

impl FakeSmartsupp {
    /// An empty account accepting [`DEFAULT_TOKEN`], seed 1, no rate limit.
    pub fn new() -> Self {
        FakeSmartsupp {
            state: Arc::new(Mutex::new(FakeState {
                token: DEFAULT_TOKEN.to_owned(),
                seed: 1,
                rng: 1,
                conversations: Vec::new(),
                next_index: 0,
                clock_ms: SEED_START_MS,
                rate: None,
            })),
        }
    }

    /// Reseeds the generator (call before [`FakeSmartsupp::with_conversations`]); the same
    /// seed always gives the same data.
    pub fn with_seed(self, seed: u64) -> Self {
        {
            let mut state = lock(&self.state);
            state.seed = seed;
            state.rng = seed;
        }
        self
    }

    /// Adds `count` seeded conversations with their messages.
    pub fn with_conversations(self, count: usize) -> Self {
        lock(&self.state).add(count);
        self
    }

    /// Accepts `token` instead of [`DEFAULT_TOKEN`].
    pub fn with_token(self, token: impl Into<String>) -> Self {
        lock(&self.state).token = token.into();
        self
    }

    /// Answers 429 (with `Retry-After`) once `calls` requests arrived within a fixed window.
    pub fn with_rate_limit(self, calls: u32, window: Duration) -> Self {
        lock(&self.state).rate = Some(RateWindow {
            calls,
            window,
            started: Instant::now(),
            used: 0,
        });
        self
    }

    /// The accepted token.
    pub fn token(&self) -> String {
        lock(&self.state).token.clone()
    }

    /// The seed the data was made with.
    pub fn seed(&self) -> u64 {
        lock(&self.state).seed
    }

    /// Adds `count` conversations, all created after every existing one; returns their ids.
    pub fn add_conversations(&self, count: usize) -> Vec<String> {
        let mut state = lock(&self.state);
        let later = state.later();
        state.clock_ms = later;
        state.add(count)
    }

    /// A visitor writes again in conversation `id`: one new message, later than every time
    /// handed out so far; a closed conversation is open again. Returns the new message's id,
    /// or `None` for an unknown id.
    pub fn add_visitor_message(&self, id: &str, text: &str) -> Option<String> {
        let mut state = lock(&self.state);
        let at = state.later();
        let conversation = state.conversations.iter_mut().find(|c| c.id == id)?;
        let seq = conversation.messages.len();
        let index = &conversation.id[2..7];
        let message_id = format!("ms{index}{seq:03}");
        conversation.messages.push(MessageRecord {
            id: message_id.clone(),
            created_ms: at,
            sub_type: "contact",
            agent_id: None,
            trigger: None,
            text: text.to_owned(),
        });
        conversation.updated_ms = at;
        if conversation.status == "closed" {
            conversation.status = "open";
            conversation.finished_ms = None;
        }
        Some(message_id)
    }

    /// An agent closes conversation `id` now; `false` for an unknown or closed one.
    pub fn close_conversation(&self, id: &str) -> bool {
        let mut state = lock(&self.state);
        let at = state.later();
        let Some(conversation) = state.conversations.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        if conversation.status == "closed" {
            return false;
        }
        conversation.status = "closed";
        conversation.finished_ms = Some(at);
        conversation.updated_ms = at;
        true
    }

    /// Test hook: conversation `id` is served with unreadable `createdAt` / `updatedAt`
    /// (its messages stay readable); `false` for an unknown id.
    pub fn corrupt_conversation(&self, id: &str) -> bool {
        let mut state = lock(&self.state);
        match state.conversations.iter_mut().find(|c| c.id == id) {
            Some(conversation) => {
                conversation.corrupt = true;
                true
            }
            None => false,
        }
    }

    /// Every conversation id, in creation order.
    pub fn conversation_ids(&self) -> Vec<String> {
        lock(&self.state)
            .conversations
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// Every conversation as the API serves it, in creation order.
    pub fn conversations(&self) -> Vec<Value> {
        lock(&self.state)
            .conversations
            .iter()
            .map(Conversation::to_json)
            .collect()
    }

    /// A conversation's messages as the API serves them, oldest first.
    pub fn messages(&self, id: &str) -> Vec<Value> {
        lock(&self.state)
            .conversations
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.messages.iter().map(|m| m.to_json(c)).collect())
            .unwrap_or_default()
    }

    /// How many messages all conversations hold.
    pub fn message_count(&self) -> usize {
        lock(&self.state)
            .conversations
            .iter()
            .map(|c| c.messages.len())
            .sum()
    }

    /// The axum router of the API.
    pub fn router(&self) -> Router {
        Router::new()
            // SPEC paths./v2/conversations/search.post
            .route("/v2/conversations/search", post(search))
            // SPEC paths./v2/conversations/{id}/messages.get
            .route("/v2/conversations/{id}/messages", get(messages))
            .with_state(self.clone())
    }

    /// Serves [`FakeSmartsupp::router`] on loopback behind the recording and fault layer.
    pub async fn start(&self) -> std::io::Result<FakeServer> {
        FakeServer::start(self.router()).await
    }

    /// Checks auth and the rate limit: `Err` is the response to send. SPEC
    /// `securitySchemes.cookieAuth` (cookie `jwt_access_token`) or a Bearer token.
    fn admit(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut state = lock(&self.state);
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("jwt_access_token="));
        let token = state.token.as_str();
        if bearer != Some(token) && cookie != Some(token) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The access token is missing, invalid or expired",
            ));
        }
        if let Some(retry_after) = state.rate_limited() {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Rate limit exceeded, retry later",
            );
            response.retry_after = Some(retry_after);
            return Err(response);
        }
        Ok(())
    }
}

/// An error answer: SPEC `error_payload` `{"code", "message"}` with its status (and
/// `Retry-After` for a 429).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"code": self.code, "message": self.message}));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = secs.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        code,
        message: message.to_owned(),
        retry_after: None,
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "bad_request", &message.into())
}

/// SPEC: the search sorts by `createdAt` or `finishedAt` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    CreatedAt,
    FinishedAt,
}

/// A time given as RFC 3339 text or milliseconds; `null` is an open bound.
fn bound(value: &Value) -> Result<Option<i64>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad_request("a time bound must be whole milliseconds")),
        Value::String(text) => Timestamp::parse_rfc3339(text)
            .map(|t| Some(t.as_millis()))
            .ok_or_else(|| bad_request(format!("{text:?} is not an ISO 8601 date"))),
        _ => Err(bad_request(
            "a time bound must be a string, a number or null",
        )),
    }
}

type Filter = Box<dyn Fn(&Conversation) -> bool + Send>;

fn range_filter(field: &str, from: Option<i64>, to: Option<i64>) -> Filter {
    let field = field.to_owned();
    Box::new(move |c: &Conversation| {
        let at = match field.as_str() {
            "updatedAt" => Some(c.updated_ms),
            "createdAt" => Some(c.created_ms),
            _ => c.finished_ms,
        };
        at.is_some_and(|at| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t))
    })
}

/// One SPEC `query` item `{field, value, op}`.
fn parse_filter(filter: &Value) -> Result<Filter, ApiError> {
    let field = filter
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("every query filter needs a string `field`"))?;
    let value = filter.get("value").unwrap_or(&Value::Null);
    let positive: Filter = match field {
        "updatedAt" | "createdAt" | "finishedAt" => {
            let Some([from, to]) = value.as_array().map(Vec::as_slice) else {
                return Err(bad_request(format!(
                    "the `{field}` filter needs a value [from, to]"
                )));
            };
            range_filter(field, bound(from)?, bound(to)?)
        }
        "status" | "contactId" => {
            let wanted: Vec<String> = match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => {
                    return Err(bad_request(format!(
                        "the `{field}` filter needs a string or strings"
                    )));
                }
            };
            if field == "status" {
                Box::new(move |c: &Conversation| wanted.iter().any(|w| w == c.status))
            } else {
                Box::new(move |c: &Conversation| wanted.contains(&c.contact_id))
            }
        }
        other => return Err(bad_request(format!("unknown query field {other:?}"))),
    };
    match filter.get("op").and_then(Value::as_str) {
        None | Some("must") => Ok(positive),
        Some("must_not") => Ok(Box::new(move |c: &Conversation| !positive(c))),
        Some(other) => Err(bad_request(format!(
            "op is \"must\" or \"must_not\", not {other:?}"
        ))),
    }
}

/// SPEC `filters`: `dateFrom` / `dateTo` (on `createdAt`, assumed) and `contactId`.
fn parse_filters(filters: &Value) -> Result<Vec<Filter>, ApiError> {
    let mut out = Vec::new();
    let Some(filters) = filters.as_object() else {
        return match filters {
            Value::Null => Ok(out),
            _ => Err(bad_request("filters must be an object")),
        };
    };
    let from = bound(filters.get("dateFrom").unwrap_or(&Value::Null))?;
    let to = bound(filters.get("dateTo").unwrap_or(&Value::Null))?;
    if from.is_some() || to.is_some() {
        out.push(range_filter("createdAt", from, to));
    }
    if let Some(contact) = filters.get("contactId").and_then(Value::as_str) {
        let contact = contact.to_owned();
        out.push(Box::new(move |c: &Conversation| c.contact_id == contact));
    }
    Ok(out)
}

/// SPEC `after`: an array of numbers (the previous response's), nullable.
fn parse_after(value: Option<&Value>) -> Result<Option<(i64, Option<i64>)>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut numbers = items.iter().map(Value::as_i64);
            let Some(Some(time)) = numbers.next() else {
                return Err(bad_request("after must be an array of numbers"));
            };
            match numbers.next() {
                None => Ok(Some((time, None))),
                Some(Some(tie)) => Ok(Some((time, Some(tie)))),
                Some(None) => Err(bad_request("after must be an array of numbers")),
            }
        }
        Some(_) => Err(bad_request("after must be an array of numbers")),
    }
}

/// Whether `key` comes strictly after `after` in the given direction.
fn is_after(key: (i64, i64), after: (i64, Option<i64>), ascending: bool) -> bool {
    let ordering = match after.1 {
        Some(tie) => key.cmp(&(after.0, tie)),
        None => key.0.cmp(&after.0),
    };
    if ascending {
        ordering.is_gt()
    } else {
        ordering.is_lt()
    }
}

async fn search(
    State(fake): State<FakeSmartsupp>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    fake.admit(&headers)?;
    let body: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) | Err(_) => return Err(bad_request("the body must be a JSON object")),
    };
    let max = if params.get("allowExtraSize").map(String::as_str) == Some("true") {
        usize::MAX
    } else {
        MAX_PAGE_SIZE
    };
    let size = match body.get("size") {
        None | Some(Value::Null) => DEFAULT_PAGE_SIZE,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad_request(format!("size must be between 1 and {max}")))?,
    };
    let (field, ascending) = match body.get("sort") {
        None | Some(Value::Null) => (SortField::CreatedAt, false),
        Some(Value::Array(sorts)) => {
            let Some((name, direction)) = sorts
                .first()
                .and_then(Value::as_object)
                .and_then(|o| o.iter().next())
            else {
                return Err(bad_request("sort must be an array of {field: direction}"));
            };
            let field = match name.as_str() {
                "createdAt" => SortField::CreatedAt,
                "finishedAt" => SortField::FinishedAt,
                other => {
                    return Err(bad_request(format!(
                        "cannot sort by {other:?}: sortable fields are createdAt and finishedAt"
                    )));
                }
            };
            match direction.as_str() {
                Some("asc") => (field, true),
                Some("desc") => (field, false),
                _ => return Err(bad_request("a sort direction is \"asc\" or \"desc\"")),
            }
        }
        Some(_) => return Err(bad_request("sort must be an array of {field: direction}")),
    };
    let after = parse_after(body.get("after"))?;
    let mut filters = parse_filters(body.get("filters").unwrap_or(&Value::Null))?;
    match body.get("query") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                filters.push(parse_filter(item)?);
            }
        }
        Some(_) => return Err(bad_request("query must be an array of filters")),
    }

    let state = lock(&fake.state);
    let mut matching: Vec<&Conversation> = state
        .conversations
        .iter()
        .filter(|c| filters.iter().all(|f| f(c)))
        .collect();
    matching.sort_by(|a, b| {
        let order = a.sort_key(field).cmp(&b.sort_key(field));
        if ascending { order } else { order.reverse() }
    });
    let total = matching.len();
    let rest: Vec<&Conversation> = matching
        .into_iter()
        .filter(|c| after.is_none_or(|a| is_after(c.sort_key(field), a, ascending)))
        .collect();
    let page = &rest[..rest.len().min(size)];
    let next = match page.last() {
        Some(last) if rest.len() > page.len() => {
            let (time, tie) = last.sort_key(field);
            json!([time, tie])
        }
        _ => Value::Null,
    };
    Ok(Json(json!({
        "after": next,
        "items": page.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        "total": total,
    }))
    .into_response())
}

async fn messages(
    State(fake): State<FakeSmartsupp>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    fake.admit(&headers)?;
    let size = match query.get("size") {
        None => DEFAULT_MESSAGES_PAGE_SIZE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_MESSAGES_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "size must be between 1 and {MAX_MESSAGES_PAGE_SIZE}"
                )));
            }
        },
    };
    let ascending = match query.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(bad_request("order is \"asc\" or \"desc\"")),
    };
    let after = match query.get("after").map(String::as_str) {
        None | Some("") | Some("null") => None,
        Some(text) => match text.parse::<i64>() {
            Ok(time) => Some(time),
            Err(_) => return Err(bad_request("after must be a number")),
        },
    };
    let state = lock(&fake.state);
    let Some(conversation) = state.conversations.iter().find(|c| c.id == id) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Conversation not found",
        ));
    };
    let mut all: Vec<&MessageRecord> = conversation.messages.iter().collect();
    all.sort_by_key(|m| m.created_ms);
    if !ascending {
        all.reverse();
    }
    let rest: Vec<&MessageRecord> = all
        .iter()
        .copied()
        .filter(|m| {
            after.is_none_or(|a| {
                if ascending {
                    m.created_ms > a
                } else {
                    m.created_ms < a
                }
            })
        })
        .collect();
    let page = &rest[..rest.len().min(size)];
    let next = match page.last() {
        Some(last) if rest.len() > page.len() => json!(last.created_ms),
        _ => Value::Null,
    };
    Ok(Json(json!({
        "after": next,
        "items": page.iter().map(|m| m.to_json(conversation)).collect::<Vec<_>>(),
        "total": all.len(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post_search(server: &FakeServer, token: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v2/conversations/search", server.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("reaches the fake");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn created(conversation: &Value) -> i64 {
        conversation["createdAt"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .map(Timestamp::as_millis)
            .unwrap_or_default()
    }

    #[test]
    fn same_seed_same_data_in_the_spec_shape() {
        let a = FakeSmartsupp::new().with_seed(7).with_conversations(30);
        let b = FakeSmartsupp::new().with_seed(7).with_conversations(30);
        let c = FakeSmartsupp::new().with_seed(8).with_conversations(30);
        assert_eq!(a.conversations(), b.conversations());
        assert_ne!(a.conversation_ids(), c.conversation_ids());
        let mut ids = a.conversation_ids();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 30, "ids are unique");
        assert!(a.message_count() >= 30);
        // The fields SPEC's `conversation` and `message` schemas require.
        let conversation = &a.conversations()[0];
        for field in [
            "id",
            "type",
            "status",
            "channel",
            "contactId",
            "visitorId",
            "createdAt",
            "updatedAt",
            "finishedAt",
            "agentIds",
            "assignedIds",
            "groupId",
            "locIp",
            "locCity",
            "locCode",
            "locCountry",
            "rating",
            "referer",
            "domain",
            "userAgent",
            "tags",
            "variables",
            "important",
            "isClosed",
            "isOffline",
            "isServed",
        ] {
            assert!(conversation.get(field).is_some(), "conversation.{field}");
        }
        let message = &a.messages(conversation["id"].as_str().unwrap())[0];
        for field in [
            "id",
            "type",
            "sub_type",
            "channel",
            "chatId",
            "groupId",
            "agentId",
            "visitorId",
            "createdAt",
            "content",
            "trigger",
            "responseTime",
            "deliveryTo",
            "deliveryStatus",
            "deliveryFailReason",
            "deliveredAt",
            "attachments",
        ] {
            assert!(message.get(field).is_some(), "message.{field}");
        }
        for c in a.conversations() {
            if let Some(value) = c["rating"]["value"].as_i64() {
                assert!(RATINGS.contains(&value));
            }
        }
    }

    #[tokio::test]
    async fn search_pages_by_created_at_without_gaps_in_both_orders() {
        let fake = FakeSmartsupp::new().with_conversations(23);
        let server = fake.start().await.expect("starts");
        for direction in ["asc", "desc"] {
            let mut after = Value::Null;
            let mut seen = Vec::new();
            loop {
                let (status, page) = post_search(
                    &server,
                    &fake.token(),
                    json!({"size": 5, "sort": [{"createdAt": direction}], "after": after}),
                )
                .await;
                assert_eq!(status, 200);
                assert_eq!(page["total"], 23);
                let items = page["items"].as_array().expect("items").clone();
                seen.extend(items);
                after = page["after"].clone();
                if after.is_null() {
                    break;
                }
                assert!(
                    after
                        .as_array()
                        .expect("array")
                        .iter()
                        .all(Value::is_number)
                );
            }
            assert_eq!(seen.len(), 23, "{direction}");
            let keys: Vec<i64> = seen.iter().map(created).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if direction == "desc" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{direction} order");
        }
        // SPEC's default sort is createdAt descending; updatedAt is not sortable.
        let (status, page) = post_search(&server, &fake.token(), json!({"size": 250})).await;
        assert_eq!(status, 200);
        let keys: Vec<i64> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(created)
            .collect();
        assert!(keys.windows(2).all(|w| w[0] >= w[1]));
        let (status, body) = post_search(
            &server,
            &fake.token(),
            json!({"sort": [{"updatedAt": "asc"}]}),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
        let (status, _) = post_search(&server, &fake.token(), json!({"size": 251})).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn auth_filters_and_rate_limit() {
        let fake = FakeSmartsupp::new()
            .with_conversations(10)
            .with_rate_limit(4, Duration::from_secs(60));
        let server = fake.start().await.expect("starts");
        let (status, body) = post_search(&server, "wrong", json!({})).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
        // SPEC's cookie authentication works as well.
        let by_cookie = reqwest::Client::new()
            .post(format!("{}/v2/conversations/search", server.base_url()))
            .header("cookie", format!("jwt_access_token={}", fake.token()))
            .json(&json!({}))
            .send()
            .await
            .expect("reaches");
        assert_eq!(by_cookie.status().as_u16(), 200);
        let newest = fake
            .conversations()
            .iter()
            .map(created)
            .max()
            .expect("has conversations");
        let since = Timestamp::from_millis(newest).expect("valid").to_rfc3339();
        let (status, body) = post_search(
            &server,
            &fake.token(),
            json!({"query": [{"field": "createdAt", "value": [since, null]}]}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body["total"].as_u64().is_some_and(|n| (1..10).contains(&n)));
        let (status, _) = post_search(&server, &fake.token(), json!({"size": 0})).await;
        assert_eq!(status, 400);
        // The 401 does not count: the cookie search, the query, the 400 and this call are
        // the 4 allowed.
        let url = format!(
            "{}/v2/conversations/{}/messages",
            server.base_url(),
            fake.conversation_ids()[0]
        );
        let client = reqwest::Client::new();
        let fourth = client.get(&url).bearer_auth(fake.token()).send().await;
        assert_eq!(fourth.expect("reaches").status().as_u16(), 200);
        let response = client
            .get(&url)
            .bearer_auth(fake.token())
            .send()
            .await
            .expect("reaches");
        assert_eq!(response.status().as_u16(), 429);
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)));
    }

    #[tokio::test]
    async fn messages_page_with_a_numeric_after_newest_first_by_default() {
        let fake = FakeSmartsupp::new().with_conversations(3);
        let server = fake.start().await.expect("starts");
        let id = fake.conversation_ids()[1].clone();
        for i in 0..4 {
            fake.add_visitor_message(&id, &format!("Ještě otázka {i}"))
                .expect("known");
        }
        let client = reqwest::Client::new();
        let expected: Vec<String> = fake
            .messages(&id)
            .iter()
            .map(|m| m["id"].as_str().unwrap_or("").to_owned())
            .collect();
        for order in [None, Some("asc")] {
            let mut after: Option<i64> = None;
            let mut ids = Vec::new();
            loop {
                let mut url = format!(
                    "{}/v2/conversations/{id}/messages?size=2",
                    server.base_url()
                );
                if let Some(order) = order {
                    url.push_str(&format!("&order={order}"));
                }
                if let Some(after) = after {
                    url.push_str(&format!("&after={after}"));
                }
                let page: Value = client
                    .get(url)
                    .bearer_auth(fake.token())
                    .send()
                    .await
                    .expect("reaches")
                    .json()
                    .await
                    .expect("json");
                ids.extend(
                    page["items"]
                        .as_array()
                        .expect("items")
                        .iter()
                        .map(|m| m["id"].as_str().unwrap_or("").to_owned()),
                );
                match page["after"].as_i64() {
                    Some(next) => after = Some(next),
                    None => {
                        assert!(page["after"].is_null());
                        break;
                    }
                }
            }
            let mut want = expected.clone();
            if order.is_none() {
                want.reverse();
            }
            assert_eq!(ids, want, "{order:?}");
        }
        let missing = client
            .get(format!(
                "{}/v2/conversations/nope/messages",
                server.base_url()
            ))
            .bearer_auth(fake.token())
            .send()
            .await
            .expect("reaches");
        assert_eq!(missing.status().as_u16(), 404);
        let body: Value = missing.json().await.expect("json");
        assert_eq!(
            body,
            json!({"code": "not_found", "message": "Conversation not found"})
        );
    }
}
