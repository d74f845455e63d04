//! The page-token target: `Store::list_conversations` and `Store::list_tickets` with arbitrary
//! filters and client-supplied page tokens, over a small real store.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use switchboard_core::{
    ConnectionId, Conversation, ConversationPatch, ConversationStatus, EventKind, EventPayload,
    IncomingEvent, Ticket, TicketStatus, Timestamp,
};
use switchboard_store::{
    AppendRequest, ConversationQuery, Store, StoreError, StoreOptions, TicketListQuery,
};

use crate::input::{Reader, text};

/// Connections of the fixture store: (id, vendor).
const CONNECTIONS: [(&str, &str); 3] = [
    ("alpha", "livechat"),
    ("beta", "tencent"),
    ("gamma", "livechat"),
];
/// Conversations in the fixture store.
const CONVERSATIONS: usize = 24;
/// Tickets in the fixture store.
const TICKETS: usize = 9;
/// 2024-01-01T00:00:00Z: the fixture store's times are minutes after it.
const BASE_MILLIS: i64 = 1_704_067_200_000;
const MINUTE: i64 = 60_000;

/// A small store, built once per process, that the targets query.
pub(crate) struct Fixture {
    pub store: Store,
    pub runtime: tokio::runtime::Runtime,
    /// Kept so the directory lives as long as the store.
    _dir: tempfile::TempDir,
}

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(BASE_MILLIS + minutes * MINUTE)
        .unwrap_or_else(|| panic!("{minutes} minutes after 2024 is out of range"))
}

fn status_of(i: usize) -> ConversationStatus {
    ConversationStatus::ALL[i % ConversationStatus::ALL.len()]
}

/// The events of conversation `i` of the fixture store.
fn conversation_events(i: usize) -> Vec<IncomingEvent> {
    let mut start = ConversationPatch::new(format!("c{i}"));
    // Every fifth conversation has no known start: it never matches a started range.
    if i % 5 != 4 {
        start.started_at = Some(at(i as i64 * 7 % 40));
    }
    start.status = Some(ConversationStatus::Open);
    let mut change = ConversationPatch::new(format!("c{i}"));
    change.status = Some(status_of(i));
    change.tags_added = vec![format!("t{}", i % 3)];
    vec![
        IncomingEvent {
            dedup_key: format!("start:c{i}"),
            kind: EventKind::ChatStarted,
            vendor_event: "chat_started".into(),
            occurred_at: at(i as i64 * 7 % 40),
            payload: EventPayload::Conversation(start),
        },
        IncomingEvent {
            dedup_key: format!("change:c{i}"),
            kind: EventKind::ChatUpdated,
            vendor_event: "chat_changed".into(),
            occurred_at: at(40 + i as i64 * 11 % 30),
            payload: EventPayload::Conversation(change),
        },
    ]
}

fn ticket_event(i: usize) -> IncomingEvent {
    IncomingEvent {
        dedup_key: format!("ticket:k{i}"),
        kind: EventKind::TicketCreated,
        vendor_event: "ticket_created".into(),
        occurred_at: at(i as i64),
        payload: EventPayload::Ticket(Ticket {
            external_id: format!("k{i}"),
            subject: format!("ticket {i}"),
            status: TicketStatus::ALL[i % TicketStatus::ALL.len()],
            created_at: at(i as i64),
            updated_at: at(i as i64),
            ..Ticket::default()
        }),
    }
}

impl Fixture {
    fn build() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-fuzz-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                fsync: false,
                ..StoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("cannot open a store in {}: {e}", dir.path().display()));
        let requests = (0..CONVERSATIONS)
            .map(|i| (i % CONNECTIONS.len(), conversation_events(i)))
            .chain((0..TICKETS).map(|i| (i % 2, vec![ticket_event(i)])));
        runtime.block_on(async {
            for (n, (connection, events)) in requests.enumerate() {
                let (id, vendor) = CONNECTIONS[connection];
                let mut request = AppendRequest::new(connection_id(id), vendor, events);
                request.received_at = at(n as i64);
                store
                    .append(request)
                    .await
                    .unwrap_or_else(|e| panic!("cannot fill the fixture store: {e}"));
            }
        });
        Fixture {
            store,
            runtime,
            _dir: dir,
        }
    }
}

pub(crate) fn connection_id(id: &str) -> ConnectionId {
    ConnectionId::new(id).unwrap_or_else(|e| panic!("{id:?} is not a connection id: {e}"))
}

/// The fixture store, built on first use.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::build)
}

/// Filters decoded from fuzzer bytes.
fn conversation_query(reader: &mut Reader<'_>) -> ConversationQuery {
    let bits = reader.byte();
    let mut query = ConversationQuery::default();
    if bits & 1 != 0 {
        query.connections.push(connection_id("alpha"));
    }
    if bits & 2 != 0 {
        query.connections.push(connection_id("beta"));
    }
    if bits & 4 != 0 {
        query.vendors.push("livechat".into());
    }
    if bits & 8 != 0 {
        query.vendors.push("tencent".into());
    }
    if bits & 16 != 0 {
        let statuses = reader.byte();
        query.statuses = ConversationStatus::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| statuses & (1 << i) != 0)
            .map(|(_, s)| s)
            .collect();
    }
    let range = |reader: &mut Reader<'_>| {
        let [from, to] = reader.array::<2>();
        (
            (from & 0x80 != 0).then(|| at(i64::from(from & 0x7f) - 20)),
            (to & 0x80 != 0).then(|| at(i64::from(to & 0x7f) - 20)),
        )
    };
    if bits & 32 != 0 {
        (query.started_from, query.started_to) = range(reader);
    }
    if bits & 64 != 0 {
        (query.updated_from, query.updated_to) = range(reader);
    }
    query.page_size = usize::from(reader.byte() % 9);
    query
}

fn in_range(t: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e)
}

/// Whether a conversation matches the filters, as `ConversationQuery` documents them.
fn matches(query: &ConversationQuery, c: &Conversation) -> bool {
    (query.connections.is_empty() || query.connections.contains(&c.id.connection))
        && (query.vendors.is_empty() || query.vendors.contains(&c.vendor))
        && (query.statuses.is_empty() || query.statuses.contains(&c.status))
        && (query.started_from.is_none() && query.started_to.is_none()
            || c.started_at
                .is_some_and(|t| in_range(t, query.started_from, query.started_to)))
        && in_range(c.updated_at, query.updated_from, query.updated_to)
}

fn page_limit(page_size: usize) -> usize {
    match page_size {
        0 => switchboard_store::DEFAULT_PAGE_SIZE,
        n => n.min(switchboard_store::MAX_PAGE_SIZE),
    }
}

fn assert_clean(result: &Result<impl Sized, StoreError>, token: &str) {
    if let Err(error) = result {
        assert!(
            matches!(
                error,
                StoreError::BadPageToken | StoreError::PageTokenMismatch
            ),
            "page token {token:?} gave {error:?}; a bad token must be BadPageToken or PageTokenMismatch"
        );
    }
}

/// A token made of a real token's first `keep` decoded bytes followed by `tail`: it passes the
/// checks at the front of a token and puts fuzzer bytes where the position is.
fn splice_token(valid: &str, keep: usize, tail: &[u8]) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(valid).unwrap_or_default();
    bytes.truncate(keep);
    bytes.extend_from_slice(tail);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Every page of a listing, following `next_page_token` from the first page: returns the items
/// in order and the tokens seen.
fn walk<T>(
    mut page: impl FnMut(Option<String>) -> Result<(Vec<T>, Option<String>), StoreError>,
    limit: usize,
    total: usize,
) -> (Vec<T>, Vec<String>) {
    let mut items = Vec::new();
    let mut tokens = Vec::new();
    let mut token = None;
    loop {
        let (mut batch, next) = page(token.clone())
            .unwrap_or_else(|e| panic!("the page after token {token:?} failed: {e}"));
        assert!(
            batch.len() <= limit,
            "a page has {} items; the page size is {limit}",
            batch.len()
        );
        items.append(&mut batch);
        assert!(
            items.len() <= total,
            "paging returned more items ({}) than there are ({total})",
            items.len()
        );
        match next {
            Some(next) => {
                tokens.push(next.clone());
                token = Some(next);
            }
            None => return (items, tokens),
        }
    }
}

/// Lists conversations or tickets with filters and a page token decoded from `data`.
///
/// The first byte picks what to do: walk every page of the listing with its own tokens (they
/// must give exactly the matching items, in order, once each, and be refused for other
/// filters); or pass the rest of `data` as the token (arbitrary text, a real token's prefix
/// with fuzzer bytes as the position, a real token with one byte changed), which must give a
/// page or `BadPageToken` / `PageTokenMismatch`.
///
/// # Panics
/// If the store panics or an invariant fails.
pub fn page_token(data: &[u8]) {
    let fixture = fixture();
    let store = &fixture.store;
    let mut reader = Reader::new(data);
    let mode = reader.byte();
    let mut query = conversation_query(&mut reader);
    let limit = page_limit(query.page_size);
    let all = store
        .list_conversations(&ConversationQuery {
            page_size: switchboard_store::MAX_PAGE_SIZE,
            ..ConversationQuery::default()
        })
        .unwrap_or_else(|e| panic!("listing every conversation failed: {e}"))
        .conversations;
    let first = store
        .list_conversations(&query)
        .unwrap_or_else(|e| panic!("a listing without token failed for {query:?}: {e}"));
    let valid = first.next_page_token.clone().unwrap_or_default();
    match mode % 8 {
        0 => {
            let expected: Vec<&Conversation> = all.iter().filter(|c| matches(&query, c)).collect();
            let (items, tokens) = walk(
                |token| {
                    let page = store.list_conversations(&ConversationQuery {
                        page_token: token,
                        ..query.clone()
                    })?;
                    Ok((page.conversations, page.next_page_token))
                },
                limit,
                all.len(),
            );
            let got: Vec<&Conversation> = items.iter().collect();
            assert!(
                got == expected,
                "paging {query:?} gave {:?}, expected {:?}",
                got.iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
                expected
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect::<Vec<_>>()
            );
            // A token is bound to its filters.
            let mut other = query.clone();
            if other.vendors.is_empty() {
                other.vendors.push("livechat".into());
            } else {
                other.vendors.clear();
            }
            for token in tokens {
                let result = store.list_conversations(&ConversationQuery {
                    page_token: Some(token.clone()),
                    ..other.clone()
                });
                assert!(
                    matches!(result, Err(StoreError::PageTokenMismatch)),
                    "token {token:?} of {query:?} used with other filters {other:?} gave {result:?}, expected PageTokenMismatch"
                );
            }
        }
        1..=5 => {
            let token = match mode % 8 {
                1 | 2 => text(reader.rest()).into_owned(),
                3 => splice_token(&valid, 9, reader.rest()),
                4 => {
                    let [at, flip] = reader.array::<2>();
                    let mut bytes = valid.into_bytes();
                    if !bytes.is_empty() {
                        let i = usize::from(at) % bytes.len();
                        bytes[i] ^= flip;
                    }
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => splice_token(&valid, usize::from(reader.byte() % 16), reader.rest()),
            };
            query.page_token = Some(token.clone());
            let result = store.list_conversations(&query);
            assert_clean(&result, &token);
            if let Ok(page) = result {
                assert!(page.conversations.len() <= limit);
                for c in &page.conversations {
                    assert!(
                        matches(&query, c),
                        "token {token:?} listed {} which does not match {query:?}",
                        c.id
                    );
                }
            }
        }
        _ => tickets(store, &mut reader, mode),
    }
}

fn tickets(store: &Store, reader: &mut Reader<'_>, mode: u8) {
    let bits = reader.byte();
    let mut query = TicketListQuery {
        page_size: usize::from(reader.byte() % 5),
        ..TicketListQuery::default()
    };
    if bits & 1 != 0 {
        query.connections.push(connection_id("alpha"));
    }
    if bits & 2 != 0 {
        query.connections.push(connection_id("beta"));
    }
    query.statuses = TicketStatus::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (4 << i) != 0)
        .map(|(_, s)| s)
        .collect();
    let limit = page_limit(query.page_size);
    let (items, tokens) = walk(
        |token| {
            let page = store.list_tickets(&TicketListQuery {
                page_token: token,
                ..query.clone()
            })?;
            Ok((page.tickets, page.next_page_token))
        },
        limit,
        TICKETS,
    );
    for (connection, ticket) in &items {
        assert!(query.connections.is_empty() || query.connections.contains(connection));
        assert!(query.statuses.is_empty() || query.statuses.contains(&ticket.status));
    }
    let mut seen: Vec<(&ConnectionId, &str)> = items
        .iter()
        .map(|(c, t)| (c, t.external_id.as_str()))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), items.len(), "paging listed a ticket twice");
    let valid = tokens.first().cloned().unwrap_or_default();
    let token = if mode & 8 != 0 {
        splice_token(&valid, 9, reader.rest())
    } else {
        text(reader.rest()).into_owned()
    };
    query.page_token = Some(token.clone());
    let result = store.list_tickets(&query);
    assert_clean(&result, &token);
}

/// The `next_page_token`s of the first pages of a few listings of the fixture store, for seeds.
pub(crate) fn valid_tokens(fixture: &Fixture) -> Vec<String> {
    let mut tokens = Vec::new();
    for page_size in [1, 2, 5] {
        let query = ConversationQuery {
            page_size,
            ..ConversationQuery::default()
        };
        if let Ok(page) = fixture.store.list_conversations(&query) {
            tokens.extend(page.next_page_token);
        }
        let query = TicketListQuery {
            page_size,
            ..TicketListQuery::default()
        };
        if let Ok(page) = fixture.store.list_tickets(&query) {
            tokens.extend(page.next_page_token);
        }
    }
    tokens
}
