"""Type stubs of cbqa's extension module (re-exported by ``cbqa``)."""

from os import PathLike
from typing import Literal, Optional, Sequence, Union

_Path = Union[str, PathLike[str]]
_Normalizer = Literal["squad", "trivia_qa"]

__version__: str
GIT_COMMIT: str
EVAL_CHUNK_BATCHES: int
"""Batches per journal chunk of ``cbqa eval`` (the Ray driver plans the same chunks)."""
DEFAULT_BATCH_SIZE: int
"""The default ``batch_size``: decoder rows per batch (questions x beams)."""

class CbqaError(Exception):
    """A cbqa failure; the message is the whole error chain (file, line, tensor or argument)."""

class Candidate:
    """One answer candidate and its score (beam score, or summed log-probability if greedy)."""

    text: str
    score: float
    def __init__(self, text: str, score: float) -> None: ...

class Answer:
    """The answer to one question: best candidate, all candidates (best first), truncation,
    and with ``errors="return"`` why the question could not be answered."""

    text: str
    score: float
    candidates: list[Candidate]
    truncated: bool
    error: Optional[str]
    def __init__(
        self,
        text: str,
        score: float,
        candidates: Sequence[Candidate] = ...,
        truncated: bool = False,
        error: Optional[str] = None,
    ) -> None: ...

class Answerer:
    """A loaded ONNX export that answers questions (ONNX Runtime or tract, on the CPU or GPU).

    Every keyword left out takes the value ``cbqa predict`` uses by default; ``candidates``
    defaults to ``beams``. ONNX Runtime on the CPU decodes a batch per thread at once, each on
    its own session copy (a batch alone on every thread); ``serial_batches=True`` decodes one
    batch at a time on all threads, with less memory (``--serial-batches``).
    """

    def __init__(
        self,
        onnx_dir: _Path,
        backend: Optional[Literal["ort", "tract"]] = None,
        *,
        device: Optional[str] = None,
        threads: Optional[int] = None,
        beams: Optional[int] = None,
        candidates: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        length_penalty: Optional[float] = None,
        batch_size: Optional[int] = None,
        batch_tokens: Optional[int] = None,
        prefix: Optional[str] = None,
        max_input_tokens: Optional[int] = None,
        serial_batches: bool = False,
    ) -> None: ...
    def answer(
        self, questions: Sequence[str], *, errors: Literal["raise", "return"] = "raise"
    ) -> list[Answer]:
        """One answer per question, in order; the GIL is released while answering."""
    def describe(self) -> str: ...
    @property
    def truncations(self) -> int: ...

class Example:
    """One benchmark record as ``cbqa eval`` reads it."""

    id: str
    question: str
    answers: list[str]

def read_dataset(
    path: _Path,
    *,
    format: Optional[Literal["jsonl", "json-array", "dpr-tsv", "csv", "tsv"]] = None,
    question_field: Optional[str] = None,
    answer_field: Optional[str] = None,
    skip_bad: bool = False,
) -> list[Example]:
    """The records of a benchmark file (NQ-open, TriviaQA DPR TSV, WebQuestions, CSV/TSV)."""

def normalize_answer(text: str, normalizer: _Normalizer = "squad") -> str:
    """``text`` normalised as the official metrics do."""

def score(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    normalizer: _Normalizer = "squad",
    candidates: Optional[Sequence[Sequence[str]]] = None,
) -> dict[str, Union[int, float, str]]:
    """The official metrics: ``n``, ``normalizer``, ``em``, ``f1`` (x100), ``recall@k``,
    ``has_answer``, ``efficientqa_em``."""

def plan_batches(
    onnx_dir: _Path,
    questions: Sequence[str],
    *,
    batch_size: Optional[int] = None,
    batch_tokens: Optional[int] = None,
    prefix: Optional[str] = None,
    max_input_tokens: Optional[int] = None,
    beams: Optional[int] = None,
) -> list[list[int]]:
    """The batches (indices into ``questions``, longest first) an Answerer would form;
    ``batch_size`` counts decoder rows (questions x beams)."""

def write_eval(
    out: _Path,
    data: _Path,
    answers: Sequence[Answer],
    *,
    model: _Path,
    backend: str = "ort",
    device: str = "cpu",
    threads: int = 0,
    beams: Optional[int] = None,
    batch_size: Optional[int] = None,
    batch_tokens: Optional[int] = None,
    limit: Optional[int] = None,
    normalizer: Optional[_Normalizer] = None,
    split: Optional[str] = None,
    format: Optional[str] = None,
    question_field: Optional[str] = None,
    answer_field: Optional[str] = None,
    skip_bad: bool = False,
    wall_s: float = 0.0,
    peak_rss_mb: Optional[float] = None,
) -> list[tuple[str, str]]:
    """predictions.csv and a metrics.csv row in ``out``, as ``cbqa eval`` writes them."""

def use_onnxruntime_package(package: _Path) -> str:
    """Use the ONNX Runtime library of the onnxruntime package directory ``package``."""
