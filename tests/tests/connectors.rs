//! Connectors end to end: the real server, a real tonic client, and the fake LiveChat API on
//! loopback. `SyncConnection` backfills archived chats into conversations, `ManageTickets` and
//! `ManageAgents` act at the vendor and mirror into the store, and the failure modes answer the
//! documented status codes.

use std::time::Duration;

use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_e2e::{Sandbox, ticket_of};
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_testkit::fake::livechat::{ACCOUNT_ID, API_KEY, FakeLiveChat, LOGIN};
use switchboard_testkit::fake::{FakeServer, Fault};
use tonic::Code;
use tonic::transport::Channel;

const LC: &str = "lc-api";

/// A LiveChat connection whose API is the fake at `base`.
fn livechat_api(base: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new(LC).expect("id"), "livechat")
        .with_secret("webhook_secret", "lc-api-webhook-secret")
        .with_setting("account_id", ACCOUNT_ID)
        .with_setting("login", LOGIN)
        .with_secret("personal_access_token", API_KEY)
        .with_setting("base_url", base)
        .with_setting("agent_api_base_url", base)
        .with_setting("configuration_api_base_url", base)
        .with_setting("deadline_ms", "3000")
        .with_setting("request_timeout_ms", "1000")
}

async fn sandbox_with(fake: &FakeServer) -> Sandbox {
    let base = fake.base_url();
    Sandbox::start_with(move |config| config.connections.push(livechat_api(&base))).await
}

async fn sync(
    client: &mut SwitchboardClient<Channel>,
    connection: &str,
) -> Result<Vec<v1::SyncProgress>, tonic::Status> {
    let mut stream = client
        .sync_connection(v1::SyncConnectionRequest {
            connection_id: connection.to_owned(),
            ..v1::SyncConnectionRequest::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(progress) = stream.message().await? {
        seen.push(progress);
    }
    Ok(seen)
}

async fn connection_state(client: &mut SwitchboardClient<Channel>, id: &str) -> v1::SyncState {
    client
        .list_connections(v1::ListConnectionsRequest {})
        .await
        .expect("list connections")
        .into_inner()
        .connections
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| c.sync)
        .expect("connection listed")
}

#[tokio::test]
async fn sync_connection_backfills_archives_once_and_reports_progress() {
    let vendor = FakeLiveChat::new().with_archived_chats(120);
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;

    let progress = sync(&mut client, LC).await.expect("sync succeeds");
    let last = progress.last().expect("progress reported");
    assert!(last.done, "{last:?}");
    assert!(last.pages >= 2, "paged: {last:?}");
    assert!(last.records >= 120, "{last:?}");
    assert_eq!(
        last.appended, last.records,
        "a first sync appends everything"
    );
    assert!(
        progress.windows(2).all(|w| w[0].pages < w[1].pages),
        "progress after every page"
    );

    let conversations = sandbox
        .list_all(v1::ListConversationsRequest {
            connection_ids: vec![LC.to_owned()],
            ..v1::ListConversationsRequest::default()
        })
        .await;
    assert_eq!(
        conversations.len(),
        120,
        "one conversation per archived chat"
    );

    let state = connection_state(&mut client, LC).await;
    assert!(state.supported);
    assert_eq!(state.records_pulled, last.records);
    assert!(state.cursor.is_some_and(|c| !c.is_empty()));
    assert!(state.last_success.is_some());
    assert_eq!(state.last_error, None);

    // Running it again pulls nothing new and appends nothing.
    let head = sandbox.head();
    let again = sync(&mut client, LC).await.expect("second sync");
    assert!(again.last().is_some_and(|p| p.done && p.appended == 0));
    assert_eq!(sandbox.head(), head);
}

#[tokio::test]
async fn a_connection_that_cannot_sync_says_why() {
    let vendor = FakeLiveChat::new();
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;

    let tencent = sync(&mut client, "tencent")
        .await
        .expect_err("no connector");
    assert_eq!(tencent.code(), Code::FailedPrecondition);
    assert!(
        tencent.message().contains("has no connector"),
        "{}",
        tencent.message()
    );

    // The sandbox's own `livechat` connection has webhook secrets but no API credentials.
    let livechat = sync(&mut client, "livechat")
        .await
        .expect_err("no credentials");
    assert_eq!(livechat.code(), Code::FailedPrecondition);
    assert!(
        livechat.message().contains("api_key"),
        "{}",
        livechat.message()
    );
    let state = connection_state(&mut client, "livechat").await;
    assert!(!state.supported);
    assert!(
        state
            .unsupported_reason
            .is_some_and(|r| r.contains("api_key"))
    );

    let unknown = sync(&mut client, "nope").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_vendor_that_stays_down_gives_unavailable_and_records_the_error() {
    let vendor = FakeLiveChat::new().with_archived_chats(10);
    let fake = vendor.start().await.expect("fake starts");
    fake.faults.always(Fault::unavailable());
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;

    let started = std::time::Instant::now();
    let error = sync(&mut client, LC).await.expect_err("vendor down");
    assert_eq!(error.code(), Code::Unavailable, "{}", error.message());
    assert!(error.message().contains("503"), "{}", error.message());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped at the deadline"
    );
    let state = connection_state(&mut client, LC).await;
    assert!(state.last_error.is_some_and(|e| e.contains("503")));
    assert_eq!(sandbox.head(), 0, "nothing stored");

    // Back up: the same call now succeeds.
    fake.faults.clear();
    let progress = sync(&mut client, LC).await.expect("sync after recovery");
    assert!(progress.last().is_some_and(|p| p.done && p.appended > 0));
    assert_eq!(connection_state(&mut client, LC).await.last_error, None);
}

fn create(key: Option<&str>) -> v1::ManageTicketsRequest {
    v1::ManageTicketsRequest {
        operation: Some(v1::manage_tickets_request::Operation::Create(
            v1::CreateTicket {
                connection_id: LC.to_owned(),
                message: "My order never arrived".to_owned(),
                requester_email: "buyer@example.com".to_owned(),
                requester_name: Some("Buyer".to_owned()),
                subject: "Order 1234".to_owned(),
                idempotency_key: key.map(str::to_owned),
                ..v1::CreateTicket::default()
            },
        )),
    }
}

#[tokio::test]
async fn vendor_tickets_are_created_once_updated_listed_and_mirrored() {
    let vendor = FakeLiveChat::new().with_tickets(30);
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;
    let before = vendor.snapshot().tickets.len();

    let first = ticket_of(
        client
            .manage_tickets(create(Some("order-1234")))
            .await
            .expect("create")
            .into_inner(),
    );
    assert_eq!(first.origin(), v1::TicketOrigin::Vendor);
    assert_eq!(first.subject, "Order 1234");
    let retried = ticket_of(
        client
            .manage_tickets(create(Some("order-1234")))
            .await
            .expect("retried create")
            .into_inner(),
    );
    assert_eq!(
        retried.id, first.id,
        "the retry answers with the first ticket"
    );
    assert_eq!(
        vendor.snapshot().tickets.len(),
        before + 1,
        "one ticket at the vendor"
    );
    let posts = fake
        .log
        .all()
        .into_iter()
        .filter(|r| r.method == http::Method::POST && r.path.ends_with("/tickets"))
        .collect::<Vec<_>>();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].header("x-api-version"), Some("2"));
    assert!(
        posts[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );

    // LiveChat's ticket API (deprecated) documents one update, the tags.
    let updated = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(v1::manage_tickets_request::Operation::Update(
                    v1::UpdateTicket {
                        id: first.id.clone(),
                        set_tags: true,
                        tags: vec!["refund".to_owned()],
                        ..v1::UpdateTicket::default()
                    },
                )),
            })
            .await
            .expect("update")
            .into_inner(),
    );
    assert_eq!(updated.tags, ["refund"]);
    let solved = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::Update(
                v1::UpdateTicket {
                    id: first.id.clone(),
                    status: v1::TicketStatus::Solved as i32,
                    ..v1::UpdateTicket::default()
                },
            )),
        })
        .await
        .expect_err("LiveChat cannot change a ticket's status");
    assert_eq!(
        solved.code(),
        Code::FailedPrecondition,
        "{}",
        solved.message()
    );

    let got = ticket_of(
        client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(v1::manage_tickets_request::Operation::Get(v1::GetTicket {
                    id: first.id.clone(),
                })),
            })
            .await
            .expect("get")
            .into_inner(),
    );
    assert_eq!(got.tags, ["refund"]);

    // A vendor list pages with the vendor's token; every listed ticket is mirrored.
    let mut token = String::new();
    let mut listed = 0;
    loop {
        let response = client
            .manage_tickets(v1::ManageTicketsRequest {
                operation: Some(v1::manage_tickets_request::Operation::List(
                    v1::ListTickets {
                        connection_ids: vec![LC.to_owned()],
                        page_token: token.clone(),
                        ..v1::ListTickets::default()
                    },
                )),
            })
            .await
            .expect("list")
            .into_inner();
        let Some(v1::manage_tickets_response::Result::List(page)) = response.result else {
            panic!("expected a list");
        };
        assert!(page.tickets.len() <= 25, "LiveChat pages 25 at a time");
        assert!(
            page.tickets
                .iter()
                .all(|t| t.origin() == v1::TicketOrigin::Vendor)
        );
        listed += page.tickets.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, before + 1);
    // The store has them too: a list over two connections reads the store.
    let stored = client
        .manage_tickets(v1::ManageTicketsRequest {
            operation: Some(v1::manage_tickets_request::Operation::List(
                v1::ListTickets {
                    connection_ids: vec![LC.to_owned(), "tencent".to_owned()],
                    page_size: 1000,
                    ..v1::ListTickets::default()
                },
            )),
        })
        .await
        .expect("stored list")
        .into_inner();
    let Some(v1::manage_tickets_response::Result::List(stored)) = stored.result else {
        panic!("expected a list");
    };
    assert_eq!(stored.tickets.len(), before + 1);
    let events = sandbox.read_events(0, sandbox.head() as usize).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind() == v1::EventKind::TicketCreated
                && e.ticket_id.as_deref() == Some(first.id.as_str()))
    );
}

#[tokio::test]
async fn agents_are_validated_then_managed_at_the_vendor() {
    let vendor = FakeLiveChat::new();
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;
    use v1::manage_agents_request::Operation;

    let bad = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::Create(v1::CreateAgent {
                connection_id: LC.to_owned(),
                login: "jane@example.com".to_owned(),
                name: "Jane".to_owned(),
                password: Some("123".to_owned()),
                ..v1::CreateAgent::default()
            })),
        })
        .await
        .expect_err("short password");
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A role the vendor does not have is refused by its connector, before any call.
    let unknown_role = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::Create(v1::CreateAgent {
                connection_id: LC.to_owned(),
                login: "jane@example.com".to_owned(),
                name: "Jane".to_owned(),
                permission: Some("superuser".to_owned()),
                ..v1::CreateAgent::default()
            })),
        })
        .await
        .expect_err("unknown role");
    assert_eq!(unknown_role.code(), Code::InvalidArgument);
    assert!(fake.log.is_empty(), "nothing reached the vendor");

    // LiveChat's own roles pass through the server to the vendor (viceowner included).
    client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::Create(v1::CreateAgent {
                connection_id: LC.to_owned(),
                login: "vice@example.com".to_owned(),
                name: "Vic".to_owned(),
                permission: Some("viceowner".to_owned()),
                ..v1::CreateAgent::default()
            })),
        })
        .await
        .expect("a viceowner is created");
    let vice = fake
        .log
        .all()
        .into_iter()
        .find(|r| r.method == http::Method::POST)
        .expect("the create reached the vendor");
    assert_eq!(vice.json()["role"], "viceowner");
    fake.log.clear();

    let created = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::Create(v1::CreateAgent {
                connection_id: LC.to_owned(),
                login: "jane@example.com".to_owned(),
                name: "Jane".to_owned(),
                permission: Some("normal".to_owned()),
                ..v1::CreateAgent::default()
            })),
        })
        .await
        .expect("create agent")
        .into_inner();
    let Some(v1::manage_agents_response::Result::Agent(agent)) = created.result else {
        panic!("expected an agent");
    };
    assert_eq!(agent.login, "jane@example.com");
    let post = fake
        .log
        .all()
        .into_iter()
        .find(|r| r.method == http::Method::POST)
        .expect("create reached the vendor");
    assert_eq!(post.json()["job_title"], "Support Agent");

    let listed = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::List(v1::ListAgents {
                connection_id: LC.to_owned(),
            })),
        })
        .await
        .expect("list agents")
        .into_inner();
    let Some(v1::manage_agents_response::Result::List(list)) = listed.result else {
        panic!("expected a list");
    };
    assert!(list.agents.iter().any(|a| a.login == "jane@example.com"));

    client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::Delete(v1::DeleteAgent {
                connection_id: LC.to_owned(),
                login: "jane@example.com".to_owned(),
            })),
        })
        .await
        .expect("delete agent");
    assert!(
        vendor
            .snapshot()
            .agents
            .iter()
            .all(|a| a.login != "jane@example.com")
    );

    let tencent = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(Operation::List(v1::ListAgents {
                connection_id: "tencent".to_owned(),
            })),
        })
        .await
        .expect_err("tencent has no agent API");
    assert_eq!(tencent.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_create_the_caller_gave_up_on_is_still_recorded_so_its_retry_creates_nothing() {
    let vendor = FakeLiveChat::new();
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;
    // The vendor takes 1.5 s to answer the create; the caller gives up after 300 ms.
    fake.faults.push(Fault::Delay(Duration::from_millis(1500)));
    let mut request = tonic::Request::new(create(Some("slow-1")));
    request.set_timeout(Duration::from_millis(300));
    let cut = client
        .manage_tickets(request)
        .await
        .expect_err("caller gave up");
    assert!(
        matches!(cut.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{cut:?}"
    );
    // A retry while the first is still at the vendor is told to wait...
    let busy = client
        .manage_tickets(create(Some("slow-1")))
        .await
        .expect_err("first create still running");
    assert_eq!(busy.code(), Code::Aborted, "{}", busy.message());
    // ...and once it finished, the retry answers with its ticket.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let retried = ticket_of(
        client
            .manage_tickets(create(Some("slow-1")))
            .await
            .expect("retry")
            .into_inner(),
    );
    assert_eq!(retried.origin(), v1::TicketOrigin::Vendor);
    assert_eq!(
        vendor.snapshot().tickets.len(),
        1,
        "one ticket at the vendor"
    );
}

#[tokio::test]
async fn an_agent_deleted_and_created_again_is_mirrored_each_time() {
    let vendor = FakeLiveChat::new();
    let fake = vendor.start().await.expect("fake starts");
    let sandbox = sandbox_with(&fake).await;
    let mut client = sandbox.client().await;
    use v1::manage_agents_request::Operation;
    let create = || v1::ManageAgentsRequest {
        operation: Some(Operation::Create(v1::CreateAgent {
            connection_id: LC.to_owned(),
            login: "sam@example.com".to_owned(),
            name: "Sam".to_owned(),
            ..v1::CreateAgent::default()
        })),
    };
    let delete = || v1::ManageAgentsRequest {
        operation: Some(Operation::Delete(v1::DeleteAgent {
            connection_id: LC.to_owned(),
            login: "sam@example.com".to_owned(),
        })),
    };
    client.manage_agents(create()).await.expect("create");
    client.manage_agents(delete()).await.expect("delete");
    client.manage_agents(create()).await.expect("create again");
    let sam: Vec<String> = sandbox
        .read_events(0, sandbox.head() as usize)
        .await
        .into_iter()
        .filter(|e| {
            e.kind() == v1::EventKind::AgentUpdated && e.payload_json.contains("sam@example.com")
        })
        .map(|e| e.vendor_event)
        .collect();
    assert_eq!(
        sam,
        [
            "switchboard.agent_mirrored",
            "switchboard.agent_deleted",
            "switchboard.agent_mirrored"
        ],
        "the store follows the vendor: Sam exists again"
    );
}

/// The top README's example LiveChat connection, as written, syncs against the fake LiveChat:
/// the `[[connections]]` section `livechat-api` is parsed by the server's own configuration
/// reader with the token in the environment variable the README names; only the API base URLs
/// are pointed at the fake (the example talks to api.livechatinc.com).
#[tokio::test]
async fn the_readme_example_livechat_connection_syncs() {
    // The README shows it commented out (it needs the token to start); uncommented as the
    // README says, with the token in the environment, it syncs.
    let readme = include_str!("../../README.md");
    let start = readme
        .find("# [[connections]]\n# id = \"livechat-api\"")
        .expect("the README has the livechat-api example");
    let section: String = readme[start..]
        .lines()
        .take_while(|line| line.starts_with('#'))
        .map(|line| format!("{}\n", line.trim_start_matches('#').trim_start()))
        .collect();
    let section = section.as_str();
    let registry = switchboard_core::Registry::from_inventory().expect("registry");
    let env = [(
        "SWITCHBOARD_SECRET__LIVECHAT_API__PERSONAL_ACCESS_TOKEN".to_owned(),
        API_KEY.to_owned(),
    )];
    let parsed = switchboard_server::ServerConfig::from_toml(section, &registry, env)
        .unwrap_or_else(|e| panic!("the README's example does not parse: {e}\n{section}"));
    let mut connection = parsed
        .connections
        .into_iter()
        .find(|c| c.id.as_str() == "livechat-api")
        .expect("livechat-api");
    assert_eq!(connection.setting("account_id"), Some(ACCOUNT_ID));
    assert_eq!(connection.setting("login"), Some(LOGIN));

    let vendor = FakeLiveChat::new().with_archived_chats(30).with_tickets(3);
    let fake = vendor.start().await.expect("fake starts");
    for key in [
        "base_url",
        "agent_api_base_url",
        "configuration_api_base_url",
    ] {
        connection
            .settings
            .insert(key.to_owned(), fake.base_url().to_owned());
    }
    let sandbox =
        Sandbox::start_with(move |config| config.connections.push(connection.clone())).await;
    let mut client = sandbox.client().await;
    let progress = sync(&mut client, "livechat-api").await.expect("sync");
    assert!(progress.last().is_some_and(|p| p.done), "{progress:?}");
    let conversations = sandbox
        .list_all(v1::ListConversationsRequest {
            connection_ids: vec!["livechat-api".to_owned()],
            ..v1::ListConversationsRequest::default()
        })
        .await;
    assert_eq!(conversations.len(), 30);
    // Agents and tickets work with the same example.
    let agents = client
        .manage_agents(v1::ManageAgentsRequest {
            operation: Some(v1::manage_agents_request::Operation::List(v1::ListAgents {
                connection_id: "livechat-api".to_owned(),
            })),
        })
        .await
        .expect("list agents");
    assert!(agents.into_inner().result.is_some());
}
