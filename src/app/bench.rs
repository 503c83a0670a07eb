//! `cbqa bench`: throughput across engines, batch sizes and threads; CSV, table and SVG plot.

use super::options;
use crate::cli::{BackendArg, BenchArgs};
use anyhow::{bail, Context, Result};
use cbqa::bench::report::{csv_row, read_points, svg_plot, table};
use cbqa::bench::{environment, BenchResult, Workload};
use cbqa::eval::report::{append_row, utc_timestamp};
use cbqa::generate::GenerateOptions;
use cbqa::progress::Progress;
use cbqa::runtime::{Backend, BackendKind, BackendOptions, Device, OnnxDir};
use cbqa::{GenerationConfig, T5Config};
use std::path::Path;

/// The model a sweep measures: an export (ort, tract) or a checkpoint directory (tch).
enum Source {
    Onnx(OnnxDir),
    #[cfg(feature = "train")]
    Checkpoint(cbqa::ModelDir),
}

impl Source {
    /// A checkpoint directory when the engines are `tch` alone, an export otherwise.
    fn open(model: &Path, backends: &[BackendArg]) -> Result<Self> {
        let tch = backends
            .iter()
            .filter(|&&b| options::backend_kind(b) == BackendKind::Tch)
            .count();
        if tch > 0 && tch < backends.len() {
            bail!("--backends tch measures a checkpoint directory, ort and tract an export: one kind per run");
        }
        #[cfg(feature = "train")]
        if tch > 0 {
            return Ok(Source::Checkpoint(cbqa::ModelDir::open(model)?));
        }
        Ok(Source::Onnx(OnnxDir::open(model)?))
    }

    fn parts(&self) -> (&T5Config, &GenerationConfig, &tokenizers::Tokenizer) {
        match self {
            Source::Onnx(d) => (&d.config, &d.generation, &d.tokenizer),
            #[cfg(feature = "train")]
            Source::Checkpoint(d) => (&d.config, &d.generation, &d.tokenizer),
        }
    }

    fn load(&self, opts: &BackendOptions) -> Result<Backend> {
        Ok(match self {
            Source::Onnx(d) => Backend::load(d, opts)?,
            #[cfg(feature = "train")]
            Source::Checkpoint(d) => Backend::load_checkpoint(d, opts)?,
        })
    }

    /// The precision column: the export's own, or the tch backend's matmul precision.
    #[cfg_attr(not(feature = "train"), allow(unused_variables))]
    fn precision(&self, model: &Path, compute: cbqa::runtime::Compute) -> String {
        match self {
            Source::Onnx(_) => cbqa::runtime::precision_of(model),
            #[cfg(feature = "train")]
            Source::Checkpoint(_) => match compute {
                cbqa::runtime::Compute::Fp32 => "fp32".into(),
                cbqa::runtime::Compute::Bf16 => "bf16".into(),
            },
        }
    }
}

/// Questions of 10–21 tokens: from a data file, or synthetic ids (deterministic).
fn questions(args: &BenchArgs, source: &Source) -> Result<Vec<Vec<u32>>> {
    let (config, _, tokenizer) = source.parts();
    let (lo, hi) = (
        args.min_tokens.max(2),
        args.max_tokens.max(args.min_tokens.max(2)),
    );
    let eos = config.eos_id();
    if let Some(path) = &args.data {
        let ds = cbqa::data::Dataset::read(path, &Default::default())?;
        let mut out = Vec::new();
        for e in &ds.examples {
            let enc =
                tokenizer
                    .encode(e.question.as_str(), true)
                    .map_err(|e| cbqa::Error::Tokenize {
                        action: "encoding a question".into(),
                        source: e,
                    })?;
            let ids = enc.get_ids().to_vec();
            if (lo..=hi).contains(&ids.len()) {
                out.push(ids);
            }
            if out.len() == args.questions {
                break;
            }
        }
        if out.is_empty() {
            bail!("{}: no question has {lo}–{hi} tokens", path.display());
        }
        let n = out.len();
        return Ok((0..args.questions).map(|i| out[i % n].clone()).collect());
    }
    let vocab = tokenizer.get_vocab_size(false).clamp(4, config.vocab_size) as u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    Ok((0..args.questions)
        .map(|_| {
            let len = lo + (next() % (hi - lo + 1) as u64) as usize;
            let mut ids: Vec<u32> = (0..len - 1)
                .map(|_| 3 + (next() % (vocab - 3)) as u32)
                .collect();
            ids.push(eos);
            ids
        })
        .collect())
}

/// Measure every engine × threads × batch size (unless `--plot-only`), then redraw the plot.
pub fn run(args: BenchArgs) -> Result<()> {
    let csv = args.out.join("bench.csv");
    let svg = args.out.join("throughput.svg");
    if !args.plot_only {
        measure(&args, &csv)?;
    }
    let points = read_points(&csv)?;
    cbqa::fsutil::write_atomic(
        &svg,
        svg_plot(&points, "throughput vs batch size").as_bytes(),
    )?;
    println!("wrote {} and {}", csv.display(), svg.display());
    Ok(())
}

/// Run the sweep, appending a row to `csv` per configuration, and print the table.
fn measure(args: &BenchArgs, csv: &Path) -> Result<()> {
    let model = args
        .model
        .as_ref()
        .context("--model is required (unless --plot-only)")?;
    std::fs::create_dir_all(&args.out)?;
    let source = Source::open(model, &args.backends)?;
    let qs = questions(args, &source)?;
    // The exact token ids, so scripts/bench_peers.py runs the same workload.
    cbqa::fsutil::write_atomic(
        &args.out.join("questions.json"),
        serde_json::to_string(&qs)?.as_bytes(),
    )?;
    let compute = options::compute(args.compute);
    let sweep = Sweep {
        source: &source,
        questions: &qs,
        device: args.device.parse()?,
        compute,
        precision: args
            .precision
            .clone()
            .unwrap_or_else(|| source.precision(model, compute)),
        opts: generate_options(args, &source)?,
        context: context(args, model, &qs),
    };
    for (k, v) in &sweep.context {
        eprintln!("{k:<12} {v}");
    }
    let configurations = args.backends.len() * args.threads.len() * args.batch_sizes.len();
    let mut progress = Progress::new("bench", "configurations", configurations as u64, 0);
    let mut results = Vec::new();
    for &kind in &args.backends {
        for &threads in &args.threads {
            results.extend(sweep.batch_sizes(args, kind, threads, csv, &mut progress)?);
        }
    }
    progress.finish();
    print!("{}", table(&results));
    Ok(())
}

/// Forced-length decoding, so engines do equal work; no greedy scores.
fn generate_options(args: &BenchArgs, source: &Source) -> Result<GenerateOptions> {
    let (config, generation, _) = source.parts();
    let opts = GenerateOptions {
        max_new_tokens: args.force_steps.max(1),
        min_new_tokens: args.force_steps.max(1),
        num_beams: args.beams.max(1),
        num_return_sequences: 1,
        // transformers, optimum and CTranslate2 compute no greedy scores either
        output_scores: false,
        ..GenerateOptions::default()
    };
    Ok(opts.for_model(generation, config)?)
}

/// The environment and workload columns of every bench.csv row.
fn context(args: &BenchArgs, model: &Path, qs: &[Vec<u32>]) -> Vec<(String, String)> {
    let mut context = environment();
    context.push(("model".into(), model.display().to_string()));
    context.push((
        "workload".into(),
        format!(
            "{} {} questions of {}-{} tokens, {} forced steps, beams {}",
            qs.len(),
            if args.data.is_some() {
                "real"
            } else {
                "synthetic"
            },
            args.min_tokens,
            args.max_tokens,
            args.force_steps,
            args.beams
        ),
    ));
    context.push(("timestamp".into(), utc_timestamp()));
    context
}

/// What every configuration of a sweep shares.
struct Sweep<'a> {
    source: &'a Source,
    questions: &'a [Vec<u32>],
    device: Device,
    compute: cbqa::runtime::Compute,
    precision: String,
    opts: GenerateOptions,
    context: Vec<(String, String)>,
}

impl Sweep<'_> {
    /// One engine with `threads` threads over every batch size.
    fn batch_sizes(
        &self,
        args: &BenchArgs,
        kind: BackendArg,
        threads: usize,
        csv: &Path,
        progress: &mut Progress,
    ) -> Result<Vec<BenchResult>> {
        let bopts = BackendOptions {
            kind: options::backend_kind(kind),
            device: if kind == BackendArg::Tract {
                Device::Cpu
            } else {
                self.device.clone()
            },
            threads,
            opt_level: args.opt_level,
            compute: self.compute,
            ..BackendOptions::default()
        };
        let backend = self.source.load(&bopts)?;
        let engine = match options::backend_kind(kind) {
            BackendKind::Tract => "cbqa-tract",
            BackendKind::Tch => "cbqa-tch",
            BackendKind::Ort => "cbqa-ort",
        };
        let dev = bopts.device.to_string();
        let mut results = Vec::new();
        for &bs in &args.batch_sizes {
            let w = Workload {
                engine,
                device: &dev,
                precision: &self.precision,
                threads,
                batch_parallelism: if backend.prefers_parallel_batches() {
                    threads.max(1)
                } else {
                    1
                },
                questions: self.questions,
                batch_size: bs,
                opts: &self.opts,
                repeat: args.repeat,
            };
            let r = cbqa::bench::run(&backend, &w)?;
            progress.note(&format!(
                "{engine} batch {bs} threads {threads}: {:.1} q/s, {:.1} tok/s",
                r.questions_per_s, r.tokens_per_s
            ));
            progress.inc(1, &format!("{engine} batch {bs}"));
            append_row(csv, &csv_row(&r, &self.context))?;
            results.push(r);
        }
        Ok(results)
    }
}
