#![doc = include_str!("../README.md")]
// reason: the README cites its sources as [DESK], [MSG], [SEC]: tags, not links.
#![allow(rustdoc::broken_intra_doc_links)]

mod elements;
mod keys;
mod reply;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_core::verify::{check_token, constant_time_eq};
use switchboard_core::{
    ConnectionConfig, ConversationPatch, ConversationStatus, Error, EventKind, EventPayload,
    IncomingEvent, IngestSummary, Message, Participant, Plugin, Rating, Role, Timestamp,
    WebhookReply, WebhookRequest, WebhookSource, dedup_key,
};

pub use crate::keys::{Secrets, Settings};
pub use crate::reply::{TencentErrorCode, reply_for};

/// The vendor name, also the default connection id.
pub const VENDOR: &str = "tencent";

/// The connection setting holding the IM app's SDKAppID.
pub const SDK_APP_ID: &str = "sdk_app_id";

/// The optional connection secret holding a token the callback URL carries.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

/// The query parameter Tencent's webhook authentication adds: `sha256(Token + RequestTime)`,
/// hex.
pub const SIGN_QUERY: &str = "Sign";

/// The query parameter Tencent's webhook authentication adds: the signature's Unix time, in
/// seconds.
pub const REQUEST_TIME_QUERY: &str = "RequestTime";

/// The connection setting that widens how far `RequestTime` may be from the time the request
/// arrived, in seconds.
pub const SIGN_MAX_AGE_SETTING: &str = "sign_max_age_secs";

/// How far `RequestTime` may be from the arrival time by default: Tencent's documents call a
/// request more than one minute off invalid.
pub const DEFAULT_SIGN_MAX_AGE_SECS: u64 = 60;

/// The only `CallbackCommand` this plugin takes.
pub const CALLBACK_COMMAND: &str = "Desk.SessionEventNotify";

switchboard_core::inventory::submit! {
    Plugin {
        vendor: VENDOR,
        description: "Tencent Cloud customer-service desk: session event callbacks (Desk.SessionEventNotify) folded into conversations",
        verification: "the SdkAppid query parameter must equal setting `sdk_app_id`; when secret `webhook_secret` is set, also Tencent's webhook authentication (Sign = sha256(Token + RequestTime), RequestTime within 60 s) or a token (?token= or X-Switchboard-Token)",
        webhook: Some(webhook),
        connector: None,
    }
}

/// Builds a connection's Tencent webhook source. With verification on, the connection needs
/// the setting `sdk_app_id`; `sign_max_age_secs`, when set, must be a whole number of seconds.
/// A setting or secret not in [`Settings`] or [`Secrets`] is refused.
pub fn webhook(config: &ConnectionConfig) -> Result<Box<dyn WebhookSource>, Error> {
    keys::check(config)?;
    if config.verify {
        config.required_setting(SDK_APP_ID)?;
    }
    sign_max_age(config)?;
    Ok(Box::new(TencentWebhook))
}

/// The connection's `sign_max_age_secs`, else [`DEFAULT_SIGN_MAX_AGE_SECS`].
fn sign_max_age(config: &ConnectionConfig) -> Result<u64, Error> {
    match config.setting(SIGN_MAX_AGE_SETTING) {
        None => Ok(DEFAULT_SIGN_MAX_AGE_SECS),
        Some(text) => text.parse::<u64>().map_err(|_| {
            Error::invalid(format!(
                "connection {} (tencent): `{SIGN_MAX_AGE_SETTING}` is `{text}`: set a whole \
                 number of seconds",
                config.id
            ))
        }),
    }
}

/// Tencent's webhook authentication (Chat "Webhook Overview", Security Considerations): with
/// an authentication token set at Tencent, the callback URL carries `Sign` =
/// hex(sha256(Token + RequestTime)) and `RequestTime` (Unix seconds), and a `RequestTime` more
/// than a minute off makes the request invalid. `Ok(false)` when the request carries neither
/// parameter.
fn check_sign(request: &WebhookRequest<'_>, token: &str) -> Result<bool, Error> {
    let sign = request.query_param(SIGN_QUERY);
    let time = request.query_param(REQUEST_TIME_QUERY);
    let (sign, time) = match (sign, time) {
        (None, None) => return Ok(false),
        (Some(sign), Some(time)) => (sign, time),
        _ => {
            return Err(Error::unauthenticated(
                "the Tencent callback carries only one of Sign and RequestTime: both come with \
                 Tencent's webhook authentication",
            ));
        }
    };
    let Ok(seconds) = time.parse::<i64>() else {
        return Err(Error::unauthenticated(
            "the Tencent callback's RequestTime is not a Unix time in seconds",
        ));
    };
    let max_age = sign_max_age(request.connection)?;
    let age = (request.received_at.as_millis().div_euclid(1000) - seconds).unsigned_abs();
    if age > max_age {
        return Err(Error::unauthenticated(format!(
            "the Tencent callback's RequestTime is {age} s from this server's clock, more than \
             {max_age} s: a replay, or a clock to fix (NTP); `{SIGN_MAX_AGE_SETTING}` widens \
             the window"
        )));
    }
    let expected = hex::encode(Sha256::digest(format!("{token}{time}").as_bytes()));
    if constant_time_eq(sign.to_ascii_lowercase().as_bytes(), expected.as_bytes()) {
        Ok(true)
    } else {
        Err(Error::unauthenticated(
            "the Tencent callback's Sign does not match sha256(webhook_secret + RequestTime): \
             set the connection's `webhook_secret` to the webhook authentication token \
             configured at Tencent",
        ))
    }
}

/// Verifies and parses Tencent desk session event callbacks; see the crate docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TencentWebhook;

impl WebhookSource for TencentWebhook {
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Error> {
        let Some(expected) = request.connection.setting(SDK_APP_ID) else {
            return Err(Error::unauthenticated(format!(
                "connection {} has no setting `{SDK_APP_ID}`, so it cannot verify Tencent callbacks; set it to the IM app's SDKAppID",
                request.connection.id
            )));
        };
        let Some(sent) = request.query_param("SdkAppid") else {
            return Err(Error::unauthenticated(
                "the Tencent callback has no SdkAppid query parameter; configure the callback URL in the desk console",
            ));
        };
        if !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
            return Err(Error::unauthenticated(
                "the SdkAppid query parameter does not match the connection's sdk_app_id",
            ));
        }
        let Some(secret) = request.connection.secret(WEBHOOK_SECRET) else {
            return Ok(());
        };
        if check_sign(request, secret.expose())? || check_token(request, WEBHOOK_SECRET)? {
            return Ok(());
        }
        Err(Error::unauthenticated(
            "the Tencent callback carries neither Sign and RequestTime (enable webhook authentication at Tencent with the connection's webhook_secret as its token) nor a token (append &token=<webhook_secret> to the callback URL)",
        ))
    }

    fn public_verification_only(&self, connection: &ConnectionConfig) -> Option<String> {
        connection.secret(WEBHOOK_SECRET).is_none().then(|| {
            format!(
                "only the SdkAppid is checked, and it is public (every client of the IM app \
                 carries it): anyone who knows it can post events to this connection; set the \
                 secret `{WEBHOOK_SECRET}` to Tencent's webhook authentication token"
            )
        })
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<IncomingEvent>, Error> {
        parse(request).map(|event| vec![event])
    }

    fn reply(&self, outcome: Result<&IngestSummary, &Error>) -> WebhookReply {
        reply_for(outcome)
    }
}

/// The callback body. Field names follow the seed exactly.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Callback {
    #[serde(default)]
    callback_command: Option<String>,
    session_id: String,
    event: String,
    /// Milliseconds.
    event_time: i64,
    /// `SDK` or `Web(H5)`.
    #[serde(default)]
    channel_type: Option<String>,
    #[serde(default)]
    client_user_id: Option<String>,
    #[serde(default)]
    customer_service_id: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    msg_key: Option<String>,
    #[serde(default)]
    msg_body: Option<Vec<elements::Element>>,
    #[serde(default)]
    cloud_custom_data: Option<String>,
    #[serde(default)]
    is_contact_user: Option<bool>,
    /// 1 to 5 stars on `SatisfactionSelected`; other events may carry 0.
    #[serde(default)]
    satisfaction_selected: Option<i64>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.is_empty()).cloned()
}

/// What a known `Event` means.
enum Meaning {
    Started,
    Message(Role),
    Updated,
    Rated,
    Ended(Option<&'static str>),
}

fn meaning(event: &str) -> Option<Meaning> {
    Some(match event {
        "SessionBegin" => Meaning::Started,
        "ChatBot.UserSendMsg" | "Human.UserSendMsg" => Meaning::Message(Role::Visitor),
        "ChatBot.RobotSendMsg" => Meaning::Message(Role::Bot),
        "Human.AgentSendMsg" => Meaning::Message(Role::Agent),
        "TransferringToHuman"
        | "TransferringToHumanWait"
        | "TransferToHumanSuccess"
        | "NoAgentOnline"
        | "AgentForward" => Meaning::Updated,
        "SatisfactionSelected" => Meaning::Rated,
        "SessionUserEnd" => Meaning::Ended(Some("user_end")),
        "SessionAgentEnd" => Meaning::Ended(Some("agent_end")),
        "SessionUserTimeoutEnd" => Meaning::Ended(Some("user_timeout")),
        "SessionAgentTimeoutEnd" => Meaning::Ended(Some("agent_timeout")),
        "SessionPendingAutoFinishEnd" => Meaning::Ended(Some("pending_auto_finish")),
        "SessionEnd" => Meaning::Ended(None),
        _ => return None,
    })
}

/// Checks `CallbackCommand` (query and body) and `contenttype`.
fn check_command(request: &WebhookRequest<'_>, body: Option<&str>) -> Result<(), Error> {
    let query = request.query_param("CallbackCommand");
    if query.is_none() && body.is_none() {
        return Err(Error::invalid(format!(
            "the Tencent callback has no CallbackCommand; the callback URL must carry CallbackCommand={CALLBACK_COMMAND}"
        )));
    }
    for command in [query, body].into_iter().flatten() {
        if command != CALLBACK_COMMAND {
            return Err(Error::invalid(format!(
                "CallbackCommand is {command:?}; this plugin takes only {CALLBACK_COMMAND}"
            )));
        }
    }
    if let Some(content_type) = request.query_param("contenttype")
        && !content_type.eq_ignore_ascii_case("json")
    {
        return Err(Error::invalid(format!(
            "contenttype is {content_type:?}; Tencent desk callbacks are json"
        )));
    }
    Ok(())
}

fn parse(request: &WebhookRequest<'_>) -> Result<IncomingEvent, Error> {
    let value: Value = serde_json::from_slice(request.body).map_err(|e| {
        Error::invalid(format!(
            "the Tencent callback body is not JSON: {e}; send the callback's JSON body unchanged"
        ))
    })?;
    let callback = Callback::deserialize(&value).map_err(|e| {
        Error::invalid(format!(
            "the Tencent callback body does not have the documented shape: {e}"
        ))
    })?;
    check_command(request, callback.callback_command.as_deref())?;
    if callback.session_id.is_empty() {
        return Err(Error::invalid("SessionId is empty; send the session's id"));
    }
    if callback.event.is_empty() {
        return Err(Error::invalid("Event is empty; send the event type"));
    }
    let occurred_at = Timestamp::from_millis(callback.event_time).ok_or_else(|| {
        Error::invalid(format!(
            "EventTime is {}, not a time between 1970 and 9999 in milliseconds",
            callback.event_time
        ))
    })?;
    let satisfaction = callback.satisfaction_selected.unwrap_or(0);
    if !(0..=5).contains(&satisfaction) {
        return Err(Error::invalid(format!(
            "SatisfactionSelected is {satisfaction}; it counts stars from 1 to 5"
        )));
    }

    let event = callback.event.as_str();
    let session = callback.session_id.as_str();
    let msg_key = non_empty(&callback.msg_key);
    let request_id = request
        .query_param("RequestID")
        .or_else(|| request.query_param("RequestId"))
        .filter(|id| !id.is_empty());
    let event_time = callback.event_time.to_string();
    let key = match (request_id, &msg_key) {
        (Some(id), _) => dedup_key(&["request", id]),
        (None, Some(msg_key)) => dedup_key(&["msg", msg_key, event]),
        (None, None) => dedup_key(&["event", session, event, &event_time]),
    };

    let Some(meaning) = meaning(event) else {
        tracing::debug!(event, "tencent event kept as a vendor event");
        return Ok(IncomingEvent {
            dedup_key: key,
            kind: EventKind::VendorEvent,
            vendor_event: callback.event.clone(),
            occurred_at,
            payload: EventPayload::Vendor {
                subject: Some(callback.session_id.clone()),
                data: value,
            },
        });
    };

    let mut patch = ConversationPatch::new(session);
    let client = non_empty(&callback.client_user_id);
    let agent = non_empty(&callback.agent_id);
    if let Some(client) = &client {
        patch.visitor = Some(Participant {
            id: client.clone(),
            ..Participant::default()
        });
    }
    let attributes: [(&str, Option<String>); 6] = [
        ("channel_type", non_empty(&callback.channel_type)),
        (
            "customer_service_id",
            non_empty(&callback.customer_service_id),
        ),
        ("cloud_custom_data", non_empty(&callback.cloud_custom_data)),
        (
            "is_contact_user",
            callback.is_contact_user.map(|b| b.to_string()),
        ),
        (
            "client_ip",
            request.query_param("ClientIP").map(str::to_owned),
        ),
        (
            "opt_platform",
            request.query_param("OptPlatform").map(str::to_owned),
        ),
    ];
    patch.attributes = attributes
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value.filter(|v| !v.is_empty())?)))
        .collect::<BTreeMap<_, _>>();

    let kind = match meaning {
        Meaning::Started => {
            patch.status = Some(ConversationStatus::Open);
            patch.started_at = Some(occurred_at);
            EventKind::ChatStarted
        }
        Meaning::Message(role) => {
            let Some(body) = &callback.msg_body else {
                return Err(Error::invalid(format!(
                    "the {event} event has no MsgBody; send the message's elements"
                )));
            };
            let content = elements::read(body)?;
            let author_id = match role {
                Role::Visitor => client.clone(),
                Role::Agent => agent.clone(),
                _ => non_empty(&callback.customer_service_id),
            };
            patch.messages.push(Message {
                key: msg_key
                    .clone()
                    .unwrap_or_else(|| dedup_key(&[event, &event_time])),
                author_role: role,
                author_id,
                author_name: None,
                text: content.text,
                attachments: content.attachments,
                sent_at: occurred_at,
                automatic: role == Role::Bot,
                data: (!content.data.is_empty()).then_some(Value::Array(content.data)),
            });
            EventKind::Message
        }
        Meaning::Updated => {
            let at = occurred_at.to_rfc3339();
            let (state, queued) = match event {
                "TransferringToHuman" => (Some("transferring"), true),
                "TransferringToHumanWait" => {
                    patch.attributes.insert("queue_entered_at".to_owned(), at);
                    (Some("waiting"), true)
                }
                "TransferToHumanSuccess" => (Some("succeeded"), false),
                "NoAgentOnline" => {
                    patch.attributes.insert("no_agent_online_at".to_owned(), at);
                    (Some("no_agent_online"), false)
                }
                _ => (None, false), // AgentForward
            };
            if let Some(state) = state {
                patch
                    .attributes
                    .insert("human_transfer".to_owned(), state.to_owned());
            }
            if queued {
                patch.status = Some(ConversationStatus::Queued);
            }
            if matches!(event, "TransferToHumanSuccess" | "AgentForward")
                && let Some(agent) = &agent
            {
                patch.status = Some(ConversationStatus::Open);
                patch.assigned_agent = Some(agent.clone());
                patch.agents_joined.push(Participant {
                    id: agent.clone(),
                    ..Participant::default()
                });
            }
            EventKind::ChatUpdated
        }
        Meaning::Rated => {
            if satisfaction == 0 {
                return Err(Error::invalid(
                    "the SatisfactionSelected event has no SatisfactionSelected stars; send 1 to 5",
                ));
            }
            patch.rating = Some(Rating {
                score: Some(satisfaction),
                scale: Some("1-5".to_owned()),
                label: None,
                comment: None,
            });
            EventKind::Rating
        }
        Meaning::Ended(reason) => {
            patch.status = Some(ConversationStatus::Closed);
            patch.ended_at = Some(occurred_at);
            patch.end_reason = reason.map(str::to_owned);
            EventKind::ChatEnded
        }
    };
    Ok(IncomingEvent {
        dedup_key: key,
        kind,
        vendor_event: callback.event.clone(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    })
}

#[cfg(test)]
mod tests;
