//! Files' bytes in S3-compatible object storage (docs/files.md §3), for
//! several nodes: every node reads and writes the same bucket, so a file
//! uploaded through one node is read through any other. Uploads still
//! stream into the receiving node's staging directory while they are
//! hashed; only checked bytes go to the bucket, under the same keys as on
//! disk (`{space digest}/{sha256}/{random id}`) below the URL's prefix.
//!
//! Built on Apache Arrow's `object_store` (S3's multipart uploads, ranged
//! reads, listing), configured by `files_url = "s3://bucket/prefix"` and
//! the standard `AWS_*` environment variables (`AWS_ENDPOINT` for a store
//! other than AWS, `AWS_ALLOW_HTTP=true` for a plain-http one).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::objects::ObjectError;

/// Files up to this size go up in one request; larger ones in parts of at
/// least it (S3's smallest part).
const PART: usize = 5 * 1024 * 1024;

/// S3's most parts in one upload: larger files take larger parts.
const MOST_PARTS: u64 = 10_000;

/// How long one request to the store may take: a store that accepts
/// connections and then stalls must not pin an upload's slot, an owner's
/// delete or the collector for long.
const REQUEST_TIMEOUT: &str = "60s";

/// The same for reads, whose bodies stream at the downloading client's
/// pace (the server's own deadline for a file is shorter); the wait for
/// the answer's head is [`HEAD_WITHIN`].
const READ_TIMEOUT: &str = "3600s";
const HEAD_WITHIN: Duration = Duration::from_secs(60);

/// A request that fails is tried again at most this often, within this
/// long: a store that is down answers the client `503` within seconds,
/// not minutes.
const RETRIES: usize = 3;
const RETRY_WITHIN: Duration = Duration::from_secs(20);

/// A bucket (and prefix) of an S3-compatible store.
#[derive(Debug, Clone)]
pub struct RemoteObjects {
    store: Arc<dyn ObjectStore>,
    /// The same bucket, for reads (a longer timeout).
    reader: Arc<dyn ObjectStore>,
    prefix: String,
    /// The URL, for logs (it holds no credentials).
    shown: String,
}

fn failed(e: object_store::Error) -> ObjectError {
    match e {
        object_store::Error::NotFound { .. } => {
            ObjectError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
        }
        other => ObjectError::Remote(other.to_string()),
    }
}

/// Whether `key` is one Ferry makes: a space's digest (24 hex digits), a
/// SHA-256 and a random id (32 hex digits). Nothing else in the bucket is
/// ever collected.
fn ferry_key(key: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let parts: Vec<&str> = key.split('/').collect();
    matches!(parts[..], [space, sha, id] if hex(space, 24) && hex(sha, 64) && hex(id, 32))
}

/// The part size for a file of `size` bytes: S3 takes at most 10,000.
fn part_size(size: u64) -> usize {
    let least = size.div_ceil(MOST_PARTS);
    usize::try_from(least).map_or(usize::MAX, |least| least.max(PART))
}

impl RemoteObjects {
    /// The store of `url` (`s3://bucket` or `s3://bucket/prefix`), its
    /// endpoint, region and credentials from the `AWS_*` environment
    /// variables, then from `options` (`("aws_endpoint", "http://...")`).
    pub fn s3(url: &str, options: &[(&str, &str)]) -> Result<RemoteObjects, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("files_url must be s3://bucket/prefix, not {url:?}"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("files_url names no bucket: {url:?}"));
        }
        // The environment's settings (AWS_ALLOW_HTTP, a proxy, ...) stay:
        // only the keys set here are replaced.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: RETRIES,
                retry_timeout: RETRY_WITHIN,
                ..RetryConfig::default()
            });
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| format!("not an S3 option {key:?}: {e}"))?;
            builder = builder.with_config(key, *value);
        }
        let build = |timeout: &str| {
            builder
                .clone()
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout)
                .build()
                .map_err(|e| format!("cannot use {url}: {e}"))
        };
        Ok(RemoteObjects {
            store: Arc::new(build(REQUEST_TIMEOUT)?),
            reader: Arc::new(build(READ_TIMEOUT)?),
            prefix: prefix.trim_matches('/').to_owned(),
            shown: url.to_owned(),
        })
    }

    /// The URL it was made from.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Stores the file at `from` (`size` bytes) under `key`: in one request
    /// when small, else as a multipart upload, one part filling while at
    /// most two go up; a failed one is aborted (no incomplete upload is
    /// left to bill).
    pub async fn put_file(
        &self,
        key: &str,
        from: &std::path::Path,
        size: u64,
    ) -> Result<(), ObjectError> {
        let path = self.path(key);
        if size <= PART as u64 {
            let bytes = tokio::fs::read(from).await?;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(failed)?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size(size));
        let mut file = tokio::fs::File::open(from).await?;
        let mut buf = vec![0u8; 1024 * 1024];
        let sent = async {
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(1).await.map_err(failed)?;
                writer.write(&buf[..n]);
            }
            // Every part up before completing, so that a failed one is
            // aborted here.
            writer.wait_for_capacity(0).await.map_err(failed)
        }
        .await;
        match sent {
            Ok(()) => writer.finish().await.map(drop).map_err(failed),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// `len` bytes of `key` from `start`, streamed.
    pub async fn read(&self, key: &str, start: u64, len: u64) -> Result<Body, ObjectError> {
        if len == 0 {
            // No range covers nothing; the object must still be there.
            self.store.head(&self.path(key)).await.map_err(failed)?;
            return Ok(Body::empty());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..GetOptions::default()
        };
        let got = tokio::time::timeout(HEAD_WITHIN, self.reader.get_opts(&self.path(key), options))
            .await
            .map_err(|_| ObjectError::Remote("no answer from the store in time".into()))?
            .map_err(failed)?;
        Ok(Body::from_stream(
            got.into_stream().map_err(std::io::Error::other),
        ))
    }

    /// The keys Ferry made (nothing else in the bucket) of the objects
    /// last written at or before `cutoff` (ms). An entry the listing
    /// cannot read is passed over: only what is listed is ever deleted.
    pub async fn written_before(&self, cutoff: u64) -> Result<Vec<String>, ObjectError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut listed = self.store.list(prefix.as_ref());
        let mut keys = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::InvalidPath { .. }) => continue,
                Err(e) => return Err(failed(e)),
            };
            let at = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
            if at > cutoff {
                continue;
            }
            let full = meta.location.to_string();
            let key = if self.prefix.is_empty() {
                Some(full.as_str())
            } else {
                full.strip_prefix(&format!("{}/", self.prefix))
            };
            if let Some(key) = key.filter(|k| ferry_key(k)) {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Deletes `key`; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_urls_with_a_bucket_are_taken() {
        for bad in ["http://bucket/x", "s3://", "s3:///prefix", "bucket/prefix"] {
            assert!(RemoteObjects::s3(bad, &[]).is_err(), "{bad}");
        }
        let options = [
            ("aws_region", "us-east-1"),
            ("aws_endpoint", "http://127.0.0.1:1"),
        ];
        let r = RemoteObjects::s3("s3://files/ferry/prod/", &options).unwrap();
        assert_eq!(r.path("ab/cd/ef").as_ref(), "ferry/prod/ab/cd/ef");
        let bare = RemoteObjects::s3("s3://files", &options).unwrap();
        assert_eq!(bare.path("ab/cd/ef").as_ref(), "ab/cd/ef");
        assert!(RemoteObjects::s3("s3://files", &[("not_an_option", "x")]).is_err());
    }

    #[test]
    fn only_keys_ferry_makes_are_collected() {
        let key = format!("{}/{}/{}", "a".repeat(24), "b".repeat(64), "c".repeat(32));
        assert!(ferry_key(&key));
        for other in [
            "backups/2026/db.dump",
            "00aa/11bb/22cc",
            &format!("{key}/x"),
            &key.to_uppercase(),
        ] {
            assert!(!ferry_key(other), "{other}");
        }
    }

    #[test]
    fn parts_grow_so_that_no_upload_needs_more_than_s3_allows() {
        assert_eq!(part_size(6 * 1024 * 1024), PART);
        let huge = 200 * 1024 * 1024 * 1024_u64;
        assert!(huge.div_ceil(part_size(huge) as u64) <= MOST_PARTS);
    }
}
