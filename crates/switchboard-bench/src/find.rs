//! `find`: the finder at scale: an index rebuilt from the log, text and contact queries over
//! it, and what keeping it up to date costs ingest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_core::{
    ConnectionId, ConversationPatch, ConversationStatus, EventKind, EventPayload, IncomingEvent,
    Message, Participant, Role, Timestamp,
};
use switchboard_find::FindIndex;
use switchboard_find::engine::{ContactListQuery, Finder, FinderOptions};
use switchboard_find::tantivy_index::TantivyIndex;
use switchboard_store::{AppendRequest, ConversationQuery, FindFilters, Storage, Store};
use switchboard_store_postgres::PgStore;

use crate::LoadArgs;
use crate::scenarios::{drive_appends, in_child, rss_mib, setup};
use crate::workload::vendors;

/// Conversations per person: the preload's e-mails repeat every `conversations / PEOPLE_SHARE`.
const CONVERSATIONS_PER_PERSON: u64 = 4;

/// Agents the preload's conversations are spread over.
const AGENTS: u64 = 60;

/// Tags the preload's conversations are spread over.
const TAGS: [&str; 8] = [
    "vip",
    "refund",
    "shipping",
    "billing",
    "bug",
    "sales",
    "spam",
    "returning",
];

/// A deterministic vocabulary: Latin pseudo-words made of syllables, some Cyrillic words and
/// some Chinese phrases, so that texts look like several languages and word frequencies
/// spread from common to rare.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "ba", "po", "li", "ge", "fu", "ha",
        "jo", "ze", "wa", "qui", "tra", "str", "en", "or", "al",
    ];
    let mut words = Vec::new();
    for a in SYLLABLES {
        for b in SYLLABLES {
            for c in ["", "n", "s", "t", "r"] {
                words.push(format!("{a}{b}{c}"));
            }
        }
    }
    for word in [
        "заказ",
        "доставка",
        "возврат",
        "оплата",
        "карта",
        "посылка",
        "адрес",
        "ёлка",
        "курьер",
        "скидка",
    ] {
        words.push(word.to_owned());
    }
    for phrase in [
        "退款",
        "订单",
        "发货",
        "快递",
        "地址",
        "优惠券",
        "发票",
        "客服",
    ] {
        words.push(phrase.to_owned());
    }
    words
}

/// A word drawn with a skew: low indexes are much more frequent (roughly Zipf-like).
fn skewed_word<'v>(rng: &mut impl Rng, words: &'v [String]) -> &'v str {
    let u: f64 = rng.random();
    let index = ((words.len() as f64).powf(u) - 1.0) as usize;
    &words[index.min(words.len() - 1)]
}

fn conversation(n: u64, total: u64, words: &[String]) -> (usize, IncomingEvent) {
    let mut rng = StdRng::seed_from_u64(n);
    let vendor = (n % vendors().len() as u64) as usize;
    let start = 1_735_689_600i64; // 2025-01-01
    let at = Timestamp::from_secs(start + (n as i64 * 365 * 86_400) / total as i64)
        .expect("a valid time");
    let external_id = format!("conv-{n:08}");
    let person = n % (total / CONVERSATIONS_PER_PERSON).max(1);
    let visitor = Participant {
        id: format!("visitor-{n}"),
        name: Some(format!("{} {}", skewed_word(&mut rng, words), person)),
        email: Some(format!("person{person}@example.com")),
        phone: person
            .is_multiple_of(3)
            .then(|| format!("+1 415 555 {:04}", person % 10_000)),
        ..Participant::default()
    };
    let agent = format!("agent-{}@example.com", rng.random_range(0..AGENTS));
    let mut patch = ConversationPatch::new(external_id.clone());
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(at);
    patch.visitor = Some(visitor.clone());
    patch.agents_joined = vec![Participant {
        id: agent.clone(),
        ..Participant::default()
    }];
    patch.tags_added = vec![TAGS[rng.random_range(0..TAGS.len())].to_owned()];
    patch.messages = (0u32..3)
        .map(|m| {
            let text: Vec<&str> = (0..8).map(|_| skewed_word(&mut rng, words)).collect();
            Message {
                key: format!("{external_id}-{m}"),
                author_role: if m.is_multiple_of(2) {
                    Role::Visitor
                } else {
                    Role::Agent
                },
                author_id: Some(if m.is_multiple_of(2) {
                    visitor.id.clone()
                } else {
                    agent.clone()
                }),
                author_name: None,
                text: text.join(" "),
                attachments: Vec::new(),
                sent_at: at,
                automatic: false,
                data: None,
            }
        })
        .collect();
    let event = IncomingEvent {
        dedup_key: format!("chat_started:{external_id}"),
        kind: EventKind::ChatStarted,
        vendor_event: "chat_started".to_owned(),
        occurred_at: at,
        payload: EventPayload::Conversation(patch),
    };
    (vendor, event)
}

/// Appends `conversations` conversations for `find`, one event each, in requests of 1000
/// from 4 concurrent tasks.
async fn append_conversations(
    storage: &Arc<dyn Storage>,
    conversations: u64,
) -> anyhow::Result<()> {
    let words = vocabulary();
    let started = Instant::now();
    let mut batches: Vec<Vec<IncomingEvent>> = vec![Vec::new(); vendors().len()];
    let mut in_flight = tokio::task::JoinSet::new();
    for n in 0..conversations {
        let (vendor, event) = conversation(n, conversations, &words);
        batches[vendor].push(event);
        if batches[vendor].len() >= 1000 || n + 1 == conversations {
            for (v, batch) in batches.iter_mut().enumerate() {
                if batch.is_empty() || (batch.len() < 1000 && n + 1 != conversations) {
                    continue;
                }
                let request = AppendRequest::new(
                    ConnectionId::new(vendors()[v]).expect("a valid connection id"),
                    vendors()[v],
                    std::mem::take(batch),
                );
                let storage = storage.clone();
                in_flight.spawn(async move { storage.append(request).await });
                while in_flight.len() >= 4 {
                    in_flight.join_next().await.expect("a task")??;
                }
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    println!(
        "preloaded {conversations} conversations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// (internal) Appends `conversations` conversations for `find` to the sled store at
/// `data_dir` (in a process of its own, so that the measured one starts cold).
pub async fn preload(data_dir: &Path, conversations: u64) -> anyhow::Result<()> {
    let store = Store::open(data_dir)?;
    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    append_conversations(&storage, conversations).await?;
    store.close().await?;
    Ok(())
}

fn print_latency(what: &str, histogram: &Histogram<u64>, extra: &str) {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {what:<44} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} calls{extra})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

async fn start_finder(
    store: &Store,
    index_dir: &Path,
) -> anyhow::Result<(Arc<Finder>, Arc<TantivyIndex>)> {
    let index = Arc::new(TantivyIndex::open(index_dir)?);
    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    let finder = Finder::start(storage, index.clone(), FinderOptions::default());
    Ok((finder, index))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `find`: on the embedded store (tantivy index) or, with `database_url`, on PostgreSQL
/// (its own index tables; the database or schema must be empty).
pub async fn find(
    conversations: u64,
    calls: u64,
    load: LoadArgs,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temp dir; check TMPDIR")?;
    let (storage, index, backend): (Arc<dyn Storage>, Arc<dyn FindIndex>, &str) =
        match &database_url {
            None => {
                let data_dir = dir.path().join("data");
                let data = data_dir.to_str().context("the temp dir is not UTF-8")?;
                in_child(&[
                    "preload-find",
                    "--dir",
                    data,
                    "--conversations",
                    &conversations.to_string(),
                ])?;
                let store = Store::open(&data_dir)?;
                let index = TantivyIndex::open(&dir.path().join("find"))?;
                (
                    Arc::new(store),
                    Arc::new(index),
                    "the embedded store, tantivy",
                )
            }
            Some(url) => {
                let store = PgStore::open(url).await?;
                anyhow::ensure!(
                    store.conversation_count().await? == 0,
                    "the database at --database-url holds conversations already: give the bench an empty database or schema"
                );
                let index = store.find_index();
                let storage: Arc<dyn Storage> = Arc::new(store);
                append_conversations(&storage, conversations).await?;
                (storage, Arc::new(index), "PostgreSQL, its own text search")
            }
        };
    let head = storage.head();

    // 1. The index rebuilt from the log.
    let rss_before = rss_mib();
    let started = Instant::now();
    let finder = Finder::start(storage.clone(), index, FinderOptions::default());
    while !finder.caught_up(head, Duration::from_secs(600)).await? {}
    let rebuild = started.elapsed();
    println!();
    println!("== find on {backend}: the index built from a log of {conversations} conversations");
    println!(
        "  {:<14} {:>10.0} events/s ({} events in {:.1} s)",
        "rebuild",
        head.0 as f64 / rebuild.as_secs_f64(),
        head.0,
        rebuild.as_secs_f64()
    );
    if database_url.is_none() {
        println!(
            "  {:<14} {:>10.1} MiB of index ({:.0} bytes per conversation)",
            "size",
            dir_bytes(&dir.path().join("find")) as f64 / (1024.0 * 1024.0),
            dir_bytes(&dir.path().join("find")) as f64 / conversations as f64,
        );
    }
    println!(
        "  {:<14} {:>10.0} MiB after the rebuild ({rss_before:.0} MiB before)",
        "VmRSS",
        rss_mib()
    );

    // 2. Queries, one at a time, first pages of 50.
    let words = vocabulary();
    let mut rng = StdRng::seed_from_u64(7);
    let people = (conversations / CONVERSATIONS_PER_PERSON).max(1);
    println!();
    println!(
        "== find: first pages of 50 over {conversations} conversations (Finder calls in process: index + store reads; no gRPC)"
    );
    let mut one_word = histogram();
    let mut two_words = histogram();
    let mut matched = 0usize;
    for i in 0..calls {
        let text = if i.is_multiple_of(2) {
            skewed_word(&mut rng, &words).to_owned()
        } else {
            format!(
                "{} {}",
                skewed_word(&mut rng, &words),
                skewed_word(&mut rng, &words)
            )
        };
        let query = ConversationQuery {
            find: FindFilters {
                text: Some(text),
                ..FindFilters::default()
            },
            page_size: 50,
            ..ConversationQuery::default()
        };
        let t = Instant::now();
        let page = finder.list_conversations(&query).await?;
        let elapsed = t.elapsed().as_micros() as u64;
        matched += page.value.conversations.len();
        if i.is_multiple_of(2) {
            one_word.record(elapsed.max(1))?;
        } else {
            two_words.record(elapsed.max(1))?;
        }
    }
    print_latency(
        "text, one word",
        &one_word,
        &format!(
            "; {:.1} found per page on average",
            matched as f64 / calls as f64
        ),
    );
    print_latency("text, two words", &two_words, "");

    let mut by_email = histogram();
    let mut contact = histogram();
    let mut by_text_and_vendor = histogram();
    for _ in 0..calls {
        let person = rng.random_range(0..people);
        let email = format!("person{person}@example.com");
        let query = ConversationQuery {
            find: FindFilters {
                emails: vec![email.clone()],
                ..FindFilters::default()
            },
            page_size: 50,
            ..ConversationQuery::default()
        };
        let t = Instant::now();
        let page = finder.list_conversations(&query).await?;
        by_email.record((t.elapsed().as_micros() as u64).max(1))?;
        anyhow::ensure!(
            !page.value.conversations.is_empty(),
            "no conversation of {email}"
        );

        let t = Instant::now();
        let contacts = finder
            .list_contacts(&ContactListQuery {
                email: Some(email.clone()),
                page_size: 1,
                ..ContactListQuery::default()
            })
            .await?;
        let id = contacts
            .value
            .contacts
            .first()
            .with_context(|| format!("no contact for {email}"))?
            .id
            .clone();
        let view = finder.get_contact(&id, 50).await?;
        contact.record((t.elapsed().as_micros() as u64).max(1))?;
        anyhow::ensure!(
            !view.value.conversations.is_empty(),
            "contact {id} has no conversations"
        );

        let query = ConversationQuery {
            vendors: vec![vendors()[rng.random_range(0..vendors().len())].to_owned()],
            find: FindFilters {
                text: Some(skewed_word(&mut rng, &words).to_owned()),
                ..FindFilters::default()
            },
            page_size: 50,
            ..ConversationQuery::default()
        };
        let t = Instant::now();
        finder.list_conversations(&query).await?;
        by_text_and_vendor.record((t.elapsed().as_micros() as u64).max(1))?;
    }
    print_latency("a person's conversations, by e-mail", &by_email, "");
    print_latency("a contact: by e-mail, then GetContact", &contact, "");
    print_latency("text and vendor", &by_text_and_vendor, "");
    finder.shutdown().await;
    storage.close_within(Duration::from_secs(30)).await?;
    if database_url.is_some() {
        println!();
        println!("(index upkeep is measured on the embedded store only)");
        return Ok(());
    }

    // 3. What the index costs ingest: the same appends straight to a fresh store, without and
    // with a finder tailing it, alternating, in one run.
    println!();
    println!(
        "== find: index upkeep, the seed workload appended straight to a fresh store ({} clients, {} s each, alternating)",
        load.connections, load.seconds
    );
    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 0..2 {
        without.push(ingest_round(load, false).await?);
        with.push(ingest_round(load, true).await?);
        println!(
            "  round {}: without the finder {:.0} appends/s, with it {:.0} appends/s",
            round + 1,
            without[round].0,
            with[round].0
        );
        if let Some(lag) = with[round].1 {
            println!(
                "           with it: the index caught up {:.2} s after the load stopped",
                lag.as_secs_f64()
            );
        }
    }
    let mean = |v: &[(f64, Option<Duration>)]| v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64;
    println!(
        "  upkeep cost: {:.1} % fewer appends/s with the finder ({:.0} vs {:.0} appends/s, means of 2 rounds)",
        (1.0 - mean(&with) / mean(&without)) * 100.0,
        mean(&with),
        mean(&without)
    );
    Ok(())
}

/// One closed-loop ingest round on a fresh store; with `finder`, a finder tails it the whole
/// time. Returns appends/s, and with a finder how long it took to catch up after the load.
async fn ingest_round(load: LoadArgs, finder: bool) -> anyhow::Result<(f64, Option<Duration>)> {
    let (_registry, templates, dir) = setup()?;
    let store = Store::open(&dir.path().join("data"))?;
    let running = if finder {
        Some(start_finder(&store, &dir.path().join("find")).await?.0)
    } else {
        None
    };
    let stats = drive_appends(&store, &templates, load).await;
    let caught_up = match &running {
        Some(finder) => {
            let t = Instant::now();
            while !finder
                .caught_up(store.head(), Duration::from_secs(60))
                .await?
            {}
            let lag = t.elapsed();
            finder.shutdown().await;
            Some(lag)
        }
        None => None,
    };
    store.close().await?;
    Ok((stats.rate(), caught_up))
}
