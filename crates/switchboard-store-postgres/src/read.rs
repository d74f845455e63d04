//! The read path: the log, projections, listings with their page tokens, the quarantine.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use switchboard_core::{
    Agent, ConnectionId, Conversation, ConversationId, Event, Sequence, Ticket, TicketId, Timestamp,
};
use switchboard_store::paging::{
    CONVERSATION_TOKEN, TICKET_TOKEN, conversation_filters_hash, decode_token, encode_token,
    sorted, ticket_filters_hash,
};
use switchboard_store::{
    ConversationPage, ConversationQuery, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Quarantined, StoreError,
    SyncState, TicketListPage, TicketListQuery,
};
use tokio_postgres::types::ToSql;

use crate::error;
use crate::rows::{self, StoredMessage};

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| error::pg(context, e)
}

fn page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Up to `limit` events after `after` and at most `head`, ascending, stopping once about
/// `max_bytes` were read (at least one); each with its size (payload and raw body bytes).
pub(crate) async fn events(
    client: &impl GenericClient,
    after: Sequence,
    head: Sequence,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(Event, usize)>, StoreError> {
    if after >= head || limit == 0 {
        return Ok(Vec::new());
    }
    // A row is returned when the events before it in the range are smaller than max_bytes
    // in all (payload and raw body: what the event costs in memory).
    let sql = format!(
        "SELECT {columns}, size FROM (SELECT *, sum(size) OVER (ORDER BY sequence) - size AS before \
         FROM (SELECT *, octet_length(payload) + coalesce(octet_length(raw), 0) AS size FROM sb_events WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT $3) AS range) AS sized \
         WHERE before < $4 ORDER BY sequence",
        columns = rows::EVENT_COLUMNS
    );
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(pg("reading the log"))?;
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX).max(1);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[&(after.0 as i64), &(head.0 as i64), &limit, &max_bytes],
        )
        .await
        .map_err(pg("reading the log"))?;
    rows.iter()
        .map(|row| {
            let size: i32 = row.try_get(12).map_err(pg("reading the log"))?;
            Ok((rows::event(row)?, size.max(0) as usize))
        })
        .collect()
}

pub(crate) async fn event_by_dedup_key(
    client: &impl GenericClient,
    connection: &ConnectionId,
    dedup_key: &str,
) -> Result<Option<Event>, StoreError> {
    let sql = format!(
        "SELECT {} FROM sb_events WHERE connection = $1 AND dedup_key = $2",
        rows::EVENT_COLUMNS
    );
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(pg("reading the log"))?;
    let row = client
        .query_opt(&statement, &[&connection.as_str(), &dedup_key.as_bytes()])
        .await
        .map_err(pg("reading the log"))?;
    row.as_ref().map(rows::event).transpose()
}

/// Conversations by key, whole (with their messages), in the order of `keys`; a key
/// without a row is left out.
async fn conversations(
    client: &impl GenericClient,
    keys: &[Vec<u8>],
) -> Result<Vec<Conversation>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached("SELECT id, body FROM sb_conversations WHERE id = ANY($1::bytea[])")
        .await
        .map_err(pg("reading conversations"))?;
    let mut found: HashMap<Vec<u8>, Conversation> = HashMap::with_capacity(keys.len());
    for row in client
        .query(&statement, &[&keys])
        .await
        .map_err(pg("reading conversations"))?
    {
        let key: Vec<u8> = row.try_get(0).map_err(pg("reading conversations"))?;
        let body: String = row.try_get(1).map_err(pg("reading conversations"))?;
        let what = || format!("sb_conversations {}", String::from_utf8_lossy(&key));
        found.insert(key.clone(), rows::decode(what, &body)?);
    }
    let statement = client
        .prepare_cached(
            "SELECT conversation, key, body FROM sb_messages WHERE conversation = ANY($1::bytea[])",
        )
        .await
        .map_err(pg("reading messages"))?;
    for row in client
        .query(&statement, &[&keys])
        .await
        .map_err(pg("reading messages"))?
    {
        let conversation: Vec<u8> = row.try_get(0).map_err(pg("reading messages"))?;
        let what = || format!("sb_messages {}", String::from_utf8_lossy(&conversation));
        let key = rows::text(row.try_get(1).map_err(pg("reading messages"))?, what)?;
        let body: String = row.try_get(2).map_err(pg("reading messages"))?;
        let message: StoredMessage = rows::decode(what, &body)?;
        if let Some(c) = found.get_mut(&conversation) {
            c.messages.insert(key, message);
        }
    }
    Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
}

pub(crate) async fn conversation(
    client: &impl GenericClient,
    id: &ConversationId,
) -> Result<Option<Conversation>, StoreError> {
    Ok(conversations(client, &[rows::conversation_key(id)])
        .await?
        .pop())
}

pub(crate) async fn conversation_count(client: &impl GenericClient) -> Result<u64, StoreError> {
    let statement = client
        .prepare_cached("SELECT conversations FROM sb_state WHERE id = 1")
        .await
        .map_err(pg("counting conversations"))?;
    let row = client
        .query_one(&statement, &[])
        .await
        .map_err(pg("counting conversations"))?;
    let count: i64 = row.try_get(0).map_err(pg("counting conversations"))?;
    Ok(count.max(0) as u64)
}

/// A conversation's position: its sort time (8 bytes, big-endian) and its key.
fn position(sort_at: i64, key: &[u8]) -> Vec<u8> {
    let mut position = (sort_at as u64).to_be_bytes().to_vec();
    position.extend_from_slice(key);
    position
}

/// SQL parameters built up with the query text (the listings here and the finder's index).
#[derive(Default)]
pub(crate) struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    /// Adds `value`; returns its placeholder (`$n`).
    pub(crate) fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    /// The parameters, as a statement takes them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn bytes(values: &[String]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn millis(at: Option<Timestamp>) -> Option<i64> {
    at.map(Timestamp::as_millis)
}

/// A page of conversations, newest first: the sort time descending, then the key
/// descending, from the indexes `(column, sort_at DESC, id DESC)`. Several values of one
/// filter run one index scan each, merged by PostgreSQL (`UNION ALL` of ordered, limited
/// branches).
pub(crate) async fn list_conversations(
    client: &impl GenericClient,
    query: &ConversationQuery,
) -> Result<ConversationPage, StoreError> {
    query.check_store_filters()?;
    let size = page_size(query.page_size);
    let filters = conversation_filters_hash(query);
    let after = decode_token(query.page_token.as_deref(), CONVERSATION_TOKEN, filters)?;
    let after = match after {
        Some(position) if position.len() >= 8 => {
            let (time, key) = position.split_at(8);
            let time = u64::from_be_bytes(time.try_into().map_err(|_| StoreError::BadPageToken)?);
            Some((time as i64, key.to_vec()))
        }
        Some(_) => return Err(StoreError::BadPageToken),
        None => None,
    };
    let connections: Vec<String> = sorted(&query.connections)
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let vendors = sorted(&query.vendors);
    let statuses: Vec<String> = sorted(&query.statuses)
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();

    let mut params = Params::default();
    let mut conditions: Vec<String> = Vec::new();
    // The filter whose values split the scan into branches; the others are conditions.
    let (branch_column, branch_values) = if !connections.is_empty() {
        ("connection", connections.clone())
    } else if !statuses.is_empty() {
        ("status", statuses.clone())
    } else if !vendors.is_empty() {
        ("vendor", vendors.clone())
    } else {
        ("", Vec::new())
    };
    for (column, values) in [
        ("connection", &connections),
        ("vendor", &vendors),
        ("status", &statuses),
    ] {
        if !values.is_empty() && column != branch_column {
            let p = if column == "vendor" {
                params.push(bytes(values))
            } else {
                params.push(values.clone())
            };
            let kind = if column == "vendor" { "bytea" } else { "text" };
            conditions.push(format!("{column} = ANY({p}::{kind}[])"));
        }
    }
    if let Some(from) = millis(query.started_from) {
        let p = params.push(from);
        conditions.push(format!("sort_at >= {p} AND started_at >= {p}"));
    }
    if let Some(to) = millis(query.started_to) {
        let p = params.push(to);
        conditions.push(format!("sort_at < {p} AND started_at < {p}"));
    }
    if let Some(from) = millis(query.updated_from) {
        let p = params.push(from);
        conditions.push(format!("updated_at >= {p}"));
    }
    if let Some(to) = millis(query.updated_to) {
        let p = params.push(to);
        conditions.push(format!("updated_at < {p}"));
    }
    if let Some((time, key)) = after {
        let t = params.push(time);
        let k = params.push(key);
        conditions.push(format!("(sort_at, id) < ({t}::bigint, {k}::bytea)"));
    }
    let limit = params.push((size + 1) as i64);
    let branch = |extra: Option<String>| {
        let mut all = conditions.clone();
        all.extend(extra);
        let filter = if all.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", all.join(" AND "))
        };
        format!(
            "SELECT id, sort_at FROM sb_conversations {filter} ORDER BY sort_at DESC, id DESC LIMIT {limit}"
        )
    };
    let sql = if branch_values.is_empty() {
        branch(None)
    } else {
        let mut branches = Vec::with_capacity(branch_values.len());
        for value in &branch_values {
            let p = if branch_column == "vendor" {
                params.push(value.as_bytes().to_vec())
            } else {
                params.push(value.clone())
            };
            branches.push(format!(
                "({})",
                branch(Some(format!("{branch_column} = {p}")))
            ));
        }
        format!(
            "SELECT id, sort_at FROM ({}) AS merged ORDER BY sort_at DESC, id DESC LIMIT {limit}",
            branches.join(" UNION ALL ")
        )
    };
    let found = client
        .query(&sql, &params.refs())
        .await
        .map_err(pg("listing conversations"))?;
    let mut page: Vec<(Vec<u8>, i64)> = Vec::with_capacity(found.len());
    for row in found {
        page.push((
            row.try_get(0).map_err(pg("listing conversations"))?,
            row.try_get(1).map_err(pg("listing conversations"))?,
        ));
    }
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last().map(|(key, sort_at)| {
            encode_token(CONVERSATION_TOKEN, filters, &position(*sort_at, key))
        })
    } else {
        None
    };
    let keys: Vec<Vec<u8>> = page.into_iter().map(|(key, _)| key).collect();
    Ok(ConversationPage {
        conversations: conversations(client, &keys).await?,
        next_page_token,
    })
}

pub(crate) async fn ticket(
    client: &impl GenericClient,
    id: &TicketId,
) -> Result<Option<Ticket>, StoreError> {
    let key = rows::key(&id.connection, &id.external_id);
    let statement = client
        .prepare_cached("SELECT body FROM sb_tickets WHERE key = $1")
        .await
        .map_err(pg("reading a ticket"))?;
    let row = client
        .query_opt(&statement, &[&key])
        .await
        .map_err(pg("reading a ticket"))?;
    match row {
        Some(row) => {
            let body: String = row.try_get(0).map_err(pg("reading a ticket"))?;
            Ok(Some(rows::decode(|| format!("sb_tickets {id}"), &body)?))
        }
        None => Ok(None),
    }
}

/// Tickets in key order (`connection/external id`, byte order, as on sled).
pub(crate) async fn list_tickets(
    client: &impl GenericClient,
    query: &TicketListQuery,
) -> Result<TicketListPage, StoreError> {
    let size = page_size(query.page_size);
    let filters = ticket_filters_hash(query);
    let after = decode_token(query.page_token.as_deref(), TICKET_TOKEN, filters)?;
    let mut params = Params::default();
    let mut conditions = Vec::new();
    if !query.connections.is_empty() {
        let connections: Vec<String> = sorted(&query.connections)
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        let p = params.push(connections);
        conditions.push(format!("connection = ANY({p}::text[])"));
    }
    if !query.statuses.is_empty() {
        let statuses: Vec<String> = query
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let p = params.push(statuses);
        conditions.push(format!("status = ANY({p}::text[])"));
    }
    if let Some(after) = after {
        let p = params.push(after);
        conditions.push(format!("key > {p}::bytea"));
    }
    let limit = params.push((size + 1) as i64);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql =
        format!("SELECT key, connection, body FROM sb_tickets {filter} ORDER BY key LIMIT {limit}");
    let found = client
        .query(&sql, &params.refs())
        .await
        .map_err(pg("listing tickets"))?;
    let mut page = Vec::with_capacity(found.len());
    for row in found {
        let key: Vec<u8> = row.try_get(0).map_err(pg("listing tickets"))?;
        let connection: String = row.try_get(1).map_err(pg("listing tickets"))?;
        let body: String = row.try_get(2).map_err(pg("listing tickets"))?;
        let what = || format!("sb_tickets {}", String::from_utf8_lossy(&key));
        let connection = ConnectionId::new(connection).map_err(|e| error::corrupt(what(), e.0))?;
        let ticket: Ticket = rows::decode(what, &body)?;
        page.push((key, connection, ticket));
    }
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last()
            .map(|(key, _, _)| encode_token(TICKET_TOKEN, filters, key))
    } else {
        None
    };
    Ok(TicketListPage {
        tickets: page.into_iter().map(|(_, c, t)| (c, t)).collect(),
        next_page_token,
    })
}

pub(crate) async fn agents(
    client: &impl GenericClient,
    connection: &ConnectionId,
) -> Result<Vec<Agent>, StoreError> {
    let statement = client
        .prepare_cached("SELECT body FROM sb_agents WHERE connection = $1 ORDER BY login")
        .await
        .map_err(pg("listing agents"))?;
    let found = client
        .query(&statement, &[&connection.as_str()])
        .await
        .map_err(pg("listing agents"))?;
    found
        .iter()
        .map(|row| {
            let body: String = row.try_get(0).map_err(pg("listing agents"))?;
            rows::decode(|| format!("sb_agents {connection}"), &body)
        })
        .collect()
}

pub(crate) async fn sync_state(
    client: &impl GenericClient,
    connection: &ConnectionId,
) -> Result<Option<SyncState>, StoreError> {
    let statement = client
        .prepare_cached("SELECT body FROM sb_sync WHERE connection = $1")
        .await
        .map_err(pg("reading the sync state"))?;
    let row = client
        .query_opt(&statement, &[&connection.as_str()])
        .await
        .map_err(pg("reading the sync state"))?;
    match row {
        Some(row) => {
            let body: String = row.try_get(0).map_err(pg("reading the sync state"))?;
            Ok(Some(rows::decode(
                || format!("sb_sync {connection}"),
                &body,
            )?))
        }
        None => Ok(None),
    }
}

/// A quarantine entry's row, but for its id, connection and body.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    vendor: String,
    received_at: Timestamp,
    request_id: Option<String>,
    reason: String,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    attempts: u32,
    last_attempt_at: Option<Timestamp>,
}

fn quarantined_from(row: &tokio_postgres::Row) -> Result<Quarantined, StoreError> {
    let id: i64 = row.try_get(0).map_err(pg("reading the quarantine"))?;
    let what = || format!("sb_quarantine {id}");
    let connection: String = row.try_get(1).map_err(pg("reading the quarantine"))?;
    let connection = ConnectionId::new(connection).map_err(|e| error::corrupt(what(), e.0))?;
    let body = rows::text(row.try_get(2).map_err(pg("reading the quarantine"))?, what)?;
    let entry: String = row.try_get(3).map_err(pg("reading the quarantine"))?;
    let entry: Entry = rows::decode(what, &entry)?;
    Ok(Quarantined {
        id: id as u64,
        connection,
        vendor: entry.vendor,
        received_at: entry.received_at,
        request_id: entry.request_id,
        reason: entry.reason,
        headers: entry.headers,
        query: entry.query,
        body,
        attempts: entry.attempts,
        last_attempt_at: entry.last_attempt_at,
    })
}

pub(crate) async fn quarantined(
    client: &impl GenericClient,
    id: u64,
) -> Result<Option<Quarantined>, StoreError> {
    let statement = client
        .prepare_cached("SELECT id, connection, body, entry FROM sb_quarantine WHERE id = $1")
        .await
        .map_err(pg("reading the quarantine"))?;
    let row = client
        .query_opt(&statement, &[&(id.min(i64::MAX as u64) as i64)])
        .await
        .map_err(pg("reading the quarantine"))?;
    row.as_ref().map(quarantined_from).transpose()
}

/// Writes (`Some`) or removes (`None`) a quarantine entry.
pub(crate) async fn write_quarantined(
    client: &impl GenericClient,
    id: u64,
    entry: Option<&Quarantined>,
) -> Result<(), StoreError> {
    match entry {
        Some(q) => {
            let rest = Entry {
                vendor: q.vendor.clone(),
                received_at: q.received_at,
                request_id: q.request_id.clone(),
                reason: q.reason.clone(),
                headers: q.headers.clone(),
                query: q.query.clone(),
                attempts: q.attempts,
                last_attempt_at: q.last_attempt_at,
            };
            let statement = client
                .prepare_cached(
                    "INSERT INTO sb_quarantine (id, connection, size, body, entry) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET size = EXCLUDED.size, body = EXCLUDED.body, entry = EXCLUDED.entry",
                )
                .await
                .map_err(pg("saving the quarantine"))?;
            client
                .execute(
                    &statement,
                    &[
                        &(id as i64),
                        &q.connection.as_str(),
                        &(q.size() as i64),
                        &q.body.as_bytes(),
                        &rows::encode(&rest)?,
                    ],
                )
                .await
                .map_err(pg("saving the quarantine"))?;
        }
        None => {
            let statement = client
                .prepare_cached("DELETE FROM sb_quarantine WHERE id = $1")
                .await
                .map_err(pg("saving the quarantine"))?;
            client
                .execute(&statement, &[&(id as i64)])
                .await
                .map_err(pg("saving the quarantine"))?;
        }
    }
    Ok(())
}

pub(crate) async fn list_quarantine(
    client: &impl GenericClient,
    after: u64,
    limit: usize,
    connections: &[ConnectionId],
) -> Result<(Vec<Quarantined>, Option<u64>), StoreError> {
    let after = after.min(i64::MAX as u64) as i64;
    let take = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let connections: Vec<String> = connections.iter().map(|c| c.as_str().to_owned()).collect();
    let statement = client
        .prepare_cached(
            "SELECT id, connection, body, entry FROM sb_quarantine WHERE id > $1 AND (cardinality($2::text[]) = 0 OR connection = ANY($2::text[])) ORDER BY id LIMIT $3",
        )
        .await
        .map_err(pg("listing the quarantine"))?;
    let found = client
        .query(&statement, &[&after, &connections, &take])
        .await
        .map_err(pg("listing the quarantine"))?;
    let mut page = Vec::with_capacity(found.len().min(limit));
    for row in &found {
        if page.len() == limit {
            let last = page.last().map_or(after as u64, |e: &Quarantined| e.id);
            return Ok((page, Some(last)));
        }
        page.push(quarantined_from(row)?);
    }
    Ok((page, None))
}

pub(crate) async fn quarantine_totals(
    client: &impl GenericClient,
) -> Result<switchboard_store::QuarantineTotals, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT quarantine_next_id, quarantine_entries, quarantine_bytes FROM sb_state WHERE id = 1",
        )
        .await
        .map_err(pg("reading the quarantine totals"))?;
    let row = client
        .query_one(&statement, &[])
        .await
        .map_err(pg("reading the quarantine totals"))?;
    let get = |i: usize| -> Result<u64, StoreError> {
        let value: i64 = row
            .try_get(i)
            .map_err(pg("reading the quarantine totals"))?;
        Ok(value.max(0) as u64)
    };
    Ok(switchboard_store::QuarantineTotals {
        next_id: get(0)?,
        entries: get(1)?,
        bytes: get(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_filters_and_kind() {
        let token = encode_token(CONVERSATION_TOKEN, 7, b"pos");
        assert_eq!(
            decode_token(Some(&token), CONVERSATION_TOKEN, 7).unwrap(),
            Some(b"pos".to_vec())
        );
        assert!(matches!(
            decode_token(Some(&token), CONVERSATION_TOKEN, 8),
            Err(StoreError::PageTokenMismatch)
        ));
        assert!(matches!(
            decode_token(Some(&token), TICKET_TOKEN, 7),
            Err(StoreError::BadPageToken)
        ));
        for bad in ["%%%", ""] {
            assert!(matches!(
                decode_token(Some(bad), CONVERSATION_TOKEN, 7),
                Err(StoreError::BadPageToken)
            ));
        }
    }

    #[test]
    fn filter_order_does_not_change_the_hash() {
        let a = ConversationQuery {
            vendors: vec!["b".into(), "a".into()],
            page_size: 3,
            ..ConversationQuery::default()
        };
        let b = ConversationQuery {
            vendors: vec!["a".into(), "b".into(), "a".into()],
            page_token: Some("x".into()),
            ..ConversationQuery::default()
        };
        assert_eq!(conversation_filters_hash(&a), conversation_filters_hash(&b));
        let c = ConversationQuery {
            vendors: vec!["a".into()],
            ..ConversationQuery::default()
        };
        assert_ne!(conversation_filters_hash(&a), conversation_filters_hash(&c));
    }

    #[test]
    fn positions_order_like_the_listing() {
        // Newer first; at one time, the larger key first.
        let newer = position(20, b"a/x");
        let older = position(10, b"z/z");
        assert!(newer > older);
        assert!(position(10, b"a/b\0") > position(10, b"a/b"));
    }
}
