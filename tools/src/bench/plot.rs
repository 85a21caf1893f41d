//! SVG latency CDFs, one file per client region: one curve per (system, operation, path) with
//! its physical bound (DESIGN.md §6) as a dashed vertical line in the same colour.
use super::hist::{RowKey, Series};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The text font, shipped in the repository (no fontconfig on the machine needed).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the shipped font did not load; SVG text may be missing");
        }
    });
}

/// One curve of a region's plot.
pub struct Curve<'a> {
    pub key: &'a RowKey,
    pub series: &'a Series,
    pub bound_ms: Option<f64>,
}

/// Writes `path`: the CDFs of `curves` (all of one region) on a log latency axis.
pub fn cdf_svg(path: &Path, region: &str, curves: &[Curve]) -> Result<()> {
    register_font();
    let points: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| c.series.cdf()).collect();
    let lo = points
        .iter()
        .flatten()
        .map(|p| p.0)
        .chain(
            curves
                .iter()
                .filter_map(|c| c.bound_ms)
                .filter(|&b| b > 0.0),
        )
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .flatten()
        .map(|p| p.0)
        .chain(curves.iter().filter_map(|c| c.bound_ms))
        .fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        ((lo / 1.5).max(0.01), hi * 1.5)
    } else {
        (0.1, 1000.0)
    };
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("latency CDF, clients in {region} (dashed: physical bound)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of operations")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (c, pts)) in curves.iter().zip(&points).enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        // A step CDF: each point holds until the next value.
        let mut steps = Vec::with_capacity(pts.len() * 2);
        let mut last = 0.0;
        for &(x, y) in pts {
            steps.push((x, last));
            steps.push((x, y));
            last = y;
        }
        let label = format!(
            "{} {} {} (n={})",
            c.key.system,
            c.key.op,
            c.key.path,
            c.series.hist.len()
        );
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        if let Some(b) = c.bound_ms.filter(|&b| b > 0.0) {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(b, 0.0), (b, 1.0)],
                    6,
                    4,
                    colour.stroke_width(1),
                ))
                .map_err(|x| e(&x))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_an_svg_with_curves_bounds_and_labels() {
        let dir = std::env::temp_dir().join(format!("meridian-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdf-test.svg");
        let mut s = Series::default();
        for i in 1..=200u64 {
            s.record(Duration::from_micros(70_000 + i * 50), "leader", 0);
        }
        let key = RowKey {
            system: "meridian".into(),
            region: "eu-west-1".into(),
            op: "write".into(),
            path: "leader".into(),
        };
        cdf_svg(
            &path,
            "eu-west-1",
            &[Curve {
                key: &key,
                series: &s,
                bound_ms: Some(68.0),
            }],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("meridian write leader (n=200)"), "legend");
        assert!(svg.contains("eu-west-1"), "caption");
        // The curve and the dashed bound line.
        assert!(svg.matches("<polyline").count() >= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
