"""History folded run by run into the Delta table equals build_history over every run (property
test), and the fold's order and failure rules: a late run folds in time order, an import much
older than the history is refused, a killed fold changes nothing, verify tells."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from hhpulse.data.history import HISTORY_COLUMNS, build_history, load_raw_runs
from hhpulse.data.history_store import (
    TABLE_KEY,
    BackfillRefused,
    fold_run,
    load_state,
    open_snapshot,
    read_history,
    rebuild,
    verify,
)
from hhpulse.data.runs import encode_items
from hhpulse.data.store import LocalStore

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def write_run(
    store,
    run_id,
    when,
    items,
    *,
    queries=("python",),
    area="1",
    complete=True,
    truncated=(),
    quarantined=(),
    meta=True,
    rates=None,
):
    """A raw run as collect (and validate) leave it: items first, meta.json last."""
    store.put_bytes(f"raw/{run_id}/vacancies.jsonl.gz", encode_items(items))
    if quarantined:
        rows = [{"id": q, "_reasons": ["missing_name"]} for q in quarantined]
        store.put_bytes(f"quarantine/{run_id}/rows.jsonl.gz", encode_items(rows))
    if meta:
        store.put_json(
            f"raw/{run_id}/meta.json",
            {
                "run_id": run_id,
                "collected_at": _iso(when),
                "complete": complete,
                "coverage": {
                    "queries": list(queries),
                    "area": area,
                    "complete": complete,
                    "truncated": list(truncated),
                },
                "currency_rates": rates or {"RUR": 1.0, "USD": 0.011},
                "synthetic": True,
            },
        )


class Market:
    """A small random market: vacancies open, get re-published, archived, vanish and come back."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 1000
        self.open: dict[str, dict] = {}

    def item(self, vid: str, now: datetime, **kw) -> dict:
        rng = self.rng
        v = self.open.setdefault(vid, {"pub": now - timedelta(days=rng.randint(0, 20))})
        if rng.random() < 0.2:  # re-published
            v["pub"] = now - timedelta(hours=rng.randint(1, 40))
        item = {
            "id": vid if rng.random() < 0.9 else int(vid),  # numeric ids as hh.ru dumps have them
            "name": rng.choice(["Python dev", "Data scientist", "Аналитик"]),
            "published_at": v["pub"].strftime("%Y-%m-%dT%H:%M:%S+0300"),
            "snippet": {"responsibility": rng.choice(["писать код", "строить модели", None])},
            "area": {"id": rng.choice(["1", "2"]), "name": "Москва"},
        }
        if rng.random() < 0.5:
            lo = rng.randint(50, 200) * 1000
            item["salary"] = {"from": lo, "to": rng.choice([None, lo * 2]), "currency": "RUR", "gross": True}
        if rng.random() < 0.1:
            item["initial_created_at"] = (v["pub"] - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S+0300")
        if rng.random() < 0.05:
            item["archived"] = True
        elif rng.random() < 0.3:
            item["archived"] = False
        item.update(kw)
        return item

    def day(self, now: datetime) -> list[dict]:
        rng = self.rng
        for _ in range(rng.randint(2, 8)):
            self.open[str(self.next_id)] = {"pub": now - timedelta(hours=rng.randint(1, 30))}
            self.next_id += 1
        for vid in list(self.open):
            if rng.random() < 0.15:
                self.open.pop(vid)  # closed (some will come back)
        back = [str(i) for i in range(1000, self.next_id) if str(i) not in self.open and rng.random() < 0.03]
        for vid in back:
            self.open[vid] = {"pub": now - timedelta(days=1)}
        return [self.item(vid, now) for vid in sorted(self.open) if rng.random() < 0.93]


def random_runs(store, seed: int, n_runs: int = 22) -> list[str]:
    """Write ``n_runs`` random runs (plus a killed one and a run without items); fold each
    as it lands and return the folded ids. Runs: complete and incomplete coverage, truncated
    windows, other queries/areas, archived sightings, quarantined and unparseable rows,
    duplicate ids, file imports with their own collected_at, vacancies that come back."""
    rng = random.Random(seed)
    market = Market(rng)
    ids = []
    now = T0
    for n in range(n_runs):
        now += timedelta(hours=rng.choice([6, 24, 24, 24, 48]), minutes=rng.randint(0, 59))
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{rng.getrandbits(32):08x}"
        items = market.day(now)
        kind = rng.random()
        kw: dict = {}
        if kind < 0.1:  # a file import: unknown search, items carry their own collected_at
            kw = {"queries": (), "area": None, "complete": False}
            for it in items:
                if rng.random() < 0.5:
                    it["collected_at"] = _iso(now - timedelta(hours=rng.randint(0, 12)))
        elif kind < 0.2:
            kw = {"complete": False}  # stopped early (captcha)
        elif kind < 0.3:
            kw = {"truncated": [{"from": "x", "to": "y"}]}
        elif kind < 0.4:
            kw = {"queries": ("",), "area": None}  # everything, everywhere
        elif kind < 0.45:
            kw = {"queries": ("java",)}
        elif kind < 0.5:
            kw = {"area": "2"}
        if items and rng.random() < 0.3:
            kw["quarantined"] = [str(rng.choice(items)["id"])]
        if items and rng.random() < 0.2:
            items.append(dict(rng.choice(items), name="duplicate"))
        if rng.random() < 0.2:
            items.append({"id": "bad-1", "name": "x", "published_at": "not a date"})
        if n == n_runs // 2:  # a run killed midway: items, no meta.json
            write_run(store, f"{now:%Y%m%dT%H%M%SZ}-deadbeef", now, items, meta=False)
            now += timedelta(minutes=5)
            run_id = f"{now:%Y%m%dT%H%M%SZ}-{rng.getrandbits(32):08x}"
        write_run(store, run_id, now, items, **kw)
        fold_run(store, run_id)
        ids.append(run_id)
    return ids


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.parametrize("seed", range(8))
def test_folding_run_by_run_equals_build_history(tmp_path, seed):
    store = LocalStore(tmp_path)
    runs = random_runs(store, seed)
    want = build_history(load_raw_runs(store))
    assert len(load_raw_runs(store)) == len(runs)
    _assert_same(read_history(store), want)
    state, _ = load_state(store)
    assert [r["run_id"] for r in state["runs"]] == sorted(runs, key=lambda r: r)  # every run, in order
    assert state["counts"]["vacancies"] == len(want)
    assert state["counts"]["open"] == int(want["closed_at"].isna().sum())
    assert state["counts"]["closed"] == {
        str(k): int(v) for k, v in want["closed_reason"].value_counts().items()
    }
    # some seeds must exercise what the test is for
    if seed == 0:
        assert (want["closed_reason"] == "archived").any()
        assert (want["closed_reason"] == "absent_from_complete_run").any()
        assert want["observed_since"].notna().any() and want["observed_since"].isna().any()


@pytest.mark.parametrize("seed", [3, 5])
def test_windowed_read_is_the_open_rows_plus_recent_closes(tmp_path, seed):
    store = LocalStore(tmp_path)
    random_runs(store, seed)
    full = build_history(load_raw_runs(store))
    newest = load_state(store)[0]["runs"][-1]["collected_at"]
    for days in (0, 3, 10, 1000):
        cutoff = pd.Timestamp(newest) - pd.Timedelta(days=days)
        want = full[full["closed_at"].isna() | (full["closed_at"] >= cutoff)].reset_index(drop=True)
        _assert_same(read_history(store, window_days=days), want)
    cols = ["id", "closed_at", "responsibility"]
    _assert_same(read_history(store, columns=cols), full[cols])


def test_comebacks_and_all_in_one_fold(tmp_path):
    """A vacancy closed by a complete run comes back later; folding several runs in one
    call (``hhpulse history`` after --no-history collects) gives the same history."""
    store = LocalStore(tmp_path)
    item = {"id": "7", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    t = [T0 + timedelta(days=d) for d in range(5)]
    write_run(store, "r1", t[0], [item, dict(item, id="8")])
    write_run(store, "r2", t[1], [dict(item, id="8")])  # 7 closes
    write_run(store, "r3", t[2], [item, dict(item, id="8")])  # 7 comes back
    write_run(store, "r4", t[3], [dict(item, archived=True)])  # 8 closes, 7 archived
    write_run(store, "r5", t[4], [dict(item, archived=False)])  # 7 seen open after the archive
    res = fold_run(store)
    assert res.folded == ["r1", "r2", "r3", "r4", "r5"]
    want = build_history(load_raw_runs(store))
    _assert_same(read_history(store), want)
    seven = want.set_index("id").loc["7"]
    assert seven["times_seen"] == 4 and seven["closed_reason"] == "archived"
    other = LocalStore(tmp_path / "one-by-one")
    for n, r in enumerate(["r1", "r2", "r3", "r4", "r5"]):
        write_run(other, r, t[n], [])
        other.put_bytes(f"raw/{r}/vacancies.jsonl.gz", store.get_bytes(f"raw/{r}/vacancies.jsonl.gz"))
        assert fold_run(other, r).came_back == (1 if r in ("r3", "r5") else 0)  # r5: archived, seen again
    _assert_same(read_history(other), want)


def test_a_late_run_is_folded_in_time_order(tmp_path):
    """A run that finished after a later run was folded (a paused pod): folded in order, by
    folding the later runs again from the version before them."""
    store = LocalStore(tmp_path)
    item = {"id": "1", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    write_run(store, "a", T0, [item, dict(item, id="2")])
    fold_run(store, "a")
    write_run(store, "d", T0 + timedelta(days=2), [dict(item, id="3")])  # started after c, finished first
    assert fold_run(store).folded == ["d"]
    write_run(store, "c-late-finisher", T0 + timedelta(days=1), [item, dict(item, id="3")])  # it finishes
    res = fold_run(store, "c-late-finisher")
    assert res.folded == ["c-late-finisher"] and res.refolded == ["d"] and not res.refused
    state, _ = load_state(store)
    assert [r["run_id"] for r in state["runs"]] == ["a", "c-late-finisher", "d"]
    _assert_same(read_history(store), build_history(load_raw_runs(store)))
    assert verify(store).ok
    # and the next run folds on top, as usual
    write_run(store, "e", T0 + timedelta(days=3), [item])
    assert fold_run(store).folded == ["e"]
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def test_an_import_much_older_than_the_history_is_refused(tmp_path, monkeypatch):
    import hhpulse.data.history_store as hs

    monkeypatch.setattr(hs, "MAX_REFOLD_RUNS", 2)
    store = LocalStore(tmp_path)
    item = {"id": "1", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    for d in range(3):
        write_run(store, f"r{d}", T0 + timedelta(days=d + 1), [dict(item, id=str(d))])
    fold_run(store)
    version = open_snapshot(store).version
    write_run(store, "a-early", T0, [dict(item, id="9")])  # a backfill: older than 3 folded runs
    with pytest.raises(BackfillRefused, match="--rebuild") as err:
        fold_run(store, "a-early")
    assert "a-early" in str(err.value) and "3 later runs" in str(err.value)
    assert open_snapshot(store).version == version  # nothing committed
    assert fold_run(store).refused == ["a-early"]  # `hhpulse history`: left out, said so
    write_run(store, "r9", T0 + timedelta(days=9), [dict(item, id="3")])
    res = fold_run(store, "r9")  # a later run still folds: one stray run does not stop a schedule
    assert res.folded == ["r9"] and res.refused == ["a-early"]
    res = rebuild(store)  # the way out: every run, in time order
    assert res.folded == ["a-early", "r0", "r1", "r2", "r9"]
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def test_a_fold_killed_midway_leaves_the_history_as_before(tmp_path, monkeypatch):
    import hhpulse.data.deltatable as dtm

    store = LocalStore(tmp_path)
    random_runs(store, 1, n_runs=6)
    before = {k: store.get_bytes(k) for k in store.list("history/")}
    hist, version = read_history(store), open_snapshot(store).version
    write_run(store, "20270101T000000Z-00000001", T0 + timedelta(days=400), [{"id": "1", "name": "n"}])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the commit")

    monkeypatch.setattr(dtm, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        fold_run(store)
    monkeypatch.undo()
    after = {k: store.get_bytes(k) for k in store.list("history/")}
    assert {k: after[k] for k in before} == before  # nothing it had was changed or deleted
    assert not [k for k in after if k not in before and "_delta_log" in k]  # and nothing committed
    assert open_snapshot(store).version == version
    _assert_same(read_history(store), hist)
    fold_run(store)  # and the next fold picks it up
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def test_files_of_failed_folds_are_removed_by_vacuum_after_the_retention(tmp_path):
    import os
    import time

    from hhpulse.data.history_store import vacuum

    store = LocalStore(tmp_path)
    random_runs(store, 2, n_runs=4)
    orphan = f"{TABLE_KEY}/settled/2026-03-02/000001-0badf00d.parquet"
    store.put_bytes(orphan, b"left by a killed fold")
    write_run(store, "20270101T000000Z-00000001", T0 + timedelta(days=400), [])
    fold_run(store)
    assert store.exists(orphan)  # a fold never deletes
    snap = open_snapshot(store)
    referenced = {f"{TABLE_KEY}/{f.path}" for f in snap.files}
    old = time.time() - 40 * 86400
    for key in store.list(f"{TABLE_KEY}/"):
        if "_delta_log" not in key:
            os.utime(store.root / key, (old, old))
    first = read_history(store, version=0)
    plan = vacuum(store, retention_days=30)
    assert plan.files == [orphan] and not store.exists(orphan)  # no version ever used it
    # files the folds replaced were removed from the table today: time travel still needs them
    assert referenced < set(store.list(f"{TABLE_KEY}/open/")) | set(store.list(f"{TABLE_KEY}/settled/"))
    _assert_same(read_history(store, version=0), first)
    assert store.exists(f"{TABLE_KEY}/{snap.state['index']}")  # the current index stays
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def _tamper(store, path, column, row, value):
    df = pd.read_parquet(store.root / TABLE_KEY / path)
    df.loc[row, column] = value
    df.to_parquet(store.root / TABLE_KEY / path, index=False)
    return df["id"].iloc[row]


def test_verify_agrees_on_a_good_history_and_names_the_vacancies_of_a_tampered_one(tmp_path):
    store = LocalStore(tmp_path)
    random_runs(store, 4, n_runs=8)
    res = verify(store)
    assert res.ok and "equals a rebuild" in res.message()
    victim = _tamper(store, open_snapshot(store).open_files[0].path, "times_seen", 3, 99)
    bad = verify(store)
    assert not bad.ok
    assert any(victim in d and "times_seen" in d for d in bad.differences)
    assert "--rebuild" in bad.message()


def test_history_columns_and_dtypes_match_the_reference(tmp_path):
    store = LocalStore(tmp_path)
    random_runs(store, 6, n_runs=3)
    got = read_history(store)
    assert list(got.columns) == list(HISTORY_COLUMNS)
    assert got.dtypes.to_dict() == build_history(load_raw_runs(store)).dtypes.to_dict()


def _racing_folds(store, monkeypatch, *, retries=(5, 5)):
    """Two folds (of two finished runs) computed side by side, then committed at the same moment."""
    import threading

    import hhpulse.data.history_store as hs

    item = {"id": "1", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    write_run(store, "r0", T0, [item, dict(item, id="2")])
    fold_run(store, "r0")
    write_run(store, "r1", T0 + timedelta(days=1), [item, dict(item, id="3")])
    write_run(store, "r2", T0 + timedelta(days=2), [dict(item, id="3"), dict(item, id="4")])
    barrier = threading.Barrier(2, timeout=60)
    real_commit = hs._commit
    first = threading.local()

    def commit_together(*args, **kwargs):
        if not getattr(first, "done", False):  # both folds have done their work: commit at once
            first.done = True
            barrier.wait()
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(hs, "_commit", commit_together)
    results: dict[str, object] = {}

    def fold(run_id, n):
        try:
            results[run_id] = fold_run(store, run_id, retries=n)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each fold got
            results[run_id] = exc

    threads = [threading.Thread(target=fold, args=(r, n)) for r, n in zip(("r1", "r2"), retries, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.undo()
    return results


def test_two_folds_racing_lose_no_update(store, monkeypatch):
    results = _racing_folds(store, monkeypatch)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert max(r.attempts for r in results.values()) == 2  # one lost the race and folded again
    state, _ = load_state(store)
    assert [r["run_id"] for r in state["runs"]] == ["r0", "r1", "r2"]
    _assert_same(read_history(store), build_history(load_raw_runs(store)))
    assert verify(store).ok


def test_the_loser_of_a_race_without_retries_fails_clearly(store, monkeypatch):
    from hhpulse.data.history_store import HistoryError

    results = _racing_folds(store, monkeypatch, retries=(1, 1))
    failed = [r for r in results.values() if isinstance(r, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], HistoryError)
    assert "lost the race" in str(failed[0]) and "nothing was lost" in str(failed[0])
    state, _ = load_state(store)
    assert state["runs"][0]["run_id"] == "r0" and len(state["runs"]) >= 2  # the winner's update is there
    fold_run(store)  # the loser's run is folded by the next fold
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "history", *args], capture_output=True, text=True, timeout=300
    )


def test_history_cli_folds_verifies_and_rebuilds(tmp_path):
    store = LocalStore(tmp_path)
    item = {"id": "1", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    for d in range(4):
        write_run(store, f"r{d}", T0 + timedelta(days=d), [dict(item, id=str(i)) for i in range(d, d + 3)])
    p = _cli("--store", str(tmp_path))
    assert p.returncode == 0 and "folded 4 run(s)" in p.stdout, p.stderr
    p = _cli("--verify", "--store", str(tmp_path))
    assert p.returncode == 0 and "history verified" in p.stdout, p.stderr
    # tamper with a settled file: verify names the vacancy and exits 1
    settled = open_snapshot(store).settled_files
    victim = _tamper(store, settled[min(settled)].path, "name", 0, "tampered")
    p = _cli("--verify", "--store", str(tmp_path))
    assert p.returncode == 1 and f"vacancy {victim}: name: stored 'tampered', rebuilt 'n'" in p.stderr
    assert "--rebuild" in p.stderr
    # a run older than the others is folded in time order (exit 0), and --rebuild repairs the tampering
    write_run(store, "r-back", T0 - timedelta(days=1), [item])
    p = _cli("--store", str(tmp_path))
    assert (
        p.returncode == 0 and "folded 1 run(s)" in p.stdout and "4 earlier folded run(s) again" in p.stdout
    ), p.stderr
    p = _cli("--rebuild", "--store", str(tmp_path))
    assert p.returncode == 0 and "folded 5 run(s)" in p.stdout, p.stderr
    assert _cli("--verify", "--store", str(tmp_path)).returncode == 0
    _assert_same(read_history(store), build_history(load_raw_runs(store)))


def test_runs_without_meta_json_are_skipped_with_a_warning(tmp_path, caplog):
    store = LocalStore(tmp_path)
    item = {"id": "1", "name": "n", "published_at": "2026-03-01T10:00:00+0300"}
    write_run(store, "r1", T0, [item])
    write_run(store, "r2-killed", T0 + timedelta(days=1), [dict(item, id="2")], meta=False)
    store.put_json("raw/r3-no-items/meta.json", {"collected_at": _iso(T0 + timedelta(days=2))})
    with caplog.at_level("WARNING", logger="hhpulse"):
        res = fold_run(store)
    assert res.folded == ["r1"] and res.skipped == ["r3-no-items"]
    assert "skipping run r2-killed: no meta.json (it did not finish)" in caplog.text
    assert "skipping run r3-no-items: meta.json without vacancies.jsonl.gz" in caplog.text
    _assert_same(read_history(store), build_history(load_raw_runs(store)))
    assert load_state(store)[0]["skipped"] == ["r3-no-items"]  # warned once, not at every fold
