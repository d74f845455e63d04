//! Idempotency claims, agents, sync state and the quarantine.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Sequence;
use switchboard_store::{
    AppendRequest, Claim, NewQuarantined, QuarantineLimits, QuarantineOp, QuarantineTotals,
    Quarantined, SyncState, SyncUpdate,
};

use crate::Backend;
use crate::support::*;

async fn claim(store: &Store, connection: &str, key: &str, lease: Duration) -> Claim {
    store
        .claim_idempotency_key(&conn(connection), key, lease)
        .await
        .unwrap_or_else(|e| panic!("claim_idempotency_key({connection}, {key}): {e}"))
}

/// A job lease is held by one holder at a time, renewable by its holder, free again after
/// release or once it runs out; of many holders racing for one lease exactly one wins.
pub async fn job_leases(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let long = Duration::from_secs(60);
    let take = |name: &'static str, holder: &'static str, ttl: Duration| {
        let store = Arc::clone(&store);
        async move {
            store
                .acquire_lease(name, holder, ttl)
                .await
                .unwrap_or_else(|e| panic!("acquire_lease({name}, {holder}): {e}"))
        }
    };
    assert!(take("sync/a", "r1", long).await, "a first lease");
    assert!(take("sync/a", "r1", long).await, "its holder renews it");
    assert!(
        !take("sync/a", "r2", long).await,
        "another holder while it is held"
    );
    assert!(take("sync/b", "r2", long).await, "another lease");
    store
        .release_lease("sync/a", "r2")
        .await
        .expect("release by a non-holder");
    assert!(
        !take("sync/a", "r2", long).await,
        "a release by someone else does not free it"
    );
    store.release_lease("sync/a", "r1").await.expect("release");
    assert!(
        take("sync/a", "r2", long).await,
        "free after its holder released it"
    );

    assert!(
        take("sync/c", "r1", Duration::from_millis(200)).await,
        "a short lease"
    );
    assert!(!take("sync/c", "r2", long).await, "held until it runs out");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        take("sync/c", "r2", long).await,
        "taken over once it ran out"
    );
    assert!(!take("sync/c", "r1", long).await, "the old holder lost it");

    let holders = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"];
    let racers: Vec<_> = holders
        .iter()
        .map(|holder| tokio::spawn(take("sync/race", holder, long)))
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.expect("a racer") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "holders racing for one lease");
}

/// A key is held by one caller until it is released or its lease runs out; keys are per
/// connection; of many callers racing for one key exactly one wins.
pub async fn idempotency_claims(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let long = Duration::from_secs(60);
    assert_eq!(
        claim(&store, "a", "k1", long).await,
        Claim::Claimed,
        "a first claim"
    );
    assert_eq!(
        claim(&store, "a", "k1", long).await,
        Claim::Busy,
        "a second claim of a held key"
    );
    assert_eq!(
        claim(&store, "a", "k2", long).await,
        Claim::Claimed,
        "another key"
    );
    assert_eq!(
        claim(&store, "b", "k1", long).await,
        Claim::Claimed,
        "the same key on another connection"
    );
    store
        .release_idempotency_key(&conn("a"), "k1")
        .await
        .expect("release");
    assert_eq!(
        claim(&store, "a", "k1", long).await,
        Claim::Claimed,
        "a claim after release"
    );
    assert_eq!(
        claim(&store, "a", "k1", long).await,
        Claim::Busy,
        "a claim of a key claimed again"
    );
    assert_eq!(
        claim(&store, "a", "k2", long).await,
        Claim::Busy,
        "releasing k1 released k2"
    );
    store
        .release_idempotency_key(&conn("a"), "never-claimed")
        .await
        .expect("releasing a key nobody holds");

    let short = Duration::from_millis(200);
    assert_eq!(
        claim(&store, "a", "short", short).await,
        Claim::Claimed,
        "a claim with a short lease"
    );
    assert_eq!(
        claim(&store, "a", "short", short).await,
        Claim::Busy,
        "a claim within the short lease"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        claim(&store, "a", "short", long).await,
        Claim::Claimed,
        "a claim after the lease ran out"
    );
    assert_eq!(
        claim(&store, "a", "short", long).await,
        Claim::Busy,
        "a claim after the lease was taken again"
    );

    let racers = 12;
    let barrier = Arc::new(tokio::sync::Barrier::new(racers));
    let mut tasks = Vec::new();
    for _ in 0..racers {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            claim(&store, "a", "raced", Duration::from_secs(60)).await
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        if task.await.expect("a claiming task panicked") == Claim::Claimed {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1, "callers that claimed one key at once");
}

/// Agents are upserted and deleted by agent events and listed by login.
pub async fn agents_upsert_and_delete(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let (a, b) = (conn("a"), conn("b"));
    append(
        &store,
        "three agents",
        request(
            &a,
            "v",
            vec![
                agent_event("1", agent("carol@example.com", "Carol"), false, 1),
                agent_event("2", agent("alice@example.com", "Alice"), false, 2),
                agent_event("3", agent("bob@example.com", "Bob"), false, 3),
            ],
        ),
    )
    .await;
    append(
        &store,
        "alice on b",
        request(
            &b,
            "v",
            vec![agent_event(
                "4",
                agent("alice@example.com", "Alice B"),
                false,
                4,
            )],
        ),
    )
    .await;
    let logins = |agents: &[switchboard_core::Agent]| {
        agents.iter().map(|a| a.login.clone()).collect::<Vec<_>>()
    };
    let listed = store.list_agents(&a).await.expect("list_agents");
    assert_eq!(
        logins(&listed),
        vec!["alice@example.com", "bob@example.com", "carol@example.com"],
        "agents by login"
    );
    assert_eq!(
        listed[0],
        agent("alice@example.com", "Alice"),
        "a listed agent's fields"
    );

    let mut renamed = agent("bob@example.com", "Robert");
    renamed.max_chats_count = Some(6);
    renamed.groups = vec![switchboard_core::Group {
        id: 7,
        name: Some("Sales".into()),
    }];
    append(
        &store,
        "bob renamed, carol deleted",
        request(
            &a,
            "v",
            vec![
                agent_event("5", renamed.clone(), false, 5),
                agent_event("6", agent("carol@example.com", "Carol"), true, 6),
            ],
        ),
    )
    .await;
    let listed = store.list_agents(&a).await.expect("list_agents");
    assert_eq!(
        listed,
        vec![agent("alice@example.com", "Alice"), renamed.clone()],
        "agents after an update and a deletion"
    );
    assert_eq!(
        store.list_agents(&b).await.expect("list_agents"),
        vec![agent("alice@example.com", "Alice B")],
        "agents of b"
    );
    assert_eq!(
        store.list_agents(&conn("none")).await.expect("list_agents"),
        vec![],
        "agents of a connection without any"
    );

    append(
        &store,
        "deleting an unknown agent",
        request(
            &a,
            "v",
            vec![agent_event("7", agent("zed@example.com", "Zed"), true, 7)],
        ),
    )
    .await;
    append(
        &store,
        "carol back",
        request(
            &a,
            "v",
            vec![agent_event(
                "8",
                agent("carol@example.com", "Carol 2"),
                false,
                8,
            )],
        ),
    )
    .await;
    let listed = store.list_agents(&a).await.expect("list_agents");
    assert_eq!(
        logins(&listed),
        vec!["alice@example.com", "bob@example.com", "carol@example.com"],
        "agents after re-adding carol"
    );
    assert_eq!(listed[2].name.as_deref(), Some("Carol 2"), "carol re-added");
    let store = backend.reopen(store).await;
    assert_eq!(
        store
            .list_agents(&a)
            .await
            .expect("list_agents after reopen"),
        listed,
        "agents after a restart"
    );
}

fn page(connection: &str, key: &str, cursor: &str, records: u64, when: i64) -> AppendRequest {
    let mut r = request(
        &conn(connection),
        "v",
        vec![message(key, "chat", when, "synced")],
    );
    r.sync = Some(SyncUpdate {
        cursor: cursor.into(),
        records,
        at: at(when),
    });
    r
}

/// A page's cursor is saved with its events (records added up); `record_sync_error` sets the
/// last error, the next saved page clears it.
pub async fn sync_state_follows_pages_and_errors(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let (a, b) = (conn("a"), conn("b"));
    let state = |cursor: Option<&str>,
                 last_success: Option<i64>,
                 last_error: Option<&str>,
                 records_pulled: u64| SyncState {
        cursor: cursor.map(str::to_owned),
        last_success: last_success.map(at),
        last_error: last_error.map(str::to_owned),
        records_pulled,
    };
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        None,
        "a connection that never synced"
    );
    let receipt = append(&store, "page 1", page("a", "p1", "cursor-1", 40, 10)).await;
    assert_eq!(receipt.appended, vec![Sequence(1)], "page 1's event");
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        Some(state(Some("cursor-1"), Some(10), None, 40)),
        "after page 1"
    );

    store
        .record_sync_error(&a, "the vendor said 503".into())
        .await
        .expect("record_sync_error");
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        Some(state(
            Some("cursor-1"),
            Some(10),
            Some("the vendor said 503"),
            40
        )),
        "after an error"
    );
    store
        .record_sync_error(&b, "bad credentials".into())
        .await
        .expect("record_sync_error");
    assert_eq!(
        store.sync_state(&b).await.expect("sync_state"),
        Some(state(None, None, Some("bad credentials"), 0)),
        "an error before any page"
    );

    append(&store, "page 2", page("a", "p2", "cursor-2", 2, 20)).await;
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        Some(state(Some("cursor-2"), Some(20), None, 42)),
        "after page 2"
    );

    // A page of redeliveries and an empty last page still move the cursor.
    append(
        &store,
        "page 3 (duplicates)",
        page("a", "p2", "cursor-3", 1, 30),
    )
    .await;
    let mut empty = request(&a, "v", vec![]);
    empty.sync = Some(SyncUpdate {
        cursor: "cursor-4".into(),
        records: 0,
        at: at(40),
    });
    let receipt = append(&store, "an empty page", empty).await;
    assert_eq!(
        (receipt.appended.len(), receipt.duplicates),
        (0, 0),
        "an empty page's receipt"
    );
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        Some(state(Some("cursor-4"), Some(40), None, 43)),
        "after a page of duplicates and an empty page"
    );
    assert_eq!(store.head(), Sequence(2), "head after the pages");
    assert_eq!(
        store.sync_state(&b).await.expect("sync_state"),
        Some(state(None, None, Some("bad credentials"), 0)),
        "b after a's pages"
    );

    let store = backend.reopen(store).await;
    assert_eq!(
        store.sync_state(&a).await.expect("sync_state"),
        Some(state(Some("cursor-4"), Some(40), None, 43)),
        "a after a restart"
    );
    assert_eq!(
        store.sync_state(&b).await.expect("sync_state"),
        Some(state(None, None, Some("bad credentials"), 0)),
        "b after a restart"
    );
}

fn held(reason: &str, body: &str) -> NewQuarantined {
    NewQuarantined {
        reason: reason.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-vendor".into(), "1".into()),
        ],
        query: vec![("page".into(), "2".into())],
        body: body.into(),
    }
}

fn hold(connection: &str, request_id: &str, entry: NewQuarantined) -> AppendRequest {
    let mut r = request(&conn(connection), &format!("vendor-{connection}"), vec![]);
    r.request_id = Some(request_id.into());
    r.received_at = at(50);
    r.quarantine = Some(QuarantineOp::Hold(Box::new(entry)));
    r
}

async fn totals(store: &Store) -> QuarantineTotals {
    store.quarantine_totals().await.expect("quarantine_totals")
}

/// Hold stores an entry (list, get, totals), Attempt records a failed retry, Release in the
/// request that appends the entry's events removes it.
pub async fn quarantine_hold_attempt_release(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let first_new = held("unknown event type", r#"{"type":"new_thing"}"#);
    let receipt = append(&store, "hold 1", hold("a", "req-1", first_new.clone())).await;
    assert_eq!(
        (receipt.appended.len(), receipt.quarantine_full),
        (0, false),
        "hold 1's receipt"
    );
    let first_id = receipt.quarantined.expect("hold 1: no quarantine id");
    let second_id = append(
        &store,
        "hold 2",
        hold("b", "req-2", held("no chat id", "{}")),
    )
    .await
    .quarantined
    .expect("hold 2: no id");
    let third_id = append(&store, "hold 3", hold("a", "req-3", held("bad", "[]")))
        .await
        .quarantined
        .expect("hold 3: no id");
    assert!(
        first_id < second_id && second_id < third_id,
        "ids do not increase in arrival order: {first_id}, {second_id}, {third_id}"
    );
    assert_eq!(store.head(), Sequence(0), "a hold appended events");

    let first = Quarantined {
        id: first_id,
        connection: conn("a"),
        vendor: "vendor-a".into(),
        received_at: at(50),
        request_id: Some("req-1".into()),
        reason: first_new.reason.clone(),
        headers: first_new.headers.clone(),
        query: first_new.query.clone(),
        body: first_new.body.clone(),
        attempts: 0,
        last_attempt_at: None,
    };
    assert_eq!(
        store
            .get_quarantined(first_id)
            .await
            .expect("get_quarantined"),
        Some(first.clone()),
        "the held entry"
    );
    let (all, more) = store
        .list_quarantine(0, 10, &[])
        .await
        .expect("list_quarantine");
    assert_eq!(
        all.iter().map(|q| q.id).collect::<Vec<_>>(),
        vec![first_id, second_id, third_id],
        "every entry, oldest first"
    );
    assert_eq!(
        (&all[0], more),
        (&first, None),
        "the first listed entry, and no more"
    );
    let sizes: u64 = all.iter().map(Quarantined::size).sum();
    let t = totals(&store).await;
    assert_eq!((t.entries, t.bytes), (3, sizes), "totals after three holds");
    assert!(
        t.next_id > third_id,
        "next_id {} is not past the last id {third_id}",
        t.next_id
    );

    let (only_a, more) = store
        .list_quarantine(0, 10, &[conn("a")])
        .await
        .expect("list_quarantine of a");
    assert_eq!(
        (only_a.iter().map(|q| q.id).collect::<Vec<_>>(), more),
        (vec![first_id, third_id], None),
        "entries of connection a"
    );
    let (page1, more) = store.list_quarantine(0, 1, &[]).await.expect("a page of 1");
    assert_eq!(
        (page1.iter().map(|q| q.id).collect::<Vec<_>>(), more),
        (vec![first_id], Some(first_id)),
        "a first page of 1"
    );
    let (page2, more) = store
        .list_quarantine(first_id, 2, &[])
        .await
        .expect("the rest");
    assert_eq!(
        (page2.iter().map(|q| q.id).collect::<Vec<_>>(), more),
        (vec![second_id, third_id], None),
        "the page after the first"
    );

    let attempt = QuarantineOp::Attempt {
        id: first_id,
        reason: "still unknown after upgrade".into(),
        at: at(60),
    };
    let mut r = request(&conn("a"), "vendor-a", vec![]);
    r.quarantine = Some(attempt);
    append(&store, "an attempt", r).await;
    let attempted = store
        .get_quarantined(first_id)
        .await
        .expect("get")
        .expect("the attempted entry");
    let expected = Quarantined {
        attempts: 1,
        last_attempt_at: Some(at(60)),
        reason: "still unknown after upgrade".into(),
        ..first.clone()
    };
    assert_eq!(attempted, expected, "the entry after an attempt");
    let t = totals(&store).await;
    assert_eq!(
        (t.entries, t.bytes),
        (3, sizes - first.size() + expected.size()),
        "totals after an attempt"
    );

    let mut release = request(
        &conn("a"),
        "vendor-a",
        vec![message("from-quarantine", "chat-q", 61, "mapped now")],
    );
    release.quarantine = Some(QuarantineOp::Release(first_id));
    let receipt = append(&store, "a release", release).await;
    assert_eq!(receipt.appended, vec![Sequence(1)], "the release's events");
    assert_eq!(
        store.get_quarantined(first_id).await.expect("get"),
        None,
        "a released entry is still held"
    );
    let (rest, _) = store
        .list_quarantine(0, 10, &[])
        .await
        .expect("list_quarantine");
    assert_eq!(
        rest.iter().map(|q| q.id).collect::<Vec<_>>(),
        vec![second_id, third_id],
        "entries after a release"
    );
    let t = totals(&store).await;
    assert_eq!(
        (t.entries, t.bytes),
        (2, sizes - first.size()),
        "totals after a release"
    );

    let store = backend.reopen(store).await;
    let (after, _) = store
        .list_quarantine(0, 10, &[])
        .await
        .expect("list_quarantine after reopen");
    assert_eq!(after, rest, "the quarantine after a restart");
    let fourth = append(
        &store,
        "a hold after reopen",
        hold("a", "req-4", held("x", "{}")),
    )
    .await
    .quarantined
    .expect("hold 4");
    assert!(
        fourth > third_id,
        "an id after a restart ({fourth}) is not past the last ({third_id})"
    );
}

/// A hold that does not fit the quarantine's bounds (entries or bytes) holds nothing and says
/// so; releasing makes room again.
pub async fn quarantine_refuses_past_its_limits(backend: &dyn Backend) {
    let limits = QuarantineLimits {
        max_entries: 2,
        max_bytes: 1000,
    };
    let store = backend.fresh_with_quarantine_limits(limits).await;
    let one = append(&store, "hold 1", hold("a", "r1", held("r", "{}")))
        .await
        .quarantined
        .expect("hold 1");
    append(&store, "hold 2", hold("a", "r2", held("r", "{}")))
        .await
        .quarantined
        .expect("hold 2");
    let before = totals(&store).await;
    let receipt = append(&store, "hold 3 of 2", hold("a", "r3", held("r", "{}"))).await;
    assert_eq!(
        (receipt.quarantined, receipt.quarantine_full),
        (None, true),
        "a third hold with room for 2"
    );
    let after = totals(&store).await;
    assert_eq!(
        (after.entries, after.bytes),
        (before.entries, before.bytes),
        "totals after a refused hold"
    );
    assert_eq!(
        store
            .list_quarantine(0, 10, &[])
            .await
            .expect("list")
            .0
            .len(),
        2,
        "entries after a refused hold"
    );

    let mut release = request(&conn("a"), "vendor-a", vec![]);
    release.quarantine = Some(QuarantineOp::Release(one));
    append(&store, "release 1", release).await;
    let big = "x".repeat(1001);
    let receipt = append(
        &store,
        "a hold larger than the byte bound",
        hold("a", "r4", held("r", &big)),
    )
    .await;
    assert_eq!(
        (receipt.quarantined, receipt.quarantine_full),
        (None, true),
        "a hold of more bytes than the bound"
    );
    assert_eq!(
        totals(&store).await.entries,
        1,
        "entries after a refused large hold"
    );
    let receipt = append(
        &store,
        "a hold that fits again",
        hold("a", "r5", held("r", "{}")),
    )
    .await;
    assert!(
        receipt.quarantined.is_some() && !receipt.quarantine_full,
        "a hold after a release: {receipt:?}"
    );
    assert_eq!(
        totals(&store).await.entries,
        2,
        "entries after holding again"
    );
}
