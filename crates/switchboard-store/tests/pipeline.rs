//! The pipelined writer: acknowledgements only after durability, the head only moves forward
//! over readable, gap-free events, redeliveries racing their original are answered once.

mod common;

use std::collections::BTreeSet;

use common::{message, request};
use switchboard_core::Sequence;
use switchboard_store::{Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_under_the_durable_head_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            max_batch: 8,
            cache_capacity: 4 * 1024 * 1024,
            ..StoreOptions::default()
        },
    )
    .unwrap();

    // A watcher records every head it is told about.
    let mut head_rx = store.subscribe_head();
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = vec![Sequence::ZERO];
            while head_rx.changed().await.is_ok() {
                let head = *head_rx.borrow_and_update();
                // Every announced event is readable at once: the head is the durable head.
                let last = store.read_events(Sequence(head.0 - 1), 1).unwrap();
                assert_eq!(last.len(), 1, "the head {head} was announced unreadable");
                assert_eq!(last[0].sequence, head);
                seen.push(head);
                if head == Sequence(32 * 20) {
                    break;
                }
            }
            seen
        })
    };

    let mut tasks = Vec::new();
    for task in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for round in 0..20 {
                let key = format!("t{task}-r{round}");
                let events = vec![message(&key, &format!("chat-{}", task % 5), 1_000, &key)];
                let receipt = store
                    .append(request("lc", "livechat", events))
                    .await
                    .unwrap();
                let sequence = receipt.appended[0];
                // Acknowledged: the durable head already covers it.
                assert!(store.head() >= sequence, "{sequence} acked above the head");
                mine.push(sequence);
            }
            mine
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for sequence in task.await.unwrap() {
            assert!(all.insert(sequence), "{sequence} given twice");
        }
    }
    let expected: BTreeSet<Sequence> = (1..=32 * 20).map(Sequence).collect();
    assert_eq!(all, expected);

    let seen = watcher.await.unwrap();
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "the head went backwards: {seen:?}"
    );
    let events = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence.0).collect();
    assert_eq!(sequences, (1..=32 * 20).collect::<Vec<u64>>());
    store.close().await.unwrap();
    drop(store);

    // Reopened: the same log, the same head.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(32 * 20));
    assert_eq!(
        store.read_events(Sequence::ZERO, usize::MAX).unwrap(),
        events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_racing_their_original_append_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            max_batch: 2,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    // 8 senders deliver the same 50 keys, each in its own order, so copies of one key land in
    // different groups, some while the first is still on its way to the disk.
    for sender in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for i in 0..50u64 {
                let n = (i * 7 + sender * 13) % 50;
                let key = format!("k{n}");
                let events = vec![message(&key, "chat", 1_000, &key)];
                let receipt = store
                    .append(request("lc", "livechat", events))
                    .await
                    .unwrap();
                assert_eq!(receipt.appended.len() + receipt.duplicates, 1);
                appended.extend(receipt.appended);
                // Whether appended now or by another sender: by the answer, the key's event is
                // under the durable head.
                let durable = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
                assert!(
                    durable.iter().any(|e| e.incoming.dedup_key == key),
                    "{key} answered before it was durable"
                );
            }
            appended
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.extend(task.await.unwrap());
    }
    appended.sort();
    assert_eq!(appended, (1..=50).map(Sequence).collect::<Vec<_>>());
    let keys: BTreeSet<String> = store
        .read_events(Sequence::ZERO, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.incoming.dedup_key)
        .collect();
    assert_eq!(keys.len(), 50);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_cache_serves_exactly_what_sled_holds() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        tail_cache_events: 50,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                // Two new events and one redelivery per request; the raw body goes on the first
                // new one.
                let events = vec![
                    message(&format!("t{task}-r{round}-a"), "chat", 1_000, "a"),
                    message(
                        &format!("t{task}-r{}-a", round.max(1) - 1),
                        "chat",
                        1_000,
                        "a",
                    ),
                    message(&format!("t{task}-r{round}-b"), "chat", 1_001, "b"),
                ];
                let mut request = request("lc", "livechat", events);
                request.raw = Some(format!("{{\"task\": {task}, \"round\": {round}}}"));
                request.request_id = Some(format!("req-{task}-{round}"));
                store.append(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let head = store.head();
    assert_eq!(head, Sequence(8 * 10 * 2));
    // The newest 50 come from the cache, whole ranges only; older ones from sled.
    let mut cached = Vec::new();
    let mut after = Sequence(head.0 - 50);
    loop {
        let page = store.read_events(after, 7).unwrap();
        let Some(last) = page.last() else { break };
        after = last.sequence;
        cached.extend(page);
    }
    let all = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, head.0);
    // The cache-only read: the same newest events, nothing older, nothing past the head.
    assert_eq!(
        store.read_events_cached(Sequence(head.0 - 50), 100),
        Some(cached.clone())
    );
    assert_eq!(store.read_events_cached(Sequence(head.0 - 51), 100), None);
    assert_eq!(store.read_events_cached(Sequence(0), 10), None);
    assert_eq!(store.read_events_cached(head, 10), Some(Vec::new()));
    store.close().await.unwrap();
    drop(store);

    // Reopened, the cache is empty: everything is decoded from sled.
    let store = Store::open_with(dir.path(), options).unwrap();
    let from_sled = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
    assert_eq!(from_sled, all);
    assert_eq!(cached[..], from_sled[from_sled.len() - 50..]);
    assert!(from_sled.iter().any(|e| e.raw.is_some()));
    assert!(from_sled.iter().all(|e| e.request_id.is_some()));
}
