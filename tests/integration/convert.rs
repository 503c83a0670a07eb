//! Flax checkpoints (tests/fixtures/flax, made by scripts/make_flax_checkpoint.py with
//! transformers' FlaxT5) read bit for bit as the safetensors fixtures; which format a directory's
//! weights are read from; `cbqa convert` of pickle, Flax and Mesh-TF directories loaded by
//! transformers with the same weights and token ids; and the other commands on these directories.

use crate::common::{assert_same_export, copy_dir, data_dir, fixture, run_cbqa, run_python};
use crate::pickle::pickles;
use cbqa::checkpoint::expected_tensors;
use cbqa::generate::generate;
use cbqa::runtime::OnnxDir;
use cbqa::ModelDir;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// The Flax fixtures: directory, the fixture it was made from, whether it holds bf16.
const FLAX: [(&str, &str, bool); 4] = [
    ("t5_v1_0", "t5_v1_0", false),
    ("t5_v1_1", "t5_v1_1", false),
    ("t5_v1_0_chunked", "t5_v1_0", false),
    ("t5_v1_1_bf16_sharded", "t5_v1_1", true),
];

fn flax(name: &str) -> PathBuf {
    fixture("flax").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fixture values in bf16, rounded to nearest even as jax's astype (and torch's .to) round.
fn to_bf16_bytes(f32_bytes: &[u8]) -> Vec<u8> {
    f32_bytes
        .chunks_exact(4)
        .flat_map(|c| half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect()
}

#[test]
fn flax_checkpoints_equal_the_safetensors_fixtures_bit_for_bit() {
    for (name, source, bf16) in FLAX {
        let reference = ModelDir::open(&fixture(source)).unwrap();
        let m = ModelDir::open(&flax(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.weights.format(), "flax", "{name}");
        assert_eq!(
            m.weights.files().count() > 1,
            name.ends_with("sharded"),
            "{name}"
        );
        assert!(
            m.weights.unexpected.is_empty(),
            "{name}: {:?}",
            m.weights.unexpected
        );
        let specs = expected_tensors(&m.config);
        assert_eq!(m.weights.names().count(), specs.len(), "{name}");
        for spec in specs {
            let want = reference.weights.raw(&spec.name).unwrap();
            let got = m.weights.raw(&spec.name).unwrap();
            assert_eq!(got.shape, want.shape, "{name} {}", spec.name);
            let (dtype, bytes) = if bf16 {
                (Dtype::BF16, to_bf16_bytes(want.bytes))
            } else {
                (Dtype::F32, want.bytes.to_vec())
            };
            assert_eq!(got.dtype, dtype, "{name} {}", spec.name);
            assert!(got.bytes == bytes, "{name}: tensor {} differs", spec.name);
        }
    }
}

#[test]
fn safetensors_is_read_before_the_pickle_before_flax() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(&flax("t5_v1_0"), dir);
    std::fs::copy(
        pickles("t5_v1_0").join("zip").join("pytorch_model.bin"),
        dir.join("pytorch_model.bin"),
    )
    .unwrap();
    std::fs::copy(
        fixture("t5_v1_0").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    copy_dir(&fixture("tf_bundle").join("t5_v1_0"), dir);
    for (format, then_remove) in [
        ("safetensors", "model.safetensors"),
        ("pytorch", "pytorch_model.bin"),
        ("flax", "flax_model.msgpack"),
        ("tensorflow-bundle", "model.ckpt-1000.index"),
    ] {
        let m = ModelDir::open(dir).unwrap();
        assert_eq!(m.weights.format(), format);
        let (ok, out, err) = run_cbqa(&["inspect", s(dir), "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["weights_format"], format, "{out}");
        std::fs::remove_file(dir.join(then_remove)).unwrap();
    }
    // A directory with no weights at all names every file it looked for.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("t5_v1_0").join(f), empty.join(f)).unwrap();
    }
    let e = ModelDir::open(&empty).err().expect("no weights");
    let msg = e.to_string();
    assert!(
        msg.contains("pytorch_model.bin.index.json")
            && msg.contains("flax_model.msgpack.index.json")
            && msg.contains("model.ckpt-N.index"),
        "{e}"
    );
}

#[test]
fn a_broken_flax_file_is_a_clear_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&flax("t5_v1_1"), tmp.path());
    let file = tmp.path().join("flax_model.msgpack");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = ModelDir::open(tmp.path())
        .err()
        .expect("a truncated file opened");
    match &e {
        cbqa::Error::Checkpoint { path, msg } => {
            assert_eq!(path, &file);
            assert!(msg.contains("truncated"), "{msg}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// `cbqa convert` of `src` into `out`; panics with stderr on failure.
fn convert(src: &Path, out: &Path) -> String {
    let (ok, stdout, err) = run_cbqa(&["convert", "--model", s(src), "--out", s(out)]);
    assert!(ok, "convert {}: {err}", src.display());
    stdout
}

#[test]
fn converted_directories_load_in_transformers_bit_for_bit_with_the_same_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let questions = data_dir().join("nq-open").join("NQ-open.dev.jsonl");
    let mut jobs = Vec::new();
    // (source directory, reference safetensors, cast)
    let mut sources: Vec<(PathBuf, PathBuf, Option<&str>)> = Vec::new();
    for name in ["t5_v1_0", "t5_v1_1"] {
        let p = pickles(name);
        for variant in ["zip", "shard", "legacy"] {
            sources.push((
                p.join(variant),
                fixture(name).join("model.safetensors"),
                None,
            ));
        }
        sources.push((p.join("bf16"), p.join("bf16_reference.safetensors"), None));
    }
    for (name, source, bf16) in FLAX {
        let cast = bf16.then_some("bfloat16");
        sources.push((flax(name), fixture(source).join("model.safetensors"), cast));
    }
    // A Mesh-TF bundle with its operative_config.gin and no config.json, plus the tokenizer.
    let tf = tmp.path().join("tf");
    copy_dir(&fixture("tf_bundle").join("t5_v1_1"), &tf);
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture("t5_v1_1").join(f), tf.join(f)).unwrap();
    }
    assert!(!tf.join("config.json").exists());
    sources.push((tf, fixture("t5_v1_1").join("model.safetensors"), None));
    for (i, (src, reference, cast)) in sources.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let printed = convert(src, &out);
        assert!(
            printed.contains("tensors in model.safetensors"),
            "{printed}"
        );
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "special_tokens_map.json",
                "tokenizer.json",
                "tokenizer_config.json"
            ],
            "{}",
            src.display()
        );
        // cbqa reads the result as the source, tensor for tensor.
        let a = ModelDir::open(src).unwrap();
        let b = ModelDir::open(&out).unwrap();
        assert_eq!(b.weights.format(), "safetensors");
        for spec in expected_tensors(&a.config) {
            let (x, y) = (
                a.weights.raw(&spec.name).unwrap(),
                b.weights.raw(&spec.name).unwrap(),
            );
            assert!(
                x.dtype == y.dtype && x.shape == y.shape && x.bytes == y.bytes,
                "{}",
                spec.name
            );
        }
        jobs.push(serde_json::json!({"out": out, "reference": reference, "cast": cast}));
        jobs.push(serde_json::json!({
            "out": out, "source": src, "questions": questions, "limit": 300,
        }));
    }
    let job_file = tmp.path().join("jobs.json");
    std::fs::write(&job_file, serde_json::to_string(&jobs).unwrap()).unwrap();
    let done: Vec<serde_json::Value> =
        serde_json::from_str(&run_python("convert_check.py", &[s(&job_file)])).unwrap();
    assert_eq!(done.len(), jobs.len());
    for d in &done {
        if let Some(n) = d.get("tensors") {
            assert!(n.as_u64().unwrap() >= 60, "{d}");
        } else {
            assert_eq!(d["questions"], 300, "{d}");
        }
    }
}

#[test]
fn a_spiece_model_directory_converts_to_the_tokenizer_json_transformers_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let questions = data_dir().join("nq-open").join("NQ-open.dev.jsonl");
    let text = std::fs::read_to_string(&questions).unwrap();
    let texts: Vec<String> = text
        .lines()
        .take(2000)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["question"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let texts_file = tmp.path().join("texts.json");
    std::fs::write(&texts_file, serde_json::to_string(&texts).unwrap()).unwrap();
    let trained = tmp.path().join("spiece");
    // 300 pieces + 100 sentinels: the fixtures' vocabulary size.
    run_python(
        "make_spiece_fixture.py",
        &["train", s(&texts_file), "300", "100", "0.99", s(&trained)],
    );
    let src = tmp.path().join("src");
    copy_dir(&fixture("t5_v1_0"), &src);
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    copy_dir(&trained.join("legacy"), &src);
    let out = tmp.path().join("out");
    convert(&src, &out);
    assert!(out.join("tokenizer.json").exists() && out.join("spiece.model").exists());
    let jobs = serde_json::json!([
        {"out": out, "source": src, "questions": questions, "limit": 300},
        {"out": out, "reference": fixture("t5_v1_0").join("model.safetensors"), "cast": null},
    ]);
    let job_file = tmp.path().join("jobs.json");
    std::fs::write(&job_file, jobs.to_string()).unwrap();
    let done: serde_json::Value =
        serde_json::from_str(&run_python("convert_check.py", &[s(&job_file)])).unwrap();
    assert_eq!(done[0]["questions"], 300, "{done}");
    assert!(done[1]["tensors"].as_u64().unwrap() >= 60, "{done}");
}

#[test]
fn convert_refuses_a_non_empty_out_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep me").unwrap();
    let (ok, _, err) = run_cbqa(&["convert", "--model", s(&flax("t5_v1_0")), "--out", s(&out)]);
    assert!(!ok);
    assert!(
        err.contains("exists and is not empty; pass --force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "keep me"
    );
    // --force replaces it with the complete conversion.
    let (ok, _, err) = run_cbqa(&[
        "convert",
        "--model",
        s(&flax("t5_v1_0")),
        "--out",
        s(&out),
        "--force",
    ]);
    assert!(ok, "{err}");
    assert!(out.join("model.safetensors").exists() && !out.join("mine.txt").exists());
    // A source that cannot be read leaves no directory and no temporary one behind.
    let bad = tmp.path().join("bad");
    let (ok, _, err) = run_cbqa(&[
        "convert",
        "--model",
        s(&pickles("t5_v1_0").join("int64")),
        "--out",
        s(&bad),
    ]);
    assert!(!ok);
    assert!(err.contains("is int64 (LongStorage)"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["out"], "{left:?}");
}

#[test]
fn inspect_names_the_flax_format_and_its_shards() {
    let dir = flax("t5_v1_1_bf16_sharded");
    let (ok, out, err) = run_cbqa(&["inspect", s(&dir)]);
    assert!(ok, "{err}");
    assert!(out.contains("\"flax\""), "{out}");
    assert!(out.contains("flax_model-00005-of-00005.msgpack"), "{out}");
    assert!(out.contains("BF16"), "{out}");
}

/// `cbqa export --no-validate` of `src` into `out`.
fn export(src: &Path, out: &Path) {
    let (ok, _, err) = run_cbqa(&[
        "export",
        "--model",
        s(src),
        "--out",
        s(out),
        "--no-validate",
    ]);
    assert!(ok, "export {}: {err}", src.display());
}

#[test]
fn exports_of_pickle_and_flax_directories_answer_as_transformers_does() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["t5_v1_0", "t5_v1_1"] {
        let src = pickles(name).join("zip");
        let out = tmp.path().join(name);
        export(&src, &out);
        let reference = fixture(name).join("reference.safetensors");
        let job_file = tmp.path().join(format!("{name}.json"));
        let job = serde_json::json!([{"greedy": src, "reference": reference}]);
        std::fs::write(&job_file, job.to_string()).unwrap();
        let done: serde_json::Value =
            serde_json::from_str(&run_python("convert_check.py", &[s(&job_file)])).unwrap();
        let want: Vec<Vec<u32>> = done[0]["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                // Drop the decoder start token; stop after EOS (transformers pads after it).
                let ids: Vec<u32> = row.as_array().unwrap()[1..]
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect();
                let end = ids
                    .iter()
                    .position(|&t| t == 1)
                    .map_or(ids.len(), |p| p + 1);
                ids[..end].to_vec()
            })
            .collect();
        let r = crate::runtime::reference(name);
        let backend = cbqa::runtime::ort::OrtSeq2Seq::load(
            &OnnxDir::open(&out).unwrap(),
            &Default::default(),
        )
        .unwrap();
        let got = generate(&backend, &r.input, &crate::runtime::greedy_opts()).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                &g[0].tokens, w,
                "{name}: greedy row {i} differs from transformers"
            );
        }
        // The Flax directory exports to the same ONNX bytes as the safetensors fixture.
        let out = tmp.path().join(format!("{name}-exports"));
        assert_same_export(&fixture(name), &flax(name), &out, &format!("{name} Flax"));
    }
}

/// The other commands on a pickle directory (libtorch: feature `train`).
#[cfg(feature = "train")]
mod tch {
    use super::*;
    use crate::common::root;

    #[test]
    fn train_on_a_pickle_directory_writes_safetensors_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let data = root().join("eval/demo/nq-open-200.jsonl");
        let (ok, _, err) = run_cbqa(&[
            "train",
            "--model",
            s(&pickles("t5_v1_1").join("legacy")),
            "--train",
            s(&data),
            "--out",
            s(&run),
            "--device",
            "cpu",
            "--batch-tokens",
            "200",
            "--micro-batch-tokens",
            "120",
            "--threads",
            "1",
            "--max-steps",
            "2",
        ]);
        assert!(ok, "{err}");
        let ckpt = run.join("checkpoint-2");
        for f in ["model.safetensors", "tokenizer.json", "config.json"] {
            assert!(ckpt.join(f).exists(), "{} lacks {f}", ckpt.display());
        }
        let m = ModelDir::open(&ckpt).unwrap();
        assert_eq!(m.weights.format(), "safetensors");
        let before = ModelDir::open(&fixture("t5_v1_1")).unwrap();
        assert!(
            m.weights.raw("shared.weight").unwrap().bytes
                != before.weights.raw("shared.weight").unwrap().bytes,
            "two training steps left the embeddings unchanged"
        );
    }

    #[test]
    fn bench_with_tch_measures_a_pickle_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("bench");
        let (ok, stdout, err) = run_cbqa(&[
            "bench",
            "--model",
            s(&pickles("t5_v1_1").join("shard")),
            "--backends",
            "tch",
            "--batch-sizes",
            "1,4",
            "--threads",
            "1",
            "--questions",
            "4",
            "--force-steps",
            "3",
            "--out",
            s(&out),
        ]);
        assert!(ok, "{err}");
        assert!(stdout.contains("cbqa-tch"), "{stdout}");
        let mut r = csv::Reader::from_path(out.join("bench.csv")).unwrap();
        let h = r.headers().unwrap().clone();
        let col = |n: &str| h.iter().position(|x| x == n).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 2, "1 engine x 2 batch sizes");
        for row in &rows {
            assert_eq!(&row[col("questions")], "4");
            assert_eq!(&row[col("generated_tokens")], "12");
            assert_eq!(&row[col("precision")], "fp32");
        }
        // tch measures a checkpoint, ort and tract an export: not both in one run.
        let (ok, _, err) = run_cbqa(&[
            "bench",
            "--model",
            s(&pickles("t5_v1_1").join("shard")),
            "--backends",
            "tch,ort",
            "--out",
            s(&out),
        ]);
        assert!(!ok);
        assert!(err.contains("bench them in separate runs"), "{err}");
    }

    #[test]
    fn eval_with_tch_on_a_pickle_directory_equals_the_safetensors_fixture() {
        let tmp = tempfile::tempdir().unwrap();
        let data = root().join("eval/demo/nq-open-200.jsonl");
        let predictions = |model: &Path, out: &Path| {
            let (ok, _, err) = run_cbqa(&[
                "eval",
                "--backend",
                "tch",
                "--model",
                s(model),
                "--data",
                s(&data),
                "--limit",
                "8",
                "--out",
                s(out),
            ]);
            assert!(ok, "{}: {err}", model.display());
            let mut r = csv::Reader::from_path(out.join("predictions.csv")).unwrap();
            let h = r.headers().unwrap().clone();
            let p = h.iter().position(|x| x == "prediction").unwrap();
            r.records()
                .map(|x| x.unwrap()[p].to_string())
                .collect::<Vec<_>>()
        };
        let want = predictions(&fixture("t5_v1_0"), &tmp.path().join("st"));
        assert_eq!(want.len(), 8);
        for variant in ["zip", "shard"] {
            let got = predictions(&pickles("t5_v1_0").join(variant), &tmp.path().join(variant));
            assert_eq!(got, want, "{variant}");
        }
    }
}
