//! A client against a server before protocol v1.2 (an old node during an
//! upgrade): such a server refuses changes that carry bases, and the
//! client sends the same batch again without them, losing nothing. The
//! old server here is a stand-in on 127.0.0.1, port 0, answering as v1.1
//! does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ferry_client::{Remote, Replica, ReplicaConfig, Token, sync_space};
use ferry_core::{Collection, RecordId, SpaceId};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

/// v1.1's answer: a change with a key it does not know is refused.
async fn sync(State(seen): State<Seen>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    seen.lock().unwrap().push(body.clone());
    let changes = body["changes"].as_array().cloned().unwrap_or_default();
    if changes.iter().any(|c| c.get("base").is_some()) {
        let message = "change 0: unknown field `base`, expected one of `collection`, `id`, \
                       `fields` at line 1 column 120";
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "invalid_change", "message": message}})),
        );
    }
    let answer = json!({"applied": changes.len(), "conflicts": [], "changes": [],
        "cursor": 0, "has_more": false, "hlc": "001763798400000:00000:old-node"});
    (StatusCode::OK, Json(answer))
}

#[tokio::test]
async fn a_batch_refused_for_its_bases_is_sent_again_without_them() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/v1/spaces/{space}/sync", post(sync))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r.db"), ReplicaConfig::default()).unwrap();
    let space = SpaceId::new("team").unwrap();
    let (notes, n1) = (
        Collection::new("notes").unwrap(),
        RecordId::new("n1").unwrap(),
    );
    replica
        .put(&space, &notes, &n1, json!({"title": "a"}))
        .unwrap();
    replica
        .patch(&space, &notes, &n1, json!({"title": "b"}))
        .unwrap();
    let remote = Remote::new(&base, Arc::new(Token("t".into()))).unwrap();
    let report = sync_space(&replica, &remote, &space).await.unwrap();
    assert_eq!((report.pushed, report.rejected), (2, 0), "{report:?}");
    assert_eq!(replica.pending().unwrap(), 0);
    assert!(replica.rejected().unwrap().is_empty());
    // Refused once with bases, then the same batch (same id, same
    // changes) without them.
    let pushes: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["changes"].as_array().is_some_and(|c| !c.is_empty()))
        .cloned()
        .collect();
    assert_eq!(pushes.len(), 2, "{pushes:#?}");
    assert_eq!(pushes[0]["batch_id"], pushes[1]["batch_id"]);
    assert!(pushes[0]["changes"][1]["base"].is_object());
    let mut without = pushes[0]["changes"].clone();
    for c in without.as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("base");
    }
    assert_eq!(pushes[1]["changes"], without);
}
