"""Compile the pipeline to YAML, byte for byte the same on every run (so the committed file can be diffed).

KFP's compiler writes the YAML body with sorted keys, but its leading comment prints dict
defaults (the candidate configs) in protobuf-map order, which follows the hash seed. The
comment is rebuilt here by KFP's own function from the same spec with its keys sorted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).parent / "hhpulse.yaml"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def deterministic_yaml(text: str, description: str) -> str:
    """``text`` (KFP's compiled YAML) with its leading comment rebuilt in sorted key order."""
    import yaml
    from kfp.compiler.pipeline_spec_builder import extract_comments_from_pipeline_spec

    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    body = "".join(lines[n:])
    spec = next(yaml.safe_load_all(body))
    return extract_comments_from_pipeline_spec(_sorted(spec), description) + body


def compile_pipeline(output: str | Path = DEFAULT_OUTPUT, **options) -> Path:  # type: ignore[no-untyped-def]
    from kfp import compiler

    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    out = Path(output)
    pipeline = build_pipeline(ClusterOptions(**options))
    # a new file next to the output (created with the umask's mode, unlike mkstemp's 0600)
    tmp = str(out.with_name(f".{out.stem}.{os.getpid()}.tmp.yaml"))
    try:
        compiler.Compiler().compile(pipeline, tmp)
        text = deterministic_yaml(Path(tmp).read_text(encoding="utf-8"), pipeline.description or "")
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # atomic: a failed compile leaves the old file intact
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
