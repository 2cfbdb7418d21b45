"""The Makefile does what its help says: clean keeps user data, help's sections, browser, install."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _make(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder with the Makefile and what a user's checkout holds after some runs."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path in (
        ".venv/bin/python",
        ".pytest_cache/x",
        ".hhpulse/kfp-local/run-20260101T000000000000Z/a",
        ".hhpulse/storage-venv/bin/python",
        ".hhpulse/store/models/hhpulse/champion.json",
        ".hhpulse/real/history/state.json",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    return tmp_path


def test_clean_removes_what_it_says_and_keeps_the_stores(sandbox):
    """`make clean` removed all of .hhpulse, real-data stores included, though its help said "the local store"."""
    p = _make("clean", cwd=sandbox)
    assert p.returncode == 0, p.stderr
    for gone in (".venv", ".pytest_cache", ".hhpulse/kfp-local", ".hhpulse/storage-venv"):
        assert not (sandbox / gone).exists(), gone
    assert (sandbox / ".hhpulse/store/models/hhpulse/champion.json").is_file()
    assert (sandbox / ".hhpulse/real/history/state.json").is_file()
    # user data goes only by a target of its own, that says so
    p = _make("clean-stores", cwd=sandbox)
    assert p.returncode == 0 and not (sandbox / ".hhpulse").exists()


def _sections(help_text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in ANSI.sub("", help_text).splitlines():
        if line and not line.startswith(" ") and not line.startswith("Usage"):
            section = line.strip()
            out[section] = []
        elif line.startswith("  ") and section:
            out[section].append(line.split()[0])
    return out


def test_help_puts_each_target_in_its_own_section():
    """`make help` listed clean under "Images", with a help that said it removes "the local store"."""
    p = _make("help")
    sections = _sections(p.stdout)
    assert "clean" not in sections["Images"]
    assert sections["Clean up"] == ["clean", "clean-stores"]
    text = ANSI.sub("", p.stdout)
    assert re.search(r"clean\s+.*keeps your stores", text) and re.search(r"clean-stores\s+.*your data", text)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make browser)")
def test_make_browser_prints_the_version_without_the_wrappers_shell_error():
    """Debian's /usr/bin/chromium wrapper prints `[: unexpected operator` in containers."""
    p = _make("browser")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Chromium ") and "unexpected operator" not in p.stdout + p.stderr


@pytest.mark.slow
def test_install_prints_no_build_backend_warning(tmp_path):
    """`make install` showed setuptools' BuildBackendWarning ("Editable installation ...")."""
    recipe = _make("-n", "install", f"VENV={tmp_path / 'venv'}", cwd=ROOT).stdout
    line = next(x for x in recipe.splitlines() if " install " in x and " -e " in x)
    env = dict(os.environ)
    for word in shlex.split(line):  # what the recipe sets before it calls pip
        if "=" not in word or word.startswith("-"):
            break
        name, _, value = word.partition("=")
        env[name] = value
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    pip = Path(sys.executable).parent / "pip"  # a pip that forwards backend warnings (this venv's)
    p = subprocess.run(
        [str(pip), "--python", str(target / "bin" / "python"), "install", "-q", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "BuildBackendWarning" not in p.stdout + p.stderr, (p.stdout + p.stderr)[-2000:]
