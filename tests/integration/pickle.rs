//! PyTorch pickle checkpoints (`pytorch_model.bin`) made by the real tools from the committed
//! fixtures (scripts/make_pickle_checkpoints.py: transformers' `save_pretrained` with
//! `safe_serialization=False`, sharded, bf16, fp16; `torch.save` in the zip and the legacy
//! format) read bit for bit as the safetensors fixtures, and hostile or broken files refused
//! with the file named.

use crate::common::{assert_same_export, copy_dir, fixture, root, run_cbqa, run_python};
use cbqa::checkpoint::expected_tensors;
use cbqa::{Error, ModelDir};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

const FIXTURES: [&str; 2] = ["t5_v1_0", "t5_v1_1"];

/// The pickle directories made from fixture `name`, once per test run, under target/.
pub fn pickles(name: &str) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(d) = made.get(name) {
        return d.clone();
    }
    // Beside optimum_export's exports; remade on every run (the script is the fixture).
    let out = root().join("target").join("test-pickles").join(name);
    let _ = std::fs::remove_dir_all(&out);
    run_python(
        "make_pickle_checkpoints.py",
        &[fixture(name).to_str().unwrap(), out.to_str().unwrap()],
    );
    made.insert(name.to_string(), out.clone());
    out
}

fn open_err(dir: &Path) -> Error {
    match ModelDir::open(dir) {
        Ok(_) => panic!("{} opened, expected an error", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn pickle_checkpoints_equal_the_safetensors_fixtures_bit_for_bit() {
    for name in FIXTURES {
        let reference = ModelDir::open(&fixture(name)).unwrap();
        assert_eq!(reference.weights.format(), "safetensors");
        // offset: torch.save of a state dict whose shared.weight starts 7 elements into its
        // storage; legacy: the pre-1.6 format; params: nn.Parameter values; attrs: tensors
        // rebuilt through _rebuild_from_type_v2.
        for variant in ["zip", "shard", "offset", "legacy", "params", "attrs"] {
            let dir = pickles(name).join(variant);
            let m = ModelDir::open(&dir).unwrap_or_else(|e| panic!("{name}/{variant}: {e}"));
            assert_eq!(m.weights.format(), "pytorch");
            let files = m.weights.files().count();
            if variant == "shard" {
                assert!(files > 1, "{name}: sharded checkpoint read as {files} file");
            } else {
                assert_eq!(files, 1);
            }
            let specs = expected_tensors(&m.config);
            assert!(specs.len() > 10);
            for spec in specs {
                let a = reference.weights.raw(&spec.name).unwrap();
                let b = m.weights.raw(&spec.name).unwrap();
                assert_eq!(
                    b.dtype,
                    safetensors::Dtype::F32,
                    "{name}/{variant} {}",
                    spec.name
                );
                assert_eq!(a.shape, b.shape, "{name}/{variant} {}", spec.name);
                assert!(
                    a.bytes == b.bytes,
                    "{name}/{variant}: tensor {} differs from the safetensors fixture",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn bf16_and_fp16_pickles_hold_torchs_own_values() {
    for (name, (tag, dtype)) in FIXTURES.into_iter().flat_map(|n| {
        [
            ("bf16", safetensors::Dtype::BF16),
            ("fp16", safetensors::Dtype::F16),
        ]
        .map(|t| (n, t))
    }) {
        let out = pickles(name);
        let m = ModelDir::open(&out.join(tag)).unwrap();
        assert_eq!(m.weights.dtype(), dtype);
        let bytes = std::fs::read(out.join(format!("{tag}_reference.safetensors"))).unwrap();
        let reference = SafeTensors::deserialize(&bytes).unwrap();
        for spec in expected_tensors(&m.config) {
            let want = reference.tensor(&spec.name).unwrap();
            let got = m.weights.raw(&spec.name).unwrap();
            assert_eq!(got.dtype, dtype, "{name} {}", spec.name);
            assert_eq!(got.shape, want.shape(), "{name} {}", spec.name);
            assert!(
                got.bytes == want.data(),
                "{name}: {tag} tensor {} differs from torch's",
                spec.name
            );
        }
    }
}

#[test]
fn export_of_a_pickle_directory_writes_the_same_onnx_as_of_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let what = format!("{name} pickle");
        let zip = pickles(name).join("zip");
        assert_same_export(&fixture(name), &zip, &tmp.path().join(name), &what);
    }
}

#[test]
fn inspect_says_which_files_were_read() {
    let dir = pickles("t5_v1_0").join("shard");
    let (ok, out, err) = run_cbqa(&["inspect", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"pytorch\""), "{out}");
    assert!(out.contains("pytorch_model-00001-of-"), "{out}");
}

#[test]
fn a_pickle_naming_os_system_is_refused_by_name_and_nothing_runs() {
    let out = pickles("t5_v1_0");
    let dir = out.join("evil");
    let e = open_err(&dir);
    let msg = e.to_string();
    assert!(
        matches!(&e, Error::Checkpoint { path, .. } if path == &dir.join("pytorch_model.bin")),
        "{e:?}"
    );
    // os.system pickles as posix.system on Linux.
    assert!(msg.contains("refused global `posix.system`"), "{msg}");
    // The script proved the payload runs under pickle.loads, then removed its marker.
    assert!(
        !out.join("evil_ran").exists(),
        "the os.system payload ran: {} exists",
        out.join("evil_ran").display()
    );
}

#[test]
fn broken_archives_are_clear_errors_naming_the_file() {
    let out = pickles("t5_v1_0");
    let file = |d: &str| out.join(d).join("pytorch_model.bin");

    let e = open_err(&out.join("truncated"));
    assert!(
        matches!(&e, Error::Checkpoint { path, msg } if path == &file("truncated") && msg.contains("truncated")),
        "{e:?}"
    );

    let e = open_err(&out.join("short"));
    match &e {
        Error::Tensor { path, name, msg } => {
            assert_eq!(path, &file("short"));
            assert!(!name.is_empty());
            assert!(
                msg.contains("storage `0`") && msg.contains("holds 4 bytes"),
                "{msg}"
            );
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }

    let e = open_err(&out.join("strided"));
    match &e {
        Error::Tensor { path, name, msg } => {
            assert_eq!(path, &file("strided"));
            assert_eq!(name, "shared.weight");
            assert!(msg.contains("not contiguous"), "{msg}");
            // torch's transposed view: expected stride 1 in the last dimension, found 400.
            assert!(msg.contains("has stride 400, expected 1"), "{msg}");
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }

    let e = open_err(&out.join("legacy_cut"));
    assert!(
        matches!(&e, Error::Checkpoint { path, msg } if path == &file("legacy_cut") && msg.contains("truncated file")),
        "{e:?}"
    );
    let e = open_err(&out.join("legacy_nocount"));
    assert!(
        matches!(&e, Error::Checkpoint { path, msg } if path == &file("legacy_nocount") && msg.contains("its element count is missing")),
        "{e:?}"
    );

    let e = open_err(&out.join("hugelen"));
    assert!(
        matches!(&e, Error::Checkpoint { path, msg } if path == &file("hugelen") && msg.contains("declared length 4294967280")),
        "{e:?}"
    );
}

#[test]
fn integer_and_double_weights_are_refused_by_dtype_and_storage_class() {
    let out = pickles("t5_v1_0");
    for (variant, want) in [
        (
            "int64",
            "is int64 (LongStorage); a T5 state dict holds float32/float16/bfloat16",
        ),
        (
            "float64",
            "is float64 (DoubleStorage); a T5 state dict holds float32/float16/bfloat16",
        ),
    ] {
        match open_err(&out.join(variant)) {
            Error::Tensor { path, name, msg } => {
                assert_eq!(path, out.join(variant).join("pytorch_model.bin"));
                assert_eq!(name, "shared.weight");
                assert!(msg.contains(want), "{variant}: {msg}");
            }
            other => panic!("{variant}: expected a tensor error, got {other:?}"),
        }
    }
}

#[test]
fn non_float_tensors_transformers_ignores_are_skipped() {
    let reference = ModelDir::open(&fixture("t5_v1_0")).unwrap();
    let m = ModelDir::open(&pickles("t5_v1_0").join("extra_int")).unwrap();
    let extra = ["decoder.causal_mask", "encoder.position_ids"];
    assert_eq!(m.weights.unexpected, extra);
    assert!(m.weights.names().all(|n| !extra.contains(&n)));
    for spec in expected_tensors(&m.config) {
        assert!(
            m.weights.raw(&spec.name).unwrap().bytes
                == reference.weights.raw(&spec.name).unwrap().bytes,
            "{}",
            spec.name
        );
    }
}

#[test]
fn a_shard_missing_from_the_index_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&pickles("t5_v1_0").join("shard"), tmp.path());
    let gone = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().contains("pytorch_model-00002-of-"))
        .expect("a second shard");
    std::fs::remove_file(&gone).unwrap();
    let e = open_err(tmp.path());
    assert!(e.to_string().contains(&*gone.to_string_lossy()), "{e}");
}

#[cfg(feature = "train")]
#[test]
fn predict_with_the_tch_backend_answers_alike_from_pickle_and_safetensors() {
    let name = "t5_v1_1";
    let answer = |dir: &Path| {
        let (ok, out, err) = run_cbqa(&[
            "predict",
            "--backend",
            "tch",
            "--format",
            "jsonl",
            "--model",
            dir.to_str().unwrap(),
            "who wrote hamlet",
            "when did the first world war begin",
        ]);
        assert!(ok, "{}: {err}", dir.display());
        assert_eq!(out.lines().count(), 2, "{out}");
        out
    };
    let want = answer(&fixture(name));
    for variant in ["zip", "legacy", "shard"] {
        assert_eq!(answer(&pickles(name).join(variant)), want, "{variant}");
    }
}
