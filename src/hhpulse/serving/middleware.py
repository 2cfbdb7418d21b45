"""An ASGI middleware in front of kserve's app: body limits, Content-Type, JSON, and access logs.

kserve 0.21 answers 500 to some bodies without ``Content-Type: application/json``; this
middleware answers 415 with a message first. It also rejects bodies over the size
limit (413) and invalid JSON (400) before they reach the model, counts rejections by
reason, and writes one JSON log line per request (latency, instances, status) without
the text itself unless debug logging is on. On ``GET /v2/models/<name>`` it completes
kserve's model metadata with the cohorts of each output (kserve's response model drops
fields it does not know).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from hhpulse.serving.inputs import Limits
from hhpulse.serving.model import REJECTED

log = logging.getLogger("hhpulse.serving.access")

JSON_TYPES = ("application/json", "application/cloudevents+json")


# GET /v2/models/<name> and /v2/models/<name>/versions/<version>: the model's metadata
_METADATA = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/?$")
Describe = Callable[[dict[str, Any]], dict[str, Any]]


def _is_infer(path: str) -> bool:
    return path.endswith((":predict", ":explain")) or path.endswith("/infer")


def _count(body: Any) -> int | None:
    if isinstance(body, dict):
        if isinstance(body.get("instances"), list):
            return len(body["instances"])
        inputs = body.get("inputs")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            shape = inputs[0].get("shape") or [None]
            return shape[0] if isinstance(shape, list) and shape else None
    return None


class GuardMiddleware:
    def __init__(self, app: Any, limits: Limits, describe: Describe | None = None) -> None:
        self.app = app
        self.limits = limits
        self.describe = describe

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope.get("method") == "GET" and self.describe is not None and _METADATA.match(path):
            await self._metadata(scope, receive, send)
            return
        if scope.get("method") != "POST" or not _is_infer(path):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        instances = None
        try:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype not in JSON_TYPES:
                why = "missing" if not ctype else f"{ctype!r}"
                return await self._reject(
                    send_wrapper,
                    415,
                    "bad_content_type",
                    f"Content-Type is {why}: send the body as application/json",
                )
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
                return await self._reject(
                    send_wrapper,
                    413,
                    "body_too_large",
                    f"body of {declared} bytes is over the limit of {self.limits.max_body_bytes}",
                )
            chunks, size = [], 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limits.max_body_bytes:
                    return await self._reject(
                        send_wrapper,
                        413,
                        "body_too_large",
                        f"body is over the limit of {self.limits.max_body_bytes} bytes",
                    )
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return await self._reject(
                    send_wrapper, 400, "invalid_json", f"the body is not valid JSON: {exc}"
                )
            instances = _count(parsed)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("request body: %s", body[:2000].decode("utf-8", "replace"))
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_wrapper)
        finally:
            fields = {
                "event": "request",
                "path": scope.get("path"),
                "status": status["code"],
                "instances": instances,
                "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            log.info("request", extra={"fields": fields})

    async def _metadata(self, scope: dict, receive: Any, send: Any) -> None:
        """kserve's model metadata, completed by ``describe`` (its response model drops extra fields)."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    body = json.dumps(self.describe(json.loads(body)), ensure_ascii=False).encode()  # type: ignore[misc]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)

    async def _reject(self, send: Any, status: int, reason: str, message: str) -> None:
        REJECTED.labels(reason=reason).inc()
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_guard(limits: Limits, app: Any = None, describe: Describe | None = None) -> bool:
    """Put :class:`GuardMiddleware` in front of kserve's app, once per process.

    ``--workers N`` (N > 1) runs uvicorn in spawned processes that import kserve's app
    afresh, so each worker installs the guard again when it unpickles the model (see
    ``VacancyModel.__setstate__``). Returns whether it was installed by this call.
    """
    if app is None:
        from kserve import model_server

        app = model_server.app
    if getattr(app.state, "hhpulse_guard", False):
        return False
    app.add_middleware(GuardMiddleware, limits=limits, describe=describe)
    app.state.hhpulse_guard = True
    return True
