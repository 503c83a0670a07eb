//! `cbqa predict`: answers for questions on the command line or stdin, streamed as batches finish.

use super::options::{answerer_options, question_prefix};
use crate::cli::{PredictArgs, PredictFormat};
use anyhow::{Context, Result};
use cbqa::{Answer, Answerer};
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

/// A line of stdin: its number and text, or why it is unreadable.
enum Line {
    Text(usize, String),
    Bad(String),
}

/// One answer (or its error) in the output format.
fn print(
    out: &mut impl Write,
    format: PredictFormat,
    question: &str,
    a: &cbqa::Result<Answer>,
) -> Result<()> {
    match (format, a) {
        (PredictFormat::Text, Ok(a)) => writeln!(out, "{}", a.text)?,
        (PredictFormat::Text, Err(e)) => {
            writeln!(out)?;
            eprintln!("error: question {question:?}: {}", super::error_chain(e));
        }
        (PredictFormat::Jsonl, Ok(a)) => writeln!(
            out,
            "{}",
            serde_json::json!({"question": question, "answer": a.text, "score": a.score,
                "candidates": a.candidates, "truncated": a.truncated})
        )?,
        (PredictFormat::Jsonl, Err(e)) => writeln!(
            out,
            "{}",
            serde_json::json!({"question": question, "error": super::error_chain(e)})
        )?,
    }
    Ok(())
}

/// Answer the questions of the command line, or of stdin as lines arrive.
pub fn run(args: PredictArgs) -> Result<()> {
    let mut opts = answerer_options(&args.runtime)?;
    opts.prefix = question_prefix(&args.runtime, &args.model, None)?;
    if !args.questions.is_empty() && args.questions.len() <= opts.batch.max_batch_size {
        // One batch: the threads go inside its calls (and one session per graph loads faster).
        opts.backend.parallel_batches = false;
    }
    let chunk = opts.batch.max_batch_size.max(1) * 4;
    let answerer = Answerer::load(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.questions.is_empty() {
        let qs: Vec<&str> = args.questions.iter().map(String::as_str).collect();
        for (q, a) in qs.iter().zip(answerer.answer_batch(&qs)) {
            print(&mut out, args.format, q, &a)?;
        }
    } else {
        let lines = read_stdin_lines();
        while let Some(chunk) = next_chunk(&lines, chunk) {
            answer_chunk(&answerer, &chunk, args.format, &mut out)?;
        }
    }
    if answerer.truncations() > 0 {
        eprintln!(
            "warning: {} question(s) were longer than --max-input-tokens and were cut",
            answerer.truncations()
        );
    }
    Ok(())
}

/// A reader thread, so answers for what has arrived are printed while more is typed: stdin's
/// lines, numbered from 1, as they come.
fn read_stdin_lines() -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel::<Line>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            buf.clear();
            match lock.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            n += 1;
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            let line = match String::from_utf8(buf.clone()) {
                Ok(s) => Line::Text(n, s),
                Err(e) => Line::Bad(format!("stdin:{n}: invalid UTF-8 ({e})")),
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next lines to answer together: one line (waiting for it), then whatever arrives within
/// 30 ms of the last, up to `max` lines. `None` when stdin has ended.
fn next_chunk(rx: &mpsc::Receiver<Line>, max: usize) -> Option<Vec<Line>> {
    let mut lines = vec![rx.recv().ok()?];
    while lines.len() < max {
        match rx.recv_timeout(Duration::from_millis(30)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    Some(lines)
}

/// Answer a chunk of stdin lines and print them in order; empty and undecodable lines are
/// reported on stderr.
fn answer_chunk(
    answerer: &Answerer,
    lines: &[Line],
    format: PredictFormat,
    out: &mut impl Write,
) -> Result<()> {
    let qs: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Text(_, s) if !s.trim().is_empty() => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let mut answers = answerer.answer_batch(&qs).into_iter();
    for l in lines {
        match l {
            Line::Text(_, s) if !s.trim().is_empty() => {
                if let Some(a) = answers.next() {
                    print(out, format, s, &a)?;
                }
            }
            Line::Text(n, _) => eprintln!("warning: stdin:{n}: empty line skipped"),
            Line::Bad(msg) => {
                eprintln!("error: {msg}");
                if format == PredictFormat::Jsonl {
                    writeln!(out, "{}", serde_json::json!({"error": msg}))?;
                } else {
                    writeln!(out)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
