//! LiveChat answers mapped to the core model: tickets from the REST API v2 (deprecated, no
//! successor: `src/pages/management/configuration-api/v2.0/index.mdx`, "Tickets", in
//! livechat/livechat-public-docs at 628955e8; seed 000's TicketResponse/ListTicketsResponse),
//! agents from the Configuration API v3.x (`list_agents`: `configuration-api/index.mdx` and
//! `payloads/management/v3.6/configuration-api/responses/agents/listAgents.json`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::{
    Agent, Error, Group, Participant, Ticket, TicketEvent, TicketOrigin, TicketSource,
    TicketStatus, Timestamp,
};

/// An id LiveChat may send as a string or a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A REST time: `yyyy-MM-ddTHH:mm:ss.fffZ` (seed 000), any RFC 3339, `yyyy-MM-dd HH:mm:ss`,
/// or seconds since the epoch.
pub(crate) fn rest_time(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            Timestamp::parse_rfc3339(s)
                .or_else(|| Timestamp::parse_sql_utc(s))
                .or_else(|| s.parse::<i64>().ok().and_then(Timestamp::from_secs))
        }
        Value::Number(n) => n.as_i64().and_then(Timestamp::from_secs),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestPerson {
    id: Value,
    name: Option<String>,
    mail: Option<String>,
    ip: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestSource {
    id: Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
}

impl RestSource {
    fn to_core(&self) -> TicketSource {
        TicketSource {
            id: id_text(&self.id),
            kind: self.kind.clone().filter(|k| !k.is_empty()),
            url: self.url.clone().filter(|u| !u.is_empty()),
        }
    }
}

/// A group as LiveChat writes it: a bare id (`"groups": [0]` in every documented ticket
/// answer), or an object `{id, name}` (seed 000's schema; `{id, priority}` for agents).
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct RestGroup(Value);

impl RestGroup {
    fn to_core(&self) -> Option<Group> {
        let int = |v: &Value| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match &self.0 {
            Value::Object(map) => Some(Group {
                id: map.get("id").and_then(int)?,
                name: map
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            }),
            other => int(other).map(|id| Group { id, name: None }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestTicketEvent {
    author: Option<RestPerson>,
    date: Value,
    is_private: Option<bool>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<RestSource>,
}

/// TicketResponse, and the ListTicketsResponse elements (a subset of its fields).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestTicket {
    id: Value,
    status: Option<String>,
    subject: Option<String>,
    date: Value,
    modified: Value,
    requester: Option<RestPerson>,
    assignee: Option<RestPerson>,
    groups: Vec<RestGroup>,
    #[serde(rename = "currentGroup")]
    current_group: Option<RestGroup>,
    tags: Vec<String>,
    source: Option<RestSource>,
    events: Vec<RestTicketEvent>,
    /// `[{from, to?}]`: when the ticket was (re)opened; the documented answers have no `date`.
    opened: Vec<RestOpened>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestOpened {
    from: Value,
}

/// A ticket answer: the documented `GET /tickets/<id>`, `POST /tickets` and
/// `PUT /tickets/<id>/tags` samples all show the list form `{pages, total, tickets: [...]}`;
/// seed 000 shows a bare ticket. Both are read; in the list form the ticket with the id asked
/// for is taken (else the only one).
pub(crate) fn ticket_answer(value: Value, id: Option<&str>) -> Result<RestTicket, Error> {
    let tickets = match value {
        Value::Object(mut map) if map.contains_key("tickets") => match map.remove("tickets") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        Value::Object(map) => vec![Value::Object(map)],
        _ => Vec::new(),
    };
    let mut parsed = Vec::with_capacity(tickets.len());
    for ticket in tickets {
        parsed.push(serde_json::from_value::<RestTicket>(ticket).map_err(|e| {
            Error::unavailable(format!(
                "LiveChat answered a ticket this connector cannot read ({e}): retry later"
            ))
        })?);
    }
    let wanted = match id {
        Some(id) => parsed
            .iter()
            .position(|t| id_text(&t.id).as_deref() == Some(id)),
        None => None,
    };
    match wanted {
        Some(i) => Ok(parsed.swap_remove(i)),
        None if parsed.len() == 1 => Ok(parsed.remove(0)),
        None => Err(Error::unavailable(format!(
            "LiveChat answered {} tickets where one{} was expected: retry later",
            parsed.len(),
            id.map(|id| format!(" ({id})")).unwrap_or_default()
        ))),
    }
}

impl RestTicket {
    pub(crate) fn to_core(&self) -> Result<Ticket, Error> {
        let id = id_text(&self.id).ok_or_else(|| {
            Error::unavailable("LiveChat answered a ticket without an id: retry later")
        })?;
        let status = match self.status.as_deref().map(str::to_ascii_lowercase) {
            None => TicketStatus::Open,
            Some(text) => TicketStatus::parse(&text).unwrap_or_else(|| {
                tracing::warn!(ticket = %id, status = %text, "unknown LiveChat ticket status, kept as open");
                TicketStatus::Open
            }),
        };
        let events: Vec<TicketEvent> = self
            .events
            .iter()
            .map(|e| TicketEvent {
                author: e.author.as_ref().map(|a| Participant {
                    id: id_text(&a.id).unwrap_or_default(),
                    name: a.name.clone(),
                    ..Participant::default()
                }),
                author_type: e.author.as_ref().and_then(|a| a.kind.clone()),
                date: rest_time(&e.date),
                message: e.message.clone().unwrap_or_default(),
                kind: e.kind.clone(),
                is_private: e.is_private.unwrap_or(false),
                source: e.source.as_ref().map(RestSource::to_core),
            })
            .collect();
        let earliest = events.iter().filter_map(|e| e.date).min();
        let latest = events.iter().filter_map(|e| e.date).max();
        let opened = self.opened.iter().filter_map(|o| rest_time(&o.from)).min();
        let created_at = rest_time(&self.date)
            .or(opened)
            .or(earliest)
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "LiveChat answered ticket {id} without a readable `date`: retry later"
                ))
            })?;
        let updated_at = rest_time(&self.modified)
            .or(latest)
            .unwrap_or(created_at)
            .max(created_at);
        let requester = self.requester.as_ref().map(|r| {
            let mut attributes = BTreeMap::new();
            if let Some(ip) = r.ip.clone().filter(|ip| !ip.is_empty()) {
                attributes.insert("ip".to_owned(), ip);
            }
            Participant {
                id: r
                    .mail
                    .clone()
                    .or_else(|| r.name.clone())
                    .unwrap_or_default(),
                name: r.name.clone(),
                email: r.mail.clone(),
                phone: None,
                attributes,
            }
        });
        let assignee = self
            .assignee
            .as_ref()
            .and_then(|a| id_text(&a.id).map(|id| (id, a.name.clone())))
            .map(|(id, name)| Participant {
                email: Some(id.clone()).filter(|id| id.contains('@')),
                id,
                name,
                ..Participant::default()
            });
        let mut groups: Vec<Group> = self.groups.iter().filter_map(RestGroup::to_core).collect();
        if let Some(current) = self.current_group.as_ref().and_then(RestGroup::to_core)
            && !groups.iter().any(|g| g.id == current.id)
        {
            groups.push(current);
        }
        Ok(Ticket {
            external_id: id,
            origin: TicketOrigin::Vendor,
            subject: self.subject.clone().unwrap_or_default(),
            status,
            requester,
            assignee,
            groups,
            tags: self.tags.clone(),
            source: self.source.as_ref().map(RestSource::to_core),
            events,
            // The ticket id (`5FUED`) is the number people see; no other value lacks a field.
            attributes: BTreeMap::new(),
            created_at,
            updated_at,
        })
    }
}

/// `GET /tickets`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestTicketList {
    pub(crate) tickets: Vec<RestTicket>,
    pub(crate) pages: u64,
    pub(crate) total: u64,
}

/// An agent of the Configuration API v3.x (`list_agents`, `get_agent`): keyed by `id` (the
/// agent's e-mail), with a `role`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConfigAgent {
    id: String,
    name: Option<String>,
    role: Option<String>,
    avatar_path: Option<String>,
    avatar: Option<String>,
    job_title: Option<String>,
    login_status: Option<String>,
    max_chats_count: Value,
    groups: Vec<RestGroup>,
}

impl ConfigAgent {
    pub(crate) fn to_core(&self) -> Result<Agent, Error> {
        if self.id.is_empty() {
            return Err(Error::unavailable(
                "LiveChat answered an agent without an id: retry later",
            ));
        }
        let max_chats_count = match &self.max_chats_count {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        Ok(Agent {
            login: self.id.clone(),
            name: self.name.clone(),
            permission: self.role.clone(),
            job_title: self.job_title.clone(),
            login_status: self.login_status.clone(),
            // The routing status is not part of the agent in the Configuration API.
            status: None,
            avatar: self.avatar_path.clone().or_else(|| self.avatar.clone()),
            max_chats_count,
            groups: self.groups.iter().filter_map(RestGroup::to_core).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_ticket_response_maps_to_a_vendor_held_ticket() {
        let body = json!({
            "id": "TK1", "status": "Solved", "subject": "Refund",
            "date": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T01:00:00.000Z",
            "requester": {"mail": "ann@example.org", "name": "Ann", "ip": "198.51.100.7"},
            "assignee": {"id": "bob@example.com", "name": "Bob"},
            "currentGroup": {"id": 1, "name": "Sales"}, "groups": [{"id": 0, "name": "General"}],
            "tags": ["vip"], "source": {"id": "s1", "type": "mail"},
            "events": [{"author": {"id": "ann@example.org", "name": "Ann", "type": "client"},
                        "date": "2024-01-01T00:00:00.000Z", "is_private": false,
                        "message": "hi", "type": "message", "source": {"type": "mail"}}]
        });
        let ticket: RestTicket = serde_json::from_value(body).unwrap();
        let ticket = ticket.to_core().unwrap();
        assert_eq!(ticket.origin, TicketOrigin::Vendor);
        assert_eq!(ticket.status, TicketStatus::Solved);
        assert_eq!(ticket.groups.len(), 2);
        assert_eq!(ticket.requester.unwrap().attributes["ip"], "198.51.100.7");
        assert_eq!(ticket.assignee.unwrap().id, "bob@example.com");
        assert_eq!(ticket.events[0].author_type.as_deref(), Some("client"));
        assert!(ticket.updated_at > ticket.created_at);
        let no_date: RestTicket = serde_json::from_value(json!({"id": 5})).unwrap();
        assert_eq!(
            no_date.to_core().unwrap_err().code,
            switchboard_core::ErrorCode::Unavailable
        );
    }

    /// The documented answer (Configuration API v2.0, "Get single ticket", livechat-public-docs
    /// 628955e8): the list form, `"groups": [0]`, no `date`, times as seconds.
    #[test]
    fn the_documented_ticket_answer_is_read() {
        let body = json!({
            "pages": 1, "total": 15,
            "tickets": [{
                "assignee": {"id": "jane.doe@mycompany.com", "name": "Jane Doe"},
                "events": [
                    {"author": {"id": "mary.brown@email.com", "name": "Mary Brown", "type": "client"},
                     "date": 1384554260, "is_private": false,
                     "message": "Hello,\n\nIt seems that my new shoes are broken. What can we do about this?",
                     "type": "message", "source": {"type": "mail"}},
                    {"to": {"id": "jane.doe@mycompany.com", "name": "Jane Doe"},
                     "author": {"id": "john.doe@mycompany.com", "name": "John Doe"},
                     "date": 1384554270, "type": "assignee_changed"}
                ],
                "id": "5FUED",
                "requester": {"mail": "mary.brown@email.com", "name": "Mary Brown"},
                "groups": [0],
                "status": "open",
                "subject": "My new shoes are broken",
                "modified": 1384790802,
                "source": {"type": "mail"},
                "opened": [{"from": 1384554260}],
                "firstResponse": {},
                "tags": ["sales", "support", "feedback"]
            }]
        });
        let ticket = ticket_answer(body.clone(), Some("5FUED"))
            .unwrap()
            .to_core()
            .unwrap();
        assert_eq!(ticket.external_id, "5FUED");
        assert_eq!(ticket.groups, vec![Group { id: 0, name: None }]);
        assert_eq!(ticket.created_at.as_millis(), 1_384_554_260_000);
        assert_eq!(ticket.updated_at.as_millis(), 1_384_790_802_000);
        assert_eq!(ticket.tags, ["sales", "support", "feedback"]);
        // A bare ticket reads the same.
        let bare = body["tickets"][0].clone();
        assert_eq!(
            ticket_answer(bare, None).unwrap().to_core().unwrap(),
            ticket
        );
        // Objects as groups still read.
        let objects: RestTicket = serde_json::from_value(
            json!({"id": "X", "date": 1, "groups": [{"id": 2, "name": "Sales"}, "3"]}),
        )
        .unwrap();
        assert_eq!(
            objects.to_core().unwrap().groups,
            vec![
                Group {
                    id: 2,
                    name: Some("Sales".into())
                },
                Group { id: 3, name: None }
            ]
        );
    }

    /// `payloads/management/v3.6/configuration-api/responses/agents/listAgents.json`.
    #[test]
    fn the_documented_agent_list_is_read() {
        let body = json!([
            {"avatar_path": "cdn.livechatinc.com/avatars/1.png", "id": "smith@example.com",
             "account_id": "d24fa41e-bc16-41b8-a15b-9ca45ff7e0cf", "job_title": "Support Hero",
             "login_status": "not accepting chats", "name": "Smith", "role": "owner",
             "max_chats_count": 5, "summaries": ["daily_summary", "weekly_summary"]},
            {"avatar_path": "cdn.livechatinc.com/avatars/2.png", "id": "jones@example.com",
             "account_id": "2fca3315-f6b2-422f-8550-c84b649cef1a", "job_title": "Support Hero (Newbie)",
             "login_status": "accepting chats", "last_logout": "2022-08-23T14:31:21.000000Z",
             "name": "Jones", "role": "viceowner", "max_chats_count": 2, "summaries": ["weekly_summary"]}
        ]);
        let agents: Vec<ConfigAgent> = serde_json::from_value(body).unwrap();
        let agents: Vec<Agent> = agents.iter().map(|a| a.to_core().unwrap()).collect();
        assert_eq!(agents[0].login, "smith@example.com");
        assert_eq!(agents[0].permission.as_deref(), Some("owner"));
        assert_eq!(agents[1].max_chats_count, Some(2));
        assert_eq!(
            agents[1].avatar.as_deref(),
            Some("cdn.livechatinc.com/avatars/2.png")
        );
    }
}
