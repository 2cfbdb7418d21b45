"""The prediction hot path against a plain reference of the code path it replaced.

``ModelBundle.predict`` vectorizes, scores and calibrates with code tuned for one instance a
call (one pass over the fields, coefficients kept C-contiguous, no per-call conversions).
:func:`reference_predict` is the straightforward path it must agree with to the printed 6
decimals: a dense TF-IDF row per field (sublinear tf, idf, L2 per field block), scipy's
``X @ coef.T``, or for XGBoost its dense input and XGBoost's own ``inplace_predict`` (the bundle
walks the trees with :class:`hhpulse.model.train.FastTrees`), softmax, then the
calibrator's ``softmax(log(clip(p)) / T + b)``. Both winners' kinds are checked, each with a
calibrator that moves the probabilities, on a fixed set of instances one at a time and as a batch.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from hhpulse.config import TASKS, CandidateConfig, LabelConfig
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.model.bundle import build_bundle, load_bundle
from hhpulse.model.calibration import Calibrator
from hhpulse.model.dataset import build_dataset
from hhpulse.model.features import ngrams
from hhpulse.model.inputs import to_instance
from hhpulse.model.text import analyze
from hhpulse.model.train import featurize, fit_on

KINDS = {
    "logreg": {"C": 4.0},
    "xgboost": {"max_depth": 4, "n_estimators": 30, "learning_rate": 0.3},
}

FIXED = [
    "Разработка backend-сервисов на Python. Проектирование REST API",
    {"responsibility": "Доставка заказов клиентам", "name": "Курьер", "requirement": "Права категории B"},
    "совсем незнакомые слова qwerty zyx",  # nothing known: an empty row
    "Python Python Python SQL SQL, доставка доставка",  # repeated terms: sublinear tf
    {"responsibility": "Руководство командой", "name": None, "requirement": ""},
    {"responsibility": "Ведение <highlighttext>учёта</highlighttext>", "name": "Бухгалтер"},
    "a",
]


@pytest.fixture(scope="module")
def fixed_instances(demo_store):
    """The fixed texts above, and 40 vacancies of the demo market with all their fields."""
    from hhpulse.model.dataset import instances, structured_columns

    history = load_history(demo_store).sort_values("id").head(40)
    rows = pd.concat(
        [history[["responsibility", "name", "requirement"]], structured_columns(history, "demand")], axis=1
    )
    return FIXED + instances(rows)


@pytest.fixture(scope="module", params=sorted(KINDS))
def bundle(request, demo_store, tmp_path_factory):
    """Both tasks' winners of one kind, with calibrators that change the probabilities."""
    kind = request.param
    dataset = build_dataset(load_history(demo_store), rates_by_run(demo_store))
    vec, sets = featurize(dataset)
    models = {
        t: fit_on(sets[t], CandidateConfig(f"{t}-{kind}", t, kind, KINDS[kind]), device="cpu") for t in TASKS
    }
    classes = {t: dataset.tasks[t].classes for t in TASKS}
    calibrators = {
        t: Calibrator(classes[t], "bias_temperature", 1.7, list(np.linspace(-0.5, 0.5, len(classes[t]))))
        for t in TASKS
    }
    out = build_bundle(
        tmp_path_factory.mktemp(kind) / "bundle",
        vectorizer=vec,
        models=models,
        cohorts=classes,
        label_config=LabelConfig().to_dict(),
        metrics={},
        card={},
        calibrators=calibrators,
    )
    loaded = load_bundle(out)
    assert {m.config.kind for m in loaded.models.values()} == {kind}
    return loaded


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_predict(bundle, instances) -> list[dict]:
    vec = bundle.vectorizer
    rows = [to_instance(i).as_dict() for i in instances]
    blocks = []
    for field, tfidf in vec._fields.items():
        block = np.zeros((len(rows), len(tfidf.vocabulary)))
        for r, row in enumerate(rows):
            grams = ngrams(analyze(row.get(field) or ""), tfidf.n_max)
            for col, count in Counter(tfidf.vocabulary[g] for g in grams if g in tfidf.vocabulary).items():
                block[r, col] = (1.0 + np.log(count)) if tfidf.sublinear else count
            block[r] *= tfidf.idf
            norm = np.sqrt((block[r] ** 2).sum())
            block[r] /= norm if norm else 1.0
        blocks.append(block)
    X = sp.csr_matrix(np.hstack(blocks))
    out: list[dict] = [{} for _ in rows]
    for task in TASKS:
        model = bundle.models[task]
        if model.config.kind == "xgboost":  # XGBoost's own predictor on the dense input
            D = model.dense.transform(X, rows)
            p = np.asarray(model.model.inplace_predict(D), dtype=np.float64).reshape(len(rows), -1)
        else:
            p = _softmax(np.asarray(X @ model.model["coef"].T) + model.model["intercept"])
        cal = bundle.calibrators[task]
        if not cal.identity:
            p = _softmax(np.log(np.clip(p, 1e-12, None)) / cal.temperature + np.asarray(cal.bias))
        names = bundle.cohorts[task]
        for r in range(len(rows)):
            out[r][task] = {
                "cohort": names[int(np.argmax(p[r]))],
                "probabilities": {c: round(float(v), 6) for c, v in zip(names, p[r], strict=True)},
            }
    return out


def _answers(preds: list[dict]) -> list[dict]:
    return [{t: p[t] for t in TASKS} for p in preds]


def test_predict_agrees_with_the_reference_path_one_at_a_time_and_in_a_batch(bundle, fixed_instances):
    expected = reference_predict(bundle, fixed_instances)
    assert _answers(bundle.predict(fixed_instances)) == expected
    one_by_one = [bundle.predict([inst])[0] for inst in fixed_instances]
    assert _answers(one_by_one) == expected
    # the probabilities move under calibration, and the empty row gets an answer too
    raw = bundle.predict_proba(fixed_instances[:3], calibrated=False)
    cal = bundle.predict_proba(fixed_instances[:3])
    assert all(not np.allclose(raw[t], cal[t]) for t in TASKS)


def test_the_known_term_counts_come_with_the_prediction(bundle, fixed_instances):
    """The hook the predictor's metrics read: (known tokens, tokens) per field and instance,
    from the vectorization predict does anyway; the answers do not change."""
    stats: dict = {}
    assert _answers(bundle.predict(fixed_instances, stats=stats)) == _answers(bundle.predict(fixed_instances))
    assert list(stats) == list(bundle.input_fields)
    for field, counts in stats.items():
        vocabulary = bundle.vectorizer.vocabulary(field)
        for inst, got in zip(fixed_instances, counts, strict=True):
            tokens = analyze(to_instance(inst).as_dict().get(field) or "")
            assert got == (sum(t in vocabulary for t in tokens), len(tokens))
    assert stats["responsibility"][2] == (0, 5)  # "совсем незнакомые слова qwerty zyx": nothing known
