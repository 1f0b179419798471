//! Ferry's core: everything the server and every client must agree on, with
//! no I/O, so the same code runs on the server, in the native client and in
//! the browser (compiled to wasm).
//!
//! - [`names`]: the validated names of PROTOCOL.md §1.
//! - [`hlc`]: hybrid logical clocks; callers pass the wall time in.
//! - [`change`]: changes, records and conflicts (§2).
//! - [`merge`]: the merge rules (§2), the only implementation of them,
//!   and the detection of conflicts by what each writer had seen.
//! - [`conflict`]: conflicts as a replica's inbox keeps them.
//! - [`local`]: a replica's own writes (put, patch, delete) as changes.
//! - [`protocol`]: request and response bodies (§4–§6, §10).
//! - [`schema`]: typed collections, and the one validator of writes
//!   (docs/schema.md).

pub mod change;
pub mod conflict;
pub mod file;
pub mod hlc;
pub mod live;
pub mod local;
pub mod merge;
pub mod names;
pub mod protocol;
pub mod query;
pub mod query_index;
pub mod schema;

pub use change::{Bases, Change, Conflict, ConflictKind, FieldValue, Fields, Record, RecordState};
pub use file::{FileRef, Sha256Hex};
pub use hlc::{Hlc, HlcError};
pub use merge::{Displaced, Merged, apply_change, merge_states};
pub use names::{ClientId, Collection, FieldName, NameError, RecordId, SpaceId, UserId};
pub use protocol::{BatchId, Role};
