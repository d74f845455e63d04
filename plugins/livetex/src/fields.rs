//! Typed, strict reading of one JSON object (a webhook envelope or a table row).
//!
//! Every getter names the field in its error (`dialog.closed_at`, `dialog.messages[2].id`), so a
//! refused webhook says exactly what to fix. `null` and absent mean the same thing (the data
//! platform's tables have NULL columns); an optional empty string counts as absent too. Any
//! other value of the wrong JSON type is an error: nothing is coerced.
//!
//! Dates: LiveTex's API returns `datetime` values as ISO 8601 to the second, in Moscow time
//! (MSK, UTC+3) without an offset (`2014-12-17T15:35:48`), and accepts a full ISO 8601 value
//! with an offset (documented: `splusminusx/api-schema-tools`, `schema/merged/Types/datetime.json`
//! at a3177dbe). So a date without an offset is MSK, one with an offset is taken as written.

use serde_json::{Map, Number, Value};
use switchboard_core::{Error, Timestamp};

/// The earliest instant a LiveTex record can carry: 2000-01-01T00:00:00Z. Anything earlier
/// (epoch 0, a count sent where a date belongs) is refused as absurd.
pub(crate) const EARLIEST: i64 = 946_684_800;
/// The latest: 2100-01-01T00:00:00Z.
pub(crate) const LATEST: i64 = 4_102_444_800;
/// The longest duration or answer time accepted, in seconds (ten years).
pub(crate) const MAX_SECONDS: f64 = 315_360_000.0;
/// The largest count (messages in a dialog) accepted.
pub(crate) const MAX_COUNT: u64 = 10_000_000;
/// The largest numeric id accepted: 2^53, the largest integer every JSON reader keeps exact.
pub(crate) const MAX_ID: u64 = 9_007_199_254_740_992;
/// Moscow time (MSK) is UTC+3 all year (no daylight saving time since 2014).
pub(crate) const MSK_OFFSET_SECS: i64 = 3 * 3600;

/// Parses a LiveTex date: ISO 8601 with an offset (RFC 3339), or without one (`T` or a space
/// between date and time), which is Moscow time.
pub(crate) fn parse_livetex_time(text: &str) -> Option<Timestamp> {
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Some(at);
    }
    let naive = Timestamp::parse_sql_utc(&text.replacen('T', " ", 1))?;
    Timestamp::from_millis(naive.as_millis() - MSK_OFFSET_SECS * 1000)
}

/// Formats an instant as LiveTex reads a date without an offset: `YYYY-MM-DD HH:MM:SS` in MSK.
pub(crate) fn msk_text(at: Timestamp) -> String {
    let shifted = Timestamp::from_millis(at.as_millis() + MSK_OFFSET_SECS * 1000).unwrap_or(at);
    let text = shifted.to_rfc3339();
    // `2024-03-01T12:00:00.000Z` -> `2024-03-01 12:00:00`
    text.get(..19).unwrap_or(&text).replacen('T', " ", 1)
}

/// One JSON object and where it sits in the body.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// The object at `path`, or an error if `value` is not an object.
    pub(crate) fn of(value: &'a Value, path: impl Into<String>) -> Result<Self, Error> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Fields { path, map }),
            _ => Err(Error::invalid(format!(
                "`{}` must be a JSON object",
                if path.is_empty() { "body" } else { &path }
            ))),
        }
    }

    /// The object itself.
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// The full name of a field, for error messages.
    pub(crate) fn name(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn wrong(&self, field: &str, what: &str) -> Error {
        Error::invalid(format!("`{}` must be {what}", self.name(field)))
    }

    fn missing(&self, field: &str) -> Error {
        Error::invalid(format!(
            "`{}` is required: send it (LiveTex sends it with every such record)",
            self.name(field)
        ))
    }

    /// A string; `None` if absent, null or empty.
    pub(crate) fn string(&self, field: &str) -> Result<Option<&'a str>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    /// An id: LiveTex documents numeric ids (chats, conversations, messages, leads, employees,
    /// sites) and string ids (visitors); either is read, as its text. `None` if absent, null or
    /// an empty string.
    pub(crate) fn id(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(id) if id <= MAX_ID => Ok(Some(id.to_string())),
                _ => Err(self.wrong(field, "a non-negative integer id up to 2^53 or a string")),
            },
            Some(_) => Err(self.wrong(field, "an id (a number or a string)")),
        }
    }

    /// An id that must be present.
    pub(crate) fn required_id(&self, field: &str) -> Result<String, Error> {
        self.id(field)?.ok_or_else(|| self.missing(field))
    }

    /// A boolean (`is_closed`, `is_managed`).
    pub(crate) fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(field, "true or false")),
        }
    }

    /// A duration in seconds (`duration`, `answer_time_avg`): a number from 0 to ten years,
    /// fractions allowed. Returned as LiveTex wrote it (`12`, `12.5`).
    pub(crate) fn seconds(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if (0.0..=MAX_SECONDS).contains(&s) => Ok(Some(number_text(n))),
                _ => Err(self.wrong(field, "a number of seconds from 0 to 315360000")),
            },
            Some(_) => Err(self.wrong(field, "a number of seconds")),
        }
    }

    /// A count (`message_count`): an integer from 0 to ten million.
    pub(crate) fn count(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(c) if c <= MAX_COUNT => Ok(Some(c)),
                _ => Err(self.wrong(field, "an integer from 0 to 10000000")),
            },
            Some(_) => Err(self.wrong(field, "an integer count")),
        }
    }

    /// An instant: ISO 8601 with an offset, ISO 8601 without one (`2014-12-17T15:35:48` or
    /// `2014-12-17 15:35:48`, Moscow time), or epoch seconds; between 2000-01-01 and 2100-01-01.
    pub(crate) fn time(&self, field: &str) -> Result<Option<Timestamp>, Error> {
        let at = match self.get(field) {
            None => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => parse_livetex_time(s),
            Some(Value::Number(n)) => n.as_f64().and_then(Timestamp::from_secs_f64),
            Some(_) => None,
        };
        match at {
            Some(at) if (EARLIEST * 1000..LATEST * 1000).contains(&at.as_millis()) => Ok(Some(at)),
            _ => Err(self.wrong(
                field,
                "a date between 2000 and 2100: ISO 8601 (without an offset: Moscow time) or epoch seconds",
            )),
        }
    }

    /// An instant that must be present.
    pub(crate) fn required_time(&self, field: &str) -> Result<Timestamp, Error> {
        self.time(field)?.ok_or_else(|| self.missing(field))
    }

    /// A nested object.
    pub(crate) fn object(&self, field: &str) -> Result<Option<Fields<'a>>, Error> {
        self.get(field)
            .map(|v| Fields::of(v, self.name(field)))
            .transpose()
    }

    /// A nested object that must be present.
    pub(crate) fn required_object(&self, field: &str) -> Result<Fields<'a>, Error> {
        self.object(field)?.ok_or_else(|| self.missing(field))
    }

    /// An array of objects, each with its indexed path (`dialog.messages[2]`).
    pub(crate) fn objects(&self, field: &str) -> Result<Vec<Fields<'a>>, Error> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Fields::of(item, format!("{}[{i}]", self.name(field))))
                .collect(),
            Some(_) => Err(self.wrong(field, "an array of objects")),
        }
    }
}

/// A JSON number as text: `12` for integers, `12.5` for fractions.
fn number_text(n: &Number) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_accept_three_formats_and_refuse_absurd_ones() {
        let row = json!({
            "a": "2024-03-01T09:00:00Z",
            "b": "2024-03-01 12:00:00",
            "b2": "2024-03-01T12:00:00",
            "c": 1_709_283_600,
            "d": 12345,
            "e": "yesterday",
            "f": 1e300,
            "g": true,
            "h": "2024-03-01T12:00:00+03:00",
        });
        let f = Fields::of(&row, "dialog").unwrap();
        let expected = Timestamp::from_secs(1_709_283_600);
        assert_eq!(f.time("a").unwrap(), expected);
        assert_eq!(f.time("b").unwrap(), expected, "no offset: Moscow time");
        assert_eq!(f.time("b2").unwrap(), expected);
        assert_eq!(msk_text(expected.unwrap()), "2024-03-01 12:00:00");
        assert_eq!(f.time("c").unwrap(), expected);
        assert_eq!(f.time("h").unwrap(), expected);
        assert_eq!(f.time("missing").unwrap(), None);
        for field in ["d", "e", "f", "g"] {
            let err = f.time(field).unwrap_err();
            assert!(err.message.contains(&format!("`dialog.{field}`")), "{err}");
        }
    }

    #[test]
    fn numbers_are_checked_for_type_and_range() {
        let row = json!({"id": 501, "neg": -1, "frac": 1.5, "text": "501", "d": 12.5,
            "big": 1e12, "r": 5, "r_bad": 11, "c": 3});
        let f = Fields::of(&row, "").unwrap();
        assert_eq!(f.id("id").unwrap().as_deref(), Some("501"));
        assert_eq!(f.id("text").unwrap().as_deref(), Some("501"));
        assert!(f.id("neg").is_err());
        assert!(f.id("frac").is_err());
        assert_eq!(f.seconds("d").unwrap().as_deref(), Some("12.5"));
        assert_eq!(f.seconds("id").unwrap().as_deref(), Some("501"));
        assert!(f.seconds("big").is_err());
        assert!(f.seconds("neg").is_err());
        assert_eq!(f.count("c").unwrap(), Some(3));
        assert!(f.count("frac").is_err());
    }

    #[test]
    fn strings_are_strict_and_empty_means_absent() {
        let row = json!({"s": "x", "e": "", "n": null, "num": 1});
        let f = Fields::of(&row, "lead").unwrap();
        assert_eq!(f.string("s").unwrap(), Some("x"));
        assert_eq!(f.string("e").unwrap(), None);
        assert_eq!(f.string("n").unwrap(), None);
        assert!(f.string("num").is_err());
        let err = f.required_id("e").unwrap_err();
        assert!(err.message.contains("`lead.e` is required"), "{err}");
    }
}
