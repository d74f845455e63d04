//! Checks on what a caller asks of the vendor, before any call: a refusal names every problem
//! and says what to send instead.

use switchboard_core::{Error, NewAgent, NewTicket, TicketChange};

/// LiveChat's default job title.
pub(crate) const DEFAULT_JOB_TITLE: &str = "Support Agent";
/// Agent roles `create_agent` takes (Configuration API v3.6, `create_agent`: `viceowner`,
/// `administrator`, `normal`); Switchboard calls the role `permission`.
pub(crate) const ROLES: [&str; 3] = ["viceowner", "administrator", "normal"];
/// The most concurrent chats `create_agent` allows (`max_chats_count`, "Maximum: 20").
pub(crate) const MAX_CHATS: i64 = 20;
/// Agent login statuses LiveChat knows.
pub(crate) const LOGIN_STATUSES: [&str; 2] = ["accepting chats", "not accepting chats"];
/// Ticket source types `POST /tickets` takes (Configuration API v2.0, "Create a ticket":
/// `source[type]` is `chat-window`, `mail` or `lc2`).
pub(crate) const SOURCE_TYPES: [&str; 3] = ["chat-window", "mail", "lc2"];

/// A plausible e-mail address: one `@`, something on each side, a dot inside the domain, no
/// whitespace.
pub(crate) fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn refuse(what: &str, problems: Vec<String>) -> Result<(), Error> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(format!("{what}: {}", problems.join("; "))))
    }
}

/// What LiveChat's documented API cannot do, refused before any call with the reason.
fn unsupported(what: &str, problems: Vec<String>) -> Result<(), Error> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::failed_precondition(format!(
            "{what}: {}",
            problems.join("; ")
        )))
    }
}

/// Checks a new agent the way LiveChat would, so a bad one costs no API call.
pub(crate) fn new_agent(agent: &NewAgent) -> Result<(), Error> {
    let mut problems = Vec::new();
    if !is_email(agent.login.trim()) {
        problems.push(format!(
            "login {:?} is not an e-mail address: use the e-mail the agent signs in with",
            agent.login
        ));
    }
    if agent.name.trim().is_empty() {
        problems.push("name is empty: give the agent's display name".to_owned());
    }
    if let Some(password) = &agent.password
        && password.chars().count() < 5
    {
        problems.push("password is shorter than 5 characters: use at least 5".to_owned());
    }
    if let Some(permission) = &agent.permission
        && permission != "owner"
        && !ROLES.contains(&permission.as_str())
    {
        problems.push(format!(
            "permission {permission:?} is unknown: use viceowner, administrator or normal"
        ));
    }
    if let Some(status) = &agent.login_status
        && !LOGIN_STATUSES.contains(&status.as_str())
    {
        problems.push(format!(
            "login_status {status:?} is unknown: use \"accepting chats\" or \"not accepting chats\""
        ));
    }
    if let Some(count) = agent.max_chats_count {
        if count < 0 {
            problems.push(format!(
                "max_chats_count {count} is negative: use 0 or more"
            ));
        } else if count > MAX_CHATS {
            problems.push(format!(
                "max_chats_count {count} is above LiveChat's maximum of {MAX_CHATS}: use 0 to {MAX_CHATS}"
            ));
        }
    }
    if agent
        .job_title
        .as_ref()
        .is_some_and(|t| t.trim().is_empty())
    {
        problems.push(format!(
            "job_title is empty: leave it unset for LiveChat's default {DEFAULT_JOB_TITLE:?}"
        ));
    }
    refuse("cannot create the LiveChat agent", problems)?;
    // Well-formed, but beyond what `create_agent` can do.
    let mut unsupported_parts = Vec::new();
    if agent.password.is_some() {
        unsupported_parts.push(
            "LiveChat's create_agent (Configuration API v3.6) takes no password: the agent sets \
             it when accepting the invitation; leave password unset"
                .to_owned(),
        );
    }
    if agent.permission.as_deref() == Some("owner") {
        unsupported_parts.push(
            "create_agent cannot make an owner (roles: viceowner, administrator, normal): \
             create the agent, then transfer the ownership in LiveChat"
                .to_owned(),
        );
    }
    unsupported("cannot create the LiveChat agent", unsupported_parts)
}

/// Checks an agent login before deleting.
pub(crate) fn agent_login(login: &str) -> Result<(), Error> {
    if is_email(login.trim()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "cannot delete the LiveChat agent: login {login:?} is not an e-mail address: \
             give the agent's login e-mail"
        )))
    }
}

/// The requester e-mail of a new ticket: `requester.email`, else `requester.id` when it is one.
pub(crate) fn requester_mail(requester: &switchboard_core::Participant) -> Option<&str> {
    requester
        .email
        .as_deref()
        .or(Some(requester.id.as_str()).filter(|id| is_email(id)))
        .map(str::trim)
}

fn source_problems(kind: Option<&String>, problems: &mut Vec<String>) {
    if let Some(kind) = kind
        && !SOURCE_TYPES.contains(&kind.as_str())
    {
        problems.push(format!(
                "source kind {kind:?} is not one LiveChat's create ticket takes: use chat-window, mail or lc2"
            ));
    }
}

/// Checks a new ticket: a requester e-mail and a message.
pub(crate) fn new_ticket(ticket: &NewTicket) -> Result<(), Error> {
    let mut problems = Vec::new();
    match requester_mail(&ticket.requester) {
        Some(mail) if is_email(mail) => {}
        Some(mail) => problems.push(format!(
            "requester e-mail {mail:?} is not an e-mail address: set requester.email"
        )),
        None => problems.push("requester e-mail is missing: set requester.email".to_owned()),
    }
    if ticket.message.trim().is_empty() {
        problems.push("message is empty: give the ticket's first message".to_owned());
    }
    source_problems(ticket.source_kind.as_ref(), &mut problems);
    refuse("cannot create the LiveChat ticket", problems)
}

/// Checks a ticket change: something to change, and well-formed values.
pub(crate) fn ticket_change(change: &TicketChange) -> Result<(), Error> {
    let mut problems = Vec::new();
    if change == &TicketChange::default() {
        problems.push(
            "nothing to change: set at least one of message, subject, status, assignee, requester or tags"
                .to_owned(),
        );
    }
    if change.message.as_ref().is_some_and(|m| m.trim().is_empty()) {
        problems.push("message is empty: leave it unset to add no message".to_owned());
    }
    if let Some(requester) = &change.requester {
        match requester_mail(requester) {
            Some(mail) if is_email(mail) => {}
            _ => problems.push(
                "requester has no valid e-mail: set requester.email, or leave requester unset"
                    .to_owned(),
            ),
        }
    }
    if change
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t.trim().is_empty()))
    {
        problems.push("a tag is empty: remove it".to_owned());
    }
    refuse("cannot update the LiveChat ticket", problems)?;
    // LiveChat's ticket API (REST v2, deprecated, with no successor) documents one update:
    // `PUT /tickets/<id>/tags`. Everything else is refused before any call, so a change is
    // applied whole or not at all.
    let mut other = Vec::new();
    for (set, field) in [
        (change.message.is_some(), "message"),
        (change.subject.is_some(), "subject"),
        (change.status.is_some(), "status"),
        (change.assignee_id.is_some(), "assignee"),
        (change.requester.is_some(), "requester"),
    ] {
        if set {
            other.push(field);
        }
    }
    if other.is_empty() {
        return Ok(());
    }
    unsupported(
        "cannot update the LiveChat ticket",
        vec![format!(
            "LiveChat's ticket API (REST v2, deprecated, without a successor) can only replace \
             a ticket's tags (PUT /tickets/<id>/tags); it cannot change {}: send only tags, \
             or make that change in LiveChat (or HelpDesk)",
            other.join(", ")
        )],
    )
}

#[cfg(test)]
mod tests {
    use switchboard_core::Participant;

    use super::*;

    #[test]
    fn e_mail_addresses() {
        for good in ["a@b.co", "first.last+tag@example.com"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "", "a", "@b.co", "a@", "a@b", "a@.co", "a@b.", "a b@c.de", "a@b@c.de",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_agent_gets_every_problem_named() {
        let err = new_agent(&NewAgent {
            login: "bob".into(),
            name: " ".into(),
            password: Some("1234".into()),
            permission: Some("root".into()),
            login_status: Some("online".into()),
            max_chats_count: Some(-1),
            job_title: None,
        })
        .unwrap_err();
        assert_eq!(err.code, switchboard_core::ErrorCode::InvalidArgument);
        for part in [
            "login \"bob\"",
            "name is empty",
            "at least 5",
            "\"root\"",
            "\"online\"",
            "-1",
        ] {
            assert!(err.message.contains(part), "{part} missing from {err}");
        }
        assert!(
            new_agent(&NewAgent {
                login: "bob@example.com".into(),
                name: "Bob".into(),
                permission: Some("viceowner".into()),
                max_chats_count: Some(20),
                ..NewAgent::default()
            })
            .is_ok()
        );
        let too_many = NewAgent {
            login: "bob@example.com".into(),
            name: "Bob".into(),
            max_chats_count: Some(21),
            ..NewAgent::default()
        };
        assert!(
            new_agent(&too_many)
                .unwrap_err()
                .message
                .contains("maximum of 20")
        );
        // Well-formed but not possible through create_agent: failed precondition, with why.
        for (password, permission, reason) in [
            (Some("hunter22"), None, "takes no password"),
            (None, Some("owner"), "cannot make an owner"),
        ] {
            let err = new_agent(&NewAgent {
                login: "bob@example.com".into(),
                name: "Bob".into(),
                password: password.map(str::to_owned),
                permission: permission.map(str::to_owned),
                ..NewAgent::default()
            })
            .unwrap_err();
            assert_eq!(err.code, switchboard_core::ErrorCode::FailedPrecondition);
            assert!(err.message.contains(reason), "{err}");
        }
    }

    #[test]
    fn a_ticket_change_can_only_set_tags() {
        let tags = TicketChange {
            tags: Some(vec!["vip".into()]),
            ..TicketChange::default()
        };
        assert!(ticket_change(&tags).is_ok());
        let err = ticket_change(&TicketChange {
            status: Some(switchboard_core::TicketStatus::Solved),
            subject: Some("x".into()),
            ..tags.clone()
        })
        .unwrap_err();
        assert_eq!(err.code, switchboard_core::ErrorCode::FailedPrecondition);
        assert!(
            err.message.contains("subject, status") && err.message.contains("/tags"),
            "{err}"
        );
        // A malformed change is still an invalid argument first.
        let err = ticket_change(&TicketChange {
            tags: Some(vec![" ".into()]),
            ..TicketChange::default()
        })
        .unwrap_err();
        assert_eq!(err.code, switchboard_core::ErrorCode::InvalidArgument);
    }

    #[test]
    fn tickets_need_a_requester_mail_and_a_message() {
        let err = new_ticket(&NewTicket::default()).unwrap_err();
        assert!(err.message.contains("requester e-mail is missing"));
        assert!(err.message.contains("message is empty"));
        let ok = NewTicket {
            message: "help".into(),
            requester: Participant {
                id: "ann@example.com".into(),
                ..Participant::default()
            },
            ..NewTicket::default()
        };
        assert!(new_ticket(&ok).is_ok());
        assert!(ticket_change(&TicketChange::default()).is_err());
    }
}
