//! What PostgreSQL and the pool say, as [`StoreError`]s.

use deadpool_postgres::PoolError;
use switchboard_store::StoreError;
use tokio_postgres::error::SqlState;

/// A failure of a statement or a transaction. Anything that says the database cannot be
/// reached, is shutting down, is out of resources or timed out is
/// [`StoreError::Unavailable`] (retry); a refused statement is [`StoreError::Commit`].
pub(crate) fn pg(context: &str, error: tokio_postgres::Error) -> StoreError {
    match error.code() {
        None => StoreError::Unavailable(format!("{context}: {}", chain(&error))),
        Some(code) if retryable(code) => {
            StoreError::Unavailable(format!("{context}: {}", chain(&error)))
        }
        Some(_) => StoreError::Commit(format!("{context}: {}", chain(&error))),
    }
}

/// A connection could not be taken from the pool.
pub(crate) fn pool(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => pg("connecting to the database", error),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no database connection within the pool's timeout ({kind:?}); the database is down, unreachable or every connection is busy"
        )),
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(format!("the database pool: {other}")),
    }
}

/// Whether a server error means "try again" rather than "this statement is wrong".
fn retryable(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources; 57: operator intervention
    // (shutdown, statement timeout, cancel); 40: serialization failure or deadlock;
    // 55P03: lock not available (lock_timeout).
    matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// The error and its causes, one line (tokio-postgres puts the server's message in the
/// source).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A stored record that does not decode.
pub(crate) fn corrupt(key: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        reason: reason.to_string(),
    }
}
