//! Issues 5 and 6 through the binary: predict, eval, score, and their bad inputs.

use crate::common::*;
use crate::runtime::optimum_export;
use std::io::Write;
use std::process::Stdio;

#[test]
fn predict_streams_stdin_and_reports_bad_lines() {
    let model = optimum_export("t5_v1_0");
    let mut child = cbqa()
        .args([
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"who wrote hamlet\n\xff\xfe not utf8\n\nwhen did the war end\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["question"], "who wrote hamlet");
    assert!(lines[0]["answer"].is_string() && lines[0]["candidates"].is_array());
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("stdin:2: invalid UTF-8"),
        "{stdout}"
    );
    assert_eq!(lines[2]["question"], "when did the war end");
    assert!(stderr.contains("stdin:3: empty line"), "{stderr}");
}

/// `cbqa predict ... | head -1`: when the reader goes away, cbqa ends like other Unix tools
/// (SIGPIPE), without a panic message.
#[test]
fn predict_ends_quietly_when_stdout_is_closed() {
    use std::os::unix::process::ExitStatusExt;
    let model = optimum_export("t5_v1_0");
    let mut child = cbqa()
        .args(["predict", "--model", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is written
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"who wrote hamlet\nwhen did the war end\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

#[test]
fn predict_refuses_absent_gpus_and_broken_model_dirs() {
    let model = optimum_export("t5_v1_0");
    let m = model.to_str().unwrap();
    let (ok, _, e) = run_cbqa(&["predict", "--model", m, "--device", "cuda", "hello"]);
    assert!(!ok);
    assert!(
        e.contains("Cuda") && e.contains("execution provider") && e.contains("libonnxruntime"),
        "{e}"
    );
    let (ok, _, e) = run_cbqa(&[
        "predict",
        "--model",
        m,
        "--backend",
        "tract",
        "--device",
        "cuda",
        "x",
    ]);
    assert!(!ok && e.contains("tract runs on the CPU only"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&model, tmp.path());
    std::fs::remove_file(tmp.path().join("decoder_with_past_model.onnx")).unwrap();
    let (ok, _, e) = run_cbqa(&["predict", "--model", tmp.path().to_str().unwrap(), "x"]);
    assert!(
        !ok && e.contains("decoder_with_past_model.onnx") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn eval_shards_merge_to_the_full_run() {
    let model = optimum_export("t5_v1_1");
    let m = model.to_str().unwrap();
    let data = data_dir()
        .join("triviaqa")
        .join("topics.dpr.trivia.test.txt");
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    // the same 40 questions, beam 2, with `extra` options, written to `out`
    let eval = |extra: &[&str], out: &std::path::Path| {
        let mut args = vec![
            "eval", "--model", m, "--data", d, "--limit", "40", "--beams", "2",
        ];
        args.extend_from_slice(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        run_cbqa(&args)
    };
    let (ok, out, e) = eval(&[], &full);
    assert!(ok, "{e}");
    assert!(out.contains("trivia_qa normalisation"), "{out}");
    for i in 0..2 {
        let (ok, _, e) = eval(
            &["--shard", &format!("{i}/2")],
            &tmp.path().join(format!("s{i}")),
        );
        assert!(ok, "{e}");
    }
    // a second full run appends a row; the table stays well-formed
    let (ok, _, e) = eval(&["--backend", "tract"], &full);
    assert!(ok, "{e}");
    let mut r = csv::Reader::from_path(full.join("metrics.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    for col in [
        "dataset",
        "n",
        "em",
        "f1",
        "recall@1",
        "recall@2",
        "has_answer",
        "backend",
        "questions_per_s",
        "peak_rss_mb",
        "git_commit",
        "timestamp",
    ] {
        assert!(
            headers.iter().any(|h| h == col),
            "metrics.csv lacks {col}: {headers:?}"
        );
    }
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("n")], "40");
    assert_eq!(&rows[1][col("backend")], "tract");
    // ort and tract agree on every answer
    assert_eq!(&rows[0][col("em")], &rows[1][col("em")]);
    let preds = csv::Reader::from_path(full.join("predictions.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(preds, 40);

    // scoring the two shards merges them by id into the full run's numbers
    let merged = tmp.path().join("merged");
    let (ok, out, e) = run_cbqa(&[
        "score",
        "--data",
        d,
        "--limit",
        "40",
        "--predictions",
        tmp.path().join("s0/predictions.csv").to_str().unwrap(),
        tmp.path().join("s1/predictions.csv").to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(ok, "{e}");
    let mut a = csv::Reader::from_path(full.join("predictions.csv")).unwrap();
    let mut b = csv::Reader::from_path(merged.join("predictions.csv")).unwrap();
    let (ha, hb) = (a.headers().unwrap().clone(), b.headers().unwrap().clone());
    let ia: Vec<_> = ["id", "prediction", "em", "f1"]
        .iter()
        .map(|c| ha.iter().position(|h| h == *c).unwrap())
        .collect();
    let ib: Vec<_> = ["id", "prediction", "em", "f1"]
        .iter()
        .map(|c| hb.iter().position(|h| h == *c).unwrap())
        .collect();
    for (x, y) in a.records().zip(b.records()) {
        let (x, y) = (x.unwrap(), y.unwrap());
        for (i, j) in ia.iter().zip(&ib) {
            assert_eq!(&x[*i], &y[*j]);
        }
    }
    assert!(out.contains("n 40"), "{out}");
    // a missing shard is an error that says what is missing
    let (ok, _, e) = run_cbqa(&[
        "score",
        "--data",
        d,
        "--limit",
        "40",
        "--predictions",
        tmp.path().join("s0/predictions.csv").to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("have no prediction"), "{e}");
}

#[test]
fn score_reports_overlap_subsets_for_any_systems_predictions() {
    let data = data_dir()
        .join("webquestions")
        .join("dpr")
        .join("topics.dpr.wq.test.txt");
    let train = data_dir()
        .join("webquestions")
        .join("brmson-main")
        .join("trainmodel.json");
    let ds = cbqa::data::Dataset::read(&data, &Default::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // another system's output: the first reference for even questions, a wrong answer for odd
    let preds = tmp.path().join("preds.jsonl");
    let mut text = String::new();
    for (i, e) in ds.examples.iter().take(60).enumerate() {
        let p = if i % 2 == 0 {
            e.answers[0].clone()
        } else {
            "no idea".into()
        };
        text.push_str(&serde_json::json!({"id": e.id, "prediction": p}).to_string());
        text.push('\n');
    }
    std::fs::write(&preds, text).unwrap();
    let out = tmp.path().join("out");
    let (ok, stdout, e) = run_cbqa(&[
        "score",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "60",
        "--predictions",
        preds.to_str().unwrap(),
        "--overlap-with",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{e}");
    assert!(stdout.contains("EM 50.00"), "{stdout}");
    let mut r = csv::Reader::from_path(out.join("metrics.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    let get = |c: &str| {
        row[h
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("no {c} in {h:?}"))]
        .to_string()
    };
    let n: usize = [
        "n_question_overlap",
        "n_answer_overlap_only",
        "n_no_overlap",
    ]
    .iter()
    .map(|c| get(c).parse::<usize>().unwrap())
    .sum();
    assert_eq!(n, 60);
    assert!(get("n_answer_overlap_only").parse::<usize>().unwrap() > 0);
}

/// Without libtorch the tch backend is not offered at all: a clear refusal naming the choices.
#[cfg(not(feature = "train"))]
#[test]
fn inference_only_build_refuses_the_tch_backend() {
    let (ok, _, err) = run_cbqa(&[
        "eval",
        "--model",
        "m",
        "--data",
        "d",
        "--out",
        "o",
        "--backend",
        "tch",
    ]);
    assert!(!ok);
    assert!(err.contains("'tch'") && err.contains("ort, tract"), "{err}");
}

#[cfg(feature = "train")]
#[test]
fn eval_with_tch_on_the_checkpoint_equals_ort_on_its_export() {
    let export = crate::runtime::cbqa_export("t5_v1_1");
    let data = root().join("eval/demo/nq-open-200.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let mut preds = Vec::new();
    for (backend, model) in [("tch", fixture("t5_v1_1")), ("ort", export)] {
        let out = tmp.path().join(backend);
        let (ok, _, e) = run_cbqa(&[
            "eval",
            "--backend",
            backend,
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "24",
            "--beams",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{backend}: {e}");
        let mut r = csv::Reader::from_path(out.join("predictions.csv")).unwrap();
        let h = r.headers().unwrap().clone();
        let (p, c) = (
            h.iter().position(|x| x == "prediction").unwrap(),
            h.iter().position(|x| x == "candidates").unwrap(),
        );
        preds.push(
            r.records()
                .map(|x| {
                    let x = x.unwrap();
                    (x[p].to_string(), x[c].to_string())
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(preds[0].len(), 24);
    assert_eq!(preds[0], preds[1]);
}

#[test]
fn eval_progress_in_a_log_is_plain_lines() {
    let model = optimum_export("t5_v1_0");
    let data = root().join("eval/demo/nq-open-200.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("stderr.log");
    let status = cbqa()
        .args(["eval", "--model", model.to_str().unwrap()])
        .args(["--data", data.to_str().unwrap(), "--limit", "40"])
        .args(["--batch-size", "8", "--out", tmp.path().to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(!text.contains('\r'), "{text:?}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("eval: ")).collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("eval: 40/40 questions (100%)"),
        "{text}"
    );
}

#[test]
fn a_bad_setting_is_named_by_its_flag() {
    let (ok, _, e) = run_cbqa(&[
        "predict",
        "--model",
        "no-such-model",
        "--beams",
        "2",
        "--candidates",
        "3",
        "x",
    ]);
    assert!(!ok);
    assert!(
        e.contains("error: --candidates: ") && !e.contains("num_return_sequences"),
        "{e}"
    );
    let (ok, _, e) = run_cbqa(&["predict", "--model", "no-such-model", "--beams", "0", "x"]);
    assert!(
        !ok && e.contains("error: --beams: must be at least 1"),
        "{e}"
    );
}
