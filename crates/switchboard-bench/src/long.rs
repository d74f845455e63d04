//! `long-chats`: the store's size for long conversations. Many chats of many messages each,
//! every message its own LiveChat `incoming_event` webhook (the fixture
//! `v3_incoming_event_message.json`, with the chat id, the event id and a varied text per
//! message), parsed by the real plugin and appended with its raw body by 64 concurrent tasks,
//! the chats interleaved as a vendor would deliver them. Prints the data dir against the bytes
//! of the bodies received: what the issue asks ("a 200-message chat must not cost 200
//! rewrites of itself") as a ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use switchboard_core::{Registry, Timestamp, WebhookRequest};
use switchboard_store::{AppendRequest, Store};

use crate::scenarios::dir_bytes;
use crate::workload;

/// Words the message texts are drawn from (varied, so that compression sees text, not
/// repetition).
const WORDS: &[&str] = &[
    "order", "refund", "delivery", "tomorrow", "account", "password", "thanks", "invoice",
    "please", "check", "parcel", "tracking", "number", "address", "changed", "help", "price",
    "discount", "size", "colour", "return", "label", "email", "phone", "call", "later", "today",
    "problem", "payment", "card", "declined", "again", "working", "great", "sorry", "wait",
];

pub async fn long_chats(chats: u64, messages: u64) -> anyhow::Result<()> {
    let registry = Registry::from_inventory()?;
    let config = workload::connections()
        .into_iter()
        .find(|c| c.vendor == "livechat")
        .context("the livechat plugin is linked")?;
    let plugin = registry.get("livechat").context("livechat registered")?;
    let source: Arc<dyn switchboard_core::WebhookSource> = Arc::from(
        (plugin.webhook.context("livechat takes webhooks")?)(&config)
            .map_err(|e| anyhow::anyhow!(e.message))?,
    );
    let template: serde_json::Value = serde_json::from_str(include_str!(
        "../../../plugins/livechat/fixtures/v3_incoming_event_message.json"
    ))?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let total = chats * messages;
    let next = Arc::new(AtomicU64::new(0));
    let body_bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, source, config, template) = (
            store.clone(),
            Arc::clone(&source),
            config.clone(),
            template.clone(),
        );
        let (next, body_bytes) = (Arc::clone(&next), Arc::clone(&body_bytes));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                // Interleaved: message m of chat c is webhook m * chats + c.
                let (chat, message) = (n % chats, n / chats);
                let mut body = template.clone();
                let payload = &mut body["payload"];
                payload["chat_id"] = format!("LONG{chat:06}").into();
                payload["thread_id"] = format!("T{chat:06}").into();
                let event = &mut payload["event"];
                event["id"] = format!("T{chat:06}_{message}").into();
                let text: Vec<&str> = (0..12)
                    .map(|i| WORDS[((n * 7 + i * 13 + message) % WORDS.len() as u64) as usize])
                    .collect();
                event["text"] = text.join(" ").into();
                event["created_at"] = format!(
                    "2024-05-01T{:02}:{:02}:{:02}.000000Z",
                    (message / 3600) % 24,
                    (message / 60) % 60,
                    message % 60
                )
                .into();
                let raw = serde_json::to_string_pretty(&body)?;
                let request = WebhookRequest {
                    connection: &config,
                    headers: &[],
                    query: &[],
                    body: raw.as_bytes(),
                    received_at: Timestamp::now(),
                };
                let events = source
                    .parse(&request)
                    .map_err(|e| anyhow::anyhow!("parse: {}", e.message))?;
                body_bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                let mut append = AppendRequest::new(config.id.clone(), "livechat", events);
                append.raw = Some(raw);
                store.append(append).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let head = store.head().0;
    store.close().await?;
    drop(store);
    let on_disk = dir_bytes(dir.path());
    let received = body_bytes.load(Ordering::Relaxed);
    println!("== long-chats: {chats} chats x {messages} messages, one webhook per message");
    println!(
        "  appended       {head} events from {total} webhooks in {seconds:.1} s ({:.0} webhooks/s)",
        total as f64 / seconds
    );
    println!(
        "  bodies         {:.1} MiB received ({:.0} bytes per webhook)",
        received as f64 / 1048576.0,
        received as f64 / total as f64
    );
    println!(
        "  data dir       {:.1} MiB after the run: {:.2}x the bodies received, {:.0} bytes per webhook",
        on_disk as f64 / 1048576.0,
        on_disk as f64 / received as f64,
        on_disk as f64 / total as f64
    );
    Ok(())
}
