"""``hhpulse train``: train both tasks' candidates and write a model bundle."""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="a store (DIR or s3://bucket/prefix) or a file of API items (.jsonl[.gz]; - reads stdin)",
    )
    p.add_argument("--out", required=True, help="the bundle directory to write")
    add_rates_arg(p)
    p.add_argument(
        "--candidates", default=None, help="candidates YAML [the packaged defaults/candidates.yaml]"
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="XGBoost device [%(default)s]"
    )
    p.add_argument(
        "--primary", default="roc_auc_ovo", help="metric that picks the winner on validation [%(default)s]"
    )
    p.add_argument("--random-split", action="store_true", help="random instead of time-ordered split")
    add_window_arg(p)


def add_window_arg(p: argparse.ArgumentParser) -> None:
    """``--window-days``, shared by ``train`` and ``run``."""
    from hhpulse.history_store import DEFAULT_WINDOW_DAYS

    p.add_argument(
        "--window-days",
        type=int,
        default=DEFAULT_WINDOW_DAYS,
        metavar="DAYS",
        help="train on the open vacancies plus those closed in the DAYS before the newest run; "
        "0 reads all of history (a store --data only) [%(default)s]",
    )


def add_rates_arg(p: argparse.ArgumentParser) -> None:
    """``--rates``, shared by ``train`` and ``evaluate``."""
    p.add_argument(
        "--rates",
        default=None,
        metavar="DICTIONARIES_JSON",
        help="currency rates for a file --data: a saved GET https://api.hh.ru/dictionaries "
        "[built-in approximate rates]",
    )


def print_results(results) -> None:  # type: ignore[no-untyped-def]
    for task, res in results.items():
        print(f"\n{task}: winner {res.winner} (by validation {res.primary})")
        print(
            f"  {'candidate':<22} {'val AUC':>8} {'test AUC':>9} {'test resp':>10} {'test F1':>8} {'seconds':>8}"
        )
        for name, r in sorted(res.candidates.items()):
            m = r["metrics"]

            def g(part: str, key: str, m: dict = m) -> str:
                v = m.get(part, {}).get(key)
                return "n/a" if v is None else f"{v:.3f}"

            mark = "*" if name == res.winner else " "
            print(
                f"{mark} {name:<22} {g('val', 'roc_auc_ovo'):>8} {g('test', 'roc_auc_ovo'):>9} "
                f"{g('test_resp', 'roc_auc_ovo'):>10} {g('test', 'f1_macro'):>8} {r['info'].get('train_seconds', 0):>8.1f}"
            )
        if res.baseline:
            print(
                f"  ({res.baseline}: TF-IDF + logistic regression without field dropout, trained every run; "
                "it wins when no candidate ranks at least as well on validation)"
            )


def print_calibration(bundle_dir) -> None:  # type: ignore[no-untyped-def]
    """The winners' test ECE, Brier and largest cohort-mix error, before and after calibration."""
    import json
    from pathlib import Path

    cal = json.loads((Path(bundle_dir) / "metrics.json").read_text(encoding="utf-8")).get("calibration", {})
    for task, c in cal.items():
        test = c.get("test")
        if not test:
            continue
        b, a = test["before"], test["after"]
        print(
            f"\n{task}: calibrated ({c['method']}, temperature {c['temperature']:.3f}) on validation; test "
            f"ECE {b['ece']:.3f} -> {a['ece']:.3f}, Brier {b['brier']:.3f} -> {a['brier']:.3f}, "
            f"log loss {b['log_loss']:.3f} -> {a['log_loss']:.3f}, "
            f"mix error {b['mix']['max_abs_error']:.3f} -> {a['mix']['max_abs_error']:.3f}"
        )


def run(args: argparse.Namespace) -> int:
    from hhpulse.config import ConfigError, SplitConfig, load_candidates
    from hhpulse.hh.sources import SourceError
    from hhpulse.store import StoreError
    from hhpulse.workflow import load_data, train_from_history

    try:
        if args.window_days < 0:
            raise ValueError(f"--window-days must be >= 0, got {args.window_days}")
        data = load_data(args.data, rates=args.rates, window_days=args.window_days or None)
        if data.summary():
            print(f"hhpulse train: {data.summary()}", file=sys.stderr)
        report = train_from_history(
            data.history,
            data.rates_by_run,
            args.out,
            split_config=SplitConfig(random=args.random_split),
            candidates=load_candidates(args.candidates),
            device=args.device,
            primary=args.primary,
            synthetic=data.synthetic,
            history_window=data.window,
        )
    except (ConfigError, StoreError, SourceError, FileNotFoundError, ValueError) as exc:
        print(f"hhpulse train: {exc}", file=sys.stderr)
        return 2
    if data.window is not None:
        from hhpulse.history_store import describe_window

        print(f"history window: {describe_window(data.window)}; {data.window['vacancies']} vacancies read")
    print_results(report.results)
    print_calibration(report.bundle_dir)
    if report.summary.get("demand_proxy"):
        print("\nWARNING: demand labels used the AGE PROXY (no closes in the data); see the model card.")
    print(f"\nbundle {report.version} -> {report.bundle_dir}")
    return 0
