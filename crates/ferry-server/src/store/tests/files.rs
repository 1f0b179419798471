//! The files spaces hold (docs/files.md §3).

use std::sync::Arc;

use ferry_core::Sha256Hex;

use super::{delete, hlc, push, space, team, upsert, user};
use crate::store::files::{Added, StoredFile};
use crate::store::{Store, StoreError};

fn hash(n: u8) -> Sha256Hex {
    Sha256Hex::from_digest(&[n; 32])
}

fn file(n: u8, size: u64, by: &str) -> StoredFile {
    StoredFile {
        sha256: hash(n),
        size,
        media_type: "image/png".into(),
        name: Some(format!("{n}.png")),
        object: format!("objects/{n}"),
        uploaded_by: user(by),
        created_at: 1_000 + u64::from(n),
        unreferenced_since: None,
    }
}

pub async fn a_space_holds_each_file_once_within_its_uploaders_quota(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let other = space("other");
    store
        .create_space(&other, "Other", &user("owner"))
        .await
        .unwrap();
    assert_eq!(store.file(&s, &hash(1)).await.unwrap(), None);

    let one = file(1, 600, "owner");
    assert_eq!(
        store.add_file(&s, &one, 1_000).await.unwrap(),
        Added::New(one.clone())
    );
    assert_eq!(store.file(&s, &hash(1)).await.unwrap(), Some(one.clone()));
    // The same bytes again: the one held is kept, as it was.
    let again = StoredFile {
        object: "objects/another".into(),
        ..one.clone()
    };
    assert_eq!(
        store.add_file(&s, &again, 1_000).await.unwrap(),
        Added::Held(one.clone())
    );
    // Another space does not hold it, and holding it there counts again.
    assert_eq!(store.file(&other, &hash(1)).await.unwrap(), None);
    assert_eq!(
        store.add_file(&other, &one, 1_000).await.unwrap(),
        Added::OverQuota { used: 600 }
    );
    assert_eq!(store.file(&other, &hash(1)).await.unwrap(), None);
    assert_eq!(store.file_usage(&user("owner")).await.unwrap(), 600);
    let small = file(2, 400, "owner");
    assert_eq!(
        store.add_file(&other, &small, 1_000).await.unwrap(),
        Added::New(small.clone())
    );
    assert_eq!(store.file_usage(&user("owner")).await.unwrap(), 1_000);
    assert_eq!(store.file_usage(&user("nobody")).await.unwrap(), 0);

    // Removed, it gives its bytes back; removed twice, nothing happens.
    assert_eq!(store.remove_file(&s, &hash(1)).await.unwrap(), Some(one));
    assert_eq!(store.remove_file(&s, &hash(1)).await.unwrap(), None);
    assert_eq!(store.file(&s, &hash(1)).await.unwrap(), None);
    assert_eq!(store.file_usage(&user("owner")).await.unwrap(), 400);
    assert_eq!(store.file(&other, &hash(2)).await.unwrap(), Some(small));

    // A space that does not exist holds nothing and takes nothing.
    let nowhere = space("nowhere");
    assert_eq!(store.file(&nowhere, &hash(2)).await.unwrap(), None);
    assert!(matches!(
        store.add_file(&nowhere, &file(3, 1, "owner"), 1_000).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.remove_file(&nowhere, &hash(2)).await.unwrap(), None);
}

fn reference(n: u8) -> serde_json::Value {
    serde_json::json!({"sha256": hash(n).as_str(), "size": 1, "media_type": "image/png"})
}

fn at(n: u8, created_at: u64) -> StoredFile {
    StoredFile {
        created_at,
        ..file(n, 1, "owner")
    }
}

const GRACE: u64 = 10_000;

pub async fn a_file_is_collected_only_after_a_grace_period_unreferenced(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    // Ahead of the clock: a pass marks at the later of its `now` and the
    // time it holds the space's lock.
    let t = crate::clock::wall_ms() + 1_000_000;
    for n in 1..=4 {
        store.add_file(&s, &at(n, t), u64::MAX).await.unwrap();
    }
    // 1 is referenced (nested in a list), 4 by a record whose own fields
    // are its reference, 2 and 3 are not.
    let cover = serde_json::json!([{"caption": "a", "image": reference(1)}]);
    push(
        store.as_ref(),
        &s,
        "c1",
        "b1",
        vec![
            upsert("r", "att", cover, hlc(1, "c1")),
            upsert(
                "whole",
                "sha256",
                serde_json::json!(hash(4).as_str()),
                hlc(1, "c1"),
            ),
        ],
    )
    .await;
    // The first pass marks 2 and 3; nothing is collected before a whole
    // grace period.
    assert_eq!(store.collect_files(t, t - GRACE).await.unwrap(), vec![]);
    assert_eq!(
        store
            .file(&s, &hash(2))
            .await
            .unwrap()
            .unwrap()
            .unreferenced_since,
        Some(t)
    );
    assert_eq!(
        store.collect_files(t + GRACE - 1, t - 1).await.unwrap(),
        vec![]
    );
    // An upload finding 3 held unmarks it: it has a grace period again.
    assert!(matches!(
        store.add_file(&s, &at(3, t + 5), u64::MAX).await.unwrap(),
        Added::Held(_)
    ));
    let swept = store.collect_files(t + GRACE, t).await.unwrap();
    assert_eq!(
        swept.iter().map(|f| f.sha256.clone()).collect::<Vec<_>>(),
        vec![hash(2)]
    );
    assert_eq!(store.file(&s, &hash(2)).await.unwrap(), None);
    assert_eq!(store.file_usage(&user("owner")).await.unwrap(), 3);
    // Released by an overwrite, 1 goes a grace period after the pass that
    // saw it released; 3, asked for again (touched), waits again.
    push(
        store.as_ref(),
        &s,
        "c1",
        "b2",
        vec![upsert("r", "att", serde_json::Value::Null, hlc(2, "c1"))],
    )
    .await;
    assert!(store.touch_file(&s, &hash(3)).await.unwrap().is_some());
    let later = t + 2 * GRACE;
    assert_eq!(
        store.collect_files(later, later - GRACE).await.unwrap(),
        vec![]
    );
    let swept = store.collect_files(later + GRACE, later).await.unwrap();
    let mut gone: Vec<_> = swept.into_iter().map(|f| f.sha256).collect();
    gone.sort();
    assert_eq!(gone, vec![hash(1), hash(3)]);
    assert_eq!(
        store.file_objects().await.unwrap(),
        [at(4, t).object].into_iter().collect()
    );
    assert_eq!(store.touch_file(&s, &hash(1)).await.unwrap(), None);
}

/// A small deterministic generator (xorshift64*), so a failing history is
/// reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The property: over random histories of uploads, asks, writes that
/// reference, overwrite and clear files, deletes, compactions and
/// collector passes with time moving, no pass ever forgets a file that a
/// live record refers to or that was uploaded or asked for within the
/// grace period; and once nothing refers to anything, two passes a grace
/// period apart forget every file.
pub async fn no_collector_pass_forgets_a_referenced_or_recent_file(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    const FILES: u8 = 5;
    const RECORDS: usize = 4;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut now = crate::clock::wall_ms() + 1_000_000 * seed * 100;
        let mut clock = 0;
        // Per record slot: its id's generation (a deleted id stays deleted)
        // and the file it refers to.
        let mut records: Vec<(u32, Option<u8>)> = vec![(0, None); RECORDS];
        let mut relied: [Option<u64>; FILES as usize + 1] = [None; FILES as usize + 1];
        let mut batch = 0;
        for step in 0..60 {
            let what = format!("seed {seed} step {step}");
            let mut push_one = |change| {
                batch += 1;
                let id = format!("{seed}-{batch}");
                let (store, s) = (store.clone(), s.clone());
                async move { push(store.as_ref(), &s, "c1", &id, vec![change]).await }
            };
            clock += 1;
            match rng.below(7) {
                0 => {
                    let n = 1 + rng.below(u64::from(FILES)) as u8;
                    store.add_file(&s, &at(n, now), u64::MAX).await.unwrap();
                    relied[n as usize] = Some(now);
                }
                1 => {
                    let n = 1 + rng.below(u64::from(FILES)) as u8;
                    if store.touch_file(&s, &hash(n)).await.unwrap().is_some() {
                        relied[n as usize] = Some(now);
                    }
                }
                2 | 3 => {
                    let r = rng.below(RECORDS as u64) as usize;
                    let n = rng.below(u64::from(FILES) + 1) as u8;
                    let value = if n == 0 {
                        serde_json::Value::Null
                    } else {
                        reference(n)
                    };
                    let id = format!("r{seed}-{r}-{}", records[r].0);
                    push_one(upsert(&id, "att", value, hlc(clock, "c1"))).await;
                    records[r].1 = (n > 0).then_some(n);
                }
                4 => {
                    let r = rng.below(RECORDS as u64) as usize;
                    let id = format!("r{seed}-{r}-{}", records[r].0);
                    push_one(delete(&id, hlc(clock, "c1"))).await;
                    records[r] = (records[r].0 + 1, None);
                }
                5 => {
                    store.compact(crate::clock::wall_ms() + 1).await.unwrap();
                }
                _ => {
                    let before: Vec<u8> = held(store.as_ref(), &s, FILES).await;
                    let swept = store.collect_files(now, now - GRACE).await.unwrap();
                    for f in &swept {
                        assert!(before.iter().any(|n| hash(*n) == f.sha256), "{what}");
                    }
                    for n in before {
                        let referenced = records.iter().any(|(_, f)| *f == Some(n));
                        let recent = relied[n as usize].is_some_and(|t| t > now - GRACE);
                        if referenced || recent {
                            assert!(
                                store.file(&s, &hash(n)).await.unwrap().is_some(),
                                "{what}: file {n} was collected (referenced {referenced}, recent {recent})"
                            );
                        }
                    }
                }
            }
            now += rng.below(GRACE);
        }
        // Nothing refers to anything: two passes a grace period apart
        // forget every file.
        for (r, (generation, _)) in records.iter().enumerate() {
            let id = format!("r{seed}-{r}-{generation}");
            clock += 1;
            batch += 1;
            push(
                store.as_ref(),
                &s,
                "c1",
                &format!("{seed}-{batch}"),
                vec![delete(&id, hlc(clock, "c1"))],
            )
            .await;
        }
        store.collect_files(now, now - GRACE).await.unwrap();
        store.collect_files(now + GRACE, now).await.unwrap();
        assert_eq!(
            held(store.as_ref(), &s, FILES).await,
            Vec::<u8>::new(),
            "seed {seed}"
        );
    }
    assert_eq!(store.file_usage(&user("owner")).await.unwrap(), 0);
}

/// The files among 1..=`most` that `s` holds.
async fn held(store: &dyn Store, s: &ferry_core::SpaceId, most: u8) -> Vec<u8> {
    let mut found = Vec::new();
    for n in 1..=most {
        if store.file(s, &hash(n)).await.unwrap().is_some() {
            found.push(n);
        }
    }
    found
}

/// A file belongs to its space: a reference in one space keeps that
/// space's copy, never another's of the same bytes.
pub async fn a_reference_keeps_only_its_own_space_s_copy(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let other = super::space("other");
    store
        .create_space(&other, "Other", &user("owner"))
        .await
        .unwrap();
    let t = crate::clock::wall_ms() + 1_000_000;
    store.add_file(&s, &at(1, t), u64::MAX).await.unwrap();
    store.add_file(&other, &at(1, t), u64::MAX).await.unwrap();
    push(
        store.as_ref(),
        &s,
        "c1",
        "b1",
        vec![upsert("r", "att", reference(1), hlc(1, "c1"))],
    )
    .await;
    store.collect_files(t, t - GRACE).await.unwrap();
    let swept = store.collect_files(t + GRACE, t).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert!(store.file(&s, &hash(1)).await.unwrap().is_some());
    assert_eq!(store.file(&other, &hash(1)).await.unwrap(), None);
}
