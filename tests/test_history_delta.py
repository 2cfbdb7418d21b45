"""The history on its Delta Lake table, in the three situations that lost committed history in the
hand-written format, each on a folder and on a real S3 server (moto) behind the fault-injecting
proxy (tests/faultproxy.py):

1. a lost reply to the commit (S3 applied it, the client saw its connection close and retried
   into a 412): the fold is done once, nothing is deleted, every later fold and read works;
2. two overlapping runs (the one that started first finishes after the other was folded): it is
   folded in time order and the result is build_history over every run;
3. a broken history (a broken log entry, a missing or junk data file, junk files, a broken old
   state.json): one-line errors with exit 2, and `hhpulse history --rebuild` recovers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pandas as pd
import pytest

from faultproxy import FaultProxy
from hhpulse.data import deltatable
from hhpulse.data.history import HISTORY_COLUMNS, build_history, load_raw_runs
from hhpulse.data.history_store import (
    TABLE_KEY,
    HistoryError,
    fold_run,
    load_state,
    open_snapshot,
    read_history,
    rebuild,
    restore,
    verify,
)
from hhpulse.data.runs import list_runs
from hhpulse.data.store import LocalStore, open_store
from test_history_fold import T0, write_run

COMMIT_PUT = r"/history/vacancies/_delta_log/\d{20}\.json$"
ITEM = {
    "id": "1",
    "name": "n",
    "published_at": "2026-03-01T10:00:00+0300",
    "snippet": {"responsibility": "r"},
}


@pytest.fixture
def proxy(s3_env):
    with FaultProxy(s3_env) as p:
        yield p


@pytest.fixture(params=["folder", "s3"])
def hstore(request, tmp_path):
    """A store on each backend; on S3, through the fault proxy (``hstore.proxy``)."""
    if request.param == "folder":
        store = LocalStore(tmp_path / "store")
        store.proxy = None  # type: ignore[attr-defined]
        return store
    bucket = request.getfixturevalue("s3_bucket")
    proxy = request.getfixturevalue("proxy")
    store = open_store(f"s3://{bucket}/p", endpoint_url=proxy.url)
    store.proxy = proxy  # type: ignore[attr-defined]
    return store


def _location(store) -> list[str]:
    if isinstance(store, LocalStore):
        return ["--store", str(store.root)]
    return ["--store", store.url, "--s3-endpoint", store.endpoint_url]


def _errors(p) -> list[str]:
    """What the command said on stderr (log lines of the libraries left out)."""
    return [line for line in p.stderr.splitlines() if line.startswith("hhpulse ")]


def _cli(store, *args, command="history"):
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", command, *args, *_location(store)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )


def _runs(store, n, start=0):
    ids = []
    for d in range(start, start + n):
        run_id = f"r{d:02d}"
        items = [dict(ITEM, id=str(i)) for i in range(d, d + 4)]
        if d % 3 == 2:
            items.append(dict(ITEM, id=str(d - 2), archived=True))
        write_run(store, run_id, T0 + timedelta(days=d), items)
        ids.append(run_id)
    return ids


def _assert_reference(store):
    pd.testing.assert_frame_equal(read_history(store), build_history(load_raw_runs(store)), check_exact=True)


def _referenced_files_exist(store):
    snap = open_snapshot(store)
    missing = [f.path for f in snap.files if not store.exists(f"{TABLE_KEY}/{f.path}")]
    assert not missing, missing


def _lose_the_reply(store, monkeypatch):
    """The next commit is applied, and its caller sees the failure a lost reply gives: on S3 the
    proxy drops the reply to the PUT of the log entry (delta-rs retries into a 412 and reports a
    failed commit); on a folder the commit is made, then an error is raised as if it had not been."""
    if store.proxy is not None:
        store.proxy.log.clear()
        return store.proxy.add("drop_reply", method="PUT", path=COMMIT_PUT)
    real = deltatable.commit

    def applied_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError("connection reset by peer (the reply to the commit was lost)")

    monkeypatch.setattr(deltatable, "commit", applied_then_lost)
    return None


# -- 1. a lost reply to the commit ------------------------------------------------------------------
@pytest.mark.parametrize("first", [False, True], ids=["later-fold", "first-fold"])
def test_a_lost_reply_to_the_commit_folds_the_run_once_and_loses_nothing(hstore, monkeypatch, first):
    store = hstore
    ids = _runs(store, 3)
    if not first:
        fold_run(store, ids[0])
    before = {k for k in store.list("history/") if "_delta_log" not in k}
    rule = _lose_the_reply(store, monkeypatch)
    res = fold_run(store, ids[1])
    monkeypatch.undo()
    assert res.folded == (ids[:2] if first else [ids[1]]) and res.attempts == 1
    if rule is not None:
        assert rule.hits == 1
        puts = [e for e in store.proxy.log if e[0] == "PUT" and "_delta_log/0" in e[1]]
        assert [e[2].split(" ")[0] for e in puts][:2] == ["drop_reply", "412"]  # applied; the retry: 412
    state, version = load_state(store)
    assert [r["run_id"] for r in state["runs"]] == ids[:2]  # once, not twice
    assert version == (0 if first else 1)
    assert before <= {k for k in store.list("history/")}  # nothing deleted
    _referenced_files_exist(store)
    # every later fold, read and check works
    assert fold_run(store).folded == [ids[2]]
    _referenced_files_exist(store)
    _assert_reference(store)
    assert verify(store).ok


def test_a_lost_reply_to_the_commit_through_the_cli_exits_0(hstore, monkeypatch):
    store = hstore
    ids = _runs(store, 2)
    fold_run(store, ids[0])
    if store.proxy is None:
        pytest.skip("on a folder the reply cannot be lost between two processes; the library test covers it")
    store.proxy.add("drop_reply", method="PUT", path=COMMIT_PUT)
    p = _cli(store)
    assert p.returncode == 0, p.stderr
    assert "folded 1 run(s)" in p.stdout and "nothing new" not in p.stdout
    assert "Traceback" not in p.stderr
    p = _cli(store, "--verify")
    assert p.returncode == 0 and "history verified" in p.stdout, p.stderr
    assert [r["run_id"] for r in load_state(store)[0]["runs"]] == ids


def test_a_lost_reply_to_a_rebuild_commit_is_taken_as_applied(hstore, monkeypatch):
    store = hstore
    _runs(store, 3)
    fold_run(store)
    _lose_the_reply(store, monkeypatch)
    res = rebuild(store)
    monkeypatch.undo()
    assert len(res.folded) == 3
    assert open_snapshot(store).state["operation"] == "rebuild"
    _assert_reference(store)
    _referenced_files_exist(store)


def test_faults_on_the_data_files_and_reads_are_retried(s3_bucket, proxy):
    """5xx answers, resets before the request reached S3, and slow answers on the way: the fold
    goes through and the history is the reference."""
    store = open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
    ids = _runs(store, 3)
    fold_run(store, ids[0])
    proxy.add("error:503", method="PUT", path=r"/history/vacancies/(open|settled)/", times=2)
    proxy.add("reset", method="GET", path=r"/history/vacancies/open/", times=1)
    proxy.add("delay:0.3", method="GET", path=r"_delta_log", times=3)
    assert fold_run(store).folded == ids[1:]
    assert any(e[2] == "error 503" for e in proxy.log) and any(e[2] == "reset" for e in proxy.log)
    _assert_reference(store)


def test_a_commit_that_never_reached_s3_is_folded_again(s3_bucket, proxy):
    store = open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
    ids = _runs(store, 2)
    fold_run(store, ids[0])
    rule = proxy.add("reset", method="PUT", path=COMMIT_PUT)  # the PUT never arrives
    res = fold_run(store, ids[1])
    assert rule.hits == 1 and res.attempts == 2 and res.folded == [ids[1]]
    assert [r["run_id"] for r in load_state(store)[0]["runs"]] == ids
    _assert_reference(store)


# -- 2. two runs overlapping ---------------------------------------------------------------------------
def test_a_run_that_finishes_after_a_later_run_was_folded_is_folded_in_order(hstore):
    store = hstore
    write_run(store, "a0", T0, [ITEM, dict(ITEM, id="2")])
    fold_run(store, "a0")
    # run A started first (its collected_at is earlier) and is slow; run B finishes and folds first
    write_run(
        store, "b-later", T0 + timedelta(days=2), [dict(ITEM, id="2", archived=True), dict(ITEM, id="3")]
    )
    assert fold_run(store, "b-later").folded == ["b-later"]
    write_run(store, "a-slow", T0 + timedelta(days=1), [ITEM, dict(ITEM, id="3")])
    res = fold_run(store, "a-slow")
    assert res.folded == ["a-slow"] and res.refolded == ["b-later"] and not res.refused
    assert [r["run_id"] for r in load_state(store)[0]["runs"]] == ["a0", "a-slow", "b-later"]
    _assert_reference(store)
    _referenced_files_exist(store)
    assert verify(store).ok  # nothing to repair by hand
    # the CLI says so with exit 0, and the next run folds as usual
    write_run(store, "c", T0 + timedelta(days=3), [ITEM])
    write_run(store, "a-slower", T0 + timedelta(days=1, hours=12), [dict(ITEM, id="9")])
    p = _cli(store)
    assert p.returncode == 0, p.stderr
    assert "folded 2 run(s)" in p.stdout and "2 earlier folded run(s) again" in p.stdout
    _assert_reference(store)


def test_two_demo_runs_overlapping_the_first_finishing_last(hstore, monkeypatch):
    """The issue's race: run A claims its demo day and is slow (a paused pod); run B takes the next
    day, folds and commits; then A finishes and folds. Both are in history, in time order."""
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import DEMO_START_DAY, make_source

    store = hstore
    go = threading.Event()
    claimed = threading.Event()
    slow = make_source("demo", demo_size=20, demo_transport="in-process")
    real_fetch = slow.fetch

    def paused_fetch(progress=None):
        claimed.set()
        assert go.wait(120)
        yield from real_fetch(progress)

    slow.fetch = paused_fetch  # type: ignore[method-assign]
    out: dict[str, object] = {}

    def run_a():
        try:
            res = collect(slow, store, progress=False)
            out["a"] = (res, fold_run(store, res.run_id))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["a"] = exc

    t = threading.Thread(target=run_a)
    t.start()
    assert claimed.wait(120)
    b = collect(make_source("demo", demo_size=20, demo_transport="in-process"), store, progress=False)
    fold_b = fold_run(store, b.run_id)
    go.set()
    t.join(300)
    assert not isinstance(out["a"], Exception), out["a"]
    a, fold_a = out["a"]  # type: ignore[misc]
    assert a.meta["source"]["day"] == DEMO_START_DAY and b.meta["source"]["day"] == DEMO_START_DAY + 1
    assert fold_b.folded == [b.run_id]
    assert fold_a.folded == [a.run_id] and fold_a.refolded == [b.run_id]
    assert [r["run_id"] for r in load_state(store)[0]["runs"]] == [a.run_id, b.run_id]
    _assert_reference(store)


def test_two_folds_racing_on_s3_both_land(s3_bucket, proxy):
    """Two folds of two runs at once through the proxy (with a slow commit): the loser of the race
    folds again on top of the winner, and both runs are in history."""
    from conftest import run_together

    store = open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
    ids = _runs(store, 3)
    fold_run(store, ids[0])
    proxy.add("delay:0.3", method="PUT", path=COMMIT_PUT, times=1)
    out = run_together(lambda: fold_run(store, ids[1]), lambda: fold_run(store, ids[2]))
    assert not any(isinstance(o, Exception) for o in out), out
    assert [r["run_id"] for r in load_state(store)[0]["runs"]] == ids
    _assert_reference(store)


# -- 3. a broken history ---------------------------------------------------------------------------------
def _latest_commit(store):
    return deltatable.commit_key(TABLE_KEY, max(deltatable.log_versions(store, TABLE_KEY)))


BREAKS = {
    "truncated log entry": lambda s: s.put_bytes(_latest_commit(s), s.get_bytes(_latest_commit(s))[:120]),
    "garbage log entry": lambda s: s.put_bytes(_latest_commit(s), b"\x00\x01 not json"),
    "log entry []": lambda s: s.put_bytes(_latest_commit(s), b"[]"),
    "log entry null": lambda s: s.put_bytes(_latest_commit(s), b"null"),
    "a junk future log entry": lambda s: s.put_bytes(deltatable.commit_key(TABLE_KEY, 42), b"junk"),
    "hhpulse's record with missing keys": lambda s: s.put_bytes(
        _latest_commit(s), b'{"commitInfo":{"timestamp":1,"operation":"WRITE","hhpulse":{"format":"x"}}}\n'
    ),
    "a missing data file": lambda s: s.delete(f"{TABLE_KEY}/{open_snapshot(s).open_files[0].path}"),
    "a junk data file": lambda s: s.put_bytes(f"{TABLE_KEY}/{open_snapshot(s).open_files[0].path}", b"junk"),
}


@pytest.mark.parametrize("shape", sorted(BREAKS))
def test_a_broken_history_gives_one_line_errors_and_rebuild_recovers(hstore, shape):
    store = hstore
    ids = _runs(store, 3)
    fold_run(store, ids[0])
    fold_run(store, ids[1])
    BREAKS[shape](store)
    for call in (lambda: read_history(store), lambda: fold_run(store)):
        with pytest.raises(HistoryError, match="hhpulse history --(rebuild|restore)") as err:
            call()
        assert "\n" not in str(err.value)
    res = rebuild(store)
    assert res.folded == ids
    _assert_reference(store)
    assert verify(store).ok
    write_run(store, "r99", T0 + timedelta(days=99), [ITEM])
    assert fold_run(store).folded == ["r99"]
    _assert_reference(store)


@pytest.mark.parametrize("shape", ["truncated log entry", "a missing data file"])
def test_a_broken_history_through_the_cli(hstore, shape):
    store = hstore
    ids = _runs(store, 3)
    fold_run(store, ids[0])
    BREAKS[shape](store)
    for args in ((), ("--verify",), ("--versions",)):
        p = _cli(store, *args)
        if args == ("--versions",):  # the log is listed as it is, broken entries named
            assert p.returncode == 0, p.stderr
            continue
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and len(_errors(p)) == 1, p.stderr
        assert "hhpulse history --rebuild" in p.stderr
    p = _cli(store, "--rebuild")
    assert p.returncode == 0 and "folded 3 run(s)" in p.stdout, p.stderr
    assert _cli(store).returncode == 0
    assert _cli(store, "--verify").returncode == 0
    _assert_reference(store)


def test_a_broken_history_stops_collect_train_and_prune_on_one_line(hstore, tmp_path):
    """The other commands that read the history say the same one line (exit 2, no traceback, no
    Rust backtrace frames): a collect keeps its run, train and prune change nothing."""
    store = hstore
    ids = _runs(store, 2)
    fold_run(store, ids[0])
    BREAKS["truncated log entry"](store)
    where = str(store.root) if isinstance(store, LocalStore) else store.url
    env = os.environ.copy()
    if not isinstance(store, LocalStore):
        env["HHPULSE_S3_ENDPOINT"] = store.endpoint_url
    calls = {
        "collect": ["collect", "--source", "demo", "--demo-size", "20", "--store", where],
        "train": ["train", "--data", where, "--out", str(tmp_path / "model")],
        "store prune": ["store", "prune", "--raw-older-than", "1", "--store", where],
    }
    for what, args in calls.items():
        p = subprocess.run(
            [sys.executable, "-m", "hhpulse.cli", *args], capture_output=True, text=True, timeout=300, env=env
        )
        assert p.returncode == 2, (what, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and "<unknown>" not in p.stderr, p.stderr
        errors = [line for line in p.stderr.splitlines() if line.startswith(f"hhpulse {what}:")]
        assert len(errors) == 1 and "hhpulse history --rebuild" in errors[0], p.stderr
    assert len(list_runs(store)) == 3  # the collect's run is stored; nothing was pruned
    assert not (tmp_path / "model").exists()


def test_harmless_junk_changes_nothing(hstore):
    """Files Delta does not read (junk beside the table, in the log folder) and a broken id index
    (hhpulse's own, rebuilt from the rows) change nothing."""
    store = hstore
    ids = _runs(store, 4)
    fold_run(store, ids[0])
    fold_run(store, ids[1])
    store.put_bytes(f"{TABLE_KEY}/junk.bin", b"junk")
    store.put_bytes(f"{TABLE_KEY}/_delta_log/notes.txt", b"junk")
    store.put_bytes(f"{TABLE_KEY}/{open_snapshot(store).state['index']}", b"junk")
    assert fold_run(store).folded == ids[2:]
    _assert_reference(store)


OLD_STATES = {
    "truncated": b'{"format": "hhpulse-history/1", "runs": [',
    "garbage": b"\x00garbage",
    "{}": b"{}",
    "[]": b"[]",
    "null": b"null",
    "missing keys": b'{"format": "hhpulse-history/1", "runs": [], "settled": []}',
}


@pytest.mark.parametrize("shape", sorted(OLD_STATES))
def test_a_broken_old_state_json_gives_one_line_errors_and_rebuild_recovers(hstore, shape):
    """A store in the hand-written layout whose state.json is broken: the first fold (which would
    move it onto the table) says so on one line, and --rebuild builds the table from the raw runs."""
    store = hstore
    _runs(store, 2)
    store.put_bytes("history/state.json", OLD_STATES[shape])
    with pytest.raises(HistoryError, match="hhpulse history --rebuild") as err:
        fold_run(store)
    assert "\n" not in str(err.value) and "state.json" in str(err.value)
    p = _cli(store)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(_errors(p)) == 1, p.stderr
    p = _cli(store, "--rebuild")
    assert p.returncode == 0, p.stderr
    _assert_reference(store)
    assert store.exists("history/state.json")  # the old files stay until pruned


# -- versions, restore, readers ----------------------------------------------------------------------------
def test_versions_and_restore(hstore):
    store = hstore
    ids = _runs(store, 3)
    for r in ids:
        fold_run(store, r)
    at1 = read_history(store, version=1)
    assert load_state(store, version=1)[0]["runs"][-1]["run_id"] == ids[1]
    p = _cli(store, "--versions")
    assert p.returncode == 0, p.stderr
    assert [line.split()[0] for line in p.stdout.splitlines()[1:4]] == ["2", "1", "0"]
    p = _cli(store, "--restore", "1")
    assert p.returncode == 0 and "version 3" in p.stdout, p.stderr
    pd.testing.assert_frame_equal(read_history(store), at1)
    state, version = load_state(store)
    assert version == 3 and state["restored_from"] == 1 and [r["run_id"] for r in state["runs"]] == ids[:2]
    assert fold_run(store).folded == [ids[2]]  # the run the restore took out comes back with the next fold
    _assert_reference(store)
    p = _cli(store, "--restore", "17")
    assert p.returncode == 2 and "versions 0 to 4" in p.stderr


def test_the_table_reads_the_same_with_deltalake_alone(hstore):
    """Any engine reads the history: deltalake alone (no hhpulse imported) gives the rows
    hhpulse's reader gives, plus the three internal fold columns."""
    store = hstore
    _runs(store, 5)
    fold_run(store)
    uri, options = deltatable.location(store, TABLE_KEY)
    script = (
        "import json, sys\n"
        "from deltalake import DeltaTable\n"
        "uri, options, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]\n"
        "DeltaTable(uri, storage_options=options).to_pandas().to_parquet(out)\n"
        "assert not [m for m in sys.modules if m.startswith('hhpulse')]\n"
    )
    out = store.root.parent / "read.parquet" if isinstance(store, LocalStore) else None
    if out is None:
        import tempfile

        out = os.path.join(tempfile.mkdtemp(), "read.parquet")
    import json

    p = subprocess.run(
        [sys.executable, "-c", script, uri, json.dumps(options), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    theirs = pd.read_parquet(out)
    assert set(theirs.columns) == {*HISTORY_COLUMNS, "_ica_min", "_archived_at", "_open_until"}
    from hhpulse.data.history import canonical

    theirs = canonical(theirs[list(HISTORY_COLUMNS)]).sort_values("id", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(theirs, read_history(store), check_exact=True)


def test_restore_goes_back_over_a_broken_log_entry(hstore):
    store = hstore
    ids = _runs(store, 3)
    for r in ids:
        fold_run(store, r)
    at1 = read_history(store, version=1)
    BREAKS["truncated log entry"](store)  # version 2
    res = restore(store, 1)
    assert res.version == 2  # the broken entry set aside, the restore is the new version 2
    assert store.list("history/broken/")  # kept for a look, out of the log
    pd.testing.assert_frame_equal(read_history(store), at1)
    assert fold_run(store).folded == [ids[2]]
    _assert_reference(store)
