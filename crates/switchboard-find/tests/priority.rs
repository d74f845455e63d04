//! The finder's threads run at a lower priority than the rest of the process: its runtime's
//! threads and tantivy's indexing and merging threads. Alone in its binary, so that the threads
//! it looks at are this test's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::started;
use switchboard_core::ConnectionId;
use switchboard_find::priority::{FINDER_NICE, nice_of_this_thread, threads_named};
use switchboard_find::tantivy_index::TantivyIndex;
use switchboard_find::{Finder, FinderOptions};
use switchboard_store::{AppendRequest, Storage, Store};

fn own_nice() -> i32 {
    nice_of_this_thread().expect("nice value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finders_threads_and_tantivys_run_below_the_rest_of_the_process() {
    let base = own_nice();
    let lowered = (base + FINDER_NICE).min(19);
    assert!(
        lowered > base,
        "the test runs at nice {base} already: nothing to lower"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let index = Arc::new(TantivyIndex::open(&dir.path().join("find")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    let finder = Finder::start(storage, index, FinderOptions::default());
    let request = AppendRequest::new(
        ConnectionId::new("lc").unwrap(),
        "livechat",
        (0..50).map(|i| started(&format!("c{i}"))).collect(),
    );
    let receipt = store.append(request).await.unwrap();
    let last = *receipt.appended.last().unwrap();
    assert!(
        finder
            .caught_up(last, Duration::from_secs(30))
            .await
            .unwrap()
    );

    // Linux keeps 15 bytes of a thread's name.
    let finders = threads_named("switchboard-fin");
    assert!(!finders.is_empty(), "no finder thread");
    let tantivy: Vec<(String, i32)> = ["thrd-tantivy", "merge_thread", "segment_update"]
        .iter()
        .flat_map(|prefix| threads_named(prefix))
        .collect();
    assert!(!tantivy.is_empty(), "no tantivy thread");
    for (name, nice) in finders.iter().chain(&tantivy) {
        assert_eq!(*nice, lowered, "{name}");
    }
    // The runtime's workers and the store's writer and flusher, which acknowledge webhooks in
    // the server, are not lowered.
    let others: Vec<(String, i32)> = ["tokio-rt-worker", "switchboard-sto"]
        .iter()
        .flat_map(|prefix| threads_named(prefix))
        .collect();
    assert!(others.len() >= 4, "{others:?}");
    for (name, nice) in &others {
        assert_eq!(*nice, base, "{name}");
    }
    assert_eq!(own_nice(), base);

    finder.shutdown().await;
    store.close().await.unwrap();
}
