//! Erasure ([`Storage::erase_contact`](switchboard_store::Storage::erase_contact)) on
//! PostgreSQL: ONE transaction that first locks the `sb_state` row (like every write, so it
//! runs between two groups of any replica and its `contact_erased` event takes the next
//! sequence), reads and checks everything the plan names (a refused plan rolls back, having
//! changed nothing), then rewrites the plan's `sb_events` payloads (raw bodies dropped from
//! every request holding one of them), the conversations and every one of their messages, the
//! tickets, appends the `contact_erased` event, moves the head and notifies it.
//!
//! After COMMIT the touched tables are VACUUMed (outside the transaction), so the erased rows'
//! old versions are gone from the tables: no query, `pg_dump` or logical backup returns them
//! (tests/erase.rs dumps the schema). Measured on PostgreSQL 15: after the VACUUM and a
//! checkpoint, a table's file no longer held an overwritten value. The WAL still holds the
//! old values until PostgreSQL recycles its segments (and WAL archives, physical backups and
//! replicas' copies taken before keep them, as any backup taken before the erasure does).
//!
//! The request of an event: PostgreSQL keeps the raw body on the first event of its request,
//! and a request's events are consecutive with the same connection, receive time and request
//! id. The raw body dropped for an event is the last one at or before it within that run; when
//! two requests without a request id arrive through one connection in the same millisecond,
//! the earlier one's body may be dropped too (erring towards erasure).

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::{Pool, Transaction};
use switchboard_core::{Conversation, Event, Sequence, Ticket};
use switchboard_store::{ErasurePlan, ErasureReport, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error;
use crate::rows::{self, StoredMessage};

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| error::pg(context, e)
}

/// What a checked plan rewrites.
struct Checked {
    events: Vec<Event>,
    conversations: Vec<(Vec<u8>, Conversation)>,
    tickets: Vec<(Vec<u8>, Ticket)>,
}

/// Runs the erasure of `plan`; see the module docs.
pub(crate) async fn erase(
    pool: &Pool,
    channel: &str,
    head: &watch::Sender<Sequence>,
    plan: ErasurePlan,
) -> Result<ErasureReport, StoreError> {
    let plan = plan.normalized()?;
    let record = plan.record();
    record.validate()?;
    let mut client = pool.get().await.map_err(error::pool)?;
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting an erasure"))?;
    let row = tx
        .query_one("SELECT head FROM sb_state WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(pg("locking the head"))?;
    let start: i64 = row.try_get(0).map_err(pg("locking the head"))?;
    // A refusal drops the transaction: rolled back, nothing changed.
    let checked = check(&tx, &plan).await?;
    rewrite(&tx, checked).await?;

    let sequence = start + 1;
    let incoming = &record.events[0];
    tx.execute(
        "INSERT INTO sb_events (sequence, id, connection, dedup_key, vendor, received_at, request_id, kind, vendor_event, occurred_at, payload, raw) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9, $10, NULL)",
        &[
            &sequence,
            &uuid::Uuid::now_v7().to_string(),
            &record.connection.as_str(),
            &incoming.dedup_key.as_bytes(),
            &record.vendor.as_bytes(),
            &record.received_at.as_millis(),
            &incoming.kind.as_str(),
            &incoming.vendor_event.as_bytes(),
            &incoming.occurred_at.as_millis(),
            &rows::encode(&incoming.payload)?,
        ],
    )
    .await
    .map_err(pg("appending the contact_erased event"))?;
    tx.execute("UPDATE sb_state SET head = $1 WHERE id = 1", &[&sequence])
        .await
        .map_err(pg("moving the head"))?;
    // Every replica drops its tail cache, then moves its head (delivered at COMMIT, in order).
    let erased = format!("{}{sequence}", crate::listen::ERASED);
    tx.execute("SELECT pg_notify($1, $2)", &[&channel, &erased])
        .await
        .map_err(pg("announcing the erasure"))?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&channel, &sequence.to_string()],
    )
    .await
    .map_err(pg("announcing the head"))?;
    tx.commit().await.map_err(pg("committing an erasure"))?;
    crate::writer::advance(head, sequence as u64);

    // Dead tuples hold the erased values until vacuumed; the erasure is committed whatever
    // happens here, so a failure is reported, not returned.
    if let Err(e) = client
        .batch_execute("VACUUM sb_events, sb_conversations, sb_messages, sb_tickets")
        .await
    {
        warn!(error = %error::chain(&e), "vacuuming after an erasure failed; run VACUUM on sb_events, sb_conversations, sb_messages and sb_tickets");
    }
    info!(
        contact = %plan.contact,
        conversations = plan.conversations.len(),
        tickets = plan.tickets.len(),
        events = plan.events.len(),
        sequence,
        "contact erased"
    );
    Ok(ErasureReport {
        conversations: plan.conversations.len() as u64,
        tickets: plan.tickets.len() as u64,
        events: plan.events.len() as u64,
        sequence: Sequence(sequence as u64),
    })
}

/// Reads (and locks) what `plan` names, refusing an unknown or foreign one.
async fn check(tx: &Transaction<'_>, plan: &ErasurePlan) -> Result<Checked, StoreError> {
    let sequences: Vec<i64> = plan.events.iter().map(|s| s.0 as i64).collect();
    let sql = format!(
        "SELECT {} FROM sb_events WHERE sequence = ANY($1::bigint[]) ORDER BY sequence FOR UPDATE",
        rows::EVENT_COLUMNS
    );
    let found = tx
        .query(&sql, &[&sequences])
        .await
        .map_err(pg("reading the events to erase"))?;
    let events = found
        .iter()
        .map(rows::event)
        .collect::<Result<Vec<_>, _>>()?;
    let held: BTreeSet<Sequence> = events.iter().map(|e| e.sequence).collect();
    if let Some(missing) = plan.events.iter().find(|s| !held.contains(s)) {
        return Err(StoreError::NotFound(format!(
            "event {missing} is not in the log; nothing was erased"
        )));
    }
    for event in &events {
        plan.check_event(event)?;
    }

    let keys: Vec<Vec<u8>> = plan
        .conversations
        .iter()
        .map(rows::conversation_key)
        .collect();
    let mut conversations: BTreeMap<Vec<u8>, Conversation> = BTreeMap::new();
    for row in tx
        .query(
            "SELECT id, body FROM sb_conversations WHERE id = ANY($1::bytea[]) FOR UPDATE",
            &[&keys],
        )
        .await
        .map_err(pg("reading the conversations to erase"))?
    {
        let key: Vec<u8> = row.try_get(0).map_err(pg("reading conversations"))?;
        let body: String = row.try_get(1).map_err(pg("reading conversations"))?;
        let what = || format!("sb_conversations {}", String::from_utf8_lossy(&key));
        conversations.insert(key.clone(), rows::decode(what, &body)?);
    }
    for (id, key) in plan.conversations.iter().zip(&keys) {
        if !conversations.contains_key(key) {
            return Err(StoreError::NotFound(format!(
                "conversation {id} is not in the store; nothing was erased"
            )));
        }
    }
    for row in tx
        .query(
            "SELECT conversation, key, body FROM sb_messages WHERE conversation = ANY($1::bytea[]) FOR UPDATE",
            &[&keys],
        )
        .await
        .map_err(pg("reading the messages to erase"))?
    {
        let conversation: Vec<u8> = row.try_get(0).map_err(pg("reading messages"))?;
        let what = || format!("sb_messages {}", String::from_utf8_lossy(&conversation));
        let key = rows::text(row.try_get(1).map_err(pg("reading messages"))?, what)?;
        let body: String = row.try_get(2).map_err(pg("reading messages"))?;
        let message: StoredMessage = rows::decode(what, &body)?;
        if let Some(c) = conversations.get_mut(&conversation) {
            c.messages.insert(key, message);
        }
    }

    let ticket_keys: Vec<Vec<u8>> = plan
        .tickets
        .iter()
        .map(|id| rows::key(&id.connection, &id.external_id))
        .collect();
    let mut tickets: BTreeMap<Vec<u8>, Ticket> = BTreeMap::new();
    for row in tx
        .query(
            "SELECT key, body FROM sb_tickets WHERE key = ANY($1::bytea[]) FOR UPDATE",
            &[&ticket_keys],
        )
        .await
        .map_err(pg("reading the tickets to erase"))?
    {
        let key: Vec<u8> = row.try_get(0).map_err(pg("reading tickets"))?;
        let body: String = row.try_get(1).map_err(pg("reading tickets"))?;
        let what = || format!("sb_tickets {}", String::from_utf8_lossy(&key));
        tickets.insert(key.clone(), rows::decode(what, &body)?);
    }
    for (id, key) in plan.tickets.iter().zip(&ticket_keys) {
        if !tickets.contains_key(key) {
            return Err(StoreError::NotFound(format!(
                "ticket {id} is not in the store; nothing was erased"
            )));
        }
    }
    Ok(Checked {
        events,
        conversations: conversations.into_iter().collect(),
        tickets: tickets.into_iter().collect(),
    })
}

/// Writes the erased rows.
async fn rewrite(tx: &Transaction<'_>, checked: Checked) -> Result<(), StoreError> {
    let mut sequences = Vec::with_capacity(checked.events.len());
    let mut payloads = Vec::with_capacity(checked.events.len());
    for mut event in checked.events {
        event.erase_personal();
        sequences.push(event.sequence.0 as i64);
        payloads.push(rows::encode(&event.incoming.payload)?);
    }
    // The raw body of each planned event's request first (found while the runs are as they
    // were), then the payloads.
    tx.execute(
        "UPDATE sb_events e SET raw = NULL \
         FROM unnest($1::bigint[]) AS p(planned) \
         CROSS JOIN LATERAL (SELECT s.connection, s.received_at, s.request_id FROM sb_events s WHERE s.sequence = p.planned) AS me \
         CROSS JOIN LATERAL (SELECT coalesce(max(b.sequence), 0) AS boundary FROM sb_events b \
             WHERE b.sequence < p.planned AND (b.connection, b.received_at, b.request_id) IS DISTINCT FROM (me.connection, me.received_at, me.request_id)) AS bound \
         CROSS JOIN LATERAL (SELECT max(r.sequence) AS holder FROM sb_events r \
             WHERE r.sequence <= p.planned AND r.sequence > bound.boundary AND r.raw IS NOT NULL) AS h \
         WHERE e.sequence = h.holder",
        &[&sequences],
    )
    .await
    .map_err(pg("dropping raw bodies"))?;
    tx.execute(
        "UPDATE sb_events e SET payload = p.payload, raw = NULL FROM unnest($1::bigint[], $2::text[]) AS p(sequence, payload) WHERE e.sequence = p.sequence",
        &[&sequences, &payloads],
    )
    .await
    .map_err(pg("erasing events"))?;

    let (mut ids, mut bodies) = (Vec::new(), Vec::new());
    let (mut message_conversations, mut message_keys, mut message_bodies) =
        (Vec::new(), Vec::new(), Vec::new());
    for (key, mut conversation) in checked.conversations {
        conversation.erase_personal();
        for (message_key, message) in &conversation.messages {
            message_conversations.push(key.clone());
            message_keys.push(message_key.as_bytes().to_vec());
            message_bodies.push(rows::encode(message)?);
        }
        bodies.push(rows::conversation_body(&mut conversation)?);
        ids.push(key);
    }
    tx.execute(
        "UPDATE sb_conversations c SET body = p.body FROM unnest($1::bytea[], $2::text[]) AS p(id, body) WHERE c.id = p.id",
        &[&ids, &bodies],
    )
    .await
    .map_err(pg("erasing conversations"))?;
    tx.execute(
        "UPDATE sb_messages m SET body = p.body FROM unnest($1::bytea[], $2::bytea[], $3::text[]) AS p(conversation, key, body) \
         WHERE m.conversation = p.conversation AND m.key = p.key",
        &[&message_conversations, &message_keys, &message_bodies],
    )
    .await
    .map_err(pg("erasing messages"))?;

    let (mut keys, mut tickets) = (Vec::new(), Vec::new());
    for (key, mut ticket) in checked.tickets {
        ticket.erase_personal();
        keys.push(key);
        tickets.push(rows::encode(&ticket)?);
    }
    tx.execute(
        "UPDATE sb_tickets t SET body = p.body FROM unnest($1::bytea[], $2::text[]) AS p(key, body) WHERE t.key = p.key",
        &[&keys, &tickets],
    )
    .await
    .map_err(pg("erasing tickets"))?;
    Ok(())
}
