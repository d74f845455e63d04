//! Erasure: what removing one person's personal data does to the model.
//!
//! A store erases a contact (`Storage::erase_contact`) by applying these functions to the
//! contact's conversations, tickets and log events, and by dropping the raw body of every
//! append request that holds one of those events. Precisely:
//!
//! **Removed** (emptied, or set to nothing):
//! - the visitor of a conversation (and the requester of a ticket, and a ticket entry's author
//!   who is not an agent): name, e-mail, phone and attributes; their vendor id is replaced by
//!   [`ERASED`], as is the author id of every message the visitor wrote;
//! - every message of the conversation, whoever wrote it (agents quote customers): its text
//!   (`""`), its author's name, its attachments' names and URLs, its structured `data`;
//! - the conversation's attributes, page URL and referrer, the rating's comment (of the
//!   conversation and of each segment), each segment's attributes;
//! - a ticket's subject (`""`), every entry's message (`""`), its attributes, and the URL of
//!   its source and of each entry's source;
//! - the data of a vendor event Switchboard does not model (`EventPayload::Vendor`'s `data`
//!   becomes `null`);
//! - the raw body of every request (webhook, sync page) that carried one of the events.
//!
//! **Kept**: sequences, event ids, dedup keys, kinds, vendor event names, times, statuses,
//! threads, end reasons, tags, message keys and roles, attachment sizes and types, rating
//! scores and labels, agents (they are employees: their ids, names, segments, assignments and
//! agent events), ticket groups, assignees and ids, and every count. So a stream stays
//! gap-free, a conversation keeps its shape (how many messages, when, by whom in which role),
//! and dedup still recognizes a redelivery.
//!
//! Erasure is idempotent: erasing erased data changes nothing. An event appended after the
//! erasure (the person writes again) is not erased: it is new data.

use crate::{
    Conversation, ConversationPatch, Event, EventPayload, Message, Participant, Rating, Role,
    Segment, Ticket, TicketEvent, TicketSource,
};

/// The vendor id an erased visitor (or requester) is left with. The finder never links a
/// participant by it.
pub const ERASED: &str = "erased";

impl Participant {
    /// Removes the participant's personal data: name, e-mail, phone and attributes, and
    /// replaces a non-empty id with [`ERASED`].
    pub fn erase_personal(&mut self) {
        if !self.id.is_empty() {
            self.id = ERASED.to_owned();
        }
        self.name = None;
        self.email = None;
        self.phone = None;
        self.attributes.clear();
    }
}

impl Message {
    /// Removes the message's personal data: text, author name, attachment names and URLs,
    /// structured data; a visitor's message also loses its author id (to [`ERASED`]).
    pub fn erase_personal(&mut self) {
        self.text.clear();
        self.author_name = None;
        if self.author_role == Role::Visitor
            && let Some(id) = &mut self.author_id
        {
            *id = ERASED.to_owned();
        }
        for attachment in &mut self.attachments {
            attachment.url = None;
            attachment.name = None;
        }
        self.data = None;
    }
}

impl Rating {
    /// Removes the visitor's comment (the score and label stay).
    pub fn erase_personal(&mut self) {
        self.comment = None;
    }
}

impl Segment {
    /// Removes the segment's attributes and its rating's comment (its agent stays).
    pub fn erase_personal(&mut self) {
        self.attributes.clear();
        if let Some(rating) = &mut self.rating {
            rating.erase_personal();
        }
    }
}

impl ConversationPatch {
    /// Removes the personal data this event carries (see the [module docs](self)).
    pub fn erase_personal(&mut self) {
        if let Some(visitor) = &mut self.visitor {
            visitor.erase_personal();
        }
        for message in &mut self.messages {
            message.erase_personal();
        }
        if let Some(rating) = &mut self.rating {
            rating.erase_personal();
        }
        self.page_url = None;
        self.referrer = None;
        self.attributes.clear();
        for segment in &mut self.segments {
            segment.erase_personal();
        }
    }
}

impl Conversation {
    /// Removes the conversation's personal data (see the [module docs](self)), messages
    /// included (those held: a store holding messages apart erases each of them too).
    pub fn erase_personal(&mut self) {
        if let Some(visitor) = &mut self.visitor {
            visitor.value.erase_personal();
        }
        if let Some(fields) = self.participant_fields.get_mut("visitor") {
            fields.attributes.clear();
            fields.parked = None;
        }
        for message in self.messages.values_mut() {
            message.value.erase_personal();
        }
        if let Some(rating) = &mut self.rating {
            rating.value.erase_personal();
        }
        self.page_url = None;
        self.referrer = None;
        self.attributes.clear();
        for segment in self.segments.values_mut() {
            segment.value.erase_personal();
        }
    }
}

fn erase_source(source: &mut Option<TicketSource>) {
    if let Some(source) = source {
        source.url = None;
    }
}

impl TicketEvent {
    /// Removes the entry's message and source URL, and its author's personal data unless the
    /// author is an agent.
    pub fn erase_personal(&mut self) {
        self.message.clear();
        if self.author_type.as_deref() != Some("agent")
            && let Some(author) = &mut self.author
        {
            author.erase_personal();
        }
        erase_source(&mut self.source);
    }
}

impl Ticket {
    /// Removes the ticket's personal data (see the [module docs](self)).
    pub fn erase_personal(&mut self) {
        self.subject.clear();
        if let Some(requester) = &mut self.requester {
            requester.erase_personal();
        }
        erase_source(&mut self.source);
        for event in &mut self.events {
            event.erase_personal();
        }
        self.attributes.clear();
    }
}

impl EventPayload {
    /// Removes the personal data of the payload: a conversation patch's and a ticket's (see
    /// the [module docs](self)), a vendor event's data (to `null`). Agent and contact payloads
    /// hold none and stay.
    pub fn erase_personal(&mut self) {
        match self {
            EventPayload::Conversation(patch) => patch.erase_personal(),
            EventPayload::Ticket(ticket) => ticket.erase_personal(),
            EventPayload::Vendor { data, .. } => *data = serde_json::Value::Null,
            EventPayload::Agent { .. } | EventPayload::Contact(_) => {}
        }
    }
}

impl Event {
    /// Removes the event's personal data: its payload's (see [`EventPayload::erase_personal`])
    /// and the raw body it carries. Sequence, ids, kind and times stay.
    pub fn erase_personal(&mut self) {
        self.incoming.payload.erase_personal();
        self.raw = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        Attachment, ConnectionId, ConversationId, ConversationStatus, EventKind, IncomingEvent,
        Sequence, TicketOrigin, TicketStatus, Timestamp,
    };

    const SECRET: &str = "Zebulon Quaxworth";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + secs).unwrap()
    }

    fn person() -> Participant {
        Participant {
            id: "visitor-77".into(),
            name: Some(SECRET.into()),
            email: Some("zebulon@example.com".into()),
            phone: Some("+420 601 123 456".into()),
            attributes: BTreeMap::from([("city".to_owned(), "Brno".to_owned())]),
        }
    }

    fn agent() -> Participant {
        Participant {
            id: "agent@company.example".into(),
            name: Some("Alice Agent".into()),
            ..Participant::default()
        }
    }

    fn message(key: &str, role: Role, author: &str) -> Message {
        Message {
            key: key.into(),
            author_role: role,
            author_id: Some(author.into()),
            author_name: Some(format!("{SECRET} or agent")),
            text: format!("my card is 4111 1111, {SECRET}"),
            attachments: vec![Attachment {
                url: Some("https://files.example/passport.png".into()),
                name: Some("passport.png".into()),
                size: Some(1234),
                content_type: Some("image/png".into()),
            }],
            sent_at: at(5),
            automatic: false,
            data: Some(serde_json::json!({"lat": 49.19})),
        }
    }

    fn patch() -> ConversationPatch {
        let mut patch = ConversationPatch::new("chat-1");
        patch.status = Some(ConversationStatus::Closed);
        patch.started_at = Some(at(0));
        patch.end_reason = Some("visitor_closed".into());
        patch.visitor = Some(person());
        patch.agents_joined = vec![agent()];
        patch.assigned_agent = Some("agent@company.example".into());
        patch.messages = vec![
            message("m1", Role::Visitor, "visitor-77"),
            message("m2", Role::Agent, "agent@company.example"),
        ];
        patch.tags_added = vec!["vip".into()];
        patch.rating = Some(Rating {
            score: Some(5),
            scale: Some("1-5".into()),
            label: Some("good".into()),
            comment: Some(format!("thanks, {SECRET}")),
        });
        patch.page_url = Some("https://shop.example/?email=zebulon@example.com".into());
        patch.referrer = Some("https://mail.example/zebulon".into());
        patch.attributes = BTreeMap::from([("order".to_owned(), "A-991".to_owned())]);
        patch.segments = vec![Segment {
            id: "s1".into(),
            agent: Some(agent()),
            started_at: Some(at(1)),
            ended_at: Some(at(9)),
            rating: Some(Rating {
                score: Some(1),
                comment: Some("rude".into()),
                ..Rating::default()
            }),
            attributes: BTreeMap::from([("remark".to_owned(), SECRET.to_owned())]),
        }];
        patch.thread = Some("t1".into());
        patch
    }

    fn ticket() -> Ticket {
        Ticket {
            external_id: "T-1".into(),
            origin: TicketOrigin::Vendor,
            subject: format!("refund for {SECRET}"),
            status: TicketStatus::Pending,
            requester: Some(person()),
            assignee: Some(agent()),
            groups: vec![],
            tags: vec!["billing".into()],
            source: Some(TicketSource {
                id: Some("src".into()),
                kind: Some("chat-window".into()),
                url: Some("https://shop.example/zebulon".into()),
            }),
            events: vec![
                TicketEvent {
                    author: Some(person()),
                    author_type: Some("client".into()),
                    date: Some(at(1)),
                    message: format!("I am {SECRET}"),
                    kind: Some("message".into()),
                    is_private: false,
                    source: None,
                },
                TicketEvent {
                    author: Some(agent()),
                    author_type: Some("agent".into()),
                    date: Some(at(2)),
                    message: format!("hello {SECRET}"),
                    kind: Some("message".into()),
                    is_private: true,
                    source: None,
                },
            ],
            attributes: BTreeMap::from([("number".to_owned(), "991".to_owned())]),
            created_at: at(0),
            updated_at: at(3),
        }
    }

    /// Whether `value`'s JSON still holds any of the person's data.
    fn holds_personal_data(value: &impl serde::Serialize) -> Vec<&'static str> {
        let text = serde_json::to_string(value).unwrap();
        [
            "Zebulon",
            "zebulon",
            "601 123",
            "Brno",
            "4111",
            "passport",
            "49.19",
            "A-991",
            "thanks",
            "rude",
            "visitor-77",
            "991",
            "shop.example",
            "mail.example",
        ]
        .into_iter()
        .filter(|needle| text.contains(needle))
        .collect()
    }

    #[test]
    fn a_patch_loses_the_persons_data_and_keeps_its_structure() {
        let before = patch();
        assert!(
            !holds_personal_data(&before).is_empty(),
            "the fixture holds data"
        );
        let mut erased = before.clone();
        erased.erase_personal();
        assert_eq!(holds_personal_data(&erased), Vec::<&str>::new());
        // What stays.
        assert_eq!(erased.external_id, before.external_id);
        assert_eq!(erased.status, before.status);
        assert_eq!(erased.started_at, before.started_at);
        assert_eq!(erased.end_reason, before.end_reason);
        assert_eq!(erased.agents_joined, before.agents_joined);
        assert_eq!(erased.assigned_agent, before.assigned_agent);
        assert_eq!(erased.tags_added, before.tags_added);
        assert_eq!(erased.thread, before.thread);
        assert_eq!(erased.messages.len(), 2);
        let visitor = erased.visitor.as_ref().unwrap();
        assert_eq!(visitor.id, ERASED);
        assert_eq!(erased.messages[0].author_id.as_deref(), Some(ERASED));
        assert_eq!(
            erased.messages[1].author_id.as_deref(),
            Some("agent@company.example"),
            "an agent's id stays"
        );
        assert_eq!(erased.messages[1].text, "", "an agent's text goes too");
        assert_eq!(erased.messages[0].attachments[0].size, Some(1234));
        assert_eq!(erased.messages[0].key, "m1");
        assert_eq!(erased.messages[0].sent_at, at(5));
        let rating = erased.rating.as_ref().unwrap();
        assert_eq!(
            (rating.score, rating.label.as_deref()),
            (Some(5), Some("good"))
        );
        assert_eq!(erased.segments[0].agent, before.segments[0].agent);
        assert_eq!(erased.segments[0].rating.as_ref().unwrap().score, Some(1));
        // Idempotent.
        let mut again = erased.clone();
        again.erase_personal();
        assert_eq!(again, erased);
    }

    #[test]
    fn a_conversation_loses_the_persons_data_and_keeps_its_structure() {
        let id = ConversationId::new(ConnectionId::new("lc").unwrap(), "chat-1");
        let mut conversation = Conversation::new(id, "livechat");
        conversation.apply(&patch(), at(5), "e1");
        assert!(!holds_personal_data(&conversation).is_empty());
        let before = conversation.clone();
        conversation.erase_personal();
        assert_eq!(holds_personal_data(&conversation), Vec::<&str>::new());
        assert_eq!(conversation.status, before.status);
        assert_eq!(conversation.agents, before.agents);
        assert_eq!(conversation.tags, before.tags);
        assert_eq!(conversation.event_count, before.event_count);
        assert_eq!(
            conversation.messages.keys().collect::<Vec<_>>(),
            before.messages.keys().collect::<Vec<_>>()
        );
        assert_eq!(conversation.visitor.as_ref().unwrap().value.id, ERASED);
        // A later event of the same person is new data and is merged as usual.
        let mut later = ConversationPatch::new("chat-1");
        later.visitor = Some(Participant {
            id: "visitor-77".into(),
            name: Some("New Name".into()),
            ..Participant::default()
        });
        conversation.apply(&later, at(50), "e2");
        assert_eq!(
            conversation.visitor.as_ref().unwrap().value.name.as_deref(),
            Some("New Name")
        );
    }

    #[test]
    fn a_ticket_loses_the_requesters_data_and_keeps_agents() {
        let before = ticket();
        assert!(!holds_personal_data(&before).is_empty());
        let mut erased = before.clone();
        erased.erase_personal();
        assert_eq!(holds_personal_data(&erased), Vec::<&str>::new());
        assert_eq!(erased.subject, "");
        assert_eq!(erased.requester.as_ref().unwrap().id, ERASED);
        assert_eq!(erased.assignee, before.assignee);
        assert_eq!(erased.events[1].author, before.events[1].author);
        assert_eq!(erased.events[1].message, "");
        assert_eq!(erased.events[0].author.as_ref().unwrap().id, ERASED);
        assert_eq!(erased.status, before.status);
        assert_eq!(erased.tags, before.tags);
        assert_eq!(
            erased.source.as_ref().unwrap().kind,
            before.source.as_ref().unwrap().kind
        );
        assert_eq!(
            (erased.created_at, erased.updated_at),
            (before.created_at, before.updated_at)
        );
    }

    #[test]
    fn an_event_loses_its_payloads_data_and_raw_body() {
        let event = |payload: EventPayload| Event {
            sequence: Sequence(7),
            id: "0190-id".into(),
            connection: ConnectionId::new("lc").unwrap(),
            vendor: "livechat".into(),
            received_at: at(9),
            request_id: Some("req-1".into()),
            incoming: IncomingEvent {
                dedup_key: "k".into(),
                kind: EventKind::Message,
                vendor_event: "incoming_event".into(),
                occurred_at: at(8),
                payload,
            },
            raw: Some(format!("{{\"name\": \"{SECRET}\"}}")),
        };
        for payload in [
            EventPayload::Conversation(patch()),
            EventPayload::Ticket(ticket()),
            EventPayload::Vendor {
                subject: Some("chat-1".into()),
                data: serde_json::json!({"email": "zebulon@example.com"}),
            },
        ] {
            let before = event(payload);
            assert!(!holds_personal_data(&before).is_empty());
            let mut erased = before.clone();
            erased.erase_personal();
            assert_eq!(
                holds_personal_data(&erased),
                Vec::<&str>::new(),
                "{erased:?}"
            );
            assert_eq!(erased.raw, None);
            assert_eq!(erased.sequence, before.sequence);
            assert_eq!(erased.id, before.id);
            assert_eq!(erased.incoming.dedup_key, before.incoming.dedup_key);
            assert_eq!(erased.incoming.kind, before.incoming.kind);
            assert_eq!(erased.incoming.occurred_at, before.incoming.occurred_at);
            assert_eq!(erased.request_id, before.request_id);
        }
        let agent_event = event(EventPayload::Agent {
            agent: crate::Agent {
                login: "agent@company.example".into(),
                ..crate::Agent::default()
            },
            deleted: false,
        });
        let mut erased = agent_event.clone();
        erased.erase_personal();
        assert_eq!(
            erased.incoming, agent_event.incoming,
            "agents are employees: kept"
        );
        assert_eq!(erased.raw, None);
    }
}
