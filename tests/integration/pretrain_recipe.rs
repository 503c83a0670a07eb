//! The dev loss of `cbqa train`/`cbqa pretrain` against transformers, `--recipe roberts2020`,
//! and the eval prefix a checkpoint records and `cbqa export`/`eval`/`predict` carry on.

use super::common::run_python;
use super::pretrain::{dumped, nq200, run_ok, text_corpus, tiny_model};
use cbqa::pretrain::span_corruption::SpanCorruptionSettings;
use cbqa::pretrain::{Objective, PretrainSettings};
use cbqa::train::{TrainSettings, Trainer};
use std::path::Path;

/// The dev loss the trainer computes for the model as loaded (no step taken).
fn untrained_dev_loss(s: &TrainSettings) -> f64 {
    let trainer = Trainer::new(s).unwrap();
    trainer.dev_loss().unwrap().expect("a dev set")
}

/// transformers' loss on the examples `cbqa … --dump-examples` printed.
fn transformers_loss(model: &Path, dump: &str, file: &Path) -> f64 {
    std::fs::write(file, dump).unwrap();
    let args = [model.to_str().unwrap(), file.to_str().unwrap()];
    run_python("dev_loss_reference.py", &args)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn dev_loss_of_an_untrained_model_is_transformers_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let corpus = text_corpus(tmp.path());
    let (m, c) = (model.to_str().unwrap(), corpus.to_str().unwrap());
    // Span corruption: the dev corpus is the training corpus, so its examples (same seed, same
    // masks) are what --dump-examples prints.
    let mut args = vec!["pretrain", "--model", m, "--corpus", c, "--out", "unused"];
    args.extend(["--objective", "span-corruption", "--inputs-length", "64"]);
    args.extend(["--dump-examples", "100000"]);
    let (dump, _) = run_ok(&args);
    assert!(dumped(&dump).len() > 20);
    let theirs = transformers_loss(&model, &dump, &tmp.path().join("sc.jsonl"));
    let mut p = PretrainSettings::new(vec![corpus.clone()], Objective::SpanCorruption);
    p.span_corruption = SpanCorruptionSettings {
        inputs_length: 64,
        ..SpanCorruptionSettings::default()
    };
    let mut s = TrainSettings::new(model.clone(), corpus.clone(), tmp.path().join("run-sc"));
    (s.max_input_len, s.max_target_len) = p.lengths();
    s.pretrain = Some(p);
    s.dev = Some(corpus.clone());
    (s.device, s.max_steps, s.micro_batch_tokens) = ("cpu".into(), Some(1), 500);
    let ours = untrained_dev_loss(&s);
    assert!(
        (ours - theirs).abs() < 1e-4,
        "span corruption: cbqa {ours}, transformers {theirs}"
    );
    // QA: the dev loss is on each question's first answer, the training target of --answer first.
    let nq = nq200();
    let (dump, _) = run_ok(&[
        "train",
        "--model",
        m,
        "--train",
        nq.to_str().unwrap(),
        "--out",
        "unused",
        "--dump-examples",
        "1000",
    ]);
    let theirs = transformers_loss(&model, &dump, &tmp.path().join("qa.jsonl"));
    let mut s = TrainSettings::new(model.clone(), nq.clone(), tmp.path().join("run-qa"));
    s.dev = Some(nq.clone());
    (s.device, s.max_steps, s.micro_batch_tokens) = ("cpu".into(), Some(1), 300);
    let ours = untrained_dev_loss(&s);
    assert!(
        (ours - theirs).abs() < 1e-4,
        "QA: cbqa {ours}, transformers {theirs}"
    );
}
