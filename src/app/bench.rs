//! `cbqa bench`.

use crate::cli::{BackendArg, BenchArgs};
use anyhow::{bail, Context, Result};
use cbqa::bench::report::{csv_row, read_points, svg_plot, table};
use cbqa::bench::{environment, Workload};
use cbqa::eval::report::{append_row, utc_timestamp};
use cbqa::generate::GenerateOptions;
use cbqa::runtime::{Backend, BackendKind, BackendOptions, Device, OnnxDir};

/// Questions of 10–21 tokens: from a data file, or synthetic ids (deterministic).
fn questions(args: &BenchArgs, dir: &OnnxDir) -> Result<Vec<Vec<u32>>> {
    let (lo, hi) = (
        args.min_tokens.max(2),
        args.max_tokens.max(args.min_tokens.max(2)),
    );
    let eos = dir.config.eos_id();
    if let Some(path) = &args.data {
        let ds = cbqa::data::Dataset::read(path, &Default::default())?;
        let mut out = Vec::new();
        for e in &ds.examples {
            let enc = dir
                .tokenizer
                .encode(e.question.as_str(), true)
                .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
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
        .tokenizer
        .get_vocab_size(false)
        .clamp(4, dir.config.vocab_size) as u64;
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

pub fn run(args: BenchArgs) -> Result<()> {
    let csv = args.out.join("bench.csv");
    let svg = args.out.join("throughput.svg");
    if !args.plot_only {
        let model = args
            .model
            .as_ref()
            .context("--model is required (unless --plot-only)")?;
        std::fs::create_dir_all(&args.out)?;
        let dir = OnnxDir::open(model)?;
        let qs = questions(&args, &dir)?;
        // The exact token ids, so scripts/bench_peers.py runs the same workload.
        cbqa::fsutil::write_atomic(
            &args.out.join("questions.json"),
            serde_json::to_string(&qs)?.as_bytes(),
        )?;
        let device: Device = args.device.parse()?;
        let precision = args
            .precision
            .clone()
            .unwrap_or_else(|| cbqa::runtime::precision_of(model));
        let opts = GenerateOptions {
            max_new_tokens: args.force_steps.max(1),
            min_new_tokens: args.force_steps.max(1),
            num_beams: args.beams.max(1),
            num_return_sequences: 1,
            decoder_start_token_id: dir.config.decoder_start_id(),
            eos_token_id: dir.config.eos_id(),
            pad_token_id: dir.config.pad_id(),
            // transformers, optimum and CTranslate2 compute no greedy scores either
            output_scores: false,
            ..GenerateOptions::default()
        };
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
        for (k, v) in &context {
            eprintln!("{k:<12} {v}");
        }
        let mut results = Vec::new();
        for &kind in &args.backends {
            for &threads in &args.threads {
                let bopts = BackendOptions {
                    kind: match kind {
                        BackendArg::Ort => BackendKind::Ort,
                        BackendArg::Tract => BackendKind::Tract,
                        #[cfg(feature = "train")]
                        BackendArg::Tch => {
                            bail!("cbqa bench measures exported models; --backends ort,tract")
                        }
                    },
                    device: if kind == BackendArg::Tract {
                        Device::Cpu
                    } else {
                        device.clone()
                    },
                    threads,
                    opt_level: args.opt_level,
                    allow_fallback: false,
                    trt_cache: None,
                };
                let backend = Backend::load(&dir, &bopts)?;
                let engine = match kind {
                    BackendArg::Tract => "cbqa-tract",
                    _ => "cbqa-ort",
                };
                for &bs in &args.batch_sizes {
                    let dev = bopts.device.to_string();
                    let w = Workload {
                        engine,
                        device: &dev,
                        precision: &precision,
                        threads,
                        batch_parallelism: if backend.prefers_parallel_batches() {
                            threads.max(1)
                        } else {
                            1
                        },
                        questions: &qs,
                        batch_size: bs,
                        opts: &opts,
                        repeat: args.repeat,
                    };
                    let r = cbqa::bench::run(&backend, &w)?;
                    eprintln!(
                        "{engine} batch {bs} threads {threads}: {:.1} q/s, {:.1} tok/s",
                        r.questions_per_s, r.tokens_per_s
                    );
                    append_row(&csv, &csv_row(&r, &context))?;
                    results.push(r);
                }
            }
        }
        print!("{}", table(&results));
    }
    let points = read_points(&csv)?;
    cbqa::fsutil::write_atomic(
        &svg,
        svg_plot(&points, "throughput vs batch size").as_bytes(),
    )?;
    println!("wrote {} and {}", csv.display(), svg.display());
    Ok(())
}
