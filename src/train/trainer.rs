//! The training loop of `cbqa train`: a [`Trainer`] holds the model, the optimizer, the data, the
//! dev set, the run directory, the log and where the run is; [`train`] composes its steps.

use super::adafactor::{Adafactor, AdafactorConfig};
use super::adamw::{AdamW, AdamWConfig};
use super::batching::{item_tokens, micro_batches, EpochPlan, ExampleLengths};
use super::data::{read_train_examples, TrainData};
use super::dev::{Dev, DevScores};
use super::mixture::Source;
use super::optim::{Optimizer, STATE_FILE};
use super::settings::{OptimizerChoice, Precision, TrainSettings};
use super::state::{self, BestDevLoss, CheckpointParts, RunState, TrainerState, TrainingRecord};
use super::store::TrainExamples;
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::generate::{run_batches, BatchPolicy, EarlyStopping, GenerateOptions, Prepared};
use crate::model::{resolve_device, T5};
use crate::model_dir::{GenerationConfig, ModelDir};
use crate::progress::Progress;
use crate::runtime::tch::TchSeq2Seq;
use crate::runtime::Seq2Seq;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
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
    /// The checkpoint of the lowest dev loss (`RUN/best`), with its step and loss.
    pub best_dev_loss: Option<(PathBuf, BestDevLoss)>,
    /// Dev EM at the end (when there is a QA dev set).
    pub final_em: Option<f64>,
    /// Dev loss (token-mean cross-entropy) at the end (when there is a dev set).
    pub final_dev_loss: Option<f64>,
    /// Mean training loss of the last step.
    pub last_loss: Option<f64>,
    /// Training tokens per second over this invocation.
    pub tokens_per_s: f64,
    /// Stopped by the `stop` flag (SIGINT/SIGTERM) before the planned end.
    pub interrupted: bool,
    /// Malformed data lines that were skipped (`file:line: reason`).
    pub skipped_lines: Vec<String>,
}

/// Train as `settings` says. With `resume`, continue the run in `settings.out` from its last
/// checkpoint (an error if there is none or it is unreadable). `stop` is checked after every step
/// (the binary sets it on SIGINT and SIGTERM): the run then writes a checkpoint and returns.
pub fn train(settings: &TrainSettings, resume: bool, stop: &AtomicBool) -> Result<TrainOutcome> {
    let trainer = if resume {
        Trainer::resume(settings)?
    } else {
        Trainer::new(settings)?
    };
    trainer.run(stop)
}

fn make_optimizer(s: &TrainSettings) -> Result<Box<dyn Optimizer>> {
    Ok(match s.optimizer {
        OptimizerChoice::Adafactor => Box::new(Adafactor::new(AdafactorConfig::paper(s.lr))?),
        OptimizerChoice::Adamw => Box::new(AdamW::new(AdamWConfig::with_lr(s.lr))),
    })
}

/// Every setting the trainer cannot run with, named by its field.
fn validate(s: &TrainSettings) -> Result<()> {
    if s.max_steps.is_none() && s.epochs.is_none() {
        return Err(Error::setting(
            "max_steps",
            "say how long to train: set max_steps and/or epochs",
        ));
    }
    if s.batch_tokens == 0 {
        return Err(Error::setting("batch_tokens", "must be positive"));
    }
    if s.micro_batch_tokens == 0 {
        return Err(Error::setting("micro_batch_tokens", "must be positive"));
    }
    if !(s.lr > 0.0 && s.lr.is_finite()) {
        return Err(Error::setting(
            "lr",
            format!("must be positive, got {}", s.lr),
        ));
    }
    if !(0.0..1.0).contains(&s.dropout) {
        let msg = format!("must be in [0, 1), got {}", s.dropout);
        return Err(Error::setting("dropout", msg));
    }
    if !(s.save_every_minutes >= 0.0 && s.save_every_minutes.is_finite()) {
        let msg = format!("must be 0 (off) or more, got {}", s.save_every_minutes);
        return Err(Error::setting("save_every_minutes", msg));
    }
    if s.max_input_len < 2 {
        let msg = format!("must be at least 2, got {}", s.max_input_len);
        return Err(Error::setting("max_input_len", msg));
    }
    if s.max_target_len < 2 {
        let msg = format!("must be at least 2, got {}", s.max_target_len);
        return Err(Error::setting("max_target_len", msg));
    }
    Ok(())
}

/// Greedy decoding of up to `max_new_tokens` tokens with the ids of a checkpoint's generation
/// config (falling back to config.json), as `cbqa eval` builds its options.
pub fn greedy_options(
    config: &T5Config,
    generation: &GenerationConfig,
    max_new_tokens: usize,
) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        min_new_tokens: 0,
        num_beams: 1,
        num_return_sequences: 1,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::default(),
        decoder_start_token_id: generation
            .decoder_start_token_id
            .unwrap_or_else(|| config.decoder_start_id()),
        eos_token_id: generation.eos_token_id.unwrap_or_else(|| config.eos_id()),
        pad_token_id: generation.pad_token_id.unwrap_or_else(|| config.pad_id()),
        // Scores are not needed for exact match; they do not change the tokens.
        output_scores: false,
    }
}

/// The answers of `backend` to prepared questions under `opts`, in batches of at most
/// `batch_size` questions (length-sorted), decoded to text as `cbqa eval` decodes them.
pub fn predict<B: Seq2Seq>(
    backend: &B,
    tokenizer: &Tokenizer,
    questions: &[Prepared],
    opts: &GenerateOptions,
    batch_size: usize,
) -> Result<Vec<String>> {
    let policy = BatchPolicy {
        max_batch_size: batch_size.max(1),
        // The batch size alone bounds a batch.
        max_batch_tokens: usize::MAX,
        sort_by_length: true,
        parallel: false,
    };
    let hyps = run_batches(backend, questions, &policy, opts, &|_, _| {})?;
    hyps.iter()
        .map(|h| {
            let tokens = h.first().map_or(&[][..], |h| h.tokens.as_slice());
            tokenizer
                .decode(tokens, true)
                .map_err(|e| Error::tokenize("decode an answer", e))
        })
        .collect()
}

/// `RUN/train_log.csv`, one row per step.
struct Log {
    file: std::fs::File,
    path: PathBuf,
}

impl Log {
    const HEADER: &'static str = "step,epoch,loss,lr,tokens_per_s,dev_em,dev_loss,elapsed_s";

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
        Ok(Log { file, path })
    }

    fn row(&mut self, cols: [String; 8]) -> Result<()> {
        writeln!(self.file, "{}", cols.join(",")).map_err(|e| Error::io("write", &self.path, e))
    }
}

/// Where a run starts: the model to load, the optimizer and the trainer state.
struct Start {
    config: T5Config,
    /// The model directory the weights come from (the checkpoint resumed from, or the model).
    weights_dir: PathBuf,
    optimizer: Box<dyn Optimizer>,
    state: TrainerState,
    /// The checkpoint resumed from.
    resumed_from: Option<PathBuf>,
}

impl Start {
    /// A fresh run from `settings.model`.
    fn fresh(s: &TrainSettings) -> Result<Start> {
        let model = ModelDir::open(&s.model)?;
        let state = TrainerState {
            step: 0,
            epoch: 0,
            next_batch: 0,
            tokens_seen: 0,
            best_em: None,
            best_step: None,
            optimizer: s.optimizer,
            seed: s.seed,
            best_dev_loss: None,
        };
        Ok(Start {
            config: model.config.clone(),
            weights_dir: s.model.clone(),
            optimizer: make_optimizer(s)?,
            state,
            resumed_from: None,
        })
    }

    /// The last checkpoint of the run in `settings.out`, with its optimizer state.
    fn resumed(s: &TrainSettings, device: Device) -> Result<Start> {
        let r = state::load_last(&s.out, device)?;
        let mut optimizer = make_optimizer(s)?;
        if r.state.optimizer != s.optimizer {
            return Err(Error::Checkpoint {
                path: r.dir.clone(),
                msg: format!(
                    "was trained with {:?}, the run asks for {:?}",
                    r.state.optimizer, s.optimizer
                ),
            });
        }
        optimizer.load_state(r.state.step, &r.optimizer)?;
        Ok(Start {
            config: r.model.config.clone(),
            weights_dir: r.dir.clone(),
            optimizer,
            state: r.state,
            resumed_from: Some(r.dir),
        })
    }
}

/// The numbers of one optimizer step.
struct StepReport {
    /// Token-weighted mean loss over the effective batch.
    loss: f64,
    /// Real input + target tokens trained on per second.
    tokens_per_s: f64,
}

/// A training run: the model (in the mutex the tch backend borrows for dev-set decoding), the
/// optimizer, the tokenized data, the dev set, the run directory with its log, and the state.
pub struct Trainer<'s> {
    settings: &'s TrainSettings,
    device: Device,
    t5: Mutex<T5>,
    params: Vec<(String, Tensor)>,
    optimizer: Box<dyn Optimizer>,
    state: TrainerState,
    resumed_from: Option<PathBuf>,
    tokenizer: Tokenizer,
    generation: GenerationConfig,
    tokenizer_files: Vec<(String, Vec<u8>)>,
    /// The training examples: in memory, or (a pre-training corpus) in `RUN/train_examples.bin`.
    train_data: TrainExamples,
    /// What trained the checkpoints, written into each.
    training: TrainingRecord,
    /// Where the training examples come from (one source unless a mixture).
    sources: Vec<Source>,
    dev: Option<Dev>,
    skipped: Vec<String>,
    plan: EpochPlan,
    log: Log,
    started: Instant,
    tokens_this_run: u64,
    last_loss: Option<f64>,
    final_em: Option<f64>,
    final_dev_loss: Option<f64>,
    evaluated_at: Option<u64>,
    last_checkpoint: Option<PathBuf>,
    best_dir: Option<PathBuf>,
    /// A new lowest dev loss that `RUN/best` does not hold yet (the next save writes it).
    best_loss_pending: bool,
    /// When the last checkpoint was written (or the run started), for the time cadence.
    last_save: Instant,
    /// Held while the run lives: a second `cbqa train` into the same directory is refused.
    _run_lock: crate::fsutil::FileLock,
}

impl<'s> Trainer<'s> {
    /// A fresh run of `settings` into `settings.out`, which must not hold another run.
    pub fn new(settings: &'s TrainSettings) -> Result<Self> {
        Self::open(settings, false)
    }

    /// Continue the run in `settings.out` from its last checkpoint.
    pub fn resume(settings: &'s TrainSettings) -> Result<Self> {
        Self::open(settings, true)
    }

    fn open(s: &'s TrainSettings, resume: bool) -> Result<Self> {
        let device = resolve_device(&s.device)?;
        validate(s)?;
        let run_lock = lock_run_dir(&s.out)?;
        if let Some(n) = s.threads {
            tch::set_num_threads(n as i32);
        }
        let start = if resume {
            Start::resumed(s, device)?
        } else {
            Start::fresh(s)?
        };
        let (t5, model_dir) = load_model(s, &start, device)?;
        let params = t5.named_parameters();
        let state_file = start.weights_dir.join(STATE_FILE);
        check_optimizer_state(&*start.optimizer, &params, &state_file)?;
        let tokenizer_files = state::read_tokenizer_files(&start.weights_dir)?;
        let (mut train_data, data, dev) = read_data(s, &t5.config, &model_dir)?;
        for line in &data.skipped {
            eprintln!("skipped {line}");
        }
        // Only now that the model and the data are known good does a fresh run claim its
        // directory.
        if !resume {
            prepare_run_dir(&s.out)?;
            state::save_settings(&s.out, s)?;
        }
        if let TrainExamples::Disk(disk) = &mut train_data {
            disk.move_into(&s.out)?;
        }
        let log = Log::open(&s.out, start.state.step)?;
        let plan = super::data::plan_of(&train_data, &data.sources, s, start.state.epoch);
        warn_if_one_batch_is_an_epoch(s, &train_data, &plan);
        let training = TrainingRecord::new(s, &data.prefixes);
        eprintln!("{}", training.describe());
        let best_dir = start
            .state
            .best_step
            .map(|b| s.out.join(format!("checkpoint-{b}")));
        Ok(Trainer {
            settings: s,
            device,
            t5: Mutex::new(t5),
            params,
            optimizer: start.optimizer,
            state: start.state,
            resumed_from: start.resumed_from,
            tokenizer: model_dir.tokenizer,
            generation: model_dir.generation,
            tokenizer_files,
            train_data,
            training,
            sources: data.sources,
            dev,
            skipped: data.skipped,
            plan,
            log,
            started: Instant::now(),
            tokens_this_run: 0,
            last_loss: None,
            final_em: None,
            final_dev_loss: None,
            evaluated_at: None,
            last_checkpoint: None,
            best_dir,
            best_loss_pending: false,
            last_save: Instant::now(),
            _run_lock: run_lock,
        })
    }

    /// Train until the planned end or until `stop` is set, then write the last checkpoint.
    pub fn run(mut self, stop: &AtomicBool) -> Result<TrainOutcome> {
        let mut progress = Progress::new("train", "steps", self.total_steps(), self.state.step)
            .also_every(self.settings.log_every);
        self.started = Instant::now();
        self.last_save = self.started;
        let interrupted = self.run_steps(stop, &mut progress);
        progress.finish();
        let interrupted = interrupted?;
        self.finish(interrupted)
    }

    /// The loop: steps, dev evaluations, log rows and checkpoints. Returns whether `stop` ended
    /// it before the planned end.
    fn run_steps(&mut self, stop: &AtomicBool, progress: &mut Progress) -> Result<bool> {
        while !self.finished() {
            if stop.load(Ordering::SeqCst) {
                return Ok(true);
            }
            if self.state.next_batch >= self.plan.batches.len() {
                self.next_epoch();
                continue;
            }
            let first_of_run = self.tokens_this_run == 0;
            let step_started = Instant::now();
            let report = self.step()?;
            if first_of_run {
                progress.note(&self.first_step_line(&report, step_started.elapsed()));
            }
            let done = self.finished();
            let scores = match self.dev.is_some() && (done || self.eval_due()) {
                true => Some(self.evaluate()?),
                false => None,
            };
            let em = scores.and_then(|d| d.em);
            let new_best = em.is_some_and(|e| self.record_em(e));
            self.log_step(&report, scores)?;
            if done {
                // With epochs of different lengths the planned total was an estimate.
                progress.set_total(self.state.step);
            }
            progress.set(
                self.state.step,
                &format!("loss {:.4}  {:.0} tok/s", report.loss, report.tokens_per_s),
            );
            if let Some(d) = scores {
                progress.note(&dev_line(self.state.step, d));
            }
            let stop_now = stop.load(Ordering::SeqCst);
            if new_best || self.best_loss_pending || self.save_due() || done || stop_now {
                self.save_checked(new_best)?;
            }
            if stop_now {
                return Ok(!done);
            }
        }
        Ok(false)
    }

    /// Progress after the first step of an invocation (the plain log's next line may be far):
    /// loss, steps/s, tokens/s and the ETA that step implies.
    fn first_step_line(&self, report: &StepReport, took: std::time::Duration) -> String {
        let secs = took.as_secs_f64().max(1e-9);
        let left = self.total_steps().saturating_sub(self.state.step) as f64 * secs;
        format!(
            "step {}: loss {:.4}, {:.2} steps/s, {:.0} tokens/s, ETA {:.0}s ({} steps per epoch of {} examples)",
            self.state.step,
            report.loss,
            1.0 / secs,
            report.tokens_per_s,
            left,
            self.plan.batches.len(),
            self.plan.items.len(),
        )
    }

    /// The end of training: `max_steps` reached, or the last batch of the last epoch done.
    fn finished(&self) -> bool {
        let (s, st) = (self.settings, &self.state);
        s.max_steps.is_some_and(|m| st.step >= m)
            || s.epochs.is_some_and(|e| {
                st.epoch >= e || (st.epoch + 1 == e && st.next_batch >= self.plan.batches.len())
            })
    }

    /// Steps of the whole run, for the progress display only (with random answers epochs
    /// differ slightly in length).
    fn total_steps(&self) -> u64 {
        let steps_per_epoch = self.plan.batches.len() as u64;
        match (self.settings.max_steps, self.settings.epochs) {
            (Some(m), Some(e)) => m.min(e * steps_per_epoch),
            (Some(m), None) => m,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => 0,
        }
    }

    fn next_epoch(&mut self) {
        let s = self.settings;
        self.state.epoch += 1;
        self.state.next_batch = 0;
        self.plan = super::data::plan_of(&self.train_data, &self.sources, s, self.state.epoch);
    }

    fn eval_due(&self) -> bool {
        let every = self.settings.eval_every;
        every > 0 && self.state.step.is_multiple_of(every)
    }

    /// A checkpoint is due every `save_every` steps, and after the first step that ends
    /// `save_every_minutes` after the last checkpoint.
    fn save_due(&self) -> bool {
        let every = self.settings.save_every;
        let minutes = self.settings.save_every_minutes;
        (every > 0 && self.state.step.is_multiple_of(every))
            || (minutes > 0.0 && self.last_save.elapsed().as_secs_f64() >= minutes * 60.0)
    }

    fn model(&self) -> MutexGuard<'_, T5> {
        self.t5.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One optimizer step on the next effective batch: gradients accumulated over its
    /// micro-batches, the token-weighted mean loss, then the update (never applied when the
    /// loss is not finite).
    fn step(&mut self) -> Result<StepReport> {
        let s = self.settings;
        let step_start = Instant::now();
        let batch = self.plan.batches[self.state.next_batch].clone();
        let items = &self.plan.items[batch];
        // Dropout masks depend only on (seed, step): a resumed run draws the same ones.
        tch::manual_seed(
            s.seed
                .wrapping_add(self.state.step)
                .wrapping_mul(2_654_435_761) as i64,
        );
        for (_, p) in &self.params {
            zero_grad(p)?;
        }
        let target_tokens: usize = items
            .iter()
            .map(|&(i, a)| self.train_data.target_len(i, a))
            .sum();
        let pad = i64::from(self.model().config.pad_id());
        let mut loss = 0.0;
        let mut tokens = 0usize;
        for mb in micro_batches(&self.train_data, items, s.micro_batch_tokens) {
            let b = self
                .train_data
                .collate(&mb, self.state.epoch, pad, self.device)?;
            tokens += b.tokens;
            let out =
                self.model()
                    .model()
                    .loss(&b.input_ids, &b.attention_mask, &b.labels, true)?;
            // Token-weighted mean over the whole effective batch.
            let scaled = out.sum.f_div_scalar(target_tokens as f64)?;
            loss += scaled.f_double_value(&[])?;
            scaled.f_backward()?;
        }
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step: self.state.step + 1,
                what: format!("the training loss is {loss} (the step was not applied)"),
                last_good: self.last_good(),
            });
        }
        self.optimizer.step(&self.params)?;
        self.state.step += 1;
        self.state.next_batch += 1;
        self.state.tokens_seen += tokens as u64;
        self.tokens_this_run += tokens as u64;
        self.last_loss = Some(loss);
        let tokens_per_s = tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9);
        Ok(StepReport { loss, tokens_per_s })
    }

    /// The dev loss of the model as it is now (`None` without a dev set): what
    /// [`Trainer::run`] logs at each evaluation, also before any step.
    pub fn dev_loss(&self) -> Result<Option<f64>> {
        let Some(dev) = &self.dev else {
            return Ok(None);
        };
        let loss = dev.loss(&self.t5, self.device, self.settings.micro_batch_tokens)?;
        Ok(Some(loss))
    }

    /// Dev loss and (for a QA dev set) exact match of the model as it is now, decoded by
    /// [`crate::generate`] through the tch backend borrowing the model. Without a dev set, a
    /// loss of 0 and no EM.
    fn evaluate(&mut self) -> Result<DevScores> {
        let Some(dev) = &self.dev else {
            return Ok(DevScores {
                em: None,
                loss: 0.0,
            });
        };
        let s = self.settings;
        let opts = {
            let t5 = self.model();
            greedy_options(&t5.config, &self.generation, s.eval_max_new_tokens)
        };
        let loss = dev.loss(&self.t5, self.device, s.micro_batch_tokens)?;
        let backend = TchSeq2Seq::borrowing(&self.t5);
        let em = dev.exact_match(&backend, &self.tokenizer, &opts, s.eval_batch_size)?;
        self.record_dev_loss(loss);
        self.final_em = em;
        self.final_dev_loss = Some(loss);
        self.evaluated_at = Some(self.state.step);
        Ok(DevScores { em, loss })
    }

    /// Track the best dev EM; whether `em` is a new best.
    fn record_em(&mut self, em: f64) -> bool {
        let st = &mut self.state;
        if st.best_em.is_none_or(|b| em > b) {
            st.best_em = Some(em);
            st.best_step = Some(st.step);
            return true;
        }
        false
    }

    /// Track the lowest dev loss; a new one is written to `RUN/best` by the next save.
    fn record_dev_loss(&mut self, loss: f64) {
        let st = &mut self.state;
        if loss.is_finite() && st.best_dev_loss.is_none_or(|b| loss < b.dev_loss) {
            st.best_dev_loss = Some(BestDevLoss {
                step: st.step,
                dev_loss: loss,
            });
            self.best_loss_pending = true;
        }
    }

    fn log_step(&mut self, report: &StepReport, dev: Option<DevScores>) -> Result<()> {
        let em = dev.and_then(|d| d.em);
        self.log.row([
            self.state.step.to_string(),
            self.state.epoch.to_string(),
            format!("{:.6}", report.loss),
            format!("{:e}", self.optimizer.lr()),
            format!("{:.1}", report.tokens_per_s),
            em.map(|e| format!("{e:.2}")).unwrap_or_default(),
            dev.map(|d| format!("{:.6}", d.loss)).unwrap_or_default(),
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        ])
    }

    /// Write a checkpoint of this step (also the new best when `new_best`), but never one of a
    /// diverged model: the loss of the next step would only reveal it then.
    fn save_checked(&mut self, new_best: bool) -> Result<()> {
        if let Some(name) = first_non_finite(&self.params)? {
            return Err(Error::Diverged {
                step: self.state.step,
                what: format!("parameter `{name}` is not finite"),
                last_good: self.last_good(),
            });
        }
        if new_best {
            let dir = self
                .settings
                .out
                .join(format!("checkpoint-{}", self.state.step));
            self.best_dir = Some(dir);
        }
        self.save()?;
        Ok(())
    }

    /// Write `RUN/checkpoint-<step>` (and from it `RUN/best` after a new lowest dev loss), and
    /// publish it in `RUN/state.json` as the last one.
    fn save(&mut self) -> Result<PathBuf> {
        let run = &self.settings.out;
        let dir = {
            let t5 = self.model();
            state::write_checkpoint(
                run,
                &CheckpointParts {
                    t5: &t5,
                    training: &self.training,
                    optimizer: &*self.optimizer,
                    state: &self.state,
                    generation: &self.generation,
                    tokenizer_files: &self.tokenizer_files,
                },
            )?
        };
        if let Some(best) = self.state.best_dev_loss.filter(|_| self.best_loss_pending) {
            state::write_best(run, &dir, &self.training, best)?;
            self.best_loss_pending = false;
        }
        let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
        state::publish(
            run,
            &RunState {
                last: name(&dir).unwrap_or_default(),
                best: self.best_dir.as_ref().and_then(name),
                best_em: self.state.best_em,
                best_dev_loss: self.state.best_dev_loss,
            },
        )?;
        self.last_checkpoint = Some(dir.clone());
        self.last_save = Instant::now();
        Ok(dir)
    }

    /// The checkpoint to go back to after a divergence, in words.
    fn last_good(&self) -> String {
        if let Some(p) = &self.last_checkpoint {
            return p.display().to_string();
        }
        match &self.resumed_from {
            Some(dir) => format!("{} (the checkpoint resumed from)", dir.display()),
            None => "none yet (no checkpoint was written)".into(),
        }
    }

    /// After the loop: the last checkpoint (written now when the loop wrote none, e.g. a
    /// finished run resumed) and the final dev EM when no step evaluated.
    fn finish(mut self, interrupted: bool) -> Result<TrainOutcome> {
        let last_checkpoint = match self.last_checkpoint.clone() {
            Some(p) => p,
            None => self.save()?,
        };
        let never_evaluated = self.evaluated_at.is_none();
        if never_evaluated && !interrupted && self.dev.is_some() {
            self.evaluate()?;
            if self.best_loss_pending {
                self.save()?;
            }
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        Ok(TrainOutcome {
            steps: self.state.step,
            last_checkpoint,
            best: self.best_dir.zip(self.state.best_em),
            best_dev_loss: self
                .state
                .best_dev_loss
                .map(|b| (self.settings.out.join(state::BEST_DIR), b)),
            final_em: self.final_em,
            final_dev_loss: self.final_dev_loss,
            last_loss: self.last_loss,
            tokens_per_s: self.tokens_this_run as f64 / elapsed,
            interrupted,
            skipped_lines: self.skipped,
        })
    }
}

/// The model `start` names, on `device` with the run's dropout and precision, and its directory.
fn load_model(s: &TrainSettings, start: &Start, device: Device) -> Result<(T5, ModelDir)> {
    let mut config = start.config.clone();
    config.dropout_rate = s.dropout;
    let model_dir = ModelDir::open(&start.weights_dir)?;
    let compute = (s.precision == Precision::Bf16).then_some(Kind::BFloat16);
    let t5 =
        T5::from_weights_with_compute(&config, &model_dir.weights, device, Kind::Float, compute)?;
    Ok((t5, model_dir))
}

/// The training examples (a pre-training corpus's in a token file beside the run directory,
/// for the caller to move in), their sources and skipped lines, and the dev set when there is
/// one.
fn read_data(
    s: &TrainSettings,
    config: &T5Config,
    model_dir: &ModelDir,
) -> Result<(TrainExamples, TrainData, Option<Dev>)> {
    let tokenizer = &model_dir.tokenizer;
    let store = crate::fsutil::temp_sibling(&s.out);
    let vocab = config.vocab_size.max(tokenizer.get_vocab_size(true));
    let (examples, mut data) = read_train_examples(s, tokenizer, config.eos_id(), vocab, &store)?;
    let eos = greedy_options(config, &model_dir.generation, s.eval_max_new_tokens).eos_token_id;
    let dev = match Dev::read(s, &data, tokenizer, eos)? {
        Some((dev, dev_skipped)) => {
            data.skipped.extend(dev_skipped);
            Some(dev)
        }
        None => None,
    };
    Ok((examples, data, dev))
}

/// A batch budget larger than the whole training set makes every step more than an epoch:
/// say so, with what to do.
fn warn_if_one_batch_is_an_epoch(s: &TrainSettings, data: &TrainExamples, plan: &EpochPlan) {
    let tokens: usize = plan
        .items
        .iter()
        .map(|&(i, a)| item_tokens(data, i, a))
        .sum();
    if plan.batches.len() == 1 && tokens < s.batch_tokens {
        eprintln!(
            "warning: one batch of {} tokens is more than the whole training set ({} examples, \
             {tokens} tokens): every step trains on all of it, repeated. Lower the batch \
             tokens (e.g. {}) for several steps per epoch.",
            s.batch_tokens,
            plan.items.len(),
            (tokens / 8).max(1)
        );
    }
}

/// The progress note of an evaluation at `step`.
fn dev_line(step: u64, d: DevScores) -> String {
    match d.em {
        Some(em) => format!("step {step}: dev EM {em:.2}, dev loss {:.4}", d.loss),
        None => format!("step {step}: dev loss {:.4}", d.loss),
    }
}

/// Clear the gradient of parameter `p`, when it has one.
fn zero_grad(p: &Tensor) -> Result<()> {
    let mut grad = p.f_grad()?;
    if grad.defined() {
        let _ = grad.f_detach_()?.f_zero_()?;
    }
    Ok(())
}

/// The name of the first parameter holding a NaN or an infinity.
fn first_non_finite(params: &[(String, Tensor)]) -> Result<Option<&str>> {
    for (name, p) in params {
        if p.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Ok(Some(name.as_str()));
        }
    }
    Ok(None)
}

/// The lock of the run directory `run` (its hidden sibling `.NAME.lock`, so a fresh run's
/// directory stays empty until the run claims it), or the error that another `cbqa train` holds
/// it.
fn lock_run_dir(run: &Path) -> Result<crate::fsutil::FileLock> {
    let lock = crate::fsutil::lock_path(run);
    if let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    crate::fsutil::FileLock::try_acquire(&lock)?.map_err(|pid| {
        let holder = pid.map_or("another process".into(), |p| format!("process {p}"));
        Error::Output {
            path: run.to_path_buf(),
            msg: format!(
                "another cbqa train ({holder}) is writing this run directory (it holds {}); \
                 wait for it to end, or train into another directory",
                lock.display()
            ),
        }
    })
}

/// A fresh run's directory must not hold another run.
fn prepare_run_dir(run: &Path) -> Result<()> {
    if run.exists() {
        let non_empty = std::fs::read_dir(run)
            .map_err(|e| Error::io("read directory", run, e))?
            .next()
            .is_some();
        if non_empty {
            return Err(Error::OutputExists {
                path: run.to_path_buf(),
                setting: "resume",
            });
        }
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io("create directory", run, e))
}

/// The restored optimizer state (from `file`) must belong to this model.
fn check_optimizer_state(
    opt: &dyn Optimizer,
    params: &[(String, Tensor)],
    file: &Path,
) -> Result<()> {
    let tensor_error = |name: &str, msg: String| Error::Tensor {
        path: file.to_path_buf(),
        name: name.to_string(),
        msg,
    };
    for (key, t) in opt.state_tensors() {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(n, _)| n);
        let Some((_, p)) = params.iter().find(|(n, _)| n == name) else {
            let msg = format!("the model has no parameter `{name}`");
            return Err(tensor_error(&key, msg));
        };
        if t.numel() > p.numel() {
            let msg = format!("shape {:?} does not fit parameter {:?}", t.size(), p.size());
            return Err(tensor_error(&key, msg));
        }
    }
    Ok(())
}
