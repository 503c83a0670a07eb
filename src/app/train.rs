//! `cbqa train`: resolve the arguments into [`cbqa::train::TrainSettings`] once, install the
//! SIGINT/SIGTERM handler, run, report.

use super::options::{export_examples_options, train_settings};
use crate::cli::{TrainArgs, TrainerArgs};
use anyhow::{Context, Result};
use cbqa::train as tr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT/SIGTERM handler; the trainer checkpoints and returns when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // A second signal while the checkpoint is written falls through to the default action.
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Ctrl-C (SIGINT) and a job scheduler's SIGTERM both stop the run after a checkpoint.
fn install_sigint() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic (and re-raises), which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Train (or resume) and print how it ended; exits with 130 when interrupted.
pub fn run(args: TrainArgs) -> Result<()> {
    let (s, resume) = train_settings(&args)?;
    run_settings("train", s, resume, &args.trainer)
}

/// Run `cbqa <command>` with resolved settings: dump examples to stdout (`--dump-examples`) or
/// export them (`--export-examples`) and stop, or train and report.
pub fn run_settings(
    command: &str,
    s: tr::TrainSettings,
    resume: bool,
    trainer: &TrainerArgs,
) -> Result<()> {
    if let Some(n) = trainer.dump_examples {
        let mut stdout = std::io::stdout().lock();
        tr::dump_examples(&s, n, &mut stdout)
            .with_context(|| format!("cbqa {command}: cannot dump examples"))?;
        return Ok(());
    }
    if let Some(opts) = export_examples_options(trainer) {
        let done = tr::export_examples(&s, &opts).with_context(|| {
            format!(
                "cbqa {command}: cannot export examples to {}",
                opts.dir.display()
            )
        })?;
        println!(
            "wrote {} examples and {} batches ({} epochs; the run trains {} steps) to {}",
            done.examples,
            done.batches,
            done.epochs,
            done.steps,
            done.dir.display()
        );
        return Ok(());
    }
    install_sigint();
    let what = if resume { "resume" } else { command };
    let out = tr::train(&s, resume, &STOP)
        .with_context(|| format!("cbqa {command}: cannot {what} {}", s.out.display()))?;
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
    if let Some(loss) = out.final_dev_loss {
        println!("dev loss {loss:.4}");
    }
    if let Some((dir, em)) = &out.best {
        println!("best checkpoint {} (dev EM {em:.2})", dir.display());
    }
    if let Some((dir, best)) = &out.best_dev_loss {
        println!(
            "best checkpoint by dev loss {} (step {}, dev loss {:.4})",
            dir.display(),
            best.step,
            best.dev_loss
        );
    }
    if !out.skipped_lines.is_empty() {
        println!("skipped {} malformed line(s)", out.skipped_lines.len());
    }
    if out.interrupted {
        println!("continue with: cbqa {command} --resume {}", s.out.display());
        std::process::exit(130);
    }
    Ok(())
}
