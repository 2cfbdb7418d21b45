"""``hhpulse run``: the whole pipeline on this machine with kfp.local (what ``make run`` does)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hhpulse.commands.collect import add_source_args, source_from_args
from hhpulse.commands.train import add_window_arg


def configure(p: argparse.ArgumentParser) -> None:
    add_source_args(p, pipeline=True)
    p.add_argument(
        "--allow-mixed-data",
        action="store_true",
        help="add real data to a store of SYNTHETIC demo data, or the other way round (refused otherwise)",
    )
    p.add_argument("--store", default=".hhpulse/store", help="local store folder (or s3://) [%(default)s]")
    p.add_argument("--s3-endpoint", default="", help="S3/MinIO endpoint when --store is s3://")
    p.add_argument(
        "--max-bad-fraction", type=float, default=0.2, help="data-contract threshold [%(default)s]"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="how much the challenger must beat the champion by [%(default)s]",
    )
    p.add_argument(
        "--ece-margin",
        type=float,
        default=0.02,
        help="refuse a challenger whose top-label ECE is worse than the champion's by more [%(default)s]",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="XGBoost device [%(default)s]"
    )
    p.add_argument("--candidates", default=None, help="candidates YAML [the packaged defaults]")
    add_window_arg(p)
    p.add_argument(
        "--pipeline-root",
        default=None,
        help="keep kfp.local's artifacts in this folder [a workspace per run next to the store, "
        "removed when the run ends]",
    )
    p.add_argument(
        "-v",
        "--verbose",
        dest="show_logs",
        action="store_true",
        help="show every step's full log as it runs [one line per step; the logs go to the run's folder]",
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.config import ConfigError, load_candidates
    from hhpulse.data.collect import check_data_kind
    from hhpulse.data.sources import FileSource, SourceError
    from hhpulse.data.store import StoreError, open_store

    # the arguments are checked here, before any step runs, by the same code as `collect`'s
    try:
        store = open_store(args.store, endpoint_url=args.s3_endpoint or None)
        source = source_from_args(args)
        check_data_kind(store, source.synthetic, allow_mixed=args.allow_mixed_data)
        cands = [c.to_dict() for c in load_candidates(args.candidates)] if args.candidates else None
    except (SourceError, StoreError, ConfigError) as exc:
        print(f"hhpulse run: {exc}", file=sys.stderr)
        return 2
    import os

    from pipelines.local import PipelineFailed, RunStopped, run_local

    from hhpulse.hh.client import CONTACT_ENV
    from hhpulse.model.registry import champion

    params = {
        # the steps run in other processes (or containers): give them the file's absolute path
        "source": f"file:{source.path.resolve()}" if isinstance(source, FileSource) else args.source,
        "queries": args.queries or [],
        "area": args.area or "",
        "contact": args.contact or os.environ.get(CONTACT_ENV) or "",  # "": the client's default
        "demo_size": args.demo_size,
        "allow_mixed_data": args.allow_mixed_data,
        "max_bad_fraction": args.max_bad_fraction,
        "margin": args.margin,
        "ece_margin": args.ece_margin,
        "device": args.device,
        "s3_endpoint": args.s3_endpoint,
        "window_days": args.window_days,
    }
    if cands is not None:
        params["xgb_candidates"] = [c for c in cands if c["kind"] == "xgboost"]
        params["linear_candidates"] = [c for c in cands if c["kind"] != "xgboost"]
    before = champion(store)
    out = sys.stdout  # the user's stream: kfp.local's own output goes to the run's log
    show_logs = bool(args.show_logs or getattr(args, "verbose", False))
    print(
        f"running the hhpulse pipeline locally (kfp.local) with source {args.source!r} into {store.uri()}"
        + (f"; current champion {before.version}" if before else "; no champion yet"),
        flush=True,
    )
    if not show_logs:
        print("steps (their full logs: pipeline.log in the run's folder, or -v to see them here):")

    def on_step(step) -> None:  # type: ignore[no-untyped-def]
        if not show_logs:
            out.write(step.line() + "\n")
            out.flush()

    try:
        result = run_local(
            args.store,
            pipeline_root=args.pipeline_root,
            on_step=on_step,
            echo=out if show_logs else None,
            **params,
        )
    except PipelineFailed as exc:
        print(f"\nhhpulse run: the pipeline failed: {exc}", file=sys.stderr)
        if exc.result.get("outcome"):
            print(f"  outcome:  {store.uri(exc.result['outcome'])}", file=sys.stderr)
        print(f"  log:      {exc.result['log']}", file=sys.stderr)
        return 1
    except RunStopped as exc:
        print(f"\nhhpulse run: {exc}", file=sys.stderr)
        if exc.result.get("outcome"):
            print(f"  outcome:  {store.uri(exc.result['outcome'])}", file=sys.stderr)
        print(f"  log:      {exc.result['log']}", file=sys.stderr)
        return 128 + exc.signum
    after = champion(store)
    print(f"\npipeline finished in {result['seconds']:.0f}s")
    _summary(store, before, after, args.window_days, own=result)
    if result.get("report"):
        print(f"  report:       {result['report']}   (open it in a browser)")
    print(f"  log:          {result['log']}")
    if after is not None:
        _next_steps(args.store, store.uri())
    return 0


def _own_verdict(store, gate):  # type: ignore[no-untyped-def]
    """This run's gate verdict: ``gates/<its version>.json`` (the gate's own metadata when the
    file cannot be read), or None when its gate did not run."""
    if not gate or not gate.get("version"):
        return None
    try:
        return store.get_json(f"gates/{gate['version']}.json")
    except Exception:  # the summary must never hide a successful run
        return dict(gate)


def cli_command() -> str:
    """How to call this ``hhpulse`` from the user's shell: ``hhpulse`` when the PATH finds this
    one, else the path of its script in the virtualenv (``.venv/bin/hhpulse``)."""
    import os
    import shutil

    script = os.path.join(os.path.dirname(sys.executable), "hhpulse")
    if not os.path.isfile(script):
        return f"{sys.executable} -m hhpulse.cli"
    found = shutil.which("hhpulse")
    if found and os.path.samefile(found, script):
        return "hhpulse"
    local = os.path.join(".venv", "bin", "hhpulse")  # the Makefile's virtualenv, maybe a symlink
    if os.path.isfile(local) and os.path.samefile(local, script):
        return local
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else script


def _next_steps(store_arg: str, store_uri: str) -> None:
    """The closing lines: commands that work as printed, from this shell."""
    import os

    hh = cli_command()
    try:
        make = "\nserve:" in Path("Makefile").read_text(encoding="utf-8") and os.path.isdir(".venv")
    except OSError:
        make = False
    alt = f"{hh} serve --store {store_uri}"
    watch = f"{hh} monitor --store {store_uri}"
    store_var = "" if store_arg == ".hhpulse/store" else f" STORE={store_arg}"
    if make:
        print(f"\nserve it:  make serve{store_var}   (or: {alt})")
    else:
        print(f"\nserve it:  {alt}")
    print(
        f'then:      {hh} request --url http://127.0.0.1:8080 --text "Разработка backend-сервисов на Python"'
    )
    watch = f"make monitor{store_var}   (or: {watch})" if make else watch
    print(f"watch it:  {watch}")
    print("           (what serve answered: serve logs every prediction to the store)")
    if hh.endswith("/hhpulse"):
        print(
            f"           (plain `hhpulse` works once the virtualenv is active: . {hh[: -len('hhpulse')]}activate)"
        )


DATA_TAGS = {
    "synthetic": "SYNTHETIC: the demo market (hhpulse's emulator), not hh.ru data",
    "real": "real hh.ru data",
    "mixed": "MIXED: SYNTHETIC demo data and real hh.ru data in one store (--allow-mixed-data)",
}


def _summary(store, before, after, window_days: int = 0, own=None) -> None:  # type: ignore[no-untyped-def]
    """The closing summary, of this run only: ``own`` is what its own steps returned
    (``raw_run``, ``gate``, ``published``; see :func:`pipelines.local.run_local`), never the
    store's newest raw run or gate file, which another run may have written meanwhile."""
    from hhpulse.data.collect import store_data_kind
    from hhpulse.data.history_store import TABLE_KEY, describe_window, load_state, window_summary
    from hhpulse.words import plural

    kind = store_data_kind(store)
    if kind:
        print(f"  data:         {DATA_TAGS.get(kind, kind)}")
    own = own or {}
    last = own.get("raw_run")
    if last:
        print(f"  raw run:      {store.uri(f'raw/{last}/')}")
        print(f"  validation:   {store.uri(f'raw/{last}/validation.md')}")
    state, version = load_state(store)
    if state:
        counts = state["counts"]
        print(
            f"  history:      {store.uri(TABLE_KEY)} ({plural(counts['vacancies'], 'vacancy', 'vacancies')}, "
            f"{counts['open']} open, {plural(len(state['runs']), 'run')} folded; Delta table version {version})"
        )
        print(f"  trained on:   {describe_window(window_summary(store, window_days or None))}")
    verdict = _own_verdict(store, own.get("gate"))
    if verdict:
        lines = verdict.get("lines") or [verdict["reason"]]
        head = (
            f"  gate:         {verdict['version']} vs champion {verdict.get('champion_version') or 'none'}:"
        )
        if len(lines) == 1:  # e.g. the first model: "no champion yet"
            print(f"{head} {lines[0]}")
        else:
            print(head)
            for line in lines:
                print(f"                {line}")
    mine = verdict["version"] if verdict and own.get("published") else None  # this run published it
    compared = (verdict.get("champion_version") or None) if verdict else (before.version if before else None)
    now = after.version if after is not None else None
    meanwhile = f" (the champion is now {now}: another run promoted it meanwhile)"
    if mine is not None:
        if compared is None:
            line = f"{mine} (first model: no champion to compare with)"
        else:
            line = f"{mine} replaced {compared}"
        print(f"  champion:     {line}" + (meanwhile if now != mine else ""))
    elif verdict is not None and compared is not None:
        line = f"{compared} kept: the new challenger did not beat it"
        print(f"  champion:     {line}" + (meanwhile if now != compared else ""))
    elif after is None:
        print("  no champion was published")
    else:
        print(f"  champion:     {now} (this run published none)")
    shown = mine or now
    if shown is not None:
        uri = store.uri(f"models/hhpulse/{shown}")
        print(f"  model:        {uri}")
        print(f"  model card:   {uri}/model_card.md")
        print(f"  metrics:      {uri}/metrics.json")
        from hhpulse.flows.deploy import manifest_key

        manifest = manifest_key(shown)
        if store.exists(manifest):
            print(f"  manifest:     {store.uri(manifest)} (rendered, not applied: no cluster)")
    import contextlib

    from hhpulse.model.evaluate import served_auc

    def _auc(x) -> str:  # type: ignore[no-untyped-def]
        return "n/a" if x is None else f"{x:.3f}"

    def _figures() -> None:
        """Each task's test figure, the challenger's (after calibration: the probabilities it
        serves) on this run's whole test set, and beside it both models on the rows the champion
        was never fitted on (the gate's figures: the champion's on rows it saw would flatter it);
        a task not to rely on, said plainly; and where each task's labels came from."""
        if verdict is None:  # no gate ran (e.g. the run failed before it): the champion's own figures
            if after is None:
                return
            metrics = store.get_json(f"models/hhpulse/{after.version}/metrics.json")
            for task in ("salary", "demand"):
                auc, which = served_auc(metrics[task], (metrics.get("calibration") or {}).get(task))
                print(
                    f"  {task:<7} champion {after.version} ({metrics[task]['winner']}), at publication: "
                    f"test ROC AUC (OvO) {_auc(auc)} {which}"
                )
            return
        champ = verdict.get("champion_version")
        tasks = verdict.get("tasks", {})
        rows = verdict.get("test_rows") or {}
        for task in ("salary", "demand"):
            win = (verdict.get("winners") or {}).get(task, "?")
            n = f" on {plural(rows[task], 'test row')}" if rows.get(task) else ""
            print(
                f"  {task:<7} challenger {verdict['version']} ({win}): test ROC AUC (OvO) "
                f"{_auc(verdict['challenger_test'].get(task))} after calibration{n}"
            )
            if not champ:
                continue
            tv = tasks.get(task, {})
            iv = tv.get("interval")
            if iv:
                left = (
                    f"; the {plural(iv['left_out'], 'row')} it was fitted on left out"
                    if iv.get("left_out")
                    else ""
                )
                print(
                    f"  {'':<7} on the {plural(iv['rows'], 'test row')} champion {champ} never saw: "
                    f"challenger {_auc(iv['challenger'])}, champion {_auc(iv['champion'])}{left}"
                )
            else:
                why = tv.get("reason") or tv.get("status") or "not compared"
                print(f"  {'':<7} champion {champ}: not compared on this test set ({why})")
        for task, c in (verdict.get("caveats") or {}).items():
            if not c.get("reliable", True):
                first, *more = c["caveats"] or ["see the model card"]
                print(f"  DO NOT RELY ON {task.upper()}: {first}")
                for line in more:
                    print(f"  {'':<14}{line}")
        head = "labels:"
        label_lines = verdict.get("label_lines") or {}
        for task in (t for t in ("salary", "demand") if t in label_lines):
            for i, line in enumerate(label_lines[task]):
                print(f"  {head:<14}{task + ':' if i == 0 else '':<8}{line}")
                head = ""

    with contextlib.suppress(Exception):  # the summary must never hide a successful run
        _figures()
    with contextlib.suppress(Exception):
        from hhpulse.watch.monitor import latest_report, summary_lines

        for line in summary_lines(latest_report(store)):
            print(f"  {line}")
