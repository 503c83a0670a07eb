//! `cbqa train`: knowledge really goes into the parameters, resuming is exact (also after Ctrl-C),
//! and faults (NaN loss, corrupt checkpoint, absent GPU) are clear errors.

use super::model_parity::{fixture, venv_python};
use cbqa::init::{init_model, InitOptions, TokenizerSource};
use cbqa::train::{self, load_settings, OptimizerChoice, TrainSettings};
use cbqa::T5Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// libtorch's default RNG (dropout) is global to the process and the trainer reseeds it every
/// step, so trainings in one process must not overlap; tests that train in-process hold this,
/// and so do tests that build a `Trainer` (building a T5 draws its initial weights from that
/// RNG before loading the checkpoint's).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(super) fn serial() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|e| e.into_inner())
}

fn nq200() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval/demo/nq-open-200.jsonl")
}

/// The first `n` lines of the bundled NQ questions, as a file in `dir`.
fn nq_head(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(nq200()).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    let p = dir.join(format!("nq{n}.jsonl"));
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Small, fast settings on the t5_v1_1 fixture model (dropout on, several steps per epoch).
fn small_settings(data: &Path, out: &Path) -> TrainSettings {
    let mut s = TrainSettings::new(fixture("t5_v1_1"), data.to_path_buf(), out.to_path_buf());
    s.device = "cpu".into();
    s.batch_tokens = 200;
    s.micro_batch_tokens = 120;
    s.max_steps = Some(6);
    s.threads = Some(1);
    s
}

fn file_bytes(run: &Path, step: u64, name: &str) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoint-{step}")).join(name)).unwrap()
}

#[test]
fn resume_ends_with_the_same_parameters_as_an_uninterrupted_run() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let stop = AtomicBool::new(false);
    for optimizer in [OptimizerChoice::Adafactor, OptimizerChoice::Adamw] {
        let full = tmp.path().join(format!("{optimizer:?}-full"));
        let mut s = small_settings(&data, &full);
        s.optimizer = optimizer;
        let a = train::train(&s, false, &stop).unwrap();
        assert_eq!(a.steps, 6);

        let part = tmp.path().join(format!("{optimizer:?}-part"));
        let mut s = small_settings(&data, &part);
        s.optimizer = optimizer;
        s.max_steps = Some(4);
        train::train(&s, false, &stop).unwrap();
        let mut s = load_settings(&part).unwrap();
        s.max_steps = Some(6);
        let b = train::train(&s, true, &stop).unwrap();
        assert_eq!(b.steps, 6);
        // More than one epoch was crossed, so the data order was recomputed on resume.
        let log = std::fs::read_to_string(part.join("train_log.csv")).unwrap();
        assert_eq!(log.lines().count(), 7, "{log}");
        assert!(log.lines().last().unwrap().split(',').nth(1).unwrap() != "0");
        for f in ["model.safetensors", "optimizer.safetensors"] {
            assert!(
                file_bytes(&full, 6, f) == file_bytes(&part, 6, f),
                "{optimizer:?}: {f} differs between the resumed and the uninterrupted run"
            );
        }
    }
}

#[test]
fn sigint_writes_a_checkpoint_and_resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let bin = env!("CARGO_BIN_EXE_cbqa");
    let run = tmp.path().join("run");
    let args = |run: &Path, steps: &str| -> Vec<String> {
        [
            "train",
            "--model",
            fixture("t5_v1_1").to_str().unwrap(),
            "--train",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch-tokens",
            "200",
            "--micro-batch-tokens",
            "120",
            "--threads",
            "1",
            "--max-steps",
            steps,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut child = Command::new(bin)
        .args(args(&run, "100000"))
        .spawn()
        .unwrap();
    let log = run.join("train_log.csv");
    let t0 = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "training did not start"
        );
        assert!(child.try_wait().unwrap().is_none(), "training exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status after SIGINT");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let last = state["last"].as_str().unwrap().to_string();
    let k: u64 = last.trim_start_matches("checkpoint-").parse().unwrap();
    let rows = std::fs::read_to_string(&log).unwrap().lines().count() as u64 - 1;
    assert_eq!(k, rows, "the checkpoint is at the last logged step");

    let target = (k + 3).to_string();
    let out = Command::new(bin)
        .args([
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--max-steps",
            &target,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = tmp.path().join("full");
    let out = Command::new(bin)
        .args(args(&full, &target))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = k + 3;
    assert!(
        file_bytes(&run, n, "model.safetensors") == file_bytes(&full, n, "model.safetensors"),
        "interrupted at step {k} and resumed: parameters differ from the uninterrupted run"
    );
}

#[test]
fn nan_loss_stops_with_the_last_good_checkpoint() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let run = tmp.path().join("run");
    let mut s = small_settings(&data, &run);
    // An absurd learning rate blows the parameters up within a few steps.
    s.optimizer = OptimizerChoice::Adamw;
    s.lr = 1e30;
    s.max_steps = Some(50);
    s.save_every = 1;
    let err = train::train(&s, false, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the training loss is") || err.contains("is not finite at step"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint is"), "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let last = state["last"].as_str().unwrap();
    assert!(err.contains(last), "{err} should name {last}");
    let dir = cbqa::ModelDir::open(&run.join(last)).unwrap();
    let t5 = cbqa::model::T5::from_model_dir(&dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    for (name, p) in t5.named_parameters() {
        assert!(
            p.isfinite().all().int64_value(&[]) == 1,
            "{name} is not finite in the last good checkpoint"
        );
    }
}

#[test]
fn corrupt_checkpoint_or_missing_gpu_is_an_error() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 12);
    let run = tmp.path().join("run");
    let mut s = small_settings(&data, &run);
    s.max_steps = Some(2);
    let stop = AtomicBool::new(false);
    train::train(&s, false, &stop).unwrap();
    // A second fresh run into the same directory is refused.
    let e = train::train(&s, false, &stop).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("resume"), "{e}");
    // Truncate the optimizer state: resuming must fail, not start afresh.
    let opt = run.join("checkpoint-2").join("optimizer.safetensors");
    let bytes = std::fs::read(&opt).unwrap();
    std::fs::write(&opt, &bytes[..bytes.len() / 2]).unwrap();
    let mut r = load_settings(&run).unwrap();
    r.max_steps = Some(4);
    let e = train::train(&r, true, &stop).unwrap_err().to_string();
    assert!(e.contains("optimizer.safetensors"), "{e}");
    let model = run.join("checkpoint-2").join("model.safetensors");
    std::fs::write(&model, b"not safetensors").unwrap();
    let e = train::train(&r, true, &stop).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // No run at all.
    let e = train::train(&r.clone(), true, &stop);
    assert!(e.is_err());
    let mut nothing = r.clone();
    nothing.out = tmp.path().join("nothing");
    let e = train::train(&nothing, true, &stop).unwrap_err().to_string();
    assert!(
        e.contains("no state.json") || e.contains("cannot read"),
        "{e}"
    );

    if !tch::Cuda::is_available() {
        let mut g = small_settings(&data, &tmp.path().join("gpu"));
        g.device = "cuda".into();
        let e = train::train(&g, false, &stop).unwrap_err().to_string();
        assert!(e.contains("no CUDA device"), "{e}");
    }
}

#[test]
fn knowledge_goes_into_the_parameters() {
    let _serial = serial();
    // A tiny T5 from `cbqa init` learns 200 real NQ-open questions by heart.
    let tmp = tempfile::tempdir().unwrap();
    let data = nq200();
    let model = tmp.path().join("model");
    init_model(&InitOptions {
        config: T5Config::preset("tiny").unwrap(),
        tokenizer: TokenizerSource::Train {
            data: data.clone(),
            vocab_size: 2048,
            extra_ids: 0,
        },
        out: model.clone(),
        force: false,
        seed: 1,
    })
    .unwrap();
    let run = tmp.path().join("run");
    let mut s = TrainSettings::new(model, data.clone(), run.clone());
    s.dev = Some(data);
    s.device = "cpu".into();
    // From scratch (not the paper's pre-trained start), AdamW at 3e-3 without dropout memorises
    // in 100-150 steps; the paper's AdaFactor at 1e-3 is tuned for fine-tuning pre-trained T5.
    s.optimizer = OptimizerChoice::Adamw;
    s.lr = 3e-3;
    s.dropout = 0.0;
    s.batch_tokens = 2000;
    // ~96-98% by step 150; 200 leaves a margin for run-to-run variation of the trained
    // tokenizer.
    s.max_steps = Some(200);
    s.threads = Some(1);
    let t0 = Instant::now();
    let out = train::train(&s, false, &AtomicBool::new(false)).unwrap();
    let em = out.final_em.unwrap();
    eprintln!(
        "knowledge packing: EM {em:.1} on the 200 training questions after {} steps, {:.0} s",
        out.steps,
        t0.elapsed().as_secs_f64()
    );
    assert!(em >= 95.0, "exact match {em} < 95");

    // transformers loads the checkpoint and answers the same.
    let py = venv_python();
    let ckpt = out.last_checkpoint;
    let script = r#"
import json, sys, torch
from transformers import T5ForConditionalGeneration, PreTrainedTokenizerFast
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
d = sys.argv[1]
m, info = T5ForConditionalGeneration.from_pretrained(d, output_loading_info=True)
assert not any(info.values()), info
m.eval()
tok = PreTrainedTokenizerFast(tokenizer_file=d + "/tokenizer.json", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
qs = [json.loads(l)["question"] for l in open(sys.argv[2])][:20]
enc = tok(qs, padding=True, return_tensors="pt", return_token_type_ids=False)
with torch.no_grad():
    out = m.generate(**enc, max_new_tokens=32, do_sample=False, num_beams=1,
                     past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()))
print(json.dumps(tok.batch_decode(out, skip_special_tokens=True)))
"#;
    let res = Command::new(&py)
        .args([
            "-c",
            script,
            ckpt.to_str().unwrap(),
            nq200().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let theirs: Vec<String> = serde_json::from_slice(&res.stdout).unwrap();
    let dir = cbqa::ModelDir::open(&ckpt).unwrap();
    let backend = cbqa::runtime::tch::TchSeq2Seq::load(&dir, tch::Device::Cpu).unwrap();
    let questions = cbqa::train::data::read_qa(&nq200(), false, true)
        .unwrap()
        .examples;
    let texts: Vec<&str> = questions[..20]
        .iter()
        .map(|q| q.question.as_str())
        .collect();
    let inputs: Vec<cbqa::generate::Prepared> =
        cbqa::generate::encode_questions(&dir.tokenizer, &texts, "", 512, 1)
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let opts = train::greedy_options(&dir.config, &dir.generation, 32);
    let ours = train::predict(&backend, &dir.tokenizer, &inputs, &opts, 8).unwrap();
    assert_eq!(
        ours, theirs,
        "transformers answers differently from our checkpoint"
    );

    // The trained checkpoint through export: fp32 in both runtimes keeps the exact match, and
    // the int8 export stays within 1 point of it (the accuracy bar for int8).
    let refs = cbqa::data::Dataset::read(nq200(), &Default::default())
        .unwrap()
        .examples;
    let qs: Vec<&str> = refs.iter().map(|e| e.question.as_str()).collect();
    let mut ems = Vec::new();
    for (quant, kind) in [
        (
            cbqa::export::Quantize::None,
            cbqa::runtime::BackendKind::Ort,
        ),
        (
            cbqa::export::Quantize::None,
            cbqa::runtime::BackendKind::Tract,
        ),
        (
            cbqa::export::Quantize::Int8,
            cbqa::runtime::BackendKind::Ort,
        ),
    ] {
        let onnx = tmp.path().join(format!("onnx-{quant:?}"));
        if !onnx.exists() {
            let mut o = cbqa::export::ExportOptions::new(&ckpt, &onnx);
            o.quantize = quant;
            cbqa::export::export(&o).unwrap();
        }
        let mut opts = cbqa::AnswererOptions::default();
        opts.backend.kind = kind;
        let a = cbqa::Answerer::load(&onnx, opts).unwrap();
        let preds: Vec<cbqa::eval::Prediction> = a
            .answer_batch(&qs)
            .into_iter()
            .map(|r| cbqa::eval::Prediction::new(r.unwrap().text))
            .collect();
        let s = cbqa::eval::score_examples(&preds, &refs, cbqa::eval::Normalizer::Squad).unwrap();
        eprintln!("{quant:?} {kind:?}: EM {:.2}", s.aggregate.em);
        ems.push(s.aggregate.em);
    }
    assert!(
        (ems[0] - em).abs() < 1e-9,
        "ort fp32 EM {} != tch EM {em}",
        ems[0]
    );
    assert_eq!(ems[0], ems[1], "ort and tract disagree");
    assert!(
        (ems[2] - ems[0]).abs() <= 1.0,
        "int8 EM {} vs fp32 {}",
        ems[2],
        ems[0]
    );
}

#[test]
fn the_effective_batch_does_not_depend_on_micro_batching() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let stop = AtomicBool::new(false);
    // A normally initialised model: the fixtures' initializer_factor 3 makes training chaotic
    // (rounding differences grow by orders of magnitude per step), which would test nothing.
    let model = tmp.path().join("model");
    init_model(&InitOptions {
        config: T5Config::preset("tiny").unwrap(),
        tokenizer: TokenizerSource::Train {
            data: data.clone(),
            vocab_size: 400,
            extra_ids: 0,
        },
        out: model.clone(),
        force: false,
        seed: 3,
    })
    .unwrap();
    let mut params = Vec::new();
    for (name, micro) in [("one", 100_000), ("many", 60)] {
        let run = tmp.path().join(name);
        let mut s = small_settings(&data, &run);
        s.model = model.clone();
        s.dropout = 0.0;
        s.max_steps = None;
        s.epochs = Some(2);
        s.micro_batch_tokens = micro;
        let out = train::train(&s, false, &stop).unwrap();
        let log = std::fs::read_to_string(run.join("train_log.csv")).unwrap();
        let epochs: Vec<&str> = log
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(epochs.first(), Some(&"0"));
        assert_eq!(epochs.last(), Some(&"1"), "two epochs: {log}");
        assert_eq!(out.steps as usize, epochs.len());
        let tensors: std::collections::HashMap<String, tch::Tensor> =
            tch::Tensor::read_safetensors(out.last_checkpoint.join("model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        params.push(tensors);
    }
    let mut worst: f64 = 0.0;
    for (k, a) in &params[0] {
        let d = (a - &params[1][k]).abs().max().double_value(&[]);
        worst = worst.max(d);
    }
    eprintln!("one micro-batch vs many: max abs param diff {worst:.3e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn bf16_mixed_precision_trains_on_the_cpu_too() {
    // The code path `--device cuda --precision bf16` takes, run on the CPU.
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let stop = AtomicBool::new(false);
    let mut first = Vec::new();
    for precision in [train::Precision::Fp32, train::Precision::Bf16] {
        let run = tmp.path().join(format!("{precision:?}"));
        let mut s = small_settings(&data, &run);
        s.precision = precision;
        s.dropout = 0.0;
        s.max_steps = Some(3);
        let out = train::train(&s, false, &stop).unwrap();
        assert!(out.last_loss.unwrap().is_finite());
        let log = std::fs::read_to_string(run.join("train_log.csv")).unwrap();
        let loss: f64 = log
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        first.push(loss);
        // Parameters stay fp32 in the checkpoint.
        let dir = cbqa::ModelDir::open(&out.last_checkpoint).unwrap();
        assert_eq!(format!("{:?}", dir.weights.dtype()), "F32");
    }
    let rel = (first[0] - first[1]).abs() / first[0];
    eprintln!(
        "first-step loss fp32 {} vs bf16 {} (relative {rel:.2e})",
        first[0], first[1]
    );
    assert!(rel < 2e-2, "{first:?}");
    assert!(first[0] != first[1], "bf16 should actually compute in bf16");
}

/// The encoder the trainer used before it shared the decoder's question encoder: ids without
/// special tokens, cut to `max_len - 1`, then `</s>`. Kept here as the oracle.
fn old_encode(tok: &tokenizers::Tokenizer, text: &str, eos: i64, max_len: usize) -> Vec<i64> {
    let enc = tok.encode(text, false).unwrap();
    let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
    ids.truncate(max_len.saturating_sub(1));
    ids.push(eos);
    ids
}

#[test]
fn training_inputs_and_targets_keep_their_token_ids() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // The fixtures' tokenizers (transformers' T5 tokenizer.json) and one trained by `cbqa init`.
    let demo = tmp.path().join("demo");
    init_model(&InitOptions {
        config: T5Config::preset("tiny").unwrap(),
        tokenizer: TokenizerSource::Train {
            data: nq200(),
            vocab_size: 2048,
            extra_ids: 0,
        },
        out: demo.clone(),
        force: false,
        seed: 1,
    })
    .unwrap();
    let models = [fixture("t5_v1_0"), fixture("t5_v1_1"), demo];
    let files = [
        "nq-open/NQ-open.dev.jsonl",
        "triviaqa/topics.dpr.trivia.dev.txt",
        "webquestions/dpr/topics.dpr.wq.test.txt",
    ];
    let mut examples = Vec::new();
    for rel in files {
        let path = crate::support::data_file(rel);
        let mut read = train::data::read_qa(&path, true, true).unwrap().examples;
        read.truncate(1500);
        examples.extend(read);
    }
    let mut compared = 0usize;
    for model in &models {
        let dir = cbqa::ModelDir::open(model).unwrap();
        let (tok, eos) = (&dir.tokenizer, dir.config.eos_id());
        // Full length, and limits short enough that many inputs and targets are cut.
        for (prefix, max_in, max_target) in [("", 512, 128), ("nq question: ", 12, 3)] {
            let ours =
                train::data::tokenize(tok, &examples, prefix, eos, max_in, max_target).unwrap();
            for (ex, got) in examples.iter().zip(&ours) {
                let text = format!("{prefix}{}", ex.question);
                let want = old_encode(tok, &text, i64::from(eos), max_in);
                assert_eq!(got.input, want, "{}: input of {text:?}", model.display());
                assert_eq!(got.targets.len(), ex.answers.len());
                for (a, t) in ex.answers.iter().zip(&got.targets) {
                    let want = old_encode(tok, a, i64::from(eos), max_target);
                    assert_eq!(*t, want, "{}: target {a:?}", model.display());
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 20_000, "{compared}");
}

/// The dev loss the trainer computes for the model in `model` (no step taken), with `s`'s data.
fn dev_loss_of(s: &TrainSettings, model: &Path, out: &Path) -> f64 {
    let mut check = s.clone();
    (check.model, check.out) = (model.to_path_buf(), out.to_path_buf());
    let trainer = train::Trainer::new(&check).unwrap();
    trainer.dev_loss().unwrap().expect("a dev set")
}

#[test]
fn the_lowest_dev_loss_is_kept_in_best_across_a_resume() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = nq_head(tmp.path(), 24);
    let text = std::fs::read_to_string(nq200()).unwrap();
    let dev = tmp.path().join("dev16.jsonl");
    let dev_lines: Vec<&str> = text.lines().skip(100).take(16).collect();
    std::fs::write(&dev, dev_lines.join("\n") + "\n").unwrap();
    // AdamW at lr 0.2 brings the dev loss down for 6 steps, then overshoots: it rises after.
    let settings = |out: &Path, steps: u64| {
        let mut s = small_settings(&data, out);
        (s.optimizer, s.lr, s.max_steps) = (OptimizerChoice::Adamw, 0.2, Some(steps));
        (s.dev, s.eval_every, s.eval_max_new_tokens) = (Some(dev.clone()), 2, 4);
        s
    };
    let stop = AtomicBool::new(false);
    let full = tmp.path().join("full");
    let s = settings(&full, 10);
    let outcome = train::train(&s, false, &stop).unwrap();
    let column = |run: &Path| -> Vec<f64> {
        let log = std::fs::read_to_string(run.join("train_log.csv")).unwrap();
        log.lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(6).and_then(|v| v.parse().ok()))
            .collect()
    };
    let losses = column(&full);
    assert_eq!(
        losses.len(),
        5,
        "dev loss at steps 2, 4, .., 10: {losses:?}"
    );
    assert!(
        losses[2] < losses[1] && losses[2] < losses[3] && losses[3] < losses[4],
        "the dev loss must fall to step 6 and rise after: {losses:?}"
    );
    let (best_dir, best) = outcome.best_dev_loss.clone().expect("a best checkpoint");
    assert_eq!(best_dir, full.join("best"));
    assert_eq!(best.step, 6);
    // (The log rounds to 6 decimals.)
    assert!(
        (best.dev_loss - losses[2]).abs() < 1e-6,
        "{best:?} {losses:?}"
    );
    // RUN/best holds the weights of step 6 (their dev loss is the one recorded), as an HF
    // model directory without the optimizer state, outside the checkpoint rotation.
    let again = dev_loss_of(&s, &best_dir, &tmp.path().join("check"));
    assert!((again - best.dev_loss).abs() < 1e-9, "{again} vs {best:?}");
    assert!(!best_dir.join("optimizer.safetensors").exists());
    assert!(full.join("checkpoint-10").is_dir() && !full.join("checkpoint-6").exists());
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let record = json(best_dir.join("cbqa_training.json"));
    assert_eq!(record["best_dev_loss"]["step"], 6, "{record}");
    assert_eq!(json(full.join("state.json"))["best_dev_loss"]["step"], 6);
    let last_record = json(full.join("checkpoint-10/cbqa_training.json"));
    assert!(last_record.get("best_dev_loss").is_none(), "{last_record}");
    // Interrupted before the best (step 4) and after it (step 7), then resumed: the same best.
    for stop_at in [4, 7] {
        let part = tmp.path().join(format!("part{stop_at}"));
        train::train(&settings(&part, stop_at), false, &stop).unwrap();
        let mut r = load_settings(&part).unwrap();
        r.max_steps = Some(10);
        let resumed = train::train(&r, true, &stop).unwrap();
        let (dir, b) = resumed.best_dev_loss.expect("a best checkpoint");
        assert_eq!(b, best, "interrupted at step {stop_at}");
        let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(
            weights(&dir) == weights(&best_dir),
            "interrupted at step {stop_at}: best/ differs from the uninterrupted run's"
        );
    }
    // `cbqa eval --backend tch` takes it.
    let (m, d) = (best_dir.to_str().unwrap(), dev.to_str().unwrap());
    let out = tmp.path().join("eval");
    let args = ["eval", "--model", m, "--data", d, "--backend", "tch"];
    let more = ["--max-new-tokens", "4", "--out", out.to_str().unwrap()];
    let status = Command::new(env!("CARGO_BIN_EXE_cbqa"))
        .args(args)
        .args(more)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(out.join("predictions.csv").is_file());
}
