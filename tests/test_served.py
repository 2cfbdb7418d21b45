"""The served prediction log: record format, writer bounds and batching, reader, on a folder and S3."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timezone

import boto3
import pytest

from hhpulse.data.store import LocalStore, S3Store, StoreError, open_store
from hhpulse.watch.served import (
    ServedLogError,
    ServedLogFull,
    ServedLogWriter,
    check_record,
    format_time,
    key_hour,
    make_record,
    read_batch,
    read_served,
    records_from_v1,
    served_key,
)

DEMAND = {"cohort": "high", "probabilities": {"high": 0.7, "medium": 0.2, "low": 0.1}}
SALARY = {"cohort": "mid", "probabilities": {"low": 0.1, "mid": 0.6, "high": 0.3}}


def pred(version: str = "v1") -> dict:
    return {"salary": SALARY, "demand": DEMAND, "model_version": version}


def rec(i: int, time: str = "2026-03-01T09:15:02Z", vid: str | None = None) -> dict:
    inst = {"responsibility": f"текст {i}"} | ({"id": vid} if vid else {})
    return make_record(time=time, model_version="v1", request_id=f"r{i}", instance=inst, prediction=pred())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/p")


def test_records_from_v1_pairs_instances_with_predictions():
    body = {
        "instances": [
            "писать код",
            {"responsibility": "вести учёт", "name": "Бухгалтер", "id": 91234567},
            {"responsibility": None, "name": "Курьер", "requirement": "права B"},
        ]
    }
    answer = {"predictions": [pred("b1"), pred("b1"), {"salary": SALARY, "demand": DEMAND}]}
    recs = records_from_v1(
        body, answer, time="2026-03-01T09:15:02.123456789Z", model_version="fallback", request_id="ce-1"
    )
    assert [r["id"] for r in recs] == [None, "91234567", None]
    assert recs[0]["instance"] == {"responsibility": "писать код"}
    assert recs[1]["instance"] == {"responsibility": "вести учёт", "name": "Бухгалтер", "id": "91234567"}
    assert recs[2]["instance"] == {"responsibility": "", "name": "Курьер", "requirement": "права B"}
    assert [r["model_version"] for r in recs] == ["b1", "b1", "fallback"]
    assert {r["time"] for r in recs} == {"2026-03-01T09:15:02.123Z"}
    assert {r["request_id"] for r in recs} == {"ce-1"}
    assert recs[0]["demand"] == DEMAND and recs[0]["salary"] == SALARY
    assert set(recs[0]) == {"time", "model_version", "request_id", "id", "instance", "salary", "demand"}
    assert all(check_record(r) == r for r in recs)  # what is written reads back as valid


@pytest.mark.parametrize(
    ("body", "answer", "message"),
    [
        ({"inputs": []}, {"predictions": []}, "no 'instances' list"),
        ({"instances": ["a"]}, {"outputs": []}, "no 'predictions' list"),
        ({"instances": ["a", "b"]}, {"predictions": [pred()]}, "2 instances but the response 1"),
        ({"instances": [5]}, {"predictions": [pred()]}, "instances[0].instance: an instance must be"),
        (
            {"instances": [{"responsibility": 5}]},
            {"predictions": [pred()]},
            "responsibility: must be a string",
        ),
        ({"instances": [{"responsibility": "a", "id": 1.5}]}, {"predictions": [pred()]}, "'id' must be"),
        ({"instances": ["a"]}, {"predictions": [{"salary": SALARY}]}, "instances[0].demand: must be"),
        (
            {"instances": ["a"]},
            {"predictions": [{"salary": SALARY, "demand": {"cohort": "x", "probabilities": {"high": 1}}}]},
            "cohort 'x' is not among",
        ),
    ],
)
def test_records_from_v1_refuses_what_does_not_fit(body, answer, message):
    with pytest.raises(ServedLogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        records_from_v1(body, answer, time="2026-03-01T09:00:00Z", model_version="v", request_id="r")


def test_time_and_key_layout():
    assert format_time("2026-03-01T12:15:02+03:00") == "2026-03-01T09:15:02.000Z"
    assert format_time(datetime(2026, 3, 1, 9, 15, 2)) == "2026-03-01T09:15:02.000Z"  # naive is UTC
    with pytest.raises(ServedLogError, match="not an ISO-8601"):
        format_time("yesterday")
    key = served_key("2026-03-01T23:59:59.999Z", uid="ab" * 16)
    assert key == "served/2026-03-01/23-" + "ab" * 16 + ".jsonl.gz"
    assert key_hour(key) == datetime(2026, 3, 1, 23, tzinfo=timezone.utc)
    assert key_hour("served/2026-03-01/notes.txt") is None
    fresh = served_key("2026-03-01T00:00:00Z")
    assert fresh.startswith("served/2026-03-01/00-") and uuid.UUID(fresh[21:53]).version == 4


def test_writer_batches_on_count_and_reads_back(store):
    w = ServedLogWriter(store, max_records=3, max_seconds=3600, clock=Clock())
    assert w.add([rec(0), rec(1)]) == []
    assert w.pending == 2 and store.list("served/") == []
    (key,) = w.add([rec(2)])  # reaches max_records: written
    assert w.pending == 0 and key_hour(key) == datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
    lines = gzip.decompress(store.get_bytes(key)).decode().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == ["r0", "r1", "r2"]
    assert w.add([rec(3), rec(4), rec(5), rec(6)]) and w.pending == 0  # more than a batch: written whole
    assert w.add([rec(7, "2026-03-02T00:10:00Z")]) == []
    assert w.flush() and w.flush() is None
    # batches of one hour come in key order (their uuids), so compare as sets
    assert sorted(r["request_id"] for r in read_served(store)) == [f"r{i}" for i in range(8)]
    assert [w.records for w in w.written] == [3, 4, 1]
    assert len(store.list("served/2026-03-02/")) == 1


def test_writer_batches_on_bytes_and_time(tmp_path):
    clock = Clock()
    store = LocalStore(tmp_path)
    one = len(json.dumps(rec(0), ensure_ascii=False, separators=(",", ":")).encode()) + 1
    w = ServedLogWriter(store, max_records=100, max_bytes=2 * one + 10, max_seconds=60, clock=clock)
    w.add([rec(0)])
    assert w.pending_bytes == one
    assert w.add([rec(1)]) == [] and w.pending == 2
    written = w.add([rec(2)])  # would pass max_bytes: the two buffered go first
    assert len(written) == 1 and w.pending == 1
    clock.now += 59
    assert w.flush_due() is None
    clock.now += 1
    assert w.flush_due() and w.pending == 0
    w.add([rec(3)])
    clock.now += 61
    assert w.add([rec(4)])  # due on add: both written
    assert w.pending == 0 and [b.records for b in w.written] == [2, 1, 2]


def test_writer_full_buffer_raises_and_keeps_everything(s3_env):
    """The store is down (the bucket is missing): a full buffer refuses the next records with
    ServedLogFull and keeps what it holds; once the store is back, nothing is lost."""
    bucket = f"hhpulse-{uuid.uuid4().hex[:10]}"
    store = S3Store(f"s3://{bucket}/p")
    w = ServedLogWriter(store, max_records=2, max_seconds=3600, clock=Clock())
    assert w.add([rec(0)]) == []
    assert w.add([rec(1)]) == [] and w.pending == 2  # the batch write failed quietly: kept
    with pytest.raises(ServedLogFull, match="buffer is full"):
        w.add([rec(2)])
    with pytest.raises(ServedLogFull, match="more than one batch"):
        ServedLogWriter(store, max_records=1, clock=Clock()).add([rec(8), rec(9)])
    assert w.pending == 2
    with pytest.raises(StoreError):
        w.flush()
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    assert w.add([rec(2)]) and w.pending == 1  # the two held are written to make room
    with w:
        pass  # leaving the block flushes
    assert sorted(r["request_id"] for r in read_served(store)) == ["r0", "r1", "r2"]


def test_writer_validates_before_buffering(tmp_path):
    w = ServedLogWriter(LocalStore(tmp_path), clock=Clock())
    bad = rec(1) | {"demand": {"cohort": "high"}}
    with pytest.raises(ServedLogError, match=r"records\[1\]\.demand"):
        w.add([rec(0), bad])
    with pytest.raises(ServedLogError, match="missing key"):
        w.add([{"time": "2026-03-01T00:00:00Z"}])
    with pytest.raises(ServedLogError, match="differs from the instance"):
        w.add([rec(0, vid="7") | {"id": "8"}])
    assert w.pending == 0
    with pytest.raises(ValueError, match="positive"):
        ServedLogWriter(LocalStore(tmp_path), max_records=0)


def test_read_served_windows_and_bad_batches(store):
    w = ServedLogWriter(store, max_records=2, clock=Clock())
    w.add([rec(0, "2026-03-01T08:59:59Z"), rec(1, "2026-03-01T09:00:00Z")])
    w.add([rec(2, "2026-03-01T10:30:00Z", vid="42"), rec(3, "2026-03-02T00:00:00Z")])
    ids = lambda **kw: [r["request_id"] for r in read_served(store, **kw)]  # noqa: E731
    assert ids() == ["r0", "r1", "r2", "r3"]
    assert ids(since="2026-03-01T09:00:00Z") == ["r1", "r2", "r3"]
    assert ids(since="2026-03-01T09:00:00Z", until="2026-03-01T10:30:00Z") == ["r1"]
    assert ids(until="2026-03-01T08:00:00Z") == []
    assert [r["id"] for r in read_served(store)] == [None, None, "42", None]
    store.put_bytes("served/2026-03-01/README.txt", b"not a batch")  # ignored: not a batch key
    bad_key = served_key("2026-03-01T11:00:00Z")
    store.put_bytes(bad_key, gzip.compress(b'{"time": "2026-03-01T11:00:00Z"}\n'))
    with pytest.raises(ServedLogError, match="line 1: missing key"):
        ids()
    bad: list[str] = []
    assert [r["request_id"] for r in read_served(store, errors="skip", bad=bad)] == ["r0", "r1", "r2", "r3"]
    assert len(bad) == 1 and bad_key in bad[0]
    store.put_bytes(bad_key, b"plain text")
    with pytest.raises(ServedLogError, match="not a gzipped"):
        read_batch(store, bad_key)


# -- the buffered mode: add(write=False) never waits on the store, a timer writes ---------------


class GatedStore(LocalStore):
    """A folder store whose batch writes wait for ``gate`` and, while ``refuse`` is set, fail."""

    def __init__(self, root) -> None:
        import threading

        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.refuse = False
        self.tries = 0

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.startswith("served/"):
            self.tries += 1
            self.entered.set()
            assert self.gate.wait(30)
            if self.refuse:
                raise StoreError("the store refuses writes")
        super().put_bytes(key, data)


def batch_ids(writer) -> list[list[str]]:
    """Each batch the writer wrote, as its request ids, in the order written."""
    return [[r["request_id"] for r in read_batch(writer.store, b.key)] for b in writer.written]


def test_buffered_add_never_writes_holds_four_batches_and_refuses_the_fifth_whole(tmp_path):
    from hhpulse.watch.served import BUFFER_BATCHES

    store = GatedStore(tmp_path / "s")
    w = ServedLogWriter(store, max_records=3, max_seconds=3600, clock=Clock())
    for i in range(3 * BUFFER_BATCHES - 1):
        assert w.add([rec(i)], write=False) == []
    assert w.full and store.tries == 0 and w.pending == 11  # full batches wait for the timer
    with pytest.raises(ServedLogFull, match="until the store takes the batches waiting"):
        w.add([rec(90), rec(91)], write=False)  # 13 > 4 batches: nothing of this call is kept
    w.add([rec(11)], write=False)
    assert w.pending == 12
    with pytest.raises(ServedLogFull):
        w.add([rec(12)], write=False)
    assert w.flush_due() is not None  # the timer: every whole batch, one batch a write
    assert [len(b) for b in batch_ids(w)] == [3, 3, 3, 3] and w.pending == 0
    assert sorted(r["request_id"] for r in read_served(store)) == sorted(f"r{i}" for i in range(12))
    # into an empty buffer one call larger than that is taken whole, and written in batches
    assert w.add([rec(i) for i in range(20, 34)], write=False) == [] and w.pending == 14
    assert w.close() is not None
    assert [len(b) for b in batch_ids(w)][4:] == [3, 3, 3, 3, 2]


def test_a_refused_batch_goes_back_in_front_of_what_came_while_it_was_written(tmp_path):
    import threading

    store = GatedStore(tmp_path / "s")
    w = ServedLogWriter(store, max_records=3, max_seconds=3600, clock=Clock())
    for i in range(4):
        w.add([rec(i)], write=False)
    store.gate.clear()
    store.refuse = True
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            w.flush()
        except StoreError as exc:
            errors.append(exc)

    t = threading.Thread(target=flush)
    t.start()
    assert store.entered.wait(10)  # r0..r2 are being written
    assert w.pending == 4  # the batch in flight counts as pending
    w.add([rec(4)], write=False)  # a handler is not held up by the write
    w.add([rec(5)], write=False)
    store.gate.set()
    t.join(10)
    assert len(errors) == 1 and store.list("served/") == []
    assert w.pending == 6  # nothing lost
    store.refuse = False
    w.close()
    # the refused batch first, then in order what came after it
    assert batch_ids(w) == [["r0", "r1", "r2"], ["r3", "r4", "r5"]]


def test_spill_writes_the_whole_buffer_to_one_file_and_empties_it(tmp_path):
    from hhpulse.watch.served import replay_spilled, spill_key

    store = GatedStore(tmp_path / "s")
    w = ServedLogWriter(store, max_records=2, max_seconds=3600, clock=Clock())
    assert w.spill(tmp_path / "spill") is None  # nothing buffered: no file
    for i in range(5):
        w.add([rec(i)], write=False)
    got = w.spill(tmp_path / "spill")
    assert got is not None and got.records == 5 and w.pending == 0 and store.tries == 0
    assert spill_key(got.path.name) == got.key and key_hour(got.key) == datetime(
        2026, 3, 1, 9, tzinfo=timezone.utc
    )
    (done,) = replay_spilled(store, tmp_path / "spill")
    assert done.key == got.key and done.records == 5 and not got.path.exists()
    assert [r["request_id"] for r in read_served(store)] == [f"r{i}" for i in range(5)]
