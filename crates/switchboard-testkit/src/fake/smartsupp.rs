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
//! # Endpoints
//!
//! Every request needs `Authorization: Bearer <token>` ([`FakeSmartsupp::token`]); anything
//! else is answered `401 {"code":"unauthorized","message":"..."}`.
//!
//! `POST /v2/conversations/search`, JSON body (Smartsupp's documented search shape, camelCase
//! field names in requests):
//! - `size`: conversations per page, 1 to [`MAX_PAGE_SIZE`] (default [`DEFAULT_PAGE_SIZE`]);
//! - `sort`: `[{"updatedAt": "asc"}]`, `[{"updatedAt": "desc"}]`, or the same with `createdAt`
//!   (default `[{"createdAt": "desc"}]`); only the first entry counts, ties are broken by the
//!   conversation id in the same direction;
//! - `after`: the `after` of the previous response, an array of sort values
//!   `[<sort field in ms>, "<id>"]` (a one-element array compares by the time only);
//! - `query`: an array of filters `{"field": F, "value": V}`: `updatedAt` / `createdAt` /
//!   `finishedAt` with `V = [from, to]` (RFC 3339 or milliseconds, either bound may be `null`,
//!   both inclusive), `status` with `V` a string or an array of strings;
//! - `timezone`: accepted and ignored (every time the fake sends has a trailing `Z`).
//!
//! It answers `{"total": <matching>, "after": [<ms>, "<id>"] | null, "items": [conversation]}`;
//! `after` is the last item's sort values, `null` when the page is empty.
//!
//! `GET /v2/conversations/{id}/messages?size=N&after=<ms>,<id>`: the conversation's messages,
//! oldest first (ties by message id), `size` 1 to [`MAX_PAGE_SIZE`] (default
//! [`DEFAULT_PAGE_SIZE`]), `after` the previous response's `after` joined with a comma. It
//! answers `{"total", "after", "items": [message]}` like the search; 404 for an unknown
//! conversation.
//!
//! Objects use the API's snake_case names: a conversation is `{id, status, created_at,
//! updated_at, finished_at, channel{type, id}, contact_id, visitor_id, agent_ids, assigned_ids,
//! group_id, rating_value, rating_text, domain, referer, is_offline, is_served, tags, variables,
//! location{ip, code, country, city}, last_message{text, created_at}}`; a message is `{id,
//! created_at, updated_at, type: "message", sub_type (contact | agent | trigger | bot),
//! conversation_id, visitor_id, agent_id, content{type: "text", text}, trigger_id,
//! trigger_name, attachments, page_url}`. Times are RFC 3339 UTC with milliseconds.
//!
//! # Assumptions
//!
//! Smartsupp documents the search body (`size`, `sort`, `after`, `query`, `timezone`) and the
//! response (`items`, `after`, `total`), Bearer tokens, 401 for a bad token and 429 when over
//! its limits, but not the exact limit, the error body, the messages endpoint's paging nor the
//! tie-breaking of equal sort values. The fake assumes: an error body `{"code", "message"}`; a
//! fixed-window limit only when set with [`FakeSmartsupp::with_rate_limit`] (429 with
//! `Retry-After` in whole seconds until the window ends); `after` carries the id as a
//! tie-breaker (as an Elasticsearch `search_after` with an id sort would); messages paged like
//! the search, with `after` in the query string.

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

/// The page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page size the fake accepts.
pub const MAX_PAGE_SIZE: usize = 100;
/// The access token a new fake accepts.
pub const DEFAULT_TOKEN: &str = "smartsupp-fake-token-6f2d";
/// The time of the first seeded conversation: 2024-05-01T00:00:00Z.
pub const SEED_START_MS: i64 = 1_714_521_600_000;

/// A seeded conversation and its messages.
#[derive(Debug, Clone)]
struct Conversation {
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
            let value = 1 + self.random(5) as i64;
            (value, if value > 3 { "Díky!" } else { "" }.to_owned())
        });
        let tags = if self.random(5) == 0 {
            vec!["vip".to_owned()]
        } else {
            Vec::new()
        };
        Conversation {
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
        }
    }

    fn add(&mut self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for nth in 0..count {
            let index = self.next_index;
            self.next_index += 1;
            // Starts spread over time, but the updates interleave (long chats end later than
            // short chats that began after them), and every 7th conversation ends at the same
            // millisecond as the one made before it in the same call, so sort ties are
            // exercised (conversations made by earlier calls never change).
            let start = self.clock_ms + self.random(30 * 60_000) as i64;
            let mut conversation = self.make_conversation(index, start);
            if index % 7 == 6 && nth > 0 {
                if let Some(previous) = self.conversations.last_mut() {
                    let target = previous.updated_ms.max(conversation.updated_ms);
                    for tied in [&mut *previous, &mut conversation] {
                        tied.updated_ms = target;
                        if let Some(finished) = tied.finished_ms.as_mut() {
                            *finished = target;
                        }
                    }
                }
            }
            self.clock_ms += 10 * 60_000;
            self.clock_ms = self.clock_ms.max(conversation.updated_ms - 20 * 60_000);
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
            .map(|c| c.updated_ms)
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
    fn to_json(&self) -> Value {
        let last = self.messages.last();
        json!({
            "id": self.id,
            "ext_id": null,
            "status": self.status,
            "unread": false,
            "created_at": rfc3339(self.created_ms),
            "updated_at": rfc3339(self.updated_ms),
            "finished_at": self.finished_ms.map(rfc3339),
            "channel": {"type": "default", "id": null},
            "contact_id": self.contact_id,
            "visitor_id": self.visitor_id,
            "agent_ids": self.agent_ids,
            "assigned_ids": self.agent_ids,
            "group_id": null,
            "rating_value": self.rating.as_ref().map(|r| r.0),
            "rating_text": self.rating.as_ref().map(|r| r.1.clone()),
            "domain": "shop.example.cz",
            "referer": "https://www.google.com/",
            "is_offline": self.is_offline,
            "is_served": !self.agent_ids.is_empty(),
            "tags": self.tags,
            "variables": {"orderCount": 3},
            "location": {"ip": "89.235.0.55", "code": "CZ", "country": "Czechia", "city": "Brno"},
            "last_message": last.map(|m| json!({"text": m.text, "created_at": rfc3339(m.created_ms)})),
        })
    }

    fn sort_ms(&self, field: SortField) -> i64 {
        match field {
            SortField::UpdatedAt => self.updated_ms,
            SortField::CreatedAt => self.created_ms,
        }
    }
}

impl MessageRecord {
    fn to_json(&self, conversation: &Conversation) -> Value {
        json!({
            "id": self.id,
            "ext_id": null,
            "created_at": rfc3339(self.created_ms),
            "updated_at": rfc3339(self.created_ms),
            "type": "message",
            "sub_type": self.sub_type,
            "conversation_id": conversation.id,
            "visitor_id": (self.sub_type == "contact").then(|| conversation.visitor_id.clone()),
            "agent_id": self.agent_id,
            "content": {"type": "text", "text": self.text},
            "trigger_id": self.trigger.as_ref().map(|t| t.0.clone()),
            "trigger_name": self.trigger.as_ref().map(|t| t.1.clone()),
            "is_offline": conversation.is_offline,
            "attachments": [],
            "page_url": "https://shop.example.cz/",
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

    /// Adds `count` conversations, all updated after every existing one; returns their ids.
    pub fn add_conversations(&self, count: usize) -> Vec<String> {
        let mut state = lock(&self.state);
        let later = state.later();
        state.clock_ms = later;
        state.add(count)
    }

    /// A visitor writes again in conversation `id`: one new message, `updated_at` moves past
    /// every time handed out so far. Returns the new message's id, or `None` for an unknown id.
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
        Some(message_id)
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
            .route("/v2/conversations/search", post(search))
            .route("/v2/conversations/{id}/messages", get(messages))
            .with_state(self.clone())
    }

    /// Serves [`FakeSmartsupp::router`] on loopback behind the recording and fault layer.
    pub async fn start(&self) -> std::io::Result<FakeServer> {
        FakeServer::start(self.router()).await
    }

    /// Checks auth and the rate limit: `Err` is the response to send.
    fn admit(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut state = lock(&self.state);
        let expected = format!("Bearer {}", state.token);
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(expected.as_str()) {
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

/// An error answer: `{"code", "message"}` with its status (and `Retry-After` for a 429).
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
        if let Some(secs) = self.retry_after {
            if let Ok(value) = secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    UpdatedAt,
    CreatedAt,
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

fn parse_filter(filter: &Value) -> Result<Filter, ApiError> {
    let field = filter
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("every query filter needs a string `field`"))?;
    let value = filter.get("value").unwrap_or(&Value::Null);
    match field {
        "updatedAt" | "createdAt" | "finishedAt" => {
            let Some([from, to]) = value.as_array().map(Vec::as_slice) else {
                return Err(bad_request(format!(
                    "the `{field}` filter needs a value [from, to]"
                )));
            };
            let (from, to) = (bound(from)?, bound(to)?);
            let field = field.to_owned();
            Ok(Box::new(move |c: &Conversation| {
                let at = match field.as_str() {
                    "updatedAt" => Some(c.updated_ms),
                    "createdAt" => Some(c.created_ms),
                    _ => c.finished_ms,
                };
                at.is_some_and(|at| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t))
            }))
        }
        "status" => {
            let wanted: Vec<String> = match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => return Err(bad_request("the `status` filter needs a string or strings")),
            };
            Ok(Box::new(move |c: &Conversation| {
                wanted.iter().any(|w| w == c.status)
            }))
        }
        other => Err(bad_request(format!("unknown query field {other:?}"))),
    }
}

fn page_size(value: Option<&Value>) -> Result<usize, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(DEFAULT_PAGE_SIZE),
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| bad_request(format!("size must be between 1 and {MAX_PAGE_SIZE}"))),
    }
}

/// `after` as (time, optional id).
fn parse_after(value: Option<&Value>) -> Result<Option<(i64, Option<String>)>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let time = items
                .first()
                .and_then(Value::as_i64)
                .ok_or_else(|| bad_request("after must start with a time in milliseconds"))?;
            let id = match items.get(1) {
                None => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => return Err(bad_request("after's second value must be an id")),
            };
            Ok(Some((time, id)))
        }
        Some(_) => Err(bad_request(
            "after must be the array of a previous response",
        )),
    }
}

/// Whether `(time, id)` comes strictly after `after` in the given direction.
fn is_after(time: i64, id: &str, after: &(i64, Option<String>), ascending: bool) -> bool {
    let ordering = match &after.1 {
        Some(after_id) => (time, id).cmp(&(after.0, after_id.as_str())),
        None => time.cmp(&after.0),
    };
    if ascending {
        ordering.is_gt()
    } else {
        ordering.is_lt()
    }
}

async fn search(
    State(fake): State<FakeSmartsupp>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    fake.admit(&headers)?;
    let body: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) | Err(_) => return Err(bad_request("the body must be a JSON object")),
    };
    let size = page_size(body.get("size"))?;
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
                "updatedAt" => SortField::UpdatedAt,
                "createdAt" => SortField::CreatedAt,
                other => return Err(bad_request(format!("cannot sort by {other:?}"))),
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
    let mut filters = Vec::new();
    match body.get("query") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match parse_filter(item) {
                    Ok(filter) => filters.push(filter),
                    Err(response) => return Err(response),
                }
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
        let order = (a.sort_ms(field), &a.id).cmp(&(b.sort_ms(field), &b.id));
        if ascending { order } else { order.reverse() }
    });
    let total = matching.len();
    let page: Vec<&Conversation> = matching
        .into_iter()
        .filter(|c| {
            after
                .as_ref()
                .is_none_or(|a| is_after(c.sort_ms(field), &c.id, a, ascending))
        })
        .take(size)
        .collect();
    let next = page.last().map(|c| json!([c.sort_ms(field), c.id]));
    Ok(Json(json!({
        "total": total,
        "after": next,
        "items": page.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
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
        None => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "size must be between 1 and {MAX_PAGE_SIZE}"
                )));
            }
        },
    };
    let after = match query.get("after") {
        None => None,
        Some(text) => {
            let (time, id) = text.split_once(',').unwrap_or((text, ""));
            match time.parse::<i64>() {
                Ok(time) => Some((time, (!id.is_empty()).then(|| id.to_owned()))),
                Err(_) => return Err(bad_request("after must be <milliseconds>,<id>")),
            }
        }
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
    all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    let page: Vec<&MessageRecord> = all
        .iter()
        .copied()
        .filter(|m| {
            after
                .as_ref()
                .is_none_or(|a| is_after(m.created_ms, &m.id, a, true))
        })
        .take(size)
        .collect();
    let next = page.last().map(|m| json!([m.created_ms, m.id]));
    Ok(Json(json!({
        "total": all.len(),
        "after": next,
        "items": page.iter().map(|m| m.to_json(conversation)).collect::<Vec<_>>(),
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

    #[test]
    fn same_seed_same_data() {
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
    }

    #[tokio::test]
    async fn search_pages_without_gaps_in_both_orders() {
        let fake = FakeSmartsupp::new().with_conversations(23);
        let server = fake.start().await.expect("starts");
        for direction in ["asc", "desc"] {
            let mut after = Value::Null;
            let mut seen = Vec::new();
            loop {
                let (status, page) = post_search(
                    &server,
                    &fake.token(),
                    json!({"size": 5, "sort": [{"updatedAt": direction}], "after": after}),
                )
                .await;
                assert_eq!(status, 200);
                assert_eq!(page["total"], 23);
                let items = page["items"].as_array().expect("items").clone();
                if items.is_empty() {
                    assert!(page["after"].is_null());
                    break;
                }
                seen.extend(items);
                after = page["after"].clone();
            }
            assert_eq!(seen.len(), 23, "{direction}");
            let keys: Vec<(i64, String)> = seen
                .iter()
                .map(|c| {
                    let at = c["updated_at"].as_str().and_then(Timestamp::parse_rfc3339);
                    (
                        at.map(Timestamp::as_millis).unwrap_or_default(),
                        c["id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if direction == "desc" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{direction} order");
        }
    }

    #[tokio::test]
    async fn bad_token_filters_and_rate_limit() {
        let fake = FakeSmartsupp::new()
            .with_conversations(10)
            .with_rate_limit(3, Duration::from_secs(60));
        let server = fake.start().await.expect("starts");
        let (status, body) = post_search(&server, "wrong", json!({})).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
        let newest = fake
            .conversations()
            .iter()
            .filter_map(|c| c["updated_at"].as_str().and_then(Timestamp::parse_rfc3339))
            .max()
            .expect("has conversations");
        let (status, body) = post_search(
            &server,
            &fake.token(),
            json!({"query": [{"field": "updatedAt", "value": [newest.to_rfc3339(), null]}]}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body["total"].as_u64().is_some_and(|n| (1..10).contains(&n)));
        let (status, _) = post_search(&server, &fake.token(), json!({"size": 0})).await;
        assert_eq!(status, 400);
        // The 401 does not count: the search, the 400 and this call are the 3 allowed.
        let url = format!(
            "{}/v2/conversations/{}/messages",
            server.base_url(),
            fake.conversation_ids()[0]
        );
        let client = reqwest::Client::new();
        let third = client.get(&url).bearer_auth(fake.token()).send().await;
        assert_eq!(third.expect("reaches").status().as_u16(), 200);
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
    async fn messages_page_and_grow() {
        let fake = FakeSmartsupp::new().with_conversations(3);
        let server = fake.start().await.expect("starts");
        let id = fake.conversation_ids()[1].clone();
        let before = fake.conversations()[1]["updated_at"].clone();
        let new_id = fake
            .add_visitor_message(&id, "Ještě jedna otázka")
            .expect("known");
        assert_ne!(fake.conversations()[1]["updated_at"], before);
        let client = reqwest::Client::new();
        let mut after: Option<String> = None;
        let mut ids = Vec::new();
        loop {
            let mut url = format!(
                "{}/v2/conversations/{id}/messages?size=2",
                server.base_url()
            );
            if let Some(after) = &after {
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
            let items = page["items"].as_array().expect("items");
            if items.is_empty() {
                break;
            }
            ids.extend(
                items
                    .iter()
                    .map(|m| m["id"].as_str().unwrap_or("").to_owned()),
            );
            after = Some(format!(
                "{},{}",
                page["after"][0],
                page["after"][1].as_str().unwrap_or("")
            ));
        }
        let expected: Vec<String> = fake
            .messages(&id)
            .iter()
            .map(|m| m["id"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(ids.last(), Some(&new_id));
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
    }
}
