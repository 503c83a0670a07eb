//! The one progress facility of train, eval, export and bench: a bar with rate and ETA redrawn on
//! a terminal (indicatif), and on a file or a pipe a plain line every few percent, so logs hold
//! no `\r` redraws.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// A plain line is printed each time this many percent more of the work is done.
const PLAIN_EVERY_PERCENT: u64 = 5;

/// Progress of one job of `total` units (steps, questions, graphs).
pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    /// Where the plain lines go when stderr is not a terminal; `None` draws the bar instead.
    plain: Option<Plain>,
}

struct Plain {
    /// The next position that prints a line.
    next_line_at: u64,
    /// Also print at every multiple of this (e.g. training's `log_every`); 0: only percentages.
    every: u64,
    /// The position of the last line printed.
    printed_at: Option<u64>,
}

impl Progress {
    /// Progress of `total` `unit`s (`"steps"`, `"questions"`), shown as `label`, starting at
    /// `position` (a resumed run). It draws on stderr: a bar on a terminal, plain lines otherwise.
    pub fn new(label: &str, unit: &'static str, total: u64, position: u64) -> Self {
        Self::with_target(
            label,
            unit,
            total,
            position,
            std::io::stderr().is_terminal(),
        )
    }

    /// As [`Progress::new`], choosing the bar (`terminal`) or plain lines explicitly.
    pub fn with_target(
        label: &str,
        unit: &'static str,
        total: u64,
        position: u64,
        terminal: bool,
    ) -> Self {
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!(
            "{label} [{{bar:24}}] {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{msg}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("#>-"));
        }
        bar.set_position(position);
        bar.reset_eta();
        if terminal {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            label: label.to_string(),
            unit,
            plain: (!terminal).then(|| Plain {
                next_line_at: next_percent_step(position, total),
                every: 0,
                printed_at: None,
            }),
        }
    }

    /// On a file or a pipe, also print a line at every multiple of `every` units.
    pub fn also_every(mut self, every: u64) -> Self {
        if let Some(p) = &mut self.plain {
            p.every = every;
        }
        self
    }

    /// Move to `position` with `message` (e.g. the loss) shown beside the bar.
    pub fn set(&mut self, position: u64, message: &str) {
        self.bar.set_message(message.to_string());
        self.bar.set_position(position);
        let total = self.total();
        if let Some(p) = &mut self.plain {
            let due = position >= p.next_line_at
                || position >= total
                || (p.every > 0 && position.is_multiple_of(p.every));
            if due {
                p.next_line_at = next_percent_step(position, total);
                p.printed_at = Some(position);
                let line = self.plain_line(message);
                print_line(&line);
            }
        }
    }

    /// Advance by `n` units.
    pub fn inc(&mut self, n: u64, message: &str) {
        let position = self.bar.position() + n;
        self.set(position, message);
    }

    /// A line that stays (e.g. a dev-set score), printed above the bar or as a plain line.
    pub fn note(&self, line: &str) {
        if self.plain.is_some() {
            print_line(line);
        } else {
            self.bar.println(line);
        }
    }

    /// The work turned out to be `total` units (e.g. training epochs of another length).
    pub fn set_total(&mut self, total: u64) {
        self.bar.set_length(total);
    }

    /// Done (or stopped early): the bar stays with its final state; a plain log ends with a
    /// line for the last position unless one was just printed.
    pub fn finish(self) {
        match &self.plain {
            Some(p) if p.printed_at != Some(self.bar.position()) => {
                let message = self.bar.message();
                print_line(&self.plain_line(&message));
            }
            Some(_) => {}
            None => self.bar.abandon(),
        }
    }

    fn total(&self) -> u64 {
        self.bar.length().unwrap_or(0)
    }

    /// `label: 40/100 steps (40%), 12.5 steps/s, ETA 4s  message`.
    fn plain_line(&self, message: &str) -> String {
        let pos = self.bar.position();
        let total = self.total();
        let percent = (pos * 100).checked_div(total).unwrap_or(100);
        let rate = self.bar.per_sec();
        let eta = duration(self.bar.eta());
        let sep = if message.is_empty() { "" } else { "  " };
        format!(
            "{}: {pos}/{total} {} ({percent}%), {rate:.1} {}/s, ETA {eta}{sep}{message}",
            self.label, self.unit, self.unit
        )
    }
}

/// The first position at or after the next multiple of [`PLAIN_EVERY_PERCENT`] percent.
fn next_percent_step(position: u64, total: u64) -> u64 {
    if total == 0 {
        return u64::MAX;
    }
    let percent = position * 100 / total;
    let next = (percent / PLAIN_EVERY_PERCENT + 1) * PLAIN_EVERY_PERCENT;
    (next * total).div_ceil(100).max(position + 1)
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn print_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_five_percent() {
        // positions that print a line for 40 units: 2 (5%), 4 (10%), ... 40
        let mut at = Vec::new();
        let mut next = next_percent_step(0, 40);
        for pos in 1..=40 {
            if pos >= next {
                at.push(pos);
                next = next_percent_step(pos, 40);
            }
        }
        assert_eq!(at.len(), 20, "{at:?}");
        assert_eq!(at[0], 2);
        assert_eq!(*at.last().unwrap(), 40);
        // few units: every unit prints, never more than once
        let mut next = next_percent_step(0, 3);
        let mut count = 0;
        for pos in 1..=3 {
            if pos >= next {
                count += 1;
                next = next_percent_step(pos, 3);
            }
        }
        assert_eq!(count, 3);
        assert_eq!(next_percent_step(5, 0), u64::MAX);
    }

    #[test]
    fn plain_line_names_rate_and_eta() {
        let p = Progress::with_target("eval", "questions", 10, 0, false);
        let line = p.plain_line("EM 50.0");
        assert!(line.starts_with("eval: 0/10 questions (0%), "), "{line}");
        assert!(
            line.contains("questions/s, ETA ") && line.ends_with("  EM 50.0"),
            "{line}"
        );
        p.finish();
    }
}
