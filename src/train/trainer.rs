//! The training loop of `cbqa train`.

use super::adafactor::{Adafactor, AdafactorConfig};
use super::adamw::{AdamW, AdamWConfig};
use super::batching::{collate, micro_batches, plan_epoch, EpochPlan};
use super::data::{read_qa, tokenize, Tokenized};
use super::optim::Optimizer;
use super::progress::Progress;
use super::settings::{OptimizerChoice, Precision, TrainSettings};
use super::state::{self, CheckpointParts, RunState, TrainerState};
use crate::data::QaExample;
use crate::error::{Error, Result};
use crate::model::{resolve_device, T5};
use crate::model_dir::ModelDir;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Optimizer steps taken in total (resumed ones included).
    pub steps: u64,
    /// The last checkpoint written.
    pub last_checkpoint: PathBuf,
    /// The best checkpoint by dev exact match, with its EM.
    pub best: Option<(PathBuf, f64)>,
    /// Dev EM at the end (when there is a dev set).
    pub final_em: Option<f64>,
    /// Mean training loss of the last step.
    pub last_loss: Option<f64>,
    /// Training tokens per second over this invocation.
    pub tokens_per_s: f64,
    /// Stopped by the `stop` flag (SIGINT) before the planned end.
    pub interrupted: bool,
    /// Malformed data lines that were skipped (`file:line: reason`).
    pub skipped_lines: Vec<String>,
}

fn make_optimizer(s: &TrainSettings) -> Result<Box<dyn Optimizer>> {
    Ok(match s.optimizer {
        OptimizerChoice::Adafactor => Box::new(Adafactor::new(AdafactorConfig::paper(s.lr))?),
        OptimizerChoice::Adamw => Box::new(AdamW::new(AdamWConfig::with_lr(s.lr))),
    })
}

fn validate(s: &TrainSettings) -> Result<()> {
    if s.max_steps.is_none() && s.epochs.is_none() {
        return Err(Error::Invalid(
            "say how long to train: --max-steps N and/or --epochs N".into(),
        ));
    }
    if s.batch_tokens == 0 || s.micro_batch_tokens == 0 {
        return Err(Error::Invalid(
            "--batch-tokens and --micro-batch-tokens must be positive".into(),
        ));
    }
    if !(s.lr > 0.0 && s.lr.is_finite()) {
        return Err(Error::Invalid(format!(
            "--lr must be positive, got {}",
            s.lr
        )));
    }
    if !(0.0..1.0).contains(&s.dropout) {
        return Err(Error::Invalid(format!(
            "--dropout must be in [0, 1), got {}",
            s.dropout
        )));
    }
    if s.max_input_len < 2 || s.max_target_len < 2 {
        return Err(Error::Invalid(
            "--max-input-len and --max-target-len must be at least 2".into(),
        ));
    }
    Ok(())
}

/// Greedy answers of `model` for `questions` (already tokenized inputs), decoded to text.
pub fn predict(
    t5: &T5,
    tokenizer: &Tokenizer,
    inputs: &[Vec<i64>],
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    let device = t5.device();
    let pad = i64::from(t5.config.pad_id());
    // Length-sorted batches waste less on padding; answers are put back in input order.
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| inputs[i].len());
    let mut out = vec![String::new(); inputs.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let width = chunk.iter().map(|&i| inputs[i].len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        let mut mask = Vec::with_capacity(chunk.len() * width);
        for &i in chunk {
            let row = &inputs[i];
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad, width - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, width - row.len()));
        }
        let shape = [chunk.len() as i64, width as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
        let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
        // A bf16 model carries its compute precision itself (model::layers::Ctx).
        let seqs = t5.model().generate_greedy(&ids, &mask, max_new_tokens);
        let rows = Vec::<Vec<i64>>::try_from(&seqs)?;
        for (&i, row) in chunk.iter().zip(rows) {
            let ids: Vec<u32> = row
                .iter()
                .skip(1)
                .take_while(|&&t| t != i64::from(t5.config.eos_id()))
                .map(|&t| t as u32)
                .collect();
            out[i] = tokenizer
                .decode(&ids, true)
                .map_err(|e| Error::Invalid(format!("cannot decode {ids:?}: {e}")))?;
        }
    }
    Ok(out)
}

/// Exact match ×100 of greedy answers against every reference, computed by the same code as
/// `cbqa eval` (T5's `qa_utils` semantics, with the benchmark's normaliser).
pub fn dev_exact_match(
    t5: &T5,
    tokenizer: &Tokenizer,
    examples: &[QaExample],
    inputs: &[Vec<i64>],
    normalizer: crate::eval::Normalizer,
    settings: &TrainSettings,
) -> Result<f64> {
    let preds = predict(
        t5,
        tokenizer,
        inputs,
        settings.eval_batch_size,
        settings.eval_max_new_tokens,
    )?;
    let preds: Vec<crate::eval::Prediction> = preds
        .into_iter()
        .map(crate::eval::Prediction::new)
        .collect();
    Ok(crate::eval::score_examples(&preds, examples, normalizer)?
        .aggregate
        .em)
}

struct Dev {
    examples: Vec<QaExample>,
    inputs: Vec<Vec<i64>>,
    normalizer: crate::eval::Normalizer,
}

struct Log {
    file: std::fs::File,
}

impl Log {
    const HEADER: &'static str = "step,epoch,loss,lr,tokens_per_s,dev_em,elapsed_s";

    /// Open `train_log.csv`, keeping only rows up to `keep_until` (a resumed run rewrites the
    /// steps after its checkpoint).
    fn open(run: &Path, keep_until: u64) -> Result<Log> {
        let path = run.join("train_log.csv");
        let mut kept = String::from(Self::HEADER);
        kept.push('\n');
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().skip(1) {
                let step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
                if step.is_some_and(|s| s <= keep_until) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        crate::fsutil::write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Log { file })
    }

    fn row(&mut self, cols: [String; 7]) -> Result<()> {
        writeln!(self.file, "{}", cols.join(","))
            .map_err(|e| Error::io("write", "train_log.csv", e))
    }
}

/// Train as `settings` says. With `resume`, continue the run in `settings.out` from its last
/// checkpoint (an error if there is none or it is unreadable). `stop` is checked after every step
/// (the binary sets it on SIGINT): the run then writes a checkpoint and returns.
pub fn train(settings: &TrainSettings, resume: bool, stop: &AtomicBool) -> Result<TrainOutcome> {
    let s = settings;
    let device = resolve_device(&s.device)?;
    validate(s)?;
    if let Some(n) = s.threads {
        tch::set_num_threads(n as i32);
    }
    let run = s.out.clone();

    // The model, the optimizer and where we are.
    let (mut config, weights_dir, mut optimizer, mut st) = if resume {
        let r = state::load_last(&run, device)?;
        let mut opt = make_optimizer(s)?;
        if r.state.optimizer != s.optimizer {
            return Err(Error::Checkpoint {
                path: r.dir.clone(),
                msg: format!(
                    "was trained with {:?}, the run asks for {:?}",
                    r.state.optimizer, s.optimizer
                ),
            });
        }
        opt.load_state(r.state.step, &r.optimizer)?;
        (r.model.config.clone(), r.dir, opt, r.state)
    } else {
        let model = ModelDir::open(&s.model)?;
        let st = TrainerState {
            step: 0,
            epoch: 0,
            next_batch: 0,
            tokens_seen: 0,
            best_em: None,
            best_step: None,
            optimizer: s.optimizer,
            seed: s.seed,
        };
        (
            model.config.clone(),
            s.model.clone(),
            make_optimizer(s)?,
            st,
        )
    };
    config.dropout_rate = s.dropout;
    let model_dir = ModelDir::open(&weights_dir)?;
    let compute = (s.precision == Precision::Bf16).then_some(Kind::BFloat16);
    let t5 =
        T5::from_weights_with_compute(&config, &model_dir.weights, device, Kind::Float, compute)?;
    let params = t5.named_parameters();
    check_optimizer_state(&*optimizer, &params)?;
    let tokenizer = model_dir.tokenizer.clone();
    let tokenizer_files = state::read_tokenizer_files(&weights_dir)?;
    let generation = model_dir.generation.clone();
    drop(model_dir);

    // Data.
    let eos = i64::from(config.eos_id());
    let pad = i64::from(config.pad_id());
    let train_report = read_qa(&s.train, s.skip_bad, true)?;
    let mut skipped = train_report.skipped.clone();
    let train_data: Vec<Tokenized> = tokenize(
        &tokenizer,
        &train_report.examples,
        &s.prefix,
        eos,
        s.max_input_len,
        s.max_target_len,
    )?;
    let dev = match &s.dev {
        Some(p) => {
            let r = read_qa(p, s.skip_bad, false)?;
            skipped.extend(r.skipped);
            let mut examples = r.examples;
            if let Some(n) = s.eval_limit {
                examples.truncate(n);
            }
            let inputs = examples
                .iter()
                .map(|ex| {
                    super::data::encode(
                        &tokenizer,
                        &format!("{}{}", s.prefix, ex.question),
                        eos,
                        s.max_input_len,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Dev {
                examples,
                inputs,
                normalizer: r.normalizer,
            })
        }
        None => None,
    };
    for line in &skipped {
        eprintln!("skipped {line}");
    }

    // Only now that the model and the data are known good does a fresh run claim its directory.
    if !resume {
        prepare_run_dir(&run)?;
        state::save_settings(&run, s)?;
    }
    let mut log = Log::open(&run, st.step)?;
    let plan_for = |epoch: u64| plan_epoch(&train_data, s.seed, epoch, s.answer, s.batch_tokens);
    let mut plan: EpochPlan = plan_for(st.epoch);
    // For the progress display only: with random answers epochs differ slightly in length.
    let steps_per_epoch = plan.batches.len() as u64;
    let total_steps = match (s.max_steps, s.epochs) {
        (Some(m), Some(e)) => m.min(e * steps_per_epoch),
        (Some(m), None) => m,
        (None, Some(e)) => e * steps_per_epoch,
        (None, None) => 0,
    };
    // The end of training: --max-steps reached, or the last batch of the last epoch done.
    let finished = |st: &TrainerState, plan: &EpochPlan| {
        s.max_steps.is_some_and(|m| st.step >= m)
            || s.epochs.is_some_and(|e| {
                st.epoch >= e || (st.epoch + 1 == e && st.next_batch >= plan.batches.len())
            })
    };
    let mut progress = Progress::new(st.step, total_steps, s.log_every);
    let started = Instant::now();
    let mut tokens_this_run: u64 = 0;
    let mut last_loss = None;
    let mut final_em = None;
    let mut last_checkpoint: Option<PathBuf> = None;
    let mut best_dir = st.best_step.map(|b| run.join(format!("checkpoint-{b}")));
    let mut interrupted = false;
    let mut evaluated_at = None;

    let save = |st: &TrainerState,
                optimizer: &dyn Optimizer,
                best_dir: &Option<PathBuf>|
     -> Result<PathBuf> {
        let dir = state::write_checkpoint(
            &run,
            &CheckpointParts {
                t5: &t5,
                optimizer,
                state: st,
                generation: &generation,
                tokenizer_files: &tokenizer_files,
            },
        )?;
        let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
        state::publish(
            &run,
            &RunState {
                last: name(&dir).unwrap_or_default(),
                best: best_dir.as_ref().and_then(name),
                best_em: st.best_em,
            },
        )?;
        Ok(dir)
    };

    while !finished(&st, &plan) {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if st.next_batch >= plan.batches.len() {
            st.epoch += 1;
            st.next_batch = 0;
            plan = plan_for(st.epoch);
            continue;
        }
        let step_start = Instant::now();
        let batch_items = &plan.items[plan.batches[st.next_batch].clone()];
        // Dropout masks depend only on (seed, step): a resumed run draws the same ones.
        tch::manual_seed(s.seed.wrapping_add(st.step).wrapping_mul(2_654_435_761) as i64);
        for (_, p) in &params {
            p.shallow_clone().zero_grad();
        }
        let target_tokens: usize = batch_items
            .iter()
            .map(|&(i, a)| train_data[i].targets[a].len())
            .sum();
        let mut loss_sum = 0.0;
        let mut step_tokens = 0usize;
        for mb in micro_batches(&train_data, batch_items, s.micro_batch_tokens) {
            let b = collate(&train_data, &mb, pad, device);
            step_tokens += b.tokens;
            let out = t5
                .model()
                .loss(&b.input_ids, &b.attention_mask, &b.labels, true);
            // Token-weighted mean over the whole effective batch.
            let scaled = out.sum / target_tokens as f64;
            loss_sum += scaled.double_value(&[]);
            scaled.backward();
        }
        let last_good = || {
            last_checkpoint
                .as_ref()
                .map(|p: &PathBuf| p.display().to_string())
                .or_else(|| {
                    resume
                        .then(|| format!("{} (the checkpoint resumed from)", weights_dir.display()))
                })
                .unwrap_or_else(|| "none yet (no checkpoint was written)".into())
        };
        if !loss_sum.is_finite() {
            progress.finish();
            return Err(Error::Invalid(format!(
                "the training loss is {loss_sum} at step {}: stopping without updating the \
                 parameters. The last good checkpoint is {}. Try a lower --lr or fp32.",
                st.step + 1,
                last_good()
            )));
        }
        optimizer.step(&params)?;
        st.step += 1;
        st.next_batch += 1;
        st.tokens_seen += step_tokens as u64;
        tokens_this_run += step_tokens as u64;
        last_loss = Some(loss_sum);
        let tps = step_tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9);

        let done = finished(&st, &plan);
        let mut em = None;
        let eval_now =
            dev.is_some() && (done || (s.eval_every > 0 && st.step.is_multiple_of(s.eval_every)));
        let mut new_best = false;
        if let (true, Some(d)) = (eval_now, &dev) {
            let e = dev_exact_match(&t5, &tokenizer, &d.examples, &d.inputs, d.normalizer, s)?;
            em = Some(e);
            final_em = Some(e);
            evaluated_at = Some(st.step);
            if st.best_em.is_none_or(|b| e > b) {
                st.best_em = Some(e);
                st.best_step = Some(st.step);
                new_best = true;
            }
        }
        log.row([
            st.step.to_string(),
            st.epoch.to_string(),
            format!("{loss_sum:.6}"),
            format!("{:e}", optimizer.lr()),
            format!("{tps:.1}"),
            em.map(|e| format!("{e:.2}")).unwrap_or_default(),
            format!("{:.3}", started.elapsed().as_secs_f64()),
        ])?;
        progress.step(st.step, loss_sum, tps, em);

        let stop_now = stop.load(Ordering::SeqCst);
        let periodic = s.save_every > 0 && st.step.is_multiple_of(s.save_every);
        if new_best || periodic || done || stop_now {
            // Never publish a diverged model as a checkpoint (the loss of the next step would
            // only reveal it then).
            if let Some(name) = first_non_finite(&params) {
                progress.finish();
                return Err(Error::Invalid(format!(
                    "parameter `{name}` is not finite after step {}: the update diverged. \
                     The last good checkpoint is {}. Try a lower --lr.",
                    st.step,
                    last_good()
                )));
            }
            if new_best {
                best_dir = Some(run.join(format!("checkpoint-{}", st.step)));
            }
            last_checkpoint = Some(save(&st, &*optimizer, &best_dir)?);
        }
        if stop_now {
            interrupted = !done;
            break;
        }
    }
    progress.finish();
    // Already at the end (e.g. resumed a finished run) or interrupted before any step.
    let last_checkpoint = match last_checkpoint {
        Some(p) => p,
        None => save(&st, &*optimizer, &best_dir)?,
    };
    if final_em.is_none() && evaluated_at.is_none() && !interrupted {
        if let Some(d) = &dev {
            final_em = Some(dev_exact_match(
                &t5,
                &tokenizer,
                &d.examples,
                &d.inputs,
                d.normalizer,
                s,
            )?);
        }
    }
    Ok(TrainOutcome {
        steps: st.step,
        last_checkpoint,
        best: best_dir.zip(st.best_em),
        final_em,
        last_loss,
        tokens_per_s: tokens_this_run as f64 / started.elapsed().as_secs_f64().max(1e-9),
        interrupted,
        skipped_lines: skipped,
    })
}

fn first_non_finite(params: &[(String, Tensor)]) -> Option<&str> {
    params
        .iter()
        .find(|(_, p)| p.isfinite().all().int64_value(&[]) == 0)
        .map(|(n, _)| n.as_str())
}

/// A fresh run's directory must not hold another run.
fn prepare_run_dir(run: &Path) -> Result<()> {
    if run.exists() {
        let non_empty = std::fs::read_dir(run)
            .map_err(|e| Error::io("read directory", run, e))?
            .next()
            .is_some();
        if non_empty {
            return Err(Error::Output {
                path: run.to_path_buf(),
                msg: "exists and is not empty; continue it with --resume, or choose another --out"
                    .into(),
            });
        }
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io("create directory", run, e))
}

/// The restored optimizer state must belong to this model.
fn check_optimizer_state(opt: &dyn Optimizer, params: &[(String, Tensor)]) -> Result<()> {
    for (key, t) in opt.state_tensors() {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(n, _)| n);
        let Some((_, p)) = params.iter().find(|(n, _)| n == name) else {
            return Err(Error::Invalid(format!(
                "the optimizer state has `{key}` but the model has no parameter `{name}`"
            )));
        };
        if t.numel() > p.numel() {
            return Err(Error::Invalid(format!(
                "optimizer state `{key}` {:?} does not fit parameter {:?}",
                t.size(),
                p.size()
            )));
        }
    }
    Ok(())
}
