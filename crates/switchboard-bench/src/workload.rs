//! The workload: every plugin fixture turned into a template whose vendor ids get a
//! per-request suffix, so that each request is new to the store (not a duplicate).
//!
//! Ids are found generically: every JSON field named `id`, `*_id`, `*Id` or `*ID` with a string
//! value `"x"` becomes `"x-N"` everywhere it appears quoted in the body, and with a positive
//! integer value `v` becomes `v * 10^9 + N` where it appears as a JSON number. A fixture is
//! kept only if two different `N` verify, parse to at least one event each, and share no dedup
//! key; the others (e.g. a vendor event that Switchboard does not store) are reported and left
//! out.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use switchboard_core::{
    ConnectionConfig, EventPayload, IncomingEvent, Registry, Timestamp, WebhookRequest,
    WebhookSource,
};

/// The vendors the workload covers: every linked plugin with a `fixtures/connection.toml`
/// (every plugin with webhooks), sorted.
pub fn vendors() -> &'static [&'static str] {
    static VENDORS: OnceLock<Vec<&'static str>> = OnceLock::new();
    VENDORS.get_or_init(|| {
        switchboard_plugins::test_connections()
            .into_iter()
            .map(|(_, connection)| &*Box::leak(connection.vendor.into_boxed_str()))
            .collect()
    })
}

/// Smartsupp's signature header over the body.
const SMARTSUPP_HMAC: &str = "x-smartsupp-hmac";
/// Smartsupp's secret that keys it.
const SMARTSUPP_APP_SECRET: &str = "app-secret-93b7e0";

/// Each numeric id `v` becomes `v * NUMERIC_SHIFT + N`.
/// 10^7: ids up to about 9 * 10^8 stay below 2^53 (what plugins accept as a JSON integer
/// id; LiveTex ids are 7 digits), and 10^7 requests per run is far more than any scenario sends.
const NUMERIC_SHIFT: u64 = 10_000_000;

/// The connections: one per vendor, id = vendor, verification on, with the credentials the
/// fixtures carry (each plugin's `fixtures/connection.toml`).
pub fn connections() -> Vec<ConnectionConfig> {
    switchboard_plugins::test_connections()
        .into_iter()
        .map(|(_, connection)| connection.config())
        .collect()
}

/// A piece of a templated body.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// A string id's content: rendered `value-N`.
    Str(String),
    /// A numeric id: rendered `value * 10^7 + N`.
    Num(u64),
}

/// One fixture as a template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The vendor (also the connection id).
    pub vendor: &'static str,
    /// The fixture's name.
    pub name: String,
    /// Headers to send, without `content-length` and the signature.
    pub headers: Vec<(String, String)>,
    /// The query parameters, and whether each is an id to suffix.
    query: Vec<(String, String, bool)>,
    parts: Vec<Part>,
    signed: bool,
    /// The fixture's events with N = 0, for the store-only scenarios.
    pub events: Vec<IncomingEvent>,
}

/// A request rendered from a template.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: String,
    /// All headers to send, signature included.
    pub headers: Vec<(String, String)>,
    /// The query parameters, decoded.
    pub query: Vec<(String, String)>,
}

impl Template {
    /// The body and headers for request number `n`.
    pub fn render(&self, n: u64) -> Rendered {
        let mut body = String::with_capacity(self.parts.iter().map(part_len).sum::<usize>() + 64);
        for part in &self.parts {
            match part {
                Part::Text(text) => body.push_str(text),
                Part::Str(value) => {
                    body.push_str(value);
                    body.push('-');
                    body.push_str(&n.to_string());
                }
                Part::Num(value) => body.push_str(&(value * NUMERIC_SHIFT + n).to_string()),
            }
        }
        let mut headers = self.headers.clone();
        if self.signed {
            let mut mac = Hmac::<Sha256>::new_from_slice(SMARTSUPP_APP_SECRET.as_bytes())
                .expect("HMAC takes any key length");
            mac.update(body.as_bytes());
            headers.push((
                SMARTSUPP_HMAC.to_owned(),
                hex::encode(mac.finalize().into_bytes()),
            ));
        }
        let query = self
            .query
            .iter()
            .map(|(k, v, is_id)| {
                let v = if *is_id {
                    format!("{v}-{n}")
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        Rendered {
            body,
            headers,
            query,
        }
    }
}

impl Rendered {
    /// The URL of this request on `base` (`http://host:port`) for `connection`.
    pub fn url(&self, base: &str, connection: &str) -> String {
        let mut url = format!("{base}/webhooks/{connection}");
        for (i, (k, v)) in self.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode(k));
            url.push('=');
            url.push_str(&encode(v));
        }
        url
    }
}

fn part_len(part: &Part) -> usize {
    match part {
        Part::Text(t) | Part::Str(t) => t.len() + 8,
        Part::Num(_) => 24,
    }
}

/// The events of template events made unique for request number `n` without parsing: dedup
/// keys and conversation ids get the suffix `-N` (the same shape the rendered bodies give).
pub fn unique_events(events: &[IncomingEvent], n: u64) -> Vec<IncomingEvent> {
    events
        .iter()
        .map(|event| {
            let mut event = event.clone();
            event.dedup_key = format!("{}-{n}", event.dedup_key);
            match &mut event.payload {
                EventPayload::Conversation(patch) => {
                    patch.external_id = format!("{}-{n}", patch.external_id);
                }
                EventPayload::Ticket(ticket) => {
                    ticket.external_id = format!("{}-{n}", ticket.external_id);
                }
                EventPayload::Agent { .. }
                | EventPayload::Vendor { .. }
                | EventPayload::Contact(_) => {}
            }
            event
        })
        .collect()
}

/// The fixture directory of a vendor's plugin crate.
fn fixture_dir(vendor: &str) -> PathBuf {
    switchboard_plugins::test_connection(vendor)
        .map(|(krate, _)| krate.fixtures_dir())
        .unwrap_or_else(|| panic!("no linked plugin crate has a test connection for {vendor:?}"))
}

/// Builds the templates of every vendor; prints which fixtures were left out and why.
pub fn templates(registry: &Registry) -> anyhow::Result<Vec<Template>> {
    let connections = connections();
    let mut out = Vec::new();
    for &vendor in vendors() {
        let config = connections
            .iter()
            .find(|c| c.vendor == vendor)
            .expect("a connection per vendor");
        let plugin = registry
            .get(vendor)
            .with_context(|| format!("plugin {vendor} is not linked; add `use` for its crate"))?;
        let factory = plugin
            .webhook
            .with_context(|| format!("plugin {vendor} takes no webhooks"))?;
        let source = factory(config).map_err(|e| anyhow::anyhow!("{vendor}: {e}"))?;
        let mut kept = 0;
        let mut skipped = Vec::new();
        for fixture in switchboard_testkit::fixtures::load(fixture_dir(vendor)) {
            let template = template(vendor, fixture)?;
            match check(&template, config, source.as_ref()) {
                Ok(events) => {
                    kept += 1;
                    out.push(Template { events, ..template });
                }
                Err(reason) => skipped.push(format!("{} ({reason})", template.name)),
            }
        }
        if kept == 0 {
            bail!("no usable {vendor} fixture; every one was skipped: {skipped:?}");
        }
        eprintln!(
            "workload: {vendor}: {kept} fixtures used, {} skipped{}",
            skipped.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", skipped.join(", "))
            }
        );
    }
    Ok(out)
}

fn template(
    vendor: &'static str,
    fixture: switchboard_testkit::FixtureRequest,
) -> anyhow::Result<Template> {
    let body = String::from_utf8(fixture.body)
        .with_context(|| format!("{vendor}/{} is not UTF-8", fixture.name))?;
    let value: Value = serde_json::from_str(&body)
        .with_context(|| format!("{vendor}/{} is not JSON", fixture.name))?;
    let mut strings = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    collect_ids(&value, &mut strings, &mut numbers);
    // Query parameters that are ids (Tencent's RequestID is its dedup key) get the suffix too.
    let query = fixture
        .query
        .into_iter()
        .map(|(k, v)| {
            let is_id = is_id_key(&k) && !v.is_empty();
            (k, v, is_id)
        })
        .collect();
    let signed = fixture
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(SMARTSUPP_HMAC));
    let headers = fixture
        .headers
        .into_iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case(SMARTSUPP_HMAC) && !n.eq_ignore_ascii_case("content-length")
        })
        .collect();
    Ok(Template {
        vendor,
        name: fixture.name,
        headers,
        query,
        parts: split(&body, &strings, &numbers),
        signed,
        events: Vec::new(),
    })
}

fn is_id_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("id")
        || key.ends_with("_id")
        || key.ends_with("Id")
        || key.ends_with("ID")
}

fn collect_ids(
    value: &Value,
    strings: &mut BTreeSet<String>,
    numbers: &mut BTreeSet<(String, u64)>,
) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if is_id_key(key) {
                    match value {
                        Value::String(s) if !s.is_empty() => {
                            strings.insert(s.clone());
                        }
                        Value::Number(n) => {
                            if let Some(v) = n.as_u64().filter(|v| (1..1 << 32).contains(v)) {
                                numbers.insert((key.clone(), v));
                            }
                        }
                        _ => {}
                    }
                }
                collect_ids(value, strings, numbers);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, strings, numbers)),
        _ => {}
    }
}

/// Splits the raw body at every occurrence of an id (quoted strings anywhere; numbers as the
/// value of their field), keeping the rest byte for byte.
fn split(body: &str, strings: &BTreeSet<String>, numbers: &BTreeSet<(String, u64)>) -> Vec<Part> {
    let mut hits: Vec<(usize, usize, Part)> = Vec::new();
    for s in strings {
        let quoted = format!("\"{s}\"");
        for (at, _) in body.match_indices(&quoted) {
            hits.push((at + 1, at + 1 + s.len(), Part::Str(s.clone())));
        }
    }
    for (key, v) in numbers {
        let digits = v.to_string();
        let quoted = format!("\"{key}\"");
        for (at, _) in body.match_indices(&quoted) {
            let rest = &body[at + quoted.len()..];
            let Some(value) = rest.trim_start().strip_prefix(':') else {
                continue;
            };
            let value = value.trim_start();
            let whole = value.strip_prefix(&digits).is_some_and(|after| {
                !matches!(
                    after.as_bytes().first(),
                    Some(b'0'..=b'9' | b'.' | b'e' | b'E')
                )
            });
            if whole {
                let start = body.len() - value.len();
                hits.push((start, start + digits.len(), Part::Num(*v)));
            }
        }
    }
    hits.sort_by_key(|(start, _, _)| *start);
    let mut parts = Vec::new();
    let mut at = 0;
    for (start, end, part) in hits {
        if start < at {
            continue;
        }
        parts.push(Part::Text(body[at..start].to_owned()));
        parts.push(part);
        at = end;
    }
    parts.push(Part::Text(body[at..].to_owned()));
    parts
}

/// Verifies and parses the template with N = 1 and N = 2; returns the events of N = 0.
fn check(
    template: &Template,
    config: &ConnectionConfig,
    source: &dyn WebhookSource,
) -> Result<Vec<IncomingEvent>, String> {
    let parse = |n: u64| -> Result<Vec<IncomingEvent>, String> {
        let rendered = template.render(n);
        let request = WebhookRequest {
            connection: config,
            headers: &rendered.headers,
            query: &rendered.query,
            body: rendered.body.as_bytes(),
            received_at: Timestamp::now(),
        };
        source
            .verify(&request)
            .map_err(|e| format!("verify: {}", e.message))?;
        source
            .parse(&request)
            .map_err(|e| format!("parse: {}", e.message))
    };
    let one = parse(1)?;
    let two = parse(2)?;
    if one.is_empty() {
        return Err("no events".to_owned());
    }
    let keys: BTreeSet<&str> = one.iter().map(|e| e.dedup_key.as_str()).collect();
    if keys.len() != one.len() || two.iter().any(|e| keys.contains(e.dedup_key.as_str())) {
        return Err("dedup keys do not change with the ids".to_owned());
    }
    parse(0)
}

/// Percent-encodes a query component.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
