//! The bench code runs on a tiny fixture and writes a well-formed CSV and plot.
//! (Timings are never asserted.)

use crate::common::*;
use crate::runtime::optimum_export;

#[test]
fn bench_writes_csv_rows_and_a_plot() {
    let model = optimum_export("t5_v1_0");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let (ok, stdout, e) = run_cbqa(&[
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
    ]);
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
