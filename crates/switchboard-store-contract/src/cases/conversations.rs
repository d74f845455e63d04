//! Conversation projections and their listing.

use std::collections::BTreeSet;

use switchboard_core::{
    Conversation, ConversationId, ConversationPatch, ConversationStatus, ErrorCode, EventKind,
    IncomingEvent, Participant, Rating, Role, Segment, Timestamp,
};
use switchboard_store::{
    ConversationQuery, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, StoreError, TicketListQuery,
};

use crate::Backend;
use crate::support::*;

fn patch_event(
    key: &str,
    kind: EventKind,
    when: i64,
    edit: impl FnOnce(&mut ConversationPatch),
) -> IncomingEvent {
    let mut patch = ConversationPatch::new("chat-1");
    edit(&mut patch);
    conversation_event(key, kind, when, patch)
}

/// Everything one conversation goes through: a start, agents joining and leaving, messages (one
/// edited), tags added and removed, the visitor in two halves, a rating, a segment, an end.
fn life_of_a_chat() -> Vec<IncomingEvent> {
    vec![
        patch_event("start", EventKind::ChatStarted, 10, |p| {
            p.status = Some(ConversationStatus::Open);
            p.started_at = Some(at(10));
            p.visitor = Some(Participant {
                id: "v-1".into(),
                name: Some("Ann".into()),
                email: Some("ann@example.com".into()),
                ..Default::default()
            });
            p.page_url = Some("https://shop.example.com/".into());
        }),
        patch_event("join", EventKind::ChatUpdated, 11, |p| {
            p.agents_joined.push(Participant {
                id: "ag-1".into(),
                name: Some("Bo".into()),
                ..Default::default()
            });
            p.agents_joined.push(Participant {
                id: "ag-2".into(),
                name: Some("Cy".into()),
                ..Default::default()
            });
            p.assigned_agent = Some("ag-1".into());
        }),
        patch_event("m1", EventKind::Message, 12, |p| {
            p.messages.push(chat_message("m1", 12, "hello"))
        }),
        patch_event("m2", EventKind::Message, 13, |p| {
            let mut m = chat_message("m2", 13, "hi, how can I help?");
            m.author_role = Role::Agent;
            m.author_id = Some("ag-1".into());
            p.messages.push(m);
        }),
        patch_event("tags", EventKind::ChatUpdated, 14, |p| {
            p.tags_added = vec!["vip".into(), "sales".into()];
            p.attributes.insert("queue".into(), "sales".into());
            p.segments.push(Segment {
                id: "seg-1".into(),
                started_at: Some(at(14)),
                ..Default::default()
            });
        }),
        patch_event("untag", EventKind::ChatUpdated, 15, |p| {
            p.tags_removed = vec!["sales".into()]
        }),
        patch_event("visitor", EventKind::ChatUpdated, 16, |p| {
            p.visitor = Some(Participant {
                id: "v-1".into(),
                name: Some("Ann B.".into()),
                phone: Some("+1 555".into()),
                ..Default::default()
            });
            p.attributes.insert("queue".into(), "support".into());
        }),
        patch_event("leave", EventKind::ChatUpdated, 17, |p| {
            p.agents_left.push("ag-2".into())
        }),
        patch_event("rate", EventKind::Rating, 18, |p| {
            p.rating = Some(Rating {
                score: Some(5),
                scale: Some("1-5".into()),
                ..Default::default()
            })
        }),
        patch_event("end", EventKind::ChatEnded, 19, |p| {
            p.status = Some(ConversationStatus::Closed);
            p.ended_at = Some(at(19));
            p.end_reason = Some("visitor_closed".into());
        }),
        patch_event("m1-edit", EventKind::Message, 20, |p| {
            p.messages.push(chat_message("m1", 12, "hello (edited)"))
        }),
    ]
}

/// The same events appended in different orders and groupings (with redeliveries) give equal
/// conversations, equal to the core's own merge ([`Conversation::apply`]).
pub async fn projections_merge_in_any_order(backend: &dyn Backend) {
    let events = life_of_a_chat();
    let c = conn("a");
    let id = ConversationId::new(c.clone(), "chat-1");
    let mut expected = Conversation::new(id.clone(), "vendor-a");
    for e in &events {
        if let switchboard_core::EventPayload::Conversation(p) = &e.payload {
            expected.apply(p, e.occurred_at, &e.dedup_key);
        }
    }

    let in_order = backend.fresh().await;
    for e in &events {
        append(
            &in_order,
            "in order",
            request(&c, "vendor-a", vec![e.clone()]),
        )
        .await;
    }
    let shuffled = backend.fresh().await;
    let order = [10, 3, 7, 0, 9, 1, 5, 8, 2, 6, 4];
    let pick = |range: &[usize]| range.iter().map(|i| events[*i].clone()).collect::<Vec<_>>();
    append(
        &shuffled,
        "shuffled 1",
        request(&c, "vendor-a", pick(&order[..4])),
    )
    .await;
    append(
        &shuffled,
        "shuffled 2",
        request(&c, "vendor-a", pick(&order[4..5])),
    )
    .await;
    append(
        &shuffled,
        "shuffled 3 with redeliveries",
        request(&c, "vendor-a", pick(&[order[0], 7, 7, order[5], order[6]])),
    )
    .await;
    append(
        &shuffled,
        "shuffled 4",
        request(&c, "vendor-a", pick(&order[7..])),
    )
    .await;
    append(
        &shuffled,
        "redelivered",
        request(&c, "vendor-a", pick(&[0, 9])),
    )
    .await;
    assert_eq!(
        shuffled.head().0,
        events.len() as u64,
        "events appended in the shuffled store"
    );

    // A store keeps how many events built a conversation (`event_count`), not necessarily
    // their keys (it applies each event once): compare without the keys.
    let without_keys = |mut conversation: Conversation| {
        conversation.event_keys.clear();
        conversation
    };
    let expected = without_keys(expected);
    let got_in_order = without_keys(
        in_order
            .get_conversation(&id)
            .await
            .expect("get")
            .expect("chat-1 (in order)"),
    );
    let got_shuffled = without_keys(
        shuffled
            .get_conversation(&id)
            .await
            .expect("get")
            .expect("chat-1 (shuffled)"),
    );
    assert_eq!(
        got_in_order, expected,
        "the projection differs from Conversation::apply in log order"
    );
    assert_eq!(
        got_shuffled, got_in_order,
        "the same events in another order give another conversation"
    );

    // What that merge means, spelled out.
    assert_eq!(got_in_order.status, ConversationStatus::Closed, "status");
    assert_eq!(got_in_order.started_at, Some(at(10)), "started_at");
    assert_eq!(got_in_order.ended_at, Some(at(19)), "ended_at");
    assert_eq!(got_in_order.updated_at, at(20), "updated_at");
    assert_eq!(got_in_order.vendor, "vendor-a", "vendor");
    let texts: Vec<(&str, &str)> = got_in_order
        .messages_in_order()
        .iter()
        .map(|m| (m.key.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        vec![("m1", "hello (edited)"), ("m2", "hi, how can I help?")],
        "messages"
    );
    assert_eq!(
        got_in_order.current_tags().collect::<Vec<_>>(),
        vec!["vip"],
        "tags"
    );
    let agents: Vec<&str> = got_in_order
        .current_agents()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(agents, vec!["ag-1"], "agents still in the chat");
    let visitor = &got_in_order.visitor.as_ref().expect("a visitor").value;
    assert_eq!(
        (
            visitor.name.as_deref(),
            visitor.email.as_deref(),
            visitor.phone.as_deref()
        ),
        (Some("Ann B."), Some("ann@example.com"), Some("+1 555")),
        "the visitor, merged field by field"
    );
    assert_eq!(
        got_in_order.attributes["queue"].value, "support",
        "attribute queue"
    );
    assert_eq!(
        got_in_order.rating.as_ref().map(|r| r.value.score),
        Some(Some(5)),
        "rating"
    );
    assert_eq!(
        got_in_order.event_count,
        events.len() as u64,
        "event_count: every distinct event once, redeliveries not counted"
    );

    let other = ConversationId::new(conn("b"), "chat-1");
    assert_eq!(
        in_order.get_conversation(&other).await.expect("get"),
        None,
        "chat-1 on a connection that never saw it"
    );
    let missing = ConversationId::new(c, "chat-2");
    assert_eq!(
        in_order.get_conversation(&missing).await.expect("get"),
        None,
        "an unknown conversation"
    );
}

/// (connection, vendor, chat, status, start, last event)
type Seed = (
    &'static str,
    &'static str,
    &'static str,
    ConversationStatus,
    Option<i64>,
    i64,
);

const LISTING: &[Seed] = &[
    (
        "a",
        "alpha",
        "c01",
        ConversationStatus::Open,
        Some(100),
        110,
    ),
    (
        "a",
        "alpha",
        "c02",
        ConversationStatus::Closed,
        Some(200),
        250,
    ),
    (
        "a",
        "alpha",
        "c03",
        ConversationStatus::Missed,
        Some(300),
        300,
    ),
    (
        "a",
        "alpha",
        "c04",
        ConversationStatus::Queued,
        Some(400),
        420,
    ),
    ("a", "alpha", "c05", ConversationStatus::Unknown, None, 450),
    ("a", "alpha", "t1", ConversationStatus::Open, Some(500), 510),
    ("a", "alpha", "t2", ConversationStatus::Open, Some(500), 505),
    ("b", "beta", "c01", ConversationStatus::Open, Some(150), 160),
    (
        "b",
        "beta",
        "c02",
        ConversationStatus::Closed,
        Some(350),
        600,
    ),
    (
        "b",
        "beta",
        "c03",
        ConversationStatus::Offline,
        Some(250),
        250,
    ),
    (
        "c",
        "alpha",
        "c01",
        ConversationStatus::Closed,
        Some(120),
        130,
    ),
    (
        "c",
        "alpha",
        "c02",
        ConversationStatus::Open,
        Some(700),
        700,
    ),
];

async fn seed(store: &Store, seeds: &[Seed]) {
    for (connection, vendor, chat, status, start, last) in seeds {
        let mut events = Vec::new();
        if let Some(start) = start {
            events.push(with_status(
                &format!("{chat}-status-{start}"),
                chat,
                *start,
                *status,
            ));
        }
        if start.is_none_or(|s| s < *last) {
            events.push(message(
                &format!("{chat}-last-{last}"),
                chat,
                *last,
                "the latest",
            ));
        }
        append(
            store,
            "seeding conversations",
            request(&conn(connection), vendor, events),
        )
        .await;
    }
}

fn in_range(at: Option<Timestamp>, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    match at {
        Some(at) => from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t),
        None => from.is_none() && to.is_none(),
    }
}

/// What a query should list, worked out from the conversations themselves.
fn reference(all: &[Conversation], query: &ConversationQuery) -> Vec<String> {
    let mut matching: Vec<&Conversation> = all
        .iter()
        .filter(|c| query.connections.is_empty() || query.connections.contains(&c.id.connection))
        .filter(|c| query.vendors.is_empty() || query.vendors.contains(&c.vendor))
        .filter(|c| query.statuses.is_empty() || query.statuses.contains(&c.status))
        .filter(|c| in_range(c.started_at, query.started_from, query.started_to))
        .filter(|c| in_range(Some(c.updated_at), query.updated_from, query.updated_to))
        .collect();
    matching.sort_by_key(|c| {
        std::cmp::Reverse((c.started_at.unwrap_or(c.updated_at), c.id.to_string()))
    });
    matching.iter().map(|c| c.id.to_string()).collect()
}

async fn all_seeded(store: &Store, seeds: &[Seed]) -> Vec<Conversation> {
    let mut all = Vec::new();
    for (connection, _, chat, ..) in seeds {
        let id = ConversationId::new(conn(connection), *chat);
        all.push(
            store
                .get_conversation(&id)
                .await
                .expect("get_conversation")
                .unwrap_or_else(|| panic!("{id} was not stored")),
        );
    }
    all
}

async fn list_ids(store: &Store, what: &str, query: &ConversationQuery) -> Vec<String> {
    let page = store
        .list_conversations(query)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        page.next_page_token, None,
        "{what}: one page holds everything, yet there is a next page"
    );
    page.conversations
        .iter()
        .map(|c| c.id.to_string())
        .collect()
}

fn ids(list: &[(&str, &str)]) -> Vec<String> {
    list.iter()
        .map(|(c, chat)| format!("contract-{c}/{chat}"))
        .collect()
}

/// Every filter of `list_conversations`, alone and together; time ranges are `[from, to)`.
pub async fn list_conversations_filters(backend: &dyn Backend) {
    let store = backend.fresh().await;
    seed(&store, LISTING).await;
    let all = all_seeded(&store, LISTING).await;
    assert_eq!(
        store
            .conversation_count()
            .await
            .expect("conversation_count"),
        LISTING.len() as u64,
        "conversation_count"
    );
    for (conversation, (_, vendor, chat, status, start, last)) in all.iter().zip(LISTING) {
        let id = &conversation.id;
        assert_eq!(
            (conversation.vendor.as_str(), conversation.status),
            (*vendor, *status),
            "{chat}: vendor and status"
        );
        assert_eq!(conversation.started_at, start.map(at), "{id}: started_at");
        assert_eq!(conversation.updated_at, at(*last), "{id}: updated_at");
    }
    let q = ConversationQuery::default;
    let queries: Vec<(&str, ConversationQuery)> = vec![
        ("no filter", q()),
        (
            "connection a",
            ConversationQuery {
                connections: vec![conn("a")],
                ..q()
            },
        ),
        (
            "connections a or b",
            ConversationQuery {
                connections: vec![conn("a"), conn("b")],
                ..q()
            },
        ),
        (
            "vendor alpha",
            ConversationQuery {
                vendors: vec!["alpha".into()],
                ..q()
            },
        ),
        (
            "status closed",
            ConversationQuery {
                statuses: vec![ConversationStatus::Closed],
                ..q()
            },
        ),
        (
            "status open or queued",
            ConversationQuery {
                statuses: vec![ConversationStatus::Open, ConversationStatus::Queued],
                ..q()
            },
        ),
        (
            "status unknown",
            ConversationQuery {
                statuses: vec![ConversationStatus::Unknown],
                ..q()
            },
        ),
        (
            "started in [200, 400)",
            ConversationQuery {
                started_from: Some(at(200)),
                started_to: Some(at(400)),
                ..q()
            },
        ),
        (
            "started from 500",
            ConversationQuery {
                started_from: Some(at(500)),
                ..q()
            },
        ),
        (
            "started before 150",
            ConversationQuery {
                started_to: Some(at(150)),
                ..q()
            },
        ),
        (
            "updated in [250, 450)",
            ConversationQuery {
                updated_from: Some(at(250)),
                updated_to: Some(at(450)),
                ..q()
            },
        ),
        (
            "updated from 505",
            ConversationQuery {
                updated_from: Some(at(505)),
                ..q()
            },
        ),
        (
            "connection a, open or closed, started from 150",
            ConversationQuery {
                connections: vec![conn("a")],
                statuses: vec![ConversationStatus::Open, ConversationStatus::Closed],
                started_from: Some(at(150)),
                ..q()
            },
        ),
        (
            "vendor beta, closed",
            ConversationQuery {
                vendors: vec!["beta".into()],
                statuses: vec![ConversationStatus::Closed],
                ..q()
            },
        ),
        (
            "vendor alpha, connection b",
            ConversationQuery {
                vendors: vec!["alpha".into()],
                connections: vec![conn("b")],
                ..q()
            },
        ),
        (
            "an unknown connection",
            ConversationQuery {
                connections: vec![conn("nobody")],
                ..q()
            },
        ),
        (
            "an unknown vendor",
            ConversationQuery {
                vendors: vec!["nobody".into()],
                ..q()
            },
        ),
    ];
    for (what, query) in &queries {
        assert_eq!(
            list_ids(&store, what, query).await,
            reference(&all, query),
            "list_conversations with {what}"
        );
    }
    // The reference itself, spelled out for a few.
    assert_eq!(
        reference(&all, &queries[7].1),
        ids(&[("b", "c02"), ("a", "c03"), ("b", "c03"), ("a", "c02")]),
        "started in [200, 400)"
    );
    assert_eq!(
        reference(&all, &queries[10].1),
        ids(&[("a", "c04"), ("a", "c03"), ("b", "c03"), ("a", "c02")]),
        "updated in [250, 450)"
    );
    assert_eq!(
        reference(&all, &queries[6].1),
        ids(&[("a", "c05")]),
        "status unknown"
    );
}

/// Newest first by start (else last change), ties by id descending.
pub async fn list_conversations_orders_newest_first(backend: &dyn Backend) {
    let store = backend.fresh().await;
    seed(&store, LISTING).await;
    let listed = list_ids(&store, "no filter", &ConversationQuery::default()).await;
    let expected = ids(&[
        ("c", "c02"),
        ("a", "t2"),
        ("a", "t1"),
        ("a", "c05"),
        ("a", "c04"),
        ("b", "c02"),
        ("a", "c03"),
        ("b", "c03"),
        ("a", "c02"),
        ("b", "c01"),
        ("c", "c01"),
        ("a", "c01"),
    ]);
    assert_eq!(listed, expected, "the order of list_conversations");
    // A later event that changes nothing about the start keeps the place; a conversation
    // without a start moves with its last change.
    seed(
        &store,
        &[("a", "alpha", "c05", ConversationStatus::Unknown, None, 800)],
    )
    .await;
    let listed = list_ids(&store, "no filter", &ConversationQuery::default()).await;
    assert_eq!(
        listed.first().map(String::as_str),
        Some("contract-a/c05"),
        "a start-less conversation changed last is first"
    );
    assert_eq!(
        listed.len(),
        LISTING.len(),
        "a changed conversation is listed once"
    );
}

async fn walk(
    store: &Store,
    what: &str,
    mut query: ConversationQuery,
    sizes: &[usize],
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    for round in 0.. {
        assert!(round < 100, "{what}: more than 100 pages");
        query.page_size = sizes[round.min(sizes.len() - 1)];
        let page = store
            .list_conversations(&query)
            .await
            .unwrap_or_else(|e| panic!("{what}, page {round}: {e}"));
        pages.push(
            page.conversations
                .iter()
                .map(|c| c.id.to_string())
                .collect(),
        );
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => return pages,
        }
    }
    unreachable!()
}

/// Paging returns every conversation once, in order, in pages of the size asked; tokens are
/// bound to their filters.
pub async fn list_conversations_pages(backend: &dyn Backend) {
    let store = backend.fresh().await;
    seed(&store, LISTING).await;
    let all = all_seeded(&store, LISTING).await;
    let everything = ConversationQuery::default();
    let pages = walk(&store, "pages of 5", everything.clone(), &[5]).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![5, 5, 2],
        "page sizes paging 12 conversations by 5"
    );
    assert_eq!(
        pages.concat(),
        reference(&all, &everything),
        "pages of 5, joined"
    );

    let only_a = ConversationQuery {
        connections: vec![conn("a")],
        ..Default::default()
    };
    let pages = walk(&store, "connection a by 2", only_a.clone(), &[2]).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 2, 1],
        "page sizes paging 7 by 2"
    );
    assert_eq!(
        pages.concat(),
        reference(&all, &only_a),
        "connection a by 2, joined"
    );

    let pages = walk(&store, "sizes 2, 3, 100", everything.clone(), &[2, 3, 100]).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 3, 7],
        "a token is good with another page size"
    );
    assert_eq!(
        pages.concat(),
        reference(&all, &everything),
        "pages of changing sizes, joined"
    );

    // The same filters in another order are the same filters.
    let ab = ConversationQuery {
        connections: vec![conn("a"), conn("b")],
        page_size: 4,
        ..Default::default()
    };
    let first = store
        .list_conversations(&ab)
        .await
        .expect("connections a, b");
    let ba = ConversationQuery {
        connections: vec![conn("b"), conn("a")],
        page_size: 100,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    let rest = store
        .list_conversations(&ba)
        .await
        .expect("connections b, a with the token of a, b");
    let joined: Vec<String> = first
        .conversations
        .iter()
        .chain(&rest.conversations)
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(
        joined,
        reference(&all, &ab),
        "paging with the connections listed in another order"
    );

    let token = store
        .list_conversations(&ConversationQuery {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("a first page")
        .next_page_token
        .expect("a next page token");
    let mismatches: Vec<(&str, ConversationQuery)> = vec![
        (
            "connection a",
            ConversationQuery {
                connections: vec![conn("a")],
                ..Default::default()
            },
        ),
        (
            "vendor alpha",
            ConversationQuery {
                vendors: vec!["alpha".into()],
                ..Default::default()
            },
        ),
        (
            "status open",
            ConversationQuery {
                statuses: vec![ConversationStatus::Open],
                ..Default::default()
            },
        ),
        (
            "started from 1",
            ConversationQuery {
                started_from: Some(at(1)),
                ..Default::default()
            },
        ),
        (
            "updated before 1000",
            ConversationQuery {
                updated_to: Some(at(1000)),
                ..Default::default()
            },
        ),
    ];
    for (what, mut query) in mismatches {
        query.page_token = Some(token.clone());
        expect_error(
            &format!("a token of no filters used with {what}"),
            store.list_conversations(&query).await,
            "PageTokenMismatch",
            |e| matches!(e, StoreError::PageTokenMismatch),
        );
    }
    for garbage in ["garbage", "!!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let query = ConversationQuery {
            page_token: Some(garbage.into()),
            ..Default::default()
        };
        let error = expect_error(
            &format!("the token {garbage:?}"),
            store.list_conversations(&query).await,
            "BadPageToken",
            |e| matches!(e, StoreError::BadPageToken | StoreError::PageTokenMismatch),
        );
        if garbage != "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" {
            assert!(
                matches!(error, StoreError::BadPageToken),
                "the token {garbage:?}: {error:?}"
            );
        }
        assert_eq!(
            error.code(),
            ErrorCode::InvalidArgument,
            "the token {garbage:?}"
        );
    }
}

/// Page size 0 means the default, more than the largest means the largest, for conversations
/// and tickets.
pub async fn page_sizes_are_defaulted_and_capped(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    let total = MAX_PAGE_SIZE + 1;
    let starts = (0..total)
        .map(|i| started(&format!("s{i:04}"), &format!("chat-{i:04}"), i as i64))
        .collect();
    append(&store, "1001 conversations", request(&c, "v", starts)).await;
    let tickets = (0..total)
        .map(|i| {
            ticket_event(
                &format!("t{i:04}"),
                ticket(
                    &format!("t-{i:04}"),
                    switchboard_core::TicketStatus::Open,
                    1,
                    "s",
                ),
            )
        })
        .collect();
    append(&store, "1001 tickets", request(&c, "v", tickets)).await;
    assert_eq!(
        store.conversation_count().await.expect("count"),
        total as u64,
        "conversation_count"
    );

    for (asked, expected) in [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (usize::MAX, MAX_PAGE_SIZE),
    ] {
        let page = store
            .list_conversations(&ConversationQuery {
                page_size: asked,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("conversations, page_size {asked}: {e}"));
        assert_eq!(
            page.conversations.len(),
            expected,
            "conversations listed with page_size {asked}"
        );
        assert!(
            page.next_page_token.is_some(),
            "no next page after {expected} of {total} conversations"
        );
        let page = store
            .list_tickets(&TicketListQuery {
                page_size: asked,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("tickets, page_size {asked}: {e}"));
        assert_eq!(
            page.tickets.len(),
            expected,
            "tickets listed with page_size {asked}"
        );
        assert!(
            page.next_page_token.is_some(),
            "no next page after {expected} of {total} tickets"
        );
    }
    let first = store
        .list_conversations(&ConversationQuery {
            page_size: MAX_PAGE_SIZE,
            ..Default::default()
        })
        .await
        .expect("first");
    let rest = store
        .list_conversations(&ConversationQuery {
            page_size: MAX_PAGE_SIZE,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect("the rest");
    assert_eq!(
        rest.next_page_token, None,
        "a next page after every conversation"
    );
    let seen: BTreeSet<String> = first
        .conversations
        .iter()
        .chain(&rest.conversations)
        .map(|c| c.id.external_id.clone())
        .collect();
    assert_eq!(
        seen.len(),
        total,
        "conversations seen over two pages of 1000"
    );
    assert_eq!(
        rest.conversations
            .iter()
            .map(|c| c.id.external_id.as_str())
            .collect::<Vec<_>>(),
        vec!["chat-0000"],
        "the oldest is last"
    );
}
