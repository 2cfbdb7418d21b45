"""Containers: the pipeline in containers against subprocesses, container start cost, image builds.

(a) The pipeline as ``make run`` builds it (CPU, one candidate at a time), on the demo source,
    with a folder store, run twice in this process on the same data: kfp.local's
    SubprocessRunner (what ``make run`` does), then its DockerRunner with every task in the
    pipeline image as uid 10001 (what ``make e2e`` does, there with S3). Ratio (b)/(a); the
    goal is <= 1.3x.
(b) Per-task container start overhead: ``docker run --rm IMAGE true`` against ``sh -c true``,
    and ``python3 -c 'import kfp'`` in a container against the same on the host.
(c) Image builds with images/build.sh: cold (BuildKit cache and pip cache pruned, the base
    image kept; the base itself is timed by images/base.sh when it is built), warm with no
    change, and warm after a code change (a copy of the tree with one source file touched).

Needs a running engine and the images (make images); prints SKIP otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO

VERSION = next(
    line.split('"')[1]
    for line in (REPO / "pyproject.toml").read_text().splitlines()
    if line.startswith("version")
)
PIPELINE_IMAGE = f"hhpulse-pipeline:{VERSION}"
SERVING_IMAGE = f"hhpulse-serving:{VERSION}"
ENGINE = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def _ready() -> bool:
    if subprocess.run([ENGINE, "info"], capture_output=True).returncode != 0:
        print("SKIP: no container engine runs here (make images starts one)")
        return False
    for image in (PIPELINE_IMAGE, SERVING_IMAGE):
        if subprocess.run([ENGINE, "image", "inspect", image], capture_output=True).returncode != 0:
            print(f"SKIP: {image} is not built (make images)")
            return False
    return True


def _pipeline_run(runner: str, root: Path) -> tuple[float, int]:
    """One whole run; returns (seconds, task containers that exited 0) (0 containers for subprocesses)."""
    from kfp import local
    from pipelines.e2e import UID, ContainerWatch
    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    root.mkdir(parents=True)
    root.chmod(0o777)
    if runner == "docker":
        r = local.DockerRunner(network_mode="host", user=UID, environment={"TMPDIR": "/tmp"})
    else:
        r = local.SubprocessRunner(use_venv=False)
    local.init(runner=r, pipeline_root=str(root), raise_on_error=True)
    # the pipeline of `make run` (pipelines/local.py), on a fresh folder store under the pipeline
    # root (DockerRunner mounts that root into every task container at the same path)
    pipeline = build_pipeline(ClusterOptions(use_gpu=False, parallelism=1))
    watch = None
    if runner == "docker":
        from components._image import PIPELINE_IMAGE as named  # the image the components name

        subprocess.run([ENGINE, "tag", PIPELINE_IMAGE, named], check=True)
        watch = ContainerWatch(named)
    old = os.umask(0)
    start = time.perf_counter()
    try:
        pipeline(
            store=str(root / "store"),
            s3_endpoint="",
            source="demo",
            queries=[],
            area="",
            deploy_mode="render",
            device="auto",
        )
    finally:
        seconds = time.perf_counter() - start
        os.umask(old)
        if watch:
            watch.close()
    if watch is None:
        return seconds, 0
    bad = {c: code for c, code in watch.exits.items() if code != 0}
    if bad or not watch.exits:
        raise RuntimeError(f"task containers failed: {bad or 'none ran'}")
    return seconds, len(watch.exits)


def _timed(cmd: list[str], n: int) -> float:
    runs = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _build(env: dict[str, str], cwd: Path, tags: tuple[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "images/build.sh", *tags], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"images/build.sh failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _tree_copy(dest: Path) -> None:
    """The build context of this tree (tracked and untracked, not ignored files), without .git."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())


def main() -> None:
    if not _ready():
        return
    logging.getLogger("kfp").setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONPATH", f"{REPO / 'src'}:{REPO}")
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-containers-", dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)  # uid 10001 in the task containers must reach the pipeline root
        print(f"(a) the pipeline (demo source, folder store): DockerRunner ({PIPELINE_IMAGE}, uid 10001) ...")
        dock_s, tasks = _pipeline_run("docker", Path(tmp) / "docker")
        print(f"    {dock_s:.1f} s, {tasks} task containers, all exited 0", flush=True)
        print("    the same under kfp.local's SubprocessRunner ...", flush=True)
        sub_s, _ = _pipeline_run("subprocess", Path(tmp) / "subprocess")
        print(f"    {sub_s:.1f} s", flush=True)
    print(
        f"(a) containerized / subprocess run: {dock_s / sub_s:.2f}x (goal <= 1.3x); "
        f"+{(dock_s - sub_s) / tasks:.1f} s per task"
    )

    print("(b) per-task container start ...", flush=True)
    n = 5
    bare = _timed(["sh", "-c", "true"], n)
    run_true = _timed(
        [ENGINE, "run", "--rm", "--network", "host", "--user", "10001:10001", PIPELINE_IMAGE, "true"], n
    )
    host_kfp = _timed([sys.executable, "-c", "import kfp"], n)
    cont_kfp = _timed(
        [ENGINE, "run", "--rm", "--network", "host", PIPELINE_IMAGE, "python3", "-c", "import kfp"], n
    )
    print(f"    docker run --rm {PIPELINE_IMAGE} true: {run_true:.2f} s (sh -c true: {bare * 1000:.0f} ms)")
    print(
        f"    python3 -c 'import kfp': {cont_kfp:.2f} s in a container, {host_kfp:.2f} s on the host "
        f"(+{cont_kfp - host_kfp:.2f} s per task)"
    )

    print("(c) image builds with images/build.sh ...", flush=True)
    aliases = [f"ghcr.io/hhpulse/hhpulse-pipeline:{VERSION}"]
    for tag in (PIPELINE_IMAGE, SERVING_IMAGE, *aliases):
        subprocess.run([ENGINE, "rmi", tag], capture_output=True)
    subprocess.run([ENGINE, "builder", "prune", "-af"], capture_output=True, check=True)
    tags = (PIPELINE_IMAGE, SERVING_IMAGE)
    cold = _build({}, REPO, tags)
    print(f"    cold (no build cache, base kept): {cold:.0f} s", flush=True)
    warm = _build({}, REPO, tags)
    print(f"    warm, nothing changed: {warm:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-context-") as ctx:
        _tree_copy(Path(ctx))
        init = Path(ctx) / "src" / "hhpulse" / "__init__.py"
        init.write_text(init.read_text() + "\n# bench: a code change\n")
        bench_tags = (f"hhpulse-pipeline:{VERSION}-bench", f"hhpulse-serving:{VERSION}-bench")
        code = _build({}, Path(ctx), bench_tags)
        for tag in bench_tags:
            subprocess.run([ENGINE, "rmi", tag], capture_output=True)
    print(f"    warm, one source file changed: {code:.0f} s")
    print(f"(c) cold / warm-after-a-code-change build: {cold / code:.1f}x")
