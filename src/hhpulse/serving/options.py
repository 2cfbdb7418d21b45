"""The predictor's own command-line options, defined once for both entry points.

``hhpulse serve`` (a local command) and ``python -m hhpulse.serving`` (the serving image's
entry point, next to kserve's own ``--http_port``, ``--model_name``, ``--workers``) take the
same limits, log level and bind address, each in both spellings (``--max-text-chars`` and
``--max_text_chars``). Only the default host differs: loopback for the local command, all
interfaces in the container. No kserve import here: the CLI builds its parser from it.
"""

from __future__ import annotations

import argparse
import os

from hhpulse.serving.inputs import Limits
from hhpulse.serving.logs import LEVELS

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the container entry point must be reachable from its pod


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_server_options(parser: argparse.ArgumentParser, *, host: str) -> None:
    """``--host``, the request limits and ``--log-level``; ``host`` is the default bind address."""
    parser.add_argument("--host", default=host, help=f"address to bind the HTTP server to [{host}]")
    defaults = Limits()
    parser.add_argument(
        "--max-instances",
        "--max_instances",
        dest="max_instances",
        type=_positive,
        default=defaults.max_instances,
        help=f"instances per request [{defaults.max_instances}]",
    )
    parser.add_argument(
        "--max-text-chars",
        "--max_text_chars",
        dest="max_text_chars",
        type=_positive,
        default=defaults.max_text_chars,
        help=f"characters per text field [{defaults.max_text_chars}]",
    )
    parser.add_argument(
        "--max-body-bytes",
        "--max_body_bytes",
        dest="max_body_bytes",
        type=_positive,
        default=defaults.max_body_bytes,
        help=f"request body size in bytes [{defaults.max_body_bytes}]",
    )
    level = os.environ.get("HHPULSE_LOG_LEVEL", "").lower()
    level = level if level in LEVELS else "info"
    parser.add_argument(
        "--log-level",
        "--log_level",
        dest="log_level",
        choices=LEVELS,
        default=level,
        help=f"level of the JSON logs; request texts are logged only at debug (env HHPULSE_LOG_LEVEL) [{level}]",
    )
    add_metrics_option(parser)


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    """``--no-input-metrics``: leave out the input histograms (:mod:`hhpulse.serving.metrics`)."""
    parser.add_argument(
        "--no-input-metrics",
        "--no_input_metrics",
        dest="input_metrics",
        action="store_false",
        help="do not observe input lengths and known-term shares on /metrics (the counters and "
        "hhpulse_model_info stay)",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(args.max_instances, args.max_text_chars, args.max_body_bytes)
