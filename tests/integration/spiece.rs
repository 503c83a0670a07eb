//! T5 tokenizers built from `spiece.model` (the hub checkpoints' SentencePiece file, no
//! tokenizer.json) against transformers' own: models trained with sentencepiece on the
//! benchmark texts with T5's settings and saved by the slow `T5Tokenizer`
//! (scripts/make_spiece_fixture.py), every question and answer of ../shared/data encoded by
//! cbqa and by `T5TokenizerFast` / `T5Tokenizer`, broken models refused with the file named, and
//! a model directory whose tokenizer is only spiece.model opened and inspected.
//!
//! No real t5-small `spiece.model` is on the test machines (nothing under ~/.cache/huggingface
//! or ../shared), and the tests download nothing; the trained models have T5's settings
//! (Unigram, nmt_nfkc, <pad>=0 </s>=1 <unk>=2, no <s>) and transformers' own files.

use crate::common::{copy_dir, data_dir, fixture, root, run_cbqa, run_python};
use cbqa::data::{Dataset, ReadOptions};
use cbqa::tokenizer::{load_dir, TokenizerFile};
use cbqa::{Error, ModelDir};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Every benchmark file of ../shared/data.
const DATA_FILES: [&str; 11] = [
    "nq-open/NQ-open.dev.jsonl",
    "nq-open/NQ-open.efficientqa.dev.1.1.jsonl",
    "nq-open/NQ-open.efficientqa.test.1.1.jsonl",
    "nq-open/dpr/topics.dpr.nq.test.txt",
    "triviaqa/topics.dpr.trivia.test.txt",
    "triviaqa/topics.dpr.trivia.dev.txt",
    "webquestions/brmson-main/test.json",
    "webquestions/brmson-main/val.json",
    "webquestions/brmson-main/devtest.json",
    "webquestions/brmson-main/trainmodel.json",
    "webquestions/dpr/topics.dpr.wq.test.txt",
];

/// The tokenizer_config.json variants `train` writes.
const VARIANTS: [&str; 3] = ["legacy", "nolegacy", "bare"];

/// Where the models and Python's encodings are made, under target/.
fn work() -> PathBuf {
    root().join("target").join("test-spiece")
}

/// Every distinct question and answer of the benchmark files, sorted; written once as
/// work()/texts.json for the script.
fn texts() -> &'static (Vec<String>, PathBuf) {
    static TEXTS: OnceLock<(Vec<String>, PathBuf)> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut all = BTreeSet::new();
        for rel in DATA_FILES {
            let path = data_dir().join(rel);
            let ds = Dataset::read(&path, &ReadOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for ex in ds.examples {
                all.insert(ex.question);
                all.extend(ex.answers);
            }
        }
        let all: Vec<String> = all.into_iter().collect();
        std::fs::create_dir_all(work()).unwrap();
        let path = work().join("texts.json");
        std::fs::write(&path, serde_json::to_vec(&all).unwrap()).unwrap();
        (all, path)
    })
}

/// Make `f`'s output once per run, and keep it across runs while `marker` exists.
fn once(marker: &Path, f: impl FnOnce()) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !marker.exists() {
        f();
        assert!(marker.exists(), "{} was not made", marker.display());
    }
}

/// A trained model (`name`: "t5", 4000 pieces + 100 sentinels; "small", 300 + 100, the size of
/// the committed fixtures' vocabulary), its three config variants under work()/name/.
fn trained(name: &str) -> PathBuf {
    let (pieces, extra) = match name {
        "t5" => ("4000", "100"),
        _ => ("300", "100"),
    };
    let out = work().join(name);
    let texts = texts().1.clone();
    once(&out.join("bare").join("spiece.model"), || {
        let _ = std::fs::remove_dir_all(&out);
        run_python(
            "make_spiece_fixture.py",
            &["train", texts.to_str().unwrap(), pieces, extra, out.to_str().unwrap()],
        );
    });
    out
}

/// transformers' encodings of texts() by the model dir `dir`.
struct PythonIds {
    fast: Vec<Vec<u32>>,
    slow: Vec<Vec<u32>>,
    fast_json: serde_json::Value,
}

fn python_ids(dir: &Path) -> PythonIds {
    let out = dir.with_extension("ids.json");
    let texts = texts().1.clone();
    once(&out, || {
        run_python(
            "make_spiece_fixture.py",
            &["encode", dir.to_str().unwrap(), texts.to_str().unwrap(), out.to_str().unwrap()],
        );
    });
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let ids = |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(v[key].clone()).unwrap() };
    PythonIds {
        fast: ids("fast"),
        slow: ids("slow"),
        fast_json: serde_json::from_str(v["fast_json"].as_str().unwrap()).unwrap(),
    }
}

#[test]
fn spiece_tokenizer_equals_transformers_on_every_benchmark_text() {
    let texts = &texts().0;
    assert!(texts.len() > 100_000, "only {} texts", texts.len());
    for variant in VARIANTS {
        let dir = trained("t5").join(variant);
        let (tok, file) = load_dir(&dir).unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(file, TokenizerFile::SentencePiece(dir.join("spiece.model")));
        let py = python_ids(&dir);
        assert_eq!(py.fast.len(), texts.len());
        // The same tokenizer, piece for piece and flag for flag.
        let ours: serde_json::Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        assert!(ours == py.fast_json, "{variant}: tokenizer JSON differs from T5TokenizerFast's");
        let encodings = tok.encode_batch(texts.clone(), true).unwrap();
        let (mut differ_fast, mut py_disagree, mut differ_slow) = (0, Vec::new(), 0);
        for (i, enc) in encodings.iter().enumerate() {
            let ids = enc.get_ids();
            if ids != py.fast[i].as_slice() {
                differ_fast += 1;
                if differ_fast <= 5 {
                    eprintln!("{variant}: {:?}: cbqa {ids:?}, fast {:?}", texts[i], py.fast[i]);
                }
            }
            if py.fast[i] != py.slow[i] {
                py_disagree.push(i);
            } else if ids != py.slow[i].as_slice() {
                differ_slow += 1;
            }
        }
        eprintln!(
            "{variant}: {} texts; T5TokenizerFast and the slow T5Tokenizer disagree on {}",
            texts.len(),
            py_disagree.len()
        );
        for &i in py_disagree.iter().take(10) {
            eprintln!("  {:?}: fast {:?}, slow {:?}", texts[i], py.fast[i], py.slow[i]);
        }
        assert_eq!(differ_fast, 0, "{variant}: texts where cbqa differs from T5TokenizerFast");
        assert_eq!(differ_slow, 0, "{variant}: texts where cbqa differs from both Python tokenizers agreeing");
    }
}
