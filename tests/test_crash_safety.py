"""A collection run killed midway leaves earlier runs and the history intact."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hhpulse.data.collect import collect
from hhpulse.data.history import load_raw_runs
from hhpulse.data.history_store import rebuild_history
from hhpulse.data.runs import list_runs
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore


def _snapshot(store):
    return {k: store.get_bytes(k) for k in store.list("")}


def test_source_failure_midway_writes_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    collect(make_source("demo", demo_size=20), store)
    hist = rebuild_history(store)
    before = _snapshot(store)

    def broken_fetch(self, progress=None):
        yield {"id": "1"}
        raise MemoryError("killed")

    src = make_source("demo", demo_size=20)
    monkeypatch.setattr(type(src), "fetch", broken_fetch)
    with pytest.raises(MemoryError):
        collect(src, store)
    assert _snapshot(store) == before
    assert rebuild_history(store).equals(hist)


def test_sigkill_midway_leaves_earlier_runs_and_history_intact(tmp_path):
    store = LocalStore(tmp_path)
    collect(make_source("demo", demo_size=30), store)
    hist = rebuild_history(store)
    before = _snapshot(store)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "collect",
            "--source",
            "demo",
            "--rps",
            "4",
            "--store",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is paging through the emulator
        line = proc.stderr.readline()
        if "searching" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    after = _snapshot(store)
    assert {k: after[k] for k in before} == before  # nothing earlier was touched
    assert not [k for k in after if k not in before and k.endswith("meta.json")]  # no finished new run
    assert len(list_runs(store)) == 1 and len(load_raw_runs(store)) == 1
    assert rebuild_history(store).equals(hist)
