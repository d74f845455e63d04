//! Webhook ingest: one delivery of a vendor's webhook, from its bytes to durable events.
//!
//! The steps, each of which refuses with nothing stored: the connection takes webhooks
//! (FAILED_PRECONDITION), the body nests no deeper than the store keeps ([`MAX_BODY_DEPTH`],
//! INVALID_ARGUMENT), the plugin verifies it when the connection verifies (UNAUTHENTICATED),
//! the plugin parses it (INVALID_ARGUMENT with the plugin's reason). An authentic body that is
//! valid JSON but that the plugin cannot map is not refused: it is held in the quarantine and
//! answered as accepted. Parsed events are appended with the raw body (as the plugin allows it
//! to be stored) in one durable step; the call returns only once they are durable.
//!
//! What is left to the door: reading the body under its limits and deadlines, the request id,
//! and the vendor's expected reply ([`switchboard_core::WebhookSource::reply`]).

use std::sync::Arc;

use switchboard_core::{Error, ErrorCode, IngestSummary, Timestamp, WebhookRequest};
use switchboard_store::{AppendRequest, Storage};

use super::quarantine::{QuarantineService, is_json};
use crate::connections::Connection;

/// The deepest JSON nesting a webhook body may have. The store keeps vendor values up to
/// [`switchboard_store::MAX_VALUE_DEPTH`] levels; a body deeper than that is refused before any
/// plugin parses it.
pub const MAX_BODY_DEPTH: usize = switchboard_store::MAX_VALUE_DEPTH;

/// One webhook delivery, as the door read it.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// Its headers (names lower-case), in order.
    pub headers: &'a [(String, String)],
    /// Its query parameters, decoded, in order.
    pub query: &'a [(String, String)],
    /// Its body.
    pub body: &'a [u8],
    /// The request id the door gave it, stored with every event.
    pub request_id: Option<&'a str>,
    /// When it arrived.
    pub received_at: Timestamp,
}

/// What became of an ingested webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored: at least one event was new (or the body held none).
    Accepted,
    /// Every event was already stored (a redelivery).
    Duplicate,
    /// Authentic but unmappable: held in the quarantine under this id.
    Quarantined(u64),
}

/// The answer to an ingested webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// What became of it.
    pub outcome: Outcome,
    /// Events appended and duplicates (both 0 when quarantined).
    pub summary: IngestSummary,
    /// Events the plugin parsed from it.
    pub events: usize,
}

/// The ingest service.
#[derive(Clone)]
pub struct Ingest {
    storage: Arc<dyn Storage>,
    quarantine: QuarantineService,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("backend", &self.storage.backend())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// The service over `storage`, holding what cannot be mapped in `quarantine`.
    pub fn new(storage: Arc<dyn Storage>, quarantine: QuarantineService) -> Self {
        Ingest {
            storage,
            quarantine,
        }
    }

    /// Ingests one delivery to `connection` (see the module docs). `Ok` only once its events
    /// (or its quarantine entry) are durable; `Err` with nothing stored.
    pub async fn webhook(
        &self,
        connection: &Connection,
        webhook: Webhook<'_>,
    ) -> Result<Ingested, Error> {
        let source = connection.webhook.as_deref().ok_or_else(|| {
            Error::failed_precondition(format!(
                "connection {} ({}) does not take webhooks",
                connection.config.id, connection.plugin.vendor
            ))
        })?;
        let depth = nesting_depth(webhook.body);
        if depth > MAX_BODY_DEPTH {
            return Err(Error::invalid(format!(
                "the body nests {depth} levels deep; webhooks may nest at most {MAX_BODY_DEPTH} \
                 levels (no vendor sends more), so that everything stored reads back"
            )));
        }
        let request = WebhookRequest {
            connection: &connection.config,
            headers: webhook.headers,
            query: webhook.query,
            body: webhook.body,
            received_at: webhook.received_at,
        };
        if connection.config.verify {
            source.verify(&request)?;
        }
        let events = match source.parse(&request) {
            Ok(events) => events,
            // Authentic and valid JSON, but the plugin cannot map it: held, not refused (a
            // vendor drops what it gets a 4xx for).
            Err(error) if error.code == ErrorCode::InvalidArgument && is_json(webhook.body) => {
                let id = self
                    .quarantine
                    .hold(connection, source, &request, webhook.request_id, &error)
                    .await?;
                return Ok(Ingested {
                    outcome: Outcome::Quarantined(id),
                    summary: IngestSummary {
                        appended: 0,
                        duplicates: 0,
                    },
                    events: 0,
                });
            }
            Err(error) => return Err(error),
        };
        let count = events.len();
        let append = AppendRequest {
            connection: connection.config.id.clone(),
            vendor: connection.plugin.vendor.to_owned(),
            request_id: webhook.request_id.map(str::to_owned),
            received_at: webhook.received_at,
            raw: Some(source.raw_for_storage(&request)),
            events,
            sync: None,
            quarantine: None,
        };
        let receipt = self.storage.append(append).await.map_err(|error| {
            Error::new(
                error.code(),
                format!("the event could not be stored: {error}"),
            )
        })?;
        let summary = IngestSummary {
            appended: receipt.appended.len(),
            duplicates: receipt.duplicates,
        };
        let outcome = if summary.appended == 0 && summary.duplicates > 0 {
            Outcome::Duplicate
        } else {
            Outcome::Accepted
        };
        Ok(Ingested {
            outcome,
            summary,
            events: count,
        })
    }
}

/// How deep the arrays and objects of a JSON text nest (brackets inside strings do not count);
/// for a body that is not JSON, how deep its brackets nest.
pub fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        at += 1;
        match byte {
            // A string: skip to its closing quote (most of a body is text, found by `memchr`).
            b'"' => loop {
                let rest = body.get(at..).unwrap_or_default();
                let Some(found) = memchr::memchr2(b'"', b'\\', rest) else {
                    // Never closed: the rest is inside it.
                    return deepest;
                };
                at += found + 1;
                if body[at - 1] == b'"' {
                    break;
                }
                // An escape: the next byte, whatever it is, is part of the string.
                at += 1;
            },
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth(b"{}"), 1);
        assert_eq!(nesting_depth(br#"{"a":[{"b":"[[[{{"}]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a":"\"[[","b":[1]}"#), 2);
        assert_eq!(nesting_depth(b"plain text"), 0);
        let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert_eq!(nesting_depth(deep.as_bytes()), 120);
        // Escapes: an escaped backslash ends before the quote; an escaped quote does not end.
        assert_eq!(nesting_depth(br#"{"a":"x\\","b":[[1]]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a":"x\"[[[","b":1}"#), 1);
        // A string never closed: what follows its quote is inside it.
        assert_eq!(nesting_depth(br#"[{"a":"[[[[[["#), 2);
        // A backslash as the last byte.
        assert_eq!(nesting_depth(b"[\"\\"), 1);
        assert_eq!(nesting_depth(b""), 0);
    }

    /// The scan that skips strings with `memchr` agrees with a byte-by-byte one.
    #[test]
    fn nesting_depth_agrees_with_a_byte_by_byte_scan() {
        fn bytewise(body: &[u8]) -> usize {
            let (mut depth, mut deepest) = (0usize, 0usize);
            let (mut in_string, mut escaped) = (false, false);
            for &byte in body {
                if in_string {
                    match (escaped, byte) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'[' | b'{' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            deepest
        }
        // Every string of up to 6 bytes over the bytes that matter, and one other.
        let alphabet = b"[]{}\"\\a";
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = bodies
                .iter()
                .filter(|b| b.len() == bodies.last().map_or(0, Vec::len))
                .flat_map(|b| {
                    alphabet.iter().map(move |&c| {
                        let mut next = b.clone();
                        next.push(c);
                        next
                    })
                })
                .collect();
            bodies.extend(longer);
        }
        for body in &bodies {
            assert_eq!(
                nesting_depth(body),
                bytewise(body),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
