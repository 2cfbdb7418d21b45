"""A local hh.ru API emulator over the SYNTHETIC market (:mod:`hhpulse.hh.market`).

It follows the real API's rules, so the real client can be tested and demoed offline:

* ``GET /vacancies``: ``text`` (all words must match; matches are wrapped in
  ``<highlighttext>`` in the snippet), ``area``, ``date_from``/``date_to`` on
  ``published_at``, ``per_page`` (at most 100) and ``page``; the depth cap
  (``(page + 1) * per_page <= 2000``) with hh.ru's error body; ``found`` is the true
  total while ``pages`` is capped; results are newest first.
* ``GET /vacancies/{id}``: the full object, with ``initial_created_at`` and
  ``archived: true`` for closed vacancies.
* ``GET /dictionaries``: currency rates in the real shape.
* ``400 bad_user_agent`` without an application user agent.
* Injectable faults: scripted 429 (with ``Retry-After``)/503 answers, ``403
  captcha_required`` after N anonymous requests, and shifting listings (new vacancies
  pushing the list down between pages, so pages overlap).

Run it by hand with ``hhpulse emulator --port 8765``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from hhpulse.hh.market import CURRENCY_RATES, SYNTHETIC_TAG, Market
from hhpulse.hh.records import RecordError, parse_datetime

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100
MAX_DEPTH = 2000
GENERIC_AGENTS = ("python-urllib", "python-requests", "curl/", "wget/", "go-http-client", "java/")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Faults:
    """Faults to inject into ``/vacancies`` answers.

    Args:
        script: statuses to answer, one per ``/vacancies`` request, before serving
            normally (e.g. ``[429, 503, 503]``). ``0`` means "serve this one normally".
        every: additionally answer ``every_status`` to every Nth request (0 = off).
        retry_after: the ``Retry-After`` seconds sent with 429.
        captcha_after: answer ``403 captcha_required`` once this many anonymous requests
            were served (0 = off). Requests with ``Authorization`` are exempt.
        shift: how many new vacancies appear at the top between two page requests, so
            that pages overlap and ids repeat (0 = off).
    """

    script: list[int] = field(default_factory=list)
    every: int = 0
    every_status: int = 503
    retry_after: float = 0
    captcha_after: int = 0
    shift: int = 0


class EmulatorState:
    """What the server serves: a market day plus faults and request counters."""

    def __init__(self, market: Market, day: int, faults: Faults | None = None) -> None:
        self.market = market
        self.day = day
        self.faults = faults or Faults()
        self._script = deque(self.faults.script)
        self.lock = threading.Lock()
        self.requests = 0
        self.vacancy_requests = 0
        self.anonymous = 0
        self._items_day: int | None = None
        self._items: list[dict[str, Any]] = []
        self._published: list[datetime] = []

    def items(self) -> tuple[list[dict[str, Any]], list[datetime]]:
        with self.lock:
            if self._items_day != self.day:
                self._items = self.market.items(self.day)
                self._published = [parse_datetime(i["published_at"]) for i in self._items]  # type: ignore[misc]
                self._items_day = self.day
            return self._items, self._published

    def next_fault(self) -> int:
        with self.lock:
            self.vacancy_requests += 1
            if self._script:
                return self._script.popleft()
            if self.faults.every and self.vacancy_requests % self.faults.every == 0:
                return self.faults.every_status
            return 0


def _error(kind: str, value: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"type": kind}
    if value is not None:
        err["value"] = value
    err.update(extra)
    return {"errors": [err], "request_id": uuid.uuid4().hex}


def _bad_argument(name: str, description: str) -> dict[str, Any]:
    body = _error("bad_argument", name)
    body.update(
        description=description, bad_argument=name, bad_arguments=[{"name": name, "description": description}]
    )
    return body


def _highlight(text: str | None, words: Iterable[str]) -> str | None:
    if not text:
        return text
    wanted = {w.lower() for w in words}
    if not wanted:
        return text
    return _WORD.sub(
        lambda m: (
            f"<highlighttext>{m.group(0)}</highlighttext>" if m.group(0).lower() in wanted else m.group(0)
        ),
        text,
    )


def _matches(item: dict[str, Any], words: list[str]) -> bool:
    if not words:
        return True
    snippet = item.get("snippet") or {}
    hay = " ".join(
        filter(None, [item.get("name"), snippet.get("responsibility"), snippet.get("requirement")])
    )
    tokens = {t.lower() for t in _WORD.findall(hay)}
    return all(w in tokens for w in words)


class _Handler(BaseHTTPRequestHandler):
    server_version = "hh-emulator/1.0"
    protocol_version = "HTTP/1.1"
    state: EmulatorState  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("emulator: " + format, *args)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Synthetic-Data", "true")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        state = self.state
        with state.lock:
            state.requests += 1
        url = urlparse(self.path)
        agent = self.headers.get("HH-User-Agent") or self.headers.get("User-Agent") or ""
        if not agent.strip():
            return self._send(400, _error("bad_user_agent", "unset"))
        if not self.headers.get("HH-User-Agent") and agent.lower().startswith(GENERIC_AGENTS):
            return self._send(400, _error("bad_user_agent", "blacklisted"))
        if url.path == "/dictionaries":
            return self._send(200, _dictionaries())
        if url.path == "/vacancies":
            return self._vacancies(parse_qs(url.query))
        m = re.fullmatch(r"/vacancies/(\d+)", url.path)
        if m:
            vac = state.market.vacancy(m.group(1))
            if vac is None or vac.created_at > state.market.clock(state.day):
                return self._send(404, _error("not_found"))
            return self._send(200, vac.to_full(state.market.clock(state.day)))
        return self._send(404, _error("not_found"))

    def _vacancies(self, query: dict[str, list[str]]) -> None:
        state = self.state
        fault = state.next_fault()
        if fault == 429:
            return self._send(
                429, _error("too_many_requests"), {"Retry-After": f"{state.faults.retry_after:g}"}
            )
        if fault:
            return self._send(fault, _error("service_unavailable" if fault == 503 else "server_error"))
        if state.faults.captcha_after and not self.headers.get("Authorization"):
            with state.lock:
                state.anonymous += 1
                over = state.anonymous > state.faults.captcha_after
            if over:
                return self._send(
                    403,
                    _error(
                        "captcha_required",
                        "captcha_required",
                        captcha_url="https://hh.ru/account/captcha?state=emulator",
                        fallback_url="https://hh.ru/",
                    ),
                )

        def arg(name: str, default: str | None = None) -> str | None:
            values = query.get(name)
            return values[-1] if values else default

        try:
            per_page = int(arg("per_page", "20") or 20)
            page = int(arg("page", "0") or 0)
        except ValueError:
            return self._send(400, _bad_argument("per_page", "per_page and page must be integers"))
        if per_page < 1 or per_page > MAX_PER_PAGE:
            return self._send(
                400, _bad_argument("per_page", f"per_page must be between 1 and {MAX_PER_PAGE}")
            )
        if page < 0 or (page + 1) * per_page > MAX_DEPTH:
            return self._send(
                400, _bad_argument("page", f"the depth of results is limited to {MAX_DEPTH}: page*per_page")
            )
        try:
            date_from = parse_datetime(arg("date_from"), "date_from")
            date_to = parse_datetime(arg("date_to"), "date_to")
        except RecordError as exc:
            name = str(exc).split(":", 1)[0]
            return self._send(400, _bad_argument(name, str(exc)))
        words = [w.lower() for w in _WORD.findall(arg("text", "") or "")]
        area = arg("area")
        items, published = state.items()
        hits = [
            item
            for item, pub in zip(items, published, strict=True)
            if (date_from is None or pub >= date_from)
            and (date_to is None or pub <= date_to)
            and (area in (None, "", "113") or item["area"]["id"] == area)
            and _matches(item, words)
        ]
        found = len(hits)
        start = max(0, page * per_page - state.faults.shift * page)
        page_items = []
        for item in hits[start : start + per_page]:
            shown = dict(item)
            snippet = dict(item["snippet"])
            snippet["responsibility"] = _highlight(snippet.get("responsibility"), words)
            snippet["requirement"] = _highlight(snippet.get("requirement"), words)
            shown["snippet"] = snippet
            page_items.append(shown)
        self._send(
            200,
            {
                "items": page_items,
                "found": found,
                "pages": min(math.ceil(found / per_page), MAX_DEPTH // per_page),
                "page": page,
                "per_page": per_page,
                "clusters": None,
                "arguments": None,
                "fixes": None,
                "suggests": None,
                "alternate_url": "https://hh.ru/search/vacancy",
                "synthetic": f"{SYNTHETIC_TAG} data from the hhpulse emulator, not hh.ru",
            },
        )


def _dictionaries() -> dict[str, Any]:
    names = {"RUR": "Рубли", "USD": "Доллары", "EUR": "Евро", "KZT": "Тенге", "BYR": "Белорусские рубли"}
    return {
        "currency": [
            {
                "code": code,
                "abbr": code,
                "name": names.get(code, code),
                "default": code == "RUR",
                "rate": rate,
                "in_use": True,
            }
            for code, rate in sorted(CURRENCY_RATES.items())
        ]
    }


class Emulator:
    """The emulator server, run in a background thread. Use as a context manager.

    Example::

        with Emulator(day=30) as emu:
            client = HHClient(emu.url, contact="me@example.com")
    """

    def __init__(
        self,
        market: Market | None = None,
        day: int = 60,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state = EmulatorState(market or Market(), day, faults)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hh-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
