//! Entitlements and billing events in PostgreSQL.

use ferry_core::UserId;
use sqlx::{PgConnection, PgPool, Row};

use crate::store::stored::{self, now_ms};
use crate::store::{BillingEvent, EventOutcome, StoreError, StoredEntitlement};

async fn read(
    c: &mut PgConnection,
    user: &UserId,
) -> Result<Option<StoredEntitlement>, StoreError> {
    let row = sqlx::query(
        "SELECT plan, status, period_end, provider, customer_id, stamp
           FROM entitlements WHERE user_id = $1",
    )
    .bind(user.as_str())
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| {
        Ok(StoredEntitlement {
            plan: r.try_get(0)?,
            status: r.try_get(1)?,
            current_period_end_ms: r.try_get::<Option<i64>, _>(2)?.map(|t| t.max(0) as u64),
            provider: r.try_get(3)?,
            customer_id: r.try_get(4)?,
            stamp_ms: r.try_get::<i64, _>(5)?.max(0) as u64,
        })
    })
    .transpose()
}

async fn write(
    c: &mut PgConnection,
    user: &UserId,
    e: &StoredEntitlement,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO entitlements
             (user_id, plan, status, period_end, provider, customer_id, stamp, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (user_id) DO UPDATE SET
             plan = excluded.plan, status = excluded.status, period_end = excluded.period_end,
             provider = excluded.provider, customer_id = excluded.customer_id,
             stamp = excluded.stamp, updated_at = excluded.updated_at",
    )
    .bind(user.as_str())
    .bind(&e.plan)
    .bind(&e.status)
    .bind(e.current_period_end_ms.map(stored::int))
    .bind(&e.provider)
    .bind(&e.customer_id)
    .bind(stored::int(e.stamp_ms))
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn entitlement(
    pool: &PgPool,
    user: &UserId,
) -> Result<Option<StoredEntitlement>, StoreError> {
    let mut c = pool.acquire().await?;
    read(&mut c, user).await
}

pub async fn user_by_customer(
    pool: &PgPool,
    provider: &str,
    customer_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM entitlements WHERE provider = $1 AND customer_id = $2 LIMIT 1",
    )
    .bind(provider)
    .bind(customer_id)
    .fetch_optional(pool)
    .await?;
    id.map(|id| UserId::new(id).map_err(|e| StoreError::Internal(format!("stored user id: {e}"))))
        .transpose()
}

pub async fn apply_event(pool: &PgPool, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    // One event of a user at a time: the user's row is the lock, so two
    // deliveries of one event, or two events racing, are applied in turn
    // and each sees what the other committed.
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(event.user.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound("user"));
    }
    let seen: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM billing_events WHERE provider = $1 AND event_id = $2")
            .bind(&event.provider)
            .bind(&event.event_id)
            .fetch_optional(&mut *tx)
            .await?;
    if seen.is_some() {
        return Ok(EventOutcome::Duplicate);
    }
    let current = read(&mut tx, &event.user).await?;
    let outcome = match event.entitlement.over(current.as_ref()) {
        Some(next) => {
            write(&mut tx, &event.user, &next).await?;
            EventOutcome::Applied
        }
        None => EventOutcome::Stale,
    };
    // Another user's delivery of the same event id (it names a different
    // user only when forged or broken) must not apply twice either.
    let inserted = sqlx::query(
        "INSERT INTO billing_events (provider, event_id, user_id, outcome, received_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&event.provider)
    .bind(&event.event_id)
    .bind(event.user.as_str())
    .bind(outcome.as_str())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(EventOutcome::Duplicate);
    }
    tx.commit().await?;
    Ok(outcome)
}

pub async fn set_entitlement(
    pool: &PgPool,
    user: &UserId,
    e: &StoredEntitlement,
) -> Result<(), StoreError> {
    let mut c = pool.acquire().await?;
    write(&mut c, user, e).await
}
