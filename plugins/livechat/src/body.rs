//! Reading a webhook body once, for both verification and mapping: the same parse decides the
//! body's format (v3.x or legacy) and gives the object the mapping reads, so a credential for
//! one format can never let in a body the mapping reads as the other.
//!
//! `serde_json::Value` keeps the last of duplicated keys, while a derived struct refuses them:
//! read with two different parsers, `{"action": ..., "action": ...}` looked legacy to the
//! verifier and v3 to the mapping. Here the top-level object is read by hand, and a body that
//! repeats a key deciding the format (`action`, `event_type`) or carrying the credential
//! (`secret_key`) is refused outright.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};
use switchboard_core::Error;

/// Top-level keys that may not appear twice: they decide the format or carry the credential.
pub(crate) const SINGLE_KEYS: [&str; 3] = ["action", "event_type", "secret_key"];

/// Which of LiveChat's webhook formats a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Agent Chat API v3.x webhooks: `{webhook_id, secret_key, action, payload, ...}`.
    V3,
    /// The legacy (v2) webhooks: `{event_type, token, license_id, chat, visitor, ...}`.
    Legacy,
}

/// A parsed body: its top-level object and its format.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// The top-level object, as the mapping reads it.
    pub(crate) value: Value,
    /// The format, decided from `value`.
    pub(crate) format: Format,
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// Not JSON, not an object, or neither format: only a legacy credential can vouch for it
    /// (a v3 body always names its `action`), and parsing answers 400 afterwards.
    Unrecognized(Error),
    /// JSON whose format cannot be decided safely (a duplicated deciding or credential key):
    /// refused at once, whatever the credentials.
    Refused(Error),
}

impl Unreadable {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Unreadable::Unrecognized(e) | Unreadable::Refused(e) => e,
        }
    }
}

/// Reads a body: one parse, duplicate deciding keys refused, format decided.
///
/// The format is v3.x when the object has a non-null `action` or any `secret_key` (a body
/// that brings a v3 credential is checked as v3, never as legacy), legacy when it has a
/// non-null `event_type`, and refused otherwise.
pub(crate) fn read(bytes: &[u8]) -> Result<Body, Unreadable> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Unreadable::Unrecognized(Error::invalid(
            "the body is empty: expected a LiveChat webhook JSON object",
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let root = match de.deserialize_map(RootVisitor) {
        Ok(root) => root,
        Err(e) if e.is_data() => {
            // Another JSON type at the root, or not JSON at all past the first byte.
            let message = match serde_json::from_slice::<Value>(bytes) {
                Ok(_) => "the body is not a JSON object".to_owned(),
                Err(e) => format!("the body is not valid JSON: {e}"),
            };
            return Err(Unreadable::Unrecognized(Error::invalid(message)));
        }
        Err(e) => {
            return Err(Unreadable::Unrecognized(Error::invalid(format!(
                "the body is not valid JSON: {e}"
            ))));
        }
    };
    if let Err(e) = de.end() {
        return Err(Unreadable::Unrecognized(Error::invalid(format!(
            "the body is not valid JSON: {e}"
        ))));
    }
    if !root.duplicated.is_empty() {
        return Err(Unreadable::Refused(Error::invalid(format!(
            "the body repeats the key {}: a LiveChat webhook has each of action, event_type \
             and secret_key at most once",
            root.duplicated
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))));
    }
    let map = root.map;
    let present = |key: &str| map.get(key).is_some_and(|v| !v.is_null());
    let format = if present("action") || map.contains_key("secret_key") {
        Format::V3
    } else if present("event_type") {
        Format::Legacy
    } else {
        return Err(Unreadable::Unrecognized(Error::invalid(
            "the body has neither `action` (LiveChat v3.x) nor `event_type` (legacy webhooks)",
        )));
    };
    Ok(Body {
        value: Value::Object(map),
        format,
    })
}

struct Root {
    map: Map<String, Value>,
    duplicated: Vec<&'static str>,
}

struct RootVisitor;

impl<'de> Visitor<'de> for RootVisitor {
    type Value = Root;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Root, A::Error> {
        let mut map = Map::new();
        let mut duplicated = Vec::new();
        while let Some(key) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            if let Some(single) = SINGLE_KEYS.iter().find(|k| **k == key)
                && map.contains_key(*single)
                && !duplicated.contains(single)
            {
                duplicated.push(*single);
            }
            map.insert(key, value);
        }
        Ok(Root { map, duplicated })
    }
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Root")
            .field("keys", &self.map.len())
            .field("duplicated", &self.duplicated)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_decided_from_the_same_object() {
        let v3 = read(br#"{"action":"incoming_event","payload":{}}"#).unwrap();
        assert_eq!(v3.format, Format::V3);
        let legacy = read(br#"{"event_type":"chat_started"}"#).unwrap();
        assert_eq!(legacy.format, Format::Legacy);
        // A body that brings a v3 credential is checked as v3 even without an action.
        let keyed = read(br#"{"event_type":"chat_started","secret_key":"s"}"#).unwrap();
        assert_eq!(keyed.format, Format::V3);
        assert!(matches!(
            read(br#"{"payload":{}}"#),
            Err(Unreadable::Unrecognized(_))
        ));
    }

    #[test]
    fn duplicated_deciding_keys_are_refused() {
        for body in [
            r#"{"action":"incoming_event","action":"x"}"#,
            r#"{"event_type":"chat_started","event_type":"chat_ended"}"#,
            r#"{"action":"a","secret_key":"one","secret_key":"two"}"#,
            r#"{"action":null,"event_type":"chat_started","action":"incoming_event"}"#,
        ] {
            match read(body.as_bytes()) {
                Err(Unreadable::Refused(e)) => {
                    assert!(e.message.contains("repeats the key"), "{body}: {e}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Other keys may repeat; the last value counts, as for any JSON reader.
        let body = read(br#"{"action":"a","payload":{},"payload":{"x":1}}"#).unwrap();
        assert_eq!(body.value["payload"]["x"], 1);
    }

    #[test]
    fn non_json_is_told_apart_from_refused() {
        assert!(matches!(read(b""), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"[1]"), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"{\"a\":"), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"{} x"), Err(Unreadable::Unrecognized(_))));
    }
}
