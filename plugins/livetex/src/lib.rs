//! Switchboard plugin for [LiveTex](https://livetex.ru): webhook intake of dialogs, messages,
//! leads (offline requests) and conversations.
//!
//! # The model
//! One LiveTex *conversation* (обращение, `conversation_id`) holds several *dialogs* (диалог,
//! `chat_id` = conversation id + the dialog's number), each handled by one operator. Switchboard
//! keeps the LiveTex conversation as one [`switchboard_core::Conversation`] (external id =
//! `conversation_id`) and each dialog as a [`switchboard_core::Segment`] of it (id = `chat_id`,
//! with its own agent, rating, start and end). The dialogs' messages are the conversation's
//! messages, keyed `<chat_id>:<message id>` so they stay unique across dialogs. A *lead* (an
//! offline request) is an offline conversation: status offline, the lead's text as the
//! visitor's message, contact data on the visitor.
//!
//! # Webhook format
//! LiveTex's public documentation does not describe the webhook body, and the seed only names
//! the columns of the three tables. This plugin therefore defines a JSON body close to
//! LiveTex's own API naming, and accepts whole table rows so that the same mapping serves the
//! pull sync (see `README.md` for every field):
//! ```json
//! {"webHookKey": "…", "event": "visitor_message", "conversation_id": "c-1001",
//!  "chat_id": "c-1001-1", "visitor_id": "v-77", "visitor_name": "Мария",
//!  "created_at": "2024-03-01T09:00:05Z",
//!  "message": {"id": "m1", "text": "Здравствуйте", "created_at": "2024-03-01T09:00:05Z"}}
//! ```
//! `event` is one of `visitor_message`, `operator_message` (with `employee_*`),
//! `message_delivered` / `message_read` (`message.id`, `message.status`), `dialog_closed` and
//! `dialog` (a dialogs row in `dialog`), `lead` (a leads row in `lead`), `conversation` (a
//! conversations row in `conversation`). Any other event is kept as a vendor event.
//!
//! # Verification
//! LiveTex identifies a webhook by the key configured with it, sent in the body as
//! `webHookKey`. The connection's secret `webhook_key` must equal it (compared in constant
//! time); a missing or wrong key is refused as unauthenticated.
//!
//! # Assumptions
//! - Dates are RFC 3339 strings, `YYYY-MM-DD HH:MM:SS` strings taken as UTC, or epoch
//!   seconds; anything outside 2000..2100 is refused as absurd, naming the field.
//! - Ids of conversations, dialogs, messages, leads and visitors are strings; ids of employees,
//!   sites, remarks and `assigned_to` / `completed_by` are integers.
//! - Durations and answer times are seconds (0 to ten years); `rating_value` is an integer
//!   from -10 to 10 and `rating_type` names its scale; lead `result` is seconds.
//! - A message's `creator` is `visitor`, `employee` (or `operator`), `bot` or `system`.
//! - `prechats_chat` / `prechats_hidden` are lists of `{"name", "value"}`;
//!   `conversation_custom_info` / `discourser_info` are objects of strings.
//!
//! # Pull sync
//! [`LiveTexConnector`] (the plugin's connector) logs in with the account's `login` and
//! `password` (OAuth2 password grant, token cached and refreshed) and pages through the
//! dialogs, leads and conversations tables by update time. It maps rows with the same public
//! functions the webhook uses ([`dialog_to_events`], [`lead_to_events`],
//! [`conversation_to_events`]), so a record pulled and the same record pushed have the same
//! dedup key and merge.
//!
//! ```
//! use switchboard_core::{ConnectionConfig, ConnectionId, Timestamp, WebhookRequest};
//!
//! let config = ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
//!     .with_secret("webhook_key", "lt-key");
//! let source = switchboard_plugin_livetex::webhook_source(&config).unwrap();
//! let body = br#"{"webHookKey": "lt-key", "event": "message_read", "conversation_id": "c-1",
//!     "chat_id": "c-1-1", "created_at": 1709283605, "message": {"id": "m2"}}"#;
//! let request = WebhookRequest { connection: &config, headers: &[], query: &[],
//!     body, received_at: Timestamp::now() };
//! source.verify(&request).unwrap();
//! let events = source.parse(&request).unwrap();
//! assert_eq!(events[0].dedup_key, "delivery:c-1-1:m2:read");
//! ```

mod connector;
mod fields;
mod messages;
mod rows;
mod webhook;

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::verify::constant_time_eq;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Error, IncomingEvent, Plugin, WebhookRequest, WebhookSource,
};

pub use crate::connector::{
    DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT, LOGIN_SETTING, LiveTexConnector, MAX_PAGE_SIZE,
    PAGE_SIZE_SETTING, PASSWORD_SECRET, TOKEN_PATH, connector,
};
pub use crate::rows::{conversation_to_events, dialog_to_events, lead_to_events};
pub use crate::webhook::parse_webhook;

/// The vendor name, also the default connection id.
pub const VENDOR: &str = "livetex";
/// The connection secret holding the key configured with the LiveTex webhook.
pub const WEBHOOK_KEY_SECRET: &str = "webhook_key";
/// The body field LiveTex sends the key in.
pub const WEBHOOK_KEY_FIELD: &str = "webHookKey";

/// A LiveTex connection's webhook source: checks `webHookKey`, parses with [`parse_webhook`].
#[derive(Debug, Clone)]
pub struct LiveTexWebhook {
    connection: ConnectionId,
}

impl LiveTexWebhook {
    /// The source for a connection.
    ///
    /// # Errors
    /// [`switchboard_core::ErrorCode::InvalidArgument`] when verification is on and the
    /// connection has no `webhook_key` secret.
    pub fn new(config: &ConnectionConfig) -> Result<Self, Error> {
        if config.verify {
            config.required_secret(WEBHOOK_KEY_SECRET)?;
        }
        Ok(LiveTexWebhook {
            connection: config.id.clone(),
        })
    }
}

/// The plugin's [`switchboard_core::WebhookFactory`].
///
/// # Errors
/// As [`LiveTexWebhook::new`].
pub fn webhook_source(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    Ok(Box::new(LiveTexWebhook::new(config)?))
}

/// Only the key, so that verification reads nothing else of the body.
#[derive(Deserialize)]
struct KeyOnly {
    #[serde(rename = "webHookKey", default)]
    key: Option<Value>,
}

impl WebhookSource for LiveTexWebhook {
    /// The body carries the webhook key as `webHookKey`: never store it.
    fn raw_for_storage(&self, request: &WebhookRequest<'_>) -> String {
        self.raw_without_fields(request, &[WEBHOOK_KEY_FIELD])
    }

    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        let Some(expected) = request.connection.secret(WEBHOOK_KEY_SECRET) else {
            return Err(Error::unauthenticated(format!(
                "connection {} has no `{WEBHOOK_KEY_SECRET}` secret to check webHookKey against: \
                 configure the key set on the LiveTex webhook",
                request.connection.id
            )));
        };
        let body: KeyOnly = serde_json::from_slice(request.body).map_err(|e| {
            Error::invalid(format!(
                "the body is not a JSON object ({e}): send the LiveTex webhook body unchanged"
            ))
        })?;
        let sent = match body.key {
            None | Some(Value::Null) => {
                return Err(Error::unauthenticated(
                    "the body carries no webHookKey: set the key on the LiveTex webhook",
                ));
            }
            Some(Value::String(sent)) => sent,
            Some(_) => {
                return Err(Error::unauthenticated(
                    "webHookKey is not a string: set the key on the LiveTex webhook",
                ));
            }
        };
        if constant_time_eq(sent.as_bytes(), expected.expose().as_bytes()) {
            Ok(())
        } else {
            tracing::debug!(connection = %self.connection, "livetex webHookKey mismatch");
            Err(Error::unauthenticated(format!(
                "webHookKey does not match the `{WEBHOOK_KEY_SECRET}` of connection {}: \
                 use the key configured on the LiveTex webhook",
                request.connection.id
            )))
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        parse_webhook(request.body)
    }
}

switchboard_core::inventory::submit! {
    Plugin {
        vendor: VENDOR,
        description: "LiveTex dialogs, messages, delivery statuses, leads and conversations \
                      pushed by the LiveTex webhook integration, and pulled from the LiveTex \
                      API (OAuth2 login and password)",
        verification: "webHookKey in the JSON body must equal the connection's secret \
                       `webhook_key` (constant-time comparison)",
        webhook: Some(webhook_source),
        connector: Some(connector),
    }
}
