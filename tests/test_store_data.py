"""What a store holds: synthetic or real data (never mixed by accident), dumps with broken
lines (quarantined, not fatal), and which run is the newest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hhpulse.data.collect import collect
from hhpulse.data.history_store import rates_by_run, rebuild_history
from hhpulse.data.runs import list_runs, read_items
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore, StoreError
from hhpulse.data.validate import validate_run
from hhpulse.model.dataset import build_dataset

REPO = Path(__file__).resolve().parents[1]


def hhpulse(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", *args], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.fixture(scope="module")
def demo_items(tmp_path_factory) -> list[dict]:
    store = LocalStore(tmp_path_factory.mktemp("demo"))
    collect(make_source("demo", demo_size=40), store, progress=False)
    return read_items(store, list_runs(store)[0])


def write_items(path: Path, items: list, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(i, ensure_ascii=False) for i in items] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_store_refuses_to_mix_synthetic_and_real_data(tmp_path, demo_items):
    store = LocalStore(tmp_path / "store")
    collect(make_source("demo", demo_size=40), store, progress=False)
    assert store.get_json("store.json")["data"] == "synthetic"
    dump = write_items(tmp_path / "real.jsonl", [{**i, "id": f"r{i['id']}"} for i in demo_items[:50]])
    with pytest.raises(StoreError, match=r"holds SYNTHETIC demo data; refusing to add real hh.ru data"):
        collect(make_source(f"file:{dump}"), store, progress=False)
    assert len(list_runs(store)) == 1  # nothing was written
    p = hhpulse("collect", "--source", f"file:{dump}", "--store", str(store.root), "--no-history")
    assert p.returncode == 2 and "--allow-mixed-data" in p.stderr, p.stderr
    p = hhpulse(
        "collect",
        "--source",
        f"file:{dump}",
        "--store",
        str(store.root),
        "--no-history",
        "--allow-mixed-data",
    )
    assert p.returncode == 0, p.stderr
    assert store.get_json("store.json")["data"] == "mixed" and len(list_runs(store)) == 2


def test_a_store_from_before_store_json_is_judged_by_its_runs(tmp_path, demo_items):
    store = LocalStore(tmp_path / "store")
    collect(make_source(f"file:{write_items(tmp_path / 'a.jsonl', demo_items[:20])}"), store, progress=False)
    store.delete("store.json")
    with pytest.raises(StoreError, match="holds real hh.ru data; refusing to add SYNTHETIC"):
        collect(make_source("demo", demo_size=40), store, progress=False)
    collect(
        make_source(f"file:{write_items(tmp_path / 'b.jsonl', demo_items[20:40])}"), store, progress=False
    )
    assert store.get_json("store.json")["data"] == "real"


def test_the_pipeline_passes_allow_mixed_data_to_collect():
    docs = list(yaml.safe_load_all((REPO / "pipelines" / "hhpulse.yaml").read_text()))
    spec = docs[0]
    param = spec["root"]["inputDefinitions"]["parameters"]["allow_mixed_data"]
    assert param["defaultValue"] is False and param["parameterType"] == "BOOLEAN"
    comp = spec["components"]["comp-collect-vacancies"]
    assert "allow_mixed_data" in comp["inputDefinitions"]["parameters"]


def test_broken_lines_of_a_dump_are_quarantined_and_every_step_goes_on(tmp_path, demo_items):
    malformed = [
        {"id": {"nested": 1}, "name": "x"},
        {"id": "m1", "name": "x", "salary": "lots"},
        {"id": "m2", "name": "x", "snippet": "a string", "area": []},
        {"id": "m3", "name": 5, "published_at": 12, "snippet": {"responsibility": 5}},
        {"id": "m4", "name": "x", "salary": {"from": "a", "to": None, "currency": 7}},
        {"id": "m5", "name": "x", "employer": "acme", "published_at": "yesterday"},
    ]
    dump = write_items(tmp_path / "dump.jsonl", demo_items + malformed, ("{broken", "[1, 2]", '"text"'))
    store = LocalStore(tmp_path / "store")
    result = collect(make_source(f"file:{dump}"), store, progress=False)
    assert result.items == len(demo_items) + len(malformed)
    assert result.meta["counts"]["unreadable"] == 4  # the broken line, two list values, one string
    quarantined = store.get_bytes(f"quarantine/{result.run_id}/unreadable.jsonl.gz")
    assert quarantined
    report = validate_run(store, result.run_id)
    assert report.rules["unreadable"].count == 4 and report.passed
    assert report.bad >= 4 + 5
    hist = rebuild_history(store)
    assert not {"m1", "m2", "m3", "m4", "m5"} & set(hist["id"])
    dataset = build_dataset(hist, rates_by_run(store))
    assert len(dataset.tasks["salary"].frame) > 0


def test_validate_latest_is_the_newest_run_by_collection_time(tmp_path, demo_items, monkeypatch):
    import hhpulse.data.collect as collect_module
    from hhpulse.data.runs import latest_run

    store = LocalStore(tmp_path / "store")
    dump = write_items(tmp_path / "d.jsonl", demo_items[:30])
    ids = iter(["20260101T000000Z-00000000", "20260101T000000Z-ffffffff"])
    monkeypatch.setattr(collect_module, "new_run_id", lambda now=None: next(ids))
    newer = collect(make_source(f"file:{dump}"), store, collected_at="2026-01-02T00:00:00Z", progress=False)
    older = collect(make_source(f"file:{dump}"), store, collected_at="2026-01-01T00:00:00Z", progress=False)
    # runs started in the same second: the id order says the older collection is the newest
    assert max(newer.run_id, older.run_id) == older.run_id
    assert validate_run(store, "latest").run_id == newer.run_id
    assert latest_run(store) == newer.run_id


def test_dumps_can_come_from_stdin(tmp_path, demo_items, monkeypatch):
    import gzip
    import io

    from hhpulse.flows.workflow import load_data

    data = gzip.compress("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in demo_items).encode())
    store = tmp_path / "store"
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "collect", "--source", "file:-", "--store", str(store)],
        input=data,
        capture_output=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert p.returncode == 0, p.stderr
    run = list_runs(LocalStore(store))[0]
    assert len(read_items(LocalStore(store), run)) == len(demo_items)
    assert LocalStore(store).get_json(f"raw/{run}/meta.json")["source"]["path"] == "stdin"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    loaded = load_data("-")
    assert loaded.report is not None and loaded.report.total == len(demo_items)
