//! Subscriptions and billing events in PostgreSQL.

use ferry_core::UserId;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::store::stored::{self, now_ms};
use crate::store::{BillingEvent, EventOutcome, StoreError, StoredEntitlement};

const COLUMNS: &str =
    "subscription_id, plan, status, period_end, provider, customer_id, stamp, user_id";

fn user_id(id: String) -> Result<UserId, StoreError> {
    UserId::new(id).map_err(|e| StoreError::Internal(format!("stored user id: {e}")))
}

fn row(r: &PgRow) -> Result<(Option<UserId>, StoredEntitlement), StoreError> {
    Ok((
        r.try_get::<Option<String>, _>(7)?
            .map(user_id)
            .transpose()?,
        StoredEntitlement {
            subscription_id: r.try_get(0)?,
            plan: r.try_get(1)?,
            status: r.try_get(2)?,
            current_period_end_ms: r.try_get::<Option<i64>, _>(3)?.map(|t| t.max(0) as u64),
            provider: r.try_get(4)?,
            customer_id: r.try_get(5)?,
            stamp_ms: r.try_get::<i64, _>(6)?.max(0) as u64,
        },
    ))
}

async fn write(
    c: &mut PgConnection,
    user: Option<&UserId>,
    e: &StoredEntitlement,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions
             (provider, subscription_id, user_id, plan, status, period_end, customer_id, stamp,
              updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (provider, subscription_id) DO UPDATE SET
             user_id = excluded.user_id, plan = excluded.plan, status = excluded.status,
             period_end = excluded.period_end, customer_id = excluded.customer_id,
             stamp = excluded.stamp, updated_at = excluded.updated_at",
    )
    .bind(&e.provider)
    .bind(&e.subscription_id)
    .bind(user.map(UserId::as_str))
    .bind(&e.plan)
    .bind(&e.status)
    .bind(e.current_period_end_ms.map(stored::int))
    .bind(&e.customer_id)
    .bind(stored::int(e.stamp_ms))
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn entitlements(
    pool: &PgPool,
    user: &UserId,
) -> Result<Vec<StoredEntitlement>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM subscriptions WHERE user_id = $1 ORDER BY stamp");
    let rows = sqlx::query(&sql)
        .bind(user.as_str())
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok(row(r)?.1)).collect()
}

pub async fn user_by_customer(
    pool: &PgPool,
    provider: &str,
    customer_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM subscriptions
         WHERE provider = $1 AND customer_id = $2 AND user_id IS NOT NULL LIMIT 1",
    )
    .bind(provider)
    .bind(customer_id)
    .fetch_optional(pool)
    .await?;
    id.map(user_id).transpose()
}

pub async fn subscription_owner(
    pool: &PgPool,
    provider: &str,
    subscription_id: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<Option<String>> = sqlx::query_scalar(
        "SELECT user_id FROM subscriptions WHERE provider = $1 AND subscription_id = $2",
    )
    .bind(provider)
    .bind(subscription_id)
    .fetch_optional(pool)
    .await?;
    id.flatten().map(user_id).transpose()
}

pub async fn apply_event(pool: &PgPool, event: &BillingEvent) -> Result<EventOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(user) = &event.user {
        super::users::require_user(&mut tx, user).await?;
    }
    // One event of a subscription at a time: its row is the lock (made
    // first if new), so two deliveries of one event, or two events racing,
    // are applied in turn and each sees what the other committed.
    let placeholder = StoredEntitlement::linked_only(
        &event.provider,
        &event.subscription_id,
        event.customer_id.as_deref(),
    );
    let created = sqlx::query(
        "INSERT INTO subscriptions
             (provider, subscription_id, plan, status, customer_id, stamp, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&event.provider)
    .bind(&event.subscription_id)
    .bind(&placeholder.plan)
    .bind(&placeholder.status)
    .bind(&placeholder.customer_id)
    .bind(stored::int(placeholder.stamp_ms))
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE provider = $1 AND subscription_id = $2
         FOR UPDATE"
    );
    let locked = sqlx::query(&sql)
        .bind(&event.provider)
        .bind(&event.subscription_id)
        .fetch_one(&mut *tx)
        .await?;
    let seen: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM billing_events WHERE provider = $1 AND event_id = $2")
            .bind(&event.provider)
            .bind(&event.event_id)
            .fetch_optional(&mut *tx)
            .await?;
    if seen.is_some() {
        return Ok(EventOutcome::Duplicate);
    }
    // A row this transaction made is the event's to fill, not a state.
    let stored = if created { None } else { Some(row(&locked)?) };
    let (owner, state, applied) = event.over(stored);
    // Written even when stale: an older event may still be the one that
    // says whose the subscription is.
    write(&mut tx, owner.as_ref(), &state).await?;
    let outcome = if applied {
        EventOutcome::Applied
    } else {
        EventOutcome::Stale
    };
    // Another delivery of the same event id that got in first (an event
    // about a different subscription under one id is forged or broken)
    // must not apply twice either.
    let inserted = sqlx::query(
        "INSERT INTO billing_events (provider, event_id, user_id, outcome, received_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&event.provider)
    .bind(&event.event_id)
    .bind(owner.as_ref().map_or("", UserId::as_str))
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
    write(&mut c, Some(user), e).await
}
