//! Request and response bodies of PROTOCOL.md §4, §5, §6 and §10, and the
//! decoding of a sync request, which reports the index of a bad change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::change::{Change, Conflict, Record};
use crate::hlc::Hlc;
use crate::names::{ClientId, FieldName, NameError, RecordId, SpaceId, UserId};

/// At most this many changes in one sync request.
pub const MAX_BATCH_CHANGES: usize = 10_000;
/// At most this many bytes in one serialized field value.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// At most this many bytes in one record's fields, serialized as stored
/// (`{name: {value, hlc}}`): a write that would make a record larger, and
/// larger than it was, is refused (`413 too_large`). A pull page carries
/// records whole, so this bounds what one page can hold beyond its byte
/// budget.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
/// The page size of a pull when the request names none.
pub const DEFAULT_PULL_LIMIT: u32 = 1000;
/// The largest page a pull may ask for.
pub const MAX_PULL_LIMIT: u32 = 10_000;

/// The request header in which a client names the protocol version it
/// speaks (docs/protocol.md, Versions). A server sends what a version added
/// to its answers (a record's `author`, v1.5) only to clients that speak it:
/// older ones refuse fields they do not know.
pub const PROTOCOL_HEADER: &str = "ferry-protocol";

/// The protocol version this Ferry speaks, as sent in [`PROTOCOL_HEADER`].
pub const PROTOCOL_VERSION: &str = "1.5";

/// Whether a client that sent `header` (the value of [`PROTOCOL_HEADER`],
/// if any) speaks at least version `major.minor`.
pub fn speaks(header: Option<&str>, major: u32, minor: u32) -> bool {
    header
        .and_then(|v| v.trim().split_once('.'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .is_some_and(|v| v >= (major, minor))
}

/// A client's name for one batch of changes, the key of idempotent retry
/// together with the client id. Same syntax as a client id.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(ClientId);

impl BatchId {
    /// Checks `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        ClientId::new(s).map(BatchId).map_err(|e| NameError {
            kind: "batch id",
            reason: e.reason,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for BatchId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<BatchId> for String {
    fn from(b: BatchId) -> String {
        b.0.into_string()
    }
}

impl std::fmt::Debug for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchId({:?})", self.as_str())
    }
}

/// `POST /v1/spaces/{space}/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The replica sending the batch.
    pub client_id: ClientId,
    /// The batch's id; required when `changes` is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    /// The highest `seq` the client has applied (0 when it has none).
    #[serde(default)]
    pub cursor: u64,
    /// The writes, in the order the client made them.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The page size of the pull (default 1000, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Up to where this client has received the conflicts reported to it
    /// (a `seq`); absent, `cursor`. Differs from `cursor` while a client
    /// pulls a space again from 0, so that it is not told again what it
    /// was told before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_cursor: Option<u64>,
}

/// Why a sync request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// The body is JSON but not a sync request.
    #[error("{0}")]
    Request(String),
    /// More than [`MAX_BATCH_CHANGES`] changes.
    #[error("a batch holds at most {max} changes, this one has {count}")]
    TooManyChanges {
        /// How many the request had.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One change breaks the rules of PROTOCOL.md §1 and §2.
    #[error("change {index}: {reason}")]
    Change {
        /// Its position in `changes`, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// One field value is larger than [`MAX_VALUE_BYTES`].
    #[error("change {index}: field '{field}' is {bytes} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// Its position in `changes`, from 0.
        index: usize,
        /// The field.
        field: String,
        /// Its serialized size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

fn json_error(e: serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::Request(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    }
}

/// The shape of a sync request with its changes left undecoded, so that each
/// can be decoded on its own and a bad one named by its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequestWire<'a> {
    client_id: ClientId,
    #[serde(default)]
    batch_id: Option<BatchId>,
    #[serde(default)]
    cursor: u64,
    #[serde(default, borrow)]
    changes: Vec<&'a RawValue>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    conflict_cursor: Option<u64>,
}

impl SyncRequest {
    /// Decodes and checks a sync request body: names, HLCs, the batch size,
    /// value sizes, and that every upsert names at least one field.
    pub fn from_json(body: &[u8]) -> Result<SyncRequest, DecodeError> {
        let wire: SyncRequestWire<'_> = serde_json::from_slice(body).map_err(json_error)?;
        if wire.changes.len() > MAX_BATCH_CHANGES {
            return Err(DecodeError::TooManyChanges {
                count: wire.changes.len(),
                max: MAX_BATCH_CHANGES,
            });
        }
        if !wire.changes.is_empty() && wire.batch_id.is_none() {
            return Err(DecodeError::Request(
                "batch_id is required when changes are sent".into(),
            ));
        }
        let changes = wire
            .changes
            .iter()
            .enumerate()
            .map(|(index, raw)| decode_change(index, raw, &wire.client_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SyncRequest {
            client_id: wire.client_id,
            batch_id: wire.batch_id,
            cursor: wire.cursor,
            changes,
            limit: wire.limit,
            conflict_cursor: wire.conflict_cursor,
        })
    }
}

fn decode_change(index: usize, raw: &RawValue, client: &ClientId) -> Result<Change, DecodeError> {
    let change: Change = serde_json::from_str(raw.get()).map_err(|e| DecodeError::Change {
        index,
        reason: e.to_string(),
    })?;
    // A replica writes under its own name: a write stamped with another
    // replica's could be reported to that replica as its own.
    let stamps: Vec<&crate::hlc::Hlc> = match &change {
        Change::Upsert { fields, .. } => fields.values().map(|f| &f.hlc).collect(),
        Change::Delete { hlc, .. } => vec![hlc],
    };
    if let Some(other) = stamps.iter().find(|h| h.node() != client) {
        return Err(DecodeError::Change {
            index,
            reason: format!(
                "its HLC {other} names node {}, not the client id {client}: a replica stamps \
                 its writes with its own client id",
                other.node()
            ),
        });
    }
    if let Change::Upsert { fields, base, .. } = &change {
        if fields.is_empty() {
            return Err(DecodeError::Change {
                index,
                reason: "an upsert names at least one field".into(),
            });
        }
        if let Some(stray) = base
            .iter()
            .flat_map(|b| b.keys())
            .find(|name| !fields.contains_key(*name))
        {
            return Err(DecodeError::Change {
                index,
                reason: format!("base names {stray}, a field the upsert does not write"),
            });
        }
        // A value cannot be larger than the change that holds it, so only
        // large changes are measured field by field.
        if raw.get().len() > MAX_VALUE_BYTES {
            for (name, fv) in fields {
                let bytes = serialized_len(&fv.value);
                if bytes > MAX_VALUE_BYTES {
                    return Err(DecodeError::ValueTooLarge {
                        index,
                        field: name.to_string(),
                        bytes,
                        max: MAX_VALUE_BYTES,
                    });
                }
            }
        }
    }
    Ok(change)
}

/// The size of `value` serialized compactly.
pub fn serialized_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The answer to a sync: what the push did, then a page of the pull.
/// `R` is how records are carried; clients read [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse<R = Record> {
    /// How many changes altered stored state.
    pub applied: u64,
    /// The writes of this batch that lost (the same on a retry).
    pub conflicts: Vec<Conflict>,
    /// Earlier writes of this client that concurrent writes replaced after
    /// they were stored, reported with this page (see `conflict_cursor`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<Conflict>,
    /// Records with `seq > cursor`, ordered by `seq`.
    pub changes: Vec<R>,
    /// The cursor to send next time.
    pub cursor: u64,
    /// Whether more records wait.
    pub has_more: bool,
    /// The server's clock, for the client to observe.
    pub hlc: Hlc,
    /// The version of the app's schema (docs/schema.md) in force; a
    /// client holding an older one fetches `GET /v1/schema`. Absent (0)
    /// while none was applied.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u64,
    /// The caller's role in the space as the server judged this request
    /// (v1.5): what a client judges the schema's permissions by locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The answer to `GET /v1/spaces/{space}/changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse<R = Record> {
    /// Records with `seq > cursor`, ordered by `seq`.
    pub changes: Vec<R>,
    /// The conflicts reported with this page to the `client_id` the pull
    /// named, as in [`SyncResponse::reported`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<Conflict>,
    /// The cursor to send next time.
    pub cursor: u64,
    /// Whether more records wait.
    pub has_more: bool,
    /// The server's clock, for the client to observe.
    pub hlc: Hlc,
    /// As in [`SyncResponse::schema_version`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u64,
    /// The caller's role in the space as the server judged this request
    /// (v1.5): what a client judges the schema's permissions by locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// A page of `GET .../collections/{collection}/records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsPage<R = Record> {
    /// Live records ordered by id.
    pub records: Vec<R>,
    /// The id to pass as `after` for the next page, or `null` at the end.
    pub next: Option<RecordId>,
}

/// The body of `PUT` and `PATCH .../records/{id}`: plain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRecord {
    /// The fields to set.
    pub fields: BTreeMap<FieldName, serde_json::Value>,
}

/// A member's role in a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read and write.
    Editor,
    /// Everything, and manages members.
    Owner,
}

impl Role {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// Whether this role may write records.
    pub fn can_write(self) -> bool {
        self >= Role::Editor
    }
}

/// A space as its member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceInfo {
    /// The space id.
    pub id: SpaceId,
    /// Its display name.
    pub name: String,
    /// The caller's role in it.
    pub role: Role,
}

/// `GET /v1/spaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpacesList {
    /// The caller's spaces.
    pub spaces: Vec<SpaceInfo>,
}

/// `POST /v1/spaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSpace {
    /// The id; the server picks one when absent.
    #[serde(default)]
    pub id: Option<SpaceId>,
    /// The display name.
    pub name: String,
}

/// A member of a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's user id.
    pub user_id: UserId,
    /// The member's email, when known.
    pub email: Option<String>,
    /// The member's role.
    pub role: Role,
}

/// `GET /v1/spaces/{space}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersList {
    /// Everyone in the space.
    pub members: Vec<Member>,
}

/// `PUT /v1/spaces/{space}/members/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// The new role.
    pub role: Role,
}

/// `POST /v1/spaces/{space}/invites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// Who to add.
    pub email: String,
    /// With which role.
    pub role: Role,
}

/// A user as `/v1/me` and the auth endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Ferry's id for the user.
    pub id: UserId,
    /// The email, when known.
    pub email: Option<String>,
}

/// What the user has paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// The plan, e.g. `free` or `pro`.
    pub plan: String,
    /// `active`, `trialing`, `canceled`, ...
    pub status: String,
    /// When the paid period ends (RFC 3339), if there is one.
    pub current_period_end: Option<String>,
    /// Who bills it: `stripe`, `lemonsqueezy`, `admin` (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's customer id (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Whether the user may sync now (an extension; `false` only when the
    /// server requires a plan the user does not have).
    #[serde(default = "yes")]
    pub sync: bool,
}

fn yes() -> bool {
    true
}

/// `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// The caller.
    pub user: UserInfo,
    /// The caller's entitlement.
    pub entitlement: Entitlement,
}

/// The body of every error answer (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable snake_case code.
    pub code: String,
    /// For a person.
    pub message: String,
    /// More, where it helps (the index of a bad change, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: &str = "001763798400000:00000:laptop-7f3a";

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn decodes_the_protocol_example() {
        let req = SyncRequest::from_json(&body(json!({
            "client_id": "laptop-7f3a", "batch_id": "b-000017", "cursor": 40,
            "changes": [
                {"op": "upsert", "collection": "todos", "id": "t-1",
                 "fields": {"title": {"value": "Buy milk", "hlc": H}}},
                {"op": "delete", "collection": "todos", "id": "t-2", "hlc": H}
            ],
            "limit": 1000
        })))
        .unwrap();
        assert_eq!(req.cursor, 40);
        assert_eq!(req.changes.len(), 2);
        assert_eq!(req.batch_id.unwrap().as_str(), "b-000017");
    }

    #[test]
    fn a_write_stamped_with_another_replicas_name_is_refused() {
        let err = SyncRequest::from_json(&body(json!({
            "client_id": "phone-1", "batch_id": "b",
            "changes": [{"op": "delete", "collection": "todos", "id": "t-1", "hlc": H}]
        })))
        .unwrap_err();
        match err {
            DecodeError::Change { index, reason } => {
                assert_eq!(index, 0);
                assert!(reason.contains("laptop-7f3a"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pure_pull_needs_no_batch_id() {
        let req = SyncRequest::from_json(&body(json!({"client_id": "c"}))).unwrap();
        assert!(req.changes.is_empty());
        assert_eq!(req.cursor, 0);
    }

    #[test]
    fn a_bad_change_is_named_by_its_index() {
        let err = SyncRequest::from_json(&body(json!({
            "client_id": "laptop-7f3a", "batch_id": "b",
            "changes": [
                {"op": "delete", "collection": "todos", "id": "t-1", "hlc": H},
                {"op": "delete", "collection": "to/dos", "id": "t-1", "hlc": H}
            ]
        })))
        .unwrap_err();
        match err {
            DecodeError::Change { index, reason } => {
                assert_eq!(index, 1);
                assert!(reason.contains("collection"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_upsert_is_refused() {
        let err = SyncRequest::from_json(&body(json!({
            "client_id": "laptop-7f3a", "batch_id": "b",
            "changes": [{"op": "upsert", "collection": "todos", "id": "t-1", "fields": {}}]
        })))
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::Change { index: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_and_shape_errors_differ() {
        assert!(matches!(
            SyncRequest::from_json(b"{\"client_id\": "),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            SyncRequest::from_json(b"{\"cursor\": 1}"),
            Err(DecodeError::Request(_))
        ));
        assert!(matches!(
            SyncRequest::from_json(b"{\"client_id\": \"c\", \"cursor\": -1}"),
            Err(DecodeError::Request(_))
        ));
        assert!(matches!(
            SyncRequest::from_json(&body(json!({"client_id": "c", "changes": [
                {"op": "delete", "collection": "t", "id": "t-1", "hlc": H}]}))),
            Err(DecodeError::Request(_))
        ));
    }

    #[test]
    fn too_many_changes_are_refused_before_decoding_them() {
        let one = json!({"op": "delete", "collection": "t", "id": "i", "hlc": H});
        let changes: Vec<_> = std::iter::repeat_n(one, MAX_BATCH_CHANGES + 1).collect();
        let err = SyncRequest::from_json(&body(
            json!({"client_id": "laptop-7f3a", "batch_id": "b", "changes": changes}),
        ))
        .unwrap_err();
        assert!(matches!(
            err,
            DecodeError::TooManyChanges { count: 10_001, .. }
        ));
    }

    #[test]
    fn an_oversized_value_is_named() {
        let big = "x".repeat(MAX_VALUE_BYTES);
        let err = SyncRequest::from_json(&body(json!({
            "client_id": "laptop-7f3a", "batch_id": "b",
            "changes": [{"op": "upsert", "collection": "t", "id": "i",
                "fields": {"small": {"value": 1, "hlc": H}, "big": {"value": big, "hlc": H}}}]
        })))
        .unwrap_err();
        match err {
            DecodeError::ValueTooLarge { index, field, .. } => {
                assert_eq!((index, field.as_str()), (0, "big"));
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        let fits = "x".repeat(MAX_VALUE_BYTES - 2);
        assert!(
            SyncRequest::from_json(&body(json!({
                "client_id": "laptop-7f3a", "batch_id": "b",
                "changes": [{"op": "upsert", "collection": "t", "id": "i",
                    "fields": {"f": {"value": fits, "hlc": H}}}]
            })))
            .is_ok()
        );
    }

    #[test]
    fn roles_order_by_power() {
        assert!(Role::Owner.can_write() && Role::Editor.can_write());
        assert!(!Role::Viewer.can_write());
        assert_eq!(Role::parse("editor"), Some(Role::Editor));
        assert_eq!(serde_json::to_value(Role::Owner).unwrap(), json!("owner"));
    }
}
