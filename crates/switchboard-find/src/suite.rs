//! Run it: `suite::run_all(|| async { (fresh_index, guard) }).await` in a `#[tokio::test]` (see `tests/memory_index.rs`), or call each case on a fresh index.
//!
//! The shared [`FindIndex`] test suite: what every backend's index promises, checked the same
//! way on each (the memory index, tantivy, PostgreSQL). Each case takes a fresh, empty index
//! and panics with a message naming the broken promise.
//!
//! Promises beyond the trait's docs, which every backend keeps:
//! - [`FindIndex::apply`] refuses a batch whose position is not past the index's position
//!   (another finder wrote past it) with an error, and applies nothing of it.
//! - The list order is `sort_key` descending, then the conversation id's text
//!   (`connection/external id`) descending byte by byte: the stores' order
//!   ([`crate::memory::list_order`]). A contact's tickets: `updated_at` descending, then the
//!   id's text descending ([`crate::memory::ticket_order`]).
//! - Contacts are listed by id as text, ascending; a name filter matches a contact when one of
//!   its names holds every term ([`crate::normalize::terms`] of the name).
//! - What is written reads back equal: documents and contacts, their lists in the order given.

use std::collections::BTreeSet;
use std::future::Future;

use switchboard_core::{ConnectionId, ConversationId, ConversationStatus, Sequence, Timestamp};

use crate::index::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    TicketDoc,
};
use crate::normalize;

/// Runs every case, each on its own fresh index from `fresh`, which returns the index and a
/// guard kept alive while the case runs (a temporary directory; `()` when there is none).
pub async fn run_all<F, Fut, I, G>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (I, G)>,
    I: FindIndex,
{
    macro_rules! case {
        ($name:ident) => {{
            let (index, guard) = fresh().await;
            $name(&index).await;
            drop(index);
            drop(guard);
        }};
    }
    case!(apply_is_atomic_and_monotonic);
    case!(each_filter_alone_and_combined);
    case!(list_order_and_paging);
    case!(replacing_a_doc);
    case!(identities_set_and_forget);
    case!(contacts_by_identity_name_and_after);
    case!(contact_tickets_newest_first);
    case!(events_of_conversations_and_tickets);
    case!(latin_cyrillic_and_chinese_terms);
    case!(purge_keeps_answers);
    case!(rest_keeps_answers_and_the_next_batch_applies);
}

// ---- builders -------------------------------------------------------------------------------

fn conn(id: &str) -> ConnectionId {
    ConnectionId::new(id).expect("a valid connection id")
}

fn cid(text: &str) -> ConversationId {
    ConversationId::parse(text).expect("a valid conversation id")
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).expect("a valid time")
}

/// A conversation document with the given id, started at `started` seconds, updated at
/// `updated`, and everything else empty.
pub fn doc(id: &str, started: Option<i64>, updated: i64) -> ConversationDoc {
    let started_at = started.map(ts);
    let updated_at = ts(updated);
    ConversationDoc {
        id: cid(id),
        vendor: "livechat".into(),
        status: ConversationStatus::Open,
        sort_key: started_at.unwrap_or(updated_at),
        started_at,
        updated_at,
        contact: None,
        emails: vec![],
        phones: vec![],
        visitor_ids: vec![],
        agent_ids: vec![],
        tags: vec![],
        terms: vec![],
    }
}

fn contact(id: &str, sequence: u64) -> ContactRecord {
    ContactRecord {
        id: id.into(),
        created_at_sequence: Sequence(sequence),
        ..ContactRecord::default()
    }
}

fn batch(position: u64) -> IndexBatch {
    IndexBatch {
        position: Sequence(position),
        ..IndexBatch::default()
    }
}

fn query() -> FindQuery {
    FindQuery {
        limit: 1000,
        ..FindQuery::default()
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

async fn ids(index: &dyn FindIndex, query: &FindQuery) -> Vec<String> {
    index
        .find_conversations(query)
        .await
        .expect("find_conversations")
        .into_iter()
        .map(|(_, id)| id.to_string())
        .collect()
}

async fn apply(index: &dyn FindIndex, batch: IndexBatch) {
    let position = batch.position;
    index
        .apply(batch)
        .await
        .unwrap_or_else(|e| panic!("applying the batch at {position}: {e}"));
}

// ---- cases ----------------------------------------------------------------------------------

/// A fresh index is at 0; a batch moves it to its position; a batch not past the position is
/// refused and nothing of it is visible.
pub async fn apply_is_atomic_and_monotonic(index: &dyn FindIndex) {
    assert_eq!(
        index.position().await.unwrap(),
        Sequence(0),
        "a fresh index"
    );
    let mut first = batch(5);
    first.conversations.push(doc("a/1", Some(100), 100));
    first.contacts.push(contact("c1", 1));
    first
        .identities
        .push(("email:a@x.io".into(), Some("c1".into())));
    first.events.push(EventRef {
        sequence: Sequence(1),
        conversation: Some(cid("a/1")),
        ticket: None,
    });
    apply(index, first).await;
    assert_eq!(index.position().await.unwrap(), Sequence(5));
    assert_eq!(ids(index, &query()).await, vec!["a/1"]);

    for stale in [5, 3] {
        let mut refused = batch(stale);
        refused.conversations.push(doc("a/2", Some(200), 200));
        let mut changed = doc("a/1", Some(100), 100);
        changed.status = ConversationStatus::Closed;
        refused.conversations.push(changed);
        refused.contacts.push(contact("c2", 2));
        refused
            .identities
            .push(("email:a@x.io".into(), Some("c2".into())));
        refused
            .identities
            .push(("phone:+14155552671".into(), Some("c2".into())));
        refused.events.push(EventRef {
            sequence: Sequence(2),
            conversation: Some(cid("a/2")),
            ticket: None,
        });
        assert!(
            index.apply(refused).await.is_err(),
            "a batch at {stale} after the index reached 5 must be refused"
        );
        assert_eq!(index.position().await.unwrap(), Sequence(5));
        assert_eq!(
            ids(index, &query()).await,
            vec!["a/1"],
            "nothing of a refused batch is visible"
        );
        let docs = index.conversation_docs(&[cid("a/1")]).await.unwrap();
        assert_eq!(docs[0].status, ConversationStatus::Open);
        assert_eq!(index.contact("c2").await.unwrap(), None);
        assert_eq!(
            index
                .identities(&strings(&["email:a@x.io", "phone:+14155552671"]))
                .await
                .unwrap(),
            vec![("email:a@x.io".to_string(), "c1".to_string())]
        );
        assert_eq!(
            index.events_of(&[cid("a/2")], &[]).await.unwrap(),
            Vec::<Sequence>::new()
        );
    }

    let mut empty_move = batch(9);
    empty_move.events.push(EventRef {
        sequence: Sequence(9),
        conversation: None,
        ticket: None,
    });
    apply(index, empty_move).await;
    assert_eq!(index.position().await.unwrap(), Sequence(9));
}

/// The documents the filter cases run against.
fn filter_docs() -> Vec<ConversationDoc> {
    let mut one = doc("lc/1", Some(1_000), 1_500);
    one.vendor = "livechat".into();
    one.status = ConversationStatus::Closed;
    one.contact = Some("c1".into());
    one.emails = strings(&["ann@example.com"]);
    one.phones = strings(&["+14155552671"]);
    one.visitor_ids = strings(&["v-ann"]);
    one.agent_ids = strings(&["agent-1", "agent-2"]);
    one.tags = strings(&["vip", "refund"]);
    one.terms = strings(&["hello", "refund", "please"]);

    let mut two = doc("lc/2", Some(2_000), 2_100);
    two.vendor = "livechat".into();
    two.status = ConversationStatus::Open;
    two.contact = Some("c2".into());
    two.emails = strings(&["bob@example.com"]);
    two.visitor_ids = strings(&["v-bob"]);
    two.agent_ids = strings(&["agent-2"]);
    two.tags = strings(&["refund"]);
    two.terms = strings(&["hello", "world"]);

    let mut three = doc("ss/3", None, 3_000);
    three.vendor = "smartsupp".into();
    three.status = ConversationStatus::Missed;
    three.contact = Some("c1".into());
    three.emails = strings(&["ann@example.com"]);
    three.phones = strings(&["89123456789"]);
    three.visitor_ids = strings(&["v-ann"]);
    three.terms = strings(&["refund", "late"]);

    let mut four = doc("ss/4", Some(4_000), 4_000);
    four.vendor = "smartsupp".into();
    four.status = ConversationStatus::Closed;
    four.agent_ids = strings(&["agent-3"]);
    four.tags = strings(&["vip"]);
    four.terms = strings(&["please", "world"]);
    vec![one, two, three, four]
}

/// Every filter of [`FindQuery`] alone, several values in one list (any of them), and
/// filters combined (all of them).
pub async fn each_filter_alone_and_combined(index: &dyn FindIndex) {
    let mut b = batch(1);
    b.conversations = filter_docs();
    apply(index, b).await;

    let all = vec!["ss/4", "ss/3", "lc/2", "lc/1"];
    assert_eq!(ids(index, &query()).await, all, "no filter: everything");

    let cases: Vec<(&str, FindQuery, Vec<&str>)> = vec![
        (
            "connections",
            FindQuery {
                connections: vec![conn("ss")],
                ..query()
            },
            vec!["ss/4", "ss/3"],
        ),
        (
            "connections, two",
            FindQuery {
                connections: vec![conn("ss"), conn("lc")],
                ..query()
            },
            all.clone(),
        ),
        (
            "vendors",
            FindQuery {
                vendors: strings(&["livechat"]),
                ..query()
            },
            vec!["lc/2", "lc/1"],
        ),
        (
            "statuses",
            FindQuery {
                statuses: vec![ConversationStatus::Closed],
                ..query()
            },
            vec!["ss/4", "lc/1"],
        ),
        (
            "statuses, two",
            FindQuery {
                statuses: vec![ConversationStatus::Missed, ConversationStatus::Open],
                ..query()
            },
            vec!["ss/3", "lc/2"],
        ),
        (
            "started_from (no start never matches a started range)",
            FindQuery {
                started_from: Some(ts(2_000)),
                ..query()
            },
            vec!["ss/4", "lc/2"],
        ),
        (
            "started_to (exclusive)",
            FindQuery {
                started_to: Some(ts(2_000)),
                ..query()
            },
            vec!["lc/1"],
        ),
        (
            "started range",
            FindQuery {
                started_from: Some(ts(1_000)),
                started_to: Some(ts(4_000)),
                ..query()
            },
            vec!["lc/2", "lc/1"],
        ),
        (
            "updated_from",
            FindQuery {
                updated_from: Some(ts(2_100)),
                ..query()
            },
            vec!["ss/4", "ss/3", "lc/2"],
        ),
        (
            "updated_to (exclusive)",
            FindQuery {
                updated_to: Some(ts(3_000)),
                ..query()
            },
            vec!["lc/2", "lc/1"],
        ),
        (
            "emails",
            FindQuery {
                emails: strings(&["ann@example.com"]),
                ..query()
            },
            vec!["ss/3", "lc/1"],
        ),
        (
            "emails, two",
            FindQuery {
                emails: strings(&["bob@example.com", "ann@example.com"]),
                ..query()
            },
            vec!["ss/3", "lc/2", "lc/1"],
        ),
        (
            "emails, unknown",
            FindQuery {
                emails: strings(&["nobody@example.com"]),
                ..query()
            },
            vec![],
        ),
        (
            "phones",
            FindQuery {
                phones: strings(&["+14155552671"]),
                ..query()
            },
            vec!["lc/1"],
        ),
        (
            "phones, digits",
            FindQuery {
                phones: strings(&["89123456789", "+10000000000"]),
                ..query()
            },
            vec!["ss/3"],
        ),
        (
            "visitor_ids",
            FindQuery {
                visitor_ids: strings(&["v-bob"]),
                ..query()
            },
            vec!["lc/2"],
        ),
        (
            "agent_ids",
            FindQuery {
                agent_ids: strings(&["agent-2"]),
                ..query()
            },
            vec!["lc/2", "lc/1"],
        ),
        (
            "agent_ids, two",
            FindQuery {
                agent_ids: strings(&["agent-3", "agent-1"]),
                ..query()
            },
            vec!["ss/4", "lc/1"],
        ),
        (
            "tags",
            FindQuery {
                tags: strings(&["vip"]),
                ..query()
            },
            vec!["ss/4", "lc/1"],
        ),
        (
            "tags, two",
            FindQuery {
                tags: strings(&["vip", "refund"]),
                ..query()
            },
            vec!["ss/4", "lc/2", "lc/1"],
        ),
        (
            "contacts",
            FindQuery {
                contacts: strings(&["c1"]),
                ..query()
            },
            vec!["ss/3", "lc/1"],
        ),
        (
            "contacts, two",
            FindQuery {
                contacts: strings(&["c2", "c1"]),
                ..query()
            },
            vec!["ss/3", "lc/2", "lc/1"],
        ),
        (
            "terms, one",
            FindQuery {
                terms: strings(&["refund"]),
                ..query()
            },
            vec!["ss/3", "lc/1"],
        ),
        (
            "terms, all must match",
            FindQuery {
                terms: strings(&["hello", "world"]),
                ..query()
            },
            vec!["lc/2"],
        ),
        (
            "terms, one unknown",
            FindQuery {
                terms: strings(&["hello", "nothing"]),
                ..query()
            },
            vec![],
        ),
        (
            "tag and term",
            FindQuery {
                tags: strings(&["vip"]),
                terms: strings(&["please"]),
                ..query()
            },
            vec!["ss/4", "lc/1"],
        ),
        (
            "e-mail and connection",
            FindQuery {
                emails: strings(&["ann@example.com"]),
                connections: vec![conn("lc")],
                ..query()
            },
            vec!["lc/1"],
        ),
        (
            "contact, status and agent",
            FindQuery {
                contacts: strings(&["c1", "c2"]),
                statuses: vec![ConversationStatus::Open, ConversationStatus::Closed],
                agent_ids: strings(&["agent-2"]),
                ..query()
            },
            vec!["lc/2", "lc/1"],
        ),
        (
            "vendor, visitor id and term",
            FindQuery {
                vendors: strings(&["smartsupp"]),
                visitor_ids: strings(&["v-ann"]),
                terms: strings(&["late"]),
                ..query()
            },
            vec!["ss/3"],
        ),
        (
            "phone and tag (none has both)",
            FindQuery {
                phones: strings(&["89123456789"]),
                tags: strings(&["vip"]),
                ..query()
            },
            vec![],
        ),
        (
            "updated range and e-mail",
            FindQuery {
                updated_from: Some(ts(1_500)),
                updated_to: Some(ts(2_100)),
                emails: strings(&["ann@example.com", "bob@example.com"]),
                ..query()
            },
            vec!["lc/1"],
        ),
        (
            "limit",
            FindQuery {
                limit: 2,
                ..query()
            },
            vec!["ss/4", "ss/3"],
        ),
    ];
    for (name, query, want) in cases {
        assert_eq!(ids(index, &query).await, want, "filter: {name}");
    }
    let found = index.find_conversations(&query()).await.unwrap();
    let keys: Vec<i64> = found.iter().map(|(at, _)| at.as_millis() / 1000).collect();
    assert_eq!(
        keys,
        vec![4_000, 3_000, 2_000, 1_000],
        "each conversation comes with its sort key"
    );
}

/// Newest first, ties by the id's text descending; `after` pages through every match once.
pub async fn list_order_and_paging(index: &dyn FindIndex) {
    let mut docs = Vec::new();
    // Sort keys repeat every five ids, so ties are common; `a` and `a-b` differ in the
    // byte order of the text (`a-b/...` < `a/...`) and in that of the connection alone.
    for i in 0..40 {
        let connection = ["a", "a-b", "b"][i % 3];
        let mut d = doc(
            &format!("{connection}/{i:02}"),
            None,
            1_000 + (i as i64 / 5),
        );
        d.tags = if i % 2 == 0 {
            strings(&["even"])
        } else {
            vec![]
        };
        docs.push(d);
    }
    let mut want: Vec<(Timestamp, String)> = docs
        .iter()
        .map(|d| (d.sort_key, d.id.to_string()))
        .collect();
    want.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1.as_bytes().cmp(a.1.as_bytes()))
    });
    let mut b = batch(3);
    b.conversations = docs.clone();
    apply(index, b).await;

    let whole: Vec<(Timestamp, String)> = index
        .find_conversations(&query())
        .await
        .unwrap()
        .into_iter()
        .map(|(at, id)| (at, id.to_string()))
        .collect();
    assert_eq!(whole, want, "sort key descending, then id text descending");

    for (filter, page_size) in [(None, 7), (None, 1), (Some("even"), 3), (None, 40)] {
        let mut q = query();
        q.limit = page_size;
        if let Some(tag) = filter {
            q.tags = strings(&[tag]);
        }
        let expected: Vec<String> = want
            .iter()
            .filter(|(_, id)| {
                filter.is_none()
                    || docs
                        .iter()
                        .any(|d| &d.id.to_string() == id && !d.tags.is_empty())
            })
            .map(|(_, id)| id.clone())
            .collect();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = index.find_conversations(&q).await.unwrap();
            assert!(page.len() <= page_size, "a page holds at most the limit");
            pages += 1;
            assert!(pages <= 100, "paging does not end");
            let Some(last) = page.last().cloned() else {
                break;
            };
            seen.extend(page.iter().map(|(_, id)| id.to_string()));
            q.after = Some(last);
        }
        assert_eq!(
            seen, expected,
            "pages of {page_size} (filter {filter:?}) give every match once, in order"
        );
    }
}

/// Writing a document of the same id replaces it whole: a changed status, a removed tag, a
/// moved contact stop matching.
pub async fn replacing_a_doc(index: &dyn FindIndex) {
    let mut first = doc("lc/9", Some(500), 500);
    first.tags = strings(&["vip", "refund"]);
    first.contact = Some("c1".into());
    first.terms = strings(&["old"]);
    let mut b = batch(1);
    b.conversations.push(first.clone());
    apply(index, b).await;

    let mut second = doc("lc/9", Some(500), 900);
    second.status = ConversationStatus::Closed;
    second.tags = strings(&["refund"]);
    second.contact = Some("c2".into());
    second.terms = strings(&["new"]);
    let mut b = batch(2);
    b.conversations.push(second.clone());
    apply(index, b).await;

    let tagged = |tag: &str| FindQuery {
        tags: strings(&[tag]),
        ..query()
    };
    assert_eq!(
        ids(index, &tagged("vip")).await,
        Vec::<String>::new(),
        "a removed tag"
    );
    assert_eq!(ids(index, &tagged("refund")).await, vec!["lc/9"]);
    let status = |s| FindQuery {
        statuses: vec![s],
        ..query()
    };
    assert!(
        ids(index, &status(ConversationStatus::Open))
            .await
            .is_empty()
    );
    assert_eq!(
        ids(index, &status(ConversationStatus::Closed)).await,
        vec!["lc/9"]
    );
    let contact = |c: &str| FindQuery {
        contacts: strings(&[c]),
        ..query()
    };
    assert!(
        ids(index, &contact("c1")).await.is_empty(),
        "the old contact"
    );
    assert_eq!(ids(index, &contact("c2")).await, vec!["lc/9"]);
    let term = |t: &str| FindQuery {
        terms: strings(&[t]),
        ..query()
    };
    assert!(ids(index, &term("old")).await.is_empty(), "an old term");
    assert_eq!(ids(index, &term("new")).await, vec!["lc/9"]);
    let updated = FindQuery {
        updated_to: Some(ts(600)),
        ..query()
    };
    assert!(ids(index, &updated).await.is_empty(), "the old updated_at");
    assert_eq!(
        ids(index, &query()).await,
        vec!["lc/9"],
        "one document, not two"
    );
    assert_eq!(
        index.conversation_docs(&[cid("lc/9")]).await.unwrap(),
        vec![second],
        "the document reads back as written"
    );

    // The same id twice in one batch: the later one wins.
    let mut b = batch(3);
    let mut third = doc("lc/9", Some(500), 950);
    third.tags = strings(&["third"]);
    b.conversations.push(first);
    b.conversations.push(third.clone());
    apply(index, b).await;
    assert_eq!(
        index.conversation_docs(&[cid("lc/9")]).await.unwrap(),
        vec![third]
    );
}

/// Identity keys point at a contact, can be pointed elsewhere, and forgotten.
pub async fn identities_set_and_forget(index: &dyn FindIndex) {
    let keys = strings(&[
        "email:ann@example.com",
        "phone:+14155552671",
        "visitor:lc/v-1",
        "email:nobody@example.com",
    ]);
    assert!(
        index.identities(&keys).await.unwrap().is_empty(),
        "a fresh index"
    );
    let mut b = batch(1);
    b.identities = vec![
        ("email:ann@example.com".into(), Some("c1".into())),
        ("phone:+14155552671".into(), Some("c1".into())),
        ("visitor:lc/v-1".into(), Some("c2".into())),
    ];
    apply(index, b).await;
    let mut found = index.identities(&keys).await.unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("email:ann@example.com".into(), "c1".into()),
            ("phone:+14155552671".into(), "c1".into()),
            ("visitor:lc/v-1".into(), "c2".into()),
        ],
        "keys pointing nowhere are left out"
    );

    let mut b = batch(2);
    b.identities = vec![
        ("phone:+14155552671".into(), Some("c2".into())),
        ("email:ann@example.com".into(), None),
        ("email:gone@example.com".into(), None),
    ];
    apply(index, b).await;
    let mut found = index.identities(&keys).await.unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("phone:+14155552671".into(), "c2".into()),
            ("visitor:lc/v-1".into(), "c2".into()),
        ],
        "a key pointed elsewhere, one forgotten"
    );
    assert!(index.identities(&[]).await.unwrap().is_empty());

    // Set then forget in one batch: forgotten.
    let mut b = batch(3);
    b.identities = vec![
        ("visitor:lc/v-9".into(), Some("c9".into())),
        ("visitor:lc/v-9".into(), None),
    ];
    apply(index, b).await;
    assert!(
        index
            .identities(&strings(&["visitor:lc/v-9"]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Contacts read back whole, by id, by identity, by name terms, after an id, up to a limit.
pub async fn contacts_by_identity_name_and_after(index: &dyn FindIndex) {
    let mut ann = contact("c1", 1);
    ann.identities = ["email:ann@example.com", "phone:+14155552671"]
        .into_iter()
        .map(String::from)
        .collect();
    ann.names = ["Ann Smith", "Annie"]
        .into_iter()
        .map(String::from)
        .collect();
    ann.last_seen = Some(ts(1_000));
    let mut olga = contact("c12", 12);
    olga.identities = ["email:olga@example.ru", "visitor:lc/v-7"]
        .into_iter()
        .map(String::from)
        .collect();
    olga.names = ["Ольга Петрова"].into_iter().map(String::from).collect();
    olga.separated = ["c30".to_string()].into_iter().collect();
    let mut wang = contact("c30", 30);
    wang.identities = ["phone:+8613800138000".to_string()].into_iter().collect();
    wang.names = ["王小明".to_string(), "Ann Wang".to_string()]
        .into_iter()
        .collect();
    wang.separated = ["c12".to_string()].into_iter().collect();
    let mut merged = contact("c4", 4);
    merged.merged_into = Some("c1".into());
    let mut erased = contact("c5", 5);
    erased.erased_at = Some(ts(2_000));

    let mut b = batch(40);
    b.contacts = vec![
        ann.clone(),
        olga.clone(),
        wang.clone(),
        merged.clone(),
        erased.clone(),
    ];
    apply(index, b).await;

    assert_eq!(index.contact("c1").await.unwrap(), Some(ann.clone()));
    assert_eq!(index.contact("c12").await.unwrap(), Some(olga.clone()));
    assert_eq!(index.contact("c4").await.unwrap(), Some(merged.clone()));
    assert_eq!(index.contact("c5").await.unwrap(), Some(erased.clone()));
    assert_eq!(index.contact("c99").await.unwrap(), None);
    // Many at once: those that exist, each once, whatever the order asked.
    let ids = ["c5", "c99", "c1", "c4", "c1", "c12"].map(String::from);
    let mut many = index.contacts(&ids).await.unwrap();
    many.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        many,
        vec![ann.clone(), olga.clone(), merged.clone(), erased.clone()]
    );
    assert_eq!(index.contacts(&[]).await.unwrap(), Vec::new());

    let list =
        |identity: Option<&str>, names: &[&str], after: Option<&str>, limit: usize| ContactQuery {
            identity: identity.map(String::from),
            name_terms: names
                .iter()
                .flat_map(|n| normalize::query_terms(n))
                .collect(),
            limit,
            after: after.map(String::from),
        };
    let got = |records: Vec<ContactRecord>| -> Vec<String> {
        records.into_iter().map(|c| c.id).collect()
    };
    let cases: Vec<(&str, ContactQuery, Vec<&str>)> = vec![
        (
            "all, by id text",
            list(None, &[], None, 100),
            vec!["c1", "c12", "c30", "c4", "c5"],
        ),
        ("limit", list(None, &[], None, 2), vec!["c1", "c12"]),
        ("after", list(None, &[], Some("c12"), 2), vec!["c30", "c4"]),
        ("after the last", list(None, &[], Some("c5"), 10), vec![]),
        (
            "after an id not there",
            list(None, &[], Some("c2"), 10),
            vec!["c30", "c4", "c5"],
        ),
        (
            "identity",
            list(Some("email:ann@example.com"), &[], None, 10),
            vec!["c1"],
        ),
        (
            "identity visitor",
            list(Some("visitor:lc/v-7"), &[], None, 10),
            vec!["c12"],
        ),
        (
            "identity unknown",
            list(Some("email:x@example.com"), &[], None, 10),
            vec![],
        ),
        (
            "name word",
            list(None, &["ann"], None, 10),
            vec!["c1", "c30"],
        ),
        (
            "name words in one name",
            list(None, &["ann smith"], None, 10),
            vec!["c1"],
        ),
        (
            "name words in two names do not match",
            list(None, &["annie smith"], None, 10),
            vec![],
        ),
        (
            "Cyrillic name, folded",
            list(None, &["ОЛЬГА"], None, 10),
            vec!["c12"],
        ),
        ("Chinese name", list(None, &["小明"], None, 10), vec!["c30"]),
        (
            "identity and name",
            list(Some("phone:+8613800138000"), &["wang"], None, 10),
            vec!["c30"],
        ),
        (
            "identity and another's name",
            list(Some("phone:+8613800138000"), &["smith"], None, 10),
            vec![],
        ),
        (
            "name and after",
            list(None, &["ann"], Some("c1"), 10),
            vec!["c30"],
        ),
    ];
    for (name, query, want) in cases {
        assert_eq!(
            got(index.list_contacts(&query).await.unwrap()),
            want,
            "contacts: {name}"
        );
    }
    let whole = index
        .list_contacts(&list(Some("email:olga@example.ru"), &[], None, 10))
        .await
        .unwrap();
    assert_eq!(whole, vec![olga], "a listed contact reads back whole");

    // Replacing a contact: an identity it lost stops matching.
    let mut ann2 = ann.clone();
    ann2.identities.remove("phone:+14155552671");
    ann2.names.insert("Ann Jones".into());
    let mut b = batch(41);
    b.contacts.push(ann2.clone());
    apply(index, b).await;
    assert_eq!(index.contact("c1").await.unwrap(), Some(ann2));
    assert!(
        index
            .list_contacts(&list(Some("phone:+14155552671"), &[], None, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        got(index
            .list_contacts(&list(None, &["jones"], None, 10))
            .await
            .unwrap()),
        vec!["c1"]
    );
}

/// A contact's tickets: newest first, ties by id text descending, at most `limit`, over
/// several contacts; a ticket moved to another contact leaves.
pub async fn contact_tickets_newest_first(index: &dyn FindIndex) {
    let ticket = |id: &str, contact: Option<&str>, at: i64| TicketDoc {
        id: cid(id),
        contact: contact.map(String::from),
        updated_at: ts(at),
    };
    let mut b = batch(1);
    b.tickets = vec![
        ticket("lc/t1", Some("c1"), 100),
        ticket("lc/t2", Some("c1"), 300),
        ticket("zd/t3", Some("c1"), 300),
        ticket("lc/t4", Some("c2"), 200),
        ticket("lc/t5", None, 500),
        ticket("lc/t6", Some("c3"), 900),
    ];
    apply(index, b).await;
    let got = |tickets: Vec<TicketDoc>| -> Vec<String> {
        tickets.into_iter().map(|t| t.id.to_string()).collect()
    };
    assert_eq!(
        got(index.contact_tickets(&strings(&["c1"]), 10).await.unwrap()),
        vec!["zd/t3", "lc/t2", "lc/t1"]
    );
    assert_eq!(
        got(index
            .contact_tickets(&strings(&["c1", "c2"]), 10)
            .await
            .unwrap()),
        vec!["zd/t3", "lc/t2", "lc/t4", "lc/t1"]
    );
    assert_eq!(
        got(index
            .contact_tickets(&strings(&["c1", "c2"]), 2)
            .await
            .unwrap()),
        vec!["zd/t3", "lc/t2"]
    );
    assert!(
        index
            .contact_tickets(&strings(&["c9"]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let read = index.contact_tickets(&strings(&["c2"]), 10).await.unwrap();
    assert_eq!(
        read,
        vec![ticket("lc/t4", Some("c2"), 200)],
        "reads back whole"
    );

    let mut b = batch(2);
    b.tickets = vec![ticket("lc/t2", Some("c2"), 400)];
    apply(index, b).await;
    assert_eq!(
        got(index.contact_tickets(&strings(&["c1"]), 10).await.unwrap()),
        vec!["zd/t3", "lc/t1"]
    );
    assert_eq!(
        got(index.contact_tickets(&strings(&["c2"]), 10).await.unwrap()),
        vec!["lc/t2", "lc/t4"]
    );
}

/// The events remembered about conversations and tickets, ascending, each once.
pub async fn events_of_conversations_and_tickets(index: &dyn FindIndex) {
    let event = |s: u64, conversation: Option<&str>, ticket: Option<&str>| EventRef {
        sequence: Sequence(s),
        conversation: conversation.map(cid),
        ticket: ticket.map(cid),
    };
    let mut b = batch(4);
    b.events = vec![
        event(1, Some("lc/1"), None),
        event(2, Some("lc/2"), None),
        event(3, None, Some("lc/t1")),
        event(4, None, None),
    ];
    apply(index, b).await;
    let mut b = batch(8);
    b.events = vec![
        event(5, Some("lc/1"), None),
        event(6, None, Some("lc/t1")),
        event(7, Some("ss/1"), None),
        event(8, None, Some("lc/t2")),
    ];
    apply(index, b).await;
    let seqs = |v: &[u64]| v.iter().map(|s| Sequence(*s)).collect::<Vec<_>>();
    assert_eq!(
        index.events_of(&[cid("lc/1")], &[]).await.unwrap(),
        seqs(&[1, 5])
    );
    assert_eq!(
        index.events_of(&[], &[cid("lc/t1")]).await.unwrap(),
        seqs(&[3, 6])
    );
    assert_eq!(
        index
            .events_of(&[cid("lc/1"), cid("ss/1")], &[cid("lc/t1"), cid("lc/t2")])
            .await
            .unwrap(),
        seqs(&[1, 3, 5, 6, 7, 8])
    );
    assert_eq!(
        index.events_of(&[cid("lc/t1")], &[]).await.unwrap(),
        seqs(&[]),
        "a ticket id asked as a conversation is another thing"
    );
    assert!(index.events_of(&[], &[]).await.unwrap().is_empty());
    assert!(
        index
            .events_of(&[cid("lc/404")], &[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Terms made by [`normalize::terms`] of Latin, Cyrillic and Chinese text are found by
/// [`normalize::query_terms`] of queries in any case and accents.
pub async fn latin_cyrillic_and_chinese_terms(index: &dyn FindIndex) {
    let texts = [
        ("lc/fr", "Je voudrais un remboursement, café CRÈME froid"),
        ("lc/ru", "Здравствуйте! Ёлка не доставлена, верните деньги"),
        ("lc/zh", "你好，我想申请退款，订单号 A-17"),
        ("lc/en", "Hello, I want a refund for order A-17"),
    ];
    let mut b = batch(1);
    for (i, (id, text)) in texts.iter().enumerate() {
        let mut d = doc(id, Some(100 + i as i64), 100 + i as i64);
        let mut terms: Vec<String> = Vec::new();
        for t in normalize::terms(text) {
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        d.terms = terms;
        b.conversations.push(d);
    }
    apply(index, b).await;
    let text = |q: &str| FindQuery {
        terms: normalize::query_terms(q),
        ..query()
    };
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("CAFE creme", vec!["lc/fr"]),
        ("Café", vec!["lc/fr"]),
        ("елка", vec!["lc/ru"]),
        ("ЁЛКА деньги", vec!["lc/ru"]),
        ("ёлка refund", vec![]),
        ("退款", vec!["lc/zh"]),
        ("申请退款", vec!["lc/zh"]),
        ("退", vec!["lc/zh"]),
        ("款申", vec![]),
        ("a-17", vec!["lc/en", "lc/zh"]),
        ("REFUND", vec!["lc/en"]),
        ("订单 17", vec!["lc/zh"]),
    ];
    for (q, want) in cases {
        assert_eq!(ids(index, &text(q)).await, want, "text {q:?}");
    }
}

/// After [`FindIndex::purge`], every answer is what it was.
pub async fn purge_keeps_answers(index: &dyn FindIndex) {
    let mut b = batch(1);
    b.conversations = filter_docs();
    let mut c = contact("c1", 1);
    c.identities = ["email:ann@example.com".to_string()].into_iter().collect();
    c.names = ["Ann".to_string()].into_iter().collect();
    b.contacts = vec![c.clone(), contact("c2", 2)];
    b.identities = vec![("email:ann@example.com".into(), Some("c1".into()))];
    b.tickets = vec![TicketDoc {
        id: cid("lc/t1"),
        contact: Some("c1".into()),
        updated_at: ts(10),
    }];
    b.events = vec![EventRef {
        sequence: Sequence(1),
        conversation: Some(cid("lc/1")),
        ticket: None,
    }];
    apply(index, b).await;
    // Replace and forget some of it, so there is something to purge.
    let mut b = batch(2);
    let mut erased = contact("c2", 2);
    erased.erased_at = Some(ts(50));
    b.contacts = vec![erased];
    let mut blank = filter_docs().remove(1);
    blank.emails.clear();
    blank.terms.clear();
    blank.contact = None;
    b.conversations = vec![blank];
    b.identities = vec![("email:bob@example.com".into(), None)];
    apply(index, b).await;

    let snapshot = || async {
        let all_ids: Vec<ConversationId> = filter_docs().into_iter().map(|d| d.id).collect();
        (
            index.position().await.unwrap(),
            index.find_conversations(&query()).await.unwrap(),
            index
                .find_conversations(&FindQuery {
                    emails: strings(&["bob@example.com"]),
                    ..query()
                })
                .await
                .unwrap(),
            index
                .find_conversations(&FindQuery {
                    terms: strings(&["hello"]),
                    ..query()
                })
                .await
                .unwrap(),
            index.conversation_docs(&all_ids).await.unwrap(),
            index
                .list_contacts(&ContactQuery {
                    limit: 10,
                    ..ContactQuery::default()
                })
                .await
                .unwrap(),
            index
                .identities(&strings(&[
                    "email:ann@example.com",
                    "email:bob@example.com",
                ]))
                .await
                .unwrap(),
            index.contact_tickets(&strings(&["c1"]), 10).await.unwrap(),
            index.events_of(&all_ids, &[cid("lc/t1")]).await.unwrap(),
        )
    };
    let before = snapshot().await;
    assert!(before.2.is_empty(), "the replaced document lost its e-mail");
    assert_eq!(before.3.len(), 1, "and its terms");
    index.purge().await.expect("purge");
    let after = snapshot().await;
    assert_eq!(before, after, "purge changes no answer");
    let ids: BTreeSet<String> = after.1.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(ids.len(), 4);
}

/// After [`FindIndex::rest`] (twice, and before any batch), every answer is what it was, and
/// the next batch is applied as usual.
pub async fn rest_keeps_answers_and_the_next_batch_applies(index: &dyn FindIndex) {
    index.rest().await.expect("rest before any batch");
    let mut b = batch(3);
    b.conversations = vec![doc("lc/1", Some(10), 20), doc("lc/2", Some(30), 40)];
    apply(index, b).await;
    let before = ids(index, &query()).await;
    assert_eq!(before, vec!["lc/2", "lc/1"]);
    index.rest().await.expect("rest");
    index.rest().await.expect("rest again");
    assert_eq!(
        index.position().await.unwrap(),
        Sequence(3),
        "position after rest"
    );
    assert_eq!(ids(index, &query()).await, before, "answers after rest");
    let mut b = batch(5);
    b.conversations = vec![doc("lc/3", Some(50), 60)];
    apply(index, b).await;
    assert_eq!(
        index.position().await.unwrap(),
        Sequence(5),
        "the batch after rest"
    );
    assert_eq!(ids(index, &query()).await, vec!["lc/3", "lc/2", "lc/1"]);
    // A batch not past the position is still refused after a rest.
    index.rest().await.expect("rest");
    let mut stale = batch(4);
    stale.conversations = vec![doc("lc/4", Some(70), 80)];
    assert!(
        index.apply(stale).await.is_err(),
        "a stale batch after rest"
    );
    assert_eq!(ids(index, &query()).await, vec!["lc/3", "lc/2", "lc/1"]);
}
