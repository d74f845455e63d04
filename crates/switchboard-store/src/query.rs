//! Listing: index choice, merged index scans, post-filters and page tokens.

use std::iter::Peekable;
use std::ops::Bound;

use switchboard_core::{ConnectionId, Conversation, ConversationStatus, Timestamp};

use crate::keys::{self, IndexFamily};
use crate::record::decode;
use crate::types::effective_page_size;
use crate::writer::StoredTicket;
use crate::{ConversationPage, ConversationQuery, StoreError, TicketListPage, TicketListQuery};

use crate::paging::{
    CONVERSATION_TOKEN, TICKET_TOKEN, conversation_filters_hash, decode_token, encode_token,
    sorted, ticket_filters_hash,
};

/// One ordered scan: a key range of the tree, and how many leading bytes to strip from each key
/// to get the position the merge orders by.
struct Scan {
    entries: Peekable<sled::Iter>,
    strip: usize,
}

/// Merges several ordered scans into one ordered stream of `(position, value)`.
struct Merge {
    scans: Vec<Scan>,
}

impl Merge {
    fn next(&mut self) -> Result<Option<(Vec<u8>, sled::IVec)>, StoreError> {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, scan) in self.scans.iter_mut().enumerate() {
            match scan.entries.peek() {
                None => {}
                Some(Err(_)) => {
                    if let Some(Err(e)) = scan.entries.next() {
                        return Err(e.into());
                    }
                }
                Some(Ok((key, _))) => {
                    let position = &key[scan.strip..];
                    if best.as_ref().is_none_or(|(_, b)| position < b.as_slice()) {
                        best = Some((i, position.to_vec()));
                    }
                }
            }
        }
        let Some((i, position)) = best else {
            return Ok(None);
        };
        let (_, value) = self.scans[i].entries.next().expect("peeked")?;
        // The same position in another scan is the same item: take it once.
        for scan in &mut self.scans {
            if let Some(Ok((key, _))) = scan.entries.peek()
                && key[scan.strip..] == position[..]
            {
                scan.entries.next();
            }
        }
        Ok(Some((position, value)))
    }
}

/// A range `[start, end)` of positions.
struct PositionRange {
    /// Strictly after this position (a page token).
    after: Option<Vec<u8>>,
    /// At or after this position.
    from: Option<Vec<u8>>,
    /// Before this position.
    to: Option<Vec<u8>>,
}

impl PositionRange {
    /// A scan of `prefix + position` for every position in the range; the first `family_len`
    /// bytes of `prefix` are stripped from each key to get the position.
    fn scan(&self, tree: &sled::Tree, prefix: &[u8], family_len: usize) -> Scan {
        let family = &prefix[..family_len];
        let with = |position: &[u8]| [family, position].concat();
        let mut start = prefix.to_vec();
        if let Some(from) = &self.from {
            start = start.max(with(from));
        }
        let mut end = keys::prefix_successor(prefix);
        if let Some(to) = &self.to {
            let to = with(to);
            end = Some(end.map_or(to.clone(), |end| end.min(to)));
        }
        let lower = match &self.after {
            Some(after) if with(after) >= start => Bound::Excluded(with(after)),
            _ => Bound::Included(start),
        };
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Scan {
            entries: tree.range::<Vec<u8>, _>((lower, upper)).peekable(),
            strip: family_len,
        }
    }
}

fn count(tree: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    Ok(match tree.get(key)? {
        Some(bytes) => keys::read_be(&bytes)
            .ok_or_else(|| StoreError::corrupt(key, "not an 8-byte counter"))?,
        None => 0,
    })
}

pub(crate) fn conversation_count(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(keys::connection_counts(tree)?
        .iter()
        .map(|(_, count, _)| count)
        .sum())
}

/// The index families to scan: the connections asked for (or, for vendors, the connections of
/// those vendors; else every connection), or the statuses asked for when they hold fewer
/// conversations by the counters. Connections and vendors together: the connections of those
/// vendors among those asked for.
fn choose_families<'q>(
    tree: &sled::Tree,
    connections: &'q [ConnectionId],
    vendors: &[String],
    statuses: &[ConversationStatus],
    known: &'q [(ConnectionId, u64, String)],
) -> Result<Vec<IndexFamily<'q>>, StoreError> {
    let by_connection: Vec<&'q (ConnectionId, u64, String)> = known
        .iter()
        .filter(|(c, _, v)| {
            (connections.is_empty() || connections.contains(c))
                && (vendors.is_empty() || vendors.contains(v))
        })
        .collect();
    let connection_cost: u64 = by_connection.iter().map(|(_, n, _)| n).sum();
    if !statuses.is_empty() {
        let mut status_cost = 0u64;
        for status in statuses {
            status_cost =
                status_cost.saturating_add(count(tree, &IndexFamily::Status(*status).count_key())?);
        }
        if status_cost < connection_cost {
            return Ok(statuses.iter().map(|s| IndexFamily::Status(*s)).collect());
        }
    }
    Ok(by_connection
        .into_iter()
        .map(|(c, _, _)| IndexFamily::Connection(c))
        .collect())
}

fn in_range(at: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    from.is_none_or(|from| at >= from) && to.is_none_or(|to| at < to)
}

pub(crate) fn list_conversations(
    tree: &sled::Tree,
    log: &crate::segments::LogFiles,
    query: &ConversationQuery,
) -> Result<ConversationPage, StoreError> {
    query.check_store_filters()?;
    let page_size = effective_page_size(query.page_size);
    let filters = conversation_filters_hash(query);
    let after = decode_token(query.page_token.as_deref(), CONVERSATION_TOKEN, filters)?;
    let connections = sorted(&query.connections);
    let vendors = sorted(&query.vendors);
    let statuses = sorted(&query.statuses);
    let known = keys::connection_counts(tree)?;
    let families = choose_families(tree, &connections, &vendors, &statuses, &known)?;

    // Where a started range applies, every match has sort key == started_at, so the range
    // bounds the scan: sort key < to is position >= descending(to - 1), and sort key >= from is
    // position < the successor of descending(from).
    let mut range = PositionRange {
        after,
        from: None,
        to: None,
    };
    if let Some(to) = query.started_to {
        match to
            .as_millis()
            .checked_sub(1)
            .and_then(Timestamp::from_millis)
        {
            Some(last) => range.from = Some(keys::descending_time(last).to_vec()),
            None => {
                return Ok(ConversationPage::default());
            }
        }
    }
    if let Some(from) = query.started_from {
        range.to = keys::prefix_successor(&keys::descending_time(from));
    }

    let mut merge = Merge {
        scans: families
            .iter()
            .map(|family| {
                let prefix = family.prefix();
                let len = prefix.len();
                range.scan(tree, &prefix, len)
            })
            .collect(),
    };
    let mut page: Vec<(Vec<u8>, Conversation)> = Vec::with_capacity(page_size + 1);
    while page.len() <= page_size {
        let Some((position, conversation_key)) = merge.next()? else {
            break;
        };
        let Some(bytes) = tree.get(&conversation_key)? else {
            continue;
        };
        let mut conversation = match crate::header::decode_header(&conversation_key, &bytes) {
            Ok(conversation) => conversation,
            Err(error) => {
                crate::unreadable_record(&conversation_key, &error);
                continue;
            }
        };
        // An index entry read before a concurrent commit moved the conversation: it is listed
        // at its new position instead.
        if keys::position(&conversation) != position {
            continue;
        }
        let matches = (connections.is_empty() || connections.contains(&conversation.id.connection))
            && (vendors.is_empty() || vendors.contains(&conversation.vendor))
            && (statuses.is_empty() || statuses.contains(&conversation.status))
            && (query.started_from.is_none() && query.started_to.is_none()
                || conversation
                    .started_at
                    .is_some_and(|at| in_range(at, query.started_from, query.started_to)))
            && in_range(
                conversation.updated_at,
                query.updated_from,
                query.updated_to,
            );
        if matches {
            crate::conversations::load_messages(tree, log, &mut conversation)?;
            page.push((position, conversation));
        }
    }
    let next_page_token = if page.len() > page_size {
        page.truncate(page_size);
        page.last()
            .map(|(position, _)| encode_token(CONVERSATION_TOKEN, filters, position))
    } else {
        None
    };
    Ok(ConversationPage {
        conversations: page.into_iter().map(|(_, c)| c).collect(),
        next_page_token,
    })
}

pub(crate) fn list_tickets(
    tree: &sled::Tree,
    query: &TicketListQuery,
) -> Result<TicketListPage, StoreError> {
    let page_size = effective_page_size(query.page_size);
    let filters = ticket_filters_hash(query);
    let after = decode_token(query.page_token.as_deref(), TICKET_TOKEN, filters)?;
    let connections = sorted(&query.connections);
    let prefixes: Vec<Vec<u8>> = if connections.is_empty() {
        vec![keys::TICKET_PREFIX.to_vec()]
    } else {
        connections.iter().map(keys::ticket_prefix).collect()
    };
    let range = PositionRange {
        after,
        from: None,
        to: None,
    };
    let mut merge = Merge {
        scans: prefixes
            .iter()
            .map(|prefix| range.scan(tree, prefix, keys::TICKET_PREFIX.len()))
            .collect(),
    };
    let mut page = Vec::with_capacity(page_size + 1);
    while page.len() <= page_size {
        let Some((position, bytes)) = merge.next()? else {
            break;
        };
        let key = [keys::TICKET_PREFIX, &position].concat();
        let stored: StoredTicket = match decode(&key, &bytes) {
            Ok(stored) => stored,
            Err(error) => {
                crate::unreadable_record(&key, &error);
                continue;
            }
        };
        if !query.statuses.is_empty() && !query.statuses.contains(&stored.ticket.status) {
            continue;
        }
        let (connection, _) = keys::parse_ticket_key(&key)
            .ok_or_else(|| StoreError::corrupt(&key, "not a ticket key"))?;
        page.push((position, connection, stored.ticket));
    }
    let next_page_token = if page.len() > page_size {
        page.truncate(page_size);
        page.last()
            .map(|(position, _, _)| encode_token(TICKET_TOKEN, filters, position))
    } else {
        None
    };
    Ok(TicketListPage {
        tickets: page.into_iter().map(|(_, c, t)| (c, t)).collect(),
        next_page_token,
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
        assert!(matches!(
            decode_token(Some("%%%"), CONVERSATION_TOKEN, 7),
            Err(StoreError::BadPageToken)
        ));
        assert!(matches!(
            decode_token(Some(""), CONVERSATION_TOKEN, 7),
            Err(StoreError::BadPageToken)
        ));
    }

    #[test]
    fn the_family_with_the_fewest_conversations_is_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let a = ConnectionId::new("a").unwrap();
        let b = ConnectionId::new("b").unwrap();
        let c = ConnectionId::new("c").unwrap();
        for (connection, n, vendor) in [(&a, 40, "v"), (&b, 30, "v"), (&c, 5, "w")] {
            db.insert(
                IndexFamily::Connection(connection).count_key(),
                keys::connection_count_value(n, vendor),
            )
            .unwrap();
        }
        db.insert(
            IndexFamily::Status(ConversationStatus::Closed).count_key(),
            &keys::be(50)[..],
        )
        .unwrap();
        let known = keys::connection_counts(&db).unwrap();
        assert_eq!(known.len(), 3);
        assert_eq!(conversation_count(&db).unwrap(), 75);
        let vendors = vec!["v".to_owned()];
        let closed = [ConversationStatus::Closed];
        let open = [ConversationStatus::Open];
        let conn = |c| IndexFamily::Connection(c);

        // a + b hold 70 > 50 closed: the status family.
        let chosen = choose_families(&db, &[], &vendors, &closed, &known).unwrap();
        assert_eq!(chosen, [IndexFamily::Status(ConversationStatus::Closed)]);
        // b alone holds 30 < 50.
        let one = [b.clone()];
        let chosen = choose_families(&db, &one, &vendors, &closed, &known).unwrap();
        assert_eq!(chosen, [conn(&b)]);
        // A vendor is its connections.
        let chosen = choose_families(&db, &[], &vendors, &[], &known).unwrap();
        assert_eq!(chosen, [conn(&a), conn(&b)]);
        // Connections and vendors together: those of the connections with that vendor.
        let a_and_c = [a.clone(), c.clone()];
        let chosen = choose_families(&db, &a_and_c, &vendors, &[], &known).unwrap();
        assert_eq!(chosen, [conn(&a)]);
        // No open conversation at all: the empty status family is cheapest.
        let chosen = choose_families(&db, &[], &vendors, &open, &known).unwrap();
        assert_eq!(chosen, [IndexFamily::Status(ConversationStatus::Open)]);
        // No filter: every connection.
        let chosen = choose_families(&db, &[], &[], &[], &known).unwrap();
        assert_eq!(chosen, [conn(&a), conn(&b), conn(&c)]);
        // A connection nobody wrote to: nothing to scan.
        let unknown = [ConnectionId::new("z").unwrap()];
        let chosen = choose_families(&db, &unknown, &[], &[], &known).unwrap();
        assert!(chosen.is_empty());
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
}
