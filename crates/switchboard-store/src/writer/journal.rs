//! The journal (schema 9): what a group changed in sled, written beside its log entries, so
//! that an append is acknowledged once the segment files are fdatasynced, without waiting for
//! sled's flush.
//!
//! A group's sled batch holds two kinds of writes. Its log pointers, dedup keys, head, tickets,
//! agents, sync states and quarantine entries are **journaled**: their keys and values go into
//! a journal record, appended to the segment files after the group's frame and made durable by
//! the same fdatasync. The conversations it writes (headers, messages, index entries, counters
//! and `meta/projected`) are not: the log already holds what rebuilds them, and open replays
//! the log after `meta/projected` into them. Every batch also sets `meta/journal` to where the
//! next record will be and its number, so sled, whatever prefix of its batches it kept, says
//! where to resume.
//!
//! The flusher flushes sled only every [`crate::StoreOptions::sled_flush_interval`] (and at
//! close). After a crash, open replays the records past `meta/journal` into sled in order, each
//! in one batch with `meta/journal` moved past it, then flushes: the writes are whole values,
//! not changes, so a record applied twice changes nothing. A record must be numbered as
//! expected, whole (its CRC-32), and the log pointers it writes must point at whole bytes;
//! the first that is not ends the replay (nothing from there on was acknowledged). A
//! **barrier** (a group that erases: it rewrites conversations and log entries together, which
//! the journal does not carry) is flushed to sled before it is acknowledged and ends a replay
//! that reaches it: the groups after it were not acknowledged either.

use crate::StoreError;
use crate::keys;
use crate::segments::{self, LogFiles};

/// Where the next journal record is looked for: `meta/journal` -> file (u32 LE), offset
/// (u64 LE), the record's number (u64 LE).
pub(crate) const JOURNAL_KEY: &[u8] = b"meta/journal";

const INSERT: u8 = 1;
const REMOVE: u8 = 0;
const BARRIER: u8 = 1;

/// Where the next record is and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) number: u64,
}

impl Position {
    pub(crate) fn encode(&self) -> [u8; 20] {
        let mut out = [0; 20];
        out[..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..].copy_from_slice(&self.number.to_le_bytes());
        out
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Position, StoreError> {
        let bytes: &[u8; 20] = value
            .try_into()
            .map_err(|_| StoreError::corrupt(JOURNAL_KEY, "not 20 bytes"))?;
        Ok(Position {
            segment: u32::from_le_bytes(bytes[..4].try_into().expect("4")),
            offset: u64::from_le_bytes(bytes[4..12].try_into().expect("8")),
            number: u64::from_le_bytes(bytes[12..].try_into().expect("8")),
        })
    }

    /// The position stored in `db`, if any.
    pub(crate) fn read(db: &sled::Db) -> Result<Option<Position>, StoreError> {
        db.get(JOURNAL_KEY)?
            .map(|value| Position::decode(&value))
            .transpose()
    }
}

/// A record's header: its number (u64 LE) and whether it is a barrier.
const HEADER: usize = 9;

/// A group's sled batch and the journal of its journaled writes.
pub(crate) struct Writes {
    /// Everything the group writes (journaled or not).
    pub(crate) batch: sled::Batch,
    /// The record: room for its header, then the journaled writes, encoded as they come (so
    /// that the record is never copied on its way to the segment files).
    journal: Vec<u8>,
}

impl Default for Writes {
    fn default() -> Self {
        Writes {
            batch: sled::Batch::default(),
            journal: vec![0; HEADER],
        }
    }
}

impl Writes {
    /// A journaled insert.
    pub(crate) fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.journal.push(INSERT);
        push_bytes(&mut self.journal, key);
        push_bytes(&mut self.journal, value);
        self.batch.insert(key, value);
    }

    /// A journaled removal.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        self.journal.push(REMOVE);
        push_bytes(&mut self.journal, key);
        self.batch.remove(key);
    }

    /// Whether any write was journaled.
    pub(crate) fn is_journaled(&self) -> bool {
        self.journal.len() > HEADER
    }

    /// The journal record numbered `number` (a barrier carries no writes: a replay stops at it).
    pub(crate) fn record(&mut self, number: u64, barrier: bool) -> &[u8] {
        self.journal[..8].copy_from_slice(&number.to_le_bytes());
        self.journal[8] = if barrier { BARRIER } else { 0 };
        if barrier {
            &self.journal[..HEADER]
        } else {
            &self.journal
        }
    }
}

impl segments::Sink for Writes {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.insert(&key, &value);
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a sled key or value is far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A decoded journal record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) number: u64,
    pub(crate) barrier: bool,
    /// Keys and their new values (`None`: removed), in the order written.
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Decodes a record's bytes; `None` if they are not a record (a record whose CRC-32 held is
/// never that, short of a bug).
pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
    let number = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let barrier = match *bytes.get(8)? {
        0 => false,
        BARRIER => true,
        _ => return None,
    };
    let mut rest = &bytes[HEADER..];
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let bytes = rest.get(4..4 + len)?.to_vec();
        *rest = &rest[4 + len..];
        Some(bytes)
    };
    let mut writes = Vec::new();
    while let Some((&kind, tail)) = rest.split_first() {
        rest = tail;
        let key = take(&mut rest)?;
        let value = match kind {
            INSERT => Some(take(&mut rest)?),
            REMOVE => None,
            _ => return None,
        };
        writes.push((key, value));
    }
    Some(Record {
        number,
        barrier,
        writes,
    })
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub(crate) records: u64,
    pub(crate) writes: u64,
}

/// Replays into `db` the journal records past its `meta/journal` (see the module docs), each in
/// one batch, then flushes. A store without the key (none of its groups was journaled) has
/// nothing to replay.
pub(crate) fn replay(db: &sled::Db, log: &LogFiles) -> Result<Replayed, StoreError> {
    let mut done = Replayed::default();
    let Some(mut position) = Position::read(db)? else {
        return Ok(done);
    };
    for (bytes, (segment, offset)) in log.journal_from(position.segment, position.offset)? {
        let Some(record) = decode(&bytes) else {
            break;
        };
        if record.number != position.number || record.barrier {
            break;
        }
        // The log entries it points at must be whole, or it was never acknowledged.
        let whole = record.writes.iter().all(|(key, value)| match value {
            Some(value) if key.starts_with(keys::LOG_PREFIX) => segments::expand(key, value)
                .is_ok_and(|entries| entries.iter().all(|(key, value)| log.is_whole(key, value))),
            _ => true,
        });
        if !whole {
            break;
        }
        position = Position {
            segment,
            offset,
            number: record.number + 1,
        };
        let mut batch = sled::Batch::default();
        for (key, value) in &record.writes {
            match value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        batch.insert(JOURNAL_KEY, &position.encode()[..]);
        db.apply_batch(batch)?;
        done.records += 1;
        done.writes += record.writes.len() as u64;
    }
    if done.records > 0 {
        db.flush()?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_its_writes_and_a_barrier_to_none() {
        let mut writes = Writes::default();
        writes.insert(b"dh/1", b"seq");
        writes.remove(b"agent/x");
        writes.insert(b"", b"");
        writes
            .batch
            .insert(b"conv/not journaled".as_slice(), b"v".as_slice());
        assert!(writes.is_journaled());
        let record = decode(writes.record(7, false)).unwrap();
        assert_eq!(
            record,
            Record {
                number: 7,
                barrier: false,
                writes: vec![
                    (b"dh/1".to_vec(), Some(b"seq".to_vec())),
                    (b"agent/x".to_vec(), None),
                    (Vec::new(), Some(Vec::new())),
                ],
            }
        );
        let barrier = decode(writes.record(8, true)).unwrap();
        assert!(barrier.barrier && barrier.writes.is_empty());
        assert!(!Writes::default().is_journaled());
        // Cut short or with an unknown kind, it is not a record.
        let bytes = writes.record(7, false).to_vec();
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        let mut bad = bytes.clone();
        bad[9] = 9;
        assert!(decode(&bad).is_none());
        let position = Position {
            segment: 3,
            offset: 1 << 40,
            number: 9,
        };
        assert_eq!(Position::decode(&position.encode()).unwrap(), position);
        assert!(Position::decode(b"short").is_err());
    }

    /// A store's tree and segment files in `dir`, its journal to start at `number` in the
    /// first file.
    fn journal_at(dir: &std::path::Path, number: u64) -> (sled::Db, LogFiles, Position) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let log = LogFiles::open(dir).unwrap();
        let start = Position {
            segment: log.next_segment(),
            offset: 0,
            number,
        };
        db.insert(JOURNAL_KEY, &start.encode()[..]).unwrap();
        (db, log, start)
    }

    /// Replay applies records in order from `meta/journal`, each once, and stops at a barrier,
    /// at a number out of order and at a record whose log pointer's bytes are not whole.
    #[test]
    fn a_replay_applies_the_records_past_the_position_and_stops_where_acknowledgements_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log, start) = journal_at(dir.path(), 5);
        // Nothing written yet: nothing to replay.
        assert_eq!(replay(&db, &log).unwrap(), Replayed::default());
        let journal = |writes: &mut Writes, number: u64, barrier: bool| {
            log.append_journal(writes.record(number, barrier)).unwrap()
        };
        let mut five = Writes::default();
        five.insert(b"a", b"1");
        five.insert(b"b", b"1");
        journal(&mut five, 5, false);
        let mut six = Writes::default();
        six.insert(b"a", b"2");
        six.remove(b"b");
        let after_six = journal(&mut six, 6, false);
        journal(&mut Writes::default(), 7, true);
        let mut eight = Writes::default();
        eight.insert(b"c", b"after the barrier");
        journal(&mut eight, 8, false);
        log.sync().unwrap();

        let replayed = replay(&db, &log).unwrap();
        assert_eq!(
            replayed,
            Replayed {
                records: 2,
                writes: 4
            }
        );
        assert_eq!(db.get(b"a").unwrap().unwrap().as_ref(), b"2");
        assert!(db.get(b"b").unwrap().is_none());
        assert!(db.get(b"c").unwrap().is_none());
        let position = Position::read(&db).unwrap().unwrap();
        assert_eq!(
            position,
            Position {
                segment: after_six.0,
                offset: after_six.1,
                number: 7
            }
        );
        // Replayed again, nothing changes: it starts past what it applied.
        assert_eq!(replay(&db, &log).unwrap(), Replayed::default());

        // A record numbered out of order is not this journal's next one.
        db.insert(JOURNAL_KEY, &Position { number: 9, ..start }.encode()[..])
            .unwrap();
        assert_eq!(replay(&db, &log).unwrap(), Replayed::default());
        assert_eq!(db.get(b"a").unwrap().unwrap().as_ref(), b"2");

        // A record whose log entry's bytes are not whole was never acknowledged.
        let dir = tempfile::tempdir().unwrap();
        let (db, log, _) = journal_at(dir.path(), 0);
        let entry = [&[0x04, 1, 0, 0, 0][..], b"the entry"].concat();
        let mut pointer = log.append(&entry).unwrap();
        let mut zero = Writes::default();
        zero.insert(&keys::log_key(1), &pointer.encode());
        log.append_journal(zero.record(0, false)).unwrap();
        pointer.crc ^= 1;
        let mut one = Writes::default();
        one.insert(&keys::log_key(2), &pointer.encode());
        log.append_journal(one.record(1, false)).unwrap();
        log.sync().unwrap();
        assert_eq!(
            replay(&db, &log).unwrap(),
            Replayed {
                records: 1,
                writes: 1
            }
        );
        assert!(db.get(keys::log_key(1)).unwrap().is_some());
        assert!(db.get(keys::log_key(2)).unwrap().is_none());
    }

    /// A journal in a segment file, between frames and records, read back from a position
    /// and across files.
    #[test]
    fn records_are_found_past_frames_and_across_files_until_one_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        let entry = |text: &str| [&[0x04, 1, 0, 0, 0][..], text.as_bytes()].concat();
        let start = (log.next_segment(), 0);
        log.append(&entry("a")).unwrap();
        let mut one = Writes::default();
        one.insert(b"k1", b"v1");
        let after_one = log.append_journal(one.record(1, false)).unwrap();
        log.append_record(b"\x05message").unwrap();
        log.append(&entry("b")).unwrap();
        let mut two = Writes::default();
        two.remove(b"k1");
        let after_two = log.append_journal(two.record(2, false)).unwrap();
        log.sync().unwrap();
        drop(log);
        // The next file (as a rotation makes it) continues the journal.
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.next_segment(), 1);
        let mut three = Writes::default();
        three.insert(b"k3", b"v3");
        let after_three = log.append_journal(three.record(3, false)).unwrap();
        log.sync().unwrap();
        let found = log.journal_from(start.0, start.1).unwrap();
        let numbers: Vec<(u64, (u32, u64))> = found
            .iter()
            .map(|(bytes, at)| (decode(bytes).unwrap().number, *at))
            .collect();
        assert_eq!(
            numbers,
            vec![(1, after_one), (2, after_two), (3, after_three)]
        );
        assert_eq!(after_three.0, 1);
        // From a record's end, the ones after it.
        let found = log.journal_from(after_one.0, after_one.1).unwrap();
        assert_eq!(found.len(), 2);
        drop(log);

        // A damaged record ends the list, even with whole ones after it.
        let path = dir
            .path()
            .join(segments::LOG_DIR)
            .join(format!("{:010}.seg", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = after_two.1 as usize - 1;
        bytes[at] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        let found = log.journal_from(start.0, start.1).unwrap();
        assert_eq!(found.len(), 1);
        // So does a file cut inside one.
        std::fs::write(&path, &bytes[..after_one.1 as usize - 2]).unwrap();
        assert!(log.journal_from(start.0, start.1).unwrap().is_empty());
    }
}
