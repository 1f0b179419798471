//! Subscriptions and billing events in SQLite.

use ferry_core::UserId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::stored::{self, now_ms};
use crate::store::{BillingEvent, EventOutcome, StoreError, StoredEntitlement};

const COLUMNS: &str =
    "subscription_id, plan, status, period_end, provider, customer_id, stamp, user_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Option<String>, StoredEntitlement)> {
    Ok((
        r.get(7)?,
        StoredEntitlement {
            subscription_id: r.get(0)?,
            plan: r.get(1)?,
            status: r.get(2)?,
            current_period_end_ms: r.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
            provider: r.get(4)?,
            customer_id: r.get(5)?,
            stamp_ms: r.get::<_, i64>(6)?.max(0) as u64,
        },
    ))
}

fn user_id(id: String) -> Result<UserId, StoreError> {
    UserId::new(id).map_err(|e| StoreError::Internal(format!("stored user id: {e}")))
}

fn write(c: &Connection, user: Option<&UserId>, e: &StoredEntitlement) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO subscriptions
             (provider, subscription_id, user_id, plan, status, period_end, customer_id, stamp,
              updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (provider, subscription_id) DO UPDATE SET
             user_id = excluded.user_id, plan = excluded.plan, status = excluded.status,
             period_end = excluded.period_end, customer_id = excluded.customer_id,
             stamp = excluded.stamp, updated_at = excluded.updated_at",
    )?
    .execute(params![
        e.provider,
        e.subscription_id,
        user.map(UserId::as_str),
        e.plan,
        e.status,
        e.current_period_end_ms.map(stored::int),
        e.customer_id,
        stored::int(e.stamp_ms),
        now_ms(),
    ])?;
    Ok(())
}

pub fn entitlements(
    c: &mut Connection,
    user: &UserId,
) -> Result<Vec<StoredEntitlement>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM subscriptions WHERE user_id = ?1 ORDER BY stamp");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([user.as_str()], row)?;
    rows.map(|r| Ok(r?.1)).collect()
}

pub fn user_by_customer(
    c: &mut Connection,
    provider: &str,
    customer_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<String> = c
        .prepare_cached(
            "SELECT user_id FROM subscriptions
             WHERE provider = ?1 AND customer_id = ?2 AND user_id IS NOT NULL LIMIT 1",
        )?
        .query_row([provider, customer_id], |r| r.get(0))
        .optional()?;
    id.map(user_id).transpose()
}

pub fn subscription_owner(
    c: &mut Connection,
    provider: &str,
    subscription_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<Option<String>> = c
        .prepare_cached(
            "SELECT user_id FROM subscriptions WHERE provider = ?1 AND subscription_id = ?2",
        )?
        .query_row([provider, subscription_id], |r| r.get(0))
        .optional()?;
    id.flatten().map(user_id).transpose()
}

pub fn apply_event(c: &mut Connection, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(user) = &event.user {
        let known = tx
            .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
            .exists([user.as_str()])?;
        if !known {
            return Err(StoreError::NotFound("user"));
        }
    }
    let seen = tx
        .prepare_cached("SELECT 1 FROM billing_events WHERE provider = ?1 AND event_id = ?2")?
        .exists([event.provider.as_str(), event.event_id.as_str()])?;
    if seen {
        return Ok(EventOutcome::Duplicate);
    }
    let sql =
        format!("SELECT {COLUMNS} FROM subscriptions WHERE provider = ?1 AND subscription_id = ?2");
    let stored = tx
        .prepare_cached(&sql)?
        .query_row(
            [event.provider.as_str(), event.subscription_id.as_str()],
            row,
        )
        .optional()?
        .map(|(owner, state)| Ok::<_, StoreError>((owner.map(user_id).transpose()?, state)))
        .transpose()?;
    let (owner, state, applied) = event.over(stored);
    // Written even when stale: an older event may still be the one that
    // says whose the subscription is.
    write(&tx, owner.as_ref(), &state)?;
    let outcome = if applied {
        EventOutcome::Applied
    } else {
        EventOutcome::Stale
    };
    tx.prepare_cached(
        "INSERT INTO billing_events (provider, event_id, user_id, outcome, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.provider,
        event.event_id,
        owner.as_ref().map_or("", UserId::as_str),
        outcome.as_str(),
        now_ms()
    ])?;
    tx.commit()?;
    Ok(outcome)
}

pub fn set_entitlement(
    c: &mut Connection,
    user: &UserId,
    e: &StoredEntitlement,
) -> Result<(), StoreError> {
    write(c, Some(user), e)
}
