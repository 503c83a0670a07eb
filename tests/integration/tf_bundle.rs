//! Mesh-TensorFlow T5 checkpoints (TF tensor bundles) written by TensorFlow's own Saver from the
//! committed HF fixtures (scripts/make_tf_checkpoint.py; tests/fixtures/tf_bundle/: t5_v1_0 in
//! one shard with `layer_norm` names, t5_v1_1 gated and untied in two shards with `rms_norm`
//! names, both with Adafactor slots and global_step) read bit for bit as the fixtures'
//! safetensors, their config derived from operative_config.gin, and broken bundles refused with
//! the file (and tensor) named.

use crate::common::{assert_same_export, copy_dir, fixture, run_cbqa};
use cbqa::checkpoint::tf_bundle::list_variables;
use cbqa::checkpoint::Weights;
use cbqa::{Error, ModelDir, T5Config};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// (HF fixture, its bundle's prefix, number of data shards).
const BUNDLES: [(&str, &str, usize); 2] = [
    ("t5_v1_0", "model.ckpt-1000", 1),
    ("t5_v1_1", "model.ckpt-2000", 2),
];

fn bundle(name: &str) -> PathBuf {
    fixture("tf_bundle").join(name)
}

/// A temporary copy of the bundle of `name` with the fixture's tokenizer.json (a Mesh-TF run
/// directory has none), and with its config.json when `with_json`.
fn model_dir(name: &str, with_json: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&bundle(name), tmp.path());
    std::fs::copy(
        fixture(name).join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    if with_json {
        std::fs::copy(
            fixture(name).join("config.json"),
            tmp.path().join("config.json"),
        )
        .unwrap();
    }
    tmp
}

fn open_err(dir: &Path) -> Error {
    match ModelDir::open(dir) {
        Ok(_) => panic!("{} opened, expected an error", dir.display()),
        Err(e) => e,
    }
}

/// Every tensor of the fixture's model.safetensors equals the bundle's, bit for bit.
fn assert_same_tensors(name: &str, weights: &Weights) {
    let bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = reference.names().into_iter().map(String::from).collect();
    names.sort();
    let mut ours: Vec<&str> = weights.names().collect();
    ours.sort();
    assert_eq!(ours, names, "{name}: tensor names");
    for n in &names {
        let want = reference.tensor(n).unwrap();
        let got = weights.raw(n).unwrap();
        assert_eq!(got.shape, want.shape(), "{name}: {n} shape");
        assert_eq!(format!("{:?}", got.dtype), "F32", "{name}: {n} dtype");
        assert!(
            got.bytes == want.data(),
            "{name}: {n} differs from the safetensors fixture"
        );
    }
}

#[test]
fn bundles_equal_the_safetensors_fixtures_bit_for_bit() {
    for (name, prefix, shards) in BUNDLES {
        for with_json in [true, false] {
            let dir = model_dir(name, with_json);
            let m = ModelDir::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.weights.format(), "tensorflow-bundle");
            let files: Vec<String> = m
                .weights
                .files()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            let mut expected = vec![format!("{prefix}.index")];
            expected.extend((0..shards).map(|i| format!("{prefix}.data-{i:05}-of-{shards:05}")));
            assert_eq!(files, expected, "{name}");
            // global_step and the Adafactor slots are skipped, nothing else is left over.
            assert!(
                m.weights.unexpected.is_empty(),
                "{name}: {:?}",
                m.weights.unexpected
            );
            assert_same_tensors(name, &m.weights);
        }
    }
}

#[test]
fn optimizer_slots_and_global_step_are_in_the_bundle_and_skipped() {
    for (name, prefix, _) in BUNDLES {
        let vars = list_variables(&bundle(name).join(prefix)).unwrap();
        let step = vars.iter().find(|v| v.name == "global_step").unwrap();
        assert_eq!(step.dtype, "DT_INT64");
        assert!(
            vars.iter().filter(|v| v.name.contains("_slot_")).count() >= 3,
            "{name}"
        );
        let q = vars
            .iter()
            .find(|v| v.name == "encoder/block_000/layer_000/SelfAttention/q")
            .unwrap();
        // TF's [in, out] layout: [d_model, heads * d_kv].
        let cfg = T5Config::from_file(&fixture(name).join("config.json")).unwrap();
        assert_eq!(q.shape, vec![cfg.d_model as i64, cfg.inner_dim() as i64]);
    }
}

#[test]
fn config_from_operative_gin_equals_config_json() {
    for (name, _, _) in BUNDLES {
        let dir = model_dir(name, false);
        let got = ModelDir::open(dir.path()).unwrap().config;
        let want = T5Config::from_file(&fixture(name).join("config.json")).unwrap();
        assert_eq!(
            (
                got.vocab_size,
                got.d_model,
                got.d_kv,
                got.d_ff,
                got.num_heads
            ),
            (
                want.vocab_size,
                want.d_model,
                want.d_kv,
                want.d_ff,
                want.num_heads
            ),
            "{name}"
        );
        assert_eq!(
            (
                got.num_layers,
                got.decoder_layers(),
                got.relative_attention_num_buckets
            ),
            (
                want.num_layers,
                want.decoder_layers(),
                want.relative_attention_num_buckets
            ),
            "{name}"
        );
        assert_eq!(got.feed_forward_proj, want.feed_forward_proj, "{name}");
        assert_eq!(got.tie_word_embeddings, want.tie_word_embeddings, "{name}");
        assert_eq!(
            (got.dropout_rate, got.layer_norm_epsilon),
            (want.dropout_rate, want.layer_norm_epsilon),
            "{name}"
        );
        assert_eq!(
            (got.pad_id(), got.eos_id(), got.decoder_start_id()),
            (want.pad_id(), want.eos_id(), want.decoder_start_id()),
            "{name}"
        );
        // Mesh-TF's relative position buckets always span 128 positions (no gin binding).
        assert_eq!(got.relative_attention_max_distance, 128, "{name}");
    }
}

#[test]
fn inspect_prints_the_format_and_files() {
    let dir = model_dir("t5_v1_1", false);
    let (ok, out, err) = run_cbqa(&["inspect", dir.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"tensorflow-bundle\""), "{out}");
    assert!(out.contains("model.ckpt-2000.index"), "{out}");
    assert!(out.contains("model.ckpt-2000.data-00001-of-00002"), "{out}");
    assert!(out.contains("gated-gelu"), "{out}");
}

/// Copy the bundle files of `dir` from step `from` to step `to`.
fn copy_step(dir: &Path, from: &str, to: &str) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(from) {
            std::fs::copy(e.path(), dir.join(format!("{to}{rest}"))).unwrap();
        }
    }
}

#[test]
fn without_a_checkpoint_file_the_highest_step_is_read_and_said() {
    let dir = model_dir("t5_v1_0", false);
    copy_step(dir.path(), "model.ckpt-1000", "model.ckpt-500");
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    // The lower step is corrupt: reading it would fail.
    std::fs::write(dir.path().join("model.ckpt-500.index"), b"not a table").unwrap();
    let m = ModelDir::open(dir.path()).unwrap();
    let note = m.weights.note.clone().unwrap();
    assert!(
        note.contains("step 1000") && note.contains("model.ckpt-500"),
        "{note}"
    );
    // With a `checkpoint` file, the step it names is read (here: the corrupt one).
    std::fs::write(
        dir.path().join("checkpoint"),
        "model_checkpoint_path: \"model.ckpt-500\"\n",
    )
    .unwrap();
    let err = open_err(dir.path()).to_string();
    assert!(err.contains("model.ckpt-500.index"), "{err}");
}

#[test]
fn a_checkpoint_file_naming_a_missing_prefix_is_an_error() {
    let dir = model_dir("t5_v1_0", false);
    std::fs::write(
        dir.path().join("checkpoint"),
        "model_checkpoint_path: \"model.ckpt-7\"\n",
    )
    .unwrap();
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("checkpoint") && err.contains("model.ckpt-7.index"),
        "{err}"
    );
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_bad_block_checksum_names_the_index() {
    let dir = model_dir("t5_v1_0", true);
    let index = dir.path().join("model.ckpt-1000.index");
    flip_byte(&index, 20);
    match open_err(dir.path()) {
        Error::Checkpoint { path, msg } => {
            assert_eq!(path, index);
            assert!(msg.contains("block checksum mismatch"), "{msg}");
        }
        other => panic!("expected a Checkpoint error, got {other}"),
    }
}

#[test]
fn a_bad_tensor_checksum_names_the_shard_and_tensor() {
    let dir = model_dir("t5_v1_1", true);
    let prefix = dir.path().join("model.ckpt-2000");
    let vars = list_variables(&prefix).unwrap();
    let target = vars
        .iter()
        .find(|v| v.name == "decoder/logits/kernel")
        .unwrap();
    let shard = dir
        .path()
        .join(format!("model.ckpt-2000.data-{:05}-of-00002", target.shard));
    flip_byte(&shard, (target.offset + target.size / 2) as usize);
    match open_err(dir.path()) {
        Error::Tensor { path, name, msg } => {
            assert_eq!(path, shard);
            assert_eq!(name, "decoder/logits/kernel");
            assert!(msg.contains("checksum mismatch"), "{msg}");
        }
        other => panic!("expected a Tensor error, got {other}"),
    }
}

#[test]
fn a_truncated_index_names_the_index() {
    let dir = model_dir("t5_v1_0", true);
    let index = dir.path().join("model.ckpt-1000.index");
    let bytes = std::fs::read(&index).unwrap();
    for keep in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&index, &bytes[..keep]).unwrap();
        match open_err(dir.path()) {
            Error::Checkpoint { path, msg } => {
                assert_eq!(path, index, "{msg}");
                assert!(msg.contains("truncated"), "{keep} bytes: {msg}");
            }
            other => panic!("expected a Checkpoint error, got {other}"),
        }
    }
}

#[test]
fn a_missing_data_shard_is_named() {
    let dir = model_dir("t5_v1_1", true);
    let shard = dir.path().join("model.ckpt-2000.data-00001-of-00002");
    std::fs::remove_file(&shard).unwrap();
    match open_err(dir.path()) {
        Error::Checkpoint { path, msg } => {
            assert_eq!(path, shard);
            assert!(msg.contains("missing"), "{msg}");
        }
        other => panic!("expected a Checkpoint error, got {other}"),
    }
}

#[test]
fn an_entry_past_the_end_of_its_shard_names_the_shard_and_tensor() {
    let dir = model_dir("t5_v1_0", true);
    let prefix = dir.path().join("model.ckpt-1000");
    let vars = list_variables(&prefix).unwrap();
    // The model tensor whose bytes end last, and a shard cut 4 bytes before that end.
    let last = vars
        .iter()
        .filter(|v| v.dtype == "DT_FLOAT" && !v.name.contains("_slot_"))
        .max_by_key(|v| v.offset + v.size)
        .unwrap();
    let shard = dir.path().join("model.ckpt-1000.data-00000-of-00001");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..(last.offset + last.size - 4) as usize]).unwrap();
    match open_err(dir.path()) {
        Error::Tensor { path, name, msg } => {
            assert_eq!(path, shard);
            assert_eq!(name, last.name);
            assert!(msg.contains("run past the end"), "{msg}");
        }
        other => panic!("expected a Tensor error, got {other}"),
    }
}

#[test]
fn every_flipped_index_byte_is_an_error_or_the_same_tensors() {
    let dir = model_dir("t5_v1_0", true);
    let index = dir.path().join("model.ckpt-1000.index");
    let bytes = std::fs::read(&index).unwrap();
    for at in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&index, &bad).unwrap();
        // Never a panic; an index that still opens (a flip in the footer padding) is unchanged.
        if let Ok(m) = ModelDir::open(dir.path()) {
            assert_same_tensors("t5_v1_0", &m.weights);
        }
    }
}

#[test]
fn a_partitioned_variable_is_refused_by_name() {
    // tf.compat.v1.fixed_size_partitioner(2): shared/embedding saved as two slices.
    let dir = bundle("partitioned");
    let vars = list_variables(&dir.join("model.ckpt-1")).unwrap();
    assert!(vars.len() >= 3, "{vars:?}");
    let cfg = T5Config::from_file(&fixture("t5_v1_0").join("config.json")).unwrap();
    match Weights::open(&dir, &cfg) {
        Err(Error::Tensor { path, name, msg }) => {
            assert_eq!(path, dir.join("model.ckpt-1.index"));
            assert_eq!(name, "shared/embedding");
            assert!(
                msg.contains("partitioned variable (saved as 2 slices)"),
                "{msg}"
            );
        }
        Err(other) => panic!("expected a Tensor error, got {other}"),
        Ok(_) => panic!("a partitioned variable was read"),
    }
}

#[test]
fn a_checkpoint_file_from_another_machine_is_read_by_file_name() {
    let dir = model_dir("t5_v1_0", false);
    let named = "gs://t5-data/pretrained_models/cbqa/t5_small/model.ckpt-1000";
    std::fs::write(
        dir.path().join("checkpoint"),
        format!("model_checkpoint_path: \"{named}\"\nall_model_checkpoint_paths: \"{named}\"\n"),
    )
    .unwrap();
    let m = ModelDir::open(dir.path()).unwrap();
    let note = m.weights.note.clone().unwrap();
    assert!(
        note.contains(named) && note.contains("model.ckpt-1000"),
        "{note}"
    );
    assert_same_tensors("t5_v1_0", &m.weights);
}

#[test]
fn export_of_a_bundle_directory_writes_the_same_onnx_as_of_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, _) in BUNDLES {
        let dir = model_dir(name, true);
        let what = format!("{name} bundle");
        assert_same_export(&fixture(name), dir.path(), &tmp.path().join(name), &what);
    }
}
