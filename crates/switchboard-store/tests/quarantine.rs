//! The quarantine in the store: held durably, bounded (the oldest are kept), released in the
//! same atomic step as the events of a retry.

mod common;

use common::{conn, request, started};
use switchboard_core::Timestamp;
use switchboard_store::{
    AppendRequest, NewQuarantined, QuarantineLimits, QuarantineOp, Store, StoreOptions,
};

fn hold(body: &str) -> AppendRequest {
    let mut append = request("lc", "livechat", vec![]);
    append.request_id = Some(format!("req-{body}"));
    append.quarantine = Some(QuarantineOp::Hold(Box::new(NewQuarantined {
        reason: "unknown shape".to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        query: vec![],
        body: body.to_owned(),
    })));
    append
}

#[tokio::test]
async fn held_webhooks_are_bounded_listed_released_with_their_events_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        quarantine: QuarantineLimits {
            max_entries: 3,
            max_bytes: 10_000,
        },
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let mut ids = Vec::new();
    for body in ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"] {
        let receipt = store.append(hold(body)).await.unwrap();
        assert!(!receipt.quarantine_full);
        ids.push(receipt.quarantined.expect("held"));
    }
    assert_eq!(ids, [1, 2, 3]);
    // Full by count: refused, the oldest kept.
    let refused = store.append(hold("{\"d\":4}")).await.unwrap();
    assert!(refused.quarantine_full);
    assert_eq!(refused.quarantined, None);
    let totals = store.quarantine_totals().unwrap();
    assert_eq!(totals.entries, 3);

    // Paging, and a filter by connection.
    let (page, next) = store.list_quarantine(0, 2, &[]).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(next, Some(2));
    let (page, next) = store.list_quarantine(2, 2, &[]).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
    assert_eq!(next, None);
    assert!(
        store
            .list_quarantine(0, 10, &[conn("other")])
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(page[0].request_id.as_deref(), Some("req-{\"c\":3}"));

    // A failed attempt updates its entry; a release goes with the events it appends.
    let mut attempt = request("lc", "livechat", vec![]);
    attempt.quarantine = Some(QuarantineOp::Attempt {
        id: 1,
        reason: "still unknown".to_owned(),
        at: Timestamp::from_secs(1_800_000_000).unwrap(),
    });
    store.append(attempt).await.unwrap();
    let first = store.get_quarantined(1).unwrap().unwrap();
    assert_eq!(
        (first.attempts, first.reason.as_str()),
        (1, "still unknown")
    );
    let mut release = request("lc", "livechat", vec![started("s1", "c1", 1_000)]);
    release.quarantine = Some(QuarantineOp::Release(2));
    let receipt = store.append(release).await.unwrap();
    assert_eq!(receipt.appended.len(), 1);
    assert!(store.get_quarantined(2).unwrap().is_none());
    assert_eq!(store.quarantine_totals().unwrap().entries, 2);
    // Room again: a new entry gets a new id.
    let again = store.append(hold("{\"e\":5}")).await.unwrap();
    assert_eq!(again.quarantined, Some(4));

    store.close().await.unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), options).unwrap();
    let (page, _) = store.list_quarantine(0, 10, &[]).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3, 4]);
    let totals = store.quarantine_totals().unwrap();
    assert_eq!(totals.entries, 3);
    assert_eq!(totals.bytes, page.iter().map(|e| e.size()).sum::<u64>());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_held_webhook_over_the_byte_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        quarantine: QuarantineLimits {
            max_entries: 100,
            max_bytes: 1_000,
        },
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let small = store.append(hold(&"x".repeat(500))).await.unwrap();
    assert!(small.quarantined.is_some());
    let big = store.append(hold(&"y".repeat(600))).await.unwrap();
    assert!(big.quarantine_full);
    assert_eq!(store.quarantine_totals().unwrap().entries, 1);
    store.close().await.unwrap();
}
