//! What is stored always reads back, and one record that does not (a store written by an
//! older build, a bit flipped on disk) never hides the others.

mod common;

use common::{conn, message, request, started, temp_store};
use switchboard_core::{ConversationId, ErrorCode, EventKind, EventPayload, Sequence};
use switchboard_store::{ConversationQuery, MAX_VALUE_DEPTH, Store, StoreError, UNREADABLE_EVENT};

fn nested(depth: usize) -> serde_json::Value {
    let mut value = serde_json::json!(1);
    for _ in 0..depth {
        value = serde_json::Value::Array(vec![value]);
    }
    value
}

#[tokio::test]
async fn values_nested_past_the_limit_are_refused_and_those_within_it_read_back() {
    let (dir, store) = temp_store();
    let mut deep = message("m1", "c1", 1_000, "hi");
    if let EventPayload::Conversation(patch) = &mut deep.payload {
        patch.messages[0].data = Some(nested(MAX_VALUE_DEPTH + 1));
    }
    let error = store
        .append(request("lc", "livechat", vec![deep.clone()]))
        .await
        .expect_err("too deep");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.to_string().contains("levels deep"), "{error}");
    assert_eq!(store.head(), Sequence::ZERO);

    if let EventPayload::Conversation(patch) = &mut deep.payload {
        patch.messages[0].data = Some(nested(MAX_VALUE_DEPTH));
    }
    store
        .append(request("lc", "livechat", vec![deep]))
        .await
        .expect("at the limit");
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(events.len(), 1);
    let id = ConversationId::new(conn("lc"), "c1");
    assert!(store.get_conversation(&id).unwrap().is_some());
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_record_is_stood_in_for_and_the_rest_are_served() {
    let (dir, store) = temp_store();
    for chat in ["a", "b", "c"] {
        store
            .append(request(
                "lc",
                "livechat",
                vec![started(&format!("s-{chat}"), chat, 1_000)],
            ))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    {
        // Break entry 2 of the log and conversation b as an old build could have written them:
        // valid JSON nested deeper than serde_json reads back.
        let db = common::sled_open(dir.path());
        let key = [b"log/".as_slice(), &2u64.to_be_bytes()].concat();
        // A schema-2 entry (flat JSON), as the old build wrote it.
        let broken = format!(
            "{{\"sequence\":2,\"id\":\"0190-x\",\"connection\":\"lc\",\"vendor\":\"livechat\",\
             \"received_at\":1000,\"dedup_key\":\"s-b\",\"kind\":\"chat_started\",\
             \"vendor_event\":\"chat_started\",\"occurred_at\":1000,\
             \"payload\":{{\"vendor\":{{\"data\":{}}}}}}}",
            nested(200)
        );
        db.insert(&key, broken.as_bytes()).unwrap();
        let conversations: Vec<_> = db
            .scan_prefix(b"conv/")
            .map(|entry| entry.unwrap().0)
            .collect();
        let b = conversations
            .iter()
            .find(|k| k.ends_with(b"b"))
            .expect("conversation b");
        db.insert(b, format!("{{\"id\":{}}}", nested(200)).as_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let stand_in = &events[1];
    assert_eq!(stand_in.incoming.kind, EventKind::VendorEvent);
    assert_eq!(stand_in.incoming.vendor_event, UNREADABLE_EVENT);
    // Its head decoded: same connection and dedup key as the event it stands in for.
    assert_eq!(stand_in.connection, conn("lc"));
    assert_eq!(stand_in.incoming.dedup_key, "s-b");
    let EventPayload::Vendor { data, .. } = &stand_in.incoming.payload else {
        panic!("a vendor payload");
    };
    assert_eq!(data["sequence"], 2);
    assert_eq!(data["kind"], "chat_started");
    assert!(data["reason"].as_str().unwrap().contains("log/"), "{data}");

    // Listing skips the broken conversation and serves the others.
    let page = store
        .list_conversations(&ConversationQuery::default())
        .unwrap();
    let mut ids: Vec<_> = page
        .conversations
        .iter()
        .map(|c| c.id.external_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);
    // Getting the broken one names it.
    let error = store
        .get_conversation(&ConversationId::new(conn("lc"), "b"))
        .expect_err("unreadable");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    store.close().await.unwrap();
}

/// A message's record in the segment files damaged (a bad disk; bytes a power cut lost): the
/// message is left out of reads and the conversation's other messages are served, and a
/// redelivery of the message, or a later change to it, takes its place.
#[tokio::test]
async fn a_damaged_message_record_is_left_out_and_a_redelivery_takes_its_place() {
    let (dir, store) = temp_store();
    for key in ["m1", "m2"] {
        common::append_message(&store, key, 10).await;
    }
    let id = ConversationId::new(conn("lc"), "c1");
    let before = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(before.messages.len(), 2);
    store.close().await.unwrap();
    drop(store);
    {
        let db = common::sled_open(dir.path());
        let key = db
            .scan_prefix("msg/lc/c1")
            .map(|entry| entry.unwrap().0)
            .find(|key| key.ends_with(b"m2"))
            .expect("message m2");
        let (file, range) = common::record_of(dir.path(), &db, &key);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[range.start + 2] ^= 0xFF;
        std::fs::write(&file, &bytes).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let damaged = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(damaged.messages.keys().collect::<Vec<_>>(), ["m1"]);
    assert_eq!(damaged.messages["m1"], before.messages["m1"]);
    let page = store
        .list_conversations(&ConversationQuery::default())
        .unwrap();
    assert_eq!(page.conversations[0].messages.len(), 1);
    // The same message again, as a vendor's edit of it (a new dedup key), is stored over it.
    let mut edit = message("m2-edit", "c1", 20, "m2 edited");
    if let EventPayload::Conversation(patch) = &mut edit.payload {
        patch.messages[0].key = "m2".into();
    }
    store
        .append(request("lc", "livechat", vec![edit]))
        .await
        .unwrap();
    let after = store.get_conversation(&id).unwrap().unwrap();
    assert_eq!(after.messages.len(), 2);
    assert_eq!(after.messages["m2"].value.text, "m2 edited");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_binary_record_whose_payload_does_not_decode_is_stood_in_for() {
    let (dir, store) = temp_store();
    for chat in ["a", "b"] {
        store
            .append(request(
                "lc",
                "livechat",
                vec![started(&format!("s-{chat}"), chat, 1_000)],
            ))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    {
        // Damage the payload's JSON inside entry 1, keeping the record's length, and keep it
        // inside sled, where a schema-5 store held its entries (a segment file's checksum
        // would refuse the whole entry: see the next test).
        let db = common::sled_open(dir.path());
        let key = [b"log/".as_slice(), &1u64.to_be_bytes()].concat();
        let mut entry = common::entry_bytes(dir.path(), &db, &key);
        let at = entry
            .windows(b"{\"conversation\"".len())
            .position(|w| w == b"{\"conversation\"")
            .expect("the payload's JSON");
        entry[at] = b'!';
        db.insert(&key, entry).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].incoming.vendor_event, UNREADABLE_EVENT);
    assert_eq!(events[0].incoming.dedup_key, "s-a");
    assert_eq!(events[0].connection, conn("lc"));
    assert_eq!(events[1].incoming.dedup_key, "s-b");
    assert_eq!(events[1].incoming.kind, EventKind::ChatStarted);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_damaged_request_entry_stands_in_for_each_of_its_events() {
    let (dir, store) = temp_store();
    // One request of three events (one log entry, long enough to be compressed), then one more.
    let mut three = request(
        "lc",
        "livechat",
        vec![
            started("s-a", "a", 1_000),
            started("s-b", "b", 1_000),
            started("s-c", "c", 1_000),
        ],
    );
    three.raw = Some(format!("{{\"pad\":\"{}\"}}", "x".repeat(2_000)));
    store.append(three).await.unwrap();
    store
        .append(request("lc", "livechat", vec![started("s-d", "d", 1_000)]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    {
        // Zeros over the second half of the entry's frame in its segment file (the next
        // append is a group, and a frame, of its own).
        let db = common::sled_open(dir.path());
        let key = [b"log/".as_slice(), &1u64.to_be_bytes()].concat();
        let frame = common::segment_of(dir.path(), &db, &key);
        let mut bytes = std::fs::read(&frame.file).unwrap();
        let start = frame.offset as usize + frame.len / 2;
        bytes[start..frame.offset as usize + frame.len].fill(0);
        std::fs::write(&frame.file, bytes).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let events = store.read_events(Sequence::ZERO, 10).unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        events[..3]
            .iter()
            .all(|e| e.incoming.vendor_event == UNREADABLE_EVENT)
    );
    assert_eq!(events[3].incoming.dedup_key, "s-d");
    // Reading from the middle of the damaged entry keeps the places too.
    let from_two = store.read_events(Sequence(1), 2).unwrap();
    assert_eq!(
        from_two.iter().map(|e| e.sequence.0).collect::<Vec<_>>(),
        [2, 3]
    );
    store.close().await.unwrap();
}
