//! Issue 18 item 2: no panic reachable from input. A property test over the command-line paths
//! that take users' files: each starts from a valid file (the real data of `../shared/data`, the
//! fixtures, an export of one), applies seeded random mutations (truncation, flipped and inserted
//! bytes, deleted and repeated ranges, huge numbers, an empty file, invalid UTF-8) and runs the
//! real `cbqa` binary on it. Every run must end in success or in an error message that names the
//! mutated file (or its directory) — never a panic (exit 101) or a signal.
//!
//! `CBQA_MALFORMED_CASES=N` sets the mutations per path (default 6; `scripts/malformed_inputs.sh`
//! style long runs use more), `CBQA_MALFORMED_SEED=S` replays one seed.

use crate::common::{cbqa, copy_dir, data_dir, fixture};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// One command-line path: the file it reads that the test mutates, and how to run it.
struct CliPath {
    name: &'static str,
    /// The valid input, laid out in a fresh directory; returns the file to mutate.
    prepare: fn(&Path) -> PathBuf,
    /// The arguments, given the case's directory.
    args: fn(&Path) -> Vec<String>,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The first `n` lines of NQ-open dev.
fn nq_head(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(data_dir().join("nq-open/NQ-open.dev.jsonl")).unwrap();
    let head: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    let p = dir.join("questions.jsonl");
    std::fs::write(&p, head).unwrap();
    p
}

fn predictions_csv(dir: &Path) -> PathBuf {
    nq_head(dir, 4);
    let p = dir.join("predictions.csv");
    std::fs::write(
        &p,
        "id,prediction,candidates\n0,14 December 1972,\"[\"\"14 December 1972\"\"]\"\n\
         1,Bobby Scott,\n2,\"Paris, France\",\"[\"\"Paris\"\",\"\"Lyon\"\"]\"\n3,x,\n",
    )
    .unwrap();
    p
}

fn predictions_jsonl(dir: &Path) -> PathBuf {
    nq_head(dir, 3);
    let p = dir.join("predictions.jsonl");
    std::fs::write(
        &p,
        "{\"id\": \"0\", \"prediction\": \"1972\", \"candidates\": [\"1972\", {\"text\": \"x\"}]}\n\
         {\"id\": \"1\", \"answer\": \"Bobby Scott\"}\n{\"id\": \"2\", \"text\": \"ok\"}\n",
    )
    .unwrap();
    p
}

fn score_args(dir: &Path, predictions: &str) -> Vec<String> {
    let mut a: Vec<String> = ["score", "--data"].map(String::from).to_vec();
    a.push(s(&dir.join("questions.jsonl")));
    a.push("--predictions".into());
    a.push(s(&dir.join(predictions)));
    a.push("--out".into());
    a.push(s(&dir.join("out")));
    a
}

/// A copy of the t5_v1_0 fixture; the file named `file` is the one mutated.
fn model_copy(dir: &Path, file: &str) -> PathBuf {
    let model = dir.join("model");
    copy_dir(&fixture("t5_v1_0"), &model);
    model.join(file)
}

/// A copy of cbqa's export of the t5_v1_0 fixture; the file named `file` is the one mutated.
fn export_copy(dir: &Path, file: &str) -> PathBuf {
    let export = dir.join("export");
    copy_dir(&crate::runtime::cbqa_export("t5_v1_0"), &export);
    export.join(file)
}

fn eval_args(dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["eval".into(), "--model".into(), s(&dir.join("export"))];
    a.extend(["--data".into(), s(&dir.join("questions.jsonl"))]);
    a.extend(["--limit", "3", "--max-new-tokens", "4", "--threads", "1"].map(String::from));
    a.extend(["--out".into(), s(&dir.join("out"))]);
    a
}

fn predict_args(dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["predict".into(), "--model".into(), s(&dir.join("export"))];
    a.extend(
        [
            "--max-new-tokens",
            "4",
            "--threads",
            "1",
            "who wrote hamlet",
        ]
        .map(String::from),
    );
    a
}

/// Every path, in the inference-only build too.
fn paths() -> Vec<CliPath> {
    let mut v = vec![
        CliPath {
            name: "score: predictions.csv",
            prepare: predictions_csv,
            args: |d| score_args(d, "predictions.csv"),
        },
        CliPath {
            name: "score: predictions JSON lines",
            prepare: predictions_jsonl,
            args: |d| score_args(d, "predictions.jsonl"),
        },
        CliPath {
            name: "score: the data file",
            prepare: |d| {
                predictions_csv(d);
                d.join("questions.jsonl")
            },
            args: |d| score_args(d, "predictions.csv"),
        },
        CliPath {
            name: "inspect: config.json",
            prepare: |d| model_copy(d, "config.json"),
            args: |d| vec!["inspect".into(), s(&d.join("model"))],
        },
        CliPath {
            name: "inspect: model.safetensors",
            prepare: |d| model_copy(d, "model.safetensors"),
            args: |d| vec!["inspect".into(), s(&d.join("model"))],
        },
        CliPath {
            name: "convert: tokenizer.json",
            prepare: |d| model_copy(d, "tokenizer.json"),
            args: |d| {
                let m = s(&d.join("model"));
                vec![
                    "convert".into(),
                    "--model".into(),
                    m,
                    "--out".into(),
                    s(&d.join("conv")),
                ]
            },
        },
        CliPath {
            name: "eval: the data file",
            prepare: |d| {
                export_copy(d, "config.json");
                nq_head(d, 3)
            },
            args: eval_args,
        },
        CliPath {
            name: "predict: cbqa_export.json",
            prepare: |d| export_copy(d, "cbqa_export.json"),
            args: predict_args,
        },
        CliPath {
            name: "predict: tokenizer.json",
            prepare: |d| export_copy(d, "tokenizer.json"),
            args: predict_args,
        },
        CliPath {
            name: "predict: generation_config.json",
            prepare: |d| export_copy(d, "generation_config.json"),
            args: predict_args,
        },
    ];
    v.extend(train_paths());
    v
}

/// The paths through libtorch's trainer (feature `train`): the examples it would train on.
#[cfg(feature = "train")]
fn train_paths() -> Vec<CliPath> {
    vec![
        CliPath {
            name: "train --dump-examples: the training file",
            prepare: |d| nq_head(d, 6),
            args: |d| {
                let mut a = vec!["train".into(), "--model".into(), s(&fixture("t5_v1_0"))];
                a.extend(["--train".into(), s(&d.join("questions.jsonl"))]);
                a.extend([
                    "--out".into(),
                    s(&d.join("run")),
                    "--dump-examples".into(),
                    "3".into(),
                ]);
                a
            },
        },
        CliPath {
            name: "pretrain --dump-examples: a corpus with spans",
            prepare: |d| {
                let p = d.join("corpus.jsonl");
                std::fs::write(
                    &p,
                    "{\"text\": \"Zo\u{eb} was born in 1921 in K\u{f8}benhavn.\", \"spans\": \
                     [{\"start\": 16, \"end\": 20, \"type\": \"DATE\"}, \
                     {\"start\": 24, \"end\": 33, \"type\": \"LOC\"}]}\n\
                     {\"text\": \"Paris is in France.\", \"spans\": [{\"start\": 0, \"end\": 5}]}\n",
                )
                .unwrap();
                p
            },
            args: |d| {
                let mut a = vec!["pretrain".into(), "--model".into(), s(&fixture("t5_v1_0"))];
                a.extend(["--corpus".into(), s(&d.join("corpus.jsonl"))]);
                a.extend(["--objective", "ssm", "--dump-examples", "3"].map(String::from));
                a.extend(["--out".into(), s(&d.join("run"))]);
                a
            },
        },
    ]
}

#[cfg(not(feature = "train"))]
fn train_paths() -> Vec<CliPath> {
    Vec::new()
}

/// One random mutation of `bytes` (never the identity for a non-empty input, but for rare
/// coincidences such as a flipped byte flipped back).
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, &'static str) {
    let mut b = bytes.to_vec();
    let n = b.len().max(1);
    let at = rng.random_range(0..n).min(b.len());
    let what = match rng.random_range(0..8) {
        0 => {
            b.truncate(at);
            "truncated"
        }
        1 => {
            for _ in 0..rng.random_range(1..=8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
            }
            "flipped bits"
        }
        2 => {
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(at..at, junk);
            "inserted random bytes"
        }
        3 => {
            let end = (at + rng.random_range(1..=64)).min(b.len());
            b.drain(at..end);
            "deleted a range"
        }
        4 => {
            let end = (at + rng.random_range(1..=256)).min(b.len());
            let copy = b[at..end].to_vec();
            b.splice(at..at, copy);
            "repeated a range"
        }
        5 => {
            let digit = b
                .iter()
                .skip(at)
                .position(u8::is_ascii_digit)
                .map(|i| i + at);
            let i = digit.unwrap_or(at);
            let big: &[u8] =
                [b"99999999999999999999".as_slice(), b"-1", b"1e308", b"0"][rng.random_range(0..4)];
            b.splice(i..i, big.iter().copied());
            "huge or negative number"
        }
        6 => {
            b.splice(at..at, [0xff, 0xfe, 0x80]);
            "invalid UTF-8"
        }
        _ => {
            b.clear();
            "emptied"
        }
    };
    (b, what)
}

/// The property for one run: success, or an error naming the mutated file or its directory.
fn check_run(path: &CliPath, dir: &Path, target: &Path, what: &str, seed: u64) {
    let args = (path.args)(dir);
    let out = cbqa().args(&args).output().expect("cannot start cbqa");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let replay = format!(
        "{} ({what}, CBQA_MALFORMED_SEED={seed}): cbqa {}",
        path.name,
        args.join(" ")
    );
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(101) && !stderr.contains("panicked"),
        "{replay}\nexit {:?} (a panic or a signal):\n{stderr}",
        out.status
    );
    if out.status.success() {
        return;
    }
    let file = target.file_name().unwrap().to_string_lossy();
    let parent = target
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    assert!(
        stderr.contains("error") && (stderr.contains(&*file) || stderr.contains(&*parent)),
        "{replay}\nthe error names neither {file} nor its directory {parent}:\n{stderr}"
    );
}

#[test]
fn malformed_inputs_never_panic_and_errors_name_the_file() {
    let cases: u64 = std::env::var("CBQA_MALFORMED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seeds: Vec<u64> = match std::env::var("CBQA_MALFORMED_SEED") {
        Ok(v) => vec![v.parse().expect("CBQA_MALFORMED_SEED is a number")],
        Err(_) => (0..cases).collect(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for (k, path) in paths().iter().enumerate() {
        for &seed in &seeds {
            let dir = tmp.path().join(format!("case-{k}-{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            let target = (path.prepare)(&dir);
            let valid = std::fs::read(&target).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + k as u64);
            let (bytes, what) = mutate(&valid, &mut rng);
            std::fs::write(&target, bytes).unwrap();
            check_run(path, &dir, &target, what, seed);
            runs += 1;
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!(
        "malformed inputs: {runs} runs over {} paths, no panic",
        paths().len()
    );
}
