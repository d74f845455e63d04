//! The shared index suite against the in-memory index, the reference implementation.

use switchboard_find::memory::MemoryIndex;
use switchboard_find::suite;

#[tokio::test]
async fn the_memory_index_keeps_every_promise_of_the_suite() {
    suite::run_all(|| async { (MemoryIndex::new(), ()) }).await;
}
