//! The benches' figures as pictures (PNG), drawn with plotters: a well-kept pure-Rust plotting
//! crate whose bitmap backend needs no system library. Text is set in DejaVu Sans, embedded by
//! the `dejavu` crate, so a machine without fonts draws the same picture.

use std::{path::Path, sync::Once};

use anyhow::{Result, anyhow};
use plotters::{coord::types::RangedCoordf64, prelude::*};

/// One line of a chart: its legend and its points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One group of bars: its name on the x axis and a value per system, in the order of the
/// chart's systems.
pub struct Bars {
    pub label: String,
    pub values: Vec<f64>,
}

/// Upstream red, gleaner blue, in every chart.
const COLOURS: [RGBColor; 2] = [RGBColor(200, 50, 40), RGBColor(30, 90, 200)];
const FONT: &str = "sans-serif";

fn register_font() -> Result<()> {
    static REGISTER: Once = Once::new();
    let mut failed = false;
    REGISTER.call_once(|| {
        failed = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_err();
    });
    if failed {
        return Err(anyhow!(
            "the embedded DejaVu Sans is not a font plotters reads"
        ));
    }
    Ok(())
}

/// A 1,400×560 PNG at `path`: `lines` on the left (x and y from 0), `bars` grouped by label on
/// the right, one bar per system of `systems`.
pub fn lines_and_bars(
    path: &Path,
    title: &str,
    (line_title, x_label, y_label): (&str, &str, &str),
    lines: &[Line],
    bars_title: &str,
    systems: &[&str],
    bars: &[Bars],
) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root
        .titled(title, (FONT, 24).into_font())
        .map_err(draw_error)?;
    let (left, right) = root.split_horizontally(760);
    draw_lines(&left, line_title, x_label, y_label, lines)?;
    draw_bars(&right, bars_title, systems, bars)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_lines(
    area: &Area<'_>,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<()> {
    let points = || lines.iter().flat_map(|line| line.points.iter());
    let x_max = points().map(|(x, _)| *x).fold(1.0, f64::max);
    let y_max = points().map(|(_, y)| *y).fold(0.1, f64::max) * 1.1;
    let mut chart = chart(area, title, x_max, y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT, 14))
        .draw()
        .map_err(draw_error)?;
    for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(&line.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|point| Circle::new(*point, 3, colour.filled())),
            )
            .map_err(draw_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn draw_bars(area: &Area<'_>, title: &str, systems: &[&str], bars: &[Bars]) -> Result<()> {
    let y_max = bars
        .iter()
        .flat_map(|group| group.values.iter().copied())
        .fold(0.1, f64::max)
        * 1.15;
    let groups = bars.len().max(1) as f64;
    let mut chart = chart(area, title, groups, y_max)?;
    let labels: Vec<String> = bars.iter().map(|group| group.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let centre = x - x.floor();
            let index = x.floor() as usize;
            match labels.get(index) {
                Some(label) if (centre - 0.5).abs() < 0.01 => label.clone(),
                _ => String::new(),
            }
        })
        .label_style((FONT, 14))
        .draw()
        .map_err(draw_error)?;
    let width = 0.8 / systems.len().max(1) as f64;
    for (system, (name, colour)) in systems.iter().zip(COLOURS.iter().cycle()).enumerate() {
        let rectangles = bars.iter().enumerate().filter_map(|(group, bar)| {
            let value = *bar.values.get(system)?;
            let left = group as f64 + 0.1 + system as f64 * width;
            Some(Rectangle::new(
                [(left, 0.0), (left + width * 0.95, value)],
                colour.filled(),
            ))
        });
        chart
            .draw_series(rectangles)
            .map_err(draw_error)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        let values = bars.iter().enumerate().filter_map(|(group, bar)| {
            let value = *bar.values.get(system)?;
            let left = group as f64 + 0.1 + system as f64 * width;
            Some(Text::new(
                format!("{value:.1}"),
                (left, value + y_max * 0.01),
                (FONT, 13).into_font(),
            ))
        });
        chart.draw_series(values).map_err(draw_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart on `area` from 0 to `x_max` and `y_max`, its title above.
fn chart<'a, 'b>(area: &'a Area<'b>, title: &str, x_max: f64, y_max: f64) -> Result<Chart<'a, 'b>> {
    ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_error)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(draw_error)
}

fn draw_error<E: std::error::Error + Send + Sync + 'static>(
    error: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("cannot draw the chart: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_png_with_the_figures_drawn_on_it() {
        let path = std::env::temp_dir().join(format!("xtask-plot-{}.png", std::process::id()));
        let line = |label: &str, scale: f64| Line {
            label: label.to_owned(),
            points: (1..=5)
                .map(|x| (f64::from(x), f64::from(x) * scale))
                .collect(),
        };
        lines_and_bars(
            &path,
            "reclaim",
            ("latency", "cluster", "seconds"),
            &[line("upstream", 3.0), line("gleaner", 0.5)],
            "requests",
            &["upstream", "gleaner"],
            &[
                Bars {
                    label: "requests / object".into(),
                    values: vec![62.8, 51.1],
                },
                Bars {
                    label: "writes / object".into(),
                    values: vec![8.8, 11.9],
                },
            ],
        )
        .unwrap();
        let png = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // A blank 1,400×560 picture compresses to a few kilobytes; lines, bars and text do not.
        assert!(png.len() > 20_000, "{} bytes", png.len());
    }
}
