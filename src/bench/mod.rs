//! `cbqa bench`: throughput of the backends on a fixed workload, measured the way users feel it
//! (questions/s, generated tokens/s, batch latency percentiles, encoder vs decoder time, peak RSS),
//! with the machine and library versions, so results from different runs and hardware compare.
//!
//! Work is made equal across engines by forcing every question to decode exactly `force_steps`
//! tokens (EOS suppressed until then), as `min_new_tokens = max_new_tokens` does in transformers
//! and `min_decoding_length = max_decoding_length` in CTranslate2.

pub mod report;
pub mod roofline;

use crate::error::Result;
use crate::generate::{generate, GenerateOptions};
use crate::runtime::{EncoderInput, Logits, Seq2Seq};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A backend wrapper that accumulates the time spent in the encoder and in decoder steps.
pub struct Timed<'a, B> {
    inner: &'a B,
    encode_ns: AtomicU64,
    decode_ns: AtomicU64,
    select_ns: AtomicU64,
}

impl<'a, B: Seq2Seq> Timed<'a, B> {
    pub fn new(inner: &'a B) -> Self {
        Timed {
            inner,
            encode_ns: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            select_ns: AtomicU64::new(0),
        }
    }
    /// (encoder, decoder steps, row selection) seconds so far.
    pub fn seconds(&self) -> (f64, f64, f64) {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 * 1e-9;
        (s(&self.encode_ns), s(&self.decode_ns), s(&self.select_ns))
    }
}

fn add(a: &AtomicU64, t: Instant) {
    a.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

impl<B: Seq2Seq> Seq2Seq for Timed<'_, B> {
    type State = B::State;
    fn encode(&self, input: &EncoderInput) -> Result<B::State> {
        let t = Instant::now();
        let r = self.inner.encode(input);
        add(&self.encode_ns, t);
        r
    }
    fn step(&self, state: B::State, tokens: &[i64]) -> Result<(Logits, B::State)> {
        let t = Instant::now();
        let r = self.inner.step(state, tokens);
        add(&self.decode_ns, t);
        r
    }
    fn select(&self, state: B::State, rows: &[usize]) -> Result<B::State> {
        let t = Instant::now();
        let r = self.inner.select(state, rows);
        add(&self.select_ns, t);
        r
    }
    fn concat(&self, first: B::State, second: B::State) -> Result<B::State> {
        // Joining moves rows as selecting does: timed with it.
        let t = Instant::now();
        let r = self.inner.concat(first, second);
        add(&self.select_ns, t);
        r
    }
    fn joins_any_position(&self) -> bool {
        self.inner.joins_any_position()
    }
    fn rows(&self, state: &B::State) -> usize {
        self.inner.rows(state)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// One measured configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub engine: String,
    pub device: String,
    pub precision: String,
    pub batch_size: usize,
    pub threads: usize,
    pub questions: usize,
    pub generated_tokens: usize,
    pub wall_s: f64,
    pub questions_per_s: f64,
    pub tokens_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub encoder_s: f64,
    pub decoder_s: f64,
    pub peak_rss_mb: f64,
    /// The machine's bound for this run (`--roofline`, [`roofline::RunBound`]), seconds.
    pub roofline_s: Option<f64>,
}

/// The `q`-quantile (0..=1) of `xs` with linear interpolation, as numpy's default.
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// What one bench run measures.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub engine: &'a str,
    pub device: &'a str,
    pub precision: &'a str,
    /// Engine threads, reported.
    pub threads: usize,
    /// Batches run concurrently on this many threads (1: one after another). tract uses this;
    /// ONNX Runtime parallelises inside each call instead.
    pub batch_parallelism: usize,
    pub questions: &'a [Vec<u32>],
    pub batch_size: usize,
    pub opts: &'a GenerateOptions,
    pub repeat: usize,
}

/// Run the workload's questions (token ids) through `backend` in batches of `batch_size`, in
/// order, `repeat` times, after one untimed warm-up batch.
pub fn run<B: Seq2Seq>(backend: &B, w: &Workload<'_>) -> Result<BenchResult> {
    use rayon::prelude::*;
    let (engine, device, precision, threads, questions, batch_size, opts, repeat) = (
        w.engine,
        w.device,
        w.precision,
        w.threads,
        w.questions,
        w.batch_size,
        w.opts,
        w.repeat,
    );
    let timed = Timed::new(backend);
    let batches: Vec<EncoderInput> = questions
        .chunks(batch_size.max(1))
        .map(|c| EncoderInput::from_sequences(c, opts.pad_token_id))
        .collect();
    if let Some(first) = batches.first() {
        generate(backend, first, opts)?;
    }
    let one = |b: &EncoderInput| -> Result<(f64, usize)> {
        let t = Instant::now();
        let hyps = generate(&timed, b, opts)?;
        let n = hyps
            .iter()
            .map(|h| h.first().map_or(0, |h| h.tokens.len()))
            .sum::<usize>();
        Ok((t.elapsed().as_secs_f64() * 1e3, n))
    };
    let work: Vec<&EncoderInput> = (0..repeat.max(1)).flat_map(|_| batches.iter()).collect();
    let start = Instant::now();
    let done: Vec<(f64, usize)> = if w.batch_parallelism > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(w.batch_parallelism)
            .build()
            .map_err(|e| {
                crate::error::Error::setting(
                    "batch_parallelism",
                    format!("cannot start {} worker threads: {e}", w.batch_parallelism),
                )
            })?;
        pool.install(|| work.par_iter().map(|b| one(b)).collect::<Result<_>>())?
    } else {
        work.iter().map(|b| one(b)).collect::<Result<_>>()?
    };
    let wall = start.elapsed().as_secs_f64();
    let latencies: Vec<f64> = done.iter().map(|d| d.0).collect();
    let tokens: usize = done.iter().map(|d| d.1).sum();
    let n = questions.len() * repeat.max(1);
    let (enc, dec, _) = timed.seconds();
    Ok(BenchResult {
        engine: engine.into(),
        device: device.into(),
        precision: precision.into(),
        batch_size,
        threads,
        questions: n,
        generated_tokens: tokens,
        wall_s: wall,
        questions_per_s: n as f64 / wall,
        tokens_per_s: tokens as f64 / wall,
        p50_ms: quantile(&latencies, 0.5),
        p95_ms: quantile(&latencies, 0.95),
        p99_ms: quantile(&latencies, 0.99),
        encoder_s: enc,
        decoder_s: dec,
        peak_rss_mb: crate::eval::report::peak_rss_mb().unwrap_or(f64::NAN),
        roofline_s: None,
    })
}

/// The machine and library versions, for the report.
pub fn environment() -> Vec<(String, String)> {
    let cpu = crate::native::cpu_model().unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let gpu = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into());
    let mut rows = vec![
        ("cpu".to_string(), cpu),
        ("cores".into(), cores.to_string()),
        ("gpu".into(), gpu),
    ];
    #[cfg(feature = "ort")]
    if let Ok(path) = crate::native::init_ort() {
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        let v = real
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("libonnxruntime.so."))
            .unwrap_or("unknown")
            .to_string();
        rows.push(("onnxruntime".into(), v));
    }
    #[cfg(feature = "tract")]
    rows.push(("tract".into(), "0.23.9".into()));
    rows.push(("cbqa".into(), env!("CARGO_PKG_VERSION").into()));
    rows.push(("git_commit".into(), env!("CBQA_GIT_COMMIT").into()));
    rows
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let xs = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&xs, 0.5), 2.5);
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 1.0), 4.0);
        assert!((quantile(&xs, 0.95) - 3.85).abs() < 1e-12);
    }
}
