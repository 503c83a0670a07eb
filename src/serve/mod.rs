//! `cbqa serve`: an HTTP answering service over one loaded [`Answerer`].
//!
//! ```no_run
//! use cbqa::serve::{serve, ServeOptions};
//! use cbqa::{Answerer, AnswererOptions};
//! let answerer = Answerer::load("runs/demo/onnx".as_ref(), AnswererOptions::default())?;
//! let opts = ServeOptions { model_dir: "runs/demo/onnx".into(), ..ServeOptions::default() };
//! serve(answerer, opts, |addr| eprintln!("listening on http://{addr}"))?;
//! # Ok::<(), cbqa::Error>(())
//! ```
//!
//! Requests are checked and tokenised by the HTTP handlers (tokio + axum), queued in a bounded
//! queue, and answered by decode loops over the one model ([`batcher`]: a running batch per
//! batch the answerer decodes at once, so with ONNX Runtime on the CPU one per thread); `/metrics` is
//! Prometheus text ([`metrics`]). SIGTERM and SIGINT stop accepting connections, the requests in
//! flight are answered, and [`serve`] returns.

pub mod api;
pub mod batcher;
mod continuous;
mod http;
pub mod metrics;

use crate::answer::Answerer;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What one request may ask, and how much may wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Questions waiting for the decode loop, at most; beyond that requests get 429.
    pub max_queue: usize,
    /// Questions in one request, at most.
    pub max_questions: usize,
    /// Request body size in bytes, at most (413 beyond).
    pub max_body_bytes: usize,
    /// Time from arrival to answer, at most (504 beyond).
    pub timeout: Duration,
    /// `beams` (and `candidates`) a request may ask for, at most.
    pub max_beams: usize,
    /// `max_new_tokens` a request may ask for, at most.
    pub max_new_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queue: 256,
            max_questions: 64,
            max_body_bytes: 1 << 20,
            timeout: Duration::from_secs(30),
            max_beams: 16,
            max_new_tokens: 256,
        }
    }
}

impl Limits {
    /// Every limit must let something through.
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("max_queue", self.max_queue),
            ("max_questions", self.max_questions),
            ("max_body_bytes", self.max_body_bytes),
            ("max_beams", self.max_beams),
            ("max_new_tokens_limit", self.max_new_tokens),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::setting(name, "must be at least 1"));
        }
        if self.max_questions > self.max_queue {
            return Err(Error::setting(
                "max_questions",
                format!(
                    "{} questions per request can never fit a queue of {}",
                    self.max_questions, self.max_queue
                ),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::setting("timeout", "must be more than 0"));
        }
        Ok(())
    }
}

/// How the decode loop batches requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// Questions join the running batch at a step boundary and leave it when answered; with an
    /// export that cannot join running batches (optimum's), dynamic batching instead.
    #[default]
    Continuous,
    /// Batches formed from the queue at batch boundaries, each decoded to its end.
    Dynamic,
}

/// Where the server listens and what it allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    pub host: String,
    /// 0: any free port (the one bound is given to `on_listening`).
    pub port: u16,
    pub limits: Limits,
    /// A batch of less than the batch size waits this long from its oldest request's arrival
    /// for more requests (0: start at once).
    pub batch_wait: Duration,
    pub batching: Batching,
    /// The model directory, reported by `/v1/model` (with its `cbqa_export.json`).
    pub model_dir: PathBuf,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            limits: Limits::default(),
            batch_wait: Duration::from_millis(5),
            batching: Batching::default(),
            model_dir: PathBuf::new(),
        }
    }
}

/// Serve `answerer` until SIGTERM or SIGINT; `on_listening` is called with the bound address
/// once connections are accepted. Returns after the requests in flight were answered.
pub fn serve(
    answerer: Answerer,
    opts: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    opts.limits.check()?;
    let io = |action: &'static str| {
        let path = PathBuf::from(format!("{}:{}", opts.host, opts.port));
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("start the HTTP runtime for"))?;
    let state = Arc::new(http::AppState::new(answerer, &opts));
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .map_err(io("listen on"))?;
        on_listening(listener.local_addr().map_err(io("listen on"))?);
        http::run(listener, Arc::clone(&state))
            .await
            .map_err(io("serve on"))
    });
    state.batcher.shutdown();
    served
}
