//! Tests of the two stages together.

use switchboard_core::{
    ConversationPatch, ConversationStatus, EventKind, IncomingEvent, Timestamp,
};

use super::*;
use crate::query;

struct Stages {
    writer: Writer,
    flusher: Flusher,
}

impl Stages {
    /// Both stages, one after the other, for one group.
    fn commit(&mut self, commands: Vec<Command>) {
        if let Some(staged) = self.writer.stage(commands) {
            self.flusher.make_durable(vec![staged]);
        }
    }
}

fn writer(dir: &Path) -> (Stages, watch::Receiver<Sequence>) {
    // Conversations written with every group: most tests read them from the tree.
    writer_with(
        dir,
        StoreOptions {
            projection_interval: std::time::Duration::ZERO,
            sled_flush_interval: std::time::Duration::ZERO,
            ..StoreOptions::default()
        },
    )
}

fn writer_with(dir: &Path, options: StoreOptions) -> (Stages, watch::Receiver<Sequence>) {
    let options_sled_interval = options.sled_flush_interval;
    let db = sled::Config::new().path(dir).open().unwrap();
    let files = DurableFiles::open(dir, true).unwrap();
    let (head_tx, head) = watch::channel(Sequence::ZERO);
    let failed = Failure::default();
    let projection = Arc::new(Projection::new(0));
    let log = Arc::new(LogFiles::open(dir).unwrap());
    let writer = Writer::new(
        db.clone(),
        log.clone(),
        options,
        0,
        0,
        failed.clone(),
        projection.clone(),
    )
    .unwrap();
    let flusher = Flusher {
        db,
        log,
        files,
        head: 0,
        head_tx: Arc::new(head_tx),
        failed,
        tail: Arc::new(TailCache::new(16)),
        projection,
        sled_interval: options_sled_interval,
        sled_flushed: Instant::now(),
        sled_dirty: false,
    };
    (Stages { writer, flusher }, head)
}

fn event(key: &str, status: ConversationStatus) -> IncomingEvent {
    let mut patch = ConversationPatch::new("c1");
    patch.status = Some(status);
    IncomingEvent {
        dedup_key: key.into(),
        kind: EventKind::ChatUpdated,
        vendor_event: "x".into(),
        occurred_at: Timestamp::from_secs(10).unwrap(),
        payload: EventPayload::Conversation(patch),
    }
}

fn append(
    events: Vec<IncomingEvent>,
) -> (
    Command,
    oneshot::Receiver<Result<AppendReceipt, StoreError>>,
) {
    let (reply, answer) = oneshot::channel();
    let request = AppendRequest::new(ConnectionId::new("lc").unwrap(), "livechat", events);
    (
        Command::Append {
            request,
            prepared: None,
            reply,
        },
        answer,
    )
}

#[test]
fn one_group_dedups_across_its_requests_and_sees_its_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer(dir.path());
    let (first, first_answer) = append(vec![event("a", ConversationStatus::Open)]);
    let (second, second_answer) = append(vec![
        event("a", ConversationStatus::Open),
        event("b", ConversationStatus::Closed),
    ]);
    stages.commit(vec![first, second]);

    let first = first_answer.blocking_recv().unwrap().unwrap();
    assert_eq!(first.appended, vec![Sequence(1)]);
    let second = second_answer.blocking_recv().unwrap().unwrap();
    assert_eq!(second.appended, vec![Sequence(2)]);
    assert_eq!(second.duplicates, 1);
    assert_eq!(*head.borrow(), Sequence(2));

    // Both events folded into one conversation, indexed once, under its final status.
    let key = keys::conversation_key(&ConversationId::new(ConnectionId::new("lc").unwrap(), "c1"));
    let conversation = crate::header::load_header(&stages.writer.db, &key)
        .unwrap()
        .unwrap();
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(conversation.event_count, 2);
    assert_eq!(query::conversation_count(&stages.writer.db).unwrap(), 1);
    assert_eq!(
        stages
            .writer
            .db
            .scan_prefix(IndexFamily::Connection(&ConnectionId::new("lc").unwrap()).prefix())
            .count(),
        1
    );
    let open = IndexFamily::Status(ConversationStatus::Open);
    let closed = IndexFamily::Status(ConversationStatus::Closed);
    assert_eq!(stages.writer.db.scan_prefix(open.prefix()).count(), 0);
    assert_eq!(stages.writer.db.scan_prefix(closed.prefix()).count(), 1);
    assert_eq!(stages.writer.db.get(open.count_key()).unwrap(), None);
}

#[test]
fn conversations_are_held_over_groups_and_written_once_when_a_reader_wants_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer_with(
        dir.path(),
        StoreOptions {
            projection_interval: std::time::Duration::from_secs(3600),
            ..StoreOptions::default()
        },
    );
    let projection = stages.flusher.projection.clone();
    let key = keys::conversation_key(&ConversationId::new(ConnectionId::new("lc").unwrap(), "c1"));
    let (first, first_answer) = append(vec![event("a", ConversationStatus::Open)]);
    stages.commit(vec![first]);
    let (second, second_answer) = append(vec![event("b", ConversationStatus::Closed)]);
    stages.commit(vec![second]);
    // Both appends are answered and durable in the log, the conversation is not written yet.
    assert_eq!(
        first_answer.blocking_recv().unwrap().unwrap().appended,
        vec![Sequence(1)]
    );
    assert_eq!(
        second_answer.blocking_recv().unwrap().unwrap().appended,
        vec![Sequence(2)]
    );
    assert_eq!(*head.borrow(), Sequence(2));
    assert_eq!(stages.writer.db.get(&key).unwrap(), None);
    assert_eq!(query::conversation_count(&stages.writer.db).unwrap(), 0);
    assert_eq!(projection.durable(), 0);
    assert!(projection.is_dirty());

    // A reader asks for the conversations through the head: the next group writes them,
    // both events folded in, with `meta/projected`, and the flusher says so once durable.
    projection.want(2);
    stages.commit(vec![Command::Project]);
    let conversation = crate::header::load_header(&stages.writer.db, &key)
        .unwrap()
        .unwrap();
    assert_eq!(conversation.status, ConversationStatus::Closed);
    assert_eq!(conversation.event_count, 2);
    assert_eq!(query::conversation_count(&stages.writer.db).unwrap(), 1);
    assert_eq!(
        stages
            .writer
            .db
            .get(keys::PROJECTED_KEY)
            .unwrap()
            .as_deref(),
        Some(&keys::be(2)[..])
    );
    assert_eq!(projection.durable(), 2);
    assert!(!projection.is_dirty());
}

#[test]
fn a_failed_writer_refuses_every_write_and_keeps_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer(dir.path());
    stages
        .writer
        .failed
        .set("fdatasync: Input/output error".into());
    let (command, answer) = append(vec![event("a", ConversationStatus::Open)]);
    let (reply, sync_answer) = oneshot::channel();
    let sync_error = Command::SyncError {
        connection: ConnectionId::new("lc").unwrap(),
        message: "x".into(),
        reply,
    };
    stages.commit(vec![command, sync_error]);
    let error = answer.blocking_recv().unwrap().unwrap_err();
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert_eq!(error.code(), switchboard_core::ErrorCode::Unavailable);
    assert!(sync_answer.blocking_recv().unwrap().is_err());
    assert_eq!(*head.borrow(), Sequence::ZERO);
    assert_eq!(stages.writer.db.scan_prefix(keys::LOG_PREFIX).count(), 0);
}

#[test]
fn an_unreadable_record_fails_the_group_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer(dir.path());
    let key = keys::conversation_key(&ConversationId::new(ConnectionId::new("lc").unwrap(), "c1"));
    stages.writer.db.insert(&key, &b"not json"[..]).unwrap();
    let mut other = event("other", ConversationStatus::Open);
    if let EventPayload::Conversation(patch) = &mut other.payload {
        patch.external_id = "c2".into();
    }
    let (good, good_answer) = append(vec![other]);
    let (bad, bad_answer) = append(vec![event("a", ConversationStatus::Open)]);
    stages.commit(vec![good, bad]);
    for answer in [good_answer, bad_answer] {
        let error = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Commit(_)), "{error:?}");
    }
    assert_eq!(*head.borrow(), Sequence::ZERO);
    assert_eq!(stages.writer.head, 0);
    assert_eq!(stages.writer.db.scan_prefix(keys::LOG_PREFIX).count(), 0);
    // Nothing was written, so the writer carries on.
    assert!(stages.writer.failed.get().is_none());
}

#[test]
fn staged_groups_are_answered_only_by_the_flush_and_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer(dir.path());
    let (first, mut first_answer) = append(vec![event("a", ConversationStatus::Open)]);
    let (second, mut second_answer) = append(vec![event("b", ConversationStatus::Closed)]);
    let staged_first = stages.writer.stage(vec![first]).unwrap();
    // The second group is prepared over the first one's writes, before any flush.
    let staged_second = stages.writer.stage(vec![second]).unwrap();
    assert_eq!(stages.writer.head, 2);
    assert!(
        first_answer.try_recv().is_err(),
        "answered before the flush"
    );
    assert!(
        second_answer.try_recv().is_err(),
        "answered before the flush"
    );
    assert_eq!(*head.borrow(), Sequence::ZERO);

    stages
        .flusher
        .make_durable(vec![staged_first, staged_second]);
    assert_eq!(
        first_answer.try_recv().unwrap().unwrap().appended,
        vec![Sequence(1)]
    );
    assert_eq!(
        second_answer.try_recv().unwrap().unwrap().appended,
        vec![Sequence(2)]
    );
    assert_eq!(*head.borrow(), Sequence(2));
}

#[test]
fn a_failed_flush_refuses_every_group_waiting_for_it_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, head) = writer(dir.path());
    let (first, first_answer) = append(vec![event("a", ConversationStatus::Open)]);
    let (second, second_answer) = append(vec![event("b", ConversationStatus::Open)]);
    let staged_first = stages.writer.stage(vec![first]).unwrap();
    let staged_second = stages.writer.stage(vec![second]).unwrap();
    // As if the flush of the first failed: the flusher records it before answering.
    stages
        .flusher
        .failed
        .set("fdatasync: Input/output error".into());
    stages.flusher.make_durable(vec![staged_first]);
    stages.flusher.make_durable(vec![staged_second]);
    for answer in [first_answer, second_answer] {
        let error = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    }
    assert_eq!(*head.borrow(), Sequence::ZERO);
    // The writer refuses from now on without touching sled.
    let (third, third_answer) = append(vec![event("c", ConversationStatus::Open)]);
    assert!(stages.writer.stage(vec![third]).is_none());
    let error = third_answer.blocking_recv().unwrap().unwrap_err();
    assert!(error.to_string().contains("Input/output error"), "{error}");
}

/// Two erasures in one group whose events share a `log/` key: the second starts from the
/// entries the first rewrote, so both hold (rewriting from the tree would bring the first
/// person's text back).
#[test]
fn two_erasures_of_one_group_both_hold_in_the_entries_they_share() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stages, _head) = writer(dir.path());
    let connection = ConnectionId::new("lc").unwrap();
    let said = |chat: &str| {
        let mut patch = ConversationPatch::new(chat);
        patch.messages.push(Message {
            key: "m".into(),
            author_role: switchboard_core::Role::Visitor,
            author_id: Some(format!("v-{chat}")),
            author_name: None,
            text: format!("secret of {chat}"),
            attachments: vec![],
            sent_at: Timestamp::from_secs(10).unwrap(),
            automatic: false,
            data: None,
        });
        IncomingEvent {
            dedup_key: format!("k-{chat}"),
            kind: EventKind::Message,
            vendor_event: "x".into(),
            occurred_at: Timestamp::from_secs(10).unwrap(),
            payload: EventPayload::Conversation(patch),
        }
    };
    let (a, _) = append(vec![said("ca")]);
    let (b, _) = append(vec![said("cb")]);
    stages.commit(vec![a, b]);
    let log_values = |stages: &Stages| -> Vec<Vec<u8>> {
        stages
            .writer
            .db
            .scan_prefix(keys::LOG_PREFIX)
            .map(|entry| entry.unwrap().1.to_vec())
            .collect()
    };
    assert_eq!(
        log_values(&stages).len(),
        1,
        "one key for the group's two entries"
    );

    let erase = |chat: &str, sequence: u64| {
        let plan = crate::ErasurePlan {
            contact: chat.into(),
            conversations: vec![ConversationId::new(connection.clone(), chat)],
            tickets: vec![],
            events: vec![Sequence(sequence)],
            at: Timestamp::from_secs(20).unwrap(),
        };
        let (reply, answer) = oneshot::channel();
        let command = Command::Erase {
            record: Box::new(plan.record()),
            plan: Box::new(plan),
            reply,
        };
        (command, answer)
    };
    let (first, first_answer) = erase("ca", 1);
    let (second, second_answer) = erase("cb", 2);
    // sled flushed with every group here: the erasure's own flush is seen below.
    stages.flusher.sled_interval = std::time::Duration::from_secs(3600);
    let (third, _) = append(vec![said("cc")]);
    stages.commit(vec![third]);
    assert!(
        stages.flusher.sled_dirty,
        "an append waits for sled's timed flush"
    );
    let position = journal::Position::read(&stages.writer.db).unwrap().unwrap();
    stages.commit(vec![first, second]);
    assert!(
        !stages.flusher.sled_dirty,
        "sled is flushed before an erasure is answered"
    );
    // Its journal record is a barrier: a replay stops there.
    stages.writer.log.sync().unwrap();
    let records: Vec<journal::Record> = stages
        .writer
        .log
        .journal_from(position.segment, position.offset)
        .unwrap()
        .iter()
        .map(|(bytes, _)| journal::decode(bytes).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].barrier && records[0].number == position.number);
    first_answer.blocking_recv().unwrap().unwrap();
    second_answer.blocking_recv().unwrap().unwrap();

    let mut texts = Vec::new();
    for entry in stages.writer.db.scan_prefix(keys::LOG_PREFIX) {
        let (group_key, group_value) = entry.unwrap();
        for (key, value) in segments::expand(&group_key, &group_value).unwrap() {
            let bytes = stages.writer.log.entry(&key, &value).unwrap();
            for event in crate::record::decode_entry(&key, &bytes).unwrap() {
                if let EventPayload::Conversation(patch) = &event.incoming.payload {
                    texts.extend(patch.messages.iter().map(|m| m.text.clone()));
                }
            }
        }
    }
    assert_eq!(
        texts,
        ["", "", "secret of cc"],
        "both messages erased, the third's kept"
    );
}
