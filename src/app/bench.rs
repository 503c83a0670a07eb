//! `cbqa bench`: throughput across engines, batch sizes and threads; CSV, table and SVG plot.

use super::options;
use crate::cli::{BackendArg, BenchArgs};
use anyhow::{bail, Context, Result};
use cbqa::bench::report::{csv_row, read_points, svg_plot, table};
use cbqa::bench::roofline::report::{
    json_entry, svg as roofline_svg, table as roofline_table, Measured,
};
use cbqa::bench::roofline::{batches, Limits, RunBound, Weights};
use cbqa::bench::{environment, BenchResult, Workload};
use cbqa::eval::report::{append_row, utc_timestamp};
use cbqa::generate::GenerateOptions;
use cbqa::progress::Progress;
use cbqa::runtime::{Backend, BackendKind, BackendOptions, Device, OnnxDir};
use cbqa::{GenerationConfig, T5Config};
use std::path::Path;

/// What a sweep measures: an export (ort, tract) or, for `--backends tch`, a checkpoint
/// directory in any format `cbqa inspect` reads.
enum Model {
    Onnx(OnnxDir),
    #[cfg(feature = "train")]
    Checkpoint(cbqa::ModelDir),
}

impl Model {
    /// An export, or a checkpoint directory when every backend is tch.
    fn open(path: &Path, backends: &[BackendArg]) -> Result<Self> {
        let tch = |b: &BackendArg| options::backend_kind(*b) == BackendKind::Tch;
        if !backends.iter().any(tch) {
            return Ok(Model::Onnx(OnnxDir::open(path)?));
        }
        if !backends.iter().all(tch) {
            bail!(
                "--backends tch measures a checkpoint directory, ort and tract an export: bench \
                 them in separate runs"
            );
        }
        #[cfg(feature = "train")]
        return Ok(Model::Checkpoint(cbqa::ModelDir::open(path)?));
        #[cfg(not(feature = "train"))]
        bail!("this cbqa is built without the tch backend (feature `train`)")
    }

    fn config(&self) -> &T5Config {
        match self {
            Model::Onnx(d) => &d.config,
            #[cfg(feature = "train")]
            Model::Checkpoint(m) => &m.config,
        }
    }

    fn generation(&self) -> &GenerationConfig {
        match self {
            Model::Onnx(d) => &d.generation,
            #[cfg(feature = "train")]
            Model::Checkpoint(m) => &m.generation,
        }
    }

    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        match self {
            Model::Onnx(d) => &d.tokenizer,
            #[cfg(feature = "train")]
            Model::Checkpoint(m) => &m.tokenizer,
        }
    }

    /// The precision column: the export's; for a checkpoint, bf16 under `--compute bf16`, else
    /// its stored dtype in the same terms.
    #[cfg_attr(not(feature = "train"), allow(unused_variables))]
    fn precision(&self, path: &Path, compute: cbqa::runtime::Compute) -> String {
        match self {
            Model::Onnx(_) => cbqa::runtime::precision_of(path),
            #[cfg(feature = "train")]
            Model::Checkpoint(m) => match (compute, m.weights.dtype()) {
                (cbqa::runtime::Compute::Bf16, _) => "bf16".into(),
                (_, safetensors::Dtype::F16) => "fp16".into(),
                (_, safetensors::Dtype::BF16) => "bf16".into(),
                _ => "fp32".into(),
            },
        }
    }

    /// The engine of `opts` on this model.
    fn backend(&self, opts: &BackendOptions) -> Result<Backend> {
        Ok(match self {
            Model::Onnx(d) => Backend::load(d, opts)?,
            #[cfg(feature = "train")]
            Model::Checkpoint(m) => Backend::load_checkpoint(m, opts)?,
        })
    }
}

/// Questions of 10–21 tokens: from a data file, or synthetic ids (deterministic).
fn questions(args: &BenchArgs, dir: &Model) -> Result<Vec<Vec<u32>>> {
    let (lo, hi) = (
        args.min_tokens.max(2),
        args.max_tokens.max(args.min_tokens.max(2)),
    );
    let eos = dir.config().eos_id();
    if let Some(path) = &args.data {
        let ds = cbqa::data::Dataset::read(path, &Default::default())?;
        let mut out = Vec::new();
        for e in &ds.examples {
            let enc = dir
                .tokenizer()
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
    let vocab = dir
        .tokenizer()
        .get_vocab_size(false)
        .clamp(4, dir.config().vocab_size) as u64;
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
    let dir = Model::open(model, &args.backends)?;
    let qs = questions(args, &dir)?;
    // The exact token ids, so scripts/bench_peers.py runs the same workload.
    cbqa::fsutil::write_atomic(
        &args.out.join("questions.json"),
        serde_json::to_string(&qs)?.as_bytes(),
    )?;
    let compute = options::compute(args.compute);
    let sweep = Sweep {
        dir: &dir,
        questions: &qs,
        device: args.device.parse()?,
        compute,
        precision: args
            .precision
            .clone()
            .unwrap_or_else(|| dir.precision(model, compute)),
        opts: generate_options(args, &dir)?,
        context: context(args, model, &qs),
        limits: if args.roofline {
            machine_limits(args)?
        } else {
            Vec::new()
        },
    };
    for (k, v) in &sweep.context {
        eprintln!("{k:<12} {v}");
    }
    let configurations = args.backends.len() * args.threads.len() * args.batch_sizes.len();
    let mut progress = Progress::new("bench", "configurations", configurations as u64, 0);
    let mut results = Vec::new();
    let mut bounds = Vec::new();
    for &kind in &args.backends {
        for &threads in &args.threads {
            for (r, bound) in sweep.batch_sizes(args, kind, threads, csv, &mut progress)? {
                results.push(r);
                bounds.extend(bound);
            }
        }
    }
    progress.finish();
    print!("{}", table(&results));
    if args.roofline {
        write_roofline(&args.out, &results, &bounds)?;
    }
    Ok(())
}

/// The entries an earlier run left in `roofline.json` (a sweep over several exports, e.g. fp32 then
/// int8, keeps them all); a file that is not such a list is an error, not overwritten.
fn earlier_entries(path: &Path) -> Result<Vec<serde_json::Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a list of roofline entries; not touching it (move it away)",
            path.display()
        )
    })
}

/// Whether two roofline entries measure the same engine, precision, batch size and threads.
fn same_configuration(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    ["engine", "precision", "batch_size", "threads"]
        .iter()
        .all(|k| a[k] == b[k])
}

/// This machine's limits on every thread count of the sweep, measured before the engines run.
fn machine_limits(args: &BenchArgs) -> Result<Vec<Limits>> {
    if args.device != "cpu" {
        bail!("--roofline measures the CPU's limits; run it with --device cpu");
    }
    #[cfg(feature = "ort")]
    {
        let mut all = Vec::new();
        for &threads in &args.threads {
            let l = cbqa::bench::roofline::measure(threads, args.triad_mib.max(1) << 18)?;
            eprintln!(
                "limits      {}",
                cbqa::bench::roofline::report::limits_line(&l)
            );
            all.push(l);
        }
        Ok(all)
    }
    #[cfg(not(feature = "ort"))]
    bail!("--roofline measures the GEMM peak through ONNX Runtime: build with the `ort` feature")
}

/// The roofline table of every configuration, roofline.json and roofline.svg.
fn write_roofline(out: &Path, results: &[BenchResult], bounds: &[Roofline]) -> Result<()> {
    let json_path = out.join("roofline.json");
    let mut entries = earlier_entries(&json_path)?;
    let mut bars = Vec::new();
    for (r, (bound, measured)) in results.iter().zip(bounds) {
        let label = format!("{} {} batch {}", r.engine, r.precision, r.batch_size);
        print!("{}", roofline_table(&label, bound, measured));
        let entry = json_entry(r, bound, measured);
        entries.retain(|e| !same_configuration(e, &entry));
        entries.push(entry);
        bars.push((label, bound.clone(), *measured));
    }
    let json_path = out.join("roofline.json");
    cbqa::fsutil::write_atomic(
        &json_path,
        serde_json::to_string_pretty(&entries)?.as_bytes(),
    )?;
    let svg_path = out.join("roofline.svg");
    cbqa::fsutil::write_atomic(&svg_path, roofline_svg(&bars).as_bytes())?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// Forced-length decoding, so engines do equal work; no greedy scores.
fn generate_options(args: &BenchArgs, dir: &Model) -> Result<GenerateOptions> {
    let opts = GenerateOptions {
        max_new_tokens: args.force_steps.max(1),
        min_new_tokens: args.force_steps.max(1),
        num_beams: args.beams.max(1),
        num_return_sequences: 1,
        // transformers, optimum and CTranslate2 compute no greedy scores either
        output_scores: false,
        ..GenerateOptions::default()
    };
    Ok(opts.for_model(dir.generation(), dir.config())?)
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
    dir: &'a Model,
    questions: &'a [Vec<u32>],
    device: Device,
    compute: cbqa::runtime::Compute,
    precision: String,
    opts: GenerateOptions,
    context: Vec<(String, String)>,
    /// The machine's limits per thread count (`--roofline`; empty otherwise).
    limits: Vec<Limits>,
}

/// One configuration's bound and what was measured of it.
type Roofline = (RunBound, Measured);

impl Sweep<'_> {
    /// The machine's bound for one configuration, when its limits were measured.
    fn bound(&self, threads: usize, batch_size: usize, repeat: usize) -> Option<RunBound> {
        let limits = *self.limits.iter().find(|l| l.threads == threads)?;
        let shapes = batches(
            self.questions,
            batch_size,
            self.opts.max_new_tokens,
            self.opts.num_beams,
        );
        let weights = Weights::from_precision(&self.precision);
        Some(RunBound::of(
            self.dir.config(),
            weights,
            &shapes,
            repeat,
            limits,
        ))
    }

    /// One engine with `threads` threads over every batch size.
    fn batch_sizes(
        &self,
        args: &BenchArgs,
        kind: BackendArg,
        threads: usize,
        csv: &Path,
        progress: &mut Progress,
    ) -> Result<Vec<(BenchResult, Option<Roofline>)>> {
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
            parallel_batches: !args.serial_batches,
            ..BackendOptions::default()
        };
        let backend = self.dir.backend(&bopts)?;
        let engine = match options::backend_kind(kind) {
            BackendKind::Tract => "cbqa-tract",
            BackendKind::Tch => "cbqa-tch",
            _ => "cbqa-ort",
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
            let mut r = cbqa::bench::run(&backend, &w)?;
            let bound = self.bound(threads, bs, args.repeat).map(|b| {
                r.roofline_s = Some(b.seconds());
                (b, Measured::of(&r, w.batch_parallelism))
            });
            progress.note(&format!(
                "{engine} batch {bs} threads {threads}: {:.1} q/s, {:.1} tok/s",
                r.questions_per_s, r.tokens_per_s
            ));
            progress.inc(1, &format!("{engine} batch {bs}"));
            append_row(csv, &csv_row(&r, &self.context))?;
            results.push((r, bound));
        }
        Ok(results)
    }
}
