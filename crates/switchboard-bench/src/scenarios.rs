//! The scenarios and their shared setup.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::Rng;
use switchboard_core::ConversationId;
use switchboard_core::{
    ConnectionId, ConversationPatch, ConversationStatus, EventKind, EventPayload, IncomingEvent,
    Message, Participant, Registry, Role, Timestamp,
};
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_server::{RunningServer, ServerConfig};
use switchboard_store::{AppendRequest, ConversationQuery, Store};
use tonic::transport::Channel;

use crate::LoadArgs;
use crate::load::{self, Stats};
use crate::workload::{self, Template, vendors};

/// The CPU model from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// This process's resident memory (`VmRSS`), in MiB.
/// The CPU time (user and system, all threads) this process has used, in seconds; NaN where
/// `/proc` cannot tell.
pub(crate) fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, after the command name (which may hold spaces),
    // in clock ticks of 1/100 s (USER_HZ on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| {
            let (_, rest) = text.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

pub(crate) fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Starts the real server on `127.0.0.1:0` over `data_dir` with the workload's connections
/// (verification on).
pub(crate) async fn start_server(
    registry: &Registry,
    data_dir: &Path,
) -> anyhow::Result<RunningServer> {
    let config = ServerConfig {
        data_dir: data_dir.to_owned(),
        http_addr: "127.0.0.1:0".parse()?,
        grpc_addr: "127.0.0.1:0".parse()?,
        body_limit: switchboard_server::config::DEFAULT_BODY_LIMIT,
        connections: workload::connections(),
        embedded_default: false,
        ..ServerConfig::default()
    };
    Ok(switchboard_server::start(config, registry).await?)
}

/// The server on PostgreSQL at `url` (migrated at start), the same connections as
/// [`start_server`].
pub(crate) async fn start_server_on(
    registry: &Registry,
    url: &str,
) -> anyhow::Result<RunningServer> {
    let config = ServerConfig {
        database_url: Some(switchboard_server::config::DatabaseUrl::parse(
            url,
            "--database-url",
        )?),
        http_addr: "127.0.0.1:0".parse()?,
        grpc_addr: "127.0.0.1:0".parse()?,
        body_limit: switchboard_server::config::DEFAULT_BODY_LIMIT,
        connections: workload::connections(),
        embedded_default: false,
        ..ServerConfig::default()
    };
    Ok(switchboard_server::start(config, registry).await?)
}

pub(crate) async fn grpc_client(
    server: &RunningServer,
) -> anyhow::Result<SwitchboardClient<Channel>> {
    let url = format!("http://{}", server.grpc_addr);
    Ok(SwitchboardClient::connect(url).await?)
}

pub(crate) fn setup() -> anyhow::Result<(Registry, Arc<Vec<Template>>, tempfile::TempDir)> {
    let registry = Registry::from_inventory()?;
    let templates = Arc::new(workload::templates(&registry)?);
    let dir = tempfile::tempdir().context("cannot create a temp dir; check TMPDIR")?;
    Ok((registry, templates, dir))
}

pub(crate) fn mean_events(templates: &[Template]) -> f64 {
    templates.iter().map(|t| t.events.len()).sum::<usize>() as f64 / templates.len() as f64
}

fn print_workload(templates: &[Template], args: LoadArgs) {
    println!(
        "workload: {} fixtures of {} vendors, {:.2} events per webhook on average; {} concurrent clients, {} s measured after {} s warm-up",
        templates.len(),
        vendors().len(),
        mean_events(templates),
        args.connections,
        args.seconds,
        args.warmup
    );
}

/// `ingest`: returns acknowledged webhooks/s.
pub async fn ingest(args: LoadArgs) -> anyhow::Result<f64> {
    let (registry, templates, dir) = setup()?;
    print_workload(&templates, args);
    let server = start_server(&registry, &dir.path().join("data")).await?;
    let head_before = server.storage.head().0;
    let stats = ingest_load(&server, &templates, args).await?;
    let appended = server.storage.head().0 - head_before;
    load::print_table(
        "ingest: durable webhooks over HTTP (verify + parse + group commit + fsync)",
        "webhooks",
        &stats,
    );
    print_appended(appended, &stats, &templates);
    server.shutdown().await?;
    print_data_dir(
        &dir.path().join("data"),
        appended,
        mean_body_bytes(&templates),
    );
    Ok(stats.rate())
}

/// The mean body size of the workload's webhooks, in bytes.
fn mean_body_bytes(templates: &[Template]) -> f64 {
    templates
        .iter()
        .map(|t| t.render(0).body.len() as f64)
        .sum::<f64>()
        / templates.len().max(1) as f64
}

/// Bytes of every file under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The data dir's size after a run (the store closed), per appended event.
pub(crate) fn print_data_dir(dir: &Path, events: u64, mean_body: f64) {
    let bytes = dir_bytes(dir);
    println!(
        "  {:<14} {:>10.1} MiB after the run: {:.1} KiB per appended event (mean body {:.1} KiB)",
        "data dir",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / 1024.0 / events.max(1) as f64,
        mean_body / 1024.0
    );
}

/// One HTTP/1.1 keep-alive client per connection, as a vendor's delivery worker would hold.
pub(crate) fn http_clients(connections: usize) -> anyhow::Result<Arc<Vec<reqwest::Client>>> {
    let clients = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .pool_max_idle_per_host(1)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(clients))
}

/// Posts webhook `n` (the template `n` picks, made unique by `n`) with `client`; `Ok` only for
/// `200`. `request_id` goes into `X-Request-Id`.
pub(crate) fn post_webhook(
    client: &reqwest::Client,
    base: &str,
    templates: &[Template],
    n: u64,
    request_id: Option<String>,
) -> impl Future<Output = Result<(), String>> + Send + use<> {
    let index = (n % templates.len() as u64) as usize;
    let template = &templates[index];
    let rendered = template.render(n);
    let mut request = client.post(rendered.url(base, template.vendor));
    if !rendered
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in &rendered.headers {
        request = request.header(name, value);
    }
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let request = request.body(rendered.body);
    async move {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                "connect error".to_owned()
            } else {
                "transport error".to_owned()
            }
        })?;
        let status = response.status();
        let _ = response.bytes().await;
        if status == reqwest::StatusCode::OK {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// The closed-loop webhook load of `ingest` against a running server.
pub(crate) async fn ingest_load(
    server: &RunningServer,
    templates: &Arc<Vec<Template>>,
    args: LoadArgs,
) -> anyhow::Result<Stats> {
    let base = format!("http://{}", server.http_addr);
    let clients = http_clients(args.connections)?;
    let templates = templates.clone();
    Ok(load::drive(
        args.connections,
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.seconds),
        move |worker, n| post_webhook(&clients[worker], &base, &templates, n, None),
    )
    .await)
}

fn print_appended(appended: u64, stats: &Stats, templates: &[Template]) {
    println!(
        "  {:<14} {:>14} events in total, warm-up included ({:.0} events/s in the window at {:.2} events per webhook)",
        "appended",
        appended,
        stats.rate() * mean_events(templates),
        mean_events(templates)
    );
}

/// `floor`: returns appends/s.
pub async fn floor(args: LoadArgs) -> anyhow::Result<f64> {
    let (_registry, templates, dir) = setup()?;
    print_workload(&templates, args);
    let store = Store::open(&dir.path().join("data"))?;
    let head_before = store.head().0;
    let stats = drive_appends(&store, &templates, args).await;
    let appended = store.head().0 - head_before;
    load::print_table(
        "floor: the same appends straight to the store (group commit + fsync, no HTTP/verify/parse)",
        "appends",
        &stats,
    );
    print_appended(appended, &stats, &templates);
    store.close().await?;
    Ok(stats.rate())
}

/// The seed workload's requests, made unique, appended straight to `store` by `args.connections`
/// concurrent tasks (the `floor` load).
pub(crate) async fn drive_appends(
    store: &Store,
    templates: &Arc<Vec<Template>>,
    args: LoadArgs,
) -> Stats {
    let connections: Arc<Vec<ConnectionId>> = Arc::new(
        templates
            .iter()
            .map(|t| ConnectionId::new(t.vendor).expect("valid connection id"))
            .collect(),
    );
    let op_store = store.clone();
    let op_templates = templates.clone();
    load::drive(
        args.connections,
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.seconds),
        move |_, n| {
            let index = (n % op_templates.len() as u64) as usize;
            let template = &op_templates[index];
            let request = AppendRequest {
                connection: connections[index].clone(),
                vendor: template.vendor.to_owned(),
                request_id: Some(format!("bench-{n:032}")),
                received_at: Timestamp::now(),
                raw: Some(template.render(n).body),
                events: workload::unique_events(&template.events, n),
                sync: None,
                quarantine: None,
            };
            let store = op_store.clone();
            async move {
                store
                    .append(request)
                    .await
                    .map(drop)
                    .map_err(|e| format!("store: {e}"))
            }
        },
    )
    .await
}

/// Appends `total` events in batches of `batch` events from 4 concurrent tasks; returns the
/// time it took.
async fn preload(
    store: &Store,
    total: u64,
    batch: usize,
    mut next: impl FnMut(u64) -> (usize, IncomingEvent),
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut buffers: Vec<Vec<IncomingEvent>> = vec![Vec::new(); vendors().len()];
    let mut in_flight = tokio::task::JoinSet::new();
    let mut report_at = total / 10;
    for n in 0..total {
        let (vendor, event) = next(n);
        buffers[vendor].push(event);
        if buffers[vendor].len() >= batch || n + 1 == total {
            for (v, buffer) in buffers.iter_mut().enumerate() {
                if buffer.is_empty() || (buffer.len() < batch && n + 1 != total) {
                    continue;
                }
                let request = AppendRequest::new(
                    ConnectionId::new(vendors()[v]).expect("valid connection id"),
                    vendors()[v],
                    std::mem::take(buffer),
                );
                let store = store.clone();
                in_flight.spawn(async move { store.append(request).await });
                while in_flight.len() >= 4 {
                    in_flight.join_next().await.expect("a task")??;
                }
            }
        }
        if n == report_at {
            eprintln!(
                "preload: {n} of {total} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            report_at += total / 10;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// Runs this binary again with `args` (a hidden preload subcommand), so that the preload's
/// memory is not counted in the server's resident memory.
pub(crate) fn in_child(args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary to run the preload")?;
    let status = std::process::Command::new(exe).args(args).status()?;
    anyhow::ensure!(status.success(), "the preload {args:?} failed: {status}");
    Ok(())
}

/// Appends `events` fixture events, made unique, in the workload's vendor proportions.
pub async fn preload_events(data_dir: &Path, events: u64) -> anyhow::Result<()> {
    let registry = Registry::from_inventory()?;
    let templates = workload::templates(&registry)?;
    let store = Store::open(data_dir)?;
    let mut pending: Vec<IncomingEvent> = Vec::new();
    let mut pending_vendor = 0;
    let mut request = 0u64;
    let load_time = preload(&store, events, 1000, |_| {
        if pending.is_empty() {
            let template = &templates[(request % templates.len() as u64) as usize];
            pending = workload::unique_events(&template.events, request);
            pending.reverse();
            pending_vendor = vendors()
                .iter()
                .position(|v| *v == template.vendor)
                .unwrap_or(0);
            request += 1;
        }
        (pending_vendor, pending.pop().expect("refilled above"))
    })
    .await?;
    let head = store.head().0;
    store.close().await?;
    println!(
        "preloaded {head} events in {:.1} s ({:.0} events/s in batches of 1000, separate process)",
        load_time.as_secs_f64(),
        head as f64 / load_time.as_secs_f64()
    );
    Ok(())
}

/// `replay`.
pub async fn replay(events: u64) -> anyhow::Result<()> {
    let registry = Registry::from_inventory()?;
    let dir = tempfile::tempdir().context("cannot create a temp dir; check TMPDIR")?;
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().context("the temp dir is not UTF-8")?;
    in_child(&[
        "preload-events",
        "--dir",
        data,
        "--events",
        &events.to_string(),
    ])?;
    let head = events;
    let rss_before = rss_mib();
    let server = start_server(&registry, &data_dir).await?;
    let index_time = index_built(&server, head).await?;
    let rss_indexed = rss_mib();
    // A line to start a profiler on (`perf record -p`).
    eprintln!("replay: the finder's index is built; replaying {head} events");
    let mut client = grpc_client(&server).await?;
    let cpu_started = cpu_seconds();
    let started = Instant::now();
    let mut stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::FromBeginning(true)),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut received = 0u64;
    let mut first = None;
    while received < head {
        let Some(event) = stream.message().await? else {
            anyhow::bail!("the stream ended after {received} of {head} events");
        };
        if first.is_none() {
            first = Some(started.elapsed());
        }
        received += 1;
        if received == head && event.sequence != head {
            anyhow::bail!("the last event has sequence {}, not {head}", event.sequence);
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_started;
    println!();
    println!("== replay: one StreamEvents subscriber from the beginning");
    println!(
        "  {:<14} {:>14.0} events/s",
        "throughput",
        received as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  {:<14} {:>14} in {:.2} s",
        "events",
        received,
        elapsed.as_secs_f64()
    );
    println!(
        "  {:<14} {:>11.2} ms",
        "first event",
        first.unwrap_or_default().as_secs_f64() * 1000.0
    );
    // Throughput on a shared 2-core machine moves with whatever else runs; the CPU time the
    // replay took (server and client, this one process) moves much less.
    println!(
        "  {:<14} {:>11.2} s user+sys, {:.2} us per event ({:.0} events/s per core)",
        "CPU",
        cpu,
        cpu * 1e6 / received as f64,
        received as f64 / cpu
    );
    println!(
        "  {:<14} {:>10.0} MiB (before starting the server: {rss_before:.0} MiB; once the finder's index was built: {rss_indexed:.0} MiB)",
        "VmRSS",
        rss_mib()
    );
    println!(
        "  {:<14} {:>11.2} s (the server's finder building its index of the log before the replay; not measured)",
        "index build",
        index_time.as_secs_f64()
    );
    drop(stream);

    // Diagnostic: the store's part alone, read as StreamEvents reads it (batches of 256).
    let store = sled(&server)?.clone();
    let (read, elapsed) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut after = switchboard_core::Sequence::ZERO;
        let mut read = 0u64;
        loop {
            let batch = store.read_events(after, 256)?;
            let Some(last) = batch.last() else { break };
            after = last.sequence;
            read += batch.len() as u64;
        }
        Ok::<_, switchboard_store::StoreError>((read, started.elapsed()))
    })
    .await??;
    println!(
        "  {:<14} {:>14.0} events/s (diagnostic: Store::read_events alone, batches of 256, {read} events, no gRPC)",
        "store alone",
        read as f64 / elapsed.as_secs_f64()
    );
    server.shutdown().await?;
    Ok(())
}

/// 2024-01-01T00:00:00Z.
const YEAR_START: i64 = 1_704_067_200;
const YEAR_SECS: i64 = 365 * 86_400;

fn chat_started(n: u64, total: u64) -> (usize, IncomingEvent) {
    let vendor = (n % vendors().len() as u64) as usize;
    let at = Timestamp::from_secs(YEAR_START + (n as i64 * YEAR_SECS) / total as i64)
        .expect("a valid time");
    let external_id = format!("conv-{n:08}");
    let visitor = Participant {
        id: format!("visitor-{n}"),
        name: Some(format!("Visitor {n}")),
        email: Some(format!("visitor{n}@example.com")),
        ..Participant::default()
    };
    let mut patch = ConversationPatch::new(external_id.clone());
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(at);
    patch.visitor = Some(visitor.clone());
    patch.page_url = Some("https://shop.example.com/checkout".to_owned());
    patch.messages = vec![Message {
        key: format!("{external_id}-1"),
        author_role: Role::Visitor,
        author_id: Some(visitor.id),
        author_name: visitor.name,
        text: "Hello, where is my order?".to_owned(),
        attachments: Vec::new(),
        sent_at: at,
        automatic: false,
        data: None,
    }];
    let event = IncomingEvent {
        dedup_key: format!("chat_started:{external_id}"),
        kind: EventKind::ChatStarted,
        vendor_event: "chat_started".to_owned(),
        occurred_at: at,
        payload: EventPayload::Conversation(patch),
    };
    (vendor, event)
}

fn proto_time(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// Appends ChatStarted events for conversations `from..conversations` (`conv-<n>`), spread
/// over 4 vendors and one year by `n / conversations`.
pub async fn preload_conversations(
    data_dir: &Path,
    from: u64,
    conversations: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(from <= conversations, "--from is past --conversations");
    let store = Store::open(data_dir)?;
    let load_time = preload(&store, conversations - from, 2000, |n| {
        chat_started(from + n, conversations)
    })
    .await?;
    let count = store.conversation_count()?;
    store.close().await?;
    println!(
        "preloaded {} conversations in {:.1} s ({:.0}/s in batches of 2000, separate process); {count} in the store",
        conversations - from,
        load_time.as_secs_f64(),
        (conversations - from) as f64 / load_time.as_secs_f64()
    );
    Ok(())
}

/// `query`.
/// Waits for the server's finder to index the log through `head`; how long it took. The
/// finder builds its index from the whole log at a server's first start, on the same two
/// cores; a running server keeps it up to date as events come. A scenario that measures
/// something else starts once the index is built.
async fn index_built(server: &RunningServer, head: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !server
        .finder
        .caught_up(switchboard_core::Sequence(head), Duration::from_secs(600))
        .await?
    {}
    Ok(started.elapsed())
}

pub async fn query(conversations: u64, calls: u64) -> anyhow::Result<()> {
    let registry = Registry::from_inventory()?;
    let dir = tempfile::tempdir().context("cannot create a temp dir; check TMPDIR")?;
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().context("the temp dir is not UTF-8")?;
    let count = conversations;
    in_child(&[
        "preload-conversations",
        "--dir",
        data,
        "--conversations",
        &conversations.to_string(),
    ])?;
    let rss_before = rss_mib();
    let server = start_server(&registry, &data_dir).await?;
    let rss_started = rss_mib();
    let index_time = index_built(&server, server.storage.head().0).await?;
    println!(
        "the server's finder built its index of the store in {:.1} s (not measured: the queries start once it is built)",
        index_time.as_secs_f64()
    );
    let shipped = grpc_client(&server).await?;
    let (list, get) = query_calls(shipped, conversations, calls).await?;
    print_queries("the server as shipped", calls, &list, &get);

    // Diagnostic: the store calls alone, without gRPC.
    let (list, get) = store_calls(sled(&server)?, conversations, calls)?;
    print_queries("diagnostic: Store calls alone, no gRPC", calls, &list, &get);

    println!();
    println!(
        "== memory: VmRSS {:.0} MiB after the queries ({rss_before:.0} MiB before starting the server, {rss_started:.0} MiB right after; server and client in one process, {count} conversations)",
        rss_mib()
    );
    server.shutdown().await?;
    Ok(())
}

fn list_request(rng: &mut impl Rng) -> v1::ListConversationsRequest {
    let vendor = vendors()[rng.random_range(0..vendors().len())];
    let from = YEAR_START + rng.random_range(0..YEAR_SECS - 30 * 86_400);
    v1::ListConversationsRequest {
        vendors: vec![vendor.to_owned()],
        started: Some(v1::TimeRange {
            start: Some(proto_time(from)),
            end: Some(proto_time(from + 30 * 86_400)),
        }),
        page_size: 50,
        ..Default::default()
    }
}

fn random_id(rng: &mut impl Rng, conversations: u64) -> String {
    let n = rng.random_range(0..conversations);
    format!(
        "{}/conv-{n:08}",
        vendors()[(n % vendors().len() as u64) as usize]
    )
}

/// `calls` ListConversations (first page of 50, one vendor, a 30-day started range) and
/// `calls` GetConversation (random id, full view), one at a time.
pub(crate) async fn query_calls(
    mut client: SwitchboardClient<Channel>,
    conversations: u64,
    calls: u64,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut rng = rand::rng();
    let mut list = load::histogram();
    for _ in 0..calls {
        let request = list_request(&mut rng);
        let started = Instant::now();
        let page = client.list_conversations(request).await?.into_inner();
        load::record(&mut list, started.elapsed());
        anyhow::ensure!(
            page.conversations.len() == 50,
            "a page had {} conversations, not 50; preload more conversations",
            page.conversations.len()
        );
    }
    let mut get = load::histogram();
    for _ in 0..calls {
        let request = v1::GetConversationRequest {
            id: random_id(&mut rng, conversations),
            view: v1::ConversationView::Full as i32,
        };
        let started = Instant::now();
        client.get_conversation(request).await?;
        load::record(&mut get, started.elapsed());
    }
    Ok((list, get))
}

/// The same queries as `query_calls`, straight on the store.
/// The server's sled store, for the diagnostics that read it directly (the bench starts its
/// servers on sled).
pub(crate) fn sled(server: &RunningServer) -> anyhow::Result<&Store> {
    server.sled.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "the bench's diagnostics read the sled store directly; this server runs on {}",
            server.storage.backend()
        )
    })
}

fn store_calls(
    store: &Store,
    conversations: u64,
    calls: u64,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut rng = rand::rng();
    let mut list = load::histogram();
    for _ in 0..calls {
        let request = list_request(&mut rng);
        let range = request.started.expect("set above");
        let secs =
            |t: Option<prost_types::Timestamp>| t.and_then(|t| Timestamp::from_secs(t.seconds));
        let query = ConversationQuery {
            vendors: request.vendors,
            started_from: secs(range.start),
            started_to: secs(range.end),
            page_size: 50,
            ..Default::default()
        };
        let started = Instant::now();
        let page = store.list_conversations(&query)?;
        load::record(&mut list, started.elapsed());
        anyhow::ensure!(page.conversations.len() == 50, "a short page");
    }
    let mut get = load::histogram();
    for _ in 0..calls {
        let id = ConversationId::parse(&random_id(&mut rng, conversations))?;
        let started = Instant::now();
        let found = store.get_conversation(&id)?;
        load::record(&mut get, started.elapsed());
        anyhow::ensure!(found.is_some(), "conversation {id} is missing");
    }
    Ok((list, get))
}

fn print_queries(label: &str, calls: u64, list: &Histogram<u64>, get: &Histogram<u64>) {
    println!();
    println!(
        "== query ({label}): ListConversations, first page of 50, one vendor, 30-day started range, {calls} calls"
    );
    load::print_latency(list);
    println!("== query ({label}): GetConversation by random id, full view, {calls} calls");
    load::print_latency(get);
}
