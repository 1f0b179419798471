//! API tokens as stored: what a token may reach, never the token itself
//! (only its SHA-256 is kept). See docs/server-rules.md.

use ferry_core::{SpaceId, UserId};
use serde::Serialize;

/// What a token may do in the spaces it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAccess {
    /// Read records; writes are refused as a viewer's.
    Read,
    /// Read and write, as far as its owner's role allows.
    Write,
}

impl TokenAccess {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAccess::Read => "read",
            TokenAccess::Write => "write",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(text: &str) -> Option<TokenAccess> {
        match text {
            "read" => Some(TokenAccess::Read),
            "write" => Some(TokenAccess::Write),
            _ => None,
        }
    }
}

/// An API token's grant, as listed to its owner and as checked on use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Its public id (part of the token; how it is listed and revoked).
    pub id: String,
    /// Its owner: the token acts as this user, never beyond their rights.
    #[serde(skip)]
    pub user: UserId,
    /// The owner's name for it.
    pub name: String,
    /// The spaces it reaches, or `None` for every space of its owner.
    pub spaces: Option<Vec<SpaceId>>,
    /// Read or read-write.
    pub access: TokenAccess,
    /// Whether its REST writes may set the schema's server-only fields
    /// (in spaces its owner owns).
    pub server_fields: bool,
    /// When it was made, in ms since the epoch.
    pub created_at: u64,
    /// When it stops working, if ever.
    pub expires_at: Option<u64>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<u64>,
}

impl ApiToken {
    /// Whether the token reaches `space` (its owner's membership is
    /// checked apart).
    pub fn reaches(&self, space: &SpaceId) -> bool {
        self.spaces.as_ref().is_none_or(|list| list.contains(space))
    }

    /// Whether its stored last use is a minute old at `now` (and is to be
    /// written again).
    pub fn last_use_stale(&self, now: u64) -> bool {
        self.last_used_at
            .is_none_or(|used| now.saturating_sub(used) >= LAST_USED_EVERY_MS)
    }
}

/// How often a token's `last_used_at` is written at most, in ms.
pub const LAST_USED_EVERY_MS: u64 = 60_000;

/// The spaces of a token as stored: a JSON list, or NULL for all.
pub fn spaces_text(spaces: &Option<Vec<SpaceId>>) -> Result<Option<String>, super::StoreError> {
    spaces
        .as_ref()
        .map(|list| {
            serde_json::to_string(list).map_err(|e| super::StoreError::Internal(e.to_string()))
        })
        .transpose()
}

/// A row back into a token: `(id, user_id, name, spaces, access,
/// server_fields, created_at, expires_at, last_used_at)`.
pub type Row = (
    String,
    String,
    String,
    Option<String>,
    String,
    bool,
    i64,
    Option<i64>,
    Option<i64>,
);

/// The columns of [`Row`], in its order.
pub const COLUMNS: &str =
    "id, user_id, name, spaces, access, server_fields, created_at, expires_at, last_used_at";

/// Turns a stored row into a token.
pub fn from_row(row: Row) -> Result<ApiToken, super::StoreError> {
    use super::stored::{corrupt, count, user_id};
    let (id, user, name, spaces, access, server_fields, created, expires, used) = row;
    let spaces = spaces
        .map(|text| serde_json::from_str::<Vec<SpaceId>>(&text))
        .transpose()
        .map_err(|e| corrupt("token spaces", e))?;
    Ok(ApiToken {
        id,
        user: user_id(user)?,
        name,
        spaces,
        access: TokenAccess::parse(&access).ok_or_else(|| corrupt("token access", &access))?,
        server_fields,
        created_at: count(created),
        expires_at: expires.map(count),
        last_used_at: used.map(count),
    })
}
