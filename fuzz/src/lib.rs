//! The fuzz targets' shared driver; the entry functions are in `entries.rs`, which the main
//! crate's integration tests include too (`tests/integration/reliability.rs` replays the committed
//! corpora through them).

#[path = "entries.rs"]
mod entries;

pub use entries::{run, Target, TARGETS};

use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process (in /dev/shm when there is one).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("cbqa-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
        dir
    })
}

/// Where the fixtures are: the main crate's `tests/fixtures`, and the ONNX export the
/// `onnx_dir` target copies its graphs from (`CBQA_FUZZ_EXPORT`, made by scripts/fuzz.sh).
fn inputs() -> &'static entries::Inputs {
    static INPUTS: OnceLock<entries::Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        entries::Inputs {
            fixtures: root.join("tests").join("fixtures"),
            export: std::env::var_os("CBQA_FUZZ_EXPORT").map(PathBuf::from),
        }
    })
}

/// Feed `data` to `target`'s reader; a panic (or a sanitizer report) is the finding.
pub fn fuzz(target: Target, data: &[u8]) {
    run(target, data, scratch(), inputs());
}
