//! Flags to library settings, in one place: one function per settings type. Defaults are the
//! settings types' own (`Default`, `TrainSettings::new`), which the flags' defaults come from;
//! each check is the settings type's own.

use crate::cli::{
    BackendArg, BatchingArg, ComputeArg, DataArgs, ExportArgs, NormalizerArg, PrecisionArg,
    QuantizeArg, RuntimeArgs, ServeArgs, ValidateArgs,
};
use anyhow::Result;
use cbqa::data::{DataFormat, ReadOptions};
use cbqa::eval::Normalizer;
use cbqa::export::{ExportOptions, Precision, Quantize};
use cbqa::generate::{BatchPolicy, GenerateOptions};
use cbqa::runtime::{BackendKind, BackendOptions, Compute};
use cbqa::serve::{Batching, Limits, ServeOptions};
use cbqa::validate::ValidateOptions;
use cbqa::AnswererOptions;

/// The answering settings of `cbqa predict` and `cbqa eval`, checked.
pub fn answerer_options(r: &RuntimeArgs) -> Result<AnswererOptions> {
    let opts = AnswererOptions {
        backend: backend_options(r)?,
        generate: generate_options(r),
        batch: batch_policy(r),
        prefix: r.prefix.clone().unwrap_or_default(),
        max_input_tokens: r.max_input_tokens,
    };
    opts.generate.check()?;
    Ok(opts)
}

/// The text put before every question: `--prefix` when given, else the prefix `model` records
/// (for questions of `benchmark`, when it was trained on several), else none. Says so on stderr
/// when it is the model's.
pub fn question_prefix(
    r: &RuntimeArgs,
    model: &std::path::Path,
    benchmark: Option<cbqa::data::Benchmark>,
) -> Result<String> {
    if let Some(p) = &r.prefix {
        return Ok(p.clone());
    }
    let Some(stored) = cbqa::model_dir::stored_prefixes(model)? else {
        return Ok(String::new());
    };
    let prefix = stored
        .for_task(benchmark.and_then(|b| b.task_name()))
        .to_string();
    if !prefix.is_empty() {
        eprintln!("prefix {prefix:?}: the one the model was trained with (--prefix overrides)");
    }
    Ok(prefix)
}

/// The engine and where it runs.
fn backend_options(r: &RuntimeArgs) -> Result<BackendOptions> {
    Ok(BackendOptions {
        kind: backend_kind(r.backend),
        device: r.device.parse()?,
        threads: r.threads,
        opt_level: r.opt_level,
        allow_fallback: r.allow_fallback,
        trt_cache: r.trt_cache.clone(),
        compute: compute(r.compute),
        parallel_batches: !r.serial_batches,
    })
}

/// The tch backend's matmul precision a `--compute` value names.
pub fn compute(c: ComputeArg) -> Compute {
    match c {
        ComputeArg::Fp32 => Compute::Fp32,
        ComputeArg::Bf16 => Compute::Bf16,
    }
}

/// The engine a `--backend` value names.
pub fn backend_kind(backend: BackendArg) -> BackendKind {
    match backend {
        BackendArg::Ort => BackendKind::Ort,
        BackendArg::Tract => BackendKind::Tract,
        #[cfg(feature = "train")]
        BackendArg::Tch => BackendKind::Tch,
    }
}

/// The decoding settings; the special token ids are the model's (set when it is loaded).
fn generate_options(r: &RuntimeArgs) -> GenerateOptions {
    GenerateOptions {
        num_beams: r.beams,
        num_return_sequences: r.candidates.unwrap_or(r.beams),
        max_new_tokens: r.max_new_tokens,
        length_penalty: r.length_penalty,
        ..GenerateOptions::default()
    }
}

/// How questions are grouped into batches (sorted by length, one batch at a time unless the
/// backend prefers parallel batches).
fn batch_policy(r: &RuntimeArgs) -> BatchPolicy {
    BatchPolicy {
        max_batch_size: r.batch_size,
        max_batch_tokens: r.batch_tokens,
        ..BatchPolicy::default()
    }
}

/// Where `cbqa serve` listens and its limits, checked.
pub fn serve_options(args: &ServeArgs) -> Result<ServeOptions> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 1e9) {
        anyhow::bail!("--timeout {}: expected seconds, more than 0", args.timeout);
    }
    if !(args.batch_wait_ms.is_finite() && (0.0..=60_000.0).contains(&args.batch_wait_ms)) {
        anyhow::bail!(
            "--batch-wait-ms {}: expected 0 to 60000",
            args.batch_wait_ms
        );
    }
    let limits = Limits {
        max_queue: args.max_queue,
        max_questions: args.max_questions,
        max_body_bytes: args.max_body_bytes,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        max_beams: args.max_beams,
        max_new_tokens: args.max_new_tokens_limit,
    };
    limits.check()?;
    Ok(ServeOptions {
        host: args.host.clone(),
        port: args.port,
        limits,
        batch_wait: std::time::Duration::from_secs_f64(args.batch_wait_ms / 1000.0),
        batching: match args.batching {
            BatchingArg::Continuous => Batching::Continuous,
            BatchingArg::Dynamic => Batching::Dynamic,
        },
        model_dir: args.model.clone(),
    })
}

/// How a data file is read.
pub fn read_options(d: &DataArgs) -> Result<ReadOptions> {
    let format = match &d.data_format {
        Some(f) => Some(f.parse::<DataFormat>()?),
        None => None,
    };
    Ok(ReadOptions {
        format,
        question_field: d.question_field.clone(),
        answer_field: d.answer_field.clone(),
        skip_bad: d.skip_bad,
        ..ReadOptions::default()
    })
}

/// The answer normalisation `--normalizer` names; `auto` follows the benchmark of the data.
pub fn normalizer(arg: NormalizerArg, benchmark: cbqa::data::Benchmark) -> Normalizer {
    match arg {
        NormalizerArg::Auto => Normalizer::for_benchmark(benchmark),
        NormalizerArg::Squad => Normalizer::Squad,
        NormalizerArg::TriviaQa => Normalizer::TriviaQa,
    }
}

/// The settings of `cbqa export`, and of the validation that follows it (`None`: `--no-validate`).
pub fn export_options(args: &ExportArgs) -> (ExportOptions, Option<ValidateOptions>) {
    let precision = match args.precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Fp16 => Precision::Fp16,
    };
    let quantize = match args.quantize {
        QuantizeArg::None => Quantize::None,
        QuantizeArg::Int8 => Quantize::Int8,
    };
    let validate = (!args.no_validate).then(|| ValidateOptions {
        tract: !args.no_tract,
        seed: args.seed,
        ..ValidateOptions::for_precision(precision, quantize)
    });
    let export = ExportOptions {
        model: args.model.clone(),
        out: args.out.clone(),
        force: args.force,
        merged: args.merged,
        precision,
        quantize,
    };
    (export, validate)
}

/// The settings of `cbqa validate`: the defaults of the precision the export records, with the
/// flags given.
pub fn validate_options(args: &ValidateArgs) -> ValidateOptions {
    let recorded = cbqa::runtime::precision_of(&args.onnx);
    let defaults = ValidateOptions::for_recorded_precision(&recorded);
    ValidateOptions {
        tract: !args.no_tract,
        seed: args.seed,
        tolerance: args.tolerance.unwrap_or(defaults.tolerance),
        decisive_margin: args.decisive_margin.unwrap_or(defaults.decisive_margin),
        ..defaults
    }
}

#[cfg(feature = "train")]
pub use train::{export_examples_options, pretrain_settings, train_settings};

#[cfg(feature = "train")]
mod train {
    use crate::cli::{
        AnswerArg, ObjectiveArg, OptimizerArg, PretrainArgs, RecipeArg, TrainArgs,
        TrainPrecisionArg, TrainerArgs,
    };
    use anyhow::{bail, Result};
    use cbqa::pretrain::span_corruption::{MaskDraw, SpanCorruptionSettings};
    use cbqa::pretrain::{Objective, PretrainSettings};
    use cbqa::train::{
        self as tr, AnswerChoice, ExportExamplesOptions, MixingRates, OptimizerChoice, Precision,
        TrainSettings, TrainSource,
    };
    use std::path::Path;

    /// The settings of `cbqa train`: from the flags, or from the run directory with `--resume`
    /// (then only the flags that may change on a resumed run apply). Also says whether it resumes.
    pub fn train_settings(args: &TrainArgs) -> Result<(TrainSettings, bool)> {
        let (mut s, resume) = match &args.resume {
            Some(run) => (tr::load_settings(run)?, true),
            None => (new_run_settings(args)?, false),
        };
        apply_resumable(&args.trainer, &mut s);
        Ok((s, resume))
    }

    /// The settings of `cbqa pretrain`, as [`train_settings`].
    pub fn pretrain_settings(args: &PretrainArgs) -> Result<(TrainSettings, bool)> {
        let (mut s, resume) = match &args.resume {
            Some(run) => (tr::load_settings(run)?, true),
            None => (new_pretrain_settings(args)?, false),
        };
        if resume && s.pretrain.is_none() {
            bail!(
                "{} is a fine-tuning run: continue it with cbqa train --resume",
                s.out.display()
            );
        }
        apply_resumable(&args.trainer, &mut s);
        Ok((s, resume))
    }

    /// The settings of a new run, from the flags.
    fn new_run_settings(args: &TrainArgs) -> Result<TrainSettings> {
        // clap requires these without --resume (--out only when training).
        let (Some(model), Some(train)) = (&args.model, args.train.first()) else {
            bail!("--model, --train and --out are required (or --resume RUN)");
        };
        let out = args.trainer.out.clone().unwrap_or_default();
        let mut s = TrainSettings::new(model.clone(), train.clone(), out);
        let prefixes = prefixes_of(&args.train, &args.prefix)?;
        s.prefix = prefixes[0].clone().unwrap_or_default();
        s.mixture = args.train[1..]
            .iter()
            .zip(&prefixes[1..])
            .map(|(path, prefix)| TrainSource {
                path: path.clone(),
                prefix: prefix.clone(),
            })
            .collect();
        s.mixing = MixingRates {
            maximum: args.mixing_max,
            temperature: args.mixing_temperature,
            equal: args.mixing_equal,
        };
        s.dev = args.dev.clone();
        s.answer = match args.answer {
            AnswerArg::First => AnswerChoice::First,
            AnswerArg::Random => AnswerChoice::Random,
            AnswerArg::All => AnswerChoice::All,
        };
        s.eval_batch_size = args.eval_batch_size;
        s.eval_max_new_tokens = args.eval_max_new_tokens;
        s.eval_limit = args.eval_limit;
        s.max_input_len = args.max_input_len;
        s.max_target_len = args.max_target_len;
        s.skip_bad = args.skip_bad;
        apply_trainer(&args.trainer, &mut s)?;
        Ok(s)
    }

    /// One prefix per training file: as given (one per file; one file may have one), or none
    /// at all (one file: no prefix; a mixture: the paper's prefix of each file's benchmark).
    fn prefixes_of(files: &[std::path::PathBuf], given: &[String]) -> Result<Vec<Option<String>>> {
        match (files.len(), given.len()) {
            (_, 0) if files.len() > 1 => Ok(vec![None; files.len()]),
            (1, 0) => Ok(vec![Some(String::new())]),
            (n, k) if n == k => Ok(given.iter().cloned().map(Some).collect()),
            (n, k) => bail!("{k} --prefix for {n} --train files: give one per file, or none"),
        }
    }

    /// The settings of a new pre-training run, from the flags.
    fn new_pretrain_settings(args: &PretrainArgs) -> Result<TrainSettings> {
        let (Some(model), Some(objective)) = (&args.model, args.objective) else {
            bail!("--model, --corpus, --objective and --out are required (or --resume RUN)");
        };
        let out = args.trainer.out.clone().unwrap_or_default();
        let objective = match objective {
            ObjectiveArg::Ssm => Objective::Ssm,
            ObjectiveArg::SpanCorruption => Objective::SpanCorruption,
        };
        let mut p = PretrainSettings::new(args.corpus.clone(), objective);
        p.span_corruption = SpanCorruptionSettings {
            inputs_length: args.inputs_length,
            noise_density: args.noise_density,
            mean_noise_span: args.mean_noise_span,
        };
        p.max_target_len = args.max_target_len;
        p.tag_dates = args.tag_dates;
        if args.fixed_masks {
            p.masks = MaskDraw::Fixed;
        }
        let first = args.corpus.first().map_or(Path::new(""), |c| c.as_path());
        let mut s = TrainSettings::new(model.clone(), first.to_path_buf(), out);
        (s.max_input_len, s.max_target_len) = p.lengths();
        s.pretrain = Some(p);
        s.dev = args.dev.clone();
        apply_trainer(&args.trainer, &mut s)?;
        Ok(s)
    }

    /// The trainer's flags of a new run: the recipe's settings (for the model and data `s`
    /// names), under the flags given explicitly.
    fn apply_trainer(t: &TrainerArgs, s: &mut TrainSettings) -> Result<()> {
        if let Some(o) = t.optimizer {
            s.optimizer = match o {
                OptimizerArg::Adafactor => OptimizerChoice::Adafactor,
                OptimizerArg::Adamw => OptimizerChoice::Adamw,
            };
        }
        if let Some(lr) = t.lr {
            s.lr = lr;
        }
        if let Some(n) = t.batch_tokens {
            s.batch_tokens = n;
        }
        if let Some(d) = t.dropout {
            s.dropout = d;
        }
        if let Some(RecipeArg::Roberts2020) = t.recipe {
            let given = tr::Given {
                optimizer: t.optimizer.is_some(),
                lr: t.lr.is_some(),
                batch_tokens: t.batch_tokens.is_some(),
                dropout: t.dropout.is_some(),
            };
            tr::apply_recipe(s, tr::Recipe::Roberts2020, given)?;
        }
        s.seed = t.seed;
        s.precision = match t.precision {
            TrainPrecisionArg::Fp32 => Precision::Fp32,
            TrainPrecisionArg::Bf16 => Precision::Bf16,
        };
        Ok(())
    }

    /// `--export-examples DIR [--export-epochs E] [--force]`, when given.
    pub fn export_examples_options(t: &TrainerArgs) -> Option<ExportExamplesOptions> {
        t.export_examples.as_ref().map(|dir| ExportExamplesOptions {
            dir: dir.clone(),
            epochs: t.export_epochs,
            force: t.force,
        })
    }

    /// What may change on `--resume`: how long, where, how often to report.
    fn apply_resumable(args: &TrainerArgs, s: &mut TrainSettings) {
        if args.max_steps.is_some() || args.epochs.is_some() {
            s.max_steps = args.max_steps;
            s.epochs = args.epochs;
        }
        if let Some(d) = &args.device {
            s.device = d.clone();
        }
        if let Some(n) = args.micro_batch_tokens {
            s.micro_batch_tokens = n;
        }
        if let Some(n) = args.eval_every {
            s.eval_every = n;
        }
        if let Some(n) = args.save_every {
            s.save_every = n;
        }
        if let Some(m) = args.save_every_minutes {
            s.save_every_minutes = m;
        }
        if let Some(n) = args.log_every {
            s.log_every = n;
        }
        if args.threads.is_some() {
            s.threads = args.threads;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("cbqa").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        let Command::Eval(args) = parse(&["eval", "--model", "m", "--data", "d", "--out", "o"])
        else {
            panic!("not eval");
        };
        let opts = answerer_options(&args.runtime).unwrap();
        let defaults = AnswererOptions::default();
        assert_eq!(opts.generate, defaults.generate);
        assert_eq!(opts.batch, defaults.batch);
        assert_eq!(
            format!("{:?}", opts.backend),
            format!("{:?}", defaults.backend)
        );
        assert_eq!(opts.prefix, defaults.prefix);
        assert_eq!(opts.max_input_tokens, defaults.max_input_tokens);
        let read = read_options(&args.data).unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", ReadOptions::default()));
    }

    #[test]
    fn candidates_default_to_the_beams_and_are_checked_by_the_settings() {
        let runtime = |extra: &[&str]| {
            let mut args = vec!["predict", "--model", "m"];
            args.extend_from_slice(extra);
            match parse(&args) {
                Command::Predict(p) => p.runtime,
                _ => panic!("not predict"),
            }
        };
        let opts = answerer_options(&runtime(&["--beams", "4"])).unwrap();
        assert_eq!(opts.generate.num_return_sequences, 4);
        let err = answerer_options(&runtime(&["--beams", "2", "--candidates", "3"])).unwrap_err();
        match err.downcast_ref::<cbqa::Error>() {
            Some(cbqa::Error::Setting { setting, .. }) => {
                assert_eq!(*setting, "num_return_sequences")
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(feature = "train")]
    #[test]
    fn train_flag_defaults_are_the_train_settings_defaults() {
        let Command::Train(args) = parse(&["train", "--model", "m", "--train", "t", "--out", "o"])
        else {
            panic!("not train");
        };
        let (settings, resume) = train_settings(&args).unwrap();
        assert!(!resume);
        let defaults = cbqa::train::TrainSettings::new("m".into(), "t".into(), "o".into());
        assert_eq!(settings, defaults);
    }
}
