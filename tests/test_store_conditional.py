"""Conditional writes (put_if, get_versioned, delete_if, update_json) on a folder and on a real S3
server (moto) on 127.0.0.1: conditions hold, conflicts are refused, and racing writers, threads or
processes, never lose an update."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hhpulse.data.store import (
    ConcurrentUpdateError,
    KeyNotFound,
    LocalStore,
    PreconditionFailed,
    open_store,
    update_json,
)

REPO = Path(__file__).resolve().parents[1]


def test_put_if_conditions(store):
    tag1 = store.put_if("state/x.json", b"one", if_none_match=True)
    data, tag = store.get_versioned("state/x.json")
    assert (data, tag) == (b"one", tag1)
    with pytest.raises(PreconditionFailed, match="x.json"):
        store.put_if("state/x.json", b"two", if_none_match=True)  # it exists
    tag2 = store.put_if("state/x.json", b"two", if_match=tag1)
    assert tag2 != tag1 and store.get_bytes("state/x.json") == b"two"
    with pytest.raises(PreconditionFailed, match="x.json"):
        store.put_if("state/x.json", b"three", if_match=tag1)  # stale version
    assert store.get_bytes("state/x.json") == b"two"  # the refused write changed nothing
    with pytest.raises(PreconditionFailed):
        store.put_if("state/none.json", b"x", if_match=tag2)  # absent: If-Match fails
    assert not store.exists("state/none.json")
    with pytest.raises(ValueError, match="exactly one condition"):
        store.put_if("state/x.json", b"x")
    with pytest.raises(ValueError, match="exactly one condition"):
        store.put_if("state/x.json", b"x", if_match=tag2, if_none_match=True)
    with pytest.raises(KeyNotFound):
        store.get_versioned("state/none.json")
    assert store.list("state/") == ["state/x.json"]  # lock files are not objects
    assert store.size("state/x.json") == 3


def test_delete_if(store):
    tag = store.put_if("lease.json", b"held", if_none_match=True)
    store.put_bytes("lease.json", b"taken over")
    with pytest.raises(PreconditionFailed):
        store.delete_if("lease.json", if_match=tag)
    assert store.get_bytes("lease.json") == b"taken over"
    _, tag = store.get_versioned("lease.json")
    store.delete_if("lease.json", if_match=tag)
    assert not store.exists("lease.json")
    store.delete_if("lease.json", if_match=tag)  # gone already: what it asked for (a retried delete)


def test_update_json_create_change_noop_and_refuse(store):
    assert update_json(store, "s.json", lambda cur: {"n": 1} if cur is None else cur) == {"n": 1}
    _, tag = store.get_versioned("s.json")
    assert update_json(store, "s.json", lambda cur: cur) == {"n": 1}
    assert store.get_versioned("s.json")[1] == tag  # unchanged state: nothing written

    def refuse(cur):
        raise RuntimeError("not now")

    with pytest.raises(RuntimeError, match="not now"):
        update_json(store, "s.json", refuse)
    assert store.get_json("s.json") == {"n": 1}
    assert update_json(store, "s.json", lambda cur: {"n": cur["n"] + 1}) == {"n": 2}
    assert store.get_json("s.json") == {"n": 2}


def test_update_json_gives_up_with_a_clear_error(store):
    """A writer that changes the key between every read and write: the updater retries from the
    new state each time, then names the key; the other writer's value stays."""
    calls = []

    def meddle(cur):
        calls.append(cur)
        store.put_json("busy.json", {"other": len(calls)})  # someone else wins every time
        return {"mine": True}

    store.put_json("busy.json", {"other": 0})
    with pytest.raises(ConcurrentUpdateError, match=r"busy\.json.*changed it 3 times.*not written"):
        update_json(store, "busy.json", meddle, retries=2, backoff_s=0)
    assert [c["other"] for c in calls] == [0, 1, 2]  # each retry started from the new state
    assert store.get_json("busy.json") == {"other": 3}


def _increment(cur):
    cur = cur or {"n": 0, "by": []}
    return {"n": cur["n"] + 1, "by": [*cur["by"], threading.get_ident()]}


def test_threads_racing_increments_lose_nothing(store):
    threads, each = 8, 8

    def worker():
        for _ in range(each):
            update_json(store, "counter.json", _increment, retries=200, backoff_s=0.005)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    state = store.get_json("counter.json")
    assert state["n"] == threads * each
    assert len(state["by"]) == threads * each


PROCESS_WORKER = textwrap.dedent(
    """
    import sys
    from hhpulse.data.store import open_store, update_json

    store = open_store(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        update_json(store, "counter.json",
                    lambda cur: {"n": (cur or {"n": 0})["n"] + 1, "pids": [*(cur or {}).get("pids", []), sys.argv[3]]},
                    retries=200, backoff_s=0.005)
    """
)


def test_processes_racing_increments_lose_nothing(store):
    location = str(store.root) if isinstance(store, LocalStore) else store.url
    procs, each = 4, 6
    running = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_WORKER, location, str(each), str(i)], env=os.environ.copy()
        )
        for i in range(procs)
    ]
    assert [p.wait(timeout=120) for p in running] == [0] * procs
    state = store.get_json("counter.json")
    assert state["n"] == procs * each
    assert sorted(state["pids"]) == sorted(str(i) for i in range(procs) for _ in range(each))


LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    from hhpulse.data.store import LocalStore

    store = LocalStore(sys.argv[1])
    with store._locked(store._path("held.json")):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_local_lock_of_a_killed_writer_is_released(tmp_path):
    """The folder store's lock is a flock: a writer killed while holding it never blocks the next."""
    store = LocalStore(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        blocked = threading.Event()

        def writer():
            store.put_if("held.json", b"x", if_none_match=True)
            blocked.set()

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        assert not blocked.is_set()  # the live holder keeps it
        holder.send_signal(signal.SIGKILL)
        t.join(timeout=10)
        assert blocked.is_set()
    finally:
        holder.kill()
        holder.wait()
    assert store.get_bytes("held.json") == b"x"
    assert store.list("") == ["held.json"]


@pytest.mark.parametrize(
    ("status", "code", "condition", "expected"),
    [
        (412, "PreconditionFailed", "If-Match x", "PreconditionFailed"),
        (409, "ConditionalRequestConflict", "If-None-Match *", "PreconditionFailed"),
        (404, "NoSuchKey", "If-Match x", "PreconditionFailed"),  # deleted since it was read
        (403, "AccessDenied", "If-Match x", "StoreError"),
    ],
)
def test_s3_condition_errors_map_to_precondition_failed(s3_bucket, status, code, condition, expected):
    """What real S3 and MinIO answer (moto's server never sends the 409 of a concurrent conditional
    write): the botocore error each one raises is mapped to the store's errors."""
    from botocore.exceptions import ClientError

    store = open_store(f"s3://{s3_bucket}")
    exc = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    err = store._conditional_error(exc, "k.json", condition)
    assert type(err).__name__ == expected and "k.json" in str(err)


# -- lost replies, through the fault-injecting proxy in front of moto ---------------------------------
@pytest.fixture
def proxied(s3_env, s3_bucket):
    from faultproxy import FaultProxy

    with FaultProxy(s3_env) as proxy:
        yield open_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url), proxy


def test_a_conditional_write_whose_reply_was_lost_is_not_taken_as_lost(proxied):
    """S3 applies the write, the reply is lost, botocore retries, and the retry's condition fails
    against that very write (412): the store reads what is there, finds what it wrote, and says so."""
    store, proxy = proxied
    rule = proxy.add("drop_reply", method="PUT", header="If-None-Match")
    tag = store.put_if("state/x.json", b"mine", if_none_match=True)
    assert rule.hits == 1 and [e[2].split(" ")[0] for e in proxy.log if e[0] == "PUT"] == [
        "drop_reply",
        "412",
    ]
    assert store.get_versioned("state/x.json") == (b"mine", tag)
    rule = proxy.add("drop_reply", method="PUT", header="If-Match")
    tag2 = store.put_if("state/x.json", b"second", if_match=tag)
    assert rule.hits == 1 and store.get_versioned("state/x.json") == (b"second", tag2)
    # a real conflict is still one: another writer's content is there
    store.put_bytes("state/x.json", b"theirs")
    with pytest.raises(PreconditionFailed):
        store.put_if("state/x.json", b"third", if_match=tag2)
    with pytest.raises(PreconditionFailed):
        store.put_if("state/x.json", b"fourth", if_none_match=True)
    assert store.get_bytes("state/x.json") == b"theirs"


def test_a_conditional_delete_whose_reply_was_lost_succeeded(proxied):
    store, proxy = proxied
    tag = store.put_if("lease.json", b"held", if_none_match=True)
    rule = proxy.add("drop_reply", method="DELETE")
    store.delete_if("lease.json", if_match=tag)
    assert rule.hits == 1 and not store.exists("lease.json")


def test_update_json_with_lost_replies_and_5xx_applies_each_update_once(proxied):
    store, proxy = proxied
    for i in range(6):
        if i % 2 == 0:  # this update's write is applied and its reply lost
            proxy.add("drop_reply", method="PUT", path=r"counter\.json$")
        if i == 3:
            proxy.add("error:503", method="PUT", path=r"counter\.json$", times=2)
            proxy.add("error:500", method="GET", path=r"counter\.json$")
        update_json(store, "counter.json", _increment)
    state = store.get_json("counter.json")
    assert state["n"] == 6 and len(state["by"]) == 6  # not one applied twice
    outcomes = [e[2].split(" ")[0] for e in proxy.log if e[0] == "PUT"]
    assert outcomes.count("drop_reply") == 3 and outcomes.count("412") == 3 and outcomes.count("error") == 2
