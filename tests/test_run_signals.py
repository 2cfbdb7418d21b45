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


def _alive(pid: int) -> bool:
    try:
        state = next(
            ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:")
        )
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


@pytest.mark.parametrize("how", ["kill -9 of its parent", "SIGTERM to the guard"])
def test_the_step_guard_stops_its_step_and_everything_the_step_started(tmp_path, how):
    """The guard alone, with a step that starts a child of its own (as kfp.local's `sh -c`
    starts Python): both go, whether the run dies or the guard is told to stop."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    pids = tmp_path / "pids"
    step = f"sleep 300 & echo $$ $! > {pids}; wait"
    run = (  # stands in for `hhpulse run`: starts the guard and waits
        "import subprocess, sys, os\n"
        f"g = subprocess.Popen([sys.executable, '-m', 'pipelines.stepguard', str(os.getpid()), '--', 'sh', '-c', {step!r}])\n"
        "print(g.pid, flush=True)\n"
        "g.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", run], stdout=subprocess.PIPE, text=True)
    guard = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    sh, sleeper = map(int, pids.read_text().split())
    assert _alive(sh) and _alive(sleeper)
    if how.startswith("kill"):
        parent.kill()
    else:
        os.kill(guard, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (_alive(sh) or _alive(sleeper) or _alive(guard)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(sh) and not _alive(sleeper) and not _alive(guard)
    parent.wait(10)
    if how.startswith("SIGTERM"):
        assert parent.returncode == 0  # the run goes on; its step ended with 128 + SIGTERM
