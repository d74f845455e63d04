//! Schema upgrades in place, and the moment a store is created: a store of the previous schema
//! opens and reads back as it was, an interrupted upgrade resumes, and a creation interrupted
//! before its schema key was on disk starts again instead of being refused.

mod common;

use common::{request, started};
use switchboard_core::{
    ConnectionId, Conversation, ConversationId, ConversationPatch, EventKind, EventPayload,
    IncomingEvent, Message, Role, Sequence, Timestamp,
};
use switchboard_store::Store;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap()
}

fn message(key: &str, text: &str, at: i64) -> Message {
    Message {
        key: key.into(),
        author_role: Role::Visitor,
        author_id: Some("v1".into()),
        author_name: None,
        text: text.into(),
        attachments: Vec::new(),
        sent_at: ts(at),
        automatic: false,
        data: None,
    }
}

/// A conversation of 3 messages merged from 4 events, as the core builds it in memory.
fn merged(external_id: &str) -> Conversation {
    let id = ConversationId::new(ConnectionId::new("lc").unwrap(), external_id);
    let mut conversation = Conversation::new(id, "livechat");
    let mut start = ConversationPatch::new(external_id);
    start.started_at = Some(ts(100));
    start.status = Some(switchboard_core::ConversationStatus::Open);
    conversation.apply(&start, ts(100), "s");
    for (i, text) in ["hi", "hello", "bye"].iter().enumerate() {
        let mut patch = ConversationPatch::new(external_id);
        patch
            .messages
            .push(message(&format!("m{i}"), text, 101 + i as i64));
        conversation.apply(&patch, ts(101 + i as i64), &format!("m{i}"));
    }
    conversation
}

/// The position a schema-2 index entry of `conversation` has (sort key descending, then the
/// escaped id with every byte inverted).
fn position(conversation: &Conversation) -> Vec<u8> {
    let at = conversation.started_at.unwrap().as_millis() as u64;
    let mut key = (u64::MAX - at).to_be_bytes().to_vec();
    let mut id = conversation.id.to_string().into_bytes();
    id.extend_from_slice(&[0, 1]);
    key.extend(id.into_iter().map(|b| !b));
    key
}

/// Writes a store of schema 2 by hand: a JSON log entry, a conversation stored whole (every
/// message and the dedup keys of its events in one record), its index entries and counters.
fn write_schema_2(dir: &std::path::Path, conversations: &[Conversation]) {
    let db = common::sled_open(dir);
    db.insert("meta/schema_version", "2").unwrap();
    let entry = serde_json::json!({
        "sequence": 1, "id": "0190-old", "connection": "lc", "vendor": "livechat",
        "received_at": 1_700_000_000_000_i64, "request_id": "req-1", "dedup_key": "s",
        "kind": "chat_started", "vendor_event": "chat_started", "occurred_at": 100_000,
        "payload": {"conversation": {"external_id": "c1", "started_at": 100_000}},
        "raw": "{\"event\":\"chat_started\"}"
    });
    db.insert(
        b"log/\0\0\0\0\0\0\0\x01",
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    db.insert("meta/head", &1u64.to_be_bytes()).unwrap();
    let n = conversations.len() as u64;
    for conversation in conversations {
        let key = format!("conv/lc/{}", conversation.id.external_id).into_bytes();
        db.insert(&key, serde_json::to_vec(conversation).unwrap())
            .unwrap();
        for family in [
            b"ix/all/".to_vec(),
            b"ix/conn/lc/".to_vec(),
            b"ix/status/open/".to_vec(),
        ] {
            let mut index = family;
            index.extend(position(conversation));
            db.insert(index, key.clone()).unwrap();
        }
        let mut vendor = b"ix/vendor/livechat".to_vec();
        vendor.extend_from_slice(&[0, 1]);
        vendor.extend(position(conversation));
        db.insert(vendor, key.clone()).unwrap();
    }
    let mut vendor_count = b"count/conv/vendor/livechat".to_vec();
    vendor_count.extend_from_slice(&[0, 1]);
    for count in [
        b"count/conv/all/".to_vec(),
        b"count/conv/conn/lc/".to_vec(),
        b"count/conv/status/open/".to_vec(),
        vendor_count,
    ] {
        db.insert(count, &n.to_be_bytes()).unwrap();
    }
    db.flush().unwrap();
}

fn schema_version(dir: &std::path::Path) -> String {
    let db = common::sled_open(dir);
    String::from_utf8(db.get("meta/schema_version").unwrap().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_schema_2_store_is_upgraded_in_place_and_reads_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let before = [merged("c1"), merged("c2")];
    write_schema_2(dir.path(), &before);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(1));
    // The old log entry still reads.
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, "0190-old");
    assert_eq!(
        events[0].raw.as_deref(),
        Some("{\"event\":\"chat_started\"}")
    );
    assert_eq!(events[0].incoming.kind, EventKind::ChatStarted);
    // Conversations read back whole: messages from their own keys, the event count from the
    // dedup keys the old record held.
    for old in &before {
        let mut expected = old.clone();
        expected.event_keys.clear();
        let read = store.get_conversation(&old.id).unwrap().unwrap();
        assert_eq!(read, expected);
        assert_eq!(read.event_count, 4);
        assert_eq!(read.messages.len(), 3);
    }
    let listed = store
        .list_conversations(&switchboard_store::ConversationQuery::default())
        .unwrap();
    assert_eq!(listed.conversations.len(), 2);
    assert!(listed.conversations.iter().all(|c| c.messages.len() == 3));
    // Listing by vendor scans the vendor's connections, named during the upgrade.
    let by_vendor = store
        .list_conversations(&switchboard_store::ConversationQuery {
            vendors: vec!["livechat".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_vendor.conversations.len(), 2);
    assert_eq!(store.conversation_count().unwrap(), 2);

    // New events merge into an upgraded conversation and are appended after the old log.
    let mut patch = ConversationPatch::new("c1");
    patch.messages.push(message("m9", "again", 200));
    let receipt = store
        .append(request(
            "lc",
            "livechat",
            vec![IncomingEvent {
                dedup_key: "m9".into(),
                kind: EventKind::Message,
                vendor_event: "incoming_event".into(),
                occurred_at: ts(200),
                payload: EventPayload::Conversation(patch),
            }],
        ))
        .await
        .unwrap();
    assert_eq!(receipt.appended, vec![Sequence(2)]);
    let c1 = store.get_conversation(&before[0].id).unwrap().unwrap();
    assert_eq!(c1.messages.len(), 4);
    assert_eq!(c1.event_count, 5);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(schema_version(dir.path()), "9");
    let db = common::sled_open(dir.path());
    for gone in [
        "ix/all/",
        "ix/vendor/",
        "count/conv/all/",
        "count/conv/vendor/",
    ] {
        assert_eq!(db.scan_prefix(gone).count(), 0, "{gone} dropped");
    }
}

/// A store of one request: chat `c1` on `lc` started at 100, then `messages` (key, text) at
/// 101, 102...; closed. Returns it and the conversation as it read before closing.
async fn one_chat(messages: &[(&str, &str)]) -> (tempfile::TempDir, Conversation) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut events = vec![started("s1", "c1", 100)];
    for (at, (key, text)) in (101..).zip(messages) {
        events.push(common::message(key, "c1", at, text));
    }
    store
        .append(request("lc", "livechat", events))
        .await
        .unwrap();
    let id = ConversationId::new(ConnectionId::new("lc").unwrap(), "c1");
    let before = store.get_conversation(&id).unwrap().unwrap();
    store.close().await.unwrap();
    (dir, before)
}

/// A schema-3 store (conversations written with every group, no `meta/projected`) becomes
/// schema 4 with its conversations written through its head, and opens as it was.
#[tokio::test]
async fn a_schema_3_store_is_upgraded_and_its_conversations_are_through_its_head() {
    let (dir, before) = one_chat(&[("m1", "hi")]).await;
    {
        // What a schema-3 build left: the same keys, without `meta/projected`.
        let db = common::sled_open(dir.path());
        db.insert("meta/schema_version", "3").unwrap();
        db.remove("meta/projected").unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(2));
    assert_eq!(store.get_conversation(&before.id).unwrap(), Some(before));
    assert_eq!(store.conversation_count().unwrap(), 1);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(schema_version(dir.path()), "9");
    let db = common::sled_open(dir.path());
    assert_eq!(
        db.get("meta/projected").unwrap().unwrap(),
        2u64.to_be_bytes().as_slice()
    );
}

/// A schema-8 store that did not close cleanly (its sled file holds every acknowledged group:
/// schema 8 flushed it before answering) has no journal: it opens whole, replaying nothing,
/// becomes schema 9, and its journal starts with the upgraded run (a crash image taken after
/// one more append, with sled's flush an hour away, opens with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_8_store_left_open_is_upgraded_and_its_journal_starts_with_the_next_run() {
    let (dir, before) = one_chat(&[("m1", "hi")]).await;
    {
        // What a schema-8 build left when killed: no `meta/journal`, the open mark.
        let db = common::sled_open(dir.path());
        db.insert("meta/schema_version", "8").unwrap();
        db.remove("meta/journal").unwrap();
        db.insert("meta/open", "").unwrap();
        db.flush().unwrap();
    }
    let options = switchboard_store::StoreOptions {
        sled_flush_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    assert_eq!(store.head(), Sequence(2));
    assert_eq!(
        store.get_conversation(&before.id).unwrap().as_ref(),
        Some(&before)
    );
    store
        .append(request(
            "lc",
            "livechat",
            vec![common::message("m2", "c1", 103, "again")],
        ))
        .await
        .unwrap();
    let image = common::crash_image_then_close(store, dir.path()).await;
    assert_eq!(schema_version(dir.path()), "9");
    let store = Store::open(image.path()).unwrap();
    assert_eq!(store.head(), Sequence(3));
    let after = store.get_conversation(&before.id).unwrap().unwrap();
    assert_eq!(after.messages["m2"].value.text, "again");
    store.close().await.unwrap();
}

/// A schema-4 store (messages as JSON) becomes schema 5 without a rewrite: its JSON messages
/// read as they were, beside the binary records written after the upgrade.
#[tokio::test]
async fn a_schema_4_store_keeps_its_json_messages_readable_beside_new_binary_ones() {
    let (dir, before) = one_chat(&[("m1", "hi"), ("m2", "how are you?")]).await;
    assert_eq!(before.messages.len(), 2);
    let message_keys = |db: &sled::Db| -> Vec<(Vec<u8>, Vec<u8>)> {
        db.scan_prefix("msg/lc/c1")
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key.to_vec(), value.to_vec())
            })
            .collect()
    };
    {
        // What a schema-4 build wrote: each message as the JSON of its register.
        let db = common::sled_open(dir.path());
        let stored = message_keys(&db);
        assert_eq!(stored.len(), 2);
        for (key, value) in stored {
            assert_eq!(value[0], 0x09, "a pointer to its record");
            let message_key = String::from_utf8(key[key.len() - 2..].to_vec()).unwrap();
            db.insert(
                &key,
                serde_json::to_vec(&before.messages[&message_key]).unwrap(),
            )
            .unwrap();
        }
        db.insert("meta/schema_version", "4").unwrap();
        db.flush().unwrap();
    }
    chat_reads_as_before_and_takes_m3(dir.path(), &before).await;
    let db = common::sled_open(dir.path());
    let first_bytes: Vec<u8> = message_keys(&db)
        .iter()
        .map(|(_, value)| value[0])
        .collect();
    assert_eq!(first_bytes, vec![b'{', b'{', 0x09]);
}

/// Opens the store in `dir` (upgrading it): the chat of [`one_chat`] reads as `before`, and
/// takes a third message, `m3`, beside its others. Closed again, at schema 9. Returns the chat.
async fn chat_reads_as_before_and_takes_m3(
    dir: &std::path::Path,
    before: &Conversation,
) -> Conversation {
    let store = Store::open(dir).unwrap();
    assert_eq!(
        store.get_conversation(&before.id).unwrap().as_ref(),
        Some(before)
    );
    store
        .append(request(
            "lc",
            "livechat",
            vec![common::message("m3", "c1", 103, "fine")],
        ))
        .await
        .unwrap();
    let after = store.get_conversation(&before.id).unwrap().unwrap();
    assert_eq!(after.messages.len(), 3);
    for (key, message) in &before.messages {
        assert_eq!(after.messages[key], *message);
    }
    assert_eq!(after.messages["m3"].value.text, "fine");
    store.close().await.unwrap();
    drop(store);
    assert_eq!(schema_version(dir), "9");
    after
}

/// A schema-7 store keeps each message's record inside sled: they read as they were after the
/// upgrade, a new message's record goes to the segment files, and `compact` moves the old
/// ones there too.
#[tokio::test]
async fn a_schema_7_store_reads_its_messages_inside_sled_and_compact_moves_them_to_files() {
    let (dir, before) = one_chat(&[("m1", "hi"), ("m2", &"how are you? ".repeat(60))]).await;
    let first_bytes = |dir: &std::path::Path| -> Vec<u8> {
        let db = common::sled_open(dir);
        db.scan_prefix("msg/lc/c1")
            .map(|entry| entry.unwrap().1[0])
            .collect()
    };
    {
        // What a schema-7 build wrote: each record inside sled (the long one compressed).
        let db = common::sled_open(dir.path());
        let keys: Vec<Vec<u8>> = db
            .scan_prefix("msg/lc/c1")
            .map(|entry| entry.unwrap().0.to_vec())
            .collect();
        assert_eq!(keys.len(), 2);
        for key in keys {
            let record = common::record_bytes(dir.path(), &db, &key);
            db.insert(&key, record).unwrap();
        }
        db.insert("meta/schema_version", "7").unwrap();
        db.flush().unwrap();
    }
    assert_eq!(first_bytes(dir.path()), vec![0x05, 0x28]);
    let after = chat_reads_as_before_and_takes_m3(dir.path(), &before).await;
    assert_eq!(first_bytes(dir.path()), vec![0x05, 0x28, 0x09]);

    Store::compact(dir.path()).unwrap();
    assert_eq!(first_bytes(dir.path()), vec![0x09, 0x09, 0x09]);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_conversation(&before.id).unwrap(), Some(after));
    store.close().await.unwrap();
}

/// A store of two one-message webhooks, `a` and `b`, each with the raw body `raw(key)`,
/// closed; and its events.
async fn two_messages(
    raw: impl Fn(&str) -> String,
) -> (tempfile::TempDir, Vec<switchboard_core::Event>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for key in ["a", "b"] {
        let mut request = request("lc", "livechat", vec![common::message(key, "c1", 10, key)]);
        request.raw = Some(raw(key));
        store.append(request).await.unwrap();
    }
    let before = store.read_events(Sequence::ZERO, 10).unwrap();
    store.close().await.unwrap();
    (dir, before)
}

/// Opens the upgraded store at `dir`, checks that it reads `before`, appends a third message
/// `c`, and returns the open store and its three events.
async fn reads_as_before_and_takes_one_more(
    dir: &std::path::Path,
    before: &[switchboard_core::Event],
) -> (Store, Vec<switchboard_core::Event>) {
    let store = Store::open(dir).unwrap();
    assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap(), before);
    common::append_message(&store, "c", 11).await;
    let all = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(all.len(), 3);
    (store, all)
}

/// A schema-5 store keeps its log entries inside sled: they read as they were after the
/// upgrade, new entries go to segment files, and `compact` moves the old ones out too.
#[tokio::test]
async fn a_schema_5_store_reads_its_entries_inside_sled_and_compact_moves_them_to_files() {
    let (dir, before) = two_messages(|key| format!("{{\"body\":\"{key}\"}}")).await;
    {
        // What a schema-5 build wrote: each entry inside sled, no segment files.
        let db = common::sled_open(dir.path());
        for sequence in [1u64, 2] {
            let key = [b"log/".as_slice(), &sequence.to_be_bytes()].concat();
            let entry = common::entry_bytes(dir.path(), &db, &key);
            db.insert(&key, entry).unwrap();
        }
        db.insert("meta/schema_version", "5").unwrap();
        db.flush().unwrap();
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    }
    let (store, all) = reads_as_before_and_takes_one_more(dir.path(), &before).await;
    store.close().await.unwrap();
    drop(store);
    assert_eq!(schema_version(dir.path()), "9");
    let first_bytes = |dir: &std::path::Path| -> Vec<u8> {
        let db = common::sled_open(dir);
        db.scan_prefix("log/")
            .map(|entry| entry.unwrap().1[0])
            .collect()
    };
    assert_eq!(first_bytes(dir.path()), vec![0x04, 0x04, 0x08]);

    Store::compact(dir.path()).unwrap();
    // The three entries in one frame, under one key.
    assert_eq!(first_bytes(dir.path()), vec![0x0A]);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap(), all);
    store.close().await.unwrap();
}

/// A schema-6 store keeps each log entry compressed on its own in its segment files: they
/// read as they were after the upgrade, new entries go into frames, and `compact` rewrites
/// the old ones into frames too. Its dedup keys, text, are moved to hashed keys (resuming an
/// interrupted move) and still tell duplicates.
#[tokio::test]
async fn a_schema_6_store_reads_its_entries_on_their_own_keeps_its_dedup_keys_and_compact_frames_them()
 {
    let (dir, before) = two_messages(|key| format!("{{\"body\":\"{}\"}}", key.repeat(1_000))).await;
    {
        // What a schema-6 build wrote: each entry's body compressed on its own (above 400
        // bytes), the entries one after the other in a segment file, a 25-byte pointer each.
        let db = common::sled_open(dir.path());
        let mut file = Vec::new();
        for sequence in [1u64, 2] {
            let key = [b"log/".as_slice(), &sequence.to_be_bytes()].concat();
            let entry = common::entry_bytes(dir.path(), &db, &key);
            let body = zstd::bulk::compress(&entry[5..], 1).unwrap();
            assert!(body.len() < entry.len() - 5);
            let stored = [&entry[..5], body.as_slice()].concat();
            let mut pointer = vec![0x07];
            pointer.extend_from_slice(&7u32.to_le_bytes());
            pointer.extend_from_slice(&(file.len() as u64).to_le_bytes());
            pointer.extend_from_slice(&(stored.len() as u32).to_le_bytes());
            pointer.extend_from_slice(&1u32.to_le_bytes());
            pointer.extend_from_slice(&crc32(&stored).to_le_bytes());
            file.extend_from_slice(&stored);
            db.insert(&key, pointer).unwrap();
        }
        // Schema 6's dedup keys were the connection and the key as text; an upgrade
        // interrupted after its first batch left `b`'s moved already.
        let hashed = common::dedup_key("lc", "a");
        let sequence = db.remove(&hashed).unwrap().expect("a's dedup key");
        db.insert("dedup/lc/a", sequence).unwrap();
        db.insert("meta/schema_version", "6").unwrap();
        db.flush().unwrap();
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("log/0000000007.seg"), file).unwrap();
    }
    let (store, all) = reads_as_before_and_takes_one_more(dir.path(), &before).await;
    // Both old dedup keys still say what was stored.
    for key in ["a", "b"] {
        let mut again = request("lc", "livechat", vec![common::message(key, "c1", 10, key)]);
        again.raw = Some("{}".into());
        let receipt = store.append(again).await.unwrap();
        assert_eq!(
            (receipt.duplicates, receipt.appended.len()),
            (1, 0),
            "{key}"
        );
    }
    store.close().await.unwrap();
    drop(store);
    assert_eq!(schema_version(dir.path()), "9");
    {
        let db = common::sled_open(dir.path());
        assert_eq!(db.scan_prefix("dedup/").count(), 0, "every text key moved");
        assert_eq!(db.scan_prefix("dh/").count(), 3);
    }
    let first_bytes = |dir: &std::path::Path| -> Vec<u8> {
        let db = common::sled_open(dir);
        db.scan_prefix("log/")
            .map(|entry| entry.unwrap().1[0])
            .collect()
    };
    assert_eq!(first_bytes(dir.path()), vec![0x07, 0x07, 0x08]);
    // The new entry went to a new file, after the old one.
    assert!(dir.path().join("log/0000000008.seg").exists());

    Store::compact(dir.path()).unwrap();
    // The three entries in one frame, under one key.
    assert_eq!(first_bytes(dir.path()), vec![0x0A]);
    {
        // Compacted into one frame, each entry stored as it is inside it.
        let db = common::sled_open(dir.path());
        let key = [b"log/".as_slice(), &1u64.to_be_bytes()].concat();
        let entry = common::entry_bytes(dir.path(), &db, &key);
        assert!(String::from_utf8_lossy(&entry).contains(&"a".repeat(1_000)));
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_events(Sequence::ZERO, 10).unwrap(), all);
    store.close().await.unwrap();
}

/// CRC-32 (IEEE), as the pointers hold it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn an_interrupted_upgrade_resumes_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = [merged("c1"), merged("c2")];
    write_schema_2(dir.path(), &before);
    {
        // What a crash after the first batch leaves: c1 already split, c2 not, still schema 2.
        let db = common::sled_open(dir.path());
        let mut header = before[0].clone();
        for (key, message) in &header.messages {
            let mut message_key = b"msg/lc/c1".to_vec();
            message_key.extend_from_slice(&[0, 1]);
            message_key.extend_from_slice(key.as_bytes());
            db.insert(message_key, serde_json::to_vec(message).unwrap())
                .unwrap();
        }
        header.messages.clear();
        header.event_keys.clear();
        header.event_count = 4;
        db.insert("conv/lc/c1", serde_json::to_vec(&header).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    for old in &before {
        let read = store.get_conversation(&old.id).unwrap().unwrap();
        assert_eq!(read.messages, old.messages, "{}", old.id);
        assert_eq!(read.event_count, 4, "{}", old.id);
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_creation_interrupted_before_its_schema_key_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    // What a crash between sled creating its files and the schema key reaching the disk
    // leaves: the marker, and sled files without data (here: garbage).
    std::fs::write(dir.path().join(".switchboard-creating"), b"").unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    std::fs::write(dir.path().join("conf"), b"garbage").unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"not sled's").unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence::ZERO);
    store
        .append(request("lc", "livechat", vec![started("s", "c1", 10)]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    assert!(!dir.path().join(".switchboard-creating").exists());
    assert!(
        dir.path().join("keep.txt").exists(),
        "only sled's files are removed"
    );
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Sequence(1));
    store.close().await.unwrap();
}

#[test]
fn a_new_store_leaves_no_creation_marker_and_an_existing_one_is_never_wiped() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    assert!(!dir.path().join(".switchboard-creating").exists());
    // An existing store without a marker whose db reads nothing is corruption, not a creation.
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    assert!(Store::open(dir.path()).is_err());
}
