//! Turning stored text back into validated names. Anything that fails here
//! was written wrong, so it is an internal error, never the client's.

use ferry_core::{Role, SpaceId, UserId};

use super::StoreError;

/// An internal error about stored data.
pub fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what}: {e}"))
}

/// A stored role.
pub fn role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| corrupt("role", text))
}

/// A stored user id.
pub fn user_id(text: String) -> Result<UserId, StoreError> {
    UserId::new(text).map_err(|e| corrupt("user id", e))
}

/// A stored space id.
pub fn space_id(text: String) -> Result<SpaceId, StoreError> {
    SpaceId::new(text).map_err(|e| corrupt("space id", e))
}

/// A stored counter.
pub fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// A `u64` counter or time as SQL's 64-bit integer, saturating.
pub fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Now, in milliseconds since the epoch, for `created_at` columns.
pub fn now_ms() -> i64 {
    int(crate::clock::wall_ms())
}
