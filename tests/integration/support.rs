//! Locating the shared data and the Python interpreter. Missing data is a test FAILURE with a
//! message saying where it should be, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared data folder (see [`crate::common::data_dir`]).
pub fn data_dir() -> PathBuf {
    crate::common::data_dir()
}

/// A file under the data dir, which must exist.
pub fn data_file(rel: &str) -> PathBuf {
    let path = data_dir().join(rel);
    assert!(
        path.is_file(),
        "benchmark file {} is missing (see shared/data/README.md)",
        path.display()
    );
    path
}

/// `$CBQA_PYTHON`, else the project venv's python, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CBQA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Runs a script from `scripts/` with the chosen interpreter; panics with its stderr on failure.
pub fn run_script(script: &str, args: &[&Path]) {
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new(&py).arg(&script).args(args).output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run {} (set CBQA_PYTHON to a Python 3 interpreter): {e}",
            py.display()
        ),
    };
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}",
        py.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh scratch directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cbqa-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}
