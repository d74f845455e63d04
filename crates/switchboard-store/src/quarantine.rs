//! The quarantine: authentic webhooks (verified, valid JSON) that their plugin could not map.
//! They are kept durably, answered with success (a vendor drops what it gets a 4xx for), and
//! can be processed again after a plugin upgrade.
//!
//! Keys: `quarantine/<id u64 BE>` -> [`Quarantined`] (JSON); `meta/quarantine` -> the next id
//! and the totals ([`QuarantineTotals`]). Both change only through the writer, in the same
//! atomic batch as whatever else the request does (a release goes with the events the retry
//! appended). The quarantine is bounded in entries and bytes: a new entry that does not fit is
//! refused and the oldest are kept.

use serde::{Deserialize, Serialize};
use switchboard_core::{ConnectionId, Timestamp};

use crate::keys;
use crate::{AppendReceipt, AppendRequest};

/// `meta/quarantine`: the next id and the totals (JSON).
pub(crate) const META_KEY: &[u8] = b"meta/quarantine";
/// `quarantine/<id u64 BE>`.
pub(crate) const PREFIX: &[u8] = b"quarantine/";

pub(crate) fn key(id: u64) -> Vec<u8> {
    [PREFIX, &keys::be(id)].concat()
}

/// A webhook held in the quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Its id, increasing in arrival order.
    pub id: u64,
    /// The connection it came through.
    pub connection: ConnectionId,
    /// The connection's vendor.
    pub vendor: String,
    /// When it arrived.
    pub received_at: Timestamp,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// Why the plugin could not map it (the last attempt's reason).
    pub reason: String,
    /// The request's headers, credentials left out.
    pub headers: Vec<(String, String)>,
    /// The request's query parameters, credentials left out.
    pub query: Vec<(String, String)>,
    /// The body as the plugin keeps it (credentials in the body removed).
    pub body: String,
    /// How many times it was processed again without success.
    pub attempts: u32,
    /// When it was last processed again.
    pub last_attempt_at: Option<Timestamp>,
}

impl Quarantined {
    /// What it costs the quarantine's byte bound.
    pub fn size(&self) -> u64 {
        let pairs = |pairs: &[(String, String)]| -> usize {
            pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
        };
        (self.body.len() + self.reason.len() + pairs(&self.headers) + pairs(&self.query)) as u64
    }
}

/// A webhook to put in the quarantine ([`crate::AppendRequest::quarantine`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewQuarantined {
    /// Why the plugin could not map it.
    pub reason: String,
    /// The request's headers, credentials left out.
    pub headers: Vec<(String, String)>,
    /// The request's query parameters, credentials left out.
    pub query: Vec<(String, String)>,
    /// The body as the plugin keeps it.
    pub body: String,
}

/// What an append does to the quarantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuarantineOp {
    /// Hold this webhook (the request's connection, vendor, time and request id are its own).
    Hold(Box<NewQuarantined>),
    /// Remove this entry: it was processed (its events are in the same request).
    Release(u64),
    /// Record a failed attempt to process this entry again.
    Attempt {
        /// The entry.
        id: u64,
        /// Why it failed this time.
        reason: String,
        /// When.
        at: Timestamp,
    },
}

/// The quarantine's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineLimits {
    /// Most entries held.
    pub max_entries: u64,
    /// Most bytes held (bodies, headers, reasons).
    pub max_bytes: u64,
}

impl Default for QuarantineLimits {
    fn default() -> Self {
        QuarantineLimits {
            max_entries: 10_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The quarantine's totals, kept under `meta/quarantine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineTotals {
    /// The id the next entry gets.
    pub next_id: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
}

impl QuarantineTotals {
    /// Applies `op`, carried by `request`, to the totals: the one rule of every backend.
    /// `current` is the entry a `Release` or `Attempt` names, as stored or as the group left
    /// it (`None` for a `Hold`, or when there is no such entry). Returns the entry to write
    /// (`Some((id, Some(entry)))`) or remove (`Some((id, None))`), or `None` when nothing
    /// changes; a `Hold` past `limits` sets `receipt.quarantine_full` and holds nothing.
    pub fn apply(
        &mut self,
        request: &AppendRequest,
        op: &QuarantineOp,
        current: Option<Quarantined>,
        limits: QuarantineLimits,
        receipt: &mut AppendReceipt,
    ) -> Option<(u64, Option<Quarantined>)> {
        match op {
            QuarantineOp::Hold(new) => {
                let id = self.next_id.max(1);
                let entry = Quarantined {
                    id,
                    connection: request.connection.clone(),
                    vendor: request.vendor.clone(),
                    received_at: request.received_at,
                    request_id: request.request_id.clone(),
                    reason: new.reason.clone(),
                    headers: new.headers.clone(),
                    query: new.query.clone(),
                    body: new.body.clone(),
                    attempts: 0,
                    last_attempt_at: None,
                };
                let size = entry.size();
                if self.entries >= limits.max_entries
                    || self.bytes.saturating_add(size) > limits.max_bytes
                {
                    receipt.quarantine_full = true;
                    return None;
                }
                self.next_id = id + 1;
                self.entries += 1;
                self.bytes += size;
                receipt.quarantined = Some(id);
                Some((id, Some(entry)))
            }
            QuarantineOp::Release(id) => {
                let entry = current?;
                self.entries = self.entries.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(entry.size());
                Some((*id, None))
            }
            QuarantineOp::Attempt { id, reason, at } => {
                let mut entry = current?;
                self.bytes = self.bytes.saturating_sub(entry.size());
                entry.reason = reason.clone();
                entry.attempts = entry.attempts.saturating_add(1);
                entry.last_attempt_at = Some(*at);
                self.bytes = self.bytes.saturating_add(entry.size());
                Some((*id, Some(entry)))
            }
        }
    }
}

impl QuarantineOp {
    /// The entry this op acts on, for `Release` and `Attempt`.
    pub fn target(&self) -> Option<u64> {
        match self {
            QuarantineOp::Hold(_) => None,
            QuarantineOp::Release(id) | QuarantineOp::Attempt { id, .. } => Some(*id),
        }
    }
}
