//! The client's errors: one enum, with the server's answers kept apart from
//! local failures so that the sync loop can decide what to retry.

use std::time::Duration;

/// What can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name or value the app passed breaks PROTOCOL.md §1.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The local database failed.
    #[error("local database: {0}")]
    Local(#[from] rusqlite::Error),
    /// What the local database holds cannot be read back (a bug, or a file
    /// written by something else).
    #[error("corrupt local data: {0}")]
    Corrupt(String),
    /// A write breaks the app's schema (docs/schema.md): nothing of it was
    /// stored or queued.
    #[error("{0}")]
    Schema(Box<ferry_core::schema::Violation>),
    /// A write the schema's permissions forbid to this user
    /// (docs/server-rules.md): nothing of it was stored or queued.
    #[error("{0}")]
    Forbidden(Box<ferry_core::schema::Forbidden>),
    /// The server could not be reached (offline, refused, timed out).
    #[error("cannot reach the server: {0}")]
    Offline(String),
    /// Sync stopped until something changes: the billing gate paused it,
    /// or the session needs signing in again.
    #[error("sync stopped: {0}")]
    Stopped(String),
    /// The server answered with an error (PROTOCOL.md §10).
    #[error("the server answered {status} {code}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The stable code.
        code: String,
        /// The message, for a person.
        message: String,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
        /// The index in the batch of the change the error is about, when
        /// the server named one (`details.index` of `invalid_change`).
        change: Option<usize>,
    },
}

impl Error {
    /// The stable code of a server answer, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of a server answer, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may work: the network, a busy or
    /// unavailable server.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Offline(_) => true,
            Error::Server { status, .. } => matches!(status, 429 | 500..=599),
            _ => false,
        }
    }
}

impl From<ferry_core::NameError> for Error {
    fn from(e: ferry_core::NameError) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// The client's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
