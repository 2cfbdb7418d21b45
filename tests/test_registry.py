"""The model registry: publish, the atomic champion pointer, old versions kept, rollback."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_together
from hhpulse.data.store import LocalStore
from hhpulse.flows.pipeline_steps import publish_gated
from hhpulse.model.bundle import FORMAT, write_manifest
from hhpulse.model.registry import (
    POINTER,
    ChampionMoved,
    RegistryError,
    champion,
    fetch_champion,
    publish,
    rollback,
    versions,
)


def fake_bundle(tmp_path, version):
    d = tmp_path / version
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": version}))
    write_manifest(d, version)
    return d


def test_publish_twice_keeps_versions_and_rolls_back(tmp_path):
    store = LocalStore(tmp_path / "s")
    assert champion(store) is None
    with pytest.raises(RegistryError, match="no champion"):
        fetch_champion(store, tmp_path / "x")
    publish(store, fake_bundle(tmp_path, "v1"))
    ch = publish(store, fake_bundle(tmp_path, "v2"))
    assert ch.version == "v2" and ch.previous == ["v1"] and ch.uri.endswith("models/hhpulse/v2")
    assert versions(store) == ["v1", "v2"]
    assert fetch_champion(store, tmp_path / "got").joinpath("bundle.json").exists()
    back = rollback(store)
    assert back.version == "v1" and back.previous == []
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(store)


def test_publish_refuses_an_unverified_bundle(tmp_path):
    d = fake_bundle(tmp_path, "v1")
    (d / "bundle.json").write_text("tampered")
    from hhpulse.model.bundle import BundleError

    with pytest.raises(BundleError):
        publish(LocalStore(tmp_path / "s"), d)
    assert champion(LocalStore(tmp_path / "s")) is None


def test_pointer_moves_in_one_atomic_write(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "s")
    publish(store, fake_bundle(tmp_path, "v1"))
    writes = []
    orig, orig_if = store.put_bytes, store.put_if
    monkeypatch.setattr(store, "put_bytes", lambda k, d: (writes.append(k), orig(k, d)))
    monkeypatch.setattr(store, "put_if", lambda k, d, **c: (writes.append(k), orig_if(k, d, **c))[1])
    publish(store, fake_bundle(tmp_path, "v2"))
    assert writes[-1] == "models/hhpulse/champion.json"  # the pointer moves last, once
    assert writes.count("models/hhpulse/champion.json") == 1
    shutil.rmtree(tmp_path / "v2")


# -- two promotions at once (a folder and a real S3 server): no lost update, a clear loser ------


def test_gated_promotions_racing_one_wins_the_other_is_refused(store, tmp_path):
    publish(store, fake_bundle(tmp_path, "v0"))
    b1, b2 = fake_bundle(tmp_path, "v1"), fake_bundle(tmp_path, "v2")
    out = run_together(
        lambda: publish(store, b1, expect_champion="v0"), lambda: publish(store, b2, expect_champion="v0")
    )
    won = [o for o in out if not isinstance(o, Exception)]
    lost = [o for o in out if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, out
    winner = won[0].version
    loser = "v2" if winner == "v1" else "v1"
    assert isinstance(lost[0], ChampionMoved)
    msg = str(lost[0])
    assert f"not promoting {loser}" in msg and "compared it with v0" in msg
    assert f"the champion is now {winner}" in msg and "Run the pipeline again" in msg
    ch = champion(store)
    assert (ch.version, ch.previous) == (winner, ["v0"])  # the winner's promotion stands
    assert store.exists(f"models/hhpulse/{loser}/MANIFEST.json")  # the loser's files are kept


def test_ungated_promotions_racing_both_land(store, tmp_path):
    publish(store, fake_bundle(tmp_path, "v0"))
    b1, b2 = fake_bundle(tmp_path, "v1"), fake_bundle(tmp_path, "v2")
    out = run_together(lambda: publish(store, b1), lambda: publish(store, b2))
    assert not any(isinstance(o, Exception) for o in out), out
    ch = champion(store)
    # whichever moved the pointer last is champion; the other is its previous: neither is lost
    assert ch.version in ("v1", "v2") and ch.previous == [({"v1", "v2"} - {ch.version}).pop(), "v0"]


def test_a_promotion_that_lost_the_race_retries_from_the_new_state(store, tmp_path, monkeypatch):
    """Deterministic interleaving: another run promotes v2 between this run's read of the pointer
    and its write. The conditional write refuses the stale write, and the retry starts from v2."""
    publish(store, fake_bundle(tmp_path, "v0"))
    b1, b2 = fake_bundle(tmp_path, "v1"), fake_bundle(tmp_path, "v2")
    real = store.get_versioned
    reads = []

    def read_then_get_overtaken(key):
        got = real(key)
        reads.append(key)
        if key == POINTER and len(reads) == 1:
            monkeypatch.setattr(store, "get_versioned", real)
            publish(store, b2)  # the other run, complete before this one writes
        return got

    monkeypatch.setattr(store, "get_versioned", read_then_get_overtaken)
    ch = publish(store, b1)
    assert (ch.version, ch.previous) == ("v1", ["v2", "v0"])
    assert champion(store) == ch

    # with the gate's expectation, the same interleaving is refused and v2 stays
    b3 = fake_bundle(tmp_path, "v3")
    reads.clear()
    monkeypatch.setattr(store, "get_versioned", read_then_get_overtaken)
    with pytest.raises(ChampionMoved, match="not promoting v3: its gate compared it with v1"):
        publish(store, b3, expect_champion="v1")
    assert champion(store).version == "v2"


def test_rollback_never_undoes_a_promotion_made_meanwhile(store, tmp_path):
    publish(store, fake_bundle(tmp_path, "v1"))
    publish(store, fake_bundle(tmp_path, "v2"))
    publish(store, fake_bundle(tmp_path, "v3"))  # another run promoted after v2 was deployed
    with pytest.raises(ChampionMoved, match="not rolling back v2: the champion is now v3"):
        rollback(store, expect_current="v2")
    assert champion(store).version == "v3"
    assert rollback(store, expect_current="v3").version == "v2"


def test_publish_step_uses_the_gate_verdict(store, tmp_path):
    """The pipeline's publish step promotes only over the champion its gate compared with."""
    b1 = fake_bundle(tmp_path, "v1")
    location = str(store.root) if isinstance(store, LocalStore) else store.url
    endpoint = getattr(store, "endpoint_url", None) or ""
    store.put_json("gates/v1.json", {"champion_version": ""})  # gated against no champion
    assert publish_gated(location, endpoint, str(b1)).endswith("models/hhpulse/v1")
    b2, b3 = fake_bundle(tmp_path, "v2"), fake_bundle(tmp_path, "v3")
    store.put_json("gates/v2.json", {"champion_version": "v1"})
    store.put_json("gates/v3.json", {"champion_version": "v1"})
    publish_gated(location, endpoint, str(b2))
    with pytest.raises(ChampionMoved, match="not promoting v3: its gate compared it with v1.*now v2"):
        publish_gated(location, endpoint, str(b3))
    assert champion(store).version == "v2" and champion(store).previous == ["v1"]


def test_promoting_the_champion_again_changes_nothing(store, tmp_path):
    """A publish whose request landed but whose answer was lost is retried: it finds itself champion."""
    publish(store, fake_bundle(tmp_path, "v0"))
    b1 = fake_bundle(tmp_path, "v1")
    first = publish(store, b1, expect_champion="v0")
    _, tag = store.get_versioned(POINTER)
    assert publish(store, b1, expect_champion="v0") == first
    assert store.get_versioned(POINTER)[1] == tag


# -- one version, one bundle: a taken version is refused, the pointer names only checked bundles --


def other_bundle(tmp_path, version, text="another training"):
    """A bundle of the same version with other content (another training's)."""
    d = tmp_path / f"{version}-other"
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": version, "note": text}))
    (d / "extra.json").write_text("{}")
    write_manifest(d, version)
    return d


def test_new_versions_do_not_collide_within_one_second():
    import re
    from datetime import datetime, timezone

    from hhpulse.model.bundle import new_version

    now = datetime(2026, 12, 7, 11, 41, 3, tzinfo=timezone.utc)
    names = {new_version(now) for _ in range(2000)}
    # 2000 draws of 24 random bits: about 0.12 pairs collide on average (a taken name is refused
    # by the registry, tested below); ten or more would mean the suffix is not random
    assert len(names) > 1990
    assert all(re.fullmatch(r"v20261207-114103-[0-9a-f]{6}", n) for n in names)
    assert sorted([new_version(now.replace(second=2)), new_version(now)])[0].startswith("v20261207-114102")


def test_a_taken_version_is_refused_before_anything_is_written(store, tmp_path):
    from hhpulse.model.registry import VersionExists

    publish(store, fake_bundle(tmp_path, "v1"))
    before = {k: store.get_bytes(k) for k in store.list("models/")}
    with pytest.raises(VersionExists, match="v1 is already published with another bundle"):
        publish(store, other_bundle(tmp_path, "v1"))
    assert {k: store.get_bytes(k) for k in store.list("models/")} == before  # not one byte changed
    assert fetch_champion(store, tmp_path / "got").joinpath("bundle.json").exists()  # it checks


def test_two_trainings_with_one_version_racing_never_mix(store, tmp_path):
    """Two runs' bundles named alike, published at once through the pipeline's own
    publish step. Exactly one lands; the champion's manifest checks; its gate record is its own."""
    from hhpulse.flows.pipeline_steps import write_gate_record
    from hhpulse.model.registry import AlreadyExists, VersionExists

    location = str(store.root) if isinstance(store, LocalStore) else store.url
    endpoint = getattr(store, "endpoint_url", None) or ""
    a, b = fake_bundle(tmp_path, "v7"), other_bundle(tmp_path, "v7")
    verdicts = ({"champion_version": "", "run": "a"}, {"champion_version": "", "run": "b"})
    gates = run_together(*[lambda v=v: write_gate_record(store, "v7", v) for v in verdicts])
    assert sorted(type(g).__name__ for g in gates) == ["AlreadyExists", "str"], gates
    kept = store.get_json("gates/v7.json")
    assert kept in verdicts
    assert write_gate_record(store, "v7", kept) == "gates/v7.json"  # its own again: a retry
    with pytest.raises(AlreadyExists):
        write_gate_record(store, "v7", {"champion_version": "", "run": "c"})
    out = run_together(
        lambda: publish_gated(location, endpoint, str(a)), lambda: publish_gated(location, endpoint, str(b))
    )
    won = [o for o in out if isinstance(o, str)]
    assert len(won) == 1 and isinstance(next(o for o in out if not isinstance(o, str)), VersionExists), out
    got = fetch_champion(store, tmp_path / "champ")  # verifies the manifest
    mine = a if (got / "bundle.json").read_text() == (a / "bundle.json").read_text() else b
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in mine.iterdir())


def test_the_pointer_never_names_a_bundle_whose_upload_does_not_check(store, tmp_path, monkeypatch):
    from hhpulse.model.registry import POINTER, require_version

    publish(store, fake_bundle(tmp_path, "v1"))
    b2 = fake_bundle(tmp_path, "v2")
    real = store.put_file

    def corrupting(key, path):  # a file that arrives other than it left
        real(key, path)
        if key.endswith("/bundle.json"):
            store.put_bytes(key, b"{}")

    monkeypatch.setattr(store, "put_file", corrupting)
    with pytest.raises(RegistryError, match="bundle.json does not match its sha256"):
        publish(store, b2)
    assert champion(store).version == "v1"
    monkeypatch.setattr(store, "put_file", real)
    publish(store, b2)  # the same bundle again: it finds its manifest, repairs the file, checks
    assert champion(store).version == "v2" and store.exists(POINTER)
    assert require_version(store, "v2") == "v2"


def test_a_cut_off_upload_is_incomplete_and_the_same_bundle_completes_it(store, tmp_path, monkeypatch):
    from hhpulse.data.store import StoreError
    from hhpulse.model.registry import require_version

    b1 = fake_bundle(tmp_path, "v1")
    real = store.put_file

    def dies(key, path):
        raise StoreError("connection lost")

    monkeypatch.setattr(store, "put_file", dies)
    with pytest.raises(StoreError):
        publish(store, b1)
    assert champion(store) is None
    with pytest.raises(RegistryError, match="v1 is not published.*incomplete: missing bundle.json"):
        require_version(store, "v1")
    monkeypatch.setattr(store, "put_file", real)
    assert publish(store, b1).version == "v1"
    assert require_version(store, "v1") == "v1"


def test_a_version_name_must_be_one_plain_folder(tmp_path):
    with pytest.raises(RegistryError, match="cannot be a model version"):
        publish(LocalStore(tmp_path / "s"), fake_bundle(tmp_path, "v1"), version="../x")
    with pytest.raises(RegistryError, match="cannot be a model version"):
        publish(LocalStore(tmp_path / "s"), fake_bundle(tmp_path, "v2"), version="champion.json")


# -- faults between the registry and S3 (the fault proxy in front of moto) ----------------------


@pytest.fixture
def proxied_store(s3_env, s3_bucket):
    from faultproxy import FaultProxy
    from hhpulse.data.store import S3Store

    with FaultProxy(s3_env) as proxy:
        yield proxy, S3Store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)


FAULTS = [
    ("lost reply, manifest", "drop_reply", r"/v2/MANIFEST\.json$", "If-None-Match", 1),
    ("lost reply, pointer", "drop_reply", r"/champion\.json$", "If-Match", 1),
    ("reset after, pointer", "reset_after", r"/champion\.json$", "If-Match", 1),
    ("503, pointer", "error:503", r"/champion\.json$", "If-Match", 2),
    ("reset, a file", "reset", r"/v2/bundle\.json$", None, 1),
    ("500, manifest", "error:500", r"/v2/MANIFEST\.json$", None, 2),
]


@pytest.mark.parametrize(("case", "fault", "path", "header", "times"), FAULTS, ids=[f[0] for f in FAULTS])
def test_publish_through_faults_lands_once(proxied_store, tmp_path, case, fault, path, header, times):
    proxy, store = proxied_store
    publish(store, fake_bundle(tmp_path, "v1"))
    rule = proxy.add(fault, method="PUT", path=path, header=header, times=times)
    ch = publish(store, fake_bundle(tmp_path, "v2"), expect_champion="v1")
    assert rule.hits == times, proxy.log
    assert (ch.version, ch.previous) == ("v2", ["v1"])
    assert champion(store) == ch
    assert fetch_champion(store, tmp_path / "got").joinpath("bundle.json").exists()


def test_a_first_pointer_whose_reply_was_lost_is_ours(proxied_store, tmp_path):
    proxy, store = proxied_store
    rule = proxy.add("drop_reply", method="PUT", path=r"/champion\.json$", header="If-None-Match")
    ch = publish(store, fake_bundle(tmp_path, "v1"), expect_champion=None)
    assert rule.hits == 1 and (ch.version, ch.previous) == ("v1", [])


def test_a_rollback_whose_reply_was_lost_is_not_taken_for_another_runs_move(proxied_store, tmp_path):
    proxy, store = proxied_store
    publish(store, fake_bundle(tmp_path, "v1"))
    publish(store, fake_bundle(tmp_path, "v2"))
    rule = proxy.add("drop_reply", method="PUT", path=r"/champion\.json$", header="If-Match")
    back = rollback(store, expect_current="v2")  # the retry's 412 is its own landed write
    assert rule.hits == 1 and (back.version, back.previous) == ("v1", [])
    assert champion(store) == back


def test_a_taken_version_is_refused_through_a_lost_reply_too(proxied_store, tmp_path):
    from hhpulse.model.registry import VersionExists

    proxy, store = proxied_store
    publish(store, fake_bundle(tmp_path, "v1"))
    proxy.add("drop_reply", method="PUT", path=r"/v1/MANIFEST\.json$")
    with pytest.raises(VersionExists):
        publish(store, other_bundle(tmp_path, "v1"))
    assert (
        fetch_champion(store, tmp_path / "got").joinpath("bundle.json").read_text()
        == (tmp_path / "v1" / "bundle.json").read_text()
    )


@pytest.mark.parametrize("fault", ["drop_reply", "reset_after", "error:503"])
def test_a_gate_record_whose_reply_was_lost_is_its_own_and_stays_once(proxied_store, fault):
    """The gate step's retry of a verdict that S3 applied finds its own verdict there (not
    another run's); another verdict for the version is still refused."""
    from hhpulse.flows.pipeline_steps import write_gate_record
    from hhpulse.model.registry import AlreadyExists

    proxy, store = proxied_store
    verdict = {"version": "v3", "champion_version": "v2", "lines": ["v3 beat v2"]}
    rule = proxy.add(fault, method="PUT", path=r"/gates/v3\.json$", header="If-None-Match")
    assert write_gate_record(store, "v3", verdict) == "gates/v3.json"
    assert rule.hits == 1, proxy.log
    assert store.get_json("gates/v3.json") == verdict
    with pytest.raises(AlreadyExists, match="already holds another gate verdict for v3"):
        write_gate_record(store, "v3", {**verdict, "champion_version": "v1"})
    assert store.get_json("gates/v3.json") == verdict
