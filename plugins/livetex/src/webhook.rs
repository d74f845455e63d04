//! The webhook integration's body (support.livetex.ru/hc/ru/articles/360007110438, «Передача
//! данных во внешние системы: Webhook»): JSON with the top-level `Conversation`
//! (обращение), `discourser` (собеседник) and `employee` (the employees who took part), sent
//! when an employee closes a conversation and, on request, when one is assigned or rated.

use serde_json::Value;
use switchboard_core::{Error, IncomingEvent};

use crate::fields::Fields;
use crate::model::conversation_to_events;

/// Parses a LiveTex webhook body into events: one for the conversation and one per lead it
/// holds. Does not check the connection token (that is [`crate::LiveTexWebhook`]'s `verify`).
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`] with the reason (and the field) when the
/// body is not a JSON object, has no `Conversation` with an `id`, or a known field has the
/// wrong type or an absurd value.
///
/// ```
/// let body = r#"{"Conversation": {"id": 9001, "created_at": "2024-03-01T12:00:00",
///     "chats": [{"id": 5001, "created_at": "2024-03-01T12:00:00", "is_closed": true,
///                "messages": [{"id": 1, "text": "Здравствуйте",
///                              "created_at": "2024-03-01T12:00:05",
///                              "visitor": {"id": "v-77"}}]}]},
///     "discourser": {"name": "Мария"}, "employee": [{"id": 501, "first_name": "Анна"}]}"#;
/// let events = switchboard_plugin_livetex::parse_webhook(body.as_bytes()).unwrap();
/// assert_eq!(events[0].conversation_external_id(), Some("9001"));
/// ```
pub fn parse_webhook(body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Error::invalid(format!(
            "the body is not valid JSON ({e}): send the LiveTex webhook body unchanged"
        ))
    })?;
    let body = Fields::of(&value, "")?;
    conversation_to_events(&body)
}
