r"""A fault-injecting HTTP proxy on 127.0.0.1, in front of an S3 server (moto) or any HTTP server.

Shared state must survive the faults an object store really shows: a reply lost after the write
was applied (a timeout after the commit), a 5xx, a reset connection, a slow answer. Tests put
this proxy between the code and moto's server and add rules:

    with FaultProxy(s3_server) as proxy:
        store = open_store(f"s3://{bucket}/p", endpoint_url=proxy.url)
        rule = proxy.add("drop_reply", method="PUT", path=r"/history/state\.json$", header="If-Match")
        ...                      # the PUT is applied by S3, its reply never reaches the client
        assert rule.hits == 1

Faults (``fault``):

- ``drop_reply``: forward the request, let the server apply it, then close the client's
  connection without answering (the client sees its connection closed and retries);
- ``reset_after``: the same, with a TCP reset instead of a close;
- ``reset``: reset the connection without forwarding (the server never sees the request);
- ``error:<status>``: answer ``<status>`` (500, 503, ...) with an S3 error body, without forwarding;
- ``delay:<seconds>``: wait, then forward and answer normally.

A rule matches a request by method, a regular expression searched in the path (query string
included, URL-decoded), and the presence of a header; it fires ``times`` times (default once;
``None``: every time), after ``skip`` matching requests. ``proxy.log`` records every request:
``(method, path, what happened)``.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("drop_reply", "reset_after", "reset", "error", "delay")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    fault: str
    method: str | None = None
    path: str | None = None
    header: str | None = None
    times: int | None = 1
    skip: int = 0
    hits: int = 0
    seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        kind = self.fault.split(":", 1)[0]
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}: one of {FAULTS}")
        if kind in ("error", "delay") and ":" not in self.fault:
            raise ValueError(f"{kind} needs a value: {kind}:<{'status' if kind == 'error' else 'seconds'}>")

    def take(self, method: str, path: str, headers: Any) -> bool:
        """Whether this request gets the fault (counts it when it does)."""
        if self.method and method.upper() != self.method.upper():
            return False
        if self.path and not re.search(self.path, path):
            return False
        if self.header and self.header.lower() not in {k.lower() for k in headers}:
            return False
        with self._lock:
            self.seen += 1
            if self.seen <= self.skip or (self.times is not None and self.hits >= self.times):
                return False
            self.hits += 1
            return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._proxy()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _proxy(self) -> None:
        body = self._body()
        path = urllib.parse.unquote(self.path)
        rule = self.server.proxy.match(self.command, path, self.headers)
        kind, _, value = (rule.fault if rule else "").partition(":")
        log = self.server.proxy.log
        if kind == "reset":
            log.append((self.command, path, "reset"))
            self._reset()
            return
        if kind == "error":
            status = int(value)
            payload = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                f"{'SlowDown' if status == 503 else 'InternalError'}</Code>"
                f"<Message>injected by the fault proxy</Message></Error>"
            ).encode()
            log.append((self.command, path, f"error {status}"))
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if kind == "delay":
            time.sleep(float(value))
        status, headers, data = self._forward(body)
        if kind in ("drop_reply", "reset_after"):
            log.append((self.command, path, f"{kind} (upstream said {status})"))
            if kind == "reset_after":
                self._reset()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            return
        log.append((self.command, path, str(status)))
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        up = self.server.proxy.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class FaultProxy:
    """The proxy: ``url`` to point clients at, ``add`` rules, ``log`` of what it did."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(
        self,
        fault: str,
        *,
        method: str | None = None,
        path: str | None = None,
        header: str | None = None,
        times: int | None = 1,
        skip: int = 0,
    ) -> Rule:
        rule = Rule(fault, method, path, header, times, skip)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def match(self, method: str, path: str, headers: Any) -> Rule | None:
        with self._lock:
            rules = list(self.rules)
        for rule in rules:
            if rule.take(method, path, headers):
                return rule
        return None

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
