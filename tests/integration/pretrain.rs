//! `cbqa pretrain`: span corruption and salient span masking as the paper's code makes them,
//! on the same trainer as `cbqa train` (exact resume, checkpoints that `cbqa train` fine-tunes),
//! `--dump-examples`, task mixtures on the real benchmark files, and clear errors for bad
//! corpora. Trainings run in the binary (libtorch's RNG is global to a process).

use super::common::{data_dir, fixture, root, run_cbqa, run_python};
use cbqa::init::{init_model, InitOptions, TokenizerSource};
use cbqa::pretrain::span_corruption::{
    epoch_seed, random_spans_helper, MaskDraw, SpanCorruptionSettings,
};
use cbqa::pretrain::{build_examples, Objective, PretrainSettings};
use cbqa::train::batching::ExampleLengths;
use cbqa::train::store::DiskExamples;
use cbqa::T5Config;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub(super) fn nq200() -> PathBuf {
    root().join("eval/demo/nq-open-200.jsonl")
}

/// (question, first answer) of the bundled NQ questions.
fn nq_pairs() -> Vec<(String, String)> {
    std::fs::read_to_string(nq200())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let q = v["question"].as_str().unwrap().to_string();
            (q, v["answer"][0].as_str().unwrap().to_string())
        })
        .collect()
}

/// A tiny T5 whose tokenizer (trained on the NQ questions) has 100 sentinels.
pub(super) fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    init_model(&InitOptions {
        config: T5Config::preset("tiny").unwrap(),
        tokenizer: TokenizerSource::Train {
            data: nq200(),
            vocab_size: 2048,
            extra_ids: 100,
        },
        out: model.clone(),
        force: false,
        seed: 5,
    })
    .unwrap();
    model
}

/// A plain-text corpus: one short "document" per NQ pair.
pub(super) fn text_corpus(dir: &Path) -> PathBuf {
    let p = dir.join("facts.txt");
    let lines: Vec<String> = nq_pairs()
        .iter()
        .map(|(q, a)| format!("{q}? The answer is {a}."))
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n\n").unwrap();
    p
}

pub(super) fn run_ok(args: &[&str]) -> (String, String) {
    let (ok, out, err) = run_cbqa(args);
    assert!(ok, "cbqa {args:?} failed:\n{err}");
    (out, err)
}

pub(super) fn dumped(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub(super) const TRAINER: &[&str] = &[
    "--device",
    "cpu",
    "--threads",
    "1",
    "--batch-tokens",
    "700",
    "--micro-batch-tokens",
    "400",
];

#[test]
fn span_corruption_pretrains_resumes_exactly_and_fine_tunes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let corpus = text_corpus(tmp.path());
    let (m, c) = (model.to_str().unwrap(), corpus.to_str().unwrap());
    let pretrain = |out: &Path, steps: &str| {
        let mut args = vec!["pretrain", "--model", m, "--corpus", c];
        args.extend(["--objective", "span-corruption", "--inputs-length", "64"]);
        args.extend(["--out", out.to_str().unwrap(), "--max-steps", steps]);
        args.extend(["--dev", c, "--eval-every", "2"]);
        // 5 steps an epoch of 90 pieces.
        args.extend(["--device", "cpu", "--threads", "1"]);
        args.extend(["--batch-tokens", "1600", "--micro-batch-tokens", "400"]);
        run_ok(&args)
    };
    // 8 steps cross an epoch boundary (after step 5); the interrupted run stops in epoch 0,
    // resumes into epoch 1, whose masks are drawn anew, and resumes again within it.
    let full = tmp.path().join("full");
    let (_, err) = pretrain(&full, "8");
    assert!(
        err.contains("step 1: loss"),
        "progress from the first step:\n{err}"
    );
    assert!(err.contains("masks drawn anew every epoch"), "{err}");
    let epochs = log_column(&full.join("train_log.csv"), "epoch");
    let first_of_epoch_1 = epochs.iter().position(|e| e == "1");
    assert!(
        first_of_epoch_1.is_some_and(|k| k > 2 && k < 6),
        "the run must enter epoch 1 after step 3 and before step 7: {epochs:?}"
    );
    let part = tmp.path().join("part");
    pretrain(&part, "3");
    let part_s = part.to_str().unwrap();
    // Resumed twice: into epoch 1, and from within it.
    run_ok(&["pretrain", "--resume", part_s, "--max-steps", "7"]);
    run_ok(&["pretrain", "--resume", part_s, "--max-steps", "8"]);
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(full.join("checkpoint-8").join(f)).unwrap();
        let b = std::fs::read(part.join("checkpoint-8").join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between the resumed and the uninterrupted run"
        );
    }
    // Every step's loss and the dev loss (steps 2, 4, 6, 8) are the same after a resume.
    let column = |run: &Path, name: &str| log_column(&run.join("train_log.csv"), name);
    assert_eq!(column(&full, "loss"), column(&part, "loss"), "losses");
    let logged = column(&full, "dev_loss");
    assert_eq!(logged.len(), 8, "{logged:?}");
    assert!(logged[0].is_empty() && logged[2].is_empty(), "{logged:?}");
    assert!(logged[1].parse::<f64>().unwrap() > 0.0, "{logged:?}");
    // (The interrupted run's invocations ended at steps 3 and 7, so they evaluated there.)
    let mut resumed = column(&part, "dev_loss");
    for k in [2, 6] {
        assert!(resumed[k].parse::<f64>().is_ok(), "{resumed:?}");
        resumed[k].clear();
    }
    assert_eq!(logged, resumed, "dev loss after a resume");
    // The run and its checkpoints record how the masks were drawn.
    let json = |p: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let run = json(full.join("run.json"));
    assert_eq!(run["pretrain"]["masks"], "per-epoch", "{run}");
    let record = json(full.join("checkpoint-8/cbqa_training.json"));
    assert_eq!(record["span_masks"], "per-epoch", "{record}");
    // `cbqa train` fine-tunes the pre-trained checkpoint.
    let ckpt = full.join("checkpoint-8");
    let ft = tmp.path().join("ft");
    let nq = nq200();
    let mut args = vec!["train", "--model", ckpt.to_str().unwrap()];
    args.extend(["--train", nq.to_str().unwrap()]);
    args.extend(["--out", ft.to_str().unwrap(), "--max-steps", "2"]);
    args.extend(TRAINER);
    let (out, _) = run_ok(&args);
    assert!(out.contains("finished after 2 steps"), "{out}");
    assert!(ft.join("checkpoint-2/model.safetensors").is_file());
}

/// The examples and batches `cbqa pretrain --export-examples` writes for two epochs of span
/// corruption on the text corpus, with `extra` flags.
fn exported_epochs(tmp: &Path, name: &str, extra: &[&str]) -> (Value, Vec<Value>, Vec<Value>) {
    let model = tmp.join("model");
    let corpus = tmp.join("facts.txt");
    let dir = tmp.join(name);
    let mut args = vec!["pretrain", "--model", model.to_str().unwrap()];
    args.extend(["--corpus", corpus.to_str().unwrap()]);
    args.extend(["--objective", "span-corruption", "--inputs-length", "64"]);
    args.extend([
        "--export-examples",
        dir.to_str().unwrap(),
        "--export-epochs",
        "2",
    ]);
    args.extend(["--batch-tokens", "700"]);
    args.extend(extra);
    run_ok(&args);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    (
        manifest,
        dumped(&read("examples.jsonl")),
        dumped(&read("batches.jsonl")),
    )
}

#[test]
fn span_corruption_draws_new_masks_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    text_corpus(tmp.path());
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let s0 = tok.token_to_id("<extra_id_0>").unwrap();
    let is_sentinel = |t: u32| t + 100 > s0 && t <= s0;
    let (manifest, examples, batches) = exported_epochs(tmp.path(), "per-epoch", &[]);
    let n = manifest["examples_per_epoch"].as_u64().unwrap() as usize;
    assert_eq!(examples.len(), 2 * n, "two epochs of {n} examples");
    assert_eq!(manifest["settings"]["pretrain"]["masks"], "per-epoch");
    let (mut differ, mut full) = (0, 0);
    for (e0, e1) in examples[..n].iter().zip(&examples[n..]) {
        let (i0, t0) = (ids(&e0["input_ids"]), ids(&e0["target_ids"][0]));
        let (i1, t1) = (ids(&e1["input_ids"]), ids(&e1["target_ids"][0]));
        // The same chunk, other masks of the same counts.
        assert_eq!((i0.len(), t0.len()), (i1.len(), t1.len()));
        assert_eq!(merge(&i0, &t0, is_sentinel), merge(&i1, &t1, is_sentinel));
        if i0.len() == 64 {
            full += 1;
            differ += usize::from(i0 != i1);
        }
    }
    assert!(full >= n - 2 && full > 10, "{full} of {n}");
    assert_eq!(differ, full, "every full chunk is masked anew in epoch 1");
    // Epoch 1's batches train on epoch 1's examples.
    for b in &batches {
        let epoch = b["epoch"].as_u64().unwrap() as usize;
        for item in b["items"].as_array().unwrap() {
            let id = item[0].as_u64().unwrap() as usize;
            assert_eq!(id / n, epoch, "{b}");
        }
    }
    // Epoch 0 has the masks of the run's seed, which --fixed-masks repeats every epoch.
    let (manifest, fixed, _) = exported_epochs(tmp.path(), "fixed", &["--fixed-masks"]);
    assert_eq!(manifest["settings"]["pretrain"]["masks"], "fixed");
    assert_eq!(fixed.len(), n, "one set of examples for every epoch");
    for (a, b) in fixed.iter().zip(&examples[..n]) {
        assert_eq!(a["input_ids"], b["input_ids"]);
    }
}

#[test]
fn span_corruption_examples_are_t5s() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let corpus = text_corpus(tmp.path());
    let (m, c) = (model.to_str().unwrap(), corpus.to_str().unwrap());
    let mut args = vec!["pretrain", "--model", m, "--corpus", c, "--out", "unused"];
    args.extend(["--objective", "span-corruption", "--inputs-length", "64"]);
    args.extend(["--dump-examples", "100000"]);
    let (out, _) = run_ok(&args);
    let examples = dumped(&out);
    let settings = SpanCorruptionSettings {
        inputs_length: 64,
        ..SpanCorruptionSettings::default()
    };
    let (raw, targets_len) = random_spans_helper(&settings);
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let s0 = tok.token_to_id("<extra_id_0>").unwrap();
    let is_sentinel = |t: u32| t + 100 > s0 && t <= s0;
    // The raw token stream of the corpus, tokenized by transformers.
    let reference = run_python("pretrain_reference.py", &["tokens", m, c]);
    let docs: Vec<Vec<u32>> = reference
        .lines()
        .map(|l| ids(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(docs.len(), 200);
    // Groups of 128 documents, each cut into pieces of `raw` tokens.
    let mut pieces: Vec<Vec<u32>> = Vec::new();
    for group in docs.chunks(128) {
        let stream: Vec<u32> = group.concat();
        pieces.extend(stream.chunks(raw).map(<[u32]>::to_vec));
    }
    assert_eq!(examples.len(), pieces.len());
    let mut rebuilt: Vec<Vec<u32>> = Vec::new();
    for ex in &examples {
        let (i, t) = (ids(&ex["input_ids"]), ids(&ex["target_ids"]));
        assert_eq!((i.last(), t.last()), (Some(&1), Some(&1)), "EOS on both");
        assert_eq!(t[0], s0, "targets start with <extra_id_0>");
        let sentinels: Vec<u32> = i.iter().copied().filter(|&x| is_sentinel(x)).collect();
        let expected: Vec<u32> = (0..sentinels.len() as u32).map(|k| s0 - k).collect();
        assert_eq!(
            sentinels, expected,
            "sentinels count down from <extra_id_0>"
        );
        assert!(ex["inputs"].as_str().unwrap().contains("<extra_id_0>"));
        assert!(ex["source"]
            .as_str()
            .unwrap()
            .starts_with("span-corruption:"));
        rebuilt.push(merge(&i, &t, is_sentinel));
    }
    // Full pieces fill the inputs exactly; every piece comes back from inputs + targets.
    let full: Vec<&Value> = examples
        .iter()
        .filter(|e| e["input_ids"].as_array().unwrap().len() == 64)
        .collect();
    assert!(
        full.len() >= pieces.len() - 2,
        "{} of {}",
        full.len(),
        pieces.len()
    );
    assert!(full
        .iter()
        .all(|e| e["target_ids"].as_array().unwrap().len() == targets_len));
    rebuilt.sort();
    pieces.sort();
    assert_eq!(rebuilt, pieces);
}

/// The values of column `name` of a CSV file with a header, one per row.
pub(super) fn log_column(csv: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(k).unwrap_or_default().to_string())
        .collect()
}

/// The raw piece back from a span-corruption example.
fn merge(inputs: &[u32], targets: &[u32], is_sentinel: impl Fn(u32) -> bool) -> Vec<u32> {
    let spans = |v: &[u32]| -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new()];
        for &t in &v[..v.len() - 1] {
            match is_sentinel(t) {
                true => out.push(Vec::new()),
                false => out.last_mut().unwrap().push(t),
            }
        }
        out
    };
    let (kept, dropped) = (spans(inputs), spans(targets));
    let mut out = kept[0].clone();
    for k in 1..kept.len().max(dropped.len()) {
        out.extend(dropped.get(k).into_iter().flatten());
        out.extend(kept.get(k).into_iter().flatten());
    }
    out
}

/// JSON lines with code-point spans: NQ facts, multi-byte names, a sentence without spans and
/// one too long for 64 input tokens.
fn span_corpus(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    let mut add = |text: &str, spans: &[&str]| {
        let spans: Vec<Value> = spans
            .iter()
            .map(|s| {
                let byte = text.find(s).unwrap();
                let start = text[..byte].chars().count();
                let end = start + s.chars().count();
                serde_json::json!({"start": start, "end": end, "type": "ENT"})
            })
            .collect();
        lines.push(serde_json::json!({"text": text, "spans": spans}).to_string());
    };
    for (q, a) in nq_pairs().iter().take(40) {
        add(&format!("{q}: {a}."), &[a.as_str()]);
    }
    add(
        "Antonín Dvořák was born in Nelahozeves in 1841.",
        &["Antonín Dvořák", "Nelahozeves", "1841"],
    );
    add(
        "🚁 The VS-300 was flown by Igor Sikorsky in 1939.",
        &["Igor Sikorsky", "1939"],
    );
    add(
        "Zoë Ångström wrote «Ærø» in 2001.",
        &["Zoë Ångström", "Ærø", "2001"],
    );
    add("A sentence without any salient span.", &[]);
    let long = format!("{} Paris.", "the city of lights is".repeat(30));
    add(&long, &["Paris"]);
    let p = dir.join("spans.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn ssm_examples_match_the_papers_preprocessor_on_multi_byte_text() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let corpus = span_corpus(tmp.path());
    let (m, c) = (model.to_str().unwrap(), corpus.to_str().unwrap());
    let mut args = vec!["pretrain", "--model", m, "--corpus", c, "--out", "unused"];
    args.extend([
        "--objective",
        "ssm",
        "--inputs-length",
        "64",
        "--dump-examples",
        "1000",
    ]);
    let (out, err) = run_ok(&args);
    assert!(
        err.contains("spans.jsonl:45: the masked sentence is")
            && err.contains("longer than the 64"),
        "the long sentence is a counted skip naming its line:\n{err}"
    );
    let key = |v: &Value| {
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (
            s("inputs"),
            s("targets"),
            ids(&v["input_ids"]),
            ids(&v["target_ids"]),
        )
    };
    let mut ours: Vec<_> = dumped(&out).iter().map(key).collect();
    let reference = run_python("pretrain_reference.py", &["ssm", m, c]);
    let mut theirs: Vec<_> = reference
        .lines()
        .map(|l| key(&serde_json::from_str(l).unwrap()))
        .filter(|k| k.2.len() <= 64)
        .collect();
    assert_eq!(theirs.len(), 40 + 3 + 2 + 3);
    // The oracle cut the multi-byte sentences at the right characters.
    let texts: Vec<(&str, &str)> = theirs
        .iter()
        .map(|k| (k.0.as_str(), k.1.as_str()))
        .collect();
    for expected in [
        (
            "nem: _X_ was born in Nelahozeves in 1841.",
            "Antonín Dvořák",
        ),
        (
            "nem: 🚁 The VS-300 was flown by _X_ in 1939.",
            "Igor Sikorsky",
        ),
        ("nem: Zoë Ångström wrote «_X_» in 2001.", "Ærø"),
    ] {
        assert!(texts.contains(&expected), "{expected:?} not in {texts:?}");
    }
    // The dump decodes ids; compare texts through the ids.
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    for k in &mut theirs {
        k.0 = tok.decode(&k.2, false).unwrap();
        k.1 = tok.decode(&k.3, false).unwrap();
    }
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

fn dump_error(args: &[&str]) -> String {
    let (ok, _, err) = run_cbqa(args);
    assert!(!ok, "cbqa {args:?} should fail");
    err
}

#[test]
fn bad_corpora_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let m = model.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let dump = |corpus: &str, objective: &str, model: &str| {
        let args = [
            "pretrain",
            "--model",
            model,
            "--corpus",
            corpus,
            "--objective",
            objective,
            "--out",
            "unused",
            "--dump-examples",
            "3",
        ];
        dump_error(&args)
    };
    let empty = write("empty.txt", "\n  \n");
    let e = dump(&empty, "span-corruption", m);
    assert!(e.contains("empty.txt") && e.contains("no document"), "{e}");
    let plain = write("plain.txt", "Paris is in France.\n");
    let e = dump(&plain, "ssm", m);
    assert!(e.contains("no sentence has a salient span"), "{e}");
    let overlap = write(
        "bad.jsonl",
        "{\"text\": \"ok\"}\n{\"text\": \"abcdef\", \"spans\": [{\"start\": 3, \"end\": 5}, {\"start\": 1, \"end\": 4}]}\n",
    );
    let e = dump(&overlap, "ssm", m);
    assert!(e.contains("bad.jsonl:2:") && e.contains("overlap"), "{e}");
    let outside = write(
        "out.jsonl",
        "{\"text\": \"abc\", \"spans\": [{\"start\": 1, \"end\": 9}]}\n",
    );
    let e = dump(&outside, "ssm", m);
    assert!(
        e.contains("out.jsonl:1:") && e.contains("outside the text"),
        "{e}"
    );
    // A tokenizer without sentinels cannot do span corruption.
    let e = dump(
        &plain,
        "span-corruption",
        fixture("t5_v1_1").to_str().unwrap(),
    );
    assert!(e.contains("<extra_id_0>"), "{e}");
    let missing = tmp.path().join("wiki@3.txt");
    let e = dump(missing.to_str().unwrap(), "span-corruption", m);
    assert!(
        e.contains("wiki-00000-of-00003.txt") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn a_mixture_of_the_real_benchmarks_gets_the_papers_prefixes() {
    let data = data_dir();
    let nq = data.join("nq-open/NQ-open.dev.jsonl");
    let tqa = data.join("triviaqa/topics.dpr.trivia.dev.txt");
    let wq = data.join("webquestions/brmson-main/trainmodel.json");
    let model = fixture("t5_v1_1");
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--out",
        "unused",
    ];
    for f in [&nq, &tqa, &wq] {
        args.extend(["--train", f.to_str().unwrap()]);
    }
    args.extend([
        "--mixing-max",
        "3000",
        "--answer",
        "random",
        "--dump-examples",
        "4000",
    ]);
    let (out, _) = run_ok(&args);
    let examples = dumped(&out);
    assert_eq!(examples.len(), 4000);
    let mut counts = std::collections::BTreeMap::new();
    for ex in &examples {
        let source = ex["source"].as_str().unwrap();
        let inputs = ex["inputs"].as_str().unwrap();
        let prefix = match source {
            s if s.ends_with("NQ-open.dev.jsonl") => "nq question:",
            s if s.ends_with("trivia.dev.txt") => "trivia_qa question:",
            s if s.ends_with("trainmodel.json") => "wq question:",
            s => panic!("unknown source {s}"),
        };
        assert!(inputs.starts_with(prefix), "{source}: {inputs}");
        *counts.entry(prefix).or_insert(0usize) += 1;
    }
    // NQ dev has 3,610 questions and TriviaQA dev 8,837, both capped at 3,000; WebQuestions
    // trainmodel 3,778 → capped too: about a third each.
    for (prefix, n) in &counts {
        assert!(
            (1150..1520).contains(n),
            "{prefix}: {n} of 4000 ({counts:?})"
        );
    }
    // One --prefix per file, or none.
    let mut bad = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--out",
        "unused",
    ];
    bad.extend([
        "--train",
        nq.to_str().unwrap(),
        "--train",
        tqa.to_str().unwrap(),
    ]);
    bad.extend(["--prefix", "q: ", "--dump-examples", "1"]);
    let e = dump_error(&bad);
    assert!(e.contains("1 --prefix for 2 --train files"), "{e}");
}

#[test]
fn a_batch_larger_than_the_training_set_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("t5_v1_1");
    let out = tmp.path().join("run");
    let nq = nq200();
    let args = [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--train",
        nq.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--max-steps",
        "1",
    ];
    let (_, err) = run_ok(&args);
    assert!(
        err.contains(
            "warning: one batch of 196608 tokens is more than the whole training set (200 examples"
        ),
        "{err}"
    );
    assert!(
        err.contains("step 1: loss") && err.contains("tokens/s, ETA"),
        "{err}"
    );
}

fn realm() -> PathBuf {
    fixture("realm")
}

/// (text, [(start, limit, type)]) of every sentence.
type Sentences = Vec<(String, Vec<(usize, usize, String)>)>;

fn read_sentences(pattern: &Path) -> cbqa::Result<Sentences> {
    use cbqa::pretrain::corpus::{documents, expand_patterns};
    let files = expand_patterns(&[pattern.to_path_buf()])?;
    documents(&files)
        .map(|d| {
            let d = d?;
            let spans = d
                .spans
                .into_iter()
                .map(|s| (s.start, s.end, s.kind))
                .collect();
            Ok((d.text, spans))
        })
        .collect()
}

#[test]
fn realm_tfrecords_written_by_a_real_writer_read_back_exactly() {
    let ours = read_sentences(&realm().join("wiki@2.tfrecord.gz")).unwrap();
    let expected: Sentences = std::fs::read_to_string(realm().join("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let spans = v["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let n = |k: &str| s[k].as_u64().unwrap() as usize;
                    (
                        n("start"),
                        n("limit"),
                        s["type"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (v["text"].as_str().unwrap().to_string(), spans)
        })
        .collect();
    assert_eq!(ours, expected);
    // The span across two sentences is dropped, as TFDS's sentences config drops it.
    assert!(ours
        .iter()
        .any(|(t, s)| t == "It ends in Port" && s.is_empty()));
    let globbed = read_sentences(&realm().join("wiki-*.tfrecord.gz")).unwrap();
    assert_eq!(globbed, ours);
    // SSM examples from them: one per span.
    let spans: usize = ours.iter().map(|(_, s)| s.len()).sum();
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let corpus = realm().join("wiki@2.tfrecord.gz");
    let mut args = vec![
        "pretrain",
        "--model",
        model.to_str().unwrap(),
        "--out",
        "unused",
    ];
    args.extend(["--corpus", corpus.to_str().unwrap(), "--objective", "ssm"]);
    args.extend(["--dump-examples", "100"]);
    let (out, _) = run_ok(&args);
    assert_eq!(dumped(&out).len(), spans);
}

/// The records of the first fixture shard, uncompressed.
fn raw_shard() -> Vec<u8> {
    use std::io::Read;
    let gz = std::fs::File::open(realm().join("wiki-00000-of-00002.tfrecord.gz")).unwrap();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

#[test]
fn corrupt_or_truncated_tfrecords_name_the_record() {
    let raw = raw_shard();
    let first_len = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let second = 12 + first_len + 4;
    let tmp = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: &[u8], what: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_sentences(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(what), "{name}: {e}");
    };
    let mut flipped = raw.clone();
    flipped[second + 12 + 3] ^= 0x20;
    check(
        "flipped.tfrecord",
        &flipped,
        "record 2: the CRC of the record data does not match",
    );
    let mut bad_len = raw.clone();
    bad_len[second] ^= 1;
    check(
        "len.tfrecord",
        &bad_len,
        "record 2: the CRC of the record length",
    );
    check("cut.tfrecord", &raw[..raw.len() - 3], "record 2: truncated");
    check(
        "head.tfrecord",
        &raw[..second + 5],
        "record 2: truncated: 5 of the 12 header bytes",
    );
    // the intact stream, uncompressed, reads as the shard does
    let p = tmp.path().join("plain.tfrecord");
    std::fs::write(&p, &raw).unwrap();
    assert_eq!(read_sentences(&p).unwrap().len(), 5);
}

#[test]
fn dates_tagged_in_rust_and_by_the_annotator_script_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let text = tmp.path().join("raw.txt");
    let lines = [
        "Antonín Dvořák was born on 8 September 1841 and died on May 1, 1904.",
        "The VS-300 first flew on 1939-09-14; Sikorsky was born in 1889.",
        "No date here, only 18410 people and 2,1841 votes.",
    ];
    std::fs::write(&text, lines.join("\n") + "\n").unwrap();
    let annotated = tmp.path().join("raw.jsonl");
    let (t, a) = (text.to_str().unwrap(), annotated.to_str().unwrap());
    run_python("annotate_spans.py", &[t, a, "--dates-only"]);
    let m = model.to_str().unwrap();
    let dump = |corpus: &str, extra: &[&str]| {
        let mut args = vec![
            "pretrain", "--model", m, "--corpus", corpus, "--out", "unused",
        ];
        args.extend(["--objective", "ssm", "--dump-examples", "100"]);
        args.extend(extra);
        let (out, _) = run_ok(&args);
        let mut v: Vec<String> = dumped(&out)
            .iter()
            .map(|e| {
                e["inputs"].as_str().unwrap().to_string() + " → " + e["targets"].as_str().unwrap()
            })
            .collect();
        v.sort();
        v
    };
    let ours = dump(t, &["--tag-dates"]);
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert_eq!(ours, dump(a, &[]));
}

/// Every example of `store` in epoch `epoch`, as (inputs, targets).
fn stored_examples(store: &DiskExamples, epoch: u64) -> Vec<(Vec<i64>, Vec<i64>)> {
    (0..store.count())
        .map(|i| store.example(i, epoch).unwrap())
        .collect()
}

/// In-memory examples as (inputs, targets) ids.
fn as_rows(examples: &[cbqa::pretrain::Example]) -> Vec<(Vec<i64>, Vec<i64>)> {
    let wide = |v: &[u32]| v.iter().map(|&t| i64::from(t)).collect::<Vec<i64>>();
    examples
        .iter()
        .map(|e| (wide(&e.inputs), wide(&e.targets)))
        .collect()
}

#[test]
fn the_example_file_holds_the_in_memory_examples_of_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let vocab = tok.get_vocab_size(true);
    let mut p = PretrainSettings::new(vec![text_corpus(tmp.path())], Objective::SpanCorruption);
    p.span_corruption.inputs_length = 64;
    let memory = build_examples(&p, &tok, 1, 9).unwrap();
    let pieces = memory
        .pieces
        .clone()
        .expect("span corruption keeps its pieces");
    // u16 ids for this vocabulary, u32 for one past 65,536 ids: the same examples either way.
    for (vocab_size, width) in [(vocab, 2), (65_537, 4)] {
        let path = tmp.path().join(format!("examples-{width}.bin"));
        let (store, counts) = DiskExamples::write(&p, &tok, 1, 9, vocab_size, &path).unwrap();
        assert_eq!(store.id_width(), width);
        assert_eq!(counts, memory.counts);
        assert_eq!(store.count(), memory.examples.len());
        let raw_tokens: usize = pieces.raw.iter().map(Vec::len).sum();
        let bytes = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(bytes, raw_tokens * width, "the raw pieces, once");
        for epoch in 0..3 {
            let expected = as_rows(&pieces.examples(epoch_seed(9, epoch)));
            assert_eq!(stored_examples(&store, epoch), expected, "epoch {epoch}");
            for (i, (input, target)) in expected.iter().enumerate() {
                assert_eq!(
                    (store.input_len(i), store.target_len(i, 0)),
                    (input.len(), target.len())
                );
            }
        }
        // The temporary file goes with the store unless it was moved into a run directory.
        drop(store);
        assert!(!path.exists());
    }
    // With fixed masks every epoch reads epoch 0's examples; the moved file is kept.
    p.masks = MaskDraw::Fixed;
    let path = tmp.path().join("fixed.bin");
    let (mut store, _) = DiskExamples::write(&p, &tok, 1, 9, vocab, &path).unwrap();
    assert_eq!(stored_examples(&store, 2), as_rows(&memory.examples));
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    store.move_into(&run).unwrap();
    assert_eq!(stored_examples(&store, 1), as_rows(&memory.examples));
    drop(store);
    assert!(run.join(cbqa::train::store::EXAMPLES_FILE).is_file());
    // SSM examples are stored as inputs then targets.
    let ssm = PretrainSettings::new(vec![span_corpus(tmp.path())], Objective::Ssm);
    let memory = build_examples(&ssm, &tok, 1, 0).unwrap();
    let path = tmp.path().join("ssm.bin");
    let (store, counts) = DiskExamples::write(&ssm, &tok, 1, 0, vocab, &path).unwrap();
    assert_eq!(counts.skipped_total, memory.counts.skipped_total);
    assert_eq!(stored_examples(&store, 4), as_rows(&memory.examples));
    // 65,536 ids still fit u16.
    let (store, _) =
        DiskExamples::write(&p, &tok, 1, 9, 65_536, &tmp.path().join("u16.bin")).unwrap();
    assert_eq!(store.id_width(), 2);
    // A corpus that cannot be read is an error naming it, and leaves no file.
    let narrow = tmp.path().join("narrow.bin");
    let bad = cbqa::pretrain::PretrainSettings {
        corpus: vec![tmp.path().join("missing.txt")],
        ..p.clone()
    };
    let e = DiskExamples::write(&bad, &tok, 1, 9, vocab, &narrow).unwrap_err();
    assert!(e.to_string().contains("missing.txt"), "{e}");
    assert!(!narrow.exists(), "a failed write leaves no file");
}
