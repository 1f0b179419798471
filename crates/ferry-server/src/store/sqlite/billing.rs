//! Entitlements and billing events in SQLite.

use ferry_core::UserId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::stored::{self, now_ms};
use crate::store::{BillingEvent, EventOutcome, StoreError, StoredEntitlement};

fn read(c: &Connection, user: &UserId) -> Result<Option<StoredEntitlement>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT plan, status, period_end, provider, customer_id, stamp
           FROM entitlements WHERE user_id = ?1",
    )?
    .query_row([user.as_str()], |r| {
        Ok(StoredEntitlement {
            plan: r.get(0)?,
            status: r.get(1)?,
            current_period_end_ms: r.get::<_, Option<i64>>(2)?.map(|t| t.max(0) as u64),
            provider: r.get(3)?,
            customer_id: r.get(4)?,
            stamp_ms: r.get::<_, i64>(5)?.max(0) as u64,
        })
    })
    .optional()?)
}

fn write(c: &Connection, user: &UserId, e: &StoredEntitlement) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO entitlements
             (user_id, plan, status, period_end, provider, customer_id, stamp, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id) DO UPDATE SET
             plan = excluded.plan, status = excluded.status, period_end = excluded.period_end,
             provider = excluded.provider, customer_id = excluded.customer_id,
             stamp = excluded.stamp, updated_at = excluded.updated_at",
    )?
    .execute(params![
        user.as_str(),
        e.plan,
        e.status,
        e.current_period_end_ms.map(stored::int),
        e.provider,
        e.customer_id,
        stored::int(e.stamp_ms),
        now_ms(),
    ])?;
    Ok(())
}

pub fn entitlement(
    c: &mut Connection,
    user: &UserId,
) -> Result<Option<StoredEntitlement>, StoreError> {
    read(c, user)
}

pub fn user_by_customer(
    c: &mut Connection,
    provider: &str,
    customer_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<String> = c
        .prepare_cached(
            "SELECT user_id FROM entitlements WHERE provider = ?1 AND customer_id = ?2 LIMIT 1",
        )?
        .query_row([provider, customer_id], |r| r.get(0))
        .optional()?;
    id.map(|id| UserId::new(id).map_err(|e| StoreError::Internal(format!("stored user id: {e}"))))
        .transpose()
}

pub fn apply_event(c: &mut Connection, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known = tx
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .exists([event.user.as_str()])?;
    if !known {
        return Err(StoreError::NotFound("user"));
    }
    let seen = tx
        .prepare_cached("SELECT 1 FROM billing_events WHERE provider = ?1 AND event_id = ?2")?
        .exists([event.provider.as_str(), event.event_id.as_str()])?;
    if seen {
        return Ok(EventOutcome::Duplicate);
    }
    let current = read(&tx, &event.user)?;
    let outcome = match event.entitlement.over(current.as_ref()) {
        Some(next) => {
            write(&tx, &event.user, &next)?;
            EventOutcome::Applied
        }
        None => EventOutcome::Stale,
    };
    tx.prepare_cached(
        "INSERT INTO billing_events (provider, event_id, user_id, outcome, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.provider,
        event.event_id,
        event.user.as_str(),
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
    write(c, user, e)
}
