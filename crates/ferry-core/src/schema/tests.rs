#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::change::{Change, FieldValue, Fields, RecordState};
use crate::hlc::Hlc;
use crate::merge::apply_change;
use crate::names::{Collection, FieldName, RecordId};

/// The schema of docs/schema.md, as the server stores it.
const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn todos() -> Schema {
    Schema::parse(
        &json!({
            "collections": {
                "lists": {"mode": "strict", "fields": {
                    "name": {"type": "string", "max_length": 200, "required": true}}},
                "todos": {"mode": "strict", "fields": {
                    "title": {"type": "string", "max_length": 500, "required": true},
                    "done": {"type": "boolean", "required": true},
                    "priority": {"type": "enum", "values": ["low", "normal", "high"]},
                    "due": {"type": "timestamp"},
                    "estimate": {"type": "number", "min": 0},
                    "position": {"type": "integer"},
                    "tags": {"type": "array", "items": "string", "max_items": 3, "max_length": 10},
                    "list": {"type": "ref", "collection": "lists", "required": true},
                    "extra": {"type": "json"},
                    "photo": {"type": "file"}
                }}
            }
        })
        .to_string(),
    )
    .unwrap()
}

fn hlc(ms: u64, node: &str) -> Hlc {
    Hlc::new(ms, 0, crate::names::ClientId::new(node).unwrap()).unwrap()
}

fn upsert(collection: &str, fields: Value, at: u64) -> Change {
    let fields: Fields = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                FieldName::new(k.as_str()).unwrap(),
                FieldValue {
                    value: v.clone(),
                    hlc: hlc(at, "a"),
                },
            )
        })
        .collect();
    Change::Upsert {
        collection: Collection::new(collection).unwrap(),
        id: RecordId::new("r1").unwrap(),
        fields,
        base: None,
    }
}

fn valid_todo() -> Value {
    json!({"title": "Milk", "done": false, "list": "l1"})
}

fn rule(schema: &Schema, before: &RecordState, change: &Change) -> Option<Rule> {
    schema.check_write(before, change).err().map(|v| v.rule)
}

#[test]
fn a_valid_record_is_taken_and_each_rule_is_named() {
    let s = todos();
    let none = RecordState::default();
    assert_eq!(rule(&s, &none, &upsert("todos", valid_todo(), 1)), None);
    let with = |extra: Value| {
        let mut fields = valid_todo();
        fields
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        upsert("todos", fields, 1)
    };
    let cases = [
        (json!({"done": "yes"}), Rule::Type),
        (json!({"titel": "x"}), Rule::UndeclaredField),
        (json!({"title": "x".repeat(501)}), Rule::MaxLength),
        (json!({"priority": "urgent"}), Rule::Enum),
        (json!({"due": "tomorrow"}), Rule::Type),
        (json!({"due": "2026-12-02T14:00:00"}), Rule::Type),
        (json!({"estimate": -1}), Rule::Min),
        (json!({"position": 1.5}), Rule::Type),
        (json!({"position": 1e300}), Rule::Type),
        (json!({"position": 3.0}), Rule::Type),
        (json!({"position": 9_007_199_254_740_992_i64}), Rule::Type),
        (json!({"due": "2026-12-02x14:00:00Z"}), Rule::Type),
        (json!({"tags": ["a", "b", "c", "d"]}), Rule::MaxItems),
        (json!({"tags": ["a", 1]}), Rule::Type),
        (json!({"tags": ["a-long-tag-here"]}), Rule::MaxLength),
        (json!({"list": "not an id!"}), Rule::Type),
        (json!({"list": 7}), Rule::Type),
        (json!({"photo": "cat.png"}), Rule::Type),
        (
            json!({"photo": {"sha256": "ab", "size": 1, "media_type": "image/png"}}),
            Rule::Type,
        ),
        (
            json!({"photo": {"sha256": HASH, "size": 1, "media_type": "png"}}),
            Rule::Type,
        ),
        (
            json!({"photo": {"sha256": HASH, "size": 1, "media_type": "image/png", "url": "x"}}),
            Rule::Type,
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(
            rule(&s, &none, &with(extra.clone())),
            Some(expected),
            "{extra}"
        );
    }
    for fine in [
        json!({"photo": {"sha256": HASH, "size": 1, "media_type": "image/png", "name": "cat.png"}}),
        json!({"photo": null}),
        json!({"due": "2026-12-02T14:00:00Z"}),
        json!({"due": "2026-12-02T14:00:00.123+01:00"}),
        json!({"position": -9_007_199_254_740_991_i64}),
        json!({"due": "2026-12-02t14:00:00z"}),
        // Clearing a field a strict collection does not declare (one an
        // older schema had) is always allowed.
        json!({"colour": null}),
        json!({"estimate": 2.5}),
        json!({"extra": {"any": ["thing"]}}),
        json!({"priority": null}),
        json!({"tags": []}),
    ] {
        assert_eq!(rule(&s, &none, &with(fine.clone())), None, "{fine}");
    }
    let err = s
        .check_write(&none, &with(json!({"done": "yes"})))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"todos/r1: field done must be true or false, got "yes""#
    );
    assert_eq!(err.field.as_ref().map(FieldName::as_str), Some("done"));
}

#[test]
fn required_is_judged_on_the_record_after_the_change() {
    let s = todos();
    let none = RecordState::default();
    // Creating without a required field: refused.
    let missing = upsert("todos", json!({"title": "Milk", "done": false}), 1);
    let err = s.check_write(&none, &missing).unwrap_err();
    assert_eq!(
        (err.rule, err.field.unwrap().as_str()),
        (Rule::Required, "list")
    );
    // A patch of one field of an existing record: fine.
    let existing = apply_change(none.clone(), upsert("todos", valid_todo(), 1)).state;
    assert_eq!(
        rule(&s, &existing, &upsert("todos", json!({"done": true}), 2)),
        None
    );
    // Writing null into a required field: refused.
    assert_eq!(
        rule(&s, &existing, &upsert("todos", json!({"title": null}), 2)),
        Some(Rule::Required)
    );
    // A record stored before its schema required `list` is not blamed on
    // a patch of another field.
    let legacy = apply_change(
        none,
        upsert("todos", json!({"title": "Old", "done": true}), 1),
    )
    .state;
    assert_eq!(
        rule(&s, &legacy, &upsert("todos", json!({"done": false}), 2)),
        None
    );
    assert_eq!(
        s.check_record(
            &Collection::new("todos").unwrap(),
            &RecordId::new("r1").unwrap(),
            &legacy
        )
        .iter()
        .map(|v| v.rule)
        .collect::<Vec<_>>(),
        [Rule::Required]
    );
    // Deletes are always allowed.
    let delete = Change::Delete {
        collection: Collection::new("todos").unwrap(),
        id: RecordId::new("r1").unwrap(),
        hlc: hlc(3, "a"),
        base: None,
    };
    assert_eq!(rule(&s, &existing, &delete), None);
}

#[test]
fn undeclared_collections_follow_the_schema() {
    let mut s = todos();
    let none = RecordState::default();
    let anything = upsert("notes", json!({"whatever": [1, "two"]}), 1);
    assert_eq!(rule(&s, &none, &anything), None);
    s.undeclared = Undeclared::Refuse;
    assert_eq!(rule(&s, &none, &anything), Some(Rule::UndeclaredCollection));
    // An open collection checks what it declares and lets the rest by.
    s.collections
        .get_mut(&Collection::new("todos").unwrap())
        .unwrap()
        .mode = Mode::Open;
    let mut fields = valid_todo();
    fields["note"] = json!("free");
    assert_eq!(rule(&s, &none, &upsert("todos", fields.clone(), 1)), None);
    fields["done"] = json!("yes");
    assert_eq!(
        rule(&s, &none, &upsert("todos", fields, 1)),
        Some(Rule::Type)
    );
}

#[test]
fn schemas_that_make_no_sense_are_refused_with_where() {
    for (bad, says) in [
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "boolean", "max_length": 3}}}}}),
            "t.a: max_length does not apply",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "enum"}}}}}),
            "t.a: an enum needs values",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "enum", "values": ["x", "x"]}}}}}),
            "listed twice",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "ref", "collection": "nope"}}}}}),
            "refers to nope",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "array"}}}}}),
            "needs items",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "integer", "min": 5, "max": 1}}}}}),
            "min 5 is above max 1",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "string", "nullable": true}}}}}),
            "nullable applies to required",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "text"}}}}}),
            "not a schema",
        ),
        (
            json!({"collections": {"t": {"fields": {"a": {"type": "string", "lenght": 3}}}}}),
            "lenght",
        ),
        (json!({"collections": {"bad name!": {}}}), "not a schema"),
        (
            json!({"collections": {"t": {"fields": {"_private": {"type": "json"}}}}}),
            "not a schema",
        ),
    ] {
        let err = Schema::parse(&bad.to_string()).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    // A schema applied by a later Ferry, with keys and types this one does
    // not know: refused from a file, read (those parts unchecked) when a
    // server serves it.
    let newer = json!({"collections": {"t": {"table": "todos", "fields": {
        "a": {"type": "geopoint", "writable_by": ["owner"]}, "b": {"type": "string", "max_length": 2}}}}})
    .to_string();
    let err = Schema::parse(&newer).unwrap_err().to_string();
    assert!(err.contains("unknown key"), "{err}");
    let served = Schema::parse_served(&newer).unwrap();
    let a = upsert("t", json!({"a": {"lat": "x"}, "b": "ok"}), 1);
    assert_eq!(rule(&served, &RecordState::default(), &a), None);
    let b = upsert("t", json!({"b": "too long"}), 1);
    assert_eq!(
        rule(&served, &RecordState::default(), &b),
        Some(Rule::MaxLength)
    );
    let typed = json!({"collections": {"t": {"fields": {"a": {"type": "geopoint"}}}}}).to_string();
    assert!(
        Schema::parse(&typed)
            .unwrap_err()
            .to_string()
            .contains("does not know")
    );

    // What is stored is what was read.
    let s = todos();
    let again = Schema::parse(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn differences_are_compatible_or_breaking() {
    let old = todos();
    let impacts = |new: &Schema| -> Vec<(String, Impact)> {
        diff(&old, new)
            .into_iter()
            .map(|d| (d.path, d.impact))
            .collect()
    };
    let edit = |f: &dyn Fn(&mut Schema)| {
        let mut s = old.clone();
        f(&mut s);
        s
    };
    let todos = Collection::new("todos").unwrap();
    let field = |s: &mut Schema, name: &str| -> FieldSchema {
        s.collections[&todos].fields[&FieldName::new(name).unwrap()].clone()
    };
    let set = |s: &mut Schema, name: &str, f: FieldSchema| {
        s.collections
            .get_mut(&todos)
            .unwrap()
            .fields
            .insert(FieldName::new(name).unwrap(), f);
    };
    assert_eq!(impacts(&old), []);
    let cases: Vec<(Schema, &str, Impact)> = vec![
        (
            edit(&|s| set(s, "note", FieldSchema::of(FieldType::String))),
            "todos.note",
            Impact::Compatible,
        ),
        (
            edit(&|s| {
                set(
                    s,
                    "note",
                    FieldSchema {
                        required: true,
                        ..FieldSchema::of(FieldType::String)
                    },
                )
            }),
            "todos.note",
            Impact::Breaking,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "title");
                f.max_length = Some(100);
                set(s, "title", f)
            }),
            "todos.title",
            Impact::Breaking,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "title");
                f.max_length = None;
                set(s, "title", f)
            }),
            "todos.title",
            Impact::Compatible,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "title");
                f.required = false;
                set(s, "title", f)
            }),
            "todos.title",
            Impact::Compatible,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "done");
                f.kind = FieldType::String;
                set(s, "done", f)
            }),
            "todos.done",
            Impact::Breaking,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "priority");
                f.values.as_mut().unwrap().push("urgent".into());
                set(s, "priority", f)
            }),
            "todos.priority",
            Impact::Compatible,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "priority");
                f.values.as_mut().unwrap().pop();
                set(s, "priority", f)
            }),
            "todos.priority",
            Impact::Breaking,
        ),
        (
            edit(&|s| {
                s.collections
                    .get_mut(&todos)
                    .unwrap()
                    .fields
                    .remove(&FieldName::new("extra").unwrap());
            }),
            "todos.extra",
            Impact::Breaking,
        ),
        (
            edit(&|s| s.collections.get_mut(&todos).unwrap().mode = Mode::Open),
            "todos",
            Impact::Compatible,
        ),
        (
            edit(&|s| {
                s.collections.insert(
                    Collection::new("notes").unwrap(),
                    CollectionSchema::default(),
                );
            }),
            "notes",
            Impact::Compatible,
        ),
        (
            edit(&|s| s.undeclared = Undeclared::Refuse),
            "",
            Impact::Breaking,
        ),
        (
            edit(&|s| {
                let mut f = field(s, "position");
                f.kind = FieldType::Number;
                set(s, "position", f)
            }),
            "todos.position",
            Impact::Compatible,
        ),
    ];
    for (new, path, impact) in cases {
        assert_eq!(impacts(&new), [(path.to_owned(), impact)], "{path}");
    }
    // A type changed to json and made required at once: breaking.
    let both = edit(&|s| {
        let mut f = field(s, "estimate");
        f.kind = FieldType::Json;
        f.min = None;
        f.required = true;
        set(s, "estimate", f)
    });
    let found = impacts(&both);
    assert!(
        found.contains(&("todos.estimate".to_owned(), Impact::Breaking)),
        "{found:?}"
    );
}

// A valid record stays valid under every merge of valid changes, in any
// order of delivery.

fn scalar() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        "[a-z]{1,12}".prop_map(|s| ("title", json!(s))),
        any::<bool>().prop_map(|b| ("done", json!(b))),
        prop::sample::select(vec!["low", "normal", "high"]).prop_map(|p| ("priority", json!(p))),
        (0u32..1000).prop_map(|n| ("estimate", json!(f64::from(n) / 4.0))),
        (-1000i64..1000).prop_map(|n| ("position", json!(n))),
        prop::collection::vec("[a-z]{1,10}", 0..=3).prop_map(|t| ("tags", json!(t))),
        "[a-z0-9]{1,8}".prop_map(|l| ("list", json!(l))),
        (0u32..28).prop_map(|d| ("due", json!(format!("2026-02-{:02}T10:00:00Z", d + 1)))),
        Just(("priority", Value::Null)),
    ]
}

fn valid_change() -> impl Strategy<Value = (Value, u64, u8)> {
    (
        prop::collection::vec(scalar(), 1..4).prop_map(|pairs| {
            Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
        1u64..1000,
        0u8..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn a_valid_record_stays_valid_under_every_merge_of_valid_changes(
        changes in prop::collection::vec(valid_change(), 1..12),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
    ) {
        let s = todos();
        let todos = Collection::new("todos").unwrap();
        let id = RecordId::new("r1").unwrap();
        let create = upsert("todos", valid_todo(), 0);
        let mut accepted = vec![create];
        for (fields, at, node) in &changes {
            let mut change = upsert("todos", fields.clone(), *at);
            if let Change::Upsert { fields, .. } = &mut change {
                for f in fields.values_mut() {
                    f.hlc = hlc(*at, ["a", "b", "c"][usize::from(*node)]);
                }
            }
            accepted.push(change);
        }
        // Delivered in another order, after the creation.
        let mut rest = accepted.split_off(1);
        let n = rest.len();
        for i in 0..n {
            rest.swap(i, (order as usize).wrapping_add(i * 7) % n);
        }
        let mut state = RecordState::default();
        for change in accepted.into_iter().chain(rest) {
            let before = state.clone();
            let after = apply_change(before.clone(), change.clone()).state;
            prop_assert_eq!(s.check(&before, &change, &after), Ok(()));
            state = after;
            prop_assert_eq!(s.check_record(&todos, &id, &state), vec![]);
        }
    }
}

/// A change that breaks the todos schema, whatever the record holds.
fn invalid_change() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"title": null})),
        Just(json!({"title": 7})),
        Just(json!({"titel": "x"})),
        Just(json!({"priority": "urgent"})),
        Just(json!({"done": "yes"})),
        Just(json!({"list": null})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    /// Refused changes are never stored, whatever comes before them
    /// (deletes included), and what is stored stays valid.
    #[test]
    fn a_refused_change_never_reaches_the_record(
        steps in prop::collection::vec(
            prop_oneof![
                valid_change().prop_map(|(f, at, node)| (Some(f), None, at, node)),
                (invalid_change(), 1u64..1000, 0u8..3).prop_map(|(f, at, node)| (None, Some(f), at, node)),
                (1u64..1000, 0u8..3).prop_map(|(at, node)| (None, None, at, node)),
            ],
            1..16,
        ),
    ) {
        let s = todos();
        let todos = Collection::new("todos").unwrap();
        let id = RecordId::new("r1").unwrap();
        let node = |n: u8| ["a", "b", "c"][usize::from(n)];
        let mut state = apply_change(RecordState::default(), upsert("todos", valid_todo(), 0)).state;
        for (valid, invalid, at, n) in steps {
            let change = match (valid, invalid) {
                (Some(fields), _) | (None, Some(fields)) => {
                    let mut c = upsert("todos", fields, at);
                    if let Change::Upsert { fields, .. } = &mut c {
                        for f in fields.values_mut() {
                            f.hlc = hlc(at, node(n));
                        }
                    }
                    c
                }
                (None, None) => Change::Delete {
                    collection: todos.clone(),
                    id: id.clone(),
                    hlc: hlc(at, node(n)),
                    base: None,
                },
            };
            let after = apply_change(state.clone(), change.clone()).state;
            let refused = matches!(&change, Change::Upsert { fields, .. }
                if invalid_field(fields, &after));
            match s.check(&state, &change, &after) {
                Ok(()) => {
                    prop_assert!(!refused || state.is_deleted(), "{change:?} was taken");
                    state = after;
                }
                Err(_) => prop_assert!(refused, "{change:?} was refused"),
            }
            prop_assert_eq!(s.check_record(&todos, &id, &state), vec![]);
        }
    }
}

/// Whether an upsert's fields are one of [`invalid_change`]'s: a value of
/// the wrong type or an undeclared field, whether or not it wins; null to
/// a required field when it wins (a losing null leaves the value, and the
/// record, as they were).
fn invalid_field(fields: &Fields, after: &RecordState) -> bool {
    let cleared = |name: &str| {
        !after.is_deleted()
            && after
                .fields
                .get(&FieldName::new(name).unwrap())
                .is_none_or(|f| f.value.is_null())
    };
    fields
        .iter()
        .any(|(name, f)| match (name.as_str(), &f.value) {
            ("title" | "list", Value::Null) => cleared(name.as_str()),
            ("title", v) => !v.is_string(),
            ("titel", _) => true,
            ("priority", Value::String(p)) => p == "urgent",
            ("done", v) => v.is_string(),
            _ => false,
        })
}
