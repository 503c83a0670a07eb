//! Paths and helpers shared by the integration tests. Missing dependencies fail loudly with the
//! command that installs them; nothing is skipped silently.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

/// The real benchmark files: `$CBQA_DATA_DIR`, else `../shared/data` beside the checkout, else
/// `shared/data` inside it.
pub fn data_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("CBQA_DATA_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            root().join("..").join("shared").join("data"),
            root().join("shared").join("data"),
        ],
    };
    candidates
        .iter()
        .find(|d| d.join("nq-open").is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "benchmark data not found at {:?} (expected the shared data folder with nq-open/, \
                 triviaqa/, webquestions/ beside the checkout, or set CBQA_DATA_DIR)",
                candidates
            )
        })
}

/// The project venv's python, or a failure that says how to make it.
pub fn python() -> PathBuf {
    let py = std::env::var_os("CBQA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv").join("bin").join("python"));
    assert!(
        py.exists(),
        "{} not found: run scripts/setup.sh to create the project venv (torch, transformers, onnx, \
         onnxruntime)",
        py.display()
    );
    py
}

/// Run a Python script of scripts/ with the venv and return its stdout; panics with stderr.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("scripts").join(script))
        .args(args)
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot start python");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cbqa binary built for these tests.
pub fn cbqa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cbqa"))
}

/// Run cbqa, returning (success, stdout, stderr).
pub fn run_cbqa(args: &[&str]) -> (bool, String, String) {
    let out = cbqa().args(args).output().expect("cannot start cbqa");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copy a directory's files (one level) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Export `reference` (a safetensors fixture) and `other` (the same weights in another checkpoint
/// format) into `out`, and assert the two exports are the same bytes: graphs and weight data.
pub fn assert_same_export(reference: &Path, other: &Path, out: &Path, what: &str) {
    use cbqa::export::{self, ExportOptions};
    let a = export::export(&ExportOptions::new(
        reference.to_path_buf(),
        out.join("reference"),
    ))
    .unwrap();
    let b = export::export(&ExportOptions::new(other.to_path_buf(), out.join("other"))).unwrap();
    for file in [
        export::DATA_FILE,
        export::ENCODER,
        export::DECODER,
        export::DECODER_WITH_PAST,
    ] {
        let x = std::fs::read(a.dir.join(file)).unwrap();
        let y = std::fs::read(b.dir.join(file)).unwrap();
        assert!(!x.is_empty(), "{what}: {file} is empty");
        assert!(
            x == y,
            "{what}: {file} differs between the safetensors export and this one"
        );
    }
}
