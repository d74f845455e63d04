//! [`StoreError`]: everything the store can refuse or fail at, with a message a person can act on.

use std::path::PathBuf;

use switchboard_core::ErrorCode;

/// An error from [`crate::Store`]. [`StoreError::code`] says which [`ErrorCode`] it maps to.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// [`crate::Store::open`] could not open (or create) the sled files.
    #[error(
        "cannot open the store at {}: {reason}; check the --data-dir permissions, that it is a directory, and that no other switchboard process uses it",
        path.display()
    )]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// What sled or the file system said.
        reason: String,
    },
    /// The store's files are damaged (truncated, overwritten, or not sled's).
    #[error(
        "the store at {} is corrupt: its file {file} cannot be read ({reason}); the likely cause is a crash or a full disk while it was written, or a file changed by hand; restore the directory from a backup, or move it away to start with an empty store",
        path.display()
    )]
    CorruptFiles {
        /// The store's directory.
        path: PathBuf,
        /// The damaged file, in the directory.
        file: String,
        /// What sled said.
        reason: String,
    },
    /// The directory holds a store of another schema version.
    #[error(
        "the store at {} has schema version {found} but this build understands version {expected}; run a switchboard release that matches the data, or point --data-dir at another directory",
        path.display()
    )]
    SchemaMismatch {
        /// The store's directory.
        path: PathBuf,
        /// The version found (as stored).
        found: String,
        /// The version this build writes.
        expected: u64,
    },
    /// The directory holds sled data that is not a Switchboard store.
    #[error(
        "the directory {} holds data but no switchboard schema version; point --data-dir at an empty directory or an existing switchboard store",
        path.display()
    )]
    NotAStore {
        /// The store's directory.
        path: PathBuf,
    },
    /// The directory is not empty and holds no store: creating one there would mix the
    /// store's files with someone else's.
    #[error(
        "the directory {} is not empty ({found}) and holds no switchboard store; point --data-dir (or data_dir) at a new or empty directory, or at an existing switchboard store",
        path.display()
    )]
    ForeignDirectory {
        /// The directory.
        path: PathBuf,
        /// Some of what it holds, for the message.
        found: String,
    },
    /// Another process holds the store's lock.
    #[error(
        "the store at {} is in use by another process (probably another `switchboard serve`); stop that process, or point --data-dir at another directory",
        path.display()
    )]
    InUse {
        /// The store's directory.
        path: PathBuf,
    },
    /// [`crate::Store::close`] was called: no more appends.
    #[error("the store is closed and accepts no more writes; retry once the server is back")]
    Closed,
    /// The writer thread is gone (it stopped or panicked) before answering.
    #[error(
        "the store writer stopped before answering; retry once the server is back and check the server log"
    )]
    WriterGone,
    /// An earlier flush or fsync failed: the store refuses every write from then on, because it
    /// can no longer tell what reached the disk.
    #[error(
        "the store refuses writes after a failed flush to disk ({0}); check the disk, then restart the server"
    )]
    Failed(String),
    /// A group commit failed; nothing of it was applied.
    #[error("the store could not write the batch ({0}); retry, and check the disk if it persists")]
    Commit(String),
    /// The page token does not decode.
    #[error("page_token is not one this server issued; start again without it")]
    BadPageToken,
    /// The page token was issued for a query with other filters.
    #[error(
        "page_token was issued for other filters; send the same filters as for the first page, or start again without a page_token"
    )]
    PageTokenMismatch,
    /// The request is malformed (an empty dedup key, an empty vendor id...).
    #[error("{0}")]
    InvalidArgument(String),
    /// sled failed to read or write.
    #[error("the store failed to read or write ({0}); check the disk and the server log")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("{context} failed ({source}); check the --data-dir permissions and free space")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A store-side command found nothing to act on (a ticket update of a ticket the store
    /// does not hold).
    #[error("{0}")]
    NotFound(String),
    /// A store-side command was refused by the model's rules (an update that changes
    /// nothing, a malformed e-mail); nothing changed.
    #[error("{0}")]
    Refused(switchboard_core::Error),
    /// The backend cannot be reached (a database server down or unreachable); nothing
    /// changed. Retry once it is back.
    #[error("the store's database cannot be reached ({0}); retry, and check the database")]
    Unavailable(String),
    /// A stored record does not decode.
    #[error(
        "the stored record {key} does not decode ({reason}); the store may be corrupt, restore it from a backup"
    )]
    Corrupt {
        /// The record's key, printable.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

impl StoreError {
    /// The error code both front doors report.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::BadPageToken
            | StoreError::PageTokenMismatch
            | StoreError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Refused(error) => error.code,
            StoreError::Closed
            | StoreError::WriterGone
            | StoreError::Failed(_)
            | StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::SchemaMismatch { .. } | StoreError::NotAStore { .. } => {
                ErrorCode::FailedPrecondition
            }
            StoreError::ForeignDirectory { .. } | StoreError::InUse { .. } => {
                ErrorCode::FailedPrecondition
            }
            StoreError::Open { .. }
            | StoreError::CorruptFiles { .. }
            | StoreError::Commit(_)
            | StoreError::Sled(_)
            | StoreError::Io { .. }
            | StoreError::Corrupt { .. } => ErrorCode::Internal,
        }
    }

    pub(crate) fn corrupt(key: &[u8], reason: impl ToString) -> Self {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// [`StoreError::io`] with `context`, for `map_err`.
    pub(crate) fn io_in(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
        move |e| StoreError::io(context, e)
    }
}

impl From<StoreError> for switchboard_core::Error {
    fn from(error: StoreError) -> Self {
        switchboard_core::Error::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!(StoreError::BadPageToken.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            StoreError::PageTokenMismatch.code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(StoreError::Closed.code(), ErrorCode::Unavailable);
        assert_eq!(StoreError::WriterGone.code(), ErrorCode::Unavailable);
        assert_eq!(
            StoreError::NotAStore {
                path: PathBuf::from("/x")
            }
            .code(),
            ErrorCode::FailedPrecondition
        );
        assert_eq!(
            StoreError::Commit("disk full".into()).code(),
            ErrorCode::Internal
        );
        let message = StoreError::Open {
            path: PathBuf::from("/x"),
            reason: "permission denied".into(),
        }
        .to_string();
        assert!(message.starts_with("cannot open the store at /x: permission denied;"));
        assert!(!message.ends_with('.'));
    }
}
