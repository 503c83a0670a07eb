//! Continuous batching: each decode loop keeps one running batch ([`AnswerStream`]). Between two
//! decoder steps, waiting questions with the running batch's decoding settings join it (encoded
//! and given their first step together, then joined onto the running state), within the batch
//! policy's rows (questions × beams) and padded-token budget; a question leaves the batch as soon
//! as it is answered, and a request is answered when its last question is. A request that times
//! out or whose client went away leaves at the next step boundary.
//!
//! Questions with other settings wait until the running batch drains (first come, first served
//! by settings), then start the next one. Joining costs an encoder call and a first decoder step
//! of its own, so waiting questions join once they fill a quarter of the batch's free room
//! ([`JOIN_FRACTION`]), or once the oldest has waited the batch wait.

use super::batcher::{wait_for_jobs, Job, JobError, Shared};
use crate::answer::{Answer, AnswerStream, Answered, Answerer};
use crate::error::{Error, Result};
use crate::generate::GenerateOptions;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// Waiting questions join the running batch once they fill this fraction (1/4) of its free room
/// (or the oldest waited the batch wait).
pub const JOIN_FRACTION: usize = 4;

/// A question's key in the running batch: its request's number and its index in the request.
type Key = (u64, usize);

/// A request whose questions are in the running batch (or some still about to join it).
struct Admitted {
    job: Job,
    /// The first of its questions not admitted yet.
    next: usize,
    answers: Vec<Option<Answer>>,
    /// Questions not answered yet.
    left: usize,
}

/// The decode loop's own state.
struct Loop<'a> {
    answerer: &'a Answerer,
    shared: &'a Shared,
    stream: Option<AnswerStream<'a, Key>>,
    /// Requests in the running batch, by number (in arrival order).
    jobs: BTreeMap<u64, Admitted>,
    next_id: u64,
    /// When questions were last answered (for `Retry-After`).
    since: Instant,
    /// Questions running as the metrics last heard it.
    reported_running: usize,
}

/// Answer queued requests until the queue is closed and empty and nothing runs.
pub(super) fn run(answerer: &Answerer, shared: &Shared) {
    let mut l = Loop {
        answerer,
        shared,
        stream: None,
        jobs: BTreeMap::new(),
        next_id: 0,
        since: Instant::now(),
        reported_running: 0,
    };
    while l.admit() {
        l.step();
        l.expire();
    }
}

impl<'a> Loop<'a> {
    /// Questions the running batch may hold with settings `generate`.
    fn max_questions(&self, generate: &GenerateOptions) -> usize {
        let policy = &self.answerer.options().batch;
        policy.for_beams(generate.num_beams).max_batch_size.max(1)
    }

    /// Take waiting requests and admit their questions; false once the queue is closed and
    /// empty and nothing runs.
    fn admit(&mut self) -> bool {
        let idle = self.jobs.is_empty();
        let generate = match (&self.stream, idle) {
            (Some(s), false) => s.options().clone(),
            _ => {
                let full = self.answerer.options().batch.max_batch_size.max(1);
                let Some(q) = wait_for_jobs(self.shared, full) else {
                    return false;
                };
                match q.jobs.front() {
                    Some(j) => j.generate.clone(),
                    None => return true,
                }
            }
        };
        if idle && self.stream.as_ref().map(|s| s.options()) != Some(&generate) {
            match self.answerer.stream(&generate) {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    self.fail_front(e);
                    return true;
                }
            }
        }
        self.take_jobs(&generate, idle);
        self.join();
        true
    }

    /// Move waiting requests with settings `generate` from the queue into `jobs` while the
    /// running batch has room for them, once enough are waiting (or right away when `idle`).
    fn take_jobs(&mut self, generate: &GenerateOptions, idle: bool) {
        let room = self.room(generate);
        let pending: usize = self.jobs.values().map(|a| a.job.items.len() - a.next).sum();
        let mut q = self.shared.lock();
        let now = Instant::now();
        while let Some(front) = q.jobs.front() {
            if front.deadline > now && !front.reply.is_closed() {
                break;
            }
            let n = front.items.len();
            q.questions -= n;
            if let Some(j) = q.jobs.pop_front() {
                let _ = j.reply.send(Err(JobError::Expired));
            }
        }
        let waiting: usize = q
            .jobs
            .iter()
            .take_while(|j| &j.generate == generate)
            .map(|j| j.items.len())
            .sum();
        let oldest = q.jobs.front().map(|j| j.queued.elapsed());
        let enough = waiting >= (room / JOIN_FRACTION).max(1).min(room);
        let waited = oldest.is_some_and(|w| w >= self.shared.batch_wait);
        if room <= pending || !(idle || enough || waited) {
            return;
        }
        let mut taken = pending;
        while taken < room && q.jobs.front().is_some_and(|j| &j.generate == generate) {
            let Some(job) = q.jobs.pop_front() else { break };
            let n = job.items.len();
            q.questions -= n;
            taken += n;
            let id = self.next_id;
            self.next_id += 1;
            let answers = vec![None; n];
            let admitted = Admitted {
                job,
                next: 0,
                answers,
                left: n,
            };
            self.jobs.insert(id, admitted);
        }
        self.shared.metrics.set_queue_depth(q.questions);
    }

    /// Free room of the running batch, in questions.
    fn room(&self, generate: &GenerateOptions) -> usize {
        let running = self.stream.as_ref().map_or(0, |s| s.len());
        self.max_questions(generate).saturating_sub(running)
    }

    /// Admit the questions of `jobs` not admitted yet, in order, within the batch's room and
    /// padded-token budget (a question over the budget alone runs alone).
    fn join(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        if !stream.can_admit() {
            return;
        }
        let running = stream.len();
        let room = self.max_questions(stream.options()).saturating_sub(running);
        let budget = self.answerer.options().batch.max_batch_tokens;
        let mut longest = self.running_longest();
        let mut keys: Vec<Key> = Vec::new();
        'jobs: for (&id, a) in self.jobs.iter_mut() {
            while a.next < a.job.items.len() && keys.len() < room {
                let l = longest.max(a.job.items[a.next].ids.len());
                let rows = running + keys.len() + 1;
                if rows * l > budget && running + keys.len() > 0 {
                    break 'jobs;
                }
                longest = l;
                keys.push((id, a.next));
                a.next += 1;
            }
        }
        if keys.is_empty() {
            return;
        }
        self.shared.metrics.joined(keys.len());
        let jobs = &self.jobs;
        let items = keys
            .iter()
            .filter_map(|&(id, i)| Some(((id, i), jobs.get(&id)?.job.items.get(i)?)))
            .collect();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| stream.admit(items)));
        self.settle(result);
    }

    /// The longest input among the questions running.
    fn running_longest(&self) -> usize {
        self.jobs
            .values()
            .flat_map(|a| {
                let running = a.job.items[..a.next].iter().zip(&a.answers);
                running
                    .filter(|(_, ans)| ans.is_none())
                    .map(|(p, _)| p.ids.len())
            })
            .max()
            .unwrap_or(1)
    }

    /// One decoder step of the running batch.
    fn step(&mut self) {
        if self.stream.as_ref().is_none_or(|s| s.is_empty()) {
            return;
        }
        self.report_running();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| stream.step()));
        self.settle(result);
        self.report_running();
    }

    /// Tell the metrics how many questions this loop's batch runs now.
    fn report_running(&mut self) {
        let running = self.stream.as_ref().map_or(0, |s| s.len());
        let metrics = &self.shared.metrics;
        metrics.running_batch_moved(self.reported_running, running);
        self.reported_running = running;
    }

    /// Deliver what a step or an admission answered; on an engine failure or panic, fail every
    /// request of the running batch (its state is lost) and start afresh.
    fn settle(&mut self, result: std::thread::Result<Result<Vec<Answered<Key>>>>) {
        let error = match result {
            Ok(Ok(answered)) => return self.deliver(answered),
            Ok(Err(e)) => e,
            Err(_) => Error::input(
                "batch",
                "the engine panicked while answering it; the server goes on",
            ),
        };
        let shared = Arc::new(error);
        for (_, a) in std::mem::take(&mut self.jobs) {
            let _ = a.job.reply.send(Err(JobError::Engine(Arc::clone(&shared))));
        }
        self.stream = None;
    }

    /// Record answers; reply to each request whose last question was answered.
    fn deliver(&mut self, answered: Vec<Answered<Key>>) {
        let count = answered.len();
        let mut failed = Vec::new();
        for ((id, i), answer) in answered {
            let Some(a) = self.jobs.get_mut(&id) else {
                continue;
            };
            match answer {
                Ok(answer) => {
                    a.answers[i] = Some(answer);
                    a.left -= 1;
                    if a.left == 0 {
                        self.reply(id);
                    }
                }
                Err(e) => failed.push((id, e)),
            }
        }
        for (id, e) in failed {
            if let Some(a) = self.jobs.remove(&id) {
                let _ = a.job.reply.send(Err(JobError::Engine(Arc::new(e))));
            }
            self.drop_running(&[id]);
        }
        if count > 0 {
            let per_question = self.since.elapsed().as_secs_f64() / count as f64;
            self.shared.record_pace(per_question);
            self.since = Instant::now();
        }
    }

    /// Send request `id` its answers.
    fn reply(&mut self, id: u64) {
        let Some(a) = self.jobs.remove(&id) else {
            return;
        };
        let answers: Vec<Answer> = a.answers.into_iter().flatten().collect();
        let tokens = answers.iter().map(|x| x.generated_tokens).sum();
        let truncated = answers.iter().filter(|x| x.truncated).count();
        let waited = a.job.queued.elapsed();
        self.shared
            .metrics
            .answered(answers.len(), tokens, truncated, waited);
        let _ = a.job.reply.send(Ok(answers));
    }

    /// Requests past their deadline, or whose client went away, leave the running batch.
    fn expire(&mut self) {
        let now = Instant::now();
        let gone: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, a)| a.job.deadline <= now || a.job.reply.is_closed())
            .map(|(&id, _)| id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Some(a) = self.jobs.remove(id) {
                let _ = a.job.reply.send(Err(JobError::Expired));
            }
        }
        self.drop_running(&gone);
    }

    /// Remove the questions of requests `ids` from the running batch.
    fn drop_running(&mut self, ids: &[u64]) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            stream.remove(|k| ids.contains(&k.0)).map(|_| Vec::new())
        }));
        self.settle(result);
    }

    /// The front request could not start a batch (its settings were refused): it fails alone.
    fn fail_front(&mut self, e: Error) {
        let mut q = self.shared.lock();
        if let Some(j) = q.jobs.pop_front() {
            q.questions -= j.items.len();
            let _ = j.reply.send(Err(JobError::Engine(Arc::new(e))));
        }
        self.shared.metrics.set_queue_depth(q.questions);
    }
}
