//! The tail cache: the newest durable events, decoded, so that subscribers tailing the log
//! (often many, all reading the same few events) neither read sled nor decode JSON.

use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock};

use switchboard_core::{Event, Sequence};

/// Up to `capacity` consecutive events ending at the durable head, filled by the flusher
/// before it announces a new head.
pub(crate) struct TailCache {
    capacity: usize,
    max_bytes: usize,
    events: RwLock<Held>,
}

/// The events held and their approximate size.
#[derive(Default)]
struct Held {
    events: VecDeque<Event>,
    bytes: usize,
}

/// About how many bytes of memory an event holds: its raw body, its message texts and a
/// fixed allowance for the rest (ids, times, the patch's small fields).
pub(crate) fn approx_size(event: &Event) -> usize {
    let texts: usize = match &event.incoming.payload {
        switchboard_core::EventPayload::Conversation(patch) => {
            patch.messages.iter().map(|m| m.text.len()).sum()
        }
        _ => 0,
    };
    1024 + event.raw.as_ref().map_or(0, String::len) + texts
}

impl TailCache {
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, usize::MAX)
    }

    /// Holds at most `capacity` events and about `max_bytes` of them (the newest event is
    /// always held).
    pub(crate) fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        TailCache {
            capacity,
            max_bytes,
            events: RwLock::new(Held::default()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `events` (consecutive, following the last one held), dropping the oldest.
    pub(crate) fn push(&self, events: Vec<Event>) {
        if self.capacity == 0 || events.is_empty() {
            return;
        }
        let mut held = self.events.write().unwrap_or_else(PoisonError::into_inner);
        let follows = match (held.events.back(), events.first()) {
            (Some(last), Some(first)) => first.sequence.0 == last.sequence.0 + 1,
            _ => true,
        };
        if !follows {
            // Never serve a gap: start again from these.
            held.events.clear();
            held.bytes = 0;
        }
        for event in events {
            held.bytes += approx_size(&event);
            held.events.push_back(event);
            while held.events.len() > self.capacity
                || (held.bytes > self.max_bytes && held.events.len() > 1)
            {
                if let Some(oldest) = held.events.pop_front() {
                    held.bytes -= approx_size(&oldest);
                }
            }
        }
    }

    /// Replaces the held copies of `events` (same sequences) with them: an erasure rewrote
    /// them in the log.
    pub(crate) fn replace(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut held = self.events.write().unwrap_or_else(PoisonError::into_inner);
        let Some(first) = held.events.front().map(|e| e.sequence.0) else {
            return;
        };
        for event in events {
            let Some(index) = event
                .sequence
                .0
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
            else {
                continue;
            };
            let Some(slot) = held.events.get_mut(index) else {
                continue;
            };
            if slot.sequence != event.sequence {
                continue;
            }
            let (old, new) = (approx_size(slot), approx_size(event));
            *slot = event.clone();
            held.bytes = held.bytes - old + new;
        }
    }

    /// The events `after + 1 ..= min(after + limit, head)` if the cache holds all of them.
    #[cfg(test)]
    pub(crate) fn read(&self, after: Sequence, limit: usize, head: Sequence) -> Option<Vec<Event>> {
        self.read_bounded(after, limit, usize::MAX, head)
    }

    /// Like [`TailCache::read`], but stops once the events taken reach about `max_bytes`
    /// (always at least one).
    pub(crate) fn read_bounded(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
        head: Sequence,
    ) -> Option<Vec<Event>> {
        let held = self.events.read().unwrap_or_else(PoisonError::into_inner);
        let held = &held.events;
        let first = held.front()?.sequence.0;
        let last = held.back()?.sequence.0;
        let from = after.0.checked_add(1)?;
        let to = head.0.min(
            after
                .0
                .saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)),
        );
        if from < first || to > last || from > to {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        let count = usize::try_from(to - from + 1).ok()?;
        let mut taken = 0usize;
        Some(
            held.range(start..start + count)
                .take_while(|event| {
                    let fits = taken == 0 || taken < max_bytes;
                    taken = taken.saturating_add(approx_size(event));
                    fits
                })
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{
        ConnectionId, ConversationPatch, EventKind, EventPayload, IncomingEvent, Timestamp,
    };

    use super::*;

    fn event(sequence: u64) -> Event {
        Event {
            sequence: Sequence(sequence),
            id: format!("id-{sequence}"),
            connection: ConnectionId::new("lc").unwrap(),
            vendor: "livechat".into(),
            received_at: Timestamp::from_secs(1).unwrap(),
            request_id: None,
            incoming: IncomingEvent {
                dedup_key: format!("k{sequence}"),
                kind: EventKind::ChatUpdated,
                vendor_event: "x".into(),
                occurred_at: Timestamp::from_secs(1).unwrap(),
                payload: EventPayload::Conversation(ConversationPatch::new("c")),
            },
            raw: None,
        }
    }

    fn sequences(events: Option<Vec<Event>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|e| e.sequence.0).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_entirely() {
        let cache = TailCache::new(4);
        assert_eq!(sequences(cache.read(Sequence(0), 10, Sequence(0))), None);
        cache.push((1..=3).map(event).collect());
        assert_eq!(
            sequences(cache.read(Sequence(0), 10, Sequence(3))),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            sequences(cache.read(Sequence(1), 1, Sequence(3))),
            Some(vec![2])
        );
        // Never past the head it is asked for.
        assert_eq!(
            sequences(cache.read(Sequence(0), 10, Sequence(2))),
            Some(vec![1, 2])
        );
        cache.push((4..=6).map(event).collect());
        // 1 and 2 were dropped: a read from 0 goes to sled.
        assert_eq!(sequences(cache.read(Sequence(0), 10, Sequence(6))), None);
        assert_eq!(
            sequences(cache.read(Sequence(2), 10, Sequence(6))),
            Some(vec![3, 4, 5, 6])
        );
        // Past what it holds.
        assert_eq!(sequences(cache.read(Sequence(5), 10, Sequence(7))), None);
        assert_eq!(sequences(cache.read(Sequence(6), 10, Sequence(6))), None);
    }

    #[test]
    fn a_gap_empties_it_and_capacity_zero_holds_nothing() {
        let cache = TailCache::new(8);
        cache.push((1..=3).map(event).collect());
        cache.push((5..=6).map(event).collect());
        assert_eq!(sequences(cache.read(Sequence(2), 10, Sequence(6))), None);
        assert_eq!(
            sequences(cache.read(Sequence(4), 10, Sequence(6))),
            Some(vec![5, 6])
        );
        let off = TailCache::new(0);
        off.push((1..=3).map(event).collect());
        assert_eq!(sequences(off.read(Sequence(0), 10, Sequence(3))), None);
    }
}
