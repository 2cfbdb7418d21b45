"""The stored history: a Delta Lake table, folded run by run.

:func:`~hhpulse.data.history.build_history` is the reference: one row per vacancy from every raw
run. Rebuilding it on every run costs every run before it, so the store keeps it folded
instead, and a run updates it with its own items only (:func:`fold_run`).

The table is ``history/vacancies/`` (a folder, or ``s3://bucket/prefix/history/vacancies``):
one row per vacancy ever seen, exactly the rows ``build_history`` gives, plus three internal
fold columns (``_ica_min``, ``_archived_at``, ``_open_until``). Any Delta reader opens it
(``deltalake``, Polars, DuckDB's ``delta_scan``, Spark, Trino); hhpulse writes it::

    history/vacancies/_delta_log/<version>.json          Delta's log: one commit per fold
    history/vacancies/open/<gen>-<hex>.parquet           every vacancy still open (rewritten by each fold)
    history/vacancies/settled/<day>/<seq>-<hex>.parquet  the vacancies that closed in run <seq>
    history/vacancies/_hhpulse/index/<gen>-<hex>.parquet id -> the <seq> of the settled file that holds it

A fold reads the latest version (its open file and the index), parses the new run's items,
writes a new open file, one new settled file (when anything closed) and a new index, and
commits them in one Delta commit that removes the open file it replaced (and rewrites the few
settled files whose vacancies came back). The commit records, in its ``commitInfo.hhpulse``,
what later folds need and what cannot be read from the rows: every folded run's time,
coverage and currency rates (a few hundred bytes a run), the counts, the index, and a token
unique to the commit; and Delta's transaction identifier (app ``hhpulse-history``, the
generation). So a version of the table is a version of the history, whole: time travel
(:func:`read_history` with ``version=``, ``hhpulse train --as-of``), :func:`restore`.

Failure and concurrency:

* Commits are optimistic: the commit of version N+1 is a conditional create (a folder: an
  atomic create; S3 and MinIO: ``If-None-Match: *``). Two folds racing cannot both commit on
  version N: the loser folds again from the winner's version.
* A commit whose reply was lost may have been applied: before folding again, the fold looks
  for its own token in the versions after the one it read (``deltatable.find_commit``). A run
  is never folded twice, and no fold deletes a file: what a failed fold wrote is left
  unreferenced, and ``vacuum`` (``hhpulse store prune``) removes it later.
* A run that finishes after a later run was folded is folded in time order: the fold goes back
  to the newest version that holds only earlier runs and folds the late run and every run after
  it again (at most :data:`MAX_REFOLD_RUNS`; an import much older than that is refused, naming
  ``hhpulse history --rebuild``).

A settled row is final until its vacancy is seen again (it comes back): then the fold finds its
row through the index, continues it (first sighting, sightings, archive times), and rewrites
the settled file without it. :func:`verify` compares the table with a rebuild from the raw runs.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import secrets
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hhpulse.data import deltatable, history_legacy
from hhpulse.data.deltatable import DataFile, TableError
from hhpulse.data.history import (
    FOLD_COLUMNS,
    HISTORY_COLUMNS,
    STORED_COLUMNS,
    TIME_COLUMNS,
    RawRun,
    canonical,
    empty_history,
    midpoint,
    record_rows,
)
from hhpulse.data.runs import list_runs, pruned_runs, quarantined_ids, rebuild_gap, run_order_key
from hhpulse.data.store import KeyNotFound, LocalStore, Store, StoreError
from hhpulse.hh.records import RECORD_COLUMNS, VacancyRecord, format_datetime, parse_datetime
from hhpulse.words import plural

log = logging.getLogger(__name__)

TABLE_KEY = "history/vacancies"
OPEN_DIR = "open/"
SETTLED_DIR = "settled/"
INDEX_DIR = "_hhpulse/index/"  # hhpulse's own: Delta readers and vacuum skip folders starting with "_"
BROKEN_PREFIX = "history/broken/"  # log entries a rebuild set aside because they could not be read
STATE_FORMAT = "hhpulse-history/2"
APP_ID = "hhpulse-history"
COMMIT_RETRIES = 5
MAX_REFOLD_RUNS = 30  # a late run folds in order by folding at most this many later runs again
RETENTION_DAYS = 30  # how far back time travel reaches: vacuum keeps every file a version this young uses
TABLE_CONFIG = {
    "delta.deletedFileRetentionDuration": f"interval {RETENTION_DAYS} days",
    "delta.logRetentionDuration": f"interval {RETENTION_DAYS} days",
}
STATS_COLUMNS = ("id", "first_seen", "last_seen", "closed_at")
REBUILD_HINT = "hhpulse history --rebuild"


class HistoryError(StoreError):
    """The history cannot be read or folded as asked (a broken table, a run out of order)."""


class BackfillRefused(HistoryError):
    """A run is much older than the history: only a rebuild can take it in order."""


class ConcurrentFoldError(HistoryError):
    """Other runs committed first every time this fold tried."""


@dataclass
class FoldResult:
    """What one fold did."""

    folded: list[str]  # run ids folded, oldest first (empty: nothing new)
    vacancies: int  # vacancies in history after the fold
    open: int  # of which still open
    closed: dict[str, int]  # closed vacancies by reason
    new: int = 0  # first seen by the folded runs
    came_back: int = 0  # seen again after they had settled
    settled: int = 0  # rows that settled in these runs
    skipped: list[str] = field(default_factory=list)  # finished runs without items
    attempts: int = 1  # commits tried (more than 1: another fold won a race)
    seconds: float = 0.0
    newest_run: str | None = None
    new_ids: frozenset[str] = frozenset()  # the vacancies first seen by the folded runs
    refused: list[str] = field(default_factory=list)  # finished runs too old to fold in order
    refolded: list[str] = field(default_factory=list)  # runs folded again to take a late run in order
    version: int | None = None  # the table version the history is at after the fold

    def summary_line(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.closed.items())) or "none"
        what = (
            f"folded {len(self.folded)} run(s) ({self.new} new, {self.came_back} back, "
            f"{self.settled} settled)"
            if self.folded
            else "nothing new to fold"
        )
        if self.refolded:
            what += f", and {len(self.refolded)} earlier folded run(s) again to keep time order"
        at = f", version {self.version}" if self.version is not None else ""
        return (
            f"history: {self.vacancies} vacancies, {self.open} open, closed by reason: {parts}; "
            f"{what} in {self.seconds:.1f}s{at}"
        )


# -- the state a commit records ------------------------------------------------------------------
def empty_state() -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "generation": 0,
        "runs": [],
        "skipped": [],
        "index": None,
        "counts": {"vacancies": 0, "open": 0, "closed": {}},
    }


def _state_problem(state: Any) -> str | None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return (
            f"format {state.get('format') if isinstance(state, dict) else state!r}, expected {STATE_FORMAT!r}"
        )
    runs = state.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) and r.get("run_id") for r in runs):
        return "'runs' is not a list of runs"
    counts = state.get("counts")
    if not isinstance(counts, dict) or not {"vacancies", "open", "closed"} <= set(counts):
        return "'counts' lacks vacancies, open or closed"
    return None


def _run_entry(run_id: str, meta: Mapping[str, Any], items: int) -> dict[str, Any]:
    """What later folds need of a run: its time and coverage (for closes and observed_since),
    its currency rates (labels) and whether it is synthetic."""
    cov = meta.get("coverage") or {}
    return {
        "run_id": run_id,
        "collected_at": meta.get("collected_at"),
        "complete": bool(meta.get("complete")),
        "coverage": {
            "queries": list(cov.get("queries") or []),
            "area": cov.get("area"),
            "complete": bool(cov.get("complete")),
            "truncated": bool(cov.get("truncated")),
        },
        "currency_rates": dict(meta.get("currency_rates") or {}),
        "synthetic": bool(meta.get("synthetic")),
        "items": items,
    }


def _raw(entry: Mapping[str, Any]) -> RawRun:
    return RawRun(entry["run_id"], entry, ())


def _order(entry: Mapping[str, Any]) -> tuple[float, str]:
    return run_order_key(entry, entry["run_id"])


def _ts(value: Any) -> pd.Timestamp:
    return pd.Timestamp(parse_datetime(value, "collected_at"))


def _now_iso() -> str:
    return format_datetime(datetime.now(timezone.utc).replace(microsecond=0))


# -- the table's columns -------------------------------------------------------------------------
_KNOWN_TYPES: dict[str, pa.DataType] = {
    **{c: pa.timestamp("us", tz="UTC") for c in (*TIME_COLUMNS, *FOLD_COLUMNS)},
    "times_seen": pa.int64(),
    "salary_from": pa.float64(),
    "salary_to": pa.float64(),
    "salary_gross": pa.bool_(),
    "archived": pa.bool_(),
    "professional_roles": pa.string(),  # joined with "|" (record_rows)
}


def _record_type(column: str) -> pa.DataType:
    """The Delta type of a record column not listed above, from its annotation in VacancyRecord
    (so a field added to the records gets a column of its own type)."""
    ann = str(next((f.type for f in VacancyRecord.__dataclass_fields__.values() if f.name == column), "str"))
    if "datetime" in ann:
        return pa.timestamp("us", tz="UTC")
    if "bool" in ann:
        return pa.bool_()
    if "float" in ann:
        return pa.float64()
    if "int" in ann:
        return pa.int64()
    if "tuple" in ann or "list" in ann:
        return pa.list_(pa.string())
    return pa.string()


def _columns(extra: Sequence[str] = ()) -> list[str]:
    """The stored columns: the history's, the fold's, then any other the table already has."""
    return [*STORED_COLUMNS, *(c for c in extra if c not in STORED_COLUMNS)]


def _schema(columns: Sequence[str], table_schema: pa.Schema | None = None) -> pa.Schema:
    """The arrow schema of the files a fold writes: each column's type from the table when it has
    the column, else the type its records give it."""
    have = {f.name: f.type for f in table_schema} if table_schema is not None else {}
    return pa.schema(
        [pa.field(c, have.get(c) or _KNOWN_TYPES.get(c) or _record_type(c), nullable=True) for c in columns]
    )


_EMPTY: dict[tuple[str, ...], pd.DataFrame] = {}


def _empty_stored(columns: Sequence[str] = STORED_COLUMNS) -> pd.DataFrame:
    key = tuple(columns)
    if key not in _EMPTY:
        _EMPTY[key] = _stored(pd.DataFrame({c: pd.Series(dtype="object") for c in columns}), columns)
    return _EMPTY[key].copy()


def _stored(df: pd.DataFrame, columns: Sequence[str] = STORED_COLUMNS) -> pd.DataFrame:
    """Rows in the fold's dtypes: the history's (``canonical``) and UTC timestamps for the fold's
    own columns; columns a file lacks (added to the table after it was written) are null."""
    for c in columns:
        if c not in df:
            df = df.assign(**{c: pd.Series([None] * len(df), index=df.index, dtype=object)})
    df = canonical(df, HISTORY_COLUMNS)
    for c in FOLD_COLUMNS:
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[ns, UTC]")
    return df[list(columns)]


def _arrow(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Rows as the table's arrow schema. Timestamps go to the microsecond, as Delta keeps them;
    every time the fold computes is already one (``midpoint`` floors), so nothing is lost."""
    wide = pa.schema(
        [
            pa.field(f.name, pa.timestamp("ns", tz="UTC")) if pa.types.is_timestamp(f.type) else f
            for f in schema
        ]
    )
    return pa.Table.from_pandas(df[schema.names], schema=wide, preserve_index=False).cast(schema, safe=False)


# -- reading a raw run, one item at a time ------------------------------------------------------
def iter_items(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """A run's items, parsed one line at a time (the run's JSON is never all in memory)."""
    data = store.get_bytes(f"raw/{run_id}/vacancies.jsonl.gz")
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def run_frame(store: Store, run_id: str, run_time: datetime, quarantined: set[str]) -> pd.DataFrame:
    """The run's records as a frame (RECORD_COLUMNS), in the order of the raw file."""
    rows = list(record_rows(iter_items(store, run_id), run_time, quarantined))
    df = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    for c in ("published_at", "created_at", "initial_created_at", "collected_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


# -- a version of the table ------------------------------------------------------------------------
def _seq_of(path: str) -> int:
    """The run number of a settled file: ``settled/<day>/<seq>-<hex>.parquet``."""
    return int(path.rsplit("/", 1)[-1].split("-", 1)[0])


@dataclass
class Snapshot:
    """One version of the stored history: its data files and the state its commit recorded."""

    store: Store
    version: int
    table: Any  # deltalake.DeltaTable, loaded at ``version``
    state: dict[str, Any]
    files: list[DataFile]
    state_version: int  # the version whose commit recorded ``state`` (== version, or before vacuums)
    foreign: str | None = None  # why hhpulse must not fold on it (a commit of another writer)

    @property
    def open_files(self) -> list[DataFile]:
        return [f for f in self.files if f.path.startswith(OPEN_DIR)]

    @property
    def settled_files(self) -> dict[int, DataFile]:
        return {_seq_of(f.path): f for f in self.files if f.path.startswith(SETTLED_DIR)}

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.state["runs"])

    @property
    def uri(self) -> str:
        return self.store.uri(TABLE_KEY)

    def columns(self) -> list[str]:
        return _columns([f.name for f in self.table.schema().to_arrow()])

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(self.table.schema().to_arrow())

    def read_file(self, f: DataFile, columns: Sequence[str] | None = None) -> pd.DataFrame:
        try:
            t = deltatable.read_file(self.store, TABLE_KEY, f.path, columns)
        except KeyNotFound:
            raise HistoryError(
                f"version {self.version} of {self.uri} names {f.path}, which is missing: run "
                f"`hhpulse history --restore VERSION` (an earlier version) or `{REBUILD_HINT}`"
            ) from None
        except TableError as exc:
            raise HistoryError(f"version {self.version}: {exc}: run `{REBUILD_HINT}`") from None
        return t.to_pandas()

    # -- reading ------------------------------------------------------------------------------
    def read(
        self, window_days: int | None = None, columns: Sequence[str] | None = None, now: Any = None
    ) -> pd.DataFrame:
        """See :func:`read_history`."""
        cols = list(HISTORY_COLUMNS) if columns is None else list(dict.fromkeys(columns))
        cutoff = window_cutoff(self.state, window_days, now)
        need = list(dict.fromkeys(["id", "closed_at", *cols]))
        frames = []
        for f in self.files:
            top = f.maxs.get("closed_at")
            settled_before = f.nulls.get("closed_at") == 0 and top is not None
            if cutoff is not None and settled_before and pd.Timestamp(top) < cutoff:
                continue  # every row of the file closed before the window
            df = _stored_subset(self.read_file(f, need), need)
            if cutoff is not None:
                df = df[df["closed_at"].isna() | (df["closed_at"] >= cutoff)]
            frames.append(df)
        if not frames:
            return empty_history()[cols]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # all-NA columns of an empty frame
            hist = pd.concat(frames, ignore_index=True)
        hist = canonical(hist, need)
        return hist.sort_values("id", kind="stable").reset_index(drop=True)[cols]

    def rates(self) -> dict[str, dict[str, float]]:
        return {r["run_id"]: dict(r.get("currency_rates") or {}) for r in self.state["runs"]}

    def window_summary(self, window_days: int | None, *, now: Any = None) -> dict[str, Any]:
        cutoff = window_cutoff(self.state, window_days, now)
        runs = self.state["runs"]
        return {
            "window_days": window_days,
            "closed_since": None if cutoff is None else format_datetime(cutoff.to_pydatetime()),
            "until": runs[-1]["collected_at"] if runs else None,
            "runs_folded": len(runs),
            "version": self.version,
            "table": self.uri,
        }


def _stored_subset(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    for c in columns:
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype=object)
    return df[list(columns)]


def _state_of(store: Store, version: int) -> tuple[dict[str, Any], int, str | None]:
    """(the hhpulse state that holds at ``version``, the version that recorded it, why the table
    is not hhpulse's to fold on, if so). Commits that change no data (vacuum, a new column) are
    passed over to the fold that made the data; a commit of another writer that changed data is
    named."""
    foreign = None
    v = version
    while v >= 0:
        try:
            actions = deltatable.read_commit(store, TABLE_KEY, v)
        except KeyNotFound:
            raise HistoryError(
                f"{store.uri(TABLE_KEY)}: the commit of version {v} is gone from its log (expired), so "
                f"hhpulse's record of the folded runs cannot be read: run `{REBUILD_HINT}`"
            ) from None
        except TableError as exc:
            raise HistoryError(f"{exc}: run `{REBUILD_HINT}`") from None
        info = deltatable.commit_info(actions)
        state = info.get("hhpulse")
        if state is not None:
            problem = _state_problem(state)
            if problem:
                raise HistoryError(
                    f"{store.uri(deltatable.commit_key(TABLE_KEY, v))}: hhpulse's record is broken "
                    f"({problem}): run `{REBUILD_HINT}`"
                )
            return state, v, foreign
        if deltatable.changes_data(actions) and foreign is None:
            foreign = (
                f"version {v} was written by {info.get('engineInfo') or 'another writer'} "
                f"({info.get('operation') or 'unknown operation'}), not by an hhpulse fold"
            )
        v -= 1
    raise HistoryError(
        f"{store.uri(TABLE_KEY)} is a Delta table that hhpulse did not write (no hhpulse record in "
        f"its log): run `{REBUILD_HINT}`"
    )


def open_snapshot(store: Store, version: int | None = None) -> Snapshot | None:
    """The history at ``version`` (default: the latest), or None when there is no table yet.
    A table that cannot be read raises :class:`HistoryError` naming the way out."""
    if version is not None:
        have = deltatable.log_versions(store, TABLE_KEY)
        if not have or version < 0 or version > have[-1]:
            span = f"versions up to {have[-1]}" if have else "no versions"
            raise HistoryError(
                f"{store.uri(TABLE_KEY)} has no version {version} ({span}; `hhpulse history --versions` "
                "lists the versions time travel can reach)"
            )
    try:
        table = deltatable.load(store, TABLE_KEY, version)
    except TableError as exc:
        if version is not None:
            raise HistoryError(
                f"{exc} (`hhpulse history --versions` lists the versions time travel can reach)"
            ) from None
        raise HistoryError(f"{exc}: run `{REBUILD_HINT}` to rebuild it from the raw runs") from None
    if table is None:
        return None
    v = int(table.version())
    state, state_version, foreign = _state_of(store, v)
    try:
        files = deltatable.files(table)
    except Exception as exc:  # noqa: BLE001 - delta-rs reports a broken log in many ways
        raise HistoryError(
            f"{store.uri(TABLE_KEY)} version {v}: {deltatable._one_line(exc)}: run `{REBUILD_HINT}`"
        ) from None
    return Snapshot(store, v, table, state, files, state_version, foreign)


def history_exists(store: Store) -> bool:
    """Whether the store has a history: the Delta table, or the old layout not migrated yet."""
    return deltatable.has_log(store, TABLE_KEY) or history_legacy.exists(store)


def load_state(store: Store, version: int | None = None) -> tuple[dict[str, Any] | None, int | None]:
    """(the recorded state of the history: runs, skipped, counts, ...; its table version), or
    (None, None) without a history. A store still in the old layout gives the old state.json."""
    snap = open_snapshot(store, version)
    if snap is not None:
        return snap.state, snap.version
    legacy = _legacy_state(store)
    return (legacy, None) if legacy is not None else (None, None)


def _legacy_state(store: Store) -> dict[str, Any] | None:
    try:
        return history_legacy.load_state(store)
    except history_legacy.LegacyError as exc:
        raise HistoryError(f"{exc}: run `{REBUILD_HINT}` to rebuild the history from the raw runs") from None


# -- the fold of one run, in memory ------------------------------------------------------------
@dataclass
class _Work:
    """The history being folded: the state, the open rows, the index (id -> settled seq), and
    the settled files (committed ones of the base version, or written by this fold)."""

    store: Store  # where the table is
    state: dict[str, Any]
    open: pd.DataFrame
    index: pa.Table | None
    settled: dict[int, DataFile]  # seq -> the file with that run's settled rows
    columns: list[str]
    schema: pa.Schema
    written: dict[str, DataFile] = field(default_factory=dict)  # files this fold wrote, still current
    index_changed: bool = False
    new: int = 0
    came_back: int = 0
    settled_rows: int = 0
    new_ids: set[str] = field(default_factory=set)

    def write(self, path: str, df: pd.DataFrame) -> DataFile:
        f = deltatable.write_file(self.store, TABLE_KEY, path, _arrow(df, self.schema), STATS_COLUMNS)
        self.written[path] = f
        return f

    def drop(self, f: DataFile) -> None:
        """A settled file replaced by this fold: removed by the commit; one this fold wrote itself
        (never committed, so no version names it) is deleted now."""
        if self.written.pop(f.path, None) is not None:
            with contextlib.suppress(StoreError):
                self.store.delete(f"{TABLE_KEY}/{f.path}")

    def read(self, f: DataFile) -> pd.DataFrame:
        try:
            t = deltatable.read_file(self.store, TABLE_KEY, f.path)
        except KeyNotFound:
            raise HistoryError(
                f"{self.store.uri(TABLE_KEY)}: {f.path} is missing: run `{REBUILD_HINT}`"
            ) from None
        except TableError as exc:
            raise HistoryError(f"{exc}: run `{REBUILD_HINT}`") from None
        return _stored(t.to_pandas(), self.columns)


def _unique(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}-{secrets.token_hex(4)}.parquet"


def _fmin(a: pd.Series, b: pd.Series) -> pd.Series:
    return a.where((a <= b) | b.isna(), b)


def _fmax(a: pd.Series, b: pd.Series) -> pd.Series:
    return a.where((a >= b) | b.isna(), b)


def _sightings(recs: pd.DataFrame) -> pd.DataFrame:
    """One row per id of one run: the latest sighting's fields and the run's aggregates."""
    recs = recs.sort_values(["id", "collected_at"], kind="stable")
    archived = recs["archived"].eq(True)
    g = recs.groupby("id", sort=False)
    latest = g.tail(1).set_index("id")
    when = recs["collected_at"]
    out = latest.copy()
    out["first_seen"] = g["collected_at"].min()
    out["last_seen"] = g["collected_at"].max()
    out["times_seen"] = g.size()
    out["first_published_at"] = g["published_at"].min()
    out["latest_published_at"] = g["published_at"].max()
    out["_ica_min"] = g["initial_created_at"].min()
    out["_archived_at"] = when.where(archived).groupby(recs["id"], sort=False).min()
    out["_open_until"] = when.where(~archived).groupby(recs["id"], sort=False).max()
    return out


def _comebacks(w: _Work, ids: pd.Index) -> pd.DataFrame:
    """The current settled rows of ``ids`` (vacancies seen again after they settled), taken out
    of their settled files (rewritten without them) and out of the index."""
    if w.index is None or not len(ids) or not w.index.num_rows:
        return _empty_stored(w.columns).set_index("id")
    # probe the index with a hash set of the run's few unknown ids (never hash the whole index)
    wanted = pa.array(ids.to_numpy(dtype=object), type=pa.string())
    hits = w.index.filter(pc.is_in(w.index["id"], value_set=wanted))
    if not hits.num_rows:
        return _empty_stored(w.columns).set_index("id")
    by_part = pd.Series(hits["id"].to_pylist()).groupby(hits["part"].to_numpy()).agg(list)
    frames = []
    for seq, back in by_part.items():
        f = w.settled.get(int(seq))
        if f is None:
            raise HistoryError(
                f"{w.store.uri(TABLE_KEY)}: the index names run {seq}'s settled file, which the table "
                f"lacks: run `{REBUILD_HINT}`"
            )
        df = w.read(f)
        is_back = df["id"].isin(back)
        frames.append(df[is_back])
        w.drop(f)
        del w.settled[int(seq)]
        if (~is_back).any():
            day = f.path[len(SETTLED_DIR) :].split("/", 1)[0]
            w.settled[int(seq)] = w.write(_unique(f"{SETTLED_DIR}{day}/", int(seq)), df[~is_back])
    w.index = w.index.filter(pc.invert(pc.is_in(w.index["id"], value_set=hits["id"])))
    w.index_changed = True
    return pd.concat(frames, ignore_index=True).set_index("id")


def _fold_one(w: _Work, entry: dict[str, Any], recs: pd.DataFrame) -> None:
    """Fold one run's records into ``w`` (exactly as build_history folds them over all runs)."""
    runs = w.state["runs"]
    seq = len(runs)
    run_time = _ts(entry["collected_at"])
    this = _raw(entry)
    # observed_since of a first sighting: the latest earlier run that covered this run's search
    observed = pd.NaT
    for prev in reversed(runs):
        if _raw(prev).covers(this):
            observed = _ts(prev["collected_at"])
            break

    seen = _sightings(recs)
    opened = w.open.set_index("id")
    in_open = seen.index.isin(opened.index)
    back = _comebacks(w, seen.index[~in_open])
    prior = opened.loc[seen.index[in_open]]
    if len(back):
        prior = pd.concat([prior, back[prior.columns]])
    prior = prior.reindex(seen.index)
    had = in_open | seen.index.isin(back.index)
    w.new += int((~had).sum())
    w.new_ids.update(seen.index[~had])
    w.came_back += len(back)

    row = seen[[c for c in RECORD_COLUMNS if c != "id"]].copy()
    for c in w.columns:  # columns of the table that this version's records do not have
        if c not in row and c not in STORED_COLUMNS:
            row[c] = prior[c]
    row["first_seen"] = _fmin(prior["first_seen"], seen["first_seen"])
    row["last_seen"] = _fmax(prior["last_seen"], seen["last_seen"])
    row["times_seen"] = prior["times_seen"].fillna(0).astype("int64") + seen["times_seen"].astype("int64")
    row["first_published_at"] = _fmin(prior["first_published_at"], seen["first_published_at"])
    row["latest_published_at"] = _fmax(prior["latest_published_at"], seen["latest_published_at"])
    row["_ica_min"] = _fmin(prior["_ica_min"], seen["_ica_min"])
    row["_archived_at"] = _fmin(prior["_archived_at"], seen["_archived_at"])
    row["_open_until"] = _fmax(prior["_open_until"], seen["_open_until"])
    row["initial_created_at"] = row["initial_created_at"].fillna(row["_ica_min"])
    obs = pd.Series(observed, index=row.index, dtype="datetime64[ns, UTC]")
    row["observed_since"] = prior["observed_since"].where(had, obs)
    row["last_run_id"] = entry["run_id"]
    row["currency_rates_run_id"] = entry["run_id"]
    arch_by = row["_archived_at"]
    arch_after = row["_open_until"].where(row["_open_until"] < arch_by)
    arch = arch_by.notna()
    row["closed_after"] = arch_after.where(arch)
    row["closed_by"] = arch_by
    row["closed_at"] = midpoint(arch_after, arch_by).fillna(arch_by)
    row["closed_reason"] = pd.Series("archived", index=row.index, dtype=object).where(arch, None)
    row = row.reset_index()

    # vacancies still open but not in this run: closed when this run covered their last run's search
    rest = w.open[~w.open["id"].isin(seen.index)]
    covered = {r["run_id"] for r in runs if this.covers(_raw(r))}
    gone = rest["last_run_id"].isin(covered)
    if gone.any():
        rest = rest.copy()
        closed_by = pd.Series(run_time, index=rest.index).where(gone)
        closed_by = pd.to_datetime(closed_by, utc=True)
        rest["closed_after"] = rest["last_seen"].where(gone)
        rest["closed_by"] = closed_by
        rest["closed_at"] = midpoint(rest["last_seen"], closed_by)
        rest["closed_reason"] = pd.Series("absent_from_complete_run", index=rest.index, dtype=object).where(
            gone, None
        )

    with warnings.catch_warnings():  # all-NA columns of either side: _stored sets every dtype
        warnings.simplefilter("ignore", FutureWarning)
        merged = _stored(
            pd.concat([f for f in (rest, row) if len(f)] or [rest], ignore_index=True), w.columns
        )
    is_closed = merged["closed_at"].notna()
    settled = merged[is_closed]
    w.open = merged[~is_closed].reset_index(drop=True)

    counts = w.state["counts"]
    closed = dict(counts["closed"])
    for reason, n in back["closed_reason"].value_counts().items():
        closed[str(reason)] = closed.get(str(reason), 0) - int(n)
    if len(settled):
        settled = settled.sort_values("id", kind="stable").reset_index(drop=True)
        w.settled[seq] = w.write(_unique(f"{SETTLED_DIR}{run_time:%Y-%m-%d}/", seq), settled)
        fresh = pa.table(
            {
                "id": pa.array(settled["id"].to_numpy(dtype=object), type=pa.string()),
                "part": pa.array([seq] * len(settled), type=pa.int32()),
            }
        )
        if w.index is not None and w.index.num_rows:
            keep = pc.invert(pc.is_in(w.index["id"], value_set=fresh["id"]))
            w.index = pa.concat_tables([w.index.filter(keep), fresh])
        else:
            w.index = fresh
        w.index_changed = True
        for reason, n in settled["closed_reason"].value_counts().items():
            closed[str(reason)] = closed.get(str(reason), 0) + int(n)
        w.settled_rows += len(settled)
    w.state["counts"] = {
        "vacancies": counts["vacancies"] + int((~had).sum()),
        "open": len(w.open),
        "closed": {k: v for k, v in sorted(closed.items()) if v},
    }
    runs.append(entry)


# -- the work a fold starts from -----------------------------------------------------------------
def _read_index(store: Store, snap: Snapshot) -> pa.Table | None:
    """The base version's index; rebuilt from its settled files when the file is gone or broken
    (it is hhpulse's own acceleration, derived from the rows)."""
    path = snap.state.get("index")
    settled = snap.settled_files
    if not settled:
        return None
    if path:
        try:
            t = deltatable.read_file(store, TABLE_KEY, path, ["id", "part"])
            if t.column_names == ["id", "part"]:
                return t.cast(pa.schema([("id", pa.string()), ("part", pa.int32())]))
        except (KeyNotFound, pa.ArrowException, OSError, StoreError):
            pass
    log.warning(
        "%s: the id index of version %d is missing or broken: rebuilding it from the settled files",
        store.uri(TABLE_KEY),
        snap.version,
    )
    parts = []
    for seq, f in sorted(settled.items()):
        try:
            ids = deltatable.read_file(store, TABLE_KEY, f.path, ["id"])["id"].cast(pa.string())
        except (KeyNotFound, TableError) as exc:
            raise HistoryError(f"{exc}: run `{REBUILD_HINT}`") from None
        parts.append(pa.table({"id": ids, "part": pa.array([seq] * len(ids), pa.int32())}))
    return pa.concat_tables(parts)


def _load_work(target: Store, base: Snapshot | None, current: Snapshot | None) -> _Work:
    """The history of ``base`` as a fold starts from it (written with the columns of ``current``)."""
    extra = current.columns() if current is not None else []
    columns = _columns(extra)
    table_schema = current.arrow_schema() if current is not None else None
    schema = _schema(columns, table_schema)
    if base is None:
        return _Work(target, empty_state(), _empty_stored(columns), None, {}, columns, schema)
    state = json.loads(json.dumps(base.state))  # a private copy: the fold appends to it
    frames = [base.read_file(f) for f in base.open_files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        opened = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return _Work(
        target,
        state,
        _stored(opened, columns),
        _read_index(target, base),
        dict(base.settled_files),
        columns,
        schema,
    )


def _pending(
    store: Store, state: Mapping[str, Any] | None
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Finished runs not folded yet, oldest first, with their meta.json; and the runs without items."""
    keys = store.list("raw/")
    folders = {k.split("/")[1] for k in keys if k.count("/") >= 2}
    finished = {k.split("/")[1] for k in keys if k.endswith("/meta.json")}
    has_items = {k.split("/")[1] for k in keys if k.endswith("/vacancies.jsonl.gz")}
    done = set()
    if state:
        done = {r["run_id"] for r in state["runs"]} | set(state.get("skipped") or [])
    for run_id in sorted(folders - finished - done):
        log.warning("skipping run %s: no meta.json (it did not finish)", run_id)
    skipped = sorted((finished - has_items) - done)
    for run_id in skipped:
        log.warning("skipping run %s: meta.json without vacancies.jsonl.gz", run_id)
    metas = {r: store.get_json(f"raw/{r}/meta.json") for r in sorted(finished & has_items - done)}
    return sorted(metas.items(), key=lambda rm: run_order_key(rm[1], rm[0])), skipped


def refusal(run_id: str, meta: Mapping[str, Any], newest: Mapping[str, Any], why: str) -> str:
    return (
        f"run {run_id} (collected_at {meta.get('collected_at')}) is older than the newest run in "
        f"history, {newest['run_id']} (collected_at {newest['collected_at']}), and {why}, so it is "
        f"not folded. Run `{REBUILD_HINT}` to rebuild history from every raw run in order"
    )


@dataclass
class _Plan:
    base: Snapshot | None  # the version the fold starts from (the latest, or an earlier one)
    fold: list[tuple[str, dict[str, Any]]]  # runs to fold on top of base, oldest first
    skipped: list[str]
    refolded: list[str] = field(default_factory=list)  # folded runs folded again (after a late run)
    refused: list[str] = field(default_factory=list)


def _plan(store: Store, target: Store, current: Snapshot | None, run_id: str | None) -> _Plan:
    """What a fold folds, and from which version: a late run (older than the newest folded) is
    taken in order by going back to the newest version without the runs after it."""
    state = current.state if current else None
    done = {r["run_id"] for r in state["runs"]} if state else set()
    pending, skipped = _pending(store, state)
    if run_id is not None:
        if run_id not in done and run_id not in {r for r, _ in pending} | set(skipped):
            raise HistoryError(f"run {run_id} is not a finished run in {store.uri('raw/')}")
        key = next((run_order_key(m, r) for r, m in pending if r == run_id), None)
        pending = [(r, m) for r, m in pending if key is not None and run_order_key(m, r) <= key]
    for r, m in pending:
        if not m.get("collected_at"):
            raise HistoryError(f"run {r}: meta.json has no collected_at, so it cannot be ordered")
    if not state or not state["runs"] or current is None:
        return _Plan(current, pending, skipped)
    newest = _order(state["runs"][-1])
    late = [(r, m) for r, m in pending if run_order_key(m, r) < newest]
    if not late:
        return _Plan(current, pending, skipped)
    first = min(run_order_key(m, r) for r, m in late)
    why = _cannot_refold(store, target, current, first)
    if isinstance(why, str):
        refused = [r for r, _ in late]
        for r, m in late:
            if r == run_id:
                raise BackfillRefused(refusal(r, m, state["runs"][-1], why))
            log.warning("history: %s", refusal(r, m, state["runs"][-1], why))
        on_time = [(r, m) for r, m in pending if run_order_key(m, r) >= newest]
        return _Plan(current, on_time, skipped, refused=refused)
    base = why
    base_runs = base.state["runs"] if base is not None else []
    again = state["runs"][len(base_runs) :]
    metas = [(r["run_id"], store.get_json(f"raw/{r['run_id']}/meta.json")) for r in again]
    fold = sorted([*metas, *pending], key=lambda rm: run_order_key(rm[1], rm[0]))
    log.warning(
        "history: run(s) %s finished after later runs were folded: folding them in time order, with "
        "%d folded run(s) again from version %s",
        ", ".join(r for r, _ in late),
        len(again),
        base.version if base is not None else "none (the start)",
    )
    return _Plan(base, fold, skipped, refolded=[r["run_id"] for r in again])


def _cannot_refold(
    store: Store, target: Store, current: Snapshot, first: tuple[float, str]
) -> str | Snapshot | None:
    """The version to fold a late run (ordered at ``first``) from: the newest whose runs all come
    before it (None: fold from the start); or a string saying why that cannot be done."""
    runs = current.state["runs"]
    later = [r for r in runs if _order(r) > first]
    if len(later) > MAX_REFOLD_RUNS:
        return f"folding it in order would fold {len(later)} later runs again (more than {MAX_REFOLD_RUNS})"
    finished = set(list_runs(store))
    v = current.state_version
    while True:
        try:
            state, v, _ = _state_of(target, v)
        except HistoryError:
            return "the versions before those runs are no longer in the table's log"
        vr = state["runs"]
        if all(_order(r) < first for r in vr):
            break
        v -= 1
        if v < 0:
            vr, v = [], -1
            break
    if [r["run_id"] for r in vr] != [r["run_id"] for r in runs[: len(vr)]]:
        return "the table's earlier versions do not hold the runs it holds now in the same order"
    if len(runs) - len(vr) > MAX_REFOLD_RUNS:
        return (
            f"folding it in order would fold {len(runs) - len(vr)} runs again (more than {MAX_REFOLD_RUNS})"
        )
    missing = [r["run_id"] for r in runs[len(vr) :] if r["run_id"] not in finished]
    if missing:
        return f"the raw data of later runs it must fold again is gone ({', '.join(missing[:3])})"
    if v < 0:
        return None
    try:
        base = open_snapshot(target, v)
    except HistoryError as exc:
        return f"version {v} cannot be read ({exc})"
    assert base is not None
    have = {f.path for f in current.files}
    gone = [f.path for f in base.files if f.path not in have and not target.exists(f"{TABLE_KEY}/{f.path}")]
    if gone:
        return f"version {v}'s files were vacuumed ({gone[0]}): it is beyond time travel's reach"
    return base


# -- committing --------------------------------------------------------------------------------------
def _finish(w: _Work) -> dict[str, DataFile]:
    """Write the open file and the index; the files of the new version, by path."""
    gen = int(w.state["generation"])
    out = {f.path: f for f in w.settled.values()}
    if len(w.open):
        f = w.write(_unique(OPEN_DIR, gen), w.open)
        out[f.path] = f
    if w.index_changed:
        if w.index is not None and w.index.num_rows:
            path = _unique(INDEX_DIR, gen)
            deltatable.write_file(w.store, TABLE_KEY, path, w.index)
            w.state["index"] = path
        else:
            w.state["index"] = None
    return out


def _commit(
    target: Store,
    current: Snapshot | None,
    w: _Work,
    operation: str,
    folded: Sequence[str],
    final: dict[str, DataFile] | None = None,
    **extra: Any,
) -> int:
    """Commit ``w`` (its files: ``final``, or the open file and index written now) as the version
    after ``current``; return the new version. Raises whatever the commit raised when it was not
    applied (a lost race: the caller folds again)."""
    w.state["generation"] = (int(current.state["generation"]) if current else 0) + 1
    if final is None:
        final = _finish(w)
    token = secrets.token_hex(16)
    w.state.update(
        format=STATE_FORMAT,
        token=token,
        operation=operation,
        folded=list(folded),
        updated_at=_now_iso(),
        **extra,
    )
    have = {f.path: f for f in current.files} if current else {}
    adds = [f for p, f in final.items() if p not in have]
    for f in adds:  # files of an earlier version taken back (a late run's fold, a restore)
        if f.path not in w.written and not target.exists(f"{TABLE_KEY}/{f.path}"):
            raise HistoryError(f"{target.uri(TABLE_KEY)}: {f.path} is gone (vacuumed): cannot take it back")
    removes = [f for p, f in have.items() if p not in final]
    change = deltatable.Commit(adds, removes, w.state, APP_ID, int(w.state["generation"]))
    read = current.version if current else -1
    try:
        deltatable.commit(
            target,
            TABLE_KEY,
            current.table if current else None,
            w.schema,
            change,
            configuration=TABLE_CONFIG,
        )
    except Exception:
        # a commit whose reply was lost may have been applied: look before deciding it lost
        landed = deltatable.find_commit(target, TABLE_KEY, read, token)
        if landed is None:
            raise
        log.warning("history: the commit of version %d was applied although its reply said otherwise", landed)
        return landed
    landed = deltatable.find_commit(target, TABLE_KEY, read, token)
    return landed if landed is not None else read + 1


def _current(target: Store) -> Snapshot | None:
    """The latest version; an old-layout history is moved onto the table first (once)."""
    snap = open_snapshot(target)
    if snap is None and history_legacy.exists(target):
        try:
            migrate(target)
        except Exception:
            if open_snapshot(target) is None:  # not another fold that moved it at the same time
                raise
        snap = open_snapshot(target)
    return snap


def fold_run(
    store: Store,
    run_id: str | None = None,
    *,
    into: Store | None = None,
    progress: bool = False,
    retries: int = COMMIT_RETRIES,
) -> FoldResult:
    """Fold one finished raw run into the stored history (and any finished run before it that
    is not folded yet); ``run_id=None`` folds every finished run not folded yet. ``into``: keep
    the history in another store than the raw runs (the replay of a store's runs does).

    A run older than the newest folded one is folded in time order (see the module doc); one
    so old that this would fold more than :data:`MAX_REFOLD_RUNS` runs again is refused:
    :class:`BackfillRefused` for ``run_id``, a warning and ``FoldResult.refused`` for the others.
    Two folds racing: the one whose commit fails folds again from the version the other
    committed; after ``retries`` lost races it raises :class:`ConcurrentFoldError`.
    """
    t0 = time.perf_counter()
    target = into or store
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        current = _current(target)
        if current is not None and current.foreign:
            raise HistoryError(
                f"{current.uri}: {current.foreign}: hhpulse folds only on a table it wrote; run "
                f"`hhpulse history --restore {current.state_version}` (the last version it wrote) or "
                f"`{REBUILD_HINT}`"
            )
        plan = _plan(store, target, current, run_id)
        if not plan.fold and not (plan.skipped and current):
            res = _result(current, [], plan.skipped, attempt, t0)
            res.refused = plan.refused
            return res
        w = _load_work(target, plan.base, current)
        had = current.state.get("skipped") or [] if current else []
        w.state["skipped"] = sorted(set(w.state.get("skipped") or []) | set(plan.skipped) | set(had))
        folded = _fold_runs(store, w, plan.fold, progress=progress)
        try:
            version = _commit(target, current, w, "fold", folded)
        except HistoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost race, or a store error: fold again
            last_error = exc
            log.warning(
                "history: the commit did not go through (attempt %d/%d: %s); folding again from the "
                "latest version",
                attempt,
                retries,
                deltatable._one_line(exc),
            )
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + secrets.randbelow(100) / 100))
            continue
        late = set(folded) - set(plan.refolded)
        res = _result_of(w, [r for r in folded if r in late], plan.skipped, attempt, t0, version)
        res.refused, res.refolded = plan.refused, list(plan.refolded)
        return res
    from deltalake.exceptions import CommitFailedError

    if isinstance(last_error, CommitFailedError):
        raise ConcurrentFoldError(
            f"history: {retries} folds in a row lost the race to commit {target.uri(TABLE_KEY)} to other "
            "runs folding at the same time; nothing was lost, run the fold again (`hhpulse history`)"
        )
    raise HistoryError(
        f"history: could not commit to {target.uri(TABLE_KEY)} in {retries} tries "
        f"({deltatable._one_line(last_error) if last_error else 'no error'}); nothing was lost, run the fold again"
    )


def _fold_runs(
    store: Store, w: _Work, pending: Sequence[tuple[str, dict[str, Any]]], *, progress: bool
) -> list[str]:
    from tqdm import tqdm

    folded = []
    for run_id, meta in tqdm(pending, desc="fold runs", unit="run", disable=not progress, leave=False):
        run_time = parse_datetime(meta.get("collected_at"), "collected_at")
        if run_time is None:
            raise HistoryError(f"run {run_id}: meta.json has no collected_at, so it cannot be ordered")
        recs = run_frame(store, run_id, run_time, quarantined_ids(store, run_id))
        _fold_one(w, _run_entry(run_id, meta, len(recs)), recs)
        folded.append(run_id)
        log.info("history: folded run %s (%d items), %d open", run_id, len(recs), len(w.open))
    return folded


def _result(
    snap: Snapshot | None, folded: list[str], skipped: list[str], attempts: int, t0: float
) -> FoldResult:
    state = snap.state if snap else empty_state()
    counts, runs = state["counts"], state["runs"]
    return FoldResult(
        folded=folded,
        vacancies=int(counts["vacancies"]),
        open=int(counts["open"]),
        closed=dict(counts["closed"]),
        skipped=skipped,
        attempts=attempts,
        seconds=time.perf_counter() - t0,
        newest_run=runs[-1]["run_id"] if runs else None,
        version=snap.version if snap else None,
    )


def _result_of(
    w: _Work, folded: list[str], skipped: list[str], attempts: int, t0: float, version: int
) -> FoldResult:
    counts, runs = w.state["counts"], w.state["runs"]
    return FoldResult(
        folded=folded,
        vacancies=int(counts["vacancies"]),
        open=int(counts["open"]),
        closed=dict(counts["closed"]),
        new=w.new,
        came_back=w.came_back,
        settled=w.settled_rows,
        skipped=skipped,
        attempts=attempts,
        seconds=time.perf_counter() - t0,
        newest_run=runs[-1]["run_id"] if runs else None,
        new_ids=frozenset(w.new_ids),
        version=version,
    )


def history_runs(store: Store, *, strict: bool = False) -> set[str] | None:
    """Run ids the stored history has taken in (folded, or skipped for having no items); None
    when there is no history. A history still in the old layout: its state's. A table that
    cannot be read: the old layout's, if any (``strict``: raise)."""
    try:
        state, _ = load_state(store)
    except HistoryError:
        if strict:
            raise
        state = None
        with contextlib.suppress(HistoryError):
            state = _legacy_state(store)
    if state is None:
        return None
    return {str(r["run_id"]) for r in state.get("runs", [])} | {str(r) for r in state.get("skipped") or []}


# -- rebuild, restore, migrate --------------------------------------------------------------------------
def _broken_entry(store: Store, key: str) -> bool:
    """Whether a log file is not what Delta writes (JSON objects, one a line): a deterministic
    check of its bytes, so a store error while reading it is never taken for a broken entry."""
    data = store.get_bytes(key)
    try:
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return not all(isinstance(x, dict) for x in lines)


def _set_aside_broken_log(target: Store, *, keep: int | None = None) -> Snapshot | None:
    """Make the table readable again for a rebuild (or a restore of version ``keep``): log entries
    that are not Delta's (and every entry after the first of them), or else the entries after the
    newest version that loads, are copied to ``history/broken/<time>/`` and taken out of the log.
    Returns the latest version then (None: nothing loads; the log is set aside whole)."""
    log_prefix = f"{TABLE_KEY}/{deltatable.LOG_DIR}/"
    aside = f"{BROKEN_PREFIX}{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}/"

    def version_of(key: str) -> int | None:
        stem = key.rsplit("/", 1)[-1][:20]
        return int(stem) if stem.isdigit() and len(stem) == 20 else None

    def move(keys: Sequence[str]) -> None:
        for key in keys:
            target.put_bytes(aside + key[len("history/") :], target.get_bytes(key))
        for key in keys:
            target.delete(key)
        if keys:
            log.warning("history: set aside %d unreadable log file(s) in %s", len(keys), target.uri(aside))

    def after(v: int) -> list[str]:
        return [k for k in target.list(log_prefix) if (version_of(k) is not None and version_of(k) > v)]

    checkpoint = f"{log_prefix}_last_checkpoint"
    if target.exists(checkpoint) and _broken_entry(target, checkpoint):
        move([checkpoint])  # only a hint: readers list the log without it
    versions = deltatable.log_versions(target, TABLE_KEY)
    broken = [v for v in versions if _broken_entry(target, deltatable.commit_key(TABLE_KEY, v))]
    if broken:
        move([deltatable.commit_key(TABLE_KEY, broken[0]), *after(broken[0])])
    try:
        return open_snapshot(target)
    except HistoryError:
        pass
    for v in reversed(deltatable.log_versions(target, TABLE_KEY)):
        if keep is not None and v < keep:
            break
        try:
            snap = open_snapshot(target, v)
        except HistoryError:
            continue
        move(after(v))
        return snap
    if keep is not None:
        raise HistoryError(
            f"{target.uri(TABLE_KEY)}: version {keep} cannot be read either: run `{REBUILD_HINT}`"
        )
    move(target.list(log_prefix))
    return None


def rebuild(store: Store, *, into: Store | None = None, progress: bool = False) -> FoldResult:
    """Rebuild the history from every finished raw run, folding one run at a time (memory: one
    run plus the open vacancies), and commit it as one new version of the table in ``into``
    (default: ``store`` itself). Whatever the table holds (a broken log entry, missing data
    files, junk), the rebuild replaces it; the old layout's files are left until pruned."""
    t0 = time.perf_counter()
    if into is None:
        try:
            folded_before = history_runs(store, strict=True)
        except HistoryError:  # unreadable: every pruned finished run was folded (prune keeps the others)
            folded_before = {p["run_id"] for p in pruned_runs(store)}
        gap = rebuild_gap(store, sorted(folded_before or ()))
        if gap:
            raise HistoryError(
                f"{store.uri(TABLE_KEY)}: {len(gap)} folded run(s) were pruned (e.g. {', '.join(gap[:3])}), "
                "so a rebuild from the raw runs would silently drop their part of the history; "
                "the stored history is unchanged (it still holds them; `hhpulse history --restore VERSION` "
                "goes back to an earlier version)"
            )
    target = into or store
    try:
        current = open_snapshot(target)
    except HistoryError as exc:
        log.warning("history: %s", exc)
        current = _set_aside_broken_log(target)
    pending, skipped = _pending(store, None)
    w = _load_work(target, None, current)
    w.state["skipped"] = skipped
    folded = _fold_runs(store, w, pending, progress=progress)
    try:
        version = _commit(target, current, w, "rebuild", folded)
    except Exception as exc:  # noqa: BLE001
        raise HistoryError(
            f"another run committed to {target.uri(TABLE_KEY)} while it was being rebuilt "
            f"({deltatable._one_line(exc)}); rebuild again"
        ) from None
    return _result_of(w, folded, skipped, 1, t0, version)


def restore(store: Store, version: int) -> FoldResult:
    """Make ``version`` the history again, as a new version (the versions after it stay in the log:
    restoring is itself undone by restoring)."""
    t0 = time.perf_counter()
    try:
        current = open_snapshot(store)
    except HistoryError as exc:  # a broken log entry after the version asked for: set it aside
        log.warning("history: %s", exc)
        current = _set_aside_broken_log(store, keep=version)
    if current is None:
        raise HistoryError(f"no history at {store.uri(TABLE_KEY)}: nothing to restore")
    if not 0 <= version <= current.version:
        raise HistoryError(
            f"{current.uri} has versions 0 to {current.version}, not {version} "
            "(`hhpulse history --versions` lists them)"
        )
    old = open_snapshot(store, version)
    assert old is not None
    if old.foreign:
        raise HistoryError(f"{old.uri}: {old.foreign}: pick a version hhpulse wrote")
    gone = [f.path for f in old.files if not store.exists(f"{TABLE_KEY}/{f.path}")]
    if gone:
        raise HistoryError(
            f"version {version} of {current.uri} is beyond time travel's reach: {len(gone)} of its files "
            f"were vacuumed (e.g. {gone[0]})"
        )
    state = json.loads(json.dumps(old.state))
    final = {f.path: f for f in old.files}
    state["generation"] = int(current.state["generation"]) + 1
    token = secrets.token_hex(16)
    state.update(token=token, operation="restore", folded=[], restored_from=version, updated_at=_now_iso())
    have = {f.path: f for f in current.files}
    change = deltatable.Commit(
        [f for p, f in final.items() if p not in have],
        [f for p, f in have.items() if p not in final],
        state,
        APP_ID,
        int(state["generation"]),
    )
    try:
        deltatable.commit(store, TABLE_KEY, current.table, current.arrow_schema(), change)
    except Exception as exc:  # noqa: BLE001
        if deltatable.find_commit(store, TABLE_KEY, current.version, token) is None:
            raise HistoryError(
                f"could not restore {current.uri} to version {version}: {deltatable._one_line(exc)}"
            ) from None
    snap = open_snapshot(store)
    assert snap is not None
    res = _result(snap, [], [], 1, t0)
    return res


def migrate(store: Store) -> FoldResult:
    """Move a history in the old layout (``history/state.json``, see :mod:`hhpulse.data.history_legacy`)
    onto the Delta table, once: the same rows, file by file, checked equal before the commit; the
    old files are left until ``hhpulse store prune`` removes them."""
    t0 = time.perf_counter()
    if open_snapshot(store) is not None:
        raise HistoryError(f"{store.uri(TABLE_KEY)} already holds the history: nothing to migrate")
    state = _legacy_state(store)
    if state is None:
        raise HistoryError(f"no history in the old layout at {store.uri(history_legacy.STATE_KEY)}")
    new_state = empty_state()
    new_state.update(
        runs=state["runs"], skipped=list(state.get("skipped") or []), counts=state["counts"], generation=0
    )
    columns = _columns()
    w = _Work(store, new_state, _empty_stored(columns), None, {}, columns, _schema(columns))
    days = {p["seq"]: str(p.get("date") or "") for p in state["settled"]}
    index = []
    try:
        for kind, seq, rows in history_legacy.chunks(store, state):
            if kind == "open":
                w.open = rows
                continue
            assert seq is not None
            if not len(rows):
                continue
            day = days.get(seq) or f"{rows['closed_by'].max():%Y-%m-%d}"
            f = w.write(_unique(f"{SETTLED_DIR}{day}/", seq), rows.sort_values("id", kind="stable"))
            w.settled[seq] = f
            index.append(
                pa.table(
                    {
                        "id": pa.array(rows["id"].tolist(), pa.string()),
                        "part": pa.array([seq] * len(rows), pa.int32()),
                    }
                )
            )
            back = _stored(deltatable.read_file(store, TABLE_KEY, f.path).to_pandas(), columns)
            _check_same(rows, back, f.path)
        w.index = pa.concat_tables(index) if index else None
        w.index_changed = True
        final = _finish(w)
        for f in final.values():
            if f.path.startswith(OPEN_DIR):
                back = _stored(deltatable.read_file(store, TABLE_KEY, f.path).to_pandas(), columns)
                _check_same(w.open, back, f.path)
    except history_legacy.LegacyError as exc:
        raise HistoryError(f"{exc}: run `{REBUILD_HINT}` to rebuild the history from the raw runs") from None
    version = _commit(store, None, w, "migrate", [], final, migrated_from=history_legacy.STATE_KEY)
    snap = open_snapshot(store)
    assert snap is not None
    log.warning(
        "history: moved the old layout (%s) onto the Delta table %s, version %d; the old files stay "
        "until `hhpulse store prune`",
        store.uri(history_legacy.STATE_KEY),
        store.uri(TABLE_KEY),
        version,
    )
    res = _result(snap, [], [], 1, t0)
    return res


def _check_same(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    """The rows written (``b``, read back) are the old rows (``a``), column for column."""
    cols = list(HISTORY_COLUMNS)
    diffs = compare_histories(canonical(a[cols]), canonical(b[cols]), limit=3)
    if len(a) != len(b) or diffs:
        raise HistoryError(
            f"moving the old history onto the table: {what} differs from the old rows ({len(a)} vs "
            f"{len(b)} rows; {'; '.join(diffs)}): nothing was committed; run `{REBUILD_HINT}`"
        )


# -- reading -------------------------------------------------------------------------------------
def read_history(
    store: Store,
    *,
    window_days: int | None = None,
    columns: Sequence[str] | None = None,
    now: datetime | str | pd.Timestamp | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """The history as :func:`~hhpulse.data.history.build_history` gives it (same columns, dtypes,
    rows sorted by id), restricted to the vacancies still open plus those that closed within
    ``window_days`` before ``now`` (default: the newest folded run's collection time);
    ``window_days=None`` reads all of it. Only ``columns`` (default: every history column, in
    that order) and the files that can hold rows of the window are read. ``version``: the table
    as it was at that version (time travel; default: the latest)."""
    unknown = set(columns or ()) - set(HISTORY_COLUMNS)
    if unknown:
        raise ValueError(f"unknown history columns: {', '.join(sorted(unknown))}")
    snap = open_snapshot(store, version)
    if snap is None:
        legacy = _legacy_state(store) if version is None else None
        if legacy is None:
            raise KeyNotFound(
                f"no history at {store.uri(TABLE_KEY)}: collect first (hhpulse collect) or run hhpulse history"
            )
        log.warning(
            "%s: the history is still in the old layout; reading it (the next fold moves it)", store.uri()
        )
        hist = history_legacy.read(store, legacy)
        cols = list(HISTORY_COLUMNS) if columns is None else list(dict.fromkeys(columns))
        cutoff = window_cutoff(legacy, window_days, now)
        if cutoff is not None:
            hist = hist[hist["closed_at"].isna() | (hist["closed_at"] >= cutoff)]
        return hist[cols].reset_index(drop=True)
    return snap.read(window_days, columns, now)


@dataclass
class HistoryWindow:
    """What training reads, all from one version of the table: the window's rows, every folded
    run's record (time, coverage, rates, synthetic) and what the window covered (with the
    version, so ``hhpulse train --as-of`` reads the same again)."""

    history: pd.DataFrame
    runs: dict[str, dict[str, Any]]
    window: dict[str, Any]

    @property
    def rates(self) -> dict[str, dict[str, float]]:
        return {r: dict(e.get("currency_rates") or {}) for r, e in self.runs.items()}


def read_window(store: Store, window_days: int | None, *, version: int | None = None) -> HistoryWindow:
    """The training window of the history at ``version`` (default: the latest), read from that
    one version: a fold committing meanwhile changes nothing of it."""
    snap = open_snapshot(store, version)
    if snap is None:
        if version is not None:
            raise HistoryError(f"no history table at {store.uri(TABLE_KEY)}: no version {version} to read")
        state = _legacy_state(store)
        if state is None:
            raise KeyNotFound(
                f"no history at {store.uri(TABLE_KEY)}: collect first (hhpulse collect) or run hhpulse history"
            )
        hist = read_history(store, window_days=window_days)
        window = {**window_summary(store, window_days), "vacancies": len(hist)}
        return HistoryWindow(hist, {r["run_id"]: r for r in state["runs"]}, window)
    hist = snap.read(window_days)
    window = {**snap.window_summary(window_days), "vacancies": len(hist)}
    return HistoryWindow(hist, {r["run_id"]: r for r in snap.runs}, window)


def window_cutoff(
    state: Mapping[str, Any] | None, window_days: int | None, now: Any = None
) -> pd.Timestamp | None:
    """The earliest close time a windowed read keeps (None: no window)."""
    if window_days is None:
        return None
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    if now is None:
        runs = (state or {}).get("runs") or []
        if not runs:
            return None
        now = runs[-1]["collected_at"]
    return pd.Timestamp(
        parse_datetime(now, "now") if not isinstance(now, pd.Timestamp) else now
    ) - pd.Timedelta(days=window_days)


def window_summary(
    store: Store, window_days: int | None, *, now: Any = None, version: int | None = None
) -> dict[str, Any]:
    """What a windowed read covers, for the model card and the run summary: the window, the
    runs folded, and the table version read (``hhpulse train --as-of`` reads it again)."""
    snap = open_snapshot(store, version)
    if snap is not None:
        return snap.window_summary(window_days, now=now)
    state = _legacy_state(store)
    cutoff = window_cutoff(state, window_days, now)
    runs = (state or {}).get("runs") or []
    return {
        "window_days": window_days,
        "closed_since": None if cutoff is None else format_datetime(cutoff.to_pydatetime()),
        "until": runs[-1]["collected_at"] if runs else None,
        "runs_folded": len(runs),
        "history_version": (state or {}).get("generation"),  # the folded history's version
    }


def describe_window(window: Mapping[str, Any] | None) -> str:
    """One line: which part of the history a model was trained on."""
    if not window:
        return "all of history"
    at = f", table version {window['version']}" if window.get("version") is not None else ""
    if window.get("window_days") is None:
        n = window.get("runs_folded")
        return f"all of history ({'?' if n is None else plural(n, 'run')} folded{at})"
    return (
        f"the open vacancies plus those closed in the {window['window_days']} days before "
        f"{window.get('until')} (closed since {window.get('closed_since')}{at})"
    )


def history_rates(store: Store, *, version: int | None = None) -> dict[str, dict[str, float]]:
    """Currency rates of every folded run, by run id (from the state: no raw run is read)."""
    state, _ = load_state(store, version)
    if state is None:
        raise KeyNotFound(f"no history at {store.uri(TABLE_KEY)}")
    return {r["run_id"]: dict(r.get("currency_rates") or {}) for r in state["runs"]}


def folded_runs(store: Store, *, version: int | None = None) -> list[dict[str, Any]]:
    """What the state keeps of each folded run (time, coverage, rates), oldest first."""
    state, _ = load_state(store, version)
    return list(state["runs"]) if state else []


def versions(store: Store) -> list[dict[str, Any]]:
    """The table's versions still in its log, newest first: version, time, operation, runs folded,
    vacancies (what ``hhpulse history --versions`` prints, to pick one for ``--restore``)."""
    out = []
    for v in reversed(deltatable.log_versions(store, TABLE_KEY)):
        try:
            info = deltatable.commit_info(deltatable.read_commit(store, TABLE_KEY, v))
        except (KeyNotFound, TableError):
            out.append({"version": v, "operation": "unreadable"})
            continue
        state = info.get("hhpulse") or {}
        ms = info.get("timestamp")
        out.append(
            {
                "version": v,
                "time": format_datetime(
                    datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(microsecond=0)
                )
                if isinstance(ms, int)
                else None,
                "operation": state.get("operation") or info.get("operation"),
                "folded": state.get("folded"),
                "runs": len(state["runs"]) if isinstance(state.get("runs"), list) else None,
                "vacancies": (state.get("counts") or {}).get("vacancies"),
                "restored_from": state.get("restored_from"),
            }
        )
    return out


# -- verify --------------------------------------------------------------------------------------
def _raw_runs(n: int) -> str:
    return "the one raw run" if n == 1 else f"the {n} raw runs"


@dataclass
class VerifyResult:
    ok: bool
    stored_rows: int
    rebuilt_rows: int
    runs: int
    differences: list[str]  # the first differing vacancies, one line each
    seconds: float = 0.0

    def message(self) -> str:
        if self.ok:
            return (
                f"history verified: the stored history equals a rebuild from {_raw_runs(self.runs)} "
                f"({self.stored_rows} vacancies, row for row and column for column) in {self.seconds:.0f}s"
            )
        lines = [
            f"history DIFFERS from a rebuild from {_raw_runs(self.runs)}: stored {self.stored_rows} "
            f"vacancies, rebuilt {self.rebuilt_rows}; first differences:",
            *(f"  {d}" for d in self.differences),
            f"run `{REBUILD_HINT}` to replace the stored history with the rebuild",
        ]
        return "\n".join(lines)


def compare_histories(a: pd.DataFrame, b: pd.DataFrame, *, limit: int = 10) -> list[str]:
    """Lines naming the first vacancies (by id) that differ between ``a`` (stored) and ``b`` (rebuilt)."""
    a = a.set_index("id")
    b = b.set_index("id")
    out: list[tuple[str, str]] = []
    for vid in a.index.difference(b.index)[:limit]:
        out.append((str(vid), f"vacancy {vid}: in the stored history only"))
    for vid in b.index.difference(a.index)[:limit]:
        out.append((str(vid), f"vacancy {vid}: missing from the stored history"))
    both = a.index.intersection(b.index)
    x, y = a.loc[both, list(b.columns)], b.loc[both]
    diff = ~((x == y) | (x.isna() & y.isna()))
    rows = diff.any(axis=1)
    for vid in rows[rows].index[:limit]:
        cols = [c for c in diff.columns if diff.at[vid, c]]
        shown = ", ".join(f"{c}: stored {x.at[vid, c]!r}, rebuilt {y.at[vid, c]!r}" for c in cols[:3])
        more = f" (+{len(cols) - 3} more columns)" if len(cols) > 3 else ""
        out.append((str(vid), f"vacancy {vid}: {shown}{more}"))
    return [line for _, line in sorted(out)[:limit]]


def _chunks(snap: Snapshot | None) -> Iterator[pd.DataFrame]:
    """The history's rows, one data file at a time: the open file, then the settled files in run
    order (memory: one file at a time)."""
    if snap is None:
        return
    cols = list(HISTORY_COLUMNS)
    for f in snap.open_files:
        yield canonical(_stored_subset(snap.read_file(f, cols), cols))
    for _, f in sorted(snap.settled_files.items()):
        yield canonical(_stored_subset(snap.read_file(f, cols), cols))


def verify(store: Store, *, progress: bool = False, limit: int = 10) -> VerifyResult:
    """Rebuild the history from the raw runs into a temporary folder and compare it with the
    stored one, row for row and column for column. The two are compared file by file (the
    fold is deterministic, so a good history holds the same rows in the same files); rows
    found in different files on the two sides are matched by id at the end."""
    import itertools

    t0 = time.perf_counter()
    snap = open_snapshot(store)
    state = snap.state if snap else None
    diffs: list[str] = []
    left: list[pd.DataFrame] = []
    right: list[pd.DataFrame] = []
    n_stored = n_rebuilt = 0
    with tempfile.TemporaryDirectory(prefix="hhpulse-verify-") as tmp:
        scratch = LocalStore(tmp)
        res = rebuild(store, into=scratch, progress=progress)
        rebuilt = open_snapshot(scratch)
        rebuilt_state = rebuilt.state if rebuilt else None
        for a, b in itertools.zip_longest(_chunks(snap), _chunks(rebuilt)):
            a = empty_history() if a is None else a
            b = empty_history() if b is None else b
            n_stored, n_rebuilt = n_stored + len(a), n_rebuilt + len(b)
            both = set(a["id"]) & set(b["id"])
            diffs += compare_histories(a[a["id"].isin(both)], b[b["id"].isin(both)], limit=limit)
            left.append(a[~a["id"].isin(both)])
            right.append(b[~b["id"].isin(both)])
    diffs += compare_histories(
        pd.concat(left, ignore_index=True), pd.concat(right, ignore_index=True), limit=limit
    )
    mine = [r["run_id"] for r in (state or {}).get("runs", [])]
    theirs = [r["run_id"] for r in (rebuilt_state or {}).get("runs", [])]
    if mine != theirs:
        missing = [r for r in theirs if r not in mine]
        extra = [r for r in mine if r not in theirs]
        pruned = set(rebuild_gap(store, extra))
        why = (
            f" ({len(pruned)} of them pruned by `hhpulse store prune --force-rebuild-gap`: expected, "
            "and a rebuild would lose them)"
            if pruned
            else ""
        )
        diffs.insert(
            0,
            f"runs folded differ: stored history lacks {missing[:5]} and has {extra[:5]} beyond the raw runs{why}",
        )
    if (state or {}).get("counts") != (rebuilt_state or {}).get("counts") and not diffs:
        diffs.append(
            f"the state's counts differ: stored {(state or {}).get('counts')}, rebuilt "
            f"{(rebuilt_state or {}).get('counts')}"
        )
    return VerifyResult(
        ok=not diffs,
        stored_rows=n_stored,
        rebuilt_rows=n_rebuilt,
        runs=len(res.folded),
        differences=diffs[:limit],
        seconds=time.perf_counter() - t0,
    )


# -- maintenance: vacuum ---------------------------------------------------------------------------------
@dataclass
class VacuumPlan:
    """What a vacuum of the history removes: data files no version younger than the retention
    uses (and files of failed folds), the index files no such version names."""

    retention_days: float
    files: list[str]  # keys in the store
    bytes: int


def _index_files_to_remove(store: Store, snap: Snapshot, retention_days: float) -> list[str]:
    cutoff_ms = (time.time() - retention_days * 86_400) * 1000
    keep = {snap.state.get("index")}
    gen = int(snap.state.get("generation") or 0)
    for v in deltatable.log_versions(store, TABLE_KEY):
        try:
            info = deltatable.commit_info(deltatable.read_commit(store, TABLE_KEY, v))
        except (KeyNotFound, TableError):
            continue
        if (info.get("timestamp") or 0) >= cutoff_ms:
            keep.add((info.get("hhpulse") or {}).get("index"))
    out = []
    for key in store.list(f"{TABLE_KEY}/{INDEX_DIR}"):
        path = key[len(TABLE_KEY) + 1 :]
        try:
            number = int(path[len(INDEX_DIR) :].split("-", 1)[0])
        except ValueError:
            continue
        if path not in keep and number < gen:  # a newer one may be an in-flight fold's
            out.append(key)
    return out


def plan_vacuum(store: Store, retention_days: float = RETENTION_DAYS) -> VacuumPlan | None:
    """What :func:`vacuum` would remove (None: no history table)."""
    snap = open_snapshot(store)
    if snap is None:
        return None
    data = snap.table.vacuum(
        retention_hours=int(retention_days * 24), dry_run=True, enforce_retention_duration=False, full=True
    )
    keys = sorted({*(f"{TABLE_KEY}/{p}" for p in data), *_index_files_to_remove(store, snap, retention_days)})
    return VacuumPlan(retention_days, keys, sum(_size(store, k) for k in keys))


def _size(store: Store, key: str) -> int:
    try:
        return store.size(key)
    except KeyNotFound:
        return 0


def vacuum(store: Store, retention_days: float = RETENTION_DAYS) -> VacuumPlan | None:
    """Remove the history's files that no version younger than ``retention_days`` uses: the data
    files earlier folds replaced, the files of folds that failed before their commit, and old
    index files. Time travel then reaches back ``retention_days`` (and no further)."""
    from deltalake import CommitProperties

    if retention_days < 1:
        raise HistoryError(f"the history's retention must be at least 1 day, got {retention_days:g}")
    plan = plan_vacuum(store, retention_days)
    if plan is None:
        return None
    snap = open_snapshot(store)
    assert snap is not None
    record = {**snap.state, "operation": "vacuum", "token": secrets.token_hex(16), "folded": []}
    snap.table.vacuum(
        retention_hours=int(retention_days * 24),
        dry_run=False,
        enforce_retention_duration=False,
        full=True,
        commit_properties=CommitProperties(custom_metadata={"hhpulse": record}),
    )
    for key in _index_files_to_remove(store, snap, retention_days):
        store.delete(key)
    return plan


# -- the stored history for callers that want a DataFrame ------------------------------------


def rebuild_history(store: Store, *, progress: bool = False) -> pd.DataFrame:
    """Rebuild the stored history from every finished run, one run at a time, and return it
    (see :func:`rebuild`)."""
    rebuild(store, progress=progress)
    hist = read_history(store)
    log.info("history: %d vacancies -> %s", len(hist), store.uri(TABLE_KEY))
    return hist


def load_history(store: Store, *, window_days: int | None = None) -> pd.DataFrame:
    """The stored history (all of it, or the open vacancies plus those closed within ``window_days``)."""
    return read_history(store, window_days=window_days)


def rates_by_run(store: Store, *, version: int | None = None) -> dict[str, dict[str, float]]:
    """Currency rates (code -> units per 1 RUR) of every run, by run id: the folded runs' from
    the history's state (no raw run is read), else from every finished run's meta.json."""
    try:
        return history_rates(store, version=version)
    except KeyNotFound:
        return {
            r: dict(store.get_json(f"raw/{r}/meta.json").get("currency_rates") or {})
            for r in list_runs(store)
        }
