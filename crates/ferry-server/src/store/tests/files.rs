//! The files spaces hold (docs/files.md §3).

use std::sync::Arc;

use ferry_core::Sha256Hex;

use super::{space, team, user};
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
