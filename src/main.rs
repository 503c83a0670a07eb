//! The `cbqa` binary: parse the command line, dispatch to its subcommand (in `app`), print the
//! error chain, set the exit code.

mod app;
mod cli;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};

fn main() {
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`cbqa predict ... | head`) instead of panicking on the failed write: Rust ignores SIGPIPE
    // by default.
    // SAFETY: restoring the default disposition of a signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        print_error(&err);
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => app::init::run(args),
        Command::Inspect(args) => app::inspect::run(args),
        Command::Convert(args) => app::convert::run(args),
        Command::Predict(args) => app::predict::run(args),
        Command::Serve(args) => app::serve::run(args),
        Command::Eval(args) => app::eval::run(args),
        Command::Score(args) => app::score::run(args),
        Command::Bench(args) => app::bench::run(args),
        Command::Export(args) => app::export::run(args),
        Command::Validate(args) => app::validate::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => app::train::run(*args),
        #[cfg(feature = "train")]
        Command::Pretrain(args) => app::pretrain::run(*args),
        Command::Doctor => app::doctor::run(),
    }
}

/// The error and every cause, one per line.
fn print_error(err: &anyhow::Error) {
    let mut chain = err.chain();
    if let Some(top) = chain.next() {
        eprintln!("error: {}", error_message(top));
    }
    for cause in chain {
        eprintln!("  caused by: {}", error_message(cause));
    }
}

/// One error of a chain in the user's terms: a library setting is named by its flag.
fn error_message(err: &(dyn std::error::Error + 'static)) -> String {
    let lib = err.downcast_ref::<cbqa::Error>().or_else(|| {
        // the one failure shared by every question of a batch
        err.downcast_ref::<std::sync::Arc<cbqa::Error>>()
            .map(|shared| shared.as_ref())
    });
    match lib {
        Some(cbqa::Error::Setting { setting, msg }) => {
            format!(
                "{}: {msg}",
                cli::flag_of_setting(setting).unwrap_or(setting)
            )
        }
        Some(cbqa::Error::OutputExists { path, setting }) => {
            let path = path.display();
            match cli::flag_of_setting(setting) {
                Some("--resume") => format!(
                    "{path} exists and is not empty; continue it with --resume, or choose another --out"
                ),
                Some(flag) => format!("{path} exists and is not empty; pass {flag} to replace it"),
                None => err.to_string(),
            }
        }
        _ => err.to_string(),
    }
}
