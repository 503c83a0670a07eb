//! The machine's own limit for a bench workload (`cbqa bench --roofline`).
//!
//! Two limits are measured in the same run, on the benchmark's thread count: the GEMM peak (fp32
//! `MatMul` and u8×s8 `MatMulInteger` through ONNX Runtime's kernels, `runtime::ort_probe`) and the
//! memory bandwidth ([`triad_bandwidth`], a STREAM triad over arrays larger than the last-level
//! cache). Each phase of decoding — encoder, cross-attention keys/values (computed once, in the
//! first decoder step), the decoder steps, the LM head — gets its FLOPs and bytes moved for the
//! model and batch, and a roofline time `max(FLOPs / peak, bytes / bandwidth)`. The run's bound is
//! the sum over phases, batches and repeats; `achieved = bound / measured`.
//!
//! ## The model of bytes moved
//! A lower bound on DRAM traffic that still counts everything that must stream:
//! - every weight matrix a call uses is read once per call (at the bytes per weight of the export:
//!   4 fp32, 2 fp16, 1 int8), since a model's weights do not stay in cache between calls
//!   (t5-small's decoder with its LM head is ~170 MB in fp32). The embedding lookup reads only the
//!   rows it gathers;
//! - each linear layer reads its input and writes its output once in fp32; the int8 export also
//!   writes and reads a u8 copy of each input (the dynamic quantization);
//! - attention writes the scores, reads them for the softmax, writes the probabilities and reads
//!   them again (four fp32 passes over `heads × queries × keys`), and reads its queries, keys and
//!   values once;
//! - the decoder's self-attention cache: each step reads the past (to append to it) and writes the
//!   present (`past + 1` positions, as ONNX Runtime's `Concat` does), and the cross-attention
//!   cache is read once per step;
//! - element-wise work is counted as fp32 passes over its tensor: an RMS norm reads and writes
//!   (2), a residual add reads two and writes one (3), ReLU 2, gated-GELU 5 (two inputs, the
//!   GELU's own pass, one output);
//! - the logits are written by the LM head and read once by the search.
//!
//! FLOPs count a multiply-add as two. Linear layers run at the export's GEMM peak (int8 for the
//! int8 export); the attention products always run in fp32.

use crate::config::T5Config;
use crate::error::{Error, Result};

const F32: f64 = 4.0;

/// Measured limits of this machine on `threads` threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub threads: usize,
    /// fp32 GEMM peak, FLOP/s.
    pub f32_flops: f64,
    /// u8×s8 integer GEMM peak, OP/s.
    pub int8_ops: f64,
    /// Memory bandwidth, bytes/s (STREAM triad: three arrays counted, no write-allocate).
    pub bandwidth: f64,
}

/// How the linear layers' weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    F32,
    F16,
    Int8,
}

impl Weights {
    /// From an export's precision label (`fp32`, `fp16`, `int8`, as `cbqa_export.json` says).
    pub fn from_precision(label: &str) -> Self {
        match label {
            l if l.contains("int8") => Weights::Int8,
            l if l.contains("16") => Weights::F16,
            _ => Weights::F32,
        }
    }

    fn bytes(self) -> f64 {
        match self {
            Weights::F32 => 4.0,
            Weights::F16 => 2.0,
            Weights::Int8 => 1.0,
        }
    }
}

/// FLOPs and bytes of a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    /// FLOPs of the linear layers (at the weights' GEMM peak).
    pub gemm_flops: f64,
    /// FLOPs of the attention products (fp32).
    pub attn_flops: f64,
    pub bytes: f64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            gemm_flops: self.gemm_flops + o.gemm_flops,
            attn_flops: self.attn_flops + o.attn_flops,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::ops::Mul<f64> for Cost {
    type Output = Cost;
    fn mul(self, k: f64) -> Cost {
        Cost {
            gemm_flops: self.gemm_flops * k,
            attn_flops: self.attn_flops * k,
            bytes: self.bytes * k,
        }
    }
}

impl Cost {
    /// All FLOPs.
    pub fn flops(&self) -> f64 {
        self.gemm_flops + self.attn_flops
    }

    /// `max(compute time, memory time)` on `limits` for weights stored as `weights`.
    pub fn roofline_s(&self, limits: &Limits, weights: Weights) -> f64 {
        let gemm_peak = if weights == Weights::Int8 {
            limits.int8_ops
        } else {
            limits.f32_flops
        };
        let compute = self.gemm_flops / gemm_peak + self.attn_flops / limits.f32_flops;
        compute.max(self.bytes / limits.bandwidth)
    }

    /// Element-wise fp32 work: `passes` passes over `elems` values.
    fn elementwise(elems: f64, passes: f64) -> Cost {
        Cost {
            bytes: elems * passes * F32,
            ..Cost::default()
        }
    }
}

/// One batch of a bench workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchShape {
    /// Questions in the batch.
    pub questions: usize,
    /// Encoder length (the longest question of the batch, which the batch is padded to).
    pub input_len: usize,
    /// Decoder steps (forced).
    pub steps: usize,
    pub beams: usize,
}

/// The cost of each phase of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Phases {
    pub encoder: Cost,
    pub cross_kv: Cost,
    /// Every decoder step's layers (without the LM head).
    pub decoder_steps: Cost,
    pub lm_head: Cost,
}

impl Phases {
    /// The phases with their names, in the order they run.
    pub fn named(&self) -> [(&'static str, Cost); 4] {
        [
            ("encoder", self.encoder),
            ("cross-attention K/V", self.cross_kv),
            ("decoder steps", self.decoder_steps),
            ("LM head", self.lm_head),
        ]
    }

    /// Everything the decoder calls do (cross K/V, steps, LM head).
    pub fn decoder(&self) -> Cost {
        self.cross_kv + self.decoder_steps + self.lm_head
    }
}

impl std::ops::Mul<f64> for Phases {
    type Output = Phases;
    fn mul(self, k: f64) -> Phases {
        Phases {
            encoder: self.encoder * k,
            cross_kv: self.cross_kv * k,
            decoder_steps: self.decoder_steps * k,
            lm_head: self.lm_head * k,
        }
    }
}

impl std::ops::Add for Phases {
    type Output = Phases;
    fn add(self, o: Phases) -> Phases {
        Phases {
            encoder: self.encoder + o.encoder,
            cross_kv: self.cross_kv + o.cross_kv,
            decoder_steps: self.decoder_steps + o.decoder_steps,
            lm_head: self.lm_head + o.lm_head,
        }
    }
}

/// The dimensions the cost model needs, from a T5 config.
struct Dims {
    d: f64,
    inner: f64,
    ff: f64,
    gated: bool,
    heads: f64,
    d_kv: f64,
    enc_layers: f64,
    dec_layers: f64,
    vocab: f64,
    wb: f64,
    int8: bool,
}

impl Dims {
    fn new(cfg: &T5Config, weights: Weights) -> Self {
        Dims {
            d: cfg.d_model as f64,
            inner: cfg.inner_dim() as f64,
            ff: cfg.d_ff as f64,
            gated: cfg.ff().is_gated(),
            heads: cfg.num_heads as f64,
            d_kv: cfg.d_kv as f64,
            enc_layers: cfg.num_layers as f64,
            dec_layers: cfg.decoder_layers() as f64,
            vocab: cfg.vocab_size as f64,
            wb: weights.bytes(),
            int8: weights == Weights::Int8,
        }
    }

    /// `rows × input` through an `input → output` linear layer.
    fn linear(&self, rows: f64, input: f64, output: f64) -> Cost {
        let quantized_copy = if self.int8 { 2.0 * rows * input } else { 0.0 };
        Cost {
            gemm_flops: 2.0 * rows * input * output,
            attn_flops: 0.0,
            bytes: input * output * self.wb + rows * (input + output) * F32 + quantized_copy,
        }
    }

    /// Attention of `batch` sequences, `queries` each, over `keys` keys (products and softmax).
    fn attention(&self, batch: f64, queries: f64, keys: f64) -> Cost {
        let scores = batch * self.heads * queries * keys;
        Cost {
            gemm_flops: 0.0,
            attn_flops: 2.0 * 2.0 * scores * self.d_kv,
            bytes: 4.0 * scores * F32 + batch * (2.0 * queries + 2.0 * keys) * self.inner * F32,
        }
    }

    /// The feed-forward block and its activation over `rows` rows.
    fn feed_forward(&self, rows: f64) -> Cost {
        let (inputs, passes) = if self.gated { (2.0, 5.0) } else { (1.0, 2.0) };
        self.linear(rows, self.d, self.ff) * inputs
            + self.linear(rows, self.ff, self.d)
            + Cost::elementwise(rows * self.ff, passes)
    }

    /// `n` RMS norms and `n` residual adds over `rows × d`.
    fn norms_and_residuals(&self, rows: f64, n: f64) -> Cost {
        Cost::elementwise(rows * self.d, n * (2.0 + 3.0))
    }

    /// Query, key, value and output projections over `rows` rows.
    fn self_projections(&self, rows: f64) -> Cost {
        self.linear(rows, self.d, self.inner) * 3.0 + self.linear(rows, self.inner, self.d)
    }

    fn encoder(&self, batch: f64, len: f64) -> Cost {
        let rows = batch * len;
        let layer = self.self_projections(rows)
            + self.attention(batch, len, len)
            + self.feed_forward(rows)
            + self.norms_and_residuals(rows, 2.0);
        layer * self.enc_layers + Cost::elementwise(rows * self.d, 1.0 + 2.0)
    }

    fn cross_kv(&self, rows: f64, len: f64) -> Cost {
        self.linear(rows * len, self.d, self.inner) * (2.0 * self.dec_layers)
    }

    /// Decoder step `t` (0-based: `t` positions in the past) of `rows` rows over `len` encoder
    /// positions, without the LM head.
    fn decoder_step(&self, rows: f64, len: f64, t: f64) -> Cost {
        let cache_row = 2.0 * self.inner * F32;
        // Read the past to append to it, write the present (`t + 1` positions).
        let self_cache = Cost {
            bytes: rows * (t + (t + 1.0)) * cache_row,
            ..Cost::default()
        };
        let layer = self.self_projections(rows)
            + self.attention(rows, 1.0, t + 1.0)
            + self_cache
            + self.linear(rows, self.d, self.inner)
            + self.linear(rows, self.inner, self.d)
            + self.attention(rows, 1.0, len)
            + self.feed_forward(rows)
            + self.norms_and_residuals(rows, 3.0);
        layer * self.dec_layers + Cost::elementwise(rows * self.d, 1.0 + 2.0)
    }

    fn lm_head(&self, rows: f64) -> Cost {
        // The logits are written by the graph and read once by the search.
        self.linear(rows, self.d, self.vocab) + Cost::elementwise(rows * self.vocab, 1.0)
    }
}

/// The cost of each phase of one batch of `cfg` with weights stored as `weights`.
pub fn batch_phases(cfg: &T5Config, weights: Weights, b: &BatchShape) -> Phases {
    let m = Dims::new(cfg, weights);
    let (q, len) = (b.questions as f64, b.input_len as f64);
    let rows = q * b.beams.max(1) as f64;
    let decoder_steps = (0..b.steps).fold(Cost::default(), |acc, t| {
        acc + m.decoder_step(rows, len, t as f64)
    });
    Phases {
        encoder: m.encoder(q, len),
        cross_kv: m.cross_kv(rows, len),
        decoder_steps,
        lm_head: m.lm_head(rows) * b.steps as f64,
    }
}

/// The batches a bench run makes of `questions` (token ids): consecutive chunks of `batch_size`,
/// each padded to its longest question, as `bench::run` makes them.
pub fn batches(
    questions: &[Vec<u32>],
    batch_size: usize,
    steps: usize,
    beams: usize,
) -> Vec<BatchShape> {
    questions
        .chunks(batch_size.max(1))
        .map(|c| BatchShape {
            questions: c.len(),
            input_len: c.iter().map(Vec::len).max().unwrap_or(0),
            steps,
            beams,
        })
        .collect()
}

/// The memory bandwidth (bytes/s) of a STREAM triad `a = b + s·c` over three arrays of `elems`
/// f32 each, on `threads` threads: the best of `reps` passes after a first touch in parallel.
/// Choose `elems` so that the arrays are several times the last-level cache.
pub fn triad_bandwidth(threads: usize, elems: usize, reps: usize) -> Result<f64> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::setting("threads", format!("cannot start {threads} threads: {e}")))?;
    let chunk = (elems / (threads.max(1) * 8)).max(4096);
    pool.install(|| {
        let fill = |x: f32| -> Vec<f32> {
            let mut v = Vec::with_capacity(elems);
            v.par_extend((0..elems).into_par_iter().map(|i| x + (i % 3) as f32));
            v
        };
        let (mut a, b, c) = (fill(0.0), fill(1.0), fill(2.0));
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = std::time::Instant::now();
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk).zip(c.par_chunks(chunk)))
                .for_each(|(a, (b, c))| {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 3.0 * c;
                    }
                });
            best = best.min(t.elapsed().as_secs_f64());
        }
        // Keep the result observable so the loop cannot be dropped.
        std::hint::black_box(&a);
        Ok(3.0 * elems as f64 * F32 / best)
    })
}

/// Measure this machine's limits on `threads` threads: ONNX Runtime's fp32 and int8 GEMM
/// kernels ([`crate::runtime::ort_probe`]) and a triad over `triad_elems` floats per array.
#[cfg(feature = "ort")]
pub fn measure(threads: usize, triad_elems: usize) -> Result<Limits> {
    use crate::runtime::ort_probe::{gemm_peak, Gemm};
    let workers = crate::runtime::threads_or_cores(threads);
    Ok(Limits {
        threads,
        f32_flops: gemm_peak(Gemm::F32, threads)?,
        int8_ops: gemm_peak(Gemm::U8S8, threads)?,
        bandwidth: triad_bandwidth(workers, triad_elems, 10)?,
    })
}

/// The bound of a whole bench run: each phase's roofline summed over the run's batches (each batch
/// bounded on its own, since a small batch can be memory-bound where a large one is not) and
/// repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct RunBound {
    pub limits: Limits,
    pub weights: Weights,
    /// The run's work per phase.
    pub work: Phases,
    /// Roofline seconds per phase, in [`Phases::named`] order.
    pub phase_s: [f64; 4],
}

impl RunBound {
    /// The bound of `repeat` passes over `batches` of `cfg` stored as `weights`.
    pub fn of(
        cfg: &T5Config,
        weights: Weights,
        batches: &[BatchShape],
        repeat: usize,
        limits: Limits,
    ) -> Self {
        let mut work = Phases::default();
        let mut phase_s = [0.0; 4];
        for b in batches {
            let p = batch_phases(cfg, weights, b);
            for (s, (_, cost)) in phase_s.iter_mut().zip(p.named()) {
                *s += cost.roofline_s(&limits, weights) * repeat.max(1) as f64;
            }
            work = work + p;
        }
        let work = work * repeat.max(1) as f64;
        RunBound {
            limits,
            weights,
            work,
            phase_s,
        }
    }

    /// The whole run's bound, seconds.
    pub fn seconds(&self) -> f64 {
        self.phase_s.iter().sum()
    }

    /// The bound of the decoder calls (cross K/V, steps, LM head), which run inside the same
    /// graph calls and are measured together.
    pub fn decoder_s(&self) -> f64 {
        self.phase_s[1..].iter().sum()
    }
}

pub mod report;

#[cfg(test)]
mod tests;
