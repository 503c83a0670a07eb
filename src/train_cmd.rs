//! `cbqa train`: resolve the arguments into [`TrainSettings`] once, install the SIGINT handler,
//! run, report.

use crate::cli::{AnswerArg, OptimizerArg, TrainArgs, TrainPrecisionArg};
use anyhow::{Context, Result};
use cbqa::train::{self as tr, AnswerChoice, OptimizerChoice, Precision, TrainSettings};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT handler; the trainer checkpoints and returns when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // A second Ctrl-C while the checkpoint is written falls through to the default action.
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
}

fn install_sigint() {
    let handler = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic (and re-raises), which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
    }
}

fn settings(args: &TrainArgs) -> Result<(TrainSettings, bool)> {
    let (mut s, resume) = match &args.resume {
        Some(run) => (tr::load_settings(run)?, true),
        None => {
            // clap requires these without --resume.
            let (Some(model), Some(train), Some(out)) = (&args.model, &args.train, &args.out)
            else {
                anyhow::bail!("--model, --train and --out are required (or --resume RUN)");
            };
            let mut s = TrainSettings::new(model.clone(), train.clone(), out.clone());
            s.dev = args.dev.clone();
            s.prefix = args.prefix.clone();
            s.answer = match args.answer {
                AnswerArg::First => AnswerChoice::First,
                AnswerArg::Random => AnswerChoice::Random,
            };
            s.optimizer = match args.optimizer {
                OptimizerArg::Adafactor => OptimizerChoice::Adafactor,
                OptimizerArg::Adamw => OptimizerChoice::Adamw,
            };
            s.lr = args.lr;
            s.batch_tokens = args.batch_tokens;
            s.dropout = args.dropout;
            s.seed = args.seed;
            s.precision = match args.precision {
                TrainPrecisionArg::Fp32 => Precision::Fp32,
                TrainPrecisionArg::Bf16 => Precision::Bf16,
            };
            s.eval_batch_size = args.eval_batch_size;
            s.eval_max_new_tokens = args.eval_max_new_tokens;
            s.eval_limit = args.eval_limit;
            s.max_input_len = args.max_input_len;
            s.max_target_len = args.max_target_len;
            s.skip_bad = args.skip_bad;
            (s, false)
        }
    };
    // What may change on --resume: how long, where, how often to report.
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
    if let Some(n) = args.log_every {
        s.log_every = n;
    }
    if args.threads.is_some() {
        s.threads = args.threads;
    }
    Ok((s, resume))
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (s, resume) = settings(&args)?;
    install_sigint();
    let what = if resume { "resume" } else { "train" };
    let out = tr::train(&s, resume, &STOP)
        .with_context(|| format!("cbqa train: cannot {what} {}", s.out.display()))?;
    println!(
        "{} after {} steps: last checkpoint {}",
        if out.interrupted {
            "interrupted"
        } else {
            "finished"
        },
        out.steps,
        out.last_checkpoint.display()
    );
    if let Some(loss) = out.last_loss {
        println!("last loss {loss:.4}, {:.0} tokens/s", out.tokens_per_s);
    }
    if let Some(em) = out.final_em {
        println!("dev exact match {em:.2}");
    }
    if let Some((dir, em)) = &out.best {
        println!("best checkpoint {} (dev EM {em:.2})", dir.display());
    }
    if !out.skipped_lines.is_empty() {
        println!("skipped {} malformed line(s)", out.skipped_lines.len());
    }
    if out.interrupted {
        println!("continue with: cbqa train --resume {}", s.out.display());
        std::process::exit(130);
    }
    Ok(())
}
