//! Pull sync: pages a connection's vendor API into the store through its
//! [`Connector`](switchboard_core::Connector).
//!
//! Each page's events and the cursor after it are appended in one store transaction, so a sync
//! stopped at any point (cancelled, killed, vendor down) resumes from the last saved page and
//! lands every record exactly once: records pulled twice, or already received by webhook, carry
//! the same dedup keys and merge. One sync per connection runs at a time.
//!
//! [`SyncRunner`] runs syncs; [`SyncService`] starts a run on request (`SyncConnection`) and
//! reports its progress page by page; [`spawn_periodic`] runs them on each connection's
//! interval.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use switchboard_core::{ConnectionId, Error, ErrorCode, Timestamp};
use switchboard_store::{AppendRequest, Storage, SyncUpdate};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::connections::{Connection, Connections};

/// How one sync run starts and stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Where a first sync starts; ignored when a cursor is saved, unless `from_scratch`.
    pub since: Option<Timestamp>,
    /// Ignore the saved cursor and start from `since` (or the vendor's beginning).
    pub from_scratch: bool,
    /// Stop after this many pages (0: until the vendor has nothing more).
    pub max_pages: u32,
}

/// Progress of one run, reported after every page.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncProgress {
    /// The connection.
    pub connection: ConnectionId,
    /// Pages fetched and saved.
    pub pages: u64,
    /// Events pulled.
    pub records: u64,
    /// Events new to the store.
    pub appended: u64,
    /// The cursor saved with the last page.
    pub cursor: String,
    /// Whether the vendor had nothing more.
    pub done: bool,
    /// When the run started.
    pub started_at: Timestamp,
    /// Records per second so far.
    pub records_per_second: f64,
}

/// Runs syncs, at most one per connection at a time.
#[derive(Clone, Debug, Default)]
pub struct SyncRunner {
    running: Arc<Mutex<HashSet<ConnectionId>>>,
}

/// Holds a connection's sync slot; frees it when dropped.
#[derive(Debug)]
pub struct SyncSlot {
    connection: ConnectionId,
    running: Arc<Mutex<HashSet<ConnectionId>>>,
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.connection);
    }
}

/// Why a connection cannot sync, if it cannot: no API, or its connector could not be built.
pub fn unsupported_reason(connection: &Connection) -> Option<String> {
    if connection.connector.is_some() {
        return None;
    }
    Some(
        match (&connection.connector_error, connection.plugin.connector) {
            (Some(error), _) => format!("sync is not configured: {error}"),
            (None, None) => format!(
                "the {} plugin has no connector, so this connection only receives webhooks",
                connection.plugin.vendor
            ),
            (None, Some(_)) => "the connector was not built".to_owned(),
        },
    )
}

impl SyncRunner {
    /// Claims the connection's sync slot: `FailedPrecondition` if it cannot sync, and an
    /// `AlreadyExists`-coded error if a sync of it is running.
    pub fn claim(&self, connection: &Connection) -> Result<SyncSlot, Error> {
        if let Some(reason) = unsupported_reason(connection) {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!("connection {} cannot sync: {reason}", connection.config.id),
            ));
        }
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if !running.insert(connection.config.id.clone()) {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!(
                    "a sync of connection {} is already running; wait for it to finish",
                    connection.config.id
                ),
            ));
        }
        Ok(SyncSlot {
            connection: connection.config.id.clone(),
            running: Arc::clone(&self.running),
        })
    }

    /// Runs a sync in the claimed slot, calling `on_page` after every saved page; it stops
    /// early (after the page just saved) when `on_page` returns false. Vendor errors are
    /// recorded in the connection's sync state and returned.
    pub async fn run(
        &self,
        store: &dyn Storage,
        connection: &Connection,
        _slot: &SyncSlot,
        options: SyncOptions,
        mut on_page: impl FnMut(&SyncProgress) -> bool + Send,
    ) -> Result<SyncProgress, Error> {
        let id = &connection.config.id;
        let connector = connection.connector.as_deref().ok_or_else(|| {
            Error::new(
                ErrorCode::FailedPrecondition,
                format!("connection {id} has no connector"),
            )
        })?;
        let saved = store.sync_state(id).await?.and_then(|state| state.cursor);
        let mut cursor = if options.from_scratch { None } else { saved };
        let started = Instant::now();
        let mut progress = SyncProgress {
            connection: id.clone(),
            pages: 0,
            records: 0,
            appended: 0,
            cursor: cursor.clone().unwrap_or_default(),
            done: false,
            started_at: Timestamp::now(),
            records_per_second: 0.0,
        };
        info!(connection = %id, resume = cursor.is_some(), "sync started");
        loop {
            let page = match connector.sync_page(cursor.as_deref(), options.since).await {
                Ok(page) => page,
                Err(error) => {
                    warn!(connection = %id, code = error.code.as_str(), error = %error.message, "sync page failed");
                    if let Err(store_error) =
                        store.record_sync_error(id, error.message.clone()).await
                    {
                        warn!(connection = %id, error = %store_error, "could not record the sync error");
                    }
                    metrics::counter!("switchboard_sync_errors_total", "connection" => id.to_string())
                        .increment(1);
                    return Err(error);
                }
            };
            let records = page.events.len() as u64;
            let receipt = store
                .append(AppendRequest {
                    connection: id.clone(),
                    vendor: connection.plugin.vendor.to_owned(),
                    request_id: None,
                    received_at: Timestamp::now(),
                    raw: None,
                    events: page.events,
                    sync: Some(SyncUpdate {
                        cursor: page.next_cursor.clone(),
                        records,
                        at: Timestamp::now(),
                    }),
                    quarantine: None,
                })
                .await;
            let receipt = match receipt {
                Ok(receipt) => receipt,
                Err(store_error) => {
                    let error = Error::from(store_error);
                    warn!(connection = %id, error = %error.message, "a pulled page could not be stored");
                    if let Err(again) = store.record_sync_error(id, error.message.clone()).await {
                        warn!(connection = %id, error = %again, "could not record the sync error");
                    }
                    return Err(error);
                }
            };
            progress.pages += 1;
            progress.records += records;
            progress.appended += receipt.appended.len() as u64;
            progress.cursor.clone_from(&page.next_cursor);
            progress.done = page.done;
            progress.records_per_second = rate(progress.records, started.elapsed());
            metrics::counter!("switchboard_sync_records_total", "connection" => id.to_string())
                .increment(records);
            metrics::counter!("switchboard_sync_pages_total", "connection" => id.to_string())
                .increment(1);
            let stop_requested = !on_page(&progress);
            let page_limit =
                options.max_pages != 0 && progress.pages >= u64::from(options.max_pages);
            if page.done || stop_requested || page_limit {
                break;
            }
            if cursor.as_deref() == Some(page.next_cursor.as_str()) && records == 0 {
                // The connector made no progress and did not say it is done: stop rather than
                // spin on the vendor's rate limit.
                warn!(connection = %id, "sync stopped: the connector returned the same cursor with no records");
                break;
            }
            cursor = Some(page.next_cursor);
        }
        metrics::gauge!("switchboard_sync_last_success_timestamp_seconds", "connection" => id.to_string())
            .set(Timestamp::now().as_millis() as f64 / 1000.0);
        info!(
            connection = %id,
            pages = progress.pages,
            records = progress.records,
            appended = progress.appended,
            done = progress.done,
            "sync finished"
        );
        Ok(progress)
    }
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        records as f64 / secs
    } else {
        0.0
    }
}

/// Starts the periodic sync of every connection that has a connector and an interval: a run
/// at start-up, then one every interval (a run still going, e.g. a `SyncConnection` call, makes
/// the tick skip). Vendor errors are logged and recorded in the sync state; the next tick tries
/// again from the saved cursor. The tasks end when `shutdown` turns true, after the page in
/// flight.
pub fn spawn_periodic(
    runner: &SyncRunner,
    store: &Arc<dyn Storage>,
    connections: impl IntoIterator<Item = Arc<Connection>>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for connection in connections {
        let Some(interval) = connection.sync_interval.filter(|i| !i.is_zero()) else {
            continue;
        };
        if connection.connector.is_none() {
            warn!(
                connection = %connection.config.id,
                reason = unsupported_reason(&connection).unwrap_or_default(),
                "sync_interval_secs is set but this connection cannot sync; no periodic sync"
            );
            continue;
        }
        let runner = runner.clone();
        let store = store.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let id = connection.config.id.clone();
            info!(connection = %id, interval_secs = interval.as_secs(), "periodic sync on");
            loop {
                match runner.claim(&connection) {
                    Ok(slot) => {
                        let stop = shutdown.clone();
                        let result = runner
                            .run(store.as_ref(), &connection, &slot, SyncOptions::default(), |_| {
                                !*stop.borrow()
                            })
                            .await;
                        if let Err(error) = result {
                            warn!(connection = %id, code = error.code.as_str(), error = %error.message, "periodic sync failed; retrying at the next interval");
                        }
                    }
                    Err(busy) => info!(connection = %id, reason = %busy.message, "periodic sync skipped"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
        }));
    }
    tasks
}

/// Starts sync runs on request and reports their progress.
#[derive(Clone)]
pub struct SyncService {
    storage: Arc<dyn Storage>,
    connections: Connections,
    runner: SyncRunner,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

/// A sync run started by [`SyncService::start`]: progress after every saved page (advisory: a
/// slow reader misses some, never the last), then the run's end. The last item is the final
/// progress (when it was not the last one sent) or the error that stopped the run.
pub type SyncReports = mpsc::Receiver<Result<SyncProgress, Error>>;

impl SyncService {
    /// The service; `runner` is shared with the periodic sync, and runs stop after their page
    /// in flight when `shutdown` turns true.
    pub fn new(
        storage: Arc<dyn Storage>,
        connections: Connections,
        runner: SyncRunner,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        SyncService {
            storage,
            connections,
            runner,
            shutdown,
        }
    }

    /// The runner (shared with the periodic sync).
    pub fn runner(&self) -> &SyncRunner {
        &self.runner
    }

    /// Starts a sync of `connection_id` in a task of its own. Refused at once when the
    /// connection is unknown (NOT_FOUND), cannot sync (FAILED_PRECONDITION), a sync of it is
    /// running (ALREADY_EXISTS), or `since` is in the future (INVALID_ARGUMENT). The run stops
    /// after its page in flight once the receiver is dropped.
    pub fn start(&self, connection_id: &str, options: SyncOptions) -> Result<SyncReports, Error> {
        let connection = super::connection(&self.connections, connection_id, "connection_id")?;
        if options.since.is_some_and(|s| s > Timestamp::now()) {
            return Err(Error::invalid(
                "since is in the future; give a time in the past",
            ));
        }
        let slot = self.runner.claim(&connection)?;
        let (tx, rx) = mpsc::channel::<Result<SyncProgress, Error>>(16);
        let storage = self.storage.clone();
        let runner = self.runner.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut last_sent = None;
            let page_tx = tx.clone();
            let result = runner
                .run(storage.as_ref(), &connection, &slot, options, |progress| {
                    if page_tx.try_send(Ok(progress.clone())).is_ok() {
                        last_sent = Some(progress.pages);
                    }
                    !page_tx.is_closed() && !*shutdown.borrow()
                })
                .await;
            drop(slot);
            let last = match result {
                Ok(progress) if last_sent == Some(progress.pages) && progress.pages > 0 => None,
                Ok(progress) => Some(Ok(progress)),
                Err(error) => Some(Err(error)),
            };
            if let Some(last) = last {
                let _ = tx.send(last).await;
            }
        });
        Ok(rx)
    }
}
