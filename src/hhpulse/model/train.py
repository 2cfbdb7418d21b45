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
import math
import os
import time
from array import array
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
from hhpulse.model.dataset import Dataset, instance_frame, time_order
from hhpulse.model.evaluate import classification_metrics, score
from hhpulse.model.features import (
    DEFAULT_SCORES,
    TOKENS,
    DenseInput,
    TextVectorizer,
    one_blas_thread,
    spread_fit,
    token_counts,
)
from hhpulse.model.inputs import STRUCTURED_NAMES

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

    ``rows`` (per part ``train``, ``val``, ``test``: the rows' texts, structured fields and
    ``_order``, their place in time, and ``<field>:tokens``, each text field's length in
    tokens) and ``layout`` (each text field's columns in ``X``) are
    what an XGBoost candidate builds its dense input from (:class:`DenseInput`).
    """

    task: str
    classes: list[str]
    X: dict[str, sp.csr_matrix]
    y: dict[str, list[str]]
    train_rows: int | None = None
    rows: dict[str, pd.DataFrame] | None = None
    layout: dict[str, list[int]] | None = None

    def training(self, field_dropout: bool = True) -> tuple[sp.csr_matrix, list[str]]:
        """The training matrix and labels, with the field-dropout copies or without them."""
        if field_dropout or self.train_rows is None:
            return self.X["train"], self.y["train"]
        n = self.train_rows
        return sp.csr_matrix(self.X["train"][:n]), self.y["train"][:n]

    def part_rows(self, part: str) -> pd.DataFrame | None:
        """The rows of ``part`` (``val_resp``/``test_resp``: with responsibility alone)."""
        if self.rows is None:
            return None
        base = part.removesuffix("_resp")
        return only_responsibility(self.rows[base]) if part.endswith("_resp") else self.rows[base]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for part, x in self.X.items():
            sp.save_npz(folder / f"X_{part}.npz", x, compressed=True)
        if self.rows is not None:
            import io

            buf = io.BytesIO()
            pd.concat([r.assign(_part=p) for p, r in self.rows.items()], ignore_index=True).to_parquet(
                buf, index=False
            )
            atomic_write_bytes(folder / "rows.parquet", buf.getvalue())
        atomic_write_bytes(
            folder / "labels.json",
            json.dumps(
                {
                    "task": self.task,
                    "classes": self.classes,
                    "y": self.y,
                    "train_rows": self.train_rows,
                    "layout": self.layout,
                },
                ensure_ascii=False,
            ).encode(),
        )

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSet:
        folder = Path(folder)
        meta = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        X = {p: sp.csr_matrix(sp.load_npz(folder / f"X_{p}.npz")) for p in meta["y"]}
        rows = None
        if (folder / "rows.parquet").is_file():
            frame = pd.read_parquet(folder / "rows.parquet")
            rows = {
                str(p): g.drop(columns="_part").reset_index(drop=True)
                for p, g in frame.groupby("_part", sort=False)
            }
            for p in ("train", "val", "test"):  # a part without rows is an empty frame, not absent
                rows.setdefault(p, frame.iloc[:0].drop(columns="_part"))
        return cls(
            meta["task"], meta["classes"], X, meta["y"], meta.get("train_rows"), rows, meta.get("layout")
        )


def only_responsibility(df: pd.DataFrame) -> pd.DataFrame:
    """The rows as a caller that sends the responsibility alone sends them: no title, no
    requirement, no structured field."""
    out = df.copy()
    for col in ("name", "requirement", "name" + TOKENS, "requirement" + TOKENS, *STRUCTURED_NAMES):
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
    layout = vec.layout()
    for task, td in dataset.tasks.items():
        tr, va, te = td.part("train"), td.part("val"), td.part("test")
        order = pd.Series(time_order(td.frame), index=td.frame.index)
        # each part's matrix, and its rows with their texts' lengths in tokens (the dense input reads them)
        X, parts = {}, {}
        for p, r in (("train", tr), ("val", va), ("test", te)):
            counted: dict[str, list[int]] = {}
            X[p] = vec.transform(r, lengths=counted)
            parts[p] = instance_frame(r).assign(_order=order[r.index].to_numpy(), **token_counts(counted))
        X_tr, y_tr = X["train"], tr["label"].tolist()
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
                "val": X["val"],
                "val_resp": vec.transform(only_responsibility(va)),
                "test": X["test"],
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
            parts,
            layout,
        )
    log.info("features: %d terms over %s", vec.n_features, ", ".join(config.fields))
    return vec, sets


# -- candidates ---------------------------------------------------------------------------
def balanced_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(float)
    w = np.where(counts > 0, len(y) / (np.maximum(counts, 1) * max(1, (counts > 0).sum())), 0.0)
    return w[y]


SMALL_BATCH = 64  # rows up to which an XGBoost prediction runs without XGBoost's own predictor


class FastTrees:
    """An XGBoost booster's trees as flat numpy arrays, for predictions of a few rows.

    XGBoost's own predictor costs a fixed 0.4-1 ms a call, whatever the trees (measured on
    the 2-core machine under load, ``inplace_predict`` of one dense row, one thread, 1 to 150
    rounds): for one row that is most of a request. Here every tree is laid out as a complete
    binary tree of the booster's depth (a leaf above the last level is carried down its left
    edge), so all trees are walked at once, one numpy gather per level: a few dozen
    microseconds for a few hundred trees.

    A split sends a row right when its value is ``>=`` the split's (float32, as XGBoost
    compares), and a missing value (NaN) the split's default way: each row is looked up in
    ``[x with NaN as -inf, x with NaN as +inf]``, by the feature's index in the first half
    for a split that defaults left and in the second for one that defaults right. The margin
    is the sum of each cohort's leaves plus the booster's intercept, which is read back from
    XGBoost itself (its margin on a row of NaNs, less the leaves that row reaches), so the
    probabilities are XGBoost's (``tests/test_dense.py`` compares them).
    """

    def __init__(self, booster: Any, n_features: int, n_classes: int) -> None:
        learner = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]
        model = learner["gradient_booster"]["model"]
        trees, groups = model["trees"], [int(g) for g in model["tree_info"]]
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        depth = max((_tree_depth(t) for t in trees), default=0)
        self.depth = depth
        n = len(trees)
        self.feature = [np.zeros((n, 1 << lv), dtype=np.intp) for lv in range(depth)]
        self.threshold = [np.full((n, 1 << lv), np.inf, dtype=np.float32) for lv in range(depth)]
        self.leaf = np.zeros((n, 1 << depth), dtype=np.float32)
        for i, t in enumerate(trees):
            self._lay_out(i, t)
        # flat indices: tree i's nodes of level lv start at i * 2**lv
        self.feature = [f.ravel() for f in self.feature]
        self.threshold = [t.ravel() for t in self.threshold]
        self._roots = np.arange(n, dtype=np.intp)  # each tree's root: its flat index at level 0
        self.leaf = self.leaf.ravel()
        self.group = np.array(groups, dtype=np.intp)
        rounds = np.tile(np.arange(self.n_classes), max(1, n // max(1, self.n_classes)))
        self._rounds = (
            n // self.n_classes
            if n and np.array_equal(self.group, rounds[:n]) and n % self.n_classes == 0
            else None
        )
        self._of = [np.flatnonzero(self.group == c) for c in range(self.n_classes)]
        self._one_row: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str] | None = None
        if 0 < depth <= TABLE_DEPTH:
            # one row: every split of every tree compared at once, each tree's answers packed
            # into one integer (its splits padded to whole bytes with splits no value passes:
            # x >= NaN is false), and that integer's leaf read from a table, the same for every
            # tree: all are laid out as complete trees of this depth
            slots = 8 * -(-((1 << depth) - 1) // 8)  # splits per tree, in heap order, padded
            pad = slots - ((1 << depth) - 1)
            heap = lambda levels, fill: np.concatenate(  # noqa: E731
                [a.reshape(n, -1) for a in levels] + [np.full((n, pad), fill, dtype=levels[0].dtype)], axis=1
            )
            self._one_row = (
                heap(self.feature, 0).ravel().astype(np.int32),  # half the bytes to read per row
                heap(self.threshold, np.nan).ravel(),
                _leaf_table(depth),
                np.arange(n, dtype=np.intp) << depth,  # each tree's first leaf in self.leaf
                "u1" if slots == 8 else "<u2",
            )
        self.bias = np.zeros(self.n_classes, dtype=np.float32)
        nan = np.full((1, self.n_features), np.nan, dtype=np.float32)
        margin = np.asarray(booster.inplace_predict(nan, predict_type="margin"), dtype=np.float32)
        # the intercept: XGBoost's margin on a row of NaNs, less the leaves that row reaches; the
        # model's base_score where it says the same (to float32 rounding), as it is exact
        measured = margin.reshape(1, self.n_classes)[0] - self.margin(nan)[0]
        stated = np.atleast_1d(
            np.array(json.loads(str(learner["learner_model_param"]["base_score"])), dtype=np.float32)
        )
        stated = np.broadcast_to(stated, measured.shape) if stated.size in (1, measured.size) else measured
        self.bias = (stated if np.allclose(stated, measured, atol=1e-5) else measured).astype(np.float32)

    def _lay_out(self, i: int, t: Mapping[str, Any]) -> None:
        left, right = t["left_children"], t["right_children"]
        feat, cond, dleft = t["split_indices"], t["split_conditions"], t["default_left"]
        stack = [(0, 0, 0)]  # (node, level, position within the level)
        while stack:
            node, lv, pos = stack.pop()
            if left[node] == -1:  # a leaf: carried down its left edge to the last level
                self.leaf[i, pos << (self.depth - lv)] = float(cond[node])
                continue
            f = int(feat[node])
            self.feature[lv][i, pos] = f if dleft[node] else f + self.n_features
            self.threshold[lv][i, pos] = np.float32(cond[node])
            stack.append((left[node], lv + 1, 2 * pos))
            stack.append((right[node], lv + 1, 2 * pos + 1))

    def margin(self, x: np.ndarray) -> np.ndarray:
        """The booster's margin (rows x cohorts) of the float32 rows ``x``.

        A node's flat index at level ``lv`` is ``tree * 2**lv + position``, so its child's is
        ``2 * index + (0 left, 1 right)``: one gather of the split's feature, one of its
        threshold and one of the row's value per level, for every tree at once."""
        x = np.asarray(x, dtype=np.float32)
        n, m = x.shape
        # NaN as -inf (left of every split) and as +inf (right of every split): fmax/fmin skip NaN
        lookup = np.concatenate([np.fmax(x, -np.inf), np.fmin(x, np.inf)], axis=1)
        if n == 1 and self._one_row is not None:
            feature, threshold, table, first, code = self._one_row
            right = lookup[0][feature] >= threshold
            # a tree's answers as one integer: split i is bit i (little-endian bytes)
            codes = np.packbits(right, bitorder="little").view(code)
            leaves = self.leaf[first + table[codes]][None, :]
            if self._rounds is not None:  # as below; numpy's reduction over the outer axis runs in order
                terms = np.concatenate([self.bias, leaves[0]]).reshape(-1, self.n_classes)
                return np.add.reduce(terms, axis=0, dtype=np.float32)[None, :]
        elif n == 1:
            lookup, node = lookup[0], self._roots
            for feature, threshold in zip(self.feature, self.threshold, strict=True):
                go_right = lookup[feature[node]] >= threshold[node]
                node = node + node + go_right
            leaves = self.leaf[node][None, :]
        else:
            node = np.broadcast_to(self._roots, (n, len(self._roots)))
            offset = (np.arange(n) * m * 2)[:, None]  # each row's values in the flattened lookup
            flat = lookup.ravel()
            for feature, threshold in zip(self.feature, self.threshold, strict=True):
                go_right = flat[feature[node] + offset] >= threshold[node]
                node = node + node + go_right
            leaves = self.leaf[node]
        # as XGBoost adds them: in float32, from the intercept, one tree after the other
        if self._rounds is not None:  # trees in rounds of one per cohort: one cumulative sum
            terms = np.concatenate(
                [
                    np.broadcast_to(self.bias, (n, self.n_classes))[:, None, :],
                    leaves.reshape(n, -1, self.n_classes),
                ],
                axis=1,
            )
            return np.cumsum(terms, axis=1, dtype=np.float32)[:, -1, :]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        for c, trees in enumerate(self._of):
            terms = np.concatenate(
                [np.full((n, 1), self.bias[c], dtype=np.float32), leaves[:, trees]], axis=1
            )
            out[:, c] = np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]
        return out

    def proba(self, x: np.ndarray) -> np.ndarray:
        """XGBoost's ``multi:softprob`` output of the rows ``x`` (its float32 softmax)."""
        return softprob(self.margin(x))


def softprob(z: np.ndarray) -> np.ndarray:
    """XGBoost's softmax of float32 margins (rows x cohorts), as float64: expf (correctly
    rounded: exp in double, rounded once to float32), the sum in double, each value divided by
    the sum as a float (0.9993 of 16,000 values equal to XGBoost's to the bit, the rest 1 ulp
    apart). One row (the predictor's call) in plain Python, with the same bits."""
    if z.shape[0] == 1:
        return np.array([softprob_row(z[0].tolist())])
    e = np.exp((z - z.max(axis=1, keepdims=True)).astype(np.float64)).astype(np.float32)
    total = np.cumsum(e.astype(np.float64), axis=1)[:, -1:].astype(np.float32)
    return (e / total).astype(np.float64)


def softprob_row(z: Sequence[float]) -> list[float]:
    """:func:`softprob` of one row of float32 margins, as Python floats, in one numpy call
    instead of a dozen: the same steps. A float32 difference or quotient is the double one
    rounded once to float32 (a double has more than twice float32's digits, so rounding twice
    gives what rounding once does), and ``array("f")`` rounds to nearest."""
    if any(v != v for v in z):
        return [math.nan] * len(z)
    top = max(z)
    d = array("f", [v - top for v in z]).tolist()  # the float32 differences, as doubles
    e = array("f", np.exp(d).tolist())  # exp in double, rounded once to float32
    total = 0.0
    for v in e:  # the sum in double, in order, as the cumulative sum
        total += v
    t32 = array("f", [total])[0]
    return array("f", [v / t32 for v in e]).tolist()


TABLE_DEPTH = 4  # up to this depth one row's trees are walked by a table of 2**(2**depth - 1) leaves


def _leaf_table(depth: int) -> np.ndarray:
    """The leaf (0 .. 2**depth - 1) a complete tree of ``depth`` reaches for each packing of its
    splits' answers: bit i set when the row goes right at split i (heap order, the root 0 and
    split i's children 2i + 1 and 2i + 2)."""
    codes = np.arange(1 << ((1 << depth) - 1), dtype=np.int64)
    node = np.zeros_like(codes)
    for _ in range(depth):
        node = 2 * node + 1 + ((codes >> node) & 1)
    return (node - ((1 << depth) - 1)).astype(np.uint8)  # 32 KiB at depth 4: it stays in cache


def _tree_depth(t: Mapping[str, Any]) -> int:
    left, right = t["left_children"], t["right_children"]
    depth, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        if left[node] == -1:
            depth = max(depth, d)
        else:
            stack += [(left[node], d + 1), (right[node], d + 1)]
    return depth


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class TrainedCandidate:
    """A fitted model of one candidate config; ``predict_proba`` columns follow ``classes``.

    An XGBoost candidate reads its :class:`DenseInput` (``dense``): per-field linear scores
    and structured fields. A booster saved without one (before the dense input) reads the
    TF-IDF matrix itself, as it was trained."""

    config: CandidateConfig
    classes: list[str]
    model: Any  # xgboost.Booster, or {"coef": ndarray (k x d), "intercept": ndarray (k)}
    info: dict[str, Any] = field(default_factory=dict)
    dense: DenseInput | None = None
    _coef_t: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _one_thread: Any = field(default=None, init=False, repr=False, compare=False)
    _fast: FastTrees | None = field(default=None, init=False, repr=False, compare=False)

    def predict_proba(
        self, X: sp.spmatrix, rows: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None
    ) -> np.ndarray:
        """Probabilities of the rows of ``X`` (the vectorizer's matrix); ``rows`` are the same
        rows' fields (texts and structured), which an XGBoost candidate's dense input reads
        (None: every structured field missing)."""
        if self.config.kind == "xgboost" and self.dense is not None:
            D = self.dense.transform(X if sp.isspmatrix_csr(X) else sp.csr_matrix(X), rows)
            if D.shape[0] <= SMALL_BATCH:
                return self.fast_trees().proba(D)
            p = self.model.inplace_predict(D)
            return np.asarray(p, dtype=np.float64).reshape(D.shape[0], len(self.classes))
        if self.config.kind == "xgboost":
            # inplace_predict reads the CSR directly: no DMatrix per call (much cheaper for small batches)
            X32 = X if X.dtype == np.float32 and sp.isspmatrix_csr(X) else sp.csr_matrix(X, dtype=np.float32)
            p = self._booster(X.shape[0]).inplace_predict(X32)
            return np.asarray(p, dtype=np.float64).reshape(X.shape[0], len(self.classes))
        z = self._linear_scores(sp.csr_matrix(X) if not sp.isspmatrix_csr(X) else X)
        z -= np.max(z, axis=1, keepdims=True)
        e = np.exp(z, out=z)
        return e / e.sum(axis=1, keepdims=True)

    def fast_trees(self) -> FastTrees:
        """The booster as :class:`FastTrees` (built once)."""
        if self._fast is None:
            assert self.dense is not None
            self._fast = FastTrees(self.model, len(self.dense.columns), len(self.classes))
        return self._fast

    def _booster(self, rows: int) -> Any:
        """The booster to predict ``rows`` rows of a TF-IDF input with: up to
        :data:`SMALL_BATCH` rows, a copy that runs on one thread. XGBoost hands each thread
        blocks of 64 rows, so a smaller batch gains nothing from more threads, while starting
        them costs on every call; on a busy machine (other processes, or the server's own event
        loop, on the same cores) a one-row prediction on all cores was measured 40x slower than
        on one (35 ms against 0.8 ms, a 600-tree booster on 2 cores under a load average of 15)."""
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
            if self.dense is not None:
                files += self.dense.save(folder)
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
    """Load a saved candidate (XGBoost UBJ, with its dense input's JSON + npz, or linear npz;
    no pickle)."""
    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    config = CandidateConfig.from_dict(meta["config"])
    dense = None
    if config.kind == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray((folder / "model.ubj").read_bytes()))
        booster.set_param({"device": "cpu", "nthread": 0})
        model: Any = booster
        if (folder / "dense.json").is_file():
            dense = DenseInput.load(folder)
    else:
        with np.load(folder / "linear.npz", allow_pickle=False) as z:
            model = {"coef": np.asarray(z["coef"]), "intercept": np.asarray(z["intercept"])}
    return TrainedCandidate(config, list(meta["classes"]), model, meta.get("info", {}), dense)


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
    rows: pd.DataFrame | None = None,
    rows_val: pd.DataFrame | None = None,
    layout: Mapping[str, Sequence[int]] | None = None,
    X_alone: sp.spmatrix | None = None,
    copies: bool = False,
) -> TrainedCandidate:
    """Train one candidate. Labels are cohort names; ``classes`` fixes the column order.

    XGBoost early-stops on ``X_val``; with ``rounds`` (a refit on every row, where no
    held-out rows are left) it trains exactly that many boosting rounds and needs no
    validation rows.

    With ``rows`` (the training rows' fields, with ``_order``: their place in time) and
    ``layout`` (each text field's columns), an XGBoost candidate trains on its dense input
    (:meth:`DenseInput.fit`: time-ordered out-of-fold scores for the training rows), and
    ``X_train`` must hold the training rows alone; with ``copies`` (field dropout) and
    ``X_alone`` (the same rows with the responsibility alone), the text scores and the trees
    train on the rows and those copies. Without ``rows`` it trains on the TF-IDF matrix."""
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    params = _typed(config.params)
    weighted = params.pop("class_weight", "balanced") == "balanced"
    start = time.perf_counter()
    info: dict[str, Any] = {"train_rows": int(X_train.shape[0]), "features": int(X_train.shape[1])}
    dense = None
    if config.kind == "xgboost":
        folds = int(params.pop("folds", 4))
        linear_c = float(params.pop("linear_C", 1.0))
        scores = params.pop("scores", None)
        if rows is not None and layout is not None and params.pop("input", "dense") == "dense":
            dense, D, D_alone = DenseInput.fit(
                config.task,
                classes,
                sp.csr_matrix(X_train),
                rows,
                list(y_train),
                layout,
                X_alone=X_alone if copies else None,
                order=rows["_order"].to_numpy() if "_order" in rows else None,
                scores=tuple(scores) if scores else DEFAULT_SCORES,
                folds=folds,
                C=linear_c,
                seed=seed,
            )
            y_train = list(y_train)
            if (
                D_alone is not None
            ):  # field dropout: the rows again, as a caller of the responsibility alone sends them
                D, y_train = np.vstack([D, D_alone]), y_train + y_train
            X_fit: Any = D
            X_es = None if X_val is None else dense.transform(sp.csr_matrix(X_val), rows_val)
            info.update(features=len(dense.columns), train_rows=int(D.shape[0]), input="dense", folds=folds)
            info["dense_seconds"] = round(time.perf_counter() - start, 3)
        else:
            params.pop("input", None)
            X_fit, X_es = X_train, X_val
            info["input"] = "tfidf"
        ytr = np.array([idx[v] for v in y_train])
        booster, best, n_rounds, dev = _train_booster(
            params, X_fit, ytr, X_es, y_val, idx, len(classes), weighted, rounds, device, seed
        )
        info.update(device=dev, best_iteration=best, rounds=n_rounds)
        model: Any = booster
    else:
        from sklearn.linear_model import LogisticRegression

        ytr = np.array([idx[v] for v in y_train])
        clf = LogisticRegression(
            C=float(params.get("C", 1.0)),
            max_iter=int(params.get("max_iter", 300)),
            class_weight="balanced" if weighted else None,
            random_state=seed,
        )
        with one_blas_thread():  # see one_blas_thread: the spinning BLAS threads cost 5-10x on a busy machine
            clf.fit(X_train, ytr)
        coef = np.zeros((len(classes), X_train.shape[1]))
        intercept = np.full(len(classes), -30.0)  # classes never seen in training get ~0 probability
        spread_fit(clf, coef, intercept)
        model = {"coef": coef, "intercept": intercept}
        info.update(device="cpu")
    info["train_seconds"] = round(time.perf_counter() - start, 3)
    log.info("trained %s (%s) in %.1fs", config.name, config.kind, info["train_seconds"])
    return TrainedCandidate(config, classes, model, info, dense)


ROWS_PER_THREAD = 50_000


def booster_threads(rows: int) -> int:
    """XGBoost's CPU threads for ``rows`` training rows: one per :data:`ROWS_PER_THREAD` rows, at
    most the cores this process may use. On a small input the threads only wait for each other:
    the dense input of the shared dump (13,000-18,000 rows, 25-27 columns) trained 1.8-2.5x faster
    on one thread than on two (2-core machine, otherwise idle). A candidate's ``nthread``
    parameter overrides it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, rows // ROWS_PER_THREAD))


def _train_booster(
    params: dict[str, Any],
    X: Any,
    y: np.ndarray,
    X_val: Any,
    y_val: Sequence[str] | None,
    idx: Mapping[str, int],
    k: int,
    weighted: bool,
    rounds: int | None,
    device: str,
    seed: int,
) -> tuple[Any, int, int, str]:
    """(booster, best iteration, rounds asked, device) of XGBoost ``hist`` on ``X``."""
    import xgboost as xgb

    dev = resolve_device(params.pop("device", device))
    n_rounds = int(params.pop("n_estimators", 300))
    stop = int(params.pop("early_stopping_rounds", 25))
    booster_params = {
        "objective": "multi:softprob",
        "num_class": k,
        "tree_method": "hist",
        "device": dev,
        "eval_metric": "mlogloss",
        "seed": seed,
        "nthread": booster_threads(X.shape[0]),
        **{("eta" if key == "learning_rate" else key): v for key, v in params.items()},
    }
    dtrain = xgb.DMatrix(X, label=y, weight=balanced_weights(y, k) if weighted else None)
    if rounds is None and (X_val is None or y_val is None):
        raise ValueError("an XGBoost candidate needs validation rows to early-stop on, or fixed rounds")
    if rounds is not None:  # a refit: the held-out fit's number of rounds, no early stopping
        booster = xgb.train(booster_params, dtrain, num_boost_round=int(rounds), verbose_eval=False)
        best, n_rounds = int(rounds) - 1, int(rounds)
    else:
        dval = xgb.DMatrix(X_val, label=np.array([idx[v] for v in y_val or []]))
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
    return booster, best, n_rounds, dev


INT_PARAMS = frozenset(
    {
        "max_depth",
        "n_estimators",
        "early_stopping_rounds",
        "max_iter",
        "max_bin",
        "num_parallel_tree",
        "folds",
    }
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
        part: classification_metrics(
            fs.y[part], cand.predict_proba(fs.X[part], fs.part_rows(part)), fs.classes
        )
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


def dense_input(config: CandidateConfig) -> bool:
    """Whether an XGBoost candidate reads the dense input (``params.input``: ``dense``, the
    default) or the TF-IDF matrix itself (``tfidf``: the trees of earlier versions, slow on
    the real dump and no better there; kept for comparisons)."""
    value = config.params.get("input", "dense")
    if value not in ("dense", "tfidf"):
        raise ValueError(f"candidate {config.name}: input must be dense or tfidf, got {value!r}")
    return bool(value == "dense")


def fit_on(fs: FeatureSet, config: CandidateConfig, *, device: str = "auto") -> TrainedCandidate:
    """Train ``config`` on ``fs``: its training rows (with the field-dropout copies unless the
    candidate opts out), early-stopped on validation. An XGBoost candidate trains on its dense
    input when ``fs`` has the rows' fields (features built before them: on the TF-IDF matrix)."""
    if config.kind == "xgboost" and fs.rows is not None and fs.layout and dense_input(config):
        n = fs.train_rows if fs.train_rows is not None else fs.X["train"].shape[0]
        return fit_candidate(
            config,
            sp.csr_matrix(fs.X["train"][:n]),
            fs.y["train"][:n],
            fs.X["val"],
            fs.y["val"],
            fs.classes,
            device=device,
            rows=fs.rows["train"],
            rows_val=fs.rows["val"],
            layout=fs.layout,
            X_alone=None if fs.train_rows is None else sp.csr_matrix(fs.X["train"][n:]),
            copies=config.field_dropout and fs.train_rows is not None,
        )
    X_train, y_train = fs.training(config.field_dropout)
    return fit_candidate(config, X_train, y_train, fs.X["val"], fs.y["val"], fs.classes, device=device)
