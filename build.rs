//! Makes the binary find its native libraries by itself.
//!
//! * libtorch (feature `train`): torch-sys links against `$LIBTORCH/lib` (set by
//!   `.cargo/config.toml` to the venv's torch); here we add an rpath to that directory so the
//!   binary runs without LD_LIBRARY_PATH, and record the directory (`CBQA_LIBTORCH_LIB`) so that
//!   `libtorch_cuda.so` can be loaded at run time when a CUDA device is asked for
//!   ([`cbqa::native::torch_cuda`]). It is deliberately not linked: nothing in the Rust code
//!   references its symbols, and loading it with its CUDA libraries at every start cost 500 MB of
//!   resident memory and 0.37 s even for `cbqa --version`.
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
                "LIBTORCH is not set: run scripts/setup.sh (it installs torch==2.11.0 into .venv), \
                 or set LIBTORCH to a libtorch 2.11.0 directory"
            )
        });
        let lib = libtorch.join("lib");
        if !lib.join("libtorch_cpu.so").exists() {
            panic!(
                "libtorch not found at {} (no libtorch_cpu.so): run scripts/setup.sh, which installs \
                 torch==2.11.0 into .venv, or build with --no-default-features --features ort,tract \
                 for an inference-only binary",
                lib.display()
            );
        }
        // Resolve the link so the rpath survives the venv link being re-pointed.
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-env=CBQA_LIBTORCH_LIB={}", lib.display());
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
    for file in git_files_naming_head() {
        println!("cargo:rerun-if-changed={file}");
    }

    if env::var_os("CARGO_FEATURE_ORT").is_some() {
        let default = venv
            .map(|v| v.join("libonnxruntime.so"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("cargo:rustc-env=CBQA_DEFAULT_ORT_DYLIB={default}");
    }
}

/// The files whose change moves HEAD: HEAD itself, the branch it points to, and packed-refs
/// (watching HEAD alone misses every commit on a branch, which stamps binaries with an old commit).
/// Paths come from git, so a worktree (where `.git` is a file) works too.
fn git_files_naming_head() -> Vec<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    refs.iter()
        .filter_map(|r| git(&["rev-parse", "--path-format=absolute", "--git-path", r]))
        // A watched file that does not exist would rerun this script on every build.
        .filter(|p| std::path::Path::new(p).exists())
        .collect()
}
