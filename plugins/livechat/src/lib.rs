//! Switchboard plugin for [LiveChat](https://www.livechat.com/): webhooks, and a connector
//! ([`LiveChatConnector`]: archive sync through the Agent Chat API's `list_archives`, agents
//! through the Configuration API, tickets through the deprecated REST API v2; see the README for
//! its settings and cursor).
//!
//! One connection accepts both formats LiveChat has sent; the body tells them apart.
//!
//! # Formats
//! - **Legacy (v2) webhooks**, configured under *Settings > Integrations > Webhooks*: one
//!   object per event with `event_type` (`chat_started`, `chat_ended`, `chat_changed`,
//!   `visitor_queued`, `ticket_created`), `event_unique_id`, `token`, `license_id`,
//!   `lc_version`, the whole `chat` (transcript included), the `visitor` and the
//!   `pre_chat_survey`, or a `ticket` for `ticket_created`. Times are seconds since the epoch
//!   (numbers or numeric strings); the `yyyy-MM-ddTHH:mm:ss.fffZ` string form some
//!   integrations document is accepted too.
//! - **v3.x webhooks** (Agent Chat API): an envelope `{webhook_id, secret_key, action,
//!   organization_id | license_id, payload, additional_data}`. Modelled actions:
//!   `incoming_chat`, `incoming_event`, `chat_deactivated`, `thread_tagged`,
//!   `thread_untagged`, `chat_transferred`, `user_added_to_chat`, `user_removed_from_chat`.
//!   Any other action is kept as a [`EventKind::VendorEvent`] (without its `secret_key`).
//!
//! # Verification
//! - v3.x bodies carry `secret_key`: it must equal the connection's secret `webhook_secret`
//!   (constant-time comparison).
//! - Legacy bodies carry no secret: the request must bring HTTP Basic credentials (secrets
//!   `basic_user` and `basic_password`, e.g. `https://user:password@host/webhooks/livechat`
//!   as the target URL) or the token `webhook_secret` in the `X-Switchboard-Token` header or
//!   the `token` query parameter (`.../webhooks/livechat?token=...`).
//!
//! With verification on, the factory refuses a connection that has neither `webhook_secret`
//! nor both Basic secrets.
//!
//! # Mapping
//! | LiveChat | Switchboard |
//! |---|---|
//! | legacy `chat_started` | `ChatStarted`, status open, plus one `Message` event per message |
//! | legacy `chat_ended` | `ChatEnded`, status closed, `ended_at`, `end_reason` from a `closed` chat event (`visitor_closed`), plus `Message` events |
//! | legacy `chat_changed` | `ChatUpdated` (closed if it has `ended_timestamp`), plus `Message` events |
//! | legacy `visitor_queued` | `ChatUpdated`, status queued |
//! | legacy `ticket_created` | `TicketCreated` with a vendor-held [`switchboard_core::Ticket`] |
//! | legacy `chat.events[]` | system messages (`data.type` = the event type) |
//! | legacy `pre_chat_survey[]` | visitor attributes `pre_chat_survey.{id}` (+ `.label`) |
//! | v3 `incoming_chat` | `ChatStarted` (queued if the thread has a `queue`), plus a `Message` per thread event |
//! | v3 `incoming_event` | `Message` (`file` events become attachments) |
//! | v3 `chat_deactivated` | `ChatEnded`, status closed |
//! | v3 `thread_tagged` / `thread_untagged` | `ChatUpdated`, tag added / removed |
//! | v3 `chat_transferred` | `ChatUpdated`, assigned agent, `groups`, `transfer_reason` |
//! | v3 `user_added_to_chat` / `user_removed_from_chat` | `ChatUpdated`, agent joined / left |
//! | anything else | `VendorEvent` |
//!
//! # Dedup keys
//! Legacy: `{event_type}:{event_unique_id}`; without `event_unique_id`,
//! `{event_type}:{chat id}:{started}:{ended}` (plus a hash of the chat for `chat_changed`).
//! Messages: `message:{chat id}:{key}`, where the key is the message's time and a hash of its
//! author and text, so that a message seen in `chat_started` and again in `chat_ended` is one
//! event. v3: LiveChat's `webhook_id` names the webhook registration, not the delivery, so keys
//! come from the payload: `incoming_chat:{chat}:{thread}`, `event:{chat}:{thread}:{event id}`
//! (shared by `incoming_chat` and `incoming_event`), `chat_deactivated:{chat}:{thread}`,
//! `thread_tagged:{chat}:{thread}:{tag}` and so on; unknown actions hash the body.
//!
//! # Assumptions and sources
//! Every mapping rule is marked "documented (source)" or "assumed (why)" in the crate's
//! README, against `livechat/livechat-public-docs` at commit 628955e8; every fixture's source
//! is in `fixtures/SOURCES.md`.

mod body;
mod connector;
mod json;
mod keys;
mod legacy;
mod v3;

use switchboard_core::verify::{check_basic_auth, check_token, constant_time_eq};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Error, EventKind, IncomingEvent, Plugin, WebhookRequest,
    WebhookSource,
};

use crate::json::Obj;

pub use crate::connector::{
    DEFAULT_AGENT_API_BASE_URL, DEFAULT_API_VERSION, DEFAULT_ARCHIVE_PAGE_SIZE, DEFAULT_BASE_URL,
    DEFAULT_CONFIGURATION_API_BASE_URL, DEFAULT_RATE_LIMIT, LIST_ARCHIVES_PATH, LiveChatConnector,
    PERSONAL_ACCESS_TOKEN, connector,
};
pub use crate::keys::{Secrets, Settings};

/// The vendor name, also the default connection id.
pub const VENDOR: &str = "livechat";

/// The secret holding the v3.x `secret_key`, also accepted as the legacy token.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

inventory::submit! {
    Plugin {
        vendor: VENDOR,
        description: "LiveChat webhooks: legacy v2 (chat_started, chat_ended, chat_changed, visitor_queued, ticket_created) and v3.x (incoming_chat, incoming_event, chat_deactivated, tags, transfers, users)",
        verification: "v3.x: secret_key in body; legacy: HTTP Basic or token",
        webhook: Some(webhook),
        connector: Some(connector),
    }
}

/// Builds the webhook source of a LiveChat connection. With verification on, the connection
/// needs the secret `webhook_secret` (v3.x, or legacy token) or both `basic_user` and
/// `basic_password` (legacy). A setting or secret not in [`Settings`] or [`Secrets`] is refused.
pub fn webhook(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    // A misspelt key stops start-up here, before anything reads the keys it meant.
    keys::check(config)?;
    // API credentials that cannot work (a token without its Account ID, an unknown
    // api_version) stop start-up here with the reason, rather than leaving a connection that
    // looks configured for sync and never syncs.
    if let Some(error) = connector::incomplete_credentials(config) {
        return Err(error);
    }
    if config.verify {
        let secret = config.secret(WEBHOOK_SECRET).is_some();
        let basic =
            config.secret("basic_user").is_some() && config.secret("basic_password").is_some();
        if !secret && !basic {
            return Err(Error::invalid(format!(
                "connection {} (livechat) verifies webhooks but has no secret to check them with: \
                 set the secret `{WEBHOOK_SECRET}` to the webhook's secret key (v3.x) or token \
                 (legacy), or `basic_user` and `basic_password` (legacy), in the connection's \
                 `secrets` or in the environment ({}, or {} and {})",
                config.id,
                config.secret_env_var(WEBHOOK_SECRET),
                config.secret_env_var("basic_user"),
                config.secret_env_var("basic_password")
            )));
        }
    }
    Ok(Box::new(LiveChatWebhook {
        connection: config.id.clone(),
    }))
}

/// The LiveChat webhook source of one connection.
#[derive(Debug, Clone)]
pub struct LiveChatWebhook {
    connection: ConnectionId,
}

impl WebhookSource for LiveChatWebhook {
    /// v3.x bodies carry the webhook secret as `secret_key`: never store it.
    fn raw_for_storage(&self, request: &WebhookRequest<'_>) -> String {
        self.raw_without_fields(request, &["secret_key"])
    }

    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        // The same reading as `parse`: the format that decides the credential is the format
        // the mapping uses.
        let read = match body::scan(request.body) {
            Ok(body) => Some(body),
            // No format: only a legacy credential can vouch for it; parse answers 400.
            Err(body::Unreadable::Unrecognized(_)) => None,
            Err(refused @ body::Unreadable::Refused(_)) => return Err(refused.into_error()),
        };
        if let Some(body::Scanned {
            format: body::Format::V3,
            secret_key,
        }) = read
        {
            // The scan checked every member to be JSON, so the key's text parses.
            let secret_key = secret_key.and_then(|raw| serde_json::from_str(raw.get()).ok());
            let sent = match secret_key {
                Some(serde_json::Value::String(key)) => key,
                Some(serde_json::Value::Null) | None => {
                    return Err(Error::unauthenticated(
                        "the LiveChat v3.x body has no secret_key: register the webhook with a secret key",
                    ));
                }
                Some(_) => {
                    return Err(Error::unauthenticated(
                        "the body's secret_key is not a string",
                    ));
                }
            };
            let expected = request.connection.secret(WEBHOOK_SECRET).ok_or_else(|| {
                Error::unauthenticated(format!(
                    "connection {} has no secret `{WEBHOOK_SECRET}` to check the v3.x secret_key against: set it to the webhook's secret key",
                    self.connection
                ))
            })?;
            return if constant_time_eq(sent.as_bytes(), expected.expose().as_bytes()) {
                Ok(())
            } else {
                Err(Error::unauthenticated(format!(
                    "the body's secret_key does not match the secret `{WEBHOOK_SECRET}` of connection {}",
                    self.connection
                )))
            };
        }
        if check_basic_auth(request)? || check_token(request, WEBHOOK_SECRET)? {
            return Ok(());
        }
        Err(Error::unauthenticated(
            "the legacy LiveChat webhook carries no credentials: put HTTP Basic credentials \
             (basic_user, basic_password) in the target URL, or the token webhook_secret in the \
             X-Switchboard-Token header or the `token` query parameter",
        ))
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        let body = body::read(request.body).map_err(body::Unreadable::into_error)?;
        let root = Obj::root(&body.value)?;
        let events = match body.format {
            body::Format::V3 => v3::parse(root, request.received_at)?,
            body::Format::Legacy => legacy::parse(root, request.received_at)?,
        };
        let vendor_events = events
            .iter()
            .filter(|e| e.kind == EventKind::VendorEvent)
            .count();
        tracing::debug!(
            connection = %self.connection,
            events = events.len(),
            vendor_events,
            "parsed livechat webhook"
        );
        Ok(events)
    }
}
