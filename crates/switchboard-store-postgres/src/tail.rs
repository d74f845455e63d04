//! The tail cache: the newest events read from the log, kept decoded, so that many subscribers
//! tailing the log (all reading the same few events after each head move) cost one query per
//! replica rather than one each. It holds only what a read returned from the database, so a
//! cached read returns exactly what [`crate::read::events`] would.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use switchboard_core::{Event, Sequence};

/// Consecutive events, ascending, with the size [`crate::read::events`] counts for each.
pub(crate) struct Tail {
    capacity: usize,
    max_bytes: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    events: VecDeque<(Event, usize)>,
    bytes: usize,
    /// Moves on every [`Tail::clear`]: a read that started before it keeps nothing.
    epoch: u64,
}

impl Tail {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Tail {
            capacity,
            max_bytes,
            held: Mutex::new(Held::default()),
        }
    }

    /// The events `after + 1 ..= min(after + limit, head)` if all are held (stopping once
    /// about `max_bytes` were taken, at least one, as the database read does); `None`
    /// otherwise.
    pub(crate) fn read(
        &self,
        after: Sequence,
        limit: usize,
        max_bytes: usize,
        head: Sequence,
    ) -> Option<Vec<Event>> {
        if after >= head || limit == 0 {
            return Some(Vec::new());
        }
        let first = after.0 + 1;
        let last = after.0.saturating_add(limit as u64).min(head.0);
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let front = held.events.front()?.0.sequence.0;
        let back = held.events.back()?.0.sequence.0;
        if first < front || last > back {
            return None;
        }
        let max_bytes = max_bytes.max(1);
        let mut taken = Vec::new();
        let mut read = 0usize;
        for (event, size) in held.events.range((first - front) as usize..) {
            if event.sequence.0 > last || read >= max_bytes {
                break;
            }
            read = read.saturating_add(*size);
            taken.push(event.clone());
        }
        Some(taken)
    }

    /// Keeps `events` (consecutive, ascending, as read) when they continue or renew the tail;
    /// an older range (a replay) is not kept.
    #[cfg(test)]
    pub(crate) fn keep(&self, events: &[(Event, usize)]) {
        self.keep_since(self.epoch(), events);
    }

    /// Drops every event held (an erasure rewrote the log): reads go to the database until
    /// the tail fills again, and reads that started before this keep nothing.
    pub(crate) fn clear(&self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.events.clear();
        held.bytes = 0;
        held.epoch += 1;
    }

    /// The tail's epoch, to pass to [`Tail::keep_since`] with what a read then returns.
    pub(crate) fn epoch(&self) -> u64 {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// [`Tail::keep`], unless the tail was cleared since `epoch` (the events may be older
    /// than an erasure).
    pub(crate) fn keep_since(&self, epoch: u64, events: &[(Event, usize)]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.epoch != epoch {
            return;
        }
        let back = held.events.back().map(|(e, _)| e.sequence.0);
        match back {
            Some(back) if last.0.sequence.0 <= back => return,
            Some(back) if first.0.sequence.0 <= back + 1 => {
                for (event, size) in events.iter().filter(|(e, _)| e.sequence.0 > back) {
                    held.bytes += size;
                    held.events.push_back((event.clone(), *size));
                }
            }
            _ => {
                held.events = events.iter().cloned().collect();
                held.bytes = events.iter().map(|(_, size)| size).sum();
            }
        }
        while held.events.len() > self.capacity
            || (held.bytes > self.max_bytes && held.events.len() > 1)
        {
            if let Some((_, size)) = held.events.pop_front() {
                held.bytes -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{ConnectionId, EventKind, EventPayload, IncomingEvent, Timestamp};

    use super::*;

    fn event(sequence: u64) -> (Event, usize) {
        let event = Event {
            sequence: Sequence(sequence),
            id: format!("id-{sequence}"),
            connection: ConnectionId::new("c").unwrap(),
            vendor: "v".into(),
            received_at: Timestamp::MIN,
            request_id: None,
            incoming: IncomingEvent {
                dedup_key: format!("k{sequence}"),
                kind: EventKind::VendorEvent,
                vendor_event: "x".into(),
                occurred_at: Timestamp::MIN,
                payload: EventPayload::Vendor {
                    subject: None,
                    data: serde_json::Value::Null,
                },
            },
            raw: None,
        };
        (event, 100)
    }

    fn sequences(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.sequence.0).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let tail = Tail::new(10, usize::MAX);
        assert_eq!(tail.read(Sequence(0), 5, usize::MAX, Sequence(3)), None);
        tail.keep(&[event(3), event(4), event(5)]);
        let read = tail.read(Sequence(2), 10, usize::MAX, Sequence(5)).unwrap();
        assert_eq!(sequences(&read), [3, 4, 5]);
        // Before what it holds, or past it: the database answers.
        assert_eq!(tail.read(Sequence(1), 10, usize::MAX, Sequence(5)), None);
        assert_eq!(tail.read(Sequence(4), 10, usize::MAX, Sequence(6)), None);
        // Never past the head, and nothing at or past it.
        let read = tail.read(Sequence(2), 10, usize::MAX, Sequence(4)).unwrap();
        assert_eq!(sequences(&read), [3, 4]);
        assert_eq!(
            tail.read(Sequence(5), 10, usize::MAX, Sequence(5)),
            Some(Vec::new())
        );
        // The byte bound as the database applies it: at least one, then until it is reached.
        let read = tail.read(Sequence(2), 10, 150, Sequence(5)).unwrap();
        assert_eq!(sequences(&read), [3, 4]);
        let read = tail.read(Sequence(2), 10, 0, Sequence(5)).unwrap();
        assert_eq!(sequences(&read), [3]);
    }

    #[test]
    fn grows_at_the_end_ignores_older_ranges_and_stays_bounded() {
        let tail = Tail::new(4, usize::MAX);
        tail.keep(&[event(5), event(6)]);
        tail.keep(&[event(6), event(7)]);
        tail.keep(&[event(1), event(2)]); // a replay: not kept
        let read = tail.read(Sequence(4), 10, usize::MAX, Sequence(7)).unwrap();
        assert_eq!(sequences(&read), [5, 6, 7]);
        tail.keep(&[event(8), event(9)]);
        assert_eq!(tail.read(Sequence(4), 10, usize::MAX, Sequence(9)), None);
        let read = tail.read(Sequence(5), 10, usize::MAX, Sequence(9)).unwrap();
        assert_eq!(sequences(&read), [6, 7, 8, 9]);
        // A newer range that does not follow on replaces what it holds.
        tail.keep(&[event(20)]);
        assert_eq!(tail.read(Sequence(8), 10, usize::MAX, Sequence(9)), None);
        let read = tail
            .read(Sequence(19), 10, usize::MAX, Sequence(20))
            .unwrap();
        assert_eq!(sequences(&read), [20]);
        let bytes = Tail::new(10, 250);
        bytes.keep(&[event(1), event(2), event(3), event(4)]);
        assert_eq!(bytes.read(Sequence(1), 10, usize::MAX, Sequence(4)), None);
        let read = bytes
            .read(Sequence(2), 10, usize::MAX, Sequence(4))
            .unwrap();
        assert_eq!(sequences(&read), [3, 4]);
    }
}
