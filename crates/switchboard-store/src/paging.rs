//! Page tokens, the same on every backend: `kind (1 byte) | FNV-1a hash of the query's
//! filters in canonical form (8 bytes) | the last position returned`, base64url. What a
//! position is belongs to the backend; what a token means (which filters it is bound to, which
//! errors a foreign or damaged one gives) is shared.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{ConversationQuery, StoreError, TicketListQuery};

/// The kind byte of a conversation page token.
pub const CONVERSATION_TOKEN: u8 = 1;
/// The kind byte of a ticket page token.
pub const TICKET_TOKEN: u8 = 2;

/// FNV-1a, 64 bit: stable across runs and machines.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A page token: `kind (1 byte) | hash of the filters (8 bytes) | position`, base64url.
pub fn encode_token(kind: u8, filters: u64, position: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(9 + position.len());
    bytes.push(kind);
    bytes.extend_from_slice(&filters.to_be_bytes());
    bytes.extend_from_slice(position);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a token resumes after, if the token is one of ours for these filters.
pub fn decode_token(
    token: Option<&str>,
    kind: u8,
    filters: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(token) = token else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::BadPageToken)?;
    if bytes.len() < 10 || bytes[0] != kind {
        return Err(StoreError::BadPageToken);
    }
    if bytes[1..9] != filters.to_be_bytes() {
        return Err(StoreError::PageTokenMismatch);
    }
    Ok(Some(bytes[9..].to_vec()))
}

/// The values sorted, without repeats: a filter's canonical form.
pub fn sorted<T: Ord + Clone>(values: &[T]) -> Vec<T> {
    let mut values = values.to_vec();
    values.sort();
    values.dedup();
    values
}

/// The hash a conversation page token is bound to.
pub fn conversation_filters_hash(query: &ConversationQuery) -> u64 {
    let mut canonical = serde_json::json!([
        "conversations",
        sorted(&query.connections),
        sorted(&query.vendors),
        sorted(&query.statuses),
        query.started_from,
        query.started_to,
        query.updated_from,
        query.updated_to,
    ]);
    // Only queries that use them name the finder's filters, so tokens of plain queries stay
    // what they were.
    if !query.find.is_empty()
        && let Some(parts) = canonical.as_array_mut()
    {
        parts.push(serde_json::json!([
            sorted(&query.find.emails),
            sorted(&query.find.phones),
            sorted(&query.find.visitor_ids),
            sorted(&query.find.agent_ids),
            sorted(&query.find.tags),
            query.find.text.as_deref().map(str::trim),
            sorted(&query.find.contacts),
        ]));
    }
    fnv1a(canonical.to_string().as_bytes())
}

/// The hash a ticket page token is bound to.
pub fn ticket_filters_hash(query: &TicketListQuery) -> u64 {
    let mut statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let canonical = serde_json::json!(["tickets", sorted(&query.connections), statuses]);
    fnv1a(canonical.to_string().as_bytes())
}
