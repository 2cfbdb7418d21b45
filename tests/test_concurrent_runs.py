"""Two runs at once on one store (a folder and a real S3 server on 127.0.0.1): the demo's day is
claimed with If-None-Match so two runs never take the same day, store.json loses no update, and
claims (leases) expire, are taken over once, and are never overwritten by a former holder."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import run_together
from hhpulse.data.collect import MixedDataError, collect, record_data_kind
from hhpulse.data.leases import claim, claim_state, complete, release
from hhpulse.data.sources import DEMO_DAY_CLAIM, DEMO_START_DAY, make_source

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_claims_exclude_expire_and_stay_with_their_holder(store):
    key = "claims/x.json"
    first = claim(store, key, ttl_s=60, info={"day": 1}, now=T0)
    assert first is not None and claim_state(store, key, now=T0) == "held"
    assert claim(store, key, ttl_s=60, now=T0 + timedelta(seconds=59)) is None  # still held
    late = claim(store, key, ttl_s=60, now=T0 + timedelta(seconds=61))  # expired: taken over
    assert late is not None and late.holder != first.holder
    assert not complete(store, first)  # the former holder cannot overwrite it...
    assert not release(store, first)  # ...nor delete it
    assert store.get_json(key)["holder"] == late.holder
    assert complete(store, late, {"run_id": "r1"})
    assert claim_state(store, key, now=T0 + timedelta(days=999)) == "done"  # done never expires
    assert claim(store, key, ttl_s=60, now=T0 + timedelta(days=999)) is None
    other = claim(store, "claims/y.json", ttl_s=60)
    assert other is not None and release(store, other) and not store.exists("claims/y.json")


def test_racing_claims_exactly_one_wins(store):
    out = run_together(*[lambda: claim(store, "claims/z.json", ttl_s=60) for _ in range(6)])
    assert sum(lease is not None for lease in out) == 1, out
    # and of several runs taking over one expired claim, exactly one succeeds too
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    out = run_together(*[lambda: claim(store, "claims/z.json", ttl_s=60, now=later) for _ in range(6)])
    assert sum(lease is not None for lease in out) == 1, out


def _demo_run(store):
    return collect(make_source("demo", demo_size=20), store, progress=False)


def test_two_demo_runs_at_once_take_different_days(store):
    out = run_together(lambda: _demo_run(store), lambda: _demo_run(store))
    assert not any(isinstance(o, Exception) for o in out), out
    days = sorted(o.meta["source"]["day"] for o in out)
    assert days == [DEMO_START_DAY, DEMO_START_DAY + 1]
    for day in days:  # both claims are done for good
        assert store.get_json(DEMO_DAY_CLAIM.format(day=day))["state"] == "done"
    assert _demo_run(store).meta["source"]["day"] == DEMO_START_DAY + 2


def test_an_expired_claim_is_taken_over_a_held_day_skipped_a_failed_run_frees_its_day(tmp_path):
    from hhpulse.data.store import LocalStore

    store = LocalStore(tmp_path)
    killed = claim(store, DEMO_DAY_CLAIM.format(day=DEMO_START_DAY), ttl_s=60, now=T0)  # long expired
    running = claim(store, DEMO_DAY_CLAIM.format(day=DEMO_START_DAY + 1), ttl_s=3600)  # in progress
    assert killed is not None and running is not None
    assert _demo_run(store).meta["source"]["day"] == DEMO_START_DAY  # the killed run's day, taken over
    assert _demo_run(store).meta["source"]["day"] == DEMO_START_DAY + 2  # START + 1 is being collected

    src = make_source("demo", demo_size=20)

    def broken_fetch(progress=None):
        raise OSError("network down")
        yield

    src.fetch = broken_fetch  # type: ignore[method-assign]
    with pytest.raises(OSError, match="network down"):
        collect(src, store, progress=False)
    assert src.day == DEMO_START_DAY + 3  # 2 complete runs; START + 2 is collected
    assert not store.exists(DEMO_DAY_CLAIM.format(day=DEMO_START_DAY + 3))  # released: redo it
    assert _demo_run(store).meta["source"]["day"] == DEMO_START_DAY + 3


def test_store_json_racing_runs_of_one_kind_write_once(store):
    out = run_together(*[lambda i=i: record_data_kind(store, "synthetic", f"run{i}") for i in range(4)])
    assert out == [None] * 4
    assert store.get_json("store.json")["data"] == "synthetic"


def test_store_json_a_run_of_the_other_kind_that_finished_meanwhile_makes_it_mixed(store):
    record_data_kind(store, "synthetic", "run-a")  # the other run won the race to a new store
    with pytest.raises(MixedDataError, match="a run of synthetic data finished.*says mixed"):
        record_data_kind(store, "real", "run-b")
    assert store.get_json("store.json")["data"] == "mixed"  # the truth, not the last writer's view
    record_data_kind(store, "mixed", "run-c")  # mixing on purpose: no error
    assert store.get_json("store.json")["data"] == "mixed"


# -- two `hhpulse run`s at once: each summary describes its own run ---------------------------


def _bundle(tmp_path, version):
    import json

    from hhpulse.model.bundle import FORMAT, write_manifest

    d = tmp_path / version
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": version}))
    write_manifest(d, version)
    return d


def test_an_overlapping_runs_summary_describes_its_own_run(tmp_path, capsys):
    """Run A collected, gated and published first; run B (started with it) collected, gated
    and published after it. A's summary names A's raw run, A's verdict and A's version, and
    says the champion has moved on; never B's newer files."""
    from hhpulse.commands.run import _summary
    from hhpulse.data.store import LocalStore
    from hhpulse.model.registry import champion, publish

    store = LocalStore(tmp_path / "store")
    run_a, run_b = _demo_run(store).run_id, _demo_run(store).run_id
    va, vb = "v20261207-112524-aaaaaa", "v20261207-112525-bbbbbb"
    store.put_json(f"gates/{va}.json", {"version": va, "champion_version": "", "lines": ["no champion yet"]})
    publish(store, _bundle(tmp_path, va), expect_champion=None)
    store.put_json(f"gates/{vb}.json", {"version": vb, "champion_version": va, "lines": ["B beat A"]})
    publish(store, _bundle(tmp_path, vb), expect_champion=va)
    own = {"raw_run": run_a, "gate": {"version": va}, "published": store.uri(f"models/hhpulse/{va}")}
    _summary(store, None, champion(store), own=own)
    out = capsys.readouterr().out
    assert f"raw/{run_a}/" in out and run_b not in out
    assert f"gate:         {va} vs champion none: no champion yet" in out and "B beat A" not in out
    assert f"champion:     {va} (first model: no champion to compare with) (the champion is now {vb}" in out
    assert f"model:        {store.uri(f'models/hhpulse/{va}')}" in out
    # and B's summary is B's: its gate compared it with A, it replaced A
    own_b = {"raw_run": run_b, "gate": {"version": vb}, "published": store.uri(f"models/hhpulse/{vb}")}
    _summary(store, None, champion(store), own=own_b)
    out = capsys.readouterr().out
    assert f"raw/{run_b}/" in out and f"gate:         {vb} vs champion {va}: B beat A" in out
    assert f"champion:     {vb} replaced {va}\n" in out
    # a run whose gate kept the champion, while another run promoted meanwhile
    own_c = {"raw_run": run_b, "gate": {"version": va}, "published": None}
    store.put_json("gates/vkept.json", {"version": "vkept", "champion_version": va, "lines": ["kept"]})
    _summary(store, None, champion(store), own={**own_c, "gate": {"version": "vkept"}})
    out = capsys.readouterr().out
    assert f"champion:     {va} kept: the new challenger did not beat it (the champion is now {vb}" in out


def test_claims_with_lost_replies_stay_with_their_holder(s3_env, s3_bucket):
    """A claim's create, its completion and its release, each with its reply lost after S3 applied
    it (the retry then fails its condition): the holder still holds, completes and releases it."""
    from faultproxy import FaultProxy
    from hhpulse.data.store import open_store

    with FaultProxy(s3_env) as proxy:
        store = open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
        proxy.add("drop_reply", method="PUT", header="If-None-Match")
        lease = claim(store, "claims/a.json", ttl_s=60)
        assert lease is not None and store.get_json("claims/a.json")["holder"] == lease.holder
        assert claim(store, "claims/a.json", ttl_s=60) is None  # and nobody else gets it
        proxy.add("drop_reply", method="PUT", header="If-Match")
        assert complete(store, lease, {"run_id": "r1"})
        assert claim_state(store, "claims/a.json") == "done"
        other = claim(store, "claims/b.json", ttl_s=60)
        assert other is not None
        proxy.add("drop_reply", method="DELETE")
        assert release(store, other) and not store.exists("claims/b.json")
        assert [e[2].split(" ")[0] for e in proxy.log if e[0] in ("PUT", "DELETE")].count("drop_reply") == 3
