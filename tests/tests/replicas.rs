//! Several replicas on one PostgreSQL database, end to end: real servers on loopback, real
//! HTTP, a real tonic client. Two replicas serve one gap-free log to subscribers on both; a
//! redelivery to the other replica appends nothing; a replica killed with SIGKILL mid-flood
//! loses nothing it acknowledged while the other keeps serving; a dead replica's sync lease runs
//! out and another takes the sync over; `/readyz` is 503 while the database is unreachable and
//! 200 once it is back.
//!
//! The database comes from `SWITCHBOARD_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/switchboard`). Unset: every test prints that it
//! skipped and passes, so the plain `cargo test --workspace` needs no PostgreSQL. Set but
//! unreachable: every test fails. Each test works in a schema of its own (created here, dropped
//! when it passes), so the tests run in parallel.
//!
//! A replica that must die by SIGKILL runs in a child process: this test binary started again
//! with only the ignored test [`replica_process`] selected, which starts the server with
//! `switchboard_server::start` (as `switchboard serve --database-url` does) and prints its
//! addresses. (The `switchboard` binary itself belongs to another package, so cargo builds it
//! for that package's tests only.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::{ConnectionConfig, ConnectionId};
use switchboard_e2e::{SECRET, Sandbox};
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_testkit::fake::Fault;
use switchboard_testkit::fake::livechat::{ACCOUNT_ID, API_KEY, FakeLiveChat, LOGIN};
use tonic::Code;
use tonic::transport::Channel;

const URL_VARIABLE: &str = "SWITCHBOARD_TEST_DATABASE_URL";
const TOKEN: (&str, &str) = ("x-switchboard-token", SECRET);

/// The child replica's settings, passed in its environment.
const CHILD_DATABASE_URL: &str = "SWITCHBOARD_E2E_REPLICA_DATABASE_URL";
const CHILD_LIVECHAT_API: &str = "SWITCHBOARD_E2E_REPLICA_LIVECHAT_API";
const CHILD_LEASE_TTL_MS: &str = "SWITCHBOARD_E2E_REPLICA_LEASE_TTL_MS";

/// The test database's URL; `None` (with a note) when the variable is unset.
fn database_url(test: &str) -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "switchboard-e2e replicas: {URL_VARIABLE} is not set; the PostgreSQL replica tests are skipped (README.md, Tests)"
                );
            });
            eprintln!("skipped {test}: {URL_VARIABLE} is not set");
            None
        }
    }
}

/// `url` with the search_path of its connections set to `schema`.
fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A plain connection for the test's own statements.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("{URL_VARIABLE} is set but the database cannot be reached ({url}): {e}")
        });
    tokio::spawn(connection);
    client
}

/// One test's schema: created empty, dropped by [`Schema::drop`] once the test passed.
struct Schema {
    base: String,
    name: String,
    /// The URL whose connections use the schema.
    url: String,
}

impl Schema {
    async fn fresh(base: &str) -> Schema {
        let name = format!("sbe2e_{}", uuid::Uuid::new_v4().simple());
        admin(base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("creating the test's schema");
        Schema {
            base: base.to_owned(),
            url: with_schema(base, &name),
            name,
        }
    }

    /// The head as the database holds it (every replica's commits).
    async fn head(&self) -> u64 {
        let row = admin(&self.base)
            .await
            .query_one(&format!("SELECT head FROM {}.sb_state", self.name), &[])
            .await
            .expect("reading the head");
        u64::try_from(row.get::<_, i64>(0)).expect("a head")
    }

    async fn drop(self) {
        admin(&self.base)
            .await
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("dropping the test's schema");
    }
}

/// A LiveChat connection whose API is the fake at `base`, for sync.
fn livechat_api(base: &str) -> ConnectionConfig {
    ConnectionConfig::new(ConnectionId::new("lc-api").expect("id"), "livechat")
        .with_secret("webhook_secret", "lc-api-webhook-secret")
        .with_setting("account_id", ACCOUNT_ID)
        .with_setting("login", LOGIN)
        .with_secret("personal_access_token", API_KEY)
        .with_setting("base_url", base)
        .with_setting("agent_api_base_url", base)
        .with_setting("configuration_api_base_url", base)
        .with_setting("deadline_ms", "5000")
        .with_setting("request_timeout_ms", "2000")
}

/// An in-process replica on the database at `url`.
async fn replica(url: &str, livechat: Option<String>, lease_ttl: Option<Duration>) -> Sandbox {
    replica_syncing_every(url, livechat, lease_ttl, None).await
}

/// An in-process replica whose `lc-api` connection (with `livechat`) syncs every `interval`.
async fn replica_syncing_every(
    url: &str,
    livechat: Option<String>,
    lease_ttl: Option<Duration>,
    interval: Option<Duration>,
) -> Sandbox {
    let url = switchboard_server::config::DatabaseUrl::parse(url, URL_VARIABLE).expect("a URL");
    Sandbox::start_with(move |config| {
        config.database_url = Some(url.clone());
        if let Some(base) = &livechat {
            config.connections.push(livechat_api(base));
            if let Some(interval) = interval {
                config
                    .sync_intervals
                    .insert(ConnectionId::new("lc-api").expect("id"), interval);
            }
        }
        if let Some(ttl) = lease_ttl {
            config.limits.sync_lease_ttl = ttl;
        }
    })
    .await
}

/// Not a test of its own: the replica process the SIGKILL tests start (this binary again, with
/// only this test selected). It serves until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a replica process that the kill -9 tests start and kill"]
async fn replica_process() {
    let url = std::env::var(CHILD_DATABASE_URL)
        .unwrap_or_else(|_| panic!("{CHILD_DATABASE_URL} names the database"));
    let livechat = std::env::var(CHILD_LIVECHAT_API).ok();
    let ttl = std::env::var(CHILD_LEASE_TTL_MS)
        .ok()
        .map(|ms| Duration::from_millis(ms.parse().expect("milliseconds")));
    let sandbox = replica(&url, livechat, ttl).await;
    println!("http={} grpc={}", sandbox.http_addr(), sandbox.grpc_addr());
    std::io::stdout().flush().expect("stdout");
    std::future::pending::<()>().await;
}

/// A replica in a child process, killed with SIGKILL.
struct ChildReplica {
    child: Child,
    http: String,
    grpc: String,
}

impl ChildReplica {
    fn start(url: &str, livechat: Option<&str>, lease_ttl: Option<Duration>) -> ChildReplica {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .args(["replica_process", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DATABASE_URL, url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(base) = livechat {
            command.env(CHILD_LIVECHAT_API, base);
        }
        if let Some(ttl) = lease_ttl {
            command.env(CHILD_LEASE_TTL_MS, ttl.as_millis().to_string());
        }
        let mut child = command.spawn().expect("the replica process starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("http=") => break line,
                Some(Ok(_)) => continue,
                other => panic!("the replica process printed no addresses: {other:?}"),
            }
        };
        let mut http = None;
        let mut grpc = None;
        for part in line.split_whitespace() {
            if let Some(addr) = part.strip_prefix("http=") {
                http = Some(format!("http://{addr}"));
            }
            if let Some(addr) = part.strip_prefix("grpc=") {
                grpc = Some(format!("http://{addr}"));
            }
        }
        ChildReplica {
            child,
            http: http.expect("http address"),
            grpc: grpc.expect("grpc address"),
        }
    }

    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
        self.child.wait().expect("reaped");
    }
}

impl Drop for ChildReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(grpc: &str) -> SwitchboardClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = SwitchboardClient::connect(grpc.to_owned()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {grpc}");
}

/// A StreamEvents subscriber from the beginning, collecting what it receives.
fn subscribe(grpc: String) -> (Arc<Mutex<Vec<v1::Event>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut client = connect(&grpc).await;
        let mut stream = client
            .stream_events(v1::StreamEventsRequest {
                start: Some(v1::stream_events_request::Start::AfterSequence(0)),
                ..Default::default()
            })
            .await
            .expect("stream")
            .into_inner();
        while let Some(event) = stream.message().await.expect("the stream stays up") {
            sink.lock().expect("lock").push(event);
        }
    });
    (seen, task)
}

/// Waits until `seen` holds `count` events (at most 30 s) and returns them.
async fn wait_for(seen: &Mutex<Vec<v1::Event>>, count: usize, who: &str) -> Vec<v1::Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = seen.lock().expect("lock").clone();
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{who} received {} of {count} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A LiveChat `chat_started` with no messages: one event, of conversation `livechat/{chat}`.
fn chat_started(chat: &str) -> String {
    format!(
        r#"{{"event_type":"chat_started","event_unique_id":"evt-{chat}","license_id":"1067","lc_version":"2","chat":{{"id":"{chat}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V{chat}","name":"n"}}}}"#
    )
}

/// Posts a LiveChat `chat_started` for `chat` to the replica at `http`; the status.
async fn post_chat(client: &reqwest::Client, http: &str, chat: &str) -> Result<u16, String> {
    client
        .post(format!("{http}/webhooks/livechat"))
        .header(TOKEN.0, TOKEN.1)
        .header("content-type", "application/json")
        .body(chat_started(chat))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

fn http_client() -> reqwest::Client {
    switchboard_e2e::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// How many events of each conversation `events` hold.
fn per_conversation(events: &[v1::Event]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for event in events {
        if let Some(id) = &event.conversation_id {
            *seen.entry(id.clone()).or_default() += 1;
        }
    }
    seen
}

fn sequences(events: &[v1::Event]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_one_gap_free_log_and_a_redelivery_to_the_other_appends_nothing() {
    let Some(base) = database_url("two_replicas") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let a = replica(&schema.url, None, None).await;
    let b = replica(&schema.url, None, None).await;
    let (seen_a, sub_a) = subscribe(format!("http://{}", a.grpc_addr()));
    let (seen_b, sub_b) = subscribe(format!("http://{}", b.grpc_addr()));

    // Four concurrent clients per replica, 30 webhooks each, both replicas at once.
    let client = http_client();
    let mut posts = tokio::task::JoinSet::new();
    for (name, http) in [("a", a.http_base()), ("b", b.http_base())] {
        for c in 0..4 {
            let (client, http) = (client.clone(), http.clone());
            posts.spawn(async move {
                let mut chats = Vec::new();
                for n in 0..30 {
                    let chat = format!("R{name}{c}-{n}");
                    assert_eq!(post_chat(&client, &http, &chat).await, Ok(200), "{chat}");
                    chats.push(chat);
                }
                chats
            });
        }
    }
    let mut posted = BTreeSet::new();
    while let Some(chats) = posts.join_next().await {
        posted.extend(chats.expect("posts succeed"));
    }
    let total = posted.len();
    assert_eq!(total, 240);

    // Each subscriber sees 1..=N, every posted chat once, in the same order.
    let events_a = wait_for(&seen_a, total, "the subscriber on replica A").await;
    let events_b = wait_for(&seen_b, total, "the subscriber on replica B").await;
    let expected: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(sequences(&events_a), expected, "gap-free on A");
    assert_eq!(sequences(&events_b), expected, "gap-free on B");
    let order = |events: &[v1::Event]| -> Vec<Option<String>> {
        events.iter().map(|e| e.conversation_id.clone()).collect()
    };
    assert_eq!(order(&events_a), order(&events_b), "the same order on both");
    let counts = per_conversation(&events_a);
    assert_eq!(counts.len(), total);
    for chat in &posted {
        assert_eq!(counts.get(&format!("livechat/{chat}")), Some(&1), "{chat}");
    }

    // Every webhook redelivered to the replica that did not take it: all acknowledged, none
    // appended. A fresh webhook afterwards gets N+1, so the redeliveries took no sequence.
    for chat in posted.iter().filter(|c| c.starts_with("Ra")).take(20) {
        assert_eq!(post_chat(&client, &b.http_base(), chat).await, Ok(200));
    }
    for chat in posted.iter().filter(|c| c.starts_with("Rb")).take(20) {
        assert_eq!(post_chat(&client, &a.http_base(), chat).await, Ok(200));
    }
    assert_eq!(post_chat(&client, &b.http_base(), "marker").await, Ok(200));
    for (seen, who) in [(&seen_a, "A"), (&seen_b, "B")] {
        let events = wait_for(seen, total + 1, who).await;
        let last = &events[total];
        assert_eq!(last.sequence, total as u64 + 1, "{who}");
        assert_eq!(last.conversation_id.as_deref(), Some("livechat/marker"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            seen.lock().expect("lock").len(),
            total + 1,
            "{who}: nothing more"
        );
    }
    assert_eq!(schema.head().await, total as u64 + 1);

    sub_a.abort();
    sub_b.abort();
    let (mut a, mut b) = (a, b);
    a.stop().await;
    b.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_flood_loses_nothing_it_acknowledged_and_the_other_keeps_serving() {
    let Some(base) = database_url("kill_9") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let survivor = replica(&schema.url, None, None).await;
    let mut doomed = ChildReplica::start(&schema.url, None, None);
    let client = http_client();

    // The flood: eight clients post unique chats to the doomed replica until it is gone.
    let mut flood = tokio::task::JoinSet::new();
    for c in 0..8 {
        let (client, http) = (client.clone(), doomed.http.clone());
        flood.spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let chat = format!("K{c}-{n}");
                match post_chat(&client, &http, &chat).await {
                    Ok(200) => acked.push(chat),
                    Ok(status) => panic!("the doomed replica answered {status}"),
                    Err(_) => break, // killed
                }
            }
            acked
        });
    }
    // Meanwhile the survivor takes webhooks and answers gRPC; every call must succeed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (client, http) = (client.clone(), survivor.http_base());
        let grpc = format!("http://{}", survivor.grpc_addr());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut grpc = connect(&grpc).await;
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let chat = format!("S-{n}");
                assert_eq!(
                    post_chat(&client, &http, &chat).await,
                    Ok(200),
                    "the survivor took {chat}"
                );
                acked.push(chat);
                grpc.list_conversations(v1::ListConversationsRequest {
                    page_size: 10,
                    ..Default::default()
                })
                .await
                .expect("the survivor answers ListConversations");
                n += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    doomed.kill_9();
    let mut acked = Vec::new();
    while let Some(chats) = flood.join_next().await {
        acked.extend(chats.expect("flood task"));
    }
    // The survivor goes on serving after the kill too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let survivor_acked = steady.await.expect("the survivor served throughout");
    assert!(
        !acked.is_empty(),
        "the doomed replica acknowledged something"
    );
    assert!(!survivor_acked.is_empty());

    // Read through the survivor: 1..=head, every acknowledged chat exactly once.
    let head = schema.head().await;
    let events = survivor.read_events(0, head as usize).await;
    assert_eq!(
        sequences(&events),
        (1..=head).collect::<Vec<_>>(),
        "gap-free"
    );
    let counts = per_conversation(&events);
    assert!(counts.values().all(|n| *n == 1), "no chat twice");
    for chat in acked.iter().chain(&survivor_acked) {
        assert_eq!(
            counts.get(&format!("livechat/{chat}")),
            Some(&1),
            "acknowledged {chat} is stored exactly once"
        );
    }
    println!(
        "kill -9 mid-flood: {} acknowledged by the killed replica, {} by the survivor, {head} events",
        acked.len(),
        survivor_acked.len()
    );
    let mut survivor = survivor;
    survivor.stop().await;
    schema.drop().await;
}

async fn sync_stream(
    client: &mut SwitchboardClient<Channel>,
) -> Result<tonic::Streaming<v1::SyncProgress>, tonic::Status> {
    Ok(client
        .sync_connection(v1::SyncConnectionRequest {
            connection_id: "lc-api".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_sync_lease_runs_out_and_another_replica_takes_the_sync_over() {
    let Some(base) = database_url("sync_lease") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let chats = 400;
    let vendor = FakeLiveChat::new().with_archived_chats(chats);
    let fake = vendor.start().await.expect("fake starts");
    // Slow pages: the sync is still running when its replica is killed.
    fake.faults.always(Fault::Delay(Duration::from_millis(250)));
    let ttl = Duration::from_millis(1500);
    let api = fake.base_url();
    let mut doomed = ChildReplica::start(&schema.url, Some(&api), Some(ttl));
    let survivor = replica(&schema.url, Some(api.clone()), Some(ttl)).await;

    let mut on_doomed = connect(&doomed.grpc).await;
    let mut running = sync_stream(&mut on_doomed).await.expect("the sync starts");
    let first = running
        .message()
        .await
        .expect("progress")
        .expect("a first page");
    assert!(!first.done, "the sync is longer than one page: {first:?}");

    // While it runs there, the other replica refuses to sync the same connection.
    let mut on_survivor = survivor.client().await;
    let refused = match sync_stream(&mut on_survivor).await {
        Ok(mut stream) => stream.message().await.expect_err("refused"),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("a sync of connection lc-api is running on another replica"),
        "{}",
        refused.message()
    );

    // The replica dies holding the lease; until its ttl runs out the sync stays refused, then
    // the survivor takes it over and finishes from the saved cursor.
    doomed.kill_9();
    let killed = Instant::now();
    fake.faults.clear();
    let mut refused_after_kill = 0;
    let finished = loop {
        match sync_stream(&mut on_survivor).await {
            Ok(mut stream) => {
                let mut last = None;
                let mut refused_now = None;
                loop {
                    match stream.message().await {
                        Ok(Some(progress)) => last = Some(progress),
                        Ok(None) => break,
                        Err(status) => {
                            refused_now = Some(status);
                            break;
                        }
                    }
                }
                match (refused_now, last) {
                    (None, Some(last)) => break last,
                    (Some(status), _) if status.code() == Code::Aborted => refused_after_kill += 1,
                    other => panic!("unexpected sync answer: {other:?}"),
                }
            }
            Err(status) if status.code() == Code::Aborted => refused_after_kill += 1,
            Err(status) => panic!("unexpected sync answer: {status:?}"),
        }
        assert!(
            killed.elapsed() < ttl + Duration::from_secs(10),
            "the dead replica's lease was not taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(finished.done, "{finished:?}");
    // The lease was renewed at most a third of the ttl before the kill: it held for at least
    // two thirds of the ttl after it.
    assert!(
        refused_after_kill > 0,
        "the dead replica's lease held for a while"
    );
    assert!(
        killed.elapsed() >= ttl * 2 / 3,
        "taken over after {:?}, before the lease could run out",
        killed.elapsed()
    );
    let conversations = survivor
        .list_all(v1::ListConversationsRequest {
            connection_ids: vec!["lc-api".to_owned()],
            page_size: 1000,
            ..Default::default()
        })
        .await;
    assert_eq!(conversations.len(), chats, "every archived chat once");
    let mut survivor = survivor;
    survivor.stop().await;
    schema.drop().await;
}

/// A TCP relay to the database that can be taken down (its port closed, its connections cut)
/// and brought back on the same port: the database as the replica sees it going away.
struct Relay {
    port: u16,
    target: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let relay = Relay {
            port: listener.local_addr().expect("addr").port(),
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
                tasks.lock().expect("lock").push(relayed);
            }
        });
        self.tasks.lock().expect("lock").push(accept);
    }

    fn down(&self) {
        for task in self.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding the relay's port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

async fn readyz(client: &reqwest::Client, http: &str) -> (u16, String) {
    let response = client
        .get(format!("{http}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_and_grpc_unavailable_while_the_database_is_unreachable_and_both_recover() {
    let Some(base) = database_url("readyz") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let config: tokio_postgres::Config = base.parse().expect("the test URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("this test relays TCP; the test URL's host is {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("lookup")
        .next()
        .expect("the test database's address");
    let authority = format!("{host}:{port}");
    assert!(
        schema.url.contains(&authority),
        "this test needs {URL_VARIABLE} to name host:port ({base})"
    );
    let relay = Relay::start(target).await;
    let relayed = schema
        .url
        .replacen(&authority, &format!("127.0.0.1:{}", relay.port), 1);
    let server = replica(&relayed, None, None).await;
    let client = http_client();
    assert_eq!(readyz(&client, &server.http_base()).await.0, 200);
    assert_eq!(post_chat(&client, &server.http_base(), "up").await, Ok(200));

    relay.down();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reason = loop {
        let (status, body) = readyz(&client, &server.http_base()).await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with the database gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.contains("PostgreSQL database cannot be reached"),
        "{reason}"
    );
    let mut grpc = server.client().await;
    let status = grpc
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .expect_err("no database, no listing");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database cannot be reached"),
        "{status:?}"
    );
    let refused = post_chat(&client, &server.http_base(), "down").await;
    assert_eq!(
        refused,
        Ok(503),
        "a webhook is refused, so the vendor retries"
    );

    relay.up().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(&client, &server.http_base()).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        post_chat(&client, &server.http_base(), "back").await,
        Ok(200)
    );
    let listed = grpc
        .list_conversations(v1::ListConversationsRequest::default())
        .await
        .expect("listing works again")
        .into_inner();
    let ids: BTreeSet<String> = listed.conversations.into_iter().map(|c| c.id).collect();
    assert!(
        ids.contains("livechat/up") && ids.contains("livechat/back"),
        "{ids:?}"
    );
    assert!(
        !ids.contains("livechat/down"),
        "the refused webhook was not stored"
    );
    let mut server = server;
    server.stop().await;
    relay.down();
    schema.drop().await;
}

/// `switchboard migrate`'s work: the first run applies the migrations, the next finds none to
/// apply, and replicas start on the migrated schema without applying any again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_migrations_once_and_replicas_start_on_them() {
    let Some(base) = database_url("migrate") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let url =
        switchboard_server::config::DatabaseUrl::parse(&schema.url, URL_VARIABLE).expect("a URL");
    let applied = switchboard_server::migrate(&url).await.expect("migrates");
    assert!(applied >= 2, "the initial schema and the leases: {applied}");
    assert_eq!(switchboard_server::migrate(&url).await.expect("again"), 0);
    let (a, b) = tokio::join!(
        replica(&schema.url, None, None),
        replica(&schema.url, None, None)
    );
    let history = admin(&base)
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.refinery_schema_history",
                schema.name
            ),
            &[],
        )
        .await
        .expect("the migration history");
    assert_eq!(
        history.get::<_, i64>(0),
        applied as i64,
        "each applied once"
    );
    let client = http_client();
    assert_eq!(post_chat(&client, &a.http_base(), "m1").await, Ok(200));
    assert_eq!(post_chat(&client, &b.http_base(), "m2").await, Ok(200));
    assert_eq!(schema.head().await, 2);
    let (mut a, mut b) = (a, b);
    a.stop().await;
    b.stop().await;
    schema.drop().await;
}

/// Two replicas with the same periodic sync start together: the connection is synced once,
/// not once per replica (one holds the lease while the other's tick skips, or finds the sync
/// saved less than an interval ago).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_sync_of_two_replicas_runs_once_per_interval() {
    let Some(base) = database_url("periodic") else {
        return;
    };
    let schema = Schema::fresh(&base).await;
    let chats = 150;
    let vendor = FakeLiveChat::new().with_archived_chats(chats);
    let fake = vendor.start().await.expect("fake starts");
    let api = fake.base_url();
    let hour = Some(Duration::from_secs(3600));
    let (a, b) = tokio::join!(
        replica_syncing_every(&schema.url, Some(api.clone()), None, hour),
        replica_syncing_every(&schema.url, Some(api.clone()), None, hour)
    );
    let request = v1::ListConversationsRequest {
        connection_ids: vec!["lc-api".to_owned()],
        page_size: 1000,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.list_all(request.clone()).await.len() < chats {
        assert!(Instant::now() < deadline, "the periodic sync did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for the other replica's start-up tick to have run, had it not skipped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut client = b.client().await;
    let pulled = client
        .list_connections(v1::ListConnectionsRequest {})
        .await
        .expect("list connections")
        .into_inner()
        .connections
        .into_iter()
        .find(|c| c.id == "lc-api")
        .and_then(|c| c.sync)
        .expect("the connection's sync state")
        .records_pulled;
    // One whole run, for comparison: the same archive pulled again from scratch.
    let mut stream = client
        .sync_connection(v1::SyncConnectionRequest {
            connection_id: "lc-api".to_owned(),
            from_scratch: true,
            ..Default::default()
        })
        .await
        .expect("a manual sync")
        .into_inner();
    let mut last = None;
    while let Some(progress) = stream.message().await.expect("the sync runs") {
        last = Some(progress);
    }
    let one_run = last.expect("progress").records;
    assert!(one_run >= chats as u64, "{one_run}");
    assert_eq!(
        pulled, one_run,
        "the archive was pulled once, not once per replica"
    );
    let (mut a, mut b) = (a, b);
    a.stop().await;
    b.stop().await;
    schema.drop().await;
}
