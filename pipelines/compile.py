"""Compile the pipeline to YAML (deterministic, so the committed file can be diffed)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).parent / "hhpulse.yaml"


def compile_pipeline(output: str | Path = DEFAULT_OUTPUT, **options) -> Path:  # type: ignore[no-untyped-def]
    from kfp import compiler

    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    out = Path(output)
    compiler.Compiler().compile(build_pipeline(ClusterOptions(**options)), str(out))
    return out
