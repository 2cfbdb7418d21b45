"""Lint the Dockerfiles: multi-stage, pinned bases, non-root, no secrets, the right entry points."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

IMAGES = {
    "pipeline": REPO / "images" / "pipeline.Dockerfile",
    "serving": REPO / "images" / "serving.Dockerfile",
}


def instructions(path):
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        buf += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    return [(line.split()[0].upper(), line) for line in lines]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_rules(name):
    ins = instructions(IMAGES[name])
    args = {
        m.group(1): m.group(2) for k, line in ins if k == "ARG" and (m := re.match(r"ARG (\w+)=(\S+)", line))
    }
    froms = [line.split()[1] for k, line in ins if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for ref in froms:
        image = args.get(ref.strip("${}"), ref) if ref.startswith("$") else ref
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
        assert re.search(r":\d+\.\d+\.\d+", image), f"base image {image} is not pinned to a patch version"
    users = [line for k, line in ins if k == "USER"]
    assert users and users[-1].split()[1].split(":")[0] not in ("root", "0"), "must end as a non-root user"
    final = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM") :]
    assert any(k == "USER" for k, _ in final), "the final stage must set USER"
    for k, line in ins:
        if k in ("ENV", "ARG"):
            assert not re.search(r"(?i)(secret|password|token|access_key)\w*=\S+", line), line
        if k in ("COPY", "ADD"):
            assert not re.search(r"(?i)(\.aws|credentials|\.env\b|id_rsa)", line), line


def test_entry_points_and_extras():
    serving = instructions(IMAGES["serving"])
    assert serving[-1] == ("ENTRYPOINT", 'ENTRYPOINT ["python", "-m", "hhpulse.serving"]')
    assert any('pip install ".[cpu,serve]"' in line for _, line in serving)
    pipeline = instructions(IMAGES["pipeline"])
    assert any('pip install ".[gpu,pipeline]"' in line for _, line in pipeline)
    assert not any("xgboost-cpu" in line or "[cpu" in line for _, line in pipeline), (
        "never both xgboost builds"
    )
