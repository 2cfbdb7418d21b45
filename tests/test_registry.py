"""The model registry: publish, the atomic champion pointer, old versions kept, rollback."""

from __future__ import annotations

import json
import shutil

import pytest

from hhpulse.bundle import FORMAT, write_manifest
from hhpulse.registry import RegistryError, champion, fetch_champion, publish, rollback, versions
from hhpulse.store import LocalStore


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
    from hhpulse.bundle import BundleError

    with pytest.raises(BundleError):
        publish(LocalStore(tmp_path / "s"), d)
    assert champion(LocalStore(tmp_path / "s")) is None


def test_pointer_moves_in_one_atomic_write(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "s")
    publish(store, fake_bundle(tmp_path, "v1"))
    writes = []
    orig = store.put_bytes
    monkeypatch.setattr(store, "put_bytes", lambda k, d: (writes.append(k), orig(k, d)))
    publish(store, fake_bundle(tmp_path, "v2"))
    assert writes[-1] == "models/hhpulse/champion.json"  # the pointer moves last, once
    assert writes.count("models/hhpulse/champion.json") == 1
    shutil.rmtree(tmp_path / "v2")
