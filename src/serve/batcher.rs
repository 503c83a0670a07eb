//! The decode loops: threads that answer queued requests in batches, over one shared model.
//!
//! With a backend that joins running batches (cbqa's own exports, the tch model) the loops batch
//! continuously ([`super::continuous`]): questions join a running batch at a step boundary and
//! leave it when answered. There are as many loops as the answerer decodes batches at once (ONNX
//! Runtime on the CPU: one per thread, each batch on its own session copy, as offline evaluation
//! runs them; a batch running alone takes every thread), each with its own running batch, all
//! taking from one queue. Otherwise (optimum's exports) one loop batches dynamically, as follows,
//! and the answerer decodes the batches it takes at once.
//!
//! Dynamic batching: at each batch boundary the loop takes, in arrival order, the queued requests
//! with the same decoding settings as the oldest one, up to [`WINDOW`] batches of the batch
//! policy's question count and padded-token budget (a request larger than that is taken alone).
//! When less than a batch is queued, the loop first waits up to the batch wait from the oldest
//! request's arrival for more (Triton's `max_queue_delay`): right after a batch, the clients it
//! answered send their next questions within milliseconds, and a batch started on the first of
//! them would run nearly empty. The answerer sorts what was taken by length and splits it into batches, so under load little
//! compute goes to padding, as in offline evaluation. The queue is bounded in questions; beyond
//! it a request is refused at once.

use super::metrics::Metrics;
use super::Batching;
use crate::answer::{Answer, Answerer};
use crate::error::Error;
use crate::generate::{GenerateOptions, Prepared};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Batches taken at once when that many are queued: sorting two batches' questions by length
/// before splitting them saves about as much padding as offline evaluation's sort of the whole
/// set, and the last answers of the pair come no later than they would one batch at a time.
pub const WINDOW: usize = 2;

/// What a request gets back from the decode loop.
pub type JobResult = Result<Vec<Answer>, JobError>;

/// Why a queued request got no answers.
#[derive(Debug, Clone)]
pub enum JobError {
    /// Its deadline passed before its batch started.
    Expired,
    /// The engine failed on its batch (the failure is shared by the batch's requests).
    Engine(Arc<Error>),
}

/// A request's questions, waiting for the decode loop.
pub struct Job {
    pub items: Vec<Prepared>,
    pub generate: GenerateOptions,
    pub deadline: Instant,
    pub reply: oneshot::Sender<JobResult>,
    pub(super) queued: Instant,
}

impl Job {
    /// A job queued now.
    pub fn new(
        items: Vec<Prepared>,
        generate: GenerateOptions,
        deadline: Instant,
        reply: oneshot::Sender<JobResult>,
    ) -> Self {
        Job {
            items,
            generate,
            deadline,
            reply,
            queued: Instant::now(),
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `--max-queue` questions; retry after about this many seconds.
    Full { retry_after: u64 },
    /// The server is shutting down.
    Closed,
}

pub(super) struct Queue {
    pub(super) jobs: VecDeque<Job>,
    /// Questions in `jobs`.
    pub(super) questions: usize,
    pub(super) closed: bool,
    /// Seconds per question of the last batch, for `Retry-After`.
    pub(super) seconds_per_question: f64,
}

/// The queue, and what the handlers and the decode loops share.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    max_queue: usize,
    pub(super) batch_wait: Duration,
    pub(super) metrics: Arc<Metrics>,
    /// Decode loops answering from the queue.
    loops: usize,
}

impl Shared {
    /// An open, empty queue for `loops` decode loops.
    fn new(max_queue: usize, batch_wait: Duration, metrics: Arc<Metrics>, loops: usize) -> Self {
        Shared {
            loops: loops.max(1),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                questions: 0,
                closed: false,
                seconds_per_question: 0.0,
            }),
            wake: Condvar::new(),
            max_queue,
            batch_wait,
            metrics,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One decode loop answered a question every `seconds` lately: the server, with every loop
    /// at that pace, answers one every `seconds / loops` (for `Retry-After`).
    pub(super) fn record_pace(&self, seconds: f64) {
        self.lock().seconds_per_question = seconds / self.loops as f64;
    }
}

/// The queue and the decode loops' threads.
pub struct Batcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Start the decode loops over `answerer` ([`decode_loops`]), with room for `max_queue`
    /// waiting questions; a batch of less than the batch size waits up to `batch_wait` from its
    /// oldest request's arrival for more.
    pub fn start(
        answerer: Arc<Answerer>,
        max_queue: usize,
        batch_wait: Duration,
        batching: Batching,
        metrics: Arc<Metrics>,
    ) -> Self {
        let loops = decode_loops(&answerer, batching);
        let shared = Arc::new(Shared::new(max_queue, batch_wait, metrics, loops));
        let workers: Vec<JoinHandle<()>> = (0..loops)
            .filter_map(|i| {
                let (answerer, shared) = (Arc::clone(&answerer), Arc::clone(&shared));
                std::thread::Builder::new()
                    .name(format!("cbqa-decode-{i}"))
                    .spawn(move || decode_loop(&answerer, &shared, batching))
                    .ok()
            })
            .collect();
        if workers.is_empty() {
            shared.lock().closed = true;
        }
        Batcher {
            shared,
            workers: Mutex::new(workers),
        }
    }

    /// Queue a job, or refuse it when the queue is full or closed.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let mut q = self.shared.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        let n = job.items.len();
        if q.questions + n > self.shared.max_queue {
            let wait = (q.questions as f64 * q.seconds_per_question).ceil() as u64;
            return Err(Refused::Full {
                retry_after: wait.max(1),
            });
        }
        q.questions += n;
        q.jobs.push_back(job);
        self.shared.metrics.set_queue_depth(q.questions);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Whether the decode loop takes requests.
    pub fn is_open(&self) -> bool {
        !self.shared.lock().closed
    }

    /// Stop taking requests, answer those queued, and wait for the decode loops to end.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

/// How many decode loops answer for `answerer` with `batching` asked for: continuous batching
/// runs as many batches as the answerer decodes at once, each in its own loop; dynamic batching
/// one loop, whose batches the answerer decodes at once itself.
pub fn decode_loops(answerer: &Answerer, batching: Batching) -> usize {
    match effective_batching(answerer, batching) {
        Batching::Continuous => answerer.batches_at_once(),
        Batching::Dynamic => 1,
    }
}

/// Answer queued requests until the queue is closed and empty.
fn decode_loop(answerer: &Answerer, shared: &Shared, batching: Batching) {
    if effective_batching(answerer, batching) == Batching::Continuous {
        super::continuous::run(answerer, shared);
    } else {
        dynamic_loop(answerer, shared);
    }
}

/// The batching the decode loop uses when `batching` is asked for: continuous batching needs a
/// backend that joins running batches.
pub fn effective_batching(answerer: &Answerer, batching: Batching) -> Batching {
    match batching {
        Batching::Continuous if answerer.joins_running_batches() => Batching::Continuous,
        _ => Batching::Dynamic,
    }
}

/// Take batches until the queue is closed and empty.
fn dynamic_loop(answerer: &Answerer, shared: &Shared) {
    let policy = &answerer.options().batch;
    let (max_questions, max_tokens) = (
        policy.max_batch_size.max(1) * WINDOW,
        policy.max_batch_tokens * WINDOW,
    );
    let full = policy.max_batch_size.max(1);
    while let Some(jobs) = next_batch(shared, full, max_questions, max_tokens) {
        let started = Instant::now();
        let (live, expired): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.deadline > started && !j.reply.is_closed());
        for j in expired {
            let _ = j.reply.send(Err(JobError::Expired));
        }
        let questions: usize = live.iter().map(|j| j.items.len()).sum();
        if questions == 0 {
            continue;
        }
        shared.metrics.running_batch_moved(0, questions);
        run_batch(answerer, live, &shared.metrics);
        shared.metrics.running_batch_moved(questions, 0);
        shared.record_pace(started.elapsed().as_secs_f64() / questions as f64);
    }
}

/// Wait until a job is queued, then, while fewer than `full` questions are, up to the batch wait
/// from the oldest job's arrival for more. `None` once the queue is closed and empty.
pub(super) fn wait_for_jobs(shared: &Shared, full: usize) -> Option<MutexGuard<'_, Queue>> {
    let mut q = shared.lock();
    while q.jobs.is_empty() {
        if q.closed {
            return None;
        }
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    let oldest = q.jobs.front().map_or_else(Instant::now, |j| j.queued);
    while !q.closed && q.questions < full {
        let Some(left) = shared.batch_wait.checked_sub(oldest.elapsed()) else {
            break;
        };
        q = shared
            .wake
            .wait_timeout(q, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    Some(q)
}

/// Wait for jobs ([`wait_for_jobs`]), then take the next batch: the oldest job, then the later
/// ones with its settings while the batch stays within `max_questions` and `max_tokens` padded
/// tokens. `None` once the queue is closed and empty.
fn next_batch(
    shared: &Shared,
    full: usize,
    max_questions: usize,
    max_tokens: usize,
) -> Option<Vec<Job>> {
    let mut q = wait_for_jobs(shared, full)?;
    let first = q.jobs.pop_front()?;
    let mut count = first.items.len();
    let mut longest = longest_of(&first.items);
    let mut batch = vec![first];
    let mut i = 0;
    while i < q.jobs.len() {
        let job = &q.jobs[i];
        let n = count + job.items.len();
        let l = longest.max(longest_of(&job.items));
        if job.generate != batch[0].generate || n > max_questions || n * l > max_tokens {
            i += 1;
            continue;
        }
        (count, longest) = (n, l);
        if let Some(job) = q.jobs.remove(i) {
            batch.push(job);
        }
    }
    q.questions -= count;
    shared.metrics.set_queue_depth(q.questions);
    Some(batch)
}

fn longest_of(items: &[Prepared]) -> usize {
    items.iter().map(|p| p.ids.len()).max().unwrap_or(1)
}

/// Answer the jobs of one batch (all with the same settings) and send each its answers.
fn run_batch(answerer: &Answerer, jobs: Vec<Job>, metrics: &Metrics) {
    let items: Vec<Prepared> = jobs.iter().flat_map(|j| j.items.iter().cloned()).collect();
    // A panic inside an engine fails this batch's requests, not the server.
    let answer =
        std::panic::AssertUnwindSafe(|| answerer.answer_prepared(&items, &jobs[0].generate));
    let result = std::panic::catch_unwind(answer).unwrap_or_else(|_| {
        Err(Error::input(
            "batch",
            "the engine panicked while answering it; the server goes on",
        ))
    });
    let mut answers = match result {
        Ok(a) => a.into_iter(),
        Err(e) => {
            let shared = Arc::new(e);
            for j in jobs {
                let _ = j.reply.send(Err(JobError::Engine(Arc::clone(&shared))));
            }
            return;
        }
    };
    for j in jobs {
        let mine: Vec<Answer> = answers.by_ref().take(j.items.len()).collect();
        let tokens = mine.iter().map(|a| a.generated_tokens).sum();
        let truncated = mine.iter().filter(|a| a.truncated).count();
        metrics.answered(mine.len(), tokens, truncated, j.queued.elapsed());
        let _ = j.reply.send(Ok(mine));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(batch_wait: Duration) -> Shared {
        Shared::new(100, batch_wait, Arc::new(Metrics::default()), 1)
    }

    fn push(s: &Shared, questions: usize, len: usize, beams: usize) {
        let (tx, _rx) = oneshot::channel();
        let item = Prepared {
            ids: vec![5; len],
            truncated: false,
        };
        let generate = GenerateOptions {
            num_beams: beams,
            ..GenerateOptions::default()
        };
        let mut q = s.lock();
        q.questions += questions;
        q.jobs.push_back(Job::new(
            vec![item; questions],
            generate,
            Instant::now(),
            tx,
        ));
    }

    #[test]
    fn a_batch_keeps_one_setting_and_the_budget_in_arrival_order() {
        let s = shared(Duration::ZERO);
        push(&s, 2, 4, 1);
        push(&s, 1, 4, 4);
        push(&s, 3, 4, 1);
        push(&s, 4, 4, 1);
        push(&s, 1, 30, 1);
        // at most 6 questions and 40 padded tokens: jobs 0 and 2 (greedy), not 3 (too many
        // questions) nor 4 (too long); then the beam job, alone
        let sizes = |b: Vec<Job>| b.iter().map(|j| j.items.len()).collect::<Vec<_>>();
        assert_eq!(sizes(next_batch(&s, 1, 6, 40).unwrap()), [2, 3]);
        assert_eq!(s.lock().questions, 6);
        assert_eq!(sizes(next_batch(&s, 1, 6, 40).unwrap()), [1]);
        assert_eq!(sizes(next_batch(&s, 1, 6, 40).unwrap()), [4]);
        // a job over the budget still runs, alone
        assert_eq!(sizes(next_batch(&s, 1, 6, 40).unwrap()), [1]);
        assert_eq!(s.lock().questions, 0);
        s.lock().closed = true;
        assert!(next_batch(&s, 1, 6, 40).is_none());
    }

    #[test]
    fn less_than_a_batch_waits_for_more_but_no_longer_than_the_batch_wait() {
        let s = shared(Duration::from_millis(30));
        push(&s, 1, 4, 1);
        let start = Instant::now();
        let batch = next_batch(&s, 8, 8, 100).unwrap();
        let waited = start.elapsed();
        assert_eq!(batch.len(), 1);
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // a full batch starts at once
        for _ in 0..8 {
            push(&s, 1, 4, 1);
        }
        let start = Instant::now();
        assert_eq!(next_batch(&s, 8, 8, 100).unwrap().len(), 8);
        assert!(start.elapsed() < Duration::from_millis(25));
    }
}
