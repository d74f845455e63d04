//! `growth`: how ingest throughput and query latency change as the store grows.
//!
//! One store directory grows through the levels (10k, 100k, 1M conversations by default). At
//! each level a child process appends the missing conversations (as `query` preloads them),
//! then the real server starts over the directory and this process measures, in order: the
//! `ingest` load (64 keep-alive HTTP clients, every vendor's fixtures made unique) for a few
//! seconds, then ListConversations and GetConversation latency as `query` does. The ingest
//! adds the fixtures' own conversations (outside the queried time ranges), so the next level's
//! preload starts from the count the store holds.

use std::time::Duration;

use anyhow::Context;

use crate::LoadArgs;
use crate::scenarios::{
    grpc_client, in_child, ingest_load, query_calls, rss_mib, setup, start_server,
};

/// One level's figures.
struct Row {
    conversations: u64,
    ingest_rate: f64,
    ingest_p99_ms: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
    get_p50_ms: f64,
    get_p99_ms: f64,
    rss_mib: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// `growth`.
pub async fn growth(levels: &[u64], ingest_seconds: u64, calls: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        levels.windows(2).all(|pair| pair[0] < pair[1]),
        "--levels must be increasing"
    );
    let (registry, templates, dir) = setup()?;
    let data_dir = dir.path().join("data");
    let data = data_dir
        .to_str()
        .context("the temp dir is not UTF-8")?
        .to_owned();
    let load = LoadArgs {
        connections: 64,
        seconds: ingest_seconds,
        warmup: 1,
    };
    println!(
        "workload: levels {levels:?} conversations; at each: ingest (64 HTTP clients, {ingest_seconds} s after 1 s warm-up), then {calls} ListConversations and {calls} GetConversation"
    );
    let mut rows = Vec::new();
    let mut preloaded = 0u64;
    for &level in levels {
        in_child(&[
            "preload-conversations",
            "--dir",
            &data,
            "--from",
            &preloaded.to_string(),
            "--conversations",
            &level.to_string(),
        ])?;
        preloaded = level;
        let server = start_server(&registry, &data_dir).await?;
        let conversations = crate::scenarios::sled(&server)?.conversation_count()?;
        let ingest = ingest_load(&server, &templates, load).await?;
        anyhow::ensure!(
            ingest.errors.is_empty(),
            "ingest at {level} had errors: {:?}",
            ingest.errors
        );
        let client = grpc_client(&server).await?;
        let (list, get) = query_calls(client, level, calls).await?;
        let row = Row {
            conversations,
            ingest_rate: ingest.rate(),
            ingest_p99_ms: ms(ingest.latency.value_at_quantile(0.99)),
            list_p50_ms: ms(list.value_at_quantile(0.50)),
            list_p99_ms: ms(list.value_at_quantile(0.99)),
            get_p50_ms: ms(get.value_at_quantile(0.50)),
            get_p99_ms: ms(get.value_at_quantile(0.99)),
            rss_mib: rss_mib(),
        };
        println!(
            "level {level}: {} conversations at start, ingest {:.0} webhooks/s (p99 {:.2} ms), List p50/p99 {:.2}/{:.2} ms, Get p50/p99 {:.2}/{:.2} ms, VmRSS {:.0} MiB",
            row.conversations,
            row.ingest_rate,
            row.ingest_p99_ms,
            row.list_p50_ms,
            row.list_p99_ms,
            row.get_p50_ms,
            row.get_p99_ms,
            row.rss_mib
        );
        rows.push(row);
        server.shutdown().await?;
        // Let the store's files close before the next child opens them.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!();
    println!("== growth: ingest and query cost by store size (server over the same growing store)");
    println!(
        "| conversations | ingest webhooks/s | ingest p99 | List p50 / p99 | Get p50 / p99 | VmRSS |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.0} MiB |",
            row.conversations,
            row.ingest_rate,
            row.ingest_p99_ms,
            row.list_p50_ms,
            row.list_p99_ms,
            row.get_p50_ms,
            row.get_p99_ms,
            row.rss_mib
        );
    }
    Ok(())
}
