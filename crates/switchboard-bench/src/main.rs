//! `switchboard-bench`: measures Switchboard in one process on loopback.
//!
//! - `ingest`: the real server (verification on) and 64 keep-alive HTTP/1.1 clients posting
//!   the fixtures of every plugin (from switchboard-plugins), each request made unique; durable acknowledgements/s.
//! - `floor`: the same appends straight to the store (same group commit and fsync), no HTTP,
//!   no verification, no parsing.
//! - `replay`: one `StreamEvents` subscriber reading a preloaded log from the beginning.
//! - `query`: `ListConversations` and `GetConversation` over preloaded conversations.
//! - `fanout`: 100 `StreamEvents` subscribers tailing while 2,000 webhooks/s arrive.
//! - `growth`: ingest and query figures at 10k, 100k and 1M conversations.
//!
//! Run in release mode: `cargo run --release -p switchboard-bench -- ingest --with-floor`.

// Keep every plugin's inventory registration linked into the binary.
use switchboard_plugins as _;

mod fanout;
mod find;
mod growth;
mod load;
mod long;
mod parse;
mod scenarios;
mod stalled;
mod workload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Switchboard benchmarks, in-process on loopback over a temp dir. Run with --release.
#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Durable webhook ingest over HTTP: acknowledged webhooks/s and latency.
    Ingest {
        #[command(flatten)]
        load: LoadArgs,
        /// Also run `floor` afterwards and print the ratio ingest/floor.
        #[arg(long)]
        with_floor: bool,
    },
    /// The same appends straight to the store: events/s and latency of `Store::append`.
    Floor {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// One StreamEvents subscriber replaying a preloaded log from the beginning.
    Replay {
        /// Events to preload.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// ListConversations and GetConversation latency over preloaded conversations.
    Query {
        /// Conversations to preload (spread over 4 vendors and one year).
        #[arg(long, default_value_t = 100_000)]
        conversations: u64,
        /// Calls of each RPC.
        #[arg(long, default_value_t = 2000)]
        calls: u64,
    },
    /// StreamEvents subscribers tailing while webhooks arrive at a fixed rate: acknowledgement
    /// to receipt latency, and whether every subscriber received every event.
    Fanout {
        /// StreamEvents subscribers, each on its own gRPC connection.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Webhooks per second (open loop).
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// HTTP keep-alive connections the webhooks are spread over.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Run on PostgreSQL at this URL (an empty schema: pick it with
        /// `options=-csearch_path%3D<schema>`) instead of sled.
        #[arg(long)]
        database_url: Option<String>,
        /// Servers on that database (needs `--database-url` when more than 1): webhooks go
        /// to the first, subscribers read from the last, so the latency crosses replicas.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// StreamEvents subscribers that never read while large webhooks arrive: the server's
    /// memory with them and after they are gone.
    Stalled {
        /// Subscribers that never read, each on its own gRPC connection.
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
        /// Webhooks posted while they hold their streams.
        #[arg(long, default_value_t = 2000)]
        webhooks: u64,
        /// Bytes of each webhook body.
        #[arg(long, default_value_t = 64 * 1024)]
        body_bytes: usize,
        /// Post the webhooks first, then open the subscribers from the start of the log.
        #[arg(long)]
        replay: bool,
    },
    /// The store's size for long conversations: many chats of many messages, one webhook per
    /// message, against the bytes of the bodies received.
    LongChats {
        /// Chats.
        #[arg(long, default_value_t = 100)]
        chats: u64,
        /// Messages per chat.
        #[arg(long, default_value_t = 200)]
        messages: u64,
    },
    /// What each plugin costs per webhook: `verify`, `parse` and `raw_for_storage` on one
    /// thread over every fixture (no HTTP, no store).
    Parse {
        /// Requests per fixture in each round.
        #[arg(long, default_value_t = 5_000)]
        iterations: u64,
        /// Rounds; each fixture's best is kept.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Ingest throughput and query latency as one store grows through the levels.
    Growth {
        /// Conversation counts, increasing, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
        levels: Vec<u64>,
        /// Measured seconds of ingest at each level.
        #[arg(long, default_value_t = 3)]
        ingest_seconds: u64,
        /// Calls of each query RPC at each level.
        #[arg(long, default_value_t = 500)]
        calls: u64,
    },
    /// (internal) Preloads events for `replay` in a separate process.
    #[command(hide = true)]
    PreloadEvents {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        events: u64,
    },
    /// The finder over preloaded conversations: the index rebuilt from the log, text and
    /// contact queries, and what keeping the index up costs ingest (the store floor without
    /// and with a finder tailing it).
    Find {
        /// Conversations to preload (one event each, 4 per person, spread over 4 vendors).
        #[arg(long, default_value_t = 1_000_000)]
        conversations: u64,
        /// Calls of each query.
        #[arg(long, default_value_t = 1000)]
        calls: u64,
        #[command(flatten)]
        load: LoadArgs,
        /// Run it on PostgreSQL at this URL (an empty database or schema) instead of the
        /// embedded store.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// (internal) Preloads conversations for `find` in a separate process.
    #[command(hide = true)]
    PreloadFind {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        conversations: u64,
    },
    /// (internal) Preloads conversations for `query` in a separate process.
    #[command(hide = true)]
    PreloadConversations {
        #[arg(long)]
        dir: PathBuf,
        /// The first conversation number to append (the ones before are there already).
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        conversations: u64,
    },
}

/// The shape of a closed-loop load.
#[derive(Debug, Clone, Copy, clap::Args)]
struct LoadArgs {
    /// Concurrent clients (HTTP keep-alive connections, or store tasks for `floor`).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up before measuring (not counted).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
}

/// mimalloc instead of glibc's malloc: the server allocates and frees many small buffers on
/// two threads or more (documents, events, requests), where glibc's arenas cost most.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(
        cli.scenario,
        Scenario::PreloadEvents { .. }
            | Scenario::PreloadConversations { .. }
            | Scenario::PreloadFind { .. }
    ) {
        println!(
            "switchboard-bench: {} cores, {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            scenarios::cpu_model()
        );
    }
    match cli.scenario {
        Scenario::Ingest { load, with_floor } => {
            let ingest = scenarios::ingest(load).await?;
            if with_floor {
                let floor = scenarios::floor(load).await?;
                println!();
                println!(
                    "== ratio ingest/floor: {:.2} ({:.0} webhooks/s over HTTP vs {:.0} appends/s to the store)",
                    ingest / floor,
                    ingest,
                    floor
                );
            }
        }
        Scenario::Floor { load } => {
            scenarios::floor(load).await?;
        }
        Scenario::Replay { events } => scenarios::replay(events).await?,
        Scenario::PreloadEvents { dir, events } => {
            scenarios::preload_events(&dir, events).await?;
        }
        Scenario::PreloadConversations {
            dir,
            from,
            conversations,
        } => {
            scenarios::preload_conversations(&dir, from, conversations).await?;
        }
        Scenario::Query {
            conversations,
            calls,
        } => scenarios::query(conversations, calls).await?,
        Scenario::Fanout {
            subscribers,
            rate,
            seconds,
            connections,
            database_url,
            replicas,
        } => {
            fanout::fanout(fanout::FanoutArgs {
                subscribers,
                rate,
                seconds,
                connections,
                database_url,
                replicas,
            })
            .await?;
        }
        Scenario::Stalled {
            subscribers,
            webhooks,
            body_bytes,
            replay,
        } => {
            stalled::stalled(stalled::StalledArgs {
                subscribers,
                webhooks,
                body_bytes,
                replay,
            })
            .await?;
        }
        Scenario::Find {
            conversations,
            calls,
            load,
            database_url,
        } => find::find(conversations, calls, load, database_url).await?,
        Scenario::PreloadFind { dir, conversations } => find::preload(&dir, conversations).await?,
        Scenario::LongChats { chats, messages } => long::long_chats(chats, messages).await?,
        Scenario::Parse { iterations, rounds } => parse::parse(iterations, rounds)?,
        Scenario::Growth {
            levels,
            ingest_seconds,
            calls,
        } => growth::growth(&levels, ingest_seconds, calls).await?,
    }
    Ok(())
}
