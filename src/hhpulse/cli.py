"""The ``hhpulse`` command line.

Each subcommand lives in its own module under :mod:`hhpulse.commands` and
exposes ``configure(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``hhpulse --help`` stays fast and a
missing optional extra (kfp, kserve) only matters for the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from hhpulse import __version__

# name -> (module under hhpulse.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "run",
        "run the whole pipeline on this machine: collect, train, compare with the champion, publish",
    ),
    "serve": ("serve", "serve a model (or the store's champion) over HTTP with KServe (v1 and v2 protocols)"),
    "request": ("request", "send vacancy texts to a running hhpulse server and print its answer"),
    "predict": ("predict", "predict salary and demand cohorts for a file of vacancies"),
    "evaluate": ("evaluate", "evaluate a model on any data that can be labelled"),
    "train": ("train", "train salary and demand candidates and write a model bundle"),
    "collect": ("collect", "collect vacancies (hh.ru API, a file dump, or the demo emulator) into the store"),
    "validate": ("validate", "check a collection run against the data contract and quarantine bad rows"),
    "history": (
        "history",
        "fold new runs into the stored history; --rebuild from every raw run, --verify against a rebuild",
    ),
    "logsink": (
        "logsink",
        "take KServe's logger CloudEvents (requests and responses) and write the served prediction log",
    ),
    "replay": (
        "replay",
        "replay N daily demo runs (or a store's runs): labels, cohort mix, AUC, and the daily gate",
    ),
    "emulator": ("emulator", "serve the synthetic hh.ru API emulator on a local port"),
    "monitor": (
        "monitor",
        "served traffic since the last run and in total: volume, cohort mix, input drift, live demand accuracy",
    ),
    "compile": ("compile", "compile the Kubeflow pipeline to pipelines/hhpulse.yaml"),
    "submit": ("submit", "upload the pipeline to a Kubeflow Pipelines API and start a run"),
    "schedule": ("schedule", "create or update a recurring run on Kubeflow Pipelines"),
    "deploy": ("deploy", "render or apply the KServe InferenceService for a published model"),
    "store": ("store", "look after the store: `store prune --raw-older-than DAYS` removes old raw runs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hhpulse",
        description="Salary and demand cohorts for hh.ru vacancies, retrained on Kubeflow and served by KServe.",
    )
    parser.add_argument("--version", action="version", version=f"hhpulse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _parser=p)
        _configure(p, module)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported with the usage of the command it was given to."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner = getattr(args, "_parser", None) or parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _configure(p: argparse.ArgumentParser, module: str) -> None:
    mod = _load(module)
    if mod is not None:
        mod.configure(p)


def _load(module: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"hhpulse.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("hhpulse.commands"):
            return None  # command not built yet in this checkout
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.command:
        parser.print_help()
        return 2
    mod = _load(args._module)
    if mod is None:
        parser.error(f"command {args.command!r} is not available in this build")
    from hhpulse.data.store import StoreError  # stdlib only: cheap to import

    try:
        return int(mod.run(args) or 0)
    except StoreError as exc:  # a store a command cannot use (a file, a missing bucket): one line
        print(f"hhpulse {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hhpulse: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        print(
            f"hhpulse {args.command}: needs the missing package {exc.name!r}; "
            "install the project with `make install` (or pip install -e '.[cpu,pipeline,serve]')",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
