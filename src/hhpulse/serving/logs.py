"""JSON log lines for the predictor: one object per line on stdout, kserve's and uvicorn's own
lines included (one format for the whole serve log).

The access log (logger ``hhpulse.serving.access``) passes its fields in ``extra={"fields":
{...}}``; they become top-level keys. Other records carry their text as ``message``.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any

LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


# Per-request lines that the JSON access line replaces: uvicorn's access log and the
# timings kserve prints (its Prometheus histograms keep the timings). Kept at debug.
DUPLICATES = ("uvicorn.access", "kserve.trace")
# the other servers' loggers whose lines join the JSON log, and their children that kserve's
# logging config gives handlers of their own (cleared: they propagate to the JSON handler)
OTHERS = ("kserve", "uvicorn")
CHILDREN = {"kserve": ("kserve.trace",), "uvicorn": ("uvicorn.error", "uvicorn.access")}


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _client_faults() -> tuple[type[BaseException], ...]:
    from kserve.errors import InvalidInput, ModelNotFound

    return (InvalidInput, ModelNotFound)


class _ClientFaults(logging.Filter):
    """Drops the ``ERROR kserve: Exception:`` record, traceback and all, that kserve 0.21's
    exception handlers write for a client's fault (a bad request: 400; an unknown model: 404).
    The request guard's access line reports such a request once, at warning, with its status
    and reason. The server's own faults keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not isinstance(exc, _client_faults())


def configure_logging(level: str = "info") -> None:
    """Send the ``hhpulse`` loggers to stdout as JSON lines at ``level`` (idempotent per process).

    Below debug, the per-request lines of uvicorn and kserve are muted, and at every level
    kserve's tracebacks for a client's bad request: filters, which survive kserve configuring
    its loggers later (``dictConfig`` keeps a logger's filters; in spawned workers too).
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    # kserve 0.21 answers with FastAPI's ORJSONResponse, which the installed FastAPI warns about on the
    # first request of each process: nothing a user of the server can act on
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, _ClientFaults) for f in kserve_logger.filters):
        kserve_logger.addFilter(_ClientFaults())
    for name in DUPLICATES:
        other = logging.getLogger(name)
        mutes = [f for f in other.filters if isinstance(f, _Mute)]
        if level.lower() == "debug":
            for f in mutes:
                other.removeFilter(f)
        elif not mutes:
            other.addFilter(_Mute())
    logger = logging.getLogger("hhpulse")
    logger.setLevel(level.upper())
    if not any(getattr(h, "hhpulse_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler.hhpulse_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    # kserve's and uvicorn's own lines in the same JSON: a handler on the "kserve" logger also
    # stops kserve.ModelServer from installing its plain-text logging config (it configures only
    # a "kserve" logger without handlers); their children (kserve.trace, uvicorn.error, ...) propagate here
    json_handler = next(h for h in logger.handlers if getattr(h, "hhpulse_json", False))
    for name in OTHERS:
        other = logging.getLogger(name)
        other.handlers[:] = [json_handler]
        other.propagate = False
        other.setLevel(max(logging.INFO, logging.getLevelName(level.upper())))
        for child in (logging.getLogger(c) for c in CHILDREN.get(name, ())):
            child.handlers[:] = []
            child.propagate = True
