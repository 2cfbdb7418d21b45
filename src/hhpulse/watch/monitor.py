"""Watch the served model: volume, cohort mix, input drift and live demand accuracy.

``hhpulse monitor`` and the pipeline's ``monitor`` step read the served prediction log
(:mod:`hhpulse.watch.served`) twice: the records **since the last run** (the pipeline's step
keeps its watermark in ``monitor/state.json``) and **in total**. A look changes nothing; only
the step (or ``hhpulse monitor --advance``) saves its report and moves the watermark. For
each window, against the champion (cohorts in the labels' order; n/a for an empty window):

* **volume**: records, requests, records with a vacancy id, model versions, first and last time;
* **cohort mix**: per task, the served mix (the mean of the served probabilities, and the
  share of each predicted cohort) against the champion's training mix (its ``metrics.json``
  cohort counts of the train split), with the PSI between the mean probabilities and the
  training mix;
* **input drift**: the PSI of the responsibility's length in characters (bins
  :data:`LENGTH_EDGES`) against the champion's training rows, and the share of the
  responsibility's tokens (:func:`hhpulse.model.text.analyze` unigrams, as the predictor's
  ``hhpulse_input_known_term_share`` counts them) that the champion's vectorizer does not
  know, served against training;
* **live demand accuracy**: the served predictions whose vacancy id has since resolved in
  the history (:func:`hhpulse.model.labels.resolve_demand`: closed, or open for 20+ days), scored
  against those labels (ROC AUC OvO, accuracy, counts, the served date range), each vacancy
  once, by its first served prediction. A demand prediction made today settles two or
  three weeks later: this closes the loop. The headline AUC is **version-stratified** (each
  model version scored on the rows it served, the mean weighted by rows); the pooled figure,
  every version's rows ranked together, is kept as ``auc_pooled``; ``by_version`` and
  ``by_week`` (per week of serving) give the parts. The live flag compares the champion's own
  live AUC with its own held-out one.

The training rows of the reference are the history rows whose ids are in the champion's
``training_ids.npz`` (all history rows for a bundle without one, said in ``reference.rows_from``).

:class:`Thresholds` flag a drift (defaults documented there, each an option of
``hhpulse monitor``); a window with fewer than ``min_records`` records is not judged. The
report goes to ``monitor/reports/<until>.json`` and its flags into the run summary.

The replay scores the same live accuracy day by day: :mod:`hhpulse.flows.replay_live`.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hhpulse.config import DEFAULT_SETTLE_SECONDS, DEMAND_COHORTS, TASKS, LabelConfig, Thresholds
from hhpulse.data.store import KeyNotFound, Store
from hhpulse.watch.served import format_time, parse_time, read_served
from hhpulse.words import plural

if TYPE_CHECKING:
    from hhpulse.model.bundle import ModelBundle
    from hhpulse.model.gate import ServedOutcomes

log = logging.getLogger(__name__)

STATE_KEY = "monitor/state.json"
REPORTS_PREFIX = "monitor/reports/"
# responsibility length bins, in characters: [0,1) is the empty text; the last bin is open.
# hh.ru search snippets run 100-220 characters (the median is ~160), full texts far longer
LENGTH_EDGES = (0, 1, 50, 100, 125, 150, 175, 200, 250, 400, 800)
REFERENCE_SAMPLE = 5000  # training rows tokenized for the reference unseen-term share


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index of two distributions (the pipeline's own, see evaluate.psi)."""
    from hhpulse.model.evaluate import psi as _psi

    return _psi(expected, actual, eps)


def length_shares(lengths: Iterable[int]) -> list[float]:
    """Shares of lengths in each :data:`LENGTH_EDGES` bin (the last bin is open-ended)."""
    arr = np.asarray(list(lengths), dtype=float)
    if not len(arr):
        return [0.0] * len(LENGTH_EDGES)
    idx = np.searchsorted(np.asarray(LENGTH_EDGES, dtype=float), arr, side="right") - 1
    counts = np.bincount(idx, minlength=len(LENGTH_EDGES))
    return (counts / len(arr)).tolist()


def unseen_counts(texts: Iterable[str], vocabulary: set[str]) -> tuple[int, int]:
    """(tokens the vocabulary does not know, tokens) over ``texts`` (analyze's unigrams)."""
    from hhpulse.model.text import analyze

    unseen = total = 0
    for text in texts:
        tokens = analyze(text)
        total += len(tokens)
        unseen += sum(t not in vocabulary for t in tokens)
    return unseen, total


def _share(a: int, b: int) -> float | None:
    return a / b if b else None


# -- the reference: what the champion was trained on -------------------------------------------


@dataclass
class Reference:
    """The champion's side of every comparison."""

    version: str
    train_mix: dict[str, dict[str, float]]  # task -> cohort -> share of the train split
    test_auc: dict[str, float | None]  # task -> the winner's held-out test ROC AUC (OvO)
    length: list[float] | None  # training rows' responsibility length shares (LENGTH_EDGES)
    unseen_share: float | None  # training rows' share of tokens the vectorizer does not know
    rows: int  # training rows the length/unseen reference was measured on
    rows_from: str  # "training ids", "history (no training ids in the bundle)" or "none"
    vocabulary: set[str] = field(default_factory=set, repr=False)
    cohorts: dict[str, list[str]] = field(default_factory=dict)  # task -> the labels' cohort order

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("vocabulary")
        return d


def train_mix(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per task, the cohort shares of the train split, from a bundle's ``metrics.json``."""
    out = {}
    for t in TASKS:
        counts = (((metrics.get("boundaries") or {}).get(t) or {}).get("cohorts") or {}).get("train") or {}
        n = sum(counts.values())
        if n:
            out[t] = {str(c): v / n for c, v in counts.items()}
    return out


def held_out_auc(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Per task, the winner's held-out test ROC AUC (OvO) of the probabilities it serves (after
    calibration, as the served log's are): the figure the run summary gives."""
    from hhpulse.model.evaluate import served_auc

    calibration = metrics.get("calibration") or {}
    return {t: served_auc(metrics.get(t) or {}, calibration.get(t))[0] for t in TASKS}


def trained_mask(bundle: ModelBundle, ids: Sequence[Any]) -> np.ndarray | None:
    """Which ``ids`` the bundle's models were trained on (None for a bundle without training ids)."""
    from hhpulse.model.bundle import TRAINING_IDS

    path = Path(bundle.path) / TRAINING_IDS
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        trained = npz["ids"]
    # one hash per id, in order (id_hashes itself sorts and de-duplicates)
    hashes = np.array([_id_hash(i) for i in ids], dtype=np.uint64)
    return np.isin(hashes, trained)


def _id_hash(value: Any) -> int:
    """The 64-bit hash :func:`hhpulse.model.bundle.id_hashes` keeps for one id."""
    return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "big")


def reference_of(bundle: ModelBundle, history: pd.DataFrame | None) -> Reference:
    """The champion's training mix and held-out AUC, and its training rows' inputs (from history)."""
    metrics = bundle.metadata.get("metrics") or {}
    vocab = bundle.vectorizer.vocabulary("responsibility")
    ref = Reference(bundle.version, train_mix(metrics), held_out_auc(metrics), None, None, 0, "none", vocab)
    ref.cohorts = {t: list(bundle.cohorts.get(t) or []) for t in TASKS}
    if history is None or history.empty:
        return ref
    mask = trained_mask(bundle, history["id"].astype(str).tolist())
    if mask is None:
        rows, ref.rows_from = history, "history (no training ids in the bundle)"
    else:
        rows, ref.rows_from = history[mask], "training ids"
    if rows.empty:
        return ref
    texts = rows["responsibility"].fillna("").astype(str)
    ref.rows = len(texts)
    ref.length = length_shares(texts.str.len())
    sample = texts if len(texts) <= REFERENCE_SAMPLE else texts.sample(REFERENCE_SAMPLE, random_state=0)
    ref.unseen_share = _share(*unseen_counts(sample, vocab))
    return ref


# -- one window of served records ---------------------------------------------------------------


def volume(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    times = sorted(r["time"] for r in records)
    versions: dict[str, int] = {}
    for r in records:
        versions[r["model_version"]] = versions.get(r["model_version"], 0) + 1
    return {
        "records": len(records),
        "requests": len({r["request_id"] for r in records}),
        "with_id": sum(r["id"] is not None for r in records),
        "distinct_ids": len({r["id"] for r in records if r["id"] is not None}),
        "model_versions": dict(sorted(versions.items())),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
    }


def label_order(task: str, reference: Reference | None, seen: Iterable[str] = ()) -> list[str]:
    """A task's cohorts in the labels' order (``lt_100k`` .. ``ge_200k``; ``high``, ``medium``,
    ``low``): the champion's cohorts, else those of the training mix and ``seen`` in the default
    label configuration's order (any it does not know after them, as met)."""
    train = (reference.train_mix.get(task) if reference else None) or {}
    present = list(dict.fromkeys([*train, *seen]))
    if reference is not None and reference.cohorts.get(task):
        order = list(reference.cohorts[task])
        return order + [c for c in present if c not in order]
    config = LabelConfig()
    default = list(config.salary_cohorts if task == "salary" else config.demand_cohorts)
    return [c for c in default if c in present] + [c for c in present if c not in default]


def served_mix(records: Sequence[Mapping[str, Any]], reference: Reference | None) -> dict[str, Any]:
    """Per task: mean served probabilities, predicted-cohort shares, the training mix, their PSI,
    each in the labels' cohort order. A window without records has no served mix (empty, n/a)."""
    out: dict[str, Any] = {}
    for t in TASKS:
        train = (reference.train_mix.get(t) if reference else None) or {}
        cohorts = label_order(t, reference, (c for r in records for c in r[t]["probabilities"]))
        n = len(records)
        mean = {c: sum(r[t]["probabilities"].get(c, 0.0) for r in records) / n for c in cohorts} if n else {}
        predicted = {c: sum(r[t]["cohort"] == c for r in records) / n for c in cohorts} if n else {}
        value = psi([train.get(c, 0.0) for c in cohorts], [mean[c] for c in cohorts]) if train and n else None
        train = {c: train[c] for c in cohorts if c in train}
        out[t] = {"served_mean": mean, "served_predicted": predicted, "train": train, "psi": value}
    return out


def input_drift(records: Sequence[Mapping[str, Any]], reference: Reference | None) -> dict[str, Any]:
    texts = [r["instance"].get("responsibility") or "" for r in records]
    shares = length_shares(len(t) for t in texts)
    ref_len = reference.length if reference else None
    unseen, total = unseen_counts(texts, reference.vocabulary) if reference else (0, 0)
    share = _share(unseen, total) if reference else None
    return {
        "length_edges": list(LENGTH_EDGES),
        "length_shares": shares,
        "length_reference": ref_len,
        "length_psi": psi(ref_len, shares) if ref_len and texts else None,
        "mean_length": float(np.mean([len(t) for t in texts])) if texts else None,
        "unseen_tokens": unseen,
        "tokens": total,
        "unseen_share": share,
        "unseen_reference": reference.unseen_share if reference else None,
        "unseen_increase": (
            share - reference.unseen_share
            if reference and share is not None and reference.unseen_share is not None
            else None
        ),
    }


def resolved_demand(history: pd.DataFrame, config: LabelConfig | None = None) -> pd.DataFrame:
    """``id``, ``demand_cohort``, ``demand_source`` of every history row whose demand label is
    resolved (closed, or open past the low edge); never the age proxy."""
    from hhpulse.model.labels import resolve_demand

    if history.empty:
        return pd.DataFrame({"id": [], "demand_cohort": [], "demand_source": []})
    dem = resolve_demand(history, config or LabelConfig())
    ok = dem["demand_cohort"].notna()
    return pd.DataFrame(
        {
            "id": history.loc[ok, "id"].astype(str).to_numpy(),
            "demand_cohort": dem.loc[ok, "demand_cohort"].astype(str).to_numpy(),
            "demand_source": dem.loc[ok, "demand_source"].astype(str).to_numpy(),
        }
    )


def live_demand(
    records: Iterable[Mapping[str, Any]],
    resolved: pd.DataFrame,
    classes: Sequence[str] = DEMAND_COHORTS,
    *,
    oracle: Callable[[str], Sequence[float] | None] | None = None,
) -> dict[str, Any]:
    """The served demand predictions whose vacancy has a resolved label, scored against it.

    Each vacancy counts once, by its first served prediction (the earliest ``time``). The
    headline ``auc`` is **version-stratified**: the ROC AUC (OvO) of each model version on the
    rows it served, averaged with each version's row count as its weight
    (:func:`hhpulse.model.evaluate.stratified_auc`). ``auc_pooled`` ranks every row against every
    other, whatever version scored it: it mixes probability scales of different models and the
    label mix of different weeks, and reads lower than any one version does. ``by_version`` gives
    each version's own figure, ``by_week`` the stratified figure per week of serving (by the
    Monday of the served time, UTC). ``oracle`` (id -> the best achievable probabilities, e.g.
    the demo market's own; None when unknown) adds ``oracle_auc``, stratified the same way on
    the same rows, and ``ratio_to_oracle``.
    """
    from hhpulse.model.evaluate import classification_metrics, stratified_auc

    first = first_served(records)
    labels = dict(zip(resolved["id"], resolved["demand_cohort"], strict=True))
    sources = dict(zip(resolved["id"], resolved["demand_source"], strict=True))
    hits = sorted((r["time"], vid) for vid, r in first.items() if vid in labels)
    out: dict[str, Any] = {
        "served_ids": len(first),
        "n": len(hits),
        "unresolved": len(first) - len(hits),
        "first": hits[0][0] if hits else None,
        "last": hits[-1][0] if hits else None,
        "auc": None,
        "stratified_by": "model_version",
        "auc_pooled": None,
        "accuracy": None,
        "labels": {},
        "label_sources": {},
        "by_version": {},
        "by_week": [],
    }
    if not hits:
        return out
    classes = list(classes)
    y = [labels[vid] for _, vid in hits]
    proba = np.array(
        [[first[vid]["demand"]["probabilities"].get(c, 0.0) for c in classes] for _, vid in hits]
    )
    versions = [str(first[vid]["model_version"]) for _, vid in hits]
    times = [t for t, _ in hits]
    weeks = [_week_of(t) for t in times]
    m = classification_metrics(y, proba, classes)
    strat = stratified_auc(y, proba, classes, versions)
    out.update(
        auc=strat["value"],
        auc_rows=strat["rows"],
        auc_pooled=m["roc_auc_ovo"],
        accuracy=m["accuracy"],
        notes=m.get("notes", []),
    )
    if strat["rows_left_out"]:
        out["notes"].append(
            f"{strat['rows_left_out']} rows of versions whose AUC is undefined (one cohort) are left out of "
            "the version-stratified AUC"
        )
    out["labels"] = {c: y.count(c) for c in classes if c in y}
    srcs = [sources[vid] for _, vid in hits]
    out["label_sources"] = {s: srcs.count(s) for s in sorted(set(srcs))}
    for v, g in strat["groups"].items():
        sel = [i for i, x in enumerate(versions) if x == v]
        ys = [y[i] for i in sel]
        out["by_version"][v] = {
            "n": g["n"],
            "auc": g["value"],
            "accuracy": classification_metrics(ys, proba[sel], classes)["accuracy"],
            "first": times[sel[0]],
            "last": times[sel[-1]],
            "labels": {c: ys.count(c) for c in classes if c in ys},
        }
    for w in sorted(set(weeks)):
        sel = [i for i, x in enumerate(weeks) if x == w]
        ws = stratified_auc([y[i] for i in sel], proba[sel], classes, [versions[i] for i in sel])
        out["by_week"].append(
            {
                "week": w,
                "n": len(sel),
                "auc": ws["value"],
                "versions": {v: g["n"] for v, g in ws["groups"].items()},
            }
        )
    if oracle is not None:
        _with_oracle(out, oracle, [vid for _, vid in hits], y, proba, versions, weeks, classes)
    return out


def _week_of(time: str) -> str:
    """The Monday (UTC) of the week of a served record's time, as YYYY-MM-DD."""
    day = parse_time(time).astimezone(timezone.utc).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _with_oracle(
    out: dict[str, Any],
    oracle: Callable[[str], Sequence[float] | None],
    ids: Sequence[str],
    y: Sequence[str],
    proba: np.ndarray,
    versions: Sequence[str],
    weeks: Sequence[str],
    classes: Sequence[str],
) -> None:
    """The oracle's AUC on the same rows, stratified the same way (by version, and per week);
    rows the oracle does not know are left out of both sides of ``ratio_to_oracle``."""
    from hhpulse.model.evaluate import classification_metrics, stratified_auc

    known = [(i, oracle(v)) for i, v in enumerate(ids)]
    keep = [i for i, p in known if p is not None]
    if not keep:
        out["oracle_auc"] = None
        return
    op = np.array([known[i][1] for i in keep], dtype=np.float64)
    ys, vs = [y[i] for i in keep], [versions[i] for i in keep]
    strat = stratified_auc(ys, op, classes, vs)
    mine = stratified_auc(ys, proba[keep], classes, vs)
    out["oracle_auc"] = strat["value"]
    out["oracle_auc_pooled"] = classification_metrics(ys, op, classes)["roc_auc_ovo"]
    out["oracle_rows"] = len(keep)
    out["ratio_to_oracle"] = (
        mine["value"] / strat["value"] if mine["value"] is not None and strat["value"] else None
    )
    for v, g in strat["groups"].items():
        out["by_version"][v]["oracle_auc"] = g["value"]
    pos = {i: k for k, i in enumerate(keep)}
    for wk in out["by_week"]:
        sel = [pos[i] for i, x in enumerate(weeks) if x == wk["week"] and i in pos]
        if sel:
            wk["oracle_auc"] = stratified_auc([ys[i] for i in sel], op[sel], classes, [vs[i] for i in sel])[
                "value"
            ]


def first_served(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each vacancy id's first served record (the earliest ``time``): the one that is scored."""
    first: dict[str, Mapping[str, Any]] = {}
    for r in records:
        vid = r.get("id")
        if vid is not None and (vid not in first or r["time"] < first[vid]["time"]):
            first[vid] = r
    return first


def served_outcomes(
    records: Iterable[Mapping[str, Any]],
    resolved: pd.DataFrame,
    version: str,
    classes: Sequence[str] = DEMAND_COHORTS,
) -> ServedOutcomes:
    """The demand outcomes of what ``version`` served (its rows of :func:`live_demand`: each
    vacancy by its first served prediction, resolved since), for the gate's live evidence
    (:func:`hhpulse.model.gate.live_evidence`): the logged probabilities, labels and inputs."""
    from hhpulse.model.gate import ServedOutcomes, TaskPredictions

    labels = dict(zip(resolved["id"].astype(str), resolved["demand_cohort"].astype(str), strict=True))
    rows = sorted(
        (r["time"], vid, r)
        for vid, r in first_served(records).items()
        if r["model_version"] == version and vid in labels
    )
    classes = list(classes)
    proba = np.array(
        [[r["demand"]["probabilities"].get(c, 0.0) for c in classes] for _, _, r in rows], dtype=np.float64
    ).reshape(len(rows), len(classes))
    preds = TaskPredictions([vid for _, vid, _ in rows], [labels[vid] for _, vid, _ in rows], proba, classes)
    instances = [{k: v for k, v in r["instance"].items() if k != "id"} for _, _, r in rows]
    return ServedOutcomes(
        version,
        {"demand": preds},
        {"demand": instances},
        rows[0][0] if rows else None,
        rows[-1][0] if rows else None,
    )


def champion_kind(record: Mapping[str, Any], proxy_versions: set[str]) -> str:
    """What the champion behind a served record had learned demand from: ``proxy`` (the age
    proxy), ``missing_cohorts`` (resolved labels without every cohort yet) or ``full``."""
    if record["model_version"] in proxy_versions:
        return "proxy"
    if set(DEMAND_COHORTS) - set(record["demand"]["probabilities"]):
        return "missing_cohorts"
    return "full"


def live_by_champion(
    records: Sequence[Mapping[str, Any]], resolved: pd.DataFrame, proxy_versions: set[str]
) -> dict[str, Any]:
    """:func:`live_demand` apart for each kind of champion (:func:`champion_kind`)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(champion_kind(r, proxy_versions), []).append(r)
    out = {}
    for kind, recs in sorted(groups.items()):
        live = live_demand(recs, resolved)
        out[kind] = {k: live[k] for k in ("n", "auc", "accuracy", "first", "last", "labels")}
    return out


def offline_figures(store: Store, versions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each published version's offline demand figure at publication, from its bundle's
    ``metrics.json`` in the registry: the held-out test AUC, its interval, and why it comes from
    a young history (None when it does not); versions the registry lacks are left out."""
    from hhpulse.model.dataset import young_history
    from hhpulse.model.registry import PREFIX

    out = {}
    for v in versions:
        try:
            m = store.get_json(f"{PREFIX}/{v}/metrics.json")
        except KeyNotFound:
            continue
        out[v] = {
            "offline_auc": held_out_auc(m).get("demand"),
            "offline_interval": (m.get("test_intervals") or {}).get("demand"),
            "young_history": young_history(m.get("dataset") or {}, m.get("boundaries") or {}),
        }
    return out


def with_offline(live: dict[str, Any] | None, offline: Mapping[str, Mapping[str, Any]]) -> None:
    """Put each version's offline figure at publication beside its live one (``by_version``)."""
    for v, got in ((live or {}).get("by_version") or {}).items():
        if v in offline:
            got.update(offline[v])
            if got.get("auc") is not None and got.get("offline_auc") is not None:
                got["gap"] = got["auc"] - got["offline_auc"]


def window_report(
    records: Sequence[Mapping[str, Any]],
    reference: Reference | None,
    resolved: pd.DataFrame | None,
    thresholds: Thresholds,
    name: str,
) -> dict[str, Any]:
    """Every figure of one window of records, and the flags its figures raise."""
    rep: dict[str, Any] = {
        "volume": volume(records),
        "cohort_mix": served_mix(records, reference),
        "input": input_drift(records, reference),
        "live_demand": live_demand(records, resolved) if resolved is not None else None,
    }
    rep["flags"] = flags_of(rep, reference, thresholds, name)
    return rep


def _flag(window: str, name: str, value: float, limit: float, detail: str) -> dict[str, Any]:
    return {"window": window, "name": name, "value": round(value, 4), "threshold": limit, "detail": detail}


def flags_of(
    rep: Mapping[str, Any], reference: Reference | None, th: Thresholds, window: str
) -> list[dict[str, Any]]:
    """The drifts a window shows, by the thresholds; empty when it holds too few records."""
    flags = []
    if rep["volume"]["records"] >= th.min_records:
        for t, mix in rep["cohort_mix"].items():
            if mix["psi"] is not None and mix["psi"] >= th.cohort_psi:
                flags.append(
                    _flag(
                        window,
                        f"{t}_cohort_mix",
                        mix["psi"],
                        th.cohort_psi,
                        "PSI of the served mix vs training",
                    )
                )
        inp = rep["input"]
        if inp["length_psi"] is not None and inp["length_psi"] >= th.length_psi:
            flags.append(
                _flag(
                    window, "input_length", inp["length_psi"], th.length_psi, "PSI of the length vs training"
                )
            )
        if inp["unseen_increase"] is not None and inp["unseen_increase"] >= th.unseen_increase:
            flags.append(
                _flag(
                    window,
                    "unseen_terms",
                    inp["unseen_increase"],
                    th.unseen_increase,
                    f"unknown-token share {inp['unseen_share']:.3f} vs {inp['unseen_reference']:.3f} in training",
                )
            )
    # the champion's own live figure against its own held-out one: other versions' rows say
    # nothing about it (and pooled with them, nothing about any model)
    own = (
        ((rep.get("live_demand") or {}).get("by_version") or {}).get(reference.version) if reference else None
    )
    base = reference.test_auc.get("demand") if reference else None
    if own and own.get("auc") is not None and base is not None and own["n"] >= th.min_live:
        drop = base - own["auc"]
        if drop >= th.auc_drop:
            flags.append(
                _flag(
                    window,
                    "live_demand_auc",
                    drop,
                    th.auc_drop,
                    f"the champion's live AUC {own['auc']:.3f} on {own['n']} vs its held-out test {base:.3f}",
                )
            )
    return flags


# -- the store side: state, history, champion, the report ---------------------------------------


def load_monitor_history(store: Store) -> pd.DataFrame | None:
    """The vacancy history the live labels come from (None when the store has none yet): the
    folded history's open vacancies plus those settled within the training window
    (:data:`~hhpulse.data.history_store.DEFAULT_WINDOW_DAYS`), so the step's memory follows the
    window, not the store's age. A served prediction whose vacancy settled before the window
    is not scored."""
    from hhpulse.config import DEFAULT_WINDOW_DAYS
    from hhpulse.data.history_store import history_exists, read_history

    if not history_exists(store):
        return None
    try:
        return read_history(store, window_days=DEFAULT_WINDOW_DAYS)
    except KeyNotFound:
        return None


def read_state(store: Store) -> dict[str, Any]:
    try:
        return dict(store.get_json(STATE_KEY))
    except KeyNotFound:
        return {}


def advance_state(store: Store, until: str, report_key: str) -> dict[str, Any]:
    """Move the watermark forward (never back: of two runs at once, the later until wins).

    Uses the store's conditional read-modify-write (``update_json``) where the store offers it.
    """

    def fn(old: Mapping[str, Any] | None) -> dict[str, Any]:
        old = dict(old or {})
        if old.get("until") and parse_time(old["until"]) >= parse_time(until):
            return old
        return {"until": until, "report": report_key, "runs": int(old.get("runs", 0)) + 1}

    try:
        from hhpulse.data.store import update_json  # type: ignore[attr-defined]
    except ImportError:
        state = fn(read_state(store))
        store.put_json(STATE_KEY, state)
        return state
    return update_json(store, STATE_KEY, fn)  # type: ignore[no-any-return]


def run_monitor(
    store: Store,
    *,
    now: datetime | str | None = None,
    settle_seconds: float | None = None,
    thresholds: Thresholds | None = None,
    label_config: LabelConfig | None = None,
    bundle: ModelBundle | None = None,
    history: pd.DataFrame | None = None,
    save: bool = False,
) -> dict[str, Any]:
    """Monitor the served log since the last run and in total. Looking changes nothing; with
    ``save`` (the pipeline's monitor step, ``hhpulse monitor --advance``) the report goes to
    ``monitor/reports/`` and the watermark moves to the windows' end.

    The windows end at ``now - settle_seconds`` (``now`` defaults to the clock). ``settle_seconds``
    defaults to :data:`~hhpulse.config.DEFAULT_SETTLE_SECONDS` with ``save``, so that the
    watermark never passes a batch the sink has not flushed yet (the next run counts it rather
    than missing it), and to 0 without (a look sees everything written). ``bundle`` defaults to
    the champion, ``history`` to the store's.
    """
    th = thresholds or Thresholds()
    if settle_seconds is None:
        settle_seconds = DEFAULT_SETTLE_SECONDS if save else 0.0
    end = parse_time(now or datetime.now(timezone.utc)) - timedelta(seconds=settle_seconds)
    until = format_time(end)
    state = read_state(store)
    since = state.get("until")
    bad: list[str] = []
    records = list(read_served(store, until=end, errors="skip", bad=bad))
    if history is None:
        history = load_monitor_history(store)
    with tempfile.TemporaryDirectory(prefix="hhpulse-monitor-") as tmp:
        if bundle is None:
            from hhpulse.model.registry import load_champion

            bundle = load_champion(store, tmp)
        reference = reference_of(bundle, history) if bundle is not None else None
    resolved = resolved_demand(history, label_config) if history is not None else None
    recent = [r for r in records if since is None or parse_time(r["time"]) >= parse_time(since)]
    report: dict[str, Any] = {
        "until": until,
        "since": since,
        "champion": reference.to_dict() if reference else None,
        "thresholds": th.to_dict(),
        "bad_batches": bad,
        "history": None if history is None else len(history),
        "since_last_run": window_report(recent, reference, resolved, th, "since_last_run"),
        "total": window_report(records, reference, resolved, th, "total"),
    }
    live = report["total"]["live_demand"]
    if live and live["by_version"]:
        with_offline(live, offline_figures(store, live["by_version"]))
    report["flags"] = report["since_last_run"]["flags"] + report["total"]["flags"]
    report["drift"] = bool(report["flags"])
    if save:
        key = f"{REPORTS_PREFIX}{until.replace(':', '')}.json"
        store.put_json(key, report)
        advance_state(store, until, key)
        report["key"] = key
    return report


def latest_report(store: Store) -> dict[str, Any] | None:
    """The newest saved monitor report, or None."""
    keys = sorted(store.list(REPORTS_PREFIX))
    return dict(store.get_json(keys[-1])) if keys else None


# -- output: Kubeflow metrics, the report section, the summary lines -----------------------------


def metrics_of(report: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers for the Kubeflow UI (``Metrics.log_metric``): ``<window>.<figure>``."""
    out: dict[str, float] = {}
    for w in ("since_last_run", "total"):
        rep = report[w]
        vol = rep["volume"]
        out[f"{w}.records"] = vol["records"]
        out[f"{w}.requests"] = vol["requests"]
        out[f"{w}.with_id"] = vol["with_id"]
        for t, mix in rep["cohort_mix"].items():
            if mix["psi"] is not None:
                out[f"{w}.{t}.cohort_psi"] = mix["psi"]
        inp = rep["input"]
        for k in ("length_psi", "unseen_share", "unseen_increase"):
            if inp[k] is not None:
                out[f"{w}.input.{k}"] = inp[k]
        live = rep.get("live_demand") or {}
        if live:
            out[f"{w}.live_demand.n"] = live["n"]
            # auc: version-stratified (the headline); auc_pooled: every version's rows ranked together
            for k in ("auc", "auc_pooled", "accuracy"):
                if live.get(k) is not None:
                    out[f"{w}.live_demand.{k}"] = live[k]
            champ = (report.get("champion") or {}).get("version")
            own = (live.get("by_version") or {}).get(champ) if champ else None
            if own and own.get("auc") is not None:
                out[f"{w}.live_demand.champion_auc"] = own["auc"]
            weeks = [wk for wk in live.get("by_week") or [] if wk.get("auc") is not None]
            if weeks:
                out[f"{w}.live_demand.last_week_auc"] = weeks[-1]["auc"]
    out["flags"] = len(report["flags"])
    return {k: round(float(v), 4) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _mix_text(m: Mapping[str, float]) -> str:
    return ", ".join(f"{c} {v:.2f}" for c, v in m.items()) or "n/a"


def monitor_html(report: Mapping[str, Any] | None) -> str:
    """The report's "Served traffic" section (an HTML fragment), for the comparison report."""
    out = ["<h2>Served traffic (monitor)</h2>"]
    if not report:
        return out[0] + "<p>No monitor report yet.</p>"
    champ = report.get("champion") or {}
    out.append(
        f"<p>Served log up to {_f(report['until'])} (last run: {_f(report.get('since') or 'none')}); "
        f"champion {_f(champ.get('version') or 'none')}, reference: {_f(champ.get('rows'))} training rows "
        f"({_f(champ.get('rows_from'))}).</p>"
    )
    if report["flags"]:
        out.append("<p style='color:#b00'><b>Drift flagged:</b></p><ul>")
        out += [
            f"<li>{_f(f['window'])}: {_f(f['name'])} = {_f(f['value'])} (threshold {_f(f['threshold'])}): "
            f"{_f(f['detail'])}</li>"
            for f in report["flags"]
        ]
        out.append("</ul>")
    else:
        out.append("<p>No drift flagged.</p>")
    if report.get("bad_batches"):
        out.append(f"<p style='color:#b00'>{len(report['bad_batches'])} unreadable batch(es) left out.</p>")
    out.append(
        "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>figure</th>"
        "<th>since the last run</th><th>in total</th></tr>"
    )

    def row(name: str, get: Callable[[Mapping[str, Any]], Any]) -> None:
        cells = "".join(f"<td>{_f(get(report[w]))}</td>" for w in ("since_last_run", "total"))
        out.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")

    row("records (requests)", lambda r: f"{r['volume']['records']} ({r['volume']['requests']})")
    row("records with a vacancy id", lambda r: r["volume"]["with_id"])
    row("first .. last", lambda r: f"{r['volume']['first'] or '-'} .. {r['volume']['last'] or '-'}")
    for t in TASKS:
        row(f"{t} served mix (mean prob.)", lambda r, t=t: _mix_text(r["cohort_mix"][t]["served_mean"]))
        row(f"{t} training mix", lambda r, t=t: _mix_text(r["cohort_mix"][t]["train"]))
        row(f"{t} mix PSI", lambda r, t=t: r["cohort_mix"][t]["psi"])
    row("length PSI", lambda r: r["input"]["length_psi"])
    row(
        "unknown-token share (training)",
        lambda r: f"{_f(r['input']['unseen_share'])} ({_f(r['input']['unseen_reference'])})",
    )
    row(
        "live demand: resolved / served ids",
        lambda r: f"{(r['live_demand'] or {}).get('n', 0)} / {(r['live_demand'] or {}).get('served_ids', 0)}",
    )
    row("live demand ROC AUC (OvO), version-stratified", lambda r: (r["live_demand"] or {}).get("auc"))
    row(
        "live demand ROC AUC (OvO), pooled over versions",
        lambda r: (r["live_demand"] or {}).get("auc_pooled"),
    )
    row("live demand accuracy", lambda r: (r["live_demand"] or {}).get("accuracy"))
    row(
        "live demand served",
        lambda r: (
            f"{(r['live_demand'] or {}).get('first') or '-'} .. {(r['live_demand'] or {}).get('last') or '-'}"
        ),
    )
    out.append("</table>")
    test_auc = (champ.get("test_auc") or {}).get("demand")
    out.append(
        f"<p>The champion's held-out demand test ROC AUC (OvO), after calibration: {_f(test_auc)}.</p>"
    )
    out += live_tables_html(report["total"].get("live_demand"))
    return "\n".join(out)


def live_tables_html(live: Mapping[str, Any] | None) -> list[str]:
    """The live demand figure per model version and per week of serving (HTML), under the
    headline: the version-stratified AUC is the n-weighted mean of the version rows."""
    if not live or not live.get("n"):
        return []
    out = [
        "<p>Live demand ROC AUC (OvO) per model version (each on the rows it served; the headline is "
        "their mean weighted by rows; the pooled figure ranks rows of different models against each "
        "other and reads lower than any one of them):</p>",
        "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>version</th>"
        "<th>resolved rows</th><th>ROC AUC</th><th>accuracy</th><th>served</th>"
        "<th>offline test AUC at publication</th></tr>",
    ]
    for v, m in (live.get("by_version") or {}).items():
        iv = m.get("offline_interval")
        ci = f" [{_f(iv['low'])}, {_f(iv['high'])}]" if iv else ""
        young = " <b>young history: not a forecast</b>" if m.get("young_history") else ""
        out.append(
            f"<tr><td>{_f(v)}</td><td>{_f(m['n'])}</td><td>{_f(m.get('auc'))}</td><td>{_f(m.get('accuracy'))}</td>"
            f"<td>{_f(m.get('first') or '-')} .. {_f(m.get('last') or '-')}</td>"
            f"<td>{_f(m.get('offline_auc'))}{ci}{young}</td></tr>"
        )
    out.append("</table>")
    weeks = live.get("by_week") or []
    if weeks:
        out += [
            "<p>Live demand ROC AUC (OvO) per week of serving (version-stratified within the week):</p>",
            "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>week of</th>"
            "<th>resolved rows</th><th>ROC AUC</th><th>versions (rows)</th></tr>",
        ]
        for wk in weeks:
            vs = ", ".join(f"{v} {n}" for v, n in wk["versions"].items())
            out.append(
                f"<tr><td>{_f(wk['week'])}</td><td>{_f(wk['n'])}</td><td>{_f(wk.get('auc'))}</td><td>{_f(vs)}</td></tr>"
            )
        out.append("</table>")
    return out


def summary_lines(report: Mapping[str, Any] | None) -> list[str]:
    """What the run summary prints about served traffic (a line per flag)."""
    if not report:
        return []
    tot, new = report["total"], report["since_last_run"]
    live = tot.get("live_demand") or {}
    flags = report["flags"]
    lines = [
        f"served:       {plural(new['volume']['records'], 'prediction')} since the last run, "
        f"{tot['volume']['records']} in total; live demand ROC AUC {_f(live.get('auc'))} (version-stratified) on "
        f"{live.get('n', 0)} resolved; " + (f"DRIFT flagged ({len(flags)}):" if flags else "no drift flagged")
    ]
    for f in flags:
        lines.append(f"  DRIFT {f['name']} ({f['window']}): {f['value']} >= {f['threshold']}: {f['detail']}")
    return lines


def dump(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, default=str)
