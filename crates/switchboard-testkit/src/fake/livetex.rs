//! A fake LiveTex API: OAuth2 password grant and refresh, and the three tables the LiveTex
//! connector pulls (dialogs, leads, conversations) with an incremental time filter and paging.
//!
//! The seed (a data platform's LiveTex connector) gives the tables' columns and says the
//! connector logs in with the LiveTex account's login and password; it does not give the API.
//! This fake **assumes** the API below, and the LiveTex connector is written against the same
//! assumptions (its README lists them):
//!
//! - `POST /oauth2/token`, form body (`application/x-www-form-urlencoded`):
//!   `grant_type=password&username=<login>&password=<password>` or
//!   `grant_type=refresh_token&refresh_token=<token>`. Success: `200`
//!   `{"access_token", "token_type": "bearer", "expires_in": <seconds>, "refresh_token"}`. A
//!   refresh token is single-use (rotated). Wrong credentials or an unknown refresh token:
//!   `400 {"error": "invalid_grant", "error_description": …}` (RFC 6749 §5.2; `401` with
//!   [`FakeLiveTex::with_refusals_as_401`]); a missing or
//!   unknown `grant_type`: `400 invalid_request` / `unsupported_grant_type`.
//! - `GET /v2/dialogs`, `GET /v2/leads`, `GET /v2/conversations` with
//!   `Authorization: Bearer <access_token>` and the query parameters `updated_from` (RFC 3339
//!   or `YYYY-MM-DD HH:MM:SS` UTC, inclusive), `offset` (default 0) and `limit` (1 to 100,
//!   default 50). Records are ordered by `updated_at`, then by id (`chat_id`, `lead_id`,
//!   `conversation_id`). Answer: `{"total": <matching records>, "offset", "limit",
//!   "items": [<rows>]}`; each row has the seed's columns plus `updated_at`
//!   (`YYYY-MM-DD HH:MM:SS`, UTC: when the record last changed).
//! - A missing token: `401 {"error": "invalid_request"}`; an unknown or expired one:
//!   `401 {"error": "invalid_token", "error_description": …}`, both with a
//!   `WWW-Authenticate: Bearer` header (RFC 6750 §3).
//!
//! Data is deterministic: the same builder calls give the same rows. Records get `updated_at`
//! from a shared clock that starts at 2024-03-01T00:00:00Z and moves one minute every three
//! records, so several records share one second (as on a busy LiveTex account), which is what
//! makes a cursor need a position within a time.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_testkit::fake::livetex::FakeLiveTex;
//! let fake = FakeLiveTex::new().with_conversations(4).with_dialogs(8).with_leads(3);
//! let server = fake.start().await?;
//! // point the connector at server.base_url() with login FakeLiveTex::LOGIN ...
//! fake.expire_tokens(); // the next data call answers 401 invalid_token
//! fake.add_dialogs(2); // new records, later than every existing one
//! assert_eq!(fake.grants().first().map(String::as_str), Some("password"));
//! # drop(server); Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use switchboard_core::Timestamp;
use tokio::time::Instant;

use super::{FakeServer, lock};

/// The first `updated_at` the fake hands out: 2024-03-01T00:00:00Z.
const CLOCK_START: i64 = 1_709_251_200;
/// How many records share one `updated_at`.
const RECORDS_PER_TICK: u64 = 3;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;
/// The `limit` used when none is given.
pub const DEFAULT_LIMIT: usize = 50;

/// One of the three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `/v2/dialogs`, keyed by `chat_id`.
    Dialogs,
    /// `/v2/leads`, keyed by `lead_id`.
    Leads,
    /// `/v2/conversations`, keyed by `conversation_id`.
    Conversations,
}

impl Table {
    /// The path of the table's list endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Table::Dialogs => "/v2/dialogs",
            Table::Leads => "/v2/leads",
            Table::Conversations => "/v2/conversations",
        }
    }

    /// The column holding a row's id.
    pub fn id_column(self) -> &'static str {
        match self {
            Table::Dialogs => "chat_id",
            Table::Leads => "lead_id",
            Table::Conversations => "conversation_id",
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    updated_at: i64,
    id: String,
    row: Value,
}

#[derive(Debug)]
struct LiveTexState {
    login: String,
    password: String,
    token_lifetime: Duration,
    refusal: StatusCode,
    seed: u64,
    tables: BTreeMap<Table, Vec<Record>>,
    added: u64,
    dialogs_made: u64,
    leads_made: u64,
    conversations_made: u64,
    access_tokens: HashMap<String, Instant>,
    refresh_tokens: HashMap<String, ()>,
    tokens_issued: u64,
    grants: Vec<String>,
}

/// The fake LiveTex account: its credentials, its records and the tokens it issued. Cheap to
/// clone; clones share the state, so a test keeps one to add records and expire tokens while
/// the server runs.
#[derive(Debug, Clone)]
pub struct FakeLiveTex {
    state: Arc<Mutex<LiveTexState>>,
}

impl Default for FakeLiveTex {
    fn default() -> Self {
        FakeLiveTex::new()
    }
}

impl FakeLiveTex {
    /// The default account login.
    pub const LOGIN: &'static str = "api@example.ru";
    /// The default account password.
    pub const PASSWORD: &'static str = "lt-pass-4d1e8b";

    /// An account with the default credentials, no records, one-hour tokens and seed 1.
    pub fn new() -> Self {
        FakeLiveTex {
            state: Arc::new(Mutex::new(LiveTexState {
                login: Self::LOGIN.to_owned(),
                password: Self::PASSWORD.to_owned(),
                token_lifetime: Duration::from_secs(3600),
                refusal: StatusCode::BAD_REQUEST,
                seed: 1,
                tables: BTreeMap::new(),
                added: 0,
                dialogs_made: 0,
                leads_made: 0,
                conversations_made: 0,
                access_tokens: HashMap::new(),
                refresh_tokens: HashMap::new(),
                tokens_issued: 0,
                grants: Vec::new(),
            })),
        }
    }

    /// Other credentials.
    pub fn with_credentials(self, login: &str, password: &str) -> Self {
        {
            let mut state = lock(&self.state);
            state.login = login.to_owned();
            password.clone_into(&mut state.password);
        }
        self
    }

    /// How long an access token lives (`expires_in`, rounded up to whole seconds, at least 1).
    pub fn with_token_lifetime(self, lifetime: Duration) -> Self {
        lock(&self.state).token_lifetime = lifetime;
        self
    }

    /// Answers refused grants (`invalid_grant`) with `401` instead of RFC 6749's `400`, as
    /// some OAuth2 servers do.
    pub fn with_refusals_as_401(self) -> Self {
        lock(&self.state).refusal = StatusCode::UNAUTHORIZED;
        self
    }

    /// The seed the generated rows' details (names, ratings, texts) are drawn from. Set it
    /// before adding records.
    pub fn with_seed(self, seed: u64) -> Self {
        lock(&self.state).seed = seed;
        self
    }

    /// Adds `n` dialogs (builder style); see [`FakeLiveTex::add_dialogs`].
    pub fn with_dialogs(self, n: usize) -> Self {
        self.add_dialogs(n);
        self
    }

    /// Adds `n` leads (builder style); see [`FakeLiveTex::add_leads`].
    pub fn with_leads(self, n: usize) -> Self {
        self.add_leads(n);
        self
    }

    /// Adds `n` conversations (builder style); see [`FakeLiveTex::add_conversations`].
    pub fn with_conversations(self, n: usize) -> Self {
        self.add_conversations(n);
        self
    }

    /// Adds `n` dialogs, later than every record so far. Dialog `k` (from 0) is
    /// `c-<10000 + k/2>-<k%2 + 1>`: two dialogs per conversation, the second one closing the
    /// conversation; each has an operator, a rating and two messages. Returns their `chat_id`s.
    pub fn add_dialogs(&self, n: usize) -> Vec<String> {
        lock(&self.state).add(Table::Dialogs, n)
    }

    /// Adds `n` leads, later than every record so far. Lead `k` is `<70000 + k>`; every other
    /// lead belongs to conversation `c-<10000 + k>`. Returns their `lead_id`s.
    pub fn add_leads(&self, n: usize) -> Vec<String> {
        lock(&self.state).add(Table::Leads, n)
    }

    /// Adds `n` conversations, later than every record so far. Conversation `k` is
    /// `c-<10000 + k>` (the conversation of dialogs `2k` and `2k+1`); odd ones are closed.
    /// Returns their `conversation_id`s.
    pub fn add_conversations(&self, n: usize) -> Vec<String> {
        lock(&self.state).add(Table::Conversations, n)
    }

    /// Changes a record: merges `changes` into its row and moves its `updated_at` after every
    /// record so far (as LiveTex does when a dialog is rated or remarked after it closed).
    /// Returns whether the record exists.
    pub fn update(&self, table: Table, id: &str, changes: Value) -> bool {
        let mut state = lock(&self.state);
        let updated_at = state.tick();
        let Some(record) = state
            .tables
            .get_mut(&table)
            .and_then(|records| records.iter_mut().find(|r| r.id == id))
        else {
            return false;
        };
        if let (Value::Object(row), Value::Object(changes)) = (&mut record.row, changes) {
            row.extend(changes);
            row.insert("updated_at".to_owned(), json!(sql_time(updated_at)));
        }
        record.updated_at = updated_at;
        true
    }

    /// Every row of a table as the API serves it, in the API's order.
    pub fn rows(&self, table: Table) -> Vec<Value> {
        let state = lock(&self.state);
        state
            .sorted(table)
            .into_iter()
            .map(|r| r.row.clone())
            .collect()
    }

    /// Makes every access token issued so far expired: the next data call with one answers
    /// `401 invalid_token`. Refresh tokens stay valid.
    pub fn expire_tokens(&self) {
        let mut state = lock(&self.state);
        let past = Instant::now();
        for expires in state.access_tokens.values_mut() {
            *expires = past;
        }
    }

    /// Revokes every refresh token issued so far: a refresh grant answers `400 invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.state).refresh_tokens.clear();
    }

    /// Changes the account's password (tokens already issued stay valid).
    pub fn set_password(&self, password: &str) {
        password.clone_into(&mut lock(&self.state).password);
    }

    /// The `grant_type` of every token request so far, in order (also the refused ones).
    pub fn grants(&self) -> Vec<String> {
        lock(&self.state).grants.clone()
    }

    /// The router implementing the API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth2/token", post(token))
            .route("/v2/dialogs", get(dialogs))
            .route("/v2/leads", get(leads))
            .route("/v2/conversations", get(conversations))
            .with_state(self.clone())
    }

    /// Serves the API with [`FakeServer::start`] (request log and scripted faults).
    pub async fn start(&self) -> std::io::Result<FakeServer> {
        FakeServer::start(self.router()).await
    }
}

/// Builds row `k` of a table from the seed and its `updated_at`.
type MakeRow = fn(u64, u64, i64) -> Value;

impl LiveTexState {
    /// Adds `n` generated rows to `table`, each later than every record so far; returns their
    /// ids. Row `k` of a table is the `k`-th that table ever generated.
    fn add(&mut self, table: Table, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let (made, make_row): (&mut u64, MakeRow) = match table {
                    Table::Dialogs => (&mut self.dialogs_made, dialog_row),
                    Table::Leads => (&mut self.leads_made, lead_row),
                    Table::Conversations => (&mut self.conversations_made, conversation_row),
                };
                let k = *made;
                *made += 1;
                let updated_at = self.tick();
                let row = make_row(self.seed, k, updated_at);
                self.insert(table, updated_at, row)
            })
            .collect()
    }

    fn tick(&mut self) -> i64 {
        let tick = i64::try_from(self.added / RECORDS_PER_TICK).unwrap_or(i64::MAX / 120);
        self.added += 1;
        CLOCK_START + tick * 60
    }

    fn insert(&mut self, table: Table, updated_at: i64, row: Value) -> String {
        let id = row
            .get(table.id_column())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.tables.entry(table).or_default().push(Record {
            updated_at,
            id: id.clone(),
            row,
        });
        id
    }

    fn sorted(&self, table: Table) -> Vec<&Record> {
        let mut records: Vec<&Record> = self
            .tables
            .get(&table)
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        records.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
        records
    }

    fn issue(&mut self) -> Value {
        self.tokens_issued += 1;
        let n = self.tokens_issued;
        let access = format!("lt-at-{n:06}");
        let refresh = format!("lt-rt-{n:06}");
        let lifetime = self.token_lifetime;
        self.access_tokens
            .insert(access.clone(), Instant::now() + lifetime);
        self.refresh_tokens.insert(refresh.clone(), ());
        let expires_in = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": expires_in.max(1),
            "refresh_token": refresh,
        })
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = format!("Bearer realm=\"livetex\", error=\"{error}\"");
        if let Ok(value) = challenge.parse() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// `application/x-www-form-urlencoded` body to pairs (`+` is a space, `%XX` a byte).
fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn token(State(fake): State<FakeLiveTex>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let mut state = lock(&fake.state);
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    state.grants.push(grant.clone());
    match grant.as_str() {
        "password" => {
            let login_ok = form.get("username") == Some(&state.login);
            let password_ok = form.get("password") == Some(&state.password);
            if login_ok && password_ok {
                Json(state.issue()).into_response()
            } else {
                oauth_error(
                    state.refusal,
                    "invalid_grant",
                    "Invalid username or password",
                )
            }
        }
        "refresh_token" => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if state.refresh_tokens.remove(&presented).is_some() {
                Json(state.issue()).into_response()
            } else {
                oauth_error(state.refusal, "invalid_grant", "Invalid refresh token")
            }
        }
        "" => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only password and refresh_token grants are supported",
        ),
    }
}

/// `None` when the bearer token is valid, else the 401 to answer.
fn refusal(fake: &FakeLiveTex, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(presented) = presented else {
        return Some(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "The access token is missing",
        ));
    };
    let state = lock(&fake.state);
    match state.access_tokens.get(presented.trim()) {
        Some(expires) if Instant::now() < *expires => None,
        Some(_) => Some(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token expired",
        )),
        None => Some(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is invalid",
        )),
    }
}

fn parse_time(text: &str) -> Option<i64> {
    Timestamp::parse_rfc3339(text)
        .or_else(|| Timestamp::parse_sql_utc(text))
        .map(|t| t.as_millis().div_euclid(1000))
}

fn list(
    fake: &FakeLiveTex,
    table: Table,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if let Some(refused) = refusal(fake, headers) {
        return refused;
    }
    let bad =
        |description: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let from = match query.get("updated_from").filter(|v| !v.is_empty()) {
        None => i64::MIN,
        Some(text) => match parse_time(text) {
            Some(secs) => secs,
            None => return bad("updated_from must be an RFC 3339 or YYYY-MM-DD HH:MM:SS time"),
        },
    };
    let offset = match query.get("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return bad("offset must be a non-negative integer"),
    };
    let limit = match query.get("limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => return bad("limit must be an integer from 1 to 100"),
    };
    let state = lock(&fake.state);
    let matching: Vec<&Record> = state
        .sorted(table)
        .into_iter()
        .filter(|r| r.updated_at >= from)
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| r.row.clone())
        .collect();
    Json(json!({
        "total": matching.len(),
        "offset": offset,
        "limit": limit,
        "items": items,
    }))
    .into_response()
}

async fn dialogs(
    State(fake): State<FakeLiveTex>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&fake, Table::Dialogs, &headers, &query)
}

async fn leads(
    State(fake): State<FakeLiveTex>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&fake, Table::Leads, &headers, &query)
}

async fn conversations(
    State(fake): State<FakeLiveTex>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&fake, Table::Conversations, &headers, &query)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of epoch seconds, as LiveTex writes dates.
fn sql_time(secs: i64) -> String {
    let text = Timestamp::from_secs(secs)
        .unwrap_or(Timestamp::MIN)
        .to_rfc3339();
    text.get(..19).unwrap_or(&text).replacen('T', " ", 1)
}

/// SplitMix64: a small, well-mixed deterministic generator for the rows' details.
fn mix(seed: u64, stream: u64, k: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(k.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(options: &[&'a str], r: u64) -> &'a str {
    let len = u64::try_from(options.len()).unwrap_or(1).max(1);
    options
        .get(usize::try_from(r % len).unwrap_or(0))
        .copied()
        .unwrap_or_default()
}

const VISITORS: [&str; 6] = ["Мария", "Олег", "Светлана", "Иван", "Анна", "Дмитрий"];
const OPERATORS: [(u64, &str, &str); 3] = [
    (501, "Анна", "Смирнова"),
    (502, "Игорь", "Петров"),
    (503, "Елена", "Ковалёва"),
];
const QUESTIONS: [&str; 4] = [
    "Здравствуйте, где мой заказ?",
    "Хочу вернуть товар",
    "Есть ли доставка в Казань?",
    "Как изменить адрес доставки?",
];
const CHANNELS: [&str; 3] = ["chat", "telegram", "vk"];

fn dialog_row(seed: u64, k: u64, updated_at: i64) -> Value {
    let r = mix(seed, 1, k);
    let conversation = 10_000 + k / 2;
    let number = k % 2 + 1;
    let chat_id = format!("c-{conversation}-{number}");
    let created = updated_at - 600;
    let closed = updated_at - 60;
    let (employee_id, first, last) = OPERATORS[usize::try_from(r % 3).unwrap_or(0)];
    let visitor_id = format!("v-{}", 500 + conversation);
    let visitor = pick(&VISITORS, r >> 8);
    let question = pick(&QUESTIONS, r >> 16);
    let rating = i64::try_from((r >> 24) % 5).unwrap_or(0) + 1;
    json!({
        "chat_id": chat_id,
        "conversation_id": format!("c-{conversation}"),
        "created_at": sql_time(created),
        "closed_at": sql_time(closed),
        "is_closed": number == 2,
        "updated_at": sql_time(updated_at),
        "site_id": 3101,
        "site_url": "shop.example.ru",
        "duration": closed - created,
        "rating_value": rating,
        "rating_type": "stars",
        "answer_time_avg": 10 + (r >> 32) % 50,
        "first_answer_time": 5 + (r >> 40) % 30,
        "conversation_int_referer": "https://shop.example.ru/catalog",
        "conversation_result": "served",
        "conversation_visitor_id": visitor_id,
        "conversation_created_at": sql_time(created - 30),
        "employee_id": employee_id,
        "employee_first_name": first,
        "employee_last_name": last,
        "employee_email": format!("operator{employee_id}@example.ru"),
        "result": "served",
        "communication_type": pick(&CHANNELS, r >> 48),
        "visitor_id": visitor_id,
        "visitor_name": visitor,
        "prechats_chat": [{"name": "Имя", "value": visitor}],
        "message_count": 2,
        "first_message_id": format!("m-{k}-1"),
        "first_message_text": question,
        "first_message_created_at": sql_time(created),
        "first_message_creator": "visitor",
        "messages": [
            {"id": format!("m-{k}-1"), "text": question, "created_at": sql_time(created), "creator": "visitor"},
            {"id": format!("m-{k}-2"), "text": format!("{visitor}, здравствуйте! Сейчас проверю."),
             "created_at": sql_time(created + 20), "creator": "employee"},
        ],
    })
}

fn lead_row(seed: u64, k: u64, updated_at: i64) -> Value {
    let r = mix(seed, 2, k);
    let lead_id = format!("{}", 70_000 + k);
    let created = updated_at - 3600;
    let name = pick(&VISITORS, r);
    let mut row = json!({
        "lead_id": lead_id,
        "name": name,
        "email": format!("lead{k}@example.ru"),
        "phone": format!("+7 900 {:03}-{:02}-{:02}", r % 1000, (r >> 10) % 100, (r >> 20) % 100),
        "site_id": 3101,
        "site_url": "shop.example.ru",
        "lead_type": "offline_form",
        "assigned_to": OPERATORS[usize::try_from((r >> 30) % 3).unwrap_or(0)].0,
        "text": pick(&QUESTIONS, r >> 34),
        "created_at": sql_time(created),
        "updated_at": sql_time(updated_at),
        "is_managed": true,
        "utm_source": pick(&["yandex", "google", "vk"], r >> 40),
        "utm_medium": "cpc",
        "utm_campaign": "spring",
    });
    if k % 2 == 0 {
        if let Value::Object(map) = &mut row {
            let conversation = 10_000 + k;
            map.insert(
                "conversation_id".to_owned(),
                json!(format!("c-{conversation}")),
            );
            map.insert(
                "conversation_visitor_id".to_owned(),
                json!(format!("v-{}", 500 + conversation)),
            );
            map.insert("completed_by".to_owned(), json!(502));
            map.insert("closed_at".to_owned(), json!(sql_time(updated_at)));
            map.insert("result".to_owned(), json!(3600));
        }
    }
    row
}

fn conversation_row(seed: u64, k: u64, updated_at: i64) -> Value {
    let r = mix(seed, 3, k);
    let conversation = 10_000 + k;
    let created = updated_at - 1200;
    let closed = (k % 2 == 1).then(|| sql_time(updated_at));
    json!({
        "conversation_id": format!("c-{conversation}"),
        "conversation_creation_time": sql_time(created),
        "conversation_closed_time": closed,
        "updated_at": sql_time(updated_at),
        "conversation_custom_info": {"order_id": format!("A-{}", r % 10_000)},
        "discourser_id": format!("v-{}", 500 + conversation),
        "discourser_info": {"name": pick(&VISITORS, r >> 16), "city": pick(&["Москва", "Казань", "Пермь"], r >> 24)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let form = form_pairs(b"grant_type=password&username=a%40b.ru&password=p+q%26r%3D&x");
        assert_eq!(form["grant_type"], "password");
        assert_eq!(form["username"], "a@b.ru");
        assert_eq!(form["password"], "p q&r=");
        assert_eq!(form["x"], "");
        assert_eq!(form_pairs(b"a=%4")["a"], "%4");
    }

    #[test]
    fn rows_are_deterministic_and_share_times() {
        let one = FakeLiveTex::new().with_dialogs(4).with_leads(2);
        let two = FakeLiveTex::new().with_dialogs(4).with_leads(2);
        assert_eq!(one.rows(Table::Dialogs), two.rows(Table::Dialogs));
        assert_eq!(one.rows(Table::Leads), two.rows(Table::Leads));
        let other = FakeLiveTex::new().with_seed(9).with_dialogs(4);
        assert_ne!(one.rows(Table::Dialogs), other.rows(Table::Dialogs));
        let times: Vec<Value> = one
            .rows(Table::Dialogs)
            .iter()
            .map(|r| r["updated_at"].clone())
            .collect();
        assert_eq!(times[0], times[2]);
        assert_ne!(times[2], times[3]);
        assert_eq!(times[0], json!("2024-03-01 00:00:00"));
    }

    #[test]
    fn updates_move_a_record_last() {
        let fake = FakeLiveTex::new().with_dialogs(3);
        assert!(fake.update(Table::Dialogs, "c-10000-1", json!({"rating_value": 1})));
        assert!(!fake.update(Table::Dialogs, "nope", json!({})));
        let rows = fake.rows(Table::Dialogs);
        assert_eq!(rows[2]["chat_id"], "c-10000-1");
        assert_eq!(rows[2]["rating_value"], 1);
        assert_eq!(rows[2]["updated_at"], "2024-03-01 00:01:00");
    }

    #[tokio::test]
    async fn password_grant_paging_and_expiry_over_http() {
        let fake = FakeLiveTex::new().with_dialogs(5);
        let server = fake.start().await.expect("fake starts");
        let http = reqwest::Client::new();
        let base = server.base_url();
        let token = |form: &'static str| {
            http.post(format!("{base}/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
        };
        let refused = token("grant_type=password&username=api%40example.ru&password=nope")
            .await
            .expect("reaches");
        assert_eq!(refused.status().as_u16(), 400);
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
        let granted: Value =
            token("grant_type=password&username=api%40example.ru&password=lt-pass-4d1e8b")
                .await
                .expect("reaches")
                .json()
                .await
                .expect("json");
        assert_eq!(granted["token_type"], "bearer");
        assert_eq!(granted["expires_in"], 3600);
        let access = granted["access_token"].as_str().expect("token").to_owned();
        let page: Value = http
            .get(format!(
                "{base}/v2/dialogs?updated_from=2024-03-01T00:00:00Z&offset=2&limit=2"
            ))
            .bearer_auth(&access)
            .send()
            .await
            .expect("reaches")
            .json()
            .await
            .expect("json");
        assert_eq!(page["total"], 5);
        let ids: Vec<&str> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|r| r["chat_id"].as_str())
            .collect();
        assert_eq!(ids, ["c-10001-1", "c-10001-2"]);
        let later: Value = http
            .get(format!(
                "{base}/v2/dialogs?updated_from=2024-03-01%2000:01:00"
            ))
            .bearer_auth(&access)
            .send()
            .await
            .expect("reaches")
            .json()
            .await
            .expect("json");
        assert_eq!(later["total"], 2);
        fake.expire_tokens();
        let expired = http
            .get(format!("{base}/v2/dialogs"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("reaches");
        assert_eq!(expired.status().as_u16(), 401);
        let body: Value = expired.json().await.expect("json");
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(fake.grants(), ["password", "password"]);
    }
}
