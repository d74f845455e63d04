//! The dedup keys the tree holds, as a Bloom filter in the writer's memory, so that a new
//! event (most events are) does not cost a sled read to learn that its key is new: that read
//! was a fifth of the writer's time (BENCHMARKS.md, session 14).
//!
//! The filter may answer "maybe held" for a key the tree does not hold (about 1 in 100 while
//! it holds no more keys than it was sized for, more past that): then sled answers, as before.
//! It never answers "not held" for a key the tree holds:
//! - a thread of its own reads every `dh/` key of the tree into a new filter, after the store
//!   is open (the journal replayed, the keys a crash left past the head dropped): every key
//!   held then is read (only the writer adds keys; a key removed would only be a false
//!   positive);
//! - the writer adds every key it writes to the filter in use and, while a filter is being
//!   built, keeps the keys it wrote since the build started, and adds them to the new filter
//!   before it uses it. A build starts only between groups, once the last group's batch is
//!   applied, so every key written is either in the tree when the build reads it or kept;
//! - until the first filter is built, every key is looked up in sled.
//!
//! A filter is sized for twice the keys the tree may hold when it is built (at least 2^20: 1.2
//! MB). One that comes to hold more than it was sized for is replaced the same way by a new
//! one; the old one answers until then. A build that fails (sled could not be read) leaves
//! the filter in use, or sled, answering, and is tried again after 2^20 more keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::JoinHandle;

use fastbloom::BloomFilter;
use tracing::{debug, warn};

use crate::keys;

/// The rate of "maybe held" for keys not held, while a filter holds no more keys than it was
/// sized for.
const FALSE_POSITIVES: f64 = 0.01;

/// The fewest keys a filter is sized for (1.2 MB at 1 %), and how many more keys the writer
/// writes before it tries again after a failed build.
const MIN_KEYS: u64 = 1 << 20;

/// How many keys the building thread reads between two looks at whether it should stop.
const STOP_CHECK: u64 = 4096;

/// A filter and what it was sized for.
struct Filter {
    bloom: BloomFilter,
    sized_for: u64,
    holds: u64,
}

impl Filter {
    fn new(sized_for: u64) -> Filter {
        Filter {
            bloom: BloomFilter::with_false_pos(FALSE_POSITIVES)
                .expected_items(usize::try_from(sized_for).unwrap_or(usize::MAX)),
            sized_for,
            holds: 0,
        }
    }

    fn insert(&mut self, key: &[u8]) {
        self.insert_hash(hash(key));
    }

    fn insert_hash(&mut self, hash: u64) {
        self.bloom.insert_hash(hash);
        self.holds += 1;
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.bloom.contains_hash(hash(key))
    }
}

/// The filter's hash of a `dh/` key: its last 8 bytes, which are SHA-256 bytes (a shorter key,
/// which the writer never asks about, is padded with zeros).
fn hash(key: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let tail = &key[key.len().saturating_sub(8)..];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word)
}

/// A filter being built by its thread.
struct Build {
    result: Receiver<Result<Filter, sled::Error>>,
    /// The keys the writer wrote since the build started (their hashes: 8 bytes each).
    since: Vec<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Build {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's filter of the dedup keys the tree holds. See the module documentation.
pub(crate) struct SeenKeys {
    tree: sled::Tree,
    current: Option<Filter>,
    building: Option<Build>,
    /// About how many keys the tree held at open (its head).
    expected: u64,
    /// The keys the writer wrote since open.
    written: u64,
    /// No build starts before `written` reaches it (set after a build failed).
    next_try: u64,
    /// [`MIN_KEYS`], but for tests.
    min_keys: u64,
}

impl SeenKeys {
    /// Starts building the filter of `tree`'s dedup keys; `expected` is about how many it
    /// holds (the head: one key per event).
    pub(crate) fn start(tree: sled::Tree, expected: u64) -> SeenKeys {
        SeenKeys::start_with(tree, expected, MIN_KEYS)
    }

    fn start_with(tree: sled::Tree, expected: u64, min_keys: u64) -> SeenKeys {
        let mut seen = SeenKeys {
            tree,
            current: None,
            building: None,
            expected,
            written: 0,
            next_try: 0,
            min_keys,
        };
        seen.build();
        seen
    }

    /// Whether the tree may hold `key`: `false` means it does not.
    pub(crate) fn may_hold(&mut self, key: &[u8]) -> bool {
        self.poll();
        self.current
            .as_ref()
            .is_none_or(|filter| filter.contains(key))
    }

    /// Notes that the writer writes `key` into the tree (with its group's batch).
    pub(crate) fn add(&mut self, key: &[u8]) {
        self.written += 1;
        let hash = hash(key);
        if let Some(build) = &mut self.building {
            build.since.push(hash);
        }
        if let Some(filter) = &mut self.current {
            filter.insert_hash(hash);
        }
    }

    /// Notes that a group's batch is applied: every key added so far is in the tree, so a
    /// build that starts now reads them all. Starts one if the filter holds more keys than it
    /// was sized for (or there is none).
    pub(crate) fn applied(&mut self) {
        let wanted = self
            .current
            .as_ref()
            .is_none_or(|filter| filter.holds > filter.sized_for);
        if wanted && self.building.is_none() && self.written >= self.next_try {
            self.build();
        }
    }

    /// Whether a filter answers (not only sled).
    #[cfg(test)]
    pub(crate) fn ready(&mut self) -> bool {
        self.poll();
        self.current.is_some()
    }

    /// Waits for the build under way, if any.
    #[cfg(test)]
    pub(crate) fn wait(&mut self) {
        while self.building.is_some() {
            self.poll();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Starts a build sized for twice the keys the tree may hold now.
    fn build(&mut self) {
        let sized_for = self
            .expected
            .saturating_add(self.written)
            .saturating_mul(2)
            .max(self.min_keys);
        let tree = self.tree.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, result) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("switchboard-seen".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    let _ = sender.send(read_keys(&tree, sized_for, &stop));
                }
            });
        match thread {
            Ok(thread) => {
                self.building = Some(Build {
                    result,
                    since: Vec::new(),
                    stop,
                    thread: Some(thread),
                });
            }
            Err(error) => self.failed(&error.to_string()),
        }
    }

    /// A build failed: the filter in use (if any) goes on answering, and the next build waits
    /// for `MIN_KEYS` more keys.
    fn failed(&mut self, error: &str) {
        warn!(%error, "the filter of the dedup keys could not be built; keys it cannot rule out are looked up in sled");
        self.next_try = self.written.saturating_add(self.min_keys);
    }

    /// Takes the built filter, if its thread is done.
    fn poll(&mut self) {
        let Some(build) = &mut self.building else {
            return;
        };
        let outcome = match build.result.try_recv() {
            Err(TryRecvError::Empty) => return,
            Ok(outcome) => outcome,
            Err(TryRecvError::Disconnected) => Err(sled::Error::ReportableBug(
                "the thread building the filter of the dedup keys stopped".into(),
            )),
        };
        let since = std::mem::take(&mut build.since);
        self.building = None;
        match outcome {
            Ok(mut filter) => {
                for &hash in &since {
                    filter.insert_hash(hash);
                }
                debug!(
                    keys = filter.holds,
                    sized_for = filter.sized_for,
                    "the filter of the dedup keys is built"
                );
                self.current = Some(filter);
            }
            Err(error) => self.failed(&error.to_string()),
        }
    }
}

/// Every `dh/` key of `tree`, in a filter sized for `sized_for` (or more, if it holds more).
fn read_keys(tree: &sled::Tree, sized_for: u64, stop: &AtomicBool) -> Result<Filter, sled::Error> {
    let mut filter = Filter::new(sized_for);
    for key in tree.scan_prefix(keys::DEDUP_PREFIX).keys() {
        filter.insert(&key?);
        if filter.holds.is_multiple_of(STOP_CHECK) && stop.load(Ordering::Relaxed) {
            return Err(sled::Error::ReportableBug("stopped".into()));
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::ConnectionId;

    fn key(i: u64) -> Vec<u8> {
        keys::dedup_key(&ConnectionId::new("lc").unwrap(), &format!("key-{i}"))
    }

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, sled::Tree::clone(&db))
    }

    /// How many of `keys` the filter rules out.
    fn ruled_out(seen: &mut SeenKeys, keys: std::ops::Range<u64>) -> usize {
        keys.filter(|&i| !seen.may_hold(&key(i))).count()
    }

    #[test]
    fn keys_held_at_start_and_written_during_the_build_are_never_ruled_out() {
        let (_dir, tree) = tree();
        for i in 0..20_000 {
            tree.insert(key(i), &[][..]).unwrap();
        }
        let mut seen = SeenKeys::start(tree, 20_000);
        // Not yet taken by `poll`: these go to the keys kept for the new filter.
        for i in 20_000..20_500 {
            seen.add(&key(i));
        }
        assert!(seen.building.as_ref().is_some_and(|b| b.since.len() == 500));
        seen.wait();
        assert!(seen.ready());
        assert_eq!(ruled_out(&mut seen, 0..20_500), 0);
        // Most keys not held are ruled out (1 % false positives by design).
        let out = ruled_out(&mut seen, 100_000..110_000);
        assert!(
            out > 9_500,
            "only {out} of 10,000 keys not held were ruled out"
        );
        // Written once it is in use.
        seen.add(&key(100_000));
        assert!(seen.may_hold(&key(100_000)));
    }

    #[test]
    fn a_filter_past_its_size_is_rebuilt_bigger_between_groups() {
        let (_dir, tree) = tree();
        let mut seen = SeenKeys::start_with(tree.clone(), 0, 1000);
        seen.wait();
        assert_eq!(seen.current.as_ref().unwrap().sized_for, 1000);
        // A writer's groups: keys written to the tree with the batch, then `applied`.
        for i in 0..1001 {
            seen.add(&key(i));
            tree.insert(key(i), &[][..]).unwrap();
        }
        assert!(
            seen.building.is_none(),
            "a build starts only between groups"
        );
        seen.applied();
        assert!(
            seen.building.is_some(),
            "past its size: a new filter is built"
        );
        for i in 1001..1100 {
            seen.add(&key(i));
        }
        seen.wait();
        let filter = seen.current.as_ref().unwrap();
        assert_eq!(
            filter.sized_for,
            2 * 1001,
            "twice the keys written when it started"
        );
        assert_eq!(filter.holds, 1100);
        assert_eq!(ruled_out(&mut seen, 0..1100), 0);
        let out = ruled_out(&mut seen, 100_000..110_000);
        assert!(
            out > 9_000,
            "only {out} of 10,000 keys not held were ruled out"
        );
        // Within its size: no new build.
        seen.applied();
        assert!(seen.building.is_none());
    }
}
