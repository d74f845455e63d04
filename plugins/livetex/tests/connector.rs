//! The LiveTex connector against the fake LiveTex API, landing pages in a real store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ErrorCode, IncomingEvent, RateLimit, Registry,
    Sequence, Timestamp,
};
use switchboard_plugin_livetex::{
    LiveTexConnector, conversation_to_events, dialog_to_events, lead_to_events, parse_webhook,
};
use switchboard_store::{AppendRequest, Store, SyncUpdate};
use switchboard_testkit::fake::livetex::{FakeLiveTex, Table};
use switchboard_testkit::fake::{FakeServer, Fault, Recorded};

const CONNECTION: &str = "lt-sync";
const PAGE_SIZE: usize = 4;

fn connection_id() -> ConnectionId {
    ConnectionId::new(CONNECTION).unwrap()
}

fn config(server: &FakeServer, password: &str) -> ConnectionConfig {
    let mut config = ConnectionConfig::new(connection_id(), "livetex")
        .with_setting("login", FakeLiveTex::LOGIN)
        .with_setting("base_url", server.base_url())
        .with_setting("page_size", PAGE_SIZE.to_string())
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
        Table::Dialogs => dialog_to_events(row),
        Table::Leads => lead_to_events(row),
        Table::Conversations => conversation_to_events(row),
    }
    .unwrap_or_else(|e| panic!("{table:?} row {row}: {e}"))
}

/// The dedup keys every record of the fake maps to, as the webhook would produce them.
fn expected_keys(fake: &FakeLiveTex) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for table in [Table::Dialogs, Table::Leads, Table::Conversations] {
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

fn fake_with_data() -> FakeLiveTex {
    FakeLiveTex::new()
        .with_conversations(7)
        .with_dialogs(13)
        .with_leads(5)
}

#[tokio::test]
async fn a_full_backfill_lands_every_record_once() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 25);
    assert_eq!(run.duplicates, 0);
    assert_every_record_once(&store, &fake);
    // 7 conversations: 4 + 3; 13 dialogs: 4 + 4 + 4 + 1; 5 leads: 4 + 1.
    assert_eq!(run.pages, 8);
    assert_eq!(
        store
            .sync_state(&connection_id())
            .unwrap()
            .unwrap()
            .records_pulled,
        25
    );
    // One login for the whole run, no request without a token.
    assert_eq!(fake.grants(), ["password"]);
    assert!(statuses(&server).iter().all(|s| *s == 200));

    // A second run right away re-reads only each table's last second and appends nothing.
    server.log.clear();
    let again = sync(&connector, &store, None, 100).await;
    assert!(again.done);
    assert_eq!(again.appended, 0);
    for table in [Table::Dialogs, Table::Leads, Table::Conversations] {
        let last = fake.rows(table).last().unwrap()["updated_at"].clone();
        let requests = server.log.to_path(table.path());
        assert_eq!(requests.len(), 1, "{table:?}");
        let from = query_of(&requests[0])["updated_from"].clone();
        assert_eq!(
            Timestamp::parse_rfc3339(&from),
            Timestamp::parse_sql_utc(last.as_str().unwrap()),
            "{table:?}"
        );
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
        let run = sync(&first, &store, None, 3).await;
        assert!(!run.done);
        assert_eq!(run.appended, 11);
        // The process dies after pulling the fourth page but before storing it.
        let cursor = store.sync_state(&connection_id()).unwrap().unwrap().cursor;
        let lost = first.sync_page(cursor.as_deref(), None).await.unwrap();
        assert_eq!(lost.events.len(), PAGE_SIZE);
        store.close().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let second = connector(&server);
    let run = sync(&second, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 25 - 11);
    assert_every_record_once(&store, &fake);
    // The new process logged in again.
    assert_eq!(fake.grants(), ["password", "password"]);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_call_retried() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 2).await;
    fake.expire_tokens();
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
    assert_eq!(fake.grants(), ["password", "refresh_token"]);
    let grants: Vec<String> = server
        .log
        .to_path("/oauth2/token")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        grants[1].starts_with("grant_type=refresh_token&refresh_token=lt-rt-000001"),
        "{grants:?}"
    );
    assert_eq!(statuses(&server).iter().filter(|s| **s == 401).count(), 1);
}

#[tokio::test]
async fn a_refused_refresh_falls_back_to_the_password() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 1).await;
    fake.expire_tokens();
    fake.revoke_refresh_tokens();
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
    assert_eq!(fake.grants(), ["password", "refresh_token", "password"]);
}

#[tokio::test]
async fn a_token_near_its_expiry_is_refreshed_before_use() {
    let fake = fake_with_data().with_token_lifetime(Duration::from_secs(2));
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 1).await;
    // expires_in 2 s: renewed 0.4 s ahead, so after 1.7 s the next call refreshes first.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    sync(&connector, &store, None, 1).await;
    assert_eq!(fake.grants(), ["password", "refresh_token"]);
    assert!(
        !statuses(&server).contains(&401),
        "the connector used an expired token: {:?}",
        statuses(&server)
    );
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
    // Refused credentials are not retried, and no data call goes out without a token.
    assert_eq!(fake.grants(), ["password"]);
    assert_eq!(server.log.len(), 1);

    // Once the password is right (the account's password changed to it), it works.
    fake.set_password(password);
    let page = connector.sync_page(None, None).await.unwrap();
    assert_eq!(page.events.len(), PAGE_SIZE);
}

#[tokio::test]
async fn credentials_refused_with_401_are_a_failed_precondition_too() {
    let fake = fake_with_data().with_refusals_as_401();
    let server = fake.start().await.unwrap();
    let password = "an0ther-wr0ng-0ne";
    let connector = LiveTexConnector::new(&config(&server, password)).unwrap();
    let error = connector.sync_page(None, None).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(error.message.contains(CONNECTION), "{}", error.message);
    assert!(!error.message.contains(password), "{}", error.message);
    assert_eq!(statuses(&server), [401]);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_survived() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    // The token request meets a 500, then a 429 (Retry-After: 1); every fifth request a 503.
    server.faults.push(Fault::internal_error());
    server.faults.push(Fault::too_many_requests(1));
    server.faults.every_nth(5, Fault::unavailable());
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
    let seen = statuses(&server);
    for status in [429, 500, 503] {
        assert!(seen.contains(&status), "no {status} in {seen:?}");
    }
    assert_eq!(fake.grants(), ["password"]);
}

#[tokio::test]
async fn an_incremental_run_fetches_only_what_changed_since() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);
    assert!(sync(&connector, &store, None, 100).await.done);
    let last_before: Vec<Value> = [Table::Conversations, Table::Dialogs, Table::Leads]
        .iter()
        .map(|t| fake.rows(*t).last().unwrap()["updated_at"].clone())
        .collect();

    fake.add_conversations(1);
    let new_dialogs = fake.add_dialogs(3);
    fake.add_leads(2);
    // A dialog rated after it closed moves to the end and is a new event.
    assert!(fake.update(
        Table::Dialogs,
        "c-10000-1",
        json!({"employee_remark_id": 7, "employee_remark_text": "Возврат"})
    ));
    server.log.clear();

    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 1 + 3 + 2 + 1);
    assert_every_record_once_or_superseded(&store, &fake);

    for (table, last) in [Table::Conversations, Table::Dialogs, Table::Leads]
        .iter()
        .zip(&last_before)
    {
        let requests = server.log.to_path(table.path());
        let first = query_of(&requests[0]);
        assert_eq!(
            Timestamp::parse_rfc3339(&first["updated_from"]),
            Timestamp::parse_sql_utc(last.as_str().unwrap()),
            "{table:?} asked from {first:?}"
        );
        assert_eq!(first["offset"], "0");
        // Only records of that last second or later came back.
        let served: usize = requests.len();
        assert!(served <= 2, "{table:?}: {served} pages");
    }
    let dialogs = server.log.to_path(Table::Dialogs.path());
    assert!(
        dialogs
            .iter()
            .all(|r| query_of(r).contains_key("updated_from"))
    );
    let stored = stored_keys(&store);
    for chat_id in new_dialogs {
        assert!(
            stored
                .keys()
                .any(|k| k.starts_with(&format!("dialog:{chat_id}:"))),
            "{chat_id} not stored"
        );
    }
}

/// After an update the store holds the record's old event and its new one: every current
/// record's event once, plus superseded ones.
fn assert_every_record_once_or_superseded(store: &Store, fake: &FakeLiveTex) {
    let stored = stored_keys(store);
    assert!(stored.values().all(|n| *n == 1), "{stored:?}");
    let expected = expected_keys(fake);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_eq!(stored.len(), expected.len() + 1);
}

#[tokio::test]
async fn a_first_sync_from_a_time_asks_every_table_from_it() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let connector = connector(&server);
    let since = Timestamp::parse_rfc3339("2024-03-01T00:05:00Z").unwrap();
    let page = connector.sync_page(None, Some(since)).await.unwrap();
    let request = &server.log.to_path(Table::Conversations.path())[0];
    assert_eq!(
        Timestamp::parse_rfc3339(&query_of(request)["updated_from"]),
        Some(since)
    );
    // Conversations 0..6 were updated in minutes 0..2 (three records a minute, conversations
    // first): none is that recent, so the first page moves on to the dialogs.
    assert!(!page.done);
    assert_eq!(page.events.len(), PAGE_SIZE);
    assert!(
        page.events
            .iter()
            .all(|e| e.dedup_key.starts_with("dialog:"))
    );
    let dialog_request = &server.log.to_path(Table::Dialogs.path())[0];
    assert_eq!(
        Timestamp::parse_rfc3339(&query_of(dialog_request)["updated_from"]),
        Some(since)
    );
}

#[tokio::test]
async fn pulled_records_merge_with_the_same_records_pushed_by_webhook() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    // Every record first arrives by webhook (without the API-only `updated_at`).
    for (table, event) in [
        (Table::Dialogs, "dialog"),
        (Table::Leads, "lead"),
        (Table::Conversations, "conversation"),
    ] {
        for mut row in fake.rows(table) {
            let pulled = map_row(table, &row);
            row.as_object_mut().unwrap().remove("updated_at");
            let body = json!({"webHookKey": "k", "event": event, (event): row});
            let pushed = parse_webhook(body.to_string().as_bytes()).unwrap();
            assert_eq!(pushed, pulled, "{event} {row}");
            store
                .append(AppendRequest::new(connection_id(), "livetex", pushed))
                .await
                .unwrap();
        }
    }
    let run = sync(&connector(&server), &store, None, 100).await;
    assert!(run.done);
    assert_eq!(run.appended, 0);
    assert_eq!(run.duplicates, 25);
    assert_every_record_once(&store, &fake);
}

#[tokio::test]
async fn the_connector_needs_login_and_password_and_a_sane_page_size() {
    let fake = FakeLiveTex::new();
    let server = fake.start().await.unwrap();
    let plugin = Registry::from_inventory().unwrap().get("livetex").unwrap();
    let build = plugin.connector.expect("livetex has a connector");
    assert!(build(&config(&server, "pw")).is_ok());

    let mut no_login = config(&server, "pw");
    no_login.settings.remove("login");
    let error = build(&no_login).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("`login`"), "{}", error.message);

    let mut no_password = config(&server, "pw");
    no_password.secrets.remove("password");
    let error = build(&no_password).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("`password`"), "{}", error.message);

    for bad in ["0", "101", "many"] {
        let config = config(&server, "pw").with_setting("page_size", bad);
        let error = build(&config).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("page_size"), "{}", error.message);
    }
}

#[tokio::test]
async fn an_unreadable_cursor_is_refused_with_what_to_do() {
    let fake = FakeLiveTex::new();
    let server = fake.start().await.unwrap();
    let connector = connector(&server);
    for cursor in [
        "not json",
        r#"{"v":2,"table":"dialogs"}"#,
        r#"{"v":1,"table":"dialogs","dialogs":{"from":"yesterday","skip":0}}"#,
    ] {
        let error = connector.sync_page(Some(cursor), None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{cursor}");
        assert!(error.message.contains("from scratch"), "{}", error.message);
    }
    assert!(server.log.is_empty());
}

#[tokio::test]
async fn a_token_error_that_echoes_the_password_does_not_leak_it() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    // A failing token endpoint that echoes the form it was sent, password included.
    server.faults.always(Fault::Status {
        status: 500,
        retry_after: None,
        body: json!({
            "error": "server_error",
            "error_description": format!(
                "cannot handle grant_type=password&username=api%40example.ru&password={}",
                FakeLiveTex::PASSWORD
            ),
        })
        .to_string(),
    });
    let config = config(&server, FakeLiveTex::PASSWORD).with_setting("max_attempts", "2");
    let connector = LiveTexConnector::new(&config).unwrap();
    let error = connector.sync_page(None, None).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains("HTTP 500"), "{}", error.message);
    assert!(error.message.contains(CONNECTION), "{}", error.message);
    assert!(error.message.contains("[redacted]"), "{}", error.message);
    assert!(
        !error.message.contains(FakeLiveTex::PASSWORD),
        "the password leaked: {}",
        error.message
    );
    // The password grant is safe to repeat, so the 500 was retried.
    assert_eq!(server.log.to_path("/oauth2/token").len(), 2);
}

#[tokio::test]
async fn a_refresh_grant_that_fails_is_not_sent_again_nor_leaked() {
    let fake = fake_with_data();
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&server);

    sync(&connector, &store, None, 1).await;
    fake.expire_tokens();
    // The data call passes (and meets 401 invalid_token); the refresh grant then fails with an
    // answer that echoes the refresh token.
    server.faults.push(Fault::Delay(Duration::ZERO));
    server.faults.push(Fault::Status {
        status: 500,
        retry_after: None,
        body: json!({
            "error": "server_error",
            "error_description": "cannot handle grant_type=refresh_token&refresh_token=lt-rt-000001",
        })
        .to_string(),
    });
    let error = connector.sync_page(None, None).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains("HTTP 500"), "{}", error.message);
    assert!(
        !error.message.contains("lt-rt-000001"),
        "the refresh token leaked: {}",
        error.message
    );
    // A refresh token is single-use: after a 500 LiveTex may have used it up, so it is sent
    // once, not retried.
    let grants: Vec<String> = server
        .log
        .to_path("/oauth2/token")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(
        grants[1].starts_with("grant_type=refresh_token"),
        "{grants:?}"
    );
    // The next sync recovers.
    let run = sync(&connector, &store, None, 100).await;
    assert!(run.done);
    assert_every_record_once(&store, &fake);
}
