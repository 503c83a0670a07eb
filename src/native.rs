//! Finding the native libraries at run time, without the user exporting anything.
//!
//! * libtorch is linked with an rpath set by `build.rs` (feature `train`).
//! * ONNX Runtime is loaded with dlopen: `ORT_DYLIB_PATH` if set, otherwise the project venv's
//!   `libonnxruntime.so` recorded at build time, otherwise a `.venv/libonnxruntime.so` or
//!   `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*` found next to the
//!   executable or in a parent directory of it.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The command that installs the native libraries.
pub const SETUP_HINT: &str = "run scripts/setup.sh (it installs onnxruntime==1.31.1 into .venv; \
     scripts/setup.sh --gpu installs onnxruntime-gpu), or set ORT_DYLIB_PATH to a \
     libonnxruntime.so of version 1.31";

fn venv_candidates(venv: &Path) -> Vec<PathBuf> {
    let mut out = vec![venv.join("libonnxruntime.so")];
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for e in entries.flatten() {
            let capi = e.path().join("site-packages/onnxruntime/capi");
            if let Ok(files) = std::fs::read_dir(&capi) {
                let mut libs: Vec<PathBuf> = files
                    .flatten()
                    .map(|f| f.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("libonnxruntime.so."))
                    })
                    .collect();
                libs.sort();
                out.extend(libs);
            }
        }
    }
    out
}

/// Where the ONNX Runtime library is, or an error that says how to install it.
pub fn ort_library_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Library(format!(
                "ORT_DYLIB_PATH={} does not exist; {SETUP_HINT}",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    let baked = option_env!("CBQA_DEFAULT_ORT_DYLIB").unwrap_or("");
    if !baked.is_empty() {
        tried.push(PathBuf::from(baked));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            tried.extend(venv_candidates(&dir.join(".venv")));
        }
    }
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::Library(format!("ONNX Runtime library not found; {SETUP_HINT}")))
}

/// Load ONNX Runtime once per process and return the library path that was loaded.
#[cfg(feature = "ort")]
pub fn init_ort() -> Result<PathBuf> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = ort_library_path().map_err(|e| e.to_string())?;
            // Loading the library is all we need here; sessions create the default environment.
            let _builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {}: {e}; {SETUP_HINT}",
                    path.display()
                )
            })?;
            Ok(path)
        })
        .clone()
        .map_err(Error::Library)
}

/// Versions and locations of the native parts, for `cbqa doctor` and bench reports.
pub fn report() -> Vec<(String, String)> {
    let mut rows = vec![("cbqa".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    #[cfg(feature = "train")]
    {
        rows.push(("libtorch".into(), "linked (tch 0.26, torch 2.13.0)".into()));
        rows.push((
            "cuda (libtorch)".into(),
            if tch::Cuda::is_available() {
                format!("available, {} device(s)", tch::Cuda::device_count())
            } else {
                "not available".into()
            },
        ));
    }
    #[cfg(not(feature = "train"))]
    rows.push((
        "libtorch".into(),
        "not built in (feature `train` off)".into(),
    ));
    #[cfg(feature = "ort")]
    match init_ort() {
        Ok(path) => {
            rows.push(("onnxruntime".into(), path.display().to_string()));
            rows.push(("onnxruntime build".into(), ort::info().to_string()));
        }
        Err(e) => rows.push(("onnxruntime".into(), format!("error: {e}"))),
    }
    #[cfg(feature = "tract")]
    rows.push(("tract".into(), "tract-onnx 0.23 (built in)".into()));
    rows
}

/// The process's one ONNX Runtime environment (ort allows a single environment per process and
/// every session needs it), created on first use after [`init_ort`].
#[cfg(feature = "ort")]
pub fn ort_environment() -> Result<ort::environment::Environment> {
    use std::sync::OnceLock;
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    init_ort()?;
    ENV.get_or_init(|| {
        ort::init()
            .with_name("cbqa")
            .build()
            .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
    })
    .clone()
    .map_err(Error::Library)
}
