//! The webhook body: an envelope with `event` and, per event, a message, a delivery status or
//! a whole table row.

use serde_json::Value;
use switchboard_core::{
    ConversationPatch, ConversationStatus, Error, EventKind, EventPayload, IncomingEvent,
    Participant,
};

use crate::WEBHOOK_KEY_FIELD;
use crate::fields::Fields;
use crate::messages::{Authors, message_from, message_key};
use crate::rows::{conversation_event, dialog_event, employee, fnv1a, lead_event};

/// Parses a LiveTex webhook body into events. Does not check `webHookKey` (that is
/// [`crate::LiveTexWebhook`]'s `verify`).
///
/// # Errors
/// [`switchboard_core::ErrorCode::InvalidArgument`] with the reason (and the field) when the
/// body is not a JSON object, has no `event`, misses what its event needs, or has a known
/// field of the wrong type or with an absurd value.
///
/// ```
/// let body = r#"{"webHookKey": "k", "event": "visitor_message", "conversation_id": "c-1",
///     "chat_id": "c-1-1", "visitor_id": "v-9", "created_at": "2024-03-01T09:00:05Z",
///     "message": {"id": "m1", "text": "Здравствуйте"}}"#;
/// let events = switchboard_plugin_livetex::parse_webhook(body.as_bytes()).unwrap();
/// assert_eq!(events[0].dedup_key, "message:c-1-1:m1");
/// ```
pub fn parse_webhook(body: &[u8]) -> Result<Vec<IncomingEvent>, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Error::invalid(format!(
            "the body is not valid JSON ({e}): send the LiveTex webhook body unchanged"
        ))
    })?;
    let envelope = Fields::of(&value, "")?;
    let event = envelope.required_string("event")?;
    check_envelope(&envelope)?;
    let incoming = match event {
        "visitor_message" => message_event(&envelope, event, "visitor")?,
        "operator_message" => message_event(&envelope, event, "employee")?,
        "message_delivered" => delivery_event(&envelope, event, "delivered")?,
        "message_read" => delivery_event(&envelope, event, "read")?,
        "dialog" => dialog_event(&envelope.required_object("dialog")?, event)?,
        "dialog_closed" => {
            let dialog = envelope.required_object("dialog")?;
            dialog.required_time("closed_at")?;
            dialog_event(&dialog, event)?
        }
        "lead" => lead_event(&envelope.required_object("lead")?, event)?,
        "conversation" => conversation_event(&envelope.required_object("conversation")?, event)?,
        _ => vendor_event(&envelope, event)?,
    };
    Ok(vec![incoming])
}

/// The envelope fields have one type whatever the event, so even an event Switchboard does
/// not model is refused when one of them is malformed.
fn check_envelope(envelope: &Fields<'_>) -> Result<(), Error> {
    for field in [
        WEBHOOK_KEY_FIELD,
        "conversation_id",
        "chat_id",
        "visitor_id",
        "visitor_name",
    ] {
        envelope.string(field)?;
    }
    employee(envelope)?;
    envelope.int_id("site_id")?;
    envelope.time("created_at")?;
    Ok(())
}

/// `visitor_message` / `operator_message`: one message of a dialog.
fn message_event(
    envelope: &Fields<'_>,
    event: &str,
    default_creator: &str,
) -> Result<IncomingEvent, Error> {
    let conversation_id = envelope.required_string("conversation_id")?;
    let chat_id = envelope.required_string("chat_id")?;
    let created_at = envelope.required_time("created_at")?;
    let visitor_name = envelope.string("visitor_name")?;
    let visitor = envelope.string("visitor_id")?.map(|id| Participant {
        id: id.to_owned(),
        name: visitor_name.map(str::to_owned),
        ..Participant::default()
    });
    let agent = employee(envelope)?;
    let authors = Authors {
        visitor: visitor.as_ref(),
        agent: agent.as_ref(),
    };
    let message = message_from(
        &envelope.required_object("message")?,
        chat_id,
        Some(default_creator),
        Some(created_at),
        &authors,
    )?;

    let mut patch = ConversationPatch::new(conversation_id);
    patch.status = Some(ConversationStatus::Open);
    let dedup_key = format!("message:{}", message.key);
    let occurred_at = message.sent_at;
    patch.messages.push(message);
    Ok(IncomingEvent {
        dedup_key,
        kind: EventKind::Message,
        vendor_event: event.to_owned(),
        occurred_at,
        payload: EventPayload::Conversation(patch),
    })
}

/// `message_delivered` / `message_read`: a message's delivery status, kept as the conversation
/// attribute `message_status.<chat_id>:<message id>`. Creates no message.
fn delivery_event(
    envelope: &Fields<'_>,
    event: &str,
    default_status: &str,
) -> Result<IncomingEvent, Error> {
    let conversation_id = envelope.required_string("conversation_id")?;
    let chat_id = envelope.required_string("chat_id")?;
    let created_at = envelope.required_time("created_at")?;
    let message = envelope.required_object("message")?;
    let message_id = message.required_string("id")?;
    let status = message.string("status")?.unwrap_or(default_status);
    let key = message_key(chat_id, message_id);

    let mut patch = ConversationPatch::new(conversation_id);
    patch
        .attributes
        .insert(format!("message_status.{key}"), status.to_owned());
    Ok(IncomingEvent {
        dedup_key: format!("delivery:{key}:{status}"),
        kind: EventKind::ChatUpdated,
        vendor_event: event.to_owned(),
        occurred_at: created_at,
        payload: EventPayload::Conversation(patch),
    })
}

/// Any other event: kept whole (without `webHookKey`) as a vendor event.
fn vendor_event(envelope: &Fields<'_>, event: &str) -> Result<IncomingEvent, Error> {
    let created_at = envelope.required_time("created_at")?;
    let subject = envelope
        .string("conversation_id")?
        .or(envelope.string("chat_id")?)
        .map(str::to_owned);
    let mut data = envelope.map().clone();
    data.remove(WEBHOOK_KEY_FIELD);
    let data = Value::Object(data);
    let fingerprint = fnv1a(&serde_json::to_vec(&data).unwrap_or_default());
    tracing::debug!(event, "livetex event kept as a vendor event");
    Ok(IncomingEvent {
        dedup_key: format!("vendor:{event}:{created_at}:{fingerprint:016x}"),
        kind: EventKind::VendorEvent,
        vendor_event: event.to_owned(),
        occurred_at: created_at,
        payload: EventPayload::Vendor { subject, data },
    })
}
