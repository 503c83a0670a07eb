//! The routes: `POST /v1/answer`, `GET /health`, `/ready`, `/v1/model`, `/metrics`; every error is
//! JSON ([`ApiError::body`]).

use super::api::{parse_request, AnswerBody, AnswerRequest, ApiError};
use super::batcher::{Batcher, Job, JobError, JobResult, Refused};
use super::metrics::Metrics;
use super::{Limits, ServeOptions};
use crate::answer::Answerer;
use crate::error::Error;
use crate::generate::{GenerateOptions, Prepared};
use crate::onnx::layout::METADATA_FILE;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What every handler shares.
pub struct AppState {
    answerer: Arc<Answerer>,
    pub batcher: Batcher,
    metrics: Arc<Metrics>,
    limits: Limits,
    model: Value,
    draining: AtomicBool,
}

impl AppState {
    /// The state of a server over `answerer`, its decode loops started.
    pub fn new(answerer: Answerer, opts: &ServeOptions) -> Self {
        let answerer = Arc::new(answerer);
        let metrics = Arc::new(Metrics::default());
        let batcher = Batcher::start(
            Arc::clone(&answerer),
            opts.limits.max_queue,
            opts.batch_wait,
            opts.batching,
            Arc::clone(&metrics),
        );
        AppState {
            model: model_info(&answerer, opts),
            answerer,
            batcher,
            metrics,
            limits: opts.limits.clone(),
            draining: AtomicBool::new(false),
        }
    }
}

/// Serve until SIGTERM/SIGINT, then let the connections in flight finish.
pub async fn run(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let body_limit = state.limits.max_body_bytes;
    let app = Router::new()
        .route("/v1/answer", post(answer))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route(
            "/v1/model",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.model.clone()) }),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async { error_response(&ApiError::new(404, "not_found", "no such route")) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Arc::clone(&state));
    let shutdown = async move {
        stop_signal().await;
        state.draining.store(true, Ordering::Relaxed);
        eprintln!("cbqa serve: stopping; answering the requests in flight");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if s.batcher.is_open() && !s.draining.load(Ordering::Relaxed) {
        Json(json!({"ready": true})).into_response()
    } else {
        let e = ApiError::new(503, "not_ready", "the server is shutting down");
        error_response(&e)
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn answer(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let mut guard = RequestGuard::new(&s.metrics);
    let (status, response) = match answer_body(&s, body, guard.arrived).await {
        Ok(v) => (200, Json(v).into_response()),
        Err(e) => {
            s.metrics.error(e.kind);
            (e.status, error_response(&e))
        }
    };
    guard.status = status;
    response
}

/// Counts an answer request while it is in flight, and records its status and duration when it
/// ends, also when the client goes away first (status 499, as nginx logs it).
struct RequestGuard<'a> {
    metrics: &'a Metrics,
    arrived: Instant,
    status: u16,
}

impl<'a> RequestGuard<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.request_started();
        RequestGuard {
            metrics,
            arrived: Instant::now(),
            status: 499,
        }
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.metrics.request(self.status, self.arrived.elapsed());
    }
}

/// The answers to a request body, or why there are none.
async fn answer_body(
    s: &AppState,
    body: Result<Bytes, BytesRejection>,
    arrived: Instant,
) -> Result<Value, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let msg = format!("the body is over {} bytes", s.limits.max_body_bytes);
            ApiError::new(413, "body_too_large", msg)
        } else {
            ApiError::new(status.as_u16(), "bad_body", r.body_text())
        }
    })?;
    let req = parse_request(&body, &s.limits)?;
    let generate = request_settings(s.answerer.generate_options(), &req)?;
    let items = prepare(&s.answerer, &req)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<JobResult>();
    let deadline = arrived + s.limits.timeout;
    s.batcher
        .submit(Job::new(items, generate, deadline, tx))
        .map_err(refusal)?;
    let timeout = ApiError::new(
        504,
        "timeout",
        format!("no answer within {:?}", s.limits.timeout),
    );
    let answers = match tokio::time::timeout_at(deadline.into(), rx).await {
        Err(_) | Ok(Ok(Err(JobError::Expired))) => return Err(timeout),
        Ok(Err(_)) => return Err(ApiError::new(500, "internal", "the decode loop stopped")),
        Ok(Ok(Err(JobError::Engine(e)))) => {
            let msg = chain_message(e.as_ref());
            return Err(ApiError::new(500, "engine", msg));
        }
        Ok(Ok(Ok(a))) => a,
    };
    let with_candidates = req.candidates.is_some();
    let mut bodies = answers
        .into_iter()
        .map(|a| AnswerBody::new(a, with_candidates));
    Ok(if req.single {
        json!(bodies.next())
    } else {
        json!({ "answers": bodies.collect::<Vec<_>>() })
    })
}

/// The decoding settings of a request: the server's, with what the request sets.
fn request_settings(
    base: &GenerateOptions,
    req: &AnswerRequest,
) -> Result<GenerateOptions, ApiError> {
    let num_beams = req.beams.unwrap_or(base.num_beams);
    let default_candidates = match req.beams {
        Some(b) => b,
        None => base.num_return_sequences,
    };
    let opts = GenerateOptions {
        num_beams,
        num_return_sequences: req.candidates.unwrap_or(default_candidates),
        max_new_tokens: req.max_new_tokens.unwrap_or(base.max_new_tokens),
        ..base.clone()
    };
    opts.check().map_err(|e| {
        let field = match &e {
            Error::Setting {
                setting: "num_return_sequences",
                ..
            } => "candidates",
            Error::Setting {
                setting: "max_new_tokens",
                ..
            } => "max_new_tokens",
            _ => "beams",
        };
        ApiError::field(field, e.to_string())
    })?;
    Ok(opts)
}

/// An error and its causes on one line (`a: b: c`).
fn chain_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The request's questions tokenised (with its prefix, else the server's).
fn prepare(answerer: &Answerer, req: &AnswerRequest) -> Result<Vec<Prepared>, ApiError> {
    let prefix = req.prefix.as_deref().unwrap_or(&answerer.options().prefix);
    let questions: Vec<&str> = req.questions.iter().map(String::as_str).collect();
    let field = |i: usize| match req.single {
        true => "question".to_string(),
        false => format!("questions[{i}]"),
    };
    answerer
        .prepare(&questions, prefix)
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.map_err(|e| ApiError::field(field(i), e.to_string())))
        .collect()
}

fn refusal(r: Refused) -> ApiError {
    match r {
        Refused::Full { retry_after } => ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(429, "queue_full", "the queue is full; retry later")
        },
        Refused::Closed => ApiError {
            retry_after: Some(1),
            ..ApiError::new(503, "shutting_down", "the server is shutting down")
        },
    }
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, Json(e.body())).into_response();
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// What `/v1/model` reports: the model, its config and export metadata, the engine, the
/// request defaults and limits, the versions.
fn model_info(answerer: &Answerer, opts: &ServeOptions) -> Value {
    let g = answerer.generate_options();
    let o = answerer.options();
    let export = std::fs::read_to_string(opts.model_dir.join(METADATA_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let l = &opts.limits;
    let batch_wait = opts.batch_wait.as_secs_f64() * 1000.0;
    let batching = match super::batcher::effective_batching(answerer, opts.batching) {
        super::Batching::Continuous => "continuous",
        super::Batching::Dynamic => "dynamic",
    };
    json!({
        "model": opts.model_dir.display().to_string(),
        "backend": answerer.describe(),
        "config": serde_json::to_value(answerer.config()).unwrap_or(Value::Null),
        "export": export,
        "defaults": {
            "beams": g.num_beams, "candidates": g.num_return_sequences,
            "max_new_tokens": g.max_new_tokens, "length_penalty": g.length_penalty,
            "prefix": o.prefix, "max_input_tokens": o.max_input_tokens,
            "batch_size": o.batch.max_batch_size, "batch_tokens": o.batch.max_batch_tokens,
            "batch_wait_ms": batch_wait, "batching": batching,
            "decode_loops": super::batcher::decode_loops(answerer, opts.batching),
        },
        "limits": {
            "max_queue": l.max_queue, "max_questions": l.max_questions,
            "max_body_bytes": l.max_body_bytes, "timeout_seconds": l.timeout.as_secs_f64(),
            "max_beams": l.max_beams, "max_new_tokens": l.max_new_tokens,
        },
        "versions": { "cbqa": env!("CARGO_PKG_VERSION") },
    })
}
