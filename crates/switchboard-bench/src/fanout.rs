//! `fanout`: StreamEvents subscribers tailing the log while webhooks arrive at a fixed rate.
//!
//! Every webhook carries `X-Request-Id: fan-<n>`, which the server stores on its events. The
//! sender records when each webhook's `200` arrived (the acknowledgement); every subscriber
//! records when each event arrived. Afterwards each subscriber's events are checked (exactly
//! the sequences appended during the run, in order, none missing, none repeated) and the
//! latency from acknowledgement to receipt is computed for every (subscriber, event). An event
//! a subscriber received before the sender saw the `200` counts as 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_proto::v1;

use crate::load;
use crate::scenarios::{
    self, grpc_client, http_clients, post_webhook, setup, start_server, start_server_on,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutArgs {
    /// StreamEvents subscribers.
    pub subscribers: usize,
    /// Webhooks per second, open loop.
    pub rate: u64,
    /// Seconds of sending.
    pub seconds: u64,
    /// HTTP connections the webhooks are spread over.
    pub connections: usize,
    /// PostgreSQL instead of sled.
    pub database_url: Option<String>,
    /// Servers on that database: webhooks to the first, subscribers on the last.
    pub replicas: usize,
}

/// One event as a subscriber saw it.
struct Received {
    sequence: u64,
    /// The webhook number from the request id, if it is one of ours.
    webhook: Option<u64>,
    /// Nanoseconds since the run's base instant.
    at: u64,
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `fanout`.
pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0,
        "--rate and --seconds must be positive"
    );
    let (registry, templates, dir) = setup()?;
    println!(
        "workload: {} subscribers tailing; {} webhooks/s for {} s over {} HTTP connections ({} fixtures, {:.2} events per webhook on average)",
        args.subscribers,
        args.rate,
        args.seconds,
        args.connections,
        templates.len(),
        scenarios::mean_events(&templates)
    );
    anyhow::ensure!(
        args.replicas >= 1 && (args.replicas == 1 || args.database_url.is_some()),
        "--replicas above 1 needs --database-url (replicas share one PostgreSQL)"
    );
    let mut servers = Vec::new();
    for replica in 0..args.replicas {
        servers.push(match &args.database_url {
            Some(url) => start_server_on(&registry, url).await?,
            None => start_server(&registry, &dir.path().join(format!("data-{replica}"))).await?,
        });
    }
    if args.replicas > 1 {
        println!(
            "replicas: {} on one PostgreSQL; webhooks to the first, subscribers on the last",
            args.replicas
        );
    }
    let (server, reader) = (&servers[0], &servers[servers.len() - 1]);
    let start_head = server.storage.head().0;
    let base = Instant::now();

    // Subscribers: each its own gRPC connection, tailing from the current head.
    let (final_head_tx, final_head) = tokio::sync::watch::channel(u64::MAX);
    let mut subscribers = tokio::task::JoinSet::new();
    for index in 0..args.subscribers {
        let mut client = grpc_client(reader).await?;
        let mut stream = client
            .stream_events(v1::StreamEventsRequest {
                start: Some(v1::stream_events_request::Start::AfterSequence(start_head)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("subscriber {index} could not start its stream"))?
            .into_inner();
        let mut final_head = final_head.clone();
        subscribers.spawn(async move {
            let _client = client;
            let mut received: Vec<Received> = Vec::with_capacity(65_536);
            let mut last = start_head;
            loop {
                if last >= *final_head.borrow() {
                    break;
                }
                let message = tokio::select! {
                    message = stream.message() => message,
                    _ = final_head.changed() => continue,
                };
                let Some(event) =
                    message.with_context(|| format!("subscriber {index}: the stream failed"))?
                else {
                    anyhow::bail!("subscriber {index}: the stream ended at sequence {last}");
                };
                let at = nanos_since(base);
                last = event.sequence;
                received.push(Received {
                    sequence: event.sequence,
                    webhook: event
                        .request_id
                        .as_deref()
                        .and_then(|id| id.strip_prefix("fan-"))
                        .and_then(|n| n.parse().ok()),
                    at,
                });
            }
            Ok::<_, anyhow::Error>((index, received))
        });
    }

    // The sender: webhook k is due at k / rate seconds, round-robin over the connections.
    let total = args.rate * args.seconds;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let clients = http_clients(args.connections)?;
    let http_base = format!("http://{}", server.http_addr);
    let send_start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..args.connections {
        let clients = clients.clone();
        let templates = templates.clone();
        let acked = acked.clone();
        let http_base = http_base.clone();
        senders.spawn(async move {
            let mut errors = 0u64;
            let mut late = 0u64;
            let mut k = worker as u64;
            while k < total {
                let due = send_start + Duration::from_nanos(k * 1_000_000_000 / args.rate);
                if Instant::now() > due + Duration::from_millis(5) {
                    late += 1;
                }
                tokio::time::sleep_until(due.into()).await;
                let outcome = post_webhook(
                    &clients[worker],
                    &http_base,
                    &templates,
                    k,
                    Some(format!("fan-{k}")),
                )
                .await;
                match outcome {
                    Ok(()) => acked[k as usize].store(nanos_since(base).max(1), Ordering::Relaxed),
                    Err(_) => errors += 1,
                }
                k += args.connections as u64;
            }
            (errors, late)
        });
    }
    let (mut errors, mut late) = (0, 0);
    while let Some(done) = senders.join_next().await {
        let (e, l) = done?;
        errors += e;
        late += l;
    }
    let send_elapsed = send_start.elapsed();
    let end_head = server.storage.head().0;
    final_head_tx.send_replace(end_head);
    let expected = end_head - start_head;

    let mut latency = load::histogram();
    let mut before_ack = 0u64;
    let mut complete = 0usize;
    let mut problems = Vec::new();
    let collect = tokio::time::timeout(Duration::from_secs(60), async {
        let mut all = Vec::new();
        while let Some(done) = subscribers.join_next().await {
            all.push(done?);
        }
        Ok::<_, anyhow::Error>(all)
    })
    .await
    .context("the subscribers did not receive every event within 60 s of the last webhook")??;
    for outcome in collect {
        let (index, received) = outcome?;
        let in_order = received
            .iter()
            .zip(start_head + 1..)
            .all(|(event, sequence)| event.sequence == sequence);
        if in_order && received.len() as u64 == expected {
            complete += 1;
        } else {
            problems.push(format!(
                "subscriber {index}: {} events, expected {expected} (sequences {}..={end_head}), in order: {in_order}",
                received.len(),
                start_head + 1
            ));
        }
        for event in &received {
            let Some(n) = event.webhook else { continue };
            let Some(ack) = acked.get(n as usize).map(|a| a.load(Ordering::Relaxed)) else {
                continue;
            };
            if ack == 0 {
                continue;
            }
            if event.at <= ack {
                before_ack += 1;
                load::record(&mut latency, Duration::ZERO);
            } else {
                load::record(&mut latency, Duration::from_nanos(event.at - ack));
            }
        }
    }

    println!();
    println!("== fanout: StreamEvents subscribers tailing while webhooks arrive");
    println!(
        "  {:<14} {:>14.0} webhooks/s ({} acknowledged of {total} in {:.2} s; {errors} errors, {late} sent more than 5 ms late)",
        "sent",
        (total - errors) as f64 / send_elapsed.as_secs_f64(),
        total - errors,
        send_elapsed.as_secs_f64()
    );
    println!(
        "  {:<14} {:>14} events appended ({:.0} events/s)",
        "appended",
        expected,
        expected as f64 / send_elapsed.as_secs_f64()
    );
    println!(
        "  {:<14} {:>14} of {} received every event, in order, exactly once",
        "complete", complete, args.subscribers
    );
    for problem in &problems {
        println!("    {problem}");
    }
    println!(
        "  acknowledgement to receipt, over {} (subscriber, event) pairs ({before_ack} arrived before the sender saw the 200: counted as 0):",
        latency.len()
    );
    load::print_latency(&latency);
    for server in servers {
        server.shutdown().await?;
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{} subscribers missed events",
        problems.len()
    );
    Ok(())
}
