//! The log's entries in append-only segment files beside sled (schema 6; frames since 7).
//!
//! sled keeps a value in its leaf node and rewrites the node as the node changes, and it frees
//! a segment of its own file only once half of it is garbage: a value costs about twice its
//! bytes in sled's file. Log entries are written once and never change (an erasure writes a
//! new version), so they go to files of their own, `<data dir>/log/<number>.seg`, and sled keeps
//! a [`Pointer`] under the entry's `log/` key instead. Everything else about the log is as it
//! was: the key, the entry's bytes ([`crate::record`]), the order, and a group's pointers, dedup
//! keys and head in one sled batch.
//!
//! **Frames** (schema 7). The entries a group appends are written together as one frame: a
//! 4-byte length, then their bytes concatenated and compressed as one zstd frame (as they are
//! when compression does not pay). Webhooks of one vendor look alike, and zstd finds that
//! across entries but not inside one entry of a few hundred bytes: a long chat's entry takes
//! about a tenth of its separately compressed size. A frame holds at most [`FRAME_BYTES`] of
//! entries (one larger entry is a frame of its own); readers keep the last few frames
//! decompressed ([`CACHED_FRAMES`], frames of one large entry excepted), so reading a run of
//! entries decompresses each frame once. The pointer says where the frame starts, where the entry is inside it, and the
//! CRC-32 of the entry's own bytes. Damage inside a frame makes every entry of that frame
//! unreadable (served as stand-ins, their sequences kept). Schema-6 pointers (an entry on its
//! own, compressed by itself) are still read.
//!
//! **Durability.** The flusher fdatasyncs the segment files written since its last sync, and
//! answers a group then (schema 9): its entries and its journal record (`writer::journal`), a
//! copy of its sled writes, are in them. sled's own flush follows later, so an acknowledged
//! entry's bytes are on disk before its pointer is. sled may write a batch before the flusher
//! syncs (its buffers fill); if the machine then loses power, a pointer can reach the disk
//! without its bytes. Every pointer carries the CRC-32 of its bytes, and open checks the newest
//! entries, dropping those whose bytes are not whole (never acknowledged: the sync that would
//! have acknowledged them never finished).
//!
//! **Tags** (schema 9). Every item a run writes starts with a byte that says what it is: a
//! frame, a record on its own, or a journal record, each followed by its 4-byte length (and a
//! journal record by its CRC-32). Pointers point past the tag and the length, so readers see
//! the same bytes as before; a replay reads a file from where `meta/journal` says and steps
//! over frames and records to the journal's ([`LogFiles::journal_from`]). Files of schema 8
//! and before have no tags, and no journal is ever looked for in them.
//!
//! **Files.** Each open appends to a new file, so a file is only ever appended to by one run,
//! and the bytes a failed or torn write left at a file's end are never followed by new
//! entries. A file is closed at [`SEGMENT_BYTES`]. Bytes no pointer reaches (a failed group's,
//! an erased entry's previous version) stay until `switchboard compact`, which writes only
//! what the pointers reach into new files. A live store writes zeros ahead of its entries and
//! the entries over them ([`LogFiles::zero_ahead`]), so that the flusher's fdatasync finds no
//! new file size to commit; a clean close cuts the zeros, a crash leaves them past every
//! pointer.
//!
//! **Keys** (schema 8). Consecutive entries of one frame share one `log/` key ([`Grouper`]);
//! readers [`expand`] its value into one pointer per entry.
//!
//! **Records** (schema 8). A conversation's messages are written here too, each on its own
//! (not in a frame: a chat's messages arrive minutes apart, and reading one chat must not
//! decompress a frame per message), sled keeping a [`RecordPointer`] under the message's key.
//! sled's file is about four times the live bytes it holds on loads that insert, so a long
//! chat costs its messages once here rather than four times there. Unlike a log entry, a
//! record's pointer can reach sled's file in a group that acknowledges nothing (projections
//! are written after the log), so the writer fdatasyncs the files before it applies a batch
//! that points at new records ([`LogFiles::take_records_appended`]).
//!
//! **Older stores.** A schema-5 store's entries are inside sled, and stay there: a value that
//! is not a pointer is the entry itself, and is read as before. So are the messages a store
//! of schema 7 or before kept inside sled.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::StoreError;

/// The directory of the segment files, inside the data dir.
pub(crate) const LOG_DIR: &str = "log";

/// A segment file is closed, and the next opened, once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

/// The first byte of a schema-6 [`Pointer`] value, to an entry on its own in a segment file
/// (an entry inline in sled starts with `0x04` or `{`).
pub(crate) const POINTER: u8 = 0x07;

/// The first byte of a [`Pointer`] value to an entry inside a frame (schema 7).
pub(crate) const FRAMED_POINTER: u8 = 0x08;

/// The first byte of a [`Grouper`]'s value for consecutive entries of one frame (schema 8).
pub(crate) const GROUP_POINTER: u8 = 0x0A;

/// The most entries one `log/` key names (so that its value stays a few kilobytes).
const MAX_GROUP: usize = 256;

/// The first byte of a [`RecordPointer`] value (schema 8): a record on its own in a segment
/// file (a message inside sled starts with `0x05`, `{` or the zstd magic).
pub(crate) const RECORD_POINTER: u8 = 0x09;

/// A frame is sealed once its entries come to this many bytes, before compression.
pub(crate) const FRAME_BYTES: usize = 64 << 10;

/// How many decompressed frames [`LogFiles`] keeps for readers.
const CACHED_FRAMES: usize = 8;

/// The largest frame kept for readers: a group's frame, not a single larger entry.
const CACHED_FRAME_BYTES: usize = 2 * FRAME_BYTES;

/// The least and the most zeros written ahead of a live store's entries ([`LogFiles::zero_ahead`]):
/// as many as the file holds, within these bounds, so that a run that writes little leaves
/// little behind.
const RUNWAY_MIN: u64 = 256 << 10;
const RUNWAY_MAX: u64 = 8 << 20;

/// The length before each frame in a segment file.
const FRAME_HEADER: u64 = 4;

/// The byte before each frame (schema 9): what follows is a frame (its 4-byte length, then its
/// bytes). Every item a schema-9 run writes starts with a tag, so that the journal's records
/// can be found by reading a file from its start ([`LogFiles::journal_from`]); pointers point
/// past the tag, so readers never see it. A zero where a tag belongs (the zeros written ahead)
/// ends what a run wrote.
const FRAME_TAG: u8 = b'F';
/// The byte before a record written on its own (a message): its 4-byte length, then its bytes.
const RECORD_TAG: u8 = b'M';
/// The byte before a journal record: its 4-byte length, the CRC-32 of its bytes, then its bytes
/// (see `writer::journal`).
const JOURNAL_TAG: u8 = b'J';
/// The bytes of a tag.
const TAG: u64 = 1;
/// Tag and length.
const TAGGED_HEADER: u64 = TAG + 4;

/// A journal record's bytes as found, and the file and offset where it ends.
pub(crate) type JournalBytes = (Vec<u8>, (u32, u64));

/// Where a log entry's bytes are: what sled keeps under the entry's `log/` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub(crate) segment: u32,
    /// Where the frame holding the entry starts (schema 7), or the entry itself (schema 6).
    pub(crate) offset: u64,
    /// Where the entry starts inside its decompressed frame; `None` for a schema-6 entry on its
    /// own.
    pub(crate) inner: Option<u32>,
    pub(crate) len: u32,
    /// How many events the entry holds (so that the head is found without reading files).
    pub(crate) count: u32,
    /// CRC-32 of the entry's bytes.
    pub(crate) crc: u32,
}

/// The bytes of an encoded schema-6 [`Pointer`].
const POINTER_LEN: usize = 1 + 4 + 8 + 4 + 4 + 4;

/// The bytes of an encoded framed [`Pointer`].
const FRAMED_POINTER_LEN: usize = POINTER_LEN + 4;

impl Pointer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAMED_POINTER_LEN);
        out.push(if self.inner.is_some() {
            FRAMED_POINTER
        } else {
            POINTER
        });
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        if let Some(inner) = self.inner {
            out.extend_from_slice(&inner.to_le_bytes());
        }
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// The pointer `value` holds; `None` if it is not one (an entry inline in sled).
    pub(crate) fn decode(value: &[u8]) -> Option<Pointer> {
        let framed = match (value.first(), value.len()) {
            (Some(&POINTER), POINTER_LEN) => false,
            (Some(&FRAMED_POINTER), FRAMED_POINTER_LEN) => true,
            _ => return None,
        };
        let u32_at = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4"));
        let rest = if framed { 17 } else { 13 };
        Some(Pointer {
            segment: u32_at(1),
            offset: u64::from_le_bytes(value[5..13].try_into().expect("8")),
            inner: framed.then(|| u32_at(13)),
            len: u32_at(rest),
            count: u32_at(rest + 4),
            crc: u32_at(rest + 8),
        })
    }
}

/// Where a [`Grouper`] puts its keys: a sled batch, or the writer's journaled writes.
pub(crate) trait Sink {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
}

impl Sink for sled::Batch {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.insert(key, value);
    }
}

/// Turns the pointers of log entries, pushed in the order they were appended, into sled's
/// `log/` keys (schema 8): consecutive entries of one frame (a group's requests) share one key,
/// the first entry's, whose value names the frame once and then each entry's length, event
/// count and CRC-32, 12 bytes where a key and pointer of its own took 41. sled's file grows
/// by about the same for every key inserted, whatever its size, so a key per group rather
/// than per request is a third less of sled's file on a long chat. A lone entry keeps the
/// 29-byte pointer of schema 7. [`expand`] reads both back as one pointer per entry.
#[derive(Default)]
pub(crate) struct Grouper {
    /// The first sequence of the entries held, and the one after them.
    first: u64,
    next: u64,
    entries: Vec<Pointer>,
}

impl Grouper {
    /// Adds the entry at `pointer`, whose first sequence is `first`; returns the key and value
    /// of the entries held before it when it does not join them.
    pub(crate) fn push(&mut self, first: u64, pointer: Pointer) -> Option<(Vec<u8>, Vec<u8>)> {
        let joins = self
            .entries
            .last()
            .is_some_and(|last| match (last.inner, pointer.inner) {
                (Some(end), Some(inner)) => {
                    (last.segment, last.offset) == (pointer.segment, pointer.offset)
                        && end.checked_add(last.len) == Some(inner)
                        && self.next == first
                        && self.entries.len() < MAX_GROUP
                }
                _ => false,
            });
        let done = if joins { None } else { self.take() };
        if self.entries.is_empty() {
            self.first = first;
        }
        self.next = first + u64::from(pointer.count);
        self.entries.push(pointer);
        done
    }

    /// [`Grouper::push`], the finished key going into `batch`.
    pub(crate) fn push_into(&mut self, first: u64, pointer: Pointer, batch: &mut impl Sink) {
        if let Some((key, value)) = self.push(first, pointer) {
            batch.put(key, value);
        }
    }

    /// [`Grouper::take`] into `batch`: the next entry pushed starts a new key.
    pub(crate) fn flush_into(&mut self, batch: &mut impl Sink) {
        if let Some((key, value)) = self.take() {
            batch.put(key, value);
        }
    }

    /// The key and value of the entries held, if any.
    pub(crate) fn take(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let entries = std::mem::take(&mut self.entries);
        let value = match entries.as_slice() {
            [] => return None,
            [one] => one.encode(),
            [first, ..] => {
                let mut out = Vec::with_capacity(GROUP_HEADER + GROUP_ENTRY * entries.len());
                out.push(GROUP_POINTER);
                out.extend_from_slice(&first.segment.to_le_bytes());
                out.extend_from_slice(&first.offset.to_le_bytes());
                out.extend_from_slice(&first.inner.unwrap_or(0).to_le_bytes());
                for entry in &entries {
                    out.extend_from_slice(&entry.len.to_le_bytes());
                    out.extend_from_slice(&entry.count.to_le_bytes());
                    out.extend_from_slice(&entry.crc.to_le_bytes());
                }
                out
            }
        };
        Some((crate::keys::log_key(self.first), value))
    }
}

/// The bytes of a group value before its entries, and per entry.
const GROUP_HEADER: usize = 1 + 4 + 8 + 4;
const GROUP_ENTRY: usize = 4 + 4 + 4;

/// Log entries as [`expand`] gives them: each entry's own `log/` key and its value.
pub(crate) type Expanded<'a> = Vec<(Vec<u8>, std::borrow::Cow<'a, [u8]>)>;

/// The log entries sled's value `value` at `key` stands for, each as its own key and value (a
/// pointer, or an entry inline in sled): the value itself but for a [`Grouper`]'s group, which
/// is one pointer per entry. A group that does not decode is corruption at `key`.
pub(crate) fn expand<'a>(key: &[u8], value: &'a [u8]) -> Result<Expanded<'a>, StoreError> {
    if value.first() != Some(&GROUP_POINTER) {
        return Ok(vec![(key.to_vec(), std::borrow::Cow::Borrowed(value))]);
    }
    let entries = value.len().saturating_sub(GROUP_HEADER) / GROUP_ENTRY;
    if value.len() != GROUP_HEADER + entries * GROUP_ENTRY || entries < 2 {
        return Err(StoreError::corrupt(
            key,
            format!("a group of log entries of {} bytes", value.len()),
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4"));
    let (segment, offset) = (
        u32_at(1),
        u64::from_le_bytes(value[5..13].try_into().expect("8")),
    );
    let (mut sequence, mut inner) = (crate::record::sequence_of(key)?, u32_at(13));
    let mut out = Vec::with_capacity(entries);
    for at in (GROUP_HEADER..value.len()).step_by(GROUP_ENTRY) {
        let pointer = Pointer {
            segment,
            offset,
            inner: Some(inner),
            len: u32_at(at),
            count: u32_at(at + 4),
            crc: u32_at(at + 8),
        };
        if pointer.count == 0 {
            return Err(StoreError::corrupt(
                key,
                "an entry of no events in its group",
            ));
        }
        out.push((
            crate::keys::log_key(sequence),
            std::borrow::Cow::Owned(pointer.encode()),
        ));
        sequence = sequence
            .checked_add(u64::from(pointer.count))
            .ok_or_else(|| StoreError::corrupt(key, "a group past the last sequence"))?;
        inner = inner
            .checked_add(pointer.len)
            .ok_or_else(|| StoreError::corrupt(key, "a group past 4 GiB"))?;
    }
    Ok(out)
}

/// Where a record (a message) is: what sled keeps under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordPointer {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// CRC-32 of the record's bytes.
    pub(crate) crc: u32,
}

/// The bytes of an encoded [`RecordPointer`].
const RECORD_POINTER_LEN: usize = 1 + 4 + 8 + 4 + 4;

impl RecordPointer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_POINTER_LEN);
        out.push(RECORD_POINTER);
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// The pointer `value` holds; `None` if it is not one (a record inline in sled).
    pub(crate) fn decode(value: &[u8]) -> Option<RecordPointer> {
        if value.len() != RECORD_POINTER_LEN || value[0] != RECORD_POINTER {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4"));
        Some(RecordPointer {
            segment: u32_at(1),
            offset: u64::from_le_bytes(value[5..13].try_into().expect("8")),
            len: u32_at(13),
            crc: u32_at(17),
        })
    }
}

/// The segment files of one store: appended to by the writer, synced by the flusher (and by
/// the writer before a batch that points at new records), read by anyone.
pub(crate) struct LogFiles {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held through a [`LogFiles::sync`], so that a sync returns only once every byte written
    /// before it is durable, whichever thread's fdatasync carries them.
    syncing: Mutex<()>,
    /// The frames read last, newest last.
    frames: Mutex<VecDeque<ReadFrame>>,
    /// Whether zeros are written ahead of the entries ([`LogFiles::zero_ahead`]).
    zero_ahead: bool,
}

struct State {
    /// The file this run appends to, once it wrote something.
    active: Option<Active>,
    /// Frames sealed and not written yet, to follow the active file's `length`.
    buffer: Vec<u8>,
    /// The entries of the frame being filled, uncompressed. It starts where the buffer ends
    /// (a frame is sealed into the buffer before anything else is).
    frame: Vec<u8>,
    /// The number the next new file gets.
    next: u32,
    /// Files written to since the last [`LogFiles::sync`].
    unsynced: Vec<Arc<File>>,
    /// Whether the directory must be fsynced (a file was created in it).
    dir_unsynced: bool,
    /// Whether a record was appended since [`LogFiles::take_records_appended`].
    records_appended: bool,
    /// Open files, for reads.
    readers: HashMap<u32, Arc<File>>,
}

/// A log entry's bytes as read: inside sled's value, read on its own, or a range of a frame
/// shared with the frames kept for readers (an entry of a thousand events is not copied for
/// each read of a few of them).
#[derive(Debug)]
pub(crate) enum Entry<'a> {
    Inline(&'a [u8]),
    Owned(Vec<u8>),
    InFrame(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl std::ops::Deref for Entry<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Entry::Inline(bytes) => bytes,
            Entry::Owned(bytes) => bytes,
            Entry::InFrame(frame, range) => &frame[range.clone()],
        }
    }
}

/// A frame kept for readers: its segment and offset, and the entries it holds.
type ReadFrame = ((u32, u64), Arc<Vec<u8>>);

/// The file a run appends to.
struct Active {
    segment: u32,
    file: Arc<File>,
    /// The bytes written to it.
    length: u64,
    /// Where the zeros written ahead of `length` end ([`LogFiles::zero_ahead`]).
    zeroed: u64,
}

/// Buffered entries are written once they are this many bytes (a group's are written before
/// its batch is applied, whatever their size).
const WRITE_ABOVE: usize = 1 << 20;

impl LogFiles {
    /// The segment files under `<data_dir>/log` (the directory is made when missing). New
    /// entries go to a new file, numbered after every file there.
    pub(crate) fn open(data_dir: &Path) -> Result<LogFiles, StoreError> {
        let dir = data_dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(StoreError::io_in(format!("creating {}", dir.display())))?;
        let mut next = 0u32;
        for entry in std::fs::read_dir(&dir)
            .map_err(StoreError::io_in(format!("reading {}", dir.display())))?
        {
            let entry = entry.map_err(StoreError::io_in(format!("reading {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u32>().ok())
            {
                next = next.max(number.saturating_add(1));
            }
        }
        Ok(LogFiles {
            dir,
            frames: Mutex::new(VecDeque::with_capacity(CACHED_FRAMES)),
            zero_ahead: false,
            syncing: Mutex::new(()),
            state: Mutex::new(State {
                active: None,
                buffer: Vec::new(),
                frame: Vec::new(),
                next,
                unsynced: Vec::new(),
                dir_unsynced: false,
                records_appended: false,
                readers: HashMap::new(),
            }),
        })
    }

    /// Writes zeros ahead of the entries, and the entries over them. An fdatasync after an
    /// append to a file's end must commit the file's new size to the journal as well: on this
    /// project's machines under load that made the flusher's fdatasync of the log 0.57 ms
    /// (median) instead of 0.44 ms (see BENCHMARKS.md, session 12). Writing over bytes already
    /// there changes no metadata. The runway is as long as the file (at least [`RUNWAY_MIN`],
    /// at most [`RUNWAY_MAX`]), so a file's size changes a few times, not at every sync; the
    /// zeros past the last entry are cut at a clean close ([`LogFiles::trim`]). A crash leaves
    /// them: no pointer reaches them, and `switchboard compact` copies only what pointers reach.
    pub(crate) fn zero_ahead(mut self) -> Self {
        self.zero_ahead = true;
        self
    }

    /// Writes what is buffered and cuts the active file after its last entry (the zeros
    /// written ahead of it go), then fdatasyncs it: at a clean close.
    pub(crate) fn trim(&self) -> Result<(), StoreError> {
        let mut state = self.state();
        self.write(&mut state)?;
        let Some(active) = state.active.as_mut() else {
            return Ok(());
        };
        if active.zeroed > active.length {
            let path = self.path(active.segment);
            active
                .file
                .set_len(active.length)
                .and_then(|()| active.file.sync_data())
                .map_err(StoreError::io_in(format!("trimming {}", path.display())))?;
            active.zeroed = active.length;
        }
        Ok(())
    }

    fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:010}.seg"))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `entry` (a log entry, which says how many events it holds, uncompressed: its
    /// frame is compressed) and returns where it is (sled keeps it through a [`Grouper`]). The bytes are
    /// buffered: [`LogFiles::write_buffered`] writes them (the writer calls it before applying
    /// the batch that holds the pointers, so no reader finds a pointer before its bytes), and
    /// [`LogFiles::sync`] makes them durable.
    pub(crate) fn append(&self, entry: &[u8]) -> Result<Pointer, StoreError> {
        let len = u32::try_from(entry.len())
            .map_err(|_| StoreError::InvalidArgument("a log entry over 4 GiB".into()))?;
        let count = crate::record::entry_count(entry)
            .and_then(|count| u32::try_from(count).ok())
            .ok_or_else(|| {
                StoreError::InvalidArgument("not a log entry that says its events".into())
            })?;
        let mut state = self.state();
        self.make_room(&mut state)?;
        if !state.frame.is_empty() && state.frame.len() + entry.len() > FRAME_BYTES {
            seal(&mut state);
        }
        let active = state.active.as_ref().expect("opened above");
        // The frame's length follows its tag.
        let (segment, frame_offset) = (
            active.segment,
            active.length + state.buffer.len() as u64 + TAG,
        );
        let inner = u32::try_from(state.frame.len()).expect("a frame is sealed at FRAME_BYTES");
        state.frame.extend_from_slice(entry);
        // A compaction copies a whole log: it writes as it goes.
        if state.buffer.len() >= WRITE_ABOVE {
            self.write(&mut state)?;
        }
        Ok(Pointer {
            segment,
            offset: frame_offset,
            inner: Some(inner),
            len,
            count,
            crc: crc32fast::hash(entry),
        })
    }

    /// Opens the next file when this run has none yet or the active one is full.
    fn make_room(&self, state: &mut State) -> Result<(), StoreError> {
        let full = state.active.as_ref().is_none_or(|active| {
            active.length + (state.buffer.len() + state.frame.len()) as u64 >= SEGMENT_BYTES
        });
        if !full {
            return Ok(());
        }
        self.write(state)?;
        let segment = state.next;
        let path = self.path(segment);
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(StoreError::io_in(format!("creating {}", path.display())))?;
        let file = Arc::new(file);
        state.next = segment + 1;
        state.readers.insert(segment, file.clone());
        state.active = Some(Active {
            segment,
            file,
            length: 0,
            zeroed: 0,
        });
        state.dir_unsynced = true;
        Ok(())
    }

    /// Appends `record` (a message, as [`crate::record::encode_message`] made it) on its own,
    /// after the frame being filled, and returns the pointer value sled keeps for it. Buffered
    /// like an entry, and noted for [`LogFiles::take_records_appended`].
    pub(crate) fn append_record(&self, record: &[u8]) -> Result<Vec<u8>, StoreError> {
        let len = u32::try_from(record.len())
            .map_err(|_| StoreError::InvalidArgument("a record over 4 GiB".into()))?;
        let mut state = self.state();
        self.make_room(&mut state)?;
        seal(&mut state);
        let active = state.active.as_ref().expect("opened above");
        let (segment, offset) = (
            active.segment,
            active.length + state.buffer.len() as u64 + TAGGED_HEADER,
        );
        state.buffer.push(RECORD_TAG);
        state.buffer.extend_from_slice(&len.to_le_bytes());
        state.buffer.extend_from_slice(record);
        state.records_appended = true;
        if state.buffer.len() >= WRITE_ABOVE {
            self.write(&mut state)?;
        }
        Ok(RecordPointer {
            segment,
            offset,
            len,
            crc: crc32fast::hash(record),
        }
        .encode())
    }

    /// Appends a journal record (`writer::journal`) after the frame being filled, buffered like
    /// an entry; returns the file and the offset just past it, where the next one is looked for.
    pub(crate) fn append_journal(&self, record: &[u8]) -> Result<(u32, u64), StoreError> {
        let len = u32::try_from(record.len())
            .map_err(|_| StoreError::InvalidArgument("a journal record over 4 GiB".into()))?;
        let mut state = self.state();
        self.make_room(&mut state)?;
        seal(&mut state);
        state.buffer.push(JOURNAL_TAG);
        state.buffer.extend_from_slice(&len.to_le_bytes());
        state
            .buffer
            .extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        state.buffer.extend_from_slice(record);
        let active = state.active.as_ref().expect("opened above");
        let end = (active.segment, active.length + state.buffer.len() as u64);
        if state.buffer.len() >= WRITE_ABOVE {
            self.write(&mut state)?;
        }
        Ok(end)
    }

    /// The number the next file this run opens gets: at open, where the journal of this run
    /// will start.
    pub(crate) fn next_segment(&self) -> u32 {
        let state = self.state();
        state
            .active
            .as_ref()
            .map_or(state.next, |active| active.segment)
    }

    /// The journal records written from `offset` of file `segment` on, in the order written,
    /// with where each ends: read to the end of that file, then from the start of each next
    /// file there is. Frames and records are stepped over; the first record that is not whole
    /// (a torn or damaged write: never acknowledged, nor anything after it) ends the list, as
    /// does a zero or an unknown byte where a tag belongs (the end of what a run wrote), and a
    /// missing file. Reads each file whole (at most [`SEGMENT_BYTES`] and the zeros after).
    pub(crate) fn journal_from(
        &self,
        segment: u32,
        offset: u64,
    ) -> Result<Vec<JournalBytes>, StoreError> {
        let mut found = Vec::new();
        let (mut segment, mut at) = (segment, offset as usize);
        loop {
            let path = self.path(segment);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                Err(e) => {
                    return Err(StoreError::io(format!("reading {}", path.display()), e));
                }
            };
            while let Some(&tag) = bytes.get(at) {
                let Some(len) = bytes
                    .get(at + 1..at + 5)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                else {
                    break;
                };
                match tag {
                    FRAME_TAG | RECORD_TAG => at += 5 + len,
                    JOURNAL_TAG => {
                        let Some(crc) = bytes
                            .get(at + 5..at + 9)
                            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
                        else {
                            return Ok(found);
                        };
                        let Some(record) = bytes.get(at + 9..at + 9 + len) else {
                            return Ok(found);
                        };
                        if crc32fast::hash(record) != crc {
                            return Ok(found);
                        }
                        at += 9 + len;
                        found.push((record.to_vec(), (segment, at as u64)));
                    }
                    _ => break,
                }
            }
            segment += 1;
            at = 0;
        }
    }

    /// Whether records were appended since the last call: the writer then fdatasyncs the files
    /// before applying the batch that points at them.
    pub(crate) fn take_records_appended(&self) -> bool {
        std::mem::take(&mut self.state().records_appended)
    }

    /// Seals the frame being filled and writes the buffered frames to their file, in one call.
    pub(crate) fn write_buffered(&self) -> Result<(), StoreError> {
        self.write(&mut self.state())
    }

    /// Forgets the buffered entries (their group failed before anything pointed at them).
    pub(crate) fn discard_buffered(&self) {
        let mut state = self.state();
        state.buffer.clear();
        state.frame.clear();
        state.records_appended = false;
    }

    /// Forgets the frames kept for readers (an erasure rewrote an entry: the old bytes are
    /// not kept in memory either).
    pub(crate) fn forget_read_frames(&self) {
        self.read_frames().clear();
    }

    fn read_frames(&self) -> std::sync::MutexGuard<'_, VecDeque<ReadFrame>> {
        self.frames
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, state: &mut State) -> Result<(), StoreError> {
        seal(state);
        if state.buffer.is_empty() {
            return Ok(());
        }
        let Some(active) = state.active.as_mut() else {
            state.buffer.clear();
            return Ok(());
        };
        let segment = active.segment;
        let file = active.file.clone();
        let end = active.length + state.buffer.len() as u64;
        if self.zero_ahead && end > active.zeroed {
            let to = end
                + end
                    .clamp(RUNWAY_MIN, RUNWAY_MAX)
                    .min(SEGMENT_BYTES.saturating_sub(end));
            active.zeroed = match file.write_all_at(&vec![0; (to - end) as usize], end) {
                Ok(()) => to,
                // Only a speed-up: a disk too full for the zeros may still hold the entries.
                // None are written into this file again; a trim cuts what part was.
                Err(_) => u64::MAX,
            };
        }
        if let Err(e) = file.write_all_at(&state.buffer, active.length) {
            // What a short write left is past every pointer: the next entry starts a new file,
            // so that no pointer's bytes ever follow it.
            state.active = None;
            state.buffer.clear();
            return Err(StoreError::io(
                format!("appending to {}", self.path(segment).display()),
                e,
            ));
        }
        active.length += state.buffer.len() as u64;
        state.buffer.clear();
        if !state.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            state.unsynced.push(file);
        }
        Ok(())
    }

    /// fdatasyncs every file written since the last call (and the directory, after a new
    /// file): the entries appended before this call are then durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let _syncing = self
            .syncing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (files, dir) = {
            let mut state = self.state();
            self.write(&mut state).map_err(std::io::Error::other)?;
            let dir = std::mem::take(&mut state.dir_unsynced);
            (std::mem::take(&mut state.unsynced), dir)
        };
        let result = files.iter().try_for_each(|file| file.sync_data());
        let result = result.and_then(|()| {
            if dir {
                File::open(&self.dir)?.sync_all()
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            // Tried again at the next sync (the store refuses writes after a failed one).
            let mut state = self.state();
            state.unsynced.extend(files);
            state.dir_unsynced |= dir;
        }
        result
    }

    fn reader(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        let mut state = self.state();
        if let Some(file) = state.readers.get(&segment) {
            return Ok(file.clone());
        }
        let path = self.path(segment);
        let file = Arc::new(
            File::open(&path).map_err(StoreError::io_in(format!("opening {}", path.display())))?,
        );
        state.readers.insert(segment, file.clone());
        Ok(file)
    }

    /// `len` bytes of `segment` at `offset`; a missing file or a short read is corruption at
    /// `key`.
    fn read_at(
        &self,
        key: &[u8],
        segment: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let file = self.reader(segment).map_err(|error| {
            StoreError::corrupt(key, format!("its segment file cannot be read: {error}"))
        })?;
        let short = |e: std::io::Error| {
            StoreError::corrupt(
                key,
                format!(
                    "{} ends before its bytes {offset}..{}: {e}",
                    self.path(segment).display(),
                    offset + len
                ),
            )
        };
        // A length read from a damaged file is no reason to allocate more than the file holds.
        let size = file
            .metadata()
            .map_err(|e| StoreError::corrupt(key, format!("its segment file: {e}")))?
            .len();
        if offset.saturating_add(len) > size {
            return Err(short(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, offset).map_err(short)?;
        Ok(bytes)
    }

    /// The entries of the frame at `offset` of `segment`, decompressed (from the frames kept
    /// when it is one of them).
    fn frame(&self, key: &[u8], segment: u32, offset: u64) -> Result<Arc<Vec<u8>>, StoreError> {
        let cached = |frames: &VecDeque<ReadFrame>| {
            frames
                .iter()
                .find(|(at, _)| *at == (segment, offset))
                .map(|(_, frame)| frame.clone())
        };
        if let Some(frame) = cached(&self.read_frames()) {
            return Ok(frame);
        }
        let header = self.read_at(key, segment, offset, FRAME_HEADER)?;
        let stored = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let bytes = self.read_at(key, segment, offset + FRAME_HEADER, u64::from(stored))?;
        let frame = Arc::new(crate::record::unpack(key, &bytes)?.into_owned());
        if frame.len() > CACHED_FRAME_BYTES {
            // One large entry (a sync page, a bulk append) is its own frame: kept, it would
            // hold memory for reads that mostly want other frames.
            return Ok(frame);
        }
        let mut frames = self.read_frames();
        if frames.len() == CACHED_FRAMES {
            frames.pop_front();
        }
        frames.push_back(((segment, offset), frame.clone()));
        Ok(frame)
    }

    /// The bytes `pointer` points at, checked against its CRC; a missing file, a short read,
    /// a frame that does not decompress or a CRC that differs is corruption at `key`.
    pub(crate) fn read(&self, key: &[u8], pointer: &Pointer) -> Result<Entry<'static>, StoreError> {
        let entry = match pointer.inner {
            None => Entry::Owned(self.read_at(
                key,
                pointer.segment,
                pointer.offset,
                u64::from(pointer.len),
            )?),
            Some(inner) => {
                let frame = self.frame(key, pointer.segment, pointer.offset)?;
                let (start, end) = (inner as usize, inner as usize + pointer.len as usize);
                if end > frame.len() {
                    return Err(StoreError::corrupt(
                        key,
                        format!(
                            "its frame in {} holds {} bytes, not {end}",
                            self.path(pointer.segment).display(),
                            frame.len(),
                        ),
                    ));
                }
                Entry::InFrame(frame, start..end)
            }
        };
        if crc32fast::hash(&entry) != pointer.crc {
            return Err(StoreError::corrupt(
                key,
                format!(
                    "its bytes in {} do not match their checksum",
                    self.path(pointer.segment).display()
                ),
            ));
        }
        Ok(entry)
    }

    /// The entry stored at `key` whose sled value is `value`: the value itself for an entry
    /// inline in sled (schema 5 and before), else the bytes it points at.
    pub(crate) fn entry<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<Entry<'a>, StoreError> {
        match Pointer::decode(value) {
            Some(pointer) => self.read(key, &pointer),
            None => Ok(Entry::Inline(value)),
        }
    }

    /// The record stored at `key` whose sled value is `value`: the value itself for a record
    /// inline in sled (schema 7 and before), else the bytes it points at, checked against
    /// their CRC.
    pub(crate) fn record<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<Entry<'a>, StoreError> {
        let Some(pointer) = RecordPointer::decode(value) else {
            return Ok(Entry::Inline(value));
        };
        // Read as a schema-6 entry on its own is: its bytes, checked against their CRC.
        self.read(
            key,
            &Pointer {
                segment: pointer.segment,
                offset: pointer.offset,
                inner: None,
                len: pointer.len,
                count: 0,
                crc: pointer.crc,
            },
        )
    }

    /// Whether the bytes `value` points at are whole (an inline entry always is).
    pub(crate) fn is_whole(&self, key: &[u8], value: &[u8]) -> bool {
        match Pointer::decode(value) {
            Some(pointer) => self.read(key, &pointer).is_ok(),
            None => true,
        }
    }
}

/// Compresses the frame being filled into the buffer, behind its length.
fn seal(state: &mut State) {
    if state.frame.is_empty() {
        return;
    }
    let packed = crate::record::pack(std::mem::take(&mut state.frame));
    let stored = u32::try_from(packed.len()).expect("a frame is far below 4 GiB");
    state.buffer.push(FRAME_TAG);
    state.buffer.extend_from_slice(&stored.to_le_bytes());
    state.buffer.extend_from_slice(&packed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(count: u8, text: &str) -> Vec<u8> {
        [&[0x04, count, 0, 0, 0][..], text.as_bytes()].concat()
    }

    #[test]
    fn entries_read_back_across_files_and_a_damaged_one_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let first = files.append(&entry(1, "first entry")).unwrap().encode();
        let second = files.append(&entry(2, "second")).unwrap().encode();
        files.sync().unwrap();
        let key = b"log/k".as_slice();
        assert_eq!(&*files.entry(key, &first).unwrap(), entry(1, "first entry"));
        assert_eq!(&*files.entry(key, &second).unwrap(), entry(2, "second"));
        let pointer = Pointer::decode(&second).unwrap();
        assert_eq!((pointer.count, pointer.inner), (2, Some(16)));
        // Appended together, in one frame.
        assert_eq!(pointer.offset, Pointer::decode(&first).unwrap().offset);
        // An inline entry is itself.
        assert_eq!(&*files.entry(key, b"\x04inline").unwrap(), b"\x04inline");
        drop(files);

        // A new run appends to a new file and reads the old ones.
        let files = LogFiles::open(dir.path()).unwrap();
        let third = files.append(&entry(1, "third")).unwrap().encode();
        assert_eq!(Pointer::decode(&third).unwrap().segment, 1);
        // Buffered until written: nothing points at it before.
        assert!(!files.is_whole(key, &third));
        files.write_buffered().unwrap();
        assert_eq!(&*files.entry(key, &first).unwrap(), entry(1, "first entry"));
        assert_eq!(&*files.entry(key, &third).unwrap(), entry(1, "third"));
        drop(files);

        // Torn or changed bytes are corrupt, never misread.
        let segment = dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0));
        let mut bytes = std::fs::read(&segment).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&segment, &bytes).unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let error = files.entry(key, &second).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(!files.is_whole(key, &second));
        assert!(files.is_whole(key, &first));
        std::fs::write(&segment, &bytes[..5]).unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        assert!(!files.is_whole(key, &first));
        assert!(files.is_whole(key, &third));
    }

    #[test]
    fn zeros_are_written_ahead_of_the_entries_and_cut_at_a_trim() {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0));
        let size = || std::fs::metadata(&segment).unwrap().len();
        let files = LogFiles::open(dir.path()).unwrap().zero_ahead();
        let key = b"log/k".as_slice();
        let first = files.append(&entry(1, "first entry")).unwrap().encode();
        files.sync().unwrap();
        let written = {
            let state = files.state();
            let active = state.active.as_ref().unwrap();
            assert_eq!(active.zeroed, active.length + RUNWAY_MIN);
            active.length
        };
        assert_eq!(size(), written + RUNWAY_MIN);
        let bytes = std::fs::read(&segment).unwrap();
        assert!(bytes[written as usize..].iter().all(|&b| b == 0));

        // Later entries are written over the zeros: the file keeps its size.
        let second = files.append(&entry(2, "second")).unwrap().encode();
        files.sync().unwrap();
        assert_eq!(size(), written + RUNWAY_MIN);
        let second_pointer = Pointer::decode(&second).unwrap();
        // Its frame's length follows its tag.
        assert_eq!(second_pointer.offset, written + 1);
        assert_eq!(&*files.entry(key, &first).unwrap(), entry(1, "first entry"));
        assert_eq!(&*files.entry(key, &second).unwrap(), entry(2, "second"));

        // Past the runway, a new one as long as the file (within the bounds).
        // Random letters: about five bits a byte after compression.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let big: String = (0..2 * RUNWAY_MIN)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        let third = files.append(&entry(1, &big)).unwrap().encode();
        files.write_buffered().unwrap();
        let length = files.state().active.as_ref().unwrap().length;
        assert!(length > written + RUNWAY_MIN, "{length}");
        assert_eq!(size(), 2 * length);

        // A trim cuts the zeros after the last entry; everything reads as before.
        files.trim().unwrap();
        assert_eq!(size(), length);
        for (pointer, bytes) in [
            (&first, entry(1, "first entry")),
            (&second, entry(2, "second")),
            (&third, entry(1, &big)),
        ] {
            assert_eq!(&*files.entry(key, pointer).unwrap(), bytes);
        }
        drop(files);

        // Without zero_ahead (a compaction's files), nothing is written past the entries.
        let files = LogFiles::open(dir.path()).unwrap();
        let fourth = files.append(&entry(1, "fourth")).unwrap();
        files.sync().unwrap();
        let path = dir
            .path()
            .join(LOG_DIR)
            .join(format!("{:010}.seg", fourth.segment));
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            files.state().active.as_ref().unwrap().length
        );
    }

    #[test]
    fn a_group_of_alike_entries_is_compressed_together_in_frames_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let entries: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                entry(
                    1,
                    &format!("{{\"chat\":\"c{i}\",\"text\":\"{}\"}}", "hello ".repeat(50)),
                )
            })
            .collect();
        let raw: usize = entries.iter().map(Vec::len).sum();
        let pointers: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| files.append(e).unwrap().encode())
            .collect();
        files.sync().unwrap();
        let key = b"log/k".as_slice();
        for (entry, pointer) in entries.iter().zip(&pointers) {
            assert_eq!(&*files.entry(key, pointer).unwrap(), entry.as_slice());
        }
        let decoded: Vec<Pointer> = pointers
            .iter()
            .map(|p| Pointer::decode(p).unwrap())
            .collect();
        let frames: std::collections::BTreeSet<u64> = decoded.iter().map(|p| p.offset).collect();
        // Sealed at FRAME_BYTES: more than one frame, none over it.
        assert_eq!(frames.len(), raw.div_ceil(FRAME_BYTES), "{frames:?}");
        assert!(
            decoded
                .iter()
                .all(|p| p.inner.unwrap() as usize + p.len as usize <= FRAME_BYTES)
        );
        let on_disk = std::fs::metadata(dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0)))
            .unwrap()
            .len();
        assert!((on_disk as usize) < raw / 20, "{on_disk} bytes for {raw}");

        // One entry larger than a frame is a frame of its own.
        let large = entry(1, &"x".repeat(FRAME_BYTES * 2));
        let pointer = files.append(&large).unwrap().encode();
        files.write_buffered().unwrap();
        assert_eq!(Pointer::decode(&pointer).unwrap().inner, Some(0));
        assert_eq!(&*files.entry(key, &pointer).unwrap(), large.as_slice());
    }

    #[test]
    fn a_record_is_written_on_its_own_between_frames_and_damage_to_it_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let a = files.append(&entry(1, "entry a")).unwrap().encode();
        let record = files.append_record(b"\x05a message record").unwrap();
        let b = files.append(&entry(2, "entry b")).unwrap().encode();
        assert!(files.take_records_appended());
        assert!(!files.take_records_appended());
        files.sync().unwrap();
        let key = b"msg/k".as_slice();
        assert_eq!(
            &*files.record(key, &record).unwrap(),
            b"\x05a message record"
        );
        assert_eq!(&*files.entry(b"log/a", &a).unwrap(), entry(1, "entry a"));
        assert_eq!(&*files.entry(b"log/b", &b).unwrap(), entry(2, "entry b"));
        // The record sealed the frame before it: the entries are in two frames.
        let (a, b) = (Pointer::decode(&a).unwrap(), Pointer::decode(&b).unwrap());
        assert_ne!(a.offset, b.offset);
        let pointer = RecordPointer::decode(&record).unwrap();
        assert!(a.offset < pointer.offset && pointer.offset < b.offset);
        assert_eq!(
            (record.len(), record[0]),
            (RECORD_POINTER_LEN, RECORD_POINTER)
        );
        // Neither kind of pointer is taken for the other; a record inside sled is itself.
        assert!(Pointer::decode(&record).is_none());
        assert!(RecordPointer::decode(&a.encode()).is_none());
        assert_eq!(&*files.record(key, b"\x05inline").unwrap(), b"\x05inline");
        drop(files);

        let segment = dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[pointer.offset as usize + 3] ^= 0xFF;
        std::fs::write(&segment, &bytes).unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let error = files.record(key, &record).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        // The frames around it still read.
        assert_eq!(
            &*files.entry(b"log/b", &b.encode()).unwrap(),
            entry(2, "entry b")
        );
        // Nor is a record past the file's end read.
        std::fs::write(&segment, &bytes[..pointer.offset as usize + 2]).unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let error = files.record(key, &record).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }

    #[test]
    fn consecutive_entries_of_one_frame_share_a_key_and_expand_to_their_own_pointers() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        // Sequences 1, 2-3, 4: one frame. Then 10 (not next), then 11 in a new frame.
        let counts = [(1u64, 1u8), (2, 2), (4, 1), (10, 1)];
        let mut grouper = Grouper::default();
        let mut keys = Vec::new();
        let mut pointers = Vec::new();
        for (first, count) in counts {
            let pointer = files
                .append(&entry(count, &format!("entry {first}")))
                .unwrap();
            pointers.push((first, pointer));
            keys.extend(grouper.push(first, pointer));
        }
        files.write_buffered().unwrap();
        let pointer = files.append(&entry(1, "entry 11")).unwrap();
        pointers.push((11, pointer));
        keys.extend(grouper.push(11, pointer));
        keys.extend(grouper.take());
        files.write_buffered().unwrap();
        assert!(grouper.take().is_none());
        let names: Vec<(u64, u8, usize)> = keys
            .iter()
            .map(|(key, value)| {
                let first = crate::record::sequence_of(key).unwrap();
                (first, value[0], value.len())
            })
            .collect();
        assert_eq!(
            names,
            [
                (1, GROUP_POINTER, GROUP_HEADER + 3 * GROUP_ENTRY),
                (10, FRAMED_POINTER, FRAMED_POINTER_LEN),
                (11, FRAMED_POINTER, FRAMED_POINTER_LEN),
            ]
        );
        // Expanded, each key gives back every entry's own key and pointer, in order.
        let expanded: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .flat_map(|(key, value)| expand(key, value).unwrap())
            .map(|(key, value)| (key, value.into_owned()))
            .collect();
        let wanted: Vec<(Vec<u8>, Vec<u8>)> = pointers
            .iter()
            .map(|(first, pointer)| (crate::keys::log_key(*first), pointer.encode()))
            .collect();
        assert_eq!(expanded, wanted);
        for ((key, value), (first, _)) in expanded.iter().zip(&pointers) {
            assert!(
                String::from_utf8_lossy(&files.entry(key, value).unwrap())
                    .ends_with(&format!("entry {first}"))
            );
        }

        // A group that does not add up is corrupt, never misread.
        let (key, value) = &keys[0];
        for bad in [
            &value[..value.len() - 1],
            &value[..GROUP_HEADER + GROUP_ENTRY],
        ] {
            let error = expand(key, bad).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        }
        let mut zero = value.clone();
        zero[GROUP_HEADER + 4..GROUP_HEADER + 8].fill(0);
        assert!(expand(key, &zero).is_err());
    }

    #[test]
    fn a_key_names_at_most_max_group_entries() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let mut grouper = Grouper::default();
        let mut keys = Vec::new();
        for first in 1..=(MAX_GROUP as u64 + 1) {
            keys.extend(grouper.push(first, files.append(&entry(1, "e")).unwrap()));
        }
        keys.extend(grouper.take());
        let sizes: Vec<usize> = keys
            .iter()
            .map(|(key, value)| expand(key, value).unwrap().len())
            .collect();
        assert_eq!(sizes, [MAX_GROUP, 1]);
    }

    #[test]
    fn a_schema_6_pointer_to_an_entry_on_its_own_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        // A schema-6 file: entries one after the other, each with its own pointer.
        let (a, b) = (entry(1, "entry a"), entry(3, "entry b"));
        std::fs::write(
            dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0)),
            [a.as_slice(), &b].concat(),
        )
        .unwrap();
        let pointer = Pointer {
            segment: 0,
            offset: a.len() as u64,
            inner: None,
            len: b.len() as u32,
            count: 3,
            crc: crc32fast::hash(&b),
        }
        .encode();
        assert_eq!((pointer.len(), pointer[0]), (POINTER_LEN, POINTER));
        assert_eq!(Pointer::decode(&pointer).unwrap().count, 3);
        assert_eq!(&*files.entry(b"log/k", &pointer).unwrap(), b.as_slice());
    }
}
