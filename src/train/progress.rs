//! The progress display: one line redrawn in place on a terminal (step, loss, tokens/s, ETA),
//! a line every `log_every` steps otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub(crate) struct Progress {
    start: Instant,
    first_step: u64,
    total: u64,
    tty: bool,
    log_every: u64,
    drawn: bool,
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    pub(crate) fn new(first_step: u64, total: u64, log_every: u64) -> Self {
        Progress {
            start: Instant::now(),
            first_step,
            total,
            tty: std::io::stderr().is_terminal(),
            log_every: log_every.max(1),
            drawn: false,
        }
    }

    pub(crate) fn step(&mut self, step: u64, loss: f64, tokens_per_s: f64, em: Option<f64>) {
        let done = step.saturating_sub(self.first_step).max(1) as f64;
        let per_step = self.start.elapsed().as_secs_f64() / done;
        let eta = per_step * self.total.saturating_sub(step) as f64;
        let width = 24usize;
        let filled = (width as u64 * step / self.total.max(1)) as usize;
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        let em = em.map(|e| format!("  dev EM {e:.2}")).unwrap_or_default();
        let line = format!(
            "[{bar}] step {step}/{}  loss {loss:.4}  {:.0} tok/s  ETA {}{em}",
            self.total,
            tokens_per_s,
            duration(eta)
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
            if !em.is_empty() {
                let _ = writeln!(err);
                self.drawn = false;
            }
        } else if step.is_multiple_of(self.log_every) || step == self.total || !em.is_empty() {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    pub(crate) fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
