"""cbqa from Python: closed-book question answering with T5.

* :class:`Answerer` loads an ONNX export (``cbqa export``'s or optimum's) and answers lists of
  questions with ONNX Runtime or tract, releasing the GIL while it works.
* :func:`score` and :func:`normalize_answer` are the official metrics (T5's ``qa_utils``, DPR's
  ``has_answer``, EfficientQA's EM), usable on any system's predictions.
* :func:`read_dataset` reads the benchmark files the command line reads (NQ-open, TriviaQA,
  WebQuestions, CSV/TSV).
* :func:`write_eval` writes predictions.csv and a metrics.csv row as ``cbqa eval`` does;
  ``python -m cbqa.ray_eval`` evaluates on a Ray cluster with it.

Every failure of the library raises :class:`CbqaError`, whose message is the whole error chain.
ONNX Runtime's library is the one of the installed ``onnxruntime`` package (``ORT_DYLIB_PATH``
overrides it).
"""

import importlib.util as _importlib_util
import os as _os
import warnings as _warnings

from . import _native
from ._native import (
    GIT_COMMIT,
    Answer,
    Answerer,
    Candidate,
    CbqaError,
    Example,
    __version__,
    normalize_answer,
    plan_batches,
    read_dataset,
    score,
    write_eval,
)

__all__ = [
    "Answer",
    "Answerer",
    "Candidate",
    "CbqaError",
    "Example",
    "GIT_COMMIT",
    "__version__",
    "normalize_answer",
    "plan_batches",
    "read_dataset",
    "score",
    "write_eval",
]


def _use_installed_onnxruntime():
    """Point the library at the installed onnxruntime package's libonnxruntime (not imported)."""
    spec = _importlib_util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return  # tract and scoring work without it; an "ort" Answerer says how to install it
    try:
        _native.use_onnxruntime_package(_os.fspath(spec.submodule_search_locations[0]))
    except CbqaError as e:  # a broken onnxruntime install: scoring and tract still work
        _warnings.warn(f"cbqa: {e}", RuntimeWarning, stacklevel=2)


_use_installed_onnxruntime()
