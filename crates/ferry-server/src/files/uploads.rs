//! Uploads in flight on this node: how many at once, and the bytes each
//! user has on the way. The quota is checked against the files a user's
//! uploads hold *and* those still arriving, so that many uploads at once
//! cannot each pass the check and together fill the disk; and a node
//! holds at most so many uploads' staging files and connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_core::UserId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The uploads in flight.
#[derive(Debug)]
pub struct Uploads {
    slots: Arc<Semaphore>,
    arriving: Mutex<HashMap<UserId, u64>>,
}

/// Why an upload may not start.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken: `503`, try again.
    Busy,
    /// The user's files, stored and arriving, take `used` bytes; this one
    /// would pass the quota.
    OverQuota {
        /// The bytes stored and arriving.
        used: u64,
    },
}

/// An upload's slot and its bytes reserved, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    uploads: Arc<Uploads>,
    user: UserId,
    bytes: u64,
    _permit: OwnedSemaphorePermit,
}

impl Uploads {
    /// At most `slots` uploads at once.
    pub fn new(slots: usize) -> Self {
        Uploads {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            arriving: Mutex::default(),
        }
    }

    /// A slot for `bytes` of `user`, whose stored files take `stored`
    /// bytes of `quota`.
    pub fn start(
        self: &Arc<Self>,
        user: &UserId,
        bytes: u64,
        stored: u64,
        quota: u64,
    ) -> Result<Slot, Refused> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        let mut arriving = self.arriving.lock().unwrap_or_else(PoisonError::into_inner);
        let used = stored.saturating_add(arriving.get(user).copied().unwrap_or(0));
        if used.saturating_add(bytes) > quota {
            return Err(Refused::OverQuota { used });
        }
        *arriving.entry(user.clone()).or_insert(0) += bytes;
        Ok(Slot {
            uploads: self.clone(),
            user: user.clone(),
            bytes,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut arriving = self
            .uploads
            .arriving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = arriving.get_mut(&self.user) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                arriving.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_in_flight_count_against_the_quota_and_the_slots() {
        let uploads = Arc::new(Uploads::new(2));
        let ann = UserId::new("ann").unwrap();
        let bob = UserId::new("bob").unwrap();
        let first = uploads.start(&ann, 600, 0, 1_000).unwrap();
        // The first is still arriving: a second of 600 would pass 1,000.
        assert_eq!(
            uploads.start(&ann, 600, 0, 1_000).unwrap_err(),
            Refused::OverQuota { used: 600 }
        );
        let second = uploads.start(&bob, 600, 0, 1_000).unwrap();
        assert_eq!(uploads.start(&bob, 1, 0, 1_000).unwrap_err(), Refused::Busy);
        drop(first);
        // Ann's bytes and slot are back.
        let again = uploads.start(&ann, 900, 100, 1_000).unwrap();
        drop((again, second));
        assert!(uploads.arriving.lock().unwrap().is_empty());
    }
}
