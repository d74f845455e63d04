//! Erasure (`Storage::erase_contact`): the person's data goes from the log's payloads, the raw
//! bodies and the projections; the sequences, the count of events and everyone else's data
//! stay; the erasure is an event of its own; a bad plan changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use switchboard_core::{
    ConnectionId, ContactChange, Conversation, ConversationId, Event, EventKind, EventPayload,
    Participant, Role, Sequence, Ticket, TicketId, TicketStatus,
};
use switchboard_store::{ConversationQuery, ErasurePlan, StoreError};

use crate::Backend;
use crate::support::*;

/// What [`erasure_fixture`] stored: the plan that erases its person, and values to look for.
#[derive(Clone, Debug)]
pub struct ErasureFixture {
    /// Erases the person: one conversation, one ticket, and their events (a vendor event and
    /// an event of a request shared with another person's conversation among them).
    pub plan: ErasurePlan,
    /// The person's values, each in a short record (stored uncompressed) somewhere.
    pub personal: Vec<String>,
    /// A value of the person stored only in long records (the sled store compresses those).
    pub personal_long: String,
    /// Another person's values: they must stay.
    pub others: Vec<String>,
    /// The person's conversation, the other person's, the ticket.
    pub conversation: ConversationId,
    /// The other person's conversation.
    pub other_conversation: ConversationId,
    /// The person's ticket.
    pub ticket: TicketId,
    /// The sequence of an agent's event (no erasure may name it).
    pub agent_event: Sequence,
}

const NAME: &str = "Zebulon Quaxworth";
const EMAIL: &str = "zebulon.quaxworth@example.org";
const PHONE: &str = "+420601999888";
const CITY: &str = "Plovdiv-Zq";
const CODE: &str = "QX-7734-PLOVER";
const VISITOR_ID: &str = "visitor-zqxw";
const PAGE: &str = "https://shop.example/zq-landing";
const LONG: &str = "Quaxworthian-saga";
const OTHER_NAME: &str = "Ymir Oddsdottir";
const OTHER_CODE: &str = "YMIR-5521";

fn person() -> Participant {
    Participant {
        id: VISITOR_ID.into(),
        name: Some(NAME.into()),
        email: Some(EMAIL.into()),
        phone: Some(PHONE.into()),
        attributes: BTreeMap::from([("city".to_owned(), CITY.to_owned())]),
    }
}

/// A message event of `chat` written by `author` (`(id, name)`) in `role`.
fn said(
    key: &str,
    chat: &str,
    when: i64,
    (role, author): (Role, (&str, &str)),
    text: &str,
) -> switchboard_core::IncomingEvent {
    let mut event = message(key, chat, when, text);
    if let EventPayload::Conversation(patch) = &mut event.payload {
        let message = &mut patch.messages[0];
        message.author_role = role;
        message.author_id = Some(author.0.to_owned());
        message.author_name = Some(author.1.to_owned());
    }
    event
}

const ZQ: (Role, (&str, &str)) = (Role::Visitor, (VISITOR_ID, NAME));
const YMIR: (Role, (&str, &str)) = (Role::Visitor, ("visitor-ymir", OTHER_NAME));
const AGENT: (Role, (&str, &str)) = (Role::Agent, ("agent@company.example", "Alice Agent"));

fn numbered(
    connection: &ConnectionId,
    id: &str,
    raw: Option<String>,
    events: Vec<switchboard_core::IncomingEvent>,
) -> switchboard_store::AppendRequest {
    let mut request = request(connection, "v", events);
    request.request_id = Some(id.to_owned());
    request.raw = raw;
    request
}

/// Stores one person's conversation (visitor with name, e-mail, phone, attributes; visitor and
/// agent messages, one long), a ticket they asked, a vendor event about them, a request shared
/// with another person's conversation, that other person's conversation, and an agent's
/// event; returns the plan that erases the person.
pub async fn erasure_fixture(store: &Store) -> ErasureFixture {
    let c = conn("erase");
    let chat = "chat-zq";
    let other = "chat-ymir";
    let long_text = format!("{LONG} ").repeat(60);

    let mut start = started("zq-start", chat, 10);
    if let EventPayload::Conversation(patch) = &mut start.payload {
        patch.visitor = Some(person());
        patch.page_url = Some(PAGE.into());
        patch.attributes = BTreeMap::from([("order".to_owned(), CODE.to_owned())]);
        patch.tags_added = vec!["vip".into()];
    }
    let first = append(
        store,
        "the person's chat",
        numbered(
            &c,
            "req-1",
            Some(format!(
                "{{\"visitor\": {{\"name\": \"{NAME}\", \"email\": \"{EMAIL}\"}}, \"long\": \"{long_text}\"}}"
            )),
            vec![
                start,
                said("zq-m1", chat, 11, ZQ, &format!("my code is {CODE}")),
                said("zq-m2", chat, 12, AGENT, &format!("you said {CODE}, {NAME}?")),
                said("zq-m3", chat, 13, ZQ, &long_text),
            ],
        ),
    )
    .await;
    let mut other_start = started("ym-start", other, 20);
    if let EventPayload::Conversation(patch) = &mut other_start.payload {
        patch.visitor = Some(Participant {
            id: "visitor-ymir".into(),
            name: Some(OTHER_NAME.into()),
            ..Participant::default()
        });
    }
    append(
        store,
        "another person's chat",
        numbered(
            &c,
            "req-2",
            Some(format!("{{\"name\": \"{OTHER_NAME}\"}}")),
            vec![
                other_start,
                said("ym-m1", other, 21, YMIR, &format!("hi, {OTHER_CODE}")),
            ],
        ),
    )
    .await;
    let mut asked = ticket("T-zq", TicketStatus::Open, 30, &format!("refund {CODE}"));
    asked.requester = Some(person());
    let ticket_seq = append(
        store,
        "the person's ticket",
        numbered(&c, "req-3", None, vec![ticket_event("zq-ticket", asked)]),
    )
    .await;
    let vendor_seq = append(
        store,
        "a vendor event about the person",
        numbered(
            &c,
            "req-4",
            Some(format!("{{\"email\": \"{EMAIL}\"}}")),
            vec![vendor_event(
                "zq-vendor",
                31,
                serde_json::json!({"email": EMAIL, "phone": PHONE}),
            )],
        ),
    )
    .await;
    // The raw body is stored on the first event, the other person's: it goes all the same.
    let shared = append(
        store,
        "a request shared by both",
        numbered(
            &c,
            "req-5",
            Some(format!("{{\"a\": \"{OTHER_CODE}\", \"b\": \"{CODE}\"}}")),
            vec![
                said("ym-m2", other, 40, YMIR, &format!("still {OTHER_CODE}")),
                said("zq-m4", chat, 41, ZQ, &format!("again {CODE}")),
            ],
        ),
    )
    .await;
    let agent_seq = append(
        store,
        "an agent's event",
        numbered(
            &c,
            "req-6",
            None,
            vec![agent_event(
                "agent-1",
                agent("agent@company.example", "Alice Agent"),
                false,
                50,
            )],
        ),
    )
    .await;
    let mut events = first.appended.clone();
    events.extend(ticket_seq.appended);
    events.extend(vendor_seq.appended);
    events.push(shared.appended[1]);
    ErasureFixture {
        plan: ErasurePlan {
            contact: "c1".into(),
            conversations: vec![ConversationId::new(c.clone(), chat)],
            tickets: vec![TicketId::new(c.clone(), "T-zq")],
            events,
            at: at(100),
        },
        personal: [NAME, EMAIL, PHONE, CITY, CODE, VISITOR_ID, PAGE]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        personal_long: LONG.to_owned(),
        others: [OTHER_NAME, OTHER_CODE]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        conversation: ConversationId::new(c.clone(), chat),
        other_conversation: ConversationId::new(c.clone(), other),
        ticket: TicketId::new(c, "T-zq"),
        agent_event: agent_seq.appended[0],
    }
}

async fn conversation(store: &Store, id: &ConversationId) -> Conversation {
    store
        .get_conversation(id)
        .await
        .unwrap_or_else(|e| panic!("get_conversation({id}): {e}"))
        .unwrap_or_else(|| panic!("get_conversation({id}): not found"))
}

async fn ticket_of(store: &Store, id: &TicketId) -> Ticket {
    store
        .get_ticket(id)
        .await
        .unwrap_or_else(|e| panic!("get_ticket({id}): {e}"))
        .unwrap_or_else(|| panic!("get_ticket({id}): not found"))
}

/// Which of `values` the debug form of `what` holds.
fn holding(what: &impl std::fmt::Debug, values: &[String]) -> Vec<String> {
    let text = format!("{what:?}");
    values
        .iter()
        .filter(|v| text.contains(v.as_str()))
        .cloned()
        .collect()
}

/// Everything a reader sees of the store, for before/after comparisons.
async fn everything(
    store: &Store,
    fixture: &ErasureFixture,
) -> (Vec<Event>, Vec<Conversation>, Ticket) {
    (
        read_all(store).await,
        vec![
            conversation(store, &fixture.conversation).await,
            conversation(store, &fixture.other_conversation).await,
        ],
        ticket_of(store, &fixture.ticket).await,
    )
}

/// An erasure rewrites the plan's events (payloads erased, raw bodies of their requests
/// dropped), leaves every other event as it was, keeps the sequences gap-free and adds one
/// `contact_erased` event; conversations, messages and tickets are erased in the projections
/// and listings; all of it is what a reopened store shows too.
pub async fn erasure_erases_the_person_and_keeps_the_log(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let fixture = erasure_fixture(&store).await;
    let (before, conversations, ticket) = everything(&store, &fixture).await;
    assert!(
        !holding(&before, &fixture.personal).is_empty()
            && !holding(&before, std::slice::from_ref(&fixture.personal_long)).is_empty(),
        "the fixture stores the person's data"
    );
    let head = store.head();
    let report = store
        .erase_contact(fixture.plan.clone())
        .await
        .unwrap_or_else(|e| panic!("erase_contact: {e} ({e:?})"));
    assert_eq!(
        (report.conversations, report.tickets, report.events),
        (1, 1, fixture.plan.events.len() as u64),
        "the report counts the plan"
    );
    assert_eq!(
        report.sequence,
        Sequence(head.0 + 1),
        "the erasure is the next event"
    );
    assert_eq!(store.head(), report.sequence, "the head moved to it");

    let after = read_all(&store).await;
    assert_eq!(
        seqs(after.iter().map(|e| e.sequence)),
        (1..=head.0 + 1).collect::<Vec<_>>(),
        "the log stays gap-free with one more event"
    );
    let planned: BTreeSet<Sequence> = fixture.plan.events.iter().copied().collect();
    // Requests (by request id) holding a planned event lose their raw body.
    let touched_requests: BTreeSet<Option<String>> = before
        .iter()
        .filter(|e| planned.contains(&e.sequence))
        .map(|e| e.request_id.clone())
        .collect();
    for (old, new) in before.iter().zip(&after) {
        let mut expected = old.clone();
        if planned.contains(&old.sequence) {
            expected.erase_personal();
        }
        if touched_requests.contains(&old.request_id) {
            expected.raw = None;
        }
        assert_eq!(new, &expected, "event {} after the erasure", old.sequence);
    }
    assert!(
        before.iter().any(|e| e.raw.is_some()
            && !planned.contains(&e.sequence)
            && touched_requests.contains(&e.request_id)),
        "the fixture has a raw body on another event of a request the plan touches"
    );
    assert_eq!(
        holding(&after, &fixture.personal),
        Vec::<String>::new(),
        "the log still holds the person"
    );
    assert_eq!(
        holding(&after, std::slice::from_ref(&fixture.personal_long)),
        Vec::<String>::new()
    );
    assert_eq!(
        holding(&after, &fixture.others).len(),
        fixture.others.len(),
        "the other person's data stays"
    );
    let last = after.last().expect("the erasure event");
    assert_eq!(last.incoming.kind, EventKind::ContactErased);
    assert!(
        last.connection.is_system(),
        "on the system connection: {}",
        last.connection
    );
    assert_eq!(
        last.incoming.payload,
        EventPayload::Contact(ContactChange::Erased {
            contact: "c1".into(),
            conversations: 1,
            tickets: 1,
            events: fixture.plan.events.len() as u64,
        })
    );
    let by_key = store
        .event_by_dedup_key(&last.connection, &last.incoming.dedup_key)
        .await
        .expect("event_by_dedup_key of the erasure");
    assert_eq!(
        by_key.as_ref(),
        Some(last),
        "the erasure event by its dedup key"
    );
    for (key, sequence) in [("zq-m1", fixture.plan.events[1]), ("ym-m1", Sequence(6))] {
        let found = store
            .event_by_dedup_key(&fixture.conversation.connection, key)
            .await
            .expect("event_by_dedup_key")
            .unwrap_or_else(|| panic!("event {key} by its dedup key"));
        assert_eq!(found.sequence, sequence, "{key}");
        assert_eq!(
            &found,
            &after[(sequence.0 - 1) as usize],
            "{key} by dedup key as in the log"
        );
    }

    let mut expected_chat = conversations[0].clone();
    expected_chat.erase_personal();
    let chat = conversation(&store, &fixture.conversation).await;
    assert_eq!(chat, expected_chat, "the person's conversation, erased");
    assert_eq!(chat.messages.len(), 4, "every message stays, emptied");
    assert_eq!(holding(&chat, &fixture.personal), Vec::<String>::new());
    assert_eq!(
        conversation(&store, &fixture.other_conversation).await,
        conversations[1],
        "the other person's conversation is untouched"
    );
    let mut expected_ticket = ticket.clone();
    expected_ticket.erase_personal();
    assert_eq!(
        ticket_of(&store, &fixture.ticket).await,
        expected_ticket,
        "the ticket, erased"
    );
    let page = store
        .list_conversations(&ConversationQuery::default())
        .await
        .expect("list_conversations");
    assert_eq!(
        holding(&page.conversations, &fixture.personal),
        Vec::<String>::new(),
        "the listing"
    );
    assert_eq!(page.conversations.len(), 2, "both conversations are listed");

    let erased_view = everything(&store, &fixture).await;
    let store = backend.reopen(store).await;
    assert_eq!(
        everything(&store, &fixture).await,
        erased_view,
        "a reopened store shows the erasure"
    );
    assert_eq!(store.head(), report.sequence);
}

/// Which refusal a bad plan gets.
type Expected = fn(&StoreError) -> bool;

/// A plan naming an event not in the log, an event of a conversation or ticket it does not
/// name, an agent's event, an unknown conversation or ticket, or no contact is refused with
/// what is wrong, and changes nothing.
pub async fn a_bad_erasure_plan_changes_nothing(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let fixture = erasure_fixture(&store).await;
    let before = everything(&store, &fixture).await;
    let head = store.head();
    let good = fixture.plan.clone();
    let with = |change: &dyn Fn(&mut ErasurePlan)| {
        let mut plan = good.clone();
        change(&mut plan);
        plan
    };
    let other_event = Sequence(6); // the other person's first message
    let bad: Vec<(&str, ErasurePlan, Expected)> = vec![
        (
            "an event past the head",
            with(&|p| p.events.push(Sequence(head.0 + 3))),
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        ("event 0", with(&|p| p.events.push(Sequence(0))), |e| {
            matches!(e, StoreError::NotFound(_))
        }),
        (
            "another person's event",
            with(&|p| p.events.push(other_event)),
            |e| matches!(e, StoreError::InvalidArgument(_)),
        ),
        (
            "an agent's event",
            with(&|p| p.events.push(fixture.agent_event)),
            |e| matches!(e, StoreError::InvalidArgument(_)),
        ),
        (
            "the ticket's event without the ticket",
            with(&|p| p.tickets.clear()),
            |e| matches!(e, StoreError::InvalidArgument(_)),
        ),
        (
            "an unknown conversation",
            with(&|p| {
                p.conversations
                    .push(ConversationId::new(conn("erase"), "no-such-chat"))
            }),
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        (
            "an unknown ticket",
            with(&|p| {
                p.tickets
                    .push(TicketId::new(conn("erase"), "no-such-ticket"))
            }),
            |e| matches!(e, StoreError::NotFound(_)),
        ),
        ("no contact", with(&|p| p.contact.clear()), |e| {
            matches!(e, StoreError::InvalidArgument(_))
        }),
    ];
    for (what, plan, matches) in bad {
        let error = expect_error(what, store.erase_contact(plan).await, "a refusal", matches);
        assert!(!error.to_string().is_empty(), "{what}: a message");
        assert_eq!(store.head(), head, "{what}: the head moved");
        assert_eq!(
            everything(&store, &fixture).await,
            before,
            "{what}: something changed"
        );
    }
    // The good plan still works after the refusals, and twice is fine (nothing left to erase).
    let first = store
        .erase_contact(good.clone())
        .await
        .expect("the good plan");
    let second = store
        .erase_contact(good)
        .await
        .expect("the same plan again");
    assert_eq!(second.sequence, Sequence(first.sequence.0 + 1));
    let (events, ..) = everything(&store, &fixture).await;
    assert_eq!(events.len() as u64, head.0 + 2, "two erasure events");
}

/// An erasure among concurrent appends to the same conversation is serialized with them: the
/// log stays gap-free, and each message appended concurrently is erased in the projection if
/// its event came before the erasure's and kept if after (the erasure empties every message
/// the conversation holds when it runs; what comes later is new data).
pub async fn erasure_among_concurrent_appends_is_serialized(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let fixture = erasure_fixture(&store).await;
    let head = store.head();
    let c = fixture.conversation.connection.clone();
    let chat = fixture.conversation.external_id.clone();
    let appends: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let request = request(
                &c,
                "v",
                vec![message(
                    &format!("late-{i}"),
                    &chat,
                    60 + i,
                    &format!("late text {i}"),
                )],
            );
            tokio::spawn(async move { store.append(request).await })
        })
        .collect();
    let erasure = {
        let store = Arc::clone(&store);
        let plan = fixture.plan.clone();
        tokio::spawn(async move { store.erase_contact(plan).await })
    };
    let mut late: BTreeMap<String, Sequence> = BTreeMap::new();
    for (i, append) in appends.into_iter().enumerate() {
        let receipt = append
            .await
            .expect("an append task")
            .unwrap_or_else(|e| panic!("append late-{i}: {e}"));
        late.insert(format!("late-{i}"), receipt.appended[0]);
    }
    let report = erasure
        .await
        .expect("the erasure task")
        .expect("erase_contact");
    let events = read_all(&store).await;
    assert_eq!(
        seqs(events.iter().map(|e| e.sequence)),
        (1..=head.0 + 21).collect::<Vec<_>>(),
        "gap-free: the fixture, 20 appends and the erasure"
    );
    let chat = conversation(&store, &fixture.conversation).await;
    for (key, sequence) in &late {
        let text = &chat.messages[key].value.text;
        if *sequence < report.sequence {
            assert_eq!(
                text, "",
                "{key} (event {sequence}) came before the erasure ({})",
                report.sequence
            );
        } else {
            assert!(
                text.starts_with("late text"),
                "{key} (event {sequence}) came after the erasure ({}): {text:?}",
                report.sequence
            );
        }
        let logged = &events[(sequence.0 - 1) as usize];
        assert!(
            format!("{logged:?}").contains("late text"),
            "{key}: an event the plan does not name keeps its payload in the log"
        );
    }
    assert_eq!(holding(&chat, &fixture.personal), Vec::<String>::new());
}
