//! The finder over a real sled store (in a temporary directory) and each embedded index (the
//! memory index, tantivy in a directory): how participants become contacts, merge and split as
//! log events, every filter of `ListConversations`, restarts, the lease, refusals and erasure.
//! Every case runs on both indexes (`on_each_index!` at the end).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{
    ConnectionId, ConversationId, ConversationPatch, ConversationStatus, EventKind, EventPayload,
    IncomingEvent, Message, Participant, Role, Sequence, Ticket, TicketId, TicketStatus, Timestamp,
};
use switchboard_find::index::{
    ContactQuery, ContactRecord, ConversationDoc, FindIndex, FindQuery, IndexBatch, IndexError,
    TicketDoc,
};
use switchboard_find::tantivy_index::TantivyIndex;
use switchboard_find::{ContactListQuery, FindError, Finder, FinderOptions, MemoryIndex};
use switchboard_store::{
    AppendRequest, ConversationQuery, FindFilters, Storage, Store, StoreError,
};

// ---- builders -------------------------------------------------------------------------------

fn conn(id: &str) -> ConnectionId {
    ConnectionId::new(id).unwrap()
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs).unwrap()
}

fn visitor(id: &str, name: Option<&str>, email: Option<&str>, phone: Option<&str>) -> Participant {
    Participant {
        id: id.into(),
        name: name.map(String::from),
        email: email.map(String::from),
        phone: phone.map(String::from),
        attributes: Default::default(),
    }
}

fn event(key: &str, kind: EventKind, at: i64, payload: EventPayload) -> IncomingEvent {
    IncomingEvent {
        dedup_key: key.into(),
        kind,
        vendor_event: kind.as_str().into(),
        occurred_at: ts(at),
        payload,
    }
}

/// A chat started at `at` by `person`.
fn chat(chat: &str, at: i64, person: Participant) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.status = Some(ConversationStatus::Open);
    patch.started_at = Some(ts(at));
    patch.visitor = Some(person);
    event(
        &format!("start-{chat}"),
        EventKind::ChatStarted,
        at,
        EventPayload::Conversation(patch),
    )
}

fn message(chat: &str, key: &str, at: i64, role: Role, author: &str, text: &str) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    patch.messages.push(Message {
        key: key.into(),
        author_role: role,
        author_id: Some(author.into()),
        author_name: None,
        text: text.into(),
        attachments: vec![],
        sent_at: ts(at),
        automatic: false,
        data: None,
    });
    event(
        key,
        EventKind::Message,
        at,
        EventPayload::Conversation(patch),
    )
}

fn update(
    key: &str,
    chat: &str,
    at: i64,
    change: impl FnOnce(&mut ConversationPatch),
) -> IncomingEvent {
    let mut patch = ConversationPatch::new(chat);
    change(&mut patch);
    event(
        key,
        EventKind::ChatUpdated,
        at,
        EventPayload::Conversation(patch),
    )
}

fn ticket(id: &str, at: i64, requester: Participant) -> IncomingEvent {
    let ticket = Ticket {
        external_id: id.into(),
        subject: "Where is my order".into(),
        status: TicketStatus::Open,
        requester: Some(requester),
        created_at: ts(at),
        updated_at: ts(at),
        ..Ticket::default()
    };
    event(
        &format!("ticket-{id}-{at}"),
        EventKind::TicketCreated,
        at,
        EventPayload::Ticket(ticket),
    )
}

/// Which index the finder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Tantivy,
}

struct World {
    dir: tempfile::TempDir,
    storage: Arc<dyn Storage>,
    kind: Kind,
    indexes: Mutex<u32>,
}

impl World {
    fn new(kind: Kind) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        World {
            dir,
            storage: Arc::new(store),
            kind,
            indexes: Mutex::new(0),
        }
    }

    /// A fresh, empty index of the world's kind.
    fn index(&self) -> Arc<dyn FindIndex> {
        let path = {
            let mut n = self.indexes.lock().unwrap();
            *n += 1;
            self.dir.path().join(format!("find-{n}"))
        };
        self.open(&path)
    }

    /// The index in `path` (for the memory kind: a fresh one each time).
    fn open(&self, path: &Path) -> Arc<dyn FindIndex> {
        match self.kind {
            Kind::Memory => Arc::new(MemoryIndex::new()),
            Kind::Tantivy => {
                // A finder dropped a moment ago may still be finishing its last batch on a
                // blocking thread, holding the directory's writer lock until it is done.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match TantivyIndex::open_with_threads(path, 1) {
                        Ok(index) => break Arc::new(index),
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(error) => panic!("the index at {}: {error}", path.display()),
                    }
                }
            }
        }
    }

    async fn append(&self, connection: &str, vendor: &str, events: Vec<IncomingEvent>) -> Sequence {
        let receipt = self
            .storage
            .append(AppendRequest::new(conn(connection), vendor, events))
            .await
            .unwrap();
        *receipt.appended.last().expect("appended")
    }

    fn finder(&self, index: Arc<dyn FindIndex>) -> Arc<Finder> {
        Finder::start(self.storage.clone(), index, options())
    }
}

fn options() -> FinderOptions {
    FinderOptions {
        batch_events: 4,
        holder: "test".into(),
        lease_ttl: Duration::from_secs(10),
        idle_poll: Duration::from_millis(20),
        commit_interval: Duration::from_millis(50),
    }
}

async fn synced(finder: &Finder, storage: &dyn Storage) {
    assert!(
        finder
            .caught_up(storage.head(), Duration::from_secs(10))
            .await
            .unwrap(),
        "the finder reaches the head"
    );
}

async fn contact_of(finder: &Finder, email: &str) -> ContactRecord {
    let page = finder
        .list_contacts(&ContactListQuery {
            email: Some(email.into()),
            ..ContactListQuery::default()
        })
        .await
        .unwrap()
        .value;
    assert_eq!(page.contacts.len(), 1, "one contact with {email}: {page:?}");
    page.contacts.into_iter().next().unwrap()
}

async fn all_contacts(finder: &Finder) -> Vec<ContactRecord> {
    finder
        .list_contacts(&ContactListQuery {
            page_size: 1000,
            ..ContactListQuery::default()
        })
        .await
        .unwrap()
        .value
        .contacts
}

fn ids(conversations: &[switchboard_core::Conversation]) -> Vec<String> {
    conversations.iter().map(|c| c.id.to_string()).collect()
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

// ---- contacts -------------------------------------------------------------------------------

async fn the_same_email_through_two_connections_and_vendors_is_one_contact(kind: Kind) {
    let world = World::new(kind);
    let first = world
        .append(
            "lc-eu",
            "livechat",
            vec![chat(
                "A1",
                100,
                visitor("v1", Some("Ann Smith"), Some("Ann@Example.com"), None),
            )],
        )
        .await;
    world
        .append(
            "ss",
            "smartsupp",
            vec![chat(
                "B7",
                200,
                visitor("42", Some("Ann"), Some(" ann@example.com "), None),
            )],
        )
        .await;
    world
        .append(
            "ss",
            "smartsupp",
            vec![chat(
                "B8",
                300,
                visitor("43", Some("Bob"), Some("bob@example.com"), None),
            )],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;

    let ann = contact_of(&finder, "ANN@example.com").await;
    assert_eq!(
        ann.id,
        format!("c{}", first.0),
        "named by the event that created it"
    );
    assert_eq!(
        ann.identities,
        set(&["email:ann@example.com", "visitor:lc-eu/v1", "visitor:ss/42"])
    );
    assert_eq!(ann.names, set(&["Ann Smith", "Ann"]));
    assert_eq!(ann.last_seen, Some(ts(200)));
    let view = finder.get_contact(&ann.id, 0).await.unwrap();
    assert_eq!(
        ids(&view.value.conversations),
        vec!["ss/B7", "lc-eu/A1"],
        "newest first"
    );
    assert_eq!(view.indexed_through, world.storage.head());
    let bob = contact_of(&finder, "bob@example.com").await;
    assert_ne!(bob.id, ann.id);
    assert_eq!(all_contacts(&finder).await.len(), 2);
    finder.shutdown().await;
}

async fn phone_numbers_in_international_form_link_and_national_ones_do_not(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "1",
                    100,
                    visitor("v1", None, None, Some("+1 (415) 555-2671")),
                ),
                chat(
                    "2",
                    200,
                    visitor("v2", None, None, Some("001 415 555 2671")),
                ),
                chat("3", 300, visitor("v3", None, None, Some("415 555 2671"))),
            ],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let found = finder
        .list_contacts(&ContactListQuery {
            phone: Some("+14155552671".into()),
            ..ContactListQuery::default()
        })
        .await
        .unwrap()
        .value
        .contacts;
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].identities,
        set(&["phone:+14155552671", "visitor:lc/v1", "visitor:lc/v2"])
    );
    let view = finder.get_contact(&found[0].id, 0).await.unwrap().value;
    assert_eq!(ids(&view.conversations), vec!["lc/2", "lc/1"]);
    assert_eq!(
        all_contacts(&finder).await.len(),
        2,
        "the national number is someone else"
    );
    // A national number cannot name a contact.
    let refused = finder
        .list_contacts(&ContactListQuery {
            phone: Some("415 555 2671".into()),
            ..ContactListQuery::default()
        })
        .await;
    assert!(
        matches!(refused, Err(FindError::InvalidArgument(_))),
        "{refused:?}"
    );
}

async fn a_visitor_id_links_within_its_connection_only(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc-a",
            "livechat",
            vec![
                chat("1", 100, visitor("v-1", None, None, None)),
                chat("2", 200, visitor("v-1", None, None, None)),
            ],
        )
        .await;
    world
        .append(
            "lc-b",
            "livechat",
            vec![chat("1", 300, visitor("v-1", None, None, None))],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let contacts = all_contacts(&finder).await;
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let a = finder
        .list_contacts(&ContactListQuery {
            visitor: Some((conn("lc-a"), "v-1".into())),
            ..ContactListQuery::default()
        })
        .await
        .unwrap()
        .value
        .contacts;
    assert_eq!(a.len(), 1);
    let view = finder.get_contact(&a[0].id, 0).await.unwrap().value;
    assert_eq!(ids(&view.conversations), vec!["lc-a/2", "lc-a/1"]);
}

async fn keys_of_two_contacts_link_them_into_the_older_and_tickets_join_by_email(kind: Kind) {
    let world = World::new(kind);
    let s1 = world
        .append(
            "lc",
            "livechat",
            vec![chat(
                "1",
                100,
                visitor("v1", Some("Ann"), Some("ann@example.com"), None),
            )],
        )
        .await;
    let s2 = world
        .append(
            "ss",
            "smartsupp",
            vec![chat(
                "2",
                200,
                visitor("w2", Some("Annie"), None, Some("+1 415 555 2671")),
            )],
        )
        .await;
    world
        .append(
            "zd",
            "zendesk",
            vec![ticket(
                "T1",
                250,
                visitor("r1", Some("Ann S."), None, Some("+14155552671")),
            )],
        )
        .await;
    let (older, younger) = (format!("c{}", s1.0), format!("c{}", s2.0));
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    assert_eq!(all_contacts(&finder).await.len(), 2, "not linked yet");
    let view = finder.get_contact(&younger, 0).await.unwrap().value;
    assert_eq!(
        view.tickets.len(),
        1,
        "the ticket's requester phone joins the contact"
    );

    // One conversation with the e-mail of one and the phone of the other links them.
    world
        .append(
            "lc",
            "livechat",
            vec![chat(
                "3",
                300,
                visitor("v3", None, Some("ann@example.com"), Some("+1 415 555 2671")),
            )],
        )
        .await;
    synced(&finder, world.storage.as_ref()).await;
    let contacts = all_contacts(&finder).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(contacts[0].id, older, "the older contact remains");
    assert_eq!(
        contacts[0].identities,
        set(&[
            "email:ann@example.com",
            "phone:+14155552671",
            "visitor:lc/v1",
            "visitor:lc/v3",
            "visitor:ss/w2"
        ])
    );
    assert_eq!(contacts[0].names, set(&["Ann", "Annie", "Ann S."]));
    let merged = finder.get_contact(&younger, 0).await.unwrap().value;
    assert_eq!(
        merged.contact.id, older,
        "a merged contact leads to the one it is part of"
    );
    assert_eq!(ids(&merged.conversations), vec!["lc/3", "ss/2", "lc/1"]);
    assert_eq!(merged.tickets.len(), 1);
    assert_eq!(merged.tickets[0].1.external_id, "T1");
    // Filtering by the merged contact finds the same conversations.
    let by_old_id = finder
        .list_conversations(&ConversationQuery {
            find: FindFilters {
                contacts: vec![younger.clone()],
                ..FindFilters::default()
            },
            ..ConversationQuery::default()
        })
        .await
        .unwrap()
        .value;
    assert_eq!(ids(&by_old_id.conversations), vec!["lc/3", "ss/2", "lc/1"]);
}

async fn get_contact_lists_conversations_and_tickets_newest_first_up_to_the_limit(kind: Kind) {
    let world = World::new(kind);
    let person = || visitor("v1", Some("Ann"), Some("ann@example.com"), None);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat("1", 100, person()),
                chat("2", 300, person()),
                chat("3", 200, person()),
            ],
        )
        .await;
    world
        .append(
            "zd",
            "zendesk",
            vec![
                ticket("T1", 150, visitor("", None, Some("ann@example.com"), None)),
                ticket("T2", 350, visitor("", None, Some("ANN@example.com"), None)),
                ticket("T3", 250, visitor("", None, Some("ann@example.com"), None)),
                ticket(
                    "T4",
                    400,
                    visitor("", None, Some("someone@example.com"), None),
                ),
            ],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let ann = contact_of(&finder, "ann@example.com").await;
    let all = finder.get_contact(&ann.id, 0).await.unwrap().value;
    assert_eq!(ids(&all.conversations), vec!["lc/2", "lc/3", "lc/1"]);
    let tickets: Vec<String> = all
        .tickets
        .iter()
        .map(|(connection, t)| format!("{connection}/{}", t.external_id))
        .collect();
    assert_eq!(tickets, vec!["zd/T2", "zd/T3", "zd/T1"]);
    let two = finder.get_contact(&ann.id, 2).await.unwrap().value;
    assert_eq!(ids(&two.conversations), vec!["lc/2", "lc/3"]);
    assert_eq!(two.tickets.len(), 2);
    assert_eq!(two.tickets[0].1.external_id, "T2");
    assert!(matches!(
        finder.get_contact("c424242", 0).await,
        Err(FindError::NotFound(_))
    ));
}

// ---- merge and split ------------------------------------------------------------------------

async fn merge_and_split_change_contacts_and_a_rebuild_gives_the_same_contacts(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "1",
                    100,
                    visitor("v1", Some("Ann"), Some("ann@example.com"), None),
                ),
                chat(
                    "2",
                    200,
                    visitor("v2", Some("Ann"), Some("ann.smith@work.example"), None),
                ),
                chat(
                    "3",
                    300,
                    visitor(
                        "v3",
                        Some("Bob"),
                        Some("bob@example.com"),
                        Some("+14155552671"),
                    ),
                ),
                // No vendor id: the phone is its first key, so it goes where the phone goes.
                chat("3b", 350, visitor("", None, None, Some("+1 415 555 2671"))),
            ],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let ann = contact_of(&finder, "ann@example.com").await;
    let work = contact_of(&finder, "ann.smith@work.example").await;
    let bob = contact_of(&finder, "bob@example.com").await;

    // Merge: the work address is Ann too.
    let head = world.storage.head();
    let merged = finder.merge_contacts(&ann.id, &work.id).await.unwrap();
    assert_eq!(world.storage.head(), head.next(), "one event appended");
    assert_eq!(merged.contact.id, ann.id);
    assert_eq!(ids(&merged.conversations), vec!["lc/2", "lc/1"]);
    assert!(
        merged
            .contact
            .identities
            .contains("email:ann.smith@work.example")
    );
    let event = world
        .storage
        .read_events(head, 1, 1 << 20)
        .await
        .unwrap()
        .remove(0);
    assert!(event.connection.is_system());
    assert_eq!(event.incoming.kind, EventKind::ContactMerged);

    // Split: Bob's phone is someone else's.
    let (bob_after, phone_person) = finder
        .split_contact(&bob.id, &["phone:+14155552671".to_string()])
        .await
        .unwrap();
    assert_eq!(
        bob_after.contact.identities,
        set(&["email:bob@example.com", "visitor:lc/v3"])
    );
    assert_eq!(
        phone_person.contact.identities,
        set(&["phone:+14155552671"])
    );
    assert!(
        bob_after
            .contact
            .separated
            .contains(&phone_person.contact.id)
    );
    assert!(phone_person.contact.separated.contains(&bob.id));
    assert_eq!(
        ids(&bob_after.conversations),
        vec!["lc/3"],
        "its visitor id is still Bob's"
    );
    assert_eq!(
        ids(&phone_person.conversations),
        vec!["lc/3b"],
        "a conversation whose first key left moves with it"
    );

    // Separated contacts are never linked again automatically; others still link.
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "4",
                    400,
                    visitor("v4", None, Some("bob@example.com"), Some("+1 415 555 2671")),
                ),
                chat("5", 500, visitor("v5", None, None, Some("+14155552671"))),
            ],
        )
        .await;
    synced(&finder, world.storage.as_ref()).await;
    let bob_now = finder.get_contact(&bob.id, 0).await.unwrap().value;
    assert_eq!(bob_now.contact.merged_into, None);
    assert_eq!(
        ids(&bob_now.conversations),
        vec!["lc/4", "lc/3"],
        "the first key (visitor, then e-mail) decides"
    );
    let phone_now = finder
        .get_contact(&phone_person.contact.id, 0)
        .await
        .unwrap()
        .value;
    assert_eq!(ids(&phone_now.conversations), vec!["lc/5", "lc/3b"]);
    assert_eq!(all_contacts(&finder).await.len(), 3);

    // A fresh index over the same log: the same contacts, ids included.
    let before = all_contacts(&finder).await;
    let rebuilt = world.finder(world.index());
    synced(&rebuilt, world.storage.as_ref()).await;
    assert_eq!(all_contacts(&rebuilt).await, before);
    for contact in &before {
        assert_eq!(
            ids(&rebuilt
                .get_contact(&contact.id, 0)
                .await
                .unwrap()
                .value
                .conversations),
            ids(&finder
                .get_contact(&contact.id, 0)
                .await
                .unwrap()
                .value
                .conversations),
            "conversations of {}",
            contact.id
        );
    }
    assert_eq!(
        rebuilt
            .get_contact(&work.id, 0)
            .await
            .unwrap()
            .value
            .contact
            .id,
        ann.id,
        "the merge replays"
    );
}

async fn bad_merges_splits_and_erasures_are_refused_and_append_nothing(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat("1", 100, visitor("v1", None, Some("ann@example.com"), None)),
                chat("2", 200, visitor("v2", None, Some("bob@example.com"), None)),
            ],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let ann = contact_of(&finder, "ann@example.com").await.id;
    let bob = contact_of(&finder, "bob@example.com").await.id;
    finder.merge_contacts(&ann, &bob).await.unwrap();
    let head = world.storage.head();

    let refusals: Vec<(&str, Result<(), FindError>)> = vec![
        (
            "merge with itself",
            finder.merge_contacts(&ann, &ann).await.map(drop),
        ),
        (
            "merge an unknown contact",
            finder.merge_contacts(&ann, "c999").await.map(drop),
        ),
        (
            "merge into an unknown contact",
            finder.merge_contacts("c999", &ann).await.map(drop),
        ),
        (
            "merge a merged contact",
            finder.merge_contacts(&ann, &bob).await.map(drop),
        ),
        (
            "merge into a merged contact",
            finder.merge_contacts(&bob, &ann).await.map(drop),
        ),
        (
            "split an unknown contact",
            finder
                .split_contact("c999", &["email:x@example.com".into()])
                .await
                .map(drop),
        ),
        (
            "split a merged contact",
            finder
                .split_contact(&bob, &["email:bob@example.com".into()])
                .await
                .map(drop),
        ),
        (
            "split an identity it lacks",
            finder
                .split_contact(&ann, &["email:carol@example.com".into()])
                .await
                .map(drop),
        ),
        (
            "split nothing",
            finder.split_contact(&ann, &[]).await.map(drop),
        ),
        (
            "split every identity",
            finder
                .split_contact(
                    &ann,
                    &[
                        "email:ann@example.com".into(),
                        "email:bob@example.com".into(),
                        "visitor:lc/v1".into(),
                        "visitor:lc/v2".into(),
                    ],
                )
                .await
                .map(drop),
        ),
        (
            "erase an unknown contact",
            finder.erase_contact("c999").await.map(drop),
        ),
        (
            "erase a merged contact",
            finder.erase_contact(&bob).await.map(drop),
        ),
    ];
    for (what, result) in refusals {
        let error = result.expect_err(what);
        let message = error.to_string();
        assert!(!message.is_empty(), "{what}: a reason");
        let code = switchboard_core::Error::from(error).code;
        let expected = match what {
            w if w.contains("unknown") => switchboard_core::ErrorCode::NotFound,
            w if w.contains("a merged contact") || w.contains("into a merged") => {
                switchboard_core::ErrorCode::FailedPrecondition
            }
            _ => switchboard_core::ErrorCode::InvalidArgument,
        };
        assert_eq!(code, expected, "{what}: {message}");
    }
    assert_eq!(world.storage.head(), head, "no refusal appended anything");
}

// ---- list_conversations ---------------------------------------------------------------------

async fn every_filter_through_list_conversations_with_paging(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "1",
                    100,
                    visitor(
                        "v1",
                        Some("Ольга Петрова"),
                        Some("olga@example.ru"),
                        Some("+7 912 345 67 89"),
                    ),
                ),
                message(
                    "1",
                    "m1",
                    101,
                    Role::Visitor,
                    "v1",
                    "Здравствуйте, где мой заказ?",
                ),
                message("1", "m2", 102, Role::Agent, "agent-7", "Ваш заказ в пути"),
                update("t1", "1", 103, |p| {
                    p.tags_added = vec!["delivery".into(), "vip".into()]
                }),
                chat(
                    "2",
                    200,
                    visitor("v2", Some("王小明"), Some("wang@example.cn"), None),
                ),
                message("2", "m3", 201, Role::Visitor, "v2", "我想申请退款"),
                update("a2", "2", 202, |p| {
                    p.assigned_agent = Some("agent-8".into())
                }),
                update("t2", "2", 203, |p| p.tags_added = vec!["refund".into()]),
                chat(
                    "3",
                    300,
                    visitor("v3", Some("Café Owner"), None, Some("8 (912) 345-67-89")),
                ),
                message(
                    "3",
                    "m4",
                    301,
                    Role::Visitor,
                    "v3",
                    "Refund for the crème brûlée please",
                ),
                update("t3", "3", 302, |p| {
                    p.tags_added = vec!["refund".into()];
                    p.agents_joined = vec![visitor("agent-7", Some("Agent Seven"), None, None)];
                }),
                update("t3b", "3", 303, |p| p.tags_removed = vec!["refund".into()]),
            ],
        )
        .await;
    let mut smartsupp = Vec::new();
    for i in 0..7 {
        smartsupp.push(chat(
            &format!("s{i}"),
            1_000 + i,
            visitor(&format!("sv{i}"), None, Some("many@example.com"), None),
        ));
        smartsupp.push(message(
            &format!("s{i}"),
            &format!("sm{i}"),
            1_000 + i,
            Role::Visitor,
            "x",
            "paging test",
        ));
    }
    world.append("ss", "smartsupp", smartsupp).await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;

    let list = |find: FindFilters| ConversationQuery {
        find,
        ..ConversationQuery::default()
    };
    let cases: Vec<(&str, ConversationQuery, Vec<&str>)> = vec![
        (
            "e-mail, any case",
            list(FindFilters {
                emails: vec!["OLGA@example.ru".into()],
                ..Default::default()
            }),
            vec!["lc/1"],
        ),
        (
            "two e-mails",
            list(FindFilters {
                emails: vec!["olga@example.ru".into(), "wang@example.cn".into()],
                ..Default::default()
            }),
            vec!["lc/2", "lc/1"],
        ),
        (
            "phone, international",
            list(FindFilters {
                phones: vec!["+79123456789".into()],
                ..Default::default()
            }),
            vec!["lc/1"],
        ),
        (
            "phone, national digits",
            list(FindFilters {
                phones: vec!["8 912 345 67 89".into()],
                ..Default::default()
            }),
            vec!["lc/3"],
        ),
        (
            "visitor id",
            list(FindFilters {
                visitor_ids: vec!["v2".into()],
                ..Default::default()
            }),
            vec!["lc/2"],
        ),
        (
            "agent who wrote or joined",
            list(FindFilters {
                agent_ids: vec!["agent-7".into()],
                ..Default::default()
            }),
            vec!["lc/3", "lc/1"],
        ),
        (
            "agent assigned",
            list(FindFilters {
                agent_ids: vec!["agent-8".into()],
                ..Default::default()
            }),
            vec!["lc/2"],
        ),
        (
            "tag now (a removed one is not)",
            list(FindFilters {
                tags: vec!["refund".into()],
                ..Default::default()
            }),
            vec!["lc/2"],
        ),
        (
            "two tags",
            list(FindFilters {
                tags: vec!["refund".into(), "vip".into()],
                ..Default::default()
            }),
            vec!["lc/2", "lc/1"],
        ),
        (
            "text, Cyrillic folded",
            list(FindFilters {
                text: Some("ЗАКАЗ".into()),
                ..Default::default()
            }),
            vec!["lc/1"],
        ),
        (
            "text, every word",
            list(FindFilters {
                text: Some("заказ пути".into()),
                ..Default::default()
            }),
            vec!["lc/1"],
        ),
        (
            "text, Chinese",
            list(FindFilters {
                text: Some("退款".into()),
                ..Default::default()
            }),
            vec!["lc/2"],
        ),
        (
            "text, accents",
            list(FindFilters {
                text: Some("creme brulee".into()),
                ..Default::default()
            }),
            vec!["lc/3"],
        ),
        (
            "text, the visitor's name",
            list(FindFilters {
                text: Some("петрова".into()),
                ..Default::default()
            }),
            vec!["lc/1"],
        ),
        (
            "text and tag",
            list(FindFilters {
                text: Some("refund".into()),
                tags: vec!["refund".into()],
                ..Default::default()
            }),
            vec![],
        ),
        (
            "e-mail and a store filter",
            ConversationQuery {
                statuses: vec![ConversationStatus::Closed],
                ..list(FindFilters {
                    emails: vec!["olga@example.ru".into()],
                    ..Default::default()
                })
            },
            vec![],
        ),
        (
            "agent and connection",
            ConversationQuery {
                connections: vec![conn("lc")],
                started_from: Some(ts(200)),
                ..list(FindFilters {
                    agent_ids: vec!["agent-7".into()],
                    ..Default::default()
                })
            },
            vec!["lc/3"],
        ),
        (
            "text and vendor",
            ConversationQuery {
                vendors: vec!["smartsupp".into()],
                updated_to: Some(ts(1_003)),
                ..list(FindFilters {
                    text: Some("paging".into()),
                    ..Default::default()
                })
            },
            vec!["ss/s2", "ss/s1", "ss/s0"],
        ),
    ];
    for (what, query, want) in cases {
        let found = finder.list_conversations(&query).await.unwrap();
        assert_eq!(ids(&found.value.conversations), want, "{what}");
        assert_eq!(found.value.next_page_token, None, "{what}: one page");
        assert_eq!(found.indexed_through, world.storage.head());
    }
    let olga = contact_of(&finder, "olga@example.ru").await;
    let by_contact = finder
        .list_conversations(&list(FindFilters {
            contacts: vec![olga.id.clone()],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(ids(&by_contact.value.conversations), vec!["lc/1"]);

    // Pages of 3 through the seven smartsupp chats: every one once, newest first.
    let mut query = ConversationQuery {
        page_size: 3,
        ..list(FindFilters {
            emails: vec!["many@example.com".into()],
            ..Default::default()
        })
    };
    let mut seen = Vec::new();
    let mut tokens = Vec::new();
    loop {
        let page = finder.list_conversations(&query).await.unwrap().value;
        assert!(page.conversations.len() <= 3);
        seen.extend(ids(&page.conversations));
        match page.next_page_token {
            Some(token) => {
                tokens.push(token.clone());
                query.page_token = Some(token);
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).rev().map(|i| format!("ss/s{i}")).collect::<Vec<_>>()
    );
    assert_eq!(tokens.len(), 2);

    // A token of other filters, or one that is not ours, is refused.
    let other = ConversationQuery {
        page_size: 3,
        page_token: Some(tokens[0].clone()),
        ..list(FindFilters {
            emails: vec!["olga@example.ru".into()],
            ..Default::default()
        })
    };
    assert!(matches!(
        finder.list_conversations(&other).await,
        Err(FindError::Store(StoreError::PageTokenMismatch))
    ));
    let damaged = ConversationQuery {
        page_token: Some("not-a-token".into()),
        ..list(FindFilters {
            emails: vec!["many@example.com".into()],
            ..Default::default()
        })
    };
    assert!(matches!(
        finder.list_conversations(&damaged).await,
        Err(FindError::Store(StoreError::BadPageToken))
    ));
    // Bad filters are refused with a reason.
    for bad in [
        FindFilters {
            emails: vec!["not an address".into()],
            ..Default::default()
        },
        FindFilters {
            phones: vec!["12".into()],
            ..Default::default()
        },
        FindFilters {
            text: Some("?!".into()),
            ..Default::default()
        },
    ] {
        let result = finder.list_conversations(&list(bad.clone())).await;
        assert!(
            matches!(result, Err(FindError::InvalidArgument(_))),
            "{bad:?}: {result:?}"
        );
    }
}

// ---- restarts -------------------------------------------------------------------------------

/// An index that records the events of every batch it applied, and its position each time it
/// was let rest.
struct Recording {
    inner: Arc<dyn FindIndex>,
    applied: Arc<Mutex<Vec<u64>>>,
    rests: Arc<Mutex<Vec<Sequence>>>,
}

impl Recording {
    fn new(inner: Arc<dyn FindIndex>, applied: Arc<Mutex<Vec<u64>>>) -> Recording {
        Recording {
            inner,
            applied,
            rests: Arc::default(),
        }
    }
}

#[async_trait]
impl FindIndex for Recording {
    fn backend(&self) -> &'static str {
        "recording"
    }
    async fn position(&self) -> Result<Sequence, IndexError> {
        self.inner.position().await
    }
    async fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        // Recorded before the inner index applies it: a finder dropped while the batch is
        // applied stops waiting for it, but the batch is written all the same once tantivy's
        // blocking work has started (it runs to the end), so it must be recorded; a test that
        // drops a finder keeps only what the index then holds. A batch refused is taken out
        // again.
        let events: Vec<u64> = batch.events.iter().map(|e| e.sequence.0).collect();
        let recorded = {
            let mut applied = self.applied.lock().unwrap();
            let from = applied.len();
            applied.extend(events);
            from
        };
        let result = self.inner.apply(batch).await;
        if result.is_err() {
            self.applied.lock().unwrap().truncate(recorded);
        }
        result
    }
    async fn identities(&self, keys: &[String]) -> Result<Vec<(String, String)>, IndexError> {
        self.inner.identities(keys).await
    }
    async fn contact(&self, id: &str) -> Result<Option<ContactRecord>, IndexError> {
        self.inner.contact(id).await
    }
    async fn list_contacts(&self, query: &ContactQuery) -> Result<Vec<ContactRecord>, IndexError> {
        self.inner.list_contacts(query).await
    }
    async fn find_conversations(
        &self,
        query: &FindQuery,
    ) -> Result<Vec<(Timestamp, ConversationId)>, IndexError> {
        self.inner.find_conversations(query).await
    }
    async fn conversation_docs(
        &self,
        ids: &[ConversationId],
    ) -> Result<Vec<ConversationDoc>, IndexError> {
        self.inner.conversation_docs(ids).await
    }
    async fn contact_tickets(
        &self,
        contacts: &[String],
        limit: usize,
    ) -> Result<Vec<TicketDoc>, IndexError> {
        self.inner.contact_tickets(contacts, limit).await
    }
    async fn events_of(
        &self,
        conversations: &[ConversationId],
        tickets: &[TicketId],
    ) -> Result<Vec<Sequence>, IndexError> {
        self.inner.events_of(conversations, tickets).await
    }
    async fn purge(&self) -> Result<(), IndexError> {
        self.inner.purge().await
    }
    async fn rest(&self) -> Result<(), IndexError> {
        let position = self.inner.position().await?;
        self.rests.lock().unwrap().push(position);
        self.inner.rest().await
    }
}

/// Once it has caught up after applying batches, a finder lets its index rest, once; it
/// applies the next events as before, and rests again after them.
async fn a_finder_caught_up_lets_its_index_rest_once_and_applies_after(kind: Kind) {
    let world = World::new(kind);
    let person = |i: u32| {
        visitor(
            &format!("v{i}"),
            None,
            Some(&format!("p{}@example.com", i % 2)),
            None,
        )
    };
    let append_chats = |chats: std::ops::Range<u32>| {
        let world = &world;
        async move {
            for i in chats {
                world
                    .append(
                        "lc",
                        "livechat",
                        vec![chat(&i.to_string(), 100 + i64::from(i), person(i))],
                    )
                    .await;
            }
        }
    };
    append_chats(0..10).await;
    let recording = Recording::new(world.index(), Arc::default());
    let rests = recording.rests.clone();
    let finder = world.finder(Arc::new(recording));
    let rested_at = |want: Vec<Sequence>| {
        let rests = rests.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while *rests.lock().unwrap() != want && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let rests = rests.lock().unwrap().clone();
            assert_eq!(rests, want, "the index's rests");
        }
    };
    synced(&finder, world.storage.as_ref()).await;
    rested_at(vec![Sequence(10)]).await;
    // Idle, with nothing new applied: no more rests.
    tokio::time::sleep(options().idle_poll * 10).await;
    rested_at(vec![Sequence(10)]).await;
    let contacts = all_contacts(&finder).await;
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    append_chats(10..20).await;
    synced(&finder, world.storage.as_ref()).await;
    rested_at(vec![Sequence(10), Sequence(20)]).await;
    let contacts = all_contacts(&finder).await;
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    for contact in contacts {
        let view = finder.get_contact(&contact.id, 0).await.unwrap().value;
        assert_eq!(view.conversations.len(), 10, "{view:?}");
    }
    finder.shutdown().await;
}

async fn a_finder_dropped_mid_log_is_resumed_by_the_next_without_repeating(kind: Kind) {
    let world = World::new(kind);
    for i in 0..30 {
        world
            .append(
                "lc",
                "livechat",
                vec![chat(
                    &i.to_string(),
                    100 + i,
                    visitor(
                        &format!("v{i}"),
                        None,
                        Some(&format!("p{}@example.com", i % 4)),
                        None,
                    ),
                )],
            )
            .await;
    }
    let applied = Arc::new(Mutex::new(Vec::new()));
    let path = world.dir.path().join("find");
    let memory: Arc<dyn FindIndex> = Arc::new(MemoryIndex::new());
    let open = |path: &Path| -> Arc<dyn FindIndex> {
        let inner = match kind {
            Kind::Memory => memory.clone(),
            Kind::Tantivy => world.open(path),
        };
        Arc::new(Recording::new(inner, applied.clone()))
    };
    let first = world.finder(open(&path));
    assert!(
        first
            .caught_up(Sequence(10), Duration::from_secs(10))
            .await
            .unwrap()
    );
    drop(first); // aborts its task wherever it is, like a crash
    // Let the runtime drop the aborted task (and with it the index's writer lock).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let index = open(&path);
    // The batch the dropped finder had handed to tantivy was written to the end or, if its
    // blocking work had not started when the finder's runtime went, not at all: the index's
    // position says which, and only what it holds was applied.
    let position = index.position().await.unwrap().0;
    applied
        .lock()
        .unwrap()
        .retain(|&sequence| sequence <= position);
    for i in 30..40 {
        world
            .append(
                "lc",
                "livechat",
                vec![chat(
                    &i.to_string(),
                    100 + i,
                    visitor(
                        &format!("v{i}"),
                        None,
                        Some(&format!("p{}@example.com", i % 4)),
                        None,
                    ),
                )],
            )
            .await;
    }
    let second = world.finder(index);
    synced(&second, world.storage.as_ref()).await;
    let applied = applied.lock().unwrap().clone();
    assert_eq!(
        applied,
        (1..=40).collect::<Vec<u64>>(),
        "every event once, in order"
    );
    let contacts = all_contacts(&second).await;
    assert_eq!(contacts.len(), 4, "{contacts:?}");
    for contact in contacts {
        let view = second.get_contact(&contact.id, 0).await.unwrap().value;
        assert_eq!(view.conversations.len(), 10);
    }
    second.shutdown().await;
    assert_eq!(second.position().await.unwrap(), Sequence(40));
    // After shutdown nothing more is applied.
    world
        .append(
            "lc",
            "livechat",
            vec![chat("late", 900, visitor("late", None, None, None))],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(second.position().await.unwrap(), Sequence(40));
}

async fn a_replica_without_the_lease_does_not_write_and_waits_on_the_index(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![chat(
                "1",
                100,
                visitor("v1", None, Some("ann@example.com"), None),
            )],
        )
        .await;
    // Another replica holds the lease.
    assert!(
        world
            .storage
            .acquire_lease("find", "other", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let index = world.index();
    let finder = world.finder(index.clone());
    assert!(
        !finder
            .caught_up(Sequence(1), Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert_eq!(
        index.position().await.unwrap(),
        Sequence(0),
        "it wrote nothing"
    );
    world.storage.release_lease("find", "other").await.unwrap();
    synced(&finder, world.storage.as_ref()).await;
    contact_of(&finder, "ann@example.com").await;
}

// ---- erasure --------------------------------------------------------------------------------

async fn erasing_a_contact_removes_it_from_answers_projections_and_the_log(kind: Kind) {
    let world = World::new(kind);
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "1",
                    100,
                    visitor(
                        "v1",
                        Some("Zelda Quuxley"),
                        Some("zelda@example.com"),
                        Some("+1 415 555 2671"),
                    ),
                ),
                message("1", "m1", 101, Role::Visitor, "v1", "my secret flamingo"),
            ],
        )
        .await;
    world
        .append(
            "zd",
            "zendesk",
            vec![ticket(
                "T9",
                150,
                visitor("r", Some("Zelda Quuxley"), Some("ZELDA@example.com"), None),
            )],
        )
        .await;
    world
        .append(
            "lc",
            "livechat",
            vec![
                chat(
                    "2",
                    200,
                    visitor("v2", Some("Other Person"), Some("other@example.com"), None),
                ),
                message("2", "m2", 201, Role::Visitor, "v2", "flamingo too"),
            ],
        )
        .await;
    let finder = world.finder(world.index());
    synced(&finder, world.storage.as_ref()).await;
    let zelda = contact_of(&finder, "zelda@example.com").await;
    let view = finder.get_contact(&zelda.id, 0).await.unwrap().value;
    assert_eq!(ids(&view.conversations), vec!["lc/1"]);
    assert_eq!(view.tickets.len(), 1);

    let report = match finder.erase_contact(&zelda.id).await {
        Ok(report) => report,
        Err(FindError::Store(StoreError::Unavailable(reason))) => {
            panic!("the store cannot erase: {reason}")
        }
        Err(other) => panic!("erase: {other}"),
    };
    assert_eq!(report.conversations, 1);
    assert_eq!(report.tickets, 1);
    assert_eq!(
        report.events, 3,
        "the chat start, its message and the ticket"
    );
    assert_eq!(report.sequence, world.storage.head());

    // The finder's answers.
    let after = finder.get_contact(&zelda.id, 0).await.unwrap().value;
    assert!(after.contact.erased_at.is_some());
    assert!(after.contact.identities.is_empty() && after.contact.names.is_empty());
    assert!(after.conversations.is_empty() && after.tickets.is_empty());
    let text = |t: &str| ConversationQuery {
        find: FindFilters {
            text: Some(t.into()),
            ..Default::default()
        },
        ..ConversationQuery::default()
    };
    assert_eq!(
        ids(&finder
            .list_conversations(&text("flamingo"))
            .await
            .unwrap()
            .value
            .conversations),
        vec!["lc/2"]
    );
    assert!(
        finder
            .list_conversations(&text("quuxley"))
            .await
            .unwrap()
            .value
            .conversations
            .is_empty()
    );
    let by_email = ConversationQuery {
        find: FindFilters {
            emails: vec!["zelda@example.com".into()],
            ..Default::default()
        },
        ..ConversationQuery::default()
    };
    assert!(
        finder
            .list_conversations(&by_email)
            .await
            .unwrap()
            .value
            .conversations
            .is_empty()
    );
    assert!(
        finder
            .list_contacts(&ContactListQuery {
                name: Some("Zelda".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .value
            .contacts
            .is_empty()
    );
    assert!(matches!(
        finder.erase_contact(&zelda.id).await,
        Err(FindError::FailedPrecondition(_))
    ));

    // The store's projections and log.
    let everything = serde_json::to_string(&(
        world
            .storage
            .read_events(Sequence::ZERO, 1000, 1 << 24)
            .await
            .unwrap(),
        world
            .storage
            .get_conversation(&ConversationId::parse("lc/1").unwrap())
            .await
            .unwrap(),
        world
            .storage
            .get_ticket(&TicketId::parse("zd/T9").unwrap())
            .await
            .unwrap(),
    ))
    .unwrap()
    .to_lowercase();
    for secret in [
        "zelda",
        "quuxley",
        "flamingo\"",
        "secret",
        "555 2671",
        "4155552671",
    ] {
        assert!(!everything.contains(secret), "{secret} left in the store");
    }
    assert!(
        everything.contains("other person"),
        "someone else's data stays"
    );

    // A rebuild over the erased log: the same contacts, the erasure recorded.
    let rebuilt = world.finder(world.index());
    synced(&rebuilt, world.storage.as_ref()).await;
    let record = rebuilt
        .get_contact(&zelda.id, 0)
        .await
        .unwrap()
        .value
        .contact;
    assert_eq!(record.id, zelda.id);
    assert!(record.erased_at.is_some() && record.identities.is_empty());
    assert!(
        rebuilt
            .list_conversations(&text("quuxley"))
            .await
            .unwrap()
            .value
            .conversations
            .is_empty()
    );
}

// ---- batching under load --------------------------------------------------------------------

/// While the log keeps growing, a batch goes at most once per `commit_interval`; after a quiet
/// spell one goes at once, and one that someone waits for (`caught_up`) does not wait out the
/// interval.
async fn one_batch_per_commit_interval_unless_someone_waits(kind: Kind) {
    let world = World::new(kind);
    let batches = Arc::new(Mutex::new(Vec::new()));
    let index: Arc<dyn FindIndex> = Arc::new(Recording::new(world.index(), batches.clone()));
    let interval = Duration::from_secs(5);
    let finder = Finder::start(
        world.storage.clone(),
        index,
        FinderOptions {
            batch_events: 1000,
            commit_interval: interval,
            ..options()
        },
    );
    let person = |i: u32| visitor(&format!("v{i}"), None, None, None);
    // After a quiet spell (here: none yet), a batch goes at once, with nobody waiting.
    let first = world
        .append("lc", "livechat", vec![chat("1", 100, person(1))])
        .await;
    let applied_by = |sequence: Sequence, within: Duration| {
        let finder = finder.clone();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            while tokio::time::Instant::now() < deadline {
                // `position` does not ask for anything, unlike `caught_up`.
                if finder.position().await.unwrap() >= sequence {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    assert!(
        applied_by(first, Duration::from_secs(4)).await,
        "the first batch goes at once"
    );
    // More events right after it: they wait for the interval, however many come.
    let mut last = first;
    for i in 2..=6 {
        last = world
            .append("lc", "livechat", vec![chat(&i.to_string(), 100, person(i))])
            .await;
    }
    assert!(
        !applied_by(last, Duration::from_secs(1)).await,
        "events right after a batch wait for the interval"
    );
    // Someone waits for them: they go now, well before the interval is out.
    assert!(
        finder
            .caught_up(last, Duration::from_secs(3))
            .await
            .unwrap(),
        "a batch someone waits for does not wait out the interval"
    );
    let batches: Vec<u64> = batches.lock().unwrap().clone();
    assert_eq!(batches, (1..=last.0).collect::<Vec<u64>>());
    finder.shutdown().await;
}

// ---- every case on both indexes -------------------------------------------------------------

macro_rules! on_each_index {
    ($($case:ident),* $(,)?) => {
        mod memory_index {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Kind::Memory).await;
                }
            )*
        }
        mod tantivy_index {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Kind::Tantivy).await;
                }
            )*
        }
    };
}

on_each_index!(
    get_contact_lists_conversations_and_tickets_newest_first_up_to_the_limit,
    the_same_email_through_two_connections_and_vendors_is_one_contact,
    phone_numbers_in_international_form_link_and_national_ones_do_not,
    a_visitor_id_links_within_its_connection_only,
    keys_of_two_contacts_link_them_into_the_older_and_tickets_join_by_email,
    merge_and_split_change_contacts_and_a_rebuild_gives_the_same_contacts,
    bad_merges_splits_and_erasures_are_refused_and_append_nothing,
    every_filter_through_list_conversations_with_paging,
    a_finder_dropped_mid_log_is_resumed_by_the_next_without_repeating,
    a_replica_without_the_lease_does_not_write_and_waits_on_the_index,
    erasing_a_contact_removes_it_from_answers_projections_and_the_log,
    one_batch_per_commit_interval_unless_someone_waits,
    a_finder_caught_up_lets_its_index_rest_once_and_applies_after,
);
