//! Builders shared by the store's integration tests.
#![allow(dead_code)] // reason: each test file uses a different subset of the builders

use switchboard_core::{
    ConnectionId, ConversationPatch, ConversationStatus, EventKind, EventPayload, IncomingEvent,
    Message, Role, Timestamp,
};
use switchboard_store::{AppendRequest, Store};

pub fn conn(id: &str) -> ConnectionId {
    ConnectionId::new(id).unwrap()
}

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap()
}

pub fn event(key: &str, kind: EventKind, at: i64, patch: ConversationPatch) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.to_owned(),
        kind,
        vendor_event: kind.as_str().to_owned(),
        occurred_at: ts(at),
        payload: EventPayload::Conversation(patch),
    }
}

pub fn started(key: &str, chat: &str, at: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(ts(at));
    event(key, EventKind::ChatStarted, at, patch)
}

pub fn message(key: &str, chat: &str, at: i64, text: &str) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.messages.push(Message {
        key: key.to_owned(),
        author_role: Role::Visitor,
        author_id: Some("visitor".into()),
        author_name: None,
        text: text.to_owned(),
        attachments: vec![],
        sent_at: ts(at),
        automatic: false,
        data: None,
    });
    event(key, EventKind::Message, at, patch)
}

pub fn ended(key: &str, chat: &str, at: i64) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Closed);
    patch.ended_at = Some(ts(at));
    patch.tags_added.push("done".into());
    event(key, EventKind::ChatEnded, at, patch)
}

pub fn request(connection: &str, vendor: &str, events: Vec<IncomingEvent>) -> AppendRequest {
    let mut request = AppendRequest::new(conn(connection), vendor, events);
    request.received_at = ts(1_700_000_000);
    request
}

/// The sled key of `dedup_key` of `connection` (schema 7): `dh/`, then the first 16 bytes of
/// the SHA-256 of the connection's length (u64 LE), the connection and the dedup key.
pub fn dedup_key(connection: &str, dedup_key: &str) -> Vec<u8> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update((connection.len() as u64).to_le_bytes());
    hash.update(connection);
    hash.update(dedup_key);
    [b"dh/".as_slice(), &hash.finalize()[..16]].concat()
}

/// sled opened on the store at `dir`, to read or damage its keys. A store closed a moment ago
/// may still hold sled's file lock while sled's own threads wind down (the store's open waits
/// for it too): this waits up to 10 s.
pub fn sled_open(dir: &std::path::Path) -> sled::Db {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("opening sled at {}: {e}", dir.display()),
        }
    }
}

/// A store opened in a fresh temporary directory; keep the directory alive as long as the store.
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Where the frame holding the log entry at `key` is in its segment file: the file, the
/// frame's offset and its length on disk (its 4-byte length included), and where the entry is
/// inside the decompressed frame. sled's value for the key is the pointer (schema 7: `0x08`,
/// then the file's number u32, the frame's offset u64, the entry's offset in the frame u32,
/// its length u32, the event count u32 and the CRC-32 u32, all little-endian); the file is
/// `<dir>/log/<number, 10 digits>.seg`; a frame is its length u32 then its bytes, a zstd frame
/// or the entries as they are.
///
/// The value of a key shared by consecutive entries of one frame (schema 8: `0x0A`, the
/// file's number u32, the frame's offset u64, the first entry's offset in the frame u32, then
/// per entry its length u32, event count u32 and CRC-32 u32) gives the first entry's.
pub fn segment_of(dir: &std::path::Path, db: &sled::Db, key: &[u8]) -> Frame {
    let pointer = db.get(key).unwrap().expect("the entry");
    let pointer = match pointer[0] {
        0x0A => pointer[..21].to_vec(),
        _ => {
            assert_eq!(pointer.len(), 29, "a pointer");
            assert_eq!(pointer[0], 0x08, "a pointer into a frame");
            pointer.to_vec()
        }
    };
    let u32_at = |at: usize| u32::from_le_bytes(pointer[at..at + 4].try_into().unwrap());
    let file = dir.join("log").join(format!("{:010}.seg", u32_at(1)));
    let offset = u64::from_le_bytes(pointer[5..13].try_into().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let stored = u32::from_le_bytes(
        bytes[offset as usize..offset as usize + 4]
            .try_into()
            .unwrap(),
    );
    Frame {
        file,
        offset,
        len: 4 + stored as usize,
        inner: u32_at(13) as usize,
        entry_len: u32_at(17) as usize,
    }
}

/// A frame of a segment file: see [`segment_of`].
pub struct Frame {
    pub file: std::path::PathBuf,
    pub offset: u64,
    pub len: usize,
    pub inner: usize,
    pub entry_len: usize,
}

/// The bytes of the log entry at `key`, read from its frame in its segment file.
pub fn entry_bytes(dir: &std::path::Path, db: &sled::Db, key: &[u8]) -> Vec<u8> {
    let frame = segment_of(dir, db, key);
    let bytes = std::fs::read(&frame.file).unwrap();
    let stored = &bytes[frame.offset as usize + 4..frame.offset as usize + frame.len];
    let entries = if stored.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        zstd::decode_all(stored).unwrap()
    } else {
        stored.to_vec()
    };
    entries[frame.inner..frame.inner + frame.entry_len].to_vec()
}

/// Where the record of the message at `key` is in its segment file: the file and the record's
/// byte range. sled's value for the key is the pointer (schema 8: `0x09`, then the file's
/// number u32, the record's offset u64, its length u32 and its CRC-32 u32, little-endian).
pub fn record_of(
    dir: &std::path::Path,
    db: &sled::Db,
    key: &[u8],
) -> (std::path::PathBuf, std::ops::Range<usize>) {
    let pointer = db.get(key).unwrap().expect("the message");
    assert_eq!((pointer.len(), pointer[0]), (21, 0x09), "a record pointer");
    let u32_at = |at: usize| u32::from_le_bytes(pointer[at..at + 4].try_into().unwrap());
    let file = dir.join("log").join(format!("{:010}.seg", u32_at(1)));
    let offset = u64::from_le_bytes(pointer[5..13].try_into().unwrap()) as usize;
    (file, offset..offset + u32_at(13) as usize)
}

/// The bytes of the message record at `key`, read from its segment file.
pub fn record_bytes(dir: &std::path::Path, db: &sled::Db, key: &[u8]) -> Vec<u8> {
    let (file, range) = record_of(dir, db, key);
    std::fs::read(file).unwrap()[range].to_vec()
}

/// Appends one webhook of one message, `key` (its text too), to chat `c1` on connection `lc`.
pub async fn append_message(store: &Store, key: &str, at: i64) -> switchboard_store::AppendReceipt {
    store
        .append(request("lc", "livechat", vec![message(key, "c1", at, key)]))
        .await
        .unwrap()
}

/// Copies `from` into `to` file by file: what a `kill -9` of the store's process would leave
/// on disk at this moment (what the process wrote is in the files; what it holds in memory is
/// not).
pub fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_image(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A [`crash_image`] of the open `store` in `dir`, taken now; then `store` is closed.
pub async fn crash_image_then_close(store: Store, dir: &std::path::Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    crash_image(dir, image.path());
    store.close().await.unwrap();
    image
}
