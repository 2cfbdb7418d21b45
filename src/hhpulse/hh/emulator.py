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

Run it by hand with ``hhpulse emulator --port 8765``. :class:`InProcessEmulator` gives the
same answers without a server (a ``requests`` transport adapter), for long replays and the
scale benchmark.
"""

from __future__ import annotations

import bisect
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

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
        self._keys: list[float] = []

    def items(self) -> tuple[list[dict[str, Any]], list[datetime]]:
        """The day's search items, newest publication first, and their ``published_at``."""
        with self.lock:
            if self._items_day != self.day:
                self._items = self.market.items(self.day)
                self._published = [parse_datetime(i["published_at"]) for i in self._items]  # type: ignore[misc]
                self._keys = [-p.timestamp() for p in self._published]  # ascending: for bisect
                self._items_day = self.day
            return self._items, self._published

    def search(
        self, words: list[str], area: str | None, date_from: datetime | None, date_to: datetime | None
    ) -> list[dict[str, Any]]:
        """The items a search finds, newest first. The items are sorted by ``published_at``, so
        the date window is one slice (found by bisection, not by scanning the whole day)."""
        items, _ = self.items()
        lo = 0 if date_to is None else bisect.bisect_left(self._keys, -date_to.timestamp())
        hi = len(items) if date_from is None else bisect.bisect_right(self._keys, -date_from.timestamp())
        return [
            item
            for item in items[lo:hi]
            if (area in (None, "", "113") or item["area"]["id"] == area) and _matches(item, words)
        ]

    def answer(self, target: str, headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one ``GET target`` (path and query string) as hh.ru would.

        ``headers`` are the request's headers (anything with a case-insensitive ``get``).
        Returns the status, the JSON body and the extra response headers; both the HTTP
        server and :class:`InProcessAdapter` send exactly this.
        """
        with self.lock:
            self.requests += 1
        url = urlparse(target)
        agent = headers.get("HH-User-Agent") or headers.get("User-Agent") or ""
        if not agent.strip():
            return 400, _error("bad_user_agent", "unset"), {}
        if not headers.get("HH-User-Agent") and agent.lower().startswith(GENERIC_AGENTS):
            return 400, _error("bad_user_agent", "blacklisted"), {}
        if url.path == "/dictionaries":
            return 200, _dictionaries(), {}
        if url.path == "/vacancies":
            return self._vacancies(parse_qs(url.query), headers)
        m = re.fullmatch(r"/vacancies/(\d+)", url.path)
        if m:
            vac = self.market.vacancy(m.group(1))
            if vac is None or vac.created_at > self.market.clock(self.day):
                return 404, _error("not_found"), {}
            return 200, vac.to_full(self.market.clock(self.day)), {}
        return 404, _error("not_found"), {}

    def _vacancies(
        self, query: dict[str, list[str]], headers: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self.next_fault()
        if fault == 429:
            return 429, _error("too_many_requests"), {"Retry-After": f"{self.faults.retry_after:g}"}
        if fault:
            return fault, _error("service_unavailable" if fault == 503 else "server_error"), {}
        if self.faults.captcha_after and not headers.get("Authorization"):
            with self.lock:
                self.anonymous += 1
                over = self.anonymous > self.faults.captcha_after
            if over:
                captcha = _error(
                    "captcha_required",
                    "captcha_required",
                    captcha_url="https://hh.ru/account/captcha?state=emulator",
                    fallback_url="https://hh.ru/",
                )
                return 403, captcha, {}

        def arg(name: str, default: str | None = None) -> str | None:
            values = query.get(name)
            return values[-1] if values else default

        try:
            per_page = int(arg("per_page", "20") or 20)
            page = int(arg("page", "0") or 0)
        except ValueError:
            return 400, _bad_argument("per_page", "per_page and page must be integers"), {}
        if per_page < 1 or per_page > MAX_PER_PAGE:
            return 400, _bad_argument("per_page", f"per_page must be between 1 and {MAX_PER_PAGE}"), {}
        if page < 0 or (page + 1) * per_page > MAX_DEPTH:
            depth = f"the depth of results is limited to {MAX_DEPTH}: page*per_page"
            return 400, _bad_argument("page", depth), {}
        try:
            date_from = parse_datetime(arg("date_from"), "date_from")
            date_to = parse_datetime(arg("date_to"), "date_to")
        except RecordError as exc:
            return 400, _bad_argument(str(exc).split(":", 1)[0], str(exc)), {}
        words = [w.lower() for w in _WORD.findall(arg("text", "") or "")]
        hits = self.search(words, arg("area"), date_from, date_to)
        found = len(hits)
        start = max(0, page * per_page - self.faults.shift * page)
        page_items = []
        for item in hits[start : start + per_page]:
            shown = dict(item)
            snippet = dict(item["snippet"])
            snippet["responsibility"] = _highlight(snippet.get("responsibility"), words)
            snippet["requirement"] = _highlight(snippet.get("requirement"), words)
            shown["snippet"] = snippet
            page_items.append(shown)
        body = {
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
        }
        return 200, body, {}

    def next_fault(self) -> int:
        with self.lock:
            self.vacancy_requests += 1
            if self._script:
                return self._script.popleft()
            if self.faults.every and self.vacancy_requests % self.faults.every == 0:
                return self.faults.every_status
            return 0


RESPONSE_HEADERS = {"Content-Type": "application/json; charset=UTF-8", "X-Synthetic-Data": "true"}


def encode_body(body: dict[str, Any]) -> bytes:
    """A JSON answer's bytes, as the emulator sends them."""
    return json.dumps(body, ensure_ascii=False).encode()


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
        data = encode_body(body)
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for k, v in {**RESPONSE_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        status, body, headers = self.state.answer(self.path, self.headers)
        self._send(status, body, headers)


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


class InProcessAdapter(requests.adapters.BaseAdapter):
    """A ``requests`` transport that answers from an :class:`EmulatorState` in this process.

    Mounted on a client's session (:meth:`hhpulse.hh.client.HHClient.mount`), it skips the
    socket, the HTTP server and its threads, and nothing else: the client sends the same
    requests (query string, headers, pacing, retries), and gets the same status, headers and
    JSON bytes as from :class:`Emulator`.
    """

    def __init__(self, state: EmulatorState) -> None:
        super().__init__()
        self.state = state

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlparse(request.url or "")
        target = url.path + (f"?{url.query}" if url.query else "")
        status, body, headers = self.state.answer(target, request.headers)
        resp = requests.Response()
        resp.status_code = status
        resp.reason = HTTPStatus(status).phrase
        resp.headers = CaseInsensitiveDict({**RESPONSE_HEADERS, **headers})
        resp._content = encode_body(body)
        resp.encoding = "utf-8"
        resp.url = request.url or ""
        resp.request = request
        return resp

    def close(self) -> None:
        pass


class InProcessEmulator:
    """The emulator without a server: the same answers, through :class:`InProcessAdapter`.

    Used like :class:`Emulator`; mount :attr:`adapter` on the client that talks to :attr:`url`::

        with InProcessEmulator(Market(daily_new=3000), day=90) as emu:
            client = HHClient(emu.url, rps=0)
            client.mount(emu.adapter)
    """

    url = "http://hh-emulator.invalid"  # never resolved: only the mounted adapter answers it

    def __init__(self, market: Market | None = None, day: int = 60, faults: Faults | None = None) -> None:
        self.state = EmulatorState(market or Market(), day, faults)
        self.adapter = InProcessAdapter(self.state)

    def __enter__(self) -> InProcessEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.adapter.close()
