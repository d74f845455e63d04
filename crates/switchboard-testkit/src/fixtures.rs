//! Loading a plugin's fixtures: `fixtures/<name>.json` (the exact body a vendor sends) and an
//! optional `fixtures/<name>.request.json` (`{"headers": {...}, "query": {...}}`) with the
//! headers and query parameters sent along with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;
use switchboard_core::{ConnectionConfig, Timestamp, WebhookRequest};

/// One recorded webhook request: a fixture body with its headers and query parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixtureRequest {
    /// The fixture's name: its file name without `.json` (`legacy_chat_started`).
    pub name: String,
    /// Headers, names lowercase, sorted by name.
    pub headers: Vec<(String, String)>,
    /// Query parameters, sorted by name.
    pub query: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

impl FixtureRequest {
    /// The request as a plugin sees it, addressed to `connection` and received at `received_at`.
    pub fn webhook_request<'a>(
        &'a self,
        connection: &'a ConnectionConfig,
        received_at: Timestamp,
    ) -> WebhookRequest<'a> {
        WebhookRequest {
            connection,
            headers: &self.headers,
            query: &self.query,
            body: &self.body,
            received_at,
        }
    }

    /// Removes every header with this name (any case).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Removes every query parameter with this name.
    pub fn remove_query(&mut self, name: &str) {
        self.query.retain(|(n, _)| n != name);
    }

    /// Removes a top-level field of a JSON object body (a credential carried in the body),
    /// rewriting the body compactly. Does nothing to a body that is not a JSON object.
    pub fn remove_body_field(&mut self, field: &str) {
        if let Ok(serde_json::Value::Object(mut map)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
            && map.remove(field).is_some()
        {
            self.body = serde_json::Value::Object(map).to_string().into_bytes();
        }
    }
}

/// The optional `<name>.request.json` beside a fixture body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
}

/// Loads every fixture in `dir` (`*.json` other than `*.request.json`), sorted by name.
///
/// # Panics
/// If `dir` cannot be read, a file cannot be read, a `.request.json` is not
/// `{"headers": {...}, "query": {...}}` with string values, or a `.request.json` has no body
/// beside it: fixtures are test data, and a broken one must stop the test with a clear message.
pub fn load(dir: impl AsRef<Path>) -> Vec<FixtureRequest> {
    let dir = dir.as_ref();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the fixture directory {}: {e}; create it and put the vendor's webhook bodies in it",
            dir.display()
        )
    });
    let mut names = Vec::new();
    let mut request_files = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file_name.strip_suffix(".request.json") {
            request_files.push(name.to_owned());
        } else if let Some(name) = file_name.strip_suffix(".json") {
            names.push(name.to_owned());
        }
    }
    names.sort();
    if let Some(orphan) = request_files.iter().find(|r| !names.contains(r)) {
        panic!(
            "{} has no body {orphan}.json beside it; add the body or remove the request file",
            dir.join(format!("{orphan}.request.json")).display()
        );
    }
    names
        .into_iter()
        .map(|name| {
            let body_path = dir.join(format!("{name}.json"));
            let body = fs::read(&body_path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", body_path.display()));
            let request_path = dir.join(format!("{name}.request.json"));
            let request = if request_path.exists() {
                let text = fs::read(&request_path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", request_path.display()));
                serde_json::from_slice::<RequestFile>(&text).unwrap_or_else(|e| {
                    panic!(
                        "{} is not {{\"headers\": {{\"name\": \"value\"}}, \"query\": {{\"Param\": \"value\"}}}}: {e}",
                        request_path.display()
                    )
                })
            } else {
                RequestFile::default()
            };
            FixtureRequest {
                name,
                headers: request
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
                query: request.query.into_iter().collect(),
                body,
            }
        })
        .collect()
}
