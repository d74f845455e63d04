//! The conversation projection and its merge rules.
//!
//! Vendors send events out of order and more than once. Every field of a [`Conversation`] is
//! merged so that applying the same set of events in any order, any number of times, gives the
//! same conversation:
//! - status only moves forward (the larger [`ConversationStatus`] wins) within a thread, and the
//!   conversation has the status of its latest thread (by start, see
//!   [`ConversationPatch::thread`]), so a chat reopened as a new thread is open again;
//! - participants (the visitor, each agent) are merged field by field, each field its own
//!   last-writer-wins register, so a later event that lacks the e-mail does not hide it;
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
    /// Dedup keys of the events it was built from, while it is merged in memory. A store
    /// keeps only [`Conversation::event_count`]: it never applies one event twice, so it
    /// need not remember which were applied.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub event_keys: BTreeSet<String>,
    /// How many distinct events it was built from.
    #[serde(default)]
    pub event_count: u64,
    /// Each participant's fields as separate registers (`visitor`, `agent:<id>`): what the
    /// `visitor` and `agents` values are made of.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participant_fields: BTreeMap<String, ParticipantFields>,
    /// Each thread's status and start (`""`: the unnamed thread); `status` is the latest's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads: BTreeMap<String, ThreadStatus>,
}

/// When each field of one participant was last written: with the participant's values
/// (held in [`Conversation::visitor`] or [`Conversation::agents`]) these make a
/// last-writer-wins register per field, without keeping the values twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantFields {
    /// The id's stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Stamp>,
    /// The name's stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Stamp>,
    /// The e-mail's stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Stamp>,
    /// The phone's stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Stamp>,
    /// Each attribute's stamp.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Stamp>,
    /// An agent's values while they are out of the conversation (they left), so that a later
    /// join that lacks a field does not lose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Participant>,
}

/// Writes `value` into `slot` if `stamp` is newer than the slot's.
fn set_field<T: Clone>(slot: &mut T, at: &mut Option<Stamp>, value: &T, stamp: Stamp) {
    if at.is_none_or(|at| at < stamp) {
        *slot = value.clone();
        *at = Some(stamp);
    }
}

impl ParticipantFields {
    /// Stamps for a participant stored before fields were stamped apart: every field it has
    /// at its register's stamp.
    fn seeded(participant: Option<(&Participant, Stamp)>) -> Self {
        let mut fields = ParticipantFields::default();
        if let Some((p, stamp)) = participant {
            let mut scratch = p.clone();
            fields.merge(&mut scratch, p, stamp);
        }
        fields
    }

    /// Writes every field `incoming` has into `values`, where it is newer than what is held.
    fn merge(&mut self, values: &mut Participant, incoming: &Participant, stamp: Stamp) {
        if !incoming.id.is_empty() {
            set_field(&mut values.id, &mut self.id, &incoming.id, stamp);
        }
        for (slot, at, value) in [
            (&mut values.name, &mut self.name, &incoming.name),
            (&mut values.email, &mut self.email, &incoming.email),
            (&mut values.phone, &mut self.phone, &incoming.phone),
        ] {
            if value.as_ref().is_some_and(|v| !v.is_empty()) {
                set_field(slot, at, value, stamp);
            }
        }
        for (key, value) in &incoming.attributes {
            let at = self
                .attributes
                .entry(key.clone())
                .or_insert(Stamp(Timestamp::MIN, 0));
            if *at < stamp {
                values.attributes.insert(key.clone(), value.clone());
                *at = stamp;
            }
        }
    }
}

/// One thread of a conversation: the furthest status it reached and its earliest start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStatus {
    /// The furthest status seen in it.
    pub status: ConversationStatus,
    /// Its earliest start seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The earliest event about it (orders threads without a start).
    pub first: Stamp,
}

/// The key of the visitor in [`Conversation::participant_fields`].
const VISITOR: &str = "visitor";

fn agent_key(id: &str) -> String {
    format!("agent:{id}")
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
            event_count: 0,
            participant_fields: BTreeMap::new(),
            threads: BTreeMap::new(),
        }
    }

    /// A join (`Some`, with what it says of the agent) or a leave (`None`) of agent `id`:
    /// presence is a last-writer-wins register, the agent's fields are merged field by field
    /// whether they are present or not.
    fn merge_agent(&mut self, id: &str, joined: Option<&Participant>, stamp: Stamp) {
        let current = self.agents.get(id);
        let existing = current.and_then(|a| a.value.as_ref().map(|v| (v, a.stamp)));
        let fields = self
            .participant_fields
            .entry(agent_key(id))
            .or_insert_with(|| ParticipantFields::seeded(existing));
        let mut values = match current.and_then(|a| a.value.clone()) {
            Some(present) => present,
            None => fields.parked.clone().unwrap_or_else(|| Participant {
                id: id.to_owned(),
                ..Participant::default()
            }),
        };
        if let Some(joined) = joined {
            fields.merge(&mut values, joined, stamp);
        }
        lww_insert(
            &mut self.agents,
            id.to_owned(),
            joined.map(|_| values.clone()),
            stamp,
        );
        let present = self.agents.get_mut(id).filter(|a| a.value.is_some());
        match present {
            Some(present) => {
                present.value = Some(values);
                fields.parked = None;
            }
            None => fields.parked = Some(values),
        }
    }

    /// Records a status fact of `patch`'s thread and takes the latest thread's status.
    fn apply_status(&mut self, patch: &ConversationPatch, stamp: Stamp) {
        if patch.status.is_none() && patch.thread.is_none() {
            return;
        }
        if self.threads.is_empty() && self.status != ConversationStatus::Unknown {
            // Stored before threads were kept: what it had is its unnamed thread.
            self.threads.insert(
                String::new(),
                ThreadStatus {
                    status: self.status,
                    started_at: self.started_at,
                    first: Stamp(self.started_at.unwrap_or(Timestamp::MIN), 0),
                },
            );
        }
        let thread = self
            .threads
            .entry(patch.thread.clone().unwrap_or_default())
            .or_insert(ThreadStatus {
                status: ConversationStatus::Unknown,
                started_at: None,
                first: stamp,
            });
        if let Some(status) = patch.status {
            thread.status = thread.status.max(status);
        }
        if let Some(at) = patch.started_at {
            thread.started_at = Some(thread.started_at.map_or(at, |cur| cur.min(at)));
        }
        thread.first = thread.first.min(stamp);
        self.status = self
            .threads
            .iter()
            .max_by_key(|(id, t)| (t.started_at.unwrap_or(t.first.0), t.first, *id))
            .map_or(ConversationStatus::Unknown, |(_, t)| t.status);
    }

    /// Merges one event's patch in. Commutative, associative and idempotent over events with
    /// distinct dedup keys: any order of the same events gives the same conversation.
    pub fn apply(&mut self, patch: &ConversationPatch, occurred_at: Timestamp, dedup_key: &str) {
        let stamp = Stamp::of(occurred_at, dedup_key);
        if self.event_keys.insert(dedup_key.to_owned()) {
            self.event_count += 1;
        }
        self.updated_at = self.updated_at.max(occurred_at);
        self.apply_status(patch, stamp);
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
            let existing = self.visitor.as_ref().map(|v| (&v.value, v.stamp));
            let fields = self
                .participant_fields
                .entry(VISITOR.to_owned())
                .or_insert_with(|| ParticipantFields::seeded(existing));
            let mut values = self
                .visitor
                .as_ref()
                .map(|v| v.value.clone())
                .unwrap_or_default();
            fields.merge(&mut values, visitor, stamp);
            let newest = self.visitor.as_ref().map_or(stamp, |v| v.stamp.max(stamp));
            self.visitor = Some(Lww {
                value: values,
                stamp: newest,
            });
        }
        for agent in &patch.agents_joined {
            self.merge_agent(&agent.id, Some(agent), stamp);
        }
        for id in &patch.agents_left {
            self.merge_agent(id, None, stamp);
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

    fn visitor(name: Option<&str>, email: Option<&str>) -> Participant {
        Participant {
            id: "v".into(),
            name: name.map(str::to_owned),
            email: email.map(str::to_owned),
            ..Participant::default()
        }
    }

    #[test]
    fn participants_are_merged_field_by_field_in_any_order() {
        let id = ConversationId::new(ConnectionId::new("x").unwrap(), "c1");
        let at = |s: i64| Timestamp::from_secs(1_700_000_000 + s).unwrap();
        let events = [
            (visitor(Some("Ann"), Some("ann@example.com")), at(1), "e1"),
            (visitor(Some("Ann B."), None), at(2), "e2"),
            (visitor(None, Some("ann@new.example")), at(3), "e3"),
            (visitor(None, None), at(4), "e4"),
        ];
        let mut orders = vec![
            vec![0, 1, 2, 3],
            vec![3, 2, 1, 0],
            vec![2, 0, 3, 1],
            vec![1, 3, 0, 2],
        ];
        orders.push(vec![3, 0, 2, 1, 0]);
        let mut results = Vec::new();
        for order in orders {
            let mut conversation = Conversation::new(id.clone(), "test");
            for i in order {
                let (person, when, key) = &events[i];
                let mut p = ConversationPatch::new("c1");
                p.visitor = Some(person.clone());
                let mut agent = person.clone();
                agent.id = "agent-1".into();
                p.agents_joined.push(agent);
                conversation.apply(&p, *when, key);
            }
            results.push(conversation);
        }
        let first = &results[0];
        let seen = &first.visitor.as_ref().unwrap().value;
        // The latest of each field, whichever event carried it.
        assert_eq!(seen.name.as_deref(), Some("Ann B."));
        assert_eq!(seen.email.as_deref(), Some("ann@new.example"));
        let agent = first.current_agents().next().unwrap();
        assert_eq!(agent.email.as_deref(), Some("ann@new.example"));
        for other in &results[1..] {
            assert_eq!(other, first);
        }
    }

    #[test]
    fn an_agent_who_left_and_joined_again_keeps_every_field() {
        let id = ConversationId::new(ConnectionId::new("x").unwrap(), "c1");
        let at = |s: i64| Timestamp::from_secs(1_700_000_000 + s).unwrap();
        let join = |name: Option<&str>| {
            let mut p = ConversationPatch::new("c1");
            p.agents_joined.push(Participant {
                id: "a1".into(),
                name: name.map(str::to_owned),
                ..Participant::default()
            });
            p
        };
        let mut leave = ConversationPatch::new("c1");
        leave.agents_left.push("a1".into());
        let steps = [
            (join(Some("Bo")), at(1), "j1"),
            (leave, at(2), "l1"),
            (join(None), at(3), "j2"),
        ];
        let mut results = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [2, 0, 1], [1, 2, 0]] {
            let mut conversation = Conversation::new(id.clone(), "test");
            for i in order {
                let (p, when, key) = &steps[i];
                conversation.apply(p, *when, key);
            }
            results.push(conversation);
        }
        let agent = results[0].current_agents().next().expect("joined again");
        assert_eq!(agent.name.as_deref(), Some("Bo"));
        for other in &results[1..] {
            assert_eq!(other, &results[0]);
        }
    }

    #[test]
    fn a_chat_reopened_as_a_new_thread_is_open_again_in_any_order() {
        let id = ConversationId::new(ConnectionId::new("x").unwrap(), "c1");
        let at = |s: i64| Timestamp::from_secs(1_700_000_000 + s).unwrap();
        let fact = |thread: &str, status, started: Option<i64>| {
            let mut p = ConversationPatch::new("c1");
            p.thread = Some(thread.to_owned());
            p.status = Some(status);
            p.started_at = started.map(at);
            p
        };
        let steps = [
            (
                fact("T1", ConversationStatus::Open, Some(0)),
                at(0),
                "start1",
            ),
            (fact("T1", ConversationStatus::Closed, None), at(10), "end1"),
            (
                fact("T2", ConversationStatus::Open, Some(20)),
                at(20),
                "start2",
            ),
        ];
        let fold = |order: &[usize]| {
            let mut conversation = Conversation::new(id.clone(), "test");
            for &i in order {
                let (p, when, key) = &steps[i];
                conversation.apply(p, *when, key);
            }
            conversation
        };
        let reopened = fold(&[0, 1, 2]);
        assert_eq!(reopened.status, ConversationStatus::Open);
        for order in [[2, 1, 0], [1, 2, 0], [0, 2, 1]] {
            assert_eq!(fold(&order), reopened);
        }
        // Closed before it reopened: closed.
        assert_eq!(fold(&[0, 1]).status, ConversationStatus::Closed);
        // Within a thread, never backwards.
        let mut stale = fact("T2", ConversationStatus::Open, None);
        stale.thread = Some("T1".into());
        let mut again = fold(&[0, 1]);
        again.apply(&stale, at(5), "late-open-of-t1");
        assert_eq!(again.status, ConversationStatus::Closed);
    }

    #[test]
    fn status_only_moves_forward() {
        let closed_then_open = fold(&[2, 0]);
        assert_eq!(closed_then_open.status, ConversationStatus::Closed);
        assert!(closed_then_open.started_at.is_some());
        assert!(closed_then_open.ended_at.is_some());
    }
}
