//! The Smartsupp connector against the fake Smartsupp API, landing pages in a real store the
//! way the server's sync runner does (events and cursor in one append).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ConversationId, ErrorCode, EventPayload, Sequence,
    Timestamp, WebhookRequest, WebhookSource,
};
use switchboard_plugin_smartsupp::{
    DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT, SEARCH_PATH, SKIPPED_EVENT, SmartsuppConnector,
    SmartsuppWebhook,
};
use switchboard_store::{AppendRequest, Store, SyncUpdate};
use switchboard_testkit::fake::smartsupp::FakeSmartsupp;
use switchboard_testkit::fake::{FakeServer, Fault};
use switchboard_vendor_client::ClientSettings;

const PAGE_SIZE: usize = 7;

fn connection_id() -> ConnectionId {
    ConnectionId::new("smartsupp").expect("valid id")
}

fn config(server: &FakeServer, token: &str, order: &str) -> ConnectionConfig {
    ConnectionConfig::new(connection_id(), "smartsupp")
        .with_secret("api_token", token)
        .with_setting("base_url", server.base_url())
        .with_setting("sync_order", order)
        .with_setting("page_size", PAGE_SIZE.to_string())
}

/// A connector with a short backoff, so retried 500s do not slow the tests.
fn connector(config: &ConnectionConfig) -> SmartsuppConnector {
    let mut settings =
        ClientSettings::from_connection(config, DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT)
            .expect("settings");
    settings.backoff_initial = Duration::from_millis(5);
    settings.backoff_max = Duration::from_millis(50);
    SmartsuppConnector::with_settings(config, settings).expect("connector builds")
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store opens");
        Harness { _dir: dir, store }
    }

    fn cursor(&self) -> Option<String> {
        self.store
            .sync_state(&connection_id())
            .expect("sync state")
            .and_then(|s| s.cursor)
    }

    /// Runs pages from the saved cursor until done or `max_pages`; returns (pages, done).
    async fn sync(
        &self,
        connector: &SmartsuppConnector,
        since: Option<Timestamp>,
        max_pages: Option<usize>,
    ) -> (usize, bool) {
        let mut pages = 0;
        loop {
            let cursor = self.cursor();
            let page = connector
                .sync_page(cursor.as_deref(), since)
                .await
                .expect("sync page");
            let records = page.events.len() as u64;
            self.store
                .append(AppendRequest {
                    connection: connection_id(),
                    vendor: "smartsupp".to_owned(),
                    request_id: None,
                    received_at: Timestamp::now(),
                    raw: None,
                    events: page.events,
                    sync: Some(SyncUpdate {
                        cursor: page.next_cursor,
                        records,
                        at: Timestamp::now(),
                    }),
                    quarantine: None,
                })
                .await
                .expect("append");
            pages += 1;
            if page.done {
                return (pages, true);
            }
            if max_pages.is_some_and(|max| pages >= max) {
                return (pages, false);
            }
        }
    }

    fn dedup_keys(&self) -> Vec<String> {
        self.store
            .read_events(Sequence::ZERO, 1_000_000)
            .expect("read events")
            .into_iter()
            .map(|e| e.incoming.dedup_key)
            .collect()
    }

    fn message_keys(&self, conversation: &str) -> BTreeSet<String> {
        let id = ConversationId::new(connection_id(), conversation);
        self.store
            .get_conversation(&id)
            .expect("read conversation")
            .map(|c| c.messages.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn ms(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map(Timestamp::as_millis)
        .unwrap_or_default()
}

/// The events a full pull of the fake gives: per conversation, opened, one per message, closed
/// when finished, and the snapshot.
fn expected_events(fake: &FakeSmartsupp) -> usize {
    fake.conversations()
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap_or_default();
            let closed = !c["finishedAt"].is_null() || c["status"] == "closed";
            2 + fake.messages(id).len() + usize::from(closed)
        })
        .sum()
}

/// Every message of every fake conversation is in the store, and nothing landed twice.
fn assert_landed_once(harness: &Harness, fake: &FakeSmartsupp) {
    assert_landed_once_plus(harness, fake, 0);
}

/// [`assert_landed_once`] when `snapshots` conversations were updated after a pull: each
/// earlier update left its own snapshot event.
fn assert_landed_once_plus(harness: &Harness, fake: &FakeSmartsupp, snapshots: usize) {
    let keys = harness.dedup_keys();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a dedup key landed twice");
    assert_eq!(
        keys.len(),
        expected_events(fake) + snapshots,
        "events in the store"
    );
    for id in fake.conversation_ids() {
        let expected: BTreeSet<String> = fake
            .messages(&id)
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(harness.message_keys(&id), expected, "messages of {id}");
    }
}

#[tokio::test]
async fn full_backfill_lands_every_record_once_in_both_orders() {
    let fake = FakeSmartsupp::new().with_seed(11).with_conversations(30);
    let server = fake.start().await.expect("fake starts");
    let mut stores = Vec::new();
    for order in ["oldest_first", "newest_first"] {
        let harness = Harness::new();
        let connector = connector(&config(&server, &fake.token(), order));
        let (pages, done) = harness.sync(&connector, None, None).await;
        assert!(done);
        assert_eq!(pages, 30_usize.div_ceil(PAGE_SIZE), "{order}");
        assert_landed_once(&harness, &fake);
        // A second run from scratch finds nothing new.
        let receipt_before = harness.store.event_count().expect("count");
        let fresh = connector;
        let mut cursor = None;
        loop {
            let page = fresh
                .sync_page(cursor.as_deref(), None)
                .await
                .expect("page");
            let receipt = harness
                .store
                .append(AppendRequest::new(
                    connection_id(),
                    "smartsupp",
                    page.events,
                ))
                .await
                .expect("append");
            assert!(receipt.appended.is_empty(), "{order}: a re-pull appended");
            if page.done {
                break;
            }
            cursor = Some(page.next_cursor);
        }
        assert_eq!(harness.store.event_count().expect("count"), receipt_before);
        stores.push(harness);
    }
    // Both orders build the same conversations.
    for id in fake.conversation_ids() {
        let cid = ConversationId::new(connection_id(), id.as_str());
        let a = stores[0].store.get_conversation(&cid).expect("read");
        let b = stores[1].store.get_conversation(&cid).expect("read");
        let (a, b) = (
            a.expect("oldest-first has it"),
            b.expect("newest-first has it"),
        );
        assert_eq!(
            (a.status, a.started_at, a.ended_at),
            (b.status, b.started_at, b.ended_at)
        );
        assert_eq!(a.messages, b.messages);
        assert_eq!(a.rating, b.rating);
    }
}

#[tokio::test]
async fn killed_mid_way_and_rerun_lands_every_record_once() {
    let fake = FakeSmartsupp::new().with_seed(12).with_conversations(30);
    let server = fake.start().await.expect("fake starts");
    for order in ["oldest_first", "newest_first"] {
        let harness = Harness::new();
        let config = config(&server, &fake.token(), order);
        let (pages, done) = harness.sync(&connector(&config), None, Some(2)).await;
        assert_eq!((pages, done), (2, false));
        // Killed after fetching the third page but before saving it.
        let cursor = harness.cursor();
        let lost = connector(&config)
            .sync_page(cursor.as_deref(), None)
            .await
            .expect("page");
        assert!(!lost.events.is_empty());
        drop(lost);
        server.log.clear();
        // A new process resumes from the saved cursor.
        let (_, done) = harness.sync(&connector(&config), None, None).await;
        assert!(done);
        assert_landed_once(&harness, &fake);
        let searches = server.log.to_path(SEARCH_PATH);
        assert!(
            !searches[0].json()["after"].is_null(),
            "{order}: the rerun starts from the saved position"
        );
        assert_eq!(searches.len(), 30_usize.div_ceil(PAGE_SIZE) - 2, "{order}");
    }
}

#[tokio::test]
async fn incremental_runs_pick_up_new_conversations_and_changes_to_unfinished_ones() {
    for order in ["oldest_first", "newest_first"] {
        let fake = FakeSmartsupp::new().with_seed(13).with_conversations(20);
        let server = fake.start().await.expect("fake starts");
        let harness = Harness::new();
        let config = config(&server, &fake.token(), order);
        let (_, done) = harness.sync(&connector(&config), None, None).await;
        assert!(done);
        let before = harness.store.event_count().expect("count");

        // The search sorts by createdAt only (SPEC), so a run reads again from the oldest
        // conversation that was still unfinished: a new message there and its close land.
        let conversations = fake.conversations();
        let unfinished: Vec<String> = conversations
            .iter()
            .filter(|c| c["finishedAt"].is_null())
            .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            unfinished.len() >= 2,
            "seed 13 has unfinished conversations"
        );
        let new_message = fake
            .add_visitor_message(&unfinished[0], "Ještě jedna otázka")
            .expect("known conversation");
        assert!(fake.close_conversation(&unfinished[1]));
        let added = fake.add_conversations(2);
        server.log.clear();
        let (_, done) = harness.sync(&connector(&config), None, None).await;
        assert!(done);
        assert!(harness.message_keys(&unfinished[0]).contains(&new_message));
        let closed = ConversationId::new(connection_id(), unfinished[1].as_str());
        let closed = harness
            .store
            .get_conversation(&closed)
            .expect("read")
            .expect("pulled");
        assert_eq!(
            closed.status,
            switchboard_core::ConversationStatus::Closed,
            "{order}"
        );
        assert!(closed.ended_at.is_some());
        assert_landed_once_plus(&harness, &fake, 2);
        // Conversations created before the oldest unfinished one were not read again.
        let oldest_unfinished = conversations
            .iter()
            .filter(|c| c["finishedAt"].is_null())
            .map(|c| ms(&c["createdAt"]))
            .min()
            .expect("one");
        let message_reads: BTreeSet<String> = server
            .log
            .all()
            .iter()
            .filter(|r| r.path.ends_with("/messages"))
            .map(|r| r.path.clone())
            .collect();
        for c in &conversations {
            let path = format!(
                "/v2/conversations/{}/messages",
                c["id"].as_str().unwrap_or("")
            );
            if ms(&c["createdAt"]) < oldest_unfinished {
                assert!(!message_reads.contains(&path), "{order}: {path} read again");
            }
        }
        for id in unfinished.iter().take(2).chain(&added) {
            let path = format!("/v2/conversations/{id}/messages");
            assert!(message_reads.contains(&path), "{order}: {path} not read");
        }
        assert!(harness.store.event_count().expect("count") > before);

        // Nothing changed: a run appends nothing.
        let count = harness.store.event_count().expect("count");
        harness.sync(&connector(&config), None, None).await;
        assert_eq!(
            harness.store.event_count().expect("count"),
            count,
            "{order}"
        );
    }
}

#[tokio::test]
async fn since_limits_a_first_sync() {
    let fake = FakeSmartsupp::new().with_seed(14).with_conversations(20);
    let server = fake.start().await.expect("fake starts");
    let mut created: Vec<i64> = fake
        .conversations()
        .iter()
        .map(|c| ms(&c["createdAt"]))
        .collect();
    created.sort();
    let since = Timestamp::from_millis(created[15]).expect("valid time");
    let wanted: BTreeSet<String> = fake
        .conversations()
        .iter()
        .filter(|c| ms(&c["createdAt"]) >= since.as_millis())
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let harness = Harness::new();
    let connector = connector(&config(&server, &fake.token(), "oldest_first"));
    harness.sync(&connector, Some(since), None).await;
    let landed: BTreeSet<String> = fake
        .conversation_ids()
        .into_iter()
        .filter(|id| !harness.message_keys(id).is_empty())
        .collect();
    assert_eq!(landed, wanted);
    let search = &server.log.to_path(SEARCH_PATH)[0];
    assert_eq!(
        search.json()["query"],
        json!([{"field": "createdAt", "value": [since.to_rfc3339(), null]}])
    );
}

#[tokio::test]
async fn long_conversations_keep_every_message_not_only_the_newest_page() {
    let fake = FakeSmartsupp::new().with_seed(15).with_conversations(2);
    let id = fake.conversation_ids()[0].clone();
    for i in 0..120 {
        fake.add_visitor_message(&id, &format!("zpráva {i}"));
    }
    let total = fake.messages(&id).len();
    assert!(total > 120);
    let server = fake.start().await.expect("fake starts");
    let harness = Harness::new();
    harness
        .sync(
            &connector(&config(&server, &fake.token(), "oldest_first")),
            None,
            None,
        )
        .await;
    assert_landed_once(&harness, &fake);
    assert_eq!(harness.message_keys(&id).len(), total);
    let reads = server
        .log
        .to_path(&format!("/v2/conversations/{id}/messages"));
    // SPEC's default page is 50: every page is read, with the numeric `after` of the last.
    assert_eq!(reads.len(), total.div_ceil(50));
    assert!(reads[0].query.contains("order=asc"));
    assert!(!reads[0].query.contains("after="));
    for read in &reads[1..] {
        let after = read
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("after="))
            .expect("an after");
        assert!(after.parse::<i64>().is_ok(), "after={after}");
    }
}

#[tokio::test]
async fn an_unreadable_conversation_is_skipped_with_its_reason() {
    let fake = FakeSmartsupp::new().with_seed(20).with_conversations(10);
    let ids = fake.conversation_ids();
    assert!(fake.corrupt_conversation(&ids[2]));
    let server = fake.start().await.expect("fake starts");
    let harness = Harness::new();
    let connector = connector(&config(&server, &fake.token(), "oldest_first"));
    let (_, done) = harness.sync(&connector, None, None).await;
    assert!(done, "one bad conversation does not fail the sync");
    assert_eq!(connector.skipped(), 1);
    for id in ids.iter().filter(|id| **id != ids[2]) {
        let expected: BTreeSet<String> = fake
            .messages(id)
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(harness.message_keys(id), expected, "messages of {id}");
    }
    assert!(harness.message_keys(&ids[2]).is_empty());
    let skipped: Vec<_> = harness
        .store
        .read_events(Sequence::ZERO, 1_000_000)
        .expect("read events")
        .into_iter()
        .filter(|e| e.incoming.vendor_event == SKIPPED_EVENT)
        .collect();
    assert_eq!(skipped.len(), 1);
    let EventPayload::Vendor { subject, data } = &skipped[0].incoming.payload else {
        panic!("a vendor event");
    };
    assert_eq!(subject.as_deref(), Some(ids[2].as_str()));
    assert!(
        data["reason"]
            .as_str()
            .is_some_and(|r| r.contains("createdAt")),
        "{data}"
    );
    assert_eq!(data["record"]["id"], ids[2].as_str());
}

#[tokio::test]
async fn a_bad_token_is_a_failed_precondition_without_the_token() {
    let fake = FakeSmartsupp::new().with_conversations(3);
    let server = fake.start().await.expect("fake starts");
    let token = "wrong-token-5531abc";
    let connector = connector(&config(&server, token, "oldest_first"));
    let error = connector.sync_page(None, None).await.expect_err("refused");
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(!error.message.contains(token), "{}", error.message);
    assert!(!error.message.contains(&fake.token()));
    assert_eq!(server.log.len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn survives_429_with_retry_after_and_intermittent_500s() {
    let fake = FakeSmartsupp::new().with_seed(16).with_conversations(15);
    let server = fake.start().await.expect("fake starts");
    server.faults.push(Fault::too_many_requests(1));
    server.faults.every_nth(4, Fault::internal_error());
    let harness = Harness::new();
    let started = std::time::Instant::now();
    let (_, done) = harness
        .sync(
            &connector(&config(&server, &fake.token(), "newest_first")),
            None,
            None,
        )
        .await;
    assert!(done);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was honoured"
    );
    assert_landed_once(&harness, &fake);
    let statuses: Vec<u16> = server.log.all().iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses[0], 429);
    assert!(statuses.contains(&500));
}

#[tokio::test]
async fn the_fake_rate_limit_is_waited_out() {
    let fake = FakeSmartsupp::new()
        .with_seed(17)
        .with_conversations(4)
        .with_rate_limit(3, Duration::from_secs(1));
    let server = fake.start().await.expect("fake starts");
    let harness = Harness::new();
    let (_, done) = harness
        .sync(
            &connector(&config(&server, &fake.token(), "oldest_first")),
            None,
            None,
        )
        .await;
    assert!(done);
    assert_landed_once(&harness, &fake);
    assert!(server.log.all().iter().any(|r| r.status.as_u16() == 429));
}

#[tokio::test]
async fn requests_carry_method_path_bearer_and_body() {
    let fake = FakeSmartsupp::new().with_seed(18).with_conversations(9);
    let server = fake.start().await.expect("fake starts");
    let harness = Harness::new();
    harness
        .sync(
            &connector(&config(&server, &fake.token(), "oldest_first")),
            None,
            None,
        )
        .await;
    let log = server.log.all();
    let bearer = format!("Bearer {}", fake.token());
    assert!(
        log.iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );
    let searches: Vec<_> = log.iter().filter(|r| r.path == SEARCH_PATH).collect();
    assert_eq!(searches.len(), 9_usize.div_ceil(PAGE_SIZE));
    for (i, search) in searches.iter().enumerate() {
        assert_eq!(search.method, "POST");
        assert!(
            search
                .header("content-type")
                .is_some_and(|v| v.starts_with("application/json"))
        );
        let body = search.json();
        assert_eq!(body["size"], PAGE_SIZE);
        assert_eq!(body["sort"], json!([{"createdAt": "asc"}]));
        assert_eq!(body["after"].is_null(), i == 0);
        assert!(body.get("query").is_none());
    }
    let reads: BTreeMap<String, &str> = log
        .iter()
        .filter(|r| r.path != SEARCH_PATH)
        .map(|r| (r.path.clone(), r.query.as_str()))
        .collect();
    assert_eq!(reads.len(), 9);
    for id in fake.conversation_ids() {
        let query = reads[&format!("/v2/conversations/{id}/messages")];
        assert_eq!(query, "size=50&order=asc");
    }
    assert!(
        log.iter()
            .filter(|r| r.path != SEARCH_PATH)
            .all(|r| r.method == "GET" && r.body.is_empty())
    );
}

#[tokio::test]
async fn pulled_messages_merge_with_the_same_event_callbacks() {
    let fake = FakeSmartsupp::new().with_seed(19).with_conversations(3);
    let server = fake.start().await.expect("fake starts");
    let harness = Harness::new();
    harness
        .sync(
            &connector(&config(&server, &fake.token(), "oldest_first")),
            None,
            None,
        )
        .await;
    let conversation = &fake.conversations()[0];
    let id = conversation["id"].as_str().expect("id");
    let messages = fake.messages(id);
    let contact = messages
        .iter()
        .find(|m| m["sub_type"] == "contact")
        .expect("a visitor message");
    let agent = messages.iter().find(|m| m["sub_type"] != "contact");
    let mut bodies = vec![json!({
        "type": "event_callback",
        "event": "conversation.contact_replied",
        "timestamp": contact["createdAt"],
        "account_id": 208,
        "data": {
            "conversation": {"id": id, "status": "open"},
            "message": contact,
            "contact": {"id": conversation["contactId"], "name": "Jana Nováková"},
        },
    })];
    bodies.push(json!({
        "type": "event_callback",
        "event": "conversation.opened",
        "timestamp": conversation["createdAt"],
        "data": {"conversation": {"id": id, "status": "open", "created_at": conversation["createdAt"]}},
    }));
    if let Some(agent) = agent {
        let event = if agent["sub_type"] == "bot" {
            "conversation.bot_replied"
        } else {
            "conversation.agent_replied"
        };
        bodies.push(json!({
            "type": "event_callback",
            "event": event,
            "timestamp": agent["createdAt"],
            "data": {"conversation_id": id, "message": agent},
        }));
    }
    let config = ConnectionConfig::new(connection_id(), "smartsupp");
    for body in &bodies {
        let bytes = body.to_string().into_bytes();
        let request = WebhookRequest {
            connection: &config,
            headers: &[],
            query: &[],
            body: &bytes,
            received_at: Timestamp::now(),
        };
        let events = SmartsuppWebhook.parse(&request).expect("parses");
        assert_eq!(events[0].conversation_external_id(), Some(id));
        let receipt = harness
            .store
            .append(AppendRequest::new(connection_id(), "smartsupp", events))
            .await
            .expect("append");
        assert!(
            receipt.appended.is_empty(),
            "the callback {} duplicated a pulled event",
            body["event"]
        );
    }
}
