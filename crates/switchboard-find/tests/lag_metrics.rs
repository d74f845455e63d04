//! The finder puts its index's position and how far it is behind the log on the process's
//! metrics. Alone in its binary: it installs the process's metrics recorder.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::started;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_core::ConnectionId;
use switchboard_find::engine::LEASE;
use switchboard_find::{Finder, FinderOptions, LAG_METRIC, MemoryIndex, POSITION_METRIC};
use switchboard_store::{AppendRequest, Storage, Store};

/// The value of the unlabelled gauge `name`, if it was set.
fn gauge(handle: &PrometheusHandle, name: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}

/// Waits until the gauges read `(position, lag)`; panics with what they read after 10 s.
async fn gauges_reach(handle: &PrometheusHandle, position: u64, lag: u64) {
    let want = (Some(position as f64), Some(lag as f64));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = (gauge(handle, POSITION_METRIC), gauge(handle, LAG_METRIC));
        if seen == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "position and lag read {seen:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_and_lag_of_the_index_are_gauges_that_follow_the_log() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(store.clone());
    // Another replica holds the lease: this finder reads the log but applies nothing.
    assert!(
        storage
            .acquire_lease(LEASE, "another-replica", Duration::from_secs(600))
            .await
            .unwrap()
    );
    let finder = Finder::start(
        storage.clone(),
        Arc::new(MemoryIndex::new()),
        FinderOptions {
            holder: "this-replica".into(),
            idle_poll: Duration::from_millis(20),
            commit_interval: Duration::from_millis(20),
            ..FinderOptions::default()
        },
    );
    gauges_reach(&handle, 0, 0).await;

    let request = AppendRequest::new(
        ConnectionId::new("lc").unwrap(),
        "livechat",
        (0..7).map(|i| started(&format!("c{i}"))).collect(),
    );
    let head = *store
        .append(request)
        .await
        .unwrap()
        .appended
        .last()
        .unwrap();
    assert_eq!(head.0, 7);
    gauges_reach(&handle, 0, 7).await;

    // The other replica goes: this one takes the lease and catches up.
    storage
        .release_lease(LEASE, "another-replica")
        .await
        .unwrap();
    gauges_reach(&handle, 7, 0).await;
    assert!(
        finder
            .caught_up(head, Duration::from_secs(10))
            .await
            .unwrap()
    );
    finder.shutdown().await;
}
