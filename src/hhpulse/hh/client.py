"""The hh.ru API client: ``GET /vacancies`` (with depth-cap splitting) and ``GET /dictionaries``.

Rules it follows (see ``../shared/data/hh/api_samples/API_NOTES.md``):

* every request carries ``HH-User-Agent: hhpulse/<version> (<contact>)``; hh.ru answers
  400 ``bad_user_agent`` without one;
* an OAuth token from ``HH_ACCESS_TOKEN`` is sent as ``Authorization: Bearer`` (never logged);
* requests are paced to ``rps`` per second;
* 429, 5xx and connection errors are retried with exponential backoff and full jitter,
  honouring ``Retry-After``; after ``max_retries`` the client raises
  :class:`RetriesExhausted`;
* ``403 captcha_required`` raises :class:`CaptchaRequired` at once (retrying would not help);
* a search reaches at most 2000 results (``(page + 1) * per_page <= 2000``): when ``found``
  is larger, :meth:`HHClient.search_all` splits the ``date_from``/``date_to`` window in
  two, recursively, until every slice fits.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
import requests.adapters

from hhpulse import __version__
from hhpulse.config import DEFAULT_API_URL

log = logging.getLogger(__name__)

DEFAULT_CONTACT = "hhpulse@example.com"
TOKEN_ENV = "HH_ACCESS_TOKEN"
CONTACT_ENV = "HHPULSE_CONTACT"
MAX_DEPTH = 2000
MAX_PER_PAGE = 100


class HHError(RuntimeError):
    """The API answered with an error we cannot retry."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class CaptchaRequired(HHError):
    """hh.ru wants a captcha solved (anonymous heavy use): stop and keep what we have."""


class RetriesExhausted(HHError):
    """A request kept failing with 429/5xx/connection errors."""


def user_agent(contact: str | None = None) -> str:
    return f"hhpulse/{__version__} ({contact or os.environ.get(CONTACT_ENV) or DEFAULT_CONTACT})"


def _error_types(body: Any) -> list[str]:
    if isinstance(body, dict):
        return [str(e.get("value") or e.get("type")) for e in body.get("errors", []) if isinstance(e, dict)]
    return []


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    pages: int = 0


@dataclass
class HHClient:
    """A paced, retrying client for the hh.ru API.

    Args:
        api_url: the API root (``https://api.hh.ru``, or an emulator's URL).
        contact: the e-mail or URL in the user agent (default ``$HHPULSE_CONTACT``).
        token: an OAuth token; default ``$HH_ACCESS_TOKEN``.
        rps: requests per second (0 = no pacing).
        max_retries: retries of one request on 429/5xx/connection errors.
        backoff_base: first backoff in seconds; doubles each retry, with full jitter.
        backoff_max: the longest single wait, ``Retry-After`` included.
        timeout: per-request timeout in seconds.
    """

    api_url: str = DEFAULT_API_URL
    contact: str | None = None
    token: str | None = None
    rps: float = 2.0
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        self._session = requests.Session()
        self._session.headers.update(
            {"HH-User-Agent": user_agent(self.contact), "Accept": "application/json"}
        )
        if self.token:
            self._session.headers["Authorization"] = f"Bearer {self.token}"
        self._lock = threading.Lock()
        self._next_slot = 0.0

    def close(self) -> None:
        self._session.close()

    def mount(self, adapter: requests.adapters.BaseAdapter) -> None:
        """Send this client's requests through ``adapter`` (e.g. the in-process emulator's)."""
        self._session.mount(f"{self.api_url}/", adapter)

    # -- transport -------------------------------------------------------------------------
    def _pace(self) -> None:
        if self.rps <= 0:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self.rps
        if wait > 0:
            self.sleep(wait)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = random.uniform(0, self.backoff_base * (2**attempt))  # full jitter
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                try:
                    when = parsedate_to_datetime(retry_after)
                    delay = max(delay, (when - datetime.now(timezone.utc)).total_seconds())
                except (TypeError, ValueError):
                    pass
        return min(max(delay, 0.0), self.backoff_max)

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` and return the JSON body, retrying what can be retried."""
        url = f"{self.api_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self._pace()
            self.stats.requests += 1
            try:
                resp = self._session.get(url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                last = f"connection error: {type(exc).__name__}: {exc}"
                retry_after = None
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise HHError(
                            f"GET {path}: the answer is not JSON: {exc}", resp.status_code
                        ) from None
                body = _json_or_text(resp)
                kinds = _error_types(body)
                if resp.status_code == 403 and "captcha_required" in kinds:
                    raise CaptchaRequired(
                        "hh.ru asks for a captcha (403 captcha_required): anonymous requests are limited. "
                        f"Set {TOKEN_ENV} to an application token, or lower --rps.",
                        403,
                        body,
                    )
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code} {','.join(kinds)}".strip()
                    retry_after = resp.headers.get("Retry-After")
                else:
                    hint = ""
                    if "unset" in kinds or "blacklisted" in kinds:
                        hint = " (hh.ru rejected the user agent: set --contact or $HHPULSE_CONTACT)"
                    raise HHError(
                        f"GET {path} failed: HTTP {resp.status_code} {body}{hint}", resp.status_code, body
                    )
            if attempt < self.max_retries:
                delay = self._backoff(attempt, retry_after)
                log.warning(
                    "GET %s: %s; retry %d/%d in %.1fs", path, last, attempt + 1, self.max_retries, delay
                )
                self.sleep(delay)
        raise RetriesExhausted(f"GET {path} failed after {self.max_retries} retries: {last}")

    # -- endpoints -------------------------------------------------------------------------
    def dictionaries(self) -> dict[str, Any]:
        return self.get("/dictionaries")

    def currency_rates(self) -> dict[str, float]:
        """Currency code -> units per 1 RUR, from ``/dictionaries``."""
        return {c["code"]: float(c["rate"]) for c in self.dictionaries().get("currency", []) if c.get("rate")}

    def search_page(
        self,
        text: str,
        *,
        area: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        page: int = 0,
        per_page: int = MAX_PER_PAGE,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"per_page": per_page, "page": page, "order_by": "publication_time"}
        if text:
            params["text"] = text
        if area:
            params["area"] = area
        if date_from:
            params["date_from"] = _iso(date_from)
        if date_to:
            params["date_to"] = _iso(date_to)
        body = self.get("/vacancies", params)
        self.stats.pages += 1
        return body

    def search_all(
        self,
        text: str,
        *,
        area: str | None = None,
        date_from: datetime,
        date_to: datetime,
        per_page: int = MAX_PER_PAGE,
        progress: PageProgress | None = None,
        truncated: list[dict[str, Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a search, splitting the date window past the depth cap.

        ``progress`` (e.g. a tqdm bar) gets ``total`` raised as pages are discovered and
        ``update(1)`` per page fetched. Windows that cannot be split further (one
        second) but still exceed the cap are appended to ``truncated``.
        """
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        reachable = (MAX_DEPTH // per_page) * per_page
        stack = [(date_from, date_to)]
        while stack:
            lo, hi = stack.pop()
            first = self.search_page(text, area=area, date_from=lo, date_to=hi, per_page=per_page)
            found = int(first.get("found") or 0)
            pages = int(first.get("pages") or 0)
            split = found > reachable and hi - lo > timedelta(seconds=1)
            if progress is not None:
                progress.total = (progress.total or 0) + (1 if split else max(pages, 1))
                progress.update(1)
            if split:
                mid = (lo + (hi - lo) / 2).replace(microsecond=0)
                log.info(
                    "query %r: %d found in %s..%s, over the %d reachable: splitting",
                    text,
                    found,
                    _iso(lo),
                    _iso(hi),
                    reachable,
                )
                stack.append((lo, mid))
                stack.append((mid, hi))  # popped first: newest slice first
                continue
            if found > reachable:
                log.warning(
                    "query %r: %d vacancies within one second at %s; only %d reachable",
                    text,
                    found,
                    _iso(lo),
                    reachable,
                )
                if truncated is not None:
                    truncated.append(
                        {
                            "text": text,
                            "area": area,
                            "date_from": _iso(lo),
                            "date_to": _iso(hi),
                            "found": found,
                        }
                    )
            yield from first.get("items") or []
            for page in range(1, pages):
                body = self.search_page(
                    text, area=area, date_from=lo, date_to=hi, page=page, per_page=per_page
                )
                if progress is not None:
                    progress.update(1)
                yield from body.get("items") or []


class PageProgress(Protocol):
    total: float | None

    def update(self, n: float = 1) -> object: ...


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _json_or_text(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:500]
