//! `scripts/gpu_check.sh --dry-run`: every step of the GPU check, with the CPU in place of the GPU
//! and tiny shapes, writing the same CSV/JSON files the GPU machine's run writes.

use crate::common::{python, root};
use std::path::Path;
use std::process::Command;

/// The rows of a CSV file as (header, rows), panicking with the file's name when it is missing.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the dry run did not write it)", path.display()));
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// The value of `column` in `row`.
fn col<'a>(header: &[String], row: &'a [String], column: &str) -> &'a str {
    let i = header.iter().position(|h| h == column).unwrap_or_else(|| {
        panic!("no column {column} in {header:?}");
    });
    &row[i]
}

#[test]
fn gpu_check_dry_run_writes_every_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gpu-check");
    let run = Command::new(root().join("scripts/gpu_check.sh"))
        .arg("--dry-run")
        .arg(&out)
        .env("CBQA", env!("CARGO_BIN_EXE_cbqa"))
        .env("PYTHON", python())
        .env_remove("OUT")
        .output()
        .expect("cannot start scripts/gpu_check.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "gpu_check.sh --dry-run failed:\n{stdout}\n{stderr}"
    );

    let (h, summary) = read_csv(&out.join("summary.csv"));
    let names: Vec<&str> = summary.iter().map(|r| col(&h, r, "check")).collect();
    for r in &summary {
        assert_eq!(col(&h, r, "status"), "pass", "{r:?}");
    }
    for expected in [
        "doctor-libtorch",
        "doctor-cuda",
        "train-loss-falls",
        "train-resume-exact",
    ] {
        assert!(names.contains(&expected), "no {expected} in {names:?}");
    }
    // 3 models x 2 beam sizes x (fp32, bf16), each against the CPU's fp32 run
    let (h, parity) = read_csv(&out.join("parity.csv"));
    assert_eq!(parity.len(), 12, "{parity:?}");
    for r in parity.iter().filter(|r| col(&h, r, "mode") == "fp32") {
        assert_eq!(col(&h, r, "identical"), col(&h, r, "questions"), "{r:?}");
    }
    // 2 shapes x 2 precisions x 2 batch sizes, cbqa and transformers on the same ids
    let (h, peers) = read_csv(&out.join("peers.csv"));
    assert_eq!(peers.len(), 8, "{peers:?}");
    for r in &peers {
        let ratio: f64 = col(&h, r, "ratio_q_per_s").parse().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{r:?}");
    }
    let (h, speed) = read_csv(&out.join("train_speed.csv"));
    let systems: Vec<&str> = speed.iter().map(|r| col(&h, r, "system")).collect();
    assert_eq!(systems, ["transformers", "cbqa"]);
    let env = std::fs::read_to_string(out.join("env.json")).unwrap();
    assert!(env.contains("\"torch\": \"2.11.0"), "{env}");
    let (_, doctor) = read_csv(&out.join("doctor.csv"));
    assert!(
        doctor.iter().any(|r| r[1].contains("torch 2.11.0")),
        "{doctor:?}"
    );
}

#[test]
fn bf16_compute_is_the_tch_backends_and_bench_measures_one_kind_of_model() {
    let export = crate::runtime::optimum_export("t5_v1_0");
    let data = root().join("eval/demo/nq-open-200.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    let (ok, _, e) = crate::common::run_cbqa(&[
        "eval",
        "--model",
        export.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--compute",
        "bf16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("--compute") && e.contains("tch"), "{e}");
    let fixture = crate::common::fixture("t5_v1_0");
    let (ok, _, e) = crate::common::run_cbqa(&[
        "bench",
        "--backends",
        "tch,ort",
        "--model",
        fixture.to_str().unwrap(),
        "--out",
        tmp.path().join("bench").to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("bench them in separate runs"), "{e}");
}
