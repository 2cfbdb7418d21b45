"""The predictor's metrics on kserve's ``/metrics``: every counter and histogram it serves.

- ``hhpulse_rejected_requests{reason}``: requests refused with a 4xx (the guard and the handlers);
- ``hhpulse_predicted_cohorts{task,cohort}``: the cohorts answered;
- ``hhpulse_input_chars{field}``: characters of each text field the model reads (a histogram);
- ``hhpulse_input_known_term_share{field}``: the share of a field's tokens that the vectorizer
  knows (a histogram; from the vectorization the prediction does anyway, never a second
  tokenization; a field without tokens is not observed);
- ``hhpulse_model_info{model,version}``: 1 for the bundle version being served.

Kept apart from :mod:`hhpulse.serving.model` so that the handlers stay small; the predictor
turns the input histograms off with ``--no-input-metrics`` (``benchmarks/bench_monitoring.py``
measures what they cost).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from hhpulse.model.features import TermStats
from hhpulse.model.inputs import Instance

REJECTED = Counter("hhpulse_rejected_requests", "Requests rejected with a 4xx, by reason", ["reason"])
PREDICTED = Counter("hhpulse_predicted_cohorts", "Predicted cohorts, by task and cohort", ["task", "cohort"])

CHAR_BUCKETS = (0, 25, 50, 100, 200, 400, 800, 1600, 3200, 5000)
SHARE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

INPUT_CHARS = Histogram(
    "hhpulse_input_chars", "Characters of each input text field, by field", ["field"], buckets=CHAR_BUCKETS
)
KNOWN_SHARE = Histogram(
    "hhpulse_input_known_term_share",
    "Share of an input field's tokens that the model's vectorizer knows, by field",
    ["field"],
    buckets=SHARE_BUCKETS,
)
MODEL_INFO = Gauge("hhpulse_model_info", "The served model: 1 for its bundle version", ["model", "version"])


def set_model_info(model: str, version: str) -> None:
    """Mark ``version`` as the one ``model`` serves (a reload drops the earlier version's series)."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(model=model, version=version).set(1)


# the labelled children, looked up once per field (``labels()`` takes a lock and builds a key)
_CHARS: dict[str, Histogram] = {}
_SHARES: dict[str, Histogram] = {}
_PREDICTED: dict[tuple[str, str], Counter] = {}


def count_predicted(task: str, cohort: str) -> None:
    """One more prediction of ``cohort`` for ``task`` (:data:`PREDICTED`)."""
    key = (task, cohort)
    child = _PREDICTED.get(key) or _PREDICTED.setdefault(key, PREDICTED.labels(task=task, cohort=cohort))
    child.inc()


def observe_inputs(instances: Sequence[Instance], fields: Sequence[str], stats: TermStats) -> None:
    """Input lengths of ``fields`` and the known-term shares that ``stats`` holds (one predict's)."""
    for field in fields:
        chars = _CHARS.get(field) or _CHARS.setdefault(field, INPUT_CHARS.labels(field=field))
        for inst in instances:
            text = getattr(inst, field, None)
            if text:
                chars.observe(len(text))
    for field, rows in stats.items():
        share = _SHARES.get(field) or _SHARES.setdefault(field, KNOWN_SHARE.labels(field=field))
        for known, total in rows:
            if total:
                share.observe(known / total)
