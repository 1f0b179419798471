//! Uploads in flight on this node: how many at once, and the bytes each
//! user has on the way. The quota is checked against the files a user's
//! uploads hold *and* those still arriving, so that many uploads at once
//! cannot each pass the check and together fill the disk; and a node
//! holds at most so many uploads' staging files and connections.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use ferry_core::UserId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The uploads in flight.
#[derive(Debug)]
pub struct Uploads {
    slots: Arc<Semaphore>,
    arriving: Mutex<HashMap<UserId, u64>>,
    /// The uploads in flight, by the partial upload they write.
    writing: Mutex<HashSet<String>>,
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
    /// An upload of the same file by the same user to the same space is
    /// in flight: `409`.
    InProgress,
}

/// An upload's slot and its bytes reserved, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    uploads: Arc<Uploads>,
    user: UserId,
    bytes: u64,
    key: String,
    _permit: OwnedSemaphorePermit,
}

impl Uploads {
    /// At most `slots` uploads at once.
    pub fn new(slots: usize) -> Self {
        Uploads {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            arriving: Mutex::default(),
            writing: Mutex::default(),
        }
    }

    /// A slot for `bytes` of `user`, whose stored files take `stored`
    /// bytes of `quota`, writing the partial upload `key`.
    pub fn start(
        self: &Arc<Self>,
        user: &UserId,
        bytes: u64,
        stored: u64,
        quota: u64,
        key: String,
    ) -> Result<Slot, Refused> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        let mut arriving = self.arriving.lock().unwrap_or_else(PoisonError::into_inner);
        let mut writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if writing.contains(&key) {
            return Err(Refused::InProgress);
        }
        let used = stored.saturating_add(arriving.get(user).copied().unwrap_or(0));
        if used.saturating_add(bytes) > quota {
            return Err(Refused::OverQuota { used });
        }
        writing.insert(key.clone());
        *arriving.entry(user.clone()).or_insert(0) += bytes;
        Ok(Slot {
            uploads: self.clone(),
            user: user.clone(),
            bytes,
            key,
            _permit: permit,
        })
    }
}

impl Uploads {
    /// Runs `f` unless the partial upload `key` is being written, holding
    /// off uploads from starting on it meanwhile.
    pub fn when_idle(&self, key: &str, f: impl FnOnce()) {
        let writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if !writing.contains(key) {
            f();
        }
    }

    /// The partial uploads being written now (their bytes count as
    /// arriving, not as held).
    pub fn writing(&self) -> HashSet<String> {
        self.writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.uploads
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
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
        let key = |k: &str| k.to_owned();
        let first = uploads.start(&ann, 600, 0, 1_000, key("a1")).unwrap();
        // The first is still arriving: a second of 600 would pass 1,000.
        assert_eq!(
            uploads.start(&ann, 600, 0, 1_000, key("a2")).unwrap_err(),
            Refused::OverQuota { used: 600 }
        );
        // The same partial upload twice at once: the second waits.
        assert_eq!(
            uploads.start(&ann, 1, 0, 1_000, key("a1")).unwrap_err(),
            Refused::InProgress
        );
        let second = uploads.start(&bob, 600, 0, 1_000, key("b1")).unwrap();
        assert_eq!(
            uploads.start(&bob, 1, 0, 1_000, key("b2")).unwrap_err(),
            Refused::Busy
        );
        drop(first);
        // Ann's bytes, slot and partial upload are back.
        let again = uploads.start(&ann, 900, 100, 1_000, key("a1")).unwrap();
        drop((again, second));
        assert!(uploads.arriving.lock().unwrap().is_empty());
        assert!(uploads.writing.lock().unwrap().is_empty());
    }
}
