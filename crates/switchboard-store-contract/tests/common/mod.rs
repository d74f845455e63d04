//! The sled backend of the contract: stores in temporary directories.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_store::{QuarantineLimits, Storage, Store, StoreOptions};
use switchboard_store_contract::Backend;

/// Opens sled stores in temporary directories it keeps until it is dropped.
#[derive(Default)]
pub struct Sled {
    /// Every directory made, and the store open in it with its options (by handle address).
    stores: Mutex<Vec<(tempfile::TempDir, usize, StoreOptions)>>,
}

fn address(store: &Arc<dyn Storage>) -> usize {
    Arc::as_ptr(store).cast::<()>() as usize
}

impl Sled {
    pub async fn open(path: PathBuf, options: StoreOptions) -> Arc<dyn Storage> {
        let store = tokio::task::spawn_blocking(move || Store::open_with(&path, options))
            .await
            .expect("opening the store panicked")
            .expect("opening the sled store");
        Arc::new(store)
    }

    pub async fn fresh_with(&self, options: StoreOptions) -> Arc<dyn Storage> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Sled::open(dir.path().join("store"), options.clone()).await;
        self.stores
            .lock()
            .unwrap()
            .push((dir, address(&store), options));
        store
    }
}

#[async_trait::async_trait]
impl Backend for Sled {
    fn name(&self) -> &str {
        "sled"
    }

    async fn fresh(&self) -> Arc<dyn Storage> {
        self.fresh_with(StoreOptions::default()).await
    }

    async fn fresh_with_quarantine_limits(&self, limits: QuarantineLimits) -> Arc<dyn Storage> {
        self.fresh_with(StoreOptions {
            quarantine: limits,
            ..StoreOptions::default()
        })
        .await
    }

    async fn reopen(&self, store: Arc<dyn Storage>) -> Arc<dyn Storage> {
        let key = address(&store);
        let (path, options) = {
            let stores = self.stores.lock().unwrap();
            let (dir, _, options) = stores
                .iter()
                .find(|(_, a, _)| *a == key)
                .expect("reopen of a store this backend did not open");
            (dir.path().join("store"), options.clone())
        };
        assert!(
            store
                .close_within(Duration::from_secs(30))
                .await
                .expect("closing the store"),
            "the store did not close within 30 s"
        );
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "reopen got a store someone else still holds (sled's lock would stay taken)"
        );
        drop(store);
        let reopened = Sled::open(path, options).await;
        let mut stores = self.stores.lock().unwrap();
        if let Some(entry) = stores.iter_mut().find(|(_, a, _)| *a == key) {
            entry.1 = address(&reopened);
        }
        reopened
    }
}
