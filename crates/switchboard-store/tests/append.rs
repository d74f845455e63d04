//! Appending: sequences, dedup, projections, sync state, reopen, close.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{conn, ended, message, request, started, temp_store, ts};
use proptest::prelude::*;
use switchboard_core::{
    Agent, Conversation, ConversationId, ConversationStatus, ErrorCode, EventKind, EventPayload,
    IncomingEvent, Sequence, Ticket, TicketId, TicketStatus,
};
use switchboard_store::{
    AppendRequest, Store, StoreError, StoreOptions, SyncState, SyncUpdate, TicketListQuery,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_gap_free_sequences_from_one() {
    let (_dir, store) = temp_store();
    let mut head = store.subscribe_head();
    let mut tasks = Vec::new();
    for task in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for round in 0..5 {
                let events: Vec<IncomingEvent> = (0..1 + (task + round) % 3)
                    .map(|i| {
                        let key = format!("t{task}-r{round}-e{i}");
                        message(&key, &format!("chat-{task}"), 1_000 + round as i64, &key)
                    })
                    .collect();
                let keys: Vec<String> = events.iter().map(|e| e.dedup_key.clone()).collect();
                let receipt = store
                    .append(request("lc", "livechat", events))
                    .await
                    .unwrap();
                assert_eq!(receipt.duplicates, 0);
                placed.extend(receipt.appended.into_iter().zip(keys));
            }
            placed
        }));
    }
    let mut placed: BTreeMap<Sequence, String> = BTreeMap::new();
    for task in tasks {
        for (sequence, key) in task.await.unwrap() {
            assert!(
                placed.insert(sequence, key).is_none(),
                "{sequence} given twice"
            );
        }
    }
    let total = placed.len() as u64;
    let expected: Vec<Sequence> = (1..=total).map(Sequence).collect();
    assert_eq!(placed.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(store.head(), Sequence(total));
    assert_eq!(store.event_count().unwrap(), total);
    assert_eq!(*head.borrow_and_update(), Sequence(total));

    let all = store.read_events(Sequence::ZERO, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, total);
    for event in &all {
        assert_eq!(placed[&event.sequence], event.incoming.dedup_key);
        assert_eq!(event.connection, conn("lc"));
        assert_eq!(event.vendor, "livechat");
    }
    let mut paged = Vec::new();
    let mut after = Sequence::ZERO;
    loop {
        let page = store.read_events(after, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().unwrap().sequence;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(store.read_events(Sequence(total), 10).unwrap().is_empty());
    assert_eq!(store.read_events(Sequence(total - 1), 10).unwrap().len(), 1);
    assert_eq!(store.conversation_count().unwrap(), 64);
    store.close().await.unwrap();
}

#[tokio::test]
async fn redelivery_appends_nothing_and_counts_duplicates() {
    let (_dir, store) = temp_store();
    let events = vec![started("s", "c1", 10), message("m1", "c1", 11, "hi")];
    let first = store
        .append(request("lc", "livechat", events.clone()))
        .await
        .unwrap();
    assert_eq!(first.appended, vec![Sequence(1), Sequence(2)]);
    assert_eq!(first.duplicates, 0);

    let again = store
        .append(request("lc", "livechat", events.clone()))
        .await
        .unwrap();
    assert_eq!(again.appended, vec![]);
    assert_eq!(again.duplicates, 2);

    // The same key twice in one request, next to a known one: one new event.
    let mixed = vec![
        message("m2", "c1", 12, "again"),
        message("m2", "c1", 12, "again"),
        started("s", "c1", 10),
    ];
    let receipt = store
        .append(request("lc", "livechat", mixed))
        .await
        .unwrap();
    assert_eq!(receipt.appended, vec![Sequence(3)]);
    assert_eq!(receipt.duplicates, 2);

    // Dedup is per connection: the same key on another connection is a new event.
    let other = store
        .append(request("lc-two", "livechat", events))
        .await
        .unwrap();
    assert_eq!(other.appended, vec![Sequence(4), Sequence(5)]);
    assert_eq!(store.head(), Sequence(5));
}

/// The writer rules out new keys with a filter of the keys the tree holds, built after open:
/// every key held at open, and every key written since, is still found a duplicate, whether
/// the filter is built yet or not.
#[tokio::test]
async fn redelivery_after_reopening_appends_nothing() {
    let (dir, store) = temp_store();
    let batch = |round: usize| -> Vec<IncomingEvent> {
        (0..100)
            .map(|i| {
                let key = format!("r{round}-e{i}");
                message(&key, &format!("chat-{}", i % 7), 1_000 + i as i64, &key)
            })
            .collect()
    };
    for round in 0..30 {
        let receipt = store
            .append(request("lc", "livechat", batch(round)))
            .await
            .unwrap();
        assert_eq!(receipt.appended.len(), 100);
    }
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    for round in 0..33 {
        // Rounds 30 to 32 are new; each is sent twice.
        for send in 0..2 {
            let receipt = store
                .append(request("lc", "livechat", batch(round)))
                .await
                .unwrap();
            let new = round >= 30 && send == 0;
            assert_eq!(
                (receipt.appended.len(), receipt.duplicates),
                if new { (100, 0) } else { (0, 100) },
                "round {round}, send {send}"
            );
        }
    }
    assert_eq!(store.head(), Sequence(3300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_append_each_key_once() {
    let (_dir, store) = temp_store();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let events = vec![started("s", "c1", 10), message("m", "c1", 11, "x")];
            store
                .append(request("lc", "livechat", events))
                .await
                .unwrap()
        }));
    }
    let mut appended = 0;
    let mut duplicates = 0;
    for task in tasks {
        let receipt = task.await.unwrap();
        appended += receipt.appended.len();
        duplicates += receipt.duplicates;
    }
    assert_eq!((appended, duplicates), (2, 62));
    assert_eq!(store.head(), Sequence(2));
}

/// A read that starts or ends inside a large log entry gets exactly the events asked for,
/// each with its own payload (the store decodes only those), and a dedup lookup finds the one
/// event it names.
#[tokio::test]
async fn reads_inside_a_large_entry_get_exactly_the_events_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // No tail cache: every read comes from the stored entry.
    let options = StoreOptions {
        tail_cache_events: 0,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let events: Vec<_> = (0..300)
        .map(|i| message(&format!("m{i}"), "c1", 100 + i, &format!("text {i}")))
        .collect();
    let receipt = store
        .append(request("lc", "livechat", events))
        .await
        .unwrap();
    assert_eq!(receipt.appended.len(), 300);
    let text = |event: &switchboard_core::Event| match &event.incoming.payload {
        EventPayload::Conversation(patch) => patch.messages[0].text.clone(),
        other => panic!("a message, not {other:?}"),
    };
    for (after, limit) in [(0u64, 7usize), (10, 5), (150, 100), (295, 10), (299, 1)] {
        let read = store.read_events(Sequence(after), limit).unwrap();
        let expected: Vec<u64> = (after + 1..=(after + limit as u64).min(300)).collect();
        assert_eq!(
            read.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
            expected
        );
        for event in &read {
            assert_eq!(text(event), format!("text {}", event.sequence.0 - 1));
        }
    }
    let found = store
        .event_by_dedup_key(&conn("lc"), "m123")
        .unwrap()
        .unwrap();
    assert_eq!(found.sequence, Sequence(124));
    assert_eq!(text(&found), "text 123");
}

#[tokio::test]
async fn raw_is_kept_on_the_first_newly_appended_event_only() {
    let (_dir, store) = temp_store();
    store
        .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
        .await
        .unwrap();
    let mut req = request(
        "lc",
        "livechat",
        vec![
            started("s", "c1", 10),
            message("m", "c1", 11, "x"),
            ended("e", "c1", 12),
        ],
    );
    req.raw = Some("{\"body\":1}".into());
    req.request_id = Some("req-7".into());
    let receipt = store.append(req).await.unwrap();
    assert_eq!(receipt.appended, vec![Sequence(2), Sequence(3)]);
    let events = store.read_events(Sequence(1), 10).unwrap();
    assert_eq!(events[0].raw.as_deref(), Some("{\"body\":1}"));
    assert_eq!(events[1].raw, None);
    assert!(
        events
            .iter()
            .all(|e| e.request_id.as_deref() == Some("req-7"))
    );
    assert_eq!(events[0].received_at, ts(1_700_000_000));
    assert_ne!(events[0].id, events[1].id);
    let id = uuid::Uuid::parse_str(&events[0].id).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

fn conversation_events() -> Vec<IncomingEvent> {
    let mut transfer = switchboard_core::ConversationPatch::new("c1");
    transfer.assigned_agent = Some("agent@x".into());
    transfer.tags_removed.push("done".into());
    vec![
        message("m0", "c1", 5, "before the start"),
        started("s", "c1", 10),
        message("m1", "c1", 11, "hi"),
        message("m2", "c1", 12, "hello"),
        common::event("t", EventKind::ChatUpdated, 12, transfer),
        ended("e", "c1", 20),
    ]
}

fn fold(events: &[IncomingEvent]) -> Conversation {
    let mut conversation = Conversation::new(ConversationId::new(conn("lc"), "c1"), "livechat");
    for event in events {
        if let EventPayload::Conversation(patch) = &event.payload {
            conversation.apply(patch, event.occurred_at, &event.dedup_key);
        }
    }
    // The store keeps how many events built it, not their keys.
    assert_eq!(
        conversation.event_count,
        conversation.event_keys.len() as u64
    );
    conversation.event_keys.clear();
    conversation
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn out_of_order_redelivered_events_give_the_in_order_conversation(
        order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
        repeats in proptest::collection::vec(0..6usize, 0..4),
        split in 1..4usize,
    ) {
        let events = conversation_events();
        let expected = fold(&events);
        let mut delivery: Vec<IncomingEvent> = order.iter().map(|&i| events[i].clone()).collect();
        delivery.extend(repeats.iter().map(|&i| events[i].clone()));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let conversation = runtime.block_on(async {
            let (_dir, store) = temp_store();
            // Several events per request, so that one group commit folds several of them.
            for chunk in delivery.chunks(split) {
                store.append(request("lc", "livechat", chunk.to_vec())).await.unwrap();
            }
            assert_eq!(store.head(), Sequence(6));
            store.get_conversation(&ConversationId::new(conn("lc"), "c1")).unwrap().unwrap()
        });
        prop_assert_eq!(conversation, expected);
    }
}

#[tokio::test]
async fn everything_is_still_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = conversation_events();
    events.reverse();
    let id = ConversationId::new(conn("lc"), "c1");
    let before = {
        let store = Store::open(dir.path()).unwrap();
        for event in &events {
            store
                .append(request("lc", "livechat", vec![event.clone()]))
                .await
                .unwrap();
        }
        store.close().await.unwrap();
        store.get_conversation(&id).unwrap().unwrap()
    };
    assert_eq!(before, fold(&conversation_events()));
    assert_eq!(before.status, ConversationStatus::Closed);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(6));
    assert_eq!(store.get_conversation(&id).unwrap(), Some(before));
    assert_eq!(store.conversation_count().unwrap(), 1);
    let again = store
        .append(request("lc", "livechat", conversation_events()))
        .await
        .unwrap();
    assert_eq!((again.appended.len(), again.duplicates), (0, 6));
    let new = store
        .append(request(
            "lc",
            "livechat",
            vec![message("m9", "c1", 30, "later")],
        ))
        .await
        .unwrap();
    assert_eq!(new.appended, vec![Sequence(7)]);
    assert_eq!(store.read_events(Sequence::ZERO, 100).unwrap().len(), 7);
}

fn sync(cursor: &str, records: u64, at: i64) -> Option<SyncUpdate> {
    Some(SyncUpdate {
        cursor: cursor.into(),
        records,
        at: ts(at),
    })
}

#[tokio::test]
async fn sync_state_is_saved_with_the_events() {
    let (_dir, store) = temp_store();
    let lc = conn("lc");
    assert_eq!(store.sync_state(&lc).unwrap(), None);

    let mut page = request(
        "lc",
        "livechat",
        vec![started("s", "c1", 10), message("m", "c1", 11, "x")],
    );
    page.sync = sync("page-2", 2, 100);
    store.append(page).await.unwrap();
    assert_eq!(
        store.sync_state(&lc).unwrap(),
        Some(SyncState {
            cursor: Some("page-2".into()),
            last_success: Some(ts(100)),
            last_error: None,
            records_pulled: 2,
        })
    );

    store
        .record_sync_error(&lc, "vendor answered 503")
        .await
        .unwrap();
    let state = store.sync_state(&lc).unwrap().unwrap();
    assert_eq!(state.last_error.as_deref(), Some("vendor answered 503"));
    assert_eq!(state.cursor.as_deref(), Some("page-2"));

    // A page of duplicates still moves the cursor, and clears the error.
    let mut page = request("lc", "livechat", vec![started("s", "c1", 10)]);
    page.sync = sync("page-3", 1, 200);
    let receipt = store.append(page).await.unwrap();
    assert_eq!(receipt.duplicates, 1);
    let state = store.sync_state(&lc).unwrap().unwrap();
    assert_eq!(state.cursor.as_deref(), Some("page-3"));
    assert_eq!(state.records_pulled, 3);
    assert_eq!(state.last_error, None);

    // A refused request saves neither its events nor its cursor.
    let mut bad = request("lc", "livechat", vec![message("", "c1", 12, "no key")]);
    bad.sync = sync("page-4", 1, 300);
    let error = store.append(bad).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        store.sync_state(&lc).unwrap().unwrap().cursor.as_deref(),
        Some("page-3")
    );
    assert_eq!(store.head(), Sequence(2));
}

fn ticket_event(key: &str, id: &str, status: TicketStatus, updated: i64) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.into(),
        kind: EventKind::TicketUpdated,
        vendor_event: "ticket_updated".into(),
        occurred_at: ts(updated),
        payload: EventPayload::Ticket(Ticket {
            external_id: id.into(),
            subject: format!("{id} at {updated}"),
            status,
            created_at: ts(1),
            updated_at: ts(updated),
            ..Ticket::default()
        }),
    }
}

fn agent_event(key: &str, login: &str, name: &str, deleted: bool) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.into(),
        kind: EventKind::AgentUpdated,
        vendor_event: "agent_updated".into(),
        occurred_at: ts(5),
        payload: EventPayload::Agent {
            agent: Agent {
                login: login.into(),
                name: Some(name.into()),
                ..Agent::default()
            },
            deleted,
        },
    }
}

#[tokio::test]
async fn tickets_are_last_writer_wins_and_list_in_pages() {
    let (_dir, store) = temp_store();
    store
        .append(request(
            "lc",
            "livechat",
            vec![
                ticket_event("t1-b", "T1", TicketStatus::Solved, 20),
                // Older, arriving later: ignored.
                ticket_event("t1-a", "T1", TicketStatus::Open, 10),
                ticket_event("t2", "T2", TicketStatus::Open, 10),
            ],
        ))
        .await
        .unwrap();
    // Same updated_at, later sequence: wins.
    store
        .append(request(
            "lc",
            "livechat",
            vec![ticket_event("t2-b", "T2", TicketStatus::Pending, 10)],
        ))
        .await
        .unwrap();
    store
        .append(request(
            "zd",
            "zendesk",
            vec![ticket_event("z1", "Z1", TicketStatus::Open, 5)],
        ))
        .await
        .unwrap();

    let t1 = store
        .get_ticket(&TicketId::new(conn("lc"), "T1"))
        .unwrap()
        .unwrap();
    assert_eq!(t1.status, TicketStatus::Solved);
    let t2 = store
        .get_ticket(&TicketId::new(conn("lc"), "T2"))
        .unwrap()
        .unwrap();
    assert_eq!(t2.status, TicketStatus::Pending);
    assert_eq!(
        store.get_ticket(&TicketId::new(conn("zd"), "T1")).unwrap(),
        None
    );

    let mut query = TicketListQuery {
        page_size: 2,
        ..TicketListQuery::default()
    };
    let first = store.list_tickets(&query).unwrap();
    let ids: Vec<_> = first
        .tickets
        .iter()
        .map(|(c, t)| format!("{c}/{}", t.external_id))
        .collect();
    assert_eq!(ids, ["lc/T1", "lc/T2"]);
    query.page_token = first.next_page_token;
    let second = store.list_tickets(&query).unwrap();
    assert_eq!(second.tickets.len(), 1);
    assert_eq!(second.tickets[0].0, conn("zd"));
    assert_eq!(second.next_page_token, None);

    let open = store
        .list_tickets(&TicketListQuery {
            statuses: vec![TicketStatus::Open, TicketStatus::Pending],
            connections: vec![conn("lc"), conn("zd")],
            ..TicketListQuery::default()
        })
        .unwrap();
    let ids: Vec<_> = open
        .tickets
        .iter()
        .map(|(_, t)| t.external_id.as_str())
        .collect();
    assert_eq!(ids, ["T2", "Z1"]);

    // A ticket token with other filters is refused.
    query.statuses = vec![TicketStatus::Open];
    let error = store.list_tickets(&query).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn agents_are_kept_per_connection_and_deletion_removes() {
    let (_dir, store) = temp_store();
    store
        .append(request(
            "lc",
            "livechat",
            vec![
                agent_event("a1", "b@x", "Bea", false),
                agent_event("a2", "a@x", "Al", false),
                agent_event("a3", "a@x", "Alan", false),
            ],
        ))
        .await
        .unwrap();
    store
        .append(request(
            "lc2",
            "livechat",
            vec![agent_event("a1", "c@x", "Cy", false)],
        ))
        .await
        .unwrap();
    let agents = store.list_agents(&conn("lc")).unwrap();
    let names: Vec<_> = agents.iter().map(|a| a.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["Alan", "Bea"]);
    store
        .append(request(
            "lc",
            "livechat",
            vec![agent_event("a4", "b@x", "Bea", true)],
        ))
        .await
        .unwrap();
    let logins: Vec<_> = store
        .list_agents(&conn("lc"))
        .unwrap()
        .into_iter()
        .map(|a| a.login)
        .collect();
    assert_eq!(logins, ["a@x"]);
    assert_eq!(store.list_agents(&conn("lc2")).unwrap().len(), 1);
}

#[tokio::test]
async fn a_closed_store_refuses_appends_and_still_reads() {
    let (_dir, store) = temp_store();
    store
        .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
        .await
        .unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let error = store
        .append(request("lc", "livechat", vec![started("s2", "c2", 10)]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Closed), "{error:?}");
    assert_eq!(error.code(), ErrorCode::Unavailable);
    let error = store.record_sync_error(&conn("lc"), "x").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unavailable);
    assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap().len(), 1);
    assert!(format!("{store:?}").contains("closed: true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_answers_every_pending_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            max_batch: 4,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            store
                .append(request("lc", "livechat", vec![message(&key, "c", 1, "x")]))
                .await
                .map(|receipt| (key, receipt))
        }));
    }
    tokio::task::yield_now().await;
    store.close().await.unwrap();
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((key, receipt)) => {
                assert_eq!(receipt.appended.len(), 1);
                acknowledged.insert(key);
            }
            Err(error) => assert!(matches!(error, StoreError::Closed), "{error:?}"),
        }
    }
    let logged: BTreeSet<String> = store
        .read_events(Sequence::ZERO, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.incoming.dedup_key)
        .collect();
    assert_eq!(logged, acknowledged);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_writer_and_releases_the_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let clone = store.clone();
        clone
            .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
            .await
            .unwrap();
        // Open twice at once: sled's file lock refuses, in words (no Rust debug text).
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        let message = error.to_string();
        assert!(message.contains("in use by another process"), "{message}");
        assert!(!message.contains("Os {"), "{message}");
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(1));
}

#[tokio::test]
async fn malformed_events_are_refused_before_anything_is_written() {
    let (_dir, store) = temp_store();
    let bad: Vec<AppendRequest> = vec![
        request("lc", "livechat", vec![started("s", "", 10)]),
        request("lc", "", vec![started("s", "c", 10)]),
        request(
            "lc",
            "livechat",
            vec![
                started("ok", "c", 10),
                ticket_event("t", "", TicketStatus::Open, 1),
            ],
        ),
        request("lc", "livechat", vec![agent_event("a", "", "x", false)]),
    ];
    for request in bad {
        let error = store.append(request).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
        assert!(!error.to_string().ends_with('.'));
    }
    assert_eq!(store.head(), Sequence::ZERO);
    assert_eq!(store.conversation_count().unwrap(), 0);
}

#[tokio::test]
async fn a_large_raw_body_message_and_ticket_survive_reopening() {
    // The log entry and the message record go to the segment files (`log/`); the ticket,
    // larger than a quarter of a sled segment, to sled's `blobs/` files, which sled never
    // fsyncs itself. The writer and the flusher sync them.
    let dir = tempfile::tempdir().unwrap();
    // Pseudo-random letters: the store compresses values, and these barely compress.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let raw: String = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let id = ConversationId::new(conn("lc"), "c1");
    {
        let store = Store::open(dir.path()).unwrap();
        let mut ticket = ticket_event("t", "T1", TicketStatus::Open, 10);
        if let EventPayload::Ticket(ticket) = &mut ticket.payload {
            ticket.subject = raw.clone();
        }
        let mut big = request("lc", "livechat", vec![message("m", "c1", 10, &raw), ticket]);
        big.raw = Some(raw.clone());
        store.append(big).await.unwrap();
        // Written through: the message record is in the segment files now.
        assert!(store.get_conversation(&id).unwrap().is_some());
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(
            blobs > 0,
            "sled kept the large ticket inline; this test no longer covers blobs"
        );
        let segments: u64 = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            segments > 300_000,
            "the log entry and the message are in the segment files: {segments} bytes"
        );
        store.close().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 1).unwrap();
    assert_eq!(events[0].raw.as_deref(), Some(raw.as_str()));
    let conversation = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(conversation.messages["m"].value.text, raw);
    let ticket = store
        .get_ticket(&TicketId::new(conn("lc"), "T1"))
        .unwrap()
        .unwrap();
    assert_eq!(ticket.subject, raw);
}

#[tokio::test]
async fn reads_start_and_stop_inside_one_request_s_entry() {
    let (_dir, store) = temp_store();
    let mut five = request(
        "lc",
        "livechat",
        (0..5)
            .map(|i| message(&format!("m{i}"), "c1", 10 + i, "x"))
            .collect(),
    );
    five.raw = Some("{\"five\":true}".into());
    store.append(five).await.unwrap();
    store
        .append(request("lc", "livechat", vec![started("s", "c2", 20)]))
        .await
        .unwrap();
    let seqs = |events: Vec<switchboard_core::Event>| {
        events.iter().map(|e| e.sequence.0).collect::<Vec<_>>()
    };
    assert_eq!(seqs(store.read_events(Sequence(2), 2).unwrap()), [3, 4]);
    assert_eq!(seqs(store.read_events(Sequence(4), 10).unwrap()), [5, 6]);
    let all = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(seqs(all.clone()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(all[0].raw.as_deref(), Some("{\"five\":true}"));
    assert!(all[1..].iter().all(|e| e.raw.is_none()));
    let third = store
        .event_by_dedup_key(&conn("lc"), "m2")
        .unwrap()
        .unwrap();
    assert_eq!(third.sequence, Sequence(3));
    assert_eq!(third, all[2]);
    // A request whose first event is a duplicate stores the raw body on its first new event.
    let mut again = request(
        "lc",
        "livechat",
        vec![message("m0", "c1", 10, "x"), message("m9", "c1", 19, "y")],
    );
    again.raw = Some("{\"again\":true}".into());
    assert_eq!(
        store.append(again).await.unwrap().appended,
        vec![Sequence(7)]
    );
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(_dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(7));
    let last = store.read_events(Sequence(6), 10).unwrap();
    assert_eq!(last[0].raw.as_deref(), Some("{\"again\":true}"));
    assert_eq!(last[0].incoming.dedup_key, "m9");
}
