//! The roofline in words, JSON and a picture: per phase the work, the bound and what was
//! measured, for each bench configuration.

use super::{Limits, RunBound};
use crate::bench::BenchResult;
use serde_json::json;
use std::fmt::Write;

/// What was measured of one configuration, per phase, in wall-clock seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub encoder_s: f64,
    pub decoder_s: f64,
    pub wall_s: f64,
}

impl Measured {
    /// From a bench result. Its encoder and decoder times are summed over the threads that ran
    /// batches concurrently (`batch_parallelism`, tract), so they are divided by it.
    pub fn of(r: &BenchResult, batch_parallelism: usize) -> Self {
        let k = batch_parallelism.max(1) as f64;
        Measured {
            encoder_s: r.encoder_s / k,
            decoder_s: r.decoder_s / k,
            wall_s: r.wall_s,
        }
    }
}

/// The limits in one line.
pub fn limits_line(l: &Limits) -> String {
    format!(
        "{} threads: fp32 GEMM {:.1} GFLOP/s, int8 GEMM {:.1} GOP/s, memory {:.1} GB/s (triad)",
        l.threads,
        l.f32_flops * 1e-9,
        l.int8_ops * 1e-9,
        l.bandwidth * 1e-9
    )
}

fn fraction(bound: f64, measured: f64) -> String {
    if measured > 0.0 && measured.is_finite() {
        format!("{:.0}%", 100.0 * bound / measured)
    } else {
        "-".into()
    }
}

/// The table of one configuration: work and bound per phase, then measured against bound for
/// the encoder, the decoder calls and the whole run.
pub fn table(label: &str, b: &RunBound, m: &Measured) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "roofline of {label} ({})", limits_line(&b.limits));
    let _ = writeln!(
        s,
        "  {:<22} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "phase", "GFLOP", "MB moved", "bound ms", "measured ms", "achieved"
    );
    for ((name, cost), bound) in b.work.named().iter().zip(b.phase_s) {
        let _ = writeln!(
            s,
            "  {:<22} {:>10.2} {:>10.1} {:>10.2} {:>12} {:>9}",
            name,
            cost.flops() * 1e-9,
            cost.bytes * 1e-6,
            bound * 1e3,
            "",
            ""
        );
    }
    let rows = [
        ("encoder", b.phase_s[0], m.encoder_s),
        ("decoder calls", b.decoder_s(), m.decoder_s),
        ("run (wall)", b.seconds(), m.wall_s),
    ];
    for (name, bound, measured) in rows {
        let _ = writeln!(
            s,
            "  {:<22} {:>10} {:>10} {:>10.2} {:>12.2} {:>9}",
            name,
            "",
            "",
            bound * 1e3,
            measured * 1e3,
            fraction(bound, measured)
        );
    }
    s
}

/// One configuration for `roofline.json` (which `scripts/bench_peers.py` reads to fill the
/// roofline columns of its own rows).
pub fn json_entry(r: &BenchResult, b: &RunBound, m: &Measured) -> serde_json::Value {
    let phases: Vec<serde_json::Value> = b
        .work
        .named()
        .iter()
        .zip(b.phase_s)
        .map(|((name, cost), bound)| {
            json!({"phase": name, "flops": cost.flops(), "bytes": cost.bytes, "roofline_s": bound})
        })
        .collect();
    json!({
        "engine": r.engine,
        "precision": r.precision,
        "batch_size": r.batch_size,
        "threads": r.threads,
        "questions": r.questions,
        "roofline_s": b.seconds(),
        "roofline_s_per_question": b.seconds() / r.questions.max(1) as f64,
        "wall_s": m.wall_s,
        "roofline_fraction": b.seconds() / m.wall_s,
        "encoder": {"roofline_s": b.phase_s[0], "measured_s": m.encoder_s},
        "decoder": {"roofline_s": b.decoder_s(), "measured_s": m.decoder_s},
        "limits": {
            "threads": b.limits.threads,
            "f32_flops": b.limits.f32_flops,
            "int8_ops": b.limits.int8_ops,
            "bandwidth_bytes_per_s": b.limits.bandwidth,
        },
        "phases": phases,
    })
}

/// Horizontal bars, bound against measured, for the encoder, the decoder calls and the run of
/// every configuration (`(label, bound, measured)` triples per configuration).
pub fn svg(configs: &[(String, RunBound, Measured)]) -> String {
    let rows: Vec<(String, f64, f64)> = configs
        .iter()
        .flat_map(|(label, b, m)| {
            [
                (format!("{label} · encoder"), b.phase_s[0], m.encoder_s),
                (format!("{label} · decoder"), b.decoder_s(), m.decoder_s),
                (format!("{label} · run"), b.seconds(), m.wall_s),
            ]
        })
        .collect();
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(1e-12, f64::max);
    let (left, width, row_h) = (300.0, 480.0, 26.0);
    let h = 60.0 + row_h * rows.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
<text x=\"10\" y=\"20\" font-size=\"14\">measured (grey) against the roofline bound (blue), seconds</text>",
        left + width + 90.0
    );
    for (i, (label, bound, measured)) in rows.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let bar = |v: f64| v / max * width;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"10\" fill=\"#999\"/>\
<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"10\" fill=\"#1f77b4\"/>\
<text x=\"{}\" y=\"{}\">{}</text>",
            left - 6.0,
            y + 14.0,
            super::super::report::xml(label),
            bar(*measured),
            y + 10.0,
            bar(*bound),
            left + bar(bound.max(*measured)) + 6.0,
            y + 14.0,
            fraction(*bound, *measured)
        );
    }
    s.push_str("</svg>\n");
    s
}
