//! What every device's conflicts inbox must hold once everything has
//! synced, from the writes made (each with the bases its replica sent):
//!
//! - told: each device's last write to a field that did not end up
//!   current, when no write was made knowing it (no other write's base is
//!   its HLC): a `stale_write` about that field with that write as
//!   `yours`; on a record deleted in the end, when the device did not
//!   delete it itself and its write was the field's newest and no delete
//!   or write was made knowing it, a `record_deleted` holding it;
//! - nothing false: every `stale_write` is a write of the device that a
//!   write of another device replaced without having seen it (a higher
//!   HLC whose base was older, or none), with a newer winner; every
//!   `record_deleted` is about a record deleted in the end and holds only
//!   writes the device made;
//! - once: one entry per field (or deleted record), which the inbox's
//!   folding keeps, and the checks above pin to the right write.
//!
//! The simulation never settles conflicts, so the inbox holds everything
//! it was told.

use std::collections::BTreeMap;

use ferry_client::Replica;
use ferry_core::conflict::lost_fields;
use ferry_core::{Change, ConflictKind, Hlc};
use serde_json::Value;

/// One field write: `(record, field)` and its value, HLC and base.
struct FieldWrite {
    value: Value,
    hlc: Hlc,
    base: Option<Hlc>,
}

type Key = (String, String);

/// A delete: its author, and its base (field to the HLC it had seen).
type Delete = (String, BTreeMap<String, Option<Hlc>>);

struct History {
    /// Every upsert's field writes, by record and field.
    fields: BTreeMap<Key, Vec<FieldWrite>>,
    /// Per record, each delete: its author and its bases.
    deletes: BTreeMap<String, Vec<Delete>>,
}

fn history(writes: &[Change]) -> History {
    let mut h = History {
        fields: BTreeMap::new(),
        deletes: BTreeMap::new(),
    };
    for change in writes {
        match change {
            Change::Upsert {
                id, fields, base, ..
            } => {
                for (name, f) in fields {
                    let base = base.as_ref().and_then(|b| b.get(name).cloned().flatten());
                    h.fields
                        .entry((id.to_string(), name.to_string()))
                        .or_default()
                        .push(FieldWrite {
                            value: f.value.clone(),
                            hlc: f.hlc.clone(),
                            base,
                        });
                }
            }
            Change::Delete { id, hlc, base, .. } => {
                let base = base
                    .iter()
                    .flatten()
                    .map(|(n, b)| (n.to_string(), b.clone()))
                    .collect();
                h.deletes
                    .entry(id.to_string())
                    .or_default()
                    .push((hlc.node().to_string(), base));
            }
        }
    }
    h
}

/// Whether some other device's write to `key` replaced `w` not having
/// seen it: a higher HLC whose base is older than `w`, or none.
fn lost_unseen(h: &History, key: &Key, w: &FieldWrite) -> bool {
    h.fields[key].iter().any(|x| {
        x.hlc > w.hlc && x.hlc.node() != w.hlc.node() && x.base.as_ref().is_none_or(|b| *b < w.hlc)
    })
}

/// Whether a write or a delete was made knowing `w` (its base is `w`).
fn seen(h: &History, key: &Key, w: &FieldWrite) -> bool {
    h.fields[key]
        .iter()
        .any(|x| x.base.as_ref() == Some(&w.hlc))
        || h.deletes.get(&key.0).is_some_and(|ds| {
            ds.iter()
                .any(|(_, base)| base.get(&key.1).cloned().flatten().as_ref() == Some(&w.hlc))
        })
}

/// Checks `replica`'s inbox (device `me`) against the writes made and the
/// records the server holds in the end (`live`: id to field to HLC).
pub fn check(
    seed: u64,
    me: &str,
    replica: &Replica,
    writes: &[Change],
    live: &BTreeMap<String, BTreeMap<String, Hlc>>,
) {
    let h = history(writes);
    let inbox = replica.conflicts().unwrap();
    let mut stale: BTreeMap<Key, Hlc> = BTreeMap::new();
    let mut deleted: BTreeMap<String, BTreeMap<String, Hlc>> = BTreeMap::new();
    for entry in &inbox {
        let c = &entry.conflict;
        let id = c.id.to_string();
        let yours = c.yours.as_ref().unwrap_or_else(|| {
            panic!("seed {seed}: {me} holds a conflict without its values: {c:?}")
        });
        match c.kind {
            ConflictKind::StaleWrite => {
                let key = (id, c.field.as_ref().unwrap().to_string());
                let w = h.fields.get(&key).and_then(|ws| {
                    ws.iter()
                        .find(|w| w.hlc == yours.hlc && w.value == yours.value)
                });
                let w = w.unwrap_or_else(|| panic!("seed {seed}: {me} holds {c:?}, never written"));
                assert_eq!(
                    w.hlc.node().as_str(),
                    me,
                    "seed {seed}: not {me}'s write: {c:?}"
                );
                assert!(
                    lost_unseen(&h, &key, w),
                    "seed {seed}: {me} is told of a write nothing concurrent replaced: {c:?}"
                );
                let winner = c.winner.as_ref().unwrap();
                assert!(winner.hlc > yours.hlc, "seed {seed}: {c:?}");
                assert!(
                    stale.insert(key, w.hlc.clone()).is_none(),
                    "seed {seed}: {me} holds two entries about one field: {inbox:?}"
                );
            }
            ConflictKind::RecordDeleted => {
                assert!(
                    !live.contains_key(&id),
                    "seed {seed}: {me} is told {id} was deleted; it lives"
                );
                let mut lost = BTreeMap::new();
                for (name, f) in lost_fields(yours) {
                    let key = (id.clone(), name.to_string());
                    let made = h.fields.get(&key).is_some_and(|ws| {
                        ws.iter().any(|w| {
                            w.hlc == f.hlc && w.value == f.value && w.hlc.node().as_str() == me
                        })
                    });
                    assert!(
                        made,
                        "seed {seed}: {me} is given back {name} it never wrote: {c:?}"
                    );
                    lost.insert(name.to_string(), f.hlc);
                }
                assert!(
                    deleted.insert(id, lost).is_none(),
                    "seed {seed}: {me} holds two entries about one deleted record: {inbox:?}"
                );
            }
        }
    }

    // Told: the last write of this device to each field.
    let mut last: BTreeMap<&Key, &FieldWrite> = BTreeMap::new();
    for (key, ws) in &h.fields {
        if let Some(w) = ws
            .iter()
            .filter(|w| w.hlc.node().as_str() == me)
            .max_by(|a, b| a.hlc.cmp(&b.hlc))
        {
            last.insert(key, w);
        }
    }
    for (key, w) in last {
        if seen(&h, key, w) {
            continue;
        }
        match live.get(&key.0) {
            Some(fields) => {
                if fields.get(&key.1) != Some(&w.hlc) {
                    assert_eq!(
                        stale.get(key),
                        Some(&w.hlc),
                        "seed {seed}: {me}'s write to {key:?} lost, unseen, and it was not told"
                    );
                }
            }
            None => {
                let newest = h.fields[key].iter().all(|x| x.hlc <= w.hlc);
                let own_delete = h
                    .deletes
                    .get(&key.0)
                    .is_some_and(|ds| ds.iter().any(|(by, _)| by == me));
                if newest && !own_delete {
                    assert_eq!(
                        deleted.get(&key.0).and_then(|lost| lost.get(&key.1)),
                        Some(&w.hlc),
                        "seed {seed}: {me}'s write to {key:?} went with the record's delete, \
                         unseen, and it was not kept"
                    );
                }
            }
        }
    }
}

/// The records the server holds, as id to field to HLC.
pub fn live_hlcs(
    on_server: &BTreeMap<String, BTreeMap<String, (Value, Hlc)>>,
) -> BTreeMap<String, BTreeMap<String, Hlc>> {
    on_server
        .iter()
        .map(|(id, fields)| {
            let f = fields
                .iter()
                .map(|(n, (_, h))| (n.clone(), h.clone()))
                .collect();
            (id.clone(), f)
        })
        .collect()
}

/// How many conflicts the inboxes hold.
pub fn count(replicas: &[&Replica]) -> u64 {
    replicas
        .iter()
        .map(|r| r.conflicts().unwrap().len() as u64)
        .sum()
}
