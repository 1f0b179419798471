//! `ferry-bench report`: every workload in one run, each in a process of
//! its own (so one's memory and threads do not colour the next), written
//! as one markdown report with the machine, the date and the commit.
//!
//! Each workload prints its figures beside its baseline from the same run
//! (see the other modules); the report collects them as they are.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use crate::{chart, curve};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where to write the report.
    #[arg(long, default_value = "bench/REPORT.md")]
    out: PathBuf,
    /// Tiny sizes, to check that the report runs (its figures mean
    /// nothing).
    #[arg(long)]
    quick: bool,
}

/// One workload: its heading and the arguments of `ferry-bench` (or, for
/// the browser, of `node`).
struct Workload {
    title: String,
    program: Program,
    args: Vec<String>,
}

enum Program {
    Bench,
    Node,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let bench = |title: String, args: &[&str]| Workload {
        title,
        program: Program::Bench,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    };
    // Pushes at every batch size, about as many changes at each and at
    // least 20 batches; `mode` adds a flag (`--mirror`).
    let pushes = |title: &str, backend: &str, mode: Option<&str>| {
        [1usize, 10, 100, 1000].map(|size| {
            let batches = if quick {
                2
            } else {
                (20_000 / size).clamp(20, 2000)
            };
            let (size_s, batches_s) = (size.to_string(), batches.to_string());
            let runs = if quick { "1" } else { "5" };
            let mut args = vec!["push", "--backend", backend, "--batch-size", &size_s];
            args.extend(["--batches", &batches_s, "--runs", runs]);
            args.extend(mode);
            bench(format!("{title}, batches of {size}, {backend}"), &args)
        })
    };
    let mut all = Vec::new();
    for backend in ["sqlite", "postgres"] {
        all.extend(pushes("Push", backend, None));
    }
    for backend in ["sqlite", "postgres"] {
        let (batches, runs) = if quick { ("2", "1") } else { ("200", "5") };
        all.push(bench(
            format!("Push with the app's schema, batches of 100, {backend}"),
            &[
                "push",
                "--schema",
                "--backend",
                backend,
                "--batch-size",
                "100",
                "--batches",
                batches,
                "--runs",
                runs,
            ],
        ));
    }
    all.extend(pushes(
        "Push into a collection mirrored into a table",
        "postgres",
        Some("--mirror"),
    ));
    for backend in ["sqlite", "postgres"] {
        let args: &[&str] = if quick {
            &[
                "pull",
                "--backend",
                backend,
                "--records",
                "300",
                "--page",
                "100",
                "--runs",
                "1",
            ]
        } else {
            &["pull", "--backend", backend]
        };
        all.push(bench(format!("Pull by cursor, {backend}"), args));
    }
    let client: &[&str] = if quick {
        &[
            "client",
            "--apply-records",
            "2000",
            "--writes",
            "100",
            "--runs",
            "1",
        ]
    } else {
        &["client"]
    };
    all.push(bench(
        "Native client: local writes, applying pulls".into(),
        client,
    ));
    let live: &[&str] = if quick {
        &[
            "live",
            "--records",
            "500",
            "--writes",
            "20",
            "--big",
            "2000",
        ]
    } else {
        &["live"]
    };
    all.push(bench(
        "Native client: live queries (Replica::watch) and indexed reads".into(),
        live,
    ));
    let files: &[&str] = if quick {
        &["files", "--big-mb", "5", "--rounds", "1", "--small", "50"]
    } else {
        &["files"]
    };
    all.push(bench(
        "Files: a big file up and down, small files to a fresh device".into(),
        files,
    ));
    let webhooks: &[&str] = if quick {
        &["webhooks", "--pushes", "200", "--latency", "20"]
    } else {
        &["webhooks"]
    };
    all.push(bench(
        "Webhooks: push throughput with three endpoints, push to delivery".into(),
        webhooks,
    ));
    for backend in ["sqlite", "postgres"] {
        let args: &[&str] = if quick {
            &[
                "load",
                "--backend",
                backend,
                "--devices",
                "20",
                "--rates",
                "50,100",
                "--seconds",
                "1",
                "--closed",
                "1",
            ]
        } else {
            &["load", "--backend", backend]
        };
        all.push(bench(
            format!("Many devices at once over HTTP, {backend}"),
            args,
        ));
    }
    // Ten times the devices, each holding its WebSocket: what a node's
    // memory and its realtime fan-out do to the loads it holds.
    if !quick {
        all.push(bench(
            "Many devices at once over HTTP, sqlite, 10,000 devices".into(),
            &[
                "load",
                "--backend",
                "sqlite",
                "--devices",
                "10000",
                "--rates",
                "500,1000,2000,3000,4000",
            ],
        ));
        all.push(bench(
            "Many devices at once over HTTP, postgres, 10,000 devices".into(),
            &[
                "load",
                "--backend",
                "postgres",
                "--devices",
                "10000",
                "--rates",
                "100,250,500,1000",
            ],
        ));
    }
    for backend in ["sqlite", "postgres"] {
        let args: &[&str] = if quick {
            &[
                "initial",
                "--backend",
                backend,
                "--records",
                "3000",
                "--runs",
                "1",
            ]
        } else {
            &["initial", "--backend", backend]
        };
        all.push(bench(
            format!("Initial sync into a fresh native replica, {backend}"),
            args,
        ));
    }
    for backend in ["sqlite", "postgres"] {
        let args: &[&str] = if quick {
            &[
                "realtime",
                "--backend",
                backend,
                "--writes",
                "20",
                "--subscribers",
                "50",
                "--runs",
                "1",
            ]
        } else {
            &["realtime", "--backend", backend]
        };
        all.push(bench(format!("Realtime, {backend}"), args));
    }
    for backend in ["sqlite", "postgres"] {
        let args: &[&str] = if quick {
            &[
                "visible",
                "--backend",
                backend,
                "--writes",
                "20",
                "--runs",
                "1",
            ]
        } else {
            &["visible", "--backend", backend]
        };
        all.push(bench(
            format!("Write-to-visible in a second client, {backend}"),
            args,
        ));
    }
    for backend in ["sqlite", "postgres"] {
        let from_table: &[&str] = if quick {
            &[
                "visible",
                "--from-table",
                "--backend",
                backend,
                "--writes",
                "20",
                "--runs",
                "1",
            ]
        } else {
            &["visible", "--from-table", "--backend", backend]
        };
        all.push(bench(
            format!("Backend write into a mirrored table to visible in a client, {backend}"),
            from_table,
        ));
    }
    let burst: &[&str] = if quick {
        &["capture", "--writes", "2000", "--runs", "1"]
    } else {
        &["capture"]
    };
    all.push(bench(
        "A burst of 100,000 backend writes into a mirrored table, postgres".into(),
        burst,
    ));
    let wire: &[&str] = if quick {
        &["wire", "--records", "300", "--batch-size", "100"]
    } else {
        &["wire"]
    };
    all.push(bench("Bytes on the wire".into(), wire));
    let peer: &[&str] = if quick {
        &["peer", "--clients", "2", "--records", "50", "--runs", "1"]
    } else {
        &["peer", "--runs", "5"]
    };
    all.push(bench(
        "Beside two peer sync engines (Triplit, PouchDB), N clients writing at once".into(),
        peer,
    ));
    let browser: &[&str] = if quick {
        &[
            "bench/browser/run.mjs",
            "--records",
            "500",
            "--merges",
            "500",
            "--runs",
            "1",
            "--live-records",
            "500",
            "--live-writes",
            "10",
            "--live-big",
            "2000",
        ]
    } else {
        &["bench/browser/run.mjs", "--runs", "5"]
    };
    all.push(Workload {
        title: "Browser client (headless Chromium)".into(),
        program: Program::Node,
        args: browser.iter().map(|s| (*s).to_owned()).collect(),
    });
    all
}

/// A command's trimmed standard output, when it succeeds and prints any.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("unknown memory".to_owned(), |kb| {
            format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores ({cpu}), {memory}")
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find ferry-bench itself")?;
    let started = std::time::SystemTime::now();
    let commit = output_of("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = output_of("git", &["status", "--porcelain", "--untracked-files=no"]).is_some();
    let shown = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
    let mut report = String::new();
    writeln!(report, "# Ferry benchmark report\n")?;
    writeln!(
        report,
        "Made by `cargo run --release -p ferry-bench -- report`{}.\n",
        if args.quick {
            " --quick (tiny sizes: these figures mean nothing)"
        } else {
            ""
        }
    )?;
    writeln!(
        report,
        "- Date: {}",
        humantime::format_rfc3339_seconds(started)
    )?;
    writeln!(
        report,
        "- Commit: {}{}",
        shown(commit),
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    )?;
    writeln!(report, "- Machine: {}", machine())?;
    writeln!(report, "- {}", shown(output_of("uname", &["-sr"])))?;
    writeln!(report, "- {}", shown(output_of("psql", &["--version"])))?;
    writeln!(
        report,
        "- Chromium: {}",
        shown(output_of("/usr/bin/chromium", &["--version"]))
    )?;
    writeln!(
        report,
        "\nEvery figure stands beside a baseline measured in the same run and is \
         given as min / median / max over the runs; ratios are what hold on a \
         noisy machine. bench/README.md says what each workload does.\n"
    )?;
    let chart = args.out.with_extension("png");
    if let Some(name) = chart.file_name() {
        writeln!(
            report,
            "![Every ratio below: median bars, min-max whiskers]({})\n",
            name.to_string_lossy()
        )?;
    }
    let mut ratios = Vec::new();
    let mut curves = Vec::new();
    let mut failed = Vec::new();
    // What the workloads need, before any is measured.
    preflight()?;
    for w in workloads(args.quick) {
        eprintln!("==> {}", w.title);
        let start = Instant::now();
        let mut command = match w.program {
            Program::Bench => Command::new(&exe),
            Program::Node => {
                let mut node = Command::new("node");
                node.env("FERRY_BENCH", &exe);
                node
            }
        };
        writeln!(report, "## {}\n", w.title)?;
        let shown_args = format!(
            "`{} {}`",
            match w.program {
                Program::Bench => "ferry-bench",
                Program::Node => "node",
            },
            w.args.join(" ")
        );
        match command.args(&w.args).stderr(Stdio::inherit()).output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                writeln!(
                    report,
                    "{shown_args} ({:.0} s)\n",
                    start.elapsed().as_secs_f64()
                )?;
                if out.status.success() {
                    ratios.extend(chart::ratios(&w.title, &text));
                    curves.extend(curve::curves(&w.title, &text));
                } else {
                    // Kept, with what it printed; the others still run.
                    eprintln!("==> {} failed ({})", w.title, out.status);
                    writeln!(
                        report,
                        "**Failed ({}); its error is in the run's log.**\n",
                        out.status
                    )?;
                    failed.push(w.title.clone());
                }
                writeln!(report, "```text\n{}\n```\n", text.trim_end())?;
            }
            Err(e) => {
                writeln!(report, "{shown_args}\n\n**Could not start: {e}.**\n")?;
                failed.push(w.title.clone());
            }
        }
        // Each section is on disk as soon as it is measured.
        std::fs::write(&args.out, &report)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    chart::draw(
        &chart,
        &format!(
            "Ferry against baselines measured in the same run ({})",
            humantime::format_rfc3339_seconds(started)
        ),
        &ratios,
        &curves,
    )?;
    print!("{report}");
    eprintln!(
        "report written to {} and {}",
        args.out.display(),
        chart.display()
    );
    anyhow::ensure!(
        failed.is_empty(),
        "{} workload(s) failed, each marked in the report: {}",
        failed.len(),
        failed.join("; ")
    );
    Ok(())
}

/// Installs what the workloads need and can be installed from the
/// registries (the peer sync engines), and checks the rest (Node,
/// Chromium, PostgreSQL), so that a run stops before measuring anything
/// rather than after most of it.
fn preflight() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if output_of("node", &["--version"]).is_none() {
        missing.push("Node.js (`node`), for the browser and peer workloads: run scripts/setup");
    }
    if output_of("/usr/bin/chromium", &["--version"]).is_none() {
        missing.push("Chromium (/usr/bin/chromium), for the browser workload: run scripts/setup");
    }
    let postgres_set = std::env::var(ferry_server::testing::POSTGRES_ENV).is_ok();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
    if !postgres_set
        && std::net::TcpStream::connect_timeout(&local, std::time::Duration::from_secs(3)).is_err()
    {
        missing
            .push("PostgreSQL at 127.0.0.1:5432 (or set FERRY_TEST_POSTGRES): run scripts/setup");
    }
    anyhow::ensure!(
        missing.is_empty(),
        "nothing was measured; missing:\n- {}",
        missing.join("\n- ")
    );
    eprintln!("==> the peer sync engines (bench/peer/install)");
    let installed = Command::new("bench/peer/install")
        .status()
        .context("cannot run bench/peer/install")?;
    anyhow::ensure!(
        installed.success(),
        "nothing was measured: bench/peer/install failed ({installed})"
    );
    Ok(())
}
