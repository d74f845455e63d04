//! The gRPC door's translations: request fields into plain values (refusing bad ones with
//! INVALID_ARGUMENT naming the field), and core errors into statuses.

use switchboard_core::{ConnectionId, Error, ErrorCode, Timestamp};
use switchboard_proto::convert;
use switchboard_proto::v1;
use tonic::Status;

/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size when the client asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A core error as a gRPC status.
pub fn status(error: &Error) -> Status {
    Status::new(grpc_code(error.code), error.message.clone())
}

/// Maps an [`ErrorCode`] to a gRPC status code.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    tonic::Code::from(code.grpc_code())
}

/// A core error as a gRPC status, where ALREADY_EXISTS means "the same work is running now"
/// (a sync of the connection): ABORTED, retry later.
pub(super) fn busy_status(error: &Error) -> Status {
    match error.code {
        ErrorCode::AlreadyExists => Status::aborted(error.message.clone()),
        _ => status(error),
    }
}

pub(super) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

pub(super) fn connection_ids(ids: &[String], field: &str) -> Result<Vec<ConnectionId>, Status> {
    ids.iter()
        .map(|id| ConnectionId::new(id.clone()).map_err(|e| invalid(format!("{field}: {e}"))))
        .collect()
}

/// A repeated string field, each value trimmed; an empty value is refused.
pub(super) fn texts(values: &[String], field: &str) -> Result<Vec<String>, Status> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            if v.is_empty() {
                Err(invalid(format!(
                    "{field}: an empty value matches nothing; drop it"
                )))
            } else {
                Ok(v.to_owned())
            }
        })
        .collect()
}

pub(super) fn page_size(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(invalid(format!(
            "page_size {n} is too large; use 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
        ))),
        n => Ok(n as usize),
    }
}

/// A request's timestamp, refused when it is outside what the core's time can hold.
pub(super) fn timestamp(t: &prost_types::Timestamp, field: &str) -> Result<Timestamp, Status> {
    convert::from_timestamp(t).ok_or_else(|| {
        invalid(format!(
            "{field} is out of range; use a time between 1970 and 9999"
        ))
    })
}

pub(super) fn time_range(
    range: Option<&v1::TimeRange>,
    field: &str,
) -> Result<(Option<Timestamp>, Option<Timestamp>), Status> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let bound = |t: Option<&prost_types::Timestamp>, which: &str| {
        t.map(|t| timestamp(t, &format!("{field}.{which}")))
            .transpose()
    };
    let start = bound(range.start.as_ref(), "start")?;
    let end = bound(range.end.as_ref(), "end")?;
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(invalid(format!("{field}.start must be before {field}.end")));
    }
    Ok((start, end))
}

/// Decodes a repeated enum field, refusing numbers this server does not know: prost's accessors
/// skip them silently, which would turn a filter into "everything".
pub(super) fn known_enums<E: TryFrom<i32>, T>(
    raw: &[i32],
    field: &str,
    map: impl Fn(E) -> Option<T>,
    unspecified: &str,
) -> Result<Vec<T>, Status> {
    raw.iter()
        .map(|&n| {
            let value = E::try_from(n).map_err(|_| {
                invalid(format!(
                    "{field}: {n} is not a value this server knows; upgrade the server or drop it"
                ))
            })?;
            map(value).ok_or_else(|| invalid(format!("{field}: {unspecified}")))
        })
        .collect()
}
