//! Redraws a report's chart from the report itself (`ferry-bench chart`):
//! each section's title and the figures its workload printed (the text
//! block under it) give the same ratios and curves the report drew, so
//! the chart follows a change to how it is drawn without measuring again.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::{chart, curve};

#[derive(Debug, Args)]
pub struct ChartArgs {
    /// The report to read.
    #[arg(long, default_value = "bench/REPORT.md")]
    report: PathBuf,
    /// The chart to write (by default the report's, `.png` beside it).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Each section of a report: its title and its first text block, for
/// the sections whose workload did not fail.
fn sections(report: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for section in report.split("\n## ").skip(1) {
        let (title, body) = section.split_once('\n').unwrap_or((section, ""));
        if body.contains("**Failed") {
            continue;
        }
        let text = body
            .split_once("```text\n")
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .map(|(text, _)| text.to_owned());
        if let Some(text) = text {
            found.push((title.trim().to_owned(), text));
        }
    }
    found
}

/// Runs `ferry-bench chart`.
pub fn run(args: ChartArgs) -> anyhow::Result<()> {
    let report = std::fs::read_to_string(&args.report)
        .with_context(|| format!("cannot read {}", args.report.display()))?;
    let date = report
        .lines()
        .find_map(|l| l.strip_prefix("- Date: "))
        .unwrap_or("undated");
    let (mut ratios, mut curves) = (Vec::new(), Vec::new());
    for (title, text) in sections(&report) {
        ratios.extend(chart::ratios(&title, &text));
        curves.extend(curve::curves(&title, &text));
    }
    anyhow::ensure!(
        !ratios.is_empty() || !curves.is_empty(),
        "{} holds no figures to draw",
        args.report.display()
    );
    let out = args
        .out
        .unwrap_or_else(|| args.report.with_extension("png"));
    chart::draw(
        &out,
        &format!("Ferry against baselines measured in the same run ({date})"),
        &ratios,
        &curves,
    )?;
    eprintln!("chart written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_measured_section_and_skips_failed_ones() {
        let report = "# Report\n\n- Date: 2026-12-04T17:05:33Z\n\n\
            ## Push, sqlite\n\n`ferry-bench push` (5 s)\n\n```text\nratio ferry/raw 0.5 0.6 0.7\n```\n\n\
            ## Broken\n\n`ferry-bench x` (1 s)\n\n**Failed (exit status: 1); its error is in the run's log.**\n\n```text\nratio a/b 1 1 1\n```\n";
        assert_eq!(
            sections(report),
            vec![(
                "Push, sqlite".to_owned(),
                "ratio ferry/raw 0.5 0.6 0.7".to_owned()
            )]
        );
    }
}
