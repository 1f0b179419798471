//! Webhooks in PostgreSQL (docs/server-rules.md#webhooks). Several nodes
//! claim cursors at once: a claim takes a cursor only where no other node's
//! lease runs (the row lock of the upsert decides), and a node records a
//! try only while it still holds the lease.

use serde_json::value::RawValue;
use sqlx::{PgPool, Row};

use crate::store::StoreError;
use crate::store::stored::{corrupt, count, int, space_id};
use crate::store::webhooks::{DeadLetter, Due, Endpoint, HookRecord, Outcome, json, parse};

pub async fn endpoints(pool: &PgPool) -> Result<Vec<Endpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, url, secrets, spaces, collections FROM webhook_endpoints ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let spaces: Option<String> = r.try_get(3)?;
            let collections: Option<String> = r.try_get(4)?;
            Ok(Endpoint {
                id: r.try_get(0)?,
                url: r.try_get(1)?,
                secrets: parse("webhook secrets", r.try_get(2)?)?,
                spaces: spaces.map(|s| parse("webhook spaces", &s)).transpose()?,
                collections: collections
                    .map(|s| parse("webhook collections", &s))
                    .transpose()?,
            })
        })
        .collect()
}

pub async fn put_endpoint(pool: &PgPool, e: &Endpoint, now: u64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let created: bool = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (id, url, secrets, spaces, collections, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, secrets = EXCLUDED.secrets,
             spaces = EXCLUDED.spaces, collections = EXCLUDED.collections
         RETURNING xmax = 0",
    )
    .bind(&e.id)
    .bind(&e.url)
    .bind(json(&e.secrets)?)
    .bind(e.spaces.as_ref().map(json).transpose()?)
    .bind(e.collections.as_ref().map(json).transpose()?)
    .bind(int(now))
    .fetch_one(&mut *tx)
    .await?;
    if created {
        // What was committed before the endpoint existed is not its news.
        sqlx::query(
            "INSERT INTO webhook_cursors (endpoint, sid, seq)
             SELECT $1, sid, seq FROM spaces WHERE seq > 0",
        )
        .bind(&e.id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn remove_endpoint(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM webhook_cursors WHERE endpoint = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_dead WHERE endpoint = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(removed)
}

pub async fn claim(
    pool: &PgPool,
    node: &str,
    now: u64,
    lease_until: u64,
    limit: u32,
) -> Result<Vec<Due>, StoreError> {
    let candidates = sqlx::query(
        "SELECT e.id, s.sid, s.id, s.seq, s.horizon
         FROM webhook_endpoints e CROSS JOIN spaces s
         LEFT JOIN webhook_cursors w ON w.endpoint = e.id AND w.sid = s.sid
         WHERE s.seq > coalesce(w.seq, 0)
           AND coalesce(w.next_at, 0) <= $1 AND coalesce(w.lease_until, 0) <= $1
           AND (e.spaces IS NULL
                OR s.id IN (SELECT jsonb_array_elements_text(e.spaces::jsonb)))
         ORDER BY coalesce(w.next_at, 0), s.sid
         LIMIT $2",
    )
    .bind(int(now))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut due = Vec::new();
    for c in &candidates {
        let (endpoint, sid): (String, i64) = (c.try_get(0)?, c.try_get(1)?);
        // The row lock decides between nodes: a lease another node took
        // meanwhile makes the update a no-op, and no row comes back.
        let claimed = sqlx::query(
            "INSERT INTO webhook_cursors (endpoint, sid, seq, lease_node, lease_until, pending_to)
             VALUES ($1, $2, 0, $3, $4, $6)
             ON CONFLICT (endpoint, sid) DO UPDATE
             SET lease_node = EXCLUDED.lease_node, lease_until = EXCLUDED.lease_until,
                 pending_to = coalesce(webhook_cursors.pending_to, EXCLUDED.pending_to)
             WHERE webhook_cursors.lease_until <= $5 AND webhook_cursors.next_at <= $5
             RETURNING seq, pending_to, attempts, first_failed_at",
        )
        .bind(&endpoint)
        .bind(sid)
        .bind(node)
        .bind(int(lease_until))
        .bind(int(now))
        .bind(c.try_get::<i64, _>(3)?)
        .fetch_optional(pool)
        .await?;
        let Some(row) = claimed else { continue };
        due.push(Due {
            endpoint,
            sid,
            space: space_id(c.try_get(2)?)?,
            head: count(c.try_get(3)?),
            cursor: count(row.try_get(0)?),
            pending_to: row.try_get::<Option<i64>, _>(1)?.map(count),
            attempts: u32::try_from(row.try_get::<i32, _>(2)?).unwrap_or(0),
            first_failed_at: row.try_get::<Option<i64>, _>(3)?.map(count),
            horizon: count(c.try_get(4)?),
        });
    }
    Ok(due)
}

pub async fn records(
    pool: &PgPool,
    sid: i64,
    after: u64,
    upto: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<HookRecord>, bool), StoreError> {
    // Each row knows the bytes of fields before it: rows past the budget
    // are never sent (the first always is); `last` is the range's last
    // seq, to tell whether any were left out.
    let rows = sqlx::query(
        "SELECT collection, id, seq, fields, deleted, author, writer,
                (SELECT max(seq) FROM records WHERE sid = $1 AND seq > $2 AND seq <= $3)
         FROM (
             SELECT collection, id, seq, fields, deleted, author, writer,
                    coalesce(sum(octet_length(fields)) OVER (ORDER BY seq
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
             FROM (SELECT * FROM records WHERE sid = $1 AND seq > $2 AND seq <= $3
                   ORDER BY seq LIMIT $4) range
         ) page
         WHERE before < $5 ORDER BY seq",
    )
    .bind(sid)
    .bind(int(after))
    .bind(int(upto))
    .bind(i64::from(limit))
    .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let last = match rows.first() {
        Some(r) => r.try_get::<Option<i64>, _>(7)?.map(count),
        None => None,
    };
    let out = rows
        .iter()
        .map(|r| {
            let fields: String = r.try_get(3)?;
            Ok(HookRecord {
                collection: r.try_get(0)?,
                id: r.try_get(1)?,
                seq: count(r.try_get(2)?),
                fields: RawValue::from_string(fields).map_err(|e| corrupt("fields", e))?,
                deleted: r.try_get(4)?,
                author: r.try_get(5)?,
                writer: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let cut = out.last().map(|r| r.seq) < last;
    Ok((out, cut))
}

pub async fn tried(pool: &PgPool, node: &str, tries: &[(Due, Outcome)]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for (due, outcome) in tries {
        tried_one(&mut tx, due, node, outcome).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn tried_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    due: &Due,
    node: &str,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let held = sqlx::query(
        "SELECT 1 FROM webhook_cursors WHERE endpoint = $1 AND sid = $2 AND lease_node = $3
         FOR UPDATE",
    )
    .bind(&due.endpoint)
    .bind(due.sid)
    .bind(node)
    .fetch_optional(&mut **tx)
    .await?
    .is_some();
    if !held {
        return Ok(());
    }
    let moved = |to: u64| {
        sqlx::query(
            "UPDATE webhook_cursors SET seq = $3, pending_to = NULL, attempts = 0,
                 first_failed_at = NULL, next_at = 0, lease_node = NULL, lease_until = 0,
                 last_error = NULL
             WHERE endpoint = $1 AND sid = $2",
        )
        .bind(&due.endpoint)
        .bind(due.sid)
        .bind(int(to))
    };
    match outcome {
        Outcome::Delivered { to } => {
            moved(*to).execute(&mut **tx).await?;
        }
        Outcome::Retry {
            pending_to,
            attempts,
            first_failed_at,
            next_at,
            error,
        } => {
            sqlx::query(
                "UPDATE webhook_cursors SET pending_to = $3, attempts = $4, first_failed_at = $5,
                     next_at = $6, last_error = $7, lease_node = NULL, lease_until = 0
                 WHERE endpoint = $1 AND sid = $2",
            )
            .bind(&due.endpoint)
            .bind(due.sid)
            .bind(int(*pending_to))
            .bind(i32::try_from(*attempts).unwrap_or(i32::MAX))
            .bind(int(*first_failed_at))
            .bind(int(*next_at))
            .bind(error)
            .execute(&mut **tx)
            .await?;
        }
        Outcome::Dead { to, letter } => {
            sqlx::query(
                "INSERT INTO webhook_dead
                 (endpoint, space, delivery, payload, error, attempts, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&letter.endpoint)
            .bind(&letter.space)
            .bind(&letter.delivery)
            .bind(&letter.payload)
            .bind(&letter.error)
            .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
            .bind(int(letter.failed_at))
            .execute(&mut **tx)
            .await?;
            moved(*to).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

pub async fn dead_letters(
    pool: &PgPool,
    take_replays: bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    // Taking replays is one statement: of several nodes, one takes each.
    let sql = if take_replays {
        "UPDATE webhook_dead SET replay = false WHERE replay
         RETURNING id, endpoint, space, delivery, payload, error, attempts, failed_at, true"
    } else {
        "SELECT id, endpoint, space, delivery, payload, error, attempts, failed_at, replay
         FROM webhook_dead ORDER BY id"
    };
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                id: r.try_get(0)?,
                endpoint: r.try_get(1)?,
                space: r.try_get(2)?,
                delivery: r.try_get(3)?,
                payload: r.try_get(4)?,
                error: r.try_get(5)?,
                attempts: u32::try_from(r.try_get::<i32, _>(6)?).unwrap_or(0),
                failed_at: count(r.try_get(7)?),
                replay: r.try_get(8)?,
            })
        })
        .collect()
}

pub async fn replay(pool: &PgPool, id: i64) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("UPDATE webhook_dead SET replay = true WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

pub async fn replayed(pool: &PgPool, id: i64, error: Option<&str>) -> Result<(), StoreError> {
    match error {
        None => {
            sqlx::query("DELETE FROM webhook_dead WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
        }
        Some(e) => {
            sqlx::query("UPDATE webhook_dead SET error = $2 WHERE id = $1")
                .bind(id)
                .bind(e)
                .execute(pool)
                .await?
        }
    };
    Ok(())
}

pub async fn backlog(pool: &PgPool) -> Result<(u64, Option<u64>), StoreError> {
    let row = sqlx::query(
        "SELECT count(*), min(first_failed_at) FROM webhook_cursors WHERE attempts > 0",
    )
    .fetch_one(pool)
    .await?;
    Ok((
        count(row.try_get(0)?),
        row.try_get::<Option<i64>, _>(1)?.map(count),
    ))
}

#[async_trait::async_trait]
impl crate::store::webhooks::WebhookStore for super::PgStore {
    async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        endpoints(&self.pool).await
    }

    async fn put_webhook_endpoint(&self, e: &Endpoint, now_ms: u64) -> Result<(), StoreError> {
        put_endpoint(&self.pool, e, now_ms).await
    }

    async fn remove_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        remove_endpoint(&self.pool, id).await
    }

    async fn claim_webhooks(
        &self,
        node: &str,
        now_ms: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        claim(&self.pool, node, now_ms, lease_until, limit).await
    }

    async fn webhook_records(
        &self,
        sid: i64,
        after: u64,
        upto: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<HookRecord>, bool), StoreError> {
        records(&self.pool, sid, after, upto, limit, max_bytes).await
    }

    async fn webhook_tried(
        &self,
        node: &str,
        tries: Vec<(Due, Outcome)>,
    ) -> Result<(), StoreError> {
        if tries.is_empty() {
            return Ok(());
        }
        tried(&self.pool, node, &tries).await
    }

    async fn webhook_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        dead_letters(&self.pool, false).await
    }

    async fn replay_webhook(&self, id: i64) -> Result<bool, StoreError> {
        replay(&self.pool, id).await
    }

    async fn take_webhook_replays(&self) -> Result<Vec<DeadLetter>, StoreError> {
        dead_letters(&self.pool, true).await
    }

    async fn webhook_replayed(&self, id: i64, error: Option<&str>) -> Result<(), StoreError> {
        replayed(&self.pool, id, error).await
    }

    async fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError> {
        backlog(&self.pool).await
    }
}
