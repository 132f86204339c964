//! PNG plots with plotters: training curves, sparsity per layer, accuracy against sparsity.
//!
//! Each plot is drawn to a temporary `.tmp.png` beside its target and renamed over it, so a
//! crash never leaves half an image. Text uses the system's sans-serif font through fontconfig.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

fn atomic_png(path: &Path, draw: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("plot path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp.png"));
    let result = draw(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(Into::into));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("drawing {}", path.display()))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Test accuracy and sparsity (both in %) against epoch.
pub fn training_curves(path: &Path, title: &str, epochs: &[(f64, f64, f64)]) -> anyhow::Result<()> {
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let last = epochs.iter().map(|e| e.0).fold(1.0, f64::max);
        let lo = epochs
            .iter()
            .map(|e| e.1)
            .fold(100.0, f64::min)
            .min(80.0)
            .floor();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .right_y_label_area_size(55)
            .build_cartesian_2d(0.5f64..last + 0.5, lo..100.0)
            .map_err(err)?
            .set_secondary_coord(0.5f64..last + 0.5, 0.0f64..100.0);
        chart
            .configure_mesh()
            .x_labels((last as usize).clamp(2, 20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("epoch")
            .y_desc("test accuracy (%)")
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("sparsity (%)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                epochs.iter().map(|e| (e.0, e.1)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("test accuracy")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(
                epochs.iter().map(|e| (e.0, e.2)),
                RED.stroke_width(2),
            ))
            .map_err(err)?
            .label("sparsity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    })
}

/// Sparsity (%) of each prunable layer, as bars.
pub fn layer_sparsity(path: &Path, title: &str, layers: &[(String, f64)]) -> anyhow::Result<()> {
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = layers.len().max(1) as f64;
        let names: Vec<String> = layers
            .iter()
            .map(|l| l.0.trim_end_matches(".weight").to_string())
            .collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0.0f64..100.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(layers.len().max(1))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("sparsity (%)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(layers.iter().enumerate().map(|(i, (_, s))| {
                let x = i as f64;
                Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *s)], BLUE.mix(0.7).filled())
            }))
            .map_err(err)?;
        root.present().map_err(err)
    })
}

/// Test accuracy (%) against sparsity (%), with the dense baseline as a horizontal line.
pub fn accuracy_vs_sparsity(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    dense: Option<f64>,
) -> anyhow::Result<()> {
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let lo = points
            .iter()
            .map(|p| p.1)
            .chain(dense)
            .fold(100.0, f64::min)
            .min(80.0)
            .floor();
        let hi = points
            .iter()
            .map(|p| p.1)
            .chain(dense)
            .fold(0.0, f64::max)
            .ceil()
            .min(100.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0f64..100.0, lo..(hi + 1.0).min(100.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("sparsity (%)")
            .y_desc("test accuracy (%)")
            .draw()
            .map_err(err)?;
        if let Some(d) = dense {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, d), (100.0, d)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("dense baseline {d:.2} %"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("pruned")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    })
}

/// Grouped bars: one group per label, one bar per series (e.g. speedup at batch 1 and 64).
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = labels.len().max(1) as f64;
        let top = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0.0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len().max(1))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (si, (name, values)) in series.iter().enumerate() {
            let color = Palette99::pick(si).mix(0.8);
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 - 0.4 + si as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
                }))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    })
}

/// One method's fidelity points: `(label, [(sparsity %, mean cosine)], n:m points)`.
pub type FidelitySeries = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

/// Mean embedding cosine to the dense model against sparsity, one line per method (unstructured
/// targets) plus a cross per N:M result.
pub fn fidelity_vs_sparsity(
    path: &Path,
    title: &str,
    series: &[FidelitySeries],
) -> anyhow::Result<()> {
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let lo = series
            .iter()
            .flat_map(|s| s.1.iter().chain(&s.2).map(|p| p.1))
            .fold(1.0f64, f64::min)
            .min(0.5);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0f64..100.0, (lo - 0.02).max(-1.0)..1.01)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("sparsity of the encoder's Linear weights (%)")
            .y_desc("mean cosine to the dense embeddings")
            .draw()
            .map_err(err)?;
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (i, (label, line, nm)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let mut pts = line.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(nm.iter().map(|&p| Cross::new(p, 7, c.stroke_width(2))))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    })
}
