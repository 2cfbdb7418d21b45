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
    p.add_argument(
        "--no-gate",
        dest="gate",
        action="store_false",
        help="skip the daily gate (a challenger trained every day, judged by the margin, bootstrap and live rules and three variants of the live rule)",
    )
    p.add_argument(
        "--gate-candidates",
        default=None,
        help="candidates YAML the daily gate trains [the packaged linear candidates, for speed]",
    )
    p.add_argument(
        "--margin", type=float, default=0.0, help="the gate's margin, as `hhpulse run --margin` [%(default)s]"
    )
    p.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="skip the live check (each day's champion predicting the day's new vacancies, logged and "
        "scored once they resolve)",
    )
    p.add_argument(
        "--live-retrain-every",
        type=int,
        default=1,
        help="with --no-gate, the live check's stand-in champion retrains every N runs [%(default)s]",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument(
        "-v",
        "--verbose",
        dest="show_logs",
        action="store_true",
        help="show the steps' INFO log lines [hidden: progress only, on stderr]",
    )


class Once(logging.Filter):
    """Passes each warning once, by where it was logged (a line that fires once a simulated day
    would fill the screen); counts the repeats it holds back."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int]] = set()
        self.repeats = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.pathname, record.lineno)
        if key in self.seen:
            self.repeats += 1
            return False
        self.seen.add(key)
        return True


def run(args: argparse.Namespace) -> int:
    import time

    from hhpulse.config import load_candidates
    from hhpulse.data.store import open_store
    from hhpulse.flows.replay import ReplayError, ReplaySettings, replay_demo, replay_store
    from hhpulse.flows.replay_live import LiveHook

    settings = ReplaySettings(
        candidates=load_candidates(args.candidates) if args.candidates else None,
        device=args.device,
        window_days=args.window_days or None,
    )
    quiet = not (args.show_logs or getattr(args, "verbose", False))  # progress only; -v for the steps' logs
    if quiet:
        logging.getLogger("hhpulse").setLevel(logging.WARNING)

    def say(msg: str) -> None:  # progress goes to stderr: stdout holds the report (or the JSON)
        print(f"replay: {msg}", file=sys.stderr, flush=True)

    from hhpulse.flows.replay_gate import GateHook

    gate_cands = load_candidates(args.gate_candidates) if args.gate_candidates else None
    if args.live_retrain_every < 1:
        print("hhpulse replay: --live-retrain-every >= 1", file=sys.stderr)
        return 2
    # the gate first: the live check serves the champion the gate's live rule leaves each day
    hooks: list = [GateHook(margin=args.margin, candidates=gate_cands, progress=say)] if args.gate else []
    if args.live:
        hooks.append(LiveHook(retrain_every=args.live_retrain_every))
    once = Once() if quiet else None  # a warning that every simulated day repeats is said once
    for handler in logging.getLogger().handlers if once else ():
        handler.addFilter(once)
    start = time.perf_counter()
    try:
        if args.store:
            report = replay_store(
                open_store(args.store, endpoint_url=args.s3_endpoint or None),
                settings=settings,
                progress=say,
                hooks=hooks,
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
                    hooks=hooks,
                )
    except ReplayError as exc:
        print(f"hhpulse replay: {exc}", file=sys.stderr)
        return 2
    finally:
        for hook in hooks:
            if hasattr(hook, "close"):  # the gate hook deletes its scratch bundles
                hook.close()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(once)
    report["seconds"] = round(time.perf_counter() - start, 2)
    if once is not None and once.repeats:
        say(f"{once.repeats} repeats of the warnings above were left out (-v shows every one)")
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
            if r.get("goal_not_judged"):
                verdict = f"goal >= {r['goal_ratio']} not judged: {r['goal_not_judged']}"
            else:
                verdict = f"{'meets' if r.get('meets_goal') else 'misses'} the goal >= {r['goal_ratio']}"
            print(
                f"  oracle AUC {_auc(r['oracle_auc'])} (the market's own probabilities); model/oracle "
                f"{'n/a' if ratio is None else f'{ratio:.3f}'} ({verdict})"
            )
            agree = ", ".join(
                f"{k} {100 * v:.1f}%" for k, v in sorted((r.get("label_accuracy") or {}).items())
            )
            print(f"  labels agreeing with the true lifetime: {agree or 'none'}")
    if report.get("timeline"):
        print("\nday by day (demand labels as history would have resolved them):")
        for day in report["timeline"]:
            print(
                f"  {day['collected_at'][:16]}  {day['vacancies']:>6} vacancies  "
                f"labels {_mix(day['cohorts'])}  unresolved {_mix(day['unresolved'])}"
            )
    if report.get("gate"):
        print_gate(report["gate"])
    live = report.get("live")
    if live:
        print_live(live, (report.get("demand") or {}).get("test_auc"))
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.get("seconds_by_step", {}).items())
    print(f"\ntime by step: {steps}")
    print(f"\n{closing_line(report)}")


def _ci(iv: dict | None) -> str:  # type: ignore[type-arg]
    return "" if not iv else f" [{100 * iv['confidence']:.0f}% CI {iv['low']:.3f}, {iv['high']:.3f}]"


def print_live(live: dict, held: float | None) -> None:  # type: ignore[type-arg]
    """The live check: the version-stratified live demand figure, per version and per week, and
    each champion's offline figure at publication beside its live one."""
    dem = live.get("demand") or {}
    print(
        f"\nlive: {live['served']} new vacancies predicted over {live['days']} runs by the champion of the "
        f"day ({live['champion']}), logged to served/"
    )
    oracle = ""
    if dem.get("oracle_auc") is not None:
        ratio = dem.get("ratio_to_oracle")
        oracle = f"; the oracle on the same rows {_auc(dem['oracle_auc'])} ({'n/a' if ratio is None else f'{ratio:.3f}'}x)"
    print(
        f"  demand: {dem.get('n', 0)} resolved since: ROC AUC (OvO) {_auc(dem.get('auc'))} version-stratified "
        f"(pooled over versions {_auc(dem.get('auc_pooled'))}){oracle}; accuracy {_auc(dem.get('accuracy'))}, "
        f"served {dem.get('first') or '-'} .. {dem.get('last') or '-'}; held-out test ROC AUC {_auc(held)}"
    )
    for c in live.get("champions") or []:
        young = " YOUNG HISTORY (not a forecast, not judged)" if c.get("young_history") else ""
        within = "" if c["within"] is None else (" within 0.05" if c["within"] else " OFF by more than 0.05")
        print(
            f"    {c['version']}: offline {_auc(c['offline_auc'])}{_ci(c.get('offline_interval'))}{young}; live "
            f"{_auc(c['live_auc'])} on {c['live_n']} (oracle {_auc(c.get('oracle_auc'))}){within}"
        )
    for w in dem.get("by_week") or []:
        print(
            f"    week of {w['week']}: {w['n']} resolved, ROC AUC {_auc(w.get('auc'))} (oracle {_auc(w.get('oracle_auc'))})"
        )
    stand = live.get("stand_in")
    if stand:
        print(
            f"  stand-in: {stand['trained']} bundles trained (linear candidates), "
            f"{stand['demand_proxy_days']} on the demand age proxy; the last one's held-out demand "
            f"test ROC AUC {_auc(stand['last_test_auc'])}"
        )
        for f in stand.get("failed", []):
            print(
                f"  stand-in training failed after run {f['run_id']} (the previous one served on): {f['error']}"
            )


def print_gate(g: dict) -> None:  # type: ignore[type-arg]
    """The daily gate: replacements, served AUC and live AUC per rule, and the goals."""
    days = g.get("days_with_a_challenger", 0)
    print(
        f"\ngate, applied after each run ({days} runs had a challenger; candidates: {', '.join(g['candidates'])}; "
        f"a winning challenger serves as {g.get('published', 'the held-out fit')}):"
    )
    for rule, n in g["replacements"].items():
        auc = g["served_auc"][rule]
        lv = (g.get("live") or {}).get(rule) or {}
        ratio = lv.get("ratio_to_oracle")
        mark = " (the pipeline's gate, served by the live check)" if rule == g.get("gate_rule") else ""
        print(
            f"  {rule}{mark}: {n} replacements; served ROC AUC (OvO), mean over the days: salary "
            f"{_auc(auc.get('salary'))}, demand {_auc(auc.get('demand'))}; live demand {_auc(lv.get('auc'))} "
            f"version-stratified on {lv.get('n', 0)} ({'n/a' if ratio is None else f'{ratio:.3f}'}x the oracle)"
        )
        print(f"    {g['rules'][rule]}")
    measured = ", ".join(f"{t} {n}" for t, n in g.get("days_measured", {}).items())
    print(
        f"  served AUC: each day's champion on that day's newest labelled rows it was not fitted on (days: {measured})"
    )
    goal = g["goal"]
    if goal["fewer_replacements"] is None:
        print("  goal not judged: the margin rule replaced no champion")
    else:
        auc_ok = ", ".join(
            f"{t} {'no lower' if ok else 'LOWER' if ok is False else 'not measured'}"
            for t, ok in goal["served_auc_no_lower"].items()
        )
        print(
            f"  goal ({goal['replacements']}, served AUC {goal['served_auc']}): "
            f"{'met' if goal.get('gate_met', goal['met']) else 'NOT met'} (fewer replacements: {'yes' if goal['fewer_replacements'] else 'no'}; {auc_ok})"
        )
    for key, text in (("live_ratio_met", "live_ratio"), ("champions_met", "champions")):
        ok = goal.get(key)
        extra = ""
        if key == "champions_met" and goal.get("champions_judged") is not None:
            extra = (
                f" (judged: {', '.join(goal['champions_judged']) or 'none'}; young history, not judged: "
                f"{', '.join(goal.get('champions_young') or []) or 'none'})"
            )
        print(f"  goal ({goal[text]}): {'not judged' if ok is None else 'met' if ok else 'NOT met'}{extra}")


def closing_line(report: dict) -> str:  # type: ignore[type-arg]
    """The replay's last line: what it found, in a sentence a user can act on."""
    runs = report.get("days") or report.get("runs") or 0
    g = report.get("gate")
    if g:
        goal = g["goal"]
        rule = g.get("gate_rule") or "live"
        old, new = g["replacements"].get("margin", 0), g["replacements"].get(rule, 0)
        if goal["fewer_replacements"] is None:
            return (
                f"In short: in these {runs} runs the margin rule never replaced the champion, so the gates "
                "cannot be told apart here; replay more days (--days 45) to compare them."
            )
        if goal.get("gate_met", goal["met"]):
            return (
                f"In short: the gate `hhpulse run` uses ({rule}) replaced the champion {new} times where the "
                f"margin rule did {old}, and served no lower ROC AUC: it is the better gate here, nothing to change."
            )
        lower = [t for t, ok in goal["served_auc_no_lower"].items() if ok is False]
        if not goal["fewer_replacements"]:
            return (
                f"In short: the gate `hhpulse run` uses ({rule}) replaced the champion {new} times and the "
                f"margin rule {old}: not a third as often on this market; to replace less often, raise "
                "`hhpulse run --margin`."
            )
        return (
            f"In short: the gate `hhpulse run` uses ({rule}) replaced the champion less often ({new} vs {old} "
            f"times) but served a lower {' and '.join(lower)} ROC AUC: it kept champions too long here; lower "
            "`hhpulse run --margin`, or replay more days before trusting it."
        )
    demand = report.get("demand") or {}
    if demand.get("proxy"):
        return (
            f"In short: after {runs} runs demand still learns from the age proxy (too few closes seen): "
            "replay more days (--days) before reading its figures."
        )
    sal = _auc((report.get("salary") or {}).get("test_auc"))
    return (
        f"In short: after {runs} runs the held-out test ROC AUC is {sal} for salary and "
        f"{_auc(demand.get('test_auc'))} for demand (0.5 is chance)."
    )
