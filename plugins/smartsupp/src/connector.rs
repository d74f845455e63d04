//! Pull sync through Smartsupp's REST API v2: conversations from `POST
//! /v2/conversations/search` (paged with its `after` cursor, sorted by `updatedAt`) and each
//! conversation's messages from `GET /v2/conversations/{id}/messages`.
//!
//! Every API record is turned into the event callback it corresponds to and parsed by the
//! callback parser, so pulled and pushed data name the same conversation (the API's
//! conversation id) with the same message keys and dedup keys, and merge. See the crate docs
//! for the cursor and what is assumed.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
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
/// The search endpoint.
pub const SEARCH_PATH: &str = "/v2/conversations/search";
/// Conversations per search page unless `page_size` says otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page the connector asks for (conversations or messages).
pub const MAX_PAGE_SIZE: usize = 100;
/// Messages per page of a conversation's messages.
pub const MESSAGES_PAGE_SIZE: usize = 100;
/// The rate limit when the connection sets none: 300 calls per 60 s (5 per second on
/// average). Smartsupp answers 429 when a token calls too fast but publishes no number; this
/// stays well below what its own dashboard and integrations use. Set the connection's
/// `rate_limit` to change it.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    calls: 300,
    per_seconds: 60,
};
/// `vendor_event` of the pull-only snapshot event each pulled conversation gives.
pub const SNAPSHOT_EVENT: &str = "api.conversation";
/// The version of the cursor format.
const CURSOR_VERSION: u32 = 1;

/// The order a sync walks the conversations in, by `updatedAt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOrder {
    /// Least recently updated first. A finished run's cursor holds the position after the last
    /// conversation seen, so the next run continues from the last `updatedAt` seen and picks up
    /// everything updated since.
    #[default]
    OldestFirst,
    /// Most recently updated first (recent data lands first). A run stops at the newest
    /// conversation of the previous completed run; conversations updated since moved above it.
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

/// A conversation's place in the `updatedAt` order: its update time and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Mark {
    /// `updated_at` in milliseconds.
    updated_at: i64,
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
    /// Resume the search after this (`None`: from the top of the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<Value>,
    /// The sync's lower bound on `updatedAt` (from `since` when it started), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    /// Newest first: the newest conversation of the previous completed run; the run stops
    /// when it reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_at: Option<Mark>,
    /// Newest first: the newest conversation of the run in progress (the next `stop_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_top: Option<Mark>,
}

impl Cursor {
    fn fresh(order: SyncOrder, since: Option<Timestamp>) -> Cursor {
        Cursor {
            v: CURSOR_VERSION,
            order,
            after: None,
            since: since.map(Timestamp::as_millis),
            stop_at: None,
            run_top: None,
        }
    }

    fn parse(text: &str, order: SyncOrder) -> Result<Cursor, Error> {
        let cursor: Cursor = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "the saved Smartsupp sync cursor is not valid ({e}); sync this connection from scratch"
            ))
        })?;
        if cursor.v != CURSOR_VERSION {
            return Err(Error::invalid(format!(
                "the saved Smartsupp sync cursor has version {}, this build reads {CURSOR_VERSION}; sync this connection from scratch",
                cursor.v
            )));
        }
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
}

/// One page of `POST /v2/conversations/search` or of a conversation's messages.
#[derive(Debug, Deserialize)]
struct ApiPage {
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    after: Option<Value>,
}

/// The fields of an API conversation the connector reads itself; the callback parser reads the
/// rest.
#[derive(Debug, Deserialize)]
struct ApiConversation {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    updated_at: String,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    channel: Option<ApiChannel>,
    #[serde(default)]
    contact_id: Option<String>,
    #[serde(default)]
    visitor_id: Option<String>,
    #[serde(default)]
    agent_ids: Option<Vec<Value>>,
    #[serde(default)]
    assigned_ids: Option<Vec<Value>>,
    #[serde(default)]
    rating_value: Option<i64>,
    #[serde(default)]
    rating_text: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default)]
    is_offline: Option<bool>,
    #[serde(default)]
    is_served: Option<bool>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    location: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct ApiChannel {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Pulls a Smartsupp account's conversations and messages; see the module docs.
pub struct SmartsuppConnector {
    client: VendorClient,
    token: Secret,
    order: SyncOrder,
    page_size: usize,
}

impl fmt::Debug for SmartsuppConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartsuppConnector")
            .field("connection", &self.client.connection())
            .field("base_url", &self.client.settings().base_url)
            .field("order", &self.order)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// Builds a connection's Smartsupp connector: needs the secret `api_token`; reads the settings
/// `base_url`, `sync_order`, `page_size` and those of [`ClientSettings::from_connection`].
pub fn connector(config: &ConnectionConfig) -> Result<Box<dyn Connector>, Error> {
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
        })
    }

    /// The order this connector syncs in.
    pub fn order(&self) -> SyncOrder {
        self.order
    }

    async fn search(&self, cursor: &Cursor) -> Result<ApiPage, Error> {
        let mut body = json!({
            "size": self.page_size,
            "sort": [{"updatedAt": self.order.direction()}],
        });
        if let Some(since) = cursor.since.and_then(Timestamp::from_millis) {
            body["query"] = json!([{"field": "updatedAt", "value": [since.to_rfc3339(), null]}]);
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
            .send_json::<ApiPage>()
            .await
    }

    /// Every message of a conversation, oldest first.
    async fn messages(&self, conversation: &str) -> Result<Vec<Value>, Error> {
        let path = format!("/v2/conversations/{}/messages", path_segment(conversation));
        let mut messages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("size", MESSAGES_PAGE_SIZE.to_string())];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page: ApiPage = self
                .client
                .request(Method::GET, &path)
                .bearer(&self.token)
                .query(&query)
                .send_json()
                .await?;
            let count = page.items.len();
            messages.extend(page.items);
            let next = page.after.as_ref().and_then(after_param);
            match next {
                Some(next) if count == MESSAGES_PAGE_SIZE && after.as_ref() != Some(&next) => {
                    after = Some(next);
                }
                _ => return Ok(messages),
            }
        }
    }

    /// The events of one conversation: opened, its messages, closed, and the snapshot.
    async fn conversation_events(
        &self,
        item: &Value,
        conversation: &ApiConversation,
        updated_at: Timestamp,
    ) -> Result<Vec<IncomingEvent>, Error> {
        let id = conversation.id.as_str();
        let mut events = Vec::new();
        if let Some(created_at) = &conversation.created_at {
            let mut data = json!({"conversation": subset(item, &["id", "created_at", "referer", "domain", "tags"])});
            if let Some(contact) = non_empty(&conversation.contact_id) {
                data["contact"] = json!({"id": contact});
            }
            events.extend(as_callback("conversation.opened", created_at, data)?);
        }
        for message in self.messages(id).await? {
            events.extend(message_events(id, conversation, message)?);
        }
        let closed = conversation.status.as_deref() == Some("closed");
        match (&conversation.finished_at, closed) {
            (Some(at), _) => {
                let data = json!({"conversation": subset(item, &["id", "finished_at"])});
                events.extend(as_callback("conversation.closed", at, data)?);
            }
            (None, true) => {
                // Closed without a finish time: the last update is when it was closed.
                let data = json!({"conversation": {"id": id}});
                events.extend(as_callback(
                    "conversation.closed",
                    &conversation.updated_at,
                    data,
                )?);
            }
            (None, false) => {}
        }
        events.push(snapshot(conversation, updated_at));
        Ok(events)
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

/// A messages page's `after` (an array of sort values) as the query parameter: the values
/// joined with commas.
fn after_param(after: &Value) -> Option<String> {
    let values = after.as_array()?;
    if values.is_empty() {
        return None;
    }
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    Some(parts.join(","))
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// The listed fields of a JSON object (those present).
fn subset(item: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for field in fields {
        if let Some(value) = item.get(*field).filter(|v| !v.is_null()) {
            out.insert((*field).to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// A record Switchboard cannot read: the vendor broke its own format.
fn unreadable(what: &str, error: &Error) -> Error {
    Error::new(
        ErrorCode::Unavailable,
        format!(
            "Smartsupp returned {what} Switchboard cannot read ({}); retry later, and report it if it persists",
            error.message
        ),
    )
}

/// Parses the event callback an API record corresponds to.
fn as_callback(event: &str, timestamp: &str, data: Value) -> Result<Vec<IncomingEvent>, Error> {
    let envelope = json!({
        "type": callback::EVENT_CALLBACK,
        "event": event,
        "timestamp": timestamp,
        "data": data,
    });
    let body = envelope.to_string();
    callback::parse(&envelope, body.as_bytes())
        .map_err(|e| unreadable(&format!("a record for {event}"), &e))
}

/// A message as the callback it would have been: `conversation.contact_replied` for the
/// visitor's, `conversation.agent_replied` for agents', bots' and triggers'. Other records
/// (not `type: "message"`) are kept as vendor events.
fn message_events(
    conversation_id: &str,
    conversation: &ApiConversation,
    message: Value,
) -> Result<Vec<IncomingEvent>, Error> {
    let time = message
        .get("created_at")
        .and_then(Value::as_str)
        .unwrap_or(conversation.updated_at.as_str())
        .to_owned();
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let sub_type = message
        .get("sub_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "message" {
        let data = json!({"conversation_id": conversation_id, "message": message});
        return as_callback("conversation.message", &time, data);
    }
    if sub_type == "contact" {
        let mut data = json!({"conversation_id": conversation_id, "message": message});
        if let Some(contact) = non_empty(&conversation.contact_id) {
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
    } else {
        let data = json!({"conversation_id": conversation_id, "message": message});
        as_callback("conversation.agent_replied", &time, data)
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The pull-only event: the conversation as the API shows it at `updated_at` (status,
/// assignment, rating, tags, channel and location), keyed by the update time so each seen
/// update is one event.
fn snapshot(conversation: &ApiConversation, updated_at: Timestamp) -> IncomingEvent {
    let id = conversation.id.as_str();
    let mut patch = ConversationPatch::new(id);
    let status = conversation.status.as_deref();
    patch.status = Some(if conversation.is_offline == Some(true) {
        ConversationStatus::Offline
    } else if status == Some("closed") || conversation.finished_at.is_some() {
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
        .filter_map(id_text)
        .collect();
    if let Some(last) = assigned.last() {
        patch.assigned_agent = Some(format!("agent:{last}"));
    }
    let agents: Vec<String> = conversation
        .agent_ids
        .iter()
        .flatten()
        .filter_map(id_text)
        .map(|id| format!("agent:{id}"))
        .collect();
    if !agents.is_empty() {
        patch
            .attributes
            .insert("agent_ids".to_owned(), agents.join(","));
    }
    match conversation.rating_value {
        Some(value @ 1..=5) => {
            patch.rating = Some(Rating {
                score: Some(value),
                scale: Some("1-5".to_owned()),
                label: None,
                comment: non_empty(&conversation.rating_text).map(str::to_owned),
            });
        }
        Some(other) if other != 0 => {
            tracing::warn!(conversation = %id, rating = other, "smartsupp rating outside 1-5 ignored");
        }
        _ => {}
    }
    patch.tags_added = conversation.tags.clone().unwrap_or_default();
    patch.referrer = non_empty(&conversation.referer).map(str::to_owned);
    let texts = [
        ("domain", &conversation.domain),
        ("contact_id", &conversation.contact_id),
        ("visitor_id", &conversation.visitor_id),
        (
            "channel.type",
            &conversation.channel.as_ref().and_then(|c| c.kind.clone()),
        ),
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
    let at_key = updated_at.as_millis().to_string();
    IncomingEvent {
        dedup_key: dedup_key(&[SNAPSHOT_EVENT, id, &at_key]),
        kind: EventKind::ChatUpdated,
        vendor_event: SNAPSHOT_EVENT.to_owned(),
        occurred_at: updated_at,
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
        let full_page = page.items.len() >= self.page_size;
        let mut events = Vec::new();
        let mut reached_previous_run = false;
        for item in &page.items {
            let conversation = ApiConversation::deserialize(item).map_err(|e| {
                unreadable(
                    "a conversation",
                    &Error::invalid(format!("{e}; it needs an id and updated_at")),
                )
            })?;
            let updated_at =
                Timestamp::parse_rfc3339(&conversation.updated_at).ok_or_else(|| {
                    unreadable(
                        "a conversation",
                        &Error::invalid(format!(
                            "updated_at {:?} is not RFC 3339",
                            conversation.updated_at
                        )),
                    )
                })?;
            let mark = Mark {
                updated_at: updated_at.as_millis(),
                id: conversation.id.clone(),
            };
            if self.order == SyncOrder::NewestFirst {
                if state.stop_at.as_ref().is_some_and(|stop| mark <= *stop) {
                    reached_previous_run = true;
                    break;
                }
                if state.run_top.is_none() {
                    state.run_top = Some(mark.clone());
                }
            }
            events.extend(
                self.conversation_events(item, &conversation, updated_at)
                    .await?,
            );
        }
        let next_after = page.after.filter(|a| !a.is_null());
        let done = reached_previous_run || !full_page || next_after.is_none();
        match (self.order, done) {
            (SyncOrder::NewestFirst, true) => {
                // The run is complete: the next one starts from the top and stops here.
                state.stop_at = state.run_top.take().or(state.stop_at);
                state.after = None;
            }
            _ => {
                if next_after.is_some() {
                    state.after = next_after;
                }
            }
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

    #[test]
    fn cursor_round_trips_and_refuses_another_order() {
        let mut cursor = Cursor::fresh(SyncOrder::NewestFirst, Timestamp::from_millis(5));
        cursor.after = Some(json!([1714557600125_i64, "cnv_1"]));
        cursor.stop_at = Some(Mark {
            updated_at: 7,
            id: "cnv_0".to_owned(),
        });
        let text = cursor.to_json();
        assert_eq!(
            Cursor::parse(&text, SyncOrder::NewestFirst).expect("parses"),
            cursor
        );
        let error = Cursor::parse(&text, SyncOrder::OldestFirst).expect_err("other order");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("from scratch"));
        assert!(Cursor::parse("{", SyncOrder::NewestFirst).is_err());
        assert!(
            Cursor::parse(r#"{"v":9,"order":"newest_first"}"#, SyncOrder::NewestFirst).is_err()
        );
    }

    #[test]
    fn marks_order_by_time_then_id() {
        let mark = |t, id: &str| Mark {
            updated_at: t,
            id: id.to_owned(),
        };
        assert!(mark(1, "b") < mark(2, "a"));
        assert!(mark(2, "a") < mark(2, "b"));
    }

    #[test]
    fn path_segments_and_after_params() {
        assert_eq!(path_segment("cnv_8Hk2ZqWm"), "cnv_8Hk2ZqWm");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            after_param(&json!([1714557601300_i64, "msg_01"])).as_deref(),
            Some("1714557601300,msg_01")
        );
        assert_eq!(after_param(&json!([])), None);
        assert_eq!(after_param(&Value::Null), None);
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
