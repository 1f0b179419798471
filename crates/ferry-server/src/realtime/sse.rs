//! `GET /v1/spaces/{space}/stream`: the same signal as Server-Sent Events,
//! for clients that cannot hold a WebSocket.
//!
//! The first event carries the space's current cursor (unless the client's
//! `Last-Event-ID`, which is the cursor of the last event it got, says it
//! has it); then one per commit, and `event: schema` (`data: {"version"}`)
//! when the node holds a new version of the app's schema. Each commit's id is its cursor, so a
//! browser's `EventSource` resumes where it was. The stream ends when the
//! token expires or (an API token) is revoked, when the user stops being a
//! member, and when the node
//! shuts down; heartbeat comments keep proxies from closing it meanwhile.

use std::convert::Infallible;
use std::slice;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_core::SpaceId;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{Realtime, Subscriptions, TokenWatch, caller_deadline, origin, until};
use crate::auth;
use crate::billing;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::ops::metrics::ConnectionKind;
use crate::spaces::access;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The access token, for `EventSource`, which cannot send headers.
    access_token: Option<String>,
}

/// The token of the `Authorization` header, else of `?access_token=`.
fn token<'a>(headers: &'a HeaderMap, query: &'a StreamQuery) -> Result<&'a str, ApiError> {
    match (headers.contains_key(AUTHORIZATION), &query.access_token) {
        (false, Some(token)) => Ok(token),
        _ => auth::bearer(headers),
    }
}

/// What a stream holds between two events.
struct Stream {
    space: SpaceId,
    subs: Subscriptions,
    realtime: Arc<Realtime>,
    state: AppState,
    /// The head when the stream opened, not sent yet.
    first: Option<u64>,
    /// The app schema's version; a new one is sent as `schema`.
    schema: tokio::sync::watch::Receiver<u64>,
    expires: Option<Instant>,
    /// Ends the stream when its API token is revoked.
    revoked: TokenWatch,
    _open: super::Open,
}

fn event(space: &SpaceId, cursor: u64) -> Event {
    Event::default()
        .event("sync-available")
        .id(cursor.to_string())
        .data(json!({"space": space, "cursor": cursor}).to_string())
}

/// The next event, or `None` to end the stream.
async fn next(mut s: Stream) -> Option<(Result<Event, Infallible>, Stream)> {
    if let Some(head) = s.first.take()
        && s.subs.is_news(&s.space, head)
    {
        s.state.metrics.signals_sent(1);
        return Some((Ok(event(&s.space, head)), s));
    }
    loop {
        let inbox = tokio::select! {
            () = s.realtime.closing() => return None,
            () = until(s.expires) => return None,
            () = s.revoked.revoked() => return None,
            inbox = s.subs.mailbox.next() => inbox,
            Ok(()) = s.schema.changed() => {
                let version = *s.schema.borrow_and_update();
                let event = Event::default()
                    .event("schema")
                    .data(json!({"version": version}).to_string());
                return Some((Ok(event), s));
            }
        };
        if !inbox.revoked.is_empty() {
            return None;
        }
        let cursor = inbox.signals.iter().map(|(_, c)| *c).max();
        if let Some(cursor) = cursor.filter(|c| s.subs.is_news(&s.space, *c)) {
            s.state.metrics.signals_sent(1);
            return Some((Ok(event(&s.space, cursor)), s));
        }
    }
}

/// The handler.
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(space): ApiPath<SpaceId>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let limits = &state.settings.realtime;
    origin::allowed(&headers, &state.settings)?;
    let token = token(&headers, &query)?;
    // Listening for revocations before the token is checked.
    let revocations = state.realtime.revocations();
    let caller = auth::authenticate_caller(&state, token).await?;
    if caller.token.as_ref().is_some_and(|t| !t.reaches(&space)) {
        return Err(access::not_found(&space));
    }
    let user = caller.id.clone();
    billing::require_sync(&state, &user).await?;
    let expires = caller_deadline(&caller, token);
    let revoked = TokenWatch::of(caller.token.as_ref(), revocations);
    let mut subs = Subscriptions::new(state.realtime.clone(), user.clone());
    // Follow first, check second, as the WebSocket does.
    subs.follow(&space);
    let heads = state
        .store
        .member_heads(&user, slice::from_ref(&space))
        .await?;
    let Some(&(_, head)) = heads.first() else {
        return Err(access::not_found(&space));
    };
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|seen| *seen <= head);
    if let Some(seen) = last_seen {
        subs.is_news(&space, seen);
    }
    let heartbeat = limits.heartbeat_interval;
    let open = Stream {
        space,
        subs,
        realtime: state.realtime.clone(),
        _open: state.realtime.opened(ConnectionKind::Sse),
        schema: state.app_schema.versions(),
        state,
        first: Some(head),
        expires,
        revoked,
    };
    let events = stream::unfold(open, next);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response();
    // Reverse proxies (nginx) buffer responses unless told otherwise.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}
