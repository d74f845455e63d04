//! Malformed bodies derived from a fixture body.

use serde_json::{Number, Value};

/// How deep the nesting attacks go: far past serde_json's recursion limit of 128.
pub(crate) const DEEP: usize = 10_000;

/// What a plugin must do with a mutated body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The body is certainly malformed: `parse` must return `InvalidArgument`.
    Invalid,
    /// The body may or may not be acceptable: `parse` may succeed or fail, but must not panic.
    NoPanic,
}

/// One mutated body.
#[derive(Clone, Debug)]
pub(crate) struct Mutation {
    /// What was done, for the report.
    pub label: String,
    /// The mutated body.
    pub body: Vec<u8>,
    /// What the plugin must do with it.
    pub expect: Expect,
}

fn mutation(label: impl Into<String>, body: Vec<u8>, expect: Expect) -> Mutation {
    Mutation {
        label: label.into(),
        body,
        expect,
    }
}

/// Every mutation of `body`. `required` are JSON pointers whose removal must make parsing fail.
pub(crate) fn mutations(body: &[u8], required: &[String]) -> Vec<Mutation> {
    let mut out = Vec::new();
    let json = match serde_json::from_slice::<Value>(body) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => Some(value),
        _ => None,
    };
    // A proper prefix of a JSON object or array is never valid JSON.
    let truncated_expect = if json.is_some() {
        Expect::Invalid
    } else {
        Expect::NoPanic
    };

    let trimmed = body.trim_ascii_end().len();
    // Cutting at 0 is the empty body, checked below.
    let mut cuts = vec![
        1,
        trimmed / 4,
        trimmed / 2,
        trimmed * 3 / 4,
        trimmed.saturating_sub(1),
    ];
    cuts.retain(|&cut| cut > 0 && cut < trimmed);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        out.push(mutation(
            format!("truncated to {cut} of {} bytes", body.len()),
            body[..cut].to_vec(),
            truncated_expect,
        ));
    }
    out.push(mutation("empty body", Vec::new(), Expect::Invalid));

    let mut utf8_positions = vec![0, body.len() / 2];
    if let Some(quote) = body.iter().position(|&b| b == b'"') {
        utf8_positions.push(quote + 1);
    }
    utf8_positions.sort_unstable();
    utf8_positions.dedup();
    for at in utf8_positions {
        for (what, bytes) in [
            ("byte 0xFF", &[0xFF_u8][..]),
            ("UTF-16 surrogate", &[0xED, 0xA0, 0x80][..]),
        ] {
            let mut mutated = body.to_vec();
            mutated.splice(at..at, bytes.iter().copied());
            out.push(mutation(
                format!("invalid UTF-8 ({what}) inserted at byte {at}"),
                mutated,
                Expect::Invalid,
            ));
        }
    }

    out.push(mutation(
        format!("array nested {DEEP} deep"),
        format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP)).into_bytes(),
        Expect::Invalid,
    ));
    out.push(mutation(
        format!("object nested {DEEP} deep"),
        format!("{}1{}", "{\"a\":".repeat(DEEP), "}".repeat(DEEP)).into_bytes(),
        Expect::Invalid,
    ));

    if let Some(root) = json {
        json_mutations(&root, required, &mut out);
    }
    out
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Every value below the root, with its JSON pointer, in document order.
fn walk<'a>(value: &'a Value, pointer: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let p = format!("{pointer}/{}", escape(key));
                out.push((p.clone(), child));
                walk(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{pointer}/{i}");
                out.push((p.clone(), child));
                walk(child, p, out);
            }
        }
        _ => {}
    }
}

fn replaced(root: &Value, pointer: &str, value: Value) -> Vec<u8> {
    let mut copy = root.clone();
    if let Some(slot) = copy.pointer_mut(pointer) {
        *slot = value;
    }
    copy.to_string().into_bytes()
}

const DEEP_MARKER: &str = "__switchboard_testkit_deep_nesting__";

fn deeply_nested_at(root: &Value, pointer: &str) -> Vec<u8> {
    let text = String::from_utf8(replaced(root, pointer, Value::String(DEEP_MARKER.into())))
        .unwrap_or_default();
    let deep = format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP));
    text.replacen(&format!("\"{DEEP_MARKER}\""), &deep, 1)
        .into_bytes()
}

/// Removes the value at `pointer`; `None` if it is not there.
fn removed(root: &Value, pointer: &str) -> Option<Vec<u8>> {
    root.pointer(pointer)?;
    let (parent, last) = pointer.rsplit_once('/')?;
    let mut copy = root.clone();
    let key = unescape(last);
    match copy.pointer_mut(parent)? {
        Value::Object(map) => {
            map.remove(&key);
        }
        Value::Array(items) => {
            let index: usize = key.parse().ok()?;
            items.remove(index);
        }
        _ => return None,
    }
    Some(copy.to_string().into_bytes())
}

/// Whether a string leaf may be a time: by its key (`created_at`, `sentAt`, `EventTime`,
/// `date`) or its value (RFC 3339, or a long run of digits such as epoch seconds). Including a
/// few strings that are not times costs only a few extra no-panic checks.
fn looks_like_time(pointer: &str, text: &str) -> bool {
    let key = pointer
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    key.contains("time")
        || key.contains("date")
        || key.ends_with("at")
        || switchboard_core::Timestamp::parse_rfc3339(text).is_some()
        || (text.len() >= 9 && text.bytes().all(|b| b.is_ascii_digit()))
}

fn json_mutations(root: &Value, required: &[String], out: &mut Vec<Mutation>) {
    for pointer in required {
        if root.pointer(pointer).is_none() {
            continue;
        }
        if let Some(body) = removed(root, pointer) {
            out.push(mutation(
                format!("required field {pointer} removed"),
                body,
                Expect::Invalid,
            ));
        }
        out.push(mutation(
            format!("required field {pointer} replaced by {DEEP}-deep nesting"),
            deeply_nested_at(root, pointer),
            Expect::Invalid,
        ));
    }
    if let Value::Object(map) = root {
        for key in map.keys() {
            let pointer = format!("/{}", escape(key));
            out.push(mutation(
                format!("{pointer} replaced by {DEEP}-deep nesting"),
                deeply_nested_at(root, &pointer),
                Expect::NoPanic,
            ));
        }
    }

    let mut values = Vec::new();
    walk(root, String::new(), &mut values);
    let absurd_numbers: [(&str, Value); 5] = [
        ("i64::MAX", Value::from(i64::MAX)),
        ("i64::MIN", Value::from(i64::MIN)),
        ("u64::MAX", Value::from(u64::MAX)),
        ("-1", Value::from(-1)),
        (
            "1e308",
            Number::from_f64(1e308).map_or(Value::Null, Value::Number),
        ),
    ];
    let absurd_times = [
        "99999-12-31T23:59:59Z",
        "0000-00-00T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "-1",
        "1e308",
        "9223372036854775807",
        "NaN",
        "",
    ];
    let contents = string_contents();
    for (pointer, value) in values {
        let other_type = match value {
            Value::String(_) => Value::from(12345),
            Value::Number(_) => Value::String("not a number".into()),
            Value::Bool(_) => Value::String("yes".into()),
            Value::Null => Value::from(1),
            Value::Object(_) | Value::Array(_) => Value::String("not a container".into()),
        };
        out.push(mutation(
            format!("{pointer} ({}) replaced by {other_type}", kind_of(value)),
            replaced(root, &pointer, other_type),
            Expect::NoPanic,
        ));
        match value {
            Value::Number(_) => {
                for (label, absurd) in &absurd_numbers {
                    out.push(mutation(
                        format!("{pointer} = {label}"),
                        replaced(root, &pointer, absurd.clone()),
                        Expect::NoPanic,
                    ));
                }
            }
            Value::String(text) => {
                if looks_like_time(&pointer, text) {
                    for absurd in absurd_times {
                        out.push(mutation(
                            format!("{pointer} = {absurd:?}"),
                            replaced(root, &pointer, Value::String(absurd.into())),
                            Expect::NoPanic,
                        ));
                    }
                }
                for (label, content) in &contents {
                    if text != content {
                        out.push(mutation(
                            format!("{pointer} = {label}"),
                            replaced(root, &pointer, Value::String(content.clone())),
                            Expect::NoPanic,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// How long the huge string is, in bytes: past any length a plugin might cut at.
pub(crate) const HUGE: usize = 64 * 1024;

/// String contents that break code which treats text as ASCII bytes of some length: `&text[..3]`
/// on a 2-byte character, `text[0]` on an empty string, `.chars().nth(5).unwrap()`.
fn string_contents() -> Vec<(String, String)> {
    let huge = format!("{}\u{1F389}", "\u{e9}".repeat(HUGE / 2));
    vec![
        ("\"\" (empty)".to_owned(), String::new()),
        (
            "\"\u{e9}\" (one 2-byte character)".to_owned(),
            "\u{e9}".to_owned(),
        ),
        (
            "\"\u{e9}\u{e9}\u{e9}\u{e9}\" (2-byte characters, byte 3 inside one)".to_owned(),
            "\u{e9}".repeat(4),
        ),
        (
            "4-byte characters, CJK, a combining accent and a right-to-left mark".to_owned(),
            "\u{1F389}\u{1F389} \u{65e5}\u{672c}\u{8a9e} e\u{301} \u{202e}x\u{0}".to_owned(),
        ),
        (
            format!("a huge string ({} bytes of 2-byte characters)", huge.len()),
            huge,
        ),
    ]
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncations_of_a_json_object_are_all_invalid_json() {
        let body = br#"{"a": {"b": [1, 2, "x\u00e9"]}, "c": true}
"#;
        let all = mutations(body, &["/a/b".to_owned()]);
        for m in all.iter().filter(|m| m.expect == Expect::Invalid) {
            assert!(
                serde_json::from_slice::<Value>(&m.body).is_err()
                    || m.label.starts_with("required field"),
                "{} parses",
                m.label
            );
        }
        assert!(all.iter().any(|m| m.label == "required field /a/b removed"));
        assert!(all.iter().any(|m| m.label.contains("/c (bool) replaced")));
        assert!(all.iter().any(|m| m.label == "/a/b/0 = i64::MAX"));
        assert!(
            all.iter()
                .any(|m| m.label.starts_with("/a/b/2 = \"\u{e9}\u{e9}")
                    && m.expect == Expect::NoPanic)
        );
        assert!(all.iter().any(|m| m.label == "/a/b/2 = \"\" (empty)"));
    }

    #[test]
    fn removal_handles_arrays_and_escaped_keys() {
        let root: Value = serde_json::json!({"a/b": [1, 2], "c": {"~d": 1}});
        assert_eq!(
            removed(&root, "/a~1b/0").unwrap(),
            br#"{"a/b":[2],"c":{"~d":1}}"#.to_vec()
        );
        assert_eq!(
            removed(&root, "/c/~0d").unwrap(),
            br#"{"a/b":[1,2],"c":{}}"#.to_vec()
        );
        assert!(removed(&root, "/nope").is_none());
    }

    #[test]
    fn deep_nesting_replaces_exactly_the_field() {
        let root: Value = serde_json::json!({"a": 1, "b": "x"});
        let body = deeply_nested_at(&root, "/b");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("{\"a\":1,\"b\":[[[["));
        assert!(text.ends_with("]]]]}"));
        assert_eq!(text.matches('[').count(), DEEP);
    }
}
