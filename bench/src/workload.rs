//! The records every benchmark writes, and the stores it writes them to.

use std::sync::Arc;

use ferry_core::protocol::BatchId;
use ferry_core::{Change, ClientId, Collection, FieldName, FieldValue, Hlc, RecordId, UserId};
use ferry_server::Store;
use ferry_server::store::Batch;
use ferry_server::testing::{self, Guard};
use serde_json::{Map, Value, json};

/// Which store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL of `FERRY_TEST_POSTGRES`
    /// (default postgres://postgres@127.0.0.1:5432/postgres).
    Postgres,
}

/// A fresh, empty store; dropping the guard removes it.
pub async fn fresh(backend: Backend) -> (Arc<dyn Store>, Guard) {
    match backend {
        Backend::Sqlite => testing::fresh_sqlite().await,
        Backend::Postgres => testing::fresh_postgres().await,
    }
}

/// The HLC of every write: one moment on one node.
pub fn hlc() -> anyhow::Result<Hlc> {
    Ok(Hlc::zero(ClientId::new("bench")?).tick(1_763_798_400_000))
}

/// Record `i`'s 4 fields, about 100 bytes of values.
pub fn fields(i: usize) -> [(&'static str, Value); 4] {
    [
        ("title", json!(format!("Buy {i} things at the corner shop"))),
        ("done", json!(i.is_multiple_of(3))),
        ("priority", json!(i % 5)),
        ("list", json!(format!("groceries-{}", i % 17))),
    ]
}

/// A strict schema of 10 fields for the collection the workload writes,
/// the 4 it writes among them (two required), with the checks an app's
/// schema makes: lengths, bounds, a reference's shape.
pub fn schema() -> anyhow::Result<ferry_core::schema::Schema> {
    let json = json!({"collections": {
        "lists": {"fields": {"name": {"type": "string"}}},
        "todos": {"mode": "strict", "fields": {
            "title": {"type": "string", "max_length": 500, "required": true},
            "done": {"type": "boolean", "required": true},
            "priority": {"type": "integer", "min": 0, "max": 10},
            "list": {"type": "ref", "collection": "lists"},
            "note": {"type": "string", "max_length": 10000},
            "due": {"type": "timestamp"},
            "estimate": {"type": "number", "min": 0},
            "tags": {"type": "array", "items": "string", "max_items": 20},
            "state": {"type": "enum", "values": ["open", "blocked", "closed"]},
            "extra": {"type": "json"}
        }}
    }});
    Ok(ferry_core::schema::Schema::parse(&json.to_string())?)
}

/// [`schema`], with its todos mirrored into a table of the app's
/// (`public.todos`, docs/tables.md).
pub fn mirrored_schema() -> anyhow::Result<ferry_core::schema::Schema> {
    let mut schema = serde_json::to_value(schema()?)?;
    schema["collections"]["todos"]["table"] = json!("todos");
    Ok(ferry_core::schema::Schema::parse(&schema.to_string())?)
}

/// Record `i`'s id.
pub fn record_id(i: usize) -> String {
    format!("todo-{i:08}")
}

/// Record `i`'s fields as Ferry stores them: `{name: {value, hlc}}`.
pub fn stored_fields(i: usize, h: &Hlc) -> anyhow::Result<String> {
    let map: Map<String, Value> = fields(i)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), json!({"value": v, "hlc": h.to_string()})))
        .collect();
    Ok(serde_json::to_string(&map)?)
}

/// Batch `b` of `size` upserts of new records.
pub fn batch(b: usize, size: usize, h: &Hlc) -> anyhow::Result<Batch> {
    let changes = (0..size)
        .map(|k| {
            let i = b * size + k;
            Ok(Change::Upsert {
                collection: Collection::new("todos")?,
                id: RecordId::new(record_id(i))?,
                fields: fields(i)
                    .into_iter()
                    .map(|(n, value)| {
                        let hlc = h.clone();
                        Ok((FieldName::new(n)?, FieldValue { value, hlc }))
                    })
                    .collect::<anyhow::Result<_>>()?,
                base: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Batch {
        user: UserId::new("bench")?,
        client_id: ClientId::new("bench")?,
        batch_id: Some(BatchId::new(format!("b{b}"))?),
        cursor: None,
        changes,
        schema: None,
        actor: None,
    })
}

/// The space benchmarks write to, with its user.
pub async fn space(store: &dyn Store) -> anyhow::Result<ferry_core::SpaceId> {
    let user = UserId::new("bench")?;
    store.ensure_user(&user).await?;
    Ok(user.personal_space())
}

/// Min, median and max.
pub fn min_median_max(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

/// Prints one row of figures.
pub fn row(name: &str, xs: Vec<f64>, decimals: usize) {
    let (lo, mid, hi) = min_median_max(xs);
    println!("{name:<28} {lo:>12.decimals$} {mid:>12.decimals$} {hi:>12.decimals$}");
}

/// Prints the header of a table of figures.
pub fn header(unit: &str) {
    println!("{unit:<28} {:>12} {:>12} {:>12}", "min", "median", "max");
}

/// A sync request pushing record `n` alone, as batch `{prefix}{n}` of the
/// client `bench` (the node of its HLC), with the cursor and page size given.
pub fn one_record_push(
    n: usize,
    prefix: &str,
    cursor: u64,
    limit: Option<u32>,
) -> anyhow::Result<Value> {
    let h = hlc()?.to_string();
    let fields: Map<String, Value> = fields(n)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!({"value": v, "hlc": h})))
        .collect();
    let mut body = json!({
        "client_id": "bench", "batch_id": format!("{prefix}{n}"), "cursor": cursor,
        "changes": [{"op": "upsert", "collection": "todos", "id": record_id(n), "fields": fields}]
    });
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    Ok(body)
}

/// When `key` showed up in `seen` (filled by a listening task), polling
/// until `deadline`.
pub async fn arrival<K: std::hash::Hash + Eq + std::fmt::Debug>(
    seen: &std::sync::Mutex<std::collections::HashMap<K, std::time::Instant>>,
    key: &K,
    deadline: std::time::Instant,
) -> anyhow::Result<std::time::Instant> {
    loop {
        let got = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(key)
            .copied();
        match got {
            Some(t) => return Ok(t),
            None if std::time::Instant::now() > deadline => {
                anyhow::bail!("{key:?} never arrived")
            }
            None => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    }
}

/// A command running `program`, on `cpu` alone (by `taskset`) when one is
/// given.
pub fn on_cpu(program: impl AsRef<std::ffi::OsStr>, cpu: Option<usize>) -> std::process::Command {
    match cpu {
        Some(cpu) => {
            let mut taskset = std::process::Command::new("taskset");
            taskset.arg("-c").arg(cpu.to_string()).arg(program);
            taskset
        }
        None => std::process::Command::new(program),
    }
}
