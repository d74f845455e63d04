//! `ListContacts`, `GetContact`, `MergeContacts`, `SplitContact` and `EraseContact`: the
//! finder's contacts ([`crate::app::find`]). `ListConversations` with finder filters is in
//! `conversations`.

use switchboard_core::ConnectionId;
use switchboard_find::{ContactListQuery, ContactView};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::{Request, Response, Status};

use super::SwitchboardService;
use super::fields::{invalid, page_size, status, texts};

/// A required contact id field, trimmed.
fn contact_id(value: &str, field: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(format!(
            "{field} is required: a contact id such as \"c42\" (ListContacts shows them)"
        )));
    }
    Ok(value.to_owned())
}

/// An optional string filter: `None` when empty.
fn optional(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `CONNECTION/VISITOR_ID` as its two parts.
fn visitor(value: &str) -> Result<Option<(ConnectionId, String)>, Status> {
    let Some(value) = optional(value) else {
        return Ok(None);
    };
    let (connection, id) = value
        .split_once('/')
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "visitor_id {value:?} must be CONNECTION/VISITOR_ID, e.g. livechat/S1552126412"
            ))
        })?;
    let connection = ConnectionId::new(connection.to_owned())
        .map_err(|e| invalid(format!("visitor_id: {e}")))?;
    Ok(Some((connection, id.to_owned())))
}

/// A contact with its conversations (without messages) and tickets on the wire.
fn view(view: &ContactView, indexed_through: u64) -> v1::ContactView {
    v1::ContactView {
        contact: Some(convert::contact(&view.contact)),
        conversations: view
            .conversations
            .iter()
            .map(|c| convert::conversation(c, false))
            .collect(),
        tickets: view
            .tickets
            .iter()
            .map(|(connection, ticket)| convert::ticket(connection, ticket))
            .collect(),
        indexed_through,
    }
}

impl SwitchboardService {
    pub(super) async fn list_contacts_rpc(
        &self,
        request: Request<v1::ListContactsRequest>,
    ) -> Result<Response<v1::ListContactsResponse>, Status> {
        let r = request.into_inner();
        let query = ContactListQuery {
            email: optional(&r.email),
            phone: optional(&r.phone),
            visitor: visitor(&r.visitor_id)?,
            name: optional(&r.name),
            page_size: page_size(r.page_size)?,
            page_token: optional(&r.page_token),
        };
        let found = self
            .app
            .find
            .list_contacts(&query)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ListContactsResponse {
            contacts: found.value.contacts.iter().map(convert::contact).collect(),
            next_page_token: found.value.next_page_token.unwrap_or_default(),
            indexed_through: found.indexed_through.0,
        }))
    }

    pub(super) async fn get_contact_rpc(
        &self,
        request: Request<v1::GetContactRequest>,
    ) -> Result<Response<v1::ContactView>, Status> {
        let r = request.into_inner();
        let id = contact_id(&r.id, "id")?;
        let limit = page_size(r.limit).map_err(|_| {
            invalid(format!(
                "limit {} is too large; use 1 to {} (0 means {})",
                r.limit,
                super::MAX_PAGE_SIZE,
                super::DEFAULT_PAGE_SIZE
            ))
        })?;
        let found = self
            .app
            .find
            .get_contact(&id, limit)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(view(&found.value, found.indexed_through.0)))
    }

    pub(super) async fn merge_contacts_rpc(
        &self,
        request: Request<v1::MergeContactsRequest>,
    ) -> Result<Response<v1::ContactView>, Status> {
        let r = request.into_inner();
        let into = contact_id(&r.into, "into")?;
        let from = contact_id(&r.from, "from")?;
        if into == from {
            return Err(invalid(format!(
                "into and from are both {into:?}: a contact cannot be merged into itself"
            )));
        }
        let merged = self
            .app
            .find
            .merge_contacts(&into, &from)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(view(&merged, 0)))
    }

    pub(super) async fn split_contact_rpc(
        &self,
        request: Request<v1::SplitContactRequest>,
    ) -> Result<Response<v1::SplitContactResponse>, Status> {
        let r = request.into_inner();
        let contact = contact_id(&r.contact_id, "contact_id")?;
        let identities = texts(&r.identities, "identities")?;
        if identities.is_empty() {
            return Err(invalid(
                "identities is required: the identity keys that leave the contact, as \
                 Contact.identities spells them (email:..., phone:..., visitor:CONNECTION/ID)",
            ));
        }
        let (kept, split_off) = self
            .app
            .find
            .split_contact(&contact, &identities)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::SplitContactResponse {
            contact: Some(view(&kept, 0)),
            split_off: Some(view(&split_off, 0)),
        }))
    }

    pub(super) async fn erase_contact_rpc(
        &self,
        request: Request<v1::EraseContactRequest>,
    ) -> Result<Response<v1::EraseContactResponse>, Status> {
        let r = request.into_inner();
        let contact = contact_id(&r.contact_id, "contact_id")?;
        let report = self
            .app
            .find
            .erase_contact(&contact)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::EraseContactResponse {
            contact_id: contact,
            conversations: report.conversations,
            tickets: report.tickets,
            events: report.events,
            sequence: report.sequence.0,
        }))
    }
}
