"""``hhpulse predict``: cohorts for JSON lines of vacancies (a file, optionally gzipped, or stdin).

Unix-style: records go to stdout by default (``-``), the progress bar and the summary to
stderr, so ``hhpulse predict --model M --input items.jsonl.gz | jq`` works. A row that
cannot be predicted gets an error record in its place and the batch goes on; the exit
status is 0 unless every row failed (1) or ``--strict`` stopped at a bad row (2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model bundle directory")
    src.add_argument(
        "--store", help="use the champion of this store (DIR or s3://bucket/prefix), as `serve --store` does"
    )
    p.add_argument(
        "--input",
        default="-",
        help="JSON lines (.gz ok): API search items, {responsibility, name, requirement} objects or "
        "strings; - reads stdin [%(default)s]",
    )
    p.add_argument(
        "--output",
        default="-",
        help="JSON lines out, one per non-blank input line, in order; - writes stdout [%(default)s]",
    )
    p.add_argument("--batch-size", type=int, default=2048, help="rows vectorized at once [%(default)s]")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first row that cannot be predicted (exit 2; no output file is written)",
    )
    p.add_argument(
        "--priors",
        default=None,
        help="shift the cohort priors: 'em' (estimate this input's mix, Saerens et al. 2002) or a JSON "
        'file {"salary": {cohort: share}, ...} (e.g. the mix of the newest labelled run)',
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="add each row's explanation (the terms behind its cohorts) under 'explanation'",
    )


@contextlib.contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """A binary stream: stdin for ``-``, else the file."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as fh:
        yield fh


@contextlib.contextmanager
def open_output(path: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``; else a file that appears (atomically) only when the block succeeds."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    from hhpulse.data.store import atomic_writer

    with atomic_writer(path) as fh:
        yield fh


def _priors(bundle, spec, instances):  # type: ignore[no-untyped-def]
    """None, the EM estimate over all the input, or the shares in a JSON file."""
    if not spec:
        return None
    if spec == "em":
        mix = bundle.estimate_priors(instances)
        print(f"priors estimated by EM: {json.dumps(mix, ensure_ascii=False)}", file=sys.stderr)
        return mix
    try:
        mix = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--priors {spec}: {exc}") from None
    if not isinstance(mix, dict) or not all(isinstance(v, dict) for v in mix.values()):
        raise ValueError(f'--priors {spec}: expected {{"salary": {{cohort: share}}, ...}}')
    bundle.predict(instances[:1], priors=mix)  # unknown tasks or cohorts fail here, before any output
    return mix


def _champion(store: str, stack: contextlib.ExitStack):  # type: ignore[no-untyped-def]
    """The store's champion, fetched (and verified) into a folder removed when ``stack`` closes."""
    import tempfile

    from hhpulse.data.store import open_store
    from hhpulse.model.bundle import load_bundle
    from hhpulse.model.registry import fetch_champion

    scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="hhpulse-champion-"))
    return load_bundle(fetch_champion(open_store(store), scratch))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hhpulse.data.store import StoreError
    from hhpulse.flows.batch import BatchTally, good_instances, open_lines, predict_lines
    from hhpulse.model.bundle import BundleError, load_bundle
    from hhpulse.model.evaluate import dominant_prediction
    from hhpulse.model.registry import RegistryError

    stack = contextlib.ExitStack()

    if args.input == "-" and sys.stdin.isatty():
        print(
            "hhpulse predict: reading JSON lines from stdin, which is a terminal: "
            "pass --input FILE, or pipe the lines in",
            file=sys.stderr,
        )
        return 2
    tally = BatchTally()
    source = "stdin" if args.input == "-" else args.input
    cohorts: dict[str, Counter[str]] = {}
    try:
        bundle = load_bundle(args.model) if args.model else _champion(args.store, stack)
        with open_input(args.input) as raw, open_output(args.output) as out:
            lines: Iterable[bytes] = open_lines(raw)
            priors = None
            if args.priors:
                lines = list(lines)  # EM estimates the mix of the whole input before any row is written
                priors = _priors(bundle, args.priors, good_instances(lines, bundle.input_fields))
            bar = tqdm(unit="row", disable=not sys.stderr.isatty(), desc="predict", file=sys.stderr)
            for records in predict_lines(
                bundle,
                lines,
                tally,
                batch_size=args.batch_size,
                strict=args.strict,
                source=source,
                priors=priors,
                explain=args.explain,
            ):
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
                bar.update(len(records))
                for r in records:
                    for task in ("salary", "demand"):
                        if isinstance(r.get(task), dict):
                            cohorts.setdefault(task, Counter())[r[task]["cohort"]] += 1
            bar.close()
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (BundleError, RegistryError, StoreError, ValueError, OSError, EOFError) as exc:
        print(f"hhpulse predict: {exc}", file=sys.stderr)
        return 2
    finally:
        stack.close()
    dest = "stdout" if args.output == "-" else args.output
    print(f"hhpulse predict: {tally.summary()}; model {bundle.version} -> {dest}", file=sys.stderr)
    for task, counts in cohorts.items():
        one = dominant_prediction(task, counts)
        if one:
            print(f"hhpulse predict: NOTE {one}", file=sys.stderr)
    if tally.all_failed:
        print("hhpulse predict: no row could be predicted", file=sys.stderr)
        return 1
    return 0
