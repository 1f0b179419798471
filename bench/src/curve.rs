//! The load benchmark's curve in the report's chart: for each run of
//! `ferry-bench load`, push p99 against the pushes per second achieved at
//! each offered load, on a log scale, beside the 50 ms the highest load
//! held must stay under.

use plotters::coord::Shift;
use plotters::prelude::*;

/// One load run's steps: `(achieved pushes/s, push p99 ms)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The p99 the highest load held stays under (ms).
const GOAL_MS: f64 = 50.0;

/// The steps of a `ferry-bench load` output: the rows under its header
/// line `offered achieved p50 p99 ...`; labelled with `title` and the
/// devices line (`N devices, ...`).
pub fn curves(title: &str, text: &str) -> Vec<Curve> {
    let mut devices = None;
    let mut points = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(1) == Some(&"devices,") {
            devices = words.first().map(|d| d.to_string());
        }
        if words.starts_with(&["offered", "achieved"]) {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        // Columns by position: offered, achieved, p50, p99, ...
        let column = |k: usize| words.get(k).and_then(|w| w.parse::<f64>().ok());
        match (column(0), column(1), column(3)) {
            // A step where no push succeeded has no p99 to draw.
            (Some(_), Some(achieved), Some(p99)) if p99 > 0.0 => points.push((achieved, p99)),
            (Some(_), Some(_), Some(_)) => {}
            _ => in_table = false,
        }
    }
    if points.is_empty() {
        return Vec::new();
    }
    let label = match devices {
        Some(d) if !title.contains("devices") => format!("{title}, {d} devices"),
        _ => title.to_owned(),
    };
    vec![Curve { label, points }]
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0, 90, 200),
    RGBColor(200, 90, 0),
    RGBColor(0, 150, 80),
    RGBColor(150, 0, 150),
];

/// Draws `curves` into `area`.
pub fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &[Curve],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    if curves.is_empty() {
        return Ok(());
    }
    let all = curves.iter().flat_map(|c| c.points.iter());
    let right = all.clone().map(|p| p.0).fold(100.0f64, f64::max) * 1.1;
    let top = all.clone().map(|p| p.1).fold(GOAL_MS * 2.0, f64::max) * 1.5;
    let bottom = all.map(|p| p.1).fold(1.0f64, f64::min) * 0.8;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Many devices at once: push p99 (ms, log) against pushes/s held",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..right, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("pushes/s achieved")
        .y_desc("push p99, ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y < 1.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        })
        .label_style(("sans-serif", 13))
        .draw()?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, GOAL_MS), (right, GOAL_MS)],
            BLACK.stroke_width(1),
        )))?
        .label("50 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    for (k, curve) in curves.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(std::iter::once(PathElement::new(
                curve.points.clone(),
                color.stroke_width(2),
            )))?
            .label(curve.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            curve
                .points
                .iter()
                .map(|&p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_steps_of_a_load_run() {
        let text = "many devices over HTTP, Sqlite, 1 node(s)\n\
            10000 devices, each with a WebSocket, a space of its own\n\
            server memory per connected device: 6.3 KB\n\
            \x20 offered  achieved      p50      p99    p99.9   vis p50   vis p99   cores   cpu/push  failed\n\
            \x20     500       499      2.7     14.3     23.8       4.2      18.3    0.69     1372µs       0\n\
            \x20    1000       999      2.3      7.0     12.0       3.6       9.0    0.93      932µs       0\n\
            highest load held (achieved within 5% of offered, push p99 <= 50 ms): 999 pushes/s\n";
        assert_eq!(
            curves("Load, sqlite", text),
            vec![Curve {
                label: "Load, sqlite, 10000 devices".into(),
                points: vec![(499.0, 14.3), (999.0, 7.0)],
            }]
        );
        assert!(curves("Push", "ratio ferry/raw 0.5 0.6 0.7\n").is_empty());
        // A title that names its devices keeps its own words; a step with
        // no push answered is left out.
        let text = "10000 devices, each with a WebSocket\n\
            offered achieved p50 p99 p99.9\n\
            100 0 0.0 0.0 0.0\n\
            250 250 10.6 61.4 88.6\n\
            no offered load was held with push p99 <= 50 ms\n";
        assert_eq!(
            curves("Load, postgres, 10,000 devices", text),
            vec![Curve {
                label: "Load, postgres, 10,000 devices".into(),
                points: vec![(250.0, 61.4)],
            }]
        );
    }
}
