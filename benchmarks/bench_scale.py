"""A schedule of daily runs at hh.ru's volume: N runs of the demo market at ``--demo-size 3000``
(about 64,700 open vacancies a run, all of IT on hh.ru in Russia), each collected, validated
and folded into the history as the pipeline does it.

Every step runs in a process of its own, so its wall time and peak RSS (``VmHWM``) are
that step's alone, as a pod's would be:

* **collect and fold**, every run, in two processes as the pipeline's two pods: *collect*
  (the demo source in process: the emulator's answers without HTTP,
  :class:`hhpulse.hh.emulator.InProcessEmulator`, items equal to the HTTP emulator's) and
  *validate* (``validate_run``, then ``fold_run``). The synthetic market's vacancies are
  hh.ru's memory, not the pod's: the driver builds them (a day at a time) and forks the
  collect process from itself, and the figures leave the market out (shown apart as
  ``+market``: its seconds, and the RSS it adds to the collect process). Its time is the
  sum of the two; its peak RSS the larger of the two.
* **dataset**, **featurize** and **train** (each candidate in a process of its own, as the
  pipeline's ParallelFor pods), in spawned processes at checkpoints only
  (``--dataset-every``/``--train-every`` runs, and the last run): at a full 180-day window
  at this volume they take minutes each on a small machine. Runs between checkpoints say so.

Goals, as ratios measured in the same run: the last 10 runs' collect-and-fold time and peak
RSS <= 1.2x those of runs 20-30 (medians); collect-and-fold peak RSS <= 1 GB at 65k items a
run; dataset and training flat once the window is full (last checkpoint <= 1.2x the first
checkpoint past the window). Also the store's size on disk, and (``--verify``) that
``hhpulse history --verify`` finds the folded history equal to a rebuild at the end.

Before and after, side by side: ``--before REF`` (default :data:`BEFORE_REF`, the last
version whose history was the hand-written layout with ``history/state.json``; ``none`` to
skip) also runs, after each run's validate step, that version's validate step in a process
of its own (``benchmarks/_before_fold.py``, with ``REF``'s ``src/`` taken from git), folding
the same raw run into a history of its own. Both get the goals above, from the same runs.

Options (``make bench BENCH="scale --days 365 --json /tmp/scale.json"`` or
``python -m benchmarks.bench_scale --help``): ``--days`` (default 120; 365 for the year),
``--demo-size``, ``--window-days``, ``--dataset-every``, ``--train-every``, ``--candidates``,
``--history fold|rebuild`` (rebuild: the whole history from every raw run, as before the fold),
``--before REF|none``, ``--verify``,
``--rss-limit-gb`` (a step above it is killed, as a pod over its memory limit), ``--store``,
``--json``. Environment: ``BENCH_SCALE_DAYS`` sets the default of ``--days``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_DAYS = 120
EXPLICIT_ONLY = True  # hours: `python -m benchmarks` runs it only when named (make bench BENCH=scale)
GOAL_RATIO = 1.2
GOAL_FOLD_RSS = 2**30  # 1 GB at 65k items a run
BASELINE_RUNS = (20, 30)  # runs 20..30 (1-based), the baseline of the flatness goals
LAST_RUNS = 10
# the last commit whose history was the hand-written table format (history/state.json, open,
# settled and index files): what `--before` compares the Delta table with
BEFORE_REF = "70279f4"
REPO = Path(__file__).resolve().parents[1]


# -- the steps: each runs in its own spawned process -------------------------------------------
def _quiet() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hhpulse").setLevel(logging.ERROR)


def _rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _max_rss() -> int:
    """This process's peak RSS: VmHWM, which execve resets (ru_maxrss keeps the maximum across
    execve, so a spawned step would report at least the driver's RSS at the fork)."""
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def step_collect(root: str, day: int, size: int, seed: int, bare_rss: int) -> dict[str, Any]:
    """The collect pod: the demo source in process into a new raw run. Runs in a process forked
    from the driver, which holds the synthetic market; ``bare_rss`` is the driver's RSS without it."""
    # the market's vacancies are the synthetic hh.ru's memory, not the pod's; so is the
    # emulator's snapshot of the day (its search items), measured here apart
    inherited = max(0, _rss_now() - bare_rss)
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import make_source
    from hhpulse.data.store import LocalStore
    from hhpulse.hh.market import Market

    t = time.perf_counter()
    before = _rss_now()
    Market(seed=seed, daily_new=size).snapshot(day)
    out: dict[str, Any] = {
        "snapshot_s": time.perf_counter() - t,
        "market_rss": inherited + max(0, _rss_now() - before),
    }
    t = time.perf_counter()
    source = make_source("demo", demo_size=size, demo_day=day, demo_transport="in-process")
    source.seed = seed  # type: ignore[attr-defined]
    res = collect(source, LocalStore(root), progress=False)
    if not res.complete:
        raise RuntimeError(f"the demo run of day {day} did not complete: {res.stop_reason}")
    out.update(collect_s=time.perf_counter() - t, run_id=res.run_id, items=res.items)
    return out


def step_validate_fold(root: str, run_id: str, history: str) -> dict[str, Any]:
    """The validate pod: the data contract, then the fold of the run into the history (or,
    with ``history="rebuild"``, the whole history rebuilt from every raw run, as before)."""
    from hhpulse.data import history_store as hist_mod
    from hhpulse.data.store import LocalStore
    from hhpulse.data.validate import validate_run

    store = LocalStore(root)
    t = time.perf_counter()
    report = validate_run(store, run_id)
    out: dict[str, Any] = {"validate_s": time.perf_counter() - t, "quarantined": report.bad}
    t = time.perf_counter()
    if history == "fold":
        fold = hist_mod.fold_run(store, run_id)
        out["fold"] = {k: v for k, v in dataclasses.asdict(fold).items() if isinstance(v, int | float | dict)}
    else:
        out["history_rows"] = len(hist_mod.rebuild_history(store))
    out["fold_s"] = time.perf_counter() - t
    return out


def step_dataset(root: str, out_dir: str, window_days: int, history: str) -> dict[str, Any]:
    """The build-dataset step: the history it reads (the window, or all of it), labels, split."""
    from hhpulse.config import LabelConfig, SplitConfig
    from hhpulse.data import history_store as hist_mod
    from hhpulse.data.store import LocalStore
    from hhpulse.model.dataset import build_dataset

    store = LocalStore(root)
    if history == "fold":  # as components/build_dataset.py: catch up, then read the window
        hist_mod.fold_run(store)
        hist = hist_mod.read_history(store, window_days=window_days)
    else:  # before the fold: build-dataset rebuilt the whole history from every raw run
        hist = hist_mod.rebuild_history(store)
    ds = build_dataset(hist, hist_mod.rates_by_run(store), LabelConfig(), SplitConfig())
    ds.save(out_dir)
    return {"history_rows": len(hist), "rows": {t: len(td.frame) for t, td in ds.tasks.items()}}


def step_featurize(dataset_dir: str, features_dir: str) -> dict[str, Any]:
    """The featurize step: the vectorizer fitted on train, every split's matrix."""
    from hhpulse.model.dataset import Dataset
    from hhpulse.model.train import featurize

    vec, sets = featurize(Dataset.load(dataset_dir))
    vec.save(os.path.join(features_dir, "vectorizer"))
    for task, fs in sets.items():
        fs.save(os.path.join(features_dir, task))
    return {"terms": vec.n_features, "train_rows": {t: fs.X["train"].shape[0] for t, fs in sets.items()}}


def step_train(features_dir: str, candidate: dict[str, Any], model_dir: str) -> dict[str, Any]:
    """One train-candidate (or train-baseline) pod."""
    from hhpulse.config import CandidateConfig
    from hhpulse.model.train import FeatureSet, fit_on

    cfg = CandidateConfig.from_dict(candidate)
    device = "cpu" if cfg.kind != "xgboost" else "auto"
    cand = fit_on(FeatureSet.load(os.path.join(features_dir, cfg.task)), cfg, device=device)
    cand.save(model_dir)
    return {"name": cfg.name}


def step_verify(root: str) -> dict[str, Any]:
    """``hhpulse history --verify``: the folded history against a rebuild from every raw run."""
    from hhpulse.data.history_store import verify
    from hhpulse.data.store import LocalStore

    res = verify(LocalStore(root))
    return {"ok": res.ok, "message": res.message(), "rows": res.stored_rows, "runs": res.runs}


_STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "verify": step_verify,
    "collect": step_collect,
    "validate_fold": step_validate_fold,
    "dataset": step_dataset,
    "featurize": step_featurize,
    "train": step_train,
}


def _child(conn: Any, step: str, kwargs: dict[str, Any]) -> None:
    _quiet()
    start = time.perf_counter()
    try:
        out, err = _STEPS[step](**kwargs), None
    except BaseException as exc:  # noqa: BLE001 - report it to the parent, whatever it is
        out, err = None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
    conn.send({"out": out, "error": err, "seconds": time.perf_counter() - start, "peak_rss": _max_rss()})
    conn.close()


def run_step(step: str, kwargs: dict[str, Any], rss_limit: int, *, fork: bool = False) -> dict[str, Any]:
    """Run one step in a spawned (or forked) process; kill it past ``rss_limit`` bytes (as a pod's limit)."""
    import psutil

    ctx = mp.get_context("fork" if fork else "spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, step, kwargs), name=f"bench-scale-{step}")
    start = time.perf_counter()
    proc.start()
    send.close()
    watched = psutil.Process(proc.pid)
    result: dict[str, Any] | None = None
    seen = 0
    try:
        while result is None:
            if recv.poll(0.2):
                try:
                    result = recv.recv()
                except EOFError:
                    break
                continue
            if not proc.is_alive():
                break
            try:
                seen = max(seen, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
            if seen > rss_limit:
                proc.kill()
                result = {
                    "out": None,
                    "error": f"killed at {_gb(seen)} RSS, over the {_gb(rss_limit)} limit (--rss-limit-gb)",
                    "seconds": time.perf_counter() - start,
                    "peak_rss": seen,
                    "killed": True,
                }
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the step must not outlive the driver
        proc.kill()
        raise
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if result is None:
        result = {
            "out": None,
            "error": f"the step's process died (exit code {proc.exitcode})",
            "peak_rss": seen,
        }
        result["seconds"] = time.perf_counter() - start
    result["wall_s"] = time.perf_counter() - start  # with the interpreter's start and imports
    return result


# -- the version before, side by side -----------------------------------------------------------
def extract_before(ref: str, into: Path) -> Path:
    """``ref``'s ``src/`` from git, in ``into``; the folder to put on PYTHONPATH. A folder that
    holds an ``hhpulse`` package is taken as it is."""
    import subprocess

    if (Path(ref) / "hhpulse" / "__init__.py").is_file():
        return Path(ref)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if commit.returncode != 0:
        raise SystemExit(f"bench_scale: --before {ref}: not a commit of {REPO} ({commit.stderr.strip()})")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit.stdout.strip(), "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def step_before(src: Path, root: Path, run_id: str, history_root: Path, timeout_s: float) -> dict[str, Any]:
    """The earlier version's validate step (validate, then fold into its own history), in a process
    of its own; its seconds and peak RSS, or the error."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    try:
        p = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("_before_fold.py")),
                str(root),
                run_id,
                str(history_root),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.perf_counter() - start}
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {p.returncode}: {tail}", "wall_s": time.perf_counter() - start}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - start
    return out


# -- the schedule --------------------------------------------------------------------------------
def _gb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GB"


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MB"


def store_size(root: str | Path) -> dict[str, int]:
    """Bytes on disk by top-level folder of the store (``total`` too)."""
    sizes: dict[str, int] = {}
    root = Path(root)
    for path in root.rglob("*"):
        if path.is_file():
            top = path.relative_to(root).parts[0]
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes


def _candidates(spec: str) -> list[dict[str, Any]]:
    from hhpulse.config import TASKS, baseline_candidate, load_candidates

    configured = [c.to_dict() for c in load_candidates()]
    baselines = [baseline_candidate(t).to_dict() for t in TASKS]
    if spec == "all":
        return configured + baselines
    if spec == "baselines":
        return baselines
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    known = {c["name"]: c for c in configured + baselines}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"bench_scale: unknown candidates {unknown}; known: {sorted(known)}")
    return [known[w] for w in wanted]


def _warm_market(seed: int, size: int, day: int) -> float:
    """Build the market's vacancies for ``day`` in the driver (only the new day's when the day
    before was built): the forked collect step inherits them, as hh.ru's servers hold theirs."""
    from hhpulse.hh.market import MAX_LIFETIME_DAYS, Market, _opened_on

    t = time.perf_counter()
    if _opened_on.cache_info().currsize > 2 * (MAX_LIFETIME_DAYS + 1):
        _opened_on.cache_clear()  # keep the days a snapshot needs, not the whole year
    Market(seed=seed, daily_new=size).snapshot(day)
    return time.perf_counter() - t


def _checkpoint(n: int, total: int, every: int) -> bool:
    return n == total or (every > 0 and n % every == 0)


def _training(features_dir: str, work: Path, candidates: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for cand in candidates:
        r = run_step(
            "train",
            {"features_dir": features_dir, "candidate": cand, "model_dir": str(work / cand["name"])},
            limit,
        )
        per[cand["name"]] = {k: r.get(k) for k in ("seconds", "wall_s", "peak_rss", "error")}
    ok = [p for p in per.values() if not p["error"]]
    return {
        "seconds": sum(p["seconds"] for p in per.values()),
        "peak_rss": max((p["peak_rss"] for p in per.values()), default=None),
        "error": "; ".join(f"{n}: {p['error']}" for n, p in per.items() if p["error"]) or None,
        "candidates": per,
        "trained": len(ok),
    }


def checkpoint_steps(
    row: dict[str, Any],
    root: Path,
    work: Path,
    args: argparse.Namespace,
    mode: str,
    candidates: list[dict[str, Any]] | None,
    limit: int,
) -> str:
    """The dataset step, then (``candidates`` given) featurize and every candidate; into ``row``."""
    ds_dir, feat_dir = work / "dataset", work / "features"
    try:
        d = run_step(
            "dataset",
            {"root": str(root), "out_dir": str(ds_dir), "window_days": args.window_days, "history": mode},
            limit,
        )
        row["dataset"] = d
        line = f" | dataset {d['seconds']:.1f}s {_mb(d['peak_rss'])}"
        if d.get("error"):
            return line + f" FAILED ({d['error'].splitlines()[0]})"
        line += f" ({d['out']['history_rows']:,} history rows, {d['out']['rows']})"
        if candidates is None:
            return line + " | train -"
        f = run_step("featurize", {"dataset_dir": str(ds_dir), "features_dir": str(feat_dir)}, limit)
        row["featurize"] = f
        line += f" | featurize {f['seconds']:.1f}s {_mb(f['peak_rss'])}"
        if f.get("error"):
            return line + f" FAILED ({f['error'].splitlines()[0]})"
        t = _training(str(feat_dir), work / "models", candidates, limit)
        row["train"] = t
        line += f" | train {t['seconds']:.1f}s ({t['trained']} candidates) max {_mb(t['peak_rss'])}"
        if t["error"]:
            line += f" FAILED ({t['error'].splitlines()[0]})"
        return line
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def goals(runs: list[dict[str, Any]], window_days: int) -> dict[str, Any]:
    """The issue's goals, as ratios within this run (and, under "before", the same goals of the
    earlier version's fold of the same runs, when it ran)."""
    out = _fold_goals(runs, "")
    if any("before_fold_rss" in r for r in runs):
        out["before"] = _fold_goals(runs, "before_")
    return {**out, **_step_goals(runs, window_days)}


def _fold_goals(runs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    ok = [r for r in runs if f"{prefix}fold_rss" in r]
    lo, hi = BASELINE_RUNS
    base = [r for r in ok if lo <= r["run"] <= hi]
    last = ok[-LAST_RUNS:] if len(ok) > hi + LAST_RUNS - 1 else []
    out: dict[str, Any] = {}
    for key, label in (("fold_seconds", "collect-and-fold time"), ("fold_rss", "collect-and-fold peak RSS")):
        b = _median([r[prefix + key] for r in base])
        la = _median([r[prefix + key] for r in last])
        ratio = la / b if (b and la is not None) else None
        out[key] = {
            "what": f"median of the last {LAST_RUNS} runs / median of runs {lo}-{hi}: {label}",
            "baseline": b,
            "last": la,
            "ratio": ratio,
            "goal": GOAL_RATIO,
            "met": None if ratio is None else ratio <= GOAL_RATIO,
            "note": None if ratio is not None else f"needs at least {hi + LAST_RUNS} runs",
        }
    worst = max(ok, key=lambda r: r[f"{prefix}fold_rss"], default=None)
    out["fold_rss_1gb"] = {
        "what": "collect-and-fold peak RSS (the larger of the collect and validate+fold processes, "
        "without the synthetic market) <= 1 GB",
        "max": worst[f"{prefix}fold_rss"] if worst else None,
        "at_run": worst["run"] if worst else None,
        "items": worst["items"] if worst else None,
        "met": None if worst is None else worst[f"{prefix}fold_rss"] <= GOAL_FOLD_RSS,
    }
    return out


def _step_goals(runs: list[dict[str, Any]], window_days: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step in ("dataset", "featurize", "train"):
        full = [r for r in runs if r.get(step) and not r[step].get("error") and r["days"] > window_days]
        entry: dict[str, Any] = {
            "what": f"{step}: the last checkpoint / the first past the {window_days}-day window"
        }
        if len(full) < 2:
            entry.update(
                met=None,
                note=f"needs 2 checkpoints more than {window_days} days after the first run (the window "
                "is full only then); "
                f"{len(full)} so far",
            )
        else:
            first, end = full[0][step], full[-1][step]
            t, m = end["seconds"] / first["seconds"], end["peak_rss"] / first["peak_rss"]
            entry.update(
                first_run=full[0]["run"],
                last_run=full[-1]["run"],
                time_ratio=t,
                rss_ratio=m,
                goal=GOAL_RATIO,
                met=t <= GOAL_RATIO and m <= GOAL_RATIO,
            )
        out[step] = entry
    return out


def _write_json(path: str | None, doc: dict[str, Any]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "MISSED")


def _print_goals(g: dict[str, Any]) -> None:
    print("\ngoals (ratios within this run):")
    for name, fg in (("", g), ("before: ", g.get("before"))):
        if fg is None:
            continue
        for key in ("fold_seconds", "fold_rss"):
            e = fg[key]
            if e["ratio"] is None:
                print(f"  {name}{e['what']}: n/a ({e['note']})")
            else:
                fmt = (lambda v: f"{v:.2f} s") if key == "fold_seconds" else _mb
                print(
                    f"  {name}{e['what']}: {fmt(e['last'])} / {fmt(e['baseline'])} = {e['ratio']:.2f}x "
                    f"(goal <= {GOAL_RATIO}x: {_verdict(e['met'])})"
                )
        e = fg["fold_rss_1gb"]
        print(
            f"  {name}{e['what']}: max {_mb(e['max'])} at run {e['at_run']} ({e['items']} items): "
            f"{_verdict(e['met'])}"
        )
    for step in ("dataset", "featurize", "train"):
        e = g[step]
        if e["met"] is None:
            print(f"  {e['what']}: n/a ({e['note']})")
        else:
            print(
                f"  {e['what']}: run {e['last_run']} vs run {e['first_run']}: time {e['time_ratio']:.2f}x, "
                f"peak RSS {e['rss_ratio']:.2f}x (goal <= {GOAL_RATIO}x: {_verdict(e['met'])})"
            )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument(
        "--days",
        type=int,
        default=int(os.environ.get("BENCH_SCALE_DAYS", DEFAULT_DAYS)),
        help="daily runs; 365 for the full year [%(default)s]",
    )
    p.add_argument("--demo-size", type=int, default=3000, help="demo vacancies opened per day [%(default)s]")
    p.add_argument(
        "--first-day", type=int, default=60, help="the first run's simulated demo day [%(default)s]"
    )
    p.add_argument(
        "--step-days",
        type=int,
        default=1,
        help="simulated days between runs [%(default)s: daily]; more fills the training window in fewer "
        "runs (the window's rows as a year's, e.g. to size the dataset and training steps), with closes "
        "known only to within the step",
    )
    p.add_argument("--seed", type=int, default=7, help="the demo market's seed [%(default)s]")
    p.add_argument("--window-days", type=int, default=180, help="the training window [%(default)s]")
    p.add_argument(
        "--dataset-every",
        type=int,
        default=30,
        help="dataset step at every Nth run and the last (0: last only) [%(default)s]",
    )
    p.add_argument(
        "--train-every",
        type=int,
        default=30,
        help="featurize and train at every Nth run and the last (0: last only) [%(default)s]",
    )
    p.add_argument(
        "--candidates",
        default="all",
        help="trained at training checkpoints: all (the configured candidates and the baselines, as the "
        "pipeline), baselines, or names separated by commas [%(default)s]",
    )
    p.add_argument(
        "--history",
        choices=("auto", "fold", "rebuild"),
        default="auto",
        help="fold each run (fold_run/read_history), or rebuild all history (before the fold) [auto: fold if available]",
    )
    p.add_argument(
        "--before",
        default=BEFORE_REF,
        metavar="REF",
        help="also fold each run with the hhpulse of this git commit (or a src/ folder), side by side "
        "(its own history; none: skip) [%(default)s: the hand-written layout before the Delta table]",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="at the end, check the folded history against a rebuild from every raw run (history --verify)",
    )
    p.add_argument(
        "--rss-limit-gb",
        type=float,
        default=5.0,
        help="kill a step past this RSS, as a pod's limit [%(default)s]",
    )
    p.add_argument(
        "--store", default=None, help="store folder (default: a temporary one, removed at the end)"
    )
    p.add_argument("--keep-store", action="store_true", help="keep the temporary store")
    p.add_argument(
        "--checkpoint-only",
        action="store_true",
        help="collect nothing: run the dataset, featurize and train steps once on the runs in --store",
    )
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write the figures as JSON (rewritten after each run)"
    )
    args = p.parse_args(argv)
    if min(args.days, args.demo_size, args.window_days, args.step_days) < 1:
        p.error("--days, --demo-size, --window-days and --step-days must be at least 1")
    return args


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(f"bench_scale: terminated by signal {signum}")


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # kill the running step and clean up, as Ctrl-C does
    import importlib.util

    # the driver stays lean (no pandas): the collect process forked from it holds only the market
    has_fold = importlib.util.find_spec("hhpulse.data.history_store") is not None
    mode = args.history
    if mode == "auto":
        mode = "fold" if has_fold else "rebuild"
    elif mode == "fold" and not has_fold:
        raise SystemExit(
            "bench_scale: this hhpulse has no folded history (hhpulse.data.history_store); use --history rebuild"
        )
    candidates = _candidates(args.candidates)
    limit = int(args.rss_limit_gb * 2**30)
    owned = args.store is None
    root = Path(args.store or tempfile.mkdtemp(prefix="hhpulse-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hhpulse-bench-scale-work-"))
    settings = {
        "days": args.days,
        "demo_size": args.demo_size,
        "first_day": args.first_day,
        "step_days": args.step_days,
        "seed": args.seed,
        "window_days": args.window_days,
        "history": mode,
        "dataset_every": args.dataset_every,
        "train_every": args.train_every,
        "candidates": [c["name"] for c in candidates],
        "rss_limit_gb": args.rss_limit_gb,
        "before": None if args.before in ("", "none") else args.before,
        "store": str(root),
        "cores": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    doc: dict[str, Any] = {"settings": settings, "runs": [], "goals": None}
    print(
        f"{args.days} {'daily' if args.step_days == 1 else f'{args.step_days}-day'} demo runs of --demo-size {args.demo_size} into {root} on {os.cpu_count()} cores; "
        f"history: {mode}; window {args.window_days} days\n"
        "each step in a process of its own (peak RSS = its own VmHWM). The synthetic market is built by "
        "the driver, which forks the collect step: its share is shown apart (+market), since a pod collecting "
        "from hh.ru does not hold it.\n"
        f"dataset every {args.dataset_every or args.days} runs and at the last; featurize + train "
        f"({len(candidates)} candidates, one process each) every {args.train_every or args.days} runs "
        f"and at the last; the other runs skip them (shown as '-').",
        flush=True,
    )
    if args.checkpoint_only:
        if not args.store:
            raise SystemExit("bench_scale: --checkpoint-only needs --store (a store with runs)")
        from hhpulse.data.runs import list_runs
        from hhpulse.data.store import LocalStore

        row = {"run": len(list_runs(LocalStore(root))), "checkpoint_only": True}
        line = checkpoint_steps(row, root, work / "checkpoint", args, mode, candidates, limit)
        print(f"checkpoint on the {row['run']} runs in {root}{line}", flush=True)
        doc["runs"].append(row)
        _write_json(args.json, doc)
        shutil.rmtree(work, ignore_errors=True)
        return
    before_src = None
    before_root = work / "before-history"
    if settings["before"] and not args.checkpoint_only:
        before_src = extract_before(settings["before"], work)
        print(
            f"before: each run is also validated and folded by hhpulse at {settings['before']} "
            f"(its hand-written layout), into {before_root}",
            flush=True,
        )
    bare = _rss_now()
    try:
        for n in range(1, args.days + 1):
            day = args.first_day + (n - 1) * args.step_days
            row: dict[str, Any] = {"run": n, "day": day, "days": day - args.first_day + 1}
            market_s = _warm_market(args.seed, args.demo_size, day)
            cf = run_step(
                "collect",
                {"root": str(root), "day": day, "size": args.demo_size, "seed": args.seed, "bare_rss": bare},
                limit,
                fork=True,
            )
            row["collect"] = cf
            if not cf.get("error"):
                vf = run_step(
                    "validate_fold",
                    {"root": str(root), "run_id": cf["out"]["run_id"], "history": mode},
                    limit,
                )
                row["validate_fold"] = vf
            failed = cf.get("error") or row["validate_fold"].get("error")
            if failed:
                print(f"run {n:3d} day {day}: collect-and-fold FAILED: {failed}", flush=True)
                doc["runs"].append(row)
                break
            o, v = cf["out"], vf["out"]
            market_rss = o["market_rss"]
            row["items"] = o["items"]
            row["collect_rss"] = max(0, cf["peak_rss"] - market_rss)
            row["fold_seconds"] = o["collect_s"] + v["validate_s"] + v["fold_s"]
            row["fold_rss"] = max(row["collect_rss"], vf["peak_rss"])
            line = (
                f"run {n:3d} day {day:3d} {o['items']:6,d} items | collect+fold {row['fold_seconds']:6.1f}s "
                f"(collect {o['collect_s']:.1f}, validate {v['validate_s']:.1f}, fold {v['fold_s']:.1f}) "
                f"peak collect {_mb(row['collect_rss'])}, validate+fold {_mb(vf['peak_rss'])} "
                f"| +market {market_s + o['snapshot_s']:.1f}s {_mb(market_rss)}"
            )
            if before_src is not None:
                b = step_before(before_src, root, o["run_id"], before_root, 3600)
                row["before"] = b
                if b.get("error"):
                    line += f" | before: FAILED ({b['error']})"
                else:
                    row["before_fold_seconds"] = o["collect_s"] + b["validate_s"] + b["fold_s"]
                    row["before_fold_rss"] = max(row["collect_rss"], b["peak_rss"])
                    line += (
                        f" | before: collect+fold {row['before_fold_seconds']:6.1f}s (validate "
                        f"{b['validate_s']:.1f}, fold {b['fold_s']:.1f}) peak validate+fold {_mb(b['peak_rss'])}"
                    )
            if _checkpoint(n, args.days, args.dataset_every) or _checkpoint(n, args.days, args.train_every):
                train = _checkpoint(n, args.days, args.train_every)
                line += checkpoint_steps(
                    row, root, work / str(n), args, mode, candidates if train else None, limit
                )
            else:
                line += " | dataset - | train -"
            row["store_bytes"] = store_size(root)
            line += f" | store {_mb(row['store_bytes']['total'])}"
            print(line, flush=True)
            doc["runs"].append(row)
            doc["goals"] = goals(doc["runs"], args.window_days)
            _write_json(args.json, doc)
        sizes = (
            doc["runs"][-1]["store_bytes"]
            if doc["runs"] and "store_bytes" in doc["runs"][-1]
            else store_size(root)
        )
        print(
            f"\nstore on disk after {len(doc['runs'])} runs: {_mb(sizes['total'])} ("
            + ", ".join(f"{k} {_mb(v)}" for k, v in sorted(sizes.items()) if k != "total")
            + ")"
        )
        if before_src is not None:
            print(f"before: its history on disk: {_mb(store_size(before_root)['total'])}")
            doc["before_history_bytes"] = store_size(before_root)["total"]
        if args.verify and doc["runs"]:
            v = run_step("verify", {"root": str(root)}, limit)
            doc["verify"] = v
            print(
                f"history --verify: {v['out']['message'] if v.get('out') else 'FAILED: ' + str(v.get('error'))} "
                f"({v['seconds']:.0f} s, peak {_mb(v['peak_rss'])})",
                flush=True,
            )
        doc["goals"] = goals(doc["runs"], args.window_days)
        _print_goals(doc["goals"])
        doc["settings"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_json(args.json, doc)
        if args.json:
            print(f"figures: {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if owned and not args.keep_store:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
