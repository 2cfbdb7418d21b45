"""The model bundle: one directory that the predictor, the pipeline and the CLI load.

Layout (see docs/ARCHITECTURE.md)::

    MANIFEST.json      sha256 of every other file; verified before anything is loaded
    bundle.json        format, model version, inputs, tasks, winners
    cohorts.json       {"salary": [...], "demand": [...]}
    label_config.json  label thresholds, tax factor, currency rates
    vectorizer/        vectorizer.json + idf.npz
    salary/, demand/   model.ubj (XGBoost) with dense.json + dense.npz (its dense input, see
                       hhpulse.model.features.DenseInput), or linear.npz; plus model.json and
                       calibration.json (the calibrator, see hhpulse.model.calibration)
    metrics.json       every candidate's validation and test metrics, and the winners
    profile.json       a small data profile for drift checks against later data
    model_card.md      data, class counts, label definitions, proxy flag, versions, commit

No pickle anywhere: XGBoost's UBJ format, npz with ``allow_pickle=False``, and JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hhpulse import __version__
from hhpulse.config import TASKS
from hhpulse.data.store import default_mode
from hhpulse.model.calibration import CalibrationError, Calibrator
from hhpulse.model.dataset import label_lines
from hhpulse.model.evaluate import bundle_caveats, dominant_prediction, served_auc, served_counts
from hhpulse.model.explain import explain
from hhpulse.model.features import TermStats, TextVectorizer, with_lengths
from hhpulse.model.inputs import STRUCTURED_NAMES, to_instance
from hhpulse.model.report import selection_text
from hhpulse.model.train import TrainedCandidate, load_candidate

FORMAT = "hhpulse-bundle/1"
MANIFEST = "MANIFEST.json"
TRAINING_IDS = "training_ids.npz"


class BundleError(RuntimeError):
    """The bundle is missing, incomplete, tampered with, or not a bundle."""


def id_hashes(ids: Iterable[Any]) -> np.ndarray:
    """Sorted unique 64-bit hashes (the first 8 bytes of sha256) of vacancy ids (each taken as a string)."""
    hashed = {
        int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in ids if i is not None
    }
    return np.array(sorted(hashed), dtype=np.uint64)


def write_training_ids(root: Path, ids: Iterable[Any] | Mapping[str, Iterable[Any]]) -> None:
    """``ids``: every id (``ids``), or per task (then ``ids`` is their union and ``ids_<task>``
    each task's own: the gate leaves out only the rows whose label that task's model saw)."""
    if isinstance(ids, Mapping):
        per_task = {f"ids_{t}": id_hashes(v) for t, v in ids.items()}
        union = np.unique(np.concatenate([*per_task.values(), np.array([], dtype=np.uint64)]))
        np.savez_compressed(root / TRAINING_IDS, ids=union.astype(np.uint64), **per_task)
    else:
        np.savez_compressed(root / TRAINING_IDS, ids=id_hashes(ids))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def write_manifest(root: Path, version: str) -> dict[str, Any]:
    manifest = {
        "format": FORMAT,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {rel: sha256_file(root / rel) for rel in _files(root)},
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def verify_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check MANIFEST.json against the files; raise :class:`BundleError` naming any problem."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle {root} does not exist or is not a directory")
    mf = root / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        expected: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{mf} is unreadable: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mf}: unknown bundle format {manifest.get('format')!r}, expected {FORMAT}")
    present = set(_files(root))
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing:
        raise BundleError(f"model bundle {root}: missing file(s) listed in {MANIFEST}: {', '.join(missing)}")
    if extra:
        raise BundleError(f"model bundle {root}: unexpected file(s) not in {MANIFEST}: {', '.join(extra)}")
    for rel, digest in expected.items():
        if sha256_file(root / rel) != digest:
            raise BundleError(
                f"model bundle {root}: {rel} does not match its sha256 in {MANIFEST} (tampered or corrupt)"
            )
    return manifest


def git_commit() -> str:
    if os.environ.get("HHPULSE_GIT_COMMIT"):
        return os.environ["HHPULSE_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "hhpulse": __version__}
    for pkg in ("xgboost", "xgboost-cpu", "scikit-learn", "numpy", "scipy", "pandas", "razdel"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def new_version(now: datetime | None = None) -> str:
    """A model version: ``v<UTC date>-<time>-<6 random hex digits>``, e.g. ``v20261207-114103-3fa9c1``.

    The time sorts versions; the random part keeps two trainings started in the same second
    (a scheduled run and a manual one) from naming two different bundles alike (one in 16.7
    million for two versions of one second; the registry refuses a second bundle under a taken
    version anyway, see :func:`hhpulse.model.registry.publish`). Lower-case letters, digits
    and dashes only: the version is a store key's segment and a Kubernetes label value.
    """
    import secrets

    now = now or datetime.now(timezone.utc)
    return f"{now:v%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def build_bundle(
    out_dir: str | os.PathLike[str],
    *,
    vectorizer: TextVectorizer,
    models: Mapping[str, TrainedCandidate],
    cohorts: Mapping[str, Sequence[str]],
    label_config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    card: Mapping[str, Any],
    profile: Mapping[str, Any] | None = None,
    version: str | None = None,
    training_ids: Iterable[str] | Mapping[str, Iterable[str]] | None = None,
    calibrators: Mapping[str, Calibrator] | None = None,
) -> Path:
    """Write a complete bundle to ``out_dir`` atomically (a temp dir renamed into place).

    ``training_ids``: the vacancy ids the models were fitted or selected on (the held-out
    fit: train and validation rows; the published refit: train, validation and test rows),
    kept as a set of hashes so ``evaluate`` and the gate can tell when data overlaps them.
    ``calibrators`` (per task) are written as ``<task>/calibration.json``; a task without
    one predicts its model's raw probabilities.
    """
    out = Path(out_dir)
    missing = [t for t in TASKS if t not in models]
    if missing:
        raise BundleError(f"cannot build a bundle without a model for: {', '.join(missing)}")
    version = version or new_version()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would hide the bundle from others
        vectorizer.save(tmp / "vectorizer")
        for task in TASKS:
            models[task].save(tmp / task)
            if calibrators and task in calibrators:
                calibrators[task].save(tmp / task)
        info = {
            "format": FORMAT,
            "version": version,
            "inputs": {
                "required": ["responsibility"],
                "optional": ["name", "requirement"],
                "structured": list(STRUCTURED_NAMES),
            },
            "tasks": {t: {"winner": models[t].config.name, "kind": models[t].config.kind} for t in TASKS},
            "hhpulse_version": __version__,
        }
        _json(tmp / "bundle.json", info)
        _json(tmp / "cohorts.json", {t: list(cohorts[t]) for t in TASKS})
        _json(tmp / "label_config.json", dict(label_config))
        _json(tmp / "metrics.json", {**_history_version(card), **metrics})
        _json(tmp / "profile.json", dict(profile or {}))
        if training_ids is not None:
            write_training_ids(tmp, training_ids)
        (tmp / "model_card.md").write_text(
            model_card(version, models, cohorts, metrics, card), encoding="utf-8"
        )
        write_manifest(tmp, version)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json(path: Path, obj: Any) -> None:
    path.write_text(
        json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str), encoding="utf-8"
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _window_lines(summary: Mapping[str, Any]) -> list[str]:
    """The training window of the history (absent for a file's data), and the version of the
    history table it was read from: the training set can be read again from it."""
    if "history_window" not in summary:
        return []
    from hhpulse.data.history_store import describe_window

    window = summary["history_window"]
    lines = [f"- history window: {describe_window(window)}"]
    if window.get("version") is not None:
        days = window.get("window_days") or 0
        lines.append(
            f"- history version: {window['version']} of {window.get('table', 'the history table')} "
            f"(the same training set: `hhpulse train --data STORE --as-of {window['version']} "
            f"--window-days {days}`)"
        )
    return lines


def _history_version(card: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json's ``history``: the history table and version the model was trained on."""
    window = (card.get("summary") or {}).get("history_window") or {}
    if window.get("version") is None:
        return {}
    return {"history": {"table": window.get("table"), "version": window["version"]}}


def model_card(
    version: str,
    models: Mapping[str, TrainedCandidate],
    cohorts: Mapping[str, Sequence[str]],
    metrics: Mapping[str, Any],
    card: Mapping[str, Any],
) -> str:
    summary = card.get("summary", {})
    lines = [f"# hhpulse model {version}", ""]
    if summary.get("demand_proxy"):
        lines += [
            "> **WARNING: demand labels use the AGE PROXY.** The resolved labels could not make a",
            "> measurable task (too few closes, or one cohort), so the demand cohort was learned from age",
            "> at collection (collected_at - published_at), not from time-to-close.",
            '> Treat demand predictions as "how long ago such vacancies were',
            '> (re)published", not as demand.',
            *([f"> Why: {summary['demand_proxy_reason']}."] if summary.get("demand_proxy_reason") else []),
            "",
        ]
    if card.get("synthetic"):
        lines += ["> Trained on the **SYNTHETIC** demo market (hhpulse's emulator), not on hh.ru data.", ""]
    else:
        lines += ["> Trained on **real** hh.ru data.", ""]
    caveats = bundle_caveats({**metrics, "dataset": summary})
    for task, c in caveats.items():
        if not c["reliable"]:
            lines += [
                f"> **UNRELIABLE: do not rely on {task}.** " + "; ".join(c["caveats"]) + ".",
                "",
            ]
    lines += [
        "## Data",
        f"- runs: {', '.join(card.get('runs', [])) or 'n/a'}",
        f"- date range: {' .. '.join(str(x) for x in summary.get('date_range', ['n/a']))}",
        *_window_lines(summary),
        *(f"- {task} {line}" for task, lines in label_lines(summary).items() for line in lines),
        "",
        "## Labels",
        "- salary: monthly gross RUB; midpoint of from/to (or the one given); converted with the run's",
        "  /dictionaries rates; net -> gross with the income-tax factor; closed-open bands:",
        f"  {list(cohorts['salary'])}; no salary means no label; absurd values left out",
        "- demand: lifetime = closed_at - (initial_created_at or first published_at); high < 10 days <= medium",
        "  < 20 <= low; open vacancies >= 20 days old count as low; younger open ones are left out (unresolved),",
        "  as are closes of vacancies whose start was not observed, unless they were open 20+ days",
        f"- label configuration: `{json.dumps(card.get('label_config', {}), ensure_ascii=False, default=str)}`",
        "",
        "## Models",
    ]
    for task in TASKS:
        m = metrics.get(task, {})
        win = m.get("winner")
        test = m.get("candidates", {}).get(win, {}).get("metrics", {})
        cal = (metrics.get("calibration") or {}).get(task)
        auc, which = served_auc(m, cal)
        served = (
            f"; {_fmt(auc)} {which} (the probabilities it serves)" if which == "after calibration" else ""
        )
        lines.append(
            f"- {task}: **{models[task].config.name}** ({models[task].config.kind}), chosen by "
            f"{selection_text(m)}; test macro ROC AUC (OvO), uncalibrated: "
            f"{_fmt(test.get('test', {}).get('roc_auc_ovo'))} with all fields, "
            f"{_fmt(test.get('test_resp', {}).get('roc_auc_ovo'))} with responsibility alone{served}"
        )
        if task in caveats and not caveats[task]["reliable"]:
            lines.append(f"  - **UNRELIABLE:** {'; '.join(caveats[task]['caveats'])}")
        iv = (metrics.get("test_intervals") or {}).get(task)
        if iv:
            lines.append(
                f"  - test figure's {100 * iv['confidence']:.0f}% interval (stratified bootstrap, {iv['rows']} test rows): "
                f"{_fmt(iv['low'])} .. {_fmt(iv['high'])}"
            )
        if task == "demand" and metrics.get("young_history"):
            lines.append(
                f"  - **Young history:** {metrics['young_history']}. The test figure is not a forecast of "
                "the live one; the monitor's live figure is"
            )
        line = baseline_line(m)
        if line:
            lines.append(f"  - {line}")
        lines += candidate_table(m)
        one = dominant_prediction(task, served_counts(m, cal))
        if one:
            lines.append(f"  - **One cohort:** {one}")
    for task, c in (metrics.get("calibration") or {}).items():
        before, after = c.get("test", {}).get("before", {}), c.get("test", {}).get("after", {})
        lines.append(
            f"- {task} probabilities (held-out fit): calibrated ({c.get('method')}, temperature "
            f"{_fmt(c.get('temperature'))}) on the validation slice; test top-label ECE {_fmt(before.get('ece'))} -> {_fmt(after.get('ece'))}, "
            f"largest cohort-mix error {_fmt((before.get('mix') or {}).get('max_abs_error'))} -> "
            f"{_fmt((after.get('mix') or {}).get('max_abs_error'))}"
        )
    lines += fits_lines(card)
    lines += ["", "## Versions", f"- git commit: {card.get('git_commit', git_commit())}"]
    lines += [f"- {k}: {v}" for k, v in library_versions().items()]
    return "\n".join(lines) + "\n"


def candidate_table(task_metrics: Mapping[str, Any]) -> list[str]:
    """Every candidate's primary metric with all fields and with responsibility alone, on
    validation (where the winner is chosen, by the selection score) and test."""
    cands = task_metrics.get("candidates", {})
    if not cands:
        return []
    primary = task_metrics.get("primary", "roc_auc_ovo")
    rule = (task_metrics.get("selection") or {}).get("score") or f"the validation {primary} with all fields"
    out = [
        "",
        "  | candidate | val, all fields | val, responsibility | selection score | test, all fields | test, responsibility |",
        "  |---|---:|---:|---:|---:|---:|",
    ]
    for name, c in sorted(cands.items()):
        m = c.get("metrics", {})

        def g(part: str, m: Mapping[str, Any] = m) -> str:
            return _fmt((m.get(part) or {}).get(primary))

        mark = " (winner)" if name == task_metrics.get("winner") else ""
        mark += " (baseline)" if name == task_metrics.get("baseline") else ""
        out.append(
            f"  | {name}{mark} | {g('val')} | {g('val_resp')} | {_fmt(c.get('selection_score'))} | "
            f"{g('test')} | {g('test_resp')} |"
        )
    return [*out, "", f"  Selection score ({primary}): {rule}.", ""]


def _range(r: Sequence[Any] | None) -> str:
    return " .. ".join(str(x) for x in (r or [None, None]))


def fits_lines(card: Mapping[str, Any]) -> list[str]:
    """Which fit the figures measure and which fit this bundle holds (see hhpulse.model.refit)."""
    fits = card.get("fits")
    if not fits:
        return [
            "",
            "## Fits",
            "- this bundle holds the held-out fit: the model the figures above measure (no refit)",
        ]
    lines = [
        "",
        "## Fits",
        "The figures above (and the gate's) measure the **held-out fit**; this bundle holds the",
        "**published fit**: the same configuration refitted on every labelled row of the window.",
    ]
    for task, f in fits.items():
        parts, pub = f["measured"]["parts"], f["published"]
        lines += [
            f"- {task}, measured (held-out fit): fitted on train {parts['train']['rows']} rows "
            f"(published {_range(parts['train']['published_at'])}), chosen on val {parts['val']['rows']} rows "
            f"({_range(parts['val']['published_at'])}), tested on test {parts['test']['rows']} rows "
            f"({_range(parts['test']['published_at'])})",
            f"- {task}, published (this bundle): refitted on train+val+test, {pub['rows']} rows "
            f"(published {_range(pub['published_at'])})"
            + (
                f", {pub['rounds']} boosting rounds (the held-out fit's early stop)"
                if pub.get("rounds")
                else ""
            ),
        ]
    for task, c in (card.get("published_calibration") or {}).items():
        lines.append(
            f"- {task} calibrator of the published fit: {c.get('method')}, temperature {_fmt(c.get('temperature'))}, "
            f"prior rule '{c.get('prior_rule')}' ({(c.get('rules') or {}).get(c.get('prior_rule'), '')}); "
            f"fitted on {c.get('fitted_on')}"
        )
        bt = c.get("backtest")
        if bt:
            lines.append(
                f"  - prior chosen by a backtest: fitted on {bt['fitted_on']}, scored on {bt['scored_on']}, "
                f"by {bt['chosen_by']}:"
            )
            lines += [
                f"    - {rule}: ECE {_fmt(m.get('ece'))}, largest mix error {_fmt(m.get('mix_error'))}, "
                f"log loss {_fmt(m.get('log_loss'))}"
                for rule, m in bt["rules"].items()
            ]
        if c.get("weeks"):
            lines.append(
                f"  - {task} calibrated, per week of first sighting of the out-of-fold rows (top-label ECE, largest mix error, rows):"
            )
            lines += [
                f"    - {w['week']}: ECE {_fmt(w.get('ece'))}, mix error {_fmt(w.get('mix_error'))}, {w['rows']} rows"
                for w in c["weeks"]
            ]
    return lines


def baseline_line(task_metrics: Mapping[str, Any]) -> str | None:
    """One sentence on the winner against the task's TF-IDF + logistic regression baseline: by
    the rule that decided (the selection score on validation), then on test; the words follow
    the numbers beside them. None when the run trained no baseline."""
    base, win = task_metrics.get("baseline"), task_metrics.get("winner")
    cands = task_metrics.get("candidates", {})
    if not base or base not in cands:
        return None
    primary = task_metrics.get("primary", "roc_auc_ovo")
    has_score = any(c.get("selection_score") is not None for c in cands.values())

    def decided(name: str) -> float | None:
        c = cands.get(name, {})
        if has_score:
            return c.get("selection_score")
        return (c.get("metrics", {}).get("val") or {}).get(primary)

    def get(name: str, part: str) -> str:
        return _fmt(cands.get(name, {}).get("metrics", {}).get(part, {}).get(primary))

    what = "selection score" if has_score else f"validation {primary}"
    b, w = decided(base), decided(win)
    if win == base:
        how = f"no candidate had a {what} at least as high, so the baseline is the winner"
    elif b is None or (w is not None and w > b):
        how = f"the winner has the higher {what}"
    elif w == b:
        how = f"the winner ties the baseline's {what}, and a tie goes to the other candidate"
    else:  # cannot happen with select_winner's rule: say what the numbers say
        how = f"the winner has the LOWER {what}: it was not chosen by this rule"
    return (
        f"baseline {base} (TF-IDF + logistic regression, no class weights, no field dropout): "
        f"{what} {_fmt(b)} (winner {_fmt(w)}); test {primary}, uncalibrated, {get(base, 'test')} "
        f"(winner {get(win, 'test')}); {how}"
    )


class ModelBundle:
    """A verified, loaded bundle. Load once; :meth:`predict` does no I/O."""

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        cohorts: dict[str, list[str]],
        vectorizer: TextVectorizer,
        models: dict[str, TrainedCandidate],
        metadata: dict[str, Any],
        calibrators: dict[str, Calibrator] | None = None,
    ) -> None:
        self.path = path
        self.info = info
        self.cohorts = cohorts
        self.vectorizer = vectorizer
        self.models = models
        self.metadata = metadata
        self.calibrators = calibrators or {t: Calibrator(list(cohorts[t])) for t in TASKS}

    @property
    def version(self) -> str:
        return str(self.info["version"])

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The input fields the model reads (``responsibility`` always; ``name``/``requirement`` mostly)."""
        return tuple(self.vectorizer.config.fields)

    def training_overlap(self, ids: Iterable[Any]) -> tuple[int, int] | None:
        """(how many of ``ids`` the models were trained on, how many unique ids were given).

        ``None`` for a bundle written before training ids were kept. The hashes are in
        ``training_ids.npz``, covered by MANIFEST.json like every other file.
        """
        path = self.path / TRAINING_IDS
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as npz:
            trained = npz["ids"]
        given = id_hashes(ids)
        return int(np.isin(given, trained, assume_unique=True).sum()), len(given)

    def predict_proba(
        self, instances: Sequence[Any], *, calibrated: bool = True, stats: TermStats | None = None
    ) -> dict[str, np.ndarray]:
        """Probabilities per task (rows follow ``instances``, columns follow ``cohorts[task]``),
        calibrated by the bundle's calibrators unless ``calibrated=False`` (the raw model).
        ``stats`` collects the known-term counts of this vectorization (see
        :meth:`hhpulse.model.features.TextVectorizer.transform`)."""
        rows = [to_instance(i).as_dict() for i in instances]
        if not rows:
            return {t: np.zeros((0, len(self.cohorts[t]))) for t in TASKS}
        lengths: dict[str, list[int]] = {}  # each text's length in tokens, for a dense input
        X = self.vectorizer.transform(rows, stats=stats, lengths=lengths)
        with_lengths(rows, lengths)
        raw = {t: self.models[t].predict_proba(X, rows) for t in TASKS}
        return {t: self.calibrators[t].apply(p) for t, p in raw.items()} if calibrated else raw

    def explain(self, instances: Sequence[Any], top: int = 10) -> list[dict[str, Any]]:
        """Why each instance got its cohorts: see :func:`hhpulse.model.explain.explain`."""
        return explain(self, [to_instance(i) for i in instances], top=top)

    def _assumed_priors(self, task: str) -> dict[str, float]:
        priors = self.calibrators[task].priors
        if not priors:
            raise BundleError(
                f"model {self.version} has no calibration priors for {task} (trained before calibration): "
                "retrain it to shift priors"
            )
        return priors

    def estimate_priors(self, instances: Sequence[Any], strength: float = 1.0) -> dict[str, dict[str, float]]:
        """The cohort mix of unlabelled ``instances`` per task, by the EM of Saerens et al. (2002)
        from the calibrated probabilities (see :func:`hhpulse.model.calibration.em_priors`)."""
        from hhpulse.model.calibration import em_priors

        probs = self.predict_proba(instances)
        return {
            t: em_priors(probs[t], self._assumed_priors(t), self.cohorts[t], strength=strength)[1]
            for t in TASKS
        }

    def predict(
        self,
        instances: Sequence[Any],
        priors: Mapping[str, Mapping[str, float]] | None = None,
        *,
        stats: TermStats | None = None,
    ) -> list[dict[str, Any]]:
        """Cohort and probabilities for each instance, in order (vectorized as one batch).

        ``priors`` ({task: {cohort: share}}) re-weights a task's probabilities from the mix
        the calibrated model assumes to the given one (Bayes' rule; see
        :func:`hhpulse.model.calibration.shift_priors`), e.g. from :meth:`estimate_priors`.
        ``stats``: as in :meth:`predict_proba` (the predictor's known-term metric)."""
        from hhpulse.model.calibration import CalibrationError, shift_priors

        probs = self.predict_proba(instances, stats=stats)
        for t, mix in (priors or {}).items():
            if t not in probs:
                raise BundleError(f"priors name an unknown task {t!r}; tasks: {list(TASKS)}")
            try:
                probs[t] = shift_priors(probs[t], self._assumed_priors(t), mix, self.cohorts[t])
            except CalibrationError as exc:
                raise BundleError(f"{t} priors: {exc}") from exc
        out: list[dict[str, Any]] = [{} for _ in instances]
        for t in TASKS:
            names = self.cohorts[t]
            for pred, row in zip(out, probs[t].tolist(), strict=True):  # Python floats: no numpy scalars
                pred[t] = {
                    "cohort": names[
                        max(range(len(row)), key=row.__getitem__)
                    ],  # the first largest, as argmax
                    "probabilities": {c: round(v, 6) for c, v in zip(names, row, strict=True)},
                }
        version = self.version
        for pred in out:
            pred["model_version"] = version
        return out


def load_bundle(path: str | os.PathLike[str], verify: bool = True) -> ModelBundle:
    """Load a bundle; with ``verify`` (the default) the manifest is checked first."""
    root = Path(path)
    if verify:
        verify_manifest(root)
    try:
        info = json.loads((root / "bundle.json").read_text(encoding="utf-8"))
        if info.get("format") != FORMAT:
            raise BundleError(f"{root}/bundle.json: unknown format {info.get('format')!r}")
        cohorts = json.loads((root / "cohorts.json").read_text(encoding="utf-8"))
        vectorizer = TextVectorizer.load(root / "vectorizer")
        models = {t: load_candidate(root / t) for t in TASKS}
        calibrators = {t: Calibrator.load(root / t, cohorts[t]) for t in TASKS}
        metadata = {
            "label_config": json.loads((root / "label_config.json").read_text(encoding="utf-8")),
            "metrics": json.loads((root / "metrics.json").read_text(encoding="utf-8")),
            "profile": json.loads((root / "profile.json").read_text(encoding="utf-8")),
        }
    except BundleError:
        raise
    except CalibrationError as exc:
        raise BundleError(f"model bundle {root}: bad calibrator: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"model bundle {root} cannot be loaded: {exc}") from exc
    for t in TASKS:
        if models[t].classes != cohorts[t]:
            raise BundleError(
                f"model bundle {root}: {t} model classes {models[t].classes} != cohorts.json {cohorts[t]}"
            )
    return ModelBundle(root, info, cohorts, vectorizer, models, metadata, calibrators)
