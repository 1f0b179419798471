//! A real S3-compatible server for tests of object storage: `moto_server`
//! (moto, from PyPI; `scripts/setup` installs it), started on a free port
//! of 127.0.0.1 and stopped when dropped. A test that needs it fails
//! loudly when it is missing; it never skips.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::files::remote::RemoteObjects;

/// The environment variable naming the `moto_server` program, when it is
/// not on the `PATH`.
pub const MOTO_ENV: &str = "FERRY_MOTO_SERVER";

/// A running S3-compatible server with one bucket.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its bucket.
    pub bucket: String,
    child: Child,
}

impl S3Server {
    /// Starts a server and makes the bucket `bucket` in it.
    pub async fn start(bucket: &str) -> S3Server {
        let program = std::env::var(MOTO_ENV).unwrap_or_else(|_| "moto_server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {program} (an S3-compatible server for the object storage tests): {e}; \
                     install it with scripts/setup (pip install 'moto[server]') or set {MOTO_ENV}"
                )
            });
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
            child,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Making the bucket is the first request that works.
            match http
                .put(format!("{}/{bucket}", server.endpoint))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => panic!("{program} refused to make the bucket: {}", r.status()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{program} did not answer within 30 s: {e}"),
            }
        }
        server
    }

    /// The bucket under `prefix`, as Ferry's nodes reach it.
    pub fn remote(&self, prefix: &str) -> RemoteObjects {
        let url = format!("s3://{}/{prefix}", self.bucket);
        RemoteObjects::s3(
            &url,
            &[
                ("aws_endpoint", &self.endpoint),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "ferry-test"),
                ("aws_secret_access_key", "ferry-test-secret"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The keys of every object in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let text = reqwest::get(format!("{}/{}?list-type=2", self.endpoint, self.bucket))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("cannot list the bucket: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("cannot read the listing: {e}"));
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
