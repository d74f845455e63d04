//! What the writer is asked to do, and how each command is answered.

use super::*;

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Append events (and maybe save a sync cursor).
    Append {
        request: AppendRequest,
        /// Each event's log record, encoded by the caller (off the writer thread).
        prepared: Option<Box<PreparedRequest>>,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    /// Record the last sync error of a connection.
    SyncError {
        connection: ConnectionId,
        message: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Read a ticket, apply a change, append the result: one serialized step. `request` is
    /// the append it became, once prepared.
    UpdateTicket {
        update: Box<TicketUpdate>,
        request: Option<Box<AppendRequest>>,
        reply: oneshot::Sender<Result<Ticket, StoreError>>,
    },
    /// Erase a contact's personal data (a normalized plan) and append `record`, its
    /// `contact_erased` event: one serialized step.
    Erase {
        plan: Box<crate::ErasurePlan>,
        record: Box<AppendRequest>,
        reply: oneshot::Sender<Result<crate::ErasureReport, StoreError>>,
    },
    /// Wakes the writer to write the conversations it holds if a reader wants them or they
    /// are old enough (see [`crate::projection`]); nobody waits for an answer.
    Project,
}

/// A request's log entry, encoded (and compressed) before it reaches the writer, so that this
/// work is spread over every core: the entry as if every event is new, and the events' ids.
pub(crate) struct PreparedRequest {
    pub(crate) ids: Vec<String>,
    pub(crate) record: Vec<u8>,
}

impl PreparedRequest {
    /// The entry of all of `request`'s events (`None` for a request without events).
    pub(crate) fn for_request(request: &AppendRequest) -> Result<Option<Box<Self>>, StoreError> {
        if request.events.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = request
            .events
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let events: Vec<(&str, &IncomingEvent)> = ids
            .iter()
            .map(String::as_str)
            .zip(&request.events)
            .collect();
        let record = encode_request(request, &events)?;
        Ok(Some(Box::new(PreparedRequest { ids, record })))
    }
}

/// What a command of a group did, answered once the group is durable.
pub(crate) enum Outcome {
    Append(AppendReceipt),
    Done,
    Ticket(Box<Result<Ticket, StoreError>>),
    Erased(Box<Result<crate::ErasureReport, StoreError>>),
}

impl Command {
    pub(super) fn fail(self, error: impl Fn() -> StoreError) {
        // A caller that stopped waiting is no longer interested in the answer.
        match self {
            Command::Append { reply, .. } => drop(reply.send(Err(error()))),
            Command::SyncError { reply, .. } => drop(reply.send(Err(error()))),
            Command::UpdateTicket { reply, .. } => drop(reply.send(Err(error()))),
            Command::Erase { reply, .. } => drop(reply.send(Err(error()))),
            Command::Project => {}
        }
    }

    /// The append this command is (or became), if any.
    pub(super) fn request(&self) -> Option<&AppendRequest> {
        match self {
            Command::Append { request, .. } => Some(request),
            Command::UpdateTicket { request, .. } => request.as_deref(),
            Command::Erase { record, .. } => Some(record),
            Command::SyncError { .. } | Command::Project => None,
        }
    }

    pub(super) fn answer(self, outcome: Outcome) {
        // A caller that stopped waiting is no longer interested; its events are stored.
        match (self, outcome) {
            (Command::Append { reply, .. }, Outcome::Append(receipt)) => {
                drop(reply.send(Ok(receipt)))
            }
            (Command::SyncError { reply, .. }, _) => drop(reply.send(Ok(()))),
            (Command::Project, _) => {}
            (Command::UpdateTicket { reply, .. }, Outcome::Ticket(result)) => {
                drop(reply.send(*result))
            }
            (Command::Erase { reply, .. }, Outcome::Erased(result)) => drop(reply.send(*result)),
            (command, _) => command.fail(|| StoreError::Commit("mismatched outcome".into())),
        }
    }
}
