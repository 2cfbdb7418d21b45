"""Print the requirements of an image from pyproject.toml, one per line, for `pip install -r`.

    python3 images/requirements.py pyproject.toml EXTRAS [--without NAME ...]

The dependencies are installed in their own layer, before the source is copied, so a code
change rebuilds only the small `pip install --no-deps .` layer. ``--without`` leaves out
packages an image never imports (the serving image: pyarrow and boto3, which only the
pipeline's store and history code need); tests/test_images.py checks the built image.
Standard library only: it runs on the base image's python3 (3.11, tomllib).
"""

from __future__ import annotations

import argparse
import re

import tomllib


def requirements(pyproject: str, extras: list[str], without: set[str]) -> list[str]:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    keep = []
    for req in reqs:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower().replace("_", "-")
        if name not in without:
            keep.append(req)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pyproject")
    ap.add_argument("extras", help="comma-separated extras, e.g. cpu,serve")
    ap.add_argument("--without", nargs="*", default=[])
    args = ap.parse_args()
    without = {w.lower().replace("_", "-") for w in args.without}
    print("\n".join(requirements(args.pyproject, [e for e in args.extras.split(",") if e], without)))


if __name__ == "__main__":
    main()
