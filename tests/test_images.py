"""The images: Dockerfile rules, and hygiene checks on the built images (make images).

The built-image tests skip when no engine runs or the images are not built, unless
HHPULSE_REQUIRE_IMAGES=1 (CI builds them first), which turns that skip into a failure.
They look at what ships: `docker save` layers (every file of every layer, the build's
intermediate states included), `docker history`, the labels, and the image run as itself.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

IMAGES = {
    "pipeline": REPO / "images" / "pipeline.Dockerfile",
    "serving": REPO / "images" / "serving.Dockerfile",
}
VERSION = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
TAGS = {
    "pipeline": os.environ.get("HHPULSE_PIPELINE_IMAGE", f"hhpulse-pipeline:{VERSION}"),
    "serving": os.environ.get("HHPULSE_SERVING_IMAGE", f"hhpulse-serving:{VERSION}"),
}
SERVING_MAX_BYTES = 800 * 10**6
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


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


# -- the Dockerfiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_rules(name):
    text = IMAGES[name].read_text()
    assert not text.startswith("# syntax="), (
        "a syntax line makes BuildKit pull a frontend image (offline builds fail)"
    )
    ins = instructions(IMAGES[name])
    args = {
        m.group(1): m.group(2) for k, line in ins if k == "ARG" and (m := re.match(r"ARG (\w+)=(\S+)", line))
    }
    froms = [line.split()[1] for k, line in ins if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert froms[0] == froms[-1] == "${BASE_IMAGE}", "the base is the build argument BASE_IMAGE"
    stages = {line.split()[3] for k, line in ins if k == "FROM" and len(line.split()) == 4}
    assert set(froms[1:-1]) <= stages | {"${BASE_IMAGE}"}, "stages start from the base or an earlier stage"
    assert ":" in args["BASE_IMAGE"] and not args["BASE_IMAGE"].endswith(":latest"), "unpinned base"
    users = [line for k, line in ins if k == "USER"]
    assert users and users[-1].split()[1].split(":")[0] not in ("root", "0"), "must end as a non-root user"
    final = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM") :]
    assert any(k == "USER" for k, _ in final), "the final stage must set USER"
    assert not any(k == "RUN" and "--mount=type=secret" in line for k, line in final), (
        "no secrets in the final stage"
    )
    for k, line in ins:
        if k in ("ENV", "ARG"):
            assert not re.search(r"(?i)(secret|password|token|access_key|cert)\w*=\S+", line), line
        if k in ("COPY", "ADD"):
            assert not re.search(
                r"(?i)(\.aws|credentials|\.env\b|id_rsa|\.pem|\.crt|pip\.conf|\.git\b)", line
            ), line
        if k == "RUN" and "pip install" in line:
            assert "--mount=type=secret,id=pip_ca" in line, "pip runs with the proxy CA as a BuildKit secret"
    labels = " ".join(line for k, line in final if k == "LABEL")
    for key in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_entry_points_and_extras():
    serving = instructions(IMAGES["serving"])
    assert serving[-1] == ("ENTRYPOINT", 'ENTRYPOINT ["python", "-m", "hhpulse.serving"]')
    assert any(
        "requirements.py pyproject.toml cpu,serve --without pyarrow deltalake " in line for _, line in serving
    )
    pipeline = instructions(IMAGES["pipeline"])
    assert any("requirements.py pyproject.toml gpu,pipeline " in line for _, line in pipeline)
    assert not any("xgboost-cpu" in line or "cpu," in line for _, line in pipeline), (
        "never both xgboost builds"
    )
    # KFP gives each task its own command; under Docker an ENTRYPOINT would swallow it
    assert not any(k == "ENTRYPOINT" for k, _ in pipeline)


def test_requirements_script_reads_pyproject():
    out = subprocess.run(
        [
            "python3",
            "images/requirements.py",
            "pyproject.toml",
            "cpu,serve",
            "--without",
            "pyarrow",
            "deltalake",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {re.match(r"[\w.-]+", r).group(0).lower() for r in out}
    assert {"kserve", "xgboost-cpu", "numpy", "razdel", "boto3"} <= names  # boto3: the log sink writes to S3
    assert not names & {"pyarrow", "deltalake", "kfp", "xgboost"}


# -- the built images --------------------------------------------------------------------------------


# Debian's client first (it builds with BuildKit, see images/engine.sh), then what PATH has
ENGINE_CANDIDATES = ("/usr/bin/docker", "docker", "podman")
ENGINE_PROBE_SECONDS = 30  # `docker info` against a daemon that does not answer


@functools.cache
def _engine() -> tuple[str | None, str]:
    """The first candidate engine whose ``info`` succeeds, and what was tried (for the skip).

    A candidate that is not installed, cannot be run, hangs or answers ``info`` with an error
    (a client without a daemon) is passed over: (None, why) when none runs.
    """
    tried = []
    for name in ENGINE_CANDIDATES:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path is None or not os.path.exists(path):
            tried.append(f"{name}: not installed")
            continue
        try:
            proc = subprocess.run(
                [path, "info"], capture_output=True, text=True, timeout=ENGINE_PROBE_SECONDS
            )
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        if proc.returncode == 0:
            return path, ""
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        tried.append(f"{path} info: {last[0][:200]}")
    return None, "; ".join(tried)


@functools.cache
def _built(name: str) -> tuple[str, dict]:
    engine, tried = _engine()
    why = None
    if engine is None:
        why = f"no container engine runs here (make images starts one): {tried}"
    else:
        proc = subprocess.run([engine, "image", "inspect", TAGS[name]], capture_output=True, text=True)
        if proc.returncode != 0:
            why = f"{TAGS[name]} is not built (make images)"
    if why:
        if os.environ.get("HHPULSE_REQUIRE_IMAGES") == "1":
            pytest.fail(f"HHPULSE_REQUIRE_IMAGES=1: {why}")
        pytest.skip(why)
    return engine, json.loads(proc.stdout)[0]


@pytest.fixture
def no_engine(tmp_path, monkeypatch):
    """A machine with no container engine: Debian's client absent, a PATH holding only a
    docker client that cannot reach a daemon (as a non-Debian CLI without an engine answers)
    and a podman that cannot be run; the probe's caches emptied before and after."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?' >&2\nexit 1\n"
    )
    docker.chmod(0o755)
    podman = bin_dir / "podman"
    podman.write_text("#!/no/such/interpreter\n")
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(
        sys.modules[__name__], "ENGINE_CANDIDATES", (str(tmp_path / "usr-bin-docker"), "docker", "podman")
    )
    _engine.cache_clear()
    _built.cache_clear()
    yield
    _engine.cache_clear()
    _built.cache_clear()


def test_the_engine_probe_without_an_engine_skips_with_the_reason(no_engine, monkeypatch):
    monkeypatch.delenv("HHPULSE_REQUIRE_IMAGES", raising=False)
    engine, tried = _engine()
    assert engine is None
    assert "usr-bin-docker: not installed" in tried
    assert "docker info: Cannot connect to the Docker daemon" in tried
    assert "podman: " in tried  # could not be run: passed over, no crash
    with pytest.raises(pytest.skip.Exception, match="no container engine runs here .*Cannot connect"):
        _built("serving")


def test_the_engine_probe_without_an_engine_fails_when_images_are_required(no_engine, monkeypatch):
    monkeypatch.setenv("HHPULSE_REQUIRE_IMAGES", "1")
    with pytest.raises(
        pytest.fail.Exception, match="HHPULSE_REQUIRE_IMAGES=1: no container engine runs here"
    ):
        _built("pipeline")


@functools.cache
def _layers(name: str) -> dict:
    """Every regular file of every layer of the saved image: {path: [(layer, size)]}, plus scan hits."""
    engine, _ = _built(name)
    secrets = _secret_needles()
    files: dict[str, list[int]] = {}
    hits: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        subprocess.run([engine, "save", "-o", str(archive), TAGS[name]], check=True)
        with tarfile.open(archive) as outer:
            for member in outer.getmembers():
                if not member.name.endswith("layer.tar") and not member.name.startswith("blobs/"):
                    continue
                if not member.isfile():
                    continue
                fh = outer.extractfile(member)
                try:
                    layer = tarfile.open(fileobj=fh, mode="r|*")  # noqa: SIM115 - closed by the with below
                except tarfile.ReadError:
                    continue  # a config blob, not a layer
                with layer:
                    for f in layer:
                        files.setdefault(f.name.lstrip("./"), []).append(f.size)
                        if f.isfile() and 0 < f.size <= 20 * 2**20:
                            data = layer.extractfile(f).read()
                            hits += [f"{f.name} ({what})" for what, needle in secrets if needle in data]
                            if not data.startswith(
                                b"\x7fELF"
                            ):  # key files are text (libgnutls embeds a test key)
                                hits += [
                                    f"{f.name} ({what})" for what, rx in SECRET_PATTERNS if rx.search(data)
                                ]
    return {"files": files, "hits": hits}


@functools.cache
def _proxy_certs() -> tuple[str, ...]:
    """The certificates in this machine's CA bundle that are not Debian's public ones: a proxy's CA."""
    if not HOST_CA.is_file():
        return ()

    def certs(text: str) -> list[str]:
        return [
            "".join(c.split()) for c in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END", text, re.S)
        ]

    public = set()
    for f in Path("/usr/share/ca-certificates").rglob("*.crt"):
        public.update(certs(f.read_text(errors="replace")))
    return tuple(c for c in certs(HOST_CA.read_text(errors="replace")) if c not in public)


def _secret_needles() -> list[tuple[str, bytes]]:
    needles = []
    for i, cert in enumerate(_proxy_certs()):
        needles.append((f"this machine's proxy CA #{i} (PEM)", cert[64:128].encode()))
        needles.append((f"this machine's proxy CA #{i} (DER)", base64.b64decode(cert)[64:128]))
    return needles


SECRET_PATTERNS = [
    ("an AWS secret key", re.compile(rb"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b")),
    (
        "a private key",
        re.compile(rb"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----\n[A-Za-z0-9/+]{40}"),
    ),
]


CREDENTIAL_FILES = re.compile(
    r"(^|/)(\.aws/credentials|\.netrc|\.pypirc|\.docker/config\.json|id_rsa|id_ed25519|\.git-credentials|"
    r"pip\.conf|\.env)$"
)
BUILD_TOOLS = re.compile(
    r"^(usr/)?(local/)?bin/(gcc|cc|c\+\+|g\+\+|clang|make|ld|as|cmake|cpp|rustc|cargo|go)(-[\d.]+)?$"
    r"|^opt/venv/bin/pip3?$|^opt/venv/lib/python[\d.]+/site-packages/pip/"
)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_runs_as_non_root(name):
    engine, meta = _built(name)
    assert meta["Config"]["User"] == "10001:10001"
    ep = ["--entrypoint", "id"] if meta["Config"].get("Entrypoint") else []
    out = subprocess.run(
        [engine, "run", "--rm", "--network", "none", *ep, TAGS[name], *([] if ep else ["id"]), "-u"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "10001"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_build_tools_credentials_ca_or_git_in_any_layer(name):
    layers = _layers(name)
    paths = layers["files"]
    assert paths, "no files found in the saved layers"
    tools = sorted(p for p in paths if BUILD_TOOLS.search(p))
    assert not tools, f"compilers or build tools in {TAGS[name]}: {tools[:10]}"
    creds = sorted(p for p in paths if CREDENTIAL_FILES.search(p))
    assert not creds, f"credential files in {TAGS[name]}: {creds}"
    git = sorted(p for p in paths if re.search(r"(^|/)\.git(/|$)", p))
    assert not git, f".git in {TAGS[name]}: {git[:5]}"
    assert not [p for p in paths if p.startswith(("src/", "root/.cache/", "run/secrets/"))], "build leftovers"
    assert not layers["hits"], f"secrets in {TAGS[name]}'s layers: {layers['hits']}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_history_holds_no_secrets(name):
    engine, _ = _built(name)
    history = subprocess.run(
        [engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", TAGS[name]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "BEGIN CERTIFICATE" not in history
    assert not re.search(r"(?i)(PIP_CERT|PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|AWS_SECRET|password)=", history)
    for cert in _proxy_certs():
        assert cert[64:128] not in history.replace("\n", "")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_oci_labels(name):
    _, meta = _built(name)
    labels = meta["Config"]["Labels"] or {}
    assert labels.get("org.opencontainers.image.version") == VERSION
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels.get("org.opencontainers.image.revision", ""))
    assert labels.get("org.opencontainers.image.source", "").startswith("https://")


@pytest.mark.slow
def test_serving_image_carries_only_the_predictor():
    _, meta = _built("serving")
    assert meta["Size"] <= SERVING_MAX_BYTES, f"{TAGS['serving']} is {meta['Size'] / 1e6:.0f} MB > 800 MB"
    site = {
        m.group(1).lower()
        for p in _layers("serving")["files"]
        if (m := re.match(r"opt/(?:venv/lib/python[\d.]+/site-packages|app)/([^/]+)/", p))
    }
    for absent in ("pyarrow", "deltalake", "kfp", "nvidia", "xgboost/lib/libxgboost-cuda"):
        assert absent not in site, f"{absent} is in the serving image"
    assert not [s for s in site if s.startswith(("nvidia", "torch", "cupy"))], (
        "CUDA libraries in the serving image"
    )
    for present in ("kserve", "kubernetes", "xgboost", "hhpulse", "boto3"):  # boto3: hhpulse logsink
        assert present in site, f"{present} is missing from the serving image"


@pytest.mark.slow
def test_pipeline_image_runs_a_kfp_command():
    """The known bug: an ENTRYPOINT swallowed the component's `sh -ec ...` under Docker."""
    engine, meta = _built("pipeline")
    assert not meta["Config"].get("Entrypoint")
    out = subprocess.run(
        [
            engine,
            "run",
            "--rm",
            "--network",
            "none",
            TAGS["pipeline"],
            "sh",
            "-ec",
            "python3 -c 'import kfp, components.train_candidate, pipelines.hhpulse_pipeline, xgboost; "
            "print(kfp.__version__, xgboost.__version__)' && hhpulse --help >/dev/null && echo ok",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "ok" and out.stdout.split()[0] == "2.17.0"
