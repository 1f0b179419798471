//! Ids the server makes up: random, unguessable, and valid names.

use ferry_core::{NameError, SpaceId, UserId};

use crate::error::ApiError;

/// `bytes` as lower-case hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 random bits as 32 hex digits.
fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random: {e}")))?;
    Ok(hex(&bytes))
}

fn valid<T>(r: Result<T, NameError>) -> Result<T, ApiError> {
    r.map_err(ApiError::internal)
}

/// A new user id, `u_` and 32 hex digits.
pub fn new_user_id() -> Result<UserId, ApiError> {
    valid(UserId::new(format!("u_{}", random_hex()?)))
}

/// A new space id, `s_` and 32 hex digits.
pub fn new_space_id() -> Result<SpaceId, ApiError> {
    valid(SpaceId::new(format!("s_{}", random_hex()?)))
}
