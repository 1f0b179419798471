//! The peer sync engines `ferry-bench peer` runs beside Ferry, each a
//! server script and a clients script of `bench/peer` (installed by
//! `bench/peer/install`): Triplit (`@triplit/server`, `@triplit/client`)
//! and PouchDB (`express-pouchdb` over `pouchdb-node`, the CouchDB
//! replication protocol). Both scripts speak the same small protocol: the
//! server prints `{"port": N}` first and stops when its stdin closes; the
//! clients take `--port --secret --clients --records --dir` and print
//! `{"wrote_ms", "all_ms"}`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::workload;

/// A peer engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Peer {
    Triplit,
    PouchDb,
}

pub const PEERS: [Peer; 2] = [Peer::Triplit, Peer::PouchDb];

/// The project's service token secret the Triplit scripts share.
const SECRET: &str = "ferry-bench-peer-secret-ferry-bench";

impl Peer {
    /// Its name in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Triplit => "triplit",
            Peer::PouchDb => "pouchdb",
        }
    }

    /// A package whose presence says the peer is installed.
    fn package(self) -> &'static str {
        match self {
            Peer::Triplit => "@triplit/server",
            Peer::PouchDb => "pouchdb-node",
        }
    }

    /// Whether `bench/peer/install` installed it under `dir`.
    pub fn installed(self, dir: &Path) -> bool {
        dir.join("node_modules").join(self.package()).is_dir()
    }

    /// What it runs, at which versions, with which durability.
    pub fn describe(self, dir: &Path) -> String {
        let version = |package: &str| -> String {
            let path = dir.join("node_modules").join(package).join("package.json");
            let version = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|json| json["version"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "(unknown version)".to_owned());
            format!("{package} {version}")
        };
        match self {
            Peer::Triplit => format!(
                "Triplit ({}): its server on SQLite (WAL, synchronous=NORMAL), @triplit/client \
                 with SQLite storage (WAL, synchronous=NORMAL), WebSocket",
                version("@triplit/server")
            ),
            Peer::PouchDb => format!(
                "PouchDB ({}, {}): the server on LevelDB, each client a LevelDB database with \
                 live two-way replication (CouchDB protocol over HTTP, PouchDB's defaults); \
                 neither side fsyncs a write (LevelDB sync=false: survives the process being \
                 killed, not a power cut)",
                version("pouchdb-node"),
                version("express-pouchdb")
            ),
        }
    }

    /// Starts its server in a child process, keeping its data in `data`.
    fn start(self, dir: &Path, data: &Path, cpu: Option<usize>) -> anyhow::Result<PeerServer> {
        let mut command = workload::on_cpu("node", cpu);
        match self {
            Peer::Triplit => command
                .arg(dir.join("triplit-server.mjs"))
                .env("TRIPLIT_SECRET", SECRET)
                .env("LOCAL_DATABASE_URL", data.join("server.db")),
            Peer::PouchDb => command
                .arg(dir.join("pouchdb-server.mjs"))
                .env("POUCHDB_DATA_DIR", data.join("server")),
        };
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start node")?;
        // Killed when dropped, whatever fails below.
        let mut server = PeerServer { child, port: 0 };
        let stdout = server.child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let read = stdout.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            // The server may log to its stdout; it must never find the
            // pipe closed.
            std::io::copy(&mut stdout, &mut std::io::sink())
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("the {} server said nothing within 60 s", self.name()))??;
        let started: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the {} server did not start: {line:?}", self.name()))?;
        server.port = started["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .context("no port")?;
        Ok(server)
    }

    /// One run: its server on the first CPU, its clients on the second;
    /// until every client's writes were local, and until all held all.
    pub fn run(
        self,
        dir: &Path,
        clients: usize,
        records: usize,
        pin: Option<(usize, usize)>,
    ) -> anyhow::Result<(Duration, Duration)> {
        let data = tempfile::tempdir()?;
        let server = self.start(dir, data.path(), pin.map(|p| p.0))?;
        let script = match self {
            Peer::Triplit => "triplit-clients.mjs",
            Peer::PouchDb => "pouchdb-clients.mjs",
        };
        let out = workload::on_cpu("node", pin.map(|p| p.1))
            .arg(dir.join(script))
            .args(["--port", &server.port.to_string(), "--secret", SECRET])
            .args(["--clients", &clients.to_string()])
            .args(["--records", &records.to_string()])
            .arg("--dir")
            .arg(data.path())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run the {} clients", self.name()))?;
        drop(server);
        if !out.status.success() {
            bail!("the {} clients failed ({})", self.name(), out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let figures: Value = serde_json::from_str(text.trim())
            .with_context(|| format!("the {} clients printed {text:?}", self.name()))?;
        let ms = |key: &str| {
            figures[key]
                .as_f64()
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .with_context(|| format!("no {key}"))
        };
        Ok((ms("wrote_ms")?, ms("all_ms")?))
    }
}

/// A peer's server in a child process; stops when dropped.
struct PeerServer {
    child: Child,
    port: u16,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
