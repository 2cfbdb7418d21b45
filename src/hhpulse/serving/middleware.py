"""An ASGI middleware in front of kserve's app: body limits, Content-Type, JSON, and access logs.

kserve 0.21 answers 500 to some bodies with a Content-Type other than JSON; this middleware
answers 415 with a message first. A body without a Content-Type is taken when it parses as
JSON (and passed on as ``application/json``, which kserve needs). A body in the binary tensor
extension (``Inference-Header-Content-Length``: a JSON header, then raw tensors) is checked
whole by :func:`hhpulse.serving.inputs.binary_request` (each declared size against the bytes,
each tensor against its shape) and passed on as ``application/octet-stream``, which kserve
decodes. It also rejects bodies over the size limit (413), and bodies (or binary requests' JSON
headers) that are not strict JSON or nest arrays and objects deeper than
:data:`hhpulse.model.inputs.MAX_JSON_DEPTH` (400: ``invalid_json``, ``not_finite``,
``json_too_deep``; Python's parser would otherwise recurse until a RecursionError, a 500 and a
reset connection) before they reach the model, and counts rejections by
reason. A 413 is answered at once and the rest of the body is then read and dropped (a
lingering close, as nginx and Go's net/http do) for at most :data:`DRAIN_MAX_BYTES` and
:data:`DRAIN_SECONDS` before the connection closes: closing a socket with unread data sends
a reset, and a client still sending its body (``urllib`` always, as it asks for
``Connection: close``) would get "connection reset" instead of the answer. It writes one JSON log line per infer request (latency, instances, status) and per
refused request of any kind (with the reason, at warning for a 4xx), without the text
itself unless debug logging is on. On ``GET /v2/models/<name>`` it completes kserve's model
metadata with the cohorts of each output (kserve's response model drops fields it does not
know). A v2 body that kserve's pydantic model refuses is a 400 with a plain reason, like a
bad v1 body, not FastAPI's 422 with pydantic's errors. Any method but POST on an infer path
(``:predict``, ``:explain``, ``/infer``) is a 405 with ``Allow: POST``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hhpulse.model.inputs import JSONRefused, loads_strict
from hhpulse.serving.inputs import BINARY_HEADER, Limits, RequestError, binary_request
from hhpulse.serving.metrics import REJECTED

log = logging.getLogger("hhpulse.serving.access")

JSON_TYPES = ("application/json", "application/cloudevents+json")
# with Inference-Header-Content-Length (the binary tensor extension) the body is not JSON:
# tritonclient sends it as application/octet-stream, or with no Content-Type
BINARY_TYPES = ("application/octet-stream", "application/json")


# GET /v2/models/<name>, /v2/models/<name>/versions/<version> and /v1/models/<name>: the model's metadata
_METADATA = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/?$|^/v1/models/[^/:]+/?$")
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


_ERROR_BYTES = 4096  # enough of an error answer to read its reason

# After a 413, the rest of the body is read and dropped up to these bounds (a lingering
# close), then the connection is closed. 128 MiB reads any body up to twice 64 MiB on a fast
# link; 10 s is the most a client that declared a large body and sends nothing (or sends
# slowly) holds its connection. Past either bound the close may reset the connection.
DRAIN_MAX_BYTES = 128 * 1024 * 1024
DRAIN_SECONDS = 10.0


def _reason(body: bytes) -> str:
    """The reason in an error answer: ``{"error": ...}`` (kserve, hhpulse) or ``{"detail": ...}``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        for key in ("error", "detail"):
            if isinstance(doc.get(key), str):
                return doc[key]
    return body[:200].decode("utf-8", "replace")


def _access(method: str | None, path: str, seen: dict[str, Any], start: float) -> None:
    """One JSON line per request: info when served, warning for a client's fault (4xx) with
    its reason, error for the server's own (5xx)."""
    status = seen["status"]
    fields: dict[str, Any] = {
        "event": "request",
        "method": method,
        "path": path,
        "status": status,
        "instances": seen["instances"],
        "latency_ms": round(((seen.get("answered") or time.perf_counter()) - start) * 1000, 2),
    }
    if "drained_bytes" in seen:
        fields["drained_bytes"] = seen["drained_bytes"]
    if status >= 400:
        fields["error"] = _reason(seen["error"])
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    log.log(level, "request", extra={"fields": fields})


class GuardMiddleware:
    def __init__(
        self,
        app: Any,
        limits: Limits,
        describe: Describe | None = None,
        *,
        drain_bytes: int = DRAIN_MAX_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.limits = limits
        self.describe = describe
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        method = scope.get("method")
        infer = method == "POST" and _is_infer(path)
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "error": b"", "instances": None}

        async def watch(message: dict) -> None:
            """Note the status, and the body of an error answer (its reason)."""
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and seen["status"] >= 400:
                seen["error"] = (seen["error"] + message.get("body", b""))[:_ERROR_BYTES]
            await send(message)

        try:
            if method == "GET" and self.describe is not None and _METADATA.match(path):
                await self._metadata(scope, receive, watch)
            elif method != "POST" and _is_infer(path):  # not kserve's "model ... does not exist"
                await self._reject(
                    watch,
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {path}: POST a JSON body",
                    headers=[(b"allow", b"POST")],
                )
            elif infer:
                await self._infer(scope, receive, watch, seen)
            else:
                await self.app(scope, receive, watch)
        finally:
            if infer or seen["status"] >= 400:
                _access(method, path, seen, start)

    async def _infer(self, scope: dict, receive: Any, send: Any, seen: dict[str, Any]) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        binary = headers.get(BINARY_HEADER)
        path = scope.get("path", "")
        if binary is not None and not path.endswith("/infer"):
            return await self._reject(
                send,
                400,
                "bad_binary_header",
                f"Inference-Header-Content-Length (the binary tensor extension) is for v2 infer, not {path}",
            )
        if ctype and ctype not in JSON_TYPES and not (binary is not None and ctype in BINARY_TYPES):
            accepted = "application/json" + (", or application/octet-stream" if binary is not None else "")
            return await self._reject(
                send, 415, "bad_content_type", f"Content-Type is {ctype!r}: send the body as {accepted}"
            )
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            return await self._too_large(
                receive,
                send,
                seen,
                f"body of {declared} bytes is over the limit of {self.limits.max_body_bytes}",
            )
        chunks, size = [], 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":  # logged as nginx does: 499, not a 500
                seen["status"], seen["error"] = 499, b"the client disconnected before sending the whole body"
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.limits.max_body_bytes:
                chunks.clear()
                return await self._too_large(
                    receive,
                    send,
                    seen,
                    f"body is over the limit of {self.limits.max_body_bytes} bytes",
                    more=more,
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        if binary is not None:
            # the JSON header and the raw tensors after it, checked whole before kserve decodes them
            try:
                parsed = binary_request(body, binary, self.limits)
            except RequestError as exc:
                return await self._reject(send, exc.status, exc.reason, str(exc))
            forward = b"application/octet-stream"  # kserve takes raw bytes, not JSON, for these
        else:
            try:  # strict JSON, nested at most MAX_JSON_DEPTH deep: a 400, and the connection goes on
                parsed = loads_strict(body)
            except JSONRefused as exc:
                message = str(exc)
                if exc.reason == "invalid_json" and not ctype:
                    message = message.replace(
                        "not valid JSON", "not valid JSON (and it came without a Content-Type)", 1
                    )
                return await self._reject(send, 400, exc.reason, message)
            # a body without a Content-Type that parses as JSON is taken as JSON (kserve would
            # not read it as such)
            forward = ctype.encode() if ctype else b"application/json"
        seen["instances"] = _count(parsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request body: %s", body[:2000].decode("utf-8", "replace"))
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if forward != ctype.encode():
            kept = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", forward)]}
        await self.app(scope, replay, send)

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
                    body = json.dumps(
                        self.describe(json.loads(body)), ensure_ascii=False, separators=(",", ":")
                    ).encode()  # type: ignore[misc]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)

    async def _reject(
        self,
        send: Any,
        status: int,
        reason: str,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        more: bool = False,
    ) -> None:
        """Answer ``status`` with ``{"error": message}`` and any extra ``headers``; ``more``
        leaves the response open (the caller ends it with an empty last body)."""
        REJECTED.labels(reason=reason).inc()
        body = json.dumps(
            {"error": message}, ensure_ascii=False, separators=(",", ":")
        ).encode()  # as kserve's
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def _too_large(
        self, receive: Any, send: Any, seen: dict[str, Any], message: str, *, more: bool = True
    ) -> None:
        """413 at once, then a lingering close: the whole answer goes out (its Content-Length
        tells the client where it ends) while the response is held open and the rest of the
        body (``more``: some is still to come) is read and dropped, up to ``drain_bytes`` and
        ``drain_seconds``; only then does the response end and the server close the
        connection. A client that declared a large body and sends nothing reads its 413 at
        once, and its connection is closed when it hangs up or the time is up."""
        await self._reject(send, 413, "body_too_large", message, [(b"connection", b"close")], more=True)
        seen["answered"] = time.perf_counter()
        drained = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while more and drained <= self.drain_bytes:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                message_in = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                break
            if message_in["type"] != "http.request":  # http.disconnect: the client hung up
                break
            drained += len(message_in.get("body", b""))
            more = message_in.get("more_body", False)
        seen["drained_bytes"] = drained
        await send({"type": "http.response.body", "body": b""})


def v2_body_error(body: Any, errors: Sequence[Mapping[str, Any]], model_name: str) -> RequestError:
    """A plain reason for a v2 infer body that kserve's pydantic model refused.

    The body is checked as ``parse_v1`` checks a v1 body (an object, with an ``inputs``
    list); anything else pydantic found is said per field (``inputs[0].shape: field
    required``), without the values the client sent.
    """
    if not isinstance(body, Mapping):
        return RequestError("bad_body", f"the body must be a JSON object, got {type(body).__name__}")
    if "inputs" not in body:
        hint = (
            f"; this is a v1 body ('instances'): POST it to /v1/models/{model_name}:predict"
            if "instances" in body
            else ""
        )
        return RequestError("missing_inputs", f"the body has no 'inputs' list (v2 protocol){hint}")
    if not isinstance(body["inputs"], list):
        return RequestError(
            "bad_inputs", f"'inputs' must be a list of tensors, got {type(body['inputs']).__name__}"
        )
    problems = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        if loc[:2] == ["body", "bytes"]:
            continue  # the other branch of kserve's Union[InferenceRequest, bytes]
        if loc[:2] == ["body", "InferenceRequest"]:
            loc = loc[2:]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or "the body"
        problems.append(f"{where}: {str(error.get('msg', 'invalid')).lower()}")
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return RequestError("bad_inputs", f"not a v2 inference request: {shown or 'invalid body'}")


async def _invalid_body(request: Any, exc: Any) -> Any:
    """FastAPI's RequestValidationError (its default answer: 422 and pydantic's errors) as a 400."""
    from starlette.responses import JSONResponse

    error = v2_body_error(exc.body, exc.errors(), request.path_params.get("model_name", "<model>"))
    REJECTED.labels(reason=error.reason).inc()
    return JSONResponse({"error": str(error)}, status_code=400)


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
    from fastapi.exceptions import RequestValidationError

    app.add_middleware(GuardMiddleware, limits=limits, describe=describe)
    # kserve registers handlers for its own errors when it starts, not for this one
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.state.hhpulse_guard = True
    return True
