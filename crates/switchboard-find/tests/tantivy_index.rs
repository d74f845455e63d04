//! The tantivy index on real directories: what it answers, what survives a reopen and a crash,
//! that a purge leaves nothing erased in its files, and paging order over a large set.

use std::collections::BTreeSet;
use std::path::Path;

use switchboard_core::{ConnectionId, ConversationId, ConversationStatus, Sequence, Timestamp};
use switchboard_find::index::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    TicketDoc,
};
use switchboard_find::tantivy_index::TantivyIndex;
use tantivy::schema::Value;

fn cid(text: &str) -> ConversationId {
    ConversationId::parse(text).unwrap()
}

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis).unwrap()
}

fn conversation(id: &str, sort: i64) -> ConversationDoc {
    ConversationDoc {
        id: cid(id),
        vendor: "livechat".into(),
        status: ConversationStatus::Open,
        sort_key: at(sort),
        started_at: Some(at(sort)),
        updated_at: at(sort + 10),
        contact: None,
        emails: Vec::new(),
        phones: Vec::new(),
        visitor_ids: Vec::new(),
        agent_ids: Vec::new(),
        tags: Vec::new(),
        terms: Vec::new(),
    }
}

fn contact(id: &str, sequence: u64, identities: &[&str], names: &[&str]) -> ContactRecord {
    ContactRecord {
        id: id.into(),
        created_at_sequence: Sequence(sequence),
        identities: identities.iter().map(|s| s.to_string()).collect(),
        names: names.iter().map(|s| s.to_string()).collect(),
        ..ContactRecord::default()
    }
}

fn query() -> FindQuery {
    FindQuery {
        limit: 100,
        ..FindQuery::default()
    }
}

async fn ids(index: &TantivyIndex, query: FindQuery) -> Vec<String> {
    index
        .find_conversations(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id)| id.to_string())
        .collect()
}

/// A small world: three conversations, two contacts, identities, a ticket and events.
fn world() -> IndexBatch {
    let mut a = conversation("livechat/a", 3_000);
    a.contact = Some("c1".into());
    a.emails = vec!["anna@example.com".into()];
    a.phones = vec!["+14155550123".into()];
    a.visitor_ids = vec!["v-anna".into()];
    a.agent_ids = vec!["agent-1".into()];
    a.tags = vec!["vip".into()];
    a.terms = vec!["refund".into(), "order".into(), "anna".into()];
    let mut b = conversation("smartsupp/b", 2_000);
    b.vendor = "smartsupp".into();
    b.status = ConversationStatus::Closed;
    b.contact = Some("c1".into());
    b.emails = vec!["anna@example.com".into()];
    b.agent_ids = vec!["agent-2".into()];
    b.terms = vec!["ёлка".into(), "order".into()];
    let mut c = conversation("livechat/c", 1_000);
    c.started_at = None;
    c.contact = Some("c7".into());
    c.tags = vec!["spam".into(), "vip".into()];
    c.terms = vec!["退款".into(), "退".into(), "款".into()];
    IndexBatch {
        position: Sequence(12),
        conversations: vec![a, b, c],
        tickets: vec![
            TicketDoc {
                id: cid("zendesk/t1"),
                contact: Some("c1".into()),
                updated_at: at(500),
            },
            TicketDoc {
                id: cid("zendesk/t2"),
                contact: Some("c1".into()),
                updated_at: at(900),
            },
            TicketDoc {
                id: cid("zendesk/t3"),
                contact: Some("c7".into()),
                updated_at: at(950),
            },
        ],
        contacts: vec![
            contact(
                "c1",
                1,
                &["email:anna@example.com", "phone:+14155550123"],
                &["Anna Müller"],
            ),
            contact("c7", 7, &["visitor:livechat/v9"], &["Борис"]),
        ],
        identities: vec![
            ("email:anna@example.com".into(), Some("c1".into())),
            ("phone:+14155550123".into(), Some("c1".into())),
            ("visitor:livechat/v9".into(), Some("c7".into())),
        ],
        events: vec![
            EventRef {
                sequence: Sequence(1),
                conversation: Some(cid("livechat/a")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(4),
                conversation: Some(cid("smartsupp/b")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(7),
                conversation: Some(cid("livechat/a")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(9),
                conversation: None,
                ticket: Some(cid("zendesk/t1")),
            },
        ],
    }
}

/// Every answer the small world gives, as text, to compare before and after a reopen.
async fn answers(index: &TantivyIndex) -> Vec<String> {
    let mut out = vec![format!("{:?}", index.position().await.unwrap())];
    out.push(format!("{:?}", ids(index, query()).await));
    out.push(format!(
        "{:?}",
        index
            .conversation_docs(&[cid("livechat/a"), cid("livechat/c"), cid("nope/x")])
            .await
            .unwrap()
    ));
    out.push(format!("{:?}", index.contact("c1").await.unwrap()));
    out.push(format!(
        "{:?}",
        index
            .identities(&[
                "email:anna@example.com".into(),
                "visitor:livechat/v9".into()
            ])
            .await
            .unwrap()
    ));
    out.push(format!(
        "{:?}",
        index.contact_tickets(&["c1".into()], 10).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        index
            .events_of(&[cid("livechat/a")], &[cid("zendesk/t1")])
            .await
            .unwrap()
    ));
    out
}

#[tokio::test]
async fn filters_each_narrow_and_combine() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(index.backend(), "tantivy");
    assert_eq!(index.position().await.unwrap(), Sequence(0));
    index.apply(world()).await.unwrap();
    assert_eq!(index.position().await.unwrap(), Sequence(12));

    let all = ids(&index, query()).await;
    assert_eq!(all, ["livechat/a", "smartsupp/b", "livechat/c"]);
    let with = |f: fn(&mut FindQuery)| {
        let mut q = query();
        f(&mut q);
        q
    };
    let cases: Vec<(FindQuery, Vec<&str>)> = vec![
        (
            with(|q| q.emails = vec!["anna@example.com".into()]),
            vec!["livechat/a", "smartsupp/b"],
        ),
        (
            with(|q| q.phones = vec!["+14155550123".into()]),
            vec!["livechat/a"],
        ),
        (
            with(|q| q.visitor_ids = vec!["v-anna".into()]),
            vec!["livechat/a"],
        ),
        (
            with(|q| q.agent_ids = vec!["agent-2".into(), "agent-1".into()]),
            vec!["livechat/a", "smartsupp/b"],
        ),
        (
            with(|q| q.tags = vec!["vip".into()]),
            vec!["livechat/a", "livechat/c"],
        ),
        (
            with(|q| q.tags = vec!["vip".into(), "spam".into()]),
            vec!["livechat/a", "livechat/c"],
        ),
        (with(|q| q.contacts = vec!["c7".into()]), vec!["livechat/c"]),
        (
            with(|q| q.terms = vec!["order".into()]),
            vec!["livechat/a", "smartsupp/b"],
        ),
        (
            with(|q| q.terms = vec!["order".into(), "refund".into()]),
            vec!["livechat/a"],
        ),
        (
            with(|q| q.terms = vec!["order".into(), "missing".into()]),
            vec![],
        ),
        (with(|q| q.terms = vec!["ёлка".into()]), vec!["smartsupp/b"]),
        (with(|q| q.terms = vec!["退款".into()]), vec!["livechat/c"]),
        (
            with(|q| q.vendors = vec!["smartsupp".into()]),
            vec!["smartsupp/b"],
        ),
        (
            with(|q| q.connections = vec![ConnectionId::new("livechat").unwrap()]),
            vec!["livechat/a", "livechat/c"],
        ),
        (
            with(|q| q.statuses = vec![ConversationStatus::Closed]),
            vec!["smartsupp/b"],
        ),
        (
            with(|q| {
                q.statuses = vec![ConversationStatus::Closed, ConversationStatus::Open];
                q.tags = vec!["vip".into()];
            }),
            vec!["livechat/a", "livechat/c"],
        ),
        // Started: c has no start, so no started range finds it.
        (
            with(|q| q.started_from = Some(at(0))),
            vec!["livechat/a", "smartsupp/b"],
        ),
        (
            with(|q| {
                q.started_from = Some(at(2_000));
                q.started_to = Some(at(3_000));
            }),
            vec!["smartsupp/b"],
        ),
        (with(|q| q.updated_to = Some(at(2_010))), vec!["livechat/c"]),
        (
            with(|q| q.updated_from = Some(at(2_010))),
            vec!["livechat/a", "smartsupp/b"],
        ),
        (
            with(|q| {
                q.emails = vec!["anna@example.com".into()];
                q.statuses = vec![ConversationStatus::Open];
            }),
            vec!["livechat/a"],
        ),
        (
            with(|q| q.after = Some((at(3_000), cid("livechat/a")))),
            vec!["smartsupp/b", "livechat/c"],
        ),
        (with(|q| q.limit = 1), vec!["livechat/a"]),
        (with(|q| q.limit = 0), vec![]),
    ];
    for (q, expected) in cases {
        assert_eq!(ids(&index, q.clone()).await, expected, "{q:?}");
    }

    // Contacts: by id, by identity, by name terms, paged.
    let listed = |q: ContactQuery| {
        let index = &index;
        async move {
            index
                .list_contacts(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    let contacts = ContactQuery {
        limit: 10,
        ..ContactQuery::default()
    };
    assert_eq!(listed(contacts.clone()).await, ["c1", "c7"]);
    assert_eq!(
        listed(ContactQuery {
            after: Some("c1".into()),
            ..contacts.clone()
        })
        .await,
        ["c7"]
    );
    assert_eq!(
        listed(ContactQuery {
            identity: Some("visitor:livechat/v9".into()),
            ..contacts.clone()
        })
        .await,
        ["c7"]
    );
    assert_eq!(
        listed(ContactQuery {
            name_terms: vec!["muller".into(), "anna".into()],
            ..contacts.clone()
        })
        .await,
        ["c1"]
    );
    assert_eq!(
        listed(ContactQuery {
            name_terms: vec!["борис".into()],
            ..contacts.clone()
        })
        .await,
        ["c7"]
    );
    assert!(
        listed(ContactQuery {
            name_terms: vec!["anna".into(), "борис".into()],
            ..contacts.clone()
        })
        .await
        .is_empty()
    );
    let c1 = index.contact("c1").await.unwrap().unwrap();
    assert_eq!(c1, world().contacts[0]);
    assert_eq!(index.contact("c2").await.unwrap(), None);

    // Identities, tickets newest first, events ascending.
    assert_eq!(
        index
            .identities(&[
                "phone:+14155550123".into(),
                "email:nobody@example.com".into(),
                "visitor:livechat/v9".into(),
            ])
            .await
            .unwrap(),
        vec![
            ("phone:+14155550123".to_string(), "c1".to_string()),
            ("visitor:livechat/v9".to_string(), "c7".to_string()),
        ]
    );
    let tickets: Vec<String> = index
        .contact_tickets(&["c1".into(), "c7".into()], 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(tickets, ["zendesk/t3", "zendesk/t2", "zendesk/t1"]);
    assert_eq!(
        index.contact_tickets(&["c1".into()], 1).await.unwrap()[0].id,
        cid("zendesk/t2")
    );
    assert_eq!(
        index
            .events_of(&[cid("livechat/a")], &[cid("zendesk/t1")])
            .await
            .unwrap(),
        vec![Sequence(1), Sequence(7), Sequence(9)]
    );
    assert!(index.events_of(&[], &[]).await.unwrap().is_empty());
    assert_eq!(
        index
            .conversation_docs(&[cid("smartsupp/b")])
            .await
            .unwrap(),
        vec![world().conversations[1].clone()]
    );
}

#[tokio::test]
async fn a_later_batch_replaces_documents_and_forgets_identities() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path()).unwrap();
    index.apply(world()).await.unwrap();

    // a moves to the back of the list, loses its e-mail and its tag; c1 is merged into c7.
    let mut a = world().conversations[0].clone();
    a.sort_key = at(10);
    a.started_at = Some(at(10));
    a.emails.clear();
    a.tags.clear();
    a.contact = Some("c7".into());
    let mut c1 = world().contacts[0].clone();
    c1.merged_into = Some("c7".into());
    index
        .apply(IndexBatch {
            position: Sequence(20),
            conversations: vec![a.clone()],
            contacts: vec![c1.clone()],
            identities: vec![
                ("email:anna@example.com".into(), Some("c7".into())),
                ("phone:+14155550123".into(), None),
            ],
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    assert_eq!(index.position().await.unwrap(), Sequence(20));
    assert_eq!(
        ids(&index, query()).await,
        ["smartsupp/b", "livechat/c", "livechat/a"]
    );
    let mut by_email = query();
    by_email.emails = vec!["anna@example.com".into()];
    assert_eq!(ids(&index, by_email).await, ["smartsupp/b"]);
    let mut by_contact = query();
    by_contact.contacts = vec!["c7".into()];
    assert_eq!(ids(&index, by_contact).await, ["livechat/c", "livechat/a"]);
    assert_eq!(
        index.conversation_docs(&[cid("livechat/a")]).await.unwrap(),
        vec![a]
    );
    assert_eq!(index.contact("c1").await.unwrap(), Some(c1));
    assert_eq!(
        index
            .identities(&["email:anna@example.com".into(), "phone:+14155550123".into()])
            .await
            .unwrap(),
        vec![("email:anna@example.com".to_string(), "c7".to_string())]
    );

    // The same document twice in one batch: the last one wins, once.
    let mut first = conversation("livechat/d", 50);
    first.tags = vec!["first".into()];
    let mut second = conversation("livechat/d", 60);
    second.tags = vec!["second".into()];
    index
        .apply(IndexBatch {
            position: Sequence(21),
            conversations: vec![first, second.clone()],
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    let mut first_tag = query();
    first_tag.tags = vec!["first".into()];
    assert!(ids(&index, first_tag).await.is_empty());
    assert_eq!(
        index.conversation_docs(&[cid("livechat/d")]).await.unwrap(),
        vec![second]
    );
    assert_eq!(ids(&index, query()).await.len(), 4);
}

#[tokio::test]
async fn reopening_gives_the_same_answers_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let index = TantivyIndex::open(dir.path()).unwrap();
        index.apply(world()).await.unwrap();
        answers(&index).await
    };
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(answers(&index).await, before);
    assert_eq!(index.position().await.unwrap(), Sequence(12));
    // And it keeps working after the reopen.
    index
        .apply(IndexBatch {
            position: Sequence(13),
            conversations: vec![conversation("livechat/new", 9_000)],
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&index, query()).await[0], "livechat/new");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let _first = TantivyIndex::open(dir.path()).unwrap();
    let second = TantivyIndex::open(dir.path());
    assert!(second.is_err(), "two writers on one directory");
}

#[tokio::test]
async fn a_batch_written_but_not_committed_is_not_visible_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = TantivyIndex::open(dir.path()).unwrap();
        index.apply(world()).await.unwrap();
    }
    let before = {
        let index = TantivyIndex::open(dir.path()).unwrap();
        answers(&index).await
    };
    // What a crash in the middle of `apply` leaves: the batch's documents written to segment
    // files (prepare_commit flushes them) and a delete queued, but no commit naming them.
    {
        let raw = tantivy::Index::open_in_dir(dir.path()).unwrap();
        let schema = raw.schema();
        let field = |name: &str| schema.get_field(name).unwrap();
        let mut writer: tantivy::IndexWriter = raw.writer(20_000_000).unwrap();
        writer.delete_term(tantivy::Term::from_field_text(
            field("key"),
            "conversation:livechat/a",
        ));
        let mut doc = tantivy::TantivyDocument::new();
        doc.add_text(field("kind"), "conversation");
        doc.add_text(field("key"), "conversation:livechat/ghost");
        doc.add_text(field("id"), "livechat/ghost");
        doc.add_i64(field("sort"), 99_999);
        doc.add_text(field("term"), "ghost");
        doc.add_bytes(field("body"), b"{}");
        writer.add_document(doc).unwrap();
        let mut prepared = writer.prepare_commit().unwrap();
        prepared.set_payload(r#"{"format":1,"position":99}"#);
        drop(prepared);
        drop(writer);
    }
    let files_with_ghost = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files_with_ghost > 0);
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(answers(&index).await, before);
    assert_eq!(index.position().await.unwrap(), Sequence(12));
    // The next batch commits its own documents only.
    index
        .apply(IndexBatch {
            position: Sequence(13),
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    let mut ghost = query();
    ghost.terms = vec!["ghost".into()];
    assert!(ids(&index, ghost).await.is_empty());
    assert_eq!(ids(&index, query()).await.len(), 3);
}

/// Whether `needle` is anywhere in the index as tantivy reads it, deleted documents included:
/// inside a term of these fields (`identity:email:...` holds the e-mail), or in a stored body.
fn tantivy_holds(dir: &Path, fields: &[&str], needle: &str) -> bool {
    let raw = tantivy::Index::open_in_dir(dir).unwrap();
    let schema = raw.schema();
    let reader = raw.reader().unwrap();
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        for name in fields {
            let field = schema.get_field(name).unwrap();
            let inverted = segment.inverted_index(field).unwrap();
            let mut terms = inverted.terms().stream().unwrap();
            while terms.advance() {
                if contains(terms.key(), needle.as_bytes()) {
                    return true;
                }
            }
        }
        let store = segment.get_store_reader(1).unwrap();
        let body = schema.get_field("body").unwrap();
        for doc in store.iter::<tantivy::TantivyDocument>(None) {
            let doc = doc.unwrap();
            for value in doc.get_all(body) {
                let bytes = value.as_bytes().unwrap_or_default();
                if contains(bytes, needle.as_bytes()) {
                    return true;
                }
            }
        }
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether any file in `dir` holds `needle`'s bytes, forwards or backwards.
fn files_hold(dir: &Path, needle: &str) -> bool {
    let forwards = needle.as_bytes().to_vec();
    let backwards: Vec<u8> = forwards.iter().rev().copied().collect();
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        contains(&bytes, &forwards) || contains(&bytes, &backwards)
    })
}

#[tokio::test]
async fn purge_leaves_nothing_erased_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // One indexing thread, so each batch is one segment: the erased documents share theirs
    // with one that stays, and the segment stays until the purge.
    let index = TantivyIndex::open_with_threads(dir.path(), 1).unwrap();
    let secret_term = "qzxwvkjhgfdsecretword";
    let secret_email = "hidden.person@erased-example.org";
    let mut doc = conversation("livechat/e", 1_000);
    doc.contact = Some("c3".into());
    doc.emails = vec![secret_email.into()];
    doc.terms = vec![secret_term.into(), "hello".into()];
    let mut person = contact(
        "c3",
        3,
        &[&format!("email:{secret_email}")],
        &["Qzxwvkjhgfdsecretword Person"],
    );
    index
        .apply(IndexBatch {
            position: Sequence(3),
            conversations: vec![doc.clone(), conversation("livechat/other", 5)],
            contacts: vec![person.clone()],
            identities: vec![(format!("email:{secret_email}"), Some("c3".into()))],
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    // A few more commits, so there are several segments to merge.
    for n in 0..3 {
        index
            .apply(IndexBatch {
                position: Sequence(4 + n),
                conversations: vec![conversation(&format!("livechat/more{n}"), 10 + n as i64)],
                ..IndexBatch::default()
            })
            .await
            .unwrap();
    }
    // The erasure: the documents rewritten without the personal data, the identity forgotten.
    doc.emails.clear();
    doc.terms = vec!["hello".into()];
    person.identities.clear();
    person.names.clear();
    person.erased_at = Some(at(2_000));
    index
        .apply(IndexBatch {
            position: Sequence(9),
            conversations: vec![doc.clone()],
            contacts: vec![person.clone()],
            identities: vec![(format!("email:{secret_email}"), None)],
            ..IndexBatch::default()
        })
        .await
        .unwrap();
    let mut by_term = query();
    by_term.terms = vec![secret_term.into()];
    assert!(ids(&index, by_term.clone()).await.is_empty());
    let fields = ["term", "email", "identity", "name", "key", "id"];
    // Until the purge, the deleted documents are still in the segment files.
    assert!(tantivy_holds(dir.path(), &fields, secret_term));
    assert!(tantivy_holds(dir.path(), &fields, secret_email));
    // The identity key is in the `id` column as plain text.
    assert!(files_hold(dir.path(), secret_email));

    index.purge().await.unwrap();

    assert!(!tantivy_holds(dir.path(), &fields, secret_term));
    assert!(!tantivy_holds(dir.path(), &fields, secret_email));
    assert!(!files_hold(dir.path(), secret_term));
    assert!(!files_hold(dir.path(), secret_email));
    // Nothing else was lost, and the position stays, also across a reopen.
    assert_eq!(ids(&index, query()).await.len(), 5);
    assert_eq!(
        index.conversation_docs(&[cid("livechat/e")]).await.unwrap(),
        vec![doc]
    );
    assert_eq!(index.contact("c3").await.unwrap(), Some(person));
    let mut hello = query();
    hello.terms = vec!["hello".into()];
    assert_eq!(ids(&index, hello.clone()).await, ["livechat/e"]);
    drop(index);
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(index.position().await.unwrap(), Sequence(9));
    assert_eq!(ids(&index, hello).await, ["livechat/e"]);
    assert!(ids(&index, by_term).await.is_empty());
    // Purging again, with nothing to merge, is harmless.
    index.purge().await.unwrap();
    assert_eq!(ids(&index, query()).await.len(), 5);
}

/// A small deterministic generator (xorshift), so the large test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn pages_over_fifty_thousand_conversations_follow_the_sort_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Connections whose names order differently as text than as parts: `a/...` and `a-b/...`.
    let connections = ["a", "a-b", "livechat", "zz"];
    let words = ["refund", "order", "hello", "ёлка", "退款"];
    let mut docs: std::collections::BTreeMap<String, ConversationDoc> = Default::default();
    let mut order: Vec<String> = Vec::new();
    let total = 50_000;
    let batches = 10;
    for batch in 0..batches {
        let mut conversations = Vec::new();
        for n in 0..total / batches {
            let number = batch * (total / batches) + n;
            let connection = connections[rng.below(connections.len() as u64) as usize];
            // Few distinct sort keys: many ties to page through.
            let sort = 1_000 + rng.below(400) as i64;
            let mut doc = conversation(&format!("{connection}/{number:x}"), sort);
            doc.terms = vec![words[rng.below(words.len() as u64) as usize].into()];
            if rng.below(3) == 0 {
                doc.tags = vec!["vip".into()];
            }
            conversations.push(doc);
        }
        // Some earlier conversations change their sort key (a replacement, not a second copy).
        if batch > 0 {
            for _ in 0..200 {
                let number = rng.below(batch * (total / batches));
                let mut doc: ConversationDoc = docs[&order[number as usize]].clone();
                doc.sort_key = at(1_000 + rng.below(400) as i64);
                doc.started_at = Some(doc.sort_key);
                conversations.push(doc);
            }
        }
        for doc in &conversations {
            if docs.insert(doc.id.to_string(), doc.clone()).is_none() {
                order.push(doc.id.to_string());
            }
        }
        index
            .apply(IndexBatch {
                position: Sequence(batch + 1),
                conversations,
                ..IndexBatch::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(docs.len(), total as usize);

    let expected = |filter: &dyn Fn(&ConversationDoc) -> bool| {
        let mut list: Vec<(i64, String)> = docs
            .values()
            .filter(|d| filter(d))
            .map(|d| (d.sort_key.as_millis(), d.id.to_string()))
            .collect();
        list.sort_by(|a, b| b.cmp(a));
        list
    };
    let page_all = |mut q: FindQuery, page: usize| {
        let index = &index;
        async move {
            q.limit = page;
            let mut out = Vec::new();
            loop {
                let got = index.find_conversations(&q).await.unwrap();
                if got.is_empty() {
                    break;
                }
                assert!(got.len() <= page);
                q.after = got.last().cloned();
                out.extend(
                    got.into_iter()
                        .map(|(t, id)| (t.as_millis(), id.to_string())),
                );
            }
            out
        }
    };
    let all = expected(&|_| true);
    let mut ordered: BTreeSet<(i64, String)> = BTreeSet::new();
    ordered.extend(all.iter().cloned());
    assert_eq!(ordered.len(), total as usize);
    assert_eq!(page_all(query(), 997).await, all);

    let mut vip_refund = query();
    vip_refund.tags = vec!["vip".into()];
    vip_refund.terms = vec!["refund".into()];
    let wanted = expected(&|d| d.tags.contains(&"vip".into()) && d.terms == ["refund"]);
    assert!(wanted.len() > 1_000);
    assert_eq!(page_all(vip_refund, 50).await, wanted);

    let mut chinese = query();
    chinese.terms = vec!["退款".into()];
    chinese.connections = vec![
        ConnectionId::new("a").unwrap(),
        ConnectionId::new("a-b").unwrap(),
    ];
    let wanted =
        expected(&|d| d.terms == ["退款"] && matches!(d.id.connection.as_str(), "a" | "a-b"));
    assert_eq!(page_all(chinese, 333).await, wanted);

    // The first page of a text query, timed loosely (the 1M-row target is the bench's job).
    let mut text = query();
    text.terms = vec!["hello".into()];
    text.limit = 50;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let page = index.find_conversations(&text).await.unwrap();
        assert_eq!(page.len(), 50);
    }
    let each = started.elapsed() / 20;
    assert!(
        each < std::time::Duration::from_millis(200),
        "a first page took {each:?}"
    );
}

#[tokio::test]
async fn the_shared_suite() {
    switchboard_find::suite::run_all(|| async {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyIndex::open(dir.path()).unwrap();
        (index, dir)
    })
    .await;
}

/// The issue's target at full size: a text query's first page at 1M conversations, p99 <= 50
/// ms. Slow to build (about a minute in release), so run it on demand:
/// `cargo test --release -p switchboard-find --test tantivy_index -- --ignored one_million`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a 1M-conversation index; run with --release -- --ignored"]
async fn one_million_conversations_first_page_p99() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path()).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let vocabulary: Vec<String> = (0..20_000).map(|n| format!("w{n}")).collect();
    let common = ["hello", "thanks", "order", "refund", "delivery"];
    let total = 1_000_000u64;
    let per_batch = 50_000u64;
    let started = std::time::Instant::now();
    for batch in 0..total / per_batch {
        let mut conversations = Vec::with_capacity(per_batch as usize);
        for n in 0..per_batch {
            let number = batch * per_batch + n;
            let mut doc = conversation(
                &format!("c{}/{number}", number % 7),
                1_600_000_000_000 + rng.below(100_000_000) as i64,
            );
            let mut terms = BTreeSet::new();
            for word in common {
                if rng.below(3) == 0 {
                    terms.insert(word.to_string());
                }
            }
            for _ in 0..20 {
                // Skewed towards the first words, as real text is.
                let rank = rng
                    .below(vocabulary.len() as u64)
                    .min(rng.below(vocabulary.len() as u64));
                terms.insert(vocabulary[rank as usize].clone());
            }
            doc.terms = terms.into_iter().collect();
            doc.emails = vec![format!("p{}@example.com", number % 300_000)];
            doc.contact = Some(format!("c{}", number % 300_000));
            conversations.push(doc);
        }
        index
            .apply(IndexBatch {
                position: Sequence(batch + 1),
                conversations,
                ..IndexBatch::default()
            })
            .await
            .unwrap();
    }
    eprintln!("indexed {total} conversations in {:?}", started.elapsed());

    // Right after the last commit tantivy is still merging segments on the same cores: shown,
    // not held to the target.
    first_pages(&index, "while merging").await;
    // Settled: reopened, so no merge runs (a writer merges after its own commits).
    drop(index);
    let index = TantivyIndex::open(dir.path()).unwrap();
    let segments = tantivy::Index::open_in_dir(dir.path())
        .unwrap()
        .searchable_segment_ids()
        .unwrap()
        .len();
    eprintln!("{segments} segments");
    for (terms, p99) in first_pages(&index, "settled").await {
        assert!(
            p99 <= std::time::Duration::from_millis(50),
            "{terms:?}: p99 {p99:?}"
        );
    }
    // A contact's conversations (the issue's second target: p99 <= 10 ms).
    let mut timings = Vec::new();
    for n in 0..100u64 {
        let mut q = query();
        q.contacts = vec![format!("c{}", n * 2_999)];
        q.limit = 50;
        let t = std::time::Instant::now();
        let found = index.find_conversations(&q).await.unwrap();
        timings.push(t.elapsed());
        assert!(!found.is_empty());
    }
    timings.sort();
    eprintln!(
        "a contact's conversations: p50 {:?}, p99 {:?}",
        timings[50], timings[98]
    );
    assert!(timings[98] <= std::time::Duration::from_millis(10));
    let mut by_email = query();
    by_email.emails = vec!["p12345@example.com".into()];
    let t = std::time::Instant::now();
    assert!(
        !index
            .find_conversations(&by_email)
            .await
            .unwrap()
            .is_empty()
    );
    eprintln!("by e-mail: {:?}", t.elapsed());
}

/// The first page (50) of several text queries, 100 times each: prints p50 and p99, returns
/// each query's p99.
async fn first_pages(index: &TantivyIndex, label: &str) -> Vec<(Vec<String>, std::time::Duration)> {
    let queries: Vec<Vec<String>> = vec![
        vec!["hello".into()],
        vec!["hello".into(), "refund".into()],
        vec!["w1".into()],
        vec!["w5000".into(), "order".into()],
        vec!["w19999".into()],
    ];
    let mut out = Vec::new();
    for terms in queries {
        let mut timings = Vec::new();
        let mut found = 0;
        for _ in 0..100 {
            let mut q = query();
            q.terms = terms.clone();
            q.limit = 50;
            let t = std::time::Instant::now();
            found = index.find_conversations(&q).await.unwrap().len();
            timings.push(t.elapsed());
        }
        timings.sort();
        let p99 = timings[98];
        eprintln!(
            "{label}: {terms:?}: {found} hits on the first page, p50 {:?}, p99 {p99:?}",
            timings[50]
        );
        out.push((terms, p99));
    }
    out
}

/// `count` events from sequence `from`, each about its own conversation.
fn events_batch(from: u64, count: u64) -> IndexBatch {
    IndexBatch {
        position: Sequence(from + count - 1),
        events: (from..from + count)
            .map(|sequence| EventRef {
                sequence: Sequence(sequence),
                conversation: Some(cid(&format!("livechat/chat-{sequence}"))),
                ticket: None,
            })
            .collect(),
        ..IndexBatch::default()
    }
}

/// A write that fails under tantivy (here: its directory is gone, as on a disk that failed)
/// leaves tantivy's writer unable to roll back. Every batch after it must fail as well, and
/// promptly: with that writer kept, the next large batch blocked forever in `add_document`,
/// and with it the finder and the server's shutdown. (A runtime of the test's own, shut down
/// without waiting, so that a hang fails the test instead of hanging it.)
#[test]
fn batches_after_a_failed_write_fail_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("find");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let index = TantivyIndex::open_with_threads(&path, 2).unwrap();
        index.apply(events_batch(1, 10)).await.unwrap();
        std::fs::remove_dir_all(&path).unwrap();
        let mut outcomes = vec![index.apply(events_batch(11, 10)).await.is_err()];
        let mut from = 11;
        for _ in 0..3 {
            // Larger than tantivy's queue of operations between a writer and its threads.
            let batch = events_batch(from, 50_000);
            let applied =
                tokio::time::timeout(std::time::Duration::from_secs(20), index.apply(batch)).await;
            outcomes.push(matches!(applied, Ok(Err(_))));
            from += 50_000;
        }
        (outcomes, index.position().await.unwrap())
    });
    runtime.shutdown_background();
    assert_eq!(
        outcome,
        (vec![true; 4], Sequence(10)),
        "every batch after the failed write fails (false: it hung or was applied)"
    );
}
