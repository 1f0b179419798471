//! `GET /v1/ws`: the WebSocket of PROTOCOL.md §8.
//!
//! A connection authenticates in-band first (`auth`, within
//! [`RealtimeSettings::auth_timeout`], else close `4401`), then subscribes
//! to spaces and receives `sync-available` for each commit that moved one,
//! and `schema` when the node holds a new version of the app's schema.
//! It is closed when its token expires (`4401`; sending a fresh `auth`
//! before then extends it), when it sends a message over the size limit
//! (`1009`), when it stops answering pings or reading (`1001`), and when the
//! node shuts down (`1001`).
//!
//! An idle connection costs a small read buffer, a mailbox and this task's
//! state; the code that handles a message runs boxed, so its futures do not
//! enlarge every idle connection.
//!
//! [`RealtimeSettings::auth_timeout`]: super::RealtimeSettings::auth_timeout

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use ferry_core::SpaceId;
use ferry_core::protocol::ErrorBody;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite;

use super::hub::Inbox;
use super::{Realtime, Subscriptions, TokenWatch, caller_deadline, origin, until};
use crate::auth::{self, AuthUser};
use crate::billing;
use crate::error::ApiError;
use crate::ops::metrics::ConnectionKind;
use crate::state::AppState;

/// Close codes: the server is going away or gives up on the client.
const GOING_AWAY: u16 = 1001;
/// A frame that breaks the WebSocket protocol.
const PROTOCOL_ERROR: u16 = 1002;
/// A message over the size limit.
const TOO_BIG: u16 = 1009;
/// Not authenticated: no, a bad or an expired token.
pub const UNAUTHORIZED: u16 = 4401;

/// Read buffer of a connection: enough for any control message in one or
/// two reads, small enough for tens of thousands of idle connections.
const READ_BUFFER: usize = 2 * 1024;
/// What may pile up unsent before writes fail (a client that does not
/// read is closed after the send timeout anyway).
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// What clients send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientMessage {
    Auth { token: String },
    Subscribe { spaces: Vec<String> },
    Unsubscribe { spaces: Vec<String> },
    Ping,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ServerMessage<'a> {
    AuthOk,
    Subscribed {
        spaces: Vec<&'a SpaceId>,
        denied: Vec<&'a str>,
    },
    Unsubscribed {
        spaces: &'a [SpaceId],
    },
    SyncAvailable {
        space: &'a SpaceId,
        cursor: u64,
    },
    Schema {
        version: u64,
    },
    Pong,
    Error(ErrorBody),
}

impl ServerMessage<'_> {
    fn to_message(&self) -> Message {
        // Serializing these plain structs cannot fail; an empty object
        // would only ever be sent if it did.
        Message::Text(
            serde_json::to_string(self)
                .unwrap_or_else(|_| "{}".to_owned())
                .into(),
        )
    }
}

/// The upgrade: the origin check, then the socket's limits.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let limits = &state.settings.realtime;
    origin::allowed(&headers, &state.settings)?;
    let ws = ws.map_err(|r| {
        ApiError::invalid_request(format!("expected a WebSocket handshake: {}", r.body_text()))
    })?;
    let max = limits.max_message_bytes;
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(state, socket)))
}

/// An authenticated caller and when their token expires.
struct Authenticated {
    caller: AuthUser,
    expires: Option<Instant>,
}

/// Checks a token (a session's or an API token), and turns its expiry
/// into a deadline.
async fn authenticate(state: &AppState, token: &str) -> Result<Authenticated, ApiError> {
    let caller = auth::authenticate_caller(state, token).await?;
    Ok(Authenticated {
        expires: caller_deadline(&caller, token),
        caller,
    })
}

async fn session(state: AppState, mut socket: WebSocket) {
    let realtime = state.realtime.clone();
    let _open = realtime.opened(ConnectionKind::Websocket);
    // Listening for revocations before the token is checked: none made
    // after the check can be missed.
    let revocations = realtime.revocations();
    let Some(first) = Box::pin(first_auth(&state, &mut socket)).await else {
        return;
    };
    if send(&state, &mut socket, ServerMessage::AuthOk.to_message())
        .await
        .is_err()
    {
        return;
    }
    let mut connection = Connection {
        revoked: TokenWatch::of(first.caller.token.as_ref(), revocations),
        subs: Subscriptions::new(realtime.clone(), first.caller.id.clone()),
        caller: first.caller,
        schema: state.app_schema.versions(),
        expires: first.expires,
        state,
        socket,
        last_heard: Instant::now(),
    };
    connection.run(&realtime).await;
}

/// Waits for the `auth` message; closes the socket and returns `None` when
/// it does not come in time or does not authenticate.
async fn first_auth(state: &AppState, socket: &mut WebSocket) -> Option<Authenticated> {
    let limits = &state.settings.realtime;
    // One deadline from the upgrade, whatever arrives before it: pings
    // and pongs do not buy an unauthenticated socket more time.
    let deadline = Instant::now() + limits.auth_timeout;
    let text = loop {
        match timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let reason = format!(
                    "authenticate within {} s: send {{\"type\":\"auth\",\"token\":...}}",
                    limits.auth_timeout.as_secs_f32()
                );
                close(socket, UNAUTHORIZED, &reason).await;
                return None;
            }
            Ok(None | Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => break Default::default(),
            Ok(Some(Err(e))) => {
                close_on_error(socket, e).await;
                return None;
            }
        }
    };
    let token = match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Auth { token }) => token,
        _ => {
            close(
                socket,
                UNAUTHORIZED,
                "the first message must be {\"type\":\"auth\",\"token\":...}",
            )
            .await;
            return None;
        }
    };
    match authenticate(state, &token).await {
        Ok(authenticated) => Some(authenticated),
        Err(e) => {
            close(socket, UNAUTHORIZED, &e.to_string()).await;
            None
        }
    }
}

/// Whether the connection goes on after a step.
enum Flow {
    Continue,
    Stop,
}

struct Connection {
    state: AppState,
    socket: WebSocket,
    subs: Subscriptions,
    /// The app schema's version; a new one is sent as `schema`.
    schema: tokio::sync::watch::Receiver<u64>,
    expires: Option<Instant>,
    /// Who authenticated (with their API token, if any).
    caller: AuthUser,
    /// Ends the connection when its API token is revoked.
    revoked: TokenWatch,
    /// When the client last sent anything (pongs included).
    last_heard: Instant,
}

impl Connection {
    async fn run(&mut self, realtime: &Arc<Realtime>) {
        let ping_every = self.state.settings.realtime.ping_interval;
        let mut pings = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        loop {
            let flow = tokio::select! {
                () = realtime.closing() => {
                    close(&mut self.socket, GOING_AWAY, "the server is shutting down").await;
                    Flow::Stop
                }
                () = until(self.expires) => {
                    close(
                        &mut self.socket,
                        UNAUTHORIZED,
                        "the access token expired; reconnect with a fresh one",
                    )
                    .await;
                    Flow::Stop
                }
                () = self.revoked.revoked() => {
                    close(&mut self.socket, UNAUTHORIZED, "the API token was revoked").await;
                    Flow::Stop
                }
                inbox = self.subs.mailbox.next() => self.deliver(inbox).await,
                Ok(()) = self.schema.changed() => {
                    let version = *self.schema.borrow_and_update();
                    self.send(&ServerMessage::Schema { version }).await
                }
                incoming = self.socket.recv() => Box::pin(self.receive(incoming)).await,
                _ = pings.tick() => self.ping(ping_every).await,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        let lost = self.subs.mailbox.take().signals.len();
        self.state.metrics.signals_dropped(lost as u64);
    }

    async fn send(&mut self, message: &ServerMessage<'_>) -> Flow {
        match send(&self.state, &mut self.socket, message.to_message()).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    /// Sends what the mailbox held.
    async fn deliver(&mut self, inbox: Inbox) -> Flow {
        if !inbox.revoked.is_empty() {
            self.subs.forget(&inbox.revoked);
            let message = ServerMessage::Unsubscribed {
                spaces: &inbox.revoked,
            };
            if let Flow::Stop = self.send(&message).await {
                return Flow::Stop;
            }
        }
        let news: Vec<_> = inbox
            .signals
            .into_iter()
            .filter(|(space, cursor)| self.subs.is_news(space, *cursor))
            .collect();
        for (i, (space, cursor)) in news.iter().enumerate() {
            let message = ServerMessage::SyncAvailable {
                space,
                cursor: *cursor,
            };
            if let Flow::Stop = self.send(&message).await {
                self.state.metrics.signals_dropped((news.len() - i) as u64);
                return Flow::Stop;
            }
            self.state.metrics.signals_sent(1);
        }
        Flow::Continue
    }

    async fn ping(&mut self, every: Duration) -> Flow {
        if self.last_heard.elapsed() > every * 2 {
            close(&mut self.socket, GOING_AWAY, "no answer to pings").await;
            return Flow::Stop;
        }
        match send(
            &self.state,
            &mut self.socket,
            Message::Ping(Default::default()),
        )
        .await
        {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    async fn receive(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Flow {
        let message = match incoming {
            None | Some(Ok(Message::Close(_))) => return Flow::Stop,
            Some(Err(e)) => {
                close_on_error(&mut self.socket, e).await;
                return Flow::Stop;
            }
            Some(Ok(message)) => message,
        };
        self.last_heard = Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let e = ApiError::invalid_request("messages are JSON text, not binary");
                return self.send(&ServerMessage::Error(e.into_body())).await;
            }
            _ => return Flow::Continue,
        };
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Auth { token }) => self.reauthenticate(&token).await,
            Ok(ClientMessage::Subscribe { spaces }) => self.subscribe(&spaces).await,
            Ok(ClientMessage::Unsubscribe { spaces }) => {
                let spaces: Vec<SpaceId> = spaces
                    .into_iter()
                    .filter_map(|s| SpaceId::new(s).ok())
                    .filter(|s| self.subs.follows(s))
                    .collect();
                self.subs.unfollow(&spaces);
                self.send(&ServerMessage::Unsubscribed { spaces: &spaces })
                    .await
            }
            Ok(ClientMessage::Ping) => self.send(&ServerMessage::Pong).await,
            Err(e) => {
                let e = ApiError::invalid_request(format!(
                    "not a message Ferry knows ({e}); send auth, subscribe, unsubscribe or ping"
                ));
                self.send(&ServerMessage::Error(e.into_body())).await
            }
        }
    }

    /// A fresh token for the same user extends the connection.
    async fn reauthenticate(&mut self, token: &str) -> Flow {
        match authenticate(&self.state, token).await {
            // The same credential, renewed: a session's fresh access token
            // for a session, the same API token for a token's connection.
            // Another kind or another token would reach other spaces than
            // the ones this connection follows.
            Ok(fresh)
                if &fresh.caller.id == self.subs.mailbox.user()
                    && fresh.caller.token.as_ref().map(|t| &t.id)
                        == self.caller.token.as_ref().map(|t| &t.id) =>
            {
                self.expires = fresh.expires;
                self.caller = fresh.caller;
                self.send(&ServerMessage::AuthOk).await
            }
            Ok(_) => {
                let reason = "the token is another user's or another credential; open a new \
                              connection with it";
                close(&mut self.socket, UNAUTHORIZED, reason).await;
                Flow::Stop
            }
            Err(e) => {
                close(&mut self.socket, UNAUTHORIZED, &e.to_string()).await;
                Flow::Stop
            }
        }
    }

    async fn subscribe(&mut self, requested: &[String]) -> Flow {
        let user = self.subs.mailbox.user().clone();
        if let Err(e) = billing::require_sync(&self.state, &user).await {
            return self.send(&ServerMessage::Error(e.into_body())).await;
        }
        let mut denied: Vec<&str> = Vec::new();
        let mut new = Vec::new();
        let mut wanted = Vec::new();
        for name in requested {
            match SpaceId::new(name.as_str()) {
                Ok(space) if wanted.contains(&space) => {}
                // A space its API token does not reach is refused as one
                // the user is not a member of.
                Ok(space)
                    if self
                        .caller
                        .token
                        .as_ref()
                        .is_some_and(|t| !t.reaches(&space)) =>
                {
                    denied.push(name);
                }
                Ok(space) => {
                    if !self.subs.follows(&space) {
                        new.push(space.clone());
                    }
                    wanted.push(space);
                }
                Err(_) => denied.push(name),
            }
        }
        let max = self.state.settings.realtime.max_subscriptions;
        if self.subs.len() + new.len() > max {
            let e = ApiError::too_large(format!(
                "a connection follows at most {max} spaces; open another for more"
            ));
            return self.send(&ServerMessage::Error(e.into_body())).await;
        }
        // Follow first, check membership second: a removal committed after
        // the check then finds the subscription and revokes it.
        for space in &new {
            self.subs.follow(space);
        }
        let heads = match self.state.store.member_heads(&user, &wanted).await {
            Ok(heads) => heads,
            Err(e) => {
                self.subs.unfollow(&new);
                let e = ApiError::from(e);
                return self.send(&ServerMessage::Error(e.into_body())).await;
            }
        };
        let refused: Vec<SpaceId> = wanted
            .iter()
            .filter(|s| !heads.iter().any(|(h, _)| h == *s))
            .cloned()
            .collect();
        self.subs.unfollow(&refused);
        denied.extend(refused.iter().map(SpaceId::as_str));
        let message = ServerMessage::Subscribed {
            spaces: heads.iter().map(|(s, _)| s).collect(),
            denied,
        };
        if let Flow::Stop = self.send(&message).await {
            return Flow::Stop;
        }
        // Where each space is now: a client that subscribes after a commit
        // it has not pulled hears about it at once.
        for (space, head) in &heads {
            if self.subs.is_news(space, *head) {
                let message = ServerMessage::SyncAvailable {
                    space,
                    cursor: *head,
                };
                if let Flow::Stop = self.send(&message).await {
                    return Flow::Stop;
                }
                self.state.metrics.signals_sent(1);
            }
        }
        Flow::Continue
    }
}

/// Sends one message, giving up on a client that does not read within the
/// send timeout.
async fn send(state: &AppState, socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match timeout(state.settings.realtime.send_timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "realtime client gone");
            Err(())
        }
        Err(_) => {
            tracing::debug!("realtime client does not read; closing");
            Err(())
        }
    }
}

/// Closes with `code` and `reason` (cut to the 123 bytes a close frame
/// holds), without waiting long for a client that does not read.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Closes after a read error: `1009` for a message over the limit, `1002`
/// for a broken frame.
async fn close_on_error(socket: &mut WebSocket, error: axum::Error) {
    let error = error.into_inner();
    match error.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(e)) => {
            close(socket, TOO_BIG, &format!("message too large: {e}")).await;
        }
        Some(tungstenite::Error::Protocol(e)) => {
            close(socket, PROTOCOL_ERROR, &e.to_string()).await;
        }
        _ => tracing::debug!(error = %error, "realtime connection failed"),
    }
}
