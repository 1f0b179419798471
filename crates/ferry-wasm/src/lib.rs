//! Ferry's core for the browser: [`ferry_core`] compiled to wasm, so that
//! the browser client checks names, keeps its clock and merges records with
//! exactly the code the server and the native client run.
//!
//! Values cross the boundary as JSON text in PROTOCOL.md's own shapes (a
//! record state is `{"fields": {...}, "deleted": null}`, a change is
//! `{"op": "upsert", ...}`), which the browser produces and reads natively
//! and which keeps this layer free of hand-written conversions. Each
//! exported function is a thin wrapper of a plain one below it, so the
//! logic is tested natively with `cargo test`.
//!
//! `clients/js` loads the module that `scripts/build-web` generates from
//! this crate with `wasm-bindgen`.

use ferry_core::conflict::{deleted_under, fold, restorable, settled_locally};
use ferry_core::local::{LocalWrite, local_write};
use ferry_core::schema::Actor;
use ferry_core::{
    Change, ClientId, Collection, Conflict, FieldName, Hlc, RecordId, RecordState, Role, SpaceId,
    UserId, merge_states,
};
use serde_json::Value;
use wasm_bindgen::prelude::*;

mod file;
mod index;
mod live;
pub use file::{FileHasher, file_ref_inner};
pub use index::{index_entries_inner, index_plan_inner, indexed_fields_inner};
pub use live::{LiveQueries, run_query_inner};

/// Errors cross into JavaScript as `Error` objects with this message.
type Result<T> = std::result::Result<T, String>;

fn js<T>(r: Result<T>) -> std::result::Result<T, JsError> {
    r.map_err(|m| JsError::new(&m))
}

/// Milliseconds as JavaScript numbers carry them (`Date.now()`).
fn millis(now_ms: f64) -> u64 {
    if now_ms.is_finite() && now_ms > 0.0 {
        now_ms as u64
    } else {
        0
    }
}

fn parse_hlc(text: &str) -> Result<Hlc> {
    text.parse::<Hlc>().map_err(|e| e.to_string())
}

fn parse_state(text: &str) -> Result<RecordState> {
    if text.is_empty() {
        return Ok(RecordState::default());
    }
    serde_json::from_str(text).map_err(|e| format!("not a record state: {e}"))
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// Checks a name of PROTOCOL.md §1. `kind` is `space`, `collection`,
/// `record`, `field` or `client`.
pub fn check_name_inner(kind: &str, value: &str) -> Result<()> {
    let checked = match kind {
        "space" => SpaceId::new(value).map(drop),
        "collection" => Collection::new(value).map(drop),
        "record" => RecordId::new(value).map(drop),
        "field" => FieldName::new(value).map(drop),
        "client" => ClientId::new(value).map(drop),
        other => return Err(format!("unknown kind of name: {other}")),
    };
    checked.map_err(|e| e.to_string())
}

/// Checks a name of PROTOCOL.md §1; throws an `Error` saying what is wrong.
#[wasm_bindgen(js_name = checkName)]
pub fn check_name(kind: &str, value: &str) -> std::result::Result<(), JsError> {
    js(check_name_inner(kind, value))
}

/// The lowest HLC of `node`.
pub fn hlc_zero_inner(node: &str) -> Result<String> {
    let node = ClientId::new(node).map_err(|e| e.to_string())?;
    Ok(Hlc::zero(node).to_string())
}

/// The lowest HLC of `node`: where a fresh replica's clock starts.
#[wasm_bindgen(js_name = hlcZero)]
pub fn hlc_zero(node: &str) -> std::result::Result<String, JsError> {
    js(hlc_zero_inner(node))
}

/// The HLC of the next local write after `last`, at wall time `now_ms`.
pub fn hlc_tick_inner(last: &str, now_ms: f64) -> Result<String> {
    Ok(parse_hlc(last)?.tick(millis(now_ms)).to_string())
}

/// The HLC of the next local write after `last`, at wall time `now_ms`.
#[wasm_bindgen(js_name = hlcTick)]
pub fn hlc_tick(last: &str, now_ms: f64) -> std::result::Result<String, JsError> {
    js(hlc_tick_inner(last, now_ms))
}

/// `last` advanced past `remote` (an HLC the server sent).
pub fn hlc_observe_inner(last: &str, remote: &str, now_ms: f64) -> Result<String> {
    let (last, remote) = (parse_hlc(last)?, parse_hlc(remote)?);
    Ok(last.observe(&remote, millis(now_ms)).to_string())
}

/// `last` advanced past `remote` (an HLC the server sent), at `now_ms`.
#[wasm_bindgen(js_name = hlcObserve)]
pub fn hlc_observe(last: &str, remote: &str, now_ms: f64) -> std::result::Result<String, JsError> {
    js(hlc_observe_inner(last, remote, now_ms))
}

/// `last` moved to node `node`: the same time, stamped by the replica's new
/// client id (after a sign-out that wiped it).
pub fn hlc_rebase_inner(last: &str, node: &str) -> Result<String> {
    let last = parse_hlc(last)?;
    let node = ClientId::new(node).map_err(|e| e.to_string())?;
    Hlc::new(last.physical(), last.logical(), node)
        .map(|h| h.to_string())
        .ok_or_else(|| "the clock is out of range".to_owned())
}

/// See [`hlc_rebase_inner`].
#[wasm_bindgen(js_name = hlcRebase)]
pub fn hlc_rebase(last: &str, node: &str) -> std::result::Result<String, JsError> {
    js(hlc_rebase_inner(last, node))
}

/// One local write. `state` is the record's state as JSON (empty for a
/// record the replica does not have), `op` is `put`, `patch` or `delete`,
/// `fields` a JSON object (ignored for a delete), `hlc` the replica's next
/// tick, `actor` the writer for the schema's permissions (`{"user",
/// "role", "author"}` as JSON, `author` the record's; `""` when the role
/// is not known yet, which leaves them to the server). Returns `{"change":
/// <change>, "state": <state>}` as JSON, or `{"violation"|"forbidden",
/// "message"}` for a write the schema refuses.
#[allow(clippy::too_many_arguments)]
pub fn local_write_as(
    state: &str,
    collection: &str,
    id: &str,
    op: &str,
    fields: &str,
    hlc: &str,
    schema: &str,
    actor: &str,
) -> Result<String> {
    let collection = Collection::new(collection).map_err(|e| e.to_string())?;
    let id = RecordId::new(id).map_err(|e| e.to_string())?;
    let hlc = parse_hlc(hlc)?;
    let fields = || -> Result<Value> {
        serde_json::from_str(fields).map_err(|e| format!("fields are not JSON: {e}"))
    };
    let write = match op {
        "put" => LocalWrite::put(fields()?),
        "patch" => LocalWrite::patch(fields()?),
        "delete" => Ok(LocalWrite::Delete),
        other => return Err(format!("unknown write: {other}")),
    }
    .map_err(|e| e.to_string())?;
    let before = parse_state(state)?;
    // A put leaves the fields only the server writes as they are.
    let write = with_schema(schema, |s| match s {
        Some(s) => write.keeping(&before, |f| s.server_only(&collection, f)),
        None => write,
    })?;
    let judge = with_schema(schema, |s| s.is_some_and(|s| s.judges(&collection)))?;
    let kept = judge.then(|| before.clone());
    let done = local_write(before, &collection, &id, write, &hlc).map_err(|e| e.to_string())?;
    if let Some(before) = kept {
        let verdict = with_schema(schema, |s| match s {
            Some(s) => s.check(&before, &done.change, &done.state),
            None => Ok(()),
        })?;
        if let Err(violation) = verdict {
            return to_json(
                &serde_json::json!({"violation": violation, "message": violation.to_string()}),
            );
        }
        if !actor.is_empty() {
            let (actor, author) = parse_actor(actor)?;
            let verdict = with_schema(schema, |s| match s {
                Some(s) => s.permit(&actor, &before, author.as_ref(), &done.change),
                None => Ok(()),
            })?;
            if let Err(forbidden) = verdict {
                return to_json(
                    &serde_json::json!({"forbidden": forbidden, "message": forbidden.to_string()}),
                );
            }
        }
    }
    to_json(&serde_json::json!({"change": done.change, "state": done.state}))
}

thread_local! {
    /// The app schema last parsed, by its JSON: writes parse it once.
    static SCHEMA: std::cell::RefCell<Option<(String, ferry_core::schema::Schema)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the schema `json` names (`""`: none), parsed once.
pub(crate) fn with_schema<T>(
    json: &str,
    f: impl FnOnce(Option<&ferry_core::schema::Schema>) -> T,
) -> Result<T> {
    if json.is_empty() {
        return Ok(f(None));
    }
    SCHEMA.with(|cell| {
        let mut held = cell.borrow_mut();
        if held.as_ref().is_none_or(|(text, _)| text != json) {
            let schema =
                ferry_core::schema::Schema::parse_served(json).map_err(|e| e.to_string())?;
            *held = Some((json.to_owned(), schema));
        }
        Ok(f(held.as_ref().map(|(_, s)| s)))
    })
}

/// [`local_write_as`] by a writer whose role is not known.
pub fn local_write_inner(
    state: &str,
    collection: &str,
    id: &str,
    op: &str,
    fields: &str,
    hlc: &str,
    schema: &str,
) -> Result<String> {
    local_write_as(state, collection, id, op, fields, hlc, schema, "")
}

/// The writer of a local write and the record's author, from
/// `{"user", "role", "author"}`.
fn parse_actor(json: &str) -> Result<(Actor, Option<UserId>)> {
    #[derive(serde::Deserialize)]
    struct Given {
        user: UserId,
        role: Role,
        author: Option<UserId>,
    }
    let given: Given = parse("a writer", json)?;
    let actor = Actor {
        user: given.user,
        role: given.role,
        server_fields: false,
    };
    Ok((actor, given.author))
}

/// The protocol version this client speaks, for the `Ferry-Protocol`
/// header of its requests.
#[wasm_bindgen(js_name = protocolVersion)]
pub fn protocol_version() -> String {
    ferry_core::protocol::PROTOCOL_VERSION.to_owned()
}

/// One local write, checked and merged as the server would; see
/// [`local_write_inner`]. Throws when the write breaks the protocol's
/// rules (a bad field name, a value over 1 MiB, a deleted record).
#[wasm_bindgen(js_name = localWrite)]
#[allow(clippy::too_many_arguments)]
pub fn local_write_js(
    state: &str,
    collection: &str,
    id: &str,
    op: &str,
    fields: &str,
    hlc: &str,
    schema: &str,
    actor: &str,
) -> std::result::Result<String, JsError> {
    js(local_write_as(
        state, collection, id, op, fields, hlc, schema, actor,
    ))
}

/// Merges a pulled record (`theirs`, a record or a record state as JSON)
/// into the local state `ours`: the state after seeing both.
pub fn merge_record_inner(ours: &str, theirs: &str) -> Result<String> {
    let merged = merge_states(parse_state(ours)?, &parse_state(theirs)?);
    to_json(&merged)
}

/// Merges a pulled record into the local one (both JSON); returns the
/// merged state as JSON.
#[wasm_bindgen(js_name = mergeRecord)]
pub fn merge_record(ours: &str, theirs: &str) -> std::result::Result<String, JsError> {
    js(merge_record_inner(ours, theirs))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| format!("not {what}: {e}"))
}

/// How an inbox takes the conflict `incoming` (JSON) that the server
/// reported, given the entries it `held` about the same record (a JSON
/// array), the record's `local` state and the replica's id `me`: returns
/// `{"skip": true}` (settled by the replica's own later write),
/// `{"fold": i, "conflict": <the entry to keep in place of held[i]>}`, or
/// `{"add": true}`.
pub fn inbox_take_inner(held: &str, incoming: &str, local: &str, me: &str) -> Result<String> {
    let held: Vec<Conflict> = parse("a list of conflicts", held)?;
    let incoming: Conflict = parse("a conflict", incoming)?;
    let me = ClientId::new(me).map_err(|e| e.to_string())?;
    if settled_locally(&incoming, &parse_state(local)?, &me) {
        return to_json(&serde_json::json!({"skip": true}));
    }
    match held
        .iter()
        .enumerate()
        .find_map(|(i, h)| fold(h, &incoming).map(|kept| (i, kept)))
    {
        Some((i, kept)) => to_json(&serde_json::json!({"fold": i, "conflict": kept})),
        None => to_json(&serde_json::json!({"add": true})),
    }
}

/// See [`inbox_take_inner`].
#[wasm_bindgen(js_name = inboxTake)]
pub fn inbox_take(
    held: &str,
    incoming: &str,
    local: &str,
    me: &str,
) -> std::result::Result<String, JsError> {
    js(inbox_take_inner(held, incoming, local, me))
}

/// The one `record_deleted` entry a replica keeps for a record found
/// deleted (at `deleted`, an HLC, or empty when unknown): from its
/// `dropped` pending changes and the inbox entries it `held` about the
/// record (JSON arrays), given its `local` state and id `me`. Returns the
/// conflict as JSON, or `null`.
pub fn deleted_under_inner(
    collection: &str,
    id: &str,
    dropped: &str,
    held: &str,
    deleted: &str,
    local: &str,
    me: &str,
) -> Result<String> {
    let collection = Collection::new(collection).map_err(|e| e.to_string())?;
    let id = RecordId::new(id).map_err(|e| e.to_string())?;
    let dropped: Vec<Change> = parse("a list of changes", dropped)?;
    let held: Vec<Conflict> = parse("a list of conflicts", held)?;
    let deleted = (!deleted.is_empty())
        .then(|| parse_hlc(deleted))
        .transpose()?;
    let me = ClientId::new(me).map_err(|e| e.to_string())?;
    let kept = deleted_under(
        &collection,
        &id,
        &dropped,
        &held,
        deleted.as_ref(),
        &parse_state(local)?,
        &me,
    );
    to_json(&kept)
}

/// See [`deleted_under_inner`].
#[wasm_bindgen(js_name = deletedUnder)]
pub fn deleted_under_js(
    collection: &str,
    id: &str,
    dropped: &str,
    held: &str,
    deleted: &str,
    local: &str,
    me: &str,
) -> std::result::Result<String, JsError> {
    js(deleted_under_inner(
        collection, id, dropped, held, deleted, local, me,
    ))
}

/// The values a `record_deleted` conflict (JSON) holds of the replica's
/// lost writes, as a JSON object of plain values to write as a new record.
pub fn restorable_inner(conflict: &str) -> Result<String> {
    let conflict: Conflict = parse("a conflict", conflict)?;
    to_json(&restorable(&conflict))
}

/// See [`restorable_inner`].
#[wasm_bindgen(js_name = restorable)]
pub fn restorable_js(conflict: &str) -> std::result::Result<String, JsError> {
    js(restorable_inner(conflict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: f64 = 1_763_798_400_000.0;

    #[test]
    fn names_are_checked_as_the_protocol_says() {
        assert!(check_name_inner("space", "user:u_1").is_ok());
        assert!(check_name_inner("field", "_hidden").is_err());
        assert!(check_name_inner("collection", "to dos").is_err());
        assert!(check_name_inner("planet", "x").is_err());
    }

    #[test]
    fn the_clock_moves_forward_even_when_time_does_not() {
        let zero = hlc_zero_inner("tab-1").unwrap();
        let first = hlc_tick_inner(&zero, T).unwrap();
        assert_eq!(first, "001763798400000:00000:tab-1");
        let second = hlc_tick_inner(&first, T - 1000.0).unwrap();
        assert!(second > first);
        let seen = hlc_observe_inner(&second, "001763798500000:00007:srv", T).unwrap();
        assert_eq!(seen, "001763798500000:00008:tab-1");
        assert!(hlc_tick_inner("yesterday", T).is_err());
        let moved = hlc_rebase_inner(&seen, "web-2").unwrap();
        assert_eq!(moved, "001763798500000:00008:web-2");
        assert_eq!(millis(f64::NAN), 0);
    }

    #[test]
    fn a_local_write_gives_the_change_and_the_new_state() {
        let h1 = "001763798400000:00000:tab-1";
        let out =
            local_write_inner("", "todos", "t1", "put", r#"{"title":"Milk"}"#, h1, "").unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["change"]["op"], "upsert");
        assert_eq!(out["state"]["fields"]["title"]["value"], "Milk");
        let state = out["state"].to_string();
        let h2 = "001763798400001:00000:tab-1";
        let del = local_write_inner(&state, "todos", "t1", "delete", "", h2, "").unwrap();
        let del: Value = serde_json::from_str(&del).unwrap();
        assert_eq!(del["state"]["deleted"], h2);
        let again = local_write_inner(
            &del["state"].to_string(),
            "todos",
            "t1",
            "patch",
            "{}",
            h2,
            "",
        );
        assert!(again.is_err());
        assert!(local_write_inner("", "todos", "t1", "put", "[1]", h1, "").is_err());
        assert!(local_write_inner("", "todos", "t1", "rename", "{}", h1, "").is_err());
    }

    #[test]
    fn the_browser_judges_writes_as_the_native_client_does() {
        use ferry_core::schema::Schema;
        let schema = r#"{"collections": {"todos": {"mode": "strict", "fields": {
            "title": {"type": "string", "max_length": 5, "required": true},
            "n": {"type": "integer", "min": 0}}}}}"#;
        let parsed = Schema::parse(schema).unwrap();
        let h = "001763798400000:00000:tab-1";
        let cases = [
            json!({"title": "Milk"}),
            json!({"title": "Milk", "n": 3}),
            json!({"title": "Milk", "n": -1}),
            json!({"title": "Milk", "n": 1.5}),
            json!({"title": "Too long"}),
            json!({"title": 1}),
            json!({"n": 1}),
            json!({"title": "Milk", "x": 1}),
            json!({"title": null}),
        ];
        for fields in cases {
            let out = local_write_inner("", "todos", "t1", "put", &fields.to_string(), h, schema)
                .unwrap();
            let out: Value = serde_json::from_str(&out).unwrap();
            // The native judgement of the same write.
            let write = ferry_core::local::LocalWrite::put(fields.clone()).unwrap();
            let done = ferry_core::local::local_write(
                ferry_core::RecordState::default(),
                &Collection::new("todos").unwrap(),
                &RecordId::new("t1").unwrap(),
                write,
                &h.parse().unwrap(),
            )
            .unwrap();
            let native = parsed.check(
                &ferry_core::RecordState::default(),
                &done.change,
                &done.state,
            );
            match native {
                Ok(()) => assert!(out["violation"].is_null(), "{fields}: {out}"),
                Err(v) => {
                    assert_eq!(
                        out["violation"]["rule"],
                        serde_json::to_value(v.rule).unwrap(),
                        "{fields}"
                    );
                    assert_eq!(out["message"], v.to_string(), "{fields}");
                }
            }
        }
        // Undeclared collections pass, and a schema that does not parse is
        // an error, never a pass.
        assert!(local_write_inner("", "notes", "n1", "put", r#"{"x": 1}"#, h, schema).is_ok());
        assert!(
            local_write_inner("", "todos", "t1", "put", r#"{"title": "a"}"#, h, "{bad").is_err()
        );
    }

    #[test]
    fn merging_keeps_the_newest_write_of_each_field() {
        let ours = json!({"fields": {"a": {"value": 1, "hlc": "001763798400005:00000:tab"}}, "deleted": null});
        let theirs = json!({"collection": "todos", "id": "t", "seq": 3,
            "fields": {"a": {"value": 2, "hlc": "001763798400001:00000:srv"},
                       "b": {"value": 3, "hlc": "001763798400001:00000:srv"}},
            "deleted": null});
        let merged = merge_record_inner(&ours.to_string(), &theirs.to_string()).unwrap();
        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged["fields"]["a"]["value"], 1);
        assert_eq!(merged["fields"]["b"]["value"], 3);
        assert!(merge_record_inner("{", "").is_err());
    }

    #[test]
    fn the_inbox_folds_skips_and_gathers_as_the_core_says() {
        let lost = |v: &str, h: &str| {
            json!({"collection": "todos", "id": "t", "field": "title", "kind": "stale_write",
                   "yours": {"value": v, "hlc": h},
                   "winner": {"value": "b", "hlc": "001763798400009:00000:b"}})
        };
        let h1 = "001763798400001:00000:tab";
        let h2 = "001763798400002:00000:tab";
        let empty = json!({"fields": {}, "deleted": null}).to_string();
        let add = inbox_take_inner("[]", &lost("a", h1).to_string(), &empty, "tab").unwrap();
        assert_eq!(add, r#"{"add":true}"#);
        let held = json!([lost("a", h1)]).to_string();
        let folded = inbox_take_inner(&held, &lost("a2", h2).to_string(), &empty, "tab").unwrap();
        let folded: Value = serde_json::from_str(&folded).unwrap();
        assert_eq!(folded["fold"], 0);
        assert_eq!(folded["conflict"]["yours"]["value"], "a2");
        let mine = json!({"fields": {"title": {"value": "a3", "hlc": "001763798400010:00000:tab"}},
                          "deleted": null});
        let skip = inbox_take_inner("[]", &lost("a", h1).to_string(), &mine.to_string(), "tab");
        assert_eq!(skip.unwrap(), r#"{"skip":true}"#);

        let gathered = deleted_under_inner(
            "todos",
            "t",
            "[]",
            &held,
            "001763798400011:00000:b",
            &empty,
            "tab",
        )
        .unwrap();
        assert_eq!(restorable_inner(&gathered).unwrap(), r#"{"title":"a"}"#);
        let none = deleted_under_inner("todos", "t", "[]", "[]", "", &empty, "tab").unwrap();
        assert_eq!(none, "null");
        assert!(inbox_take_inner("{", "{}", "", "tab").is_err());
    }
}
