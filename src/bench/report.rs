//! Bench output: a table on stdout, rows appended to a CSV shared with the peer script
//! (`scripts/bench_peers.py` writes the same columns), and an SVG plot of throughput against batch
//! size per engine, drawn from every row of that CSV.

use super::BenchResult;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// The CSV columns, in order (shared with scripts/bench_peers.py).
pub const COLUMNS: &[&str] = &[
    "engine",
    "device",
    "precision",
    "batch_size",
    "threads",
    "questions",
    "generated_tokens",
    "wall_s",
    "questions_per_s",
    "tokens_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "encoder_s",
    "decoder_s",
    "peak_rss_mb",
    "roofline_s",
    "roofline_fraction",
];

/// The row of one result, with the run's context columns after the measured ones.
pub fn csv_row(r: &BenchResult, context: &[(String, String)]) -> Vec<(String, String)> {
    let vals = [
        r.engine.clone(),
        r.device.clone(),
        r.precision.clone(),
        r.batch_size.to_string(),
        r.threads.to_string(),
        r.questions.to_string(),
        r.generated_tokens.to_string(),
        format!("{:.4}", r.wall_s),
        format!("{:.3}", r.questions_per_s),
        format!("{:.3}", r.tokens_per_s),
        format!("{:.3}", r.p50_ms),
        format!("{:.3}", r.p95_ms),
        format!("{:.3}", r.p99_ms),
        format!("{:.4}", r.encoder_s),
        format!("{:.4}", r.decoder_s),
        format!("{:.1}", r.peak_rss_mb),
        r.roofline_s.map_or(String::new(), |b| format!("{b:.4}")),
        r.roofline_s
            .map_or(String::new(), |b| format!("{:.3}", b / r.wall_s)),
    ];
    let mut row: Vec<(String, String)> = COLUMNS.iter().map(|c| c.to_string()).zip(vals).collect();
    row.extend(context.iter().cloned());
    row
}

/// A plain-text table of results.
pub fn table(results: &[BenchResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>6} {:>7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "engine",
        "batch",
        "threads",
        "q/s",
        "tok/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "enc %",
        "rss MB"
    );
    for r in results {
        let enc = 100.0 * r.encoder_s / (r.encoder_s + r.decoder_s).max(1e-12);
        let _ = writeln!(
            s,
            "{:<22} {:>6} {:>7} {:>10.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>6.1}% {:>9.0}",
            r.engine,
            r.batch_size,
            r.threads,
            r.questions_per_s,
            r.tokens_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            enc,
            r.peak_rss_mb
        );
    }
    s
}

/// Points (engine label → [(batch size, questions/s)]) from a bench CSV, averaging repeats.
pub fn read_points(csv_path: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let mut r = csv::Reader::from_path(csv_path).map_err(|e| Error::Output {
        path: csv_path.to_path_buf(),
        msg: format!("cannot read bench CSV: {e}"),
    })?;
    let h = r
        .headers()
        .map_err(|e| Error::Output {
            path: csv_path.to_path_buf(),
            msg: e.to_string(),
        })?
        .clone();
    let col = |n: &str| h.iter().position(|x| x == n);
    let (e, d, p, b, q) =
        match (
            col("engine"),
            col("device"),
            col("precision"),
            col("batch_size"),
            col("questions_per_s"),
        ) {
            (Some(e), Some(d), Some(p), Some(b), Some(q)) => (e, d, p, b, q),
            _ => return Err(Error::Output {
                path: csv_path.to_path_buf(),
                msg:
                    "not a bench CSV (needs engine, device, precision, batch_size, questions_per_s)"
                        .into(),
            }),
        };
    let mut acc: BTreeMap<(String, u64), (f64, usize)> = BTreeMap::new();
    for rec in r.records().flatten() {
        let label = format!("{} {} {}", &rec[e], &rec[d], &rec[p]);
        let (Ok(bs), Ok(qs)) = (rec[b].parse::<u64>(), rec[q].parse::<f64>()) else {
            continue;
        };
        let a = acc.entry((label, bs)).or_insert((0.0, 0));
        a.0 += qs;
        a.1 += 1;
    }
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((label, bs), (sum, n)) in acc {
        out.entry(label)
            .or_default()
            .push((bs as f64, sum / n as f64));
    }
    Ok(out)
}

/// Line colours, one per engine, in order.
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf", "#bcbd22",
];

/// The plot's geometry: canvas size, margins and data ranges (x as log2 of the batch size).
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    xmin: f64,
    xmax: f64,
    ymax: f64,
}

impl Frame {
    /// The frame that fits every point.
    fn fitting(points: &BTreeMap<String, Vec<(f64, f64)>>) -> Self {
        let all: Vec<(f64, f64)> = points.values().flatten().copied().collect();
        let xmin = all
            .iter()
            .map(|p| p.0.log2())
            .fold(f64::INFINITY, f64::min)
            .min(0.0);
        let xmax = all
            .iter()
            .map(|p| p.0.log2())
            .fold(f64::NEG_INFINITY, f64::max)
            .max(xmin + 1.0);
        let ymax = all.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
        Frame {
            w: 820.0,
            h: 480.0,
            left: 70.0,
            right: 230.0,
            top: 40.0,
            bottom: 50.0,
            xmin,
            xmax,
            ymax,
        }
    }

    /// Horizontal position of batch size `x`.
    fn px(&self, x: f64) -> f64 {
        self.left
            + (x.log2() - self.xmin) / (self.xmax - self.xmin) * (self.w - self.left - self.right)
    }

    /// Vertical position of throughput `y`.
    fn py(&self, y: f64) -> f64 {
        self.h - self.bottom - y / self.ymax * (self.h - self.top - self.bottom)
    }

    /// The `<svg>` opening, white background and title.
    fn header(&self, s: &mut String, title: &str) {
        let (w, h) = (self.w, self.h);
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
            (w - self.right + self.left) / 2.0,
            xml(title)
        );
    }

    /// The two axes and the horizontal grid with its throughput labels.
    fn axes_and_grid(&self, s: &mut String) {
        let (w, h, left, right, top, bottom) =
            (self.w, self.h, self.left, self.right, self.top, self.bottom);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            h - bottom,
            w - right,
            h - bottom
        );
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
            h - bottom
        );
        for i in 0..=5 {
            let y = self.ymax * i as f64 / 5.0;
            let _ = write!(
                s,
                "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{4:.0}</text>",
                self.py(y), w - right, left - 6.0, self.py(y) + 4.0, y
            );
        }
    }

    /// Batch-size ticks at the powers of two, and both axis titles.
    fn ticks_and_titles(&self, s: &mut String) {
        let (w, h, left, right, top, bottom) =
            (self.w, self.h, self.left, self.right, self.top, self.bottom);
        let mut x = self.xmin.floor();
        while x <= self.xmax + 1e-9 {
            let v = 2f64.powf(x);
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.0}</text>",
                self.px(v),
                h - bottom + 18.0
            );
            x += 1.0;
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">batch size</text>",
            (w - right + left) / 2.0,
            h - 10.0
        );
        let _ = write!(s, "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {0})\" text-anchor=\"middle\">questions / s</text>", (h - bottom + top) / 2.0);
    }

    /// Engine number `i`: its line, its points and its legend entry.
    fn series(&self, s: &mut String, i: usize, label: &str, pts: &[(f64, f64)]) {
        let c = COLORS[i % COLORS.len()];
        let mut pts = pts.to_vec();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", self.px(p.0), self.py(p.1)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &pts {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{c}\"/>",
                self.px(p.0),
                self.py(p.1)
            );
        }
        let (w, right) = (self.w, self.right);
        let ly = self.top + 20.0 + 20.0 * i as f64;
        let _ = write!(
            s,
            "<line x1=\"{0}\" y1=\"{ly}\" x2=\"{1}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{2}\" y=\"{3}\">{4}</text>",
            w - right + 15.0, w - right + 35.0, w - right + 40.0, ly + 4.0, xml(label)
        );
    }
}

/// An SVG line plot: questions/s against batch size (log2 axis), one line per engine.
pub fn svg_plot(points: &BTreeMap<String, Vec<(f64, f64)>>, title: &str) -> String {
    let frame = Frame::fitting(points);
    let mut s = String::new();
    frame.header(&mut s, title);
    frame.axes_and_grid(&mut s);
    frame.ticks_and_titles(&mut s);
    for (i, (label, pts)) in points.iter().enumerate() {
        frame.series(&mut s, i, label, pts);
    }
    s.push_str("</svg>\n");
    s
}

pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
