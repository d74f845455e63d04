//! How far the conversation projections in the tree have caught up with the log.
//!
//! The writer makes every append durable in its log entry and dedup keys before answering it,
//! but it may hold the conversations an append changes (headers, messages, index entries,
//! counters) in memory for up to [`crate::StoreOptions::projection_interval`], so that a
//! conversation changed by many groups is written once. `meta/projected` says through which
//! sequence they are in the tree; at open the log after it is replayed into them.
//!
//! A reader of conversations asks for them through the durable head it saw
//! ([`Projection::want`]) and waits until a durable group carries them: whatever was
//! acknowledged before a read began is in what it reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Shared by the store's handles, the writer and the flusher.
#[derive(Debug, Default)]
pub(crate) struct Projection {
    /// The last sequence whose conversation projections are durable in the tree.
    durable: Mutex<u64>,
    changed: Condvar,
    /// The highest sequence a reader is waiting for.
    wanted: AtomicU64,
    /// Whether the writer holds changed conversations in memory.
    dirty: AtomicBool,
}

impl Projection {
    pub(crate) fn new(durable: u64) -> Self {
        Projection {
            durable: Mutex::new(durable),
            ..Projection::default()
        }
    }

    /// The last sequence whose conversation projections are durable.
    pub(crate) fn durable(&self) -> u64 {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by the flusher once a group that wrote the projections through `through` is
    /// durable.
    pub(crate) fn publish(&self, through: u64) {
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        if through > *durable {
            *durable = through;
            self.changed.notify_all();
        }
    }

    /// Asks the writer for the projections through `through` (it writes them with its next
    /// group).
    pub(crate) fn want(&self, through: u64) {
        self.wanted.fetch_max(through, Ordering::AcqRel);
    }

    /// The highest sequence asked for.
    pub(crate) fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Acquire)
    }

    pub(crate) fn set_dirty(&self, dirty: bool) {
        self.dirty.store(dirty, Ordering::Release);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Waits up to `limit` for the projections through `through` to be durable; whether
    /// they are.
    pub(crate) fn wait(&self, through: u64, limit: Duration) -> bool {
        let durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        let (durable, _) = self
            .changed
            .wait_timeout_while(durable, limit, |durable| *durable < through)
            .unwrap_or_else(PoisonError::into_inner);
        *durable >= through
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_when_its_sequence_is_published_and_not_before() {
        let projection = Arc::new(Projection::new(3));
        assert!(projection.wait(3, Duration::ZERO));
        assert!(!projection.wait(5, Duration::from_millis(5)));
        let publisher = projection.clone();
        let thread = std::thread::spawn(move || {
            publisher.publish(4);
            publisher.publish(6);
        });
        assert!(projection.wait(5, Duration::from_secs(30)));
        thread.join().unwrap();
        // Never moves back.
        projection.publish(2);
        assert_eq!(projection.durable(), 6);
        projection.want(9);
        projection.want(7);
        assert_eq!(projection.wanted(), 9);
    }
}
