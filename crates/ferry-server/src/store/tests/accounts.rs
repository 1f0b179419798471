//! Storage tests of users, spaces, members, keys and sign-in tokens.

use std::sync::Arc;

use super::*;
use crate::store::{Store, StoreError};

pub async fn users_get_a_personal_space_once(store: Arc<dyn Store>) {
    let u = user("u1");
    store.ensure_user(&u).await.unwrap();
    store.ensure_user(&u).await.unwrap();
    let spaces = store.spaces_of(&u).await.unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0].id.as_str(), "user:u1");
    assert_eq!(spaces[0].role, Role::Owner);
}

pub async fn users_by_email_are_found_again(store: Arc<dyn Store>) {
    let first = store
        .user_by_email("ada@example.com", &user("a1"))
        .await
        .unwrap();
    let again = store
        .user_by_email("ada@example.com", &user("a2"))
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(first.id.as_str(), "a1");
    assert_eq!(store.spaces_of(&first.id).await.unwrap().len(), 1);
}

pub async fn space_ids_are_unique(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    let err = store
        .create_space(&s, "Again", &user("owner"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub async fn members_and_the_last_owner(store: Arc<dyn Store>) {
    let s = team(store.as_ref()).await;
    store.ensure_user(&user("bob")).await.unwrap();
    store
        .set_member(&s, &user("bob"), Role::Viewer)
        .await
        .unwrap();
    assert_eq!(
        store.role(&s, &user("bob")).await.unwrap(),
        Some(Role::Viewer)
    );
    assert_eq!(store.members(&s).await.unwrap().len(), 2);
    // The only owner can neither leave nor be demoted.
    assert!(matches!(
        store.remove_member(&s, &user("owner")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_member(&s, &user("owner"), Role::Editor).await,
        Err(StoreError::Conflict(_))
    ));
    // With a second owner, the first may go.
    store
        .set_member(&s, &user("bob"), Role::Owner)
        .await
        .unwrap();
    store.remove_member(&s, &user("owner")).await.unwrap();
    assert_eq!(store.role(&s, &user("owner")).await.unwrap(), None);
    assert!(matches!(
        store.set_member(&s, &user("nobody"), Role::Editor).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.remove_member(&s, &user("owner")).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn signing_keys_are_created_once(store: Arc<dyn Store>) {
    let key = |kid: &str| crate::store::StoredKey {
        kid: kid.into(),
        private_pkcs8: vec![1, 2, 3],
        created_at_ms: 1,
    };
    let first = store.signing_keys(key("k1")).await.unwrap();
    let second = store.signing_keys(key("k2")).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(second, first, "the first node's key wins");
}

pub async fn a_login_token_is_redeemed_once(store: Arc<dyn Store>) {
    store
        .create_login_token("h1", "ada@example.com", 10_000)
        .await
        .unwrap();
    store
        .create_login_token("h2", "bob@example.com", 10_000)
        .await
        .unwrap();
    // Expired at 10 s.
    assert_eq!(store.redeem_login_token("h2", 10_000).await.unwrap(), None);
    assert_eq!(store.redeem_login_token("nope", 1).await.unwrap(), None);
    // Of concurrent redemptions, exactly one wins.
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_login_token("h1", 5_000).await.unwrap() })
        })
        .collect();
    let mut wins = Vec::new();
    for t in tries {
        wins.extend(t.await.unwrap());
    }
    assert_eq!(wins, ["ada@example.com"]);
    assert_eq!(store.redeem_login_token("h1", 5_001).await.unwrap(), None);
}

pub async fn refresh_tokens_rotate_and_reuse_revokes_the_family(store: Arc<dyn Store>) {
    use crate::store::{RefreshToken, Rotation};
    let u = user("u1");
    store.ensure_user(&u).await.unwrap();
    let first = RefreshToken {
        hash: "r1".into(),
        family: "f1".into(),
        user: u.clone(),
        expires_at_ms: 100_000,
    };
    store.create_refresh_token(&first).await.unwrap();
    let rotated = store
        .rotate_refresh_token("r1", "r2", 200_000, 1_000)
        .await
        .unwrap();
    assert_eq!(rotated, Rotation::Rotated { user: u.clone() });
    // r1 again: stolen, so the whole family goes, r2 included (revoked,
    // never used: its session is signed out).
    assert_eq!(
        store
            .rotate_refresh_token("r1", "r3", 200_000, 2_000)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        store
            .rotate_refresh_token("r2", "r4", 200_000, 3_000)
            .await
            .unwrap(),
        Rotation::Revoked
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "r5", 200_000, 3_000)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    // Expiry, and logout.
    let other = RefreshToken {
        hash: "s1".into(),
        family: "f2".into(),
        user: u.clone(),
        expires_at_ms: 5_000,
    };
    store.create_refresh_token(&other).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("s1", "s2", 9_000, 5_000)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    let third = RefreshToken {
        hash: "t1".into(),
        family: "f3".into(),
        user: u,
        expires_at_ms: 100_000,
    };
    store.create_refresh_token(&third).await.unwrap();
    store.revoke_refresh_family("t1", 1_000).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("t1", "t2", 200_000, 2_000)
            .await
            .unwrap(),
        Rotation::Revoked
    );
}

pub async fn an_external_identity_is_one_user(store: Arc<dyn Store>) {
    let first = store
        .user_for_identity("https://idp", "sub-1", Some("ada@example.com"), &user("n1"))
        .await
        .unwrap();
    assert_eq!(first.id.as_str(), "n1");
    assert_eq!(first.email.as_deref(), Some("ada@example.com"));
    assert_eq!(
        store.spaces_of(&first.id).await.unwrap()[0].id.as_str(),
        "user:n1"
    );
    let again = store
        .user_for_identity("https://idp", "sub-1", None, &user("n2"))
        .await
        .unwrap();
    assert_eq!(again, first);
    // The same subject at another issuer is someone else; an email already
    // taken is not recorded twice.
    let other = store
        .user_for_identity(
            "https://other",
            "sub-1",
            Some("ada@example.com"),
            &user("n3"),
        )
        .await
        .unwrap();
    assert_eq!(other.id.as_str(), "n3");
    assert_eq!(other.email, None);
}
