//! A request body with a deadline for the whole of it. (tower-http's body
//! timeout restarts at every frame, so a body trickled a byte at a time
//! would never end; this one does.)

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The body took longer than its deadline to arrive.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within its time limit")]
pub struct BodyTimedOut;

/// `body`, failing with [`BodyTimedOut`] once `deadline` passes.
#[derive(Debug)]
pub struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `body` with `deadline`.
    pub fn new(body: Body, deadline: Instant) -> Self {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.body.is_end_stream() {
            return Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Middleware giving every request body `timeout` from now, when the
/// request's headers have arrived, and a second more for every
/// [`super::MIN_BODY_RATE`] bytes it announces, at most the body limit:
/// [`crate::routes::MAX_BODY_BYTES`], or for an upload of a file (`PUT
/// .../files/...`), `max_file` (so that a slow body elsewhere is not given
/// a file's time).
pub async fn limit(
    axum::extract::State((timeout, max_file)): axum::extract::State<(std::time::Duration, u64)>,
    req: Request,
    next: Next,
) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .min(
            if req.method() == axum::http::Method::PUT && crate::files::is_upload(req.uri().path())
            {
                max_file
            } else {
                crate::routes::MAX_BODY_BYTES as u64
            },
        );
    let transfer = std::time::Duration::from_secs(announced / super::MIN_BODY_RATE);
    let deadline = Instant::now() + timeout + transfer;
    next.run(req.map(|body| Body::new(DeadlineBody::new(body, deadline))))
        .await
}

/// Whether `error`, or what caused it, is a body that timed out.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}
