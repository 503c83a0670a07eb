//! The entry function of every fuzz target: bytes in, the reader called as `cbqa` calls it on a
//! user's file. Errors are the expected outcome of most inputs; a panic, a hang or an
//! allocation beyond libFuzzer's `-malloc_limit_mb` is a finding. This file is shared by the
//! fuzz targets (`fuzz/src/lib.rs`) and the corpus replay in the main crate's integration tests,
//! so both run exactly the same code; it uses `cbqa`'s public API only.

use std::path::{Path, PathBuf};

/// What a target needs besides its input.
pub struct Inputs {
    /// The main crate's `tests/fixtures`.
    pub fixtures: PathBuf,
    /// An ONNX export of the `t5_v1_0` fixture (the `onnx_dir` target's graphs); `None` skips
    /// nothing silently: that target panics asking for it.
    pub export: Option<PathBuf>,
}

/// The readers that take users' files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Dataset files: the first byte picks the format (one of `DataFormat::ALL`, or detection),
    /// the rest is the file; Python list literals too.
    Data,
    /// `config.json` (Hugging Face T5Config keys).
    ConfigJson,
    /// `model.safetensors`: the header and every tensor check.
    Safetensors,
    /// `pytorch_model.bin` (zip or legacy pickle).
    Pickle,
    /// `flax_model.msgpack`.
    Msgpack,
    /// A TF tensor bundle's `.index` (table, entries, CRC-32C) with the fixture's data shard.
    TfBundle,
    /// `spiece.model` (SentencePiece's protobuf, charsmap).
    Spiece,
    /// An ONNX export's metadata: the first byte picks which file (graph protobuf,
    /// cbqa_export.json, config.json, generation_config.json, tokenizer.json) is replaced.
    OnnxDir,
    /// `cbqa score`'s predictions of any system (JSON lines or CSV).
    Predictions,
    /// `cbqa pretrain`'s corpora: the first byte picks the file name, hence the reader (plain
    /// text, JSON lines with code-point spans, REALM's TFRecord plain or gzip).
    Corpus,
    /// `cbqa serve`'s request body (`POST /v1/answer`) against the default limits.
    ServeRequest,
}

/// Every target with its name (the fuzz binary's and the corpus folder's).
pub const TARGETS: [(&str, Target); 11] = [
    ("data", Target::Data),
    ("config_json", Target::ConfigJson),
    ("safetensors", Target::Safetensors),
    ("pickle", Target::Pickle),
    ("msgpack", Target::Msgpack),
    ("tf_bundle", Target::TfBundle),
    ("spiece", Target::Spiece),
    ("onnx_dir", Target::OnnxDir),
    ("predictions", Target::Predictions),
    ("corpus", Target::Corpus),
    ("serve_request", Target::ServeRequest),
];

impl Target {
    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// Run `target` on `data`, using `scratch` for the files it writes.
pub fn run(target: Target, data: &[u8], scratch: &Path, inputs: &Inputs) {
    match target {
        Target::Data => data_file(data, scratch),
        Target::ConfigJson => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = cbqa::T5Config::from_json_str(text, Path::new("config.json"));
            }
        }
        Target::Safetensors => weights_file("model.safetensors", data, scratch, inputs),
        Target::Pickle => weights_file("pytorch_model.bin", data, scratch, inputs),
        Target::Msgpack => weights_file("flax_model.msgpack", data, scratch, inputs),
        Target::TfBundle => tf_index(data, scratch, inputs),
        Target::Spiece => {
            let dir = scratch.join("spiece");
            std::fs::create_dir_all(&dir).unwrap();
            let model = dir.join("spiece.model");
            std::fs::write(&model, data).unwrap();
            let _ = cbqa::tokenizer::load_spiece(&model, &dir.join("no-config.json"));
        }
        Target::OnnxDir => onnx_dir(data, scratch, inputs),
        Target::Predictions => {
            let _ = cbqa::eval::predictions::parse_predictions(Path::new("predictions"), data);
        }
        Target::Corpus => corpus(data, scratch),
        Target::ServeRequest => {
            let _ = cbqa::serve::api::parse_request(data, &cbqa::serve::Limits::default());
        }
    }
}

/// The corpus file names the `corpus` target writes, one per value of the first byte.
const CORPUS_FILES: [&str; 4] = [
    "corpus.txt",
    "corpus.jsonl",
    "corpus.tfrecord",
    "corpus.tfrecord.gz",
];

/// Documents a corpus input may yield before the target stops reading (a bound on the work per
/// input, far above what 64 KB can hold in any format but plain text).
const MAX_CORPUS_DOCUMENTS: usize = 100_000;

fn corpus(data: &[u8], scratch: &Path) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    std::fs::create_dir_all(scratch).unwrap();
    let path = scratch.join(CORPUS_FILES[pick as usize % CORPUS_FILES.len()]);
    std::fs::write(&path, body).unwrap();
    let files = [path];
    for doc in cbqa::pretrain::corpus::documents(&files).take(MAX_CORPUS_DOCUMENTS) {
        if doc.is_err() {
            break;
        }
    }
    std::fs::remove_file(&files[0]).unwrap();
}

fn data_file(data: &[u8], scratch: &Path) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let formats = cbqa::data::DataFormat::ALL;
    let format = formats.get(pick as usize % (formats.len() + 1)).copied();
    std::fs::create_dir_all(scratch).unwrap();
    let path = scratch.join("data.txt");
    std::fs::write(&path, body).unwrap();
    for skip_bad in [false, true] {
        let opts = cbqa::data::ReadOptions {
            format,
            skip_bad,
            ..Default::default()
        };
        let _ = cbqa::data::Dataset::read(&path, &opts);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = cbqa::data::parse_python_str_list(text);
    }
}

/// `scratch/name` made once: `files` of `from` copied in.
fn prepared(scratch: &Path, name: &str, from: &Path, files: &[&str]) -> PathBuf {
    let dir = scratch.join(name);
    let done = dir.join(".prepared");
    if !done.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(from.join(f), dir.join(f))
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.join(f).display()));
        }
        std::fs::write(&done, b"").unwrap();
    }
    dir
}

fn fixture_config(inputs: &Inputs) -> cbqa::T5Config {
    cbqa::T5Config::from_file(&inputs.fixtures.join("t5_v1_0").join("config.json"))
        .expect("the t5_v1_0 fixture's config.json")
}

fn weights_file(file: &str, data: &[u8], scratch: &Path, inputs: &Inputs) {
    let dir = prepared(
        scratch,
        file,
        &inputs.fixtures.join("t5_v1_0"),
        &["config.json"],
    );
    std::fs::write(dir.join(file), data).unwrap();
    let _ = cbqa::checkpoint::Weights::open(&dir, &fixture_config(inputs));
}

fn tf_index(data: &[u8], scratch: &Path, inputs: &Inputs) {
    let from = inputs.fixtures.join("tf_bundle").join("t5_v1_0");
    let files = ["checkpoint", "model.ckpt-1000.data-00000-of-00001"];
    let dir = prepared(scratch, "tf_bundle", &from, &files);
    std::fs::write(dir.join("model.ckpt-1000.index"), data).unwrap();
    let _ = cbqa::checkpoint::tf_bundle::list_variables(&dir.join("model.ckpt-1000"));
    let _ = cbqa::checkpoint::Weights::open(&dir, &fixture_config(inputs));
}

/// The files of an export the `onnx_dir` target replaces, one per value of the first byte.
const ONNX_DIR_FILES: [&str; 5] = [
    "encoder_model.onnx",
    "cbqa_export.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
];

fn onnx_dir(data: &[u8], scratch: &Path, inputs: &Inputs) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let export = inputs.export.as_ref().expect(
        "the onnx_dir target needs an export of the t5_v1_0 fixture: set CBQA_FUZZ_EXPORT \
         (scripts/fuzz.sh makes one with `cbqa export`)",
    );
    let files = [
        "encoder_model.onnx",
        "decoder_model.onnx",
        "decoder_with_past_model.onnx",
        "cbqa_export.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.onnx_data",
    ];
    let dir = prepared(scratch, "onnx_dir", export, &files);
    let file = ONNX_DIR_FILES[pick as usize % ONNX_DIR_FILES.len()];
    std::fs::write(dir.join(file), body).unwrap();
    let _ = cbqa::runtime::OnnxDir::open(&dir);
    // Put the original back for the next input.
    std::fs::copy(export.join(file), dir.join(file)).unwrap();
}
