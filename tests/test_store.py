"""The artifact store, on both backends: a local folder and a real S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from hhpulse.data.store import KeyNotFound, LocalStore, S3Location, S3Store, StoreError, open_store


def test_bytes_json_parquet_round_trip(store):
    store.put_bytes("a/b.bin", b"\x00\x01")
    store.put_json("a/c.json", {"x": [1, 2], "ё": "юникод"})
    df = pd.DataFrame({"id": ["1", "2"], "v": [1.5, None]})
    store.put_parquet("t/df.parquet", df)
    assert store.get_bytes("a/b.bin") == b"\x00\x01"
    assert store.get_json("a/c.json") == {"x": [1, 2], "ё": "юникод"}
    pd.testing.assert_frame_equal(store.get_parquet("t/df.parquet"), df)
    assert store.exists("a/b.bin") and not store.exists("a/nope")
    assert store.list("a/") == ["a/b.bin", "a/c.json"]
    assert store.list("") == ["a/b.bin", "a/c.json", "t/df.parquet"]
    store.put_bytes("a/b.bin", b"new")  # overwrite is whole
    assert store.get_bytes("a/b.bin") == b"new"
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # missing keys are ignored
    assert store.list("a/") == ["a/c.json"]


def test_files_and_dirs(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x.txt").write_text("x")
    (src / "sub" / "y.txt").write_text("y")
    assert store.put_dir("models/v1", src) == ["models/v1/sub/y.txt", "models/v1/x.txt"]
    out = store.get_dir("models/v1", tmp_path / "out")
    assert sorted(p.name for p in out) == ["x.txt", "y.txt"]
    assert (tmp_path / "out" / "sub" / "y.txt").read_text() == "y"
    with pytest.raises(KeyNotFound, match="nothing stored"):
        store.get_dir("models/none", tmp_path / "o2")


def test_missing_key_and_bad_keys(store):
    with pytest.raises(KeyNotFound, match="does not exist"):
        store.get_bytes("no/such/key")
    for bad in ["", "../escape", "a/../b", "a//b"]:
        with pytest.raises(StoreError, match="invalid store key"):
            store.put_bytes(bad, b"x")


def test_s3_url_parsing():
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b")
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    with pytest.raises(StoreError, match="no bucket"):
        S3Location.parse("s3:///x")
    with pytest.raises(StoreError, match="unsupported store location"):
        open_store("gs://bucket/x")


def test_s3_uses_path_style_and_prefix(s3_bucket, s3_server):
    import boto3

    store = S3Store(f"s3://{s3_bucket}/pre")
    assert store._s3.meta.config.s3["addressing_style"] == "path"
    store.put_bytes("k.txt", b"v")
    raw = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    assert raw.get_object(Bucket=s3_bucket, Key="pre/k.txt")["Body"].read() == b"v"


def test_s3_clear_errors(s3_env, monkeypatch):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        S3Store("s3://no-such-bucket/x").put_bytes("k", b"v")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(StoreError, match="no S3 credentials"):
        S3Store("s3://whatever/x").get_bytes("k")


def test_local_failed_write_keeps_old_content(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_bytes("k", b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes("k", b"new")
    monkeypatch.undo()
    assert store.get_bytes("k") == b"old"
    assert list(tmp_path.iterdir()) == [tmp_path / "k"]  # no temp file left behind


def test_local_readers_never_see_partial_objects(tmp_path):
    store = LocalStore(tmp_path)
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    store.put_bytes("obj", big_a)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            data = store.get_bytes("obj")
            assert len(data) == 2_000_000
            seen.add(data[:1] + data[-1:])
            assert data.count(data[:1]) == len(data)  # one write's bytes, never a mix

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        store.put_bytes("obj", big_b if i % 2 else big_a)
        assert store.list("") == ["obj"]  # in-flight temp files are never listed
    stop.set()
    t.join()
    assert seen <= {b"aa", b"bb"}
