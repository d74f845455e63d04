//! Pull sync through Smartsupp's REST API v2: conversations from `POST
//! /v2/conversations/search` (paged with its `after` cursor, sorted by `createdAt`, the one
//! sortable field besides `finishedAt`) and each conversation's messages from `GET
//! /v2/conversations/{id}/messages` (every page, with its numeric `after`).
//!
//! Sources: the OpenAPI description of the Core API, `smartsupp/openapi-client`
//! `packages/generator/test/data/spec2.json` at 468370481ea17f4bfbb696f442638e91d59ba8f9
//! ("SPEC"); docs.smartsupp.com/rest-api/overview. Every API record is turned into the event
//! callback it corresponds to and parsed by the callback parser, so pulled and pushed data
//! name the same conversation (the API's conversation id) with the same message keys and
//! dedup keys, and merge. See the crate docs for the cursor and what is assumed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchboard_core::{
    ConnectionConfig, Connector, ConversationPatch, ConversationStatus, Error, ErrorCode,
    EventKind, EventPayload, IncomingEvent, RateLimit, Rating, Secret, SyncPage, Timestamp,
};
use switchboard_vendor_client::{ClientSettings, Method, VendorClient};

use crate::{callback, dedup_key};

/// The connection secret holding the REST API access token (sent as `Authorization: Bearer`).
pub const API_TOKEN: &str = "api_token";
/// The setting choosing the sync order: `oldest_first` (default) or `newest_first`.
pub const SYNC_ORDER_SETTING: &str = "sync_order";
/// The setting giving the conversations per search page (1 to [`MAX_PAGE_SIZE`]).
pub const PAGE_SIZE_SETTING: &str = "page_size";
/// Smartsupp's API host; the `base_url` setting replaces it.
pub const DEFAULT_BASE_URL: &str = "https://api.smartsupp.com";
/// The search endpoint (SPEC `paths./v2/conversations/search.post`).
pub const SEARCH_PATH: &str = "/v2/conversations/search";
/// Conversations per search page unless `page_size` says otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest search page the connector asks for (SPEC allows 250 without `allowExtraSize`).
pub const MAX_PAGE_SIZE: usize = 100;
/// Messages per page of a conversation's messages: SPEC's default `size`.
pub const MESSAGES_PAGE_SIZE: usize = 50;
/// A guard against a vendor that never ends a conversation's message pages.
const MAX_MESSAGE_PAGES: usize = 10_000;
/// The rate limit when the connection sets none: 300 calls per 60 s (5 per second on
/// average). Smartsupp answers 429 when a token calls too fast but publishes no number; set
/// the connection's `rate_limit` to change it.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    calls: 300,
    per_seconds: 60,
};
/// `vendor_event` of the pull-only snapshot event each pulled conversation gives.
pub const SNAPSHOT_EVENT: &str = "api.conversation";
/// `vendor_event` of the record kept for a conversation the connector could not read.
pub const SKIPPED_EVENT: &str = "api.skipped";
/// The version of the cursor format.
const CURSOR_VERSION: u32 = 2;

/// The order a sync walks the conversations in, by `createdAt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOrder {
    /// Oldest conversation first. The next run starts again at the oldest conversation that
    /// was still unfinished (or the newest one seen), so later messages and closes are pulled.
    #[default]
    OldestFirst,
    /// Newest conversation first (recent data lands first). A run stops below the oldest
    /// unfinished conversation (or the newest one) of the previous completed run.
    NewestFirst,
}

impl SyncOrder {
    fn direction(self) -> &'static str {
        match self {
            SyncOrder::OldestFirst => "asc",
            SyncOrder::NewestFirst => "desc",
        }
    }

    fn parse(config: &ConnectionConfig) -> Result<SyncOrder, Error> {
        match config.setting(SYNC_ORDER_SETTING) {
            None | Some("oldest_first") => Ok(SyncOrder::OldestFirst),
            Some("newest_first") => Ok(SyncOrder::NewestFirst),
            Some(other) => Err(Error::invalid(format!(
                "connection {} (smartsupp): `{SYNC_ORDER_SETTING}` is {other:?}; use oldest_first or newest_first",
                config.id
            ))),
        }
    }
}

/// A conversation's place in the `createdAt` order: its creation time and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Mark {
    /// `createdAt` in milliseconds.
    created_at: i64,
    /// The conversation id (the tie-breaker).
    id: String,
}

/// The saved sync cursor, as JSON. `after` is the search's own cursor (the sort values of the
/// last conversation of the last saved page), kept as the API sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// Format version.
    v: u32,
    /// The order the cursor was made for.
    order: SyncOrder,
    /// Resume the search after this (`None`: from the start of the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<Value>,
    /// The sync's lower bound on `createdAt` (from `since` when it started), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    /// Oldest first: this run's lower bound on `createdAt`, set when the previous run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<i64>,
    /// Newest first: the run stops at the first conversation below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_at: Option<Mark>,
    /// Newest first: the newest conversation of the run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_top: Option<Mark>,
    /// Oldest first: the newest conversation of the run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_last: Option<Mark>,
    /// The oldest conversation of the run in progress that was not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_floor: Option<Mark>,
}

impl Cursor {
    fn fresh(order: SyncOrder, since: Option<Timestamp>) -> Cursor {
        Cursor {
            v: CURSOR_VERSION,
            order,
            after: None,
            since: since.map(Timestamp::as_millis),
            from: None,
            stop_at: None,
            run_top: None,
            run_last: None,
            open_floor: None,
        }
    }

    fn parse(text: &str, order: SyncOrder) -> Result<Cursor, Error> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            v: u32,
        }
        let version: Version = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "the saved Smartsupp sync cursor is not valid ({e}); sync this connection from scratch"
            ))
        })?;
        if version.v != CURSOR_VERSION {
            return Err(Error::invalid(format!(
                "the saved Smartsupp sync cursor has version {}, this build reads {CURSOR_VERSION}; sync this connection from scratch",
                version.v
            )));
        }
        let cursor: Cursor = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "the saved Smartsupp sync cursor is not valid ({e}); sync this connection from scratch"
            ))
        })?;
        if cursor.order != order {
            return Err(Error::invalid(format!(
                "the saved Smartsupp sync cursor was made for sync_order {:?} but the connection now says {order:?}; sync this connection from scratch",
                cursor.order
            )));
        }
        Ok(cursor)
    }

    fn to_json(&self) -> String {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The search's lower bound on `createdAt`.
    fn lower_bound(&self) -> Option<i64> {
        match (self.since, self.from) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notes a conversation seen in this run.
    fn saw(&mut self, mark: &Mark, unfinished: bool) {
        if unfinished && self.open_floor.as_ref().is_none_or(|floor| mark < floor) {
            self.open_floor = Some(mark.clone());
        }
        match self.order {
            SyncOrder::OldestFirst => {
                if self.run_last.as_ref().is_none_or(|last| mark > last) {
                    self.run_last = Some(mark.clone());
                }
            }
            SyncOrder::NewestFirst => {
                if self.run_top.as_ref().is_none_or(|top| mark > top) {
                    self.run_top = Some(mark.clone());
                }
            }
        }
    }

    /// The run is complete: where the next one starts (or stops). Unfinished conversations
    /// are read again until they are finished; the newest one seen is read again too (a tie
    /// on its `createdAt` may come later); re-reads append nothing (same dedup keys).
    fn finish_run(&mut self) {
        self.after = None;
        let floor = self.open_floor.take();
        match self.order {
            SyncOrder::OldestFirst => {
                let last = self.run_last.take();
                if let Some(next) = floor.or(last) {
                    self.from = Some(next.created_at);
                }
            }
            SyncOrder::NewestFirst => {
                let top = self.run_top.take();
                let next = match (floor, top) {
                    (Some(floor), Some(top)) => Some(floor.min(top)),
                    (floor, top) => floor.or(top),
                };
                if next.is_some() {
                    self.stop_at = next;
                }
            }
        }
    }
}

/// One page of `POST /v2/conversations/search` (SPEC: `{after: number[] | null, items,
/// total}`).
#[derive(Debug, Deserialize)]
struct SearchPage {
    items: Vec<Value>,
    #[serde(default)]
    after: Option<Value>,
}

/// One page of a conversation's messages (SPEC: `{after: number | null, items, total}`).
#[derive(Debug, Deserialize)]
struct MessagesPage {
    items: Vec<Value>,
    #[serde(default)]
    after: Option<Value>,
}

/// An id, sent as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ApiId {
    Text(String),
    Number(u64),
}

impl ApiId {
    fn text(&self) -> Option<String> {
        match self {
            ApiId::Text(text) if text.is_empty() => None,
            ApiId::Text(text) => Some(text.clone()),
            ApiId::Number(n) => Some(n.to_string()),
        }
    }
}

/// The fields of an API conversation the connector reads. SPEC names them in camelCase
/// (`components.schemas.conversation`); the snake_case names of the event callbacks are
/// accepted too.
#[derive(Debug, Deserialize)]
struct ApiConversation {
    id: ApiId,
    #[serde(default)]
    status: Option<String>,
    #[serde(alias = "createdAt")]
    created_at: String,
    #[serde(default, alias = "updatedAt")]
    updated_at: Option<String>,
    #[serde(default, alias = "finishedAt")]
    finished_at: Option<String>,
    #[serde(default)]
    channel: Option<ApiChannel>,
    #[serde(default, alias = "contactId")]
    contact_id: Option<ApiId>,
    #[serde(default, alias = "visitorId")]
    visitor_id: Option<ApiId>,
    #[serde(default, alias = "agentIds")]
    agent_ids: Option<Vec<ApiId>>,
    #[serde(default, alias = "assignedIds")]
    assigned_ids: Option<Vec<ApiId>>,
    #[serde(default, alias = "groupId")]
    group_id: Option<ApiId>,
    /// SPEC `rating{value, text}`.
    #[serde(default)]
    rating: Option<ApiRating>,
    #[serde(default, alias = "ratingValue")]
    rating_value: Option<i64>,
    #[serde(default, alias = "ratingText")]
    rating_text: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default, alias = "isOffline")]
    is_offline: Option<bool>,
    #[serde(default, alias = "isServed")]
    is_served: Option<bool>,
    #[serde(default, alias = "isClosed")]
    is_closed: Option<bool>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default, alias = "locIp")]
    loc_ip: Option<String>,
    #[serde(default, alias = "locCity")]
    loc_city: Option<String>,
    #[serde(default, alias = "locCode")]
    loc_code: Option<String>,
    #[serde(default, alias = "locCountry")]
    loc_country: Option<String>,
    /// An older snake_case shape: `location{ip, code, country, city}`.
    #[serde(default)]
    location: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct ApiRating {
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiChannel {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// A conversation read from a search page.
struct Pulled {
    conversation: ApiConversation,
    id: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl Pulled {
    fn read(item: &Value) -> Result<Pulled, String> {
        let conversation = ApiConversation::deserialize(item)
            .map_err(|e| format!("{e}; a conversation needs an id and createdAt"))?;
        let id = conversation
            .id
            .text()
            .ok_or_else(|| "the conversation id is empty".to_owned())?;
        let created_at = Timestamp::parse_rfc3339(&conversation.created_at)
            .ok_or_else(|| format!("createdAt {:?} is not RFC 3339", conversation.created_at))?;
        let updated_at = match &conversation.updated_at {
            None => created_at,
            Some(text) => Timestamp::parse_rfc3339(text)
                .ok_or_else(|| format!("updatedAt {text:?} is not RFC 3339"))?,
        };
        Ok(Pulled {
            conversation,
            id,
            created_at,
            updated_at,
        })
    }

    fn mark(&self) -> Mark {
        Mark {
            created_at: self.created_at.as_millis(),
            id: self.id.clone(),
        }
    }

    fn finished(&self) -> bool {
        let c = &self.conversation;
        non_empty(&c.finished_at).is_some()
            || c.status.as_deref() == Some("closed")
            || c.is_closed == Some(true)
    }
}

/// Pulls a Smartsupp account's conversations and messages; see the module docs.
pub struct SmartsuppConnector {
    client: VendorClient,
    token: Secret,
    order: SyncOrder,
    page_size: usize,
    skipped: AtomicU64,
}

impl fmt::Debug for SmartsuppConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartsuppConnector")
            .field("connection", &self.client.connection())
            .field("base_url", &self.client.settings().base_url)
            .field("order", &self.order)
            .field("page_size", &self.page_size)
            .field("skipped", &self.skipped())
            .finish_non_exhaustive()
    }
}

/// Builds a connection's Smartsupp connector: needs the secret `api_token`; reads the settings
/// `base_url`, `sync_order`, `page_size` and those of [`ClientSettings::from_connection`].
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
    crate::keys::check(config)?;
    Ok(Box::new(SmartsuppConnector::new(config)?))
}

impl SmartsuppConnector {
    /// A connector for the connection; see [`connector`].
    pub fn new(config: &ConnectionConfig) -> Result<SmartsuppConnector, Error> {
        let settings =
            ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)?;
        Self::with_settings(config, settings)
    }

    /// A connector with explicit client settings (tests shorten the backoff with it).
    pub fn with_settings(
        config: &ConnectionConfig,
        settings: ClientSettings,
    ) -> Result<SmartsuppConnector, Error> {
        let token = config.required_secret(API_TOKEN)?.clone();
        let order = SyncOrder::parse(config)?;
        let page_size = match config.setting(PAGE_SIZE_SETTING) {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "connection {} (smartsupp): `{PAGE_SIZE_SETTING}` is {text:?}; use a number from 1 to {MAX_PAGE_SIZE}",
                        config.id
                    ))
                })?,
        };
        Ok(SmartsuppConnector {
            client: VendorClient::new(config, settings)?,
            token,
            order,
            page_size,
            skipped: AtomicU64::new(0),
        })
    }

    /// The order this connector syncs in.
    pub fn order(&self) -> SyncOrder {
        self.order
    }

    /// How many conversations this connector skipped because it could not read them (each
    /// also gives an [`SKIPPED_EVENT`] event with the reason, and a warning in the log).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    async fn search(&self, cursor: &Cursor) -> Result<SearchPage, Error> {
        let mut body = json!({
            "size": self.page_size,
            "sort": [{"createdAt": self.order.direction()}],
        });
        if let Some(from) = cursor.lower_bound().and_then(Timestamp::from_millis) {
            body["query"] = json!([{"field": "createdAt", "value": [from.to_rfc3339(), null]}]);
        }
        if let Some(after) = &cursor.after {
            body["after"] = after.clone();
        }
        self.client
            .request(Method::POST, SEARCH_PATH)
            // A read-only search: safe to retry after a timeout or a 5xx.
            .idempotent()
            .bearer(&self.token)
            .json(&body)
            .send_json::<SearchPage>()
            .await
    }

    /// Every message of a conversation: SPEC pages them with `size` (default 50), a numeric
    /// `after` and `order` (default `desc`); the connector asks for `asc` and reads until the
    /// answer has no `after` (or no items, or the same `after` again). A short page is not
    /// taken as the end: the vendor may cap `size`.
    async fn messages(&self, conversation: &str) -> Result<Vec<Value>, Error> {
        let path = format!("/v2/conversations/{}/messages", path_segment(conversation));
        let mut messages = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MESSAGE_PAGES {
            let mut query = vec![
                ("size", MESSAGES_PAGE_SIZE.to_string()),
                ("order", "asc".to_owned()),
            ];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page: MessagesPage = self
                .client
                .request(Method::GET, &path)
                .bearer(&self.token)
                .query(&query)
                .send_json()
                .await?;
            let empty = page.items.is_empty();
            messages.extend(page.items);
            let next = page.after.as_ref().and_then(after_param);
            match next {
                Some(next) if !empty && after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(messages),
            }
        }
        tracing::warn!(
            conversation,
            pages = MAX_MESSAGE_PAGES,
            "smartsupp messages never ended; kept what was read"
        );
        Ok(messages)
    }

    /// A conversation the connector cannot read: logged, counted and kept as an event with
    /// the reason, so one bad record never fails a page.
    fn skip(&self, item: &Value, id: Option<String>, reason: &str) -> IncomingEvent {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            conversation = id.as_deref().unwrap_or("?"),
            reason,
            "smartsupp conversation skipped"
        );
        let digest = hex::encode(Sha256::digest(item.to_string().as_bytes()));
        IncomingEvent {
            dedup_key: dedup_key(&[SKIPPED_EVENT, &digest[..32]]),
            kind: EventKind::VendorEvent,
            vendor_event: SKIPPED_EVENT.to_owned(),
            occurred_at: Timestamp::now(),
            payload: EventPayload::Vendor {
                subject: id,
                data: json!({"reason": reason, "record": item}),
            },
        }
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A messages page's `after` as the query parameter: SPEC's number as it was sent (an array,
/// from an older shape, is joined with commas).
fn after_param(after: &Value) -> Option<String> {
    match after {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(values) if !values.is_empty() => Some(
            values
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Parses the event callback an API record corresponds to.
fn as_callback(event: &str, timestamp: &str, data: Value) -> Result<Vec<IncomingEvent>, String> {
    let envelope = json!({
        "type": callback::EVENT_CALLBACK,
        "event": event,
        "timestamp": timestamp,
        "data": data,
    });
    let body = envelope.to_string();
    callback::parse(&envelope, body.as_bytes())
        .map_err(|e| format!("a record for {event}: {}", e.message))
}

/// The events of one conversation: opened, its messages, closed, and the snapshot. `Err` is
/// why the conversation cannot be read.
fn conversation_events(
    pulled: &Pulled,
    messages: Vec<Value>,
) -> Result<Vec<IncomingEvent>, String> {
    let c = &pulled.conversation;
    let id = pulled.id.as_str();
    let contact = c.contact_id.as_ref().and_then(ApiId::text);
    let mut events = Vec::new();
    let mut opened = json!({"id": id, "created_at": c.created_at});
    for (field, value) in [("referer", &c.referer), ("domain", &c.domain)] {
        if let Some(value) = non_empty(value) {
            opened[field] = json!(value);
        }
    }
    if let Some(tags) = &c.tags {
        opened["tags"] = json!(tags);
    }
    let mut data = json!({"conversation": opened});
    if let Some(contact) = &contact {
        data["contact"] = json!({"id": contact});
    }
    events.extend(as_callback("conversation.opened", &c.created_at, data)?);
    for message in messages {
        events.extend(message_events(id, contact.as_deref(), pulled, message)?);
    }
    match (non_empty(&c.finished_at), pulled.finished()) {
        (Some(at), _) => {
            let data = json!({"conversation": {"id": id, "finished_at": at}});
            events.extend(as_callback("conversation.closed", at, data)?);
        }
        (None, true) => {
            // Closed without a finish time: the last update is when it was closed.
            let at = pulled.updated_at.to_rfc3339();
            let data = json!({"conversation": {"id": id}});
            events.extend(as_callback("conversation.closed", &at, data)?);
        }
        (None, false) => {}
    }
    events.push(snapshot(pulled));
    Ok(events)
}

/// A message as the callback it would have been: `conversation.contact_replied` for the
/// visitor's, `conversation.bot_replied` for a bot's, `conversation.agent_replied` for agents'
/// and triggers'. Other records (`type` `note` or `event`) are kept as vendor events.
fn message_events(
    conversation_id: &str,
    contact: Option<&str>,
    pulled: &Pulled,
    message: Value,
) -> Result<Vec<IncomingEvent>, String> {
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| message.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let time = text(&["created_at", "createdAt"]).unwrap_or_else(|| pulled.updated_at.to_rfc3339());
    let kind = text(&["type"]).unwrap_or_else(|| "message".to_owned());
    let sub_type = text(&["sub_type", "subType"]).unwrap_or_default();
    if kind != "message" {
        let data = json!({"conversation_id": conversation_id, "message": message});
        return as_callback("conversation.message", &time, data);
    }
    match sub_type.as_str() {
        "contact" => {
            let mut data = json!({"conversation_id": conversation_id, "message": message});
            if let Some(contact) = contact {
                data["contact"] = json!({"id": contact});
            }
            let mut events = as_callback("conversation.contact_replied", &time, data)?;
            // The API names only the contact's id: a visitor without name or e-mail must not
            // replace the one a callback (or an earlier pull) gave the conversation.
            for event in &mut events {
                if let EventPayload::Conversation(patch) = &mut event.payload {
                    patch.visitor = None;
                }
            }
            Ok(events)
        }
        "bot" => {
            let data = json!({"conversation_id": conversation_id, "message": message});
            as_callback("conversation.bot_replied", &time, data)
        }
        _ => {
            let data = json!({"conversation_id": conversation_id, "message": message});
            as_callback("conversation.agent_replied", &time, data)
        }
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The pull-only event: the conversation as the API shows it at `updatedAt` (status,
/// assignment, rating, tags, channel and location), keyed by the update time so each seen
/// update is one event.
fn snapshot(pulled: &Pulled) -> IncomingEvent {
    let conversation = &pulled.conversation;
    let id = pulled.id.as_str();
    let mut patch = ConversationPatch::new(id);
    let status = conversation.status.as_deref();
    patch.status = Some(if conversation.is_offline == Some(true) {
        ConversationStatus::Offline
    } else if pulled.finished() {
        ConversationStatus::Closed
    } else {
        ConversationStatus::Open
    });
    if let Some(status) = status {
        patch
            .attributes
            .insert("conversation.status".to_owned(), status.to_owned());
    }
    let assigned: Vec<String> = conversation
        .assigned_ids
        .iter()
        .flatten()
        .filter_map(ApiId::text)
        .collect();
    if let Some(last) = assigned.last() {
        patch.assigned_agent = Some(format!("agent:{last}"));
    }
    if conversation.assigned_ids.is_some() {
        let ids: Vec<String> = assigned.iter().map(|id| format!("agent:{id}")).collect();
        patch
            .attributes
            .insert("assigned_ids".to_owned(), ids.join(","));
    }
    let agents: Vec<String> = conversation
        .agent_ids
        .iter()
        .flatten()
        .filter_map(ApiId::text)
        .map(|id| format!("agent:{id}"))
        .collect();
    if !agents.is_empty() {
        patch
            .attributes
            .insert("agent_ids".to_owned(), agents.join(","));
    }
    let (rating_value, rating_text) = match &conversation.rating {
        Some(rating) => (rating.value, rating.text.clone()),
        None => (conversation.rating_value, conversation.rating_text.clone()),
    };
    match rating_value {
        Some(value @ 1..=5) => {
            patch.rating = Some(Rating {
                score: Some(value),
                scale: Some("1-5".to_owned()),
                label: None,
                comment: non_empty(&rating_text).map(str::to_owned),
            });
        }
        Some(other) if other != 0 => {
            tracing::warn!(conversation = %id, rating = other, "smartsupp rating outside 1-5 ignored");
        }
        _ => {}
    }
    patch.tags_added = conversation.tags.clone().unwrap_or_default();
    patch.referrer = non_empty(&conversation.referer).map(str::to_owned);
    let ids = [
        ("contact_id", &conversation.contact_id),
        ("visitor_id", &conversation.visitor_id),
        ("group_id", &conversation.group_id),
    ];
    for (name, value) in ids {
        if let Some(value) = value.as_ref().and_then(ApiId::text) {
            patch.attributes.insert(name.to_owned(), value);
        }
    }
    let texts = [
        ("domain", &conversation.domain),
        (
            "channel.type",
            &conversation.channel.as_ref().and_then(|c| c.kind.clone()),
        ),
        ("location.ip", &conversation.loc_ip),
        ("location.city", &conversation.loc_city),
        ("location.code", &conversation.loc_code),
        ("location.country", &conversation.loc_country),
    ];
    for (name, value) in texts {
        if let Some(value) = non_empty(value) {
            patch.attributes.insert(name.to_owned(), value.to_owned());
        }
    }
    let flags = [
        ("is_offline", conversation.is_offline),
        ("is_served", conversation.is_served),
    ];
    for (name, flag) in flags {
        if let Some(flag) = flag {
            patch.attributes.insert(name.to_owned(), flag.to_string());
        }
    }
    for (name, value) in conversation.location.iter().flatten() {
        if let Some(text) = id_text(value) {
            patch.attributes.insert(format!("location.{name}"), text);
        }
    }
    let at_key = pulled.updated_at.as_millis().to_string();
    IncomingEvent {
        dedup_key: dedup_key(&[SNAPSHOT_EVENT, id, &at_key]),
        kind: EventKind::ChatUpdated,
        vendor_event: SNAPSHOT_EVENT.to_owned(),
        occurred_at: pulled.updated_at,
        payload: EventPayload::Conversation(patch),
    }
}

#[async_trait]
impl Connector for SmartsuppConnector {
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        since: Option<Timestamp>,
    ) -> Result<SyncPage, Error> {
        let mut state = match cursor {
            None => Cursor::fresh(self.order, since),
            Some(text) => Cursor::parse(text, self.order)?,
        };
        let page = self.search(&state).await?;
        let mut events = Vec::new();
        let mut reached_previous_run = false;
        for item in &page.items {
            let pulled = match Pulled::read(item) {
                Ok(pulled) => pulled,
                Err(reason) => {
                    let id = item.get("id").and_then(id_text);
                    events.push(self.skip(item, id, &reason));
                    continue;
                }
            };
            let mark = pulled.mark();
            if self.order == SyncOrder::NewestFirst
                && state.stop_at.as_ref().is_some_and(|stop| mark < *stop)
            {
                reached_previous_run = true;
                break;
            }
            let messages = match self.messages(&pulled.id).await {
                Ok(messages) => messages,
                // Deleted between the search and the read.
                Err(e) if e.code == ErrorCode::NotFound => {
                    events.push(self.skip(item, Some(pulled.id.clone()), &e.message));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match conversation_events(&pulled, messages) {
                Ok(pulled_events) => {
                    state.saw(&mark, !pulled.finished());
                    events.extend(pulled_events);
                }
                Err(reason) => events.push(self.skip(item, Some(pulled.id.clone()), &reason)),
            }
        }
        let next_after = page.after.filter(|a| !a.is_null());
        let done = reached_previous_run || page.items.is_empty() || next_after.is_none();
        if done {
            state.finish_run();
        } else {
            state.after = next_after;
        }
        tracing::debug!(
            conversations = page.items.len(),
            events = events.len(),
            done,
            "smartsupp sync page"
        );
        Ok(SyncPage {
            events,
            next_cursor: state.to_json(),
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(t: i64, id: &str) -> Mark {
        Mark {
            created_at: t,
            id: id.to_owned(),
        }
    }

    #[test]
    fn cursor_round_trips_and_refuses_another_order_or_version() {
        let mut cursor = Cursor::fresh(SyncOrder::NewestFirst, Timestamp::from_millis(5));
        cursor.after = Some(json!([1714557600125_i64, 7]));
        cursor.stop_at = Some(mark(7, "cnv_0"));
        let text = cursor.to_json();
        assert_eq!(
            Cursor::parse(&text, SyncOrder::NewestFirst).expect("parses"),
            cursor
        );
        let error = Cursor::parse(&text, SyncOrder::OldestFirst).expect_err("other order");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("from scratch"));
        assert!(Cursor::parse("{", SyncOrder::NewestFirst).is_err());
        // Version 1 cursors paged by updatedAt, which the search cannot sort by.
        let old = r#"{"v":1,"order":"newest_first","stop_at":{"updated_at":7,"id":"a"}}"#;
        let error = Cursor::parse(old, SyncOrder::NewestFirst).expect_err("v1");
        assert!(error.message.contains("version 1"), "{}", error.message);
    }

    #[test]
    fn marks_order_by_time_then_id() {
        assert!(mark(1, "b") < mark(2, "a"));
        assert!(mark(2, "a") < mark(2, "b"));
    }

    #[test]
    fn a_finished_run_restarts_at_the_oldest_unfinished_conversation() {
        let mut oldest = Cursor::fresh(SyncOrder::OldestFirst, Timestamp::from_millis(3));
        oldest.saw(&mark(10, "a"), false);
        oldest.saw(&mark(20, "b"), true);
        oldest.saw(&mark(30, "c"), true);
        oldest.saw(&mark(40, "d"), false);
        oldest.after = Some(json!([40, 3]));
        oldest.finish_run();
        assert_eq!((oldest.from, oldest.after.clone()), (Some(20), None));
        assert_eq!(oldest.lower_bound(), Some(20));
        // Everything finished: the next run starts at the newest conversation seen.
        oldest.saw(&mark(20, "b"), false);
        oldest.saw(&mark(50, "e"), false);
        oldest.finish_run();
        assert_eq!(oldest.from, Some(50));
        // A run that saw nothing keeps its start.
        oldest.finish_run();
        assert_eq!(oldest.from, Some(50));

        let mut newest = Cursor::fresh(SyncOrder::NewestFirst, None);
        newest.saw(&mark(40, "d"), false);
        newest.saw(&mark(30, "c"), true);
        newest.saw(&mark(10, "a"), false);
        newest.finish_run();
        assert_eq!(newest.stop_at, Some(mark(30, "c")));
        newest.saw(&mark(60, "f"), false);
        newest.saw(&mark(30, "c"), false);
        newest.finish_run();
        assert_eq!(newest.stop_at, Some(mark(60, "f")));
    }

    #[test]
    fn path_segments_and_after_params() {
        assert_eq!(path_segment("cnv_8Hk2ZqWm"), "cnv_8Hk2ZqWm");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            after_param(&json!(1609932655889_i64)).as_deref(),
            Some("1609932655889")
        );
        assert_eq!(
            after_param(&json!([1714557601300_i64, "msg_01"])).as_deref(),
            Some("1714557601300,msg_01")
        );
        assert_eq!(after_param(&json!([])), None);
        assert_eq!(after_param(&Value::Null), None);
    }

    /// SPEC's `conversation` example values, in camelCase, and the same record in the
    /// snake_case of the callbacks: both read the same.
    #[test]
    fn both_field_cases_read_the_same() {
        let camel = json!({
            "id": "cod1L4y1Gtxq", "type": "chat", "status": "closed",
            "channel": {"type": "default", "id": null},
            "contactId": "ctDTWhIJxDn79", "visitorId": "viAm4tpZY1dil",
            "createdAt": "2021-01-06T11:30:55.889Z", "updatedAt": "2021-01-06T11:40:00.000Z",
            "finishedAt": "2021-01-06T11:39:00.000Z",
            "agentIds": ["23144"], "assignedIds": ["23144"], "groupId": null,
            "locIp": "127.0.0.1", "locCity": "Brno", "locCode": "cz", "locCountry": "Czechia",
            "rating": {"value": 5, "text": "Your are awesome"}, "referer": "",
            "domain": "www.smartsupp.com", "tags": [], "variables": null,
            "important": false, "isClosed": true, "isOffline": false, "isServed": true
        });
        let snake = json!({
            "id": "cod1L4y1Gtxq", "status": "closed", "channel": {"type": "default"},
            "contact_id": "ctDTWhIJxDn79", "visitor_id": "viAm4tpZY1dil",
            "created_at": "2021-01-06T11:30:55.889Z", "updated_at": "2021-01-06T11:40:00.000Z",
            "finished_at": "2021-01-06T11:39:00.000Z",
            "agent_ids": ["23144"], "assigned_ids": ["23144"],
            "location": {"ip": "127.0.0.1", "city": "Brno", "code": "cz", "country": "Czechia"},
            "rating_value": 5, "rating_text": "Your are awesome", "referer": "",
            "domain": "www.smartsupp.com", "tags": [], "is_offline": false, "is_served": true
        });
        let message = json!({
            "id": "msd1L4y1Gtxq", "type": "message", "sub_type": "agent",
            "chatId": "cod1L4y1Gtxq", "agentId": "34556", "visitorId": null,
            "createdAt": "2021-01-06T11:31:00.000Z",
            "content": {"type": "text", "text": "Hello, can you help me with order process?", "data": null},
            "trigger": null, "attachments": []
        });
        let events = |item: &Value| {
            let pulled = Pulled::read(item).expect("reads");
            conversation_events(&pulled, vec![message.clone()]).expect("maps")
        };
        let (a, b) = (events(&camel), events(&snake));
        let keys = |events: &[IncomingEvent]| -> Vec<String> {
            events.iter().map(|e| e.dedup_key.clone()).collect()
        };
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(a.len(), 4, "opened, the message, closed, the snapshot");
        for (x, y) in a.iter().zip(&b).take(3) {
            assert_eq!(x.payload, y.payload);
        }
        let EventPayload::Conversation(snapshot) = &a[3].payload else {
            panic!("a conversation snapshot");
        };
        assert_eq!(snapshot.status, Some(ConversationStatus::Closed));
        assert_eq!(snapshot.assigned_agent.as_deref(), Some("agent:23144"));
        assert_eq!(snapshot.rating.as_ref().and_then(|r| r.score), Some(5));
        assert_eq!(snapshot.attributes["location.city"], "Brno");
        let EventPayload::Conversation(reply) = &a[1].payload else {
            panic!("a message");
        };
        assert_eq!(reply.messages[0].author_id.as_deref(), Some("agent:34556"));
        // A record without createdAt (or with an unreadable one) is refused with a reason.
        let mut broken = camel.clone();
        broken["createdAt"] = json!("yesterday");
        let reason = Pulled::read(&broken).err().expect("refused");
        assert!(reason.contains("createdAt"), "{reason}");
    }

    #[test]
    fn settings_are_checked() {
        let base = ConnectionConfig::new(
            switchboard_core::ConnectionId::new("smartsupp").expect("valid id"),
            "smartsupp",
        );
        let missing = SmartsuppConnector::new(&base).expect_err("needs api_token");
        assert!(missing.message.contains(API_TOKEN));
        let with_token = base.clone().with_secret(API_TOKEN, "t0ken-value");
        let connector = SmartsuppConnector::new(&with_token).expect("builds");
        assert_eq!(connector.order(), SyncOrder::OldestFirst);
        assert!(!format!("{connector:?}").contains("t0ken-value"));
        let newest = with_token
            .clone()
            .with_setting(SYNC_ORDER_SETTING, "newest_first");
        assert_eq!(
            SmartsuppConnector::new(&newest).expect("builds").order(),
            SyncOrder::NewestFirst
        );
        for (key, value) in [(SYNC_ORDER_SETTING, "sideways"), (PAGE_SIZE_SETTING, "0")] {
            let bad = with_token.clone().with_setting(key, value);
            let error = SmartsuppConnector::new(&bad).expect_err("refused");
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains(key));
        }
    }
}
