//! Seed corpora and dictionaries, made from the plugins' fixtures.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::input::FuzzRequest;
use crate::page_token::{fixture, valid_tokens};
use crate::webhook::{VendorSpec, vendor_specs};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A plugin's fixtures (`<name>.json` bodies with optional `<name>.request.json` holding
/// `{"headers": {...}, "query": {...}}`, the layout of switchboard-testkit), sorted by name.
///
/// # Panics
/// If the directory or a file cannot be read or a request file is malformed.
pub fn fixtures(dir: &Path) -> Vec<(String, FuzzRequest)> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the fixture directory {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".json")?;
            (!stem.ends_with(".request")).then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    let read = |path: &Path| {
        fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let pairs = |value: Option<&serde_json::Value>, lowercase: bool| -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = value
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let key = if lowercase {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                };
                (key, v.as_str().unwrap_or_default().to_owned())
            })
            .collect();
        pairs.sort();
        pairs
    };
    names
        .into_iter()
        .map(|name| {
            let body = read(&dir.join(format!("{name}.json")));
            let request_path = dir.join(format!("{name}.request.json"));
            let meta: serde_json::Value = if request_path.exists() {
                serde_json::from_slice(&read(&request_path))
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", request_path.display()))
            } else {
                serde_json::Value::Null
            };
            let request = FuzzRequest {
                headers: pairs(meta.get("headers"), true),
                query: pairs(meta.get("query"), false),
                body,
            };
            (name, request)
        })
        .collect()
}

/// One seed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// File name in the target's corpus directory.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

fn seed(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Seed {
    Seed {
        name: name.into(),
        data: data.into(),
    }
}

/// A vendor's fixture requests, in the webhook target's input format.
pub fn webhook_seeds(vendor: &str) -> Vec<Seed> {
    fixtures(&fixtures_dir(vendor))
        .into_iter()
        .map(|(name, request)| seed(name, request.encode()))
        .collect()
}

/// Seeds of the page-token target: every mode over a few filters, and real tokens.
pub fn page_token_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for mode in 0..8u8 {
        for (i, filters) in [[0u8, 0, 0, 0, 0, 0, 2], [0x35, 0x0f, 0x81, 0xa0, 0, 0, 3]]
            .iter()
            .enumerate()
        {
            let mut data = vec![mode];
            data.extend_from_slice(filters);
            seeds.push(seed(format!("mode{mode}-{i}"), data));
        }
    }
    // Real tokens as the arbitrary-text mode's token (mode 1: filters 0, page size 2).
    for (i, token) in valid_tokens(fixture()).into_iter().enumerate() {
        let mut data = vec![1, 0, 2];
        data.extend_from_slice(token.as_bytes());
        seeds.push(seed(format!("token{i}"), data));
    }
    seeds
}

/// Seeds of the stream-cursor target: every kind of start, filters and client strings.
pub fn stream_cursor_seeds() -> Vec<Seed> {
    let lines: &[&[u8]] = &[
        b"",
        b"calpha\nvlivechat\nkalpha/c0",
        b"cbeta\nkbeta/c1\nvtencent",
        b"2024-01-01T00:00:00Z\n2024-01-01 00:05:00.5\n1704067200.25",
        b"chat_started\nclosed\nsolved\nkgamma/c2/x",
        b"vnope\ncBad Id\nknoslash",
    ];
    let starts: &[&[u8]] = &[
        &[0],
        &[1, 1],
        &[2, 7],
        &[3, 0, 0, 0, 0, 0, 0, 0, 40],
        &[3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[4, 1],
        &[5, 1, 10, 0],
        &[5, 0, 0, 0, 0, 0, 0x65, 0x92, 0x00, 0x80, 0, 0, 0, 0],
    ];
    let mut seeds = Vec::new();
    for (s, start) in starts.iter().enumerate() {
        for (l, line) in lines.iter().enumerate() {
            if (s + l) % 2 == 1 {
                continue;
            }
            let mut data = start.to_vec();
            // Kinds: none, or CHAT_STARTED and TICKET_CREATED.
            data.extend_from_slice(if l % 3 == 0 { &[0] } else { &[2, 1, 8] });
            data.extend_from_slice(line);
            seeds.push(seed(format!("start{s}-lines{l}"), data));
        }
    }
    seeds
}

/// Seeds of a target by its name (see [`crate::targets`]).
pub fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "page_token" => page_token_seeds(),
        "stream_cursor" => stream_cursor_seeds(),
        _ => match target.strip_prefix("webhook_") {
            Some(vendor) => webhook_seeds(vendor),
            None => panic!(
                "no fuzz target {target:?}; use one of {:?}",
                crate::targets()
            ),
        },
    }
}

fn collect_tokens(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                out.insert(key.clone());
                collect_tokens(value, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_tokens(v, out)),
        serde_json::Value::String(s) if s.len() <= 40 && !s.contains(char::is_whitespace) => {
            out.insert(s.clone());
        }
        _ => {}
    }
}

/// A libFuzzer dictionary for a vendor: every key and every short string value of its
/// fixtures, the header and query names it is sent with, and JSON punctuation.
pub fn webhook_dictionary(vendor: &str) -> String {
    let dir = fixtures_dir(vendor);
    let mut tokens = BTreeSet::new();
    for (_, fixture) in fixtures(&dir) {
        if let Ok(value) = serde_json::from_slice(&fixture.body) {
            collect_tokens(&value, &mut tokens);
        }
        for (name, _) in &fixture.headers {
            tokens.insert(format!("H {name}: "));
        }
        for (name, _) in &fixture.query {
            tokens.insert(format!("Q {name}="));
        }
    }
    let mut out =
        format!("# {vendor}: keys and short values of its fixtures (made by seed-corpus)\n");
    for (i, token) in tokens.iter().enumerate() {
        out.push_str(&format!("k{i}={}\n", dict_quote(&format!("\"{token}\""))));
    }
    for (i, punct) in [
        "{", "}", "[", "]", ":", ",", "null", "true", "false", "-1", "1e999", "\\u0000", "\n\n",
    ]
    .iter()
    .enumerate()
    {
        out.push_str(&format!("p{i}={}\n", dict_quote(punct)));
    }
    out
}

/// A libFuzzer dictionary entry: `"..."` with `\\`, `"` and non-printable bytes escaped.
fn dict_quote(token: &str) -> String {
    let mut out = String::from("\"");
    for b in token.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out.push('"');
    out
}

/// The vendors with a webhook target, as target names (`webhook_livechat`...).
pub fn webhook_targets() -> Vec<String> {
    vendor_specs()
        .iter()
        .map(|v| format!("webhook_{}", v.vendor))
        .collect()
}

/// The fixtures of the plugin registered as `vendor`.
fn fixtures_dir(vendor: &str) -> PathBuf {
    VendorSpec::get(vendor)
        .map(|spec| spec.fixtures_dir.clone())
        .unwrap_or_else(|| {
            panic!(
                "no linked plugin crate has a test connection for {vendor:?}: add fixtures/connection.toml"
            )
        })
}
