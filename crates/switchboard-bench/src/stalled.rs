//! `stalled`: StreamEvents subscribers that open a stream and never read it while large
//! webhooks arrive. Reports the server's resident memory (`VmRSS`; server and client share the
//! process) before, with the subscribers holding their streams, and after they are gone, and
//! whether every webhook was acknowledged meanwhile.

use std::time::{Duration, Instant};

use switchboard_proto::v1;

use crate::scenarios::{grpc_client, rss_mib, setup, start_server};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct StalledArgs {
    /// Subscribers that never read, each on its own gRPC connection.
    pub subscribers: usize,
    /// Webhooks to post while they hold their streams.
    pub webhooks: u64,
    /// Bytes of each webhook body (a LiveChat chat with a long visitor name).
    pub body_bytes: usize,
    /// Post the webhooks first, then open the subscribers from the beginning of the log (each
    /// replays from the store), instead of opening them first (they tail together).
    pub replay: bool,
}

/// A legacy LiveChat `chat_started` of about `size` bytes.
fn body(n: u64, size: usize) -> String {
    let pad = "x".repeat(size.saturating_sub(300));
    format!(
        r#"{{"event_type":"chat_started","event_unique_id":"st-{n}","license_id":"1067","lc_version":"2","chat":{{"id":"ST{n}","started_timestamp":1552126412,"messages":[],"agents":[],"tags":[]}},"visitor":{{"id":"V{n}","name":"{pad}"}}}}"#
    )
}

/// `stalled`.
pub async fn stalled(args: StalledArgs) -> anyhow::Result<()> {
    let (registry, _templates, dir) = setup()?;
    println!(
        "workload: {} StreamEvents subscribers that never read ({}); {} webhooks of {} KiB each ({:.0} MiB in all)",
        args.subscribers,
        if args.replay {
            "opened after the webhooks, replaying from the log"
        } else {
            "opened first, tailing"
        },
        args.webhooks,
        args.body_bytes / 1024,
        (args.webhooks as f64 * args.body_bytes as f64) / (1024.0 * 1024.0)
    );
    let rss_start = rss_mib();
    let server = start_server(&registry, dir.path()).await?;
    let mut held = Vec::with_capacity(args.subscribers);
    let subscribe = async |held: &mut Vec<_>| -> anyhow::Result<()> {
        for _ in 0..args.subscribers {
            let mut client = grpc_client(&server).await?;
            let stream = client
                .stream_events(v1::StreamEventsRequest::default())
                .await?
                .into_inner();
            held.push((client, stream));
        }
        Ok(())
    };
    if !args.replay {
        subscribe(&mut held).await?;
    }
    let http = reqwest::Client::new();
    let url = format!("http://{}/webhooks/livechat", server.http_addr);
    let started = Instant::now();
    let mut acknowledged = 0u64;
    let mut peak = rss_mib();
    for n in 0..args.webhooks {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-switchboard-token", "lc-webhook-secret")
            .body(body(n, args.body_bytes))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::OK {
            acknowledged += 1;
        }
        if n % 50 == 0 {
            peak = peak.max(rss_mib());
        }
    }
    let sent_in = started.elapsed();
    let rss_ingested = rss_mib();
    if args.replay {
        subscribe(&mut held).await?;
    }
    // Let the readers fill whatever they are allowed to hold.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_mib());
    }
    let holding = rss_mib();
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib();
    println!(
        "acknowledged {acknowledged} of {} webhooks in {:.1} s ({:.0} webhooks/s) while the subscribers held their streams",
        args.webhooks,
        sent_in.as_secs_f64(),
        acknowledged as f64 / sent_in.as_secs_f64()
    );
    println!("  {:<34} {:>8.0} MiB", "VmRSS before the server", rss_start);
    println!(
        "  {:<34} {:>8.0} MiB",
        "VmRSS after the webhooks", rss_ingested
    );
    println!("  {:<34} {:>8.0} MiB", "VmRSS peak while held", peak);
    println!("  {:<34} {:>8.0} MiB", "VmRSS holding, after 5 s", holding);
    println!("  {:<34} {:>8.0} MiB", "VmRSS 3 s after they closed", after);
    let head = server.storage.head().0;
    server.shutdown().await?;
    crate::scenarios::print_data_dir(dir.path(), head, args.body_bytes as f64);
    Ok(())
}
