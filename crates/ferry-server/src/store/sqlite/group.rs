//! Group commit: pushes that arrive while the writer is busy share its next
//! transaction and its one flush to disk (docs/performance.md, "Many
//! devices at once").
//!
//! A commit's cost on SQLite is its flush, and one writer makes them one at
//! a time, so a node whose pushes each took their own transaction was
//! bounded by the disk's flush rate however many devices pushed at once.
//! Here every push queues itself, then waits either for its answer or for
//! the writer; whoever gets the writer leads: it takes the pushes queued so
//! far (its own among them, up to [`MAX_GROUP_BATCHES`] and
//! [`MAX_GROUP_CHANGES`]), applies each in a savepoint of one `IMMEDIATE`
//! transaction, commits once, and answers each. What each push promised
//! alone still holds:
//!
//! - **All or nothing per batch.** A batch that fails is rolled back to its
//!   savepoint and answered with its own error; the others commit.
//! - **Order.** Batches apply in the order they queued, each after the one
//!   before it in the same transaction, so `seq` is still commit order per
//!   space.
//! - **Durable before answered.** No push is answered before the one
//!   commit, with `synchronous = FULL`, returns. If it fails, every push of
//!   the group is answered with that failure and nothing of them applies.
//! - **An abandoned push is not applied.** A push whose caller went away
//!   before its group began (its answer has no receiver) is dropped, as a
//!   push cancelled while waiting for the writer was before.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use ferry_core::SpaceId;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::records;
use crate::store::{Batch, PushOutcome, StoreError};

/// At most this many batches share one transaction.
pub const MAX_GROUP_BATCHES: usize = 256;
/// A group takes no further batch once it holds this many changes (its
/// first batch always goes in, whatever its size), so that the pushes
/// behind a large one do not wait on one very long transaction.
pub const MAX_GROUP_CHANGES: usize = 4_000;

type Answer = oneshot::Sender<Result<PushOutcome, StoreError>>;

/// A push waiting for a group.
#[derive(Debug)]
pub struct Waiting {
    space: SpaceId,
    batch: Batch,
    answer: Answer,
}

/// The pushes waiting for the writer, in the order they came.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: Mutex<VecDeque<Waiting>>,
}

impl Queue {
    /// Queues a push; its answer comes on the returned receiver.
    pub fn add(
        &self,
        space: SpaceId,
        batch: Batch,
    ) -> oneshot::Receiver<Result<PushOutcome, StoreError>> {
        let (answer, told) = oneshot::channel();
        self.lock().push_back(Waiting {
            space,
            batch,
            answer,
        });
        told
    }

    /// The next group: the oldest pushes whose callers still wait, within
    /// the bounds.
    pub fn take(&self) -> Vec<Waiting> {
        let mut waiting = self.lock();
        let mut group = Vec::new();
        let mut changes = 0;
        while group.len() < MAX_GROUP_BATCHES {
            let Some(next) = waiting.front() else { break };
            if next.answer.is_closed() {
                waiting.pop_front();
                continue;
            }
            let size = next.batch.changes.len();
            if !group.is_empty() && changes + size > MAX_GROUP_CHANGES {
                break;
            }
            changes += size;
            group.extend(waiting.pop_front());
        }
        group
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies `group` in one transaction on the writer `c` and answers each
/// push (see the module's rules). Returns how many pushes it committed
/// (0 when the transaction did not commit).
pub fn commit(c: &mut Connection, group: Vec<Waiting>) -> usize {
    if group.is_empty() {
        return 0;
    }
    if let [_] = group.as_slice() {
        // Alone: its own transaction, with no savepoint to pay for.
        let mut committed = 0;
        for w in group {
            let outcome = records::push(c, &w.space, w.batch);
            committed += usize::from(outcome.is_ok());
            let _ = w.answer.send(outcome);
        }
        return committed;
    }
    let (answers, jobs): (Vec<Answer>, Vec<(SpaceId, Batch)>) = group
        .into_iter()
        .map(|w| (w.answer, (w.space, w.batch)))
        .unzip();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let committed = (|| -> Result<(), StoreError> {
        let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (space, batch) in jobs {
            let mut sp = tx.savepoint()?;
            // A panic in one batch is that batch's error, not its group's.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                records::push_in(&sp, &space, batch)
            }))
            .unwrap_or_else(|_| Err(StoreError::Internal("a push panicked".into())));
            if let Err(e) = &outcome
                && sp.is_autocommit()
            {
                // SQLite rolled the whole transaction back (a full disk,
                // an I/O error): the group fails with this error.
                return Err(again(e));
            }
            if outcome.is_err() {
                // Undone, then released: the savepoint holds nothing.
                sp.rollback()?;
            }
            sp.commit()?;
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok(())
    })();
    match committed {
        Ok(()) => {
            let committed = outcomes.iter().filter(|o| o.is_ok()).count();
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                let _ = answer.send(outcome);
            }
            committed
        }
        Err(e) => {
            // Nothing of the group was committed (the transaction rolled
            // back when dropped): every push of it is told why.
            for answer in answers {
                let _ = answer.send(Err(again(&e)));
            }
            0
        }
    }
}

/// Answers every push of `group` with `e`, applying none.
pub fn fail(group: Vec<Waiting>, e: &StoreError) {
    for w in group {
        let _ = w.answer.send(Err(again(e)));
    }
}

/// `e` again, for one more push: unavailable stays unavailable, anything
/// else is internal.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Internal(other.to_string()),
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
