//! Makes the binary find its native libraries by itself.
//!
//! * libtorch (feature `train`): torch-sys links against `$LIBTORCH/lib` (set by
//!   `.cargo/config.toml` to the venv's torch); here we add an rpath to that directory so the
//!   binary runs without LD_LIBRARY_PATH. On CUDA builds of torch we also force a DT_NEEDED entry
//!   for libtorch_cuda: nothing in the Rust code references its symbols, so with the linker's
//!   default `--as-needed` it would be dropped and `tch::Cuda::is_available()` would be false (the
//!   well-known tch pitfall). `-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed` keeps it.
//!   This CUDA branch cannot be exercised on CPU-only machines; it runs whenever the linked torch
//!   ships libtorch_cuda.so (the PyPI wheel does, so the flags are at least linked here).
//! * ONNX Runtime (feature `ort`, loaded with dlopen at run time): we record the venv's
//!   `libonnxruntime.so` as the default the binary tries after `ORT_DYLIB_PATH`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CBQA_VENV");
    let venv = env::var("CBQA_VENV").ok().map(PathBuf::from);

    if env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        let libtorch = env::var("LIBTORCH").map(PathBuf::from).unwrap_or_else(|_| {
            panic!(
                "LIBTORCH is not set: run scripts/setup.sh (it installs torch==2.13.0 into .venv), \
                 or set LIBTORCH to a libtorch 2.13.0 directory"
            )
        });
        let lib = libtorch.join("lib");
        if !lib.join("libtorch_cpu.so").exists() {
            panic!(
                "libtorch not found at {} (no libtorch_cpu.so): run scripts/setup.sh, which installs \
                 torch==2.13.0 into .venv, or build with --no-default-features --features ort,tract \
                 for an inference-only binary",
                lib.display()
            );
        }
        // Resolve the link so the rpath survives the venv link being re-pointed.
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-L{}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }

    // The commit this binary was built from, for result tables (empty outside a git checkout).
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=CBQA_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");

    if env::var_os("CARGO_FEATURE_ORT").is_some() {
        let default = venv
            .map(|v| v.join("libonnxruntime.so"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("cargo:rustc-env=CBQA_DEFAULT_ORT_DYLIB={default}");
    }
}
