//! `switchboard`: run the gateway, and look at its data without writing a client.

// Every shipped plugin must be referenced, or the linker may drop its inventory registration.
use switchboard_plugins as _;

mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use switchboard_core::{ConversationStatus, EventKind, Registry, Timestamp};
use switchboard_proto::convert;
use switchboard_proto::v1;
use switchboard_proto::v1::switchboard_client::SwitchboardClient;
use switchboard_server::ServerConfig;
use switchboard_server::auth::{Scope, generate_key, key_hash_hex};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Switchboard: one self-hosted gateway for live-chat vendors' webhooks and APIs, served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP webhook intake and the gRPC API over the embedded store.
    ///
    /// Without --config it runs on the embedded default: data in ./switchboard-data, HTTP on
    /// 127.0.0.1:8080, gRPC on 127.0.0.1:50051, and one connection per plugin whose id is the
    /// vendor name (POST /webhooks/livechat...) with webhook verification OFF.
    Serve {
        /// A TOML config file (connections, secrets, addresses); see README.md.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Where the store lives (overrides the config file).
        #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// HTTP listen address (overrides the config file).
        #[arg(long, env = "SWITCHBOARD_HTTP_ADDR")]
        http_addr: Option<SocketAddr>,
        /// gRPC listen address (overrides the config file).
        #[arg(long, env = "SWITCHBOARD_GRPC_ADDR")]
        grpc_addr: Option<SocketAddr>,
        /// Log output format.
        #[arg(
            long,
            value_enum,
            default_value = "text",
            env = "SWITCHBOARD_LOG_FORMAT"
        )]
        log_format: LogFormat,
        /// Serve on a non-loopback address without authentication: gRPC with no API key,
        /// webhooks of connections with verification off. Only when something in front of
        /// switchboard authenticates.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Print the event stream as it happens, replaying from a cursor first.
    Tail {
        #[command(flatten)]
        server: ServerArg,
        /// Resume after this sequence (the last one you saw); default: from the beginning.
        #[arg(long, conflicts_with = "now")]
        after: Option<u64>,
        /// Only events appended from now on.
        #[arg(long)]
        now: bool,
        /// Only these connections (repeatable).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// Only these vendors (repeatable).
        #[arg(long = "vendor")]
        vendors: Vec<String>,
        /// Only these kinds (repeatable): chat_started, message, chat_ended, chat_missed,
        /// offline_message, rating, chat_updated, ticket_created, ticket_updated,
        /// agent_updated, vendor_event.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Print each event as one JSON line instead of a summary line.
        #[arg(long)]
        json: bool,
    },
    /// List or show conversations.
    Conversations {
        #[command(subcommand)]
        command: ConversationsCommand,
    },
    /// List the configured connections and their sync state.
    Connections {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Pull a connection's history from the vendor's API (backfill), with a progress bar.
    /// Interrupt it at any time; running it again resumes from the saved cursor.
    Sync {
        #[command(flatten)]
        server: ServerArg,
        /// The connection id (`switchboard connections` lists them).
        connection: String,
        /// Where a first sync starts: RFC 3339 time or a date (2024-05-01). Ignored when the
        /// connection has a saved cursor, unless --from-scratch.
        #[arg(long, value_parser = sync::parse_since)]
        since: Option<Timestamp>,
        /// Forget the saved cursor and pull again from --since (nothing is duplicated).
        #[arg(long)]
        from_scratch: bool,
        /// Stop after this many pages (default: until the vendor has nothing more).
        #[arg(long, default_value_t = 0)]
        max_pages: u32,
    },
    /// Webhooks that passed verification but that their plugin could not map: held, never
    /// refused, until a plugin upgrade can map them.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// List the vendor plugins built into this binary.
    Plugins,
    /// Make API keys for the gRPC API.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a fresh random API key (once) and the [[api_keys]] config entry with its hash.
    New {
        /// The key's name, shown in the server's logs (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// What the key may do (repeatable): conversations:read, events:stream,
        /// tickets:manage, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConversationsCommand {
    /// List conversations, newest first.
    List {
        #[command(flatten)]
        server: ServerArg,
        /// Only these connections (repeatable).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// Only these vendors (repeatable).
        #[arg(long = "vendor")]
        vendors: Vec<String>,
        /// Only these statuses (repeatable): unknown, queued, open, closed, missed, offline.
        #[arg(long = "status")]
        statuses: Vec<String>,
        /// How many per page (1-1000).
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// Follow next_page_token until the end.
        #[arg(long)]
        all: bool,
    },
    /// Show one conversation with its messages.
    Get {
        #[command(flatten)]
        server: ServerArg,
        /// CONNECTION/VENDOR_ID, e.g. livechat/PO13.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// List held webhooks, oldest first, with why their plugin could not map them.
    List {
        #[command(flatten)]
        server: ServerArg,
        /// Only these connections (repeatable).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// Print each body too.
        #[arg(long)]
        bodies: bool,
    },
    /// Process held webhooks again with this server's plugins (after an upgrade). Those that
    /// map now are appended (a redelivery appends nothing) and leave the quarantine.
    Retry {
        #[command(flatten)]
        server: ServerArg,
        /// Retry every held webhook.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// The ids to retry (`switchboard quarantine list` shows them).
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
    },
}

#[derive(Debug, clap::Args)]
struct ServerArg {
    /// The gRPC address of the server.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "SWITCHBOARD_SERVER"
    )]
    server: String,
    /// The API key to send as `authorization: Bearer <key>`.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM certificate (or CA) to trust for an https:// server.
    #[arg(long, env = "SWITCHBOARD_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

/// Adds `authorization: Bearer <key>` to every call when a key is given.
#[derive(Clone)]
struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth([redacted])")
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = SwitchboardClient<InterceptedService<Channel, BearerAuth>>;

impl ServerArg {
    async fn connect(&self) -> Result<Client> {
        let auth =
            match &self.api_key {
                Some(key) => Some(format!("Bearer {}", key.trim()).parse().context(
                    "the API key has characters a header cannot carry; check --api-key",
                )?),
                None => None,
            };
        let mut endpoint = Channel::from_shared(self.server.clone()).with_context(|| {
            format!(
                "invalid server address {:?}; use http://HOST:PORT or https://HOST:PORT",
                self.server
            )
        })?;
        if self.server.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read the CA certificate {}", path.display())
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).context("TLS setup failed")?;
        }
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the switchboard server at {}; is `switchboard serve` running?",
                self.server
            )
        })?;
        Ok(SwitchboardClient::with_interceptor(
            channel,
            BearerAuth(auth),
        ))
    }
}

/// `switchboard keys new`: prints the key once, then the config entry holding only its hash.
fn new_key(name: &str, scopes: &[String]) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("invalid key name {name:?}; use letters, digits, `-`, `_` and `.`");
    }
    let mut parsed = Vec::new();
    for scope in scopes {
        let scope = Scope::parse(scope).map_err(anyhow::Error::msg)?;
        if !parsed.contains(&scope) {
            parsed.push(scope);
        }
    }
    let key = generate_key();
    let scopes: Vec<String> = parsed.iter().map(|s| format!("\"{s}\"")).collect();
    println!("API key {name:?} (shown only this once; keep it in a secret store):");
    println!();
    println!("{key}");
    println!();
    println!("Add this to the server's config file (it holds only the key's SHA-256):");
    println!();
    println!("[[api_keys]]");
    println!("name = \"{name}\"");
    println!("sha256 = \"{}\"", key_hash_hex(&key));
    println!("scopes = [{}]", scopes.join(", "));
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr; stdout carries the bound addresses for scripts.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a failure as one line (`Error: what: why`), never with a backtrace: the messages say
/// what to do, and a backtrace (with `RUST_BACKTRACE` set) would bury them.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    switchboard_server::tls::install_default_provider();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            http_addr,
            grpc_addr,
            log_format,
            allow_unauthenticated,
        } => {
            init_logging(log_format);
            serve(
                config,
                data_dir,
                http_addr,
                grpc_addr,
                allow_unauthenticated,
            )
            .await
        }
        Command::Keys {
            command: KeysCommand::New { name, scopes },
        } => new_key(&name, &scopes),
        Command::Tail {
            server,
            after,
            now,
            connections,
            vendors,
            kinds,
            json,
        } => tail(server, after, now, connections, vendors, kinds, json).await,
        Command::Conversations { command } => match command {
            ConversationsCommand::List {
                server,
                connections,
                vendors,
                statuses,
                page_size,
                all,
            } => list_conversations(server, connections, vendors, statuses, page_size, all).await,
            ConversationsCommand::Get { server, id } => get_conversation(server, id).await,
        },
        Command::Connections { server } => list_connections(server).await,
        Command::Quarantine {
            command:
                QuarantineCommand::List {
                    server,
                    connections,
                    bodies,
                },
        } => list_quarantine(server, connections, bodies).await,
        Command::Quarantine {
            command: QuarantineCommand::Retry { server, all, ids },
        } => retry_quarantine(server, all, ids).await,
        Command::Sync {
            server,
            connection,
            since,
            from_scratch,
            max_pages,
        } => {
            let mut client = server.connect().await?;
            let request = sync::request(connection.clone(), since, from_scratch, max_pages);
            let stream = client
                .sync_connection(request)
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))
                .with_context(|| format!("cannot sync {connection}"))?
                .into_inner();
            sync::follow(&connection, stream).await
        }
        Command::Plugins => {
            let registry = Registry::from_inventory()?;
            for plugin in registry.plugins() {
                println!(
                    "{:<10} webhook={:<3} sync={:<3} {}\n{:<10} verification: {}",
                    plugin.vendor,
                    if plugin.webhook.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    if plugin.connector.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    plugin.description,
                    "",
                    plugin.verification
                );
            }
            Ok(())
        }
    }
}

async fn serve(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    allow_unauthenticated: bool,
) -> Result<()> {
    let registry = Registry::from_inventory()?;
    let mut config = match config {
        Some(path) => ServerConfig::from_file(&path, &registry, std::env::vars())?,
        None => ServerConfig::embedded_default(&registry),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = http_addr {
        config.http_addr = addr;
    }
    if let Some(addr) = grpc_addr {
        config.grpc_addr = addr;
    }
    if allow_unauthenticated {
        config.security.allow_unauthenticated = true;
        config.security.allow_unverified_webhooks = true;
    }
    let server = switchboard_server::start(config, &registry).await?;
    // Printed for scripts and tests that start the binary on port 0.
    println!("http={} grpc={}", server.http_addr, server.grpc_addr);
    server.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(convert::from_timestamp)
        .map(Timestamp::to_rfc3339)
        .unwrap_or_else(|| "-".to_owned())
}

async fn tail(
    server: ServerArg,
    after: Option<u64>,
    now: bool,
    connections: Vec<String>,
    vendors: Vec<String>,
    kinds: Vec<String>,
    json: bool,
) -> Result<()> {
    use v1::stream_events_request::Start;
    let kinds = kinds
        .iter()
        .map(|k| {
            EventKind::parse(k)
                .map(|k| convert::kind(k) as i32)
                .with_context(|| format!("unknown kind {k:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = match (after, now) {
        (Some(after), _) => Start::AfterSequence(after),
        (None, true) => Start::AtHead(true),
        (None, false) => Start::FromBeginning(true),
    };
    let mut client = server.connect().await?;
    let mut stream = client
        .stream_events(v1::StreamEventsRequest {
            start: Some(start),
            connection_ids: connections,
            vendors,
            kinds,
            conversation_ids: Vec::new(),
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        if json {
            let payload: serde_json::Value =
                serde_json::from_str(&event.payload_json).unwrap_or(serde_json::Value::Null);
            println!(
                "{}",
                serde_json::json!({
                    "sequence": event.sequence,
                    "id": event.id,
                    "connection": event.connection_id,
                    "vendor": event.vendor,
                    "kind": event.kind().as_str_name(),
                    "vendor_event": event.vendor_event,
                    "occurred_at": time_text(event.occurred_at.as_ref()),
                    "conversation_id": event.conversation_id,
                    "ticket_id": event.ticket_id,
                    "payload": payload,
                })
            );
        } else {
            let text = event
                .message
                .as_ref()
                .map(|m| format!(" {:?}", m.text))
                .unwrap_or_default();
            println!(
                "{:>8} {} {:<14} {:<16} {}{}",
                event.sequence,
                time_text(event.occurred_at.as_ref()),
                event.connection_id,
                event
                    .kind()
                    .as_str_name()
                    .trim_start_matches("EVENT_KIND_")
                    .to_ascii_lowercase(),
                event
                    .conversation_id
                    .or(event.ticket_id)
                    .unwrap_or_else(|| "-".to_owned()),
                text
            );
        }
    }
    Ok(())
}

async fn list_conversations(
    server: ServerArg,
    connections: Vec<String>,
    vendors: Vec<String>,
    statuses: Vec<String>,
    page_size: u32,
    all: bool,
) -> Result<()> {
    let statuses = statuses
        .iter()
        .map(|s| {
            ConversationStatus::parse(s)
                .map(|s| convert::status(s) as i32)
                .with_context(|| format!("unknown status {s:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut client = server.connect().await?;
    let mut token = String::new();
    println!(
        "{:<32} {:<10} {:<8} {:<24} {:>5}  visitor",
        "id", "vendor", "status", "started", "msgs"
    );
    loop {
        let page = client
            .list_conversations(v1::ListConversationsRequest {
                connection_ids: connections.clone(),
                vendors: vendors.clone(),
                statuses: statuses.clone(),
                started: None,
                updated: None,
                page_size,
                page_token: token.clone(),
                view: v1::ConversationView::Basic as i32,
            })
            .await?
            .into_inner();
        for c in &page.conversations {
            println!(
                "{:<32} {:<10} {:<8} {:<24} {:>5}  {}",
                c.id,
                c.vendor,
                c.status()
                    .as_str_name()
                    .trim_start_matches("CONVERSATION_STATUS_")
                    .to_ascii_lowercase(),
                time_text(c.started_at.as_ref()),
                c.message_count,
                c.visitor
                    .as_ref()
                    .and_then(|v| v.name.clone().or(Some(v.id.clone())))
                    .unwrap_or_default()
            );
        }
        if !all || page.next_page_token.is_empty() {
            if !page.next_page_token.is_empty() {
                println!("(more: use --all)");
            }
            break;
        }
        token = page.next_page_token;
    }
    Ok(())
}

async fn get_conversation(server: ServerArg, id: String) -> Result<()> {
    let mut client = server.connect().await?;
    let c = client
        .get_conversation(v1::GetConversationRequest {
            id,
            view: v1::ConversationView::Full as i32,
        })
        .await?
        .into_inner();
    println!("{} ({}) {}", c.id, c.vendor, c.status().as_str_name());
    println!(
        "started {}  ended {}",
        time_text(c.started_at.as_ref()),
        time_text(c.ended_at.as_ref())
    );
    if let Some(v) = &c.visitor {
        println!("visitor {} {}", v.id, v.name.clone().unwrap_or_default());
    }
    for a in &c.agents {
        println!("agent   {} {}", a.id, a.name.clone().unwrap_or_default());
    }
    for m in &c.messages {
        println!(
            "{} {:<7} {}: {}",
            time_text(m.sent_at.as_ref()),
            m.author_role()
                .as_str_name()
                .trim_start_matches("ROLE_")
                .to_ascii_lowercase(),
            m.author_name
                .clone()
                .or(m.author_id.clone())
                .unwrap_or_default(),
            m.text
        );
    }
    Ok(())
}

async fn list_quarantine(server: ServerArg, connections: Vec<String>, bodies: bool) -> Result<()> {
    let mut client = server.connect().await?;
    let mut page_token = String::new();
    let mut shown = 0u64;
    loop {
        let page = client
            .list_quarantine(v1::ListQuarantineRequest {
                connection_ids: connections.clone(),
                page_size: 200,
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        if shown == 0 {
            println!("{} held ({} bytes)", page.total_entries, page.total_bytes);
        }
        for w in &page.webhooks {
            shown += 1;
            println!(
                "{:<8} {:<16} {:<10} received={} attempts={} reason: {}",
                w.id,
                w.connection_id,
                w.vendor,
                time_text(w.received_at.as_ref()),
                w.attempts,
                w.reason
            );
            if bodies {
                println!("         {}", w.body);
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn retry_quarantine(server: ServerArg, all: bool, ids: Vec<u64>) -> Result<()> {
    let mut client = server.connect().await?;
    let outcome = client
        .retry_quarantine(v1::RetryQuarantineRequest { ids, all })
        .await?
        .into_inner();
    println!(
        "released {} (appended {} events, {} already stored); {} still failing",
        outcome.released.len(),
        outcome.appended,
        outcome.duplicates,
        outcome.still_failing.len()
    );
    for failure in &outcome.still_failing {
        println!("{:<8} still failing: {}", failure.id, failure.reason);
    }
    for id in &outcome.not_found {
        println!("{id:<8} not in the quarantine");
    }
    Ok(())
}

async fn list_connections(server: ServerArg) -> Result<()> {
    let mut client = server.connect().await?;
    let response = client
        .list_connections(v1::ListConnectionsRequest {})
        .await?
        .into_inner();
    if response.connections.is_empty() {
        bail!("the server has no connections configured");
    }
    for c in response.connections {
        let sync = c.sync.unwrap_or_default();
        println!(
            "{:<16} {:<10} {:<22} verify={:<5} sync={}",
            c.id,
            c.vendor,
            c.webhook_path,
            c.verification_enabled,
            if sync.supported {
                format!(
                    "records={} last_success={} cursor={}{}",
                    sync.records_pulled,
                    sync.last_success
                        .as_ref()
                        .and_then(convert::from_timestamp)
                        .map_or_else(|| "never".to_owned(), Timestamp::to_rfc3339),
                    sync.cursor.unwrap_or_default(),
                    sync.last_error
                        .map(|e| format!(" last_error={e:?}"))
                        .unwrap_or_default()
                )
            } else {
                format!(
                    "unsupported ({})",
                    sync.unsupported_reason.unwrap_or_default()
                )
            }
        );
        if let Some(warning) = c.verification_warning {
            println!("{:<16} WARNING: webhooks not authenticated: {warning}", "");
        }
    }
    Ok(())
}
