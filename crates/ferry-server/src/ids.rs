//! Ids the server makes up: random, unguessable, and valid names.

use ferry_core::{NameError, SpaceId, UserId};

use crate::error::ApiError;

/// `bytes` as lower-case hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `bytes` bytes of the SHA-256 of `text`, as hex: a plain file
/// name for whatever `text` holds.
pub fn digest_name(text: &str, bytes: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    hex(digest.get(..bytes).unwrap_or(&digest))
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
