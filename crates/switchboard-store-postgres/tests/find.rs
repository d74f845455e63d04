//! The finder's index on PostgreSQL (`PgFindIndex`) against a real database: what one index
//! finds and lists, what two replicas' indexes on one database see of each other, a batch that
//! fails midway, text in Chinese, Cyrillic and Latin, and the purge after an erasure.
//!
//! The database comes from `SWITCHBOARD_TEST_DATABASE_URL`, as for `tests/postgres.rs`: unset,
//! every test says it skipped and passes; set but unreachable, every test fails. Each test
//! works in a schema of its own, dropped when it passes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use switchboard_core::{ConnectionId, ConversationId, ConversationStatus, Sequence, Timestamp};
use switchboard_find::normalize;
use switchboard_find::{
    ContactQuery, ContactRecord, ConversationDoc, EventRef, FindIndex, FindQuery, IndexBatch,
    IndexError, TicketDoc,
};
use switchboard_store::Storage;
use switchboard_store_postgres::{PgFindIndex, PgStore};

mod support;

use support::{Schemas, admin, database_url};

/// Runs `test` on a runtime of its own with a database, or skips it.
fn with_database<F: Future<Output = ()>>(
    name: &str,
    limit: Duration,
    test: impl FnOnce(Schemas) -> F,
) {
    let Some(url) = database_url(name) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(limit, test(Schemas::new(url)))
            .await
            .is_err()
        {
            panic!("{name} did not finish within {limit:?}");
        }
    });
}

async fn open(url: &str) -> PgStore {
    PgStore::open(url)
        .await
        .unwrap_or_else(|e| panic!("opening the PostgreSQL store: {e}"))
}

fn id(text: &str) -> ConversationId {
    ConversationId::parse(text).unwrap()
}

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis).unwrap()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// A conversation document of `conversation`, sorted at `sort`, with the terms of `text`.
fn doc(conversation: &str, sort: i64, text: &str) -> ConversationDoc {
    let mut terms = normalize::terms(text);
    terms.sort();
    terms.dedup();
    ConversationDoc {
        id: id(conversation),
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
        terms,
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
        limit: 50,
        ..FindQuery::default()
    }
}

/// The ids `query` finds, in order.
async fn found(index: &PgFindIndex, query: &FindQuery) -> Vec<String> {
    index
        .find_conversations(query)
        .await
        .expect("finding conversations")
        .into_iter()
        .map(|(_, id)| id.to_string())
        .collect()
}

fn text_query(text: &str) -> FindQuery {
    FindQuery {
        terms: normalize::query_terms(text),
        ..query()
    }
}

/// One batch: conversations and contacts with their identities, the events of each
/// conversation.
fn first_batch() -> IndexBatch {
    let mut a = doc("livechat/A1", 1_000, "Hello, I need a refund for order 17");
    a.contact = Some("c1".into());
    a.emails = strings(&["jane@example.com"]);
    a.phones = strings(&["+14155552671"]);
    a.visitor_ids = strings(&["v-jane"]);
    a.agent_ids = strings(&["agent-1"]);
    a.tags = strings(&["vip", "refund"]);
    let mut b = doc("smartsupp/B1", 2_000, "Where is my parcel?");
    b.contact = Some("c1".into());
    b.emails = strings(&["jane@example.com"]);
    b.agent_ids = strings(&["agent-2"]);
    b.tags = strings(&["shipping"]);
    b.vendor = "smartsupp".into();
    b.status = ConversationStatus::Closed;
    let mut c = doc(
        "livechat/C1",
        3_000,
        "Bonjour, ma commande est arrivée cassée",
    );
    c.contact = Some("c5".into());
    c.emails = strings(&["pierre@example.fr"]);
    c.visitor_ids = strings(&["v-pierre"]);
    c.agent_ids = strings(&["agent-1"]);
    IndexBatch {
        position: Sequence(6),
        conversations: vec![a, b, c],
        tickets: vec![
            TicketDoc {
                id: id("zendesk/T1"),
                contact: Some("c1".into()),
                updated_at: at(5_000),
            },
            TicketDoc {
                id: id("zendesk/T2"),
                contact: Some("c1".into()),
                updated_at: at(6_000),
            },
        ],
        contacts: vec![
            contact(
                "c1",
                1,
                &[
                    "email:jane@example.com",
                    "phone:+14155552671",
                    "visitor:livechat/v-jane",
                ],
                &["Jane Doe"],
            ),
            contact(
                "c5",
                5,
                &["email:pierre@example.fr", "visitor:livechat/v-pierre"],
                &["Pierre Dupont"],
            ),
        ],
        identities: vec![
            ("email:jane@example.com".into(), Some("c1".into())),
            ("phone:+14155552671".into(), Some("c1".into())),
            ("visitor:livechat/v-jane".into(), Some("c1".into())),
            ("email:pierre@example.fr".into(), Some("c5".into())),
            ("visitor:livechat/v-pierre".into(), Some("c5".into())),
        ],
        events: vec![
            EventRef {
                sequence: Sequence(1),
                conversation: Some(id("livechat/A1")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(2),
                conversation: Some(id("smartsupp/B1")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(3),
                conversation: Some(id("livechat/A1")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(4),
                conversation: None,
                ticket: Some(id("zendesk/T1")),
            },
            EventRef {
                sequence: Sequence(5),
                conversation: Some(id("livechat/C1")),
                ticket: None,
            },
            EventRef {
                sequence: Sequence(6),
                conversation: None,
                ticket: Some(id("zendesk/T2")),
            },
        ],
    }
}

#[test]
fn a_fresh_index_is_empty_and_a_batch_is_found_by_every_filter() {
    with_database(
        "a_fresh_index_is_empty_and_a_batch_is_found_by_every_filter",
        Duration::from_secs(120),
        |schemas| async move {
            let url = schemas.fresh().await;
            let store = open(&url).await;
            let index = store.find_index();
            assert_eq!(index.backend(), "postgres");
            assert_eq!(index.position().await.unwrap(), Sequence(0));
            assert!(found(&index, &query()).await.is_empty());

            let batch = first_batch();
            index.apply(batch.clone()).await.unwrap();
            assert_eq!(index.position().await.unwrap(), Sequence(6));

            // Newest first; ties by id descending (bytes of `connection/external id`).
            assert_eq!(
                found(&index, &query()).await,
                ["livechat/C1", "smartsupp/B1", "livechat/A1"]
            );
            let by = |f: fn(&mut FindQuery)| {
                let mut q = query();
                f(&mut q);
                q
            };
            assert_eq!(
                found(&index, &by(|q| q.emails = strings(&["jane@example.com"]))).await,
                ["smartsupp/B1", "livechat/A1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.emails = strings(&["JANE@example.com"]))).await,
                Vec::<String>::new(),
                "values arrive normalized"
            );
            assert_eq!(
                found(&index, &by(|q| q.phones = strings(&["+14155552671"]))).await,
                ["livechat/A1"]
            );
            assert_eq!(
                found(
                    &index,
                    &by(|q| q.visitor_ids = strings(&["v-pierre", "v-jane"]))
                )
                .await,
                ["livechat/C1", "livechat/A1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.agent_ids = strings(&["agent-1"]))).await,
                ["livechat/C1", "livechat/A1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.tags = strings(&["shipping", "vip"]))).await,
                ["smartsupp/B1", "livechat/A1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.contacts = strings(&["c1"]))).await,
                ["smartsupp/B1", "livechat/A1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.contacts = strings(&["c5", "c1"]))).await,
                ["livechat/C1", "smartsupp/B1", "livechat/A1"]
            );
            assert_eq!(
                found(
                    &index,
                    &by(|q| q.connections = vec![ConnectionId::new("smartsupp").unwrap()])
                )
                .await,
                ["smartsupp/B1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.vendors = strings(&["livechat"]))).await,
                ["livechat/C1", "livechat/A1"]
            );
            assert_eq!(
                found(
                    &index,
                    &by(|q| q.statuses = vec![ConversationStatus::Closed])
                )
                .await,
                ["smartsupp/B1"]
            );
            assert_eq!(
                found(
                    &index,
                    &by(|q| {
                        q.started_from = Some(at(2_000));
                        q.started_to = Some(at(3_000));
                    })
                )
                .await,
                ["smartsupp/B1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.updated_from = Some(at(2_010)))).await,
                ["livechat/C1", "smartsupp/B1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.updated_to = Some(at(2_010)))).await,
                ["livechat/A1"]
            );
            // Different filters all hold.
            assert_eq!(
                found(
                    &index,
                    &by(|q| {
                        q.agent_ids = strings(&["agent-1"]);
                        q.emails = strings(&["jane@example.com"]);
                    })
                )
                .await,
                ["livechat/A1"]
            );
            assert_eq!(
                found(
                    &index,
                    &by(|q| {
                        q.agent_ids = strings(&["agent-2"]);
                        q.tags = strings(&["vip"]);
                    })
                )
                .await,
                Vec::<String>::new()
            );
            // Text: every term must match.
            assert_eq!(
                found(&index, &text_query("REFUND order")).await,
                ["livechat/A1"]
            );
            assert_eq!(
                found(&index, &text_query("refund parcel")).await,
                Vec::<String>::new()
            );
            assert_eq!(
                found(&index, &text_query("arrivee CASSÉE")).await,
                ["livechat/C1"]
            );
            assert_eq!(
                found(
                    &index,
                    &FindQuery {
                        contacts: strings(&["c1"]),
                        ..text_query("parcel")
                    }
                )
                .await,
                ["smartsupp/B1"]
            );

            // Pages: strictly after the last of the previous one.
            let mut page = query();
            page.limit = 2;
            let first = index.find_conversations(&page).await.unwrap();
            assert_eq!(first.len(), 2);
            page.after = first.last().cloned();
            assert_eq!(found(&index, &page).await, ["livechat/A1"]);
            page.limit = 0;
            page.after = None;
            assert!(found(&index, &page).await.is_empty());

            // Documents come back as written (terms as a set, in byte order).
            let mut ids = vec![id("livechat/A1"), id("livechat/C1"), id("nowhere/X")];
            ids.reverse();
            let mut docs = index.conversation_docs(&ids).await.unwrap();
            docs.sort_by(|a, b| a.id.cmp(&b.id));
            let mut expected: Vec<ConversationDoc> = batch
                .conversations
                .iter()
                .filter(|d| d.id.external_id != "B1")
                .cloned()
                .collect();
            expected.sort_by(|a, b| a.id.cmp(&b.id));
            assert_eq!(docs, expected);

            // Identities, contacts, tickets and events.
            let keys = strings(&[
                "email:jane@example.com",
                "visitor:livechat/v-pierre",
                "email:nobody@example.com",
            ]);
            let mut pointed = index.identities(&keys).await.unwrap();
            pointed.sort();
            assert_eq!(
                pointed,
                vec![
                    ("email:jane@example.com".to_string(), "c1".to_string()),
                    ("visitor:livechat/v-pierre".to_string(), "c5".to_string())
                ]
            );
            assert_eq!(
                index.contact("c1").await.unwrap(),
                Some(batch.contacts[0].clone())
            );
            assert_eq!(index.contact("c2").await.unwrap(), None);
            let listed = index
                .list_contacts(&ContactQuery {
                    limit: 10,
                    ..ContactQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(listed, batch.contacts);
            let listed = index
                .list_contacts(&ContactQuery {
                    limit: 10,
                    after: Some("c1".into()),
                    ..ContactQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(listed, vec![batch.contacts[1].clone()]);
            let listed = index
                .list_contacts(&ContactQuery {
                    limit: 10,
                    identity: Some("email:pierre@example.fr".into()),
                    ..ContactQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(listed, vec![batch.contacts[1].clone()]);
            let listed = index
                .list_contacts(&ContactQuery {
                    limit: 10,
                    name_terms: normalize::query_terms("DUPONT"),
                    ..ContactQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(listed, vec![batch.contacts[1].clone()]);
            let tickets = index.contact_tickets(&strings(&["c1"]), 10).await.unwrap();
            assert_eq!(
                tickets,
                vec![batch.tickets[1].clone(), batch.tickets[0].clone()]
            );
            assert_eq!(
                index.contact_tickets(&strings(&["c1"]), 1).await.unwrap(),
                vec![batch.tickets[1].clone()]
            );
            assert_eq!(
                index
                    .events_of(&[id("livechat/A1")], &[id("zendesk/T2")])
                    .await
                    .unwrap(),
                vec![Sequence(1), Sequence(3), Sequence(6)]
            );
            assert!(index.events_of(&[], &[]).await.unwrap().is_empty());

            // A later batch replaces documents and forgets identities.
            let mut moved = batch.conversations[0].clone();
            moved.contact = Some("c5".into());
            moved.tags = strings(&["vip"]);
            index
                .apply(IndexBatch {
                    position: Sequence(7),
                    conversations: vec![moved],
                    identities: vec![("phone:+14155552671".into(), None)],
                    ..IndexBatch::default()
                })
                .await
                .unwrap();
            assert_eq!(
                found(&index, &by(|q| q.contacts = strings(&["c1"]))).await,
                ["smartsupp/B1"]
            );
            assert_eq!(
                found(&index, &by(|q| q.tags = strings(&["refund"]))).await,
                Vec::<String>::new()
            );
            assert!(
                index
                    .identities(&strings(&["phone:+14155552671"]))
                    .await
                    .unwrap()
                    .is_empty()
            );

            store.close_within(Duration::from_secs(10)).await.unwrap();
            assert!(
                matches!(index.position().await, Err(IndexError::Unavailable(_))),
                "a closed store's index is unavailable"
            );
            schemas.drop_all().await;
        },
    );
}

/// The shared suite of every `FindIndex` (crates/switchboard-find/src/suite.rs), each case on
/// a fresh schema.
#[test]
fn the_postgres_index_keeps_every_promise_of_the_shared_suite() {
    with_database(
        "the_postgres_index_keeps_every_promise_of_the_shared_suite",
        Duration::from_secs(300),
        |schemas| async move {
            switchboard_find::suite::run_all(|| async {
                let url = schemas.fresh().await;
                let store = open(&url).await;
                (store.find_index(), store)
            })
            .await;
            schemas.drop_all().await;
        },
    );
}

#[test]
fn two_indexes_on_one_database_see_each_others_batches() {
    with_database(
        "two_indexes_on_one_database_see_each_others_batches",
        Duration::from_secs(120),
        |schemas| async move {
            let url = schemas.fresh().await;
            let (first, second) = (open(&url).await, open(&url).await);
            let (a, b) = (first.find_index(), second.find_index());
            a.apply(first_batch()).await.unwrap();
            assert_eq!(b.position().await.unwrap(), Sequence(6));
            assert_eq!(found(&b, &text_query("refund")).await, ["livechat/A1"]);
            assert_eq!(
                b.contact("c5").await.unwrap().map(|c| c.id),
                Some("c5".to_string())
            );

            // The lease moved: the second replica's finder writes on from where the first left.
            b.apply(IndexBatch {
                position: Sequence(8),
                conversations: vec![doc("livechat/D1", 4_000, "Ещё один вопрос")],
                ..IndexBatch::default()
            })
            .await
            .unwrap();
            assert_eq!(a.position().await.unwrap(), Sequence(8));
            assert_eq!(found(&a, &text_query("еще вопрос")).await, ["livechat/D1"]);

            // A finder that fell behind (an old lease holder) cannot move the index back.
            let stale = a
                .apply(IndexBatch {
                    position: Sequence(7),
                    conversations: vec![doc("livechat/E1", 5_000, "stale")],
                    ..IndexBatch::default()
                })
                .await;
            assert!(
                matches!(stale, Err(IndexError::Unavailable(ref why)) if why.contains("not before this batch")),
                "{stale:?}"
            );
            assert_eq!(b.position().await.unwrap(), Sequence(8));
            assert!(found(&b, &text_query("stale")).await.is_empty());
            schemas.drop_all().await;
        },
    );
}

#[test]
fn a_batch_that_fails_midway_leaves_the_position_and_the_rows_as_they_were() {
    with_database(
        "a_batch_that_fails_midway_leaves_the_position_and_the_rows_as_they_were",
        Duration::from_secs(120),
        |schemas| async move {
            let url = schemas.fresh().await;
            let store = open(&url).await;
            let index = store.find_index();
            let batch = first_batch();
            index.apply(batch.clone()).await.unwrap();

            // The database refuses the one contact `cboom`: written after the batch's
            // conversations and tickets, before its identities, events and position.
            let client = admin(&url).await;
            client.batch_execute(
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.id = convert_to('cboom', 'UTF8') THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_boom BEFORE INSERT OR UPDATE ON sb_find_contacts FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
        ).await.unwrap();
            let mut changed = batch.conversations[0].clone();
            changed.terms = strings(&["changed"]);
            changed.contact = Some("cboom".into());
            let failing = IndexBatch {
                position: Sequence(9),
                conversations: vec![changed, doc("livechat/N1", 9_000, "new conversation")],
                tickets: vec![TicketDoc {
                    id: id("zendesk/T1"),
                    contact: Some("cboom".into()),
                    updated_at: at(9_000),
                }],
                contacts: vec![
                    contact("c1", 1, &[], &["Changed"]),
                    contact("cboom", 7, &["email:boom@example.com"], &[]),
                    contact("c8", 8, &[], &[]),
                ],
                identities: vec![
                    ("email:jane@example.com".into(), Some("cboom".into())),
                    ("email:pierre@example.fr".into(), None),
                ],
                events: vec![
                    EventRef {
                        sequence: Sequence(1),
                        conversation: Some(id("livechat/N1")),
                        ticket: None,
                    },
                    EventRef {
                        sequence: Sequence(9),
                        conversation: Some(id("livechat/A1")),
                        ticket: None,
                    },
                ],
            };
            let error = index.apply(failing.clone()).await.unwrap_err();
            assert!(error.to_string().contains("refused by the test"), "{error}");

            assert_eq!(index.position().await.unwrap(), Sequence(6));
            assert_eq!(
                found(&index, &query()).await,
                ["livechat/C1", "smartsupp/B1", "livechat/A1"]
            );
            assert!(found(&index, &text_query("changed")).await.is_empty());
            let docs = index.conversation_docs(&[id("livechat/A1")]).await.unwrap();
            assert_eq!(docs, vec![batch.conversations[0].clone()]);
            assert_eq!(
                index
                    .contact_tickets(&strings(&["c1"]), 10)
                    .await
                    .unwrap()
                    .len(),
                2
            );
            assert!(
                index
                    .contact_tickets(&strings(&["cboom"]), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                index.contact("c1").await.unwrap(),
                Some(batch.contacts[0].clone())
            );
            assert_eq!(index.contact("c8").await.unwrap(), None);
            let keys = strings(&["email:jane@example.com", "email:pierre@example.fr"]);
            let mut pointed = index.identities(&keys).await.unwrap();
            pointed.sort();
            assert_eq!(
                pointed,
                vec![
                    ("email:jane@example.com".to_string(), "c1".to_string()),
                    ("email:pierre@example.fr".to_string(), "c5".to_string())
                ]
            );
            assert_eq!(
                index
                    .events_of(&[id("livechat/A1"), id("livechat/N1")], &[])
                    .await
                    .unwrap(),
                vec![Sequence(1), Sequence(3)]
            );

            // Once the database takes it, the same batch applies whole.
            client
                .batch_execute("DROP TRIGGER refuse_boom ON sb_find_contacts")
                .await
                .unwrap();
            index.apply(failing).await.unwrap();
            assert_eq!(index.position().await.unwrap(), Sequence(9));
            assert_eq!(found(&index, &text_query("changed")).await, ["livechat/A1"]);
            assert_eq!(
                index.events_of(&[id("livechat/N1")], &[]).await.unwrap(),
                vec![Sequence(1)]
            );
            schemas.drop_all().await;
        },
    );
}

#[test]
fn chinese_cyrillic_and_latin_text_round_trips() {
    with_database(
        "chinese_cyrillic_and_latin_text_round_trips",
        Duration::from_secs(120),
        |schemas| async move {
            let url = schemas.fresh().await;
            let store = open(&url).await;
            let index = store.find_index();
            let texts = [
                ("tencent/ZH", "我想申请退款，订单号是 A-17"),
                ("jivo/RU", "Ёлка стоит в углу. Здравствуйте, Пётр!"),
                (
                    "livechat/FR",
                    "Café crème, s'il vous plaît; naïve question \\ o'clock",
                ),
                ("livechat/MIX", "退货 and Ёжик and Crème brûlée"),
            ];
            let docs: Vec<ConversationDoc> = texts
                .iter()
                .enumerate()
                .map(|(i, (c, t))| doc(c, 1_000 + i as i64, t))
                .collect();
            index
                .apply(IndexBatch {
                    position: Sequence(4),
                    conversations: docs.clone(),
                    ..IndexBatch::default()
                })
                .await
                .unwrap();

            for (text, expected) in [
                ("退款", &["tencent/ZH"][..]),
                ("申请退款", &["tencent/ZH"]),
                ("退", &["livechat/MIX", "tencent/ZH"]),
                ("退货", &["livechat/MIX"]),
                ("款退", &[]),
                ("ЁЛКА", &["jivo/RU"]),
                ("елка", &["jivo/RU"]),
                ("петр здравствуите", &["jivo/RU"]),
                ("ежик", &["livechat/MIX"]),
                ("CAFE creme", &["livechat/FR"]),
                ("crème", &["livechat/MIX", "livechat/FR"]),
                ("brulee 退货 ёжик", &["livechat/MIX"]),
                ("s il", &["livechat/FR"]),
                ("o clock", &["livechat/FR"]),
                ("a 17", &["tencent/ZH"]),
                ("plait naive", &["livechat/FR"]),
                ("plaits", &[]),
            ] {
                assert_eq!(
                    found(&index, &text_query(text)).await,
                    expected,
                    "query {text:?}"
                );
            }
            // Quotes, backslashes and tsquery syntax in a term are lexemes like any other: no
            // normalized term has them, so they match nothing and break nothing.
            for odd in ["it's", "a\\b", "x:*", "!", "a & b", "'"] {
                let q = FindQuery {
                    terms: vec![odd.to_string()],
                    ..query()
                };
                assert!(found(&index, &q).await.is_empty(), "{odd:?}");
            }
            // A term longer than any lexeme: found nowhere, refused by nothing.
            let q = FindQuery {
                terms: vec!["ж".repeat(2000)],
                ..query()
            };
            assert!(found(&index, &q).await.is_empty());

            // The documents come back with the same terms, byte for byte.
            let ids: Vec<ConversationId> = docs.iter().map(|d| d.id.clone()).collect();
            let mut back = index.conversation_docs(&ids).await.unwrap();
            back.sort_by(|a, b| a.id.cmp(&b.id));
            let mut expected = docs.clone();
            expected.sort_by(|a, b| a.id.cmp(&b.id));
            assert_eq!(back, expected);

            // Contacts are listed by the terms of a name in any of the three.
            index
                .apply(IndexBatch {
                    position: Sequence(5),
                    contacts: vec![
                        contact("c1", 1, &[], &["王小明"]),
                        contact("c2", 2, &[], &["Пётр Иванов", "Peter"]),
                        contact("c3", 3, &[], &["Zoë Ivanova"]),
                    ],
                    ..IndexBatch::default()
                })
                .await
                .unwrap();
            let names = |text: &str| ContactQuery {
                name_terms: normalize::query_terms(text),
                limit: 10,
                ..ContactQuery::default()
            };
            let ids = |list: Vec<ContactRecord>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
            assert_eq!(
                ids(index.list_contacts(&names("小明")).await.unwrap()),
                ["c1"]
            );
            assert_eq!(
                ids(index.list_contacts(&names("ПЕТР иванов")).await.unwrap()),
                ["c2"]
            );
            assert_eq!(
                ids(index.list_contacts(&names("zoe")).await.unwrap()),
                ["c3"]
            );
            // Both terms are among c2's names, but not in one name.
            assert!(
                index
                    .list_contacts(&names("peter иванов"))
                    .await
                    .unwrap()
                    .is_empty()
            );
            // A name word longer than any lexeme is not in the tsvector, and still found.
            let long = "ы".repeat(1100);
            index
                .apply(IndexBatch {
                    position: Sequence(6),
                    contacts: vec![contact("c4", 4, &[], &[&format!("Long {long}")])],
                    ..IndexBatch::default()
                })
                .await
                .unwrap();
            assert_eq!(
                ids(index.list_contacts(&names(&long)).await.unwrap()),
                ["c4"]
            );
            assert_eq!(
                ids(index.list_contacts(&names("long")).await.unwrap()),
                ["c4"]
            );
            schemas.drop_all().await;
        },
    );
}

/// Whether the data directory's files can be read from here (the database on this machine,
/// this process allowed to read them).
async fn relation_files(
    client: &tokio_postgres::Client,
    tables: &[&str],
) -> Option<Vec<std::path::PathBuf>> {
    let dir: String = client
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .ok()?
        .get(0);
    let mut files = Vec::new();
    let rows = client
        .query(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace AND (c.relname = ANY($1) \
             OR c.oid IN (SELECT indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = ANY($1) AND t.relnamespace = current_schema()::regnamespace))",
            &[&tables.iter().map(|t| t.to_string()).collect::<Vec<_>>()],
        )
        .await
        .ok()?;
    for row in rows {
        let Some(path) = row.get::<_, Option<String>>(0) else {
            continue;
        };
        files.push(std::path::Path::new(&dir).join(path));
    }
    std::fs::metadata(files.first()?).ok()?;
    Some(files)
}

fn files_holding(files: &[std::path::PathBuf], needle: &str) -> Vec<std::path::PathBuf> {
    files
        .iter()
        .filter(|f| {
            std::fs::read(f)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

#[test]
fn purge_leaves_no_erased_value_in_the_tables_or_their_indexes() {
    with_database(
        "purge_leaves_no_erased_value_in_the_tables_or_their_indexes",
        Duration::from_secs(180),
        |schemas| async move {
            let url = schemas.fresh().await;
            let store = open(&url).await;
            let index = store.find_index();
            let secret_email = "zorglub.secret@example.org";
            let secret_word = "zorglubword";
            let mut batch = first_batch();
            batch.conversations[0].emails = vec![secret_email.into()];
            batch.conversations[0].terms.push(secret_word.into());
            batch.conversations[0].terms.sort();
            batch.contacts[0]
                .identities
                .insert(format!("email:{secret_email}"));
            batch.contacts[0].names.insert("Zorglubname Secret".into());
            batch
                .identities
                .push((format!("email:{secret_email}"), Some("c1".into())));
            index.apply(batch.clone()).await.unwrap();
            assert_eq!(
                found(&index, &text_query(secret_word)).await,
                ["livechat/A1"]
            );

            // The erasure as the finder applies it: documents rebuilt without the values, the
            // contact's record redacted, its keys forgotten.
            let mut erased = batch.conversations[0].clone();
            erased.emails.clear();
            erased.terms.retain(|t| t != secret_word);
            let mut record = batch.contacts[0].clone();
            record.identities = BTreeSet::new();
            record.names = BTreeSet::new();
            record.erased_at = Some(at(10_000));
            index
                .apply(IndexBatch {
                    position: Sequence(7),
                    conversations: vec![erased],
                    contacts: vec![record],
                    identities: batch.contacts[0]
                        .identities
                        .iter()
                        .map(|k| (k.clone(), None))
                        .collect(),
                    ..IndexBatch::default()
                })
                .await
                .unwrap();
            index.purge().await.unwrap();

            assert!(found(&index, &text_query(secret_word)).await.is_empty());
            assert!(
                found(
                    &index,
                    &FindQuery {
                        emails: vec![secret_email.into()],
                        ..query()
                    }
                )
                .await
                .is_empty()
            );
            let client = admin(&url).await;
            for table in [
                "sb_find_conversations",
                "sb_find_contacts",
                "sb_find_identities",
            ] {
                let rows = client
                .query(&format!("SELECT 1 FROM {table} t WHERE strpos(t::text, $1) > 0 OR strpos(t::text, $2) > 0 OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0"), &[&"zorglub", &"Zorglub"])
                .await
                .unwrap();
                assert!(rows.is_empty(), "{table} still holds the erased values");
            }
            // The purge ran outside any transaction and the pool's connection is usable after it,
            // with its statement timeout back.
            index
                .apply(IndexBatch {
                    position: Sequence(8),
                    ..IndexBatch::default()
                })
                .await
                .unwrap();

            // On the same machine as the database, its files are read too: neither the heap nor
            // any index (GIN keeps a key after its last row is gone, until rebuilt) holds them.
            client.batch_execute("CHECKPOINT").await.unwrap();
            let tables = [
                "sb_find_conversations",
                "sb_find_contacts",
                "sb_find_identities",
            ];
            match relation_files(&client, &tables).await {
                Some(files) => {
                    assert!(files.len() >= 10, "{files:?}");
                    for needle in ["zorglub", "Zorglub"] {
                        let holding = files_holding(&files, needle);
                        assert!(holding.is_empty(), "{needle} is still in {holding:?}");
                    }
                }
                None => eprintln!(
                    "the database's files cannot be read from here: only checked through SQL"
                ),
            }
            schemas.drop_all().await;
        },
    );
}

/// Fills the index with `count` conversations (generated in the database, in batches) and
/// measures the first page of a text query, an e-mail, a contact's conversations.
/// `cargo test -p switchboard-store-postgres --test find --release -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: a million rows take minutes to write"]
fn first_pages_at_a_million_conversations() {
    with_database(
        "first_pages_at_a_million_conversations",
        Duration::from_secs(3600),
        |schemas| async move {
            let count: i64 = std::env::var("FIND_BENCH_CONVERSATIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000_000);
            let url = schemas.fresh().await;
            let store = open(&url).await;
            let index = store.find_index();
            let client = admin(&url).await;
            let started = Instant::now();
            // 2,000 words (w0 common ... w1999 rare, Zipf-like), 30 per conversation, Cyrillic
            // and Chinese among them; one contact per 5 conversations.
            client
                .batch_execute("SET maintenance_work_mem = '256MB'")
                .await
                .unwrap();
            let step = 100_000;
            let mut from = 0;
            while from < count {
                let to = (from + step).min(count);
                client.execute(
                "INSERT INTO sb_find_conversations (id, connection, vendor, status, sort_key, started_at, updated_at, contact, emails, phones, visitor_ids, agent_ids, tags, term_list, terms) \
                 SELECT convert_to('livechat/' || g, 'UTF8'), 'livechat', convert_to('livechat', 'UTF8'), 'closed', \
                 1700000000000 + g * 1000, 1700000000000 + g * 1000, 1700000000000 + g * 1000 + 5, \
                 convert_to('c' || (g / 5), 'UTF8'), ARRAY[convert_to('user' || (g / 5) || '@example.com', 'UTF8')], ARRAY[]::bytea[], \
                 ARRAY[convert_to('v' || g, 'UTF8')], ARRAY[convert_to('agent-' || (g % 50), 'UTF8')], ARRAY[convert_to('tag-' || (g % 20), 'UTF8')], \
                 (SELECT array_agg(convert_to(word, 'UTF8')) FROM unnest(words) word), array_to_tsvector(words) \
                 FROM generate_series($1::bigint, $2::bigint - 1) g, \
                 LATERAL (SELECT ARRAY(SELECT DISTINCT (CASE WHEN k % 7 = 0 THEN 'слово' WHEN k % 11 = 0 THEN '退款' ELSE 'w' END) || floor(2000 * power(random(), 3))::int FROM generate_series(1, 30 + 0 * g) k) \
                 || CASE WHEN g % 100000 = 7 THEN ARRAY['needle'] ELSE ARRAY[]::text[] END AS words) AS generated",
                &[&from, &to],
            ).await.unwrap();
                from = to;
            }
            client
                .batch_execute("ANALYZE sb_find_conversations")
                .await
                .unwrap();
            eprintln!(
                "{count} conversations written and analyzed in {:.1?}",
                started.elapsed()
            );

            async fn p99(
                index: &PgFindIndex,
                query: &FindQuery,
                runs: usize,
            ) -> (Duration, Duration, usize) {
                let mut times = Vec::with_capacity(runs);
                let mut n = 0;
                for _ in 0..runs {
                    let t = Instant::now();
                    n = index.find_conversations(query).await.unwrap().len();
                    times.push(t.elapsed());
                }
                times.sort();
                (times[runs / 2], times[(runs * 99).div_ceil(100) - 1], n)
            }
            let page = |f: &dyn Fn(&mut FindQuery)| {
                let mut q = FindQuery {
                    limit: 51,
                    ..FindQuery::default()
                };
                f(&mut q);
                q
            };
            let cases: Vec<(&str, FindQuery)> = vec![
                ("text: a common word", page(&|q| q.terms = strings(&["w0"]))),
                (
                    "text: a middling word",
                    page(&|q| q.terms = strings(&["w60"])),
                ),
                (
                    "text: a rare word (0.4 %)",
                    page(&|q| q.terms = strings(&["w1999"])),
                ),
                (
                    "text: a word in 0.6 %",
                    page(&|q| q.terms = strings(&["w1000"])),
                ),
                (
                    "text: a word in 1.4 %",
                    page(&|q| q.terms = strings(&["w300"])),
                ),
                (
                    "text: a word in 10 old ones",
                    page(&|q| q.terms = strings(&["needle"])),
                ),
                (
                    "text: a page deep down",
                    page(&|q| {
                        q.terms = strings(&["w0"]);
                        q.after = Some((
                            at(1_700_000_000_000 + 1000 * 1000),
                            ConversationId::parse("livechat/1000").unwrap(),
                        ));
                    }),
                ),
                (
                    "text in one connection",
                    page(&|q| {
                        q.terms = strings(&["w5"]);
                        q.connections = vec![ConnectionId::new("livechat").unwrap()];
                    }),
                ),
                (
                    "text: two words",
                    page(&|q| q.terms = strings(&["w5", "w90"])),
                ),
                (
                    "text: Cyrillic and Chinese",
                    page(&|q| q.terms = strings(&["слово3", "退款5"])),
                ),
                (
                    "text: a word nowhere",
                    page(&|q| q.terms = strings(&["nowhere"])),
                ),
                (
                    "text and a tag",
                    page(&|q| {
                        q.terms = strings(&["w40"]);
                        q.tags = strings(&["tag-3"]);
                    }),
                ),
                (
                    "a contact's conversations",
                    page(&|q| q.contacts = strings(&["c123456"])),
                ),
                (
                    "two contacts (a merge)",
                    page(&|q| q.contacts = strings(&["c123456", "c98765"])),
                ),
                (
                    "an e-mail",
                    page(&|q| q.emails = strings(&["user4242@example.com"])),
                ),
                ("an agent", page(&|q| q.agent_ids = strings(&["agent-7"]))),
            ];
            for (name, query) in &cases {
                let (median, p99, n) = p99(&index, query, 200).await;
                eprintln!("{name:32} {n:3} found  median {median:>9.2?}  p99 {p99:>9.2?}");
            }
            let size: i64 = client
                .query_one(
                    "SELECT pg_total_relation_size('sb_find_conversations')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            eprintln!(
                "sb_find_conversations with its indexes: {} MB",
                size / 1_000_000
            );

            // Upkeep: batches of 1,000 new documents of 30 words each and their 10,000 events
            // through `apply`, on top of the million.
            let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
            let started = Instant::now();
            let batches = 20u64;
            for b in 0..batches {
                let conversations = (0..1000u64)
                    .map(|i| {
                        let n = b * 1000 + i;
                        let mut d = doc(&format!("fresh/{n}"), 1_800_000_000_000 + n as i64, "");
                        d.contact = Some(format!("c{}", 300_000 + n / 5));
                        d.emails = vec![format!("fresh{}@example.com", n / 5)];
                        d.agent_ids = vec![format!("agent-{}", n % 50)];
                        d.terms = (0..30)
                            .map(|k| words[((n * 31 + k * 17) % 2000) as usize].clone())
                            .collect();
                        d
                    })
                    .collect();
                index
                    .apply(IndexBatch {
                        position: Sequence(10_000_000 + b),
                        events: (0..10_000u64)
                            .map(|e| EventRef {
                                sequence: Sequence(1_000_000 + (b * 10_000) + e),
                                conversation: Some(id(&format!("fresh/{}", b * 1000 + e / 10))),
                                ticket: None,
                            })
                            .collect(),
                        conversations,
                        ..IndexBatch::default()
                    })
                    .await
                    .unwrap();
            }
            let elapsed = started.elapsed();
            eprintln!(
                "apply: {} documents (10 events each) in {elapsed:.1?}, {:.0} documents/s",
                batches * 1000,
                (batches * 1000) as f64 / elapsed.as_secs_f64()
            );

            let t = Instant::now();
            index.purge().await.unwrap();
            eprintln!("purge (rewrites the personal tables): {:.1?}", t.elapsed());
            let (median, p99, n) = p99(&index, &cases[0].1, 200).await;
            eprintln!(
                "after the purge, {:32} {n:3} found  median {median:>9.2?}  p99 {p99:>9.2?}",
                cases[0].0
            );
            schemas.drop_all().await;
        },
    );
}
