"""``hhpulse replay``: N daily runs of the demo market (or the runs in a store), then train and measure.

It shows how demand behaves before a schedule is trusted: labels by source, the cohort
mix of train and test, the test AUC, and for the demo the oracle AUC (the market's own
cohort probabilities on the same test set).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile

from hhpulse.commands.train import add_window_arg


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=int, default=45, help="daily demo runs to replay [%(default)s]")
    p.add_argument(
        "--step-days", type=int, default=1, help="simulated days between two demo runs [%(default)s]"
    )
    p.add_argument(
        "--demo-size",
        type=int,
        default=150,
        help="demo market size, as collect's: vacancies opened per simulated day (3000: about all of IT "
        "on hh.ru, ~65k open) [%(default)s]",
    )
    p.add_argument("--seed", type=int, default=7, help="demo market seed [%(default)s]")
    p.add_argument(
        "--store",
        default=None,
        help="replay the finished runs already in this store (DIR or s3://) instead of the demo market",
    )
    p.add_argument("--s3-endpoint", default="", help="S3/MinIO endpoint when --store is s3://")
    p.add_argument(
        "--out",
        default=None,
        help="keep the demo runs in this store folder (must be empty) [a temporary folder]",
    )
    p.add_argument("--candidates", default=None, help="candidates YAML [the packaged defaults]")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="XGBoost device [%(default)s]"
    )
    add_window_arg(p)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: argparse.Namespace) -> int:
    import time

    from hhpulse.config import load_candidates
    from hhpulse.replay import ReplayError, ReplaySettings, replay_demo, replay_store
    from hhpulse.store import open_store

    settings = ReplaySettings(
        candidates=load_candidates(args.candidates) if args.candidates else None,
        device=args.device,
        window_days=args.window_days or None,
    )
    if args.json:  # one JSON document on stdout, nothing else
        logging.getLogger("hhpulse").setLevel(logging.WARNING)

    def say(msg: str) -> None:
        print(f"replay: {msg}", file=sys.stderr if args.json else sys.stdout, flush=True)

    start = time.perf_counter()
    try:
        if args.store:
            report = replay_store(
                open_store(args.store, endpoint_url=args.s3_endpoint or None), settings=settings, progress=say
            )
        else:
            if args.days < 2 or args.step_days < 1 or args.demo_size < 1:
                print("hhpulse replay: --days >= 2, --step-days >= 1, --demo-size >= 1", file=sys.stderr)
                return 2
            with tempfile.TemporaryDirectory(prefix="hhpulse-replay-") as tmp:
                store = open_store(args.out or tmp)
                if args.out and store.list("raw/"):
                    print(
                        f"hhpulse replay: {store.uri()} already holds runs; pick an empty --out",
                        file=sys.stderr,
                    )
                    return 2
                report = replay_demo(
                    store,
                    days=args.days,
                    step_days=args.step_days,
                    daily_new=args.demo_size,
                    seed=args.seed,
                    settings=settings,
                    progress=say,
                )
    except ReplayError as exc:
        print(f"hhpulse replay: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, default=str))
    else:
        print_report(report)
    return 0


def _auc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _mix(m: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.items()) or "none"


def print_report(report: dict) -> None:  # type: ignore[type-arg]
    what = (
        f"{report['days']} demo runs, {report['step_days']} day(s) apart (SYNTHETIC market)"
        if report.get("source") == "demo"
        else f"{report['runs']} stored runs"
    )
    print(f"\nreplayed {what} in {report['seconds']:.0f}s: {report['vacancies']} vacancies in history")
    for task in ("salary", "demand"):
        r = report[task]
        print(
            f"\n{task}: winner {r['winner']}, test ROC AUC (OvO) {_auc(r['test_auc'])} on {r['test_rows']} rows"
        )
        if r.get("baseline"):
            print(
                f"  baseline {r['baseline']} (TF-IDF + LR): test ROC AUC (OvO) {_auc(r.get('baseline_test_auc'))}"
            )
        print(f"  labels by source: {_mix(r['label_sources'])}")
        if task == "salary":
            print(f"  left out: {_mix(r.get('left_out', {}))}")
        else:
            if r.get("proxy"):
                print(f"  DEMAND PROXY (age at collection, not time-to-close): {r.get('proxy_reason')}")
            print(f"  unresolved (no label): {_mix(r.get('unresolved', {}))}")
            print(
                f"  close-time uncertainty straddles a cohort edge: {100 * (r.get('uncertain_share') or 0):.1f}% of labels;"
                f" {r.get('pending', 0)} labelled rows too young to test on (pending)"
            )
        print(f"  split: {r['split']}")
        print(f"  train mix: {_mix(r['train_mix'])}")
        print(f"  test mix:  {_mix(r['test_mix'])}")
        if r.get("missing_test_cohorts"):
            print(f"  MISSING from the test set: {', '.join(r['missing_test_cohorts'])}")
        if r.get("missing_cohorts"):
            print(f"  no labels at all yet for: {', '.join(r['missing_cohorts'])}")
        if task == "demand" and "oracle_auc" in r:
            ratio = r.get("ratio_to_oracle")
            print(
                f"  oracle AUC {_auc(r['oracle_auc'])} (the market's own probabilities); model/oracle "
                f"{'n/a' if ratio is None else f'{ratio:.3f}'} "
                f"({'meets' if r.get('meets_goal') else 'misses'} the goal >= {r['goal_ratio']})"
            )
            print(f"  labels agreeing with the true lifetime: {r.get('label_accuracy')}")
    if report.get("timeline"):
        print("\nday by day (demand labels as history would have resolved them):")
        for day in report["timeline"]:
            print(
                f"  {day['collected_at'][:16]}  {day['vacancies']:>6} vacancies  "
                f"labels {_mix(day['cohorts'])}  unresolved {_mix(day['unresolved'])}"
            )
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.get("seconds_by_step", {}).items())
    print(f"\ntime by step: {steps}")
