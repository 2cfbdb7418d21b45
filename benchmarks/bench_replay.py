"""45 daily runs of the demo market replayed (``hhpulse replay``): time, and demand AUC against the oracle.

Baselines measured in the same run: the oracle AUC (the market's own cohort probabilities
scored on the same demand test set) for quality, and the goal's 3-minute budget for time.
``BENCH_REPLAY_DAYS`` changes the number of days (45 by default).
"""

from __future__ import annotations

import os
import resource
import tempfile

from benchmarks._common import mb, measured

BUDGET_SECONDS = 180.0


def _replay(root: str, days: int) -> dict:
    from hhpulse.data.store import LocalStore
    from hhpulse.flows.replay import replay_demo

    report = replay_demo(LocalStore(root), days=days)
    use = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_seconds"] = use.ru_utime + use.ru_stime
    return report


def main() -> None:
    import logging

    logging.getLogger("hhpulse").setLevel(logging.ERROR)
    days = int(os.environ.get("BENCH_REPLAY_DAYS", "45"))
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-replay-") as root:
        report, seconds, growth, peak = measured(lambda: _replay(root, days))
    dem, sal = report["demand"], report["salary"]
    print(f"{days} daily demo runs replayed on {os.cpu_count()} cores")
    print(
        f"  replay time      {seconds:8.1f} s   ({seconds / BUDGET_SECONDS:.2f}x the {BUDGET_SECONDS:.0f} s goal; "
        f"CPU {report['cpu_seconds']:.0f} s; peak RSS {mb(peak)})"
    )
    print("  by step          " + ", ".join(f"{k} {v:.1f}s" for k, v in report["seconds_by_step"].items()))
    ratio = dem.get("ratio_to_oracle")
    print(
        f"  demand test AUC  {dem['test_auc']:.3f} vs oracle {dem['oracle_auc']:.3f}: ratio "
        f"{'n/a' if ratio is None else f'{ratio:.3f}'} (goal >= {dem['goal_ratio']}: "
        f"{'met' if dem.get('meets_goal') else 'MISSED'})"
    )
    print(f"  demand test mix  {dem['test_mix']}  (missing: {dem['missing_test_cohorts'] or 'none'})")
    print(f"  demand train mix {dem['train_mix']}")
    print(
        f"  demand labels    {dem['label_sources']}; unresolved {dem['unresolved']}; "
        f"{100 * (dem.get('uncertain_share') or 0):.1f}% straddle an edge; {dem['pending']} pending"
    )
    print(f"  label accuracy   {dem['label_accuracy']} (against the market's true lifetimes)")
    print(f"  salary test AUC  {sal['test_auc']:.3f} ({sal['winner']}); test mix {sal['test_mix']}")
