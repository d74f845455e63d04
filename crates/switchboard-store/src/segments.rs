//! The log's entries in append-only segment files beside sled (schema 6).
//!
//! sled keeps a value in its leaf node and rewrites the node as the node changes, and it frees
//! a segment of its own file only once half of it is garbage: a value costs about twice its
//! bytes in sled's file. Log entries are written once and never change (an erasure writes a
//! new version), so they go to files of their own, `<data dir>/log/<number>.seg`, and sled keeps
//! a [`Pointer`] under the entry's `log/` key instead. Everything else about the log is as it
//! was: the key, the entry's bytes ([`crate::record`]), the order, and a group's pointers, dedup
//! keys and head in one sled batch.
//!
//! **Durability.** The flusher fdatasyncs the segment files written since its last flush
//! before it flushes sled, so an acknowledged entry's bytes are on disk before its pointer is.
//! sled may write a batch before the flusher asks it to (its buffers fill); if the machine
//! then loses power, a pointer can reach the disk without its bytes. Every pointer carries the
//! CRC-32 of its bytes, and open checks the newest entries, dropping those whose bytes are not
//! whole (never acknowledged: the flush that would have acknowledged them never finished).
//!
//! **Files.** Each open appends to a new file, so a file is only ever appended to by one run,
//! and the bytes a failed or torn write left at a file's end are never followed by new
//! entries. A file is closed at [`SEGMENT_BYTES`]. Bytes no pointer reaches (a failed group's,
//! an erased entry's previous version) stay until `switchboard compact`, which writes only
//! what the pointers reach into new files.
//!
//! **Older stores.** A schema-5 store's entries are inside sled, and stay there: a value that
//! is not a pointer is the entry itself, and is read as before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::StoreError;

/// The directory of the segment files, inside the data dir.
pub(crate) const LOG_DIR: &str = "log";

/// A segment file is closed, and the next opened, once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

/// The first byte of a [`Pointer`] value (an entry inline in sled starts with `0x04` or `{`).
pub(crate) const POINTER: u8 = 0x07;

/// Where a log entry's bytes are: what sled keeps under the entry's `log/` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// How many events the entry holds (so that the head is found without reading files).
    pub(crate) count: u32,
    /// CRC-32 of the bytes.
    pub(crate) crc: u32,
}

/// The bytes of an encoded [`Pointer`].
const POINTER_LEN: usize = 1 + 4 + 8 + 4 + 4 + 4;

impl Pointer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(POINTER_LEN);
        out.push(POINTER);
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// The pointer `value` holds; `None` if it is not one (an entry inline in sled).
    pub(crate) fn decode(value: &[u8]) -> Option<Pointer> {
        if value.len() != POINTER_LEN || value[0] != POINTER {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4"));
        Some(Pointer {
            segment: u32_at(1),
            offset: u64::from_le_bytes(value[5..13].try_into().expect("8")),
            len: u32_at(13),
            count: u32_at(17),
            crc: u32_at(21),
        })
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The segment files of one store: appended to by the writer, synced by the flusher, read by
/// anyone.
pub(crate) struct LogFiles {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// The file this run appends to, once it wrote something.
    active: Option<Active>,
    /// Entries appended and not written yet, to follow the active file's `length`.
    buffer: Vec<u8>,
    /// The number the next new file gets.
    next: u32,
    /// Files written to since the last [`LogFiles::sync`].
    unsynced: Vec<Arc<File>>,
    /// Whether the directory must be fsynced (a file was created in it).
    dir_unsynced: bool,
    /// Open files, for reads.
    readers: HashMap<u32, Arc<File>>,
}

/// The file a run appends to.
struct Active {
    segment: u32,
    file: Arc<File>,
    /// The bytes written to it.
    length: u64,
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
            state: Mutex::new(State {
                active: None,
                buffer: Vec::new(),
                next,
                unsynced: Vec::new(),
                dir_unsynced: false,
                readers: HashMap::new(),
            }),
        })
    }

    fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:010}.seg"))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `entry` (a log entry, which says how many events it holds) and returns the
    /// pointer value sled keeps for it. The bytes are buffered: [`LogFiles::write_buffered`] writes them (the writer calls
    /// it before applying the batch that holds the pointers, so no reader finds a pointer
    /// before its bytes), and [`LogFiles::sync`] makes them durable.
    pub(crate) fn append(&self, entry: &[u8]) -> Result<Vec<u8>, StoreError> {
        let len = u32::try_from(entry.len())
            .map_err(|_| StoreError::InvalidArgument("a log entry over 4 GiB".into()))?;
        let count = crate::record::entry_count(entry)
            .and_then(|count| u32::try_from(count).ok())
            .ok_or_else(|| {
                StoreError::InvalidArgument("not a log entry that says its events".into())
            })?;
        let mut state = self.state();
        let full = state
            .active
            .as_ref()
            .is_none_or(|active| active.length + state.buffer.len() as u64 >= SEGMENT_BYTES);
        if full {
            self.write(&mut state)?;
            let segment = state.next;
            let path = self.path(segment);
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
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
            });
            state.dir_unsynced = true;
        }
        let active = state.active.as_ref().expect("opened above");
        let segment = active.segment;
        let offset = active.length + state.buffer.len() as u64;
        state.buffer.extend_from_slice(entry);
        // A compaction copies a whole log: it writes as it goes.
        if state.buffer.len() >= WRITE_ABOVE {
            self.write(&mut state)?;
        }
        Ok(Pointer {
            segment,
            offset,
            len,
            count,
            crc: crc32fast::hash(entry),
        }
        .encode())
    }

    /// Writes the buffered entries to their file, in one call.
    pub(crate) fn write_buffered(&self) -> Result<(), StoreError> {
        self.write(&mut self.state())
    }

    /// Forgets the buffered entries (their group failed before anything pointed at them).
    pub(crate) fn discard_buffered(&self) {
        self.state().buffer.clear();
    }

    fn write(&self, state: &mut State) -> Result<(), StoreError> {
        if state.buffer.is_empty() {
            return Ok(());
        }
        let Some(active) = state.active.as_mut() else {
            state.buffer.clear();
            return Ok(());
        };
        let segment = active.segment;
        let file = active.file.clone();
        if let Err(e) = (&*file).write_all(&state.buffer) {
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

    /// The bytes `pointer` points at, checked against its CRC; a missing file, a short read or
    /// a CRC that differs is corruption at `key`.
    pub(crate) fn read(&self, key: &[u8], pointer: &Pointer) -> Result<Vec<u8>, StoreError> {
        let file = self.reader(pointer.segment).map_err(|error| {
            StoreError::corrupt(key, format!("its segment file cannot be read: {error}"))
        })?;
        let mut bytes = vec![0; pointer.len as usize];
        file.read_exact_at(&mut bytes, pointer.offset)
            .map_err(|e| {
                StoreError::corrupt(
                    key,
                    format!(
                        "{} ends before its bytes {}..{}: {e}",
                        self.path(pointer.segment).display(),
                        pointer.offset,
                        pointer.end()
                    ),
                )
            })?;
        if crc32fast::hash(&bytes) != pointer.crc {
            return Err(StoreError::corrupt(
                key,
                format!(
                    "its bytes in {} do not match their checksum",
                    self.path(pointer.segment).display()
                ),
            ));
        }
        Ok(bytes)
    }

    /// The entry stored at `key` whose sled value is `value`: the value itself for an entry
    /// inline in sled (schema 5 and before), else the bytes it points at.
    pub(crate) fn entry<'a>(
        &self,
        key: &[u8],
        value: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        match Pointer::decode(value) {
            Some(pointer) => self.read(key, &pointer).map(Cow::Owned),
            None => Ok(Cow::Borrowed(value)),
        }
    }

    /// Whether the bytes `value` points at are whole (an inline entry always is).
    pub(crate) fn is_whole(&self, key: &[u8], value: &[u8]) -> bool {
        match Pointer::decode(value) {
            Some(pointer) => self.read(key, &pointer).is_ok(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_across_files_and_a_damaged_one_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path()).unwrap();
        let first = files.append(b"\x04\x01\0\0\0first entry").unwrap();
        let second = files.append(b"\x04\x02\0\0\0second").unwrap();
        files.sync().unwrap();
        let key = b"log/k".as_slice();
        assert_eq!(
            &*files.entry(key, &first).unwrap(),
            b"\x04\x01\0\0\0first entry"
        );
        assert_eq!(
            &*files.entry(key, &second).unwrap(),
            b"\x04\x02\0\0\0second"
        );
        assert_eq!(Pointer::decode(&second).unwrap().count, 2);
        // An inline entry is itself.
        assert_eq!(&*files.entry(key, b"\x04inline").unwrap(), b"\x04inline");
        drop(files);

        // A new run appends to a new file and reads the old ones.
        let files = LogFiles::open(dir.path()).unwrap();
        let third = files.append(b"\x04\x01\0\0\0third").unwrap();
        assert_eq!(Pointer::decode(&third).unwrap().segment, 1);
        // Buffered until written: nothing points at it before.
        assert!(!files.is_whole(key, &third));
        files.write_buffered().unwrap();
        assert_eq!(
            &*files.entry(key, &first).unwrap(),
            b"\x04\x01\0\0\0first entry"
        );
        assert_eq!(&*files.entry(key, &third).unwrap(), b"\x04\x01\0\0\0third");

        // Torn or changed bytes are corrupt, never misread.
        let segment = dir.path().join(LOG_DIR).join(format!("{:010}.seg", 0));
        let mut bytes = std::fs::read(&segment).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&segment, &bytes).unwrap();
        let error = files.entry(key, &second).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(!files.is_whole(key, &second));
        std::fs::write(&segment, &bytes[..5]).unwrap();
        assert!(!files.is_whole(key, &first));
        assert!(files.is_whole(key, &third));
    }
}
