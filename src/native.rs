//! Finding the native libraries at run time, without the user exporting anything.
//!
//! * libtorch is linked with an rpath set by `build.rs` (feature `train`); its CUDA part,
//!   `libtorch_cuda.so`, is loaded only when a CUDA device is asked for (`torch_cuda`).
//! * ONNX Runtime is loaded with dlopen: `ORT_DYLIB_PATH` if set, otherwise the project venv's
//!   `libonnxruntime.so` recorded at build time, otherwise a `.venv/libonnxruntime.so` or
//!   `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*` found next to the
//!   executable or in a parent directory of it. An embedder that knows where an `onnxruntime`
//!   installation is (the Python package asks the interpreter) names it with
//!   [`use_onnxruntime_package`]; it is tried after `ORT_DYLIB_PATH`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The command that installs the native libraries.
#[cfg(feature = "ort")]
pub(crate) const SETUP_HINT: &str =
    "run scripts/setup.sh (it installs onnxruntime==1.31.1 into .venv; \
     scripts/setup.sh --gpu installs onnxruntime-gpu), or set ORT_DYLIB_PATH to a \
     libonnxruntime.so of version 1.31";

#[cfg(feature = "ort")]
fn venv_candidates(venv: &Path) -> Vec<PathBuf> {
    let mut out = vec![venv.join("libonnxruntime.so")];
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for e in entries.flatten() {
            out.extend(capi_libraries(
                &e.path().join("site-packages/onnxruntime/capi"),
            ));
        }
    }
    out
}

/// The `libonnxruntime.so.*` files of an `onnxruntime/capi` directory, sorted.
#[cfg(feature = "ort")]
fn capi_libraries(capi: &Path) -> Vec<PathBuf> {
    let Ok(files) = std::fs::read_dir(capi) else {
        return Vec::new();
    };
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
    libs
}

/// The ONNX Runtime library an embedder named with [`use_onnxruntime_package`].
#[cfg(feature = "ort")]
static EMBEDDER_ORT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use the ONNX Runtime library of an installed `onnxruntime` Python package, whose directory
/// (`site-packages/onnxruntime`) is `package`: its `capi/libonnxruntime.so.*` is tried after
/// `ORT_DYLIB_PATH` and before the locations found from the executable. Call it before the first
/// model is loaded; a later call, or one after a library was loaded, changes nothing. Errors
/// when the package has no such library.
#[cfg(feature = "ort")]
pub fn use_onnxruntime_package(package: &Path) -> Result<PathBuf> {
    let capi = package.join("capi");
    let lib = capi_libraries(&capi).into_iter().next().ok_or_else(|| {
        Error::Library(format!(
            "{}: no libonnxruntime.so.* in this onnxruntime package; {SETUP_HINT}",
            capi.display()
        ))
    })?;
    Ok(EMBEDDER_ORT.get_or_init(|| lib).clone())
}

/// Where the ONNX Runtime library is, or an error that says how to install it.
#[cfg(feature = "ort")]
pub(crate) fn ort_library_path() -> Result<PathBuf> {
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
    let mut tried: Vec<PathBuf> = EMBEDDER_ORT.get().cloned().into_iter().collect();
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
pub(crate) fn init_ort() -> Result<PathBuf> {
    ort_environment().map(|(path, _)| path.clone())
}

/// Why loading ONNX Runtime failed, kept for every later call in the process: what was being
/// done and, where ONNX Runtime itself failed, its error.
#[cfg(feature = "ort")]
#[derive(Debug, Clone)]
struct OrtLoadFailure {
    action: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

#[cfg(feature = "ort")]
impl OrtLoadFailure {
    fn ort(action: String, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        OrtLoadFailure {
            action,
            source: Some(std::sync::Arc::new(source)),
        }
    }

    fn to_error(&self) -> Error {
        match &self.source {
            Some(source) => Error::backend("onnxruntime", self.action.clone(), source.clone()),
            None => Error::Library(self.action.clone()),
        }
    }
}

/// The process-wide ONNX Runtime environment (loading the library on first use).
#[cfg(feature = "ort")]
pub(crate) fn ort_environment() -> Result<&'static (PathBuf, ort::environment::Environment)> {
    use std::sync::OnceLock;
    type Loaded = std::result::Result<(PathBuf, ort::environment::Environment), OrtLoadFailure>;
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = ort_library_path().map_err(|e| OrtLoadFailure {
                action: e.to_string(),
                source: None,
            })?;
            let builder = ort::init_from(&path).map_err(|e| {
                let action = format!("cannot load {} ({SETUP_HINT})", path.display());
                OrtLoadFailure::ort(action, e)
            })?;
            let env = builder.with_name("cbqa").build().map_err(|e| {
                OrtLoadFailure::ort("cannot create the ONNX Runtime environment".into(), e)
            })?;
            Ok((path, env))
        })
        .as_ref()
        .map_err(OrtLoadFailure::to_error)
}

/// Load libtorch's CUDA support (`libtorch_cuda.so` and the CUDA libraries it needs), once.
///
/// It is not linked into the binary (see `build.rs`): libtorch registers its CUDA backend when
/// the library is loaded, so loading it here, before the first CUDA call, is what makes
/// `tch::Cuda::is_available()` true on a GPU machine. The library is looked up in the libtorch
/// the binary was built against, then through the dynamic loader's search path. An error says
/// what was tried: a CPU-only torch has no `libtorch_cuda.so`.
#[cfg(feature = "train")]
pub(crate) fn torch_cuda() -> std::result::Result<&'static Path, String> {
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

/// The CPU features that decide how ONNX Runtime multiplies uint8 activations by int8 weights
/// (`MatMulInteger`, `DynamicQuantizeMatMul`). MLAS picks, in order: AMX, AVX-512 VNNI, AVX-VNNI
/// (`vpdpbusd`: four products summed straight into int32, exact), else AVX-512BW or AVX2
/// (`vpmaddubsw`: each adjacent pair of products is summed into a saturating int16 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuInt8 {
    /// `model name` from /proc/cpuinfo (empty where there is none).
    pub model: String,
    /// The detected features among avx2, avx512bw, avx512vnni, avxvnni.
    pub features: Vec<&'static str>,
    /// Whether the u8 x s8 GEMM sums exactly (VNNI, or not an x86 CPU).
    pub exact_sums: bool,
}

/// `model name` from /proc/cpuinfo, where there is one.
pub(crate) fn cpu_model() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    })
}

/// What this CPU offers for integer GEMMs (see [`CpuInt8`]).
pub(crate) fn cpu_int8() -> CpuInt8 {
    let model = cpu_model().unwrap_or_default();
    #[cfg(target_arch = "x86_64")]
    {
        let detected = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ];
        let features: Vec<&'static str> = detected
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        let exact_sums = features.iter().any(|f| f.ends_with("vnni"));
        CpuInt8 {
            model,
            features,
            exact_sums,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    CpuInt8 {
        model,
        features: Vec::new(),
        exact_sums: true,
    }
}

/// One line on the integer GEMM ONNX Runtime runs here. Public for `cbqa doctor` and the tests that
/// name the CPU when an int8 result differs; validation reports use it too.
pub fn int8_kernel_summary() -> String {
    let c = cpu_int8();
    let kernel = if !cfg!(target_arch = "x86_64") {
        "not x86: ONNX Runtime's integer kernels sum exactly"
    } else if c.exact_sums {
        "u8s8 GEMM with VNNI (exact int32 sums)"
    } else {
        "u8s8 GEMM with vpmaddubsw (int16 pair sums saturate above 32767; cbqa's 7-bit int8 \
         weights stay below)"
    };
    let features = if c.features.is_empty() {
        "none".to_string()
    } else {
        c.features.join(" ")
    };
    format!("{} [{features}]: {kernel}", c.model)
}

/// Versions and locations of the native parts. Public for `cbqa doctor`; bench reports use it too.
pub fn report() -> Vec<(String, String)> {
    let mut rows = vec![
        ("cbqa".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("cpu (int8)".to_string(), int8_kernel_summary()),
    ];
    #[cfg(feature = "train")]
    {
        rows.push(("libtorch".into(), "linked (tch 0.24, torch 2.11.0)".into()));
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
        Err(e) => rows.push(("onnxruntime".into(), format!("error: {}", with_causes(&e)))),
    }
    #[cfg(feature = "tract")]
    rows.push(("tract".into(), "tract-onnx 0.23 (built in)".into()));
    rows
}

/// An error's message followed by those of its causes, `: `-separated.
#[cfg(feature = "ort")]
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
