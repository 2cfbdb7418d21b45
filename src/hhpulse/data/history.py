"""The vacancy history: one row per vacancy ever seen, from every raw run.

:func:`build_history` is the pure reference fold over all runs; the store keeps the history
folded run by run in a Delta Lake table (:mod:`hhpulse.data.history_store`: :func:`fold_run`,
:func:`read_history`, :func:`rebuild`, :func:`verify`), which gives exactly the same rows.

A history row holds the latest sighting's fields (all of
:data:`hhpulse.hh.records.RECORD_COLUMNS`) plus ``first_seen``, ``last_seen``,
``times_seen``, ``first_published_at``, ``latest_published_at``, ``initial_created_at``
(when any sighting had it), ``observed_since``, ``closed_at``, ``closed_reason``,
``closed_after``, ``closed_by``, ``last_run_id`` and ``currency_rates_run_id``.

When did a vacancy open? Search items carry ``published_at``, which hh.ru moves forward
on every re-publication (``created_at`` equals it in search results), and only
``GET /vacancies/{id}`` gives ``initial_created_at``. So the first ``published_at`` seen
is the opening time only when the vacancy was **not** there before: ``observed_since`` is
the collection time of the latest earlier run that covered the first sighting's search
completely (NaT when there is none, e.g. for everything the first run sees). A vacancy
first published after ``observed_since`` opened then; one seen by the first run may have
been open, and re-published, for months (its start is left-censored, see
:mod:`hhpulse.model.labels`).

When is a vacancy closed?

* ``archived``: a sighting says ``archived: true`` (hh.ru's own word). It closed after
  the latest sighting that was not archived (``closed_after``; NaT when none was) and
  by the first archived sighting (``closed_by``); ``closed_at`` is the midpoint, or
  ``closed_by`` when ``closed_after`` is unknown.
* ``absent_from_complete_run``: the vacancy was last seen in run *A*, and a later run *B*
  does not contain it although *B* covered *A*'s search completely: *B* finished with
  no stop (no captcha, no exhausted retries), no window of *B* was truncated by the
  2000-result depth cap, *B* searched every query *A* searched (or searched everything,
  the empty query), and *B*'s area is *A*'s area or unrestricted. The close happened in
  ``(closed_after, closed_by]`` = (``last_seen``, *B*'s collection time); ``closed_at``
  is the midpoint, which halves the worst error of either bound.

When is that inference sound? Only when "absent from *B*" means "closed". That holds if
hh.ru's search returns every open vacancy matching the query (true within the depth cap,
which the collector's date splitting respects), and the vacancy still matches the same
query. It is **not** sound when: the employer edited the text so it no longer matches
the query; the vacancy was hidden or moved to another area; *B*'s search window missed
it because it was not re-published for more than the window (30 days, hh.ru's own
listing life); or runs used different search semantics. File imports (``--source
file:``) never cover anything (their queries are unknown), so they never close a
vacancy; the demo and API sources do.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from hhpulse.data.runs import list_runs, quarantined_ids, read_items, run_order_key
from hhpulse.data.store import KeyNotFound, Store
from hhpulse.hh.records import RECORD_COLUMNS, RecordError, parse_datetime, parse_item

log = logging.getLogger(__name__)

TIME_COLUMNS = (
    "published_at",
    "created_at",
    "initial_created_at",
    "collected_at",
    "first_seen",
    "last_seen",
    "first_published_at",
    "latest_published_at",
    "closed_at",
    "closed_after",
    "closed_by",
    "observed_since",
)
HISTORY_COLUMNS: tuple[str, ...] = (
    *RECORD_COLUMNS,
    "first_seen",
    "last_seen",
    "times_seen",
    "first_published_at",
    "latest_published_at",
    "observed_since",
    "closed_at",
    "closed_reason",
    "closed_after",
    "closed_by",
    "last_run_id",
    "currency_rates_run_id",
)
# the stored history keeps three more columns per row, what the fold needs to continue a row
# without reading earlier runs (see hhpulse.data.history_store): the earliest
# initial_created_at of any sighting, the first archived sighting, the latest open one
FOLD_COLUMNS = ("_ica_min", "_archived_at", "_open_until")
STORED_COLUMNS: tuple[str, ...] = (*HISTORY_COLUMNS, *FOLD_COLUMNS)


@dataclass
class RawRun:
    """One finished collection run: its meta.json and its items (quarantined ids excluded)."""

    run_id: str
    meta: Mapping[str, Any]
    items: Sequence[Mapping[str, Any]]
    quarantined: set[str] = field(default_factory=set)

    @property
    def coverage(self) -> Mapping[str, Any]:
        return self.meta.get("coverage") or {}

    def covers(self, earlier: RawRun) -> bool:
        """Whether this run searched completely everything ``earlier`` searched."""
        mine, theirs = self.coverage, earlier.coverage
        if not (self.meta.get("complete") and mine.get("complete")) or mine.get("truncated"):
            return False
        their_queries = set(theirs.get("queries") or [])
        if not their_queries:  # unknown search (file import): nothing can be inferred
            return False
        my_queries = set(mine.get("queries") or [])
        if "" not in my_queries and not their_queries <= my_queries:
            return False
        return mine.get("area") in (None, "") or mine.get("area") == theirs.get("area")


FLOAT_COLUMNS = ("salary_from", "salary_to")
BOOL_COLUMNS = ("salary_gross", "archived")


def empty_history() -> pd.DataFrame:
    """A history without rows, with every column's dtype."""
    return canonical(pd.DataFrame({c: pd.Series(dtype="object") for c in HISTORY_COLUMNS}))


def canonical(df: pd.DataFrame, columns: Sequence[str] = HISTORY_COLUMNS) -> pd.DataFrame:
    """The history's dtypes, whatever the data: UTC nanosecond timestamps, int64 ``times_seen``,
    float64 salaries, and Python objects with None for missing values elsewhere (bools stay
    True/False/None). Applied to every history, built, folded or read from parquet, so two
    histories of the same rows compare equal column for column."""
    df = df.copy()
    for c in columns:
        if c not in df:
            continue
        s = df[c]
        if c in TIME_COLUMNS:
            df[c] = pd.to_datetime(s, utc=True).astype("datetime64[ns, UTC]")
        elif c == "times_seen":
            df[c] = s.astype("int64")
        elif c in FLOAT_COLUMNS:
            df[c] = pd.to_numeric(s).astype("float64")
        else:
            s = s.astype(object)
            df[c] = s.where(s.notna(), None)
    return df


def midpoint(after: pd.Series, by: pd.Series) -> pd.Series:
    """The middle of each interval, to the microsecond (a timestamp's precision in the stored
    Delta table): halves the worst error of either bound."""
    return (after + (by - after) / 2).dt.floor("us")


def record_rows(
    items: Iterable[Mapping[str, Any]], run_time: datetime | None, quarantined: Collection[str]
) -> Iterator[dict[str, Any]]:
    """One flat row (RECORD_COLUMNS) per parseable, not quarantined item of one run."""
    for item in items:
        if str(item.get("id")) in quarantined:
            continue
        try:
            rec = parse_item(item, collected_at=run_time)
        except RecordError:
            continue  # validation quarantines these; never let one row break history
        # VacancyRecord.to_row() without dataclasses.asdict's deep copies, which cost
        # most of a 45-run history: the fields are scalars, timestamps and a tuple
        row = {c: getattr(rec, c) for c in RECORD_COLUMNS}
        row["professional_roles"] = "|".join(rec.professional_roles)
        yield row


def build_history(runs: Sequence[RawRun]) -> pd.DataFrame:
    """Fold runs into one row per vacancy. Pure: reads and writes nothing.

    Runs are folded in the order of their ``collected_at`` (then run id): two runs that
    start within the same second have ids that do not sort by time, and the demo's
    simulated clock is not the wall clock.
    """
    timed = sorted(
        ((parse_datetime(r.meta.get("collected_at"), "collected_at"), r) for r in runs),
        key=lambda tr: run_order_key(tr[1].meta, tr[1].run_id),
    )
    runs = [r for _, r in timed]
    rows: list[dict[str, Any]] = []
    for order, (run_time, run) in enumerate(timed):
        for row in record_rows(run.items, run_time, run.quarantined):
            row["_order"] = order
            rows.append(row)
    if not rows:
        return empty_history()
    df = pd.DataFrame(rows)
    for c in ("published_at", "created_at", "initial_created_at", "collected_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    run_ids = [r.run_id for r in runs]
    df = df.sort_values(["id", "_order", "collected_at"], kind="stable")
    g = df.groupby("id", sort=False)
    agg = pd.DataFrame(
        {
            "first_seen": g["collected_at"].min(),
            "last_seen": g["collected_at"].max(),
            "times_seen": g.size(),
            "first_published_at": g["published_at"].min(),
            "latest_published_at": g["published_at"].max(),
            "initial_created_at_any": g["initial_created_at"].min(),
            "_last_order": g["_order"].max(),
            "_first_order": g["_order"].min(),
        }
    )
    is_archived = df["archived"].eq(True)
    archived_at = df[is_archived].groupby("id")["collected_at"].min()
    open_until = df[~is_archived].groupby("id")["collected_at"].max()
    latest = g.tail(1).set_index("id")
    hist = latest.join(agg)
    hist["initial_created_at"] = hist["initial_created_at"].fillna(hist.pop("initial_created_at_any"))
    hist["last_run_id"] = [run_ids[i] for i in hist["_last_order"]]
    hist["currency_rates_run_id"] = hist["last_run_id"]

    # the first later run that covered the last-seeing run's search completely
    next_cover: dict[int, int] = {}
    for i, run in enumerate(runs):
        for j in range(i + 1, len(runs)):
            if runs[j].covers(run):
                next_cover[i] = j
                break
    # the latest earlier run that covered the first-seeing run's search completely: the
    # vacancy was not open (in that search) then, so it opened after that run
    prev_cover: dict[int, pd.Timestamp] = {}
    for i, run in enumerate(runs):
        for j in range(i - 1, -1, -1):
            if runs[j].covers(run):
                prev_cover[i] = pd.Timestamp(timed[j][0])
                break
    hist["observed_since"] = pd.to_datetime(hist["_first_order"].map(prev_cover), utc=True)
    cover_time = {i: pd.Timestamp(timed[j][0]) for i, j in next_cover.items()}
    closed_by = hist["_last_order"].map(cover_time)
    closed_by = pd.to_datetime(closed_by, utc=True)
    hist["closed_after"] = hist["last_seen"].where(closed_by.notna())
    hist["closed_by"] = closed_by
    hist["closed_at"] = midpoint(hist["last_seen"], closed_by)
    hist["closed_reason"] = pd.Series("absent_from_complete_run", index=hist.index).where(closed_by.notna())
    arch = hist.index.isin(archived_at.index)
    arch_by = pd.to_datetime(archived_at.reindex(hist.index), utc=True)
    arch_after = pd.to_datetime(open_until.reindex(hist.index), utc=True)
    arch_after = arch_after.where(arch_after < arch_by)  # open sightings after the archived one: no bound
    arch_at = midpoint(arch_after, arch_by).fillna(arch_by)
    hist["closed_at"] = hist["closed_at"].where(~arch, arch_at)
    hist["closed_reason"] = hist["closed_reason"].where(~arch, "archived")
    hist["closed_after"] = hist["closed_after"].where(~arch, arch_after)
    hist["closed_by"] = hist["closed_by"].where(~arch, arch_by)
    hist = hist.reset_index()
    for c in TIME_COLUMNS:
        hist[c] = pd.to_datetime(hist[c], utc=True)
    hist = canonical(hist[list(HISTORY_COLUMNS)])
    return hist.sort_values("id", kind="stable").reset_index(drop=True)


def load_raw_runs(store: Store) -> list[RawRun]:
    """Every finished run in the store. Runs without meta.json (killed midway) are skipped."""
    folders = sorted({k.split("/")[1] for k in store.list("raw/") if k.count("/") >= 2})
    finished = set(list_runs(store))
    for run_id in sorted(set(folders) - finished):
        log.warning("skipping run %s: no meta.json (it did not finish)", run_id)
    runs = []
    for run_id in sorted(finished):
        try:
            items = read_items(store, run_id)
        except KeyNotFound:
            log.warning("skipping run %s: meta.json without vacancies.jsonl.gz", run_id)
            continue
        runs.append(
            RawRun(run_id, store.get_json(f"raw/{run_id}/meta.json"), items, quarantined_ids(store, run_id))
        )
    return runs


def summarize(hist: pd.DataFrame) -> str:
    closed = hist["closed_reason"].value_counts().to_dict() if len(hist) else {}
    open_ = int(hist["closed_at"].isna().sum()) if len(hist) else 0
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(closed.items())) or "none"
    return f"history: {len(hist)} vacancies, {open_} open, closed by reason: {parts}"
