"""Where vacancies come from: the hh.ru API, a file dump, or the demo emulator.

All sources offer the same interface (:class:`Source`), so the rest of hhpulse does not
care where vacancies came from. :func:`make_source` turns a ``--source`` string into one.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hhpulse.config import DEFAULT_API_URL
from hhpulse.data.leases import Lease, claim, claim_state, complete, release
from hhpulse.data.runs import CollectResult, pruned_runs
from hhpulse.data.store import GZIP_MAGIC, Store, gunzipped
from hhpulse.hh.client import HHClient, PageProgress
from hhpulse.hh.records import parse_datetime

log = logging.getLogger(__name__)

DEFAULT_QUERIES: tuple[str, ...] = ("Python", "Data Scientist", "Аналитик данных")
DEFAULT_AREA = "113"  # Russia
SEARCH_WINDOW_DAYS = 31  # hh.ru lists vacancies (re)published within the last 30 days
DEMO_START_DAY = 60
DEMO_STEP_DAYS = 1  # one simulated day per run, like the daily schedule (cron 0 0 3 * * *)
# how the demo source reaches its emulator: a local HTTP server, or in this process (the same
# answers through a requests transport adapter, without sockets: for long replays)
DEMO_TRANSPORTS = ("http", "in-process")

# Approximate rates (units per 1 RUR) for file imports that come without /dictionaries.
# The meta of such a run records that these were used; pass --rates for real ones.
FALLBACK_RATES: dict[str, float] = {
    "RUR": 1.0,
    "USD": 0.0108,
    "EUR": 0.0099,
    "KZT": 4.8,
    "BYR": 0.035,
    "UZS": 136.0,
    "KGS": 0.95,
    "AZN": 0.0183,
    "GEL": 0.03,
    "UAH": 0.45,
}


class SourceError(ValueError):
    """A source cannot be built or read (bad spec, missing file, bad JSON)."""


@dataclass
class SourceStats:
    requests: int = 0
    pages: int = 0
    retries: int = 0


class Source(ABC):
    """A provider of raw hh.ru search items for one collection run."""

    kind: str = "?"
    synthetic: bool = False

    def prepare(self, store: Store) -> None:  # noqa: B027 - optional hook
        """Look at the store before fetching (the demo picks its market day here)."""

    def finish(self, store: Store, result: CollectResult | None) -> None:  # noqa: B027 - optional hook
        """Called once the run is stored (``result``), or failed (None): release what prepare took."""

    @abstractmethod
    def fetch(self, progress: PageProgress | None = None) -> Iterator[dict[str, Any]]:
        """Yield raw items. May raise CaptchaRequired/RetriesExhausted/HHError midway."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The parameters recorded in meta.json."""

    def currency_rates(self) -> tuple[dict[str, float], str]:
        """(code -> units per 1 RUR, where the rates came from)."""
        return dict(FALLBACK_RATES), "builtin-approximate"

    @property
    def collected_at(self) -> datetime | None:
        """The collection time to stamp on items that have none."""
        return None

    def coverage(self) -> dict[str, Any]:
        """What the run's search covered; ``complete`` allows close inference in history."""
        return {"queries": [], "area": None, "complete": False, "truncated": []}

    def stats(self) -> SourceStats:
        return SourceStats()

    def rejected(self) -> list[dict[str, Any]]:
        """Input that could not be read as items (a dump's broken lines), for quarantine."""
        return []


@dataclass
class ApiSource(Source):
    """Searches the hh.ru API (or any server that speaks it, like the emulator)."""

    api_url: str = DEFAULT_API_URL
    queries: Sequence[str] = DEFAULT_QUERIES
    area: str | None = DEFAULT_AREA
    contact: str | None = None
    rps: float = 2.0
    max_retries: int = 6
    backoff_base: float = 1.0
    per_page: int = 100
    window_days: float = SEARCH_WINDOW_DAYS
    now: datetime | None = None
    kind: str = "api"
    _client: HHClient | None = field(default=None, init=False, repr=False)
    _truncated: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _finished: bool = field(default=False, init=False, repr=False)

    def client(self) -> HHClient:
        if self._client is None:
            self._client = HHClient(
                self.api_url,
                contact=self.contact,
                rps=self.rps,
                max_retries=self.max_retries,
                backoff_base=self.backoff_base,
            )
        return self._client

    @property
    def collected_at(self) -> datetime:
        if self.now is None:
            self.now = datetime.now(timezone.utc).replace(microsecond=0)
        return self.now

    def currency_rates(self) -> tuple[dict[str, float], str]:
        return self.client().currency_rates(), f"{self.api_url}/dictionaries"

    def fetch(self, progress: PageProgress | None = None) -> Iterator[dict[str, Any]]:
        end = self.collected_at
        start = end - timedelta(days=self.window_days)
        for query in self.queries or [""]:
            log.info(
                "searching %r in area %s (%s .. %s)", query, self.area or "any", start.date(), end.date()
            )
            yield from self.client().search_all(
                query,
                area=self.area,
                date_from=start,
                date_to=end,
                per_page=self.per_page,
                progress=progress,
                truncated=self._truncated,
            )
        self._finished = True

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "api_url": self.api_url,
            "queries": list(self.queries),
            "area": self.area,
            "per_page": self.per_page,
            "rps": self.rps,
            "window_days": self.window_days,
        }

    def coverage(self) -> dict[str, Any]:
        return {
            "queries": sorted(set(self.queries or [""])),
            "area": self.area,
            "complete": self._finished and not self._truncated,
            "truncated": list(self._truncated),
        }

    def stats(self) -> SourceStats:
        if self._client is None:
            return SourceStats()
        s = self._client.stats
        return SourceStats(requests=s.requests, pages=s.pages, retries=s.retries)


# each demo run claims its simulated day (a lease, made with If-None-Match) so that two runs started
# at once never collect the same day; a killed run's claim expires after this long
DEMO_DAY_CLAIM = "claims/demo-day/{day}.json"
DEMO_DAY_LEASE_S = 6 * 3600.0


@dataclass
class DemoSource(ApiSource):
    """The SYNTHETIC market behind the bundled emulator, collected with the real client.

    Each complete demo run already in the store moves the simulated day forward by
    ``step_days`` (one day by default, the cadence of the daily schedule), so consecutive
    runs see vacancies open, re-publish and close. A longer step (``make_source(...,
    demo_step_days=7)``) makes runs cheaper but closes coarser: a close seen between two
    runs is only known to within the step.

    ``transport="in-process"`` answers the client from the emulator in this process (a
    ``requests`` transport adapter) instead of a local HTTP server: the same requests, the
    same answers and items, without sockets or server threads.
    """

    day: int | None = None
    step_days: int = DEMO_STEP_DAYS
    daily_new: int = 150
    seed: int = 7
    queries: Sequence[str] = ("",)
    area: str | None = None
    rps: float = 0.0
    transport: str = "http"
    kind: str = "demo"
    synthetic: bool = True
    _lease: Lease | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.transport not in DEMO_TRANSPORTS:
            raise SourceError(
                f"demo transport must be one of {', '.join(DEMO_TRANSPORTS)}, got {self.transport!r}"
            )

    def prepare(self, store: Store) -> None:
        """Pick the simulated day (unless one was given) and claim it.

        The day is ``DEMO_START_DAY + step_days * <complete demo runs in the store, or pruned
        from it>``, moved on by ``step_days`` while it is taken: collected by a complete run, or
        claimed by a run still collecting it (``claims/demo-day/<day>.json``, made with ``If-None-Match``: of two runs
        started at once, exactly one gets a day). A given day is claimed too, but collected even
        when another run holds it (with a warning).
        """

        earlier, collected = 0, set()
        for key in store.list("raw/"):
            if key.endswith("/meta.json"):
                meta = store.get_json(key)
                src = meta.get("source", {})
                if src.get("kind") == "demo" and meta.get("complete"):
                    earlier += 1
                    collected.add(src.get("day"))
        for pruned in pruned_runs(store):  # complete demo runs removed by `hhpulse store prune`
            if pruned.get("complete_demo_run"):
                earlier += 1
                collected.add(pruned.get("demo_day"))
        if self.day is not None:
            key = DEMO_DAY_CLAIM.format(day=self.day)
            self._lease = claim(store, key, ttl_s=DEMO_DAY_LEASE_S, info={"day": self.day})
            if self._lease is None and claim_state(store, key) == "held":
                log.warning(
                    "demo day %d is being collected by another run too (%s)", self.day, store.uri(key)
                )
            return
        day = DEMO_START_DAY + self.step_days * earlier
        while True:
            if day not in collected:
                info = {"day": day}
                self._lease = claim(store, DEMO_DAY_CLAIM.format(day=day), ttl_s=DEMO_DAY_LEASE_S, info=info)
                if self._lease is not None:
                    break
            log.info("demo day %d is taken (collected, or claimed by a run in progress)", day)
            day += self.step_days
        self.day = day
        log.info("demo market: simulated day %d (%d earlier demo runs in the store)", self.day, earlier)

    def finish(self, store: Store, result: CollectResult | None) -> None:
        """Mark the day's claim done when the run completed, else give it up (the day may be redone)."""

        lease, self._lease = self._lease, None
        if lease is None:
            return
        if result is not None and result.complete:
            complete(store, lease, {"day": self.day, "run_id": result.run_id})
        else:
            release(store, lease)

    @property
    def collected_at(self) -> datetime:
        from hhpulse.hh.market import Market

        return Market.clock(self.day if self.day is not None else DEMO_START_DAY)

    def fetch(self, progress: PageProgress | None = None) -> Iterator[dict[str, Any]]:
        from hhpulse.hh.emulator import Emulator, InProcessEmulator
        from hhpulse.hh.market import Market

        day = self.day if self.day is not None else DEMO_START_DAY
        self.day = day
        market = Market(seed=self.seed, daily_new=self.daily_new)
        emulator = (
            Emulator(market, day=day) if self.transport == "http" else InProcessEmulator(market, day=day)
        )
        with emulator as emu:
            self.api_url = emu.url
            self._client = None
            if isinstance(emu, InProcessEmulator):
                self.client().mount(emu.adapter)
            log.info(
                "demo: SYNTHETIC hh.ru emulator at %s (%s), day %d (%s)",
                emu.url,
                self.transport,
                day,
                self.collected_at.date(),
            )
            self._rates = self.client().currency_rates()
            yield from super().fetch(progress)

    def currency_rates(self) -> tuple[dict[str, float], str]:
        rates = getattr(self, "_rates", None)
        if rates is None:
            from hhpulse.hh.market import CURRENCY_RATES

            rates = dict(CURRENCY_RATES)
        return rates, "emulator /dictionaries (synthetic)"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            api_url="emulator",
            transport=self.transport,
            day=self.day,
            daily_new=self.daily_new,
            seed=self.seed,
            synthetic=True,
        )
        return d


@dataclass
class FileSource(Source):
    """Imports a dump: JSON lines (optionally gzipped) of search items, saved ``/vacancies``
    pages (``{"items": [...]}``, one per line or one per file), or a JSON list of items.

    An item's own ``collected_at`` wins over ``collected_at_default``. The path ``-`` reads
    stdin. A line that is not JSON, or a value that is not an object, does not stop the
    import: it is kept aside (:meth:`rejected`) for the run's quarantine.
    """

    path: Path = Path()
    collected_at_default: datetime | None = None
    rates_path: Path | None = None
    kind: str = "file"
    _count: int = field(default=0, init=False, repr=False)
    _rejected: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.is_stdin and not self.path.is_file():
            raise SourceError(f"file source {str(self.path)!r} does not exist")

    @property
    def is_stdin(self) -> bool:
        return str(self.path) == "-"

    def rejected(self) -> list[dict[str, Any]]:
        return list(self._rejected)

    def _reject(self, line: int, reason: str, error: str, text: str) -> None:
        if len(self._rejected) < 5:
            log.warning("%s:%d: %s; kept aside for quarantine", self.path, line, error)
        self._rejected.append({"line": line, "reason": reason, "error": error, "text": text[:2000]})

    @property
    def collected_at(self) -> datetime | None:
        return self.collected_at_default

    def _open(self):  # type: ignore[no-untyped-def]
        if self.is_stdin:
            return io.TextIOWrapper(gunzipped(sys.stdin.buffer), encoding="utf-8", errors="replace")
        with open(self.path, "rb") as fh:
            gz = fh.read(2) == GZIP_MAGIC
        if gz:
            return gzip.open(self.path, "rt", encoding="utf-8", errors="replace")
        return open(self.path, encoding="utf-8", errors="replace")

    def fetch(self, progress: PageProgress | None = None) -> Iterator[dict[str, Any]]:
        with self._open() as fh:
            head = fh.read(1)
            while head and head.isspace():
                head = fh.read(1)
            if head == "[":  # one JSON document: a list of items
                yield from self._items_of(_loads(head + fh.read(), self.path, 1), 1)
                return
            if head == "{":
                rest = fh.read()
                text = head + rest
                try:  # a single saved page or item
                    yield from self._items_of(json.loads(text), 1)
                    return
                except json.JSONDecodeError:
                    pass
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            doc = json.loads(line)
                        except json.JSONDecodeError as exc:
                            self._reject(
                                n, "bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}", line
                            )
                            continue
                        yield from self._items_of(doc, n)
                        if progress is not None and n % 1000 == 0:
                            progress.update(1000)

    def _items_of(self, doc: Any, line: int) -> Iterator[dict[str, Any]]:
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            docs = doc["items"]
        elif isinstance(doc, list):
            docs = doc
        else:
            docs = [doc]
        for item in docs:
            if not isinstance(item, dict):
                error = f"expected a vacancy object, got {type(item).__name__}"
                self._reject(line, "not_an_object", error, json.dumps(item, ensure_ascii=False))
                continue
            self._count += 1
            yield item

    def currency_rates(self) -> tuple[dict[str, float], str]:
        if self.rates_path is None:
            log.warning(
                "file import without --rates: converting currencies with built-in approximate rates "
                "(pass --rates dictionaries.json from GET /dictionaries for real ones)"
            )
            return dict(FALLBACK_RATES), "builtin-approximate"
        try:
            doc = json.loads(Path(self.rates_path).read_text(encoding="utf-8"))
            rates = {c["code"]: float(c["rate"]) for c in doc["currency"] if c.get("rate")}
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"cannot read currency rates from {self.rates_path}: {exc}") from exc
        return rates, str(self.rates_path)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": "stdin" if self.is_stdin else str(self.path),
            "rates": str(self.rates_path) if self.rates_path else None,
        }


def _loads(line: str, path: Path, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}:{n}: not valid JSON: {exc.msg} at column {exc.colno}") from None


def make_source(
    spec: str,
    *,
    api_url: str = DEFAULT_API_URL,
    queries: Sequence[str] | None = None,
    area: str | None = None,
    contact: str | None = None,
    rps: float | None = None,
    max_retries: int = 6,
    collected_at: datetime | str | None = None,
    rates: str | Path | None = None,
    demo_size: int = 150,
    demo_day: int | None = None,
    demo_step_days: int = DEMO_STEP_DAYS,
    demo_transport: str = "http",
) -> Source:
    """Build a source from a ``--source`` value: ``api``, ``demo`` or ``file:PATH``."""
    when = parse_datetime(collected_at, "collected_at") if collected_at else None
    if spec == "api":
        return ApiSource(
            api_url=api_url,
            queries=tuple(queries) if queries else DEFAULT_QUERIES,
            area=DEFAULT_AREA if area is None else (area or None),
            contact=contact,
            rps=2.0 if rps is None else rps,
            max_retries=max_retries,
            now=when,
        )
    if spec == "demo":
        if demo_step_days < 1:
            raise SourceError(f"demo_step_days must be at least 1, got {demo_step_days}")
        return DemoSource(
            queries=tuple(queries) if queries else ("",),
            area=area or None,
            contact=contact,
            rps=0.0 if rps is None else rps,
            max_retries=max_retries,
            daily_new=demo_size,
            day=demo_day,
            step_days=demo_step_days,
            transport=demo_transport,
        )
    if spec.startswith("file:"):
        return FileSource(
            path=Path(spec[len("file:") :]).expanduser(),
            collected_at_default=when,
            rates_path=Path(rates) if rates else None,
        )
    raise SourceError(f"unknown source {spec!r}: use api, demo or file:PATH")
