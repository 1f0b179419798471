//! Webhooks as stored (docs/server-rules.md#webhooks): the endpoints, a
//! cursor per endpoint and space (what was delivered, what is being
//! delivered and retried, and which node holds it), and the dead letters.
//! Deliveries are read from the records as a pull reads them: a commit
//! writes nothing for webhooks.

use async_trait::async_trait;
use ferry_core::{Collection, SpaceId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;

/// A stored list (secrets, spaces, collections) as its JSON text.
pub(crate) fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A stored list read back; what fails was written wrong.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| super::stored::corrupt(what, e))
}

/// An endpoint the operator configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Its name, unique.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The signing secrets: each delivery is signed with every one, so a
    /// secret rotates by adding the new one, then removing the old.
    pub secrets: Vec<String>,
    /// Only these spaces, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spaces: Option<Vec<SpaceId>>,
    /// Only records of these collections, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<Collection>>,
}

impl Endpoint {
    /// Refuses an endpoint that cannot work or that anyone could forge
    /// deliveries for: an id that is not a name (letters, digits, `-`,
    /// `_`, `.`, at most 64), a URL that is not `http` or `https`, no
    /// secret, a secret shorter than 16 bytes, more than 5 secrets.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !id_ok {
            return Err(format!(
                "webhook id {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(format!(
                    "webhook {}: the url must be http:// or https:// with a host",
                    self.id
                ));
            }
        }
        if self.secrets.is_empty() || self.secrets.len() > 5 {
            return Err(format!("webhook {}: 1 to 5 secrets", self.id));
        }
        if self.secrets.iter().any(|s| s.len() < 16) {
            return Err(format!(
                "webhook {}: a secret of at least 16 bytes (anyone could guess a shorter one)",
                self.id
            ));
        }
        Ok(())
    }

    /// Whether it wants records of `collection`.
    pub fn wants(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c.as_str() == collection))
    }
}

/// An endpoint's cursor in a space with news, leased to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The endpoint's id.
    pub endpoint: String,
    /// The space's key.
    pub sid: i64,
    /// The space.
    pub space: SpaceId,
    /// Delivered up to this `seq`.
    pub cursor: u64,
    /// The space's head when claimed.
    pub head: u64,
    /// The space's horizon: tombstones up to it may have been compacted.
    pub horizon: u64,
    /// The end of the delivery being retried, if one is.
    pub pending_to: Option<u64>,
    /// Failed tries of that delivery.
    pub attempts: u32,
    /// When its first try failed (ms).
    pub first_failed_at: Option<u64>,
}

/// A record as a delivery carries it.
#[derive(Debug, Clone, Serialize)]
pub struct HookRecord {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// The `seq` of its last change.
    pub seq: u64,
    /// Its fields (`{}` on a tombstone).
    pub fields: Box<RawValue>,
    /// The HLC of its delete, on a tombstone.
    pub deleted: Option<String>,
    /// Who created it.
    pub author: Option<String>,
    /// Who changed it last.
    pub writer: Option<String>,
}

/// A delivery that failed for longer than the retry window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its number.
    pub id: i64,
    /// The endpoint.
    pub endpoint: String,
    /// The space.
    pub space: String,
    /// The delivery id (the receiver's key of idempotency).
    pub delivery: String,
    /// The body that was POSTed.
    #[serde(skip)]
    pub payload: String,
    /// The last failure.
    pub error: String,
    /// How many tries.
    pub attempts: u32,
    /// When it was given up on (ms).
    pub failed_at: u64,
    /// Whether a replay is asked for.
    pub replay: bool,
}

/// Where a cursor's delivery stands after a try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (or nothing to deliver) up to `to`.
    Delivered {
        /// The new cursor.
        to: u64,
    },
    /// Failed; tried again at `next_at`.
    Retry {
        /// The end of the delivery, kept so that the retry is the same one.
        pending_to: u64,
        /// Failed tries so far.
        attempts: u32,
        /// When the first try failed.
        first_failed_at: u64,
        /// When to try again (ms).
        next_at: u64,
        /// Why it failed.
        error: String,
    },
    /// Failed past the retry window: kept as a dead letter, and the cursor
    /// moves past it.
    Dead {
        /// The new cursor.
        to: u64,
        /// The letter (its `id` is ignored).
        letter: DeadLetter,
    },
}

/// The webhooks' storage; every backend implements it.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Every endpoint.
    async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;

    /// Adds an endpoint or replaces the one with its id. A new endpoint
    /// starts at every existing space's head: it is sent what is committed
    /// after it was added.
    async fn put_webhook_endpoint(
        &self,
        endpoint: &Endpoint,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Removes an endpoint, its cursors and its dead letters; `false` when
    /// there was none.
    async fn remove_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError>;

    /// Leases to `node` until `lease_until` up to `limit` cursors that have
    /// something to deliver and whose retry time has come, and that no
    /// other node holds. Of concurrent claims, one node gets each.
    async fn claim_webhooks(
        &self,
        node: &str,
        now_ms: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError>;

    /// Records of the space `sid` with `after < seq <= upto`, by `seq`: at
    /// most `limit`, and no more once their fields reach `max_bytes` (one
    /// at least); with whether more were left out.
    async fn webhook_records(
        &self,
        sid: i64,
        after: u64,
        upto: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<HookRecord>, bool), StoreError>;

    /// Records the tries of a round by `node` (each claimed delivery with
    /// its outcome), in one transaction, and releases their leases; a try
    /// whose lease passed to another node meanwhile is ignored.
    async fn webhook_tried(&self, node: &str, tries: Vec<(Due, Outcome)>)
    -> Result<(), StoreError>;

    /// The dead letters, oldest first.
    async fn webhook_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// Asks for dead letter `id` to be sent again; `false` when there is
    /// none.
    async fn replay_webhook(&self, id: i64) -> Result<bool, StoreError>;

    /// Takes the dead letters a replay is asked for: each is taken by one
    /// node (and no longer asked for), which sends it again.
    async fn take_webhook_replays(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// After a replay of dead letter `id`: removed when it was delivered,
    /// else kept with `error`.
    async fn webhook_replayed(&self, id: i64, error: Option<&str>) -> Result<(), StoreError>;

    /// How many cursors are retrying, and since when the oldest has been
    /// (ms).
    async fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError>;
}
