"""``hhpulse run`` stopped by a signal or killed outright: its steps die with it, it leaves no
temp folders (a later run removes a killed run's), and its record says how it ended (the next
run writes it for a killed run). Real runs through kfp.local, stopped one step in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hhpulse.data.store import LocalStore

CANDIDATES = {
    "candidates": [
        {"name": "salary-lr", "task": "salary", "kind": "logreg", "params": {"C": 2.0}},
        {"name": "demand-lr", "task": "demand", "kind": "logreg", "params": {"C": 1.0}},
    ]
}


def processes_naming(text: str) -> list[str]:
    """The command lines of live processes that contain ``text`` (a run's store path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = next(
                (ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), ""
            )
        except OSError:
            continue
        if text in cmd and "zombie" not in state:
            found.append(f"{entry.name}: {cmd[:160]}")
    return found


def wait_gone(text: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_naming(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """A run started as a user would, in its own temp directory; returns once its first step
    ended (the second is then starting)."""
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc (Linux)")
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps(CANDIDATES))
    store, tmp = tmp_path / "store", tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hhpulse.cli", "run", "--store", str(store), "--demo-size", "30"]
        + ["--candidates", str(cands)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith("collect vacancies"):
            break
    else:
        pytest.fail("the run ended before its first step: " + "".join(lines) + proc.stderr.read())
    deadline = time.monotonic() + 60
    while not processes_naming(str(store)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the next step's process
    assert processes_naming(str(store)), "no step started after the first"
    return proc, store, tmp


@pytest.mark.slow
def test_sigterm_stops_the_steps_removes_the_temp_folder_and_records_the_run(tmp_path):
    proc, store, tmp = start_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert wait_gone(str(store), 5) == []  # no step outlives the run
    assert sorted(tmp.iterdir()) == []  # no hhpulse-run-*, no kfp-workspace-*
    st = LocalStore(store)
    assert not [k for k in st.list("runs/") if k.endswith("running.json")]
    (outcome,) = [k for k in st.list("runs/") if k.endswith("outcome.json")]
    doc = st.get_json(outcome)
    assert doc["state"] == "TERMINATED" and doc["succeeded"] is False
    assert doc["failed_step"] == "validate-vacancies" and "stopped by SIGTERM" in doc["reason"]
    assert (
        "Executing task 'collect-vacancies'"
        in st.get_bytes(outcome.replace("outcome.json", "pipeline.log")).decode()
    )
    assert "stopped by SIGTERM while step(s) validate-vacancies ran" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_killed_runs_steps_die_with_it_and_the_next_run_records_it(tmp_path):
    from pipelines.local import PrivateTmpdir, RunRecord, clean_stale_tmpdirs, record_killed_runs

    proc, store, tmp = start_run(tmp_path)
    st = LocalStore(store)
    folded = st.exists("history/state.json")
    proc.kill()
    proc.communicate(timeout=30)
    assert wait_gone(str(store), 5) == []  # the guard saw its parent die and stopped the step
    time.sleep(5)
    assert st.exists("history/state.json") == folded  # the orphan did not go on to fold
    (stale,) = tmp.iterdir()
    assert stale.name.startswith("hhpulse-run-")
    (running,) = [k for k in st.list("runs/") if k.endswith("running.json")]

    # what the next run does first: a live run's folder and record are left alone...
    live_tmp = PrivateTmpdir("hhpulse-run-")
    inside = live_tmp.open()
    try:
        live = RunRecord(st, tmp_path / "live.log").start()
        assert clean_stale_tmpdirs(where=tmp) == [stale]
        assert inside.is_dir() and not stale.exists()
        (recorded,) = record_killed_runs(st)
    finally:
        live_tmp.close()
    assert st.exists(live.key)  # this process is alive: not recorded
    # ...and the killed run is recorded as ended, with the step it was running and its log
    assert recorded == running.replace("running.json", "outcome.json") and not st.exists(running)
    doc = st.get_json(recorded)
    assert doc["state"] == "KILLED" and doc["succeeded"] is False
    assert doc["failed_step"] == "validate-vacancies" and "killed" in doc["reason"]
    assert (
        "Executing task 'collect-vacancies'"
        in st.get_bytes(recorded.replace("outcome.json", "pipeline.log")).decode()
    )
    assert record_killed_runs(st) == []  # once
