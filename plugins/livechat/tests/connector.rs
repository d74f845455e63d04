//! The LiveChat connector against the fake LiveChat API (`switchboard_testkit::fake::livechat`),
//! feeding sync pages into a real store.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_core::{
    ConnectionConfig, ConnectionId, Connector, ConversationId, ConversationStatus, ErrorCode,
    NewAgent, NewTicket, Participant, RateLimit, TicketChange, TicketOrigin, TicketQuery,
    TicketStatus, Timestamp, WebhookRequest,
};
use switchboard_plugin_livechat::LiveChatConnector;
use switchboard_store::{AppendRequest, Store, SyncUpdate};
use switchboard_testkit::fake::livechat::{
    ACCOUNT_ID, API_KEY, FakeLiveChat, LOGIN, base64_encode,
};
use switchboard_testkit::fake::{FakeServer, Fault, Recorded};

const CONNECTION: &str = "livechat";
const LIST_AGENTS: &str = "/v3.6/configuration/action/list_agents";
const CREATE_AGENT: &str = "/v3.6/configuration/action/create_agent";
const DELETE_AGENT: &str = "/v3.6/configuration/action/delete_agent";

fn connection_id() -> ConnectionId {
    ConnectionId::new(CONNECTION).unwrap()
}

fn config(server: &FakeServer, api_key: &str) -> ConnectionConfig {
    ConnectionConfig::new(connection_id(), "livechat")
        .with_setting("account_id", ACCOUNT_ID)
        .with_setting("login", LOGIN)
        .with_secret("personal_access_token", api_key)
        .with_setting("base_url", server.base_url())
        .with_setting("agent_api_base_url", server.base_url())
        .with_setting("configuration_api_base_url", server.base_url())
        .with_setting("archive_page_size", "25")
        .with_secret("webhook_secret", "lc-webhook-secret")
}

fn connector(config: &ConnectionConfig) -> LiveChatConnector {
    LiveChatConnector::new(config).expect("connector builds")
}

/// The Agent Chat and Configuration APIs: the Account ID and the personal access token.
fn expected_basic() -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{ACCOUNT_ID}:{API_KEY}").as_bytes())
    )
}

/// The deprecated REST API v2 (tickets): the account's e-mail and the token.
fn expected_rest_basic() -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{LOGIN}:{API_KEY}").as_bytes())
    )
}

/// Runs sync pages into the store from its saved cursor until done or `max_pages` pages.
async fn sync(connector: &LiveChatConnector, store: &Store, max_pages: Option<usize>) -> usize {
    let mut pages = 0;
    loop {
        let cursor = store
            .sync_state(&connection_id())
            .unwrap()
            .and_then(|s| s.cursor);
        let page = connector
            .sync_page(cursor.as_deref(), None)
            .await
            .expect("sync page");
        let records = page.events.len() as u64;
        let mut request = AppendRequest::new(connection_id(), "livechat", page.events);
        request.sync = Some(SyncUpdate {
            cursor: page.next_cursor,
            records,
            at: Timestamp::now(),
        });
        store.append(request).await.expect("append");
        pages += 1;
        if page.done || max_pages.is_some_and(|max| pages >= max) {
            return pages;
        }
    }
}

fn archive_requests(server: &FakeServer) -> Vec<Recorded> {
    server.log.to_path("/v3.6/agent/action/list_archives")
}

/// Every seeded chat is in the store once: one conversation each, closed, three messages, and
/// four events per chat (snapshot + three messages).
fn assert_every_chat_once(store: &Store, chats: usize) {
    assert_eq!(store.conversation_count().unwrap(), chats as u64);
    assert_eq!(store.event_count().unwrap(), chats as u64 * 4);
    for i in 0..chats {
        let id = ConversationId::new(connection_id(), format!("C{i:09}"));
        let conversation = store.get_conversation(&id).unwrap().expect("conversation");
        assert_eq!(conversation.status, ConversationStatus::Closed, "{id}");
        assert_eq!(conversation.messages.len(), 3, "{id}");
        assert_eq!(conversation.event_count, 4, "{id}");
    }
}

#[tokio::test]
async fn a_full_backfill_lands_every_chat_once() {
    let fake = FakeLiveChat::new().with_archived_chats(230);
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&config(&server, API_KEY));

    assert_eq!(sync(&connector, &store, None).await, 10);
    assert_every_chat_once(&store, 230);

    let requests = archive_requests(&server);
    assert_eq!(requests.len(), 10);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].json(),
        json!({"sort_order": "asc", "limit": 25})
    );
    assert_eq!(
        requests[0].header("authorization"),
        Some(expected_basic().as_str())
    );
    for later in &requests[1..] {
        let body = later.json();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        assert!(body["page_id"].is_string(), "{body}");
    }

    // A later sync lists from the newest chat seen (inclusive): nothing new is appended.
    let head = store.head();
    assert_eq!(sync(&connector, &store, None).await, 1);
    assert_eq!(store.head(), head);
    let last = archive_requests(&server).pop().unwrap().json();
    assert_eq!(
        last["filters"]["from"], "2024-01-02T14:10:00.000000Z",
        "{last}"
    );

    // A chat archived since then is picked up by the next sync.
    fake.add_archived_chat(switchboard_testkit::fake::livechat::seeded_chat(230));
    sync(&connector, &store, None).await;
    assert_every_chat_once(&store, 231);
}

#[tokio::test]
async fn an_interrupted_sync_resumes_from_the_saved_cursor_without_loss() {
    let fake = FakeLiveChat::new().with_archived_chats(230);
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, API_KEY);

    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(sync(&connector(&config), &store, Some(4)).await, 4);
        assert_eq!(store.conversation_count().unwrap(), 100);
        store.close().await.unwrap();
    }
    // The process is gone; a new one resumes from the store's cursor with a new connector.
    let store = Store::open(dir.path()).unwrap();
    let cursor = store.sync_state(&connection_id()).unwrap().unwrap();
    assert_eq!(cursor.records_pulled, 400);
    assert!(cursor.cursor.as_deref().unwrap().contains("page_id"));
    sync(&connector(&config), &store, Some(3)).await;
    assert_eq!(store.conversation_count().unwrap(), 175);

    // LiveChat's page ids expire: the connector lists again from the cursor's time.
    fake.expire_page_ids();
    sync(&connector(&config), &store, None).await;
    assert_every_chat_once(&store, 230);
    let statuses: Vec<u16> = archive_requests(&server)
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        1,
        "{statuses:?}"
    );
    let restart = archive_requests(&server)
        .into_iter()
        .skip_while(|r| r.status.as_u16() != 400)
        .nth(1)
        .unwrap()
        .json();
    // The 175th chat (index 174) starts 29 hours after the first.
    assert_eq!(
        restart,
        json!({"sort_order": "asc", "limit": 25, "filters": {"from": "2024-01-02T05:00:00.000000Z"}})
    );
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const V3_FIXTURES: [&str; 11] = [
    "v3_incoming_chat",
    "v3_incoming_event_message",
    "v3_incoming_event_file",
    "v3_incoming_event_system_message",
    "v3_incoming_event_internal_note",
    "v3_thread_tagged",
    "v3_thread_untagged",
    "v3_chat_transferred",
    "v3_user_added_to_chat",
    "v3_user_removed_from_chat",
    "v3_chat_deactivated",
];

/// The chat of the v3 webhook fixtures as `list_archives` returns it once archived: the chat of
/// `incoming_chat`, inactive, with every event the `incoming_event` fixtures carry.
fn archived_fixture_chat() -> Value {
    let mut chat = fixture("v3_incoming_chat")["payload"]["chat"].clone();
    chat["thread"]["active"] = json!(false);
    for name in V3_FIXTURES
        .iter()
        .filter(|n| n.starts_with("v3_incoming_event"))
    {
        let event = fixture(name)["payload"]["event"].clone();
        chat["thread"]["events"].as_array_mut().unwrap().push(event);
    }
    chat
}

async fn append_webhooks(config: &ConnectionConfig, store: &Store) {
    let source = switchboard_plugin_livechat::webhook(config).unwrap();
    for name in V3_FIXTURES {
        let body = serde_json::to_vec(&fixture(name)).unwrap();
        let request = WebhookRequest {
            connection: config,
            headers: &[],
            query: &[],
            body: &body,
            received_at: Timestamp::parse_rfc3339("2019-12-17T08:10:00Z").unwrap(),
        };
        source.verify(&request).unwrap();
        let events = source.parse(&request).unwrap();
        store
            .append(AppendRequest::new(connection_id(), "livechat", events))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn archived_chats_merge_with_webhooks_of_the_same_chat() {
    let fake = FakeLiveChat::new().with_archived_chat(archived_fixture_chat());
    let server = fake.start().await.unwrap();
    let config = config(&server, API_KEY);
    let id = ConversationId::new(connection_id(), "PJ0MRSHTDG");

    // Webhooks first, then the archive.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    append_webhooks(&config, &store).await;
    let before = store.event_count().unwrap();
    sync(&connector(&config), &store, None).await;
    assert_eq!(store.conversation_count().unwrap(), 1);
    // Only the archive snapshot is new: every message was seen by webhook already.
    assert_eq!(store.event_count().unwrap(), before + 1);
    let merged = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(merged.messages.len(), 6);
    assert_eq!(merged.status, ConversationStatus::Closed);

    // The archive first, then webhooks: the same messages, one conversation.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(dir2.path()).unwrap();
    sync(&connector(&config), &store2, None).await;
    assert_eq!(store2.event_count().unwrap(), 7);
    append_webhooks(&config, &store2).await;
    let other = store2.get_conversation(&id).unwrap().unwrap();
    assert_eq!(store2.conversation_count().unwrap(), 1);
    assert_eq!(other.messages, merged.messages);
    assert_eq!(other.status, merged.status);
    assert_eq!(other.started_at, merged.started_at);
    assert_eq!(other.event_count, merged.event_count);
}

#[tokio::test]
async fn rate_limit_answers_and_server_errors_are_survived() {
    let fake = FakeLiveChat::new().with_archived_chats(60);
    let server = fake.start().await.unwrap();
    server.faults.push(Fault::too_many_requests(1));
    server.faults.every_nth(3, Fault::internal_error());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    sync(&connector(&config(&server, API_KEY)), &store, None).await;
    assert_every_chat_once(&store, 60);
    let statuses: Vec<u16> = archive_requests(&server)
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&500),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_client_keeps_under_the_vendor_limit_and_survives_it_when_configured_above() {
    let fake = FakeLiveChat::new().with_rate_limit(5, Duration::from_secs(1));
    let server = fake.start().await.unwrap();

    // The connection's limit is within the vendor's (one call of margin for network jitter):
    // no call is refused.
    let mut within = config(&server, API_KEY);
    within.rate_limit = Some(RateLimit {
        calls: 4,
        per_seconds: 1,
    });
    let connector = connector(&within);
    let agents = connector.agents().unwrap();
    let started = Instant::now();
    for _ in 0..12 {
        agents.list().await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.snapshot().rate_limited, 0);

    // A limit set above the vendor's: LiveChat answers 429 with Retry-After, the call waits and
    // succeeds.
    let mut above = config(&server, API_KEY);
    above.rate_limit = Some(RateLimit {
        calls: 50,
        per_seconds: 1,
    });
    let connector = self::connector(&above);
    for _ in 0..8 {
        connector.agents().unwrap().list().await.unwrap();
    }
    assert!(fake.snapshot().rate_limited > 0);
    let statuses: Vec<u16> = server
        .log
        .to_path(LIST_AGENTS)
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        20,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_a_failed_precondition() {
    let fake = FakeLiveChat::new().with_archived_chats(3).with_tickets(3);
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, "not-the-key"));
    let err = connector.sync_page(None, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    assert!(!err.message.contains("not-the-key"), "{err}");
    let err = connector
        .tickets()
        .unwrap()
        .list(&TicketQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    assert!(server.log.all().iter().all(|r| r.status.as_u16() == 401));
    assert_eq!(server.log.len(), 2);
}

fn assert_rest_call(request: &Recorded, method: &str, path: &str) {
    assert_eq!(request.method, method, "{path}");
    assert_eq!(request.path, path);
    assert_eq!(request.header("x-api-version"), Some("2"), "{path}");
    assert_eq!(
        request.header("authorization"),
        Some(expected_rest_basic().as_str()),
        "{path}"
    );
    assert!(request.status.is_success(), "{path}: {}", request.status);
}

/// A Configuration API call: POST, the Account ID and token, no REST version header.
fn assert_configuration_call(request: &Recorded, path: &str) {
    assert_eq!(request.method, "POST", "{path}");
    assert_eq!(request.path, path);
    assert_eq!(request.header("x-api-version"), None, "{path}");
    assert_eq!(
        request.header("authorization"),
        Some(expected_basic().as_str()),
        "{path}"
    );
    assert!(request.status.is_success(), "{path}: {}", request.status);
}

#[tokio::test]
async fn ticket_operations_reach_the_rest_api() {
    let fake = FakeLiveChat::new().with_tickets(60).with_agents(2);
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, API_KEY));
    let tickets = connector.tickets().unwrap();

    // Listing: 25 per page, the page number as token, filters as query parameters.
    let first = tickets.list(&TicketQuery::default()).await.unwrap();
    assert_eq!(first.tickets.len(), 25);
    assert_eq!(first.next_page_token.as_deref(), Some("2"));
    assert!(
        first
            .tickets
            .iter()
            .all(|t| t.origin == TicketOrigin::Vendor)
    );
    let third = tickets
        .list(&TicketQuery {
            page_token: Some("3".into()),
            ..TicketQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((third.tickets.len(), third.next_page_token), (10, None));
    let filtered = tickets
        .list(&TicketQuery {
            status: Some(TicketStatus::Pending),
            created_from: Timestamp::parse_rfc3339("2024-01-01T05:00:00Z"),
            created_to: Timestamp::parse_rfc3339("2024-01-02T00:00:00Z"),
            page_token: None,
        })
        .await
        .unwrap();
    // Seeded ticket i is created at i hours past midnight and pending when i % 4 == 1.
    let ids: Vec<&str> = filtered
        .tickets
        .iter()
        .map(|t| t.external_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "TK0000021",
            "TK0000017",
            "TK0000013",
            "TK0000009",
            "TK0000005"
        ]
    );
    let log = server.log.to_path("/tickets");
    assert_rest_call(&log[0], "GET", "/tickets");
    assert_eq!(log[0].query, "page=1");
    assert_eq!(
        log[2].query,
        "page=1&date_from=2024-01-01&date_to=2024-01-01&status=pending"
    );
    let bad = tickets
        .list(&TicketQuery {
            page_token: Some("next".into()),
            ..TicketQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code, ErrorCode::InvalidArgument);

    // Create.
    let created = tickets
        .create(&NewTicket {
            message: "My order did not arrive".into(),
            requester: Participant {
                id: "ann@example.org".into(),
                name: Some("Ann".into()),
                email: Some("ann@example.org".into()),
                ..Participant::default()
            },
            subject: "Order 1042".into(),
            assignee_id: Some("agent0@example.com".into()),
            source_kind: Some("mail".into()),
            source_url: None,
        })
        .await
        .unwrap();
    assert_eq!(created.external_id, "TK0000060");
    assert_eq!(created.subject, "Order 1042");
    assert_eq!(created.assignee.as_ref().unwrap().id, "agent0@example.com");
    let post = server.log.to_path("/tickets").pop().unwrap();
    assert_rest_call(&post, "POST", "/tickets");
    assert_eq!(
        post.json(),
        json!({
            "message": "My order did not arrive",
            "requester": {"mail": "ann@example.org", "name": "Ann"},
            "subject": "Order 1042",
            "assignee": {"id": "agent0@example.com"},
            "source": {"type": "mail"}
        })
    );

    // Get.
    let got = tickets.get("TK0000060").await.unwrap();
    assert_eq!(got, created);
    assert_rest_call(
        &server.log.all().pop().unwrap(),
        "GET",
        "/tickets/TK0000060",
    );
    let missing = tickets.get("NOPE").await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    // Update: LiveChat documents only `PUT /tickets/<id>/tags`.
    let updated = tickets
        .update(
            "TK0000060",
            &TicketChange {
                tags: Some(vec!["refund".into(), "vip".into()]),
                ..TicketChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.tags, ["refund", "vip"]);
    assert_eq!(updated.external_id, "TK0000060");
    let put = server.log.all().pop().unwrap();
    assert_rest_call(&put, "PUT", "/tickets/TK0000060/tags");
    assert_eq!(put.json(), json!({ "tag": ["refund", "vip"] }));
    assert_eq!(fake.snapshot().tickets["TK0000060"].tags, ["refund", "vip"]);

    // Anything else cannot be done through LiveChat's ticket API: refused with the reason,
    // before any call, and never as "not found".
    let calls = server.log.len();
    let err = tickets
        .update(
            "TK0000060",
            &TicketChange {
                status: Some(TicketStatus::Solved),
                message: Some("Refunded".into()),
                tags: Some(vec!["refund".into()]),
                ..TicketChange::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    assert!(
        err.message.contains("message, status") && err.message.contains("deprecated"),
        "{err}"
    );
    assert_eq!(server.log.len(), calls);
    assert_eq!(fake.snapshot().tickets["TK0000060"].status, "open");
}

/// The documented ticket answer (`configuration-api/v2.0/index.mdx`, "Get single ticket") as
/// the fake serves it: the list form, `"groups": [0]`, times in seconds.
#[tokio::test]
async fn documented_ticket_answers_are_read() {
    let fake = FakeLiveChat::new().with_tickets(1);
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, API_KEY));
    let ticket = connector.tickets().unwrap().get("TK0000000").await.unwrap();
    assert_eq!(ticket.groups.len(), 1);
    assert_eq!(ticket.groups[0].id, 0);
    assert_eq!(
        ticket.created_at,
        Timestamp::from_secs(switchboard_testkit::fake::livechat::FIRST_CHAT_SECS).unwrap()
    );
    let raw = server.log.all().pop().unwrap();
    assert_eq!(raw.status, 200);
    // A connection without `login` cannot use the ticket API (e-mail + token), and says so.
    let no_login = config(&server, API_KEY);
    let mut settings = no_login.clone();
    settings.settings.remove("login");
    let err = self::connector(&settings)
        .tickets()
        .unwrap()
        .get("TK0000000")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert!(err.message.contains("`login`"), "{err}");
}

#[tokio::test]
async fn agent_operations_use_the_configuration_api() {
    let fake = FakeLiveChat::new().with_agents(1);
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, API_KEY));
    let agents = connector.agents().unwrap();

    let listed = agents.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.login.as_str()).collect::<Vec<_>>(),
        [LOGIN, "agent0@example.com"]
    );
    assert_eq!(listed[0].permission.as_deref(), Some("owner"));
    assert_eq!(listed[1].max_chats_count, Some(6));
    let list = server.log.all().remove(0);
    assert_configuration_call(&list, LIST_AGENTS);
    assert_eq!(
        list.json(),
        json!({ "fields": ["job_title", "max_chats_count", "groups"] })
    );

    let created = agents
        .create(&NewAgent {
            login: "new.agent@example.com".into(),
            name: "New Agent".into(),
            permission: Some("administrator".into()),
            max_chats_count: Some(3),
            ..NewAgent::default()
        })
        .await
        .unwrap();
    assert_eq!(created.login, "new.agent@example.com");
    assert_eq!(created.job_title.as_deref(), Some("Support Agent"));
    assert_eq!(created.permission.as_deref(), Some("administrator"));
    assert_eq!(created.max_chats_count, Some(3));
    let post = server.log.all().pop().unwrap();
    assert_configuration_call(&post, CREATE_AGENT);
    assert_eq!(
        post.json(),
        json!({
            "id": "new.agent@example.com",
            "name": "New Agent",
            "job_title": "Support Agent",
            "role": "administrator",
            "max_chats_count": 3
        })
    );
    let again = agents
        .create(&NewAgent {
            login: "new.agent@example.com".into(),
            name: "Again".into(),
            ..NewAgent::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::AlreadyExists, "{again}");

    agents.delete("new.agent@example.com").await.unwrap();
    let delete = server.log.all().pop().unwrap();
    assert_configuration_call(&delete, DELETE_AGENT);
    assert_eq!(delete.json(), json!({ "id": "new.agent@example.com" }));
    assert!(
        !fake
            .snapshot()
            .agents
            .iter()
            .any(|a| a.login == "new.agent@example.com")
    );
    let gone = agents.delete("new.agent@example.com").await.unwrap_err();
    assert_eq!(gone.code, ErrorCode::NotFound);

    // The legacy version is one setting away.
    let legacy = config(&server, API_KEY).with_setting("api_version", "3.5");
    self::connector(&legacy)
        .agents()
        .unwrap()
        .list()
        .await
        .unwrap();
    assert_eq!(
        server.log.all().pop().unwrap().path,
        "/v3.5/configuration/action/list_agents"
    );
}

#[tokio::test]
async fn bad_agents_and_tickets_are_refused_without_calling_the_vendor() {
    let fake = FakeLiveChat::new();
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, API_KEY));
    let agents = connector.agents().unwrap();
    let good = NewAgent {
        login: "ok@example.com".into(),
        name: "Ok".into(),
        ..NewAgent::default()
    };
    let bad = [
        NewAgent {
            login: "not-an-email".into(),
            ..good.clone()
        },
        NewAgent {
            name: "  ".into(),
            ..good.clone()
        },
        NewAgent {
            password: Some("1234".into()),
            ..good.clone()
        },
        NewAgent {
            permission: Some("superuser".into()),
            ..good.clone()
        },
        NewAgent {
            login_status: Some("online".into()),
            ..good.clone()
        },
        NewAgent {
            max_chats_count: Some(-2),
            ..good.clone()
        },
        NewAgent {
            max_chats_count: Some(21),
            ..good.clone()
        },
    ];
    for agent in &bad {
        let err = agents.create(agent).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{agent:?}");
        assert!(
            err.message.contains(": use") || err.message.contains(": give"),
            "{err}"
        );
    }
    for agent in [
        NewAgent {
            password: Some("hunter22".into()),
            ..good.clone()
        },
        NewAgent {
            permission: Some("owner".into()),
            ..good.clone()
        },
    ] {
        let err = agents.create(&agent).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition, "{agent:?}");
    }
    assert_eq!(
        agents.delete("nobody").await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    let tickets = connector.tickets().unwrap();
    let no_mail = NewTicket {
        message: "help".into(),
        requester: Participant {
            id: "ann".into(),
            ..Participant::default()
        },
        ..NewTicket::default()
    };
    assert_eq!(
        tickets.create(&no_mail).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    let no_message = NewTicket {
        message: " ".into(),
        requester: Participant {
            id: "ann@example.org".into(),
            ..Participant::default()
        },
        ..NewTicket::default()
    };
    assert_eq!(
        tickets.create(&no_message).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        tickets
            .update("TK1", &TicketChange::default())
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    assert!(server.log.is_empty(), "{:?}", server.log.all());
}

#[test]
fn the_plugin_registers_its_connector_and_refuses_a_connection_without_credentials() {
    let registry = switchboard_core::Registry::from_inventory().unwrap();
    let plugin = registry.get("livechat").unwrap();
    let build = plugin.connector.expect("livechat has a connector");
    let bare = ConnectionConfig::new(connection_id(), "livechat");
    let err = build(&bare).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(
        err.message.contains("`account_id`") && err.message.contains("`personal_access_token`"),
        "{err}"
    );
    // Webhooks still work for that connection.
    let mut unverified = bare;
    unverified.verify = false;
    assert!((plugin.webhook.unwrap())(&unverified).is_ok());
}

#[tokio::test]
async fn creating_a_ticket_or_an_agent_is_never_sent_twice_after_a_server_error() {
    let fake = FakeLiveChat::new().with_agents(1);
    let server = fake.start().await.unwrap();
    let connector = connector(&config(&server, API_KEY));
    let ticket = NewTicket {
        message: "My order did not arrive".into(),
        requester: Participant {
            id: "ann@example.org".into(),
            email: Some("ann@example.org".into()),
            ..Participant::default()
        },
        subject: "Order 1042".into(),
        ..NewTicket::default()
    };
    // LiveChat may have created the ticket before failing: a retry could create a second one.
    server.faults.push(Fault::internal_error());
    let error = connector
        .tickets()
        .unwrap()
        .create(&ticket)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable, "{}", error.message);
    let posts = |path: &str| {
        server
            .log
            .to_path(path)
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    assert_eq!(posts("/tickets"), 1, "the ticket was sent twice");

    server.faults.push(Fault::unavailable());
    let agent = NewAgent {
        login: "new.agent@example.com".into(),
        name: "New Agent".into(),
        ..NewAgent::default()
    };
    let error = connector
        .agents()
        .unwrap()
        .create(&agent)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable, "{}", error.message);
    assert_eq!(posts(CREATE_AGENT), 1, "the agent was sent twice");

    // A 429 refused the call before LiveChat acted on it: that one is retried.
    server.faults.push(Fault::too_many_requests(1));
    connector.agents().unwrap().create(&agent).await.unwrap();
    assert_eq!(posts(CREATE_AGENT), 3);
}

/// A thread still active when pulled is pulled again (by `filters.thread_ids`) by every later
/// sync until it has ended, even once newer threads exist.
#[tokio::test]
async fn an_active_thread_is_pulled_again_until_it_has_ended() {
    use switchboard_testkit::fake::livechat::seeded_chat;
    let mut active = seeded_chat(0);
    active["thread"]["active"] = json!(true);
    active["thread"]["events"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let fake = FakeLiveChat::new().with_archived_chat(active.clone());
    let server = fake.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let connector = connector(&config(&server, API_KEY));
    let id = ConversationId::new(connection_id(), "C000000000");

    sync(&connector, &store, None).await;
    let open = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(open.status, ConversationStatus::Open);
    assert_eq!(open.messages.len(), 1);

    // Newer chats arrive; the first thread is still going on.
    for i in 1..=3 {
        fake.add_archived_chat(seeded_chat(i));
    }
    let mut still = active.clone();
    still["thread"]["events"] = seeded_chat(0)["thread"]["events"].clone();
    still["thread"]["events"]
        .as_array_mut()
        .unwrap()
        .truncate(2);
    fake.add_archived_chat(still);
    sync(&connector, &store, None).await;
    assert_eq!(
        store.get_conversation(&id).unwrap().unwrap().messages.len(),
        2
    );
    let recheck = archive_requests(&server)
        .into_iter()
        .find(|r| r.json().pointer("/filters/thread_ids").is_some())
        .expect("the active thread was asked for by id");
    assert_eq!(
        recheck.json(),
        json!({ "filters": { "thread_ids": ["T000000000"] } })
    );

    // It ends: the next sync pulls it once more and closes the conversation...
    fake.add_archived_chat(seeded_chat(0));
    sync(&connector, &store, None).await;
    let ended = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(ended.status, ConversationStatus::Closed);
    assert_eq!(ended.messages.len(), 3);
    assert_eq!(store.conversation_count().unwrap(), 4);
    // Three snapshots of the first thread (open with 1 and 2 messages, ended) and one of each
    // other chat, and every message once.
    assert_eq!(store.event_count().unwrap(), 3 + 3 + 3 * 4);
    // ...and no sync asks for it again.
    let asked = |server: &FakeServer| {
        archive_requests(server)
            .iter()
            .filter(|r| r.json().pointer("/filters/thread_ids").is_some())
            .count()
    };
    let before = asked(&server);
    sync(&connector, &store, None).await;
    assert_eq!(asked(&server), before);
}

/// API credentials that cannot work stop start-up (the webhook factory refuses the
/// connection) with the reason, instead of a connection that never syncs.
#[test]
fn a_token_without_its_account_id_stops_start_up() {
    let old_style = ConnectionConfig::new(connection_id(), "livechat")
        .with_setting("login", LOGIN)
        .with_secret("api_key", API_KEY)
        .with_secret("webhook_secret", "lc-webhook-secret");
    let err = switchboard_plugin_livechat::webhook(&old_style).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("`account_id`"), "{err}");
    let fixed = old_style.with_setting("account_id", ACCOUNT_ID);
    assert!(switchboard_plugin_livechat::webhook(&fixed).is_ok());
}
