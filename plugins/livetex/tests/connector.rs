//! The LiveTex connector against the fake LiveTex Web API (which follows LiveTex's documents),
//! landing pages in a real store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ErrorCode, EventPayload, IncomingEvent, RateLimit,
    Registry, Sequence, Timestamp,
};
use switchboard_plugin_livetex::{LiveTexConnector, chat_to_events, lead_to_events, parse_webhook};
use switchboard_store::{AppendRequest, Store, SyncUpdate};
use switchboard_testkit::fake::livetex::{FakeLiveTex, Table};
use switchboard_testkit::fake::{FakeServer, Fault, Recorded};

const CONNECTION: &str = "lt-sync";

fn connection_id() -> ConnectionId {
    ConnectionId::new(CONNECTION).unwrap()
}

fn config(server: &FakeServer, password: &str) -> ConnectionConfig {
    let mut config = ConnectionConfig::new(connection_id(), "livetex")
        .with_setting("login", FakeLiveTex::LOGIN)
        .with_setting("base_url", server.base_url())
        .with_secret("password", password);
    config.rate_limit = Some(RateLimit {
        calls: 1000,
        per_seconds: 1,
    });
    config
}

fn connector(server: &FakeServer) -> LiveTexConnector {
    LiveTexConnector::new(&config(server, FakeLiveTex::PASSWORD)).unwrap()
}

fn map_row(table: Table, row: &Value) -> Vec<IncomingEvent> {
    match table {
        Table::Chats => chat_to_events(row),
        Table::Leads => lead_to_events(row),
    }
    .unwrap_or_else(|e| panic!("{table:?} row {row}: {e}"))
}

/// The dedup keys every record of the fake maps to.
fn expected_keys(fake: &FakeLiveTex) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for table in [Table::Chats, Table::Leads] {
        for row in fake.rows(table) {
            keys.extend(map_row(table, &row).into_iter().map(|e| e.dedup_key));
        }
    }
    keys
}

/// Every event's dedup key in the store, with how often it appears.
fn stored_keys(store: &Store) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for event in store.read_events(Sequence::ZERO, 100_000).unwrap() {
        *keys.entry(event.incoming.dedup_key).or_insert(0) += 1;
    }
    keys
}

fn assert_every_record_once(store: &Store, fake: &FakeLiveTex) {
    let stored = stored_keys(store);
    let expected = expected_keys(fake);
    assert!(
        stored.values().all(|n| *n == 1),
        "an event landed twice: {stored:?}"
    );
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the store holds other events than the fake's records"
    );
}

/// What a sync run did.
#[derive(Debug, Default)]
struct Run {
    pages: usize,
    appended: usize,
    duplicates: usize,
    done: bool,
}

/// Runs the sync like the server does: each page appended with its cursor in one request;
/// stops when the connector is done or after `max_pages`.
async fn sync(
    connector: &LiveTexConnector,
    store: &Store,
    since: Option<Timestamp>,
    max_pages: usize,
) -> Run {
    let mut run = Run::default();
    while run.pages < max_pages {
        let cursor = store
            .sync_state(&connection_id())
            .unwrap()
            .and_then(|s| s.cursor);
        let page = connector
            .sync_page(cursor.as_deref(), since)
            .await
            .unwrap_or_else(|e| panic!("page {}: {e}", run.pages + 1));
        let mut request = AppendRequest::new(connection_id(), "livetex", page.events);
        request.sync = Some(SyncUpdate {
            cursor: page.next_cursor,
            records: u64::try_from(request.events.len()).unwrap(),
            at: Timestamp::now(),
        });
        let receipt = store.append(request).await.unwrap();
        run.pages += 1;
        run.appended += receipt.appended.len();
        run.duplicates += receipt.duplicates;
        if page.done {
            run.done = true;
            break;
        }
    }
    run
}

fn query_of(recorded: &Recorded) -> BTreeMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
    recorded
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn statuses(server: &FakeServer) -> Vec<u16> {
    server.log.all().iter().map(|r| r.status.as_u16()).collect()
}

/// 120 chats (three pages of 50: 50 + 50 + 20) and 7 leads (one page).
fn fake_with_data() -> FakeLiveTex {
    FakeLiveTex::new().with_chats(120).with_leads(7)
}

/// `created_at` of a fake row as an instant (the fake writes Moscow time without an offset).
fn created(row: &Value) -> Timestamp {
    let text = row["created_at"].as_str().unwrap().replacen('T', " ", 1);
    let naive = Timestamp::parse_sql_utc(&text).unwrap();
    Timestamp::from_millis(naive.as_millis() - 3 * 3_600_000).unwrap()
}

#[tokio::test]
async fn a_full_backfill_lands_every_record_once_in_pages_of_50() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 127);
    assert_eq!(run.duplicates, 0);
    assert_every_record_once(&store, &fake);
    // chats: 50 + 50 + 20; leads: 7 (the last chat page moves on to the leads in one call
    // only when it is empty).
    assert_eq!(run.pages, 4);
    // One login for the whole run, documented shapes only.
    assert_eq!(fake.logins(), 1);
    assert!(statuses(&server).iter().all(|s| *s == 200));
    let token = server.log.to_path("/oauth2/token");
    let form = String::from_utf8_lossy(&token[0].body).into_owned();
    assert!(
        form.starts_with("grant_type=password&username=api%40example.ru&password="),
        "{form}"
    );
    let chats = server.log.to_path("/chats/list");
    let offsets: Vec<String> = chats
        .iter()
        .map(|r| query_of(r)["offset"].clone())
        .collect();
    assert_eq!(
        chats[0].header("authorization"),
        Some("Bearer lt-at-000001")
    );
    assert_eq!(
        query_of(&chats[0]).get("q"),
        None,
        "the first page asks from the beginning"
    );
    assert_eq!(query_of(&chats[0])["sort"], "created_at:a");
    // Page 2 asks from the last second of page 1 and skips what it already read there.
    let q = &query_of(&chats[1])["q"];
    assert!(q.starts_with("created_at>=2024-03-01 "), "{q}");
    assert_ne!(offsets[1], "0");

    // A second run right away re-reads only each list's last second and appends nothing.
    server.log.clear();
    let again = sync(&connector, &store, None, 100).await;
    assert!(again.done);
    assert_eq!(again.appended, 0);
    for table in [Table::Chats, Table::Leads] {
        let last = created(fake.rows(table).last().unwrap());
        let requests = server.log.to_path(table.path());
        assert_eq!(requests.len(), 1, "{table:?}");
        let query = query_of(&requests[0]);
        let from = query["q"].strip_prefix("created_at>=").unwrap().to_owned();
        let naive = Timestamp::parse_sql_utc(&from).unwrap();
        assert_eq!(
            naive.as_millis() - 3 * 3_600_000,
            last.as_millis(),
            "{table:?}: Moscow time"
        );
        assert_eq!(query["offset"], "0");
    }
}

#[tokio::test]
async fn a_sync_killed_between_pages_resumes_without_loss() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let first = connector(&server);
        let run = sync(&first, &store, None, 1).await;
        assert!(!run.done);
        assert_eq!(run.appended, 50);
        // The process dies after pulling the second page but before storing it.
        let cursor = store.sync_state(&connection_id()).unwrap().unwrap().cursor;
        let lost = first.sync_page(cursor.as_deref(), None).await.unwrap();
        assert_eq!(lost.events.len(), 50);
        store.close().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let second = connector(&server);
    let run = sync(&second, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 127 - 50);
    assert_every_record_once(&store, &fake);
    assert_eq!(fake.logins(), 2, "the new process logged in again");
}

#[tokio::test]
async fn an_expired_token_means_a_new_login_and_the_call_retried() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 1).await;
    fake.expire_tokens();
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
    assert_eq!(fake.logins(), 2);
    assert_eq!(statuses(&server).iter().filter(|s| **s == 401).count(), 1);
}

#[tokio::test]
async fn a_token_near_its_expiry_is_renewed_before_use() {
    let fake = fake_with_data().with_token_lifetime(Duration::from_secs(2));
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 1).await;
    // expires_in 2 s: renewed 0.4 s ahead, so after 1.7 s the next call logs in first.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    sync(&connector, &store, None, 1).await;
    assert_eq!(fake.logins(), 2);
    assert!(!statuses(&server).contains(&401), "{:?}", statuses(&server));
}

#[tokio::test]
async fn a_wrong_password_is_a_failed_precondition_that_does_not_leak_it() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let password = "s3cr3t-wr0ng-pa55";
    let connector = LiveTexConnector::new(&config(&server, password)).unwrap();

    let error = connector.sync_page(None, None).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(error.message.contains(CONNECTION), "{}", error.message);
    assert!(error.message.contains("password"), "{}", error.message);
    assert!(!error.message.contains(password), "{}", error.message);
    assert!(!format!("{connector:?}").contains(password));
    // Refused credentials are not retried, and no list call goes out without a token.
    assert_eq!(statuses(&server), [401]);

    // Once the password is right (the account's password changed to it), it works.
    fake.set_password(password);
    let page = connector.sync_page(None, None).await.unwrap();
    assert_eq!(page.events.len(), 50);
}

#[tokio::test]
async fn an_unrecognized_answer_is_an_error_never_an_empty_last_page() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let connector = connector(&server);
    for body in [
        json!({"items": [], "total": 0}),
        json!({"results": [], "count": 0}),
        json!({"total": 3, "results": {"0": {}}}),
        json!([]),
    ] {
        fake.answer_lists_with(Some(body.clone()));
        let error = connector.sync_page(None, None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable, "{body}: {error}");
        assert!(error.message.contains("/chats/list"), "{}", error.message);
        assert!(error.message.contains("results"), "{}", error.message);
    }
    // A token answer without the token is an error too.
    fake.answer_lists_with(None);
    let page = connector.sync_page(None, None).await.unwrap();
    assert!(!page.done);
    assert_eq!(page.events.len(), 50);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_survived() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    // The token request meets a 500, then a 429 (Retry-After: 1); every third request a 503.
    server.faults.push(Fault::internal_error());
    server.faults.push(Fault::too_many_requests(1));
    server.faults.every_nth(3, Fault::unavailable());
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
    let seen = statuses(&server);
    for status in [429, 500, 503] {
        assert!(seen.contains(&status), "no {status} in {seen:?}");
    }
    assert_eq!(fake.logins(), 1);
}

#[tokio::test]
async fn an_incremental_run_fetches_only_what_was_created_since() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);
    assert!(sync(&connector, &store, None, 100).await.done);

    let new_chats = fake.add_chats(4);
    fake.add_leads(2);
    server.log.clear();
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 4 + 2);
    assert_every_record_once(&store, &fake);
    for table in [Table::Chats, Table::Leads] {
        let requests = server.log.to_path(table.path());
        assert_eq!(requests.len(), 1, "{table:?}: one page");
        assert!(query_of(&requests[0]).contains_key("q"));
    }
    let stored = stored_keys(&store);
    for id in new_chats {
        assert!(
            stored.keys().any(|k| k.starts_with(&format!("chat:{id}:"))),
            "{id}"
        );
    }
}

/// The `q` of the first request to `path` in the log, as an instant (it is Moscow time).
fn first_q(server: &FakeServer, path: &str) -> Timestamp {
    let query = query_of(&server.log.to_path(path)[0]);
    let text = query["q"].strip_prefix("created_at>=").unwrap().to_owned();
    let naive = Timestamp::parse_sql_utc(&text).unwrap();
    Timestamp::from_millis(naive.as_millis() - 3 * 3_600_000).unwrap()
}

fn chat_created(fake: &FakeLiveTex, id: u64) -> Timestamp {
    let rows = fake.rows(Table::Chats);
    created(rows.iter().find(|r| r["id"] == id).unwrap())
}

#[tokio::test]
async fn a_chat_still_open_when_pulled_is_pulled_again_until_it_closes() {
    let fake = FakeLiveTex::new().with_chats(10);
    let open = fake.add_open_chats(2);
    fake.add_chats(60);
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    let first = sync(&connector, &store, None, 100).await;
    assert!(first.done);
    assert_eq!(first.appended, 72);

    // Nothing changed: the next run starts again at the first chat still open.
    server.log.clear();
    let unchanged = sync(&connector, &store, None, 100).await;
    assert_eq!(unchanged.appended, 0);
    assert_eq!(
        first_q(&server, "/chats/list"),
        chat_created(&fake, open[0])
    );

    // It closes: the next run pulls its close, then starts at the other open chat.
    assert!(fake.close_chat(open[0]));
    server.log.clear();
    let closed_one = sync(&connector, &store, None, 100).await;
    assert_eq!(closed_one.appended, 1);
    assert_eq!(
        first_q(&server, "/chats/list"),
        chat_created(&fake, open[0])
    );
    let ended: Vec<IncomingEvent> = store
        .read_events(Sequence::ZERO, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.incoming)
        .filter(|e| e.dedup_key.starts_with(&format!("chat:{}:", open[0])))
        .collect();
    assert_eq!(ended.len(), 2, "opened, then closed");
    assert_eq!(ended[1].kind, switchboard_core::EventKind::ChatEnded);

    assert!(fake.close_chat(open[1]));
    server.log.clear();
    assert_eq!(sync(&connector, &store, None, 100).await.appended, 1);
    assert_eq!(
        first_q(&server, "/chats/list"),
        chat_created(&fake, open[1])
    );

    // Nothing open any more: back to the last second read.
    server.log.clear();
    assert_eq!(sync(&connector, &store, None, 100).await.appended, 0);
    let last = created(fake.rows(Table::Chats).last().unwrap());
    assert_eq!(first_q(&server, "/chats/list"), last);
}

#[tokio::test]
async fn a_first_sync_from_a_time_asks_every_list_from_it() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let config = config(&server, FakeLiveTex::PASSWORD).with_setting(
        "chats_fields",
        "messages,employee,visitor,site,conversation",
    );
    let connector = LiveTexConnector::new(&config).unwrap();
    let since = Timestamp::parse_rfc3339("2024-03-01T00:30:00Z").unwrap();
    let mut cursor: Option<String> = None;
    loop {
        let page = connector
            .sync_page(cursor.as_deref(), Some(since))
            .await
            .unwrap();
        cursor = Some(page.next_cursor);
        if page.done {
            break;
        }
    }
    for table in [Table::Chats, Table::Leads] {
        let first = query_of(&server.log.to_path(table.path())[0]);
        assert_eq!(
            first["q"], "created_at>=2024-03-01 03:30:00",
            "{table:?}: Moscow time"
        );
        assert_eq!(first["offset"], "0");
    }
    let chats = query_of(&server.log.to_path(Table::Chats.path())[0]);
    assert_eq!(
        chats["fields"],
        "messages,employee,visitor,site,conversation"
    );
    let leads = query_of(&server.log.to_path(Table::Leads.path())[0]);
    assert!(!leads.contains_key("fields"), "only the list it is set for");
}

#[tokio::test]
async fn pulled_chats_merge_with_the_conversation_pushed_by_webhook() {
    let fake = FakeLiveTex::new().with_chats(2);
    let server = fake.start().await.unwrap();
    let connector = connector(&server);
    let page = connector.sync_page(None, None).await.unwrap();
    let rows = fake.rows(Table::Chats);
    // The webhook sends the same conversation with its two chats.
    let body = json!({
        "Conversation": {"id": rows[0]["conversation"]["id"], "created_at": rows[0]["created_at"],
                          "chats": rows},
        "discourser": {"id": rows[0]["visitor"]["id"], "email": "maria@example.ru"},
        "employee": [rows[0]["employee"], rows[1]["employee"]],
    });
    let pushed = parse_webhook(body.to_string().as_bytes()).unwrap();
    let conversation = |e: &IncomingEvent| e.conversation_external_id().map(str::to_owned);
    let pulled_ids: BTreeSet<_> = page.events.iter().filter_map(conversation).collect();
    let pushed_ids: BTreeSet<_> = pushed.iter().filter_map(conversation).collect();
    assert_eq!(pulled_ids, pushed_ids);
    let keys = |events: &[IncomingEvent]| -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                EventPayload::Conversation(patch) => {
                    Some(patch.messages.iter().map(|m| m.key.clone()))
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert_eq!(
        keys(&page.events),
        keys(&pushed),
        "the same messages, the same keys"
    );
}

#[tokio::test]
async fn the_connector_needs_login_and_password_and_a_sane_page_size() {
    let fake = FakeLiveTex::new();
    let server = fake.start().await.unwrap();
    let registry = Registry::from_inventory().unwrap();
    let factory = registry.get("livetex").unwrap().connector.unwrap();
    let mut no_login = config(&server, "x");
    no_login.settings.remove("login");
    let error = factory(&no_login).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("login"), "{}", error.message);
    let mut no_password = config(&server, "x");
    no_password.secrets.remove("password");
    assert!(
        factory(&no_password)
            .unwrap_err()
            .message
            .contains("password")
    );
    let mut neither = config(&server, "x");
    neither.settings.remove("login");
    neither.secrets.remove("password");
    let error = factory(&neither).unwrap_err().message;
    assert!(
        error.contains("`login`") && error.contains("`password`"),
        "both missing fields in one error: {error}"
    );
    assert!(
        error.contains("SWITCHBOARD_SECRET__LT_SYNC__PASSWORD"),
        "{error}"
    );
    for bad in ["0", "101", "many"] {
        let config = config(&server, "x").with_setting("page_size", bad);
        let error = factory(&config).unwrap_err();
        assert!(error.message.contains("page_size"), "{}", error.message);
    }
}

#[tokio::test]
async fn an_unreadable_cursor_is_refused_with_what_to_do() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let connector = connector(&server);
    for cursor in [
        "not json",
        r#"{"v":1,"table":"dialogs"}"#,
        r#"{"v":2,"table":"chats","chats":{"from":"yesterday"}}"#,
    ] {
        let error = connector.sync_page(Some(cursor), None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{cursor}");
        assert!(error.message.contains("from scratch"), "{}", error.message);
    }
    assert!(server.log.is_empty(), "nothing is asked with a bad cursor");
}
