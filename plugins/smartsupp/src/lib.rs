#![doc = include_str!("../README.md")]

mod callback;
mod connector;
mod keys;
mod post_hook;

pub use crate::connector::{
    API_TOKEN, DEFAULT_BASE_URL, DEFAULT_PAGE_SIZE, DEFAULT_RATE_LIMIT, MAX_PAGE_SIZE,
    MESSAGES_PAGE_SIZE, PAGE_SIZE_SETTING, SEARCH_PATH, SKIPPED_EVENT, SNAPSHOT_EVENT,
    SYNC_ORDER_SETTING, SmartsuppConnector, SyncOrder, connector,
};
pub use crate::keys::{Secrets, Settings};

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Sha256;
use switchboard_core::verify::{check_token, constant_time_eq};
use switchboard_core::{
    ConnectionConfig, Error, IncomingEvent, Plugin, Timestamp, WebhookRequest, WebhookSource,
};

/// The vendor name, also the default connection id.
pub const VENDOR: &str = "smartsupp";

/// The connection secret holding the token the POST hook URL carries.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

/// The connection secret holding the app secret the event callbacks are signed with.
pub const APP_SECRET: &str = "app_secret";

/// The header carrying an event callback's signature.
pub const HMAC_HEADER: &str = "x-smartsupp-hmac";

switchboard_core::inventory::submit! {
    Plugin {
        vendor: VENDOR,
        description: "Smartsupp: finished chats, missed chats and offline messages from the POST hook, the signed event callbacks, and pull sync of conversations and messages through the REST API v2",
        verification: "POST hook: secret token (X-Switchboard-Token header or ?token=) = secret `webhook_secret`; event callbacks: X-Smartsupp-Hmac = hex HMAC-SHA256 of the body with secret `app_secret`",
        webhook: Some(webhook),
        connector: Some(connector),
    }
}

/// Builds a connection's Smartsupp webhook source. With verification on, the connection needs
/// `webhook_secret` (for the POST hook), `app_secret` (for event callbacks), or both. A setting
/// or secret not in [`Settings`] or [`Secrets`] is refused.
pub fn webhook(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    keys::check(config)?;
    if config.verify
        && config.secret(WEBHOOK_SECRET).is_none()
        && config.secret(APP_SECRET).is_none()
    {
        return Err(Error::invalid(format!(
            "connection {} (smartsupp) needs the secret `{WEBHOOK_SECRET}` (POST hook token) or `{APP_SECRET}` (event callback HMAC key), in the connection's `secrets` or in the environment ({} or {})",
            config.id,
            config.secret_env_var(WEBHOOK_SECRET),
            config.secret_env_var(APP_SECRET)
        )));
    }
    Ok(Box::new(SmartsuppWebhook))
}

/// Verifies and parses Smartsupp's two webhook formats; see the crate docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmartsuppWebhook;

/// Which of the two formats a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// The POST hook (verified by the URL's token).
    PostHook,
    /// An event callback (verified by `X-Smartsupp-Hmac`).
    Callback,
}

/// A body's format, read once per call by the same function: `verify` and `parse` both decide
/// it from [`read_body`], so a body cannot be checked as one format and mapped as the other.
/// `object` is false when the body is not a JSON object (the POST hook's parse refuses it).
struct Body {
    format: Format,
    object: bool,
}

/// Reads the body's top-level object, refusing a key given twice there: `type` and `event`
/// decide which credential the body needs, and JSON parsers disagree about which of two
/// values counts (serde keeps the last, others the first). A body that is not a JSON object
/// is the POST hook's (its parse refuses it with the reason). Only `type` and `event` are
/// decoded; every other member is only checked to be JSON.
///
/// Documented: callbacks are `{"type": "event_callback", "event", "timestamp", "account_id",
/// "app_id", "data"}` (docs.smartsupp.com/rest-api/webhooks). Assumed (tolerant): a body
/// without `type` but with a string `event` is a callback too, as the payload examples of a
/// production integration show them (onpaj/Anela.Heblo docs/integrations/smartsupp-webhook.md
/// at f331b30f); the POST hook never has a top-level `event`.
fn read_body(body: &[u8]) -> Result<Body, Error> {
    let members = match serde_json::from_slice::<UniqueTop<'_>>(body) {
        Ok(UniqueTop(members)) => members,
        Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => {
            return Err(Error::invalid(format!(
                "the Smartsupp body {e}; a key given twice makes the body ambiguous, so it is refused"
            )));
        }
        Err(_) => {
            return Ok(Body {
                format: Format::PostHook,
                object: false,
            });
        }
    };
    let text = |key: &str| {
        members
            .get(key)
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
    };
    let format = match (text("type"), text("event")) {
        (Some(Ok(Value::String(kind))), _) if kind == callback::EVENT_CALLBACK => Format::Callback,
        (None, Some(Ok(Value::String(_)))) => Format::Callback,
        _ => Format::PostHook,
    };
    Ok(Body {
        format,
        object: true,
    })
}

const DUPLICATE_KEY: &str = "has the top-level key";

/// A JSON object whose top-level keys are unique, each value kept as its text (in a map, so
/// that a body of many keys costs a lookup per key, not a scan).
struct UniqueTop<'a>(BTreeMap<String, &'a RawValue>);

impl<'de> serde::Deserialize<'de> for UniqueTop<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueTop<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueTop<'de>, A::Error> {
                let mut members = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: &RawValue = access.next_value()?;
                    match members.entry(key) {
                        Entry::Occupied(taken) => {
                            return Err(serde::de::Error::custom(format!(
                                "{DUPLICATE_KEY} {:?} twice",
                                taken.key()
                            )));
                        }
                        Entry::Vacant(free) => {
                            free.insert(value);
                        }
                    }
                }
                Ok(UniqueTop(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

impl WebhookSource for SmartsuppWebhook {
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        match read_body(request.body)?.format {
            Format::Callback => verify_hmac(request),
            Format::PostHook => verify_token(request),
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        let body = read_body(request.body)?;
        if !body.object {
            return Err(match serde_json::from_slice::<Value>(request.body) {
                Err(e) => Error::invalid(format!(
                    "the Smartsupp body is not JSON: {e}; send the hook's JSON body unchanged"
                )),
                Ok(_) => Error::invalid(
                    "the Smartsupp body is not a JSON object; send the hook's JSON body unchanged",
                ),
            });
        }
        match body.format {
            Format::Callback => {
                let value = serde_json::from_slice::<Value>(request.body).map_err(|e| {
                    Error::invalid(format!(
                        "the Smartsupp body is not JSON: {e}; send the hook's JSON body unchanged"
                    ))
                })?;
                callback::parse(&value, request.body)
            }
            Format::PostHook => post_hook::parse(request.body),
        }
    }
}

/// The POST hook carries no signature: the hook URL carries the connection's token.
fn verify_token(request: &WebhookRequest<'_>) -> Result<(), Error> {
    if request.connection.secret(WEBHOOK_SECRET).is_none() {
        return Err(Error::unauthenticated(format!(
            "connection {} has no `{WEBHOOK_SECRET}`, so it cannot verify Smartsupp POST hooks; add the secret and append ?token=<secret> to the hook URL",
            request.connection.id
        )));
    }
    if check_token(request, WEBHOOK_SECRET)? {
        Ok(())
    } else {
        Err(Error::unauthenticated(
            "the Smartsupp POST hook carries no token; append ?token=<webhook_secret> to the hook URL given to Smartsupp",
        ))
    }
}

/// Event callbacks: `X-Smartsupp-Hmac` is the hex HMAC-SHA256 of the raw body, keyed with the
/// app secret.
fn verify_hmac(request: &WebhookRequest<'_>) -> Result<(), Error> {
    let Some(secret) = request.connection.secret(APP_SECRET) else {
        return Err(Error::unauthenticated(format!(
            "connection {} has no `{APP_SECRET}`, so it cannot verify Smartsupp event callbacks; add the app's secret",
            request.connection.id
        )));
    };
    let Some(sent) = request.header(HMAC_HEADER) else {
        return Err(Error::unauthenticated(
            "the Smartsupp event callback has no X-Smartsupp-Hmac header; send it signed",
        ));
    };
    let expected = signature(secret.expose().as_bytes(), request.body);
    if constant_time_eq(
        sent.trim().to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    ) {
        Ok(())
    } else {
        Err(Error::unauthenticated(
            "X-Smartsupp-Hmac does not match the body; check the connection's app_secret",
        ))
    }
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty MAC would never match.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) use switchboard_core::dedup_key;

/// A millisecond field as a [`Timestamp`], or an error naming it.
fn millis(value: i64, field: &str) -> Result<Timestamp, Error> {
    Timestamp::from_millis(value).ok_or_else(|| {
        Error::invalid(format!(
            "`{field}` is {value}, not a time between 1970 and 9999 in milliseconds"
        ))
    })
}

/// A body that does not have the documented shape.
fn invalid_body(what: &str, error: &serde_json::Error) -> Error {
    Error::invalid(format!(
        "the Smartsupp {what} does not have the documented shape: {error}"
    ))
}

#[cfg(test)]
mod tests;
