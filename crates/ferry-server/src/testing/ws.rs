//! A WebSocket client of `GET /v1/ws` that panics with a clear message on
//! anything unexpected: for tests and benchmarks.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`WsClient::recv`] waits before failing the test.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// One realtime connection.
#[derive(Debug)]
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// `ws://host/v1/ws` of a server at `http://host`.
fn ws_url(base: &str) -> String {
    format!("{}/v1/ws", base.replacen("http", "ws", 1))
}

impl WsClient {
    /// Connects to the server at `base` (`http://127.0.0.1:PORT`).
    pub async fn connect(base: &str) -> WsClient {
        WsClient::try_connect(base, None)
            .await
            .unwrap_or_else(|e| panic!("cannot open a WebSocket to {base}: {e}"))
    }

    /// Connects, as a page of `origin` when given; the handshake's error
    /// (an HTTP refusal) otherwise.
    pub async fn try_connect(
        base: &str,
        origin: Option<&str>,
    ) -> Result<WsClient, tungstenite::Error> {
        let mut request = ws_url(base).into_client_request()?;
        if let Some(origin) = origin {
            let value = HeaderValue::from_str(origin)
                .unwrap_or_else(|e| panic!("bad origin {origin}: {e}"));
            request.headers_mut().insert("origin", value);
        }
        // Small buffers: benchmarks open ten thousand of these.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(WsClient { socket })
    }

    /// Sends `message` as JSON text.
    pub async fn send(&mut self, message: Value) {
        self.send_raw(Message::text(message.to_string())).await;
    }

    /// Sends a frame as it is.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket
            .send(message)
            .await
            .unwrap_or_else(|e| panic!("cannot send: {e}"));
    }

    /// The next JSON message, if one comes `within`; panics when the
    /// connection ends instead.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await;
            match next {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(
                        serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
                    );
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next JSON message; panics after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        self.recv_within(RECV_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no message within {RECV_TIMEOUT:?}"))
    }

    /// Authenticates with `token`, expecting `auth-ok`.
    pub async fn auth(&mut self, token: &str) {
        self.send(json!({"type": "auth", "token": token})).await;
        let reply = self.recv().await;
        assert_eq!(reply["type"], "auth-ok", "{reply}");
    }

    /// Subscribes to `spaces`, returning the `subscribed` answer.
    pub async fn subscribe(&mut self, spaces: &[&str]) -> Value {
        self.send(json!({"type": "subscribe", "spaces": spaces}))
            .await;
        let reply = self.recv().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// The next `sync-available` as `(space, cursor)`.
    pub async fn signal(&mut self) -> (String, u64) {
        let message = self.recv().await;
        assert_eq!(message["type"], "sync-available", "{message}");
        let space = message["space"].as_str().unwrap_or_default().to_owned();
        let cursor = message["cursor"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cursor in {message}"));
        (space, cursor)
    }

    /// Waits until the server closes the connection; its close code, or
    /// `None` when it dropped without a close frame.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let next = tokio::time::timeout(RECV_TIMEOUT, self.socket.next()).await;
            match next {
                Err(_) => panic!("the connection is still open after {RECV_TIMEOUT:?}"),
                Ok(None | Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
