//! API tokens on use: their format, how one is checked, and the rate limit
//! of the requests made with them (docs/server-rules.md). Management (make,
//! list, revoke) is in [`super::tokens`].

use std::num::NonZeroU32;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::clock::wall_ms;
use crate::error::ApiError;
use crate::ids;
use crate::state::AppState;
use crate::store::api_tokens::ApiToken;

/// Every API token starts so; no JWT can (a JWT starts with `ey`).
pub const PREFIX: &str = "fyt_";

/// The length of a token's id part (16 random bytes, base64url).
const ID_CHARS: usize = 22;
/// The length of its secret part (32 random bytes, base64url).
const SECRET_CHARS: usize = 43;

/// Whether a bearer token is an API token (rather than a JWT).
pub fn is_api_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn random(n: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new token: `(id, the whole token)`.
pub fn generate() -> Result<(String, String), ApiError> {
    let id = random(16)?;
    let token = format!("{PREFIX}{id}_{}", random(32)?);
    Ok((id, token))
}

/// What the database keeps of a token: its SHA-256, in hex.
pub fn hash(token: &str) -> String {
    ids::hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `id` has the shape of a token's id (checked before any lookup:
/// a NUL or an oversized string never reaches the database).
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_CHARS && b64(id)
}

fn b64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `token` has the shape of one (checked before any lookup, so
/// that no oversized or odd string reaches the database).
fn well_formed(token: &str) -> bool {
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return false;
    };
    rest.len() == ID_CHARS + 1 + SECRET_CHARS
        && rest.as_bytes().get(ID_CHARS) == Some(&b'_')
        && b64(rest)
}

/// The grant of the live API token `token`: `401 invalid_token` for one
/// that is malformed, unknown, revoked or expired (the same answer for
/// each), `429 rate_limited` past its rate.
pub async fn verify(state: &AppState, token: &str) -> Result<Arc<ApiToken>, ApiError> {
    let refused = || ApiError::invalid_token("the API token is unknown, revoked or expired");
    if !well_formed(token) {
        return Err(refused());
    }
    let found = state
        .store
        .use_api_token(&hash(token), wall_ms())
        .await?
        .ok_or_else(refused)?;
    state.token_limits.check(&found.id)?;
    Ok(Arc::new(found))
}

/// The limits of API tokens (configuration `api_token_rate`,
/// `api_token_burst`, `max_api_tokens_per_user`).
#[derive(Debug, Clone, Copy)]
pub struct ApiTokenSettings {
    /// Requests a second per token, on each node.
    pub per_second: u32,
    /// Requests at once per token.
    pub burst: u32,
    /// Live tokens one user may hold.
    pub max_per_user: u64,
}

impl Default for ApiTokenSettings {
    fn default() -> Self {
        ApiTokenSettings {
            per_second: 20,
            burst: 100,
            max_per_user: 100,
        }
    }
}

/// The rate of requests per token on one node.
#[derive(Debug)]
pub struct TokenLimits(DefaultKeyedRateLimiter<String>);

impl TokenLimits {
    /// `per_second` requests a second per token, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> TokenLimits {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        TokenLimits(RateLimiter::keyed(quota))
    }

    /// `429 rate_limited` with `Retry-After` when the token `id` has asked
    /// too often.
    pub fn check(&self, id: &str) -> Result<(), ApiError> {
        let result = self.0.check_key(&id.to_owned());
        // Tokens whose limit has fully recovered are forgotten.
        if self.0.len() > 10_000 {
            self.0.retain_recent();
        }
        result.map_err(|not_until| {
            let secs = not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                + 1;
            ApiError::rate_limited(
                format!("too many requests with this API token; try again in {secs} s"),
                secs,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let (id, token) = generate().unwrap();
        assert!(well_formed(&token), "{token}");
        assert!(token.starts_with(&format!("{PREFIX}{id}_")));
        assert_ne!(generate().unwrap().1, token);
        assert_eq!(hash(&token).len(), 64);
    }

    #[test]
    fn odd_tokens_are_refused_before_any_lookup() {
        let (_, token) = generate().unwrap();
        assert!(!well_formed(&token[..token.len() - 1]));
        assert!(!well_formed(&format!("{token}A")));
        assert!(!well_formed(&token.replacen('_', "-", 2)));
        assert!(!well_formed(&token.replace(PREFIX, "fyx_")));
        assert!(!well_formed(&format!("{}{}", &token[..40], "é".repeat(12))));
    }

    #[test]
    fn a_token_is_limited_alone() {
        let limits = TokenLimits::new(1, 3);
        for _ in 0..3 {
            limits.check("a").unwrap();
        }
        let e = limits.check("a").unwrap_err();
        assert_eq!(e.status().as_u16(), 429);
        limits.check("b").unwrap();
    }
}
