//! Listing conversations: filters, order, paging and page tokens.

mod common;

use std::collections::HashSet;

use common::{conn, ended, message, request, started, temp_store, ts};
use switchboard_core::{Conversation, ConversationStatus, ErrorCode, IncomingEvent};
use switchboard_store::{ConversationQuery, Store, StoreError};

const CONNECTIONS: [(&str, &str); 3] = [
    ("lc", "livechat"),
    ("lc-eu", "livechat"),
    ("ss", "smartsupp"),
];

/// 90 conversations over three connections and two vendors. Events arrive in three rounds, so
/// that statuses and sort keys change after the conversations were first indexed: a chat whose
/// message came first is indexed by its update time until its start arrives.
async fn populate(store: &Store) {
    for round in 0..3 {
        for i in 0..90usize {
            let (connection, vendor) = CONNECTIONS[i % 3];
            let chat = format!("chat-{i:02}");
            let start = 1_000 + ((i * 37) % 50) as i64 * 10; // ties on purpose
            let events: Vec<IncomingEvent> = match (round, i % 5) {
                (0, 0) => vec![message(&format!("{chat}-m"), &chat, start + 5, "first")],
                (0, _) => vec![started(&format!("{chat}-s"), &chat, start)],
                (1, 0) if i % 10 == 0 => vec![started(&format!("{chat}-s"), &chat, start)],
                (1, 1 | 2) => vec![message(&format!("{chat}-m"), &chat, start + 3, "hi")],
                (2, 2 | 3) => vec![ended(&format!("{chat}-e"), &chat, start + 100)],
                _ => vec![],
            };
            if !events.is_empty() {
                store
                    .append(request(connection, vendor, events))
                    .await
                    .unwrap();
            }
        }
    }
}

fn sort_key(c: &Conversation) -> i64 {
    c.started_at.unwrap_or(c.updated_at).as_millis()
}

/// Every page of a query, checking that pages are full until the last.
fn all_pages(store: &Store, query: &ConversationQuery) -> Vec<Conversation> {
    let mut query = query.clone();
    let mut seen = Vec::new();
    loop {
        let page = store.list_conversations(&query).unwrap();
        let full = page.conversations.len() == query.page_size;
        seen.extend(page.conversations);
        match page.next_page_token {
            Some(token) => {
                assert!(full, "a page before the last is short");
                query.page_token = Some(token);
            }
            None => return seen,
        }
    }
}

fn ids(conversations: &[Conversation]) -> Vec<String> {
    conversations.iter().map(|c| c.id.to_string()).collect()
}

#[tokio::test]
async fn every_filter_pages_through_each_match_once_in_order() {
    let (_dir, store) = temp_store();
    populate(&store).await;
    assert_eq!(store.conversation_count().unwrap(), 90);

    let everything = store
        .list_conversations(&ConversationQuery {
            page_size: 1000,
            ..ConversationQuery::default()
        })
        .unwrap();
    assert_eq!(everything.next_page_token, None);
    let all = everything.conversations;
    assert_eq!(all.len(), 90);
    // Newest first by sort key, ties by id descending.
    let mut expected = all.clone();
    expected.sort_by_key(|c| std::cmp::Reverse((sort_key(c), c.id.to_string())));
    assert_eq!(ids(&all), ids(&expected));
    assert!(all.iter().any(|c| c.started_at.is_none()));
    assert!(all.iter().any(|c| c.status == ConversationStatus::Closed));
    assert!(all.iter().any(|c| c.status == ConversationStatus::Unknown));

    let queries = vec![
        ConversationQuery::default(),
        ConversationQuery {
            connections: vec![conn("lc")],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            connections: vec![conn("ss"), conn("lc-eu")],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            vendors: vec!["livechat".into()],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            vendors: vec!["nobody".into()],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            statuses: vec![ConversationStatus::Closed],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            statuses: vec![ConversationStatus::Open, ConversationStatus::Unknown],
            ..ConversationQuery::default()
        },
        ConversationQuery {
            started_from: Some(ts(1_100)),
            started_to: Some(ts(1_300)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            started_to: Some(ts(1_200)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            started_from: Some(ts(1_450)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            updated_from: Some(ts(1_150)),
            updated_to: Some(ts(1_400)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            connections: vec![conn("lc")],
            started_from: Some(ts(1_000)),
            started_to: Some(ts(1_250)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            vendors: vec!["livechat".into()],
            statuses: vec![ConversationStatus::Open],
            started_from: Some(ts(1_200)),
            updated_to: Some(ts(1_450)),
            ..ConversationQuery::default()
        },
        ConversationQuery {
            connections: vec![conn("ss")],
            vendors: vec!["livechat".into()],
            ..ConversationQuery::default()
        },
    ];
    for (n, query) in queries.into_iter().enumerate() {
        let expected: Vec<Conversation> = all
            .iter()
            .filter(|c| {
                let started = |at: Option<_>| {
                    (query.started_from.is_none() && query.started_to.is_none())
                        || at.is_some_and(|at| {
                            query.started_from.is_none_or(|from| at >= from)
                                && query.started_to.is_none_or(|to| at < to)
                        })
                };
                (query.connections.is_empty() || query.connections.contains(&c.id.connection))
                    && (query.vendors.is_empty() || query.vendors.contains(&c.vendor))
                    && (query.statuses.is_empty() || query.statuses.contains(&c.status))
                    && started(c.started_at)
                    && query.updated_from.is_none_or(|from| c.updated_at >= from)
                    && query.updated_to.is_none_or(|to| c.updated_at < to)
            })
            .cloned()
            .collect();
        for page_size in [1, 4, 7, 1000] {
            let query = ConversationQuery {
                page_size,
                ..query.clone()
            };
            let paged = all_pages(&store, &query);
            assert_eq!(
                ids(&paged),
                ids(&expected),
                "query {n} with page size {page_size}"
            );
            let unique: HashSet<String> = ids(&paged).into_iter().collect();
            assert_eq!(unique.len(), paged.len());
        }
        if n > 0 && n != 4 && n != 13 {
            assert!(
                !expected.is_empty() && expected.len() < 90,
                "query {n} does not filter"
            );
        }
    }
}

#[tokio::test]
async fn page_sizes_default_to_50_and_cap_at_1000() {
    let (_dir, store) = temp_store();
    populate(&store).await;
    let page = store
        .list_conversations(&ConversationQuery::default())
        .unwrap();
    assert_eq!(page.conversations.len(), 50);
    assert!(page.next_page_token.is_some());
    let page = store
        .list_conversations(&ConversationQuery {
            page_size: usize::MAX,
            ..ConversationQuery::default()
        })
        .unwrap();
    assert_eq!(page.conversations.len(), 90);
}

#[tokio::test]
async fn page_tokens_are_refused_with_other_filters_or_when_garbage() {
    let (_dir, store) = temp_store();
    populate(&store).await;
    let query = ConversationQuery {
        connections: vec![conn("lc")],
        page_size: 5,
        ..ConversationQuery::default()
    };
    let token = store
        .list_conversations(&query)
        .unwrap()
        .next_page_token
        .unwrap();

    // Same filters in another order, another page size: fine.
    let same = ConversationQuery {
        connections: vec![conn("lc"), conn("lc")],
        page_size: 10,
        page_token: Some(token.clone()),
        ..ConversationQuery::default()
    };
    assert_eq!(
        store.list_conversations(&same).unwrap().conversations.len(),
        10
    );

    let other = ConversationQuery {
        connections: vec![conn("ss")],
        page_token: Some(token.clone()),
        ..query.clone()
    };
    let error = store.list_conversations(&other).unwrap_err();
    assert!(matches!(error, StoreError::PageTokenMismatch), "{error:?}");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);

    for garbage in ["garbage!", "", "AAAA", &format!("x{token}")] {
        let bad = ConversationQuery {
            page_token: Some(garbage.to_owned()),
            ..query.clone()
        };
        let error = store.list_conversations(&bad).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{garbage:?}");
        if matches!(error, StoreError::BadPageToken) {
            assert_eq!(
                error.to_string(),
                "page_token is not one this server issued; start again without it"
            );
        }
    }
    let error = store
        .list_conversations(&ConversationQuery {
            page_token: Some("garbage!".into()),
            ..ConversationQuery::default()
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::BadPageToken));
}

#[tokio::test]
async fn status_and_sort_key_changes_move_the_index_entries() {
    let (_dir, store) = temp_store();
    // The message alone: status unknown, listed by its update time.
    store
        .append(request(
            "lc",
            "livechat",
            vec![message("m", "c1", 500, "hi")],
        ))
        .await
        .unwrap();
    store
        .append(request("lc", "livechat", vec![started("s2", "c2", 400)]))
        .await
        .unwrap();
    let unknown = ConversationQuery {
        statuses: vec![ConversationStatus::Unknown],
        ..ConversationQuery::default()
    };
    assert_eq!(ids(&all_pages(&store, &unknown)), ["lc/c1"]);
    assert_eq!(
        ids(&all_pages(&store, &ConversationQuery::default())),
        ["lc/c1", "lc/c2"]
    );

    // The start arrives and is earlier than c2's: c1 moves behind c2 and out of `unknown`.
    store
        .append(request(
            "lc",
            "livechat",
            vec![started("s", "c1", 300), ended("e", "c1", 600)],
        ))
        .await
        .unwrap();
    assert_eq!(all_pages(&store, &unknown).len(), 0);
    let closed = ConversationQuery {
        statuses: vec![ConversationStatus::Closed],
        ..ConversationQuery::default()
    };
    assert_eq!(ids(&all_pages(&store, &closed)), ["lc/c1"]);
    let everything = all_pages(
        &store,
        &ConversationQuery {
            page_size: 1,
            ..ConversationQuery::default()
        },
    );
    assert_eq!(ids(&everything), ["lc/c2", "lc/c1"]);
    assert_eq!(store.conversation_count().unwrap(), 2);
}
