//! The sync runner against a scripted connector and a real store: every record lands once
//! however the sync is cut, the cursor is saved with each page, errors are recorded, and one
//! sync per connection runs at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ConversationPatch, Error, ErrorCode, EventKind,
    EventPayload, IncomingEvent, Plugin, SyncPage, Timestamp,
};
use switchboard_server::connections::Connection;
use switchboard_server::sync::{SyncOptions, SyncRunner, unsupported_reason};
use switchboard_store::{Storage, Store};

const PAGES: usize = 7;
const PER_PAGE: usize = 5;

static PLUGIN: Plugin = Plugin {
    vendor: "scripted",
    description: "a scripted vendor for tests",
    verification: "none",
    webhook: None,
    connector: None,
};

/// Pages 0..PAGES of PER_PAGE chats each; the cursor is the next page's number. It fails once
/// on the page named by `fail_on`.
#[derive(Debug, Default)]
struct Scripted {
    fail_on: Mutex<Option<usize>>,
    calls: Arc<AtomicUsize>,
}

fn chat(page: usize, i: usize) -> IncomingEvent {
    let id = format!("chat-{page}-{i}");
    IncomingEvent {
        dedup_key: format!("archive:{id}"),
        kind: EventKind::ChatEnded,
        vendor_event: "archive".to_owned(),
        occurred_at: Timestamp::from_secs(1_700_000_000 + (page * PER_PAGE + i) as i64)
            .expect("valid time"),
        payload: EventPayload::Conversation(ConversationPatch::new(id)),
    }
}

#[async_trait]
impl Connector for Scripted {
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        _since: Option<Timestamp>,
    ) -> Result<SyncPage, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let page: usize = cursor.map_or(Ok(0), str::parse).expect("numeric cursor");
        if page >= PAGES {
            return Ok(SyncPage {
                events: Vec::new(),
                next_cursor: page.to_string(),
                done: true,
            });
        }
        let mut fail_on = self.fail_on.lock().expect("lock");
        if *fail_on == Some(page) {
            *fail_on = None;
            return Err(Error::new(
                ErrorCode::Unavailable,
                "scripted: vendor answered 503 Service unavailable",
            ));
        }
        Ok(SyncPage {
            events: (0..PER_PAGE).map(|i| chat(page, i)).collect(),
            next_cursor: (page + 1).to_string(),
            done: page + 1 == PAGES,
        })
    }
}

fn connection(connector: Option<Scripted>) -> Connection {
    Connection {
        config: ConnectionConfig::new(ConnectionId::new("acme").expect("id"), "scripted"),
        plugin: &PLUGIN,
        webhook: None,
        connector: connector.map(|c| Box::new(c) as Box<dyn Connector>),
        connector_error: None,
        sync_interval: None,
    }
}

async fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data")).expect("store opens");
    (dir, store)
}

fn shared(store: &Store) -> Arc<dyn Storage> {
    Arc::new(store.clone())
}

fn all_conversation_ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .read_events(switchboard_core::Sequence(0), 10_000)
        .expect("read")
        .into_iter()
        .filter_map(|e| e.incoming.conversation_external_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn expected_ids() -> Vec<String> {
    let mut ids: Vec<String> = (0..PAGES)
        .flat_map(|p| (0..PER_PAGE).map(move |i| format!("chat-{p}-{i}")))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_full_sync_lands_every_record_once_and_saves_the_cursor() {
    let (_dir, store) = open_store().await;
    let connection = connection(Some(Scripted::default()));
    let runner = SyncRunner::default();
    let slot = runner
        .claim(&shared(&store), &connection)
        .await
        .expect("slot");
    let mut seen_pages = Vec::new();
    let progress = runner
        .run(&store, &connection, &slot, SyncOptions::default(), |p| {
            seen_pages.push(p.pages);
            true
        })
        .await
        .expect("sync succeeds");
    assert_eq!(progress.pages, PAGES as u64);
    assert_eq!(progress.records, (PAGES * PER_PAGE) as u64);
    assert_eq!(progress.appended, (PAGES * PER_PAGE) as u64);
    assert!(progress.done);
    assert_eq!(seen_pages, (1..=PAGES as u64).collect::<Vec<_>>());
    assert_eq!(all_conversation_ids(&store), expected_ids());
    let state = store
        .sync_state(&connection.config.id)
        .expect("state")
        .expect("saved");
    assert_eq!(state.cursor.as_deref(), Some(PAGES.to_string().as_str()));
    assert_eq!(state.records_pulled, (PAGES * PER_PAGE) as u64);
    assert!(state.last_success.is_some());
    assert_eq!(state.last_error, None);
}

#[tokio::test]
async fn a_sync_cut_after_some_pages_resumes_from_the_saved_cursor() {
    let (_dir, store) = open_store().await;
    let connection = connection(Some(Scripted::default()));
    let runner = SyncRunner::default();
    for max_pages in [2, 1, 3] {
        let slot = runner
            .claim(&shared(&store), &connection)
            .await
            .expect("slot");
        let options = SyncOptions {
            max_pages,
            ..SyncOptions::default()
        };
        let progress = runner
            .run(&store, &connection, &slot, options, |_| true)
            .await
            .expect("sync succeeds");
        assert_eq!(progress.pages, u64::from(max_pages));
    }
    // 2 + 1 + 3 = 6 pages so far; an on_page that says stop ends the next run after page 7.
    let slot = runner
        .claim(&shared(&store), &connection)
        .await
        .expect("slot");
    let progress = runner
        .run(&store, &connection, &slot, SyncOptions::default(), |_| {
            false
        })
        .await
        .expect("sync succeeds");
    assert!(progress.done);
    assert_eq!(all_conversation_ids(&store), expected_ids());
    assert_eq!(store.head().0, (PAGES * PER_PAGE) as u64);
}

#[tokio::test]
async fn a_vendor_error_is_recorded_and_a_rerun_finishes_without_duplicates() {
    let (_dir, store) = open_store().await;
    let script = Scripted::default();
    *script.fail_on.lock().expect("lock") = Some(3);
    let connection = connection(Some(script));
    let runner = SyncRunner::default();
    let slot = runner
        .claim(&shared(&store), &connection)
        .await
        .expect("slot");
    let error = runner
        .run(&store, &connection, &slot, SyncOptions::default(), |_| true)
        .await
        .expect_err("page 3 fails");
    assert_eq!(error.code, ErrorCode::Unavailable);
    let state = store
        .sync_state(&connection.config.id)
        .expect("state")
        .expect("saved");
    assert_eq!(state.cursor.as_deref(), Some("3"));
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{state:?}"
    );
    assert_eq!(store.head().0, (3 * PER_PAGE) as u64);
    drop(slot);

    let slot = runner
        .claim(&shared(&store), &connection)
        .await
        .expect("slot");
    let progress = runner
        .run(&store, &connection, &slot, SyncOptions::default(), |_| true)
        .await
        .expect("the rerun succeeds");
    assert_eq!(progress.pages, (PAGES - 3) as u64);
    assert_eq!(all_conversation_ids(&store), expected_ids());
    let state = store
        .sync_state(&connection.config.id)
        .expect("state")
        .expect("saved");
    assert_eq!(state.last_error, None, "a saved page clears the error");
}

#[tokio::test]
async fn from_scratch_pulls_again_and_appends_nothing_new() {
    let (_dir, store) = open_store().await;
    let connection = connection(Some(Scripted::default()));
    let runner = SyncRunner::default();
    let slot = runner
        .claim(&shared(&store), &connection)
        .await
        .expect("slot");
    runner
        .run(&store, &connection, &slot, SyncOptions::default(), |_| true)
        .await
        .expect("first sync");
    let options = SyncOptions {
        from_scratch: true,
        ..SyncOptions::default()
    };
    let again = runner
        .run(&store, &connection, &slot, options, |_| true)
        .await
        .expect("second sync");
    assert_eq!(again.records, (PAGES * PER_PAGE) as u64);
    assert_eq!(again.appended, 0, "every record was already stored");
    assert_eq!(store.head().0, (PAGES * PER_PAGE) as u64);
}

#[tokio::test]
async fn one_sync_per_connection_and_a_clear_reason_when_it_cannot_sync() {
    let (_dir, store) = open_store().await;
    let store = shared(&store);
    let connection_with = connection(Some(Scripted::default()));
    let runner = SyncRunner::default();
    let slot = runner.claim(&store, &connection_with).await.expect("slot");
    let busy = runner
        .claim(&store, &connection_with)
        .await
        .expect_err("second claim");
    assert_eq!(busy.code, ErrorCode::AlreadyExists);
    assert!(busy.message.contains("already running"), "{}", busy.message);
    drop(slot);
    runner
        .claim(&store, &connection_with)
        .await
        .expect("free again");

    let without = connection(None);
    let refused = runner
        .claim(&store, &without)
        .await
        .expect_err("no connector");
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert!(
        unsupported_reason(&without).is_some_and(
            |r| r.contains("has no connector, so this connection only receives webhooks")
        ),
        "{:?}",
        unsupported_reason(&without)
    );
    let mut unconfigured = connection(None);
    unconfigured.connector_error = Some("connection acme needs the secret `api_key`".to_owned());
    assert!(
        unsupported_reason(&unconfigured).is_some_and(|r| r.contains("api_key")),
        "{:?}",
        unsupported_reason(&unconfigured)
    );
}

#[tokio::test]
async fn the_periodic_sync_runs_at_start_and_on_every_interval_until_shutdown() {
    let (_dir, store) = open_store().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut with_interval = connection(Some(Scripted {
        calls: Arc::clone(&calls),
        ..Scripted::default()
    }));
    with_interval.sync_interval = Some(std::time::Duration::from_millis(20));
    let with_interval = Arc::new(with_interval);
    let without = Arc::new(connection(None));
    let runner = SyncRunner::default();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    let tasks = switchboard_server::sync::spawn_periodic(
        &runner,
        &storage,
        [with_interval.clone(), without],
        &shutdown,
    );
    assert_eq!(
        tasks.len(),
        1,
        "only the connection with a connector and an interval"
    );
    // The first run pulls everything; later ticks find nothing new and append nothing.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // PAGES calls for the first run, then one per tick.
        if calls.load(Ordering::SeqCst) >= PAGES + 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the periodic sync did not run again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(all_conversation_ids(&store), expected_ids());
    stop.send(true).expect("tasks listen");
    for task in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the task ends on shutdown")
            .expect("no panic");
    }
}

/// Two runners on one store stand for two replicas: a sync of a connection whose lease the
/// other holds is refused in words, a lease whose holder died (stopped renewing) runs out and
/// is taken over, and a released one is free at once.
#[tokio::test]
async fn a_sync_lease_keeps_other_replicas_out_until_it_is_released_or_runs_out() {
    let (_dir, store) = open_store().await;
    let store = shared(&store);
    let connection = connection(Some(Scripted::default()));
    let id = &connection.config.id;
    let a = SyncRunner::with_lease_ttl(std::time::Duration::from_millis(300));
    let b = SyncRunner::with_lease_ttl(std::time::Duration::from_millis(300));
    assert_ne!(a.holder(), b.holder());

    // A holds the lease and renews it (every 100 ms): B is kept out past several ttls.
    let slot = a.claim(&store, &connection).await.expect("a claims");
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let busy = b
            .claim(&store, &connection)
            .await
            .expect_err("b is refused");
        assert_eq!(busy.code, ErrorCode::AlreadyExists);
        assert!(
            busy.message.contains(&format!(
                "a sync of connection {id} is running on another replica"
            )),
            "{}",
            busy.message
        );
    }
    slot.release().await;
    let slot = b
        .claim(&store, &connection)
        .await
        .expect("released: b claims at once");
    slot.release().await;

    // A replica that died holding the lease: it was taken and never renewed.
    assert!(
        store
            .acquire_lease(
                &switchboard_server::sync::lease_name(id),
                "dead-replica",
                std::time::Duration::from_millis(400),
            )
            .await
            .expect("lease")
    );
    let busy = a.claim(&store, &connection).await.expect_err("still held");
    assert!(busy.message.contains("another replica"), "{}", busy.message);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let slot = a
        .claim(&store, &connection)
        .await
        .expect("run out: taken over");
    let progress = a
        .run(
            store.as_ref(),
            &connection,
            &slot,
            SyncOptions::default(),
            |_| true,
        )
        .await
        .expect("the sync runs");
    assert!(progress.done);
    slot.release().await;
}

/// Periodic syncs of replicas sharing a store run once per interval, not once per replica: a
/// tick is skipped when a page was saved less than an interval ago or when another replica
/// holds the connection's lease.
#[tokio::test]
async fn a_periodic_tick_is_skipped_after_a_recent_sync_or_while_another_replica_holds_the_lease() {
    let (_dir, store) = open_store().await;
    let storage = shared(&store);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut periodic = connection(Some(Scripted {
        calls: Arc::clone(&calls),
        ..Scripted::default()
    }));
    periodic.sync_interval = Some(std::time::Duration::from_secs(3600));
    let periodic = Arc::new(periodic);

    // Another replica holds the lease: the start-up tick of this one skips.
    let lease = switchboard_server::sync::lease_name(&periodic.config.id);
    assert!(
        storage
            .acquire_lease(&lease, "other-replica", std::time::Duration::from_secs(60))
            .await
            .expect("lease")
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let runner = SyncRunner::default();
    let tasks =
        switchboard_server::sync::spawn_periodic(&runner, &storage, [periodic.clone()], &shutdown);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "skipped: the lease is held"
    );
    stop.send(true).expect("tasks listen");
    for task in tasks {
        task.await.expect("no panic");
    }
    storage
        .release_lease(&lease, "other-replica")
        .await
        .expect("release");

    // The other replica synced a moment ago: the start-up tick of this one skips too.
    let other = SyncRunner::default();
    let slot = other.claim(&storage, &periodic).await.expect("slot");
    other
        .run(
            store_ref(&storage),
            &periodic,
            &slot,
            SyncOptions::default(),
            |_| true,
        )
        .await
        .expect("sync");
    slot.release().await;
    let after_other = calls.load(Ordering::SeqCst);
    assert_eq!(after_other, PAGES);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let tasks =
        switchboard_server::sync::spawn_periodic(&runner, &storage, [periodic.clone()], &shutdown);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_other,
        "skipped: synced less than an interval ago"
    );
    stop.send(true).expect("tasks listen");
    for task in tasks {
        task.await.expect("no panic");
    }

    // With a short interval the same state is old enough: the tick runs.
    let mut short = connection(Some(Scripted {
        calls: Arc::clone(&calls),
        ..Scripted::default()
    }));
    short.sync_interval = Some(std::time::Duration::from_millis(50));
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let tasks =
        switchboard_server::sync::spawn_periodic(&runner, &storage, [Arc::new(short)], &shutdown);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == after_other {
        assert!(tokio::time::Instant::now() < deadline, "the tick ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send(true).expect("tasks listen");
    for task in tasks {
        task.await.expect("no panic");
    }
}

fn store_ref(store: &Arc<dyn Storage>) -> &dyn Storage {
    store.as_ref()
}
