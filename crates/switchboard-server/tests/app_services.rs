//! The application services driven directly, without HTTP or gRPC transport: ingest of a real
//! plugin's fixture, hub-native ticket updates run by the store, and idempotency claims of
//! vendor creates held in the store. Every test runs on a real sled store in a temp dir.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ErrorCode, EventKind, EventPayload, NewTicket,
    Plugin, Sequence, SyncPage, Ticket, TicketApi, TicketChange, TicketId, TicketPage, TicketQuery,
    TicketStatus, Timestamp,
};
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_server::Switchboard;
use switchboard_server::Connections;
use switchboard_server::app::ingest::{Outcome, Webhook};
use switchboard_server::app::tickets::{CreateRefused, CreateTicket};
use switchboard_server::app::{App, AppOptions};
use switchboard_server::connections::Connection;
use switchboard_server::grpc::SwitchboardService;
use switchboard_store::{Storage, Store};
use switchboard_testkit::fixtures::{self, FixtureRequest};
use tokio::sync::Notify;

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data")).expect("store opens");
    (dir, store)
}

fn app(store: &Store, connections: Connections) -> App {
    App::new(Arc::new(store.clone()), connections, AppOptions::default())
}

/// LiveChat's test connection (verification on, its fixture secret) and one of its fixtures.
fn livechat(name: &str) -> (Connections, FixtureRequest) {
    let registry = switchboard_plugins::registry().expect("registry");
    let (krate, connection) = switchboard_plugins::test_connection("livechat").expect("livechat");
    let connections = Connections::build(&[connection.config()], &registry, &BTreeMap::new())
        .expect("the test connection builds");
    let fixture = fixtures::load(krate.fixtures_dir())
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no livechat fixture {name}"));
    (connections, fixture)
}

fn webhook<'a>(fixture: &'a FixtureRequest, request_id: &'a str) -> Webhook<'a> {
    Webhook {
        headers: &fixture.headers,
        query: &fixture.query,
        body: &fixture.body,
        request_id: Some(request_id),
        received_at: Timestamp::now(),
    }
}

#[tokio::test]
async fn a_fixture_webhook_ingested_through_the_app_reads_back_from_the_storage() {
    let (_dir, store) = open_store();
    let (connections, fixture) = livechat("legacy_chat_started");
    let app = app(&store, connections);
    let connection = app
        .connections()
        .get("livechat")
        .expect("configured")
        .clone();

    let ingested = app
        .ingest
        .webhook(&connection, webhook(&fixture, "req-ingest-1"))
        .await
        .expect("ingested");
    assert_eq!(ingested.outcome, Outcome::Accepted);
    assert!(ingested.summary.appended > 0, "{ingested:?}");
    assert_eq!(ingested.summary.appended, ingested.events);

    let storage: &Arc<dyn Storage> = app.storage();
    assert_eq!(storage.head(), Sequence(ingested.summary.appended as u64));
    let events = storage
        .read_events(Sequence::ZERO, 100, usize::MAX)
        .await
        .expect("read");
    assert_eq!(events.len(), ingested.summary.appended);
    let sent: serde_json::Value = serde_json::from_slice(&fixture.body).expect("JSON fixture");
    for event in &events {
        assert_eq!(event.connection.as_str(), "livechat");
        assert_eq!(event.request_id.as_deref(), Some("req-ingest-1"));
    }
    let raws: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| e.raw.as_deref())
        .map(|raw| serde_json::from_str(raw).expect("JSON"))
        .collect();
    assert!(!raws.is_empty(), "the raw body is kept");
    assert!(
        raws.iter().all(|kept| *kept == sent),
        "the raw body is kept as sent"
    );
    let conversation = events
        .iter()
        .find_map(|e| e.conversation_id())
        .expect("a conversation event");
    let stored = storage
        .get_conversation(&conversation)
        .await
        .expect("read")
        .expect("the conversation is projected");
    assert_eq!(stored.id, conversation);

    // A redelivery appends nothing.
    let again = app
        .ingest
        .webhook(&connection, webhook(&fixture, "req-ingest-2"))
        .await
        .expect("redelivery");
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(again.summary.appended, 0);
    assert_eq!(storage.head(), Sequence(ingested.summary.appended as u64));
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_subscriber_of_the_app_gets_what_ingest_appends_then_ends_at_shutdown() {
    use futures::StreamExt as _;
    use switchboard_server::app::subscribe::{Filter, Refused, Start};

    let (_dir, store) = open_store();
    let (connections, fixture) = livechat("legacy_chat_started");
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let app = App::new(
        Arc::new(store.clone()),
        connections,
        AppOptions {
            vendors: vec!["livechat"],
            shutdown: Some(shutdown_rx),
            ..AppOptions::default()
        },
    );
    let connection = app
        .connections()
        .get("livechat")
        .expect("configured")
        .clone();
    let unknown = app
        .subscribe
        .open(
            Start::AtHead,
            Filter {
                vendors: vec!["nobody".to_owned()],
                ..Filter::default()
            },
        )
        .await
        .expect_err("unknown vendor");
    assert!(
        matches!(&unknown, Refused::Error(e) if e.code == ErrorCode::InvalidArgument),
        "{unknown:?}"
    );
    let mut subscription = app
        .subscribe
        .open(
            Start::AtHead,
            Filter {
                vendors: vec!["livechat".to_owned()],
                ..Filter::default()
            },
        )
        .await
        .expect("subscribed");
    let ingested = app
        .ingest
        .webhook(&connection, webhook(&fixture, "req-tail"))
        .await
        .expect("ingested");
    let mut got = Vec::new();
    while got.len() < ingested.summary.appended {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("the event arrives")
            .expect("the subscription goes on")
            .expect("an event");
        assert_eq!(event.vendor, "livechat");
        got.push(event.sequence);
    }
    let expected: Vec<u64> = (1..=ingested.summary.appended as u64).collect();
    assert_eq!(got, expected, "every event once, in order");

    let _ = shutdown.send(true);
    let end = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the subscription ends")
        .expect("with an error")
        .expect_err("shutting down");
    assert_eq!(end.code, ErrorCode::Unavailable, "{}", end.message);
    store.close().await.expect("close");
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_nothing_stored_and_unmappable_ones_are_quarantined() {
    let (_dir, store) = open_store();
    let (connections, fixture) = livechat("legacy_chat_started");
    let app = app(&store, connections);
    let connection = app
        .connections()
        .get("livechat")
        .expect("configured")
        .clone();

    let mut unsigned = fixture.clone();
    unsigned.remove_header("x-switchboard-token");
    let refused = app
        .ingest
        .webhook(&connection, webhook(&unsigned, "req-bad-1"))
        .await
        .expect_err("no credential");
    assert_eq!(
        refused.code,
        ErrorCode::Unauthenticated,
        "{}",
        refused.message
    );

    let deep = FixtureRequest {
        body: format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
        ..fixture.clone()
    };
    let refused = app
        .ingest
        .webhook(&connection, webhook(&deep, "req-bad-2"))
        .await
        .expect_err("too deep");
    assert_eq!(refused.code, ErrorCode::InvalidArgument);
    assert!(
        refused.message.contains("levels deep"),
        "{}",
        refused.message
    );

    let not_json = FixtureRequest {
        body: b"not json at all".to_vec(),
        ..fixture.clone()
    };
    let refused = app
        .ingest
        .webhook(&connection, webhook(&not_json, "req-bad-3"))
        .await
        .expect_err("malformed");
    assert_eq!(refused.code, ErrorCode::InvalidArgument);
    assert_eq!(app.storage().head(), Sequence::ZERO, "nothing was stored");
    let totals = app.storage().quarantine_totals().await.expect("totals");
    assert_eq!(totals.entries, 0);

    // Authentic JSON the plugin cannot map is held, not refused.
    let unmappable = FixtureRequest {
        body: br#"{"something":"no plugin knows"}"#.to_vec(),
        ..fixture.clone()
    };
    let held = app
        .ingest
        .webhook(&connection, webhook(&unmappable, "req-held"))
        .await
        .expect("held");
    let Outcome::Quarantined(id) = held.outcome else {
        panic!("expected quarantined, got {held:?}");
    };
    assert_eq!(
        app.storage().head(),
        Sequence::ZERO,
        "no event was appended"
    );
    let entry = app
        .storage()
        .get_quarantined(id)
        .await
        .expect("read")
        .expect("the entry is durable");
    assert_eq!(entry.request_id.as_deref(), Some("req-held"));
    assert!(
        entry
            .headers
            .iter()
            .all(|(name, _)| name != "x-switchboard-token"),
        "credentials are not kept: {:?}",
        entry.headers
    );
    store.close().await.expect("close");
}

static HUB: Plugin = Plugin {
    vendor: "hub",
    description: "a vendor without a ticket API",
    verification: "none",
    webhook: None,
    connector: None,
};

fn connection(
    id: &str,
    plugin: &'static Plugin,
    connector: Option<Box<dyn Connector>>,
) -> Connection {
    let config = ConnectionConfig::new(ConnectionId::new(id).expect("id"), plugin.vendor);
    Connection {
        config,
        plugin,
        webhook: None,
        connector,
        connector_error: None,
        sync_interval: None,
    }
}

fn create(connection: &str, key: Option<&str>) -> CreateTicket {
    CreateTicket {
        connection_id: connection.to_owned(),
        message: "first".to_owned(),
        requester_email: "a@example.com".to_owned(),
        subject: "race".to_owned(),
        idempotency_key: key.map(str::to_owned),
        ..CreateTicket::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hub_native_updates_all_land_without_a_lock_in_the_server() {
    const UPDATES: usize = 20;
    let (_dir, store) = open_store();
    let app = app(&store, Connections::new([connection("hub", &HUB, None)]));
    let (connection, ticket) = app
        .tickets
        .create(create("hub", None))
        .await
        .expect("create");
    let id = TicketId::new(connection, ticket.external_id.clone());

    let mut tasks = Vec::new();
    for i in 0..UPDATES {
        let app = app.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            app.tickets
                .update(
                    &id,
                    TicketChange {
                        message: Some(format!("reply {i}")),
                        ..TicketChange::default()
                    },
                )
                .await
        }));
    }
    for task in tasks {
        task.await.expect("no panic").expect("update");
    }
    let after = app.tickets.get(&id).await.expect("get");
    let mut replies: Vec<&str> = after
        .events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.starts_with("reply "))
        .collect();
    replies.sort_unstable();
    replies.dedup();
    assert_eq!(replies.len(), UPDATES, "every update's message is kept");
    // One ticket_created and one ticket_updated per update, in the log.
    let events = app
        .storage()
        .read_events(Sequence::ZERO, 100, usize::MAX)
        .await
        .expect("read");
    let updated = events
        .iter()
        .filter(|e| e.incoming.kind == EventKind::TicketUpdated)
        .count();
    assert_eq!((events.len(), updated), (UPDATES + 1, UPDATES));

    // Bad updates are refused and change nothing.
    let head = app.storage().head();
    let nothing = app
        .tickets
        .update(
            &id,
            TicketChange {
                message: Some("  ".to_owned()),
                ..TicketChange::default()
            },
        )
        .await
        .expect_err("changes nothing");
    assert_eq!(nothing.code, ErrorCode::InvalidArgument);
    let bad_email = app
        .tickets
        .update(
            &id,
            TicketChange {
                requester: Some(switchboard_core::Participant {
                    email: Some("nobody".to_owned()),
                    ..switchboard_core::Participant::default()
                }),
                ..TicketChange::default()
            },
        )
        .await
        .expect_err("not an e-mail");
    assert_eq!(bad_email.code, ErrorCode::InvalidArgument);
    let missing = app
        .tickets
        .update(
            &TicketId::new(id.connection.clone(), "hub-none"),
            TicketChange {
                status: Some(TicketStatus::Solved),
                ..TicketChange::default()
            },
        )
        .await
        .expect_err("no such ticket");
    assert_eq!(missing.code, ErrorCode::NotFound);
    assert_eq!(app.storage().head(), head, "refused updates append nothing");
    store.close().await.expect("close");
}

/// A vendor ticket API whose creates wait at a gate the test opens, and fail on demand.
#[derive(Debug, Default)]
struct GatedVendor {
    entered: Notify,
    gate: Notify,
    creates: AtomicUsize,
    /// The code the next create fails with, if it fails.
    fail_next: std::sync::Mutex<Option<ErrorCode>>,
}

#[derive(Debug)]
struct GatedConnector(Arc<GatedVendor>);

#[async_trait]
impl Connector for GatedConnector {
    async fn sync_page(
        &self,
        cursor: Option<&str>,
        _since: Option<Timestamp>,
    ) -> Result<SyncPage, switchboard_core::Error> {
        Ok(SyncPage {
            events: Vec::new(),
            next_cursor: cursor.unwrap_or_default().to_owned(),
            done: true,
        })
    }

    fn tickets(&self) -> Option<&dyn TicketApi> {
        Some(self)
    }
}

#[async_trait]
impl TicketApi for GatedConnector {
    async fn create(&self, ticket: &NewTicket) -> Result<Ticket, switchboard_core::Error> {
        let n = self.0.creates.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.entered.notify_one();
        let fail = self.0.fail_next.lock().expect("lock").take();
        if let Some(code) = fail {
            return Err(switchboard_core::Error::new(code, "the vendor refused"));
        }
        self.0.gate.notified().await;
        let now = Timestamp::now();
        Ok(Ticket {
            external_id: format!("vendor-{n}"),
            subject: ticket.subject.clone(),
            created_at: now,
            updated_at: now,
            ..Ticket::default()
        })
    }

    async fn get(&self, external_id: &str) -> Result<Ticket, switchboard_core::Error> {
        Err(switchboard_core::Error::not_found(format!(
            "no ticket {external_id}"
        )))
    }

    async fn update(
        &self,
        external_id: &str,
        _change: &TicketChange,
    ) -> Result<Ticket, switchboard_core::Error> {
        Err(switchboard_core::Error::not_found(format!(
            "no ticket {external_id}"
        )))
    }

    async fn list(&self, _query: &TicketQuery) -> Result<TicketPage, switchboard_core::Error> {
        Ok(TicketPage::default())
    }
}

static VENDOR: Plugin = Plugin {
    vendor: "gated",
    description: "a vendor holding tickets",
    verification: "none",
    webhook: None,
    connector: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_create_in_flight_holds_its_idempotency_key_in_the_store() {
    let (_dir, store) = open_store();
    let vendor = Arc::new(GatedVendor::default());
    let connections = Connections::new([connection(
        "gated",
        &VENDOR,
        Some(Box::new(GatedConnector(vendor.clone()))),
    )]);
    let app = app(&store, connections);
    let grpc = SwitchboardService::new(app.clone());

    let first = {
        let app = app.clone();
        tokio::spawn(async move { app.tickets.create(create("gated", Some("key-1"))).await })
    };
    tokio::time::timeout(Duration::from_secs(10), vendor.entered.notified())
        .await
        .expect("the first create reaches the vendor");

    // The service refuses a second create with the key while the first is in flight...
    let busy = app
        .tickets
        .create(create("gated", Some("key-1")))
        .await
        .expect_err("the first create holds the key");
    assert_eq!(
        busy,
        CreateRefused::InProgress {
            key: "key-1".to_owned()
        }
    );
    assert!(busy.to_string().contains("in progress"), "{busy}");
    // ...which the gRPC door reports as ABORTED.
    let status = grpc
        .manage_tickets(tonic::Request::new(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::Create(
                v1::CreateTicket {
                    connection_id: "gated".to_owned(),
                    message: "first".to_owned(),
                    requester_email: "a@example.com".to_owned(),
                    idempotency_key: Some("key-1".to_owned()),
                    ..v1::CreateTicket::default()
                },
            )),
        }))
        .await
        .expect_err("in progress");
    assert_eq!(status.code(), tonic::Code::Aborted, "{}", status.message());
    assert_eq!(
        vendor.creates.load(Ordering::SeqCst),
        1,
        "no second vendor call"
    );
    // The claim is the store's: a direct claim of the key is busy too.
    let connection = ConnectionId::new("gated").expect("id");
    assert_eq!(
        app.storage()
            .claim_idempotency_key(&connection, "key-1", Duration::from_secs(60))
            .await
            .expect("claim"),
        switchboard_store::Claim::Busy
    );

    vendor.gate.notify_one();
    let (_, created) = first.await.expect("no panic").expect("created");
    assert_eq!(created.origin, switchboard_core::TicketOrigin::Vendor);
    // A retry answers with the first create's ticket, without calling the vendor.
    let (_, retried) = app
        .tickets
        .create(create("gated", Some("key-1")))
        .await
        .expect("retry");
    assert_eq!(retried.external_id, created.external_id);
    assert_eq!(vendor.creates.load(Ordering::SeqCst), 1);
    // The key was released: the store lets a new claim of it through.
    assert_eq!(
        app.storage()
            .claim_idempotency_key(&connection, "key-1", Duration::from_secs(60))
            .await
            .expect("claim"),
        switchboard_store::Claim::Claimed
    );
    app.storage()
        .release_idempotency_key(&connection, "key-1")
        .await
        .expect("release");

    // A create the vendor refused releases its key too: the retry reaches the vendor again.
    *vendor.fail_next.lock().expect("lock") = Some(ErrorCode::Unavailable);
    let failed = app
        .tickets
        .create(create("gated", Some("key-2")))
        .await
        .expect_err("the vendor refused");
    assert!(
        matches!(&failed, CreateRefused::Error(e) if e.code == ErrorCode::Unavailable),
        "{failed:?}"
    );
    let retry = {
        let app = app.clone();
        tokio::spawn(async move { app.tickets.create(create("gated", Some("key-2"))).await })
    };
    tokio::time::timeout(Duration::from_secs(10), vendor.entered.notified())
        .await
        .expect("the retry reaches the vendor");
    vendor.gate.notify_one();
    let (_, ticket) = retry.await.expect("no panic").expect("created on retry");
    assert_eq!(vendor.creates.load(Ordering::SeqCst), 3);
    let stored = app
        .storage()
        .event_by_dedup_key(&connection, "ticket_create:key-2")
        .await
        .expect("read")
        .expect("the create is recorded under its key");
    assert!(
        matches!(&stored.incoming.payload, EventPayload::Ticket(t) if t.external_id == ticket.external_id)
    );

    // A conflict at the vendor is the vendor's ALREADY_EXISTS, not "in progress".
    *vendor.fail_next.lock().expect("lock") = Some(ErrorCode::AlreadyExists);
    let conflict = grpc
        .manage_tickets(tonic::Request::new(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::Create(
                v1::CreateTicket {
                    connection_id: "gated".to_owned(),
                    message: "again".to_owned(),
                    requester_email: "a@example.com".to_owned(),
                    idempotency_key: Some("key-3".to_owned()),
                    ..v1::CreateTicket::default()
                },
            )),
        }))
        .await
        .expect_err("the vendor refused");
    assert_eq!(
        conflict.code(),
        tonic::Code::AlreadyExists,
        "{}",
        conflict.message()
    );
    store.close().await.expect("close");
}

/// The finder service without a finder (an app built for a bench or a test): the store's own
/// listings work as before; what needs the finder is FAILED_PRECONDITION, saying why. With
/// one (over a memory index), a finder filter is answered by it and says how far it read.
#[tokio::test]
async fn finder_queries_need_the_finder_and_plain_listings_do_not() {
    let (_dir, store) = open_store();
    let (connections, fixture) = livechat("legacy_chat_started");
    let without = app(&store, connections.clone());
    let connection = without
        .connections()
        .get("livechat")
        .expect("configured")
        .clone();
    let ingested = without
        .ingest
        .webhook(&connection, webhook(&fixture, "req-find"))
        .await
        .expect("ingested");
    assert_eq!(ingested.outcome, Outcome::Accepted);
    let plain = switchboard_store::ConversationQuery::default();
    let found = without
        .find
        .list_conversations(&plain)
        .await
        .expect("plain");
    assert_eq!(found.page.conversations.len(), 1);
    assert_eq!(found.indexed_through, None);
    let by_email = switchboard_store::ConversationQuery {
        find: switchboard_store::FindFilters {
            emails: vec!["name@gmail.com".to_owned()],
            ..Default::default()
        },
        ..Default::default()
    };
    let refused = without
        .find
        .list_conversations(&by_email)
        .await
        .expect_err("needs the finder");
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert!(refused.message.contains("finder"), "{}", refused.message);
    let refused = without
        .find
        .get_contact("c1", 0)
        .await
        .expect_err("needs it");
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);

    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    let finder = switchboard_find::Finder::start(
        storage.clone(),
        Arc::new(switchboard_find::MemoryIndex::new()),
        switchboard_find::FinderOptions::default(),
    );
    assert!(
        finder
            .caught_up(store.head(), Duration::from_secs(10))
            .await
            .expect("caught up")
    );
    let with = App::new(
        storage,
        connections,
        AppOptions {
            finder: Some(finder.clone()),
            ..AppOptions::default()
        },
    );
    let found = with
        .find
        .list_conversations(&by_email)
        .await
        .expect("found");
    assert_eq!(found.page.conversations.len(), 1);
    assert_eq!(found.indexed_through, Some(store.head()));
    finder.shutdown().await;
}
