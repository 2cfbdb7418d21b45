"""Watch the served model: volume, cohort mix, input drift and live demand accuracy.

``hhpulse monitor`` and the pipeline's ``monitor`` step read the served prediction log
(:mod:`hhpulse.watch.served`) twice: the records **since the last run** (the monitor keeps its
watermark in ``monitor/state.json``) and **in total**. For each, against the champion:

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
  three weeks later: this closes the loop.

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

if TYPE_CHECKING:
    from hhpulse.model.bundle import ModelBundle

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
    out: dict[str, float | None] = {}
    for t in TASKS:
        doc = metrics.get(t) or {}
        win = doc.get("winner")
        test = ((doc.get("candidates") or {}).get(win) or {}).get("metrics", {}).get("test", {})
        out[t] = test.get("roc_auc_ovo")
    return out


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


def served_mix(records: Sequence[Mapping[str, Any]], reference: Reference | None) -> dict[str, Any]:
    """Per task: mean served probabilities, predicted-cohort shares, the training mix, their PSI."""
    out: dict[str, Any] = {}
    for t in TASKS:
        train = (reference.train_mix.get(t) if reference else None) or {}
        cohorts = list(train) or sorted({c for r in records for c in r[t]["probabilities"]})
        for r in records:
            cohorts += [c for c in r[t]["probabilities"] if c not in cohorts]
        n = len(records)
        mean = {
            c: (sum(r[t]["probabilities"].get(c, 0.0) for r in records) / n if n else 0.0) for c in cohorts
        }
        predicted = {c: (sum(r[t]["cohort"] == c for r in records) / n if n else 0.0) for c in cohorts}
        value = psi([train.get(c, 0.0) for c in cohorts], [mean[c] for c in cohorts]) if train and n else None
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
) -> dict[str, Any]:
    """The served demand predictions whose vacancy has a resolved label, scored against it.

    Each vacancy counts once, by its first served prediction (the earliest ``time``).
    """
    from hhpulse.model.evaluate import classification_metrics

    first: dict[str, Mapping[str, Any]] = {}
    for r in records:
        vid = r.get("id")
        if vid is None:
            continue
        if vid not in first or r["time"] < first[vid]["time"]:
            first[vid] = r
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
        "accuracy": None,
        "labels": {},
        "label_sources": {},
        "by_version": {},
    }
    if not hits:
        return out
    y = [labels[vid] for _, vid in hits]
    proba = np.array(
        [[first[vid]["demand"]["probabilities"].get(c, 0.0) for c in classes] for _, vid in hits]
    )
    m = classification_metrics(y, proba, list(classes))
    out.update(auc=m["roc_auc_ovo"], accuracy=m["accuracy"], notes=m.get("notes", []))
    out["labels"] = {c: y.count(c) for c in classes if c in y}
    srcs = [sources[vid] for _, vid in hits]
    out["label_sources"] = {s: srcs.count(s) for s in sorted(set(srcs))}
    versions = [first[vid]["model_version"] for _, vid in hits]
    for v in sorted(set(versions)):
        sel = [i for i, x in enumerate(versions) if x == v]
        ys = [y[i] for i in sel]
        mv = classification_metrics(ys, proba[sel], list(classes))
        out["by_version"][v] = {"n": len(sel), "auc": mv["roc_auc_ovo"], "accuracy": mv["accuracy"]}
    return out


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
    live = rep.get("live_demand") or {}
    base = reference.test_auc.get("demand") if reference else None
    if live.get("auc") is not None and base is not None and live["n"] >= th.min_live:
        drop = base - live["auc"]
        if drop >= th.auc_drop:
            flags.append(
                _flag(
                    window,
                    "live_demand_auc",
                    drop,
                    th.auc_drop,
                    f"live AUC {live['auc']:.3f} on {live['n']} vs held-out test {base:.3f}",
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
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    thresholds: Thresholds | None = None,
    label_config: LabelConfig | None = None,
    bundle: ModelBundle | None = None,
    history: pd.DataFrame | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Monitor the served log since the last run and in total; save the report and the watermark.

    The windows end at ``now - settle_seconds`` (``now`` defaults to the clock), so a batch the
    sink has not flushed yet is counted by the next run rather than missed. ``bundle`` defaults
    to the champion, ``history`` to the store's.
    """
    th = thresholds or Thresholds()
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
            for k in ("auc", "accuracy"):
                if live.get(k) is not None:
                    out[f"{w}.live_demand.{k}"] = live[k]
    out["flags"] = len(report["flags"])
    return {k: round(float(v), 4) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _mix_text(m: Mapping[str, float]) -> str:
    return ", ".join(f"{c} {v:.2f}" for c, v in m.items()) or "none"


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
    row("live demand ROC AUC (OvO)", lambda r: (r["live_demand"] or {}).get("auc"))
    row("live demand accuracy", lambda r: (r["live_demand"] or {}).get("accuracy"))
    row(
        "live demand served",
        lambda r: (
            f"{(r['live_demand'] or {}).get('first') or '-'} .. {(r['live_demand'] or {}).get('last') or '-'}"
        ),
    )
    out.append("</table>")
    test_auc = (champ.get("test_auc") or {}).get("demand")
    out.append(f"<p>The champion's held-out demand test ROC AUC (OvO): {_f(test_auc)}.</p>")
    return "\n".join(out)


def summary_lines(report: Mapping[str, Any] | None) -> list[str]:
    """What the run summary prints about served traffic (a line per flag)."""
    if not report:
        return []
    tot, new = report["total"], report["since_last_run"]
    live = tot.get("live_demand") or {}
    flags = report["flags"]
    lines = [
        f"served:       {new['volume']['records']} predictions since the last run, {tot['volume']['records']} in total;"
        f" live demand ROC AUC {_f(live.get('auc'))} on {live.get('n', 0)} resolved; "
        + (f"DRIFT flagged ({len(flags)}):" if flags else "no drift flagged")
    ]
    for f in flags:
        lines.append(f"  DRIFT {f['name']} ({f['window']}): {f['value']} >= {f['threshold']}: {f['detail']}")
    return lines


def dump(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, default=str)
