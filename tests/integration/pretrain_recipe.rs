//! The dev loss of `cbqa train`/`cbqa pretrain` against transformers, `--recipe roberts2020`,
//! and the eval prefix a checkpoint records and `cbqa export`/`eval`/`predict` carry on.

use super::common::{data_dir, fixture, run_cbqa, run_python};
use super::pretrain::{dumped, nq200, run_ok, text_corpus, tiny_model};
use cbqa::pretrain::span_corruption::SpanCorruptionSettings;
use cbqa::pretrain::{Objective, PretrainSettings};
use cbqa::train::{apply_recipe, Given, Recipe, TrainSettings, Trainer};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The dev loss the trainer computes for the model as loaded (no step taken).
fn untrained_dev_loss(s: &TrainSettings) -> f64 {
    // Not while another test trains in this process (see `train::serial`).
    let _serial = super::train::serial();
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

/// WebQuestions' train file as released (brmson's JSON array), copied as `train.json`, so only
/// its format says it is WebQuestions.
fn wq_train_renamed(dir: &Path) -> PathBuf {
    let p = dir.join("train.json");
    std::fs::copy(
        data_dir().join("webquestions/brmson-main/trainmodel.json"),
        &p,
    )
    .unwrap();
    p
}

/// (batch_tokens, dropout) the recipe picks for `model` on `train`, with `given` explicit.
fn recipe_for(model: &str, train: &Path, given: Given) -> (usize, f64, Vec<String>) {
    let mut s = TrainSettings::new(fixture(model), train.to_path_buf(), "unused".into());
    s.dropout = 0.3;
    s.batch_tokens = 1000;
    apply_recipe(&mut s, Recipe::Roberts2020, given).unwrap();
    let lines = s.recipe.unwrap().settings;
    (s.batch_tokens, s.dropout, lines)
}

#[test]
fn the_roberts2020_recipe_follows_the_model_and_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let wq = wq_train_renamed(tmp.path());
    let nq = nq200();
    let none = Given::default();
    // T5 (relu): 0.1, WebQuestions halves the batch and doubles the dropout.
    assert_eq!(recipe_for("t5_v1_0", &nq, none).0, 196_608);
    assert_eq!(recipe_for("t5_v1_0", &nq, none).1, 0.1);
    let (batch, dropout, lines) = recipe_for("t5_v1_0", &wq, none);
    assert_eq!((batch, dropout), (98_304, 0.2), "{lines:?}");
    assert!(lines[3].contains("WebQuestions"), "{lines:?}");
    // T5.1.1 (gated-gelu in config.json): 0.05 on every dataset.
    assert_eq!(recipe_for("t5_v1_1", &nq, none).1, 0.05);
    assert_eq!(recipe_for("t5_v1_1", &wq, none).0, 98_304);
    assert_eq!(recipe_for("t5_v1_1", &wq, none).1, 0.05);
    // What is given explicitly wins.
    let given = Given {
        dropout: true,
        ..Given::default()
    };
    let (batch, dropout, lines) = recipe_for("t5_v1_0", &wq, given);
    assert_eq!((batch, dropout), (98_304, 0.3));
    assert_eq!(lines[3], "dropout = 0.3 (given)");

    // On the command line: printed at the start, stored in the run and in the checkpoint.
    let run = tmp.path().join("run");
    let m = fixture("t5_v1_0");
    let (_, err) = run_ok(&[
        "train",
        "--recipe",
        "roberts2020",
        "--model",
        m.to_str().unwrap(),
        "--train",
        wq.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--batch-tokens",
        "300",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    assert!(
        err.contains("recipe roberts2020: optimizer = adafactor (the paper's), lr = 0.001")
            && err.contains("batch_tokens = 300 (given)")
            && err.contains("dropout = 0.2 (doubled for WebQuestions)"),
        "{err}"
    );
    let json = |p: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let record = json(run.join("checkpoint-1/cbqa_training.json"));
    assert_eq!(record["dropout"], 0.2);
    assert_eq!(record["batch_tokens"], 300);
    assert_eq!(record["recipe"]["webquestions"], true);
    assert_eq!(record["eval_prefixes"]["by_benchmark"]["wq"], "");
    assert_eq!(json(run.join("run.json"))["dropout"], 0.2);
}

/// The first `n` questions of DPR's WebQuestions test file (JSON lines), named as WebQuestions.
fn wq_head(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(data_dir().join("webquestions/dpr/topics.dpr.wq.test.txt"))
        .unwrap();
    let p = dir.join("wq-small.jsonl");
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn the_prefixes_a_model_was_trained_with_are_its_eval_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let (nq, wq) = (nq200(), wq_head(tmp.path(), 40));
    let run = tmp.path().join("run");
    let m = fixture("t5_v1_0");
    run_ok(&[
        "train",
        "--model",
        m.to_str().unwrap(),
        "--train",
        nq.to_str().unwrap(),
        "--train",
        wq.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--batch-tokens",
        "300",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    let ckpt = run.join("checkpoint-1");
    let export = tmp.path().join("export");
    run_ok(&[
        "export",
        "--model",
        ckpt.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
        "--no-validate",
    ]);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("cbqa_export.json")).unwrap())
            .unwrap();
    let prefixes = &meta["eval_prefixes"];
    assert_eq!(prefixes["default"], "nq question: ", "{meta}");
    assert_eq!(prefixes["by_benchmark"]["wq"], "wq question: ", "{meta}");
    assert_eq!(prefixes["by_benchmark"]["nq"], "nq question: ", "{meta}");
    let e = export.to_str().unwrap();
    // predict: the default prefix is the first training file's; an explicit one wins.
    let predict = |extra: &[&str]| {
        let mut args = vec!["predict", "--model", e, "--format", "jsonl", "--beams", "2"];
        args.extend_from_slice(extra);
        args.extend(["who wrote hamlet", "where is the eiffel tower"]);
        run_ok(&args).0
    };
    let default = predict(&[]);
    assert_eq!(default, predict(&["--prefix", "nq question: "]));
    assert_ne!(
        default,
        predict(&["--prefix", ""]),
        "the prefix changes the scores"
    );
    // eval: the prefix of the data file's benchmark, on ONNX and on the checkpoint (tch).
    let c = ckpt.to_str().unwrap();
    for (model, backend) in [(e, "ort"), (c, "tch")] {
        let eval = |name: &str, extra: &[&str]| {
            let out = tmp.path().join(name);
            let mut args = vec!["eval", "--model", model, "--backend", backend];
            args.extend(["--data", wq.to_str().unwrap(), "--limit", "8"]);
            args.extend(["--out", out.to_str().unwrap(), "--beams", "2"]);
            args.extend_from_slice(extra);
            let (ok, _, err) = run_cbqa(&args);
            assert!(ok, "{err}");
            (
                std::fs::read_to_string(out.join("predictions.csv")).unwrap(),
                err,
            )
        };
        let (default, err) = eval(&format!("{backend}-default"), &[]);
        assert!(err.contains("prefix \"wq question: \""), "{err}");
        let (explicit, _) = eval(&format!("{backend}-wq"), &["--prefix", "wq question: "]);
        assert_eq!(default, explicit, "{backend}");
    }
}
