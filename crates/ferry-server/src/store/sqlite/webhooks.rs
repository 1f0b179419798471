//! Webhooks in SQLite (docs/server-rules.md#webhooks). One node writes, so
//! a claim is one write transaction.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::value::RawValue;

use crate::store::StoreError;
use crate::store::stored::{corrupt, count, int, space_id};
use crate::store::webhooks::{DeadLetter, Due, Endpoint, HookRecord, Outcome, json, parse};

pub fn endpoints(c: &mut Connection) -> Result<Vec<Endpoint>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, url, secrets, spaces, collections FROM webhook_endpoints ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (id, url, secrets, spaces, collections) = row?;
        Ok(Endpoint {
            id,
            url,
            secrets: parse("webhook secrets", &secrets)?,
            spaces: spaces.map(|s| parse("webhook spaces", &s)).transpose()?,
            collections: collections
                .map(|s| parse("webhook collections", &s))
                .transpose()?,
        })
    })
    .collect()
}

pub fn put_endpoint(c: &mut Connection, e: &Endpoint, now: u64) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existed = tx
        .prepare_cached("SELECT 1 FROM webhook_endpoints WHERE id = ?1")?
        .exists([&e.id])?;
    tx.execute(
        "INSERT INTO webhook_endpoints (id, url, secrets, spaces, collections, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, secrets = excluded.secrets,
             spaces = excluded.spaces, collections = excluded.collections",
        params![
            e.id,
            e.url,
            json(&e.secrets)?,
            e.spaces.as_ref().map(json).transpose()?,
            e.collections.as_ref().map(json).transpose()?,
            int(now)
        ],
    )?;
    if !existed {
        // What was committed before the endpoint existed is not its news.
        tx.execute(
            "INSERT INTO webhook_cursors (endpoint, sid, seq)
             SELECT ?1, sid, seq FROM spaces WHERE seq > 0",
            [&e.id],
        )?;
    }
    tx.commit()?;
    Ok(())
}

pub fn remove_endpoint(c: &mut Connection, id: &str) -> Result<bool, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM webhook_cursors WHERE endpoint = ?1", [id])?;
    tx.execute("DELETE FROM webhook_dead WHERE endpoint = ?1", [id])?;
    let removed = tx.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])? == 1;
    tx.commit()?;
    Ok(removed)
}

/// The cursors with something to deliver whose time has come and that no
/// lease holds.
fn due(c: &Connection, now: u64, limit: u32) -> Result<Vec<Due>, StoreError> {
    let mut due = Vec::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT e.id, s.sid, s.id, s.seq, coalesce(w.seq, 0), w.pending_to,
                    coalesce(w.attempts, 0), w.first_failed_at, s.horizon
             FROM webhook_endpoints e CROSS JOIN spaces s
             LEFT JOIN webhook_cursors w ON w.endpoint = e.id AND w.sid = s.sid
             WHERE s.seq > coalesce(w.seq, 0)
               AND coalesce(w.next_at, 0) <= ?1 AND coalesce(w.lease_until, 0) <= ?1
               AND (e.spaces IS NULL OR s.id IN (SELECT value FROM json_each(e.spaces)))
             ORDER BY coalesce(w.next_at, 0), s.sid
             LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![int(now), i64::from(limit)])?;
        while let Some(r) = rows.next()? {
            due.push(Due {
                endpoint: r.get(0)?,
                sid: r.get(1)?,
                space: space_id(r.get(2)?)?,
                head: count(r.get(3)?),
                cursor: count(r.get(4)?),
                pending_to: r.get::<_, Option<i64>>(5)?.map(count),
                attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
                first_failed_at: r.get::<_, Option<i64>>(7)?.map(count),
                horizon: count(r.get(8)?),
            });
        }
    }
    Ok(due)
}

pub fn claim(
    c: &mut Connection,
    node: &str,
    now: u64,
    lease_until: u64,
    limit: u32,
) -> Result<Vec<Due>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due = due(&tx, now, limit)?;
    for d in &due {
        tx.prepare_cached(
            "INSERT INTO webhook_cursors (endpoint, sid, seq, lease_node, lease_until, pending_to)
             VALUES (?1, ?2, 0, ?3, ?4, ?5)
             ON CONFLICT (endpoint, sid) DO UPDATE
             SET lease_node = excluded.lease_node, lease_until = excluded.lease_until,
                 pending_to = coalesce(webhook_cursors.pending_to, excluded.pending_to)",
        )?
        .execute(params![
            d.endpoint,
            d.sid,
            node,
            int(lease_until),
            int(d.pending_to.unwrap_or(d.head))
        ])?;
    }
    tx.commit()?;
    Ok(due)
}

pub fn records(
    c: &mut Connection,
    sid: i64,
    after: u64,
    upto: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<HookRecord>, bool), StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT collection, id, seq, fields, deleted, author, writer FROM records
         WHERE sid = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
    )?;
    // One more than asked: whether more are left out.
    let mut rows = stmt.query(params![sid, int(after), int(upto), i64::from(limit) + 1])?;
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    while let Some(r) = rows.next()? {
        // Rows are read one at a time: those past the budget never are.
        if out.len() >= limit as usize || (!out.is_empty() && bytes >= max_bytes) {
            return Ok((out, true));
        }
        let fields: String = r.get(3)?;
        bytes += fields.len();
        out.push(HookRecord {
            collection: r.get(0)?,
            id: r.get(1)?,
            seq: count(r.get(2)?),
            fields: RawValue::from_string(fields).map_err(|e| corrupt("fields", e))?,
            deleted: r.get(4)?,
            author: r.get(5)?,
            writer: r.get(6)?,
        });
    }
    Ok((out, false))
}

pub fn tried(c: &mut Connection, node: &str, tries: &[(Due, Outcome)]) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (due, outcome) in tries {
        tried_one(&tx, due, node, outcome)?;
    }
    tx.commit()?;
    Ok(())
}

fn tried_one(tx: &Connection, due: &Due, node: &str, outcome: &Outcome) -> Result<(), StoreError> {
    let held = tx
        .prepare_cached(
            "SELECT 1 FROM webhook_cursors WHERE endpoint = ?1 AND sid = ?2 AND lease_node = ?3",
        )?
        .exists(params![due.endpoint, due.sid, node])?;
    if !held {
        return Ok(());
    }
    match outcome {
        Outcome::Delivered { to } => {
            tx.execute(
                "UPDATE webhook_cursors SET seq = ?3, pending_to = NULL, attempts = 0,
                     first_failed_at = NULL, next_at = 0, lease_node = NULL, lease_until = 0,
                     last_error = NULL
                 WHERE endpoint = ?1 AND sid = ?2",
                params![due.endpoint, due.sid, int(*to)],
            )?;
        }
        Outcome::Retry {
            pending_to,
            attempts,
            first_failed_at,
            next_at,
            error,
        } => {
            tx.execute(
                "UPDATE webhook_cursors SET pending_to = ?3, attempts = ?4, first_failed_at = ?5,
                     next_at = ?6, last_error = ?7, lease_node = NULL, lease_until = 0
                 WHERE endpoint = ?1 AND sid = ?2",
                params![
                    due.endpoint,
                    due.sid,
                    int(*pending_to),
                    attempts,
                    int(*first_failed_at),
                    int(*next_at),
                    error
                ],
            )?;
        }
        Outcome::Dead { to, letter } => {
            tx.execute(
                "INSERT INTO webhook_dead
                 (endpoint, space, delivery, payload, error, attempts, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    letter.endpoint,
                    letter.space,
                    letter.delivery,
                    letter.payload,
                    letter.error,
                    letter.attempts,
                    int(letter.failed_at)
                ],
            )?;
            tx.execute(
                "UPDATE webhook_cursors SET seq = ?3, pending_to = NULL, attempts = 0,
                     first_failed_at = NULL, next_at = 0, lease_node = NULL, lease_until = 0
                 WHERE endpoint = ?1 AND sid = ?2",
                params![due.endpoint, due.sid, int(*to)],
            )?;
        }
    }
    Ok(())
}

pub fn dead_letters(c: &mut Connection, only_replays: bool) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, endpoint, space, delivery, payload, error, attempts, failed_at, replay
         FROM webhook_dead WHERE replay = 1 OR NOT ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([only_replays], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            endpoint: r.get(1)?,
            space: r.get(2)?,
            delivery: r.get(3)?,
            payload: r.get(4)?,
            error: r.get(5)?,
            attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
            failed_at: count(r.get(7)?),
            replay: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn replay(c: &mut Connection, id: i64) -> Result<bool, StoreError> {
    Ok(c.execute("UPDATE webhook_dead SET replay = 1 WHERE id = ?1", [id])? == 1)
}

pub fn replayed(c: &mut Connection, id: i64, error: Option<&str>) -> Result<(), StoreError> {
    match error {
        None => c.execute("DELETE FROM webhook_dead WHERE id = ?1", [id])?,
        Some(e) => c.execute(
            "UPDATE webhook_dead SET error = ?2 WHERE id = ?1",
            params![id, e],
        )?,
    };
    Ok(())
}

pub fn backlog(c: &mut Connection) -> Result<(u64, Option<u64>), StoreError> {
    let (n, oldest): (i64, Option<i64>) = c
        .query_row(
            "SELECT count(*), min(first_failed_at) FROM webhook_cursors WHERE attempts > 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, None));
    Ok((count(n), oldest.map(count)))
}

#[async_trait::async_trait]
impl crate::store::webhooks::WebhookStore for super::SqliteStore {
    async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.read(endpoints).await
    }

    async fn put_webhook_endpoint(&self, e: &Endpoint, now_ms: u64) -> Result<(), StoreError> {
        let e = e.clone();
        self.write(move |c| put_endpoint(c, &e, now_ms)).await
    }

    async fn remove_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |c| remove_endpoint(c, &id)).await
    }

    async fn claim_webhooks(
        &self,
        node: &str,
        now_ms: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        // Read first: a round that finds nothing due writes nothing.
        if self.read(move |c| due(c, now_ms, limit)).await?.is_empty() {
            return Ok(Vec::new());
        }
        let node = node.to_owned();
        self.write_unflushed(move |c| claim(c, &node, now_ms, lease_until, limit))
            .await
    }

    async fn webhook_records(
        &self,
        sid: i64,
        after: u64,
        upto: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<HookRecord>, bool), StoreError> {
        self.read(move |c| records(c, sid, after, upto, limit, max_bytes))
            .await
    }

    async fn webhook_tried(
        &self,
        node: &str,
        tries: Vec<(Due, Outcome)>,
    ) -> Result<(), StoreError> {
        if tries.is_empty() {
            return Ok(());
        }
        let node = node.to_owned();
        self.write_unflushed(move |c| tried(c, &node, &tries)).await
    }

    async fn webhook_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|c| dead_letters(c, false)).await
    }

    async fn replay_webhook(&self, id: i64) -> Result<bool, StoreError> {
        self.write(move |c| replay(c, id)).await
    }

    async fn take_webhook_replays(&self) -> Result<Vec<DeadLetter>, StoreError> {
        // Read first: a round that finds none writes nothing.
        if self.read(|c| dead_letters(c, true)).await?.is_empty() {
            return Ok(Vec::new());
        }
        self.write_unflushed(|c| {
            let taken = dead_letters(c, true)?;
            c.execute("UPDATE webhook_dead SET replay = 0 WHERE replay = 1", [])?;
            Ok(taken)
        })
        .await
    }

    async fn webhook_replayed(&self, id: i64, error: Option<&str>) -> Result<(), StoreError> {
        let error = error.map(str::to_owned);
        self.write_unflushed(move |c| replayed(c, id, error.as_deref()))
            .await
    }

    async fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError> {
        self.read(backlog).await
    }
}
