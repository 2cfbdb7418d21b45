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
    p.add_argument(
        "--selection",
        choices=("both", "all_fields"),
        default="both",
        help="how the winner is chosen on validation: both = the mean of the primary metric with all "
        "fields and with responsibility alone; all_fields = with all fields only [%(default)s]",
    )
    p.add_argument("--random-split", action="store_true", help="random instead of time-ordered split")
    p.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="write the held-out fit (trained on the training split only) instead of refitting the "
        "winners on train + validation + test for the bundle [refit]",
    )
    p.add_argument(
        "--keep-heldout",
        default=None,
        metavar="DIR",
        help="also write the held-out fit's bundle (the one the figures measure) to DIR",
    )
    add_window_arg(p)
    p.add_argument(
        "--as-of",
        type=int,
        default=None,
        metavar="VERSION",
        help="train on the history as it was at this version of its table (time travel; a model card "
        "names the version it was trained on: the same version and --window-days give the same "
        "training set) [the latest]",
    )


def add_window_arg(p: argparse.ArgumentParser) -> None:
    """``--window-days``, shared by ``train`` and ``run``."""
    from hhpulse.config import DEFAULT_WINDOW_DAYS

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
        print(f"\n{task}: winner {res.winner} (by {res.selection_rule()})")
        print(
            f"  {'candidate':<22} {'val AUC':>8} {'val resp':>9} {'score':>7} {'test AUC':>9} {'test resp':>10} "
            f"{'test F1':>8} {'seconds':>8}"
        )
        for name, r in sorted(res.candidates.items()):
            m = r["metrics"]

            def g(part: str, key: str, m: dict = m) -> str:
                v = m.get(part, {}).get(key)
                return "n/a" if v is None else f"{v:.3f}"

            mark = "*" if name == res.winner else " "
            sc = r.get("selection_score")
            print(
                f"{mark} {name:<22} {g('val', 'roc_auc_ovo'):>8} {g('val_resp', 'roc_auc_ovo'):>9} "
                f"{'n/a' if sc is None else f'{sc:.3f}':>7} {g('test', 'roc_auc_ovo'):>9} "
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
            f"\n{task}: held-out fit calibrated ({c['method']}, temperature {c['temperature']:.3f}) on validation; test "
            f"ECE {b['ece']:.3f} -> {a['ece']:.3f}, Brier {b['brier']:.3f} -> {a['brier']:.3f}, "
            f"log loss {b['log_loss']:.3f} -> {a['log_loss']:.3f}, "
            f"mix error {b['mix']['max_abs_error']:.3f} -> {a['mix']['max_abs_error']:.3f}"
        )


def print_fits(bundle_dir) -> None:  # type: ignore[no-untyped-def]
    """Which fit the figures measure and which fit the bundle holds (rows, published calibrator)."""
    import json
    from pathlib import Path

    metrics = json.loads((Path(bundle_dir) / "metrics.json").read_text(encoding="utf-8"))
    fits = metrics.get("fits")
    if not fits:
        print("\nthe bundle holds the held-out fit (--no-refit): the model the figures above measure")
        return
    print("\nthe figures above measure the held-out fit; the bundle holds the winners refitted on every row:")
    for task, f in fits.items():
        parts, cal = f["measured"]["parts"], metrics.get("published_calibration", {}).get(task, {})
        print(
            f"  {task}: held-out fit on {parts['train']['rows']} rows (val {parts['val']['rows']}, test "
            f"{parts['test']['rows']}); published fit on {f['published']['rows']} rows; calibrator "
            f"{cal.get('method')} on out-of-fold predictions, prior rule {cal.get('prior_rule')!r}"
        )


def run(args: argparse.Namespace) -> int:
    from hhpulse.config import ConfigError, SplitConfig, load_candidates
    from hhpulse.data.sources import SourceError
    from hhpulse.data.store import StoreError
    from hhpulse.flows.workflow import load_data, train_from_history

    try:
        if args.window_days < 0:
            raise ValueError(f"--window-days must be >= 0, got {args.window_days}")
        if args.as_of is not None and args.as_of < 0:
            raise ValueError(f"--as-of must be a table version (>= 0), got {args.as_of}")
        data = load_data(
            args.data, rates=args.rates, window_days=args.window_days or None, version=args.as_of
        )
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
            selection=args.selection,
            synthetic=data.synthetic,
            history_window=data.window,
            refit=args.refit,
            keep_heldout=args.keep_heldout,
        )
    except (ConfigError, StoreError, SourceError, FileNotFoundError, ValueError) as exc:
        print(f"hhpulse train: {exc}", file=sys.stderr)
        return 2
    if data.window is not None:
        from hhpulse.data.history_store import describe_window

        print(f"history window: {describe_window(data.window)}; {data.window['vacancies']} vacancies read")
    print_results(report.results)
    print_calibration(report.bundle_dir)
    if report.summary.get("demand_proxy"):
        print("\nWARNING: demand labels used the AGE PROXY (no closes in the data); see the model card.")
    print_fits(report.bundle_dir)
    print(f"\nbundle {report.version} -> {report.bundle_dir}")
    if report.heldout_dir and report.refit:
        print(f"held-out fit (the one measured above) -> {report.heldout_dir}")
    return 0
