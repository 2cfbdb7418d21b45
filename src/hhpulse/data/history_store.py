"""The stored history, folded run by run: what a normal run reads and writes.

:func:`~hhpulse.data.history.build_history` is the reference: one row per vacancy from every raw
run. Rebuilding it on every run costs every run before it, so the store keeps it folded
instead, and a run updates it with its own items only (:func:`fold_run`).

Layout (all under ``history/``; see docs/ARCHITECTURE.md)::

    history/state.json                           the commit point: runs folded, the files below
    history/open/<gen>-<hex>.parquet             every vacancy still open (rewritten by each fold)
    history/settled/date=<day>/<seq>-<hex>.parquet  vacancies that closed in run <seq> (never rewritten)
    history/index/<gen>-<hex>.parquet            id -> the settled file that holds its current row

A fold reads ``state.json`` (with its version tag), the open table and the index, parses the
new run's items, and writes a new open table, a new index and (when anything closed) one new
settled file, each under a new unique name; then it commits by writing ``state.json`` with a
conditional write (``If-Match`` on the tag it read). A fold killed before the commit leaves
the history exactly as it was (its files are unreferenced and removed by a later fold); two
folds racing cannot both commit on the same state: the loser folds again from the new state.

A settled row is final until its vacancy is seen again (it "comes back"): then the fold
finds its row through the index, continues it (first sighting, sightings, archive times),
and the new row goes to the open table or a newer settled file. The older settled row stays
where it is, and readers skip it because the index (or the open table) holds the newer one.

The fold keeps three internal columns with every stored row: ``_ica_min`` (the earliest
``initial_created_at`` of any sighting), ``_archived_at`` (the first archived sighting) and
``_open_until`` (the latest sighting that was not archived). With them, and the coverage of
every earlier run (kept in ``state.json``: a few hundred bytes a run), each fold gives exactly
the rows :func:`~hhpulse.data.history.build_history` gives over all runs: ``hhpulse history
--verify`` checks that against a rebuild.
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
import pyarrow.parquet as pq

from hhpulse.data.history import (
    HISTORY_COLUMNS,
    HISTORY_KEY,
    RawRun,
    canonical,
    empty_history,
    record_rows,
)
from hhpulse.data.runs import list_runs, quarantined_ids, rebuild_gap, run_order_key
from hhpulse.data.store import KeyNotFound, LocalStore, PreconditionFailed, Store, StoreError
from hhpulse.hh.records import RECORD_COLUMNS, format_datetime, parse_datetime
from hhpulse.words import plural

log = logging.getLogger(__name__)

STATE_KEY = "history/state.json"
OPEN_PREFIX = "history/open/"
SETTLED_PREFIX = "history/settled/"
INDEX_PREFIX = "history/index/"
STATE_FORMAT = "hhpulse-history/1"
FOLD_COLUMNS = ("_ica_min", "_archived_at", "_open_until")
STORED_COLUMNS = (*HISTORY_COLUMNS, *FOLD_COLUMNS)
COMMIT_RETRIES = 5
REBUILD_HINT = "hhpulse history --rebuild"


class HistoryError(StoreError):
    """The history cannot be folded as asked (a run out of order, a lost race, a broken state)."""


class BackfillRefused(HistoryError):
    """A run is older than the newest run already folded: only a rebuild can take it."""


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
    refused: list[str] = field(default_factory=list)  # finished runs older than the newest folded

    def summary_line(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.closed.items())) or "none"
        what = (
            f"folded {len(self.folded)} run(s) ({self.new} new, {self.came_back} back, "
            f"{self.settled} settled)"
            if self.folded
            else "nothing new to fold"
        )
        return (
            f"history: {self.vacancies} vacancies, {self.open} open, closed by reason: {parts}; "
            f"{what} in {self.seconds:.1f}s"
        )


# -- the state object ------------------------------------------------------------------------
def empty_state() -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "generation": 0,
        "runs": [],
        "skipped": [],
        "open": None,
        "index": None,
        "settled": [],
        "counts": {"vacancies": 0, "open": 0, "closed": {}},
    }


def load_state(store: Store) -> tuple[dict[str, Any] | None, str | None]:
    """(state, version tag), or (None, None) when nothing was folded yet."""
    try:
        data, tag = store.get_versioned(STATE_KEY)
    except KeyNotFound:
        return None, None
    try:
        state = json.loads(data)
    except json.JSONDecodeError as exc:
        raise HistoryError(f"{store.uri(STATE_KEY)} is not valid JSON ({exc}): run {REBUILD_HINT}") from exc
    if state.get("format") != STATE_FORMAT:
        raise HistoryError(
            f"{store.uri(STATE_KEY)} has format {state.get('format')!r}, expected {STATE_FORMAT!r}: "
            f"run {REBUILD_HINT}"
        )
    return state, tag


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


# -- parquet helpers: only the needed columns are read ----------------------------------------
def _write_parquet(store: Store, key: str, df: pd.DataFrame | pa.Table) -> None:
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    store.put_bytes(key, buf.getvalue())


def _read_table(store: Store, key: str, columns: Sequence[str] | None = None) -> pa.Table:
    cols = list(columns) if columns else None
    if isinstance(store, LocalStore):  # read in place: pyarrow reads only the columns asked for
        try:
            return pq.read_table(store.root / key, columns=cols)
        except FileNotFoundError:
            raise KeyNotFound(f"{store.uri(key)} does not exist") from None
    return pq.read_table(io.BytesIO(store.get_bytes(key)), columns=cols)


def _read_frame(store: Store, key: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    return _read_table(store, key, columns).to_pandas()


def _unique_key(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}-{secrets.token_hex(4)}.parquet"


def _empty_stored() -> pd.DataFrame:
    df = empty_history()
    for c in FOLD_COLUMNS:
        df[c] = pd.Series(dtype="datetime64[ns, UTC]")
    return df


def _stored(df: pd.DataFrame) -> pd.DataFrame:
    df = canonical(df, HISTORY_COLUMNS)
    for c in FOLD_COLUMNS:
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[ns, UTC]")
    return df[list(STORED_COLUMNS)]


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


# -- the fold of one run, in memory ------------------------------------------------------------
@dataclass
class _Work:
    """The history being folded: the state, the open table, the index (id -> settled seq)."""

    state: dict[str, Any]
    open: pd.DataFrame
    index: pa.Table | None
    store: Store  # where settled files are written and read
    written: list[str] = field(default_factory=list)  # files written, not yet committed
    new: int = 0
    came_back: int = 0
    settled: int = 0
    new_ids: set[str] = field(default_factory=set)


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
    """The current settled rows of ``ids`` (vacancies seen again after they settled)."""
    if w.index is None or not len(ids) or not w.index.num_rows:
        return _empty_stored().set_index("id")
    # probe the index with a hash set of the run's few unknown ids (never hash the whole index)
    wanted = pa.array(ids.to_numpy(dtype=object), type=pa.string())
    hits = w.index.filter(pc.is_in(w.index["id"], value_set=wanted))
    if not hits.num_rows:
        return _empty_stored().set_index("id")
    hit_ids, parts = hits["id"], hits["part"]
    keys = {p["seq"]: p["key"] for p in w.state["settled"]}
    by_part = pd.Series(hit_ids.to_pylist()).groupby(parts.to_numpy()).agg(list)
    frames = []
    for seq, back in by_part.items():
        df = _read_frame(w.store, keys[int(seq)])
        frames.append(df[df["id"].isin(back)])
    return _stored(pd.concat(frames, ignore_index=True)).set_index("id")


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
    row["closed_at"] = (arch_after + (arch_by - arch_after) / 2).fillna(arch_by)
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
        rest["closed_at"] = rest["last_seen"] + (closed_by - rest["last_seen"]) / 2
        rest["closed_reason"] = pd.Series("absent_from_complete_run", index=rest.index, dtype=object).where(
            gone, None
        )

    with warnings.catch_warnings():  # all-NA columns of either side: _stored sets every dtype
        warnings.simplefilter("ignore", FutureWarning)
        merged = _stored(pd.concat([f for f in (rest, row) if len(f)] or [rest], ignore_index=True))
    is_closed = merged["closed_at"].notna()
    settled = merged[is_closed]
    w.open = merged[~is_closed].reset_index(drop=True)

    counts = w.state["counts"]
    closed = dict(counts["closed"])
    for reason, n in back["closed_reason"].value_counts().items():
        closed[str(reason)] = closed.get(str(reason), 0) - int(n)
    if len(settled):
        key = _unique_key(f"{SETTLED_PREFIX}date={run_time:%Y-%m-%d}/", seq)
        settled = settled.sort_values("id", kind="stable").reset_index(drop=True)
        _write_parquet(w.store, key, settled)
        w.written.append(key)
        w.state["settled"].append(
            {
                "seq": seq,
                "key": key,
                "run_id": entry["run_id"],
                "date": f"{run_time:%Y-%m-%d}",
                "rows": len(settled),
                "max_closed_at": format_datetime(settled["closed_at"].max().to_pydatetime()),
            }
        )
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
        for reason, n in settled["closed_reason"].value_counts().items():
            closed[str(reason)] = closed.get(str(reason), 0) + int(n)
        w.settled += len(settled)
    w.state["counts"] = {
        "vacancies": counts["vacancies"] + int((~had).sum()),
        "open": len(w.open),
        "closed": {k: v for k, v in sorted(closed.items()) if v},
    }
    runs.append(entry)


# -- folding into a store ------------------------------------------------------------------------
def _load_work(target: Store, state: dict[str, Any] | None) -> _Work:
    """The history committed in ``target`` as a fold starts from it."""
    if state is None:
        return _Work(empty_state(), _empty_stored(), None, target)
    state = json.loads(json.dumps(state))  # a private copy: the fold appends to it
    opened = _stored(_read_frame(target, state["open"]["key"])) if state.get("open") else _empty_stored()
    index = _read_table(target, state["index"]["key"]) if state.get("index") else None
    return _Work(state, opened, index, target)


def _pending(
    store: Store, state: dict[str, Any] | None
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


def refusal(run_id: str, meta: Mapping[str, Any], newest: Mapping[str, Any]) -> str:
    return (
        f"run {run_id} (collected_at {meta.get('collected_at')}) is older than the newest run in "
        f"history, {newest['run_id']} (collected_at {newest['collected_at']}): history folds runs in "
        f"time order only, so it is not folded. Run `{REBUILD_HINT}` to rebuild history from every "
        "raw run in order"
    )


def _split_late(
    state: dict[str, Any] | None, pending: list[tuple[str, dict[str, Any]]]
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """(runs that can fold, runs older than the newest folded: a backfill or a clock step)."""
    if not state or not state["runs"]:
        return pending, []
    newest = _order(state["runs"][-1])
    late = [(r, m) for r, m in pending if run_order_key(m, r) < newest]
    return [(r, m) for r, m in pending if run_order_key(m, r) >= newest], late


def _fold_runs(
    store: Store, w: _Work, pending: Sequence[tuple[str, dict[str, Any]]], *, progress: bool
) -> list[str]:
    from tqdm import tqdm

    folded = []
    for run_id, meta in tqdm(pending, desc="fold runs", unit="run", disable=not progress, leave=False):
        if not meta.get("collected_at"):
            raise HistoryError(f"run {run_id}: meta.json has no collected_at, so it cannot be ordered")
        run_time = parse_datetime(meta.get("collected_at"), "collected_at")
        assert run_time is not None
        recs = run_frame(store, run_id, run_time, quarantined_ids(store, run_id))
        _fold_one(w, _run_entry(run_id, meta, len(recs)), recs)
        folded.append(run_id)
        log.info("history: folded run %s (%d items), %d open", run_id, len(recs), len(w.open))
    return folded


def _commit(target: Store, w: _Work, tag: str | None) -> None:
    """Write the open table and the index under new names, then the state (the commit point)."""
    gen = int(w.state["generation"]) + 1
    w.state["generation"] = gen
    key = _unique_key(OPEN_PREFIX, gen)
    _write_parquet(target, key, w.open)
    w.written.append(key)
    w.state["open"] = {"key": key, "rows": len(w.open)}
    if w.index is not None:
        key = _unique_key(INDEX_PREFIX, gen)
        _write_parquet(target, key, w.index)
        w.written.append(key)
        w.state["index"] = {"key": key, "rows": w.index.num_rows}
    w.state["updated_at"] = format_datetime(datetime.now(timezone.utc).replace(microsecond=0))
    data = json.dumps(w.state, ensure_ascii=False, indent=1, sort_keys=True).encode()
    if tag is None:
        target.put_if(STATE_KEY, data, if_none_match=True)
    else:
        target.put_if(STATE_KEY, data, if_match=tag)


def _discard(target: Store, keys: Sequence[str]) -> None:
    for key in keys:
        with contextlib.suppress(StoreError):
            target.delete(key)


def _collect_garbage(target: Store, state: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Remove files no state references: those of killed folds, of folds that lost a race, and
    the open table and index of the state before the previous one. Files an in-flight fold on
    this state may be writing (newer generation, or settled files of runs not folded yet) stay."""
    keep = {p["key"] for p in state["settled"]}
    for s in (state, previous or {}):
        for what in ("open", "index"):
            if s.get(what):
                keep.add(s[what]["key"])
    gen, runs = int(state["generation"]), len(state["runs"])
    for key in target.list("history/"):
        if key in keep or not key.endswith(".parquet"):
            continue
        name = key.rsplit("/", 1)[-1]
        try:
            number = int(name.split("-", 1)[0])
        except ValueError:
            continue
        if key.startswith(SETTLED_PREFIX):
            stale = number < runs
        elif key.startswith((OPEN_PREFIX, INDEX_PREFIX)):
            stale = number <= gen
        else:
            stale = False
        if stale:
            _discard(target, [key])
    if target.exists(HISTORY_KEY):  # the rebuilt-every-run file of earlier versions
        _discard(target, [HISTORY_KEY])


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

    Raises :class:`BackfillRefused` (naming ``hhpulse history --rebuild``) when ``run_id`` is
    older than the newest run already folded. Other such runs (a backfill, a run that finished
    after a later one was folded) are never folded out of order either: they are left out with
    a warning and listed in ``FoldResult.refused``, so one stray run does not stop a schedule. Two folds racing: the one whose commit fails folds again
    from the state the other committed; after ``retries`` lost races it raises
    :class:`HistoryError`.
    """
    t0 = time.perf_counter()
    target = into or store
    for attempt in range(1, retries + 1):
        state, tag = load_state(target)
        done = {r["run_id"] for r in state["runs"]} if state else set()
        pending, skipped = _pending(store, state)
        if run_id is not None:
            if run_id not in done and run_id not in {r for r, _ in pending} | set(skipped):
                raise HistoryError(f"run {run_id} is not a finished run in {store.uri('raw/')}")
            key = next((run_order_key(m, r) for r, m in pending if r == run_id), None)
            pending = [(r, m) for r, m in pending if key is not None and run_order_key(m, r) <= key]
        pending, late = _split_late(state, pending)
        for r, m in late:
            assert state is not None
            if r == run_id:
                raise BackfillRefused(refusal(r, m, state["runs"][-1]))
            log.warning("history: %s", refusal(r, m, state["runs"][-1]))
        refused = [r for r, _ in late]
        if not pending and not (skipped and state):
            res = _result(state, [], skipped, attempt, t0)
            res.refused = refused
            return res
        w = _load_work(target, state)
        w.state["skipped"] = sorted(set(w.state.get("skipped") or []) | set(skipped))
        folded = _fold_runs(store, w, pending, progress=progress)
        try:
            _commit(target, w, tag)
        except PreconditionFailed:
            _discard(target, w.written)
            log.warning(
                "history: another fold committed first (attempt %d/%d); folding again", attempt, retries
            )
            continue
        except BaseException:
            _discard(target, w.written)
            raise
        _collect_garbage(target, w.state, state)
        res = _result(w.state, folded, skipped, attempt, t0, w)
        res.refused = refused
        return res
    raise HistoryError(
        f"history: {retries} folds in a row lost the race to commit {target.uri(STATE_KEY)} to other "
        "runs folding at the same time; nothing was lost, run the fold again (`hhpulse history`)"
    )


def _result(
    state: dict[str, Any] | None,
    folded: list[str],
    skipped: list[str],
    attempts: int,
    t0: float,
    w: _Work | None = None,
) -> FoldResult:
    counts = (state or empty_state())["counts"]
    runs = (state or empty_state())["runs"]
    res = FoldResult(
        folded=folded,
        vacancies=int(counts["vacancies"]),
        open=int(counts["open"]),
        closed=dict(counts["closed"]),
        skipped=skipped,
        attempts=attempts,
        seconds=time.perf_counter() - t0,
        newest_run=runs[-1]["run_id"] if runs else None,
    )
    if w is not None:
        res.new, res.came_back, res.settled = w.new, w.came_back, w.settled
        res.new_ids = frozenset(w.new_ids)
    return res


def history_runs(store: Store) -> set[str] | None:
    """Run ids the stored history has taken in (folded, or skipped for having no items); None
    when there is no history."""
    state, _ = load_state(store)
    if state is None:
        return None
    return {str(r["run_id"]) for r in state.get("runs", [])} | {str(r) for r in state.get("skipped") or []}


def rebuild(store: Store, *, into: Store | None = None, progress: bool = False) -> FoldResult:
    """Rebuild the history from every finished raw run, folding one run at a time (memory:
    one run plus the open vacancies), and commit it in one step into ``into`` (default:
    ``store`` itself, replacing its history atomically)."""
    t0 = time.perf_counter()
    if into is None:
        gap = rebuild_gap(store, sorted(history_runs(store) or ()))
        if gap:
            raise HistoryError(
                f"{store.uri(STATE_KEY)}: {len(gap)} folded run(s) were pruned (e.g. {', '.join(gap[:3])}), "
                "so a rebuild from the raw runs would silently drop their part of the history; "
                "the stored history is unchanged (it still holds them)"
            )
    target = into or store
    old, tag = load_state(target)
    pending, skipped = _pending(store, None)
    w = _Work(empty_state(), _empty_stored(), None, target)
    if old:
        w.state["generation"] = int(old["generation"])
    w.state["skipped"] = skipped
    try:
        folded = _fold_runs(store, w, pending, progress=progress)
        _commit(target, w, tag)
    except PreconditionFailed:
        _discard(target, w.written)
        raise HistoryError(
            f"another run folded into {target.uri(STATE_KEY)} while it was being rebuilt; rebuild again"
        ) from None
    except BaseException:
        _discard(target, w.written)
        raise
    _collect_garbage(target, w.state, old)
    return _result(w.state, folded, skipped, 1, t0, w)


# -- reading -------------------------------------------------------------------------------------
def read_history(
    store: Store,
    *,
    window_days: int | None = None,
    columns: Sequence[str] | None = None,
    now: datetime | str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The history as :func:`~hhpulse.data.history.build_history` gives it (same columns, dtypes,
    rows sorted by id), restricted to the vacancies still open plus those that closed within
    ``window_days`` before ``now`` (default: the newest folded run's collection time);
    ``window_days=None`` reads all of it. Only ``columns`` (default: every history column,
    in that order) and the settled files that can hold rows of the window are read."""
    cols = list(HISTORY_COLUMNS) if columns is None else list(dict.fromkeys(columns))
    unknown = set(columns or ()) - set(HISTORY_COLUMNS)
    if unknown:
        raise ValueError(f"unknown history columns: {', '.join(sorted(unknown))}")
    for attempt in range(3):  # a fold may remove the files of an older state while we read
        try:
            return _read_history(store, window_days, cols, now)
        except KeyNotFound:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


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


def _read_history(store: Store, window_days: int | None, cols: list[str], now: Any) -> pd.DataFrame:
    state, _ = load_state(store)
    if state is None:
        if store.exists(HISTORY_KEY):  # a store from before the fold: its rebuilt history
            log.warning("%s: no folded history yet, reading %s", store.uri(), store.uri(HISTORY_KEY))
            hist = canonical(store.get_parquet(HISTORY_KEY), HISTORY_COLUMNS)
            cutoff = window_cutoff({"runs": []}, window_days, now)
            if cutoff is not None:
                hist = hist[hist["closed_at"].isna() | (hist["closed_at"] >= cutoff)]
            return hist[cols].reset_index(drop=True)
        raise KeyNotFound(
            f"no history at {store.uri(STATE_KEY)}: collect first (hhpulse collect) or run hhpulse history"
        )
    cutoff = window_cutoff(state, window_days, now)
    need = list(dict.fromkeys(["id", "closed_at", *cols]))
    frames = []
    opened = _read_frame(store, state["open"]["key"], need) if state.get("open") else None
    if opened is not None:
        frames.append(opened)
    parts = [p for p in state["settled"] if cutoff is None or pd.Timestamp(p["max_closed_at"]) >= cutoff]
    if parts:
        index = _read_table(store, state["index"]["key"])
        index = index.filter(
            pc.is_in(index["part"], value_set=pa.array([p["seq"] for p in parts], pa.int32()))
        )
        current = index.to_pandas().rename(columns={"part": "_part"})
        settled = []
        for p in parts:
            df = _read_frame(store, p["key"], need)
            if cutoff is not None:
                df = df[df["closed_at"] >= cutoff]
            settled.append(df.assign(_part=p["seq"]))
        # a settled row counts only where the index points at its file (a vacancy that came
        # back has a newer row) and the open table does not hold the vacancy
        rows = pd.concat(settled, ignore_index=True).astype({"_part": "int32"})
        rows = rows.merge(current, on=["id", "_part"], how="inner").drop(columns="_part")
        if opened is not None and len(opened):
            rows = rows[~rows["id"].isin(opened["id"])]
        frames.append(rows)
    if not frames:
        return empty_history()[cols]
    hist = pd.concat(frames, ignore_index=True)
    hist = canonical(hist, need)
    return hist.sort_values("id", kind="stable").reset_index(drop=True)[cols]


def window_summary(store: Store, window_days: int | None, *, now: Any = None) -> dict[str, Any]:
    """What a windowed read covers, for the model card and the run summary."""
    state, _ = load_state(store)
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
    if window.get("window_days") is None:
        n = window.get("runs_folded")
        return f"all of history ({'?' if n is None else plural(n, 'run')} folded)"
    return (
        f"the open vacancies plus those closed in the {window['window_days']} days before "
        f"{window.get('until')} (closed since {window.get('closed_since')})"
    )


def history_rates(store: Store) -> dict[str, dict[str, float]]:
    """Currency rates of every folded run, by run id (from the state: no raw run is read)."""
    state, _ = load_state(store)
    if state is None:
        raise KeyNotFound(f"no history at {store.uri(STATE_KEY)}")
    return {r["run_id"]: dict(r.get("currency_rates") or {}) for r in state["runs"]}


def folded_runs(store: Store) -> list[dict[str, Any]]:
    """What the state keeps of each folded run (time, coverage, rates), oldest first."""
    state, _ = load_state(store)
    return list(state["runs"]) if state else []


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


def _chunks(store: Store, state: dict[str, Any] | None) -> Iterator[pd.DataFrame]:
    """The history's current rows, one stored file at a time: the open table, then each
    settled file's rows that are still current (memory: one file at a time)."""
    if not state:
        return
    cols = list(HISTORY_COLUMNS)
    opened = _read_frame(store, state["open"]["key"], cols) if state.get("open") else empty_history()
    open_ids = set(opened["id"])
    yield canonical(opened)
    index = _read_table(store, state["index"]["key"]) if state.get("index") else None
    for p in state["settled"]:
        assert index is not None
        current = index.filter(pc.equal(index["part"], pa.scalar(p["seq"], pa.int32())))["id"]
        df = _read_frame(store, p["key"], cols)
        keep = df["id"].isin(set(current.to_pylist())) & ~df["id"].isin(open_ids)
        yield canonical(df[keep])


def verify(store: Store, *, progress: bool = False, limit: int = 10) -> VerifyResult:
    """Rebuild the history from the raw runs into a temporary folder and compare it with the
    stored one, row for row and column for column. The two are compared file by file (the
    fold is deterministic, so a good history holds the same rows in the same files); rows
    found in different files on the two sides are matched by id at the end."""
    import itertools

    t0 = time.perf_counter()
    state, _ = load_state(store)
    diffs: list[str] = []
    left: list[pd.DataFrame] = []
    right: list[pd.DataFrame] = []
    n_stored = n_rebuilt = 0
    with tempfile.TemporaryDirectory(prefix="hhpulse-verify-") as tmp:
        scratch = LocalStore(tmp)
        res = rebuild(store, into=scratch, progress=progress)
        rebuilt_state, _ = load_state(scratch)
        for a, b in itertools.zip_longest(_chunks(store, state), _chunks(scratch, rebuilt_state)):
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
            f"the state's counts differ: stored {(state or {}).get('counts')}, rebuilt {rebuilt_state['counts']}"
        )
    return VerifyResult(
        ok=not diffs,
        stored_rows=n_stored,
        rebuilt_rows=n_rebuilt,
        runs=len(res.folded),
        differences=diffs[:limit],
        seconds=time.perf_counter() - t0,
    )


# -- the stored history for callers that want a DataFrame ------------------------------------


def rebuild_history(store: Store, *, progress: bool = False) -> pd.DataFrame:
    """Rebuild the stored history from every finished run, one run at a time, and return it
    (see :func:`rebuild`)."""
    rebuild(store, progress=progress)
    hist = read_history(store)
    log.info("history: %d vacancies -> %s", len(hist), store.uri("history/"))
    return hist


def load_history(store: Store, *, window_days: int | None = None) -> pd.DataFrame:
    """The stored history (all of it, or the open vacancies plus those closed within ``window_days``)."""
    return read_history(store, window_days=window_days)


def rates_by_run(store: Store) -> dict[str, dict[str, float]]:
    """Currency rates (code -> units per 1 RUR) of every run, by run id: the folded runs' from
    the history's state (no raw run is read), else from every finished run's meta.json."""
    try:
        return history_rates(store)
    except KeyNotFound:
        return {
            r: dict(store.get_json(f"raw/{r}/meta.json").get("currency_rates") or {})
            for r in list_runs(store)
        }
