//! Webhooks (docs/server-rules.md#webhooks): the app's backend hears of
//! every commit. Each node runs one dispatcher; it claims an endpoint's
//! news of a space (a lease in the database, so that one node sends each
//! delivery), reads the records changed since the endpoint's cursor as a
//! pull does, POSTs them signed ([`sign`]), and moves the cursor only once
//! the endpoint answered `2xx`: at least once, in order per space, across
//! restarts and nodes. A failing endpoint is retried with backoff for
//! [`WebhookSettings::retry_for`], then the delivery becomes a dead letter
//! the operator can replay (`ferry admin webhooks`). Commits write nothing
//! for webhooks; the realtime signal of a commit wakes the dispatcher.

pub mod sign;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::clock::wall_ms;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::webhooks::{DeadLetter, Due, Endpoint, HookRecord, Outcome};

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Endpoints from the configuration, stored (added or updated) at
    /// start; others are added with `ferry admin webhooks add`.
    pub endpoints: Vec<Endpoint>,
    /// How often the dispatcher looks for news besides being woken.
    pub poll: Duration,
    /// How long the dispatcher waits once woken by a commit, so that the
    /// commits of that moment go out together (fewer claims and writes on
    /// a busy node).
    pub gather: Duration,
    /// The least time between the starts of two rounds while commits keep
    /// coming: a busy node sends each endpoint one delivery per space this
    /// often, carrying all the commits of the while, so that the webhooks'
    /// work stays a small share of the node's however fast it commits.
    pub busy_gather: Duration,
    /// How long a node holds a claimed delivery: a node that stops
    /// mid-delivery leaves it to another after this.
    pub lease: Duration,
    /// How long one POST may take.
    pub timeout: Duration,
    /// How long a failing delivery is retried before it is a dead letter.
    pub retry_for: Duration,
    /// The first wait after a failure; it doubles with each.
    pub first_retry: Duration,
    /// The longest wait between tries.
    pub max_retry: Duration,
    /// The most records in one delivery.
    pub batch: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            endpoints: Vec::new(),
            poll: Duration::from_secs(1),
            gather: Duration::from_millis(20),
            busy_gather: Duration::from_millis(50),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(26 * 3600),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(3600),
            batch: 100,
        }
    }
}

/// The most bytes of records' fields in one delivery (at least one record
/// goes, whatever its size).
pub const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// How many deliveries one round claims, and sends at once.
const CLAIM: u32 = 32;
const AT_ONCE: usize = 8;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Starts the dispatcher; it runs until the node stops.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let settings = &state.settings.webhooks;
        for endpoint in &settings.endpoints {
            if let Err(e) = state.store.put_webhook_endpoint(endpoint, wall_ms()).await {
                tracing::error!(endpoint = %endpoint.id, error = %e, "cannot store a configured webhook endpoint");
            }
        }
        // Redirects are failures: a redirected POST becomes a GET without
        // the delivery, which must never count as delivered.
        let http = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .user_agent("Ferry webhooks")
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhooks' HTTP client; no webhook is sent");
                return;
            }
        };
        let mut backoff = Duration::from_millis(100);
        let mut kept = Kept::default();
        let mut last = tokio::time::Instant::now();
        loop {
            // Commits came while the last round ran: the node is busy, and
            // this round waits for more of them.
            let busy = state.realtime.webhooks.notified().now_or_never().is_some();
            if busy {
                tokio::select! {
                    () = state.realtime.closing() => return,
                    () = tokio::time::sleep(settings.gather) => {}
                }
                tokio::select! {
                    () = state.realtime.closing() => return,
                    () = tokio::time::sleep_until(last + settings.busy_gather) => {}
                }
            } else {
                tokio::select! {
                    () = state.realtime.closing() => return,
                    () = state.realtime.webhooks.notified() => {
                        tokio::time::sleep(settings.gather).await;
                    }
                    () = tokio::time::sleep(settings.poll) => {}
                }
            }
            last = tokio::time::Instant::now();
            match round(&state, &http, &mut kept).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    kept = Kept::default();
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot deliver webhooks");
                    tokio::select! {
                        () = state.realtime.closing() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// What the dispatcher keeps between rounds: when it last looked for
/// replays and measured the backlog. A busy node runs a round every few
/// tens of milliseconds; neither needs to be fresher than the poll. (The
/// endpoints are read before every claim: an endpoint replaced under its
/// id must never be sent with its old URL, secrets or collections.)
#[derive(Default)]
struct Kept {
    housekept_at: Option<tokio::time::Instant>,
}

/// Delivers what is due until nothing is, then, once a poll interval or
/// after a failure, sends the replays asked for and measures the backlog.
async fn round(
    state: &AppState,
    http: &reqwest::Client,
    kept: &mut Kept,
) -> Result<(), StoreError> {
    let node = state.settings.node_id.as_str();
    let poll = state.settings.webhooks.poll;
    let mut endpoints;
    let mut retried = false;
    loop {
        endpoints = state.store.webhook_endpoints().await?;
        if endpoints.is_empty() {
            state.metrics.webhook_backlog(0, 0);
            return Ok(());
        }
        let now = wall_ms();
        let lease = ms(state.settings.webhooks.lease);
        let due = state
            .store
            .claim_webhooks(node, now, now.saturating_add(lease), CLAIM)
            .await?;
        let claimed = due.len();
        let mut outcomes = Vec::with_capacity(claimed);
        // A few deliveries at a time, so that a round holds the records of
        // at most that many (each at most `MAX_DELIVERY_BYTES`); the
        // endpoints of a space are claimed side by side, and share a read.
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let chunk: Vec<Due> = due.by_ref().take(AT_ONCE).collect();
            let reads = read_ranges(state, &chunk).await;
            let tried: Vec<Result<Option<(Due, Outcome)>, String>> =
                futures_util::stream::iter(chunk)
                    .map(|d| deliver(state, http, &endpoints, &reads, d))
                    .buffer_unordered(AT_ONCE)
                    .collect()
                    .await;
            // One delivery's error (its records unreadable) does not cost
            // the others their outcome; its lease lapses and it is tried
            // again.
            for t in tried {
                match t {
                    Ok(Some(outcome)) => {
                        retried |= !matches!(outcome.1, Outcome::Delivered { .. });
                        outcomes.push(outcome);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot prepare a webhook delivery"),
                }
            }
        }
        state.store.webhook_tried(node, outcomes).await?;
        if claimed < CLAIM as usize {
            break;
        }
    }
    // A failure shows in the metrics at once; else once a poll interval.
    if retried || kept.housekept_at.is_none_or(|at| at.elapsed() >= poll) {
        kept.housekept_at = Some(tokio::time::Instant::now());
        for letter in state.store.take_webhook_replays().await? {
            replay(state, http, &endpoints, letter).await?;
        }
        let (retrying, oldest) = state.store.webhook_backlog().await?;
        let age = oldest.map_or(0, |at| wall_ms().saturating_sub(at) / 1000);
        state.metrics.webhook_backlog(retrying, age);
    }
    Ok(())
}

/// The id of the delivery of `(cursor, to]` of `space` to `endpoint`: the
/// same for every try, so that a receiver takes it once.
pub fn delivery_id(endpoint: &str, space: &str, cursor: u64, to: u64) -> String {
    let digest = Sha256::digest(format!("{endpoint}\0{space}\0{cursor}\0{to}").as_bytes());
    format!("whd_{}", &crate::ids::hex(&digest)[..32])
}

/// POSTs `body` to `endpoint`, signed now; `Err` says why it failed.
async fn post(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    delivery: &str,
    body: &[u8],
) -> Result<(), String> {
    let signature = sign::sign(&endpoint.secrets, wall_ms() / 1000, body);
    let response = http
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER, signature)
        .header("ferry-delivery", delivery)
        .body(body.to_vec())
        .send()
        .await
        // Without the URL, which may carry credentials.
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered {status}"))
    }
}

/// The wait before try `attempts + 1`: doubling from the first, at most
/// the longest, give or take a fifth (so that failing endpoints' retries
/// spread out).
fn backoff(settings: &WebhookSettings, attempts: u32) -> u64 {
    let base = ms(settings.first_retry)
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(40))
        .min(ms(settings.max_retry));
    let mut bytes = [0u8; 4];
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from(u32::from_le_bytes(bytes)) % (base / 5 + 1),
        Err(_) => 0,
    };
    base - base / 10 + jitter
}

/// The records of a space after a cursor up to a seq, with whether the
/// count or the bytes cut them short.
type Range = (i64, u64, u64);
type Read = Result<(Vec<HookRecord>, bool), String>;

/// The range a claimed delivery covers, before the batch cuts it.
fn range(due: &Due) -> Range {
    (
        due.sid,
        due.cursor,
        due.pending_to.unwrap_or(due.head).max(due.cursor),
    )
}

/// Reads each range the round's deliveries cover once: the endpoints of a
/// space are usually at the same cursor, and read the same records.
async fn read_ranges(state: &AppState, due: &[Due]) -> HashMap<Range, Read> {
    let settings = &state.settings.webhooks;
    let mut ranges: Vec<Range> = due.iter().map(range).collect();
    ranges.sort_unstable();
    ranges.dedup();
    futures_util::stream::iter(ranges)
        .map(|(sid, after, upto)| async move {
            let read = state
                .store
                .webhook_records(sid, after, upto, settings.batch, MAX_DELIVERY_BYTES)
                .await
                .map_err(|e| e.to_string());
            ((sid, after, upto), read)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await
}

/// A delivery's body (docs/server-rules.md#webhooks), its keys in
/// alphabetical order as before. Serialized straight from the records
/// read: their fields go out as stored, never parsed again.
#[derive(serde::Serialize)]
struct Body<'a> {
    endpoint: &'a str,
    gap: bool,
    id: &'a str,
    records: &'a [&'a HookRecord],
    seq_from: u64,
    seq_to: u64,
    space: &'a str,
}

/// One claimed delivery: send what [`read_ranges`] read for it; its
/// outcome, for the round to record (`None` for an endpoint removed
/// meanwhile).
async fn deliver(
    state: &AppState,
    http: &reqwest::Client,
    endpoints: &[Endpoint],
    reads: &HashMap<Range, Read>,
    due: Due,
) -> Result<Option<(Due, Outcome)>, String> {
    let settings = &state.settings.webhooks;
    let Some(endpoint) = endpoints.iter().find(|e| e.id == due.endpoint) else {
        return Ok(None);
    };
    let key = range(&due);
    let upto = key.2;
    let (records, cut) = match reads.get(&key) {
        Some(Ok((records, cut))) => (records, *cut),
        Some(Err(e)) => return Err(e.clone()),
        None => return Err("the delivery's records were not read".to_owned()),
    };
    // A delivery ends at its last record when the count or the bytes cut
    // it short; else it covers everything up to `upto`.
    let to = match records.last() {
        Some(last) if cut => last.seq,
        _ => upto,
    };
    let wanted: Vec<&HookRecord> = records
        .iter()
        .filter(|r| endpoint.wants(&r.collection))
        .collect();
    if wanted.is_empty() {
        return Ok(Some((due, Outcome::Delivered { to })));
    }
    let delivery = delivery_id(&endpoint.id, due.space.as_str(), due.cursor, to);
    let body = serde_json::to_vec(&Body {
        endpoint: &endpoint.id,
        // Tombstones below the space's horizon were compacted before this
        // endpoint was sent them: some deletes may be missing.
        gap: due.cursor < due.horizon,
        id: &delivery,
        records: &wanted,
        seq_from: due.cursor + 1,
        seq_to: to,
        space: due.space.as_str(),
    })
    .map_err(|e| e.to_string())?;
    let outcome = match post(http, endpoint, &delivery, &body).await {
        Ok(()) => {
            state.metrics.webhook_try("delivered");
            Outcome::Delivered { to }
        }
        Err(error) => {
            let now = wall_ms();
            let attempts = due.attempts.saturating_add(1);
            let first_failed_at = due.first_failed_at.unwrap_or(now);
            tracing::info!(endpoint = %endpoint.id, space = %due.space, attempts, %error, "a webhook delivery failed");
            if now.saturating_sub(first_failed_at) >= ms(settings.retry_for) {
                state.metrics.webhook_try("dead");
                tracing::warn!(endpoint = %endpoint.id, space = %due.space, %delivery, "a webhook delivery failed for too long; kept as a dead letter");
                Outcome::Dead {
                    to,
                    letter: DeadLetter {
                        id: 0,
                        endpoint: endpoint.id.clone(),
                        space: due.space.to_string(),
                        delivery,
                        payload: String::from_utf8_lossy(&body).into_owned(),
                        error,
                        attempts,
                        failed_at: now,
                        replay: false,
                    },
                }
            } else {
                state.metrics.webhook_try("retry");
                Outcome::Retry {
                    pending_to: to,
                    attempts,
                    first_failed_at,
                    next_at: now.saturating_add(backoff(settings, attempts)),
                    error,
                }
            }
        }
    };
    Ok(Some((due, outcome)))
}

/// Sends a dead letter again, as it was (under its delivery id).
async fn replay(
    state: &AppState,
    http: &reqwest::Client,
    endpoints: &[Endpoint],
    letter: DeadLetter,
) -> Result<(), StoreError> {
    let error = match endpoints.iter().find(|e| e.id == letter.endpoint) {
        None => Some("its endpoint is gone".to_owned()),
        Some(endpoint) => post(http, endpoint, &letter.delivery, letter.payload.as_bytes())
            .await
            .err(),
    };
    if error.is_none() {
        state.metrics.webhook_try("replayed");
    }
    state
        .store
        .webhook_replayed(letter.id, error.as_deref())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_the_longest_wait() {
        let settings = WebhookSettings::default();
        let first = backoff(&settings, 1);
        assert!((900..=1_100).contains(&first), "{first}");
        let tenth = backoff(&settings, 10);
        assert!((460_000..=563_200).contains(&tenth), "{tenth}");
        let late = backoff(&settings, 60);
        assert!((3_240_000..=3_960_000).contains(&late), "{late}");
    }

    #[test]
    fn a_delivery_keeps_its_id_and_ids_differ_by_range() {
        let a = delivery_id("search", "team", 4, 9);
        assert_eq!(a, delivery_id("search", "team", 4, 9));
        assert_ne!(a, delivery_id("search", "team", 4, 10));
        assert_ne!(a, delivery_id("preview", "team", 4, 9));
        assert!(a.starts_with("whd_") && a.len() == 36);
    }
}
