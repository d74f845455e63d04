//! The conversation projection and its merge rules.
//!
//! Vendors send events out of order and more than once. Every field of a [`Conversation`] is
//! merged so that applying the same set of events in any order, any number of times, gives the
//! same conversation:
//! - status only moves forward (the larger [`ConversationStatus`] wins);
//! - `started_at` is the earliest seen, `ended_at` and `updated_at` the latest;
//! - messages, agents, tags, attributes and segments are maps merged key by key;
//! - every single-valued field is a last-writer-wins register ([`Lww`]) ordered by the event's
//!   vendor time, ties broken by a hash of its dedup key.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    ConversationId, ConversationPatch, ConversationStatus, Message, Participant, Rating, Segment,
    Timestamp,
};

/// The order of writes for last-writer-wins: the event's vendor time, then a hash of its
/// dedup key so that two events at the same millisecond still have a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp(pub Timestamp, pub u64);

impl Stamp {
    /// The stamp of an event.
    pub fn of(occurred_at: Timestamp, dedup_key: &str) -> Self {
        Stamp(occurred_at, fnv1a(dedup_key.as_bytes()))
    }
}

/// FNV-1a, 64 bit: a stable hash (unlike `std`'s, it is the same on every run and machine).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A last-writer-wins register: a value and the stamp of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    /// The value.
    pub value: T,
    /// When it was written.
    pub stamp: Stamp,
}

fn lww_set<T>(slot: &mut Option<Lww<T>>, value: T, stamp: Stamp) {
    match slot {
        Some(current) if current.stamp >= stamp => {}
        _ => *slot = Some(Lww { value, stamp }),
    }
}

fn lww_insert<K: Ord, T>(map: &mut BTreeMap<K, Lww<T>>, key: K, value: T, stamp: Stamp) {
    match map.get(&key) {
        Some(current) if current.stamp >= stamp => {}
        _ => {
            map.insert(key, Lww { value, stamp });
        }
    }
}

/// A conversation as Switchboard keeps it: the merge of every event about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// `connection/vendor-id`.
    pub id: ConversationId,
    /// The vendor.
    pub vendor: String,
    /// Where it stands.
    pub status: ConversationStatus,
    /// The earliest start seen.
    pub started_at: Option<Timestamp>,
    /// The latest end seen.
    pub ended_at: Option<Timestamp>,
    /// The latest vendor time of any event applied.
    pub updated_at: Timestamp,
    /// Why it ended.
    pub end_reason: Option<Lww<String>>,
    /// The visitor.
    pub visitor: Option<Lww<Participant>>,
    /// Agents and bots by id; `None` once they left.
    pub agents: BTreeMap<String, Lww<Option<Participant>>>,
    /// The agent now responsible.
    pub assigned_agent: Option<Lww<String>>,
    /// Messages by key.
    pub messages: BTreeMap<String, Lww<Message>>,
    /// Tags; `false` once removed.
    pub tags: BTreeMap<String, Lww<bool>>,
    /// The visitor's rating.
    pub rating: Option<Lww<Rating>>,
    /// The page the chat started on.
    pub page_url: Option<Lww<String>>,
    /// The referrer of that page.
    pub referrer: Option<Lww<String>>,
    /// Vendor-specific attributes.
    pub attributes: BTreeMap<String, Lww<String>>,
    /// Segments (dialogs) by id.
    pub segments: BTreeMap<String, Lww<Segment>>,
    /// Dedup keys of the events it was built from.
    pub event_keys: BTreeSet<String>,
}

impl Conversation {
    /// An empty conversation: nothing known but its id.
    pub fn new(id: ConversationId, vendor: impl Into<String>) -> Self {
        Conversation {
            id,
            vendor: vendor.into(),
            status: ConversationStatus::Unknown,
            started_at: None,
            ended_at: None,
            updated_at: Timestamp::MIN,
            end_reason: None,
            visitor: None,
            agents: BTreeMap::new(),
            assigned_agent: None,
            messages: BTreeMap::new(),
            tags: BTreeMap::new(),
            rating: None,
            page_url: None,
            referrer: None,
            attributes: BTreeMap::new(),
            segments: BTreeMap::new(),
            event_keys: BTreeSet::new(),
        }
    }

    /// Merges one event's patch in. Commutative, associative and idempotent over events with
    /// distinct dedup keys: any order of the same events gives the same conversation.
    pub fn apply(&mut self, patch: &ConversationPatch, occurred_at: Timestamp, dedup_key: &str) {
        let stamp = Stamp::of(occurred_at, dedup_key);
        self.event_keys.insert(dedup_key.to_owned());
        self.updated_at = self.updated_at.max(occurred_at);
        if let Some(status) = patch.status {
            self.status = self.status.max(status);
        }
        if let Some(at) = patch.started_at {
            self.started_at = Some(self.started_at.map_or(at, |cur| cur.min(at)));
        }
        if let Some(at) = patch.ended_at {
            self.ended_at = Some(self.ended_at.map_or(at, |cur| cur.max(at)));
        }
        if let Some(reason) = &patch.end_reason {
            lww_set(&mut self.end_reason, reason.clone(), stamp);
        }
        if let Some(visitor) = &patch.visitor {
            lww_set(&mut self.visitor, visitor.clone(), stamp);
        }
        for agent in &patch.agents_joined {
            lww_insert(
                &mut self.agents,
                agent.id.clone(),
                Some(agent.clone()),
                stamp,
            );
        }
        for id in &patch.agents_left {
            lww_insert(&mut self.agents, id.clone(), None, stamp);
        }
        if let Some(agent) = &patch.assigned_agent {
            lww_set(&mut self.assigned_agent, agent.clone(), stamp);
        }
        for message in &patch.messages {
            lww_insert(
                &mut self.messages,
                message.key.clone(),
                message.clone(),
                stamp,
            );
        }
        for tag in &patch.tags_added {
            lww_insert(&mut self.tags, tag.clone(), true, stamp);
        }
        for tag in &patch.tags_removed {
            lww_insert(&mut self.tags, tag.clone(), false, stamp);
        }
        if let Some(rating) = &patch.rating {
            lww_set(&mut self.rating, rating.clone(), stamp);
        }
        if let Some(url) = &patch.page_url {
            lww_set(&mut self.page_url, url.clone(), stamp);
        }
        if let Some(referrer) = &patch.referrer {
            lww_set(&mut self.referrer, referrer.clone(), stamp);
        }
        for (key, value) in &patch.attributes {
            lww_insert(&mut self.attributes, key.clone(), value.clone(), stamp);
        }
        for segment in &patch.segments {
            lww_insert(
                &mut self.segments,
                segment.id.clone(),
                segment.clone(),
                stamp,
            );
        }
    }

    /// Messages in the order they were sent (ties by key).
    pub fn messages_in_order(&self) -> Vec<&Message> {
        let mut messages: Vec<&Message> = self.messages.values().map(|m| &m.value).collect();
        messages.sort_by(|a, b| (a.sent_at, &a.key).cmp(&(b.sent_at, &b.key)));
        messages
    }

    /// Agents and bots still in the conversation.
    pub fn current_agents(&self) -> impl Iterator<Item = &Participant> {
        self.agents.values().filter_map(|a| a.value.as_ref())
    }

    /// Tags currently on the conversation.
    pub fn current_tags(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .filter(|(_, on)| on.value)
            .map(|(tag, _)| tag.as_str())
    }

    /// Segments in the order they started (ties by id).
    pub fn segments_in_order(&self) -> Vec<&Segment> {
        let mut segments: Vec<&Segment> = self.segments.values().map(|s| &s.value).collect();
        segments.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        segments
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{ConnectionId, Role};

    fn patch(i: usize) -> (ConversationPatch, Timestamp, String) {
        let at = Timestamp::from_secs(1_700_000_000 + (i as i64 % 4)).unwrap();
        let mut p = ConversationPatch::new("c1");
        match i % 6 {
            0 => {
                p.status = Some(ConversationStatus::Open);
                p.started_at = Some(at);
                p.visitor = Some(Participant {
                    id: "v".into(),
                    name: Some(format!("visitor {i}")),
                    ..Participant::default()
                });
            }
            1 => p.messages.push(Message {
                key: format!("m{}", i % 3),
                author_role: Role::Visitor,
                author_id: None,
                author_name: None,
                text: format!("text {i}"),
                attachments: vec![],
                sent_at: at,
                automatic: false,
                data: None,
            }),
            2 => {
                p.status = Some(ConversationStatus::Closed);
                p.ended_at = Some(at);
            }
            3 => p.tags_added.push(format!("t{}", i % 2)),
            4 => p.tags_removed.push(format!("t{}", i % 2)),
            _ => {
                p.agents_joined.push(Participant {
                    id: "a".into(),
                    ..Participant::default()
                });
                p.rating = Some(Rating {
                    score: Some(i as i64),
                    ..Rating::default()
                });
            }
        }
        (p, at, format!("event-{i}"))
    }

    fn fold(order: &[usize]) -> Conversation {
        let id = ConversationId::new(ConnectionId::new("x").unwrap(), "c1");
        let mut conversation = Conversation::new(id, "test");
        for &i in order {
            let (p, at, key) = patch(i);
            conversation.apply(&p, at, &key);
        }
        conversation
    }

    proptest! {
        #[test]
        fn any_order_and_redelivery_gives_the_same_conversation(
            order in Just((0..14).collect::<Vec<usize>>()).prop_shuffle(),
            repeats in proptest::collection::vec(0usize..14, 0..6),
        ) {
            let expected = fold(&(0..14).collect::<Vec<_>>());
            let mut shuffled = order.clone();
            shuffled.extend(repeats);
            prop_assert_eq!(fold(&shuffled), expected);
        }
    }

    #[test]
    fn status_only_moves_forward() {
        let closed_then_open = fold(&[2, 0]);
        assert_eq!(closed_then_open.status, ConversationStatus::Closed);
        assert!(closed_then_open.started_at.is_some());
        assert!(closed_then_open.ended_at.is_some());
    }
}
