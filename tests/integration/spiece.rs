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
use std::collections::BTreeSet;
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

/// The benchmark texts and where the models and Python's encodings made from them live.
struct Texts {
    /// Every distinct question and answer of the benchmark files, sorted.
    all: Vec<String>,
    /// target/test-spiece/KEY, KEY a hash of the texts and of the script, so that a cache made
    /// from other data or by another version of the script is never reused.
    work: PathBuf,
    /// work/texts.json, the texts for the script.
    file: PathBuf,
}

fn texts() -> &'static Texts {
    static TEXTS: OnceLock<Texts> = OnceLock::new();
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
        let script = std::fs::read(root().join("scripts").join("make_spiece_fixture.py")).unwrap();
        let json = serde_json::to_vec(&all).unwrap();
        // FNV-1a over the script and the texts.
        let key = script
            .iter()
            .chain(&json)
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        let work = root()
            .join("target")
            .join("test-spiece")
            .join(format!("{key:016x}"));
        std::fs::create_dir_all(&work).unwrap();
        let file = work.join("texts.json");
        std::fs::write(&file, json).unwrap();
        Texts { all, work, file }
    })
}

fn work() -> &'static Path {
    &texts().work
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
/// the committed fixtures' vocabulary, with the rarer characters left to <unk>), its three
/// config variants under work()/name/.
fn trained(name: &str) -> PathBuf {
    let (pieces, extra, coverage) = match name {
        "t5" => ("4000", "100", "0.9995"),
        _ => ("300", "100", "0.99"),
    };
    let out = work().join(name);
    let texts = texts().file.clone();
    once(&out.join("bare").join("spiece.model"), || {
        let _ = std::fs::remove_dir_all(&out);
        run_python(
            "make_spiece_fixture.py",
            &[
                "train",
                texts.to_str().unwrap(),
                pieces,
                extra,
                coverage,
                out.to_str().unwrap(),
            ],
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
    let texts = texts().file.clone();
    once(&out, || {
        run_python(
            "make_spiece_fixture.py",
            &[
                "encode",
                dir.to_str().unwrap(),
                texts.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
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

/// Where cbqa's ids differ from T5TokenizerFast's, and where T5TokenizerFast and the slow
/// T5Tokenizer disagree (then cbqa is only compared with the fast one).
#[derive(Default)]
struct Comparison {
    differ_fast: Vec<usize>,
    differ_slow_where_python_agrees: Vec<usize>,
    python_disagrees: Vec<usize>,
}

fn compare(ours: &[Vec<u32>], py: &PythonIds) -> Comparison {
    let mut c = Comparison::default();
    for (i, ids) in ours.iter().enumerate() {
        if *ids != py.fast[i] {
            c.differ_fast.push(i);
        }
        if py.fast[i] != py.slow[i] {
            c.python_disagrees.push(i);
        } else if *ids != py.slow[i] {
            c.differ_slow_where_python_agrees.push(i);
        }
    }
    c
}

fn show(texts: &[String], which: &[usize], py: &PythonIds, ours: &[Vec<u32>]) {
    for &i in which.iter().take(5) {
        let text: String = texts[i].chars().take(60).collect();
        eprintln!(
            "  {text:?}: cbqa {:?}, fast {:?}, slow {:?}",
            &ours[i], &py.fast[i], &py.slow[i]
        );
    }
}

/// Ids equal T5TokenizerFast's on every distinct question and answer of the benchmark files
/// (191,790 texts), for each tokenizer_config.json variant, and the tokenizer itself equals the
/// one transformers converts (its JSON, piece for piece and flag for flag).
///
/// T5TokenizerFast and the slow T5Tokenizer (sentencepiece) disagree on 36 texts (38 with
/// `legacy: false`), all of them ties: two segmentations with the same pieces in another order,
/// hence the same Unigram score, e.g. "000" as "00"+"0" or "0"+"00", "III" as "I"+"II" or
/// "II"+"I", `"""` as `"`+`""` or `""`+`"`, "...." as "."+"..." or "..."+".". The Viterbi searches of sentencepiece and of
/// the `tokenizers` crate break such ties differently; cbqa is the `tokenizers` crate's, so it
/// follows T5TokenizerFast, and equals the slow tokenizer everywhere the two agree.
#[test]
fn spiece_tokenizer_equals_transformers_on_every_benchmark_text() {
    let texts = &texts().all;
    assert!(texts.len() > 100_000, "only {} texts", texts.len());
    for variant in VARIANTS {
        let dir = trained("t5").join(variant);
        let (tok, file) = load_dir(&dir).unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(file, TokenizerFile::SentencePiece(dir.join("spiece.model")));
        let py = python_ids(&dir);
        assert_eq!(py.fast.len(), texts.len());
        let ours_json: serde_json::Value =
            serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        assert!(
            ours_json == py.fast_json,
            "{variant}: tokenizer JSON differs from T5TokenizerFast's"
        );
        let ours: Vec<Vec<u32>> = tok
            .encode_batch(texts.clone(), true)
            .unwrap()
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect();
        let c = compare(&ours, &py);
        eprintln!(
            "{variant}: {} texts; T5TokenizerFast and the slow T5Tokenizer disagree on {} (ties)",
            texts.len(),
            c.python_disagrees.len()
        );
        show(texts, &c.python_disagrees, &py, &ours);
        show(texts, &c.differ_fast, &py, &ours);
        assert!(
            c.differ_fast.is_empty(),
            "{variant}: {} texts where cbqa differs from T5TokenizerFast",
            c.differ_fast.len()
        );
        assert!(
            c.differ_slow_where_python_agrees.is_empty(),
            "{variant}: {} texts where cbqa differs from both Python tokenizers",
            c.differ_slow_where_python_agrees.len()
        );
        // The disagreements are few: a broken conversion would disagree on thousands.
        assert!(
            c.python_disagrees.len() < 100,
            "{variant}: {}",
            c.python_disagrees.len()
        );
    }
}

fn tokenizer_err(dir: &Path) -> (PathBuf, String) {
    match load_dir(dir) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(Error::Tokenizer { path, msg }) => (path, msg),
        Err(e) => panic!("{}: expected Error::Tokenizer, got {e}", dir.display()),
    }
}

/// Broken or non-T5 spiece.model files (scripts/make_spiece_fixture.py `bad`) are refused with
/// the file named and what was expected; none panics.
#[test]
fn broken_spiece_models_are_refused_with_the_file_named() {
    let model = trained("small").join("legacy");
    let bad = work().join("bad");
    let texts = texts().file.clone();
    once(&bad.join("trie").join("spiece.model"), || {
        run_python(
            "make_spiece_fixture.py",
            &[
                "bad",
                model.to_str().unwrap(),
                texts.to_str().unwrap(),
                bad.to_str().unwrap(),
            ],
        );
    });
    let cases = [
        (
            "random",
            "not a SentencePiece model (expected a ModelProto protobuf)",
        ),
        (
            "truncated",
            "not a SentencePiece model (expected a ModelProto protobuf)",
        ),
        ("empty", "has no pieces"),
        ("bpe", "model_type is BPE; cbqa reads only UNIGRAM"),
        (
            "unk_control",
            "unk_id is 0, but piece 0 (\"<pad>\") is not of type UNKNOWN",
        ),
        ("swapped", "special token <pad> has id 2, T5 expects 0"),
        ("charsmap", "precompiled_charsmap declares a trie of"),
        ("trie", "precompiled_charsmap's trie points at byte 983328650 of its replacement strings, past the end"),
    ];
    for (name, want) in cases {
        let (path, msg) = tokenizer_err(&bad.join(name));
        eprintln!("{name}: {msg}");
        assert_eq!(path, bad.join(name).join("spiece.model"), "{name}");
        assert!(msg.contains(want), "{name}: {msg:?} does not say {want:?}");
    }
    // A config whose declared ids do not fit the model, and one that is not a config.
    let dir = work().join("bad-config");
    copy_dir(&model, &dir);
    let config = dir.join("tokenizer_config.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    v["extra_ids"] = serde_json::json!(99);
    v["additional_special_tokens"] = serde_json::json!([]);
    std::fs::write(&config, v.to_string()).unwrap();
    let (path, msg) = tokenizer_err(&dir);
    assert_eq!(path, config);
    assert!(
        msg.contains("added_tokens_decoder puts \"<extra_id_99>\" at id 300"),
        "{msg}"
    );
    std::fs::write(&config, "[1, 2]").unwrap();
    let (path, msg) = tokenizer_err(&dir);
    assert_eq!((path, msg.as_str()), (config, "expected a JSON object"));
}

/// A checkpoint directory whose tokenizer is only spiece.model (a committed fixture with its
/// tokenizer.json replaced by the 300 + 100 sentinel model, which fits its vocab_size of 400)
/// opens, and `cbqa inspect` names the file; a model too big for the embedding matrix is refused
/// naming spiece.model; a directory with neither file names what it needs.
#[test]
fn model_dir_with_only_spiece_model_opens_and_inspects() {
    let dir = work().join("model-dir");
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture("t5_v1_0"), &dir);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    copy_dir(&trained("small").join("legacy"), &dir);
    let m = ModelDir::open(&dir).unwrap();
    assert_eq!(m.tokenizer_file, dir.join("spiece.model"));
    assert_eq!(m.tokenizer.get_vocab_size(true), 400);
    assert_eq!(m.tokenizer.token_to_id("<extra_id_0>"), Some(399));
    let enc = m.tokenizer.encode("who wrote hamlet?", true).unwrap();
    assert_eq!(enc.get_ids().last(), Some(&1));
    let (ok, out, err) = run_cbqa(&["inspect", dir.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["tokenizer_file"],
        dir.join("spiece.model").display().to_string()
    );
    assert_eq!(v["tokenizer_vocab"], 400);

    copy_dir(&trained("t5").join("legacy"), &dir);
    let Err(Error::Tokenizer { path, msg }) = ModelDir::open(&dir) else {
        panic!("a 4100-token tokenizer opened with vocab_size 400");
    };
    assert_eq!(path, dir.join("spiece.model"));
    assert!(
        msg.contains("has 4100 tokens but config.json's vocab_size is 400"),
        "{msg}"
    );

    std::fs::remove_file(dir.join("spiece.model")).unwrap();
    let (path, msg) = tokenizer_err(&dir);
    assert_eq!(path, dir.join("tokenizer.json"));
    assert!(msg.contains("nor a spiece.model beside it"), "{msg}");
}

/// A tokenizer_config.json as transformers < 4.34 wrote it (the 2020 hub checkpoints': sentinels
/// in additional_special_tokens, no added_tokens_decoder, no legacy key) gives the tokenizer
/// T5TokenizerFast converts from it, JSON for JSON (so the same ids on any text).
#[test]
fn old_style_tokenizer_config_gives_the_transformers_tokenizer() {
    let dir = trained("t5").join("old");
    let (tok, _) = load_dir(&dir).unwrap();
    let none = work().join("one-text.json");
    std::fs::write(&none, r#"["Who wrote <extra_id_0> Hamlet?"]"#).unwrap();
    let out = work().join("old.json");
    run_python(
        "make_spiece_fixture.py",
        &[
            "encode",
            dir.to_str().unwrap(),
            none.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(v["fast_json"].as_str().unwrap()).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
    assert!(
        ours == theirs,
        "tokenizer JSON differs from T5TokenizerFast's"
    );
    assert_eq!(tok.token_to_id("<extra_id_0>"), Some(4099));
    let ids = tok.encode("Who wrote <extra_id_0> Hamlet?", true).unwrap();
    assert_eq!(serde_json::json!([ids.get_ids()]), v["fast"]);
}

/// The two loaders agree: a tokenizer.json written from a spiece.model tokenizer loads back to
/// the same ids (the path `cbqa convert` takes when it writes a checkpoint).
#[test]
fn spiece_tokenizer_round_trips_through_tokenizer_json() {
    let dir = work().join("round-trip");
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&trained("t5").join("nolegacy"), &dir);
    let (from_spm, _) = load_dir(&dir).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        from_spm.to_string(false).unwrap(),
    )
    .unwrap();
    let (from_json, file) = load_dir(&dir).unwrap();
    assert_eq!(file, TokenizerFile::Json(dir.join("tokenizer.json")));
    let sample: Vec<String> = texts().all.iter().step_by(97).cloned().collect();
    let ids = |t: &tokenizers::Tokenizer| -> Vec<Vec<u32>> {
        t.encode_batch(sample.clone(), true)
            .unwrap()
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect()
    };
    assert_eq!(ids(&from_spm), ids(&from_json));
}
