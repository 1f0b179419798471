//! What went wrong in storage.

use super::Batch;

/// What went wrong in storage, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The space, user or member does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Something with that id already exists.
    #[error("{0}")]
    Conflict(String),
    /// The cursor is older than what the space still keeps, or newer than
    /// anything it has: the client must resync from 0.
    #[error("cursor {cursor} is outside what the space can serve (horizon {horizon}, head {head})")]
    CursorExpired {
        /// The cursor the client sent.
        cursor: u64,
        /// Records up to this `seq` may have been compacted.
        horizon: u64,
        /// The space's current `seq`.
        head: u64,
    },
    /// A batch would make a record's fields larger than
    /// [`ferry_core::protocol::MAX_RECORD_BYTES`]: nothing of it applies.
    #[error("record {collection}/{id} would hold {bytes} bytes of fields")]
    RecordTooLarge {
        /// The record's collection.
        collection: String,
        /// The record's id.
        id: String,
        /// What its fields would take.
        bytes: usize,
    },
    /// The batch's client id is another user's replica: a client id
    /// belongs to the first user who pushes under it.
    #[error("client id {0} is another user's replica")]
    ReplicaOfAnother(String),
    /// A newer app schema was stored than the one the push was checked
    /// against: load it and push again (the batch comes back whole, as
    /// nothing of it was read).
    #[error("the app's schema is now version {version}")]
    SchemaChanged {
        /// The stored version.
        version: u64,
        /// The batch, to push again.
        batch: Option<Box<Batch>>,
    },
    /// A change breaks the app's schema: nothing of the batch applies.
    #[error("change {index}: {violation}")]
    Invalid {
        /// The change's index in the batch.
        index: usize,
        /// What it breaks.
        violation: Box<ferry_core::schema::Violation>,
    },
    /// A change the schema's permissions forbid to the batch's actor:
    /// nothing of the batch applies.
    #[error("change {index}: {forbidden}")]
    Forbidden {
        /// The change's index in the batch.
        index: usize,
        /// What is forbidden.
        forbidden: Box<ferry_core::schema::Forbidden>,
    },
    /// The database cannot be reached or is busy beyond its timeout.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data. Never shown to clients.
    #[error("storage error: {0}")]
    Internal(String),
}
