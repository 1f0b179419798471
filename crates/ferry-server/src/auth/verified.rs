//! Access tokens this node has verified, so that a device's next request
//! with the same token skips the Ed25519 check (a sixth of a busy node's
//! CPU went to checking the same tokens again and again).
//!
//! Only tokens that passed every check are kept, each with its expiry,
//! which is checked again at every use: a kept token answers exactly as
//! verifying it again would (Ferry's access tokens cannot be withdrawn
//! before they expire; a sign-out revokes the refresh token). The cache
//! lives in its [`super::issuer::Issuer`], so a reload of the keys starts
//! it afresh. It is bounded: past [`CAP`] tokens it is emptied, and since
//! only valid tokens enter it, filling it takes that many tokens this
//! server issued.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ferry_core::UserId;

/// The most tokens kept (about 4 MB at most).
pub const CAP: usize = 10_000;

/// Verified tokens, each with its user and expiry (seconds since the epoch).
#[derive(Debug)]
pub struct Verified {
    tokens: Mutex<HashMap<String, (UserId, u64)>>,
    cap: usize,
}

impl Default for Verified {
    fn default() -> Self {
        Verified::with_cap(CAP)
    }
}

impl Verified {
    /// A cache of at most `cap` tokens.
    pub fn with_cap(cap: usize) -> Verified {
        Verified {
            tokens: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// The user `token` names, if it was verified here and has not expired
    /// at `now_secs`.
    pub fn get(&self, token: &str, now_secs: u64) -> Option<UserId> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(token) {
            Some((user, exp)) if now_secs <= *exp => Some(user.clone()),
            _ => None,
        }
    }

    /// Keeps `token`, verified, naming `user` until `exp`.
    pub fn put(&self, token: &str, user: &UserId, exp: u64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= self.cap {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), (user.clone(), exp));
    }

    /// Whether no token is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tokens are kept.
    pub fn len(&self) -> usize {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
