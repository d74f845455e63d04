//! A fake LiveTex Web API, following LiveTex's documents (not the plugin):
//!
//! - `POST /oauth2/token`, form body `grant_type=password&username=<login>&password=<password>`
//!   (OAuth 2.0 "Resource Owner Password Credentials Grant", RFC 6749 §4.3). Success: `200`
//!   `{"results": {"access_token", "token_type": "bearer", "expires_in": <seconds>}}`.
//!   Source: support.livetex.ru/hc/ru/articles/360007021797 («Передача данных во внешние
//!   системы: Web API», §2.1 Аутентификация: the endpoint, the grant, the login and password of
//!   the personal account); `splusminusx/api-schema-tools` a3177dbe
//!   `schema/implementation/Methods/Oauth2.json` (`token`: `grant_type`, `username` (e-mail),
//!   `password`, all required); the `{"results": {...}}` envelope as a public integration of
//!   `web-api.livetex.ru` reads it. Refused credentials answer `401` (that integration treats
//!   401 as "the supplied authentication is invalid"); the error body is **assumed**
//!   (`{"error": "invalid_grant"}`, RFC 6749 §5.2).
//! - `GET` (or `POST`, as that integration calls it) `/chats/list` and `/leads/list` with
//!   `Authorization: Bearer <access_token>` and the query parameters `offset` (default 0),
//!   `limit` (default 50, at most 100), `q` (search criteria; `created_at>=<date>` and
//!   `created_at<=<date>`, several separated by spaces), `sort` (`created_at:a`,
//!   `updated_at:a`, `:d` descending) and `fields` (accepted, all fields are returned). Answer
//!   `{"results": [...], "total": <matching records>}`. Source: api-schema-tools a3177dbe
//!   `schema/merged/Methods/Chats.json` and `Leads.json` (`list`: `q`, `fields`, `offset`
//!   "По умолчанию – 0", `limit` "По умолчанию – 50", max 100, `sort`; "как и все методы типа
//!   list ... возвращает ... поле total"), the `total`/`results` examples in
//!   `schema/Resources/Employees.json`, and the public integration's
//!   `/chats/list?offset=N&q=created_at>=A created_at<=B` in pages of 50. The order without
//!   `sort` is **assumed** (oldest first, then by id).
//! - Records follow the schema's types (`schema/merged/Types/Chat.json`, `Lead.json`,
//!   `Message.json`, `Visitor.json`, `Employee.json`, `Site.json`): numeric ids (visitors have
//!   string ids), nested `conversation`, `employee`, `visitor`, `site`, `messages`; `datetime`
//!   values are ISO 8601 to the second in Moscow time without an offset
//!   (`schema/merged/Types/datetime.json`), and a `q` date without an offset is Moscow time
//!   too.
//! - A missing, unknown or expired token: `401` (the status the integration checks); the
//!   body is **assumed** (`{"error": "invalid_token"}`).
//!
//! Data is deterministic: the same builder calls give the same rows. Records get `created_at`
//! from a clock that starts at 2024-03-01T00:00:00Z and moves one minute every three records,
//! so several records share one second, which is what makes a cursor need a position within a
//! time.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_testkit::fake::livetex::FakeLiveTex;
//! let fake = FakeLiveTex::new().with_chats(120).with_leads(3);
//! let server = fake.start().await?;
//! // point the connector at server.base_url() with login FakeLiveTex::LOGIN ...
//! fake.expire_tokens(); // the next list call answers 401
//! fake.add_chats(2); // new records, later than every existing one
//! assert_eq!(fake.logins(), 0);
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

/// The first `created_at` the fake hands out: 2024-03-01T00:00:00Z.
const CLOCK_START: i64 = 1_709_251_200;
/// How many records share one `created_at`.
const RECORDS_PER_TICK: u64 = 3;
/// Moscow time is UTC+3.
const MSK: i64 = 3 * 3600;
/// The largest `limit` accepted (schema: `{"max": 100}`).
pub const MAX_LIMIT: usize = 100;
/// The `limit` used when none is given (schema: "По умолчанию – 50").
pub const DEFAULT_LIMIT: usize = 50;

/// One of the two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `/chats/list`.
    Chats,
    /// `/leads/list`.
    Leads,
}

impl Table {
    /// The list's path.
    pub fn path(self) -> &'static str {
        match self {
            Table::Chats => "/chats/list",
            Table::Leads => "/leads/list",
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    created_at: i64,
    id: u64,
    row: Value,
}

#[derive(Debug)]
struct LiveTexState {
    login: String,
    password: String,
    token_lifetime: Duration,
    seed: u64,
    tables: BTreeMap<Table, Vec<Record>>,
    added: u64,
    chats_made: u64,
    leads_made: u64,
    access_tokens: HashMap<String, Instant>,
    tokens_issued: u64,
    logins: u64,
    list_override: Option<Value>,
    open_next: usize,
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
    /// The default account login (the personal account's e-mail).
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
                seed: 1,
                tables: BTreeMap::new(),
                added: 0,
                chats_made: 0,
                leads_made: 0,
                access_tokens: HashMap::new(),
                tokens_issued: 0,
                logins: 0,
                list_override: None,
                open_next: 0,
            })),
        }
    }

    /// How long an access token lives (`expires_in`, rounded up to whole seconds, at least 1).
    pub fn with_token_lifetime(self, lifetime: Duration) -> Self {
        lock(&self.state).token_lifetime = lifetime;
        self
    }

    /// The seed the generated rows' details are drawn from. Set it before adding records.
    pub fn with_seed(self, seed: u64) -> Self {
        lock(&self.state).seed = seed;
        self
    }

    /// Adds `n` chats (builder style); see [`FakeLiveTex::add_chats`].
    pub fn with_chats(self, n: usize) -> Self {
        self.add_chats(n);
        self
    }

    /// Adds `n` leads (builder style); see [`FakeLiveTex::add_leads`].
    pub fn with_leads(self, n: usize) -> Self {
        self.add_leads(n);
        self
    }

    /// Adds `n` closed chats, later than every record so far. Chat `k` (from 0) has id
    /// `50000 + k` and belongs to conversation `90000 + k/2` (two chats per conversation, the
    /// first transferred, the second completed); each has an employee, a visitor, a site and
    /// two messages. Returns their ids.
    pub fn add_chats(&self, n: usize) -> Vec<u64> {
        lock(&self.state).add(Table::Chats, n)
    }

    /// Adds `n` chats still open (`is_closed: false`), like [`FakeLiveTex::add_chats`]
    /// otherwise. Returns their ids.
    pub fn add_open_chats(&self, n: usize) -> Vec<u64> {
        let mut state = lock(&self.state);
        state.open_next = n;
        state.add(Table::Chats, n)
    }

    /// Closes a chat (`is_closed: true`, `result: completed`, a later `updated_at`); it keeps
    /// its `created_at`, so it stays where it was in the list. Returns whether it exists.
    pub fn close_chat(&self, id: u64) -> bool {
        let mut state = lock(&self.state);
        let Some(record) = state
            .tables
            .get_mut(&Table::Chats)
            .and_then(|records| records.iter_mut().find(|r| r.id == id))
        else {
            return false;
        };
        if let Value::Object(row) = &mut record.row {
            row.insert("is_closed".to_owned(), json!(true));
            row.insert("result".to_owned(), json!("completed"));
            row.insert(
                "updated_at".to_owned(),
                json!(msk_datetime(record.created_at + 1800)),
            );
        }
        true
    }

    /// Adds `n` leads, later than every record so far. Lead `k` has id `70000 + k`; every
    /// other lead belongs to a conversation. Returns their ids.
    pub fn add_leads(&self, n: usize) -> Vec<u64> {
        lock(&self.state).add(Table::Leads, n)
    }

    /// Every row of a list as the API serves it, oldest first.
    pub fn rows(&self, table: Table) -> Vec<Value> {
        let state = lock(&self.state);
        state
            .sorted(table)
            .into_iter()
            .map(|r| r.row.clone())
            .collect()
    }

    /// Makes every access token issued so far expired: the next list call with one answers
    /// `401`.
    pub fn expire_tokens(&self) {
        let mut state = lock(&self.state);
        let past = Instant::now();
        for expires in state.access_tokens.values_mut() {
            *expires = past;
        }
    }

    /// Changes the account's password (tokens already issued stay valid).
    pub fn set_password(&self, password: &str) {
        password.clone_into(&mut lock(&self.state).password);
    }

    /// How many token requests the fake granted.
    pub fn logins(&self) -> u64 {
        lock(&self.state).logins
    }

    /// Makes both lists answer `200` with `body` instead of `{"results", "total"}` (as if the
    /// API changed shape); `None` restores the documented answer.
    pub fn answer_lists_with(&self, body: Option<Value>) {
        lock(&self.state).list_override = body;
    }

    /// The router implementing the API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth2/token", post(token))
            .route("/chats/list", get(chats).post(chats))
            .route("/leads/list", get(leads).post(leads))
            .with_state(self.clone())
    }

    /// Serves the API with [`FakeServer::start`] (request log and scripted faults).
    pub async fn start(&self) -> std::io::Result<FakeServer> {
        FakeServer::start(self.router()).await
    }
}

impl LiveTexState {
    fn add(&mut self, table: Table, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let created_at = self.tick();
                let (k, row) = match table {
                    Table::Chats => {
                        let k = self.chats_made;
                        self.chats_made += 1;
                        let open = self.open_next > 0;
                        self.open_next = self.open_next.saturating_sub(1);
                        (k, chat_row(self.seed, k, created_at, open))
                    }
                    Table::Leads => {
                        let k = self.leads_made;
                        self.leads_made += 1;
                        (k, lead_row(self.seed, k, created_at))
                    }
                };
                let id = row.get("id").and_then(Value::as_u64).unwrap_or(k);
                self.tables.entry(table).or_default().push(Record {
                    created_at,
                    id,
                    row,
                });
                id
            })
            .collect()
    }

    fn tick(&mut self) -> i64 {
        let tick = i64::try_from(self.added / RECORDS_PER_TICK).unwrap_or(i64::MAX / 120);
        self.added += 1;
        CLOCK_START + tick * 60
    }

    fn sorted(&self, table: Table) -> Vec<&Record> {
        let mut records: Vec<&Record> = self
            .tables
            .get(&table)
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        records.sort_by_key(|r| (r.created_at, r.id));
        records
    }

    fn issue(&mut self) -> Value {
        self.tokens_issued += 1;
        self.logins += 1;
        let access = format!("lt-at-{:06}", self.tokens_issued);
        let lifetime = self.token_lifetime;
        self.access_tokens
            .insert(access.clone(), Instant::now() + lifetime);
        let expires_in = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        json!({"results": {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": expires_in.max(1),
        }})
    }
}

/// An error answer; the body is assumed (LiveTex documents only the statuses used here).
fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
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

/// `POST /oauth2/token` (Web API §2.1; Oauth2.json `token`): the password grant only.
async fn token(State(fake): State<FakeLiveTex>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let mut state = lock(&fake.state);
    match form.get("grant_type").map(String::as_str) {
        Some("password") => {
            let login_ok = form.get("username") == Some(&state.login);
            let password_ok = form.get("password") == Some(&state.password);
            if login_ok && password_ok {
                Json(state.issue()).into_response()
            } else {
                error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "Invalid username or password",
                )
            }
        }
        None | Some("") => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type, username and password are required",
        ),
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only the password grant is supported",
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
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "The access token is missing",
        ));
    };
    let state = lock(&fake.state);
    match state.access_tokens.get(presented.trim()) {
        Some(expires) if Instant::now() < *expires => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is invalid or expired",
        )),
    }
}

/// A `datetime` as the schema allows it in parameters: ISO 8601 with an offset, or without one
/// (`T` or a space), Moscow time. Returns epoch seconds.
fn parse_date(text: &str) -> Option<i64> {
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Some(at.as_millis().div_euclid(1000));
    }
    Timestamp::parse_sql_utc(&text.replacen('T', " ", 1))
        .map(|at| at.as_millis().div_euclid(1000) - MSK)
}

/// A `created_at` criterion of `q`.
#[derive(Debug, Clone, Copy)]
enum Criterion {
    AtLeast(i64),
    AtMost(i64),
    After(i64),
    Before(i64),
    Exactly(i64),
}

impl Criterion {
    fn matches(self, at: i64) -> bool {
        match self {
            Criterion::AtLeast(t) => at >= t,
            Criterion::AtMost(t) => at <= t,
            Criterion::After(t) => at > t,
            Criterion::Before(t) => at < t,
            Criterion::Exactly(t) => at == t,
        }
    }
}

/// Parses `q`: `created_at` criteria separated by spaces. A date may itself hold a space
/// (`2024-03-01 12:00:00`), so a token that is not a criterion continues the previous date.
fn parse_q(q: &str) -> Result<Vec<Criterion>, String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for token in q.split(' ').filter(|t| !t.is_empty()) {
        if let Some(rest) = token.strip_prefix("created_at") {
            let op_len = rest
                .bytes()
                .take_while(|b| matches!(b, b'<' | b'>' | b'='))
                .count();
            parts.push((rest[..op_len].to_owned(), rest[op_len..].to_owned()));
        } else if let Some((_, value)) = parts.last_mut() {
            value.push(' ');
            value.push_str(token);
        } else {
            return Err(format!("unsupported search criterion `{token}`"));
        }
    }
    parts
        .into_iter()
        .map(|(op, value)| {
            let at = parse_date(&value).ok_or_else(|| format!("`{value}` is not a datetime"))?;
            match op.as_str() {
                ">=" => Ok(Criterion::AtLeast(at)),
                "<=" => Ok(Criterion::AtMost(at)),
                ">" => Ok(Criterion::After(at)),
                "<" => Ok(Criterion::Before(at)),
                "=" => Ok(Criterion::Exactly(at)),
                _ => Err(format!("unsupported operator `{op}`")),
            }
        })
        .collect()
}

/// `/chats/list`, `/leads/list` (Chats.json / Leads.json `list`).
fn list(
    fake: &FakeLiveTex,
    table: Table,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if let Some(refused) = refusal(fake, headers) {
        return refused;
    }
    let bad = |description: &str| error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let criteria = match query.get("q").map(|q| parse_q(q)) {
        None => Vec::new(),
        Some(Ok(criteria)) => criteria,
        Some(Err(e)) => return bad(&e),
    };
    let offset = match query.get("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return bad("offset must be a non-negative integer"),
    };
    let limit = match query.get("limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => return bad("Значение должно быть меньше 100"),
    };
    let descending = match query.get("sort").map(String::as_str) {
        None | Some("created_at:a" | "updated_at:a") => false,
        Some("created_at:d" | "updated_at:d") => true,
        Some(_) => return bad("sort must be created_at or updated_at, :a or :d"),
    };
    let state = lock(&fake.state);
    if let Some(body) = &state.list_override {
        return Json(body.clone()).into_response();
    }
    let mut matching: Vec<&Record> = state
        .sorted(table)
        .into_iter()
        .filter(|r| criteria.iter().all(|c| c.matches(r.created_at)))
        .collect();
    if descending {
        matching.reverse();
    }
    let results: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| r.row.clone())
        .collect();
    Json(json!({"results": results, "total": matching.len()})).into_response()
}

async fn chats(
    State(fake): State<FakeLiveTex>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&fake, Table::Chats, &headers, &query)
}

async fn leads(
    State(fake): State<FakeLiveTex>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&fake, Table::Leads, &headers, &query)
}

/// A `datetime` as LiveTex returns it: `YYYY-MM-DDTHH:MM:SS` in Moscow time, no offset.
pub fn msk_datetime(secs: i64) -> String {
    let text = Timestamp::from_secs(secs + MSK)
        .unwrap_or(Timestamp::MIN)
        .to_rfc3339();
    text.get(..19).unwrap_or(&text).to_owned()
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

/// A `Chat` (Types/Chat.json) with its nested `conversation`, `employee`, `visitor`, `site`,
/// `messages` (Types/Message.json) and `first_message`.
fn chat_row(seed: u64, k: u64, created_at: i64, open: bool) -> Value {
    let r = mix(seed, 1, k);
    let conversation = 90_000 + k / 2;
    let (employee_id, first, last) = OPERATORS[usize::try_from(r % 3).unwrap_or(0)];
    let visitor_id = format!("v-{conversation}");
    let visitor_name = pick(&VISITORS, r >> 8);
    let question = pick(&QUESTIONS, r >> 16);
    let employee = json!({"id": employee_id, "first_name": first, "last_name": last});
    let visitor = json!({"id": visitor_id, "name": visitor_name});
    let first_message = json!({
        "id": 1_000_000 + k * 10 + 1, "text": question, "created_at": msk_datetime(created_at),
        "visitor": visitor, "employee": null, "is_delivered": true,
    });
    json!({
        "id": 50_000 + k,
        "conversation": {"id": conversation},
        "created_at": msk_datetime(created_at),
        "updated_at": msk_datetime(created_at + 600),
        "is_closed": !open,
        "employee": employee,
        "visitor": visitor,
        "site": {"id": 3101, "url": "shop.example.ru"},
        "result": if k % 2 == 1 { "completed" } else { "transfer_manual" },
        "duration": 540,
        "answer_time_avg": 10 + (r >> 32) % 50,
        "first_answer_time": 5 + (r >> 40) % 30,
        "queue_time": 3,
        "message_count": 2,
        "visitor_vote": pick(&["positive", "negative", "undefined"], r >> 24),
        "is_managed": true,
        "first_message": first_message,
        "messages": [
            first_message,
            {"id": 1_000_000 + k * 10 + 2, "text": format!("{visitor_name}, здравствуйте! Сейчас проверю."),
             "created_at": msk_datetime(created_at + 20), "visitor": null, "employee": employee,
             "is_delivered": true},
        ],
    })
}

/// A `Lead` (Types/Lead.json).
fn lead_row(seed: u64, k: u64, created_at: i64) -> Value {
    let r = mix(seed, 2, k);
    let (employee_id, first, last) = OPERATORS[usize::try_from((r >> 30) % 3).unwrap_or(0)];
    let mut row = json!({
        "id": 70_000 + k,
        "created_at": msk_datetime(created_at),
        "updated_at": msk_datetime(created_at + 60),
        "name": pick(&VISITORS, r),
        "email": format!("lead{k}@example.ru"),
        "phone": format!("+7 900 {:03}-{:02}-{:02}", r % 1000, (r >> 10) % 100, (r >> 20) % 100),
        "text": pick(&QUESTIONS, r >> 34),
        "type": "form",
        "result": "missed",
        "is_managed": true,
        "site": {"id": 3101, "url": "shop.example.ru"},
        "assigned_to": {"id": employee_id, "first_name": first, "last_name": last},
    });
    if k.is_multiple_of(2)
        && let Value::Object(map) = &mut row
    {
        map.insert("conversation".to_owned(), json!({"id": 80_000 + k}));
        map.insert("result".to_owned(), json!("completed"));
        map.insert(
            "completed_at".to_owned(),
            json!(msk_datetime(created_at + 3600)),
        );
        map.insert("duration".to_owned(), json!(3600));
        map.insert(
            "answer_text".to_owned(),
            json!("Перезвонили, вопрос решён."),
        );
        map.insert(
            "completed_by".to_owned(),
            json!({"id": employee_id, "first_name": first, "last_name": last}),
        );
    }
    row
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
    }

    #[test]
    fn q_reads_created_at_ranges_in_moscow_time() {
        let criteria =
            parse_q("created_at>=2024-03-01 03:00:00 created_at<=2024-03-01T03:01:00").unwrap();
        assert!(criteria[0].matches(CLOCK_START));
        assert!(!criteria[0].matches(CLOCK_START - 1));
        assert!(criteria[1].matches(CLOCK_START + 60));
        assert!(!criteria[1].matches(CLOCK_START + 61));
        assert!(parse_q("created_at>=2024-03-01T00:00:00Z").unwrap()[0].matches(CLOCK_START));
        assert!(parse_q("visitor_ids=1").is_err());
        assert!(parse_q("created_at>=yesterday").is_err());
        assert_eq!(msk_datetime(CLOCK_START), "2024-03-01T03:00:00");
    }

    #[test]
    fn rows_are_deterministic_and_share_times() {
        let a = FakeLiveTex::new().with_chats(7).with_leads(2);
        let b = FakeLiveTex::new().with_chats(7).with_leads(2);
        assert_eq!(a.rows(Table::Chats), b.rows(Table::Chats));
        let times: Vec<Value> = a
            .rows(Table::Chats)
            .iter()
            .map(|r| r["created_at"].clone())
            .collect();
        assert_eq!(times[0], times[2]);
        assert_ne!(times[2], times[3]);
        assert!(a.rows(Table::Chats)[0]["id"].is_u64(), "numeric ids");
        assert!(a.rows(Table::Chats)[0]["employee"]["id"].is_u64());
    }

    #[tokio::test]
    async fn password_grant_paging_and_expiry_over_http() {
        let fake = FakeLiveTex::new().with_chats(60);
        let server = fake.start().await.unwrap();
        let http = reqwest::Client::new();
        let base = server.base_url();
        let refused = http
            .post(format!("{base}/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=password&username=api%40example.ru&password=wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let granted: Value = http
            .post(format!("{base}/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=password&username=api%40example.ru&password={}",
                FakeLiveTex::PASSWORD
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = granted["results"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let page: Value = http
            .get(format!("{base}/chats/list?offset=0"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 60);
        assert_eq!(page["results"].as_array().unwrap().len(), DEFAULT_LIMIT);
        let rest: Value = http
            .get(format!(
                "{base}/chats/list?offset=50&q=created_at%3E%3D2024-03-01%2003%3A00%3A00"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(rest["results"].as_array().unwrap().len(), 10);
        fake.expire_tokens();
        let expired = http
            .get(format!("{base}/leads/list"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(expired.status(), 401);
    }
}
