"""``hhpulse monitor``: the served log since the last run and in total, against the champion.

Volume, the served cohort mix against the training mix, input drift (length PSI, unknown
tokens) and live demand accuracy (served predictions whose vacancy has since resolved in the
history). Flags a drift by the thresholds below; see :mod:`hhpulse.watch.monitor`.
Looking is read-only: only ``--advance`` (what the pipeline's monitor step does) saves the
report and moves the "since the last run" watermark.
Exit status: 0, or 3 with ``--fail-on-drift`` when a drift is flagged; 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from hhpulse.config import DEFAULT_SETTLE_SECONDS, THRESHOLD_HELP, Thresholds


def configure(p: argparse.ArgumentParser) -> None:
    d = Thresholds()
    p.add_argument(
        "--store", default=None, help="the store (DIR or s3://) [$HHPULSE_STORE or .hhpulse/store]"
    )
    p.add_argument("--s3-endpoint", default="", help="S3/MinIO endpoint when --store is s3://")
    p.add_argument(
        "--now",
        default=None,
        help="the end of the windows as ISO-8601 (e.g. a replay's simulated time) [the clock]",
    )
    p.add_argument(
        "--advance",
        action="store_true",
        help="save the report and move the 'since the last run' watermark, as the pipeline's monitor "
        "step does [look only: change nothing]",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="leave the newest seconds out: the sink may not have flushed them "
        f"[{DEFAULT_SETTLE_SECONDS} with --advance, else 0]",
    )
    p.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # the default now
    g = p.add_argument_group("thresholds (a drift is flagged at or above each)")
    for name, value in d.to_dict().items():
        g.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(value),
            default=value,
            help=f"{THRESHOLD_HELP[name]} [%(default)s]",
        )
    p.add_argument("--fail-on-drift", action="store_true", help="exit 3 when a drift is flagged")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    th = Thresholds(**{name: getattr(args, name) for name in Thresholds().to_dict()})
    bad = [k for k, v in th.to_dict().items() if v < 0]
    if bad:
        raise ValueError(f"thresholds must not be negative: {', '.join(bad)}")
    return th


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.store import StoreError, open_store
    from hhpulse.watch.monitor import dump, run_monitor
    from hhpulse.watch.served import ServedLogError, parse_time

    try:
        th = thresholds_from(args)
        now = parse_time(args.now) if args.now else None
        store = open_store(args.store, endpoint_url=args.s3_endpoint or None)
        report = run_monitor(
            store,
            now=now,
            settle_seconds=args.settle_seconds,
            thresholds=th,
            save=args.advance and not args.dry_run,
        )
    except (ValueError, ServedLogError, StoreError) as exc:
        print(f"hhpulse monitor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(dump(report))
    else:
        print_report(report)
    return 3 if args.fail_on_drift and report["drift"] else 0


def _f(v: object) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def print_report(report: dict) -> None:  # type: ignore[type-arg]
    from hhpulse.words import plural

    champ = report.get("champion") or {}
    print(
        f"served log up to {report['until']} (the last run's watermark: {report.get('since') or 'none, first run'})"
    )
    if report["total"]["volume"]["records"] == 0:
        print(
            "no served predictions in the store: `hhpulse serve --store` logs them there, and on a "
            "cluster KServe's logger does, through `hhpulse logsink`"
        )
    print(
        f"champion: {champ.get('version') or 'none'}; reference: {champ.get('rows', 0)} rows ({champ.get('rows_from', 'none')})"
    )
    if report.get("bad_batches"):
        print(f"UNREADABLE batches left out: {len(report['bad_batches'])}")
        for b in report["bad_batches"][:5]:
            print(f"  {b}")
    for w, title in (("since_last_run", "since the last run"), ("total", "in total")):
        r = report[w]
        v = r["volume"]
        print(
            f"\n{title}: {plural(v['records'], 'prediction')} in {plural(v['requests'], 'request')}, "
            f"{v['with_id']} with a vacancy id"
        )
        if v["records"]:
            top = sorted(v["model_versions"].items(), key=lambda kv: -kv[1])
            more = f" and {len(top) - 3} more" if len(top) > 3 else ""
            versions = ", ".join(f"{k} {n}" for k, n in top[:3]) + more
            print(f"  from {v['first']} to {v['last']}; model versions: {versions}")
        for t, m in r["cohort_mix"].items():
            mean = ", ".join(f"{c} {x:.2f}" for c, x in m["served_mean"].items())
            train = ", ".join(f"{c} {x:.2f}" for c, x in m["train"].items()) or "n/a"
            print(f"  {t} mix served {mean or 'n/a'} | training {train} | PSI {_f(m['psi'])}")
        i = r["input"]
        print(
            f"  input: length PSI {_f(i['length_psi'])}, mean length {_f(i['mean_length'])}; unknown tokens "
            f"{_f(i['unseen_share'])} (training {_f(i['unseen_reference'])})"
        )
        live = r.get("live_demand")
        if live is None:
            print("  live demand: no history in the store")
        else:
            print(
                f"  live demand: {live['n']} of {live['served_ids']} served vacancies resolved; ROC AUC (OvO) "
                f"{_f(live['auc'])} (version-stratified; pooled {_f(live.get('auc_pooled'))}), accuracy "
                f"{_f(live['accuracy'])}"
                + (
                    f", served {live['first']} .. {live['last']}; labels {live['labels']}"
                    if live["n"]
                    else ""
                )
            )
    base = (champ.get("test_auc") or {}).get("demand")
    print(f"\nthe champion's held-out demand test ROC AUC (OvO), after calibration: {_f(base)}")
    if report["flags"]:
        print("DRIFT flagged:")
        for f in report["flags"]:
            print(f"  {f['window']}: {f['name']} {f['value']} >= {f['threshold']} ({f['detail']})")
    else:
        print("no drift flagged")
    if report.get("key"):
        print(f"report: {report['key']} (the watermark moved to {report['until']})")
    else:
        print("looked only: nothing saved, the watermark stays (--advance saves and moves it)")
