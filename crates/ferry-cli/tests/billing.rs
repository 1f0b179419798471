//! The billing gate end to end: `ferry serve --billing-required-plan pro`,
//! a signed Stripe webhook, `ferry admin entitlement`, and a native client
//! whose sync is paused by the gate while its local work goes on, then
//! resumes with nothing lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Db, Server, ferry, now_ms};
use ferry_client::{Remote, Replica, ReplicaConfig, State, SyncConfig, Syncer, Token};
use ferry_core::{Collection, RecordId, SpaceId};
use ferry_server::billing::signature::sign;
use serde_json::{Value, json};

const SECRET: &str = "whsec_e2e_7c41d9a0b3";

fn admin(server_db: &Db, args: &[&str]) -> String {
    let out = ferry()
        .args(["admin", "entitlement"])
        .args(args)
        .args(server_db.args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn support_staff_and_webhooks_open_the_gate_and_clients_lose_nothing_meanwhile() {
    let db = Db::new().await;
    let server = Server::start_with(
        &db,
        &[
            "--billing-required-plan",
            "pro",
            "--stripe-webhook-secret",
            SECRET,
            "--billing-plans",
            "price_pro_monthly=pro, price_pro_yearly=pro",
            "--billing-file-quotas",
            "pro=40, free=10",
        ],
    );
    let token = server.token("ada@example.com");
    let client = server.client(&token);
    let ada = client.user_id().await;
    let space = format!("user:{ada}");
    let (status, body) = client.sync(&space, json!({"client_id": "c"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (402, &json!("payment_required"))
    );
    let (status, me) = client.get("/v1/me").await;
    assert_eq!((status, &me["entitlement"]["sync"]), (200, &json!(false)));
    assert!(admin(&db, &["show", "--email", "ada@example.com"]).contains("free"));

    // A native replica: sync is paused, writes go on and wait.
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let remote = Remote::new(&server.url, Arc::new(Token(token.clone()))).unwrap();
    let space_id = SpaceId::new(space.clone()).unwrap();
    let todos = Collection::new("todos").unwrap();
    let config = SyncConfig {
        realtime: false,
        ..SyncConfig::default()
    };
    let syncer = Syncer::start(replica.clone(), remote, vec![space_id.clone()], config);
    for i in 0..5 {
        let id = RecordId::new(format!("t{i}")).unwrap();
        replica
            .put(&space_id, &todos, &id, json!({"n": i}))
            .unwrap();
    }
    let status = syncer.status();
    eventually(
        "the replica to say paused",
        || matches!(&status.borrow().state, State::Paused { reason } if reason.contains("pro")),
    )
    .await;
    assert_eq!(replica.pending().unwrap(), 5);

    // Support staff grant the plan; the next sync carries everything.
    let out = admin(
        &db,
        &[
            "set",
            "--email",
            "ada@example.com",
            "--plan",
            "pro",
            "--until",
            "2099-12-31",
        ],
    );
    assert!(
        out.contains("pro granted from admin (grant:")
            && out.contains("until 2100-01-01T00:00:00Z"),
        "{out}"
    );
    syncer.sync_now();
    eventually("the outbox to drain", || replica.pending().unwrap() == 0).await;
    let (status, pulled) = client.get(&format!("/v1/spaces/{space}/changes")).await;
    assert_eq!(status, 200);
    assert_eq!(pulled["changes"].as_array().unwrap().len(), 5);

    // A date in the past takes it away again; a Stripe subscription then
    // brings it back, and it is what /v1/me shows.
    admin(
        &db,
        &[
            "set",
            "--email",
            "ada@example.com",
            "--plan",
            "pro",
            "--until",
            "2000-01-01",
        ],
    );
    assert_eq!(client.sync(&space, json!({"client_id": "c"})).await.0, 402);
    let t = now_ms() / 1000;
    let event = serde_json::to_vec(&json!({
        "id": "evt_e2e", "type": "customer.subscription.created", "created": t,
        "data": {"object": {"id": "sub_1", "customer": "cus_ada", "status": "active",
            "created": t, "current_period_end": t + 30 * 86400,
            "metadata": {"user_id": ada},
            "items": {"data": [{"price": {"id": "price_pro_yearly"}}]}}}
    }))
    .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/v1/billing/webhooks/stripe", server.url))
        .header("Stripe-Signature", sign::stripe(SECRET, t, &event))
        .header("Content-Type", "application/json")
        .body(event.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(client.sync(&space, json!({"client_id": "c"})).await.0, 200);
    let (_, me) = client.get("/v1/me").await;
    assert_eq!(me["entitlement"]["provider"], "stripe");
    assert_eq!(me["entitlement"]["customer_id"], "cus_ada");
    let shown = admin(&db, &["show", "--email", "ada@example.com"]);
    assert!(shown.contains("pro active from stripe"), "{shown}");
    assert!(shown.contains("customer cus_ada"), "{shown}");
    // The plan's own file quota holds (the flag's, not the default GiB).
    let bytes = [7u8; 50];
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let res = reqwest::Client::new()
        .put(format!("{}/v1/spaces/{space}/files/{hash}", server.url))
        .bearer_auth(&token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let refused: Value = res.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "quota_exceeded");
    assert_eq!(refused["error"]["details"]["limit"], 40);
    syncer.stop().await;
}
