//! Pull sync: pages a connection's vendor API into the store through its
//! [`Connector`](switchboard_core::Connector).
//!
//! Each page's events and the cursor after it are appended in one store transaction, so a sync
//! stopped at any point (cancelled, killed, vendor down) resumes from the last saved page and
//! lands every record exactly once: records pulled twice, or already received by webhook, carry
//! the same dedup keys and merge. One sync per connection runs at a time, across replicas too:
//! a run holds the store's lease `sync/<connection>` (renewed while it runs, released after; a
//! replica that dies stops renewing and its lease runs out).
//!
//! [`SyncRunner`] runs syncs; [`SyncService`] starts a run on request (`SyncConnection`) and
//! reports its progress page by page; [`spawn_periodic`] runs them on each connection's
//! interval.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The lease a replica holds while it syncs a connection: `sync/<connection>`.
pub fn lease_name(connection: &ConnectionId) -> String {
    format!("sync/{connection}")
}

/// How long a sync lease lasts without renewal unless [`SyncRunner::with_lease_ttl`] says.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Runs syncs, at most one per connection at a time: in this process (a slot), and across
/// replicas sharing the store (the store's lease `sync/<connection>`, held by this runner's
/// holder id and renewed while the run goes on; a replica that dies stops renewing, and its
/// lease runs out after the ttl).
#[derive(Clone, Debug)]
pub struct SyncRunner {
    running: Arc<Mutex<HashSet<ConnectionId>>>,
    holder: Arc<str>,
    lease_ttl: Duration,
}

impl Default for SyncRunner {
    /// A runner with a fresh holder id and [`DEFAULT_LEASE_TTL`].
    fn default() -> Self {
        SyncRunner::with_lease_ttl(DEFAULT_LEASE_TTL)
    }
}

/// Holds a connection's sync slot and its lease; frees both when dropped (the lease in a task:
/// prefer [`SyncSlot::release`]).
#[derive(Debug)]
pub struct SyncSlot {
    connection: ConnectionId,
    running: Arc<Mutex<HashSet<ConnectionId>>>,
    lease: Option<HeldLease>,
}

/// A held lease: the task renewing it, and whether a renewal found it taken by another holder.
struct HeldLease {
    store: Arc<dyn Storage>,
    name: String,
    holder: Arc<str>,
    renewer: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("lost", &self.lost.load(Ordering::SeqCst))
            .finish()
    }
}

impl HeldLease {
    /// Stops renewing and gives the lease up (a failure only logs: the lease runs out anyway).
    async fn release(self) {
        self.renewer.abort();
        if let Err(error) = self.store.release_lease(&self.name, &self.holder).await {
            warn!(lease = %self.name, error = %error, "could not release the sync lease; it runs out by itself");
        }
    }
}

impl SyncSlot {
    /// Whether another replica took the lease while this run held the slot (a renewal came
    /// too late, after the lease ran out): the run stops after its page.
    pub fn lost_lease(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| lease.lost.load(Ordering::SeqCst))
    }

    /// Frees the slot and gives the lease up now.
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.connection);
        if let Some(lease) = self.lease.take() {
            lease.renewer.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(lease.release());
            }
        }
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
    /// A runner with a fresh holder id (this process's: host, pid and a random part) whose
    /// leases last `ttl` without renewal (renewed every third of it).
    pub fn with_lease_ttl(ttl: Duration) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".to_owned());
        let holder = format!("{host}/{}/{}", std::process::id(), uuid::Uuid::new_v4());
        SyncRunner {
            running: Arc::default(),
            holder: holder.into(),
            lease_ttl: ttl.max(Duration::from_millis(30)),
        }
    }

    /// This runner's holder id in the store's leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long its leases last without renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Claims the connection's sync slot in this process, then its lease in the store:
    /// `FailedPrecondition` if it cannot sync, an `AlreadyExists`-coded error if a sync of it
    /// is running here or on another replica, the store's error if the lease cannot be asked
    /// for (UNAVAILABLE while the database is down). The lease is renewed until the slot is
    /// released or dropped.
    pub async fn claim(
        &self,
        store: &Arc<dyn Storage>,
        connection: &Connection,
    ) -> Result<SyncSlot, Error> {
        if let Some(reason) = unsupported_reason(connection) {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!("connection {} cannot sync: {reason}", connection.config.id),
            ));
        }
        let id = &connection.config.id;
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if !running.insert(id.clone()) {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("a sync of connection {id} is already running; wait for it to finish"),
                ));
            }
        }
        let mut slot = SyncSlot {
            connection: id.clone(),
            running: Arc::clone(&self.running),
            lease: None,
        };
        let name = lease_name(id);
        let taken = store
            .acquire_lease(&name, &self.holder, self.lease_ttl)
            .await
            .map_err(|e| {
                let error = Error::from(e);
                Error::new(
                    error.code,
                    format!(
                        "cannot take the sync lease of connection {id}: {}",
                        error.message
                    ),
                )
            })?;
        if !taken {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!(
                    "a sync of connection {id} is running on another replica; wait for it to finish"
                ),
            ));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            store.clone(),
            name.clone(),
            self.holder.clone(),
            self.lease_ttl,
            lost.clone(),
        ));
        slot.lease = Some(HeldLease {
            store: store.clone(),
            name,
            holder: self.holder.clone(),
            renewer,
            lost,
        });
        Ok(slot)
    }

    /// Runs a sync in the claimed slot, calling `on_page` after every saved page; it stops
    /// early (after the page just saved) when `on_page` returns false. Vendor errors are
    /// recorded in the connection's sync state and returned.
    pub async fn run(
        &self,
        store: &dyn Storage,
        connection: &Connection,
        slot: &SyncSlot,
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
            if slot.lost_lease() {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "the sync of connection {id} stopped after page {}: another replica took its lease (this one could not renew it in time); the next sync resumes from the saved cursor",
                        progress.pages
                    ),
                ));
            }
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

/// Renews the lease every third of its ttl until aborted; marks it `lost` when a renewal finds
/// another holder (this replica was cut off past the ttl). A renewal the store cannot answer
/// (the database down) is retried at the next turn: the run itself fails on the store then.
async fn renew(
    store: Arc<dyn Storage>,
    name: String,
    holder: Arc<str>,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        match store.acquire_lease(&name, &holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(lease = %name, "the sync lease was taken by another replica; this run stops after its page");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(error) => warn!(lease = %name, error = %error, "could not renew the sync lease"),
        }
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

/// One tick of a connection's periodic sync: skipped when a page was saved less than an
/// interval ago (by this replica or another one sharing the store) or when a sync of it runs
/// (here, or on another replica: its lease is held), else a run from the saved cursor.
async fn periodic_run(
    runner: &SyncRunner,
    store: &Arc<dyn Storage>,
    connection: &Connection,
    interval: Duration,
    shutdown: &watch::Receiver<bool>,
) {
    let id = &connection.config.id;
    match store.sync_state(id).await {
        Ok(state) => {
            if let Some(last) = state.and_then(|s| s.last_success) {
                let since = Timestamp::now()
                    .as_millis()
                    .saturating_sub(last.as_millis());
                // Within an interval either way: another replica's clock may run a little ahead.
                if u128::from(since.unsigned_abs()) < interval.as_millis() {
                    info!(connection = %id, last_success_ms_ago = since, "periodic sync skipped: synced less than an interval ago");
                    return;
                }
            }
        }
        Err(error) => {
            warn!(connection = %id, error = %error, "periodic sync skipped: the sync state cannot be read; retrying at the next interval");
            return;
        }
    }
    let slot = match runner.claim(store, connection).await {
        Ok(slot) => slot,
        Err(busy) => {
            info!(connection = %id, reason = %busy.message, "periodic sync skipped");
            return;
        }
    };
    let stop = shutdown.clone();
    let result = runner
        .run(
            store.as_ref(),
            connection,
            &slot,
            SyncOptions::default(),
            |_| !*stop.borrow(),
        )
        .await;
    slot.release().await;
    if let Err(error) = result {
        warn!(connection = %id, code = error.code.as_str(), error = %error.message, "periodic sync failed; retrying at the next interval");
    }
}

/// Starts the periodic sync of every connection that has a connector and an interval: a run
/// at start-up, then one every interval. A tick is skipped when a sync of the connection is
/// running (a `SyncConnection` call, or a sync on another replica: its lease is held) or when
/// a page was saved less than an interval ago, so replicas sharing a store do not each sync
/// every interval. Vendor errors are logged and recorded in the sync state; the next tick tries
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
                periodic_run(&runner, &store, &connection, interval, &shutdown).await;
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
    /// running here or on another replica (ALREADY_EXISTS), the store cannot be reached to take
    /// its lease (UNAVAILABLE), or `since` is in the future (INVALID_ARGUMENT). The run stops
    /// after its page in flight once the receiver is dropped.
    pub async fn start(
        &self,
        connection_id: &str,
        options: SyncOptions,
    ) -> Result<SyncReports, Error> {
        let connection = super::connection(&self.connections, connection_id, "connection_id")?;
        if options.since.is_some_and(|s| s > Timestamp::now()) {
            return Err(Error::invalid(
                "since is in the future; give a time in the past",
            ));
        }
        let slot = self.runner.claim(&self.storage, &connection).await?;
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
            slot.release().await;
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
