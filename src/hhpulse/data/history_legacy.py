"""The history's layout of earlier versions, read once to move it onto the Delta table.

Before the history was a Delta Lake table (:mod:`hhpulse.data.history_store`), it lived in a
table format written by hand::

    history/state.json                                the commit point (format hhpulse-history/1)
    history/open/<gen>-<hex>.parquet                  every vacancy still open
    history/settled/date=<day>/<seq>-<hex>.parquet    the vacancies that closed in run <seq>
    history/index/<gen>-<hex>.parquet                 id -> the settled file of its current row
    history/vacancies.parquet                         (older still) the whole history, rebuilt every run

A settled file may hold rows that were superseded (the vacancy came back later): a row is
current when the index points at its file and the open table does not hold the vacancy.
This module reads that layout, row for row as its own reader did, and names its files (for
``hhpulse store prune``, which removes them once the Delta table holds every run they do).
Nothing here writes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hhpulse.data.history import HISTORY_COLUMNS, STORED_COLUMNS, canonical
from hhpulse.data.store import KeyNotFound, LocalStore, Store, StoreError

STATE_KEY = "history/state.json"
FORMAT = "hhpulse-history/1"
PREFIXES = ("history/open/", "history/settled/", "history/index/")
REBUILT_KEY = "history/vacancies.parquet"  # the rebuilt-every-run history of still earlier versions


class LegacyError(StoreError):
    """The old layout is there but cannot be read."""


def exists(store: Store) -> bool:
    return store.exists(STATE_KEY)


def load_state(store: Store) -> dict[str, Any] | None:
    """The old ``state.json``, checked for the shape the reader needs; None when absent."""
    try:
        data = store.get_bytes(STATE_KEY)
    except KeyNotFound:
        return None
    try:
        state = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LegacyError(f"{store.uri(STATE_KEY)} is not valid JSON ({exc})") from None
    problem = _shape_problem(state)
    if problem:
        raise LegacyError(f"{store.uri(STATE_KEY)} is not a history state: {problem}")
    return state  # type: ignore[no-any-return]


def _shape_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return f"expected an object, got {type(state).__name__}"
    if state.get("format") != FORMAT:
        return f"format {state.get('format')!r}, expected {FORMAT!r}"
    runs = state.get("runs")
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("run_id"), str) and r.get("collected_at") for r in runs
    ):
        return "'runs' is not a list of runs with run_id and collected_at"
    for what in ("open", "index"):
        entry = state.get(what)
        if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("key"), str)):
            return f"{what!r} is not {{key, rows}}"
    settled = state.get("settled")
    if not isinstance(settled, list) or not all(
        isinstance(p, dict) and isinstance(p.get("key"), str) and isinstance(p.get("seq"), int)
        for p in settled
    ):
        return "'settled' is not a list of {seq, key, ...}"
    if settled and not state.get("index"):
        return "settled files without an index"
    counts = state.get("counts")
    if not isinstance(counts, dict) or not {"vacancies", "open", "closed"} <= set(counts):
        return "'counts' lacks vacancies, open or closed"
    if not isinstance(state.get("skipped", []), list):
        return "'skipped' is not a list"
    return None


def _read(store: Store, key: str, columns: list[str] | None = None) -> pa.Table:
    try:
        if isinstance(store, LocalStore):
            return pq.read_table(store.root / key, columns=columns)
        return pq.read_table(io.BytesIO(store.get_bytes(key)), columns=columns)
    except FileNotFoundError:
        raise LegacyError(f"{store.uri(key)} does not exist (the old state.json names it)") from None
    except KeyNotFound as exc:
        raise LegacyError(f"{exc} (the old state.json names it)") from None
    except (pa.ArrowException, OSError) as exc:
        raise LegacyError(f"{store.uri(key)} is not a readable parquet file ({exc})") from None


def chunks(store: Store, state: Mapping[str, Any]) -> Iterator[tuple[str, int | None, pd.DataFrame]]:
    """The current rows, one old file at a time, with the fold's columns: ("open", None, rows),
    then ("settled", seq, rows) per settled file (only its rows that are still current)."""
    cols = list(STORED_COLUMNS)
    opened = _frame(_read(store, state["open"]["key"]), cols) if state.get("open") else _frame(None, cols)
    open_ids = set(opened["id"])
    yield "open", None, opened
    index = _read(store, state["index"]["key"]) if state.get("index") else None
    for p in state["settled"]:
        assert index is not None
        current = index.filter(pc.equal(index["part"], pa.scalar(p["seq"], pa.int32())))["id"]
        df = _frame(_read(store, p["key"]), cols)
        keep = df["id"].isin(set(current.to_pylist())) & ~df["id"].isin(open_ids)
        yield "settled", int(p["seq"]), df[keep].reset_index(drop=True)


def _frame(table: pa.Table | None, cols: list[str]) -> pd.DataFrame:
    df = table.to_pandas() if table is not None else pd.DataFrame()
    for c in cols:
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype=object)
    df = canonical(df[cols], HISTORY_COLUMNS)
    for c in cols:
        if c not in HISTORY_COLUMNS:  # the fold's own timestamps
            df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[ns, UTC]")
    return df


def read(store: Store, state: Mapping[str, Any]) -> pd.DataFrame:
    """Every current row (history columns), sorted by id."""
    frames = [df[list(HISTORY_COLUMNS)] for _, _, df in chunks(store, state)]
    hist = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(HISTORY_COLUMNS))
    return canonical(hist).sort_values("id", kind="stable").reset_index(drop=True)


def keys(store: Store) -> list[str]:
    """Every object of the old layouts (what a prune removes once the Delta table replaced them)."""
    out = [k for p in PREFIXES for k in store.list(p)]
    out += [k for k in (STATE_KEY, REBUILT_KEY) if store.exists(k)]
    return sorted(out)
