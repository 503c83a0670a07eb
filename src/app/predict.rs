//! `cbqa predict`: answers for questions on the command line or stdin, streamed as batches finish.

use crate::cli::{PredictArgs, PredictFormat};
use anyhow::{Context, Result};
use cbqa::{Answer, Answerer};
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

enum Line {
    Text(usize, String),
    Bad(String),
}

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
            eprintln!("error: question {question:?}: {e}");
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
            serde_json::json!({"question": question, "error": e.to_string()})
        )?,
    }
    Ok(())
}

pub fn run(args: PredictArgs) -> Result<()> {
    let opts = super::answerer_options(&args.runtime)?;
    let chunk = opts.batch.max_batch_size * 4;
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
        // A reader thread, so answers for what has arrived are printed while more is typed.
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
        let mut open = true;
        while open {
            let mut lines = Vec::new();
            match rx.recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
            while lines.len() < chunk {
                match rx.recv_timeout(Duration::from_millis(30)) {
                    Ok(l) => lines.push(l),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let qs: Vec<&str> = lines
                .iter()
                .filter_map(|l| match l {
                    Line::Text(_, s) if !s.trim().is_empty() => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            let mut answers = answerer.answer_batch(&qs).into_iter();
            for l in &lines {
                match l {
                    Line::Text(_, s) if !s.trim().is_empty() => {
                        if let Some(a) = answers.next() {
                            print(&mut out, args.format, s, &a)?;
                        }
                    }
                    Line::Text(n, _) => eprintln!("warning: stdin:{n}: empty line skipped"),
                    Line::Bad(msg) => {
                        eprintln!("error: {msg}");
                        if args.format == PredictFormat::Jsonl {
                            writeln!(out, "{}", serde_json::json!({"error": msg}))?;
                        } else {
                            writeln!(out)?;
                        }
                    }
                }
            }
            out.flush()?;
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
