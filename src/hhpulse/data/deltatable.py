"""A Delta Lake table kept in a store, through ``deltalake`` (delta-rs): the mechanics the
stored history (:mod:`hhpulse.data.history_store`) is built on.

* Where the table is: :func:`location` turns a store and a key into the URI and the
  ``storage_options`` delta-rs needs (a folder: its path; S3 or MinIO: the endpoint, region,
  the credentials boto3 resolved, and ``conditional_put: etag``, which makes a commit a
  ``PutObject`` with ``If-None-Match: *`` of ``_delta_log/<version>.json``).
* Data files are written by hhpulse itself, through the store (:func:`write_file`), with the
  per-file statistics Delta readers use to skip files (row count, null counts, min and max of
  a few columns), then committed with exact add and remove actions (:func:`commit`): one
  commit per fold, which carries hhpulse's own record of it in the commit's metadata
  (``commitInfo.hhpulse``) and Delta's transaction identifier (``txn``: an app id and a version).
* A commit is never retried by delta-rs (``max_commit_retries=0``): when another writer took
  the version, the caller folds again from the new one. A commit whose reply was lost may have
  been applied all the same (delta-rs then says ``CommitFailedError`` about its own commit):
  :func:`find_commit` looks for the commit's unique token in the versions after the one it
  read, so the caller never takes an applied commit for a lost one.
* Nothing here deletes a data file: a file a failed commit wrote is left unreferenced, and
  ``vacuum`` removes it once it is older than the retention.

deltalake is imported inside the functions that use it (the CLI's parser never loads it).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from hhpulse.data.store import KeyNotFound, LocalStore, S3Store, Store, StoreError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

LOG_DIR = "_delta_log"
STATS_MAX_STRING = 32  # longer strings get no min/max (a truncated max would not bound them)


class TableError(StoreError):
    """The Delta table cannot be read or written as asked."""


@dataclass(frozen=True)
class DataFile:
    """One data file of a table version: its path (relative to the table), size, and statistics."""

    path: str
    size: int
    rows: int
    nulls: Mapping[str, int] = field(default_factory=dict)
    mins: Mapping[str, Any] = field(default_factory=dict)
    maxs: Mapping[str, Any] = field(default_factory=dict)

    def stats_json(self) -> str:
        """The ``stats`` string of the file's add action (Delta's format: ISO timestamps to the
        millisecond, the minimum floored and the maximum rounded up)."""
        return json.dumps(
            {
                "numRecords": self.rows,
                "nullCount": dict(self.nulls),
                "minValues": {k: _stat_value(v, up=False) for k, v in self.mins.items()},
                "maxValues": {k: _stat_value(v, up=True) for k, v in self.maxs.items()},
            },
            sort_keys=True,
        )


def _stat_value(value: Any, *, up: bool) -> Any:
    if isinstance(value, datetime):
        us = _epoch_us(value)
        ms = math.ceil(us / 1000) if up else math.floor(us / 1000)
        when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return value


def _epoch_us(value: datetime) -> int:
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- where the table is ---------------------------------------------------------------------------
def location(store: Store, key: str) -> tuple[str, dict[str, str]]:
    """(table URI, storage options) of the table at ``key`` in ``store``."""
    if isinstance(store, LocalStore):
        return str(store.root / key), {}
    if isinstance(store, S3Store):
        prefix = f"{store.location.prefix}/" if store.location.prefix else ""
        return f"s3://{store.location.bucket}/{prefix}{key}", store.storage_options()
    raise TableError(f"{store!r} cannot hold a Delta table")


def commit_key(table_key: str, version: int) -> str:
    return f"{table_key}/{LOG_DIR}/{version:020d}.json"


def read_commit(store: Store, table_key: str, version: int) -> list[dict[str, Any]]:
    """The actions of one commit (its ``_delta_log`` JSON lines); :class:`KeyNotFound` when the
    version's file is not there (never committed, or its log expired)."""
    data = store.get_bytes(commit_key(table_key, version))
    try:
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TableError(
            f"{store.uri(commit_key(table_key, version))} is not a Delta commit ({exc})"
        ) from None


def commit_info(actions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    for action in actions:
        if "commitInfo" in action:
            return dict(action["commitInfo"] or {})
    return {}


def changes_data(actions: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a commit adds or removes data files (schema and property changes, vacuum's
    records: no)."""
    return any("add" in a or "remove" in a for a in actions)


def log_versions(store: Store, table_key: str) -> list[int]:
    """The versions that have a commit file in ``_delta_log`` (sorted)."""
    out = []
    for key in store.list(f"{table_key}/{LOG_DIR}/"):
        name = key.rsplit("/", 1)[-1]
        stem, _, ext = name.partition(".")
        if ext == "json" and stem.isdigit() and len(stem) == 20:
            out.append(int(stem))
    return sorted(out)


def has_log(store: Store, table_key: str) -> bool:
    return bool(store.list(f"{table_key}/{LOG_DIR}/"))


def load(store: Store, table_key: str, version: int | None = None) -> Any | None:
    """The ``DeltaTable`` at ``key`` (at ``version``, or the latest), or None when there is none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri, options = location(store, table_key)
    try:
        return DeltaTable(uri, version=version, storage_options=options)
    except TableNotFoundError:
        if version is None and not log_versions(store, table_key):
            return None
        raise TableError(
            f"{store.uri(table_key)}: no version {version} in its log"
            if version is not None
            else f"{store.uri(table_key)}: its _delta_log holds no readable table"
        ) from None
    except Exception as exc:  # delta-rs: DeltaError, OSError, ValueError, with multi-line texts
        what = f"version {version} of " if version is not None else ""
        raise TableError(f"{what}{store.uri(table_key)} cannot be read: {_one_line(exc)}") from None


_BACKTRACE = re.compile(r"\n\s*0: .*", re.S)  # delta-rs appends its Rust backtrace's frames


def _one_line(exc: BaseException) -> str:
    text = " ".join(_BACKTRACE.sub("", str(exc)).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def files(table: Any) -> list[DataFile]:
    """The data files of a loaded table version, with their statistics."""
    import pyarrow as pa

    rows = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    out = []
    for r in rows:
        nulls, mins, maxs = {}, {}, {}
        for k, v in r.items():
            if v is None:
                continue
            kind, _, col = k.partition(".")
            if kind == "null_count":
                nulls[col] = int(v)
            elif kind == "min":
                mins[col] = v
            elif kind == "max":
                maxs[col] = v
        out.append(DataFile(r["path"], int(r["size_bytes"]), int(r["num_records"] or 0), nulls, mins, maxs))
    return sorted(out, key=lambda f: f.path)


# -- writing -----------------------------------------------------------------------------------------
def write_file(
    store: Store, table_key: str, path: str, table: pa.Table, stats_columns: Sequence[str] = ()
) -> DataFile:
    """Write ``table`` as a parquet data file at ``path`` (relative to the table) through the store,
    and return it with its statistics (of ``stats_columns``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    store.put_bytes(f"{table_key}/{path}", data)
    nulls, mins, maxs = {}, {}, {}
    for col in stats_columns:
        if col not in table.column_names:
            continue
        arr = table[col]
        nulls[col] = int(arr.null_count)
        if arr.null_count == len(arr):
            continue
        mm = pc.min_max(arr)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, str) and max(len(lo), len(hi)) > STATS_MAX_STRING:
            continue
        if isinstance(lo, str) and int(pc.max(pc.utf8_length(arr)).as_py()) > STATS_MAX_STRING:
            continue
        mins[col], maxs[col] = lo, hi
    return DataFile(path, len(data), table.num_rows, nulls, mins, maxs)


def read_file(store: Store, table_key: str, path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """One data file, only ``columns`` where the file has them (a folder is read in place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = f"{table_key}/{path}"
    try:
        if isinstance(store, LocalStore):
            source: Any = store.root / key
            schema = pq.read_schema(source)
        else:
            source = io.BytesIO(store.get_bytes(key))
            schema = pq.read_schema(source)
        cols = None if columns is None else [c for c in columns if c in schema.names]
        return pq.read_table(source, columns=cols)
    except FileNotFoundError:
        raise KeyNotFound(f"{store.uri(key)} does not exist") from None
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{store.uri(key)} is not a readable parquet file ({_one_line(exc)})") from None


# -- committing -------------------------------------------------------------------------------------
@dataclass
class Commit:
    """One commit: the files it adds and removes, hhpulse's record of it, the txn version."""

    adds: list[DataFile]
    removes: list[DataFile]
    metadata: dict[str, Any]  # stored as commitInfo["hhpulse"]
    app_id: str
    txn_version: int


def commit(
    store: Store,
    table_key: str,
    table: Any | None,
    schema: pa.Schema,
    change: Commit,
    *,
    configuration: Mapping[str, str] | None = None,
) -> None:
    """Commit ``change`` on top of the loaded version ``table`` (None: create the table with it as
    version 0). New columns of ``schema`` are added to the table first (schema evolution: older
    files read them as null). delta-rs does not retry: any concurrent commit makes this one fail."""
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import (
        AddAction,
        PostCommitHookProperties,
        RemoveAction,
        Transaction,
        create_table_with_add_actions,
    )

    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    adds = [AddAction(f.path, f.size, {}, now, True, f.stats_json()) for f in change.adds]
    props = CommitProperties(
        custom_metadata={"hhpulse": change.metadata},
        max_commit_retries=0,
        app_transactions=[Transaction(change.app_id, change.txn_version)],
    )
    hooks = PostCommitHookProperties(create_checkpoint=True)
    if table is None:
        uri, options = location(store, table_key)
        create_table_with_add_actions(
            uri,
            Schema.from_arrow(schema),
            adds,
            mode="error",
            configuration=dict(configuration or {}),
            storage_options=options,
            commit_properties=props,
            post_commithook_properties=hooks,
        )
        return
    assert isinstance(table, DeltaTable)
    have = {f.name for f in table.schema().fields}
    new = [f for f in Schema.from_arrow(schema).fields if f.name not in have]
    if new:
        log.info("%s: adding columns %s", store.uri(table_key), ", ".join(f.name for f in new))
        table.alter.add_columns(new)
    removes = [RemoveAction(f.path, True, now, f.size) for f in change.removes]
    table.create_write_transaction(
        [*adds, *removes],
        "append",
        table.schema(),
        commit_properties=props,
        post_commithook_properties=hooks,
    )


def find_commit(store: Store, table_key: str, after: int, token: str) -> int | None:
    """The version after ``after`` whose hhpulse record carries ``token`` (the commit was applied,
    whatever its reply said), or None. Reads commit files one by one until the first missing."""
    version = after + 1
    while True:
        try:
            actions = read_commit(store, table_key, version)
        except KeyNotFound:
            return None
        except TableError:
            version += 1
            continue
        if (commit_info(actions).get("hhpulse") or {}).get("token") == token:
            return version
        version += 1
