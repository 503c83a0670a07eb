//! Finding the native libraries at run time, without the user exporting anything.
//!
//! * libtorch is linked with an rpath set by `build.rs` (feature `train`); its CUDA part,
//!   `libtorch_cuda.so`, is loaded only when a CUDA device is asked for ([`torch_cuda`]).
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
    ort_environment().map(|(path, _)| path.clone())
}

/// The process-wide ONNX Runtime environment (loading the library on first use).
#[cfg(feature = "ort")]
pub fn ort_environment() -> Result<&'static (PathBuf, ort::environment::Environment)> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
        OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = ort_library_path().map_err(|e| e.to_string())?;
            let builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {}: {e}; {SETUP_HINT}",
                    path.display()
                )
            })?;
            let env = builder
                .with_name("cbqa")
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
            Ok((path, env))
        })
        .as_ref()
        .map_err(|e| Error::Library(e.clone()))
}

/// Load libtorch's CUDA support (`libtorch_cuda.so` and the CUDA libraries it needs), once.
///
/// It is not linked into the binary (see `build.rs`): libtorch registers its CUDA backend when
/// the library is loaded, so loading it here, before the first CUDA call, is what makes
/// `tch::Cuda::is_available()` true on a GPU machine. The library is looked up in the libtorch
/// the binary was built against, then through the dynamic loader's search path. An error says
/// what was tried: a CPU-only torch has no `libtorch_cuda.so`.
#[cfg(feature = "train")]
pub fn torch_cuda() -> std::result::Result<&'static Path, String> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let built = Path::new(env!("CBQA_LIBTORCH_LIB")).join("libtorch_cuda.so");
            let candidates = [built, PathBuf::from("libtorch_cuda.so")];
            let mut errors = Vec::new();
            for path in candidates {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|e| e.to_string())?;
                // SAFETY: dlopen of a shared library; the handle is kept for the life of the
                // process (never dlclosed), as libtorch's registrations must stay valid.
                let handle =
                    unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                if !handle.is_null() {
                    return Ok(path);
                }
                // SAFETY: dlerror returns a thread-local message or null.
                let msg = unsafe { libc::dlerror() };
                let msg = if msg.is_null() {
                    "unknown error".to_string()
                } else {
                    // SAFETY: a non-null dlerror result is a C string.
                    unsafe { std::ffi::CStr::from_ptr(msg) }
                        .to_string_lossy()
                        .into_owned()
                };
                errors.push(format!("{}: {msg}", path.display()));
            }
            Err(format!(
                "cannot load libtorch's CUDA support (is this a CUDA build of torch?): {}",
                errors.join("; ")
            ))
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

/// Versions and locations of the native parts, for `cbqa doctor` and bench reports.
pub fn report() -> Vec<(String, String)> {
    let mut rows = vec![("cbqa".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    #[cfg(feature = "train")]
    {
        rows.push(("libtorch".into(), "linked (tch 0.26, torch 2.13.0)".into()));
        rows.push((
            "cuda (libtorch)".into(),
            match torch_cuda() {
                Err(e) => format!("not available: {e}"),
                Ok(path) if tch::Cuda::is_available() => format!(
                    "available, {} device(s) ({})",
                    tch::Cuda::device_count(),
                    path.display()
                ),
                Ok(path) => format!("no device visible ({} loaded)", path.display()),
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
