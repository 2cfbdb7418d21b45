"""``hhpulse evaluate``: a bundle's metrics on any data that can be labelled (a drift check).

Rows that break the data contract are left out and counted on stderr (``--strict`` stops
instead), and a warning says when the data overlaps the rows the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys

from hhpulse.commands.train import add_rates_arg


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model bundle directory")
    p.add_argument(
        "--data",
        required=True,
        help="a store (DIR or s3://) or a file of API items (.jsonl[.gz]; - reads stdin)",
    )
    add_rates_arg(p)
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    p.add_argument(
        "--strict", action="store_true", help="fail (exit 2) when any row of a file breaks the data contract"
    )
    p.add_argument(
        "--report",
        default=None,
        help="write an HTML report: reliability diagrams and the cohort mix, before and after calibration",
    )


def overlap_warning(bundle, dataset) -> str | None:  # type: ignore[no-untyped-def]
    """A warning when the evaluated rows include rows the bundle was trained on."""
    ids = set()
    for td in dataset.tasks.values():
        ids.update(td.frame["id"].astype(str))
    overlap = bundle.training_overlap(ids)
    if overlap is None:
        return None
    seen, total = overlap
    if not seen:
        return None
    return (
        f"WARNING: {seen} of the {total} evaluated vacancies ({seen / total:.0%}) were in model "
        f"{bundle.version}'s training or validation data (a published refit: train, validation "
        "and test); these metrics are optimistic. "
        "Evaluate on data collected after the model was trained."
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.config import LabelConfig, SplitConfig
    from hhpulse.data.store import StoreError
    from hhpulse.flows.workflow import evaluate_bundle, load_data
    from hhpulse.model.bundle import BundleError, load_bundle
    from hhpulse.model.dataset import build_dataset
    from hhpulse.model.evaluate import data_profile, drift_report

    try:
        bundle = load_bundle(args.model)
        data = load_data(args.data, rates=args.rates)
        if data.summary():
            print(f"hhpulse evaluate: {data.summary()}", file=sys.stderr)
        if args.strict and data.report is not None and data.report.bad:
            print(
                f"hhpulse evaluate: --strict: {data.report.bad} rows break the data contract "
                f"({data.report.top_rules()})",
                file=sys.stderr,
            )
            return 2
        label_config = LabelConfig.from_dict(bundle.metadata["label_config"])
        dataset = build_dataset(data.history, data.rates_by_run, label_config, SplitConfig())
        metrics = evaluate_bundle(bundle, dataset, part=None)
    except (BundleError, StoreError, FileNotFoundError, ValueError) as exc:
        print(f"hhpulse evaluate: {exc}", file=sys.stderr)
        return 2
    warning = overlap_warning(bundle, dataset)
    if warning:
        print(warning, file=sys.stderr)
    drift = drift_report(
        bundle.metadata.get("profile", {}), data_profile({t: td.frame for t, td in dataset.tasks.items()})
    )
    if args.json:
        print(json.dumps({"metrics": metrics, "drift": drift}, ensure_ascii=False, indent=2, default=str))
        return 0
    print(f"model {bundle.version} on {args.data}")
    for task, m in metrics.items():
        auc = "n/a" if m["roc_auc_ovo"] is None else f"{m['roc_auc_ovo']:.3f}"
        print(
            f"  {task:<7} n={m['n']:<6} ROC AUC ovo {auc}  macro-F1 {m['f1_macro']:.3f}  accuracy {m['accuracy']:.3f}  log loss {m['log_loss']:.3f}"
        )
        mix = m["mix"]
        print(
            f"          top-label ECE {m['ece']:.3f}  Brier {m['brier']:.3f}  mean confidence {m['mean_confidence']:.3f}"
            f"  mix (predicted/true): "
            + ", ".join(f"{c} {mix['predicted'][c]:.3f}/{mix['true'][c]:.3f}" for c in mix["true"])
        )
        for note in m["notes"]:
            print(f"          note: {note}")
    print(
        f"  drift: {drift.get('level')} "
        + ", ".join(f"{k}={v:.3f}" for k, v in drift.items() if isinstance(v, float))
    )
    if dataset.summary.get("demand_proxy"):
        print("  WARNING: these demand labels use the age proxy (no closes in the data)")
    if warning:
        print(f"  {warning}")
    if args.report:
        from hhpulse.data.store import atomic_write_bytes
        from hhpulse.model.calibration import bundle_calibration
        from hhpulse.model.report import calibration_html

        body = calibration_html(
            bundle_calibration(bundle, dataset), where=f"every labelled row of {args.data}"
        )
        page = f"<html><body style='font-family:sans-serif'><h1>hhpulse model {bundle.version}</h1>{body}</body></html>"
        atomic_write_bytes(args.report, page.encode())
        print(f"  report -> {args.report}")
    return 0
