#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;
use crate::change::{Change, RecordState};
use crate::merge::apply_change;
use crate::names::UserId;
use crate::protocol::Role;

/// Cards any writer adds, that only their author or an owner changes or
/// deletes, with a server-only `created_by`; a workspace's settings only
/// owners write.
fn schema() -> Schema {
    Schema::parse(
        &json!({"collections": {
            "cards": {
                "permissions": {"update": ["owner", "author"], "delete": ["owner", "author"]},
                "fields": {"title": {"type": "string"}, "created_by": {"type": "string", "server_only": true}}
            },
            "settings": {"permissions": {"create": ["owner"], "update": ["owner"], "delete": ["owner"]}},
            "notes": {}
        }})
        .to_string(),
    )
    .unwrap()
}

fn actor(user: &str, role: Role) -> Actor {
    Actor {
        user: UserId::new(user).unwrap(),
        role,
        server_fields: false,
    }
}

fn upsert(collection: &str, field: &str) -> Change {
    serde_json::from_value(json!({"op": "upsert", "collection": collection, "id": "r1",
        "fields": {field: {"value": "x", "hlc": "000000000000001:00000:n"}}}))
    .unwrap()
}

fn delete(collection: &str) -> Change {
    serde_json::from_value(
        json!({"op": "delete", "collection": collection, "id": "r1", "hlc": "000000000000002:00000:n"}),
    )
    .unwrap()
}

/// The record `change` makes from nothing.
fn made(collection: &str) -> RecordState {
    apply_change(RecordState::default(), upsert(collection, "title")).state
}

fn rule(r: Result<(), Forbidden>) -> Option<PermissionRule> {
    r.err().map(|f| f.rule)
}

#[test]
fn roles_author_and_server_only_fields_are_judged() {
    let s = schema();
    let none = RecordState::default();
    let card = made("cards");
    let ada = UserId::new("ada").unwrap();
    let editor = actor("ada", Role::Editor);
    let other = actor("bob", Role::Editor);
    let owner = actor("own", Role::Owner);
    // Anyone who writes creates a card; its author and owners change it.
    assert_eq!(
        rule(s.permit(&editor, &none, None, &upsert("cards", "title"))),
        None
    );
    assert_eq!(
        rule(s.permit(&editor, &card, Some(&ada), &upsert("cards", "title"))),
        None
    );
    assert_eq!(
        rule(s.permit(&owner, &card, Some(&ada), &upsert("cards", "title"))),
        None
    );
    assert_eq!(
        rule(s.permit(&owner, &card, Some(&ada), &delete("cards"))),
        None
    );
    let refused = s
        .permit(&other, &card, Some(&ada), &upsert("cards", "title"))
        .unwrap_err();
    assert_eq!(refused.rule, PermissionRule::Author);
    assert!(
        refused.message.contains("owners and the record's author"),
        "{}",
        refused.message
    );
    assert_eq!(
        rule(s.permit(&other, &card, Some(&ada), &delete("cards"))),
        Some(PermissionRule::Author)
    );
    // A record without an author (stored before authors were recorded)
    // is changed by the listed roles only.
    assert_eq!(
        rule(s.permit(&editor, &card, None, &upsert("cards", "title"))),
        Some(PermissionRule::Author)
    );
    assert_eq!(
        rule(s.permit(&owner, &card, None, &upsert("cards", "title"))),
        None
    );
    // A tombstone is an existing record: an upsert is an update.
    let tomb = apply_change(card.clone(), delete("cards")).state;
    assert_eq!(
        rule(s.permit(&other, &tomb, Some(&ada), &upsert("cards", "title"))),
        Some(PermissionRule::Author)
    );
    // Server-only fields: refused from clients, whoever they are...
    let f = s
        .permit(&owner, &none, None, &upsert("cards", "created_by"))
        .unwrap_err();
    assert_eq!(
        (f.rule, f.field.as_ref().map(|f| f.as_str())),
        (PermissionRule::ServerOnly, Some("created_by"))
    );
    // ...and written by a caller with the right.
    let server = Actor {
        server_fields: true,
        ..owner.clone()
    };
    assert_eq!(
        rule(s.permit(&server, &card, Some(&ada), &upsert("cards", "created_by"))),
        None
    );
    // Settings: owners only, for each action.
    assert_eq!(
        rule(s.permit(&editor, &none, None, &upsert("settings", "theme"))),
        Some(PermissionRule::Create)
    );
    let settings = made("settings");
    assert_eq!(
        rule(s.permit(&editor, &settings, Some(&ada), &upsert("settings", "t"))),
        Some(PermissionRule::Update)
    );
    assert_eq!(
        rule(s.permit(&editor, &settings, Some(&ada), &delete("settings"))),
        Some(PermissionRule::Delete)
    );
    assert_eq!(
        rule(s.permit(&owner, &settings, Some(&ada), &delete("settings"))),
        None
    );
    // No permissions, and undeclared collections: every writer.
    assert_eq!(
        rule(s.permit(&other, &made("notes"), Some(&ada), &delete("notes"))),
        None
    );
    assert_eq!(
        rule(s.permit(&other, &made("misc"), Some(&ada), &delete("misc"))),
        None
    );
    // A viewer never writes.
    let viewer = actor("ada", Role::Viewer);
    assert_eq!(
        rule(s.permit(&viewer, &card, Some(&ada), &upsert("notes", "x"))),
        Some(PermissionRule::Update)
    );
}

#[test]
fn lists_that_make_no_sense_are_refused() {
    for (permissions, why) in [
        (json!({"update": ["viewer"]}), "a viewer never writes"),
        (json!({"update": ["admin"]}), "owner, editor or author"),
        (json!({"remove": ["owner"]}), "unknown key"),
        (json!({"update": "owner"}), "not a schema"),
    ] {
        let e =
            Schema::parse(&json!({"collections": {"c": {"permissions": permissions}}}).to_string())
                .unwrap_err();
        assert!(e.0.contains(why), "{permissions}: {e}");
    }
    // A later Ferry's grantee, served: read, granting nothing.
    let served = Schema::parse_served(
        &json!({"collections": {"c": {"permissions": {"update": ["admin"]}}}}).to_string(),
    )
    .unwrap();
    let p = served
        .collections
        .values()
        .next()
        .unwrap()
        .permissions
        .as_ref()
        .unwrap();
    assert_eq!(p.update, Some(vec![Grantee::Unknown]));
}

#[test]
fn a_permission_change_is_compatible() {
    let before = schema();
    let mut after = schema();
    let cards = after.collections.values_mut().next().unwrap();
    cards.permissions = None;
    cards
        .fields
        .values_mut()
        .for_each(|f| f.server_only = false);
    let differences = diff(&before, &after);
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(differences.iter().all(|d| d.impact == Impact::Compatible));
}
