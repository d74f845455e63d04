//! `switchboard`: run the gateway, and look at its data without writing a client.

// Every shipped plugin must be referenced, or the linker may drop its inventory registration.
use switchboard_plugins as _;

mod contacts;
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
use switchboard_server::config::DatabaseUrl;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Switchboard: one self-hosted gateway for live-chat vendors' webhooks and APIs, served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, long_about = None)]
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
    /// Run the server: HTTP webhook intake and the gRPC API over the embedded store, or over
    /// PostgreSQL with --database-url (several replicas may share one database).
    ///
    /// Without --config it runs on the embedded default: data in ./switchboard-data, HTTP on
    /// 127.0.0.1:8080, gRPC on 127.0.0.1:50051, and one connection per plugin whose id is the
    /// vendor name (POST /webhooks/livechat...) with webhook verification OFF.
    Serve {
        /// A TOML config file (connections, secrets, addresses); see README.md.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Where the embedded store lives (overrides the config file; unused with a database URL).
        #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Keep the data in PostgreSQL instead of the embedded store, so that several replicas
        /// can share it: postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require (overrides
        /// the config file's database_url; migrations are applied at start).
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
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
        /// agent_updated, vendor_event, contact_merged, contact_split, contact_erased.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Print each event as one JSON line instead of a summary line.
        #[arg(long)]
        json: bool,
        /// Stop after the last event stored when the command started, instead of waiting for
        /// new ones (exit 0).
        #[arg(long, conflicts_with = "now")]
        until_head: bool,
    },
    /// List or show conversations.
    Conversations {
        #[command(subcommand)]
        command: ConversationsCommand,
    },
    /// Contacts: one person across connections and vendors; merge, split, erase.
    Contacts {
        #[command(subcommand)]
        command: contacts::ContactsCommand,
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
    /// Apply the PostgreSQL schema migrations this build ships, and nothing else (`serve`
    /// applies them at start too; this runs them ahead of a rolling upgrade). Safe while
    /// replicas run or start: they wait for each other.
    Migrate {
        /// The database: postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require.
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Rewrite the embedded store's files so that nothing erased stays in them: run it with the
    /// server stopped, after `contacts erase` (the files keep old versions of rewritten values
    /// until then; no read returns them). Not needed on PostgreSQL.
    Compact {
        /// A TOML config file, for its data_dir.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// The embedded store's directory (overrides the config file; default
        /// ./switchboard-data).
        #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
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
    /// Print a fresh random API key (once) and the `[[api_keys]]` config entry with its hash.
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
        #[command(flatten)]
        find: Box<FindArgs>,
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

/// `conversations list`'s finder filters: each repeatable flag matches any of its values; all
/// given flags must match.
#[derive(Debug, Default, clap::Args)]
struct FindArgs {
    /// The visitor's e-mail (repeatable).
    #[arg(long = "email")]
    emails: Vec<String>,
    /// The visitor's phone in international form, e.g. +442079460000 (repeatable).
    #[arg(long = "phone")]
    phones: Vec<String>,
    /// The visitor's id at the vendor (repeatable).
    #[arg(long = "visitor-id")]
    visitor_ids: Vec<String>,
    /// An agent (vendor id) who took part (repeatable).
    #[arg(long = "agent")]
    agent_ids: Vec<String>,
    /// A tag the conversation has (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Words in the messages or the visitor's name: every word must match (case- and
    /// accent-insensitive).
    #[arg(long)]
    text: Option<String>,
    /// Conversations of this contact (repeatable; `switchboard contacts list` shows them).
    #[arg(long = "contact")]
    contacts: Vec<String>,
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
    /// The gRPC address of the server: http://HOST:PORT, https://HOST:PORT, or HOST:PORT
    /// (plain http).
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
        let server = server_url(&self.server)?;
        let mut endpoint = Channel::from_shared(server.clone()).with_context(|| {
            format!(
                "invalid server address {:?}; use http://HOST:PORT or https://HOST:PORT",
                self.server
            )
        })?;
        if server.starts_with("https://") {
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
                "cannot reach the switchboard server at {server}; is `switchboard serve` running?"
            )
        })?;
        Ok(SwitchboardClient::with_interceptor(
            channel,
            BearerAuth(auth),
        ))
    }
}

/// A gRPC error as one line for a person: the status name and the server's message (tonic's
/// own text would add the transport error's debug form).
fn answer(status: tonic::Status) -> anyhow::Error {
    let code = format!("{:?}", status.code());
    let mut name = String::new();
    for (i, c) in code.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    if status.message().is_empty() {
        anyhow::anyhow!("the server answered {name}")
    } else {
        anyhow::anyhow!("{} ({name})", status.message())
    }
}

/// The URL to connect to: `HOST:PORT` means `http://HOST:PORT`; a scheme other than http or
/// https is refused with what to write.
fn server_url(given: &str) -> Result<String> {
    let given = given.trim();
    match given.split_once("://") {
        None => Ok(format!("http://{given}")),
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(given.to_owned()),
        Some(_) => bail!(
            "invalid server address {given:?}; write http://HOST:PORT (or https://HOST:PORT \
             for TLS), e.g. --server http://127.0.0.1:50051"
        ),
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
    // Colours only on a terminal: logs redirected to a file stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a failure as one line (`Error: what: why`), never with a backtrace: the messages say
/// what to do, and a backtrace (with `RUST_BACKTRACE` set) would bury them.
/// mimalloc instead of glibc's malloc: the server allocates and frees many small buffers on
/// two threads or more (documents, events, requests), where glibc's arenas cost most.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the process waits, once a command is done, for work still running on the
/// runtime's blocking threads (say, an index write stuck on a failing disk) before it exits.
/// Everything a command must finish (the server's drain, the store's last flush) is done by
/// then; this only bounds the wait for what could not finish.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    switchboard_server::tls::install_default_provider();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            database_url,
            http_addr,
            grpc_addr,
            log_format,
            allow_unauthenticated,
        } => {
            init_logging(log_format);
            serve(ServeArgs {
                config,
                data_dir,
                database_url,
                http_addr,
                grpc_addr,
                allow_unauthenticated,
            })
            .await
        }
        Command::Migrate { database_url } => migrate(database_url).await,
        Command::Compact { config, data_dir } => compact(config, data_dir),
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
            until_head,
        } => {
            let filter = TailFilter {
                connections,
                vendors,
                kinds,
            };
            tail(server, after, now, filter, json, until_head).await
        }
        Command::Conversations { command } => match command {
            ConversationsCommand::List {
                server,
                connections,
                vendors,
                statuses,
                find,
                page_size,
                all,
            } => {
                let filters = ListFilters {
                    connections,
                    vendors,
                    statuses,
                    find: *find,
                };
                list_conversations(server, filters, page_size, all).await
            }
            ConversationsCommand::Get { server, id } => get_conversation(server, id).await,
        },
        Command::Contacts { command } => contacts::run(command).await,
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
                .map_err(answer)
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

/// `switchboard serve`'s flags.
#[derive(Debug)]
struct ServeArgs {
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    allow_unauthenticated: bool,
}

/// `switchboard migrate`: the PostgreSQL migrations alone; prints how many were applied.
async fn migrate(database_url: Option<String>) -> Result<()> {
    let Some(url) = database_url else {
        bail!(
            "migrate needs a database: give --database-url postgres://USER:PASSWORD@HOST:PORT/DATABASE \
             or set SWITCHBOARD_DATABASE_URL (the embedded store needs no migration)"
        );
    };
    let url = DatabaseUrl::parse(&url, "--database-url")?;
    let applied = switchboard_server::migrate(&url).await?;
    match applied {
        0 => println!("the database schema is current: no migration applied ({url})"),
        1 => println!("applied 1 migration ({url})"),
        n => println!("applied {n} migrations ({url})"),
    }
    Ok(())
}

/// `switchboard compact`: the embedded store rewritten offline; prints what it did.
fn compact(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<()> {
    let data_dir = match (data_dir, config) {
        (Some(dir), _) => dir,
        (None, Some(path)) => {
            let registry = Registry::from_inventory()?;
            ServerConfig::from_file(&path, &registry, std::env::vars())?.data_dir
        }
        (None, None) => PathBuf::from(switchboard_server::config::DEFAULT_DATA_DIR),
    };
    if !data_dir.is_dir() {
        bail!(
            "no store at {}: give the data dir with --data-dir (or --config)",
            data_dir.display()
        );
    }
    let report = switchboard_server::compact(&data_dir)
        .with_context(|| format!("cannot compact the store at {}", data_dir.display()))?;
    println!(
        "compacted {}: {} keys, {} bytes before, {} after",
        data_dir.display(),
        report.keys,
        report.bytes_before,
        report.bytes_after
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let ServeArgs {
        config,
        data_dir,
        database_url,
        http_addr,
        grpc_addr,
        allow_unauthenticated,
    } = args;
    let registry = Registry::from_inventory()?;
    let mut config = match config {
        Some(path) => ServerConfig::from_file(&path, &registry, std::env::vars())?,
        None => {
            // The embedded default has no secrets to override: say so rather than ignore them.
            for (name, _) in std::env::vars()
                .filter(|(name, _)| name.starts_with(switchboard_server::config::SECRET_ENV_PREFIX))
            {
                tracing::warn!(
                    "the environment variable {name} is ignored: the embedded default verifies \
                     no webhooks; secrets are read only with --config (README.md, Configuration)"
                );
            }
            ServerConfig::embedded_default(&registry)
        }
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = database_url {
        config.database_url = Some(DatabaseUrl::parse(
            &url,
            "--database-url (or SWITCHBOARD_DATABASE_URL)",
        )?);
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
    let shutdown = shutdown_signal();
    // Printed for scripts and tests that start the binary on port 0.
    println!("http={} grpc={}", server.http_addr, server.grpc_addr);
    server.run_until(shutdown).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when it
/// is first polled: call it before announcing the addresses, so a SIGTERM sent right after
/// them drains instead of killing the process.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (term, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(convert::from_timestamp)
        .map(Timestamp::to_rfc3339)
        .unwrap_or_else(|| "-".to_owned())
}

/// `tail`'s filters.
#[derive(Debug)]
struct TailFilter {
    connections: Vec<String>,
    vendors: Vec<String>,
    kinds: Vec<String>,
}

/// `EVENT_KIND_CHAT_STARTED` -> `chat_started`: the names `--kind` takes.
fn kind_name(kind: v1::EventKind) -> String {
    kind.as_str_name()
        .trim_start_matches("EVENT_KIND_")
        .to_ascii_lowercase()
}

/// `CONVERSATION_STATUS_CLOSED` -> `closed`: the names `--status` takes.
fn status_name(status: v1::ConversationStatus) -> String {
    status
        .as_str_name()
        .trim_start_matches("CONVERSATION_STATUS_")
        .to_ascii_lowercase()
}

/// A message's text, or what it carries when it has no text: `[file name.png]` per attachment.
fn message_text(m: &v1::Message) -> String {
    let files: Vec<String> = m
        .attachments
        .iter()
        .map(|a| {
            let what = a
                .name
                .as_deref()
                .or(a.url.as_deref())
                .or(a.content_type.as_deref())
                .unwrap_or("(unnamed)");
            format!("[file {what}]")
        })
        .collect();
    match (m.text.is_empty(), files.is_empty()) {
        (_, true) => m.text.clone(),
        (true, false) => files.join(" "),
        (false, false) => format!("{} {}", m.text, files.join(" ")),
    }
}

/// The sequence of the last event in the log: the largest `after_sequence` the server does not
/// refuse as beyond the head (OUT_OF_RANGE), found by exponential then binary search.
async fn head_sequence(client: &mut Client) -> Result<u64> {
    let mut probe = async |after: u64| -> Result<bool> {
        let request = v1::StreamEventsRequest {
            start: Some(v1::stream_events_request::Start::AfterSequence(after)),
            ..Default::default()
        };
        match client.stream_events(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::OutOfRange => Ok(false),
            Err(status) => Err(anyhow::anyhow!("{}", status.message()))
                .context("cannot find the head of the event log"),
        }
    };
    let (mut ok, mut beyond) = (0u64, 1u64);
    while probe(beyond).await? {
        ok = beyond;
        beyond = beyond.saturating_mul(2);
        if ok == u64::MAX {
            return Ok(ok);
        }
    }
    while beyond - ok > 1 {
        let middle = ok + (beyond - ok) / 2;
        if probe(middle).await? {
            ok = middle;
        } else {
            beyond = middle;
        }
    }
    Ok(ok)
}

async fn tail(
    server: ServerArg,
    after: Option<u64>,
    now: bool,
    filter: TailFilter,
    json: bool,
    until_head: bool,
) -> Result<()> {
    use v1::stream_events_request::Start;
    let kinds = filter
        .kinds
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
    // Stopping at the head needs every event up to it, so the filters are applied here.
    let head = if until_head {
        let head = head_sequence(&mut client).await?;
        if after.is_some_and(|after| after >= head) {
            return Ok(());
        }
        Some(head)
    } else {
        None
    };
    let request = if until_head {
        v1::StreamEventsRequest {
            start: Some(start),
            ..Default::default()
        }
    } else {
        v1::StreamEventsRequest {
            start: Some(start),
            connection_ids: filter.connections.clone(),
            vendors: filter.vendors.clone(),
            kinds: kinds.clone(),
            conversation_ids: Vec::new(),
        }
    };
    if head == Some(0) {
        return Ok(());
    }
    let mut stream = client
        .stream_events(request)
        .await
        .map_err(answer)
        .context("cannot stream events")?
        .into_inner();
    let mut connection_width = 14;
    while let Some(event) = stream
        .message()
        .await
        .map_err(answer)
        .context("the event stream ended with an error")?
    {
        let sequence = event.sequence;
        let wanted = (filter.connections.is_empty()
            || filter.connections.contains(&event.connection_id))
            && (filter.vendors.is_empty() || filter.vendors.contains(&event.vendor))
            && (kinds.is_empty() || kinds.contains(&event.kind));
        if wanted && json {
            let payload: serde_json::Value =
                serde_json::from_str(&event.payload_json).unwrap_or(serde_json::Value::Null);
            println!(
                "{}",
                serde_json::json!({
                    "sequence": event.sequence,
                    "id": event.id,
                    "connection": event.connection_id,
                    "vendor": event.vendor,
                    "kind": kind_name(event.kind()),
                    "vendor_event": event.vendor_event,
                    "occurred_at": time_text(event.occurred_at.as_ref()),
                    "conversation_id": event.conversation_id,
                    "ticket_id": event.ticket_id,
                    "payload": payload,
                })
            );
        } else if wanted {
            let text = event
                .message
                .as_ref()
                .map(|m| format!(" {:?}", message_text(m)))
                .unwrap_or_default();
            // The column grows to the widest id seen, so later lines stay aligned.
            connection_width = connection_width.max(event.connection_id.chars().count());
            println!(
                "{:>8} {} {:<connection_width$} {:<16} {}{}",
                event.sequence,
                time_text(event.occurred_at.as_ref()),
                event.connection_id,
                kind_name(event.kind()),
                event
                    .conversation_id
                    .or(event.ticket_id)
                    .unwrap_or_else(|| "-".to_owned()),
                text
            );
        }
        if head.is_some_and(|head| sequence >= head) {
            break;
        }
    }
    Ok(())
}

/// `conversations list`'s filters.
#[derive(Debug)]
struct ListFilters {
    connections: Vec<String>,
    vendors: Vec<String>,
    statuses: Vec<String>,
    find: FindArgs,
}

async fn list_conversations(
    server: ServerArg,
    filters: ListFilters,
    page_size: u32,
    all: bool,
) -> Result<()> {
    let ListFilters {
        connections,
        vendors,
        statuses,
        find,
    } = filters;
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
    // Columns as wide as their widest value (at least the header's width), so a long id
    // never pushes the rest of its line out of line.
    let mut widths: Option<(usize, usize)> = None;
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
                emails: find.emails.clone(),
                phones: find.phones.clone(),
                visitor_ids: find.visitor_ids.clone(),
                agent_ids: find.agent_ids.clone(),
                tags: find.tags.clone(),
                text: find.text.clone().unwrap_or_default(),
                contact_ids: find.contacts.clone(),
            })
            .await
            .map_err(answer)
            .context("cannot list conversations")?
            .into_inner();
        let page_id = page
            .conversations
            .iter()
            .map(|c| c.id.chars().count())
            .max();
        let page_vendor = page
            .conversations
            .iter()
            .map(|c| c.vendor.chars().count())
            .max();
        let (id_width, vendor_width) = match widths {
            None => {
                let first = (
                    page_id.unwrap_or(0).max(24),
                    page_vendor.unwrap_or(0).max(10),
                );
                println!(
                    "{:<id_width$} {:<vendor_width$} {:<8} {:<24} {:>5}  visitor",
                    "id",
                    "vendor",
                    "status",
                    "started",
                    "msgs",
                    id_width = first.0,
                    vendor_width = first.1
                );
                first
            }
            Some((id, vendor)) => (
                id.max(page_id.unwrap_or(0)),
                vendor.max(page_vendor.unwrap_or(0)),
            ),
        };
        widths = Some((id_width, vendor_width));
        for c in &page.conversations {
            println!(
                "{:<id_width$} {:<vendor_width$} {:<8} {:<24} {:>5}  {}",
                c.id,
                c.vendor,
                status_name(c.status()),
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
            if page.indexed_through > 0 {
                println!(
                    "(found by the index, which has read the log through sequence {})",
                    page.indexed_through
                );
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
        .await
        .map_err(answer)
        .context("cannot get the conversation")?
        .into_inner();
    println!("{} ({}) {}", c.id, c.vendor, status_name(c.status()));
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
            message_text(m)
        );
    }
    Ok(())
}

async fn list_quarantine(server: ServerArg, connections: Vec<String>, bodies: bool) -> Result<()> {
    let mut client = server.connect().await?;
    let mut page_token = String::new();
    let mut shown = 0u64;
    let mut connection_width = 16;
    loop {
        let page = client
            .list_quarantine(v1::ListQuarantineRequest {
                connection_ids: connections.clone(),
                page_size: 200,
                page_token: page_token.clone(),
            })
            .await
            .map_err(answer)
            .context("cannot list the quarantine")?
            .into_inner();
        if shown == 0 {
            println!("{} held ({} bytes)", page.total_entries, page.total_bytes);
        }
        // The connection column is as wide as the widest id (a long id stays in line).
        connection_width = page
            .webhooks
            .iter()
            .map(|w| w.connection_id.chars().count())
            .fold(connection_width, usize::max);
        for w in &page.webhooks {
            shown += 1;
            println!(
                "{:<8} {:<connection_width$} {:<10} received={} attempts={} reason: {}",
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
        .await
        .map_err(answer)
        .context("cannot retry the quarantine")?
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
        .await
        .map_err(answer)
        .context("cannot list the connections")?
        .into_inner();
    if response.connections.is_empty() {
        bail!("the server has no connections configured");
    }
    // One short header line per connection, its details on indented lines below it, long
    // texts wrapped.
    for c in response.connections {
        let sync = c.sync.unwrap_or_default();
        println!("{}  {}  {}", c.id, c.vendor, c.webhook_path);
        println!(
            "    verification: {}",
            if c.verification_enabled { "on" } else { "off" }
        );
        if let Some(warning) = c.verification_warning {
            print_wrapped("    WARNING: webhooks not authenticated: ", &warning);
        }
        if sync.supported {
            println!(
                "    sync: records={} last_success={}",
                sync.records_pulled,
                sync.last_success
                    .as_ref()
                    .and_then(convert::from_timestamp)
                    .map_or_else(|| "never".to_owned(), Timestamp::to_rfc3339),
            );
            if let Some(cursor) = sync.cursor.filter(|c| !c.is_empty()) {
                print_wrapped("    cursor: ", &cursor);
            }
            if let Some(error) = sync.last_error {
                print_wrapped("    last error: ", &error);
            }
        } else {
            print_wrapped(
                "    sync: unsupported: ",
                &sync.unsupported_reason.unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// Lines of at most [`WRAP_WIDTH`] characters (a word longer than that stays whole).
const WRAP_WIDTH: usize = 100;

/// Prints `first` then `text`, wrapped at word boundaries; continuation lines are indented
/// two more than `first`'s own indentation.
fn print_wrapped(first: &str, text: &str) {
    for line in wrapped(first, text) {
        println!("{line}");
    }
}

fn wrapped(first: &str, text: &str) -> Vec<String> {
    let indent = " ".repeat(first.len() - first.trim_start().len() + 2);
    let mut lines = Vec::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WRAP_WIDTH {
            lines.push(std::mem::replace(&mut line, indent.clone()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_wrap_at_words_onto_indented_lines() {
        let text = "word ".repeat(60);
        let lines = wrapped("    sync: ", &text);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.chars().count() <= WRAP_WIDTH),
            "{lines:?}"
        );
        assert!(lines[0].starts_with("    sync: word"));
        assert!(lines[1].starts_with("      word"), "{lines:?}");
        assert_eq!(lines.concat().matches("word").count(), 60);
        assert_eq!(wrapped("    a: ", "short"), ["    a: short"]);
    }

    #[test]
    fn grpc_errors_read_as_one_line_with_the_status_name() {
        let error = answer(tonic::Status::not_found(
            "conversation livechat/x not found",
        ));
        assert_eq!(
            error.to_string(),
            "conversation livechat/x not found (NOT_FOUND)"
        );
        let error = answer(tonic::Status::deadline_exceeded(""));
        assert_eq!(error.to_string(), "the server answered DEADLINE_EXCEEDED");
    }

    #[test]
    fn a_server_without_a_scheme_means_http() {
        assert_eq!(
            server_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(server_url("https://h:1").unwrap(), "https://h:1");
        assert!(
            server_url("grpc://h:1")
                .unwrap_err()
                .to_string()
                .contains("http://HOST:PORT")
        );
    }
}
