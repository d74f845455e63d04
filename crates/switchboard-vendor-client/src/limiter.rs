//! An exact sliding-window rate limiter shared by every clone of a connection's client.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use switchboard_core::RateLimit;
use tokio::time::Instant;

/// At most `calls` grants in any window of `per_seconds`, for every clone.
///
/// A sliding-window log: the limiter keeps the instant of each grant still inside the window
/// (and of each grant reserved for a waiter). A new grant gets the earliest instant that is not
/// before the previous grant and is at least one window after the grant `calls` places back, so
/// no window of the given length ever holds more than `calls` grants, and waiters are served in
/// arrival order. Unlike a token bucket it never allows a burst above the limit.
///
/// The window it keeps is 1% longer than the vendor's (`margin`): a vendor that counts
/// closed windows, or whose clock runs a little differently, still never sees `calls + 1`
/// (granting call `calls + 1` exactly one window after the first would be `calls + 1` in the
/// closed window `[first, first + window]`).
///
/// Built on `tokio::time`, so tests can run it under a paused clock. Clones share one log.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limit: RateLimit,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Grant instants, oldest first, never decreasing; some may lie in the future (reserved).
    grants: VecDeque<Instant>,
    /// No grant before this instant (the vendor said `Retry-After`).
    paused_until: Option<Instant>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.inner.limit)
            .finish_non_exhaustive()
    }
}

/// The window the limiter keeps for a vendor window: 1% longer, and at least 1 ms longer.
pub fn margin(window: Duration) -> Duration {
    window + (window / 100).max(Duration::from_millis(1))
}

impl RateLimiter {
    /// A limiter for `limit`. A zero `calls` or `per_seconds` is raised to 1
    /// ([`ClientSettings`](crate::ClientSettings) refuses zeros before it gets here).
    pub fn new(limit: RateLimit) -> RateLimiter {
        let limit = RateLimit {
            calls: limit.calls.max(1),
            per_seconds: limit.per_seconds.max(1),
        };
        RateLimiter {
            inner: Arc::new(Inner {
                limit,
                window: margin(Duration::from_secs(u64::from(limit.per_seconds))),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> RateLimit {
        self.inner.limit
    }

    /// Waits for a grant; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        match self.acquire_before(None).await {
            Ok(waited) => waited,
            // Without a deadline every reservation succeeds.
            Err(_) => Duration::ZERO,
        }
    }

    /// Waits for a grant unless none is possible by `deadline`: then returns at once with the
    /// earliest instant a grant would be possible, and reserves nothing.
    pub async fn acquire_by(&self, deadline: Instant) -> Result<Duration, Instant> {
        self.acquire_before(Some(deadline)).await
    }

    /// Holds every grant back until `until` (e.g. the vendor's `Retry-After`), for every clone.
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }

    async fn acquire_before(&self, deadline: Option<Instant>) -> Result<Duration, Instant> {
        let now = Instant::now();
        let slot = self.reserve(now, deadline)?;
        if slot <= now {
            return Ok(Duration::ZERO);
        }
        // If this future is dropped while it waits, the guard gives the slot back.
        let mut guard = Reservation {
            limiter: self,
            slot,
            used: false,
        };
        tokio::time::sleep_until(slot).await;
        guard.used = true;
        Ok(slot - now)
    }

    fn reserve(&self, now: Instant, deadline: Option<Instant>) -> Result<Instant, Instant> {
        let calls = self.inner.limit.calls as usize;
        let window = self.inner.window;
        let mut state = self.lock();
        while state.grants.front().is_some_and(|&g| g + window <= now) {
            state.grants.pop_front();
        }
        if state.paused_until.is_some_and(|p| p <= now) {
            state.paused_until = None;
        }
        let mut slot = now;
        if let Some(&last) = state.grants.back() {
            slot = slot.max(last);
        }
        if let Some(paused) = state.paused_until {
            slot = slot.max(paused);
        }
        if state.grants.len() >= calls {
            slot = slot.max(state.grants[state.grants.len() - calls] + window);
        }
        if deadline.is_some_and(|d| slot > d) {
            return Err(slot);
        }
        state.grants.push_back(slot);
        Ok(slot)
    }

    fn release(&self, slot: Instant) {
        // Removing a grant only lowers the count in every window, so the other reservations
        // stay valid.
        let mut state = self.lock();
        if let Some(index) = state.grants.iter().rposition(|&g| g == slot) {
            state.grants.remove(index);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Reservation<'a> {
    limiter: &'a RateLimiter,
    slot: Instant,
    used: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.limiter.release(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(calls: u32, per_seconds: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { calls, per_seconds })
    }

    /// The largest number of instants inside any closed window `[t, t + window]`: what a
    /// vendor counting closed windows sees.
    fn max_in_any_window(instants: &[Instant], window: Duration) -> usize {
        let mut sorted = instants.to_vec();
        sorted.sort();
        let mut best = 0;
        let mut start = 0;
        for end in 0..sorted.len() {
            while sorted[end] - sorted[start] > window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_window() {
        let limiter = limiter(5, 2);
        let mut granted = Vec::new();
        for _ in 0..103 {
            limiter.acquire().await;
            granted.push(Instant::now());
        }
        assert_eq!(max_in_any_window(&granted, Duration::from_secs(2)), 5);
        // And it is not slower than it must be: 103 grants need 20 windows with the margin.
        let span = *granted.last().expect("granted") - granted[0];
        assert_eq!(span, margin(Duration::from_secs(2)) * 20);
    }

    #[tokio::test(start_paused = true)]
    async fn call_limit_plus_one_never_lands_in_a_closed_window_with_the_first() {
        let limiter = limiter(100, 60);
        let mut granted = Vec::new();
        for _ in 0..101 {
            limiter.acquire().await;
            granted.push(Instant::now());
        }
        assert!(granted[100] - granted[0] > Duration::from_secs(60));
        assert_eq!(max_in_any_window(&granted, Duration::from_secs(60)), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_clones_share_the_limit_and_are_served_in_order() {
        let limiter = limiter(3, 1);
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                // Some tasks arrive late, in the middle of a window.
                tokio::time::sleep(Duration::from_millis(u64::from(i % 7) * 130)).await;
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut granted = Vec::new();
        for task in tasks {
            granted.push(task.await.expect("task runs"));
        }
        assert_eq!(max_in_any_window(&granted, Duration::from_secs(1)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn mixed_pace_never_bursts_above_the_limit() {
        // A token bucket would let a burst through after an idle period; the log does not.
        let limiter = limiter(4, 10);
        let mut granted = Vec::new();
        let pauses_ms = [
            0u64, 0, 3_000, 0, 9_000, 1, 0, 0, 12_000, 0, 0, 0, 0, 0, 500, 7_000,
        ];
        for round in 0..5 {
            for pause in pauses_ms {
                tokio::time::sleep(Duration::from_millis(pause + round)).await;
                limiter.acquire().await;
                granted.push(Instant::now());
            }
        }
        assert!(max_in_any_window(&granted, Duration::from_secs(10)) <= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_by_refuses_at_once_when_no_slot_fits() {
        let limiter = limiter(2, 60);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        let ready = limiter
            .acquire_by(start + Duration::from_secs(30))
            .await
            .expect_err("no slot within 30 s");
        assert_eq!(ready, start + margin(Duration::from_secs(60)));
        assert_eq!(Instant::now(), start, "refusing does not wait");
        // Nothing was reserved: the next slot is still one window (with the margin) on.
        let waited = limiter
            .acquire_by(start + Duration::from_secs(61))
            .await
            .expect("slot at 60.6 s");
        assert_eq!(waited, margin(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_gives_its_slot_back() {
        let limiter = limiter(1, 10);
        let start = Instant::now();
        limiter.acquire().await;
        let waiting = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(waiting.is_err(), "the second grant waits for the window");
        // The abandoned reservation is gone, so this one gets one window, not two.
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, margin(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_every_clone_back() {
        let limiter = limiter(100, 1);
        let start = Instant::now();
        limiter.clone().pause_until(start + Duration::from_secs(3));
        let waited = limiter.acquire().await;
        assert_eq!(waited, Duration::from_secs(3));
        assert_eq!(limiter.acquire().await, Duration::ZERO);
    }
}
