"""The scripted newcomer run: a new user's second hour, checked end to end.

    make newcomer                     # or: .venv/bin/python tests/newcomer.py [--workdir DIR] [--keep]

What a new user does, through the Makefile, into stores of its own under a work folder (the
checkout's .hhpulse is not touched): ``make run`` twice on the demo market; ``make run`` on the
real dump (../shared/data/hh/vacancies_dev.api.jsonl.gz); ``make serve`` on the real store;
30 requests of real vacancies (with their ids) over HTTP; ``make monitor``. Then it checks
what a careful user would:

* monitor sees its own 30 predictions, and looking moved no watermark;
* each run's summary, its report and (when it published) its model card agree on every
  figure, rule, data tag and unreliable task they name, and the card's sentences agree with
  the numbers beside them (tests/agreement.py);
* the demo is tagged SYNTHETIC and the dump real, wherever they are named; the second demo
  run shows the champion only on rows it never saw; the real dump's demand, at chance, is said
  plainly, and ``/v1/models/hhpulse`` marks it unreliable;
* kfp.local left no workspace behind.

It prints one line per check and exits 1 if any failed. Not part of ``make test`` (it trains on
the whole dump: minutes); the whole-pipeline test checks the same agreement on the demo.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agreement import card_contradictions, card_facts, disagreements, report_facts, summary_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DUMP = REPO.parent / "shared" / "data" / "hh" / "vacancies_dev.api.jsonl.gz"
REQUESTS = 30


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        print(
            f"  {'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""), flush=True
        )
        if not ok:
            self.failed.append(what)
        return ok


def make(*args: str, timeout: int = 7200) -> subprocess.CompletedProcess[str]:
    t = time.monotonic()
    p = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    print(f"$ make {' '.join(args)}  ({time.monotonic() - t:.0f}s, exit {p.returncode})", flush=True)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def newest_run_folder(store: Path) -> Path:
    return sorted((store / "runs").iterdir())[-1]


def check_run(check: Checks, name: str, p: subprocess.CompletedProcess[str], store: Path, tag: str) -> dict:
    """A run's summary against its report and, when it published, its model card."""
    check(p.returncode == 0, f"{name}: the run succeeded", p.stderr[-2000:])
    out = p.stdout
    folder = newest_run_folder(store)
    page = (folder / "report.html").read_text(encoding="utf-8")
    facts = {"summary": summary_facts(out), "report": report_facts(page)}
    published = re.search(r"^\s*champion:\s+(\S+) (replaced|\(first model)", out, re.M)
    challenger = re.search(r"^\s*salary\s+challenger (\S+) ", out, re.M)
    if published and challenger and published[1] == challenger[1]:
        card = (store / "models" / "hhpulse" / published[1] / "model_card.md").read_text(encoding="utf-8")
        facts["card"] = card_facts(card)
        check(
            card_contradictions(card) == [],
            f"{name}: the card's sentences agree with its numbers",
            str(card_contradictions(card)),
        )
    check(
        all(facts[d]["figure"] for d in facts), f"{name}: every document names the test figures", str(facts)
    )
    problems = disagreements(facts)
    check(
        problems == [],
        f"{name}: {', '.join(facts)} agree on every figure, rule, tag and caveat",
        "; ".join(problems),
    )
    check(
        all(facts[d]["tag"] == tag for d in facts),
        f"{name}: tagged {tag} everywhere",
        str({d: facts[d]["tag"] for d in facts}),
    )
    check(" runs folded" not in out or not re.search(r"\b1 runs\b", out), f"{name}: no '1 runs'")
    return {"stdout": out, "page": page, "facts": facts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where the stores go [a temporary folder]")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    if not DUMP.is_file():
        print(f"newcomer: the real dump is missing: {DUMP}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hhpulse-newcomer-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    demo, real = work / "demo", work / "real"
    check = Checks()
    start = time.monotonic()
    try:
        first = check_run(check, "demo run 1", make("run", f"STORE={demo}"), demo, "SYNTHETIC")
        second = check_run(check, "demo run 2", make("run", f"STORE={demo}"), demo, "SYNTHETIC")
        out2 = second["stdout"]
        check("on the same test set" not in out2, "demo run 2: no champion figure on rows it was fitted on")
        check(
            bool(
                re.search(
                    r"on the \d+ test rows? champion \S+ never saw: challenger [\d.]+, champion [\d.]+", out2
                )
            ),
            "demo run 2: the champion's figures on rows it never saw, beside the challenger's",
            out2[-3000:],
        )
        del first
        dump = check_run(
            check, "real dump", make("run", f"SOURCE=file:{DUMP}", f"STORE={real}"), real, "real"
        )
        check(
            bool(re.search(r"DO NOT RELY ON DEMAND: demand is no better than chance", dump["stdout"]))
            == ("demand" in dump["facts"]["summary"]["unreliable"]),
            "real dump: demand at chance is said where the user looks, and only then",
        )
        leftovers = (
            [p.name for p in (work / "kfp-local").glob("*") if p.is_dir()]
            if (work / "kfp-local").exists()
            else []
        )
        check(leftovers == [], "kfp.local left no workspace behind", str(leftovers))

        port = free_port()
        log = open(work / "serve.log", "w")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            ["make", "--no-print-directory", "serve", f"STORE={real}", f"PORT={port}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make and its hhpulse child: one process group to stop
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(1)
            with gzip.open(DUMP, "rt", encoding="utf-8") as fh:
                items = [json.loads(next(fh)) for _ in range(REQUESTS)]
            answered = 0
            for item in items:
                body = {
                    "instances": [
                        {
                            "id": str(item["id"]),
                            "responsibility": (item.get("snippet") or {}).get("responsibility")
                            or item["name"],
                            "name": item["name"],
                        }
                    ]
                }
                req = urllib.request.Request(
                    f"{url}/v1/models/hhpulse:predict",
                    data=json.dumps(body, ensure_ascii=False).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=30) as r:
                    answered += r.status == 200
            check(answered == REQUESTS, f"serve answered {REQUESTS} requests", str(answered))
            with urllib.request.urlopen(f"{url}/v1/models/hhpulse", timeout=10) as r:
                meta = json.load(r)
            dem = (meta.get("reliability") or {}).get("demand") or {}
            check(
                dem.get("reliable") is ("demand" not in dump["facts"]["summary"]["unreliable"]),
                "/v1/models/hhpulse says what the summary says of demand",
                json.dumps(meta)[:500],
            )
            time.sleep(4)  # the served log is written within about 2 seconds
            look = make("monitor", f"STORE={real}", timeout=600)
            print("\n".join("    " + line for line in look.stdout.splitlines()[:6]))
            check(
                f"in total: {REQUESTS} predictions in {REQUESTS} requests, {REQUESTS} with a vacancy id"
                in look.stdout,
                f"monitor sees its own {REQUESTS} predictions",
                look.stdout[-2000:] + look.stderr[-1000:],
            )
            check(
                not (real / "monitor" / "state.json").exists()
                or json.loads((real / "monitor" / "state.json").read_text())["runs"] == 1,
                "looking moved no watermark (only the pipeline's step did)",
            )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=120)
            log.close()
        serve_log = (work / "serve.log").read_text(encoding="utf-8")
        lines = [x for x in serve_log.splitlines() if x.strip() and not x.startswith((".venv/", "make"))]
        served = [x for x in lines if x.startswith("{")]
        check(
            bool(served) and any('"logger": "kserve"' in x for x in served),
            "serve's log is JSON, kserve's lines included",
        )
    finally:
        took = time.monotonic() - start
        print(
            f"\nnewcomer run: {len(check.failed)} failed check(s) in {took / 60:.0f} min; work folder {work}"
        )
        if not args.keep and not check.failed:
            shutil.rmtree(work, ignore_errors=True)
    for what in check.failed:
        print(f"FAILED: {what}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
