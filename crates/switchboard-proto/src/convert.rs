//! Conversions between the core model and the `switchboard.v1` wire types.

use switchboard_core as core;
use switchboard_core::{
    ConversationStatus, EventKind, Role, TicketOrigin, TicketStatus, Timestamp,
};

use switchboard_find::ContactRecord;

use crate::v1;

/// A core timestamp on the wire.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.to_secs_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// A wire timestamp in the core, `None` if out of range (before 1970 or after 9999).
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<Timestamp> {
    Timestamp::from_secs_nanos(t.seconds, t.nanos)
}

fn opt_ts(t: Option<Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// Status on the wire.
pub fn status(s: ConversationStatus) -> v1::ConversationStatus {
    match s {
        ConversationStatus::Unknown => v1::ConversationStatus::Unknown,
        ConversationStatus::Queued => v1::ConversationStatus::Queued,
        ConversationStatus::Open => v1::ConversationStatus::Open,
        ConversationStatus::Closed => v1::ConversationStatus::Closed,
        ConversationStatus::Missed => v1::ConversationStatus::Missed,
        ConversationStatus::Offline => v1::ConversationStatus::Offline,
    }
}

/// Status from the wire; `None` for UNSPECIFIED.
pub fn from_status(s: v1::ConversationStatus) -> Option<ConversationStatus> {
    Some(match s {
        v1::ConversationStatus::Unspecified => return None,
        v1::ConversationStatus::Unknown => ConversationStatus::Unknown,
        v1::ConversationStatus::Queued => ConversationStatus::Queued,
        v1::ConversationStatus::Open => ConversationStatus::Open,
        v1::ConversationStatus::Closed => ConversationStatus::Closed,
        v1::ConversationStatus::Missed => ConversationStatus::Missed,
        v1::ConversationStatus::Offline => ConversationStatus::Offline,
    })
}

/// Event kind on the wire.
pub fn kind(k: EventKind) -> v1::EventKind {
    match k {
        EventKind::ChatStarted => v1::EventKind::ChatStarted,
        EventKind::Message => v1::EventKind::Message,
        EventKind::ChatEnded => v1::EventKind::ChatEnded,
        EventKind::ChatMissed => v1::EventKind::ChatMissed,
        EventKind::OfflineMessage => v1::EventKind::OfflineMessage,
        EventKind::Rating => v1::EventKind::Rating,
        EventKind::ChatUpdated => v1::EventKind::ChatUpdated,
        EventKind::TicketCreated => v1::EventKind::TicketCreated,
        EventKind::TicketUpdated => v1::EventKind::TicketUpdated,
        EventKind::AgentUpdated => v1::EventKind::AgentUpdated,
        EventKind::VendorEvent => v1::EventKind::VendorEvent,
        EventKind::ContactMerged => v1::EventKind::ContactMerged,
        EventKind::ContactSplit => v1::EventKind::ContactSplit,
        EventKind::ContactErased => v1::EventKind::ContactErased,
    }
}

/// Event kind from the wire; `None` for UNSPECIFIED.
pub fn from_kind(k: v1::EventKind) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|c| kind(*c) == k)
}

fn role(r: Role) -> v1::Role {
    match r {
        Role::Visitor => v1::Role::Visitor,
        Role::Agent => v1::Role::Agent,
        Role::Bot => v1::Role::Bot,
        Role::System => v1::Role::System,
    }
}

/// Ticket status on the wire.
pub fn ticket_status(s: TicketStatus) -> v1::TicketStatus {
    match s {
        TicketStatus::Open => v1::TicketStatus::Open,
        TicketStatus::Pending => v1::TicketStatus::Pending,
        TicketStatus::Solved => v1::TicketStatus::Solved,
        TicketStatus::Spam => v1::TicketStatus::Spam,
    }
}

/// Ticket status from the wire; `None` for UNSPECIFIED.
pub fn from_ticket_status(s: v1::TicketStatus) -> Option<TicketStatus> {
    TicketStatus::ALL
        .into_iter()
        .find(|c| ticket_status(*c) == s)
}

/// A participant on the wire.
pub fn participant(p: &core::Participant) -> v1::Participant {
    v1::Participant {
        id: p.id.clone(),
        name: p.name.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        attributes: p
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn rating(r: &core::Rating) -> v1::Rating {
    v1::Rating {
        score: r.score,
        scale: r.scale.clone(),
        label: r.label.clone(),
        comment: r.comment.clone(),
    }
}

/// A message on the wire.
pub fn message(m: &core::Message) -> v1::Message {
    v1::Message {
        key: m.key.clone(),
        author_role: role(m.author_role) as i32,
        author_id: m.author_id.clone(),
        author_name: m.author_name.clone(),
        text: m.text.clone(),
        attachments: m
            .attachments
            .iter()
            .map(|a| v1::Attachment {
                url: a.url.clone(),
                name: a.name.clone(),
                size: a.size,
                content_type: a.content_type.clone(),
            })
            .collect(),
        sent_at: Some(timestamp(m.sent_at)),
        automatic: m.automatic,
        data_json: m.data.as_ref().map(|d| d.to_string()),
    }
}

fn segment(s: &core::Segment) -> v1::Segment {
    v1::Segment {
        id: s.id.clone(),
        agent: s.agent.as_ref().map(participant),
        started_at: opt_ts(s.started_at),
        ended_at: opt_ts(s.ended_at),
        rating: s.rating.as_ref().map(rating),
        attributes: s
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A conversation on the wire, with or without its messages.
pub fn conversation(c: &core::Conversation, with_messages: bool) -> v1::Conversation {
    v1::Conversation {
        id: c.id.to_string(),
        connection_id: c.id.connection.to_string(),
        vendor: c.vendor.clone(),
        external_id: c.id.external_id.clone(),
        status: status(c.status) as i32,
        started_at: opt_ts(c.started_at),
        ended_at: opt_ts(c.ended_at),
        updated_at: Some(timestamp(c.updated_at)),
        end_reason: c.end_reason.as_ref().map(|r| r.value.clone()),
        visitor: c.visitor.as_ref().map(|v| participant(&v.value)),
        agents: c.current_agents().map(participant).collect(),
        assigned_agent: c.assigned_agent.as_ref().map(|a| a.value.clone()),
        messages: if with_messages {
            c.messages_in_order().into_iter().map(message).collect()
        } else {
            Vec::new()
        },
        message_count: u32::try_from(c.messages.len()).unwrap_or(u32::MAX),
        tags: c.current_tags().map(str::to_owned).collect(),
        rating: c.rating.as_ref().map(|r| rating(&r.value)),
        page_url: c.page_url.as_ref().map(|u| u.value.clone()),
        referrer: c.referrer.as_ref().map(|u| u.value.clone()),
        attributes: c
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        segments: c.segments_in_order().into_iter().map(segment).collect(),
        event_count: u32::try_from(c.event_count).unwrap_or(u32::MAX),
    }
}

/// An event on the wire, taking the strings of an event the caller no longer needs (the raw
/// body above all) instead of copying them; otherwise the same as [`event`].
pub fn event_owned(e: core::Event) -> v1::Event {
    let mut wire = v1::Event {
        id: String::new(),
        vendor: String::new(),
        vendor_event: String::new(),
        dedup_key: String::new(),
        request_id: None,
        raw: None,
        ..event_fields(&e)
    };
    wire.id = e.id;
    wire.vendor = e.vendor;
    wire.vendor_event = e.incoming.vendor_event;
    wire.dedup_key = e.incoming.dedup_key;
    wire.request_id = e.request_id;
    wire.raw = e.raw;
    wire
}

/// An event on the wire.
pub fn event(e: &core::Event) -> v1::Event {
    v1::Event {
        id: e.id.clone(),
        vendor: e.vendor.clone(),
        vendor_event: e.incoming.vendor_event.clone(),
        dedup_key: e.incoming.dedup_key.clone(),
        request_id: e.request_id.clone(),
        raw: e.raw.clone(),
        ..event_fields(e)
    }
}

/// Every field of [`event`] except the strings copied from the event as they are.
fn event_fields(e: &core::Event) -> v1::Event {
    let message = match (&e.incoming.kind, &e.incoming.payload) {
        (EventKind::Message, core::EventPayload::Conversation(patch)) => {
            patch.messages.first().map(message)
        }
        _ => None,
    };
    v1::Event {
        sequence: e.sequence.0,
        id: String::new(),
        connection_id: e.connection.to_string(),
        vendor: String::new(),
        kind: kind(e.incoming.kind) as i32,
        vendor_event: String::new(),
        dedup_key: String::new(),
        occurred_at: Some(timestamp(e.incoming.occurred_at)),
        received_at: Some(timestamp(e.received_at)),
        conversation_id: e.conversation_id().map(|id| id.to_string()),
        ticket_id: e.ticket_id().map(|id| id.to_string()),
        message,
        payload_json: serde_json::to_string(&e.incoming.payload).unwrap_or_default(),
        request_id: None,
        raw: None,
    }
}

fn ticket_source(s: &core::TicketSource) -> v1::TicketSource {
    v1::TicketSource {
        id: s.id.clone(),
        r#type: s.kind.clone(),
        url: s.url.clone(),
    }
}

/// A ticket on the wire.
pub fn ticket(connection: &core::ConnectionId, t: &core::Ticket) -> v1::Ticket {
    v1::Ticket {
        id: core::TicketId::new(connection.clone(), t.external_id.clone()).to_string(),
        connection_id: connection.to_string(),
        external_id: t.external_id.clone(),
        origin: match t.origin {
            TicketOrigin::HubNative => v1::TicketOrigin::HubNative,
            TicketOrigin::Vendor => v1::TicketOrigin::Vendor,
        } as i32,
        subject: t.subject.clone(),
        status: ticket_status(t.status) as i32,
        requester: t.requester.as_ref().map(participant),
        assignee: t.assignee.as_ref().map(participant),
        groups: t
            .groups
            .iter()
            .map(|g| v1::Group {
                id: g.id,
                name: g.name.clone(),
            })
            .collect(),
        tags: t.tags.clone(),
        source: t.source.as_ref().map(ticket_source),
        events: t
            .events
            .iter()
            .map(|e| v1::TicketEvent {
                author: e.author.as_ref().map(participant),
                author_type: e.author_type.clone(),
                date: opt_ts(e.date),
                message: e.message.clone(),
                r#type: e.kind.clone(),
                is_private: e.is_private,
                source: e.source.as_ref().map(ticket_source),
            })
            .collect(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
        attributes: t
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A contact on the wire: its identity keys as they are, and split by kind (`email:`,
/// `phone:`, `visitor:`) with the prefix taken off.
pub fn contact(c: &ContactRecord) -> v1::Contact {
    let of_kind = |prefix: &str| -> Vec<String> {
        c.identities
            .iter()
            .filter_map(|key| key.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    v1::Contact {
        id: c.id.clone(),
        identities: c.identities.iter().cloned().collect(),
        names: c.names.iter().cloned().collect(),
        emails: of_kind("email:"),
        phones: of_kind("phone:"),
        visitor_ids: of_kind("visitor:"),
        merged_into: c.merged_into.clone(),
        erased_at: opt_ts(c.erased_at),
        last_seen: opt_ts(c.last_seen),
        separated: c.separated.iter().cloned().collect(),
    }
}

/// A core agent as its API message.
pub fn agent(a: &core::Agent) -> v1::Agent {
    v1::Agent {
        login: a.login.clone(),
        name: a.name.clone(),
        login_status: a.login_status.clone(),
        job_title: a.job_title.clone(),
        permission: a.permission.clone(),
        max_chats_count: a.max_chats_count,
        status: a.status.clone(),
        avatar: a.avatar.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_event_converts_like_a_borrowed_one() {
        let at = Timestamp::from_secs(1_700_000_000).expect("time");
        let e = core::Event {
            sequence: core::Sequence(7),
            id: "evt-7".to_owned(),
            connection: core::ConnectionId::new("livechat").expect("id"),
            vendor: "livechat".to_owned(),
            received_at: at,
            request_id: Some("req-1".to_owned()),
            raw: Some("{\"raw\":true}".to_owned()),
            incoming: core::IncomingEvent {
                kind: EventKind::ChatUpdated,
                vendor_event: "chat_updated".to_owned(),
                dedup_key: "chat_updated:1".to_owned(),
                occurred_at: at,
                payload: core::EventPayload::Conversation(core::ConversationPatch::new("c1")),
            },
        };
        let borrowed = event(&e);
        assert_eq!(borrowed.raw.as_deref(), Some("{\"raw\":true}"));
        assert_eq!(borrowed.dedup_key, "chat_updated:1");
        assert_eq!(event_owned(e), borrowed);
    }

    #[test]
    fn enums_round_trip() {
        for s in ConversationStatus::ALL {
            assert_eq!(from_status(status(s)), Some(s));
        }
        for k in EventKind::ALL {
            assert_eq!(from_kind(kind(k)), Some(k));
        }
        for s in TicketStatus::ALL {
            assert_eq!(from_ticket_status(ticket_status(s)), Some(s));
        }
        assert_eq!(from_status(v1::ConversationStatus::Unspecified), None);
        assert_eq!(from_kind(v1::EventKind::Unspecified), None);
    }

    #[test]
    fn a_contact_splits_its_identities_by_kind() {
        let record = ContactRecord {
            id: "c12".to_owned(),
            created_at_sequence: core::Sequence(12),
            identities: [
                "email:jane@example.com",
                "phone:+442079460000",
                "visitor:livechat/S1",
                "visitor:smartsupp/v-9",
            ]
            .map(str::to_owned)
            .into(),
            names: ["Jane Doe".to_owned()].into(),
            separated: ["c40".to_owned()].into(),
            merged_into: None,
            erased_at: None,
            last_seen: Some(Timestamp::from_secs(1_700_000_000).expect("time")),
        };
        let wire = contact(&record);
        assert_eq!(wire.id, "c12");
        assert_eq!(wire.identities.len(), 4);
        assert_eq!(wire.emails, ["jane@example.com"]);
        assert_eq!(wire.phones, ["+442079460000"]);
        assert_eq!(wire.visitor_ids, ["livechat/S1", "smartsupp/v-9"]);
        assert_eq!(wire.names, ["Jane Doe"]);
        assert_eq!(wire.separated, ["c40"]);
        assert_eq!(wire.last_seen.map(|t| t.seconds), Some(1_700_000_000));
        assert_eq!(wire.erased_at, None);
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::from_millis(1_552_126_412_345).unwrap();
        assert_eq!(from_timestamp(&timestamp(t)), Some(t));
        assert_eq!(
            from_timestamp(&prost_types::Timestamp {
                seconds: -5,
                nanos: 0
            }),
            None
        );
    }
}
