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
