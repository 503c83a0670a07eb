//! The bench code runs on a tiny fixture and writes a well-formed CSV and plot.
//! (Timings are never asserted.)

use crate::common::*;
use crate::runtime::optimum_export;
use std::path::Path;

/// `cbqa bench` of `model` on the tiny workload (8 questions, batch 1 and 4, 3 forced steps, one
/// thread) into `out`, with `extra` flags.
fn bench_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--batch-sizes",
        "1,4",
        "--threads",
        "1",
        "--questions",
        "8",
        "--force-steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bench_writes_csv_rows_and_a_plot() {
    let model = optimum_export("t5_v1_0");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let (ok, stdout, e) = run_cbqa(&bench_args(&model, &out, &[]));
    assert!(ok, "{e}");
    assert!(
        stdout.contains("cbqa-ort") && stdout.contains("cbqa-tract"),
        "{stdout}"
    );
    let mut r = csv::Reader::from_path(out.join("bench.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    for c in cbqa::bench::report::COLUMNS
        .iter()
        .chain(&["cpu", "cores", "onnxruntime", "workload"])
    {
        assert!(h.iter().any(|x| x == *c), "bench.csv lacks {c}");
    }
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 4, "2 engines x 2 batch sizes");
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    for row in &rows {
        // every question decoded exactly the forced 3 steps
        assert_eq!(&row[col("questions")], "8");
        assert_eq!(&row[col("generated_tokens")], "24");
        assert!(row[col("questions_per_s")].parse::<f64>().unwrap() > 0.0);
        let p50: f64 = row[col("p50_ms")].parse().unwrap();
        let p99: f64 = row[col("p99_ms")].parse().unwrap();
        assert!(p50 <= p99);
    }
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 2,
        "{svg}"
    );
    assert!(svg.contains("cbqa-ort cpu fp32"));
}

#[test]
fn bench_roofline_bounds_every_row_by_its_phases() {
    let model = optimum_export("t5_v1_0");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let (ok, stdout, e) = run_cbqa(&bench_args(
        &model,
        &out,
        &["--roofline", "--triad-mib", "8"],
    ));
    assert!(ok, "{e}");
    assert!(e.contains("fp32 GEMM") && e.contains("GB/s (triad)"), "{e}");
    assert_eq!(stdout.matches("roofline of ").count(), 4, "{stdout}");
    let text = std::fs::read_to_string(out.join("roofline.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.len(), 4, "2 engines x 2 batch sizes");
    let mut r = csv::Reader::from_path(out.join("bench.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    for (row, entry) in rows.iter().zip(&entries) {
        let bound = entry["roofline_s"].as_f64().unwrap();
        let phases: f64 = entry["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert!(p["flops"].as_f64().unwrap() > 0.0, "{p}");
                assert!(p["bytes"].as_f64().unwrap() > 0.0, "{p}");
                p["roofline_s"].as_f64().unwrap()
            })
            .sum();
        assert!((phases - bound).abs() <= 1e-9 * bound, "{entry}");
        let csv_bound: f64 = row[col("roofline_s")].parse().unwrap();
        assert!(
            (csv_bound - bound).abs() < 1e-4 + 1e-3 * bound,
            "{row:?} vs {entry}"
        );
        // The fraction is the bound over the unrounded wall time (the CSV rounds both columns).
        let wall = entry["wall_s"].as_f64().unwrap();
        let fraction = entry["roofline_fraction"].as_f64().unwrap();
        assert!(
            (fraction - bound / wall).abs() <= 1e-9 * fraction,
            "{entry}"
        );
        let wall_csv: f64 = row[col("wall_s")].parse().unwrap();
        assert!((wall_csv - wall).abs() <= 5e-5, "{row:?} vs {entry}");
        let fraction_csv: f64 = row[col("roofline_fraction")].parse().unwrap();
        assert!(
            (fraction_csv - fraction).abs() <= 5e-4,
            "{row:?} vs {entry}"
        );
        let per_q = entry["roofline_s_per_question"].as_f64().unwrap();
        assert!((per_q * 8.0 - bound).abs() <= 1e-9 * bound);
    }
    // batch 4 streams the weights a quarter as often as batch 1
    let bytes = |e: &serde_json::Value| e["phases"][2]["bytes"].as_f64().unwrap();
    assert!(bytes(&entries[1]) < bytes(&entries[0]), "{text}");
    let svg = std::fs::read_to_string(out.join("roofline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("fill=\"#1f77b4\"").count() == 12);
}
