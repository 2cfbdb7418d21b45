"""The house's shape: stages that import one way (import-linter), and a command line that starts at once."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "hhpulse"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
HEAVY = (
    "sklearn",
    "xgboost",
    "kserve",
    "pandas",
    "pyarrow",
    "boto3",
    "deltalake",
    "scipy",
    "kfp",
    "kubernetes",
)


def _lint(cwd: Path, env_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if env_path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": env_path}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_every_stage_has_its_place_in_the_layers():
    """A new package or top-level module must be placed in the layers, not slip past them."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    placed = {m.strip() for layer in layers["layers"] for m in layer.split("|")}
    stages = {
        f"hhpulse.{p.stem}"
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert stages <= placed, f"not in the layers contract: {sorted(stages - placed)}"


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()))
def test_each_stage_says_what_it_does_and_may_import(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and "May import" in doc, (
        f"hhpulse.{package}.__init__ must say what it does and what it may import"
    )


@pytest.mark.slow
def test_the_contracts_catch_an_import_back_up(tmp_path):
    """The same contracts on a copy of the tree with one import that runs back up: they break."""
    for name in ("src", "components", "pipelines"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    store = tmp_path / "src" / "hhpulse" / "data" / "store.py"
    store.write_text(
        store.read_text() + "\n\ndef _back_up():\n    from hhpulse.model.bundle import load_bundle\n"
    )
    res = _lint(tmp_path, env_path=f"{tmp_path / 'src'}:{tmp_path}")
    assert res.returncode != 0, res.stdout
    assert "hhpulse.data.store -> hhpulse.model.bundle" in res.stdout
    assert "Stages import one way, down BROKEN" in res.stdout
    assert "No import cycles" in res.stdout and "BROKEN" in res.stdout.split("No import cycles")[1]


def test_the_command_line_starts_without_heavy_imports():
    """`hhpulse --help` builds every subcommand's parser: none of that may import the heavy stack."""
    code = (
        "import sys, hhpulse.cli as cli; cli.build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.strip() == "", f"imported by the CLI's parser: {res.stdout.strip()}"
