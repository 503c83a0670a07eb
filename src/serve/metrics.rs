//! The server's counters, gauges and histograms, rendered in Prometheus' text exposition format
//! (version 0.0.4): every name starts with `cbqa_`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds of the batch-size histogram's buckets (questions).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram with fixed bucket bounds.
struct Histogram {
    bounds: &'static [f64],
    /// Observations at most `bounds[i]` (not cumulative; summed when rendered).
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports. Shared by the HTTP handlers and the decode loops.
pub struct Metrics {
    queue_depth: AtomicUsize,
    running_batch: AtomicUsize,
    in_flight: AtomicUsize,
    requests: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    request_seconds: Histogram,
    time_to_answer: Histogram,
    batch_size: Histogram,
    join_size: Histogram,
    questions: AtomicU64,
    generated_tokens: AtomicU64,
    truncated: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            queue_depth: AtomicUsize::new(0),
            running_batch: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            requests: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            request_seconds: Histogram::new(LATENCY_BUCKETS),
            time_to_answer: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(BATCH_BUCKETS),
            join_size: Histogram::new(BATCH_BUCKETS),
            questions: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Questions waiting for a decode loop now.
    pub fn set_queue_depth(&self, questions: usize) {
        self.queue_depth.store(questions, Ordering::Relaxed);
    }

    /// A decode loop's running batch went from `from` to `to` questions (0: idle). The gauge
    /// sums the decode loops' batches; the histogram counts each loop's batch at each call.
    pub fn running_batch_moved(&self, from: usize, to: usize) {
        self.running_batch.fetch_add(to, Ordering::Relaxed);
        self.running_batch.fetch_sub(from, Ordering::Relaxed);
        if to > 0 {
            self.batch_size.observe(to as f64);
        }
    }

    /// `questions` were encoded and joined the running batch (or started it) together: each
    /// join costs an encoder call and a first decoder step of its own.
    pub fn joined(&self, questions: usize) {
        self.join_size.observe(questions as f64);
    }

    /// An answer request arrived.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A finished answer request: its status and how long it took.
    pub fn request(&self, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *lock(&self.requests).entry(status).or_default() += 1;
        self.request_seconds.observe(elapsed.as_secs_f64());
    }

    /// An error response, by kind (`queue_full`, `timeout`, `invalid_field`, …).
    pub fn error(&self, kind: &'static str) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    /// One request's questions answered `waited` after they were queued.
    pub fn answered(&self, questions: usize, tokens: usize, truncated: usize, waited: Duration) {
        self.questions
            .fetch_add(questions as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.truncated
            .fetch_add(truncated as u64, Ordering::Relaxed);
        self.time_to_answer.observe(waited.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "cbqa_queue_depth",
            "Questions waiting for a decode loop.",
            self.queue_depth.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "cbqa_running_batch_size",
            "Questions in the batches being decoded (all decode loops).",
            self.running_batch.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "cbqa_requests_in_flight",
            "Answer requests received and not yet answered.",
            self.in_flight.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cbqa_questions_total",
            "Questions answered.",
            load(&self.questions),
        );
        counter(
            &mut out,
            "cbqa_generated_tokens_total",
            "Tokens generated for the best answers.",
            load(&self.generated_tokens),
        );
        counter(
            &mut out,
            "cbqa_truncated_questions_total",
            "Questions cut to the model's input limit.",
            load(&self.truncated),
        );
        labelled(
            &mut out,
            "cbqa_requests_total",
            "Answer requests by HTTP status.",
            "status",
            &lock(&self.requests),
        );
        labelled(
            &mut out,
            "cbqa_errors_total",
            "Error responses by kind.",
            "kind",
            &lock(&self.errors),
        );
        self.request_seconds.render(
            &mut out,
            "cbqa_request_duration_seconds",
            "Time from a request's arrival to its response.",
        );
        self.time_to_answer.render(
            &mut out,
            "cbqa_time_to_answer_seconds",
            "Time from a request's questions being queued to their answers.",
        );
        self.batch_size.render(
            &mut out,
            "cbqa_batch_size",
            "Questions per batch a decode loop ran (continuous batching: at each step).",
        );
        self.join_size.render(
            &mut out,
            "cbqa_join_size",
            "Questions per join: encoded together and added to the running batch at a step boundary.",
        );
        out
    }
}

/// A counter with one label, one line per value.
fn labelled<K: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<K, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

/// The map behind a lock; a poisoned lock still holds valid counts.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_labelled() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.request_started();
        }
        m.request(200, Duration::from_millis(3));
        m.request(200, Duration::from_millis(30));
        m.request(429, Duration::from_millis(1));
        m.error("queue_full");
        m.joined(3);
        m.joined(12);
        let text = m.render();
        assert!(text.contains("cbqa_join_size_bucket{le=\"4\"} 1"), "{text}");
        assert!(text.contains("cbqa_join_size_sum 15\n"), "{text}");
        assert!(
            text.contains("cbqa_requests_total{status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cbqa_errors_total{kind=\"queue_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cbqa_request_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cbqa_request_duration_seconds_bucket{le=\"0.05\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cbqa_request_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cbqa_request_duration_seconds_count 3"),
            "{text}"
        );
    }
}
