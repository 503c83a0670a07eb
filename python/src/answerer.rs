//! `cbqa.Answerer`: a loaded export that answers lists of questions with the GIL released.

use crate::errors::{chain, to_py};
use cbqa::generate::{encode_questions, plan_batches as plan, GenerateOptions};
use cbqa::runtime::{BackendKind, OnnxDir};
use cbqa::AnswererOptions;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// One answer candidate: its text and its score (the beam score, or the sum of token
/// log-probabilities when greedy).
#[pyclass(module = "cbqa", frozen, get_all)]
#[derive(Clone)]
pub struct Candidate {
    pub text: String,
    pub score: f32,
}

#[pymethods]
impl Candidate {
    #[new]
    fn new(text: String, score: f32) -> Self {
        Candidate { text, score }
    }

    fn __repr__(&self) -> String {
        format!("Candidate(text={:?}, score={})", self.text, self.score)
    }
}

/// The answer to one question: the best candidate's text and score, every candidate (best
/// first), whether the question was cut to the input limit, and, with `errors="return"`, why a
/// question could not be answered (`None` when it was).
#[pyclass(module = "cbqa", frozen, get_all)]
#[derive(Clone)]
pub struct Answer {
    pub text: String,
    pub score: f32,
    pub candidates: Vec<Candidate>,
    pub truncated: bool,
    pub error: Option<String>,
}

#[pymethods]
impl Answer {
    /// An answer made elsewhere (e.g. received from a worker), for `write_eval`.
    #[new]
    #[pyo3(signature = (text, score, candidates=Vec::new(), truncated=false, error=None))]
    fn new(
        text: String,
        score: f32,
        candidates: Vec<Bound<'_, Candidate>>,
        truncated: bool,
        error: Option<String>,
    ) -> Self {
        Answer {
            text,
            score,
            candidates: candidates.iter().map(|c| c.get().clone()).collect(),
            truncated,
            error,
        }
    }

    fn __repr__(&self) -> String {
        match &self.error {
            Some(e) => format!("Answer(error={e:?})"),
            None => format!(
                "Answer(text={:?}, score={}, candidates={}, truncated={})",
                self.text,
                self.score,
                self.candidates.len(),
                if self.truncated { "True" } else { "False" }
            ),
        }
    }
}

impl Answer {
    fn from_library(a: cbqa::Answer) -> Self {
        Answer {
            text: a.text,
            score: a.score,
            candidates: a
                .candidates
                .into_iter()
                .map(|c| Candidate {
                    text: c.text,
                    score: c.score,
                })
                .collect(),
            truncated: a.truncated,
            error: None,
        }
    }

    fn failed(error: String) -> Self {
        Answer {
            text: String::new(),
            score: 0.0,
            candidates: Vec::new(),
            truncated: false,
            error: Some(error),
        }
    }
}

/// The settings an `Answerer` takes, as given in Python (`None`: the library's default).
#[derive(Default)]
struct Settings {
    backend: Option<String>,
    device: Option<String>,
    threads: Option<usize>,
    beams: Option<usize>,
    candidates: Option<usize>,
    max_new_tokens: Option<usize>,
    length_penalty: Option<f32>,
    batch_size: Option<usize>,
    batch_tokens: Option<usize>,
    prefix: Option<String>,
    max_input_tokens: Option<usize>,
    serial_batches: bool,
}

/// The engine a `backend=` string names.
fn backend_kind(name: &str) -> PyResult<BackendKind> {
    match name {
        "ort" | "onnxruntime" => Ok(BackendKind::Ort),
        "tract" => Ok(BackendKind::Tract),
        other => Err(PyValueError::new_err(format!(
            "backend={other:?}: expected \"ort\" or \"tract\" (the Python package has no libtorch)"
        ))),
    }
}

impl Settings {
    /// The library's options: its defaults, with what was given. `candidates` defaults to the
    /// beams, as on the command line.
    fn options(&self) -> PyResult<AnswererOptions> {
        let mut o = AnswererOptions::default();
        if let Some(b) = &self.backend {
            o.backend.kind = backend_kind(b)?;
        }
        if let Some(d) = &self.device {
            o.backend.device = d.parse().map_err(to_py)?;
        }
        o.backend.threads = self.threads.unwrap_or(o.backend.threads);
        o.backend.parallel_batches = !self.serial_batches;
        let g = &mut o.generate;
        g.num_beams = self.beams.unwrap_or(g.num_beams);
        g.num_return_sequences = self.candidates.unwrap_or(g.num_beams);
        g.max_new_tokens = self.max_new_tokens.unwrap_or(g.max_new_tokens);
        g.length_penalty = self.length_penalty.unwrap_or(g.length_penalty);
        let b = &mut o.batch;
        b.max_batch_size = self.batch_size.unwrap_or(b.max_batch_size);
        b.max_batch_tokens = self.batch_tokens.unwrap_or(b.max_batch_tokens);
        if let Some(p) = &self.prefix {
            o.prefix = p.clone();
        }
        o.max_input_tokens = self.max_input_tokens.unwrap_or(o.max_input_tokens);
        o.generate.check().map_err(to_py)?;
        Ok(o)
    }

    /// [`Settings::options`] for the export in `dir`: without a `prefix`, the one the model was
    /// trained with (its cbqa_export.json), as `cbqa predict` does.
    fn options_for(&self, dir: &std::path::Path) -> PyResult<AnswererOptions> {
        let mut o = self.options()?;
        if self.prefix.is_none() {
            let stored = cbqa::model_dir::stored_prefixes(dir)
                .map_err(|e| crate::errors::to_py_in(&format!("loading {}", dir.display()), &e))?;
            if let Some(p) = stored {
                o.prefix = p.default;
            }
        }
        Ok(o)
    }
}

/// A loaded ONNX export (`cbqa export`'s or optimum's) that answers questions.
///
/// `answer` releases the GIL while it works, so several Python threads can answer at once.
/// ONNX Runtime on the CPU decodes a batch per thread at once, each on its own session copy
/// (a batch alone on every thread), within a call and across calls; `serial_batches=True`: one
/// batch at a time on all threads (less memory). tract runs calls concurrently.
#[pyclass(module = "cbqa", frozen)]
pub struct Answerer {
    inner: Arc<cbqa::Answerer>,
    path: PathBuf,
}

#[pymethods]
impl Answerer {
    #[new]
    #[pyo3(signature = (onnx_dir, backend=None, *, device=None, threads=None, beams=None,
        candidates=None, max_new_tokens=None, length_penalty=None, batch_size=None,
        batch_tokens=None, prefix=None, max_input_tokens=None, serial_batches=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        onnx_dir: PathBuf,
        backend: Option<String>,
        device: Option<String>,
        threads: Option<usize>,
        beams: Option<usize>,
        candidates: Option<usize>,
        max_new_tokens: Option<usize>,
        length_penalty: Option<f32>,
        batch_size: Option<usize>,
        batch_tokens: Option<usize>,
        prefix: Option<String>,
        max_input_tokens: Option<usize>,
        serial_batches: bool,
    ) -> PyResult<Self> {
        let settings = Settings {
            backend,
            device,
            threads,
            beams,
            candidates,
            max_new_tokens,
            length_penalty,
            batch_size,
            batch_tokens,
            prefix,
            max_input_tokens,
            serial_batches,
        };
        let opts = settings.options_for(&onnx_dir)?;
        let loaded = py.detach(|| cbqa::Answerer::load(&onnx_dir, opts));
        let inner = loaded
            .map_err(|e| crate::errors::to_py_in(&format!("loading {}", onnx_dir.display()), &e))?;
        Ok(Answerer {
            inner: Arc::new(inner),
            path: onnx_dir,
        })
    }

    /// Answer `questions`, one `Answer` per question in order. `errors="raise"` (the default)
    /// raises `CbqaError` for the first question that could not be answered; `errors="return"`
    /// returns it as an `Answer` whose `error` says why.
    #[pyo3(signature = (questions, *, errors="raise"))]
    fn answer(
        &self,
        py: Python<'_>,
        questions: Vec<String>,
        errors: &str,
    ) -> PyResult<Vec<Answer>> {
        let raise = match errors {
            "raise" => true,
            "return" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "errors={other:?}: expected \"raise\" or \"return\""
                )))
            }
        };
        let inner = Arc::clone(&self.inner);
        let results = py.detach(move || {
            let qs: Vec<&str> = questions.iter().map(String::as_str).collect();
            let results = inner.answer_batch(&qs);
            (questions, results)
        });
        let (questions, results) = results;
        let mut out = Vec::with_capacity(results.len());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(a) => out.push(Answer::from_library(a)),
                Err(e) if raise => {
                    let ctx = format!("question {i} {:?}", questions[i]);
                    return Err(crate::errors::to_py_in(&ctx, &e));
                }
                Err(e) => out.push(Answer::failed(chain(&e))),
            }
        }
        Ok(out)
    }

    /// The backend in words (engine, device, threads).
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// How many questions were cut to the input limit so far.
    #[getter]
    fn truncations(&self) -> usize {
        self.inner.truncations()
    }

    fn __repr__(&self) -> String {
        format!(
            "Answerer({:?}, {})",
            self.path.display().to_string(),
            self.inner.describe()
        )
    }
}

/// The batches an `Answerer` with these settings forms from `questions` (longest first, as
/// `Answerer.answer` and `cbqa eval` run them): lists of indices into `questions`. Only the
/// export's tokenizer and configs are read. Questions that do not encode (empty) are in no
/// batch. A distributed evaluation that sends each batch whole to one worker gets the bytes of a
/// single-process run.
#[pyfunction]
#[pyo3(signature = (onnx_dir, questions, *, batch_size=None, batch_tokens=None, prefix=None,
    max_input_tokens=None, beams=None))]
// one parameter per Python keyword argument
#[allow(clippy::too_many_arguments)]
pub fn plan_batches(
    py: Python<'_>,
    onnx_dir: PathBuf,
    questions: Vec<String>,
    batch_size: Option<usize>,
    batch_tokens: Option<usize>,
    prefix: Option<String>,
    max_input_tokens: Option<usize>,
    beams: Option<usize>,
) -> PyResult<Vec<Vec<usize>>> {
    let settings = Settings {
        batch_size,
        batch_tokens,
        prefix,
        max_input_tokens,
        beams,
        ..Settings::default()
    };
    let opts = settings.options_for(&onnx_dir)?;
    py.detach(move || {
        let dir = OnnxDir::open(&onnx_dir)?;
        let generate = GenerateOptions::default().for_model(&dir.generation, &dir.config)?;
        let qs: Vec<&str> = questions.iter().map(String::as_str).collect();
        let encoded = encode_questions(
            &dir.tokenizer,
            &qs,
            &opts.prefix,
            opts.max_input_tokens,
            generate.eos_token_id,
        );
        let (idx, lengths): (Vec<usize>, Vec<usize>) = encoded
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().ok().map(|p| (i, p.ids.len())))
            .unzip();
        // `batch_size` counts decoder rows, as in `cbqa eval`
        let batches = plan(&lengths, &opts.batch.for_beams(opts.generate.num_beams));
        Ok(batches
            .into_iter()
            .map(|b| b.into_iter().map(|k| idx[k]).collect())
            .collect())
    })
    .map_err(to_py)
}
