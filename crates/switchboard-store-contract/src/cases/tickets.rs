//! Tickets: the projection, listing, and updates run in the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use switchboard_core::{
    ConnectionId, ErrorCode, EventKind, EventPayload, Participant, Sequence, Ticket, TicketChange,
    TicketId, TicketStatus,
};
use switchboard_store::{StoreError, TicketListQuery, TicketUpdate};

use crate::Backend;
use crate::support::*;

async fn get_ticket(store: &Store, id: &TicketId) -> Ticket {
    store
        .get_ticket(id)
        .await
        .unwrap_or_else(|e| panic!("get_ticket({id}): {e}"))
        .unwrap_or_else(|| panic!("get_ticket({id}): not found"))
}

/// A ticket is the version with the latest `updated_at`, ties going to the later event.
pub async fn tickets_are_last_writer_wins(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    let id = TicketId::new(c.clone(), "t-1");
    let newer = ticket("t-1", TicketStatus::Pending, 10, "newer");
    append(
        &store,
        "version at 10",
        request(&c, "v", vec![ticket_event("v10", newer.clone())]),
    )
    .await;
    assert_eq!(get_ticket(&store, &id).await, newer, "the first version");
    append(
        &store,
        "version at 5",
        request(
            &c,
            "v",
            vec![ticket_event(
                "v5",
                ticket("t-1", TicketStatus::Open, 5, "older"),
            )],
        ),
    )
    .await;
    assert_eq!(
        get_ticket(&store, &id).await,
        newer,
        "an older version arriving later replaced a newer one"
    );
    let tie = ticket("t-1", TicketStatus::Solved, 10, "same time, later event");
    append(
        &store,
        "another version at 10",
        request(&c, "v", vec![ticket_event("v10b", tie.clone())]),
    )
    .await;
    assert_eq!(
        get_ticket(&store, &id).await,
        tie,
        "at the same updated_at the later event wins"
    );
    let newest = ticket("t-1", TicketStatus::Spam, 11, "newest");
    let older_again = ticket("t-1", TicketStatus::Open, 7, "older again");
    append(
        &store,
        "two versions in one request",
        request(
            &c,
            "v",
            vec![
                ticket_event("v11", newest.clone()),
                ticket_event("v7", older_again),
            ],
        ),
    )
    .await;
    assert_eq!(
        get_ticket(&store, &id).await,
        newest,
        "newest then older in one request"
    );
    assert_eq!(
        store
            .get_ticket(&TicketId::new(conn("b"), "t-1"))
            .await
            .expect("get_ticket"),
        None,
        "t-1 on another connection"
    );
    assert_eq!(
        store
            .get_ticket(&TicketId::new(c, "t-2"))
            .await
            .expect("get_ticket"),
        None,
        "an unknown ticket"
    );
}

/// (connection, id, status)
const TICKETS: &[(&str, &str, TicketStatus)] = &[
    ("a", "t-03", TicketStatus::Open),
    ("a", "t-01", TicketStatus::Solved),
    ("a", "t-05", TicketStatus::Open),
    ("a", "t-02", TicketStatus::Pending),
    ("a", "t-04", TicketStatus::Open),
    ("b", "t-02", TicketStatus::Open),
    ("b", "t-01", TicketStatus::Spam),
    ("c", "t-01", TicketStatus::Open),
];

fn expected_tickets(connections: &[&str], statuses: &[TicketStatus]) -> Vec<(String, String)> {
    let mut expected: Vec<(String, String)> = TICKETS
        .iter()
        .filter(|(c, _, _)| connections.is_empty() || connections.contains(c))
        .filter(|(_, _, s)| statuses.is_empty() || statuses.contains(s))
        .map(|(c, id, _)| (conn(c).to_string(), (*id).to_owned()))
        .collect();
    expected.sort();
    expected
}

fn listed(tickets: &[(ConnectionId, Ticket)]) -> Vec<(String, String)> {
    tickets
        .iter()
        .map(|(c, t)| (c.to_string(), t.external_id.clone()))
        .collect()
}

/// Checks the tickets are grouped by connection, ordered by id within one; returns them
/// sorted by (connection, id) to compare as a set.
fn grouped(what: &str, tickets: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen_connections: Vec<&str> = Vec::new();
    for pair in tickets.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[0].1 < pair[1].1,
                "{what}: tickets of {} not ordered by id: {tickets:?}",
                pair[0].0
            );
        }
    }
    for (c, _) in &tickets {
        if seen_connections.last() != Some(&c.as_str()) {
            assert!(
                !seen_connections.contains(&c.as_str()),
                "{what}: tickets of {c} are not grouped: {tickets:?}"
            );
            seen_connections.push(c);
        }
    }
    let mut sorted = tickets.clone();
    sorted.sort();
    sorted
}

/// `list_tickets` by connection and status, grouped by connection and ordered by id, with
/// paging and tokens bound to the filters.
pub async fn list_tickets_filters_and_pages(backend: &dyn Backend) {
    let store = backend.fresh().await;
    for (c, id, status) in TICKETS {
        let key = format!("{c}-{id}");
        append(
            &store,
            "seeding tickets",
            request(
                &conn(c),
                "v",
                vec![ticket_event(&key, ticket(id, *status, 1, "s"))],
            ),
        )
        .await;
    }
    let cases: Vec<(&str, Vec<&str>, Vec<TicketStatus>)> = vec![
        ("no filter", vec![], vec![]),
        ("connection a", vec!["a"], vec![]),
        ("connections a or b", vec!["a", "b"], vec![]),
        ("status open", vec![], vec![TicketStatus::Open]),
        (
            "status solved or spam",
            vec![],
            vec![TicketStatus::Solved, TicketStatus::Spam],
        ),
        ("connection a, open", vec!["a"], vec![TicketStatus::Open]),
        ("an unknown connection", vec!["nobody"], vec![]),
    ];
    for (what, connections, statuses) in cases {
        let query = TicketListQuery {
            connections: connections.iter().map(|c| conn(c)).collect(),
            statuses: statuses.clone(),
            page_size: 100,
            page_token: None,
        };
        let page = store
            .list_tickets(&query)
            .await
            .unwrap_or_else(|e| panic!("list_tickets with {what}: {e}"));
        assert_eq!(
            page.next_page_token, None,
            "list_tickets with {what}: a next page after everything"
        );
        assert_eq!(
            grouped(what, listed(&page.tickets)),
            expected_tickets(&connections, &statuses),
            "list_tickets with {what}"
        );
    }
    // One connection: exactly ordered by id.
    let only_a = TicketListQuery {
        connections: vec![conn("a")],
        ..Default::default()
    };
    let page = store.list_tickets(&only_a).await.expect("connection a");
    let order: Vec<&str> = page
        .tickets
        .iter()
        .map(|(_, t)| t.external_id.as_str())
        .collect();
    assert_eq!(
        order,
        vec!["t-01", "t-02", "t-03", "t-04", "t-05"],
        "connection a's tickets by id"
    );
    let ticket_a3 = page
        .tickets
        .iter()
        .find(|(_, t)| t.external_id == "t-03")
        .expect("t-03");
    assert_eq!(
        ticket_a3.1,
        ticket("t-03", TicketStatus::Open, 1, "s"),
        "a listed ticket's fields"
    );

    // Paging: every ticket once, in pages of 3.
    let mut query = TicketListQuery {
        page_size: 3,
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = store.list_tickets(&query).await.expect("a page of tickets");
        pages.push(listed(&page.tickets));
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => break,
        }
        assert!(pages.len() < 20, "more than 20 pages of 8 tickets");
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 2],
        "pages of 3 of 8 tickets"
    );
    assert_eq!(
        grouped("pages of 3", pages.concat()),
        expected_tickets(&[], &[]),
        "paging every ticket by 3"
    );

    // Paging with a status filter.
    let mut query = TicketListQuery {
        statuses: vec![TicketStatus::Open],
        page_size: 2,
        ..Default::default()
    };
    let mut joined = Vec::new();
    loop {
        let page = store
            .list_tickets(&query)
            .await
            .expect("a page of open tickets");
        assert!(
            !page.tickets.is_empty() || joined.is_empty(),
            "an empty page of open tickets after a next_page_token"
        );
        joined.extend(listed(&page.tickets));
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => break,
        }
        assert!(joined.len() < 20, "paging open tickets does not end");
    }
    assert_eq!(
        grouped("open by 2", joined),
        expected_tickets(&[], &[TicketStatus::Open]),
        "paging open tickets by 2"
    );

    let token = store
        .list_tickets(&TicketListQuery {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("a first page")
        .next_page_token
        .expect("a next page token");
    for (what, mut query) in [
        (
            "connection a",
            TicketListQuery {
                connections: vec![conn("a")],
                ..Default::default()
            },
        ),
        (
            "status open",
            TicketListQuery {
                statuses: vec![TicketStatus::Open],
                ..Default::default()
            },
        ),
    ] {
        query.page_token = Some(token.clone());
        expect_error(
            &format!("a ticket token of no filters used with {what}"),
            store.list_tickets(&query).await,
            "PageTokenMismatch",
            |e| matches!(e, StoreError::PageTokenMismatch),
        );
    }
    let query = TicketListQuery {
        page_token: Some("garbage".into()),
        ..Default::default()
    };
    expect_error(
        "the ticket token \"garbage\"",
        store.list_tickets(&query).await,
        "BadPageToken",
        |e| matches!(e, StoreError::BadPageToken),
    );
}

fn change() -> TicketChange {
    TicketChange::default()
}

fn update(id: &TicketId, change: TicketChange, when: i64) -> TicketUpdate {
    TicketUpdate {
        id: id.clone(),
        vendor: "vendor-a".into(),
        change,
        at: at(when),
    }
}

/// `update_ticket` applies a change and appends it as a `ticket_updated` event; a missing
/// ticket is NotFound; a change that changes nothing or a bad requester e-mail is Refused, and
/// nothing is appended then.
pub async fn update_ticket_applies_and_refuses(backend: &dyn Backend) {
    let store = backend.fresh().await;
    let c = conn("a");
    let id = TicketId::new(c.clone(), "t-1");
    let original = ticket("t-1", TicketStatus::Open, 10, "Help");
    append(
        &store,
        "the ticket",
        request(
            &c,
            "vendor-a",
            vec![ticket_event("t-1-created", original.clone())],
        ),
    )
    .await;

    let missing = TicketId::new(c.clone(), "t-404");
    expect_error(
        "updating a missing ticket",
        store
            .update_ticket(update(
                &missing,
                TicketChange {
                    status: Some(TicketStatus::Solved),
                    ..change()
                },
                20,
            ))
            .await,
        "NotFound",
        |e| matches!(e, StoreError::NotFound(_)),
    );
    let elsewhere = TicketId::new(conn("b"), "t-1");
    expect_error(
        "updating t-1 on another connection",
        store
            .update_ticket(update(
                &elsewhere,
                TicketChange {
                    status: Some(TicketStatus::Solved),
                    ..change()
                },
                20,
            ))
            .await,
        "NotFound",
        |e| matches!(e, StoreError::NotFound(_)),
    );

    for (what, refused) in [
        ("an empty change", change()),
        (
            "a blank message only",
            TicketChange {
                message: Some("   ".into()),
                ..change()
            },
        ),
        (
            "a bad requester e-mail",
            TicketChange {
                requester: Some(Participant {
                    email: Some("not-an-email".into()),
                    ..Default::default()
                }),
                subject: Some("x".into()),
                ..change()
            },
        ),
    ] {
        let error = expect_error(
            what,
            store.update_ticket(update(&id, refused, 20)).await,
            "Refused",
            |e| matches!(e, StoreError::Refused(_)),
        );
        assert_eq!(
            error.code(),
            ErrorCode::InvalidArgument,
            "{what}: the error code"
        );
        assert_eq!(store.head(), Sequence(1), "{what}: appended something");
        assert_eq!(
            get_ticket(&store, &id).await,
            original,
            "{what}: changed the ticket"
        );
    }

    let asked = TicketChange {
        message: Some("We are on it".into()),
        status: Some(TicketStatus::Pending),
        assignee_id: Some("ag-1".into()),
        tags: Some(vec!["billing".into()]),
        requester: Some(Participant {
            email: Some("new@example.com".into()),
            name: Some("New Name".into()),
            ..Default::default()
        }),
        subject: Some("Help, please".into()),
    };
    let mut expected = original.clone();
    assert!(
        expected
            .apply_change(&asked, at(20))
            .expect("the change applies"),
        "the change changes something"
    );
    let updated = store
        .update_ticket(update(&id, asked, 20))
        .await
        .expect("update_ticket");
    assert_eq!(
        updated, expected,
        "the updated ticket is Ticket::apply_change's"
    );
    assert_eq!(
        get_ticket(&store, &id).await,
        updated,
        "get_ticket after the update"
    );
    assert_eq!(store.head(), Sequence(2), "head after one update");
    let events = read_all(&store).await;
    let event = &events[1];
    assert_eq!(
        event.incoming.kind,
        EventKind::TicketUpdated,
        "the update's event kind"
    );
    assert_eq!(
        event.incoming.payload,
        EventPayload::Ticket(updated.clone()),
        "the update's event payload"
    );
    assert_eq!(
        (&event.connection, event.vendor.as_str()),
        (&c, "vendor-a"),
        "the update's event connection and vendor"
    );
    assert_eq!(
        event.incoming.occurred_at, updated.updated_at,
        "the update's event time"
    );
    assert!(
        !event.incoming.dedup_key.is_empty(),
        "the update's event has an empty dedup key"
    );

    // A change asked "before" the ticket's last change does not move updated_at backwards.
    let late = store
        .update_ticket(update(
            &id,
            TicketChange {
                status: Some(TicketStatus::Solved),
                ..change()
            },
            5,
        ))
        .await
        .expect("an update at an earlier time");
    assert_eq!(
        (late.status, late.updated_at),
        (TicketStatus::Solved, at(20)),
        "an update asked at an earlier time"
    );
    assert_eq!(
        get_ticket(&store, &id).await,
        late,
        "get_ticket after the late update"
    );

    // An update survives a restart, and a restart does not break updates.
    let store = backend.reopen(store).await;
    assert_eq!(
        get_ticket(&store, &id).await,
        late,
        "the updated ticket after a restart"
    );
    let again = store
        .update_ticket(update(
            &id,
            TicketChange {
                message: Some("after restart".into()),
                ..change()
            },
            30,
        ))
        .await
        .expect("an update after a restart");
    assert_eq!(
        again.events.last().map(|e| e.message.as_str()),
        Some("after restart"),
        "the message added after a restart"
    );
    assert_eq!(store.head(), Sequence(4), "head after three updates");
}

/// 20 concurrent updates each adding a message: all 20 messages end in the ticket and 20
/// `ticket_updated` events in the log.
pub async fn concurrent_ticket_updates_lose_nothing(backend: &dyn Backend) {
    const UPDATES: usize = 20;
    let store = backend.fresh().await;
    let c = conn("a");
    let id = TicketId::new(c.clone(), "t-1");
    append(
        &store,
        "the ticket",
        request(
            &c,
            "vendor-a",
            vec![ticket_event(
                "t-1-created",
                ticket("t-1", TicketStatus::Open, 10, "Help"),
            )],
        ),
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(UPDATES));
    let mut tasks = Vec::new();
    for i in 0..UPDATES {
        let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let change = TicketChange {
                message: Some(format!("message {i}")),
                ..TicketChange::default()
            };
            store
                .update_ticket(update(&id, change, 20 + i as i64))
                .await
                .unwrap_or_else(|e| panic!("update {i}: {e}"))
        }));
    }
    for task in tasks {
        task.await.expect("an updating task panicked");
    }
    let final_ticket = get_ticket(&store, &id).await;
    let messages: BTreeSet<String> = final_ticket
        .events
        .iter()
        .map(|e| e.message.clone())
        .collect();
    let expected: BTreeSet<String> = (0..UPDATES).map(|i| format!("message {i}")).collect();
    assert_eq!(
        messages, expected,
        "the ticket's messages after {UPDATES} concurrent updates"
    );
    assert_eq!(
        final_ticket.events.len(),
        UPDATES,
        "the ticket's history holds a message twice"
    );
    assert_eq!(
        store.head().0,
        1 + UPDATES as u64,
        "head after {UPDATES} updates"
    );
    let events = read_all(&store).await;
    let updates: Vec<_> = events
        .iter()
        .filter(|e| {
            e.incoming.kind == EventKind::TicketUpdated && e.incoming.dedup_key != "t-1-created"
        })
        .collect();
    assert_eq!(updates.len(), UPDATES, "ticket_updated events in the log");
    let last = updates.last().expect("an update event");
    assert_eq!(
        last.incoming.payload,
        EventPayload::Ticket(final_ticket.clone()),
        "the last update's event holds the final ticket"
    );
    let mut sizes: Vec<usize> = updates
        .iter()
        .map(|e| match &e.incoming.payload {
            EventPayload::Ticket(t) => t.events.len(),
            other => panic!("a ticket_updated event with {other:?}"),
        })
        .collect();
    sizes.dedup();
    assert_eq!(
        sizes,
        (1..=UPDATES).collect::<Vec<_>>(),
        "each update's event holds one more message than the one before"
    );
}
