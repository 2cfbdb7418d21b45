"""Publish and the champion pointer on a real S3 server (moto) behind the fault-injecting proxy
(tests/faultproxy.py): a lost reply to the pointer's conditional write, 5xx answers and reset
connections on the bundle's uploads. The pointer moves once, to the right version, and a gated
promotion whose reply was lost is not refused as if another run had moved the pointer."""

from __future__ import annotations

import pytest

from faultproxy import FaultProxy
from hhpulse.data.store import open_store
from hhpulse.model.registry import POINTER, champion, fetch_champion, publish, rollback
from test_registry import fake_bundle

POINTER_PUT = r"/models/hhpulse/champion\.json$"


@pytest.fixture
def proxied(s3_env, s3_bucket):
    with FaultProxy(s3_env) as proxy:
        yield open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url), proxy


def _puts(proxy, path: str = POINTER_PUT) -> list[str]:
    import re

    return [e[2].split(" ")[0] for e in proxy.log if e[0] == "PUT" and re.search(path, e[1])]


def test_publish_with_lost_replies_moves_the_pointer_once(proxied, tmp_path):
    store, proxy = proxied
    # the first pointer write (If-None-Match: there is none yet) is applied and its reply lost
    first = proxy.add("drop_reply", method="PUT", path=POINTER_PUT, header="If-None-Match")
    proxy.add("error:503", method="PUT", path=r"/models/hhpulse/v1/", times=2)
    proxy.add("reset", method="PUT", path=r"/models/hhpulse/v1/MANIFEST\.json$")
    ch = publish(store, fake_bundle(tmp_path, "v1"), expect_champion=None)
    assert first.hits == 1 and _puts(proxy) == ["drop_reply", "412"]
    assert ch.version == "v1" and ch.previous == []
    assert champion(store).version == "v1"

    # a gated promotion over v1 whose reply is lost: not taken as "another run moved the pointer"
    proxy.log.clear()
    second = proxy.add("drop_reply", method="PUT", path=POINTER_PUT, header="If-Match")
    ch = publish(store, fake_bundle(tmp_path, "v2"), expect_champion="v1")
    assert second.hits == 1 and _puts(proxy) == ["drop_reply", "412"]
    assert ch.version == "v2" and ch.previous == ["v1"]
    assert store.get_json(POINTER)["previous"] == ["v1"]  # v1 once, not twice
    assert fetch_champion(store, tmp_path / "got").joinpath("bundle.json").exists()

    # a rollback whose reply is lost rolls back once: v1 again, not "nothing to roll back to"
    proxy.log.clear()
    third = proxy.add("drop_reply", method="PUT", path=POINTER_PUT, header="If-Match")
    back = rollback(store, expect_current="v2")
    assert third.hits == 1 and back.version == "v1" and back.previous == []
    assert champion(store).version == "v1"


def test_publish_with_5xx_on_the_pointer_retries_and_lands(proxied, tmp_path):
    store, proxy = proxied
    publish(store, fake_bundle(tmp_path, "v1"))
    proxy.log.clear()
    proxy.add("error:503", method="PUT", path=POINTER_PUT, times=2)
    proxy.add("error:500", method="GET", path=POINTER_PUT)
    ch = publish(store, fake_bundle(tmp_path, "v2"), expect_champion="v1")
    assert ch.version == "v2" and ch.previous == ["v1"]
    assert _puts(proxy).count("error") == 2 and champion(store).version == "v2"
