//! The PostgreSQL backend against a real database: the whole storage contract suite, and what
//! only a shared database has to keep (two replicas appending at once, the head across
//! replicas, dedup across replicas, concurrent ticket updates, concurrent migrations, a lost
//! connection).
//!
//! The database comes from `SWITCHBOARD_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/switchboard`). Unset: every test says it skipped
//! and passes, so `cargo test` stays green without PostgreSQL. Set but unreachable: every test
//! fails. Each test works in a schema of its own (created here, dropped when it passes), so
//! tests run in parallel.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::{
    ConnectionId, ConversationPatch, ErrorCode, EventKind, EventPayload, IncomingEvent, Message,
    Role, Sequence, Ticket, TicketChange, TicketId, Timestamp,
};
use switchboard_store::{AppendRequest, QuarantineLimits, Storage, StoreError, TicketUpdate};
use switchboard_store_contract::Backend;
use switchboard_store_postgres::{PgOptions, PgStore};

mod support;

use support::{Schemas, admin, database_url};

/// The contract suite's view of the backend: each fresh store in a schema of its own.
struct Pg {
    schemas: Schemas,
    /// Every store opened, by handle address, with its URL and options.
    stores: Mutex<Vec<(usize, String, PgOptions)>>,
}

fn address(store: &Arc<dyn Storage>) -> usize {
    Arc::as_ptr(store).cast::<()>() as usize
}

impl Pg {
    fn new(url: String) -> Self {
        Pg {
            schemas: Schemas::new(url),
            stores: Mutex::new(Vec::new()),
        }
    }

    async fn open(&self, url: String, options: PgOptions) -> Arc<dyn Storage> {
        let store: Arc<dyn Storage> = Arc::new(
            PgStore::open_with(&url, options.clone())
                .await
                .unwrap_or_else(|e| panic!("opening the PostgreSQL store: {e}")),
        );
        self.stores
            .lock()
            .unwrap()
            .push((address(&store), url, options));
        store
    }
}

#[async_trait::async_trait]
impl Backend for Pg {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn fresh(&self) -> Arc<dyn Storage> {
        let url = self.schemas.fresh().await;
        self.open(url, PgOptions::default()).await
    }

    async fn fresh_with_quarantine_limits(&self, limits: QuarantineLimits) -> Arc<dyn Storage> {
        let url = self.schemas.fresh().await;
        let options = PgOptions {
            quarantine: limits,
            ..PgOptions::default()
        };
        self.open(url, options).await
    }

    async fn reopen(&self, store: Arc<dyn Storage>) -> Arc<dyn Storage> {
        let key = address(&store);
        let (url, options) = {
            let stores = self.stores.lock().unwrap();
            let (_, url, options) = stores
                .iter()
                .find(|(a, _, _)| *a == key)
                .expect("reopen of a store this backend did not open");
            (url.clone(), options.clone())
        };
        assert!(
            store
                .close_within(Duration::from_secs(30))
                .await
                .expect("closing the store"),
            "the store did not close within 30 s"
        );
        drop(store);
        self.open(url, options).await
    }
}

/// Runs `test` on a multi-threaded runtime of its own, with a limit.
fn run<F: Future<Output = ()>>(name: &str, test: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(Duration::from_secs(180), test)
            .await
            .is_err()
        {
            panic!("{name} did not finish within 180 s");
        }
    });
}

/// One `#[test]` per contract case, each skipped (passing) without a database, and a test
/// that the list is the suite's whole list.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod contract {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let Some(url) = database_url(stringify!($case)) else {
                        return;
                    };
                    run(stringify!($case), async {
                        let backend = Pg::new(url);
                        switchboard_store_contract::cases::$case(&backend).await;
                        backend.schemas.drop_all().await;
                    });
                }
            )*

            #[test]
            fn every_case_of_the_suite_runs() {
                assert_eq!(
                    &[$(stringify!($case)),*][..],
                    switchboard_store_contract::CASE_NAMES,
                    "this file's contract! list and the suite's cases differ"
                );
            }
        }
    };
}

contract!(
    a_fresh_store_is_empty,
    append_then_read_events,
    unusual_text_round_trips,
    dedup_within_and_across_requests_and_restarts,
    concurrent_appends_are_gap_free,
    head_watch_announces_appends,
    read_events_honours_limit_and_max_bytes,
    everything_acknowledged_survives_reopen,
    close_stops_writes,
    event_by_dedup_key_finds_the_first_event,
    projections_merge_in_any_order,
    list_conversations_filters,
    list_conversations_orders_newest_first,
    list_conversations_pages,
    page_sizes_are_defaulted_and_capped,
    tickets_are_last_writer_wins,
    list_tickets_filters_and_pages,
    update_ticket_applies_and_refuses,
    concurrent_ticket_updates_lose_nothing,
    idempotency_claims,
    job_leases,
    agents_upsert_and_delete,
    sync_state_follows_pages_and_errors,
    quarantine_hold_attempt_release,
    quarantine_refuses_past_its_limits,
    bad_input_changes_nothing,
    erasure_erases_the_person_and_keeps_the_log,
    a_bad_erasure_plan_changes_nothing,
    erasure_among_concurrent_appends_is_serialized,
);

// ----- What only a shared database has to keep -----

fn connection() -> ConnectionId {
    ConnectionId::new("pg-test").unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs).unwrap()
}

/// A message event in conversation `chat`.
fn message(key: &str, chat: &str, secs: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.messages.push(Message {
        key: key.to_owned(),
        author_role: Role::Visitor,
        author_id: None,
        author_name: None,
        text: format!("text of {key}"),
        attachments: Vec::new(),
        sent_at: at(secs),
        automatic: false,
        data: None,
    });
    IncomingEvent {
        dedup_key: format!("message:{key}"),
        kind: EventKind::Message,
        vendor_event: "incoming_event".into(),
        occurred_at: at(secs),
        payload: EventPayload::Conversation(patch),
    }
}

fn request(events: Vec<IncomingEvent>) -> AppendRequest {
    AppendRequest::new(connection(), "livechat", events)
}

/// Two stores (two replicas) on one fresh schema; the first opened with `first`.
async fn replicas(schemas: &Schemas, first: PgOptions) -> (PgStore, PgStore) {
    let url = schemas.fresh().await;
    let a = PgStore::open_with(&url, first).await.expect("replica A");
    let b = PgStore::open(&url).await.expect("replica B");
    (a, b)
}

/// Waits until `store`'s head reaches `target`.
async fn head_reaches(store: &PgStore, target: u64) {
    let mut head = store.subscribe_head();
    tokio::time::timeout(Duration::from_secs(10), head.wait_for(|h| h.0 >= target))
        .await
        .unwrap_or_else(|_| panic!("the head stayed at {} below {target}", store.head().0))
        .expect("the head watch closed");
}

/// Reads the log from the start as a subscriber does (follow the head, read from the cursor),
/// checking every batch continues the cursor with no gap, until `last`.
async fn follow(store: PgStore, last: u64) -> Vec<switchboard_core::Event> {
    let mut head = store.subscribe_head();
    let mut cursor = Sequence::ZERO;
    let mut seen = Vec::new();
    while cursor.0 < last {
        let batch = store
            .read_events(cursor, 37, usize::MAX)
            .await
            .expect("read_events");
        for event in &batch {
            assert_eq!(
                event.sequence.0,
                cursor.0 + 1,
                "a reader saw {} right after {}",
                event.sequence.0,
                cursor.0
            );
            assert!(event.sequence <= store.head(), "read past the head");
            cursor = event.sequence;
        }
        seen.extend(batch);
        if cursor.0 < last && cursor >= store.head() {
            tokio::time::timeout(Duration::from_secs(10), head.changed())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the head stayed at {:?} for 10 s, the reader at {cursor:?} of {last}",
                        store.head()
                    )
                })
                .expect("the head watch closed");
        }
    }
    seen
}

#[test]
fn two_replicas_appending_at_once_get_one_gap_free_order_both_read_alike() {
    let Some(url) = database_url("two_replicas_appending") else {
        return;
    };
    run("two_replicas_appending", async {
        let schemas = Schemas::new(url);
        let (a, b) = replicas(&schemas, PgOptions::default()).await;
        const WRITERS: usize = 8;
        const REQUESTS: usize = 25;
        const TOTAL: u64 = (2 * WRITERS * REQUESTS * 2) as u64;
        let readers = [
            tokio::spawn(follow(a.clone(), TOTAL)),
            tokio::spawn(follow(b.clone(), TOTAL)),
        ];
        let mut writers = Vec::new();
        for (replica, store) in [("a", &a), ("b", &b)] {
            for writer in 0..WRITERS {
                let store = store.clone();
                writers.push(tokio::spawn(async move {
                    let mut sequences = Vec::new();
                    for i in 0..REQUESTS {
                        let chat = format!("chat-{}", i % 5);
                        let key = format!("{replica}-{writer}-{i}");
                        let events = vec![
                            message(&format!("{key}-1"), &chat, i as i64),
                            message(&format!("{key}-2"), &chat, i as i64 + 1),
                        ];
                        let receipt = store.append(request(events)).await.expect("append");
                        assert_eq!(receipt.appended.len(), 2);
                        assert_eq!(
                            receipt.appended[1].0,
                            receipt.appended[0].0 + 1,
                            "one request's events are consecutive"
                        );
                        sequences.extend(receipt.appended);
                    }
                    sequences
                }));
            }
        }
        let mut all = BTreeSet::new();
        for writer in writers {
            for sequence in writer.await.expect("a writer panicked") {
                assert!(
                    all.insert(sequence.0),
                    "sequence {} given twice",
                    sequence.0
                );
            }
        }
        assert_eq!(
            all,
            (1..=TOTAL).collect::<BTreeSet<u64>>(),
            "the sequences are 1..=N without a gap"
        );
        let [from_a, from_b] = readers;
        let from_a = from_a.await.expect("reader on A");
        let from_b = from_b.await.expect("reader on B");
        assert_eq!(from_a.len() as u64, TOTAL);
        assert_eq!(from_a, from_b, "both replicas read the same log");
        // Each conversation holds every message appended to it, from both replicas.
        let chat = switchboard_core::ConversationId::new(connection(), "chat-0");
        let conversation = b.get_conversation(&chat).await.unwrap().unwrap();
        assert_eq!(
            conversation.messages.len(),
            2 * WRITERS * (REQUESTS / 5) * 2
        );
        assert_eq!(conversation.event_count, conversation.messages.len() as u64);
        assert_eq!(a.conversation_count().await.unwrap(), 5);
        for store in [a, b] {
            store.close_within(Duration::from_secs(10)).await.unwrap();
        }
        schemas.drop_all().await;
    });
}

#[test]
fn a_subscriber_on_one_replica_sees_an_append_through_the_other_by_notify() {
    let Some(url) = database_url("notify_across_replicas") else {
        return;
    };
    run("notify_across_replicas", async {
        let schemas = Schemas::new(url);
        // A polls only every 10 minutes: whatever reaches it quickly came by NOTIFY.
        let slow_poll = PgOptions {
            poll_interval: Duration::from_secs(600),
            ..PgOptions::default()
        };
        let (a, b) = replicas(&schemas, slow_poll).await;
        let mut head = a.subscribe_head();
        let mut latencies = Vec::new();
        for i in 0..50u64 {
            let started = Instant::now();
            let receipt = b
                .append(request(vec![message(&format!("n{i}"), "chat", i as i64)]))
                .await
                .unwrap();
            let sequence = receipt.appended[0];
            tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= sequence))
                .await
                .unwrap_or_else(|_| panic!("replica A never heard of {sequence:?}"))
                .unwrap();
            latencies.push(started.elapsed());
            let events = a
                .read_events(Sequence(sequence.0 - 1), 10, usize::MAX)
                .await
                .unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].sequence, sequence);
            // The next subscriber tailing on A reads it from memory.
            assert_eq!(
                a.read_events_cached(Sequence(sequence.0 - 1), 10, usize::MAX),
                Some(events)
            );
        }
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let p99 = latencies[latencies.len() * 99 / 100];
        eprintln!("append on B to head on A: p50 {p50:?}, p99 {p99:?} (50 appends, this machine)");
        assert!(
            p99 < Duration::from_secs(2),
            "the head reached A slowly (p99 {p99:?}): NOTIFY did not carry it"
        );
        schemas.drop_all().await;
    });
}

#[test]
fn a_redelivery_to_the_other_replica_appends_nothing() {
    let Some(url) = database_url("dedup_across_replicas") else {
        return;
    };
    run("dedup_across_replicas", async {
        let schemas = Schemas::new(url);
        let (a, b) = replicas(&schemas, PgOptions::default()).await;
        // The same delivery to both replicas at once, ten times over.
        for i in 0..10 {
            let delivery = request(vec![
                message(&format!("d{i}"), "chat", i),
                message(&format!("e{i}"), "chat", i),
            ]);
            let (ra, rb) = tokio::join!(a.append(delivery.clone()), b.append(delivery));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(
                ra.appended.len() + rb.appended.len(),
                2,
                "one replica appended it, the other found duplicates: {ra:?} {rb:?}"
            );
            assert_eq!(ra.duplicates + rb.duplicates, 2);
        }
        head_reaches(&a, 20).await;
        head_reaches(&b, 20).await;
        let found_a = a
            .event_by_dedup_key(&connection(), "message:d3")
            .await
            .unwrap()
            .unwrap();
        let found_b = b
            .event_by_dedup_key(&connection(), "message:d3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found_a, found_b);
        // Later, through either replica: still nothing.
        let late = b
            .append(request(vec![message("d3", "chat", 3)]))
            .await
            .unwrap();
        assert!(late.appended.is_empty() && late.duplicates == 1);
        assert_eq!(
            a.read_events(Sequence::ZERO, 100, usize::MAX)
                .await
                .unwrap()
                .len(),
            20
        );
        schemas.drop_all().await;
    });
}

#[test]
fn ticket_updates_through_both_replicas_at_once_lose_nothing() {
    let Some(url) = database_url("ticket_updates_across_replicas") else {
        return;
    };
    run("ticket_updates_across_replicas", async {
        let schemas = Schemas::new(url);
        let (a, b) = replicas(&schemas, PgOptions::default()).await;
        let ticket = Ticket {
            external_id: "T-1".into(),
            subject: "help".into(),
            created_at: at(0),
            updated_at: at(0),
            ..Ticket::default()
        };
        let created = IncomingEvent {
            dedup_key: "ticket_created:T-1".into(),
            kind: EventKind::TicketCreated,
            vendor_event: "switchboard.ticket_created".into(),
            occurred_at: at(0),
            payload: EventPayload::Ticket(ticket),
        };
        a.append(request(vec![created])).await.unwrap();
        let id = TicketId::new(connection(), "T-1");
        const EACH: usize = 15;
        let mut tasks = Vec::new();
        for (name, store) in [("a", a.clone()), ("b", b.clone())] {
            for i in 0..EACH {
                let store = store.clone();
                let id = id.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .update_ticket(TicketUpdate {
                            id,
                            vendor: "livechat".into(),
                            change: TicketChange {
                                message: Some(format!("note {name}{i}")),
                                ..TicketChange::default()
                            },
                            at: at(10),
                        })
                        .await
                        .expect("update_ticket")
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stored = b.get_ticket(&id).await.unwrap().unwrap();
        let notes: BTreeSet<&str> = stored.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(notes.len(), 2 * EACH, "every note is kept: {notes:?}");
        head_reaches(&a, 1 + 2 * EACH as u64).await;
        schemas.drop_all().await;
    });
}

#[test]
fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some(url) = database_url("concurrent_migrations") else {
        return;
    };
    run("concurrent_migrations", async {
        let schemas = Schemas::new(url);
        let url = schemas.fresh().await;
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::migrate(&url).await })
            })
            .collect();
        let mut applied = Vec::new();
        for run in runs {
            applied.push(run.await.unwrap().expect("a concurrent migration failed"));
        }
        applied.sort();
        assert_eq!(
            applied,
            [0, 0, 0, 3],
            "one run applied the schema (every migration), the others found it"
        );
        // Stores opening at once on a migrated schema, and one more migrate: nothing to do.
        let (a, b) = tokio::join!(PgStore::open(&url), PgStore::open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(PgStore::migrate(&url).await.unwrap(), 0);
        a.append(request(vec![message("m", "chat", 1)]))
            .await
            .unwrap();
        head_reaches(&b, 1).await;
        // Stores opening at once on an empty schema migrate it once between them.
        let fresh = schemas.fresh().await;
        let opened: Vec<_> = (0..3)
            .map(|_| {
                let url = fresh.clone();
                tokio::spawn(async move { PgStore::open(&url).await })
            })
            .collect();
        for open in opened {
            open.await
                .unwrap()
                .expect("a store opening during a migration");
        }
        schemas.drop_all().await;
    });
}

#[test]
fn a_schema_migrated_by_a_newer_build_is_refused_in_words() {
    let Some(url) = database_url("newer_schema") else {
        return;
    };
    run("newer_schema", async {
        let schemas = Schemas::new(url.clone());
        let store_url = schemas.fresh().await;
        assert_eq!(PgStore::migrate(&store_url).await.unwrap(), 3);
        // As if a later release had applied its migration 4.
        let schema = store_url.rsplit("%3D").next().unwrap().to_owned();
        admin(&url)
            .await
            .batch_execute(&format!(
                "INSERT INTO {schema}.refinery_schema_history (version, name, applied_on, checksum) VALUES (4, 'later', '2030-01-01T00:00:00Z', '1')"
            ))
            .await
            .unwrap();
        let error = PgStore::open(&store_url).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("this build does not know") && message.contains("newer switchboard"),
            "{message}"
        );
        schemas.drop_all().await;
    });
}

#[test]
fn a_replica_dying_inside_its_transaction_blocks_nobody_for_long_and_leaves_no_gap() {
    let Some(url) = database_url("dying_writer") else {
        return;
    };
    run("dying_writer", async {
        let schemas = Schemas::new(url);
        let store_url = schemas.fresh().await;
        let store = PgStore::open(&store_url).await.unwrap();
        store
            .append(request(vec![message("first", "chat", 1)]))
            .await
            .unwrap();
        // Another replica in the middle of an append: the state row locked, the head moved,
        // not committed.
        let dying = admin(&store_url).await;
        dying
            .batch_execute(
                "BEGIN; SELECT head FROM sb_state WHERE id = 1 FOR UPDATE; UPDATE sb_state SET head = head + 1 WHERE id = 1",
            )
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append(request(vec![message("second", "chat", 2)]))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "an append went past a held state lock"
        );
        // The replica dies: its connection closes, PostgreSQL rolls its transaction back.
        drop(dying);
        let receipt = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the append still waits after the lock holder died")
            .unwrap()
            .unwrap();
        assert_eq!(
            receipt.appended,
            [Sequence(2)],
            "the dead transaction's number is reused: no gap"
        );
        let log = store
            .read_events(Sequence::ZERO, 10, usize::MAX)
            .await
            .unwrap();
        let sequences: Vec<u64> = log.iter().map(|e| e.sequence.0).collect();
        assert_eq!(sequences, [1, 2]);
        schemas.drop_all().await;
    });
}

#[test]
fn a_lost_connection_is_unavailable_then_reconnected_by_itself() {
    let Some(url) = database_url("lost_connection") else {
        return;
    };
    run("lost_connection", async {
        let schemas = Schemas::new(url.clone());
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        let store_url = format!("{}&application_name={name}", schemas.fresh().await);
        let store = PgStore::open(&store_url).await.unwrap();
        store
            .append(request(vec![message("before", "chat", 1)]))
            .await
            .unwrap();
        assert!(store.is_ready());
        // Every connection of the store is cut, as by a database restart.
        let admin = admin(&url).await;
        let cut = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert!(
            cut >= 2,
            "the listener and a pooled connection were cut ({cut})"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut errors = Vec::new();
        let receipt = loop {
            match store
                .append(request(vec![message("after", "chat", 2)]))
                .await
            {
                Ok(receipt) => break receipt,
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
                    errors.push(e.to_string());
                }
            }
            assert!(Instant::now() < deadline, "never reconnected: {errors:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            receipt.appended,
            [Sequence(2)],
            "errors on the way: {errors:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.is_ready() {
            assert!(
                Instant::now() < deadline,
                "not ready again: {:?}",
                store.failure()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        head_reaches(&store, 2).await;
        schemas.drop_all().await;
    });
}

/// A TCP relay to the database that can be taken down (its port closed, its connections cut)
/// and brought back on the same port: the database as the store sees it going away.
struct Relay {
    port: u16,
    target: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            port,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relayed = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(relayed);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the port and cuts every relayed connection.
    fn down(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding the relay's port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

#[test]
fn a_database_gone_makes_the_store_unready_and_unavailable_until_it_is_back() {
    let Some(url) = database_url("database_gone") else {
        return;
    };
    run("database_gone", async {
        let schemas = Schemas::new(url.clone());
        let store_url = schemas.fresh().await;
        let config: tokio_postgres::Config = url.parse().expect("the test URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("this test relays TCP; the test URL's host is {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .expect("the test database's address");
        let relay = Relay::start(target).await;
        let authority = format!("{host}:{port}");
        assert!(
            store_url.contains(&authority),
            "this test needs the URL to name host:port ({url})"
        );
        let relayed = store_url.replacen(&authority, &format!("127.0.0.1:{}", relay.port), 1);
        let options = PgOptions {
            acquire_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        };
        let store = PgStore::open_with(&relayed, options).await.unwrap();
        store
            .append(request(vec![message("up", "chat", 1)]))
            .await
            .unwrap();
        assert!(store.is_ready() && store.failure().is_none());

        relay.down();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.is_ready() {
            assert!(
                Instant::now() < deadline,
                "still ready with the database gone"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.failure().is_some());
        let started = Instant::now();
        let error = store
            .append(request(vec![message("down", "chat", 2)]))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the refusal took {:?}",
            started.elapsed()
        );
        let error = store
            .list_conversations(&Default::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");

        relay.up().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !store.is_ready() {
            assert!(
                Instant::now() < deadline,
                "not ready again: {:?}",
                store.failure()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let receipt = store
            .append(request(vec![message("back", "chat", 3)]))
            .await
            .expect("an append once the database is back");
        assert_eq!(
            receipt.appended,
            [Sequence(2)],
            "nothing of the refused append was kept"
        );
        relay.down();
        schemas.drop_all().await;
    });
}

#[test]
fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let Some(url) = database_url("sslmode") else {
        return;
    };
    run("sslmode", async {
        let schemas = Schemas::new(url.clone());
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        let base = format!("{}&application_name={name}", schemas.fresh().await);
        let admin = admin(&url).await;
        let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        let require = format!("{base}&sslmode=require");
        if ssl != "on" {
            // A server without TLS: require refuses to go on in plain text.
            let error = PgStore::open(&require).await.unwrap_err();
            assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
            eprintln!("the test server has ssl off: only the refusal of require was checked");
            schemas.drop_all().await;
            return;
        }
        let store = PgStore::open(&require).await.expect("sslmode=require");
        store
            .append(request(vec![message("tls", "chat", 1)]))
            .await
            .unwrap();
        let row = admin
            .query_one(
                "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        let (connections, all_tls): (i64, bool) = (row.get(0), row.get(1));
        assert!(
            connections >= 2,
            "the listener and a pooled connection ({connections})"
        );
        assert!(all_tls, "every connection of sslmode=require is TLS");
        // The test server's certificate is not one the system trusts for 127.0.0.1.
        let error = PgStore::open(&format!("{base}&sslmode=verify-full"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
        assert!(
            error.to_string().to_lowercase().contains("certificate"),
            "{error}"
        );
        store.close_within(Duration::from_secs(10)).await.unwrap();
        schemas.drop_all().await;
    });
}

/// Runs without a database: an unreachable server is UNAVAILABLE (never a panic), and a URL
/// that is not a PostgreSQL URL is INVALID_ARGUMENT.
#[test]
fn an_unreachable_database_is_unavailable_and_a_bad_url_invalid() {
    run("unreachable", async {
        // Port 1 on loopback: refused at once.
        let error = PgStore::open("postgres://sb:pw@127.0.0.1:1/switchboard?connect_timeout=2")
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(!error.to_string().contains("pw"), "{error}");
        let error = PgStore::migrate("postgres://sb@127.0.0.1:1/switchboard?connect_timeout=2")
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
        for bad in [
            "mysql://sb@127.0.0.1/switchboard",
            "postgres://sb@127.0.0.1/switchboard?sslmode=sometimes",
        ] {
            let error = PgStore::open(bad).await.unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{bad}: {error}");
        }
    });
}
