//! What one user may create: spaces and invites are limited in rate and
//! in number, and a taken space id tells an outsider only that it is
//! taken (docs/protocol.md §5).

use std::time::Duration;

use ferry_server::spaces::quota::SpaceQuotas;

use super::*;

fn quotas(burst: u32, owned: usize, members: usize) -> SpaceQuotas {
    SpaceQuotas {
        max_owned_spaces: owned,
        max_members: members,
        burst,
        refill: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn spaces_are_created_at_a_bounded_rate_and_number() {
    let api = Api::configured(|s| s.quotas = quotas(5, 1000, 1000)).await;
    for i in 0..5 {
        let r = api
            .post("/v1/spaces", "spammer", json!({"name": format!("s{i}")}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = api
        .post("/v1/spaces", "spammer", json!({"name": "one more"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Someone else is not held up.
    let r = api
        .post("/v1/spaces", "bystander", json!({"name": "mine"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let api = Api::configured(|s| s.quotas = quotas(50, 3, 1000)).await;
    for i in 0..3 {
        let r = api
            .post("/v1/spaces", "owner", json!({"name": format!("s{i}")}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = api
        .post("/v1/spaces", "owner", json!({"name": "fourth"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{:?}",
        r.body
    );
    assert_eq!(
        api.get("/v1/spaces", "owner").await.body["spaces"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Being made owner of other people's spaces does not use up anyone's
    // quota: someone who knows your email cannot stop you creating.
    api.get("/v1/me", "victim").await;
    for i in 0..3 {
        let r = api
            .post(
                "/v1/spaces",
                "griefer",
                json!({"id": format!("g{i}"), "name": "g"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = api
            .call(
                Method::PUT,
                &format!("/v1/spaces/g{i}/members/victim"),
                Some("griefer"),
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = api
        .post("/v1/spaces", "victim", json!({"name": "mine"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn invites_and_members_are_bounded() {
    let api = Api::configured(|s| s.quotas = quotas(3, 1000, 4)).await;
    api.space("owner", "team").await;
    for i in 0..3 {
        let r = api
            .post(
                "/v1/spaces/team/invites",
                "owner",
                json!({"email": format!("p{i}@example.com"), "role": "viewer"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // The space is full (the owner and three people): no one else joins,
    // by invite or by role.
    api.get("/v1/me", "extra").await;
    let r = api
        .call(
            Method::PUT,
            "/v1/spaces/team/members/extra",
            Some("owner"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{:?}",
        r.body
    );
    // A member's role still changes.
    let members = api.get("/v1/spaces/team/members", "owner").await.body;
    let someone = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "viewer")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .call(
            Method::PUT,
            &format!("/v1/spaces/team/members/{someone}"),
            Some("owner"),
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The invite rate: the fourth within the hour is refused.
    api.space("owner", "other").await;
    let r = api
        .post(
            "/v1/spaces/other/invites",
            "owner",
            json!({"email": "late@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let created = api
        .state
        .store
        .user_by_email("late@example.com", &UserId::new("unused-id").unwrap())
        .await
        .unwrap();
    assert_eq!(
        created.id.as_str(),
        "unused-id",
        "the refused invite created no user"
    );
}

#[tokio::test]
async fn a_taken_space_id_says_only_that_it_is_taken() {
    let api = Api::configured(|s| s.quotas = quotas(10, 1000, 1000)).await;
    api.space("owner", "team-x").await;
    let put = api
        .call(
            Method::PUT,
            "/v1/spaces/team-x/collections/todos/records/secret",
            Some("owner"),
            Some(json!({"fields": {"title": "plans"}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let outsider = api
        .post(
            "/v1/spaces",
            "outsider",
            json!({"id": "team-x", "name": "Mine"}),
        )
        .await;
    let owner = api
        .post(
            "/v1/spaces",
            "owner",
            json!({"id": "team-x", "name": "Again"}),
        )
        .await;
    assert_eq!(
        (outsider.status, outsider.code()),
        (StatusCode::CONFLICT, "conflict")
    );
    // The same answer whoever asks, naming nothing of the space.
    assert_eq!(outsider.body, owner.body);
    let text = outsider.body.to_string();
    assert!(!text.contains("plans") && !text.contains("owner"), "{text}");
    // Probing many ids runs into the creation quota.
    let mut limited = false;
    for i in 0..20 {
        let r = api
            .post(
                "/v1/spaces",
                "outsider",
                json!({"id": format!("guess-{i}"), "name": "g"}),
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "probing space ids is not rate limited");
    // The outsider learned nothing more: the space is still a 404 to them.
    let r = api.get("/v1/spaces/team-x/members", "outsider").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
