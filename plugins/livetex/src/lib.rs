//! Switchboard plugin for [LiveTex](https://livetex.ru): the webhook integration's finished
//! conversations, and a Web API connector pulling chats and leads.
//!
//! # The model
//! A LiveTex *conversation* (обращение, numeric `id`) holds several *chats* (диалог, numeric
//! `id`), each handled by one employee. Switchboard keeps the conversation as one
//! [`switchboard_core::Conversation`] (external id = the conversation's id) and each chat as a
//! [`switchboard_core::Segment`] of it (id = the chat's id, with its employee, vote, start and
//! end). The chats' messages are the conversation's messages, keyed `<chat id>:<message id>`
//! so they stay unique across chats. A *lead* (an offline request or call-back) is offline:
//! its text is the visitor's message, its contact data the visitor's.
//!
//! # Webhook format
//! LiveTex's webhook integration (support.livetex.ru/hc/ru/articles/360007110438) POSTs the
//! finished conversation as JSON when an employee closes it, and on request also when one is
//! assigned or rated: `{"Conversation": {...}, "discourser": {...}, "employee": [...]}`. The
//! conversation's chats become segments with their messages, the discourser the visitor, the
//! employees its agents; its leads become offline events ([`parse_webhook`]).
//!
//! # Verification
//! The integration documents no signature and no key. The connection's secret
//! `webhook_secret` (or its older name `webhook_key`) is a token set in the webhook URL
//! (`?token=...`) or sent as `X-Switchboard-Token`, compared in constant time. The deprecated
//! Messaging API's `webHookKey` (articles/208956629) belongs to another product and is not
//! read.
//!
//! # Pull sync
//! [`LiveTexConnector`] (the plugin's connector) logs in to the Web API
//! (`POST https://web-api.livetex.ru/oauth2/token`, password grant) and pages through
//! `/chats/list` and `/leads/list` by creation time. It maps rows with the public
//! [`chat_to_events`] and [`lead_to_events`]; a chat's messages have the same keys as the
//! webhook's, so a conversation pulled and pushed is one conversation.
//!
//! ```
//! use switchboard_core::{ConnectionConfig, ConnectionId, Timestamp, WebhookRequest};
//!
//! let config = ConnectionConfig::new(ConnectionId::new("livetex").unwrap(), "livetex")
//!     .with_secret("webhook_secret", "lt-token");
//! let source = switchboard_plugin_livetex::webhook_source(&config).unwrap();
//! let body = br#"{"Conversation": {"id": 9001, "created_at": "2024-03-01T12:00:00"},
//!     "discourser": {"name": "Maria"}, "employee": []}"#;
//! let query = [("token".to_owned(), "lt-token".to_owned())];
//! let request = WebhookRequest { connection: &config, headers: &[], query: &query,
//!     body, received_at: Timestamp::now() };
//! source.verify(&request).unwrap();
//! let events = source.parse(&request).unwrap();
//! assert_eq!(events[0].conversation_external_id(), Some("9001"));
//! ```

mod connector;
mod fields;
mod keys;
mod model;
mod webhook;

use switchboard_core::verify::check_token;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Error, IncomingEvent, Plugin, WebhookRequest, WebhookSource,
};

pub use crate::connector::{
    DEFAULT_BASE_URL, DEFAULT_PAGE_SIZE, DEFAULT_RATE_LIMIT, LOGIN_SETTING, LiveTexConnector,
    MAX_PAGE_SIZE, PAGE_SIZE_SETTING, PASSWORD_SECRET, TOKEN_PATH, connector,
};
pub use crate::keys::{Secrets, Settings};
pub use crate::model::{chat_to_events, lead_to_events};
pub use crate::webhook::parse_webhook;

/// The vendor name, also the default connection id.
pub const VENDOR: &str = "livetex";
/// The connection secret holding the webhook token (sent as `?token=` or
/// `X-Switchboard-Token`).
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// The older name of [`WEBHOOK_SECRET`], still read when [`WEBHOOK_SECRET`] is not set.
pub const WEBHOOK_KEY_SECRET: &str = "webhook_key";

/// The name of the secret a connection keeps its webhook token under, if it has one.
fn token_secret(config: &ConnectionConfig) -> Option<&'static str> {
    [WEBHOOK_SECRET, WEBHOOK_KEY_SECRET]
        .into_iter()
        .find(|name| config.secret(name).is_some())
}

/// A LiveTex connection's webhook source: checks the connection token, parses with
/// [`parse_webhook`].
#[derive(Debug, Clone)]
pub struct LiveTexWebhook {
    connection: ConnectionId,
}

impl LiveTexWebhook {
    /// The source for a connection.
    ///
    /// # Errors
    /// [`switchboard_core::ErrorCode::InvalidArgument`] when verification is on and the
    /// connection has neither `webhook_secret` nor `webhook_key`.
    pub fn new(config: &ConnectionConfig) -> Result<Self, Error> {
        if config.verify && token_secret(config).is_none() {
            config.required_secret(WEBHOOK_SECRET)?;
        }
        Ok(LiveTexWebhook {
            connection: config.id.clone(),
        })
    }
}

/// The plugin's [`switchboard_core::WebhookFactory`].
///
/// # Errors
/// As [`LiveTexWebhook::new`], and for a setting or secret not in [`Settings`] or
/// [`Secrets`].
pub fn webhook_source(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    keys::check(config)?;
    Ok(Box::new(LiveTexWebhook::new(config)?))
}

/// The deprecated Messaging API's body field holding its webhook key (articles/208956629).
/// Not read, but never stored if a body carries it.
pub const MESSAGING_API_KEY_FIELD: &str = "webHookKey";

impl WebhookSource for LiveTexWebhook {
    /// A body that still carries the Messaging API's `webHookKey` (a credential) is stored
    /// without it.
    fn raw_for_storage(&self, request: &WebhookRequest<'_>) -> String {
        self.raw_without_fields(request, &[MESSAGING_API_KEY_FIELD])
    }

    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        let Some(secret) = token_secret(request.connection) else {
            return Err(Error::unauthenticated(format!(
                "connection {} has no `{WEBHOOK_SECRET}` secret to check the webhook token \
                 against: configure one and put it in the LiveTex webhook URL as ?token=...",
                request.connection.id
            )));
        };
        match check_token(request, secret) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::unauthenticated(format!(
                "the request carries no token: LiveTex's webhook integration signs nothing, so \
                 set the webhook URL to .../webhooks/{}?token=<the `{WEBHOOK_SECRET}` secret>",
                request.connection.id
            ))),
            Err(error) => {
                tracing::debug!(connection = %self.connection, "livetex webhook token mismatch");
                Err(error)
            }
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        parse_webhook(request.body)
    }
}

switchboard_core::inventory::submit! {
    Plugin {
        vendor: VENDOR,
        description: "LiveTex conversations (chats, messages, leads) pushed by the LiveTex \
                      webhook integration, and chats and leads pulled from the LiveTex Web API \
                      (OAuth2 password grant)",
        verification: "the token in ?token= or X-Switchboard-Token must equal the connection's \
                       secret `webhook_secret` (or `webhook_key`), constant-time; LiveTex's \
                       webhook integration signs nothing",
        webhook: Some(webhook_source),
        connector: Some(connector),
    }
}
