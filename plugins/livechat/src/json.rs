//! Reading a parsed JSON body field by field, so that every refusal names the field it is about
//! (`chat.messages[2].timestamp is not a valid time in seconds`).

use serde_json::{Map, Value};
use switchboard_core::{Error, Timestamp};

/// A JSON object and the path that led to it (`chat`, `chat.messages[0]`; empty for the root).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

/// An object found inside another: owns its path so that it can outlive the lookup.
#[derive(Clone, Debug)]
pub(crate) struct Child<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Child<'a> {
    /// An object reached some other way than through [`Obj::obj`], with its path.
    pub(crate) fn new(map: &'a Map<String, Value>, path: String) -> Self {
        Child { map, path }
    }

    /// Borrows it as an [`Obj`].
    pub(crate) fn obj(&self) -> Obj<'_> {
        Obj {
            map: self.map,
            path: &self.path,
        }
    }
}

impl<'a> Obj<'a> {
    /// The root of a body, which must be an object.
    pub(crate) fn root(value: &'a Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Obj { map, path: "" }),
            _ => Err(Error::invalid("the body is not a JSON object")),
        }
    }

    /// The full path of a field of this object.
    pub(crate) fn path_of(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// The field's value; `null` counts as absent.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether the field is present and not `null`.
    pub(crate) fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// The whole object.
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// A string field, or `None` if absent. Any other type is refused.
    pub(crate) fn str(&self, field: &str) -> Result<Option<&'a str>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(format!(
                "{} must be a string",
                self.path_of(field)
            ))),
        }
    }

    /// A string field that is not empty, or `None`.
    pub(crate) fn text(&self, field: &str) -> Result<Option<String>, Error> {
        Ok(self
            .str(field)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    /// A string field that must be present and not empty.
    pub(crate) fn required_str(&self, field: &str) -> Result<&'a str, Error> {
        match self.str(field)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(Error::invalid(format!("{} is empty", self.path_of(field)))),
            None => Err(Error::invalid(format!(
                "{} is missing",
                self.path_of(field)
            ))),
        }
    }

    /// An identifier sent as a string or an integer (`"1067"` or `1067`), or `None`.
    pub(crate) fn id(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => id_of(value)
                .map(|id| Some(id).filter(|id| !id.is_empty()))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{} must be a string or an integer",
                        self.path_of(field)
                    ))
                }),
        }
    }

    /// A boolean field, or `None`.
    pub(crate) fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Error::invalid(format!(
                "{} must be true or false",
                self.path_of(field)
            ))),
        }
    }

    /// A non-negative integer field (sizes), or `None`.
    pub(crate) fn u64(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                Error::invalid(format!(
                    "{} must be a non-negative integer",
                    self.path_of(field)
                ))
            }),
        }
    }

    /// An object field, or `None`.
    pub(crate) fn obj(&self, field: &str) -> Result<Option<Child<'a>>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Child {
                map,
                path: self.path_of(field),
            })),
            Some(_) => Err(Error::invalid(format!(
                "{} must be an object",
                self.path_of(field)
            ))),
        }
    }

    /// An object field that must be present.
    pub(crate) fn required_obj(&self, field: &str) -> Result<Child<'a>, Error> {
        self.obj(field)?
            .ok_or_else(|| Error::invalid(format!("{} is missing", self.path_of(field))))
    }

    /// An array field, or an empty slice if absent.
    pub(crate) fn array(&self, field: &str) -> Result<&'a [Value], Error> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(Error::invalid(format!(
                "{} must be an array",
                self.path_of(field)
            ))),
        }
    }

    /// An array of objects, each with its path (`chat.messages[1]`).
    pub(crate) fn objects(&self, field: &str) -> Result<Vec<Child<'a>>, Error> {
        let path = self.path_of(field);
        self.array(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Ok(Child {
                    map,
                    path: format!("{path}[{i}]"),
                }),
                _ => Err(Error::invalid(format!("{path}[{i}] must be an object"))),
            })
            .collect()
    }

    /// An array of strings (tags), empty strings dropped.
    pub(crate) fn strings(&self, field: &str) -> Result<Vec<String>, Error> {
        let path = self.path_of(field);
        let mut out = Vec::new();
        for (i, item) in self.array(field)?.iter().enumerate() {
            match item {
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => out.push(s.clone()),
                _ => return Err(Error::invalid(format!("{path}[{i}] must be a string"))),
            }
        }
        Ok(out)
    }

    /// An array of ids (group ids), each a string or an integer.
    pub(crate) fn ids(&self, field: &str) -> Result<Vec<String>, Error> {
        let path = self.path_of(field);
        self.array(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                id_of(item).ok_or_else(|| {
                    Error::invalid(format!("{path}[{i}] must be a string or an integer"))
                })
            })
            .collect()
    }

    /// A time in the legacy format: seconds since the epoch as a number or a numeric string,
    /// or a `yyyy-MM-ddTHH:mm:ss.fffZ` string. `None` if absent.
    pub(crate) fn secs(&self, field: &str) -> Result<Option<Timestamp>, Error> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let refuse = || {
            Error::invalid(format!(
                "{} is not a valid time in seconds: send seconds since 1970 (up to year 9999) or yyyy-MM-ddTHH:mm:ss.fffZ",
                self.path_of(field)
            ))
        };
        let parsed = match value {
            Value::Number(n) => match n.as_i64() {
                Some(secs) => Timestamp::from_secs(secs),
                None => n.as_f64().and_then(Timestamp::from_secs_f64),
            },
            Value::String(s) => {
                let s = s.trim();
                if let Ok(secs) = s.parse::<i64>() {
                    Timestamp::from_secs(secs)
                } else if let Some(at) = Timestamp::parse_rfc3339(s) {
                    Some(at)
                } else if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !s.is_empty() {
                    s.parse::<f64>().ok().and_then(Timestamp::from_secs_f64)
                } else {
                    None
                }
            }
            _ => None,
        };
        parsed.map(Some).ok_or_else(refuse)
    }

    /// A required legacy time.
    pub(crate) fn required_secs(&self, field: &str) -> Result<Timestamp, Error> {
        self.secs(field)?
            .ok_or_else(|| Error::invalid(format!("{} is missing", self.path_of(field))))
    }

    /// An RFC 3339 time (LiveChat v3.x), or `None` if absent.
    pub(crate) fn rfc3339(&self, field: &str) -> Result<Option<Timestamp>, Error> {
        match self.str(field)? {
            None => Ok(None),
            Some(text) => Timestamp::parse_rfc3339(text).map(Some).ok_or_else(|| {
                Error::invalid(format!(
                    "{} is not a valid RFC 3339 time (expected e.g. 2019-12-17T07:57:41.512000Z, years 1970 to 9999)",
                    self.path_of(field)
                ))
            }),
        }
    }

    /// A required RFC 3339 time.
    pub(crate) fn required_rfc3339(&self, field: &str) -> Result<Timestamp, Error> {
        self.rfc3339(field)?
            .ok_or_else(|| Error::invalid(format!("{} is missing", self.path_of(field))))
    }
}

fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// FNV-1a, 64 bit: stable across runs and machines, for keys derived from content.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // A separator that cannot occur in UTF-8 text keeps ("ab","c") apart from ("a","bc").
        for b in part.bytes().chain([0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A JSON value as compact text, for hashing content: the same body gives the same text.
pub(crate) fn canonical(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn legacy_times_accept_numbers_numeric_strings_and_iso_strings() {
        let body = json!({"a": 1552126412, "b": "1552126412", "c": "2019-03-09T10:13:32.000Z",
            "d": 1552126412.5, "e": -1, "f": "tomorrow", "g": true, "h": 1e308});
        let obj = Obj::root(&body).unwrap();
        let t = Timestamp::from_secs(1552126412).unwrap();
        assert_eq!(obj.secs("a").unwrap(), Some(t));
        assert_eq!(obj.secs("b").unwrap(), Some(t));
        assert_eq!(obj.secs("c").unwrap(), Some(t));
        assert_eq!(obj.secs("d").unwrap().unwrap().as_millis(), 1552126412500);
        assert_eq!(obj.secs("missing").unwrap(), None);
        for bad in ["e", "f", "g", "h"] {
            let err = obj.secs(bad).unwrap_err();
            assert!(
                err.message
                    .starts_with(&format!("{bad} is not a valid time")),
                "{err}"
            );
        }
    }

    #[test]
    fn errors_name_the_nested_field() {
        let body = json!({"chat": {"messages": [{"text": 1}]}});
        let root = Obj::root(&body).unwrap();
        let chat = root.required_obj("chat").unwrap();
        let messages = chat.obj().objects("messages").unwrap();
        let err = messages[0].obj().str("text").unwrap_err();
        assert_eq!(err.message, "chat.messages[0].text must be a string");
        assert_eq!(
            chat.obj().required_str("id").unwrap_err().message,
            "chat.id is missing"
        );
    }

    #[test]
    fn hash_parts_do_not_run_together() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&["x"]), fnv1a(&["x"]));
    }
}
