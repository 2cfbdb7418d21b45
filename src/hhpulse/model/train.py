"""Candidates, training and winner selection for both tasks.

Each step is a function the pipeline wraps as one component:

* :func:`featurize` fits the vectorizer on the training split and builds the matrices
  (:class:`FeatureSet`, saved as npz + JSON);
* :func:`fit_candidate` trains one :class:`~hhpulse.config.CandidateConfig` (XGBoost
  ``hist`` with early stopping on the validation split and balanced class weights, or
  the logistic-regression baseline) and returns a :class:`TrainedCandidate` that saves
  as XGBoost UBJ or npz, never pickle;
* :func:`select_winner` picks per task the best on the *validation* split by a selection
  score over a primary metric (default macro ROC AUC one-vs-one) and reports *test*
  metrics for everyone. The model is called two ways (all fields, or the responsibility
  alone, as the seed does), so the default score (``selection="both"``) is the mean of the
  validation metric with all fields and with responsibility alone (:func:`selection_score`);
  ``selection="all_fields"`` is the old rule.
  Every task also trains the baseline (:func:`~hhpulse.config.baseline_candidate`: plain
  TF-IDF + logistic regression on the training rows without the field-dropout copies),
  which competes like any candidate and keeps ties to the others: the winner's validation
  metric is never below the baseline's.

``device="cuda"`` is used when asked (or ``auto``) and a GPU is present; otherwise
training falls back to the CPU with a log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hhpulse.config import CandidateConfig, FeatureConfig, baseline_candidate
from hhpulse.data.store import atomic_write_bytes
from hhpulse.model.dataset import Dataset
from hhpulse.model.evaluate import classification_metrics, score
from hhpulse.model.features import TextVectorizer

log = logging.getLogger(__name__)

DEFAULT_PRIMARY = "roc_auc_ovo"
PARTS = ("train", "val", "val_resp", "test", "test_resp")
# How select_winner scores a candidate on validation (see selection_score)
SELECTIONS = {
    "both": "mean of the validation {primary} with all fields and with responsibility alone",
    "all_fields": "the validation {primary} with all fields",
}
DEFAULT_SELECTION = "both"


# -- devices ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether this XGBoost build has CUDA and a GPU answers (checked once, cheaply)."""
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return False
    try:
        d = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0, 1]))
        xgb.train(
            {"device": "cuda", "tree_method": "hist", "objective": "binary:logistic"}, d, num_boost_round=1
        )
        return True
    except Exception as exc:  # no GPU, no driver, or a broken CUDA setup
        log.debug("CUDA check failed: %s", exc)
        return False


def resolve_device(device: str) -> str:
    """``cuda`` only when asked (or ``auto``) and usable; else ``cpu``, with a log line."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if device == "cuda":
        log.warning("device=cuda asked for, but no usable GPU/CUDA build was found: training on the CPU")
    else:
        log.info("no GPU found: training on the CPU")
    return "cpu"


# -- features -----------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """Matrices and labels of one task. ``val_resp`` and ``test_resp`` are the validation and
    test splits with responsibility alone.

    With field dropout, ``X["train"]`` holds the training rows, then their responsibility-only
    copies; ``train_rows`` is the number of the former (None: no copies).
    """

    task: str
    classes: list[str]
    X: dict[str, sp.csr_matrix]
    y: dict[str, list[str]]
    train_rows: int | None = None

    def training(self, field_dropout: bool = True) -> tuple[sp.csr_matrix, list[str]]:
        """The training matrix and labels, with the field-dropout copies or without them."""
        if field_dropout or self.train_rows is None:
            return self.X["train"], self.y["train"]
        n = self.train_rows
        return sp.csr_matrix(self.X["train"][:n]), self.y["train"][:n]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for part, x in self.X.items():
            sp.save_npz(folder / f"X_{part}.npz", x, compressed=True)
        atomic_write_bytes(
            folder / "labels.json",
            json.dumps(
                {"task": self.task, "classes": self.classes, "y": self.y, "train_rows": self.train_rows},
                ensure_ascii=False,
            ).encode(),
        )

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSet:
        folder = Path(folder)
        meta = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        X = {p: sp.csr_matrix(sp.load_npz(folder / f"X_{p}.npz")) for p in meta["y"]}
        return cls(meta["task"], meta["classes"], X, meta["y"], meta.get("train_rows"))


def only_responsibility(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("name", "requirement"):
        if col in out:
            out[col] = None
    return out


def featurize(
    dataset: Dataset, config: FeatureConfig | None = None
) -> tuple[TextVectorizer, dict[str, FeatureSet]]:
    """Fit one vectorizer on the union of the tasks' training rows, and build every matrix.

    With ``config.field_dropout`` the training rows appear twice: with all fields and
    with responsibility alone, so the model answers well on either input.
    """
    config = config or FeatureConfig()
    train_rows = pd.concat([td.part("train") for td in dataset.tasks.values()]).drop_duplicates("id")
    vec = TextVectorizer(config).fit(train_rows)
    sets = {}
    for task, td in dataset.tasks.items():
        tr, va, te = td.part("train"), td.part("val"), td.part("test")
        X_tr, y_tr = vec.transform(tr), tr["label"].tolist()
        rows = None
        if config.field_dropout and len(config.fields) > 1:
            rows = X_tr.shape[0]
            X_tr = sp.csr_matrix(sp.vstack([X_tr, vec.transform(only_responsibility(tr))]))
            y_tr = y_tr + y_tr
        sets[task] = FeatureSet(
            task,
            td.classes,
            {
                "train": X_tr,
                "val": vec.transform(va),
                "val_resp": vec.transform(only_responsibility(va)),
                "test": vec.transform(te),
                "test_resp": vec.transform(only_responsibility(te)),
            },
            {
                "train": y_tr,
                "val": va["label"].tolist(),
                "val_resp": va["label"].tolist(),
                "test": te["label"].tolist(),
                "test_resp": te["label"].tolist(),
            },
            rows,
        )
    log.info("features: %d terms over %s", vec.n_features, ", ".join(config.fields))
    return vec, sets


# -- candidates ---------------------------------------------------------------------------
def balanced_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(float)
    w = np.where(counts > 0, len(y) / (np.maximum(counts, 1) * max(1, (counts > 0).sum())), 0.0)
    return w[y]


SMALL_BATCH = 64  # rows up to which an XGBoost prediction runs on one thread (TrainedCandidate._booster)


@dataclass
class TrainedCandidate:
    """A fitted model of one candidate config; ``predict_proba`` columns follow ``classes``."""

    config: CandidateConfig
    classes: list[str]
    model: Any  # xgboost.Booster, or {"coef": ndarray (k x d), "intercept": ndarray (k)}
    info: dict[str, Any] = field(default_factory=dict)
    _coef_t: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _one_thread: Any = field(default=None, init=False, repr=False, compare=False)

    def predict_proba(self, X: sp.spmatrix) -> np.ndarray:
        if self.config.kind == "xgboost":
            # inplace_predict reads the CSR directly: no DMatrix per call (much cheaper for small batches)
            X32 = X if X.dtype == np.float32 and sp.isspmatrix_csr(X) else sp.csr_matrix(X, dtype=np.float32)
            p = self._booster(X.shape[0]).inplace_predict(X32)
            return np.asarray(p, dtype=np.float64).reshape(X.shape[0], len(self.classes))
        z = self._linear_scores(sp.csr_matrix(X) if not sp.isspmatrix_csr(X) else X)
        z -= np.max(z, axis=1, keepdims=True)
        e = np.exp(z, out=z)
        return e / e.sum(axis=1, keepdims=True)

    def _booster(self, rows: int) -> Any:
        """The booster to predict ``rows`` rows with: up to :data:`SMALL_BATCH` rows, a copy that
        runs on one thread. XGBoost hands each thread blocks of 64 rows, so a smaller batch
        gains nothing from more threads, while starting them costs on every call; on a busy
        machine (other processes, or the server's own event loop, on the same cores) a one-row
        prediction on all cores was measured 40x slower than on one (35 ms against 0.8 ms, a
        600-tree booster on 2 cores under a load average of 15)."""
        if rows > SMALL_BATCH:
            return self.model
        if self._one_thread is None:
            booster = self.model.copy()
            booster.set_param({"nthread": 1})
            self._one_thread = booster
        return self._one_thread

    def _linear_scores(self, X: sp.csr_matrix) -> np.ndarray:
        """``X @ coef.T + intercept``, with the coefficients transposed once into a C-contiguous
        (features x cohorts) array: ``coef.T`` is a Fortran-ordered view that scipy copies (the
        whole cohorts x vocabulary matrix) on every product. One row takes a gather of its few
        columns instead of scipy's product (same sums, none of its per-call checks)."""
        if self._coef_t is None:
            self._coef_t = np.ascontiguousarray(self.model["coef"].T, dtype=np.float64)
        one_row = X.shape[0] == 1
        z = (X.data @ self._coef_t[X.indices])[None, :] if one_row else np.asarray(X @ self._coef_t)
        return z + self.model["intercept"]

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.config.to_dict(), "classes": self.classes, "info": self.info}
        if self.config.kind == "xgboost":
            raw = self.model.save_raw(raw_format="ubj")
            atomic_write_bytes(folder / "model.ubj", bytes(raw))
            files = [folder / "model.ubj"]
        else:
            import io

            buf = io.BytesIO()
            np.savez(buf, coef=self.model["coef"], intercept=self.model["intercept"])
            atomic_write_bytes(folder / "linear.npz", buf.getvalue())
            files = [folder / "linear.npz"]
        atomic_write_bytes(
            folder / "model.json", json.dumps(meta, ensure_ascii=False, indent=2, default=str).encode()
        )
        return [*files, folder / "model.json"]


def load_candidate(folder: str | Path) -> TrainedCandidate:
    """Load a saved candidate (XGBoost UBJ or linear npz; no pickle)."""
    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    config = CandidateConfig.from_dict(meta["config"])
    if config.kind == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray((folder / "model.ubj").read_bytes()))
        booster.set_param({"device": "cpu", "nthread": 0})
        model: Any = booster
    else:
        with np.load(folder / "linear.npz", allow_pickle=False) as z:
            model = {"coef": np.asarray(z["coef"]), "intercept": np.asarray(z["intercept"])}
    return TrainedCandidate(config, list(meta["classes"]), model, meta.get("info", {}))


def fit_candidate(
    config: CandidateConfig,
    X_train: sp.spmatrix,
    y_train: Sequence[str],
    X_val: sp.spmatrix | None,
    y_val: Sequence[str] | None,
    classes: Sequence[str],
    *,
    device: str = "auto",
    seed: int = 42,
    rounds: int | None = None,
) -> TrainedCandidate:
    """Train one candidate. Labels are cohort names; ``classes`` fixes the column order.

    XGBoost early-stops on ``X_val``; with ``rounds`` (a refit on every row, where no
    held-out rows are left) it trains exactly that many boosting rounds and needs no
    validation rows."""
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    ytr = np.array([idx[v] for v in y_train])
    params = _typed(config.params)
    weighted = params.pop("class_weight", "balanced") == "balanced"
    start = time.perf_counter()
    info: dict[str, Any] = {"train_rows": int(X_train.shape[0]), "features": int(X_train.shape[1])}
    if config.kind == "xgboost":
        import xgboost as xgb

        dev = resolve_device(params.pop("device", device))
        n_rounds = int(params.pop("n_estimators", 300))
        stop = int(params.pop("early_stopping_rounds", 25))
        booster_params = {
            "objective": "multi:softprob",
            "num_class": len(classes),
            "tree_method": "hist",
            "device": dev,
            "eval_metric": "mlogloss",
            "seed": seed,
            "nthread": 0,
            **{("eta" if k == "learning_rate" else k): v for k, v in params.items()},
        }
        dtrain = xgb.DMatrix(
            X_train, label=ytr, weight=balanced_weights(ytr, len(classes)) if weighted else None
        )
        if rounds is None and (X_val is None or y_val is None):
            raise ValueError("an XGBoost candidate needs validation rows to early-stop on, or fixed rounds")
        if rounds is not None:  # a refit: the held-out fit's number of rounds, no early stopping
            booster = xgb.train(booster_params, dtrain, num_boost_round=int(rounds), verbose_eval=False)
            best, n_rounds = int(rounds) - 1, int(rounds)
        else:
            yva = np.array([idx[v] for v in y_val or []])
            dval = xgb.DMatrix(X_val, label=yva)
            booster = xgb.train(
                booster_params,
                dtrain,
                num_boost_round=n_rounds,
                evals=[(dval, "val")],
                early_stopping_rounds=stop,
                verbose_eval=False,
            )
            best = int(getattr(booster, "best_iteration", n_rounds - 1))
            booster = booster[: best + 1]
        booster.set_param({"device": "cpu"})
        info.update(device=dev, best_iteration=best, rounds=n_rounds)
        model: Any = booster
    else:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(
            C=float(params.get("C", 1.0)),
            max_iter=int(params.get("max_iter", 300)),
            class_weight="balanced" if weighted else None,
            random_state=seed,
        )
        clf.fit(X_train, ytr)
        coef = np.zeros((len(classes), X_train.shape[1]))
        intercept = np.full(len(classes), -30.0)  # classes never seen in training get ~0 probability
        if len(clf.classes_) == 2:
            coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
            intercept[clf.classes_[0]] = 0.0
        else:
            for row, c in enumerate(clf.classes_):
                coef[c], intercept[c] = clf.coef_[row], clf.intercept_[row]
        model = {"coef": coef, "intercept": intercept}
        info.update(device="cpu")
    info["train_seconds"] = round(time.perf_counter() - start, 3)
    log.info("trained %s (%s) in %.1fs", config.name, config.kind, info["train_seconds"])
    return TrainedCandidate(config, classes, model, info)


INT_PARAMS = frozenset(
    {"max_depth", "n_estimators", "early_stopping_rounds", "max_iter", "max_bin", "num_parallel_tree"}
)


def _typed(params: Mapping[str, Any]) -> dict[str, Any]:
    """Integer params as ints: KFP passes dicts as protobuf Structs, where every number is a float."""
    out = dict(params)
    for k in INT_PARAMS & out.keys():
        v = out[k]
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"candidate parameter {k} must be an integer, got {v}")
        out[k] = int(v)
    return out


def evaluate_candidate(cand: TrainedCandidate, fs: FeatureSet) -> dict[str, Any]:
    """Validation and test metrics, each with all fields and with responsibility alone."""
    return {
        part: classification_metrics(fs.y[part], cand.predict_proba(fs.X[part]), fs.classes)
        for part in ("val", "val_resp", "test", "test_resp")
        if part in fs.X and fs.X[part].shape[0]
    }


def selection_score(
    metrics: Mapping[str, Any], primary: str = DEFAULT_PRIMARY, selection: str = DEFAULT_SELECTION
) -> float:
    """The number :func:`select_winner` ranks a candidate by (``-inf`` when undefined).

    ``metrics`` is a candidate's ``{part: metrics}``. ``"both"``: the mean of the validation
    ``primary`` with all fields (``val``) and with responsibility alone (``val_resp``), since
    the model is called both ways (many callers, like the seed, send the responsibility
    only); without ``val_resp`` (features built before it existed) the all-fields figure
    alone. ``"all_fields"``: the validation ``primary`` with all fields.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {sorted(SELECTIONS)}, got {selection!r}")
    full = score(metrics.get("val", {}) or {}, primary)
    if selection == "all_fields" or not metrics.get("val_resp"):
        return full
    resp = score(metrics.get("val_resp", {}) or {}, primary)
    if full == float("-inf") or resp == float("-inf"):
        return float("-inf")
    return (full + resp) / 2


@dataclass
class TaskResult:
    task: str
    winner: str
    primary: str
    candidates: dict[str, dict[str, Any]]  # name -> {"kind", "info", "metrics", "selection_score"}
    baseline: str | None = None  # the TF-IDF + logistic regression yardstick among the candidates
    selection: str = DEFAULT_SELECTION

    def selection_rule(self) -> str:
        return SELECTIONS[self.selection].format(primary=self.primary)


def select_winner(
    task: str,
    results: Mapping[str, Mapping[str, Any]],
    primary: str = DEFAULT_PRIMARY,
    baseline: str | None = None,
    selection: str = DEFAULT_SELECTION,
) -> TaskResult:
    """The candidate with the best validation :func:`selection_score` (ties: first by name).

    ``baseline`` names the TF-IDF + logistic regression baseline among ``results``: it
    competes like the others but loses ties, so it wins only when no other candidate ranks
    at least as well on validation. Each candidate's score is kept as ``selection_score``.
    """
    if not results:
        raise ValueError(f"no candidates were trained for {task}")
    if baseline is not None and baseline not in results:
        raise ValueError(f"{task}: the baseline {baseline!r} was not trained (candidates: {sorted(results)})")
    scores = {n: selection_score(r["metrics"], primary, selection) for n, r in results.items()}
    best = max(sorted(results), key=lambda n: (scores[n], n != baseline))
    if baseline is not None and best == baseline and len(results) > 1:
        log.warning(
            "%s: no candidate ranks at least as well as the TF-IDF + logistic regression baseline on "
            "validation (%s %.4f): the baseline wins",
            task,
            SELECTIONS[selection].format(primary=primary),
            scores[baseline],
        )
    cands = {
        k: {**v, "selection_score": None if scores[k] == float("-inf") else scores[k]}
        for k, v in results.items()
    }
    return TaskResult(task, best, primary, cands, baseline, selection)


def train_task(
    fs: FeatureSet,
    candidates: Sequence[CandidateConfig],
    *,
    device: str = "auto",
    primary: str = DEFAULT_PRIMARY,
    selection: str = DEFAULT_SELECTION,
) -> tuple[TaskResult, dict[str, TrainedCandidate]]:
    """Train every candidate of ``fs.task``, and the task's baseline, and pick the winner."""
    mine = [c for c in candidates if c.task == fs.task]
    if not mine:
        raise ValueError(f"no candidate configured for task {fs.task!r}")
    base = baseline_candidate(fs.task)
    if base.name in {c.name for c in mine}:
        raise ValueError(f"candidate name {base.name!r} is reserved for the baseline")
    trained, results = {}, {}
    for c in [*mine, base]:
        cand = fit_on(fs, c, device=device)
        trained[c.name] = cand
        results[c.name] = {"kind": c.kind, "info": cand.info, "metrics": evaluate_candidate(cand, fs)}
    return select_winner(fs.task, results, primary, baseline=base.name, selection=selection), trained


def fit_on(fs: FeatureSet, config: CandidateConfig, *, device: str = "auto") -> TrainedCandidate:
    """Train ``config`` on ``fs``: its training rows (with the field-dropout copies unless the
    candidate opts out), early-stopped on validation."""
    X_train, y_train = fs.training(config.field_dropout)
    return fit_candidate(config, X_train, y_train, fs.X["val"], fs.y["val"], fs.classes, device=device)
