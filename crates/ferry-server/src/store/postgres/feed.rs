//! Node events over PostgreSQL `LISTEN/NOTIFY` on one channel per
//! deployment ([`super::namespace::channel`]).
//!
//! Each node keeps one listening connection (taken out of its pool) and
//! sends its own events with `pg_notify` in a statement of their own, after
//! the commit they announce: a `NOTIFY` inside the push transaction would
//! make every notifying commit of the whole database take PostgreSQL's
//! global notification lock at commit time.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::store::StoreError;
use crate::store::feed::{Feed, FeedListener, Heard, NodeEvent};

/// [`Feed`] over `LISTEN/NOTIFY`.
#[derive(Debug, Clone)]
pub struct PgFeed {
    pool: PgPool,
    channel: Arc<str>,
}

impl PgFeed {
    pub fn new(pool: PgPool, channel: Arc<str>) -> PgFeed {
        PgFeed { pool, channel }
    }
}

#[async_trait]
impl Feed for PgFeed {
    async fn announce(&self, events: &[NodeEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = events.iter().map(NodeEvent::encode).collect();
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(&*self.channel)
            .bind(&payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Box<dyn FeedListener>, StoreError> {
        let listener = connect(&self.pool, &self.channel).await?;
        Ok(Box::new(PgFeedListener {
            pool: self.pool.clone(),
            channel: self.channel.clone(),
            listener: Some(listener),
        }))
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// The listening connection; rebuilt from scratch after any error, since an
/// error can leave sqlx's listener holding a connection that is dead.
struct PgFeedListener {
    pool: PgPool,
    channel: Arc<str>,
    listener: Option<PgListener>,
}

#[async_trait]
impl FeedListener for PgFeedListener {
    async fn next(&mut self) -> Result<Heard, StoreError> {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                self.listener = Some(connect(&self.pool, &self.channel).await?);
                return Ok(Heard::Reconnected);
            };
            match listener.try_recv().await {
                Ok(Some(notification)) => match NodeEvent::decode(notification.payload()) {
                    Some(event) => return Ok(Heard::Event(event)),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "ignoring a notification Ferry does not know"
                    ),
                },
                // sqlx reconnected by itself (`eager_reconnect`).
                Ok(None) => return Ok(Heard::Reconnected),
                Err(e) => {
                    self.listener = None;
                    return Err(e.into());
                }
            }
        }
    }
}
