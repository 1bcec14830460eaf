//! PNG charts of a run: [`plot_metrics`] draws a training run's curves from `metrics.jsonl` (error rates per
//! epoch; batch errors, loss and the ε/κ/β schedules per step where the run wrote step records), and [`plot_series`] draws any named series over labelled categories as lines or grouped bars
//! (e.g. robust error per cascade stage).
//!
//! Rendering is self-contained: an RGB canvas, embedded-graphics primitives and its built-in bitmap fonts
//! (ISO-8859-7, so `ε` renders), and a small PNG encoder (zlib via flate2). No system fonts or libraries; files
//! are written atomically.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;

use embedded_graphics::mono_font::iso_8859_7::{FONT_10X20, FONT_8X13, FONT_9X15};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Pixel, Point, Primitive, Size};
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};
use embedded_graphics::Drawable;

use super::runfolder::{EpochMetrics, Record, StepMetrics};
use crate::error::{Error, Result};
use crate::weights::write_atomic;

/// One named curve (or bar group member). `values[i]` belongs to the i-th x position; a NaN value is not drawn
/// (a line joins the points on either side of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
    /// RGB; default: the next color of a ten-color palette.
    pub color: Option<[u8; 3]>,
    /// Draw the line dashed (e.g. training curves beside solid test curves).
    pub dashed: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Self {
        Series { name: name.into(), values, color: None, dashed: false }
    }
    pub fn color(mut self, rgb: [u8; 3]) -> Self {
        self.color = Some(rgb);
        self
    }
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }
}

/// Lines through the points, or grouped bars per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Line,
    Bars,
}

/// A chart of named series over labelled x positions (categories).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One label per x position, e.g. `["stage 1", "stage 2"]`.
    pub x_labels: Vec<String>,
    pub series: Vec<Series>,
    pub kind: ChartKind,
    /// Values are fractions shown as percentages (tick labels and bar labels ×100).
    pub percent: bool,
    /// Image size in pixels.
    pub width: u32,
    pub height: u32,
}

impl SeriesChart {
    pub fn new(title: impl Into<String>, x_labels: Vec<String>, series: Vec<Series>) -> Self {
        SeriesChart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            x_labels,
            series,
            kind: ChartKind::Line,
            percent: false,
            width: 1000,
            height: 560,
        }
    }
}

/// Write `chart` as a PNG to `path` (atomically).
pub fn plot_series(chart: &SeriesChart, path: &Path) -> Result<()> {
    let png = render_series(chart)?;
    write_atomic(path, &png)
}

/// The PNG bytes of `chart`.
pub fn render_series(chart: &SeriesChart) -> Result<Vec<u8>> {
    let (w, h) = (chart.width.max(320), chart.height.max(240));
    let mut c = Canvas::new(w, h);
    let panel = Panel {
        title: &chart.title,
        x_label: &chart.x_label,
        y_label: &chart.y_label,
        x: XAxis::Categories(&chart.x_labels),
        series: &chart.series,
        kind: chart.kind,
        percent: chart.percent,
        y_from_zero: true,
        legend_w: 0,
    };
    panel.draw(&mut c, Rect { x: 0, y: 0, w: w as i32, h: h as i32 });
    c.to_png()
}

const RED: [u8; 3] = [214, 39, 40];
const BLUE: [u8; 3] = [31, 119, 180];
const GREEN: [u8; 3] = [44, 160, 44];
const PURPLE: [u8; 3] = [148, 103, 189];
const PALETTE: [[u8; 3]; 10] = [
    BLUE,
    [255, 127, 14],
    GREEN,
    RED,
    PURPLE,
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Write the curves of a training run as a PNG to `path` (atomically): the epochs' error rates (top), then, against
/// the position in the run in epochs, the training batches' errors, the training loss and the schedules (ε, κ,
/// β). Without step records the lower panels show the epochs' values.
pub fn plot_metrics(records: &[Record], path: &Path) -> Result<()> {
    let png = render_metrics(records)?;
    write_atomic(path, &png)
}

/// The PNG bytes of [`plot_metrics`].
pub fn render_metrics(records: &[Record]) -> Result<Vec<u8>> {
    let metrics: Vec<&EpochMetrics> = records.iter().filter_map(Record::epoch).collect();
    let steps: Vec<&StepMetrics> = records.iter().filter_map(Record::step).collect();
    let xs: Vec<f64> = metrics.iter().map(|m| m.epoch as f64 + 1.0).collect();
    let col = |f: fn(&EpochMetrics) -> f64| metrics.iter().map(|m| f(m)).collect::<Vec<f64>>();
    let mut errors = Vec::new();
    if metrics.iter().any(|m| m.test_certified_err.is_some()) {
        errors.push(Series::new("test certified", col(|m| m.test_certified_err.unwrap_or(f64::NAN))).color(RED));
    }
    errors.push(Series::new("test clean", col(|m| m.test_clean_err)).color(BLUE));
    errors.push(Series::new("train robust", col(|m| m.train_robust_err)).color(RED).dashed());
    errors.push(Series::new("train clean", col(|m| m.train_clean_err)).color(BLUE).dashed());
    // The per-step panels: step records where there are any, else the epochs' values.
    let (sx, batch, loss, sched) = if steps.is_empty() {
        (
            xs.clone(),
            Vec::new(),
            vec![Series::new("train loss", col(|m| m.train_robust_loss)).color(PURPLE)],
            vec![Series::new("training ε", col(|m| m.eps)).color(GREEN)],
        )
    } else {
        let sc = |f: fn(&StepMetrics) -> f64| steps.iter().map(|m| f(m)).collect::<Vec<f64>>();
        (
            steps.iter().map(|m| m.at).collect(),
            vec![
                Series::new("batch robust", sc(|m| m.batch_robust_err)).color(RED),
                Series::new("batch clean", sc(|m| m.batch_clean_err)).color(BLUE),
            ],
            vec![
                Series::new("train loss", sc(|m| m.loss)).color(PURPLE),
                Series::new("regulariser", sc(|m| m.reg)).color(GREEN).dashed(),
            ],
            vec![
                Series::new("ε / max ε", {
                    let top = steps.iter().map(|m| m.eps).fold(0.0f64, f64::max);
                    steps.iter().map(|m| if top > 0.0 { m.eps / top } else { 0.0 }).collect()
                })
                .color(GREEN),
                Series::new("κ", sc(|m| m.kappa)).color(BLUE),
                Series::new("β", sc(|m| m.beta)).color(RED).dashed(),
            ],
        )
    };
    let (w, h) = (1000u32, 1180u32);
    let mut c = Canvas::new(w, h);
    // One legend width for all panels, so that their x axes line up.
    let legend_w =
        errors.iter().chain(&batch).chain(&loss).chain(&sched).map(|s| legend_width(&s.name)).max().unwrap_or(0);
    let panel = |title, y_label, x: &'static str, xs, series, percent| Panel {
        title,
        x_label: x,
        y_label,
        x: XAxis::Numeric(xs),
        series,
        kind: ChartKind::Line,
        percent,
        y_from_zero: true,
        legend_w,
    };
    let mut panels = vec![(panel("error rates", "error (%)", "epoch", &xs, &errors[..], true), 400)];
    if !batch.is_empty() {
        panels.push((panel("training batches", "error (%)", "epoch (steps)", &sx, &batch[..], true), 260));
    }
    panels.push((panel("training loss", "loss", "epoch (steps)", &sx, &loss[..], false), 260));
    panels.push((panel("schedules", "value", "epoch (steps)", &sx, &sched[..], false), 260));
    let mut y = 0;
    for (p, ph) in &panels {
        p.draw(&mut c, Rect { x: 0, y, w: w as i32, h: *ph });
        y += ph;
    }
    c.to_png()
}

// ---------------------------------------------------------------------------------------------------------------
// Canvas and PNG

/// An RGB8 image that embedded-graphics draws on.
struct Canvas {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Canvas { w, h, px: vec![255; (w * h * 3) as usize] }
    }
    fn put(&mut self, x: i32, y: i32, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.w && (y as u32) < self.h {
            let i = ((y as u32 * self.w + x as u32) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }
    fn to_png(&self) -> Result<Vec<u8>> {
        encode_png(self.w, self.h, &self.px)
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.w, self.h)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> std::result::Result<(), Infallible> {
        use embedded_graphics::pixelcolor::RgbColor;
        for Pixel(p, c) in pixels {
            self.put(p.x, p.y, [c.r(), c.g(), c.b()]);
        }
        Ok(())
    }
}

/// Encode 8-bit RGB pixels (row-major, `w·h·3` bytes) as a PNG.
pub fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: String| Error::io("cannot encode", "PNG image", std::io::Error::other(e));
    if rgb.len() != (w as usize) * (h as usize) * 3 {
        return Err(bad(format!("{} bytes for a {w}x{h} RGB image", rgb.len())));
    }
    let mut raw = Vec::with_capacity(rgb.len() + h as usize);
    for row in rgb.chunks((w as usize * 3).max(1)) {
        raw.push(0u8); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).map_err(|e| bad(e.to_string()))?;
    let idat = z.finish().map_err(|e| bad(e.to_string()))?;
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing helpers

const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];
const AXIS: [u8; 3] = [90, 90, 90];

fn rgb(c: [u8; 3]) -> Rgb888 {
    Rgb888::new(c[0], c[1], c[2])
}

fn text_width(font: &MonoFont, s: &str) -> i32 {
    (s.chars().count() as i32) * (font.character_size.width + font.character_spacing) as i32
}

fn text(c: &mut Canvas, s: &str, at: Point, font: &MonoFont, color: [u8; 3], align: Alignment, baseline: Baseline) {
    let style = MonoTextStyle::new(font, rgb(color));
    let ts = TextStyleBuilder::new().alignment(align).baseline(baseline).build();
    let _ = Text::with_text_style(s, at, style, ts).draw(c);
}

/// Text rotated 90° counter-clockwise (reading upwards), centered on `center`.
fn text_vertical(c: &mut Canvas, s: &str, center: Point, font: &MonoFont, color: [u8; 3]) {
    let tw = text_width(font, s).max(1) as u32;
    let th = font.character_size.height;
    let mut tmp = Canvas::new(tw, th);
    text(&mut tmp, s, Point::new(0, 0), font, [0, 0, 0], Alignment::Left, Baseline::Top);
    for y in 0..th {
        for x in 0..tw {
            if tmp.get(x, y) != [255, 255, 255] {
                // (x, y) -> (y, tw - 1 - x), shifted so the box is centered.
                let dx = center.x - th as i32 / 2 + y as i32;
                let dy = center.y + tw as i32 / 2 - x as i32;
                c.put(dx, dy, color);
            }
        }
    }
}

fn line(c: &mut Canvas, a: Point, b: Point, color: [u8; 3], width: u32) {
    let _ = Line::new(a, b).into_styled(PrimitiveStyle::with_stroke(rgb(color), width)).draw(c);
}

/// A dashed segment: dashes of 8 px with gaps of 5 px.
fn dashed_line(c: &mut Canvas, a: Point, b: Point, color: [u8; 3], width: u32) {
    let (dx, dy) = ((b.x - a.x) as f64, (b.y - a.y) as f64);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1.0 {
        return;
    }
    let (on, off) = (8.0, 5.0);
    let mut t = 0.0;
    while t < len {
        let e = (t + on).min(len);
        let p =
            |s: f64| Point::new((a.x as f64 + dx * s / len).round() as i32, (a.y as f64 + dy * s / len).round() as i32);
        line(c, p(t), p(e), color, width);
        t = e + off;
    }
}

fn rect_fill(c: &mut Canvas, x: i32, y: i32, w: i32, h: i32, color: [u8; 3]) {
    if w > 0 && h > 0 {
        let _ = Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32))
            .into_styled(PrimitiveStyle::with_fill(rgb(color)))
            .draw(c);
    }
}

fn rect_stroke(c: &mut Canvas, x: i32, y: i32, w: i32, h: i32, color: [u8; 3]) {
    if w > 0 && h > 0 {
        let _ = Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32))
            .into_styled(PrimitiveStyle::with_stroke(rgb(color), 1))
            .draw(c);
    }
}

fn marker(c: &mut Canvas, p: Point, color: [u8; 3]) {
    let _ = Circle::with_center(p, 7).into_styled(PrimitiveStyle::with_fill(rgb(color))).draw(c);
}

/// Round, readable tick positions covering `[lo, hi]` (about `n` of them).
fn nice_ticks(lo: f64, hi: f64, n: usize, integer: bool) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(1e-12);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let multipliers: &[f64] = if integer && mag >= 1.0 { &[1.0, 2.0, 5.0, 10.0] } else { &[1.0, 2.0, 2.5, 5.0, 10.0] };
    let mut step = multipliers.iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    if integer {
        step = step.max(1.0);
    }
    let first = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut k = 0;
    loop {
        let t = first + k as f64 * step;
        ticks.push(t);
        if t >= hi - step * 1e-9 || k > 1000 {
            break;
        }
        k += 1;
    }
    (ticks, step)
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-(step.abs().max(1e-12)).log10().floor()).clamp(0.0, 6.0) as usize;
    let decimals = if (step * 10f64.powi(decimals as i32)).fract().abs() > 1e-6 { decimals + 1 } else { decimals };
    let s = format!("{:.*}", decimals, v);
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

fn fmt_value(v: f64, percent: bool) -> String {
    if percent {
        format!("{:.1}%", v * 100.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Panels

#[derive(Clone, Copy)]
struct Rect {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
}

enum XAxis<'a> {
    Numeric(&'a [f64]),
    Categories(&'a [String]),
}

struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: XAxis<'a>,
    series: &'a [Series],
    kind: ChartKind,
    percent: bool,
    y_from_zero: bool,
    /// At least this much room for the legend (to align several panels).
    legend_w: i32,
}

fn legend_width(name: &str) -> i32 {
    text_width(&FONT_9X15, name) + 56
}

impl Panel<'_> {
    fn n_points(&self) -> usize {
        match self.x {
            XAxis::Numeric(xs) => xs.len(),
            XAxis::Categories(ls) => ls.len(),
        }
    }

    fn color(&self, i: usize) -> [u8; 3] {
        self.series[i].color.unwrap_or(PALETTE[i % PALETTE.len()])
    }

    fn draw(&self, c: &mut Canvas, r: Rect) {
        let tick_font = &FONT_8X13;
        let label_font = &FONT_9X15;
        let scale = if self.percent { 100.0 } else { 1.0 };
        let n = self.n_points();
        let vals: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().take(n).copied())
            .filter(|v| v.is_finite())
            .map(|v| v * scale)
            .collect();
        let (mut lo, mut hi) = match (vals.iter().copied().reduce(f64::min), vals.iter().copied().reduce(f64::max)) {
            (Some(a), Some(b)) => (a, b),
            _ => (0.0, scale),
        };
        if self.y_from_zero && lo >= 0.0 {
            lo = 0.0;
        }
        if hi - lo < 1e-12 {
            hi = lo + if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        }
        let (yticks, ystep) = nice_ticks(lo, hi, 5, false);
        let ylo = yticks.first().copied().unwrap_or(lo);
        let yhi = yticks.last().copied().unwrap_or(hi);
        let ytick_labels: Vec<String> = yticks.iter().map(|t| fmt_tick(*t, ystep)).collect();
        // At least six characters wide, so that stacked panels usually line up.
        let ytick_w = ytick_labels
            .iter()
            .map(|s| text_width(tick_font, s))
            .max()
            .unwrap_or(0)
            .max(text_width(tick_font, "0.0000"));

        // Layout: title on top, legend on the right, y label and tick labels on the left, x labels below.
        let legend_w = self.series.iter().map(|s| legend_width(&s.name)).max().unwrap_or(0).max(self.legend_w);
        let left = r.x + 12 + label_font.character_size.height as i32 + 10 + ytick_w + 8;
        let right = r.x + r.w - legend_w - 16;
        let top = r.y + 40;
        let bottom = r.y + r.h - 52;
        let (pw, ph) = (right - left, bottom - top);
        if pw < 20 || ph < 20 {
            return;
        }
        text(
            c,
            self.title,
            Point::new((left + right) / 2, r.y + 10),
            &FONT_10X20,
            INK,
            Alignment::Center,
            Baseline::Top,
        );
        let ymap = |v: f64| bottom - ((v - ylo) / (yhi - ylo) * ph as f64).round() as i32;

        // Horizontal grid and y ticks.
        for (t, s) in yticks.iter().zip(&ytick_labels) {
            let y = ymap(*t);
            line(c, Point::new(left, y), Point::new(right, y), GRID, 1);
            line(c, Point::new(left - 5, y), Point::new(left, y), AXIS, 1);
            text(c, s, Point::new(left - 8, y), tick_font, INK, Alignment::Right, Baseline::Middle);
        }
        let ylabel_x = r.x + 12 + label_font.character_size.height as i32 / 2;
        text_vertical(c, self.y_label, Point::new(ylabel_x, (top + bottom) / 2), label_font, INK);
        text(
            c,
            self.x_label,
            Point::new((left + right) / 2, bottom + 30),
            label_font,
            INK,
            Alignment::Center,
            Baseline::Top,
        );

        // X positions and ticks.
        let pad = 12;
        let xpos: Vec<i32> = match self.x {
            XAxis::Numeric(xs) => {
                let finite: Vec<f64> = xs.iter().copied().filter(|v| v.is_finite()).collect();
                let (xmin, xmax) =
                    match (finite.iter().copied().reduce(f64::min), finite.iter().copied().reduce(f64::max)) {
                        (Some(a), Some(b)) if b > a => (a, b),
                        (Some(a), _) => (a - 1.0, a + 1.0),
                        _ => (0.0, 1.0),
                    };
                let integer = finite.iter().all(|v| v.fract() == 0.0);
                let max_ticks = ((pw / 60).max(2)) as usize;
                let (xticks, xstep) = nice_ticks(xmin, xmax, max_ticks.min(10), integer);
                let xmap = |v: f64| left + pad + ((v - xmin) / (xmax - xmin) * (pw - 2 * pad) as f64).round() as i32;
                for t in xticks.iter().filter(|t| **t >= xmin - 1e-9 && **t <= xmax + 1e-9) {
                    let x = xmap(*t);
                    line(c, Point::new(x, top), Point::new(x, bottom), GRID, 1);
                    line(c, Point::new(x, bottom), Point::new(x, bottom + 5), AXIS, 1);
                    text(
                        c,
                        &fmt_tick(*t, xstep),
                        Point::new(x, bottom + 8),
                        tick_font,
                        INK,
                        Alignment::Center,
                        Baseline::Top,
                    );
                }
                xs.iter().map(|v| xmap(*v)).collect()
            }
            XAxis::Categories(labels) => {
                let cw = pw as f64 / labels.len().max(1) as f64;
                let pos: Vec<i32> = (0..labels.len()).map(|i| left + ((i as f64 + 0.5) * cw).round() as i32).collect();
                let widest = labels.iter().map(|l| text_width(tick_font, l)).max().unwrap_or(0) as f64 + 8.0;
                let every = (widest / cw.max(1.0)).ceil().max(1.0) as usize;
                for (i, (l, x)) in labels.iter().zip(&pos).enumerate() {
                    line(c, Point::new(*x, bottom), Point::new(*x, bottom + 5), AXIS, 1);
                    if i % every == 0 {
                        text(c, l, Point::new(*x, bottom + 8), tick_font, INK, Alignment::Center, Baseline::Top);
                    }
                }
                pos
            }
        };

        // Data.
        match self.kind {
            ChartKind::Line => {
                for (si, s) in self.series.iter().enumerate() {
                    let color = self.color(si);
                    let pts: Vec<Option<Point>> = s
                        .values
                        .iter()
                        .zip(&xpos)
                        .map(|(v, x)| v.is_finite().then(|| Point::new(*x, ymap(v * scale))))
                        .collect();
                    let joined: Vec<Point> = pts.iter().flatten().copied().collect();
                    for w in joined.windows(2) {
                        let (a, b) = (w[0], w[1]);
                        {
                            if s.dashed {
                                dashed_line(c, a, b, color, 2);
                            } else {
                                line(c, a, b, color, 2);
                            }
                        }
                    }
                    if pts.len() <= 60 {
                        for p in pts.iter().flatten() {
                            marker(c, *p, color);
                        }
                    }
                }
            }
            ChartKind::Bars => {
                let ns = self.series.len().max(1) as f64;
                let cw = pw as f64 / n.max(1) as f64;
                let bw = (cw * 0.8 / ns).max(1.0);
                let base = ymap(0.0f64.clamp(ylo, yhi));
                for (si, s) in self.series.iter().enumerate() {
                    let color = self.color(si);
                    for (v, x) in s.values.iter().zip(&xpos) {
                        if !v.is_finite() {
                            continue;
                        }
                        let x0 = (*x as f64 - cw * 0.4 + si as f64 * bw).round() as i32;
                        let y = ymap(v * scale);
                        let (y0, y1) = (y.min(base), y.max(base));
                        rect_fill(c, x0, y0, (bw.round() as i32 - 2).max(1), (y1 - y0).max(1), color);
                        let label = fmt_value(*v, self.percent);
                        if text_width(tick_font, &label) as f64 <= bw + 4.0 {
                            text(
                                c,
                                &label,
                                Point::new(x0 + bw as i32 / 2, y0 - 3),
                                tick_font,
                                INK,
                                Alignment::Center,
                                Baseline::Bottom,
                            );
                        }
                    }
                }
            }
        }

        // Frame, and a note when there is nothing to show.
        rect_stroke(c, left, top, pw + 1, ph + 1, AXIS);
        if vals.is_empty() {
            text(
                c,
                "no data yet",
                Point::new((left + right) / 2, (top + bottom) / 2),
                label_font,
                AXIS,
                Alignment::Center,
                Baseline::Middle,
            );
        }

        // Legend.
        let lx = right + 16;
        let mut ly = top + 4;
        for (si, s) in self.series.iter().enumerate() {
            let color = self.color(si);
            let mid = ly + 8;
            match self.kind {
                ChartKind::Line => {
                    if s.dashed {
                        dashed_line(c, Point::new(lx, mid), Point::new(lx + 34, mid), color, 2);
                    } else {
                        line(c, Point::new(lx, mid), Point::new(lx + 34, mid), color, 2);
                    }
                    marker(c, Point::new(lx + 17, mid), color);
                }
                ChartKind::Bars => rect_fill(c, lx + 6, mid - 7, 22, 14, color),
            }
            text(c, &s.name, Point::new(lx + 42, mid), label_font, INK, Alignment::Left, Baseline::Middle);
            ly += 22;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_header_and_size() {
        let png = encode_png(3, 2, &[0u8; 18]).unwrap();
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 3);
        assert_eq!(u32::from_be_bytes([png[20], png[21], png[22], png[23]]), 2);
        assert!(encode_png(3, 2, &[0u8; 17]).is_err());
    }

    #[test]
    fn ticks_are_round() {
        let (t, s) = nice_ticks(0.0, 87.0, 5, false);
        assert_eq!(s, 20.0);
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let (t, s) = nice_ticks(1.0, 20.0, 8, true);
        assert_eq!(s, 5.0);
        assert!(t.first().copied().unwrap_or(9.0) <= 1.0 && t.last().copied().unwrap_or(0.0) >= 20.0);
        assert_eq!(fmt_tick(0.025, 0.025), "0.025");
        assert_eq!(fmt_tick(-0.0, 0.5), "0.0");
        assert_eq!(fmt_tick(40.0, 20.0), "40");
    }
}
