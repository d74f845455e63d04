//! The key layout of the one sled tree. See the crate docs for the table.
//!
//! Numbers are big-endian and fixed width, so byte order is numeric order; descending orders
//! store `u64::MAX - x`. Free-form strings that are followed by more key bytes are escaped with
//! an order-preserving, prefix-free encoding ([`escape`]).

use switchboard_core::{ConnectionId, Conversation, ConversationId, ConversationStatus, Timestamp};

/// `meta/schema_version`: ASCII decimal.
pub(crate) const SCHEMA_VERSION_KEY: &[u8] = b"meta/schema_version";
/// `meta/head`: the last appended sequence, u64 big-endian.
pub(crate) const HEAD_KEY: &[u8] = b"meta/head";
/// `meta/projected`: the last sequence whose conversation projections (headers, messages,
/// index entries and counters) are in the tree, u64 big-endian. The log after it is replayed
/// into them at open (schema 4).
pub(crate) const PROJECTED_KEY: &[u8] = b"meta/projected";
/// `meta/open`: present while a process has the store open; removed by a clean close. Found at
/// open, it says the last run ended without one (a crash, `kill -9`, a failed disk), and the
/// dedup keys are checked for any a cut-short write left past the head.
pub(crate) const OPEN_KEY: &[u8] = b"meta/open";
/// `log/<seq u64 BE>` -> the event (JSON).
pub(crate) const LOG_PREFIX: &[u8] = b"log/";
/// `dh/<16 bytes>` -> the sequence (u64 BE): the bytes are the first 16 of the SHA-256 of the
/// connection and the dedup key ([`dedup_key`]), since schema 7.
pub(crate) const DEDUP_PREFIX: &[u8] = b"dh/";
/// `dedup/<connection>/<dedup key>` -> the sequence (u64 BE): the dedup keys of schema 6 and
/// before, which the upgrade to 7 moves under [`DEDUP_PREFIX`].
pub(crate) const TEXT_DEDUP_PREFIX: &[u8] = b"dedup/";
/// `conv/<connection>/<external id>` -> the conversation without its messages (JSON).
pub(crate) const CONVERSATION_PREFIX: &[u8] = b"conv/";
/// `msg/<connection>/<escaped external id><message key>` -> one message of a conversation
/// (its last-writer-wins register: a binary record since schema 5, JSON before).
pub(crate) const MESSAGE_PREFIX: &[u8] = b"msg/";
/// `ticket/<connection>/<external id>` -> the ticket and the sequence that set it (JSON).
pub(crate) const TICKET_PREFIX: &[u8] = b"ticket/";
/// `agent/<connection>/<login>` -> the agent (JSON).
const AGENT_PREFIX: &[u8] = b"agent/";
/// `sync/<connection>` -> the sync state (JSON).
const SYNC_PREFIX: &[u8] = b"sync/";

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: u64 = 9;

pub(crate) fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(crate) fn read_be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub(crate) fn log_key(sequence: u64) -> Vec<u8> {
    join(&[LOG_PREFIX, &be(sequence)])
}

// Connection ids never contain `/` (see `ConnectionId`), so `<connection>/` is a prefix-free
// separator and whatever follows it can be any bytes.

/// The key of `dedup_key` of `connection`: 19 bytes whatever the lengths of the two (a
/// vendor's dedup key is often 50 bytes or more, and sled's file holds several copies of every
/// key it keeps). SHA-256, so that no webhook can be made to collide with another's key and
/// pass for its duplicate; the connection's length goes first, so that no two pairs hash the
/// same bytes.
pub(crate) fn dedup_key(connection: &ConnectionId, dedup_key: &str) -> Vec<u8> {
    hashed_dedup_key(connection.as_str(), dedup_key)
}

fn hashed_dedup_key(connection: &str, dedup_key: &str) -> Vec<u8> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update((connection.len() as u64).to_le_bytes());
    hash.update(connection.as_bytes());
    hash.update(dedup_key.as_bytes());
    join(&[DEDUP_PREFIX, &hash.finalize()[..16]])
}

/// The key under [`DEDUP_PREFIX`] of a schema-6 key under [`TEXT_DEDUP_PREFIX`]; `None` if
/// `key` is not one.
pub(crate) fn rehash_text_dedup_key(key: &[u8]) -> Option<Vec<u8>> {
    let rest = key.strip_prefix(TEXT_DEDUP_PREFIX)?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let connection = std::str::from_utf8(&rest[..slash]).ok()?;
    let dedup_key = std::str::from_utf8(&rest[slash + 1..]).ok()?;
    Some(hashed_dedup_key(connection, dedup_key))
}

pub(crate) fn conversation_key(id: &ConversationId) -> Vec<u8> {
    join(&[
        CONVERSATION_PREFIX,
        id.connection.as_str().as_bytes(),
        b"/",
        id.external_id.as_bytes(),
    ])
}

/// The prefix of every message key of a conversation.
pub(crate) fn message_prefix(id: &ConversationId) -> Vec<u8> {
    let mut key = join(&[MESSAGE_PREFIX, id.connection.as_str().as_bytes(), b"/"]);
    escape(id.external_id.as_bytes(), &mut key);
    key
}

pub(crate) fn message_key(id: &ConversationId, message_key: &str) -> Vec<u8> {
    let mut key = message_prefix(id);
    key.extend_from_slice(message_key.as_bytes());
    key
}

pub(crate) fn ticket_key(connection: &ConnectionId, external_id: &str) -> Vec<u8> {
    join(&[
        TICKET_PREFIX,
        connection.as_str().as_bytes(),
        b"/",
        external_id.as_bytes(),
    ])
}

pub(crate) fn ticket_prefix(connection: &ConnectionId) -> Vec<u8> {
    join(&[TICKET_PREFIX, connection.as_str().as_bytes(), b"/"])
}

/// Splits a ticket key into its connection and external id.
pub(crate) fn parse_ticket_key(key: &[u8]) -> Option<(ConnectionId, String)> {
    let rest = std::str::from_utf8(key.strip_prefix(TICKET_PREFIX)?).ok()?;
    let (connection, external) = rest.split_once('/')?;
    Some((ConnectionId::new(connection).ok()?, external.to_owned()))
}

pub(crate) fn agent_key(connection: &ConnectionId, login: &str) -> Vec<u8> {
    join(&[
        AGENT_PREFIX,
        connection.as_str().as_bytes(),
        b"/",
        login.as_bytes(),
    ])
}

pub(crate) fn agent_prefix(connection: &ConnectionId) -> Vec<u8> {
    join(&[AGENT_PREFIX, connection.as_str().as_bytes(), b"/"])
}

pub(crate) fn sync_key(connection: &ConnectionId) -> Vec<u8> {
    join(&[SYNC_PREFIX, connection.as_str().as_bytes()])
}

/// Appends `bytes` escaped so that the encoding keeps byte order and no encoding is a prefix of
/// another: `0x00` becomes `0x00 0xFF`, and `0x00 0x01` ends the string.
pub(crate) fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is none.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A secondary index over conversations. Every family holds the same positions after its
/// prefix, so one page token works whichever family a query scans. A conversation is in two:
/// its connection's and its status's. A query by vendor scans the connections of that vendor
/// (each connection has one vendor, kept with its counter); a query without filters merges every
/// connection's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexFamily<'a> {
    /// `ix/conn/<connection>/<position>`.
    Connection(&'a ConnectionId),
    /// `ix/status/<status>/<position>`.
    Status(ConversationStatus),
}

/// `count/conv/conn/`: the prefix of every connection's counter.
pub(crate) const CONNECTION_COUNT_PREFIX: &[u8] = b"count/conv/conn/";

impl IndexFamily<'_> {
    /// The index prefix; the position follows it.
    pub(crate) fn prefix(self) -> Vec<u8> {
        self.with_root(b"ix/")
    }

    /// The counter of conversations in this family: `count/conv/...` -> u64 BE (a
    /// connection's counter is followed by its vendor's name).
    pub(crate) fn count_key(self) -> Vec<u8> {
        self.with_root(b"count/conv/")
    }

    fn with_root(self, root: &[u8]) -> Vec<u8> {
        let mut key = root.to_vec();
        match self {
            IndexFamily::Connection(connection) => {
                key.extend_from_slice(b"conn/");
                key.extend_from_slice(connection.as_str().as_bytes());
                key.push(b'/');
            }
            IndexFamily::Status(status) => {
                key.extend_from_slice(b"status/");
                key.extend_from_slice(status.as_str().as_bytes());
                key.push(b'/');
            }
        }
        key
    }

    /// The families a conversation is listed in.
    pub(crate) fn of(conversation: &Conversation) -> [IndexFamily<'_>; 2] {
        [
            IndexFamily::Connection(&conversation.id.connection),
            IndexFamily::Status(conversation.status),
        ]
    }
}

/// A connection's counter value: the count, then its vendor.
pub(crate) fn connection_count_value(count: u64, vendor: &str) -> Vec<u8> {
    let mut value = be(count).to_vec();
    value.extend_from_slice(vendor.as_bytes());
    value
}

/// The connections with conversations: (connection, conversations, vendor), by connection.
pub(crate) fn connection_counts(
    tree: &sled::Tree,
) -> Result<Vec<(ConnectionId, u64, String)>, crate::StoreError> {
    let mut out = Vec::new();
    for entry in tree.scan_prefix(CONNECTION_COUNT_PREFIX) {
        let (key, value) = entry?;
        let connection = key[CONNECTION_COUNT_PREFIX.len()..]
            .strip_suffix(b"/")
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| ConnectionId::new(c).ok())
            .ok_or_else(|| crate::StoreError::corrupt(&key, "not a connection counter"))?;
        let count = value
            .get(..8)
            .and_then(read_be)
            .ok_or_else(|| crate::StoreError::corrupt(&key, "not a counter"))?;
        let vendor = String::from_utf8_lossy(&value[8..]).into_owned();
        out.push((connection, count, vendor));
    }
    Ok(out)
}

/// The time conversations are listed by: when it started if known, else when it last changed.
pub(crate) fn sort_key(conversation: &Conversation) -> Timestamp {
    conversation.started_at.unwrap_or(conversation.updated_at)
}

/// The 8 leading bytes of a position: the sort key, descending.
pub(crate) fn descending_time(at: Timestamp) -> [u8; 8] {
    be(u64::MAX - at.as_millis().max(0) as u64)
}

/// A conversation's place in every index: the sort key descending, then the id descending
/// (escaped `connection/external id` with every byte inverted).
pub(crate) fn position(conversation: &Conversation) -> Vec<u8> {
    let id = conversation.id.to_string();
    let mut position = descending_time(sort_key(conversation)).to_vec();
    let mut escaped = Vec::with_capacity(id.len() + 2);
    escape(id.as_bytes(), &mut escaped);
    position.extend(escaped.into_iter().map(|b| !b));
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(id: &str, started: Option<i64>, updated: i64) -> Conversation {
        let (connection, external) = id.split_once('/').unwrap();
        let id = ConversationId::new(ConnectionId::new(connection).unwrap(), external);
        let mut conversation = Conversation::new(id, "v");
        conversation.started_at = started.map(|s| Timestamp::from_secs(s).unwrap());
        conversation.updated_at = Timestamp::from_secs(updated).unwrap();
        conversation
    }

    #[test]
    fn dedup_keys_are_short_distinct_and_what_the_upgrade_computes() {
        let lc = ConnectionId::new("lc").unwrap();
        let key = dedup_key(&lc, &"event:".repeat(40));
        assert_eq!(key.len(), 19);
        assert!(key.starts_with(DEDUP_PREFIX));
        // The connection's length keeps (`lc`, `x...`) and (`lcx`, `...`) apart.
        let lcx = ConnectionId::new("lcx").unwrap();
        assert_ne!(dedup_key(&lc, "xa"), dedup_key(&lcx, "a"));
        assert_ne!(dedup_key(&lc, "a"), dedup_key(&lc, "b"));
        assert_eq!(dedup_key(&lc, "a"), dedup_key(&lc, "a"));
        // The upgrade from schema 6 finds the same key from the old one.
        assert_eq!(
            rehash_text_dedup_key(b"dedup/lc/event:a/b").unwrap(),
            dedup_key(&lc, "event:a/b")
        );
        assert_eq!(rehash_text_dedup_key(b"dh/lc/a"), None);
    }

    #[test]
    fn positions_sort_newest_first_then_by_id_descending() {
        let ordered = [
            conversation("a/x", Some(30), 30),
            conversation("a/x", None, 20),
            conversation("b/a", Some(10), 50),
            conversation("a/b\0", Some(10), 50),
            conversation("a/b", Some(10), 50),
            conversation("a/", Some(10), 50),
        ];
        let positions: Vec<Vec<u8>> = ordered.iter().map(position).collect();
        for pair in positions.windows(2) {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn escaping_is_order_preserving_and_prefix_free() {
        let words: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"ab"];
        let encoded: Vec<Vec<u8>> = words
            .iter()
            .map(|w| {
                let mut out = Vec::new();
                escape(w, &mut out);
                out
            })
            .collect();
        for (i, a) in encoded.iter().enumerate() {
            for (j, b) in encoded.iter().enumerate() {
                assert_eq!(a.cmp(b), words[i].cmp(words[j]));
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn ticket_keys_round_trip() {
        let connection = ConnectionId::new("lc").unwrap();
        let key = ticket_key(&connection, "T/1");
        assert_eq!(parse_ticket_key(&key), Some((connection, "T/1".to_owned())));
    }
}
