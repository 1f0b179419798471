//! A burst of concurrent requests over a real socket (127.0.0.1, port 0),
//! as a crowd of devices or an attacker sends them: reads with valid,
//! one-byte-off and foreign tokens all at once. What it may pin: database
//! connections (SQLite keeps at most its bound of readers) and verified
//! tokens (only tokens that passed every check are kept). Each check
//! fails if its bound is removed.

use futures_util::future::join_all;

use super::*;

/// `token` with one character of its signature changed.
fn one_off(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_burst_of_reads_with_forged_tokens_pins_only_its_bounds() {
    let api = Api::new().await;
    api.space("alice", "team").await;
    for n in 0..20 {
        let r = api
            .call(
                Method::PUT,
                &format!("/v1/spaces/team/collections/todos/records/t-{n}"),
                Some("alice"),
                Some(json!({"fields": {"title": format!("todo {n}")}})),
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
    }
    let served = api.serve().await;
    let valid = api.token("alice");
    let forged = one_off(&valid);
    // Signed by another node's keys: well formed, never valid here.
    let foreign = Api::new().await.token("alice");
    let http = reqwest::Client::new();
    // A token of unknown keys makes a node reload its keys once (which
    // starts the verified tokens afresh); that happens here, before the
    // burst, so that the count below is the burst's own.
    let first = http
        .get(format!("{}/v1/spaces", served.base))
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 401);
    let before = api.state.issuer.get().verified_tokens();
    let paths = [
        "/v1/spaces/team/changes?cursor=0",
        "/v1/spaces/team/collections/todos/records?limit=20",
        "/v1/spaces/team/collections/todos/records/t-3",
    ];
    let requests = (0..240).map(|i| {
        let token = match i % 3 {
            0 => valid.clone(),
            1 => forged.clone(),
            _ => foreign.clone(),
        };
        let url = format!("{}{}", served.base, paths[i % paths.len()]);
        let http = http.clone();
        async move {
            let status = http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (i % 3, status)
        }
    });
    let answers = join_all(requests).await;
    for (kind, status) in &answers {
        match kind {
            0 => assert_eq!(*status, 200, "a valid token was refused"),
            _ => assert_eq!(*status, 401, "a forged token was answered {status}"),
        }
    }
    assert_eq!(
        api.state.issuer.get().verified_tokens(),
        before + 1,
        "only the valid token is kept as verified"
    );
    // SQLite: the readers kept (idle) never outnumber the bound of reads
    // at once, `max` less the writer; with the bound removed, every read
    // of the burst that overlapped another leaves a connection behind.
    // (PostgreSQL's pool cannot grow past its size at all.)
    if ferry_server::testing::backend() == ferry_server::testing::Backend::Sqlite {
        let pool = api.state.store.pool_state();
        assert!(pool.idle < pool.max, "the burst left {pool:?}");
    }
    served.stop().await;
}
