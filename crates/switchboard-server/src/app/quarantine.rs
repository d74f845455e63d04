//! The quarantine service: an authentic webhook (it passed verification and is valid JSON)
//! that its plugin cannot map is never refused (the vendor would drop it after its retries).
//! It is held durably with the plugin's reason, answered with success, and processed again on
//! request ([`QuarantineService::retry`]), e.g. after a plugin upgrade: its events then go
//! through the normal append (dedup applies, so retrying twice appends once) in the same atomic
//! step that releases the entry.
//!
//! Ingest ([`super::ingest`]) holds; gRPC (`ListQuarantine`, `RetryQuarantine`) and the CLI
//! (`switchboard quarantine list|retry`) list and retry.

use std::sync::Arc;

use switchboard_core::{Error, Timestamp, WebhookRequest, WebhookSource};
use switchboard_store::{
    AppendRequest, NewQuarantined, QuarantineOp, QuarantineTotals, Quarantined, Storage,
};
use tracing::{info, warn};

use crate::connections::{Connection, Connections};

/// Header names never kept with a quarantined webhook: they carry credentials, which a retry
/// does not need (it parses; verification happened when the webhook arrived).
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "x-switchboard-token",
    "x-smartsupp-hmac",
    "proxy-authorization",
];

/// Query parameters never kept, for the same reason.
const CREDENTIAL_PARAMS: [&str; 3] = ["token", "sign", "secret"];

/// Whether a body that its plugin could not map is an authentic delivery worth holding: valid
/// JSON. (Malformed JSON is the sender's fault and keeps its 400.)
pub fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySummary {
    /// Entries the plugin could map now: their events were appended and they left the
    /// quarantine.
    pub released: Vec<u64>,
    /// Events appended by them (new ones; the others were duplicates).
    pub appended: usize,
    /// Events of them that were already stored.
    pub duplicates: usize,
    /// Entries that still cannot be mapped, with the reason.
    pub still_failing: Vec<(u64, String)>,
    /// Ids asked for that the quarantine does not hold.
    pub not_found: Vec<u64>,
}

/// Holds and retries quarantined webhooks.
#[derive(Clone)]
pub struct QuarantineService {
    store: Arc<dyn Storage>,
    connections: Connections,
}

impl std::fmt::Debug for QuarantineService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuarantineService")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Most entries one retry reads from the store at a time.
const RETRY_PAGE: usize = 100;

impl QuarantineService {
    /// A service over the store and the connections.
    pub fn new(store: Arc<dyn Storage>, connections: Connections) -> Self {
        QuarantineService { store, connections }
    }

    /// Holds a verified webhook its plugin could not map. `Ok(id)` once it is durable;
    /// `Err` (UNAVAILABLE) when the quarantine is full (the vendor should redeliver later) or
    /// the store cannot take it.
    pub async fn hold(
        &self,
        connection: &Connection,
        source: &dyn WebhookSource,
        request: &WebhookRequest<'_>,
        request_id: Option<&str>,
        reason: &Error,
    ) -> Result<u64, Error> {
        let keep = |pairs: &[(String, String)], denied: &[&str]| {
            pairs
                .iter()
                .filter(|(name, _)| !denied.iter().any(|d| name.eq_ignore_ascii_case(d)))
                .cloned()
                .collect::<Vec<_>>()
        };
        let append = AppendRequest {
            connection: connection.config.id.clone(),
            vendor: connection.plugin.vendor.to_owned(),
            request_id: request_id.map(str::to_owned),
            received_at: request.received_at,
            raw: None,
            events: Vec::new(),
            sync: None,
            quarantine: Some(QuarantineOp::Hold(Box::new(NewQuarantined {
                reason: reason.message.clone(),
                headers: keep(request.headers, &CREDENTIAL_HEADERS),
                query: keep(request.query, &CREDENTIAL_PARAMS),
                body: source.raw_for_storage(request),
            }))),
        };
        let receipt = self.store.append(append).await?;
        match receipt.quarantined {
            Some(id) => {
                crate::metrics::quarantine_held(connection.config.id.as_str());
                if let Ok(totals) = self.totals().await {
                    crate::metrics::quarantine_entries(totals.entries);
                }
                warn!(
                    quarantine_id = id,
                    reason = %reason.message,
                    "webhook quarantined: verified, but its plugin cannot map it"
                );
                Ok(id)
            }
            None => {
                crate::metrics::quarantine_full();
                warn!(reason = %reason.message, "webhook refused: the quarantine is full");
                Err(Error::unavailable(
                    "the webhook is authentic but its plugin cannot map it, and the quarantine \
                     is full; retry later (an operator must retry or clear quarantined webhooks)",
                ))
            }
        }
    }

    /// One page of the quarantine, oldest first.
    pub async fn list(
        &self,
        after: u64,
        limit: usize,
        connections: &[switchboard_core::ConnectionId],
    ) -> Result<(Vec<Quarantined>, Option<u64>), Error> {
        Ok(self
            .store
            .list_quarantine(after, limit, connections)
            .await?)
    }

    /// The quarantine's totals.
    pub async fn totals(&self) -> Result<QuarantineTotals, Error> {
        Ok(self.store.quarantine_totals().await?)
    }

    /// Processes quarantined webhooks again with today's plugins: `ids`, or every one when
    /// `ids` is empty.
    pub async fn retry(&self, ids: &[u64]) -> Result<RetrySummary, Error> {
        let mut summary = RetrySummary::default();
        if ids.is_empty() {
            let mut after = 0;
            loop {
                let (page, next) = self.list(after, RETRY_PAGE, &[]).await?;
                for entry in page {
                    self.retry_one(entry, &mut summary).await?;
                }
                match next {
                    Some(next) => after = next,
                    None => break,
                }
            }
        } else {
            for &id in ids {
                match self.store.get_quarantined(id).await? {
                    Some(entry) => self.retry_one(entry, &mut summary).await?,
                    None => summary.not_found.push(id),
                }
            }
        }
        crate::metrics::quarantine_entries(self.totals().await?.entries);
        info!(
            released = summary.released.len(),
            appended = summary.appended,
            still_failing = summary.still_failing.len(),
            "quarantine retried"
        );
        Ok(summary)
    }

    async fn retry_one(&self, entry: Quarantined, summary: &mut RetrySummary) -> Result<(), Error> {
        let parsed = match self.connections.get(entry.connection.as_str()) {
            None => Err(format!(
                "connection {} is no longer configured",
                entry.connection
            )),
            Some(connection) => match connection.webhook.as_deref() {
                None => Err(format!(
                    "connection {} no longer takes webhooks",
                    entry.connection
                )),
                Some(source) => {
                    let request = WebhookRequest {
                        connection: &connection.config,
                        headers: &entry.headers,
                        query: &entry.query,
                        body: entry.body.as_bytes(),
                        received_at: entry.received_at,
                    };
                    source.parse(&request).map_err(|e| e.message)
                }
            },
        };
        let (events, op) = match parsed {
            Ok(events) => (events, QuarantineOp::Release(entry.id)),
            Err(reason) => {
                summary.still_failing.push((entry.id, reason.clone()));
                (
                    Vec::new(),
                    QuarantineOp::Attempt {
                        id: entry.id,
                        reason,
                        at: Timestamp::now(),
                    },
                )
            }
        };
        let released = matches!(op, QuarantineOp::Release(_));
        let receipt = self
            .store
            .append(AppendRequest {
                connection: entry.connection.clone(),
                vendor: entry.vendor.clone(),
                request_id: entry.request_id.clone(),
                received_at: entry.received_at,
                raw: released.then(|| entry.body.clone()),
                events,
                sync: None,
                quarantine: Some(op),
            })
            .await?;
        if released {
            summary.released.push(entry.id);
            summary.appended += receipt.appended.len();
            summary.duplicates += receipt.duplicates;
        }
        Ok(())
    }
}
