//! The log: append, read, dedup, concurrency, the head, durability, bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use switchboard_core::{
    Attachment, ConversationPatch, ErrorCode, EventKind, IncomingEvent, Participant, Sequence,
};
use switchboard_store::{
    AppendReceipt, ConversationQuery, StoreError, SyncUpdate, TicketListQuery,
};

use crate::Backend;
use crate::support::*;

/// A new store: head 0, nothing to read or list, ready for writes.
pub async fn a_fresh_store_is_empty(backend: &dyn Backend) {
    let store = backend.fresh().await;
    assert!(!store.backend().is_empty(), "Storage::backend() is empty");
    assert_eq!(store.head(), Sequence(0), "a fresh store's head");
    assert_eq!(
        *store.subscribe_head().borrow(),
        Sequence(0),
        "a fresh store's head watch"
    );
    let events = store
        .read_events(Sequence(0), 10, usize::MAX)
        .await
        .expect("read_events");
    assert!(events.is_empty(), "a fresh store has events: {events:?}");
    assert_eq!(
        store
            .conversation_count()
            .await
            .expect("conversation_count"),
        0
    );
    let page = store
        .list_conversations(&ConversationQuery::default())
        .await
        .expect("list_conversations");
    assert!(
        page.conversations.is_empty() && page.next_page_token.is_none(),
        "{page:?}"
    );
    let tickets = store
        .list_tickets(&TicketListQuery::default())
        .await
        .expect("list_tickets");
    assert!(
        tickets.tickets.is_empty() && tickets.next_page_token.is_none(),
        "{tickets:?}"
    );
    assert_eq!(
        store.list_agents(&conn("a")).await.expect("list_agents"),
        vec![]
    );
    assert_eq!(
        store.sync_state(&conn("a")).await.expect("sync_state"),
        None
    );
    let totals = store.quarantine_totals().await.expect("quarantine_totals");
    assert_eq!(
        (totals.entries, totals.bytes),
        (0, 0),
        "a fresh quarantine's totals"
    );
    assert!(store.is_ready(), "a fresh store is not ready");
    assert_eq!(store.failure(), None, "a fresh store reports a failure");
}

fn rich_patch(chat: &str) -> ConversationPatch {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(switchboard_core::ConversationStatus::Open);
    patch.started_at = Some(at(10));
    patch.visitor = Some(Participant {
        id: "visitor-1".into(),
        name: Some("Ann".into()),
        email: Some("ann@example.com".into()),
        phone: Some("+1 555 0100".into()),
        attributes: BTreeMap::from([("country".to_owned(), "NZ".to_owned())]),
    });
    let mut msg = chat_message("m-1", 11, "hello");
    msg.attachments.push(Attachment {
        url: Some("https://files.example.com/a.png".into()),
        name: Some("a.png".into()),
        size: Some(1234),
        content_type: Some("image/png".into()),
    });
    msg.data = Some(serde_json::json!({"kind": "card", "items": [1, 2, {"x": null}]}));
    patch.messages.push(msg);
    patch.tags_added.push("vip".into());
    patch.attributes.insert("queue".into(), "sales".into());
    patch.page_url = Some("https://shop.example.com/".into());
    patch
}

/// Sequences start at 1 and are gap-free; every field of an event reads back as appended;
/// the raw body is on the first newly appended event of its request only.
pub async fn append_then_read_events(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let a = conn("a");
    let first_events = vec![
        conversation_event("k1", EventKind::ChatStarted, 10, rich_patch("chat-1")),
        message("k2", "chat-1", 12, "second"),
        vendor_event(
            "k3",
            13,
            serde_json::json!({"n": 42, "nested": {"list": ["a", true]}}),
        ),
    ];
    let mut first = request(&a, "vendor-a", first_events.clone());
    first.request_id = Some("req-1".into());
    first.received_at = at(100);
    first.raw = Some(r#"{"raw":"first"}"#.into());
    let receipt = append(&store, "first request", first).await;
    assert_eq!(
        receipt,
        AppendReceipt {
            appended: vec![Sequence(1), Sequence(2), Sequence(3)],
            ..Default::default()
        },
        "the first request's receipt"
    );
    assert_eq!(store.head(), Sequence(3), "head after 3 events");

    // A duplicate first: the raw body goes to the first NEW event (k4).
    let second_events = vec![
        message("k1", "chat-1", 10, "a duplicate of k1"),
        ticket_event(
            "k4",
            ticket("t-1", switchboard_core::TicketStatus::Open, 20, "Help"),
        ),
        agent_event("k5", agent("a@example.com", "Agent A"), false, 21),
    ];
    let mut second = request(&a, "vendor-a", second_events.clone());
    second.request_id = Some("req-2".into());
    second.received_at = at(200);
    second.raw = Some("raw second".into());
    let receipt = append(&store, "second request", second).await;
    assert_eq!(
        receipt.appended,
        vec![Sequence(4), Sequence(5)],
        "second receipt's sequences"
    );
    assert_eq!(receipt.duplicates, 1, "second receipt's duplicates");

    // No raw body and no request id.
    let third_event = message("k6", "chat-1", 30, "third");
    let third = request(&a, "vendor-a", vec![third_event.clone()]);
    assert_eq!(
        append(&store, "third request", third).await.appended,
        vec![Sequence(6)]
    );
    assert_eq!(store.head(), Sequence(6), "head after 6 events");

    let events = read_all(&store).await;
    assert_eq!(
        seqs(events.iter().map(|e| e.sequence)),
        vec![1, 2, 3, 4, 5, 6],
        "sequences read"
    );
    let expected: Vec<(&IncomingEvent, Option<&str>, i64, Option<&str>)> = vec![
        (
            &first_events[0],
            Some("req-1"),
            100,
            Some(r#"{"raw":"first"}"#),
        ),
        (&first_events[1], Some("req-1"), 100, None),
        (&first_events[2], Some("req-1"), 100, None),
        (&second_events[1], Some("req-2"), 200, Some("raw second")),
        (&second_events[2], Some("req-2"), 200, None),
        (&third_event, None, 0, None),
    ];
    for (event, (incoming, request_id, received, raw)) in events.iter().zip(&expected) {
        let s = event.sequence;
        assert_eq!(
            &event.incoming, *incoming,
            "event {s}: the incoming event (key, kind, vendor_event, occurred_at, payload)"
        );
        assert_eq!(event.connection, a, "event {s}: connection");
        assert_eq!(event.vendor, "vendor-a", "event {s}: vendor");
        assert_eq!(
            event.request_id.as_deref(),
            *request_id,
            "event {s}: request_id"
        );
        assert_eq!(event.received_at, at(*received), "event {s}: received_at");
        assert_eq!(event.raw.as_deref(), *raw, "event {s}: raw body");
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 6, "event ids are not unique: {ids:?}");
    assert!(!ids.contains(""), "an event has an empty id");

    let tail = store
        .read_events(Sequence(2), 100, usize::MAX)
        .await
        .expect("read after 2");
    assert_eq!(
        seqs(tail.iter().map(|e| e.sequence)),
        vec![3, 4, 5, 6],
        "read_events after 2"
    );
    assert_eq!(
        tail.first(),
        events.get(2),
        "the same event read twice differs"
    );
    for after in [6, 7, 1000] {
        let past = store
            .read_events(Sequence(after), 100, usize::MAX)
            .await
            .expect("read");
        assert!(
            past.is_empty(),
            "read_events after {after} (head 6) returned {past:?}"
        );
    }
}

/// Text the vendors send reads back byte for byte: NUL characters, emoji, quotes, newlines,
/// and JSON keys in any order.
pub async fn unusual_text_round_trips(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let text = "nul:\u{0}; emoji: \u{1F600}; quote: \" ' \\; newline:\n tab:\t; rtl: \u{202E}abc; bmp: \u{FFFF}";
    let data = serde_json::json!({"z": text, "a": [text, 1.5, -0.0, 1e300, u64::MAX], "": {"\u{0}": null}});
    let mut first = message("m\u{0}1", "chat-\u{1F600}", 1, text);
    first.vendor_event = format!("ev {text}");
    let events = vec![first, vendor_event("v\"1", 2, data)];
    let mut request = request(&conn("text"), "vendor-\u{00E9}", events.clone());
    request.request_id = Some(format!("req {text}"));
    request.raw = Some(format!("raw {text}"));
    append(&store, "unusual text", request).await;
    let read = read_all(&store).await;
    assert_eq!(read.len(), 2, "events read: {read:?}");
    assert_eq!(read[0].incoming, events[0], "a message with unusual text");
    assert_eq!(
        read[1].incoming, events[1],
        "a vendor payload with unusual JSON"
    );
    assert_eq!(read[0].vendor, "vendor-\u{00E9}", "the vendor");
    assert_eq!(
        read[0].request_id.as_deref(),
        Some(format!("req {text}").as_str())
    );
    assert_eq!(
        read[0].raw.as_deref(),
        Some(format!("raw {text}").as_str()),
        "the raw body"
    );
    let conversation = store
        .get_conversation(&switchboard_core::ConversationId::new(
            conn("text"),
            "chat-\u{1F600}",
        ))
        .await
        .expect("get_conversation")
        .expect("the conversation of the message");
    assert_eq!(
        conversation.messages["m\u{0}1"].value.text, text,
        "the message text in the projection"
    );
}

/// Dedup is per connection and permanent: within one request, across requests, after a
/// restart; a request of only duplicates succeeds and appends nothing.
pub async fn dedup_within_and_across_requests_and_restarts(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let (a, b) = (conn("a"), conn("b"));
    let mut later_a = message("a", "chat-1", 5, "a second version of a");
    later_a.vendor_event = "second".into();
    let receipt = append(
        &store,
        "a, a, b in one request",
        request(
            &a,
            "v",
            vec![
                message("a", "chat-1", 1, "first a"),
                later_a.clone(),
                message("b", "chat-1", 2, "b"),
            ],
        ),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![1, 2], 1),
        "a, a, b in one request"
    );

    let receipt = append(
        &store,
        "b, c",
        request(
            &a,
            "v",
            vec![
                message("b", "chat-1", 2, "b"),
                message("c", "chat-1", 3, "c"),
            ],
        ),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![3], 1),
        "b, c after a, b"
    );

    let receipt = append(
        &store,
        "only duplicates",
        request(
            &a,
            "v",
            vec![later_a.clone(), message("c", "chat-1", 3, "c")],
        ),
    )
    .await;
    assert_eq!(
        receipt,
        AppendReceipt {
            appended: vec![],
            duplicates: 2,
            ..Default::default()
        },
        "a request of only duplicates"
    );
    assert_eq!(
        store.head(),
        Sequence(3),
        "head after a request of only duplicates"
    );

    let receipt = append(
        &store,
        "a on connection b",
        request(&b, "v", vec![message("a", "chat-1", 1, "a on b")]),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![4], 0),
        "the same key on another connection is another event"
    );

    let store = backend.reopen(store).await;
    let receipt = append(
        &store,
        "a after reopen",
        request(&a, "v", vec![later_a, message("d", "chat-1", 4, "d")]),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![5], 1),
        "a and d after a restart"
    );
    let receipt = append(
        &store,
        "a on b after reopen",
        request(&b, "v", vec![message("a", "chat-1", 1, "again")]),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![], 1),
        "a on connection b after a restart"
    );

    let events = read_all(&store).await;
    let keys: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.sequence.0,
                e.connection.as_str(),
                e.incoming.dedup_key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (1, a.as_str(), "a"),
            (2, a.as_str(), "b"),
            (3, a.as_str(), "c"),
            (4, b.as_str(), "a"),
            (5, a.as_str(), "d")
        ],
        "the log after dedup"
    );
    assert_eq!(
        events[0].incoming.vendor_event, "vendor.message",
        "the first of two events with one key is the one kept"
    );
    let chat = store
        .get_conversation(&switchboard_core::ConversationId::new(a.clone(), "chat-1"))
        .await
        .expect("get_conversation")
        .expect("chat-1");
    assert_eq!(
        chat.messages["a"].value.text, "first a",
        "a duplicate changed the projection"
    );
}

/// 16 tasks append 25 requests each (one event of their own and one every task shares): the
/// log ends gap-free with exactly the events acknowledged, and a reader tailing meanwhile
/// never sees a gap or an event past the head.
pub async fn concurrent_appends_are_gap_free(backend: &dyn Backend) {
    const TASKS: usize = 16;
    const REQUESTS: usize = 25;
    let store = backend.fresh().await;
    let c = conn("a");
    let expected_total = (TASKS * REQUESTS + REQUESTS) as u64;

    let tailer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut watch = store.subscribe_head();
            let mut cursor = 0u64;
            while cursor < expected_total {
                let events = store
                    .read_events(Sequence(cursor), 64, usize::MAX)
                    .await
                    .expect("a tailing read_events");
                let head = store.head().0;
                let got = seqs(events.iter().map(|e| e.sequence));
                let want: Vec<u64> = (cursor + 1..=cursor + got.len() as u64).collect();
                assert_eq!(
                    got, want,
                    "a tailing reader after {cursor} got a gap or a repeat"
                );
                if let Some(last) = got.last() {
                    assert!(
                        *last <= head,
                        "read_events returned {last}, past the head {head}"
                    );
                    cursor = *last;
                } else {
                    let _ = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
                }
            }
            cursor
        })
    };

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for r in 0..REQUESTS {
                let own = message(
                    &format!("own-{task}-{r}"),
                    &format!("chat-{}", task % 4),
                    r as i64,
                    "hi",
                );
                let shared = vendor_event(
                    &format!("shared-{r}"),
                    r as i64,
                    serde_json::json!({"r": r}),
                );
                let receipt = store
                    .append(request(&c, "v", vec![own, shared]))
                    .await
                    .unwrap_or_else(|e| panic!("task {task} request {r}: {e}"));
                receipts.push((r, receipt));
            }
            (task, receipts)
        }));
    }
    let mut by_sequence: BTreeMap<u64, String> = BTreeMap::new();
    let mut duplicates = 0;
    for handle in tasks {
        let (task, receipts) = handle.await.expect("an appending task panicked");
        for (r, receipt) in receipts {
            duplicates += receipt.duplicates;
            let mut keys = vec![format!("own-{task}-{r}")];
            if receipt.appended.len() == 2 {
                keys.push(format!("shared-{r}"));
            }
            assert_eq!(
                receipt.appended.len(),
                keys.len(),
                "task {task} request {r}: {receipt:?}"
            );
            assert_eq!(
                receipt.duplicates,
                2 - keys.len(),
                "task {task} request {r}: {receipt:?}"
            );
            for (sequence, key) in receipt.appended.iter().zip(keys) {
                if let Some(other) = by_sequence.insert(sequence.0, key.clone()) {
                    panic!("sequence {sequence} acknowledged to both {other} and {key}");
                }
            }
        }
    }
    assert_eq!(
        duplicates,
        TASKS * REQUESTS - REQUESTS,
        "duplicates counted (each shared key once appended)"
    );
    assert_eq!(
        by_sequence.len() as u64,
        expected_total,
        "sequences acknowledged"
    );
    assert_eq!(store.head().0, expected_total, "head after every append");
    assert_eq!(
        by_sequence.keys().copied().collect::<Vec<_>>(),
        (1..=expected_total).collect::<Vec<_>>(),
        "acknowledged sequences are not 1..=head"
    );
    let events = read_all(&store).await;
    let read: BTreeMap<u64, String> = events
        .iter()
        .map(|e| (e.sequence.0, e.incoming.dedup_key.clone()))
        .collect();
    assert_eq!(
        seqs(events.iter().map(|e| e.sequence)),
        (1..=expected_total).collect::<Vec<_>>(),
        "the log is not 1..=head"
    );
    assert_eq!(
        read, by_sequence,
        "the log's events are not those acknowledged at their sequences"
    );
    let tailed = tailer.await.expect("the tailing reader panicked");
    assert_eq!(tailed, expected_total, "the tailing reader's cursor");
    for chat in 0..4 {
        let id = switchboard_core::ConversationId::new(c.clone(), format!("chat-{chat}"));
        let conversation = store
            .get_conversation(&id)
            .await
            .expect("get_conversation")
            .expect("a chat");
        let want: BTreeSet<String> = (0..TASKS)
            .filter(|t| t % 4 == chat)
            .flat_map(|t| (0..REQUESTS).map(move |r| format!("own-{t}-{r}")))
            .collect();
        let got: BTreeSet<String> = conversation.messages.keys().cloned().collect();
        assert_eq!(got, want, "chat-{chat}'s messages after concurrent appends");
    }
}

/// The head watch announces the new head once an append is acknowledged, and `head()` shows it
/// as soon as the append returns.
pub async fn head_watch_announces_appends(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let mut watch = store.subscribe_head();
    assert_eq!(
        *watch.borrow_and_update(),
        Sequence(0),
        "the watch's first value"
    );
    let waiter = tokio::spawn(async move {
        let seen = *watch
            .wait_for(|head| head.0 >= 2)
            .await
            .expect("the head watch closed");
        (seen, watch)
    });
    let c = conn("a");
    let receipt = append(
        &store,
        "two events",
        request(
            &c,
            "v",
            vec![message("k1", "c", 1, "x"), message("k2", "c", 2, "y")],
        ),
    )
    .await;
    assert_eq!(receipt.appended, vec![Sequence(1), Sequence(2)]);
    assert_eq!(
        store.head(),
        Sequence(2),
        "head() right after the append returned"
    );
    let (seen, mut watch) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the head watch did not announce the append within 10 s")
        .expect("the waiting task panicked");
    assert_eq!(seen, Sequence(2), "the head the watch announced");
    append(
        &store,
        "a third event",
        request(&c, "v", vec![message("k3", "c", 3, "z")]),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|head| head.0 >= 3))
        .await
        .expect("the head watch did not announce the third event within 10 s")
        .expect("the head watch closed");
    assert_eq!(
        *watch.borrow(),
        Sequence(3),
        "the head after the third event"
    );
    let late = store.subscribe_head();
    assert_eq!(
        *late.borrow(),
        Sequence(3),
        "a watch subscribed later starts at the head"
    );
}

/// `limit` caps the events; `max_bytes` stops a read once about that much was read, but a
/// read returns at least one event even when it alone is larger.
pub async fn read_events_honours_limit_and_max_bytes(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    for i in 1..=10 {
        let mut r = request(&c, "v", vec![message(&format!("k{i}"), "c", i, "x")]);
        r.raw = Some(format!("{i:02}{}", "r".repeat(4000)));
        append(&store, "a 4 KB event", r).await;
    }
    let read = |after: u64, limit: usize, max_bytes: usize| {
        let store = store.clone();
        async move {
            let events = store
                .read_events(Sequence(after), limit, max_bytes)
                .await
                .unwrap_or_else(|e| panic!("read_events({after}, {limit}, {max_bytes}): {e}"));
            seqs(events.iter().map(|e| e.sequence))
        }
    };
    assert_eq!(read(0, 3, usize::MAX).await, vec![1, 2, 3], "limit 3");
    assert_eq!(read(4, 2, usize::MAX).await, vec![5, 6], "limit 2 after 4");
    assert_eq!(
        read(8, 100, usize::MAX).await,
        vec![9, 10],
        "a limit past the head"
    );
    assert_eq!(read(0, 0, usize::MAX).await, Vec::<u64>::new(), "limit 0");
    assert_eq!(
        read(0, 100, 1).await,
        vec![1],
        "max_bytes 1 with 4 KB events: exactly one"
    );
    assert_eq!(
        read(0, 100, 0).await,
        vec![1],
        "max_bytes 0: still one event"
    );
    assert_eq!(read(9, 100, 1).await, vec![10], "max_bytes 1 after 9");
    let some = read(0, 100, 10_000).await;
    assert!(
        (2..=4).contains(&some.len()) && some == (1..=some.len() as u64).collect::<Vec<_>>(),
        "max_bytes 10000 with ~4 KB events should give 2 to 4 events from 1, got {some:?}"
    );
    assert_eq!(read(10, 100, 1).await, Vec::<u64>::new(), "after the head");
}

/// Everything acknowledged reads back after a restart, and the log goes on from the head.
pub async fn everything_acknowledged_survives_reopen(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let (a, b) = (conn("a"), conn("b"));
    let mut page = request(
        &a,
        "vendor-a",
        vec![
            started("s1", "chat-1", 1),
            message("m1", "chat-1", 2, "hello"),
            started("s2", "chat-2", 3),
            ticket_event(
                "t1",
                ticket("t-1", switchboard_core::TicketStatus::Pending, 4, "Help"),
            ),
            agent_event("ag1", agent("a@example.com", "A"), false, 5),
            agent_event("ag2", agent("b@example.com", "B"), false, 5),
            agent_event("ag3", agent("b@example.com", "B"), true, 6),
        ],
    );
    page.raw = Some("the page".into());
    page.sync = Some(SyncUpdate {
        cursor: "cursor-1".into(),
        records: 7,
        at: at(7),
    });
    append(&store, "a sync page", page).await;
    let mut hold = request(&b, "vendor-b", vec![]);
    hold.quarantine = Some(switchboard_store::QuarantineOp::Hold(Box::new(
        switchboard_store::NewQuarantined {
            reason: "unknown shape".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            query: vec![("x".into(), "1".into())],
            body: r#"{"odd":true}"#.into(),
        },
    )));
    let held = append(&store, "a hold", hold)
        .await
        .quarantined
        .expect("the hold's id");
    store
        .record_sync_error(&b, "vendor down".into())
        .await
        .expect("record_sync_error");

    let before = Snapshot::take(&store, &[a.clone(), b.clone()]).await;
    assert_eq!(before.events.len(), 7, "events before the restart");
    let store = backend.reopen(store).await;
    assert_eq!(store.head(), Sequence(7), "head after the restart");
    let after = Snapshot::take(&store, &[a.clone(), b.clone()]).await;
    assert_eq!(after.events, before.events, "the log after a restart");
    assert_eq!(
        after.conversations, before.conversations,
        "conversations after a restart"
    );
    assert_eq!(
        after.count, before.count,
        "conversation_count after a restart"
    );
    assert_eq!(
        after.full_conversations, before.full_conversations,
        "get_conversation after a restart"
    );
    assert_eq!(after.ticket, before.ticket, "get_ticket after a restart");
    let chat_1 = after.full_conversations[0]
        .as_ref()
        .expect("chat-1 after a restart");
    assert_eq!(
        chat_1.messages["m1"].value.text, "hello",
        "chat-1's message after a restart"
    );
    assert!(
        after.full_conversations[1].is_some(),
        "chat-2 after a restart"
    );
    assert_eq!(
        after.ticket.as_ref().map(|t| t.status),
        Some(switchboard_core::TicketStatus::Pending),
        "t-1 after a restart"
    );
    assert_eq!(
        after.agents[0]
            .iter()
            .map(|a| a.login.as_str())
            .collect::<Vec<_>>(),
        vec!["a@example.com"],
        "agents of a after a restart"
    );
    assert_eq!(
        after.sync[0].as_ref().and_then(|s| s.cursor.as_deref()),
        Some("cursor-1"),
        "a's cursor after a restart"
    );
    assert_eq!(after.tickets, before.tickets, "tickets after a restart");
    assert_eq!(after.agents, before.agents, "agents after a restart");
    assert_eq!(after.sync, before.sync, "sync state after a restart");
    assert_eq!(
        after.quarantine, before.quarantine,
        "the quarantine after a restart"
    );
    assert_eq!(
        after.quarantine_totals, before.quarantine_totals,
        "quarantine totals after a restart"
    );
    assert_eq!(after.quarantine.len(), 1, "quarantined entries");
    assert_eq!(after.quarantine[0].id, held, "the quarantined entry's id");
    assert_eq!(
        after.sync[1].as_ref().and_then(|s| s.last_error.as_deref()),
        Some("vendor down")
    );

    let receipt = append(
        &store,
        "after the restart",
        request(
            &a,
            "vendor-a",
            vec![
                message("m1", "chat-1", 2, "dup"),
                message("m2", "chat-1", 8, "new"),
            ],
        ),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![8], 1),
        "the log goes on after a restart"
    );
}

struct Snapshot {
    events: Vec<switchboard_core::Event>,
    conversations: Vec<switchboard_core::Conversation>,
    full_conversations: Vec<Option<switchboard_core::Conversation>>,
    ticket: Option<switchboard_core::Ticket>,
    count: u64,
    tickets: Vec<(switchboard_core::ConnectionId, switchboard_core::Ticket)>,
    agents: Vec<Vec<switchboard_core::Agent>>,
    sync: Vec<Option<switchboard_store::SyncState>>,
    quarantine: Vec<switchboard_store::Quarantined>,
    quarantine_totals: switchboard_store::QuarantineTotals,
}

impl Snapshot {
    async fn take(store: &Store, connections: &[switchboard_core::ConnectionId]) -> Snapshot {
        let query = ConversationQuery {
            page_size: 1000,
            ..Default::default()
        };
        let mut agents = Vec::new();
        let mut sync = Vec::new();
        for c in connections {
            agents.push(store.list_agents(c).await.expect("list_agents"));
            sync.push(store.sync_state(c).await.expect("sync_state"));
        }
        let mut full_conversations = Vec::new();
        for chat in ["chat-1", "chat-2"] {
            let id = switchboard_core::ConversationId::new(connections[0].clone(), chat);
            full_conversations.push(store.get_conversation(&id).await.expect("get_conversation"));
        }
        let ticket_id = switchboard_core::TicketId::new(connections[0].clone(), "t-1");
        Snapshot {
            full_conversations,
            ticket: store.get_ticket(&ticket_id).await.expect("get_ticket"),
            events: read_all(store).await,
            conversations: store
                .list_conversations(&query)
                .await
                .expect("list_conversations")
                .conversations,
            count: store
                .conversation_count()
                .await
                .expect("conversation_count"),
            tickets: store
                .list_tickets(&TicketListQuery {
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .expect("list_tickets")
                .tickets,
            agents,
            sync,
            quarantine: store
                .list_quarantine(0, 1000, &[])
                .await
                .expect("list_quarantine")
                .0,
            quarantine_totals: store.quarantine_totals().await.expect("quarantine_totals"),
        }
    }
}

/// After `close_within`, appends are refused as Unavailable and nothing moves.
pub async fn close_stops_writes(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    append(
        &store,
        "before close",
        request(&c, "v", vec![message("k1", "c", 1, "x")]),
    )
    .await;
    let closed = store
        .close_within(Duration::from_secs(30))
        .await
        .expect("close_within");
    assert!(closed, "close_within did not close within 30 s");
    let error = expect_error(
        "an append after close",
        store
            .append(request(&c, "v", vec![message("k2", "c", 2, "y")]))
            .await,
        "an error",
        |_| true,
    );
    assert_eq!(
        error.code(),
        ErrorCode::Unavailable,
        "an append after close: {error}"
    );
    assert_eq!(store.head(), Sequence(1), "head after a refused append");
    assert!(!store.is_ready(), "a closed store says it is ready");
    let store = backend.reopen(store).await;
    assert_eq!(
        seqs(read_all(&store).await.iter().map(|e| e.sequence)),
        vec![1],
        "the log after close and reopen"
    );
}

/// `event_by_dedup_key` finds the event a connection appended under a key (the first one),
/// and nothing for other keys or other connections.
pub async fn event_by_dedup_key_finds_the_first_event(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let (a, b) = (conn("a"), conn("b"));
    append(
        &store,
        "k1, k2",
        request(
            &a,
            "v",
            vec![message("k1", "c", 1, "one"), message("k2", "c", 2, "two")],
        ),
    )
    .await;
    append(
        &store,
        "k1 again",
        request(&a, "v", vec![message("k1", "c", 9, "changed")]),
    )
    .await;
    let events = read_all(&store).await;
    for (key, index) in [("k1", 0), ("k2", 1)] {
        let found = store
            .event_by_dedup_key(&a, key)
            .await
            .expect("event_by_dedup_key");
        assert_eq!(
            found.as_ref(),
            Some(&events[index]),
            "event_by_dedup_key({key})"
        );
    }
    assert_eq!(
        store.event_by_dedup_key(&a, "k3").await.expect("lookup"),
        None,
        "an unknown key"
    );
    assert_eq!(
        store.event_by_dedup_key(&b, "k1").await.expect("lookup"),
        None,
        "k1 on another connection"
    );
    let store = backend.reopen(store).await;
    let found = store
        .event_by_dedup_key(&a, "k2")
        .await
        .expect("lookup after reopen");
    assert_eq!(
        found.as_ref(),
        Some(&events[1]),
        "event_by_dedup_key after a restart"
    );
}

/// A malformed request (an empty dedup key, vendor, conversation id, ticket id or agent login)
/// is InvalidArgument and changes nothing: not even its valid events are appended.
pub async fn bad_input_changes_nothing(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    append(
        &store,
        "a valid event",
        request(&c, "v", vec![message("ok-0", "c", 1, "x")]),
    )
    .await;
    let mut empty_ticket = ticket("t-1", switchboard_core::TicketStatus::Open, 1, "s");
    empty_ticket.external_id.clear();
    let bad: Vec<(&str, switchboard_store::AppendRequest)> = vec![
        (
            "an empty dedup key",
            request(
                &c,
                "v",
                vec![message("ok-1", "c", 1, "x"), message("", "c", 1, "x")],
            ),
        ),
        (
            "an empty vendor",
            request(&c, "", vec![message("ok-1", "c", 1, "x")]),
        ),
        (
            "an empty conversation id",
            request(
                &c,
                "v",
                vec![message("ok-1", "c", 1, "x"), message("k", "", 1, "x")],
            ),
        ),
        (
            "an empty ticket id",
            request(
                &c,
                "v",
                vec![
                    message("ok-1", "c", 1, "x"),
                    ticket_event("k", empty_ticket),
                ],
            ),
        ),
        (
            "an empty agent login",
            request(
                &c,
                "v",
                vec![
                    message("ok-1", "c", 1, "x"),
                    agent_event("k", agent("", "n"), false, 1),
                ],
            ),
        ),
    ];
    for (what, request) in bad {
        let mut with_sync = request;
        with_sync.sync = Some(SyncUpdate {
            cursor: "bad".into(),
            records: 1,
            at: at(1),
        });
        expect_error(
            what,
            store.append(with_sync).await,
            "InvalidArgument",
            |e| matches!(e, StoreError::InvalidArgument(_)),
        );
        assert_eq!(
            store.head(),
            Sequence(1),
            "head after a request with {what}"
        );
    }
    assert_eq!(
        store.sync_state(&c).await.expect("sync_state"),
        None,
        "a refused request saved its cursor"
    );
    let events = read_all(&store).await;
    assert_eq!(events.len(), 1, "events after refused requests: {events:?}");
    let id = switchboard_core::ConversationId::new(c.clone(), "c");
    let conversation = store.get_conversation(&id).await.expect("get").expect("c");
    assert_eq!(
        conversation.messages.keys().collect::<Vec<_>>(),
        vec!["ok-0"],
        "a refused request changed a projection"
    );
    // The valid event of a refused request was not remembered as seen.
    let receipt = append(
        &store,
        "ok-1 alone",
        request(&c, "v", vec![message("ok-1", "c", 1, "x")]),
    )
    .await;
    assert_eq!(
        (seqs(receipt.appended), receipt.duplicates),
        (vec![2], 0),
        "ok-1 after the refused requests"
    );
}
