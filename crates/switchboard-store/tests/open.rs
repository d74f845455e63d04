//! Opening: corrupt or foreign directories are errors, never panics; the schema version is
//! checked.

mod common;

use common::{request, started};
use switchboard_core::{ErrorCode, Sequence};
use switchboard_store::{Store, StoreError};

#[test]
fn a_file_where_the_directory_should_be_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, b"not a directory").unwrap();
    let error = Store::open(&path).unwrap_err();
    assert_eq!(error.code(), ErrorCode::Internal);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot open the store at {}", path.display())),
        "{message}"
    );
    assert!(message.contains("--data-dir"), "{message}");
}

#[test]
fn a_directory_inside_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(Store::open(&file.join("store")).is_err());
}

/// Deterministic bytes that are not a sled file.
fn garbage(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn garbage_in_the_db_file_is_an_error() {
    for len in [7, 4096, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), garbage(len)).unwrap();
        let result = Store::open(dir.path());
        assert!(result.is_err(), "garbage of {len} bytes opened as a store");
    }
}

#[test]
fn garbage_in_the_conf_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), garbage(300)).unwrap();
    assert!(Store::open(dir.path()).is_err());
}

#[tokio::test]
async fn a_corrupted_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    // Overwrite the middle of the db file.
    let path = dir.path().join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len / 4..].copy_from_slice(&garbage(len - len / 4));
    std::fs::write(&path, bytes).unwrap();
    // sled may recover a prefix of its log (and then the store is intact but shorter) or
    // refuse; it must not panic, and whatever opens must be consistent.
    if let Ok(store) = Store::open(dir.path()) {
        let events = store.read_events(Sequence::ZERO, 10).unwrap();
        assert_eq!(events.len() as u64, store.head().0);
    }
}

#[tokio::test]
async fn an_unknown_schema_version_is_refused() {
    // 1 is the version before the log's flat encoding (a store written by an older build), 10
    // one from a newer build.
    for version in ["1", "10"] {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        {
            let db = common::sled_open(dir.path());
            db.insert("meta/schema_version", version).unwrap();
            db.flush().unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StoreError::SchemaMismatch { found, expected: 9, .. } if found == version)
        );
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        assert!(
            error
                .to_string()
                .contains(&format!("schema version {version}")),
            "{error}"
        );
    }
}

#[test]
fn a_foreign_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = common::sled_open(dir.path());
        db.insert("someone-else", "data").unwrap();
        db.flush().unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore { .. }), "{error:?}");
    assert_eq!(error.code(), ErrorCode::FailedPrecondition);
}

#[test]
fn a_new_store_records_its_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db = common::sled_open(dir.path());
    assert_eq!(
        db.get("meta/schema_version").unwrap().unwrap(),
        "9".as_bytes()
    );
    // Conversations are written through the head (nothing yet).
    assert_eq!(
        db.get("meta/projected").unwrap().unwrap(),
        0u64.to_be_bytes().as_slice()
    );
}

/// A newcomer's `--data-dir .` in a project folder: the store is not created among the
/// folder's files.
#[test]
fn a_non_empty_directory_without_a_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(error, StoreError::ForeignDirectory { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), ErrorCode::FailedPrecondition);
    let message = error.to_string();
    assert!(message.contains("`notes.txt`"), "{message}");
    assert!(message.contains("empty directory"), "{message}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["notes.txt", "src"], "nothing was created");
}

#[tokio::test]
async fn empty_directories_fresh_file_systems_and_existing_stores_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    std::fs::write(dir.path().join(".keep"), b"").unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(1));
}

/// A write that failed part-way (a full disk) can leave part of its batch: `meta/head` past
/// the log, or the log past `meta/head`. The store opens at the smaller, drops what the
/// failed group left (its log entries and dedup keys), and a redelivery of its events is
/// stored, not taken for a duplicate.
#[tokio::test]
async fn what_a_failed_group_left_is_dropped_at_open() {
    for case in ["head past the log", "log past the head"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for key in ["a", "b"] {
            common::append_message(&store, key, 10).await;
        }
        store.close().await.unwrap();
        drop(store);
        {
            let db = common::sled_open(dir.path());
            let dedup_c = common::dedup_key("lc", "c");
            // And its `meta/projected`, past the head.
            db.insert("meta/projected", &9u64.to_be_bytes()).unwrap();
            if case == "head past the log" {
                // Group 3 kept its head and a dedup key, lost its log entry.
                db.insert("meta/head", &3u64.to_be_bytes()).unwrap();
                db.insert(&dedup_c, &3u64.to_be_bytes()).unwrap();
            } else {
                // Group 2 kept its log entry and dedup key, lost its head.
                db.insert("meta/head", &1u64.to_be_bytes()).unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let kept = if case == "head past the log" { 2 } else { 1 };
        assert_eq!(store.head(), Sequence(kept), "{case}");
        assert_eq!(
            store.read_events(Sequence::ZERO, 10).unwrap().len() as u64,
            kept,
            "{case}"
        );
        // The lost events, redelivered, are stored under the next sequences.
        let lost = if case == "head past the log" {
            "c"
        } else {
            "b"
        };
        let receipt = common::append_message(&store, lost, 10).await;
        assert_eq!(receipt.appended, vec![Sequence(kept + 1)], "{case}");
        assert_eq!(receipt.duplicates, 0, "{case}");
        let event = store
            .event_by_dedup_key(&common::conn("lc"), lost)
            .unwrap()
            .unwrap();
        assert_eq!(event.sequence, Sequence(kept + 1), "{case}");
        let conversation = store
            .get_conversation(&switchboard_core::ConversationId::new(
                common::conn("lc"),
                "c1",
            ))
            .unwrap()
            .unwrap();
        assert!(conversation.messages.contains_key(lost), "{case}");
        store.close().await.unwrap();
    }
}

/// A write cut short may keep only some of its dedup keys, with the head, the log and
/// `meta/projected` all agreeing: nothing but the dedup keys shows it. A store that was not
/// closed cleanly (its `meta/open` mark still there) drops the dedup keys past its head at
/// the next open, so a redelivery of those events is stored. A clean close removes the mark.
#[tokio::test]
async fn dedup_keys_a_cut_short_write_left_are_dropped_after_an_unclean_end() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        common::append_message(&store, "a", 10).await;
        store.close().await.unwrap();
        drop(store);
        {
            let db = common::sled_open(dir.path());
            assert_eq!(
                db.get("meta/open").unwrap(),
                None,
                "a clean close clears it"
            );
            if !clean {
                // What a run that never closed left: its mark, and a cut-short group's dedup
                // key pointing past the head.
                db.insert("meta/open", &[][..]).unwrap();
                db.insert(common::dedup_key("lc", "b"), &2u64.to_be_bytes())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head(), Sequence(1));
        let receipt = common::append_message(&store, "b", 11).await;
        assert_eq!(receipt.appended, vec![Sequence(2)], "clean: {clean}");
        assert_eq!(receipt.duplicates, 0, "clean: {clean}");
        let event = store
            .event_by_dedup_key(&common::conn("lc"), "b")
            .unwrap()
            .unwrap();
        assert_eq!(event.incoming.dedup_key, "b");
        // A store dropped without a close (what a crash leaves) keeps its mark.
        drop(store);
        let db = common::sled_open(dir.path());
        assert_eq!(
            db.get("meta/open").unwrap().as_deref(),
            Some(&[][..]),
            "a store dropped without close keeps its mark"
        );
    }
}

/// The log's entries are in segment files, synced before sled; a power loss can still leave
/// a pointer on disk whose bytes are not (sled wrote its buffer on its own). After an unclean
/// end, such newest entries were never acknowledged: they are dropped and a redelivery is
/// stored. After a clean close the same damage is not a torn write: the entry keeps its
/// sequences, served as stand-ins.
#[tokio::test]
async fn a_torn_newest_entry_is_dropped_after_an_unclean_end_and_stood_in_for_after_a_clean_one() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for key in ["a", "b"] {
            common::append_message(&store, key, 10).await;
        }
        if clean {
            store.close().await.unwrap();
        }
        drop(store);
        {
            // Entry 2's bytes cut short in its file.
            let db = common::sled_open(dir.path());
            let frame = common::segment_of(
                dir.path(),
                &db,
                &[b"log/".as_slice(), &2u64.to_be_bytes()].concat(),
            );
            // The newest entry's frame is the last of its file (only the records of the
            // messages projected after it may follow: cut short too).
            let bytes = std::fs::read(&frame.file).unwrap();
            assert!(bytes.len() as u64 >= frame.offset + frame.len as u64);
            std::fs::write(&frame.file, &bytes[..frame.offset as usize + frame.len / 2]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let events = store.read_events(Sequence::ZERO, 10).unwrap();
        if clean {
            assert_eq!(store.head(), Sequence(2));
            assert_eq!(events.len(), 2);
            assert_eq!(events[0].incoming.dedup_key, "a");
            assert_eq!(
                events[1].incoming.vendor_event,
                switchboard_store::UNREADABLE_EVENT
            );
        } else {
            assert_eq!(store.head(), Sequence(1));
            assert_eq!(events.len(), 1);
            let receipt = common::append_message(&store, "b", 10).await;
            assert_eq!(receipt.appended, vec![Sequence(2)]);
            let events = store.read_events(Sequence::ZERO, 10).unwrap();
            assert_eq!(events[1].incoming.dedup_key, "b");
        }
        store.close().await.unwrap();
        drop(store);
        // Whatever the next open finds, the store opens and reads the same.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap().len(), 2);
        store.close().await.unwrap();
    }
}

/// The failed group may have kept only its `meta/projected`: the store opens, with its
/// conversations taken as written through the head.
#[tokio::test]
async fn a_projected_mark_past_the_head_is_brought_back_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    {
        let db = common::sled_open(dir.path());
        db.insert("meta/projected", &9u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(1));
    assert_eq!(store.conversation_count().unwrap(), 1);
    store.close().await.unwrap();
    drop(store);
    let db = common::sled_open(dir.path());
    assert_eq!(
        db.get("meta/projected").unwrap().unwrap(),
        1u64.to_be_bytes().as_slice()
    );
}

/// A live store's segment file is written with zeros ahead of its entries (an fdatasync then
/// commits no new file size); a clean close cuts them, and the entries read back after it.
#[tokio::test]
async fn a_clean_close_cuts_the_zeros_written_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for key in ["a", "b"] {
        common::append_message(&store, key, 10).await;
    }
    // One run, one file: the store's first.
    let file = dir.path().join("log").join(format!("{:010}.seg", 0));
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() >= 256 << 10, "{}", bytes.len());
    // Two small webhooks take a few hundred bytes: the rest is zeros.
    assert!(bytes[1 << 10..].iter().all(|&b| b == 0));
    store.close().await.unwrap();
    drop(store);

    let closed = std::fs::metadata(&file).unwrap().len();
    assert!(closed < 1 << 10, "{closed}");
    let last = {
        let db = common::sled_open(dir.path());
        common::segment_of(
            dir.path(),
            &db,
            &[b"log/".as_slice(), &2u64.to_be_bytes()].concat(),
        )
    };
    assert_eq!(last.file, file);
    // The messages' records written at the close may follow the last entry's frame.
    assert!(closed >= last.offset + last.len as u64, "{closed}");
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    let keys: Vec<&str> = events
        .iter()
        .map(|e| e.incoming.dedup_key.as_str())
        .collect();
    assert_eq!(keys, ["a", "b"]);
    store.close().await.unwrap();
}
