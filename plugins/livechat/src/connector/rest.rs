//! LiveChat REST API v2 answers (seed 000: TicketResponse, ListTicketsResponse,
//! ListAgents_Response, CreateAgent_Response) mapped to the core model.

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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestGroup {
    id: Value,
    name: Option<String>,
}

impl RestGroup {
    fn to_core(&self) -> Option<Group> {
        let id = match &self.id {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }?;
        Some(Group {
            id,
            name: self.name.clone(),
        })
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
}

impl RestTicket {
    /// The requester's e-mail and name, for an update that must resend them.
    pub(crate) fn requester_mail_and_name(&self) -> (Option<String>, Option<String>) {
        match &self.requester {
            Some(r) => (r.mail.clone(), r.name.clone()),
            None => (None, None),
        }
    }

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
        let created_at = rest_time(&self.date).or(earliest).ok_or_else(|| {
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
        if let Some(current) = self.current_group.as_ref().and_then(RestGroup::to_core) {
            if !groups.iter().any(|g| g.id == current.id) {
                groups.push(current);
            }
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RestAgent {
    login: String,
    name: Option<String>,
    permission: Option<String>,
    avatar: Option<String>,
    job_title: Option<String>,
    login_status: Option<String>,
    status: Option<String>,
    max_chats_count: Value,
    groups: Vec<RestGroup>,
}

impl RestAgent {
    pub(crate) fn to_core(&self) -> Result<Agent, Error> {
        if self.login.is_empty() {
            return Err(Error::unavailable(
                "LiveChat answered an agent without a login: retry later",
            ));
        }
        let max_chats_count = match &self.max_chats_count {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        Ok(Agent {
            login: self.login.clone(),
            name: self.name.clone(),
            permission: self.permission.clone(),
            job_title: self.job_title.clone(),
            login_status: self.login_status.clone(),
            status: self.status.clone(),
            avatar: self.avatar.clone(),
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
}
