"""``hhpulse predict``: cohorts for a file of vacancies (JSON lines, optionally gzipped)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model bundle directory")
    p.add_argument(
        "--input",
        required=True,
        help="JSON lines (.gz ok): API search items or {responsibility, name, requirement}",
    )
    p.add_argument("--output", required=True, help="JSON lines out, one per input line, in order")
    p.add_argument("--batch-size", type=int, default=2048, help="rows vectorized at once [%(default)s]")
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


def read_instances(path: str):  # type: ignore[no-untyped-def]
    """(id or None, instance) per non-blank line; a bad line raises ValueError with its number."""
    from hhpulse.bundle import to_instance

    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            inst = to_instance(obj)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: {exc}") from None
        if not inst.responsibility.strip():
            raise ValueError(f"{path}:{n}: the responsibility text is empty")
        yield (str(obj["id"]) if isinstance(obj, dict) and obj.get("id") is not None else None), inst


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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hhpulse.bundle import BundleError, load_bundle
    from hhpulse.store import atomic_write_bytes

    try:
        bundle = load_bundle(args.model)
        rows = list(read_instances(args.input))
        priors = _priors(bundle, getattr(args, "priors", None), [inst for _, inst in rows])
    except (BundleError, ValueError, OSError) as exc:
        print(f"hhpulse predict: {exc}", file=sys.stderr)
        return 2
    out = io.StringIO()
    bar = tqdm(total=len(rows), unit="row", disable=not sys.stderr.isatty(), desc="predict")
    for start in range(0, len(rows), max(1, args.batch_size)):
        chunk = rows[start : start + args.batch_size]
        preds = bundle.predict([inst for _, inst in chunk], priors=priors)
        if getattr(args, "explain", False):
            for pred, ex in zip(preds, bundle.explain([inst for _, inst in chunk]), strict=True):
                pred["explanation"] = {t: v for t, v in ex.items() if t != "model_version"}
        for (vid, _), pred in zip(chunk, preds, strict=True):
            out.write(
                json.dumps({**({"id": vid} if vid is not None else {}), **pred}, ensure_ascii=False) + "\n"
            )
        bar.update(len(chunk))
    bar.close()
    atomic_write_bytes(args.output, out.getvalue().encode())
    print(f"{len(rows)} predictions ({bundle.version}) -> {args.output}")
    return 0
