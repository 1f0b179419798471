//! Live queries in the native client (`Replica::watch`,
//! docs/live-queries.md), each figure beside a baseline from the same run:
//!
//! - update: 10,000 records and 20 watched queries (filters and orders on
//!   indexed fields, the browser benchmark's twenty); a local write and the
//!   update of every watch it touches (`Replica::patch` returns after
//!   both), against the same write followed by re-running the 20 queries
//!   (`Replica::list`), and the write with nothing watching.
//! - indexed read: 1,000 matching records of 100,000 by `=` on an indexed
//!   field, against the same query on a field without an index.

use std::time::{Duration, Instant};

use clap::Args;
use ferry_client::typed::HeldSchema;
use ferry_client::{Query, Replica, ReplicaConfig, Watch};
use ferry_core::schema::Schema;
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Records of the update measurement.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Local writes timed.
    #[arg(long, default_value_t = 500)]
    writes: usize,
    /// Records of the indexed read.
    #[arg(long, default_value_t = 100_000)]
    big: usize,
}

const SCHEMA: &str = r#"{"collections": {"todos": {"fields": {
    "title": {"type": "string"}, "list": {"type": "string", "index": true},
    "copy": {"type": "string"}, "priority": {"type": "integer", "index": true},
    "done": {"type": "boolean"}}}}}"#;

/// The browser benchmark's twenty queries (bench/browser/live.ts).
fn queries() -> Vec<Value> {
    (0..20)
        .map(|k| match k % 4 {
            0 => json!({"where": [["priority", "=", k % 10]], "orderBy": [["title", "asc"]], "limit": 50}),
            1 => json!({"where": [["list", "=", format!("list-{k}")]],
                        "orderBy": [["priority", "desc"], ["title", "asc"]]}),
            2 => json!({"where": [["priority", ">=", 8], ["done", "=", false]],
                        "orderBy": [["priority", "asc"]], "limit": 20, "offset": k}),
            _ => json!({"where": [["list", "in", [format!("list-{k}"), format!("list-{}", k + 1)]]],
                        "orderBy": [["title", "desc"]]}),
        })
        .collect()
}

fn filled(
    dir: &tempfile::TempDir,
    name: &str,
    n: usize,
    lists: usize,
) -> anyhow::Result<(Replica, SpaceId, Collection)> {
    let r = Replica::open(dir.path().join(name), ReplicaConfig::default())?;
    r.hold_app_schema(HeldSchema {
        version: 1,
        schema: Some(Schema::parse(SCHEMA)?),
    })?;
    let (space, todos) = (SpaceId::new("user:bench")?, Collection::new("todos")?);
    for i in 0..n {
        let list = format!("list-{}", i % lists.max(1));
        let fields = json!({"title": format!("Item {i}"), "list": list, "copy": list,
                            "priority": i % 10, "done": i % 3 == 0});
        r.put(&space, &todos, &record(i)?, as_map(fields))?;
    }
    Ok((r, space, todos))
}

fn record(i: usize) -> anyhow::Result<RecordId> {
    Ok(RecordId::new(format!("t-{i:08}"))?)
}

fn as_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The `i`th write: a record's list or its priority.
fn write(
    r: &Replica,
    space: &SpaceId,
    todos: &Collection,
    i: usize,
    n: usize,
) -> anyhow::Result<()> {
    let fields = if i % 2 == 1 {
        json!({"priority": (i * 3) % 10})
    } else {
        json!({"list": format!("list-{}", i % 20), "copy": format!("list-{}", i % 20)})
    };
    r.patch(
        space,
        todos,
        &record((i * 7919) % n.max(1))?,
        as_map(fields),
    )?;
    Ok(())
}

fn percentile(xs: &mut [Duration], p: f64) -> f64 {
    xs.sort();
    let i = ((p / 100.0) * xs.len() as f64) as usize;
    xs.get(i.min(xs.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub async fn run(args: LiveArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (r, space, todos) = filled(&dir, "live.db", args.records, 20)?;
    let qs: Vec<Query> = queries()
        .iter()
        .map(Query::from_json)
        .collect::<Result<_, _>>()?;

    let mut plain = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        let start = Instant::now();
        write(&r, &space, &todos, 2 * args.writes + i, args.records)?;
        plain.push(start.elapsed());
    }

    let watches: Vec<Watch> = qs
        .iter()
        .map(|q| r.watch(&space, &todos, q))
        .collect::<Result<_, _>>()?;
    let mut watched = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        let start = Instant::now();
        write(&r, &space, &todos, i, args.records)?;
        watched.push(start.elapsed());
    }
    let rows: usize = watches.iter().map(|w| w.current().rows.len()).sum();
    drop(watches);

    let mut rerun = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        let start = Instant::now();
        write(&r, &space, &todos, args.writes + i, args.records)?;
        for q in &qs {
            r.list(&space, &todos, q)?;
        }
        rerun.push(start.elapsed());
    }

    let (big, space, todos) = filled(&dir, "big.db", args.big, (args.big / 1000).max(1))?;
    let (mut indexed, mut scanned) = (Vec::new(), Vec::new());
    let mut matched = 0;
    for i in 0..5 {
        let list = format!("list-{i}");
        let start = Instant::now();
        matched = big
            .list(
                &space,
                &todos,
                &Query::new().filter("list", ferry_client::Op::Eq, list.as_str()),
            )?
            .len();
        indexed.push(start.elapsed());
        let start = Instant::now();
        big.list(
            &space,
            &todos,
            &Query::new().filter("copy", ferry_client::Op::Eq, list.as_str()),
        )?;
        scanned.push(start.elapsed());
    }

    println!(
        "live queries (native), {} records, 20 watches ({rows} rows shown), {} local writes (ms)",
        args.records, args.writes
    );
    println!("{:<44} {:>10} {:>10}", "", "p50", "p99");
    let (w50, w99) = (
        percentile(&mut watched, 50.0),
        percentile(&mut watched, 99.0),
    );
    let (r50, r99) = (percentile(&mut rerun, 50.0), percentile(&mut rerun, 99.0));
    let (p50, p99) = (percentile(&mut plain, 50.0), percentile(&mut plain, 99.0));
    println!(
        "{:<44} {w50:>10.3} {w99:>10.3}",
        "write + every watch updated"
    );
    println!(
        "{:<44} {r50:>10.3} {r99:>10.3}",
        "write + re-running the 20 queries (baseline)"
    );
    println!(
        "{:<44} {p50:>10.3} {p99:>10.3}",
        "write alone, nothing watched"
    );
    println!(
        "{:<44} {:>10.3} {:>10.3}",
        "ratio watched / re-run",
        w50 / r50,
        w99 / r99
    );
    println!(
        "indexed read: {matched} of {} records (ms, median of 5)",
        args.big
    );
    let (i50, s50) = (
        percentile(&mut indexed, 50.0),
        percentile(&mut scanned, 50.0),
    );
    println!(
        "{:<44} {i50:>10.3} {s50:>10.3}",
        "through the index / without (baseline)"
    );
    println!("{:<44} {:>10.3}", "ratio indexed / scan", i50 / s50);
    Ok(())
}
