//! Erasure on disk: after `erase_contact` and the documented `Store::compact`, the data
//! directory's files hold none of the erased values: not as plain bytes, not inside any zstd
//! frame (the store compresses values of 400 bytes or more). The same grep finds every value
//! before the erasure, so it can fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{conn, started, ts};
use switchboard_core::{
    ConversationId, EventKind, EventPayload, IncomingEvent, Message, Participant, Role, Sequence,
    TicketId,
};
use switchboard_store::{AppendRequest, ErasurePlan, Store};

const SHORT: &[&str] = &[
    "Zebulon Quaxworth",
    "zebulon.quaxworth@example.org",
    "+420601999888",
    "Plovdiv-Zq",
    "QX-7734-PLOVER",
    "visitor-zqxw",
];
/// Only in long (compressed) records.
const LONG: &str = "Quaxworthian-saga";
const OTHER: &str = "YMIR-5521-Oddsdottir";

/// Every file under `dir`, as bytes, with every zstd frame in them decompressed and appended
/// (so that a compressed value is found too).
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut all = bytes.clone();
        let magic = [0x28, 0xB5, 0x2F, 0xFD];
        for start in 0..bytes.len().saturating_sub(4) {
            if bytes[start..start + 4] != magic {
                continue;
            }
            let frame = &bytes[start..];
            let Ok(size) = zstd::zstd_safe::find_frame_compressed_size(frame) else {
                continue;
            };
            if let Ok(plain) = zstd::bulk::decompress(&frame[..size.min(frame.len())], 16 << 20) {
                all.extend_from_slice(&plain);
            }
        }
        found.push((path.display().to_string(), all));
    }
    found
}

/// The values of `needles` found in `dir`'s files, each with the file it is in.
fn grep(dir: &Path, needles: &[&str]) -> Vec<String> {
    let files = contents(dir);
    let mut hits = Vec::new();
    for needle in needles {
        for (name, bytes) in &files {
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                hits.push(format!("{needle} in {name}"));
            }
        }
    }
    hits
}

fn message_event(
    key: &str,
    chat: &str,
    at: i64,
    author: (&str, &str),
    text: &str,
) -> IncomingEvent {
    let mut patch = switchboard_core::ConversationPatch::new(chat);
    patch.messages.push(Message {
        key: key.to_owned(),
        author_role: Role::Visitor,
        author_id: Some(author.0.to_owned()),
        author_name: Some(author.1.to_owned()),
        text: text.to_owned(),
        attachments: vec![],
        sent_at: ts(at),
        automatic: false,
        data: None,
    });
    common::event(key, EventKind::Message, at, patch)
}

/// Appends the person's conversation and ticket and another person's conversation; returns
/// the plan that erases the person.
async fn fill(store: &Store) -> ErasurePlan {
    let c = conn("lc");
    let person = Participant {
        id: SHORT[5].into(),
        name: Some(SHORT[0].into()),
        email: Some(SHORT[1].into()),
        phone: Some(SHORT[2].into()),
        attributes: BTreeMap::from([("city".to_owned(), SHORT[3].to_owned())]),
    };
    let mut start = started("s1", "chat-zq", 1_700_000_000);
    if let EventPayload::Conversation(patch) = &mut start.payload {
        patch.visitor = Some(person.clone());
    }
    let long = format!("{LONG} ").repeat(40);
    let mut request = AppendRequest::new(
        c.clone(),
        "livechat",
        vec![
            start,
            message_event(
                "m1",
                "chat-zq",
                1_700_000_001,
                (SHORT[5], SHORT[0]),
                SHORT[4],
            ),
            message_event("m2", "chat-zq", 1_700_000_002, (SHORT[5], SHORT[0]), &long),
        ],
    );
    request.request_id = Some("req-1".into());
    request.raw = Some(format!(
        "{{\"email\": \"{}\", \"long\": \"{long}\"}}",
        SHORT[1]
    ));
    let first = store.append(request).await.unwrap();
    let mut other = AppendRequest::new(
        c.clone(),
        "livechat",
        vec![message_event(
            "o1",
            "chat-other",
            1_700_000_003,
            ("v-other", "Other"),
            OTHER,
        )],
    );
    other.request_id = Some("req-2".into());
    store.append(other).await.unwrap();
    let ticket = switchboard_core::Ticket {
        external_id: "T-zq".into(),
        subject: format!("refund {}", SHORT[4]),
        requester: Some(person),
        created_at: ts(1_700_000_000),
        updated_at: ts(1_700_000_004),
        ..switchboard_core::Ticket::default()
    };
    let ticket = store
        .append(AppendRequest::new(
            c.clone(),
            "livechat",
            vec![IncomingEvent {
                dedup_key: "t1".into(),
                kind: EventKind::TicketCreated,
                vendor_event: "ticket_created".into(),
                occurred_at: ts(1_700_000_004),
                payload: EventPayload::Ticket(ticket),
            }],
        ))
        .await
        .unwrap();
    let mut events: Vec<Sequence> = first.appended;
    events.extend(ticket.appended);
    ErasurePlan {
        contact: "c1".into(),
        conversations: vec![ConversationId::new(c.clone(), "chat-zq")],
        tickets: vec![TicketId::new(c, "T-zq")],
        events,
        at: ts(1_700_000_100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_and_compaction_the_data_dir_holds_none_of_the_erased_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let plan = fill(&store).await;
    store.close().await.unwrap();
    drop(store);
    let mut all: Vec<&str> = SHORT.to_vec();
    all.push(LONG);
    for value in &all {
        assert!(
            !grep(dir.path(), &[value]).is_empty(),
            "{value} is found before the erasure"
        );
    }

    let store = Store::open(dir.path()).unwrap();
    assert!(!store.needs_compaction().unwrap());
    let report = store.erase_contact(plan.clone()).await.unwrap();
    assert_eq!(report.events, 4);
    assert!(
        store.needs_compaction().unwrap(),
        "an erasure marks the store"
    );
    let erased = store
        .get_conversation(&plan.conversations[0])
        .unwrap()
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    // The measurement that makes compaction necessary: sled keeps old versions in its files.
    let left = grep(dir.path(), &all);
    eprintln!(
        "after the erasure, before compaction, the files still hold: {left:?} (sled 0.34 keeps old versions until it reuses their segments)"
    );

    let compacted = Store::compact(dir.path()).unwrap();
    assert!(compacted.keys > 0);
    assert_eq!(
        grep(dir.path(), &all),
        Vec::<String>::new(),
        "after compaction the data dir holds erased values"
    );
    assert!(
        !grep(dir.path(), &[OTHER]).is_empty(),
        "the other person's data is still there (the grep works after compaction too)"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".switchboard-compact")),
        "no compaction leftovers: {names:?}"
    );

    let store = Store::open(dir.path()).unwrap();
    assert!(
        !store.needs_compaction().unwrap(),
        "compaction clears the mark"
    );
    assert_eq!(store.head(), report.sequence);
    assert_eq!(
        store
            .get_conversation(&plan.conversations[0])
            .unwrap()
            .unwrap(),
        erased,
        "the compacted store reads as before"
    );
    let events = store.read_events(Sequence::ZERO, 100).unwrap();
    assert_eq!(events.len() as u64, report.sequence.0);
    assert_eq!(
        events.last().unwrap().incoming.kind,
        EventKind::ContactErased
    );
    // The store still takes writes.
    store
        .append(AppendRequest::new(
            conn("lc"),
            "livechat",
            vec![started("after", "chat-new", 1_700_000_200)],
        ))
        .await
        .unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_an_open_store_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    fill(&store).await;
    let error = Store::compact(dir.path()).unwrap_err();
    assert!(
        matches!(error, switchboard_store::StoreError::InUse { .. }),
        "{error:?}"
    );
    assert_eq!(store.head(), Sequence(5));
    assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap().len(), 5);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_cache_serves_the_erased_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let plan = fill(&store).await;
    // The appended events are in the tail cache.
    let cached = store
        .read_events_cached(Sequence::ZERO, 10)
        .expect("cached");
    assert!(format!("{cached:?}").contains(SHORT[0]));
    store.erase_contact(plan).await.unwrap();
    let cached = store
        .read_events_cached(Sequence::ZERO, 10)
        .expect("still cached");
    assert_eq!(cached.len(), 6);
    let text = format!("{cached:?}");
    for value in SHORT.iter().chain([&LONG]) {
        assert!(!text.contains(value), "the tail cache still serves {value}");
    }
    assert!(text.contains(OTHER), "the other person's event stays");
    store.close().await.unwrap();
}

/// Consecutive entries of one frame share one `log/` key (what `compact` makes of a whole log,
/// and the writer of a group's requests): every read from every cursor, every lookup by dedup
/// key and an erasure of the entry in the middle see each entry as its own.
#[tokio::test]
async fn entries_sharing_one_log_key_read_and_erase_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut requests = Vec::new();
    for i in 0..6i64 {
        let events = (0..i % 3 + 1)
            .map(|j| {
                let author = (format!("v{i}"), format!("Visitor {i}"));
                message_event(
                    &format!("m{i}-{j}"),
                    &format!("c{i}"),
                    1_700_000_000 + i,
                    (&author.0, &author.1),
                    &format!("text {i} {j}"),
                )
            })
            .collect();
        let receipt = store
            .append(AppendRequest::new(conn("lc"), "livechat", events))
            .await
            .unwrap();
        requests.push(receipt.appended);
    }
    let all = store.read_events(Sequence::ZERO, 100).unwrap();
    assert_eq!(all.len(), 12);
    store.close().await.unwrap();
    drop(store);
    Store::compact(dir.path()).unwrap();
    {
        let db = common::sled_open(dir.path());
        let keys: Vec<u8> = db
            .scan_prefix("log/")
            .map(|entry| entry.unwrap().1[0])
            .collect();
        assert_eq!(keys, [0x0A], "the six entries under one key");
    }

    let store = Store::open(dir.path()).unwrap();
    for after in 0..all.len() {
        let read = store.read_events(Sequence(after as u64), 3).unwrap();
        assert_eq!(
            read,
            all[after..(after + 3).min(all.len())],
            "after {after}"
        );
    }
    for event in &all {
        let found = store
            .event_by_dedup_key(&conn("lc"), &event.incoming.dedup_key)
            .unwrap();
        assert_eq!(found.as_ref(), Some(event));
    }
    // Request 4 (two events, in the middle of the key) is erased.
    let erased: Vec<Sequence> = requests[4].clone();
    let report = store
        .erase_contact(ErasurePlan {
            contact: "v4".into(),
            conversations: vec![ConversationId::new(conn("lc"), "c4")],
            tickets: vec![],
            events: erased.clone(),
            at: ts(1_700_000_100),
        })
        .await
        .unwrap();
    assert_eq!(report.events, 2);
    let check = |now: &[switchboard_core::Event]| {
        assert_eq!(now.len(), all.len() + 1);
        for (before, now) in all.iter().zip(now) {
            assert_eq!(now.sequence, before.sequence);
            if erased.contains(&before.sequence) {
                assert_ne!(now, before, "event {} erased", before.sequence.0);
            } else {
                assert_eq!(now, before);
            }
        }
    };
    check(&store.read_events(Sequence::ZERO, 100).unwrap());
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    check(&store.read_events(Sequence::ZERO, 100).unwrap());
    for after in 0..all.len() {
        let read = store.read_events(Sequence(after as u64), 2).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].sequence.0, after as u64 + 1);
    }
    store.close().await.unwrap();
    drop(store);
    Store::compact(dir.path()).unwrap();
    assert_eq!(grep(dir.path(), &["Visitor 4"]), Vec::<String>::new());
    assert!(!grep(dir.path(), &["Visitor 3"]).is_empty());
}

/// An erasure of entries under consecutive keys writes each key's entries under that key
/// again: joined under the first, they would leave the second key in the tree with its old
/// bytes, read twice and unerased.
#[tokio::test]
async fn an_erasure_of_entries_under_consecutive_keys_keeps_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..4i64 {
        let event = message_event(
            &format!("m{i}"),
            "c1",
            1_700_000_000 + i,
            ("v1", "Visitor One"),
            &format!("said {i}"),
        );
        store
            .append(AppendRequest::new(conn("lc"), "livechat", vec![event]))
            .await
            .unwrap();
    }
    let before = store.read_events(Sequence::ZERO, 100).unwrap();
    store
        .erase_contact(ErasurePlan {
            contact: "v1".into(),
            conversations: vec![ConversationId::new(conn("lc"), "c1")],
            tickets: vec![],
            events: vec![Sequence(2), Sequence(3)],
            at: ts(1_700_000_100),
        })
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let after = store.read_events(Sequence::ZERO, 100).unwrap();
    let sequences: Vec<u64> = after.iter().map(|e| e.sequence.0).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[3], before[3]);
    for erased in &after[1..3] {
        assert!(!format!("{erased:?}").contains("said"), "{erased:?}");
    }
    for event in &after[..4] {
        let found = store
            .event_by_dedup_key(&conn("lc"), &event.incoming.dedup_key)
            .unwrap();
        assert_eq!(found.as_ref(), Some(event));
    }
    store.close().await.unwrap();
}

/// An erasure is not in the journal (it rewrites conversations with the log): sled is flushed
/// before it is acknowledged (the writer's unit tests check that flush). A crash after it, with
/// sled's timed flush an hour away, keeps it and the append acknowledged after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_erasure_and_the_appends_after_it_survive_a_crash_while_sled_lags() {
    let dir = tempfile::tempdir().unwrap();
    let options = switchboard_store::StoreOptions {
        sled_flush_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let plan = fill(&store).await;
    let report = store.erase_contact(plan.clone()).await.unwrap();
    let erased = store
        .get_conversation(&plan.conversations[0])
        .unwrap()
        .unwrap();
    let after = store
        .append(AppendRequest::new(
            conn("lc"),
            "livechat",
            vec![started("after", "chat-after", 1_700_000_200)],
        ))
        .await
        .unwrap();
    let image = common::crash_image_then_close(store, dir.path()).await;

    let store = Store::open(image.path()).unwrap();
    assert_eq!(store.head(), after.appended[0]);
    assert_eq!(after.appended[0].0, report.sequence.0 + 1);
    assert_eq!(
        store
            .get_conversation(&plan.conversations[0])
            .unwrap()
            .unwrap(),
        erased
    );
    let events = store.read_events(Sequence::ZERO, 100).unwrap();
    let text = format!("{events:?}");
    for value in SHORT.iter().chain([&LONG]) {
        assert!(!text.contains(value), "the log still serves {value}");
    }
    assert!(text.contains(OTHER), "the other person's event stays");
    assert_eq!(events.last().unwrap().incoming.dedup_key, "after");
    let ticket = store
        .get_ticket(&plan.tickets[0])
        .unwrap()
        .expect("the erased ticket");
    assert!(!format!("{ticket:?}").contains(SHORT[4]));
    store.close().await.unwrap();
}
