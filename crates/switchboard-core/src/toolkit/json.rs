//! Reading a vendor's JSON body field by field, with errors that name the path of what was
//! wrong (`payload.chat.thread.created_at must be an RFC 3339 time`): what a plugin's `parse`
//! needs and serde derive does not give for loosely typed vendor JSON.
//!
//! ```
//! use switchboard_core::toolkit::json::Fields;
//!
//! let body: serde_json::Value =
//!     serde_json::from_str(r#"{"chat": {"id": 42, "tags": ["vip"], "at": "2024-05-01T10:00:00Z"}}"#)
//!         .unwrap();
//! let root = Fields::root(&body).unwrap();
//! let chat = root.required_obj("chat").unwrap();
//! assert_eq!(chat.required_id("id").unwrap(), "42");
//! assert_eq!(chat.strings("tags").unwrap(), ["vip"]);
//! assert!(chat.rfc3339("at").unwrap().is_some());
//! let error = chat.required_str("visitor").unwrap_err();
//! assert_eq!(error.message, "chat.visitor is required");
//! ```

use serde_json::{Map, Value};

use crate::{Error, Timestamp};

/// The largest integer a JSON number can carry exactly through any JSON parser (2^53).
const MAX_EXACT: u64 = 1 << 53;

/// One JSON object of a body and its path from the root.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// The body's root, which must be an object.
    pub fn root(value: &'a Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                path: String::new(),
            }),
            _ => Err(Error::invalid("the body must be a JSON object")),
        }
    }

    /// The path of `field` in this object, for messages (`chat.thread.id`).
    pub fn path_of(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn wrong(&self, field: &str, what: &str) -> Error {
        Error::invalid(format!("{} must be {what}", self.path_of(field)))
    }

    fn missing(&self, field: &str) -> Error {
        Error::invalid(format!("{} is required", self.path_of(field)))
    }

    /// The raw value of `field`; `null` counts as absent.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether `field` is present and not `null`.
    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// The underlying map.
    pub fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// A string field (absent or `null`: `None`).
    pub fn str(&self, field: &str) -> Result<Option<&'a str>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    /// A string field that must be there and not be empty.
    pub fn required_str(&self, field: &str) -> Result<&'a str, Error> {
        match self.str(field)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(self.wrong(field, "a non-empty string")),
            None => Err(self.missing(field)),
        }
    }

    /// An id that vendors send as a string or as a whole number: as text.
    pub fn id(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n <= MAX_EXACT => Ok(Some(n.to_string())),
                _ => Err(self.wrong(field, "a non-negative whole number up to 2^53 or a string")),
            },
            Some(_) => Err(self.wrong(field, "a non-empty string or a whole number")),
        }
    }

    /// An id that must be there.
    pub fn required_id(&self, field: &str) -> Result<String, Error> {
        self.id(field)?.ok_or_else(|| self.missing(field))
    }

    /// A boolean field.
    pub fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(field, "true or false")),
        }
    }

    /// A non-negative whole number field.
    pub fn u64(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(field, "a non-negative whole number")),
            Some(_) => Err(self.wrong(field, "a number")),
        }
    }

    /// A nested object.
    pub fn obj(&self, field: &str) -> Result<Option<Fields<'a>>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields {
                map,
                path: self.path_of(field),
            })),
            Some(_) => Err(self.wrong(field, "an object")),
        }
    }

    /// A nested object that must be there.
    pub fn required_obj(&self, field: &str) -> Result<Fields<'a>, Error> {
        self.obj(field)?.ok_or_else(|| self.missing(field))
    }

    /// An array field (absent: empty).
    pub fn array(&self, field: &str) -> Result<&'a [Value], Error> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.wrong(field, "an array")),
        }
    }

    /// An array of objects (absent: empty), each with its path (`chat.messages[2]`).
    pub fn objects(&self, field: &str) -> Result<Vec<Fields<'a>>, Error> {
        self.array(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Ok(Fields {
                    map,
                    path: format!("{}[{i}]", self.path_of(field)),
                }),
                _ => Err(Error::invalid(format!(
                    "{}[{i}] must be an object",
                    self.path_of(field)
                ))),
            })
            .collect()
    }

    /// An array of strings (absent: empty).
    pub fn strings(&self, field: &str) -> Result<Vec<String>, Error> {
        self.array(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Error::invalid(format!(
                    "{}[{i}] must be a string",
                    self.path_of(field)
                ))),
            })
            .collect()
    }

    /// A time as seconds since the epoch: a number (fractions allowed) or a numeric string.
    pub fn secs(&self, field: &str) -> Result<Option<Timestamp>, Error> {
        let seconds = match self.get(field) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        seconds
            .and_then(Timestamp::from_secs_f64)
            .map(Some)
            .ok_or_else(|| self.wrong(field, "seconds since 1970 within the years 1970-9999"))
    }

    /// A time as RFC 3339 text.
    pub fn rfc3339(&self, field: &str) -> Result<Option<Timestamp>, Error> {
        match self.str(field)? {
            None => Ok(None),
            Some(text) => Timestamp::parse_rfc3339(text)
                .map(Some)
                .ok_or_else(|| self.wrong(field, "an RFC 3339 time")),
        }
    }

    /// An RFC 3339 time that must be there.
    pub fn required_rfc3339(&self, field: &str) -> Result<Timestamp, Error> {
        self.rfc3339(field)?.ok_or_else(|| self.missing(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn errors_name_the_path_of_the_field() {
        let value = body(r#"{"chat": {"messages": [{"text": "hi"}, {"text": 7}], "id": -3}}"#);
        let root = Fields::root(&value).unwrap();
        let chat = root.required_obj("chat").unwrap();
        let messages = chat.objects("messages").unwrap();
        assert_eq!(messages[0].str("text").unwrap(), Some("hi"));
        assert_eq!(
            messages[1].str("text").unwrap_err().message,
            "chat.messages[1].text must be a string"
        );
        assert!(
            chat.id("id")
                .unwrap_err()
                .message
                .starts_with("chat.id must be")
        );
        assert_eq!(
            root.required_obj("visitor").unwrap_err().message,
            "visitor is required"
        );
        assert!(Fields::root(&body("[1]")).is_err());
    }

    #[test]
    fn ids_times_and_absent_values() {
        let value = body(
            r#"{"a": 9007199254740992, "b": 9007199254740993, "c": "x7", "t": 1552126412,
                "u": "1552126412.5", "r": "2024-05-01T10:00:00Z", "bad": "yesterday", "n": null}"#,
        );
        let root = Fields::root(&value).unwrap();
        assert_eq!(root.id("a").unwrap().as_deref(), Some("9007199254740992"));
        assert!(root.id("b").is_err());
        assert_eq!(root.required_id("c").unwrap(), "x7");
        assert_eq!(
            root.secs("t").unwrap().unwrap().as_millis(),
            1_552_126_412_000
        );
        assert_eq!(
            root.secs("u").unwrap().unwrap().as_millis(),
            1_552_126_412_500
        );
        assert!(root.rfc3339("r").unwrap().is_some());
        assert!(root.rfc3339("bad").is_err());
        assert!(root.secs("bad").is_err());
        assert_eq!(root.str("n").unwrap(), None);
        assert!(!root.has("n"));
        assert!(root.strings("missing").unwrap().is_empty());
    }
}
