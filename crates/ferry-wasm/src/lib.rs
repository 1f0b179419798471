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

use ferry_core::local::{LocalWrite, local_write};
use ferry_core::{
    ClientId, Collection, FieldName, Hlc, RecordId, RecordState, SpaceId, merge_states,
};
use serde_json::Value;
use wasm_bindgen::prelude::*;

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

/// One local write. `state` is the record's state as JSON (empty for a
/// record the replica does not have), `op` is `put`, `patch` or `delete`,
/// `fields` a JSON object (ignored for a delete), `hlc` the replica's next
/// tick. Returns `{"change": <change>, "state": <state>}` as JSON.
pub fn local_write_inner(
    state: &str,
    collection: &str,
    id: &str,
    op: &str,
    fields: &str,
    hlc: &str,
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
    let done = local_write(parse_state(state)?, &collection, &id, write, &hlc)
        .map_err(|e| e.to_string())?;
    to_json(&serde_json::json!({"change": done.change, "state": done.state}))
}

/// One local write, checked and merged as the server would; see
/// [`local_write_inner`]. Throws when the write breaks the protocol's
/// rules (a bad field name, a value over 1 MiB, a deleted record).
#[wasm_bindgen(js_name = localWrite)]
pub fn local_write_js(
    state: &str,
    collection: &str,
    id: &str,
    op: &str,
    fields: &str,
    hlc: &str,
) -> std::result::Result<String, JsError> {
    js(local_write_inner(state, collection, id, op, fields, hlc))
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
        assert_eq!(millis(f64::NAN), 0);
    }

    #[test]
    fn a_local_write_gives_the_change_and_the_new_state() {
        let h1 = "001763798400000:00000:tab-1";
        let out = local_write_inner("", "todos", "t1", "put", r#"{"title":"Milk"}"#, h1).unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["change"]["op"], "upsert");
        assert_eq!(out["state"]["fields"]["title"]["value"], "Milk");
        let state = out["state"].to_string();
        let h2 = "001763798400001:00000:tab-1";
        let del = local_write_inner(&state, "todos", "t1", "delete", "", h2).unwrap();
        let del: Value = serde_json::from_str(&del).unwrap();
        assert_eq!(del["state"]["deleted"], h2);
        let again = local_write_inner(&del["state"].to_string(), "todos", "t1", "patch", "{}", h2);
        assert!(again.is_err());
        assert!(local_write_inner("", "todos", "t1", "put", "[1]", h1).is_err());
        assert!(local_write_inner("", "todos", "t1", "rename", "{}", h1).is_err());
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
}
