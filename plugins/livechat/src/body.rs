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
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer as _};
use serde_json::value::RawValue;
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

/// A body scanned for verification: its format and its `secret_key`, decided by the same reading
/// as [`read`] without building the values the mapping needs (each member is only checked to be
/// JSON).
#[derive(Debug)]
pub(crate) struct Scanned<'a> {
    /// The format, decided as [`read`] decides it.
    pub(crate) format: Format,
    /// The top-level `secret_key`, as it came, if the body has one.
    pub(crate) secret_key: Option<&'a RawValue>,
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
    let (root, format) = read_root::<Value>(bytes)?;
    // Other keys may repeat: the last value counts, as for any JSON reader.
    let map: Map<String, Value> = root.members.into_iter().collect();
    Ok(Body {
        value: Value::Object(map),
        format,
    })
}

/// Reads a body as [`read`] does (the same refusals, the same format) but keeps each top-level
/// value as its text: what verification needs, at a fraction of the cost.
pub(crate) fn scan(bytes: &[u8]) -> Result<Scanned<'_>, Unreadable> {
    let (root, format) = read_root::<&RawValue>(bytes)?;
    Ok(Scanned {
        format,
        secret_key: root.single("secret_key").copied(),
    })
}

/// A top-level member's value as [`read_root`] keeps it.
trait Member {
    fn is_null(&self) -> bool;
}

impl Member for Value {
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
}

impl Member for &RawValue {
    fn is_null(&self) -> bool {
        // A raw value's text has no surrounding whitespace.
        self.get() == "null"
    }
}

/// The top-level members in their order and the format: the one reading both [`read`] and
/// [`scan`] go through, so that they can never disagree.
fn read_root<'de, V>(bytes: &'de [u8]) -> Result<(Root<V>, Format), Unreadable>
where
    V: Deserialize<'de> + Member,
{
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Unreadable::Unrecognized(Error::invalid(
            "the body is empty: expected a LiveChat webhook JSON object",
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let root = match de.deserialize_map(RootVisitor::<V>(PhantomData)) {
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
    // The deciding keys appear at most once (above), so the one seen is the one.
    let present = |key: &str| root.single(key).is_some_and(|v| !v.is_null());
    let format = if present("action") || root.single("secret_key").is_some() {
        Format::V3
    } else if present("event_type") {
        Format::Legacy
    } else {
        return Err(Unreadable::Unrecognized(Error::invalid(
            "the body has neither `action` (LiveChat v3.x) nor `event_type` (legacy webhooks)",
        )));
    };
    Ok((root, format))
}

struct Root<V> {
    members: Vec<(String, V)>,
    /// Where each of [`SINGLE_KEYS`] first appears in `members`.
    at: [Option<usize>; SINGLE_KEYS.len()],
    duplicated: Vec<&'static str>,
}

impl<V> Root<V> {
    /// The value of one of [`SINGLE_KEYS`], if the body has it.
    fn single(&self, key: &str) -> Option<&V> {
        let i = SINGLE_KEYS.iter().position(|k| *k == key)?;
        self.at[i].map(|at| &self.members[at].1)
    }
}

struct RootVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for RootVisitor<V> {
    type Value = Root<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Root<V>, A::Error> {
        let mut members: Vec<(String, V)> = Vec::new();
        let mut duplicated = Vec::new();
        // Where each of SINGLE_KEYS was seen: a body of many keys costs a comparison with
        // three names per key, never a scan of the keys before it.
        let mut at = [None; SINGLE_KEYS.len()];
        while let Some(key) = access.next_key::<String>()? {
            let value: V = access.next_value()?;
            if let Some(i) = SINGLE_KEYS.iter().position(|k| *k == key) {
                match at[i] {
                    None => at[i] = Some(members.len()),
                    Some(_) if !duplicated.contains(&SINGLE_KEYS[i]) => {
                        duplicated.push(SINGLE_KEYS[i]);
                    }
                    Some(_) => {}
                }
            }
            members.push((key, value));
        }
        Ok(Root {
            members,
            at,
            duplicated,
        })
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
    fn verification_scans_to_the_same_format_and_refusals_as_the_mapping_reads() {
        let outcome = |result: Result<Format, Unreadable>| match result {
            Ok(format) => format!("{format:?}"),
            Err(Unreadable::Refused(e)) => format!("refused: {e}"),
            Err(Unreadable::Unrecognized(e)) => format!("unrecognized: {e}"),
        };
        for body in [
            r#"{"action":"incoming_event","payload":{}}"#,
            r#"{"event_type":"chat_started"}"#,
            r#"{"event_type":"chat_started","secret_key":"s"}"#,
            r#"{"event_type":"chat_started","secret_key":null}"#,
            r#"{"action":null,"event_type":"chat_started"}"#,
            r#"{"action":null,"event_type":null}"#,
            r#"{"payload":{}}"#,
            r#"{"action":"a","action":"b"}"#,
            r#"{"secret\u005fkey":"s","event_type":"chat_started"}"#,
            r#"{"event_type":"chat_started","chat":{"id":"x","id":"y"}}"#,
            "",
            "[1]",
            "{\"a\":",
            "{} x",
        ] {
            let scanned = outcome(scan(body.as_bytes()).map(|s| s.format));
            let read = outcome(read(body.as_bytes()).map(|b| b.format));
            assert_eq!(scanned, read, "{body}");
        }
        // The credential verification reads is the one the mapping would see.
        let scanned = scan(br#"{"action":"a","secret_key" : "k\u0031"}"#).unwrap();
        assert_eq!(scanned.secret_key.map(RawValue::get), Some(r#""k\u0031""#));
        assert!(scan(br#"{"action":"a"}"#).unwrap().secret_key.is_none());
    }

    #[test]
    fn non_json_is_told_apart_from_refused() {
        assert!(matches!(read(b""), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"[1]"), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"{\"a\":"), Err(Unreadable::Unrecognized(_))));
        assert!(matches!(read(b"{} x"), Err(Unreadable::Unrecognized(_))));
    }
}
