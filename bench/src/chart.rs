//! The report's chart: every `ratio` row the workloads printed (Ferry
//! against the baseline of the same run), median bars with min–max
//! whiskers, drawn with plotters into a PNG.
//!
//! A table's unit says which way is good: ratios in tables of time (`ms`,
//! `µs`, `s`) are better low, all others (rates) better high; each kind
//! gets a panel of its own.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::curve::{self, Curve};

/// The height of the load curve's panel, in pixels.
const CURVE_HEIGHT: u32 = 480;

/// One ratio row of one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub label: String,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// A ratio of times: below 1 means Ferry took less.
    pub of_times: bool,
}

/// The ratio rows of one workload's output: a table starts with a header
/// line whose last words are `min median max`; its unit is its first word.
pub fn ratios(title: &str, text: &str) -> Vec<Ratio> {
    let mut of_times = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.ends_with(&["min", "median", "max"]) {
            of_times = matches!(words.first(), Some(&("ms" | "µs" | "s")));
            continue;
        }
        if words.first() != Some(&"ratio") || words.len() < 5 {
            continue;
        }
        let figures: Vec<f64> = words[words.len() - 3..]
            .iter()
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect();
        if let [min, median, max] = figures[..] {
            found.push(Ratio {
                label: format!("{title}: {}", words[1..words.len() - 3].join(" ")),
                min,
                median,
                max,
                of_times,
            });
        }
    }
    found
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font the chart's text is drawn in (`FERRY_BENCH_FONT`, or
/// Debian's DejaVu Sans from fonts-dejavu-core).
fn font() -> anyhow::Result<()> {
    let path = std::env::var("FERRY_BENCH_FONT").unwrap_or_else(|_| FONT.to_owned());
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the chart's font {path} (set FERRY_BENCH_FONT)"))?;
    // Registered once per process; the font lives as long as it.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{path} is not a font plotters can read"))
}

/// Draws `ratios`, and below them the load benchmark's `curves`, into a
/// PNG at `path`.
pub fn draw(path: &Path, caption: &str, ratios: &[Ratio], curves: &[Curve]) -> anyhow::Result<()> {
    font()?;
    let rates: Vec<&Ratio> = ratios.iter().filter(|r| !r.of_times).collect();
    let times: Vec<&Ratio> = ratios.iter().filter(|r| r.of_times).collect();
    let row = 26u32;
    let curve_height = if curves.is_empty() { 0 } else { CURVE_HEIGHT };
    let height = 120 + row * (rates.len() + times.len()) as u32 + 2 * 110 + curve_height;
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 24))?;
    let split = 110 + row * rates.len() as u32;
    let (top, bottom) = root.split_vertically(split);
    let (bottom, below) = bottom.split_vertically(bottom.dim_in_pixel().1 - curve_height);
    curve::panel(&below, curves)?;
    panel(
        &top,
        "Rates, Ferry / baseline (higher is better)",
        &rates,
        &BLUE,
    )?;
    panel(
        &bottom,
        "Times, Ferry / baseline (lower is better)",
        &times,
        &RGBColor(200, 90, 0),
    )?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    ratios: &[&Ratio],
    color: &RGBColor,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    if ratios.is_empty() {
        return Ok(());
    }
    let top = ratios.iter().map(|r| r.max).fold(1.0f64, f64::max) * 1.1;
    let n = ratios.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(560)
        .build_cartesian_2d(0.0..top, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_max_light_lines(1)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at each bar's middle (k + 0.5).
            let k = y.floor() as usize;
            if (y - y.floor() - 0.5).abs() < 1e-6 && k < n {
                ratios[n - 1 - k].label.clone()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(ratios.iter().enumerate().map(|(i, r)| {
        let y = (n - 1 - i) as f64;
        Rectangle::new(
            [(0.0, y + 0.2), (r.median, y + 0.8)],
            color.mix(0.6).filled(),
        )
    }))?;
    chart.draw_series(ratios.iter().enumerate().map(|(i, r)| {
        let y = (n - 1 - i) as f64 + 0.5;
        PathElement::new(vec![(r.min, y), (r.max, y)], BLACK.stroke_width(2))
    }))?;
    chart.draw_series(ratios.iter().enumerate().map(|(i, r)| {
        let y = (n - 1 - i) as f64 + 0.5;
        Text::new(
            format!("{:.2}", r.median),
            (r.max + top * 0.01, y + 0.2),
            ("sans-serif", 12),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, n as f64)],
        BLACK.stroke_width(1),
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ratio_rows_and_their_direction() {
        let text = "push into Sqlite: 20 batches\n\
            changes/s                             min       median          max\n\
            raw batched upsert                 206795       216802       220367\n\
            ratio ferry/raw                      0.45         0.53         0.58\n\
            ms                                    min       median          max\n\
            ratio signal/push p50                0.81         0.82         0.82\n\
            ratio new / raw                                  0.66         0.79         0.98\n";
        let found = ratios("Push", text);
        assert_eq!(
            found,
            vec![
                Ratio {
                    label: "Push: ferry/raw".into(),
                    min: 0.45,
                    median: 0.53,
                    max: 0.58,
                    of_times: false
                },
                Ratio {
                    label: "Push: signal/push p50".into(),
                    min: 0.81,
                    median: 0.82,
                    max: 0.82,
                    of_times: true
                },
                Ratio {
                    label: "Push: new / raw".into(),
                    min: 0.66,
                    median: 0.79,
                    max: 0.98,
                    of_times: true
                },
            ]
        );
    }

    #[test]
    fn draws_a_png() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("chart.png");
        let text = "records/s min median max\nratio ferry/raw 0.5 0.6 0.7\n\
                    ms min median max\nratio visible/round trip p99 0.9 1.1 3.0\n";
        let load = "10 devices, each with a WebSocket\n\
                    offered achieved p50 p99 p99.9\n\
                    500 499 2.7 14.3 23.8\n\
                    1000 990 20.0 70.0 90.0\n";
        draw(
            &path,
            "test",
            &ratios("Workload", text),
            &curve::curves("Load", load),
        )?;
        let bytes = std::fs::read(&path)?;
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(
            bytes.len() > 5_000,
            "an empty picture: {} bytes",
            bytes.len()
        );
        Ok(())
    }
}
