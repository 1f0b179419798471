//! Prometheus metrics: requests by route and status, latency, and what the
//! sync path did.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::PoolState;

/// A request's labels. Each comes from a small fixed set whatever the
/// request says: the route pattern the router matched (or `unmatched`),
/// one of the standard methods (or `other`: HTTP lets a client invent
/// methods of any length, and each would otherwise be a series kept
/// forever), and the status Ferry answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// The label of a request's method.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, label)| label)
}

/// The two realtime transports.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ConnectionKind {
    /// `GET /v1/ws`.
    Websocket,
    /// `GET /v1/spaces/{space}/stream`.
    Sse,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// What happened to an event between nodes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum NodeEventOutcome {
    /// Told to the other nodes.
    Sent,
    /// Heard from a node (this one included).
    Received,
    /// Could not be told (the database was unreachable).
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BillingLabels {
    provider: String,
    outcome: &'static str,
}

/// An open realtime connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    changes_applied: Counter,
    conflicts: Counter,
    batches_replayed: Counter,
    captured_applied: Counter,
    captured_refused: Counter,
    pool_connections: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    push_commits: Counter,
    pushes_committed: Counter,
    /// Held while the two above are brought up to the store's totals.
    push_totals: std::sync::Mutex<()>,
    connections: Family<KindLabels, Gauge>,
    signals_sent: Counter,
    signals_coalesced: Counter,
    signals_dropped: Counter,
    node_events: Family<OutcomeLabels, Counter>,
    listener_reconnects: Counter,
    billing_events: Family<BillingLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_retrying: Gauge,
    webhook_oldest: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let changes_applied = Counter::default();
        let conflicts = Counter::default();
        let batches_replayed = Counter::default();
        let (captured_applied, captured_refused) = (Counter::default(), Counter::default());
        registry.register(
            "capture_applied",
            "Writes of the app's backend to mirrored tables taken off the queue and applied",
            captured_applied.clone(),
        );
        registry.register(
            "capture_refused",
            "Writes of the app's backend to mirrored tables refused (kept in capture_refused)",
            captured_refused.clone(),
        );
        let (pool_connections, pool_idle, pool_max) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "db_pool_connections",
            "Open database connections of this node",
            pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle",
            "Idle database connections of this node",
            pool_idle.clone(),
        );
        registry.register(
            "db_pool_max",
            "The most database connections this node opens",
            pool_max.clone(),
        );
        let (push_commits, pushes_committed) = (Counter::default(), Counter::default());
        registry.register(
            "db_push_commits",
            "Transactions that committed pushes (SQLite: one per group of pushes sharing a flush)",
            push_commits.clone(),
        );
        registry.register(
            "db_pushes_committed",
            "Pushes committed by those transactions (over db_push_commits: the mean group size)",
            pushes_committed.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "changes_applied",
            "Changes that altered stored state",
            changes_applied.clone(),
        );
        registry.register(
            "conflicts",
            "Writes that lost and were reported as conflicts (at once, or stored for their author)",
            conflicts.clone(),
        );
        registry.register(
            "batches_replayed",
            "Retried batches answered from their first application",
            batches_replayed.clone(),
        );
        let connections = Family::<KindLabels, Gauge>::default();
        let (signals_sent, signals_coalesced, signals_dropped) =
            (Counter::default(), Counter::default(), Counter::default());
        let node_events = Family::<OutcomeLabels, Counter>::default();
        let listener_reconnects = Counter::default();
        registry.register(
            "realtime_connections",
            "Open realtime connections by kind (websocket, sse)",
            connections.clone(),
        );
        registry.register(
            "realtime_signals_sent",
            "sync-available signals written to clients",
            signals_sent.clone(),
        );
        registry.register(
            "realtime_signals_coalesced",
            "Signals replaced by a newer one of the same space before being sent",
            signals_coalesced.clone(),
        );
        registry.register(
            "realtime_signals_dropped",
            "Signals never sent because their connection failed or was too slow",
            signals_dropped.clone(),
        );
        registry.register(
            "realtime_node_events",
            "Commit and membership events between nodes, by outcome",
            node_events.clone(),
        );
        registry.register(
            "realtime_listener_reconnects",
            "Times this node's database listener reconnected",
            listener_reconnects.clone(),
        );
        let billing_events = Family::<BillingLabels, Counter>::default();
        registry.register(
            "billing_events",
            "Verified billing webhooks by provider and outcome (applied, duplicate, stale)",
            billing_events.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery tries by outcome (delivered, retry, dead, replayed)",
            webhook_deliveries.clone(),
        );
        let (webhook_retrying, webhook_oldest) = (Gauge::default(), Gauge::default());
        registry.register(
            "webhook_retrying",
            "Webhook deliveries (an endpoint's news of a space) failing and being retried",
            webhook_retrying.clone(),
        );
        registry.register(
            "webhook_oldest_pending_seconds",
            "How long the oldest failing webhook delivery has been retried",
            webhook_oldest.clone(),
        );
        Metrics {
            webhook_deliveries,
            webhook_retrying,
            webhook_oldest,
            billing_events,
            registry,
            connections,
            signals_sent,
            signals_coalesced,
            signals_dropped,
            node_events,
            listener_reconnects,
            requests,
            latency,
            changes_applied,
            conflicts,
            batches_replayed,
            captured_applied,
            captured_refused,
            pool_connections,
            pool_idle,
            pool_max,
            push_commits,
            pushes_committed,
            push_totals: std::sync::Mutex::new(()),
        }
    }

    /// Records the state of the database pool (read at each scrape).
    pub fn observe_pool(&self, pool: PoolState) {
        self.pool_connections.set(i64::from(pool.connections));
        self.pool_idle.set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max));
        let _one = self
            .push_totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (counter, total) in [
            (&self.push_commits, pool.push_commits),
            (&self.pushes_committed, pool.pushes_committed),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    fn observe_request(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records what one push did.
    pub fn observe_push(&self, applied: u64, conflicts: u64, replayed: bool) {
        if replayed {
            self.batches_replayed.inc();
        } else {
            self.changes_applied.inc_by(applied);
            self.conflicts.inc_by(conflicts);
        }
    }

    /// Counts a webhook delivery try by its outcome.
    pub fn webhook_try(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the webhooks' backlog: deliveries retrying, and the age of the
    /// oldest, in seconds.
    pub fn webhook_backlog(&self, retrying: u64, oldest_secs: u64) {
        self.webhook_retrying
            .set(i64::try_from(retrying).unwrap_or(i64::MAX));
        self.webhook_oldest
            .set(i64::try_from(oldest_secs).unwrap_or(i64::MAX));
    }

    /// Counts the captured writes one drain took: applied, and refused.
    pub fn observe_capture(&self, applied: u64, refused: u64) {
        self.captured_applied.inc_by(applied);
        self.captured_refused.inc_by(refused);
    }

    /// Counts a verified billing event and what it did.
    pub fn billing_event(&self, provider: &str, outcome: &'static str) {
        self.billing_events
            .get_or_create(&BillingLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts an open realtime connection of `kind` until the guard drops.
    pub fn connection_opened(&self, kind: ConnectionKind) -> OpenConnection {
        let gauge = self
            .connections
            .get_or_create(&KindLabels {
                kind: match kind {
                    ConnectionKind::Websocket => "websocket",
                    ConnectionKind::Sse => "sse",
                },
            })
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Records a publication to this node's followers.
    pub fn observe_publish(&self, coalesced: u64) {
        self.signals_coalesced.inc_by(coalesced);
    }

    /// Records `n` signals written to a client.
    pub fn signals_sent(&self, n: u64) {
        self.signals_sent.inc_by(n);
    }

    /// Records `n` signals lost with their connection.
    pub fn signals_dropped(&self, n: u64) {
        self.signals_dropped.inc_by(n);
    }

    /// Records `n` events between nodes with `outcome`.
    pub fn node_events(&self, outcome: NodeEventOutcome, n: u64) {
        self.node_events
            .get_or_create(&OutcomeLabels {
                outcome: match outcome {
                    NodeEventOutcome::Sent => "sent",
                    NodeEventOutcome::Received => "received",
                    NodeEventOutcome::Failed => "failed",
                },
            })
            .inc_by(n);
    }

    /// Records a reconnection of the database listener.
    pub fn listener_reconnected(&self) {
        self.listener_reconnects.inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware counting and timing every request by its route pattern
/// (never the raw path, which would make one series per record).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe_request(&route, method, response.status().as_u16(), start.elapsed());
    response
}

/// `GET /metrics`; with a metrics token configured, only for a request
/// that carries it as its bearer token (compared in constant time).
pub async fn render(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.settings.metrics_token {
        let given = crate::auth::bearer(&headers).unwrap_or("");
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
        if !same {
            return ApiError::unauthorized("send the metrics token: Authorization: Bearer <token>")
                .into_response();
        }
    }
    state.metrics.observe_pool(state.store.pool_state());
    match state.metrics.encode() {
        Ok(text) => (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
