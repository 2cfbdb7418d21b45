"""``make e2e``: the cluster's path on this machine, in real containers, over S3.

1. **s3**: moto's S3 server on 127.0.0.1 stands in for MinIO and holds the store.
2. **pipeline**: the compiled pipeline (``pipelines/hhpulse.yaml``, as committed) runs under
   kfp.local's ``DockerRunner``: every task in its own container from the pipeline image, as
   uid 10001, on the host's network (the demo hh.ru emulator and S3 on loopback). Its deploy
   step renders the InferenceService into the store. kfp.local assumes success when a container
   is gone before it reads the exit code, so every task container's real exit code is taken from
   the engine's event stream, and the run's outputs are checked in the store.
3. **storage**: KServe's own storage-initializer code (``kserve-storage``, the version of
   kserve) downloads the rendered InferenceService's ``STORAGE_URI`` from S3 into a folder.
4. **serving**: the serving image runs with that folder read-only at ``/mnt/models``, a
   read-only root filesystem with a tmpfs ``/tmp``, uid 10001, no capabilities, and the
   InferenceService's args and env, in its own network namespace with port 8080 published on
   127.0.0.1 (like a pod); it must report ``/v2/health/ready``.
5. **compare**: v1 and v2 answers for a handful of texts must equal ``hhpulse predict`` on the
   host, cohorts and probabilities to the printed digits (6 decimals); the predictor's
   ``/metrics`` has hhpulse's counters, input histograms and ``hhpulse_model_info``.
6. **prediction log**: the serving image runs ``hhpulse logsink`` as the chart's Deployment
   says (command, args, uid 10001, read-only root), on the host's network (S3 on loopback).
   This driver plays KServe's agent: for each call to the predictor it posts the request
   event, and for a 200 the response event, with the agent's CloudEvent headers and the raw
   bodies (responses of one call out of order on purpose; a refused call has no response
   event). On SIGTERM the sink writes its batch; the served log read back from S3 must hold
   one record per instance answered, with the predictor's cohorts and probabilities, the
   vacancy ids the caller sent, and the published model version.

Prints each stage's wall time; exits non-zero on any failed task container or mismatch.

    python -m pipelines.e2e --engine /usr/bin/docker --storage-python PY \\
        --pipeline-image hhpulse-pipeline:0.1.0 --serving-image hhpulse-serving:0.1.0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "hhpulse.yaml"
UID = "10001:10001"
BUCKET = "hhpulse-e2e"
S3_ENV = {"AWS_ACCESS_KEY_ID": "e2e", "AWS_SECRET_ACCESS_KEY": "e2e", "AWS_DEFAULT_REGION": "us-east-1"}
DIGITS = 6  # hhpulse prints probabilities rounded to 6 decimals (ModelBundle.predict)
# the sink's in-cluster URL the chart gives the InferenceService's logger (release hhpulse in hhpulse)
LOGGER_URL = "http://hhpulse-logsink.hhpulse.svc.cluster.local"
# who KServe's agent in that InferenceService's pods says it is (ce-inferenceservicename, ce-namespace):
# the sink the chart renders takes events from it alone
AGENT = {"inference_service": "hhpulse", "namespace": "hhpulse"}

# a handful of vacancies: plain responsibility texts, and full records with the optional fields
TEXTS: list[Any] = [
    "Разработка backend-сервисов на Python, проектирование API, code review",
    "Доставка заказов клиентам по городу на личном автомобиле",
    "Ведение бухгалтерского учёта, подготовка отчётности, работа в 1С",
    "Консультирование покупателей в торговом зале, выкладка товара, работа на кассе",
    "Построение моделей машинного обучения, анализ данных, <highlighttext>SQL</highlighttext>",
    "Руководство командой разработки, планирование релизов",
]
RECORDS = [
    {"responsibility": "Руководство командой", "name": "Тимлид", "requirement": "Опыт от 5 лет"},
    {"responsibility": "Уборка помещений", "name": "Уборщица", "requirement": "Ответственность"},
]


class E2EError(RuntimeError):
    """A stage failed: the message says what and where to look."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def stage(name: str, times: dict[str, float]) -> Iterator[None]:
    print(f"\n== e2e: {name}", flush=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        times[name] = time.perf_counter() - start
        print(f"== e2e: {name}: {times[name]:.1f} s", flush=True)


def engine(client: str, *args: str, check: bool = True, capture: bool = True) -> str:
    proc = subprocess.run([client, *args], capture_output=capture, text=True)
    if check and proc.returncode != 0:
        raise E2EError(f"{client} {' '.join(args[:3])} ...: {(proc.stderr or '').strip()}")
    return (proc.stdout or "").strip()


# -- 1. S3 ------------------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per S3 request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs())


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


# -- 2. the compiled pipeline in containers ------------------------------------------------------


def compiled_image(compiled: Path) -> str:
    """The one image every executor of the compiled pipeline names."""
    import yaml

    docs = list(yaml.safe_load_all(compiled.read_text()))
    executors = docs[0]["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    if len(images) != 1:
        raise E2EError(f"{compiled}: expected one pipeline image, found {sorted(images)}")
    return images.pop()


class ContainerWatch:
    """Records every container of one image that starts and dies, with its real exit code."""

    def __init__(self, image: str) -> None:
        import docker

        self.image = image
        self.client = docker.from_env()
        self.started: dict[str, str] = {}
        self.exits: dict[str, int] = {}
        self._stream = self.client.events(
            decode=True, filters={"type": "container", "event": ["start", "die"]}
        )
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for ev in self._stream:
                attrs = ev.get("Actor", {}).get("Attributes", {})
                if attrs.get("image") != self.image:
                    continue
                cid = ev.get("id", "")[:12]
                if ev.get("Action") == "start":
                    self.started[cid] = attrs.get("name", cid)
                elif ev.get("Action") == "die":
                    self.exits[cid] = int(attrs.get("exitCode", "-1"))

    def close(self, wait_s: float = 10.0) -> None:
        deadline = time.monotonic() + wait_s
        while set(self.started) - set(self.exits) and time.monotonic() < deadline:
            time.sleep(0.2)  # a die event may trail the container's end
        self._stream.close()
        self.client.close()


def run_compiled_pipeline(
    compiled: Path, pipeline_image: str, serving_image: str, endpoint: str, work: Path, client: str
) -> dict[str, Any]:
    from kfp import components, local

    image = compiled_image(compiled)
    if image != pipeline_image:
        # the committed YAML names the registry image; run exactly that file on the local build
        engine(client, "tag", pipeline_image, image)
        print(f"tagged {pipeline_image} as {image} (the image the compiled pipeline names)")
    root = work / "kfp-root"
    root.mkdir(parents=True)
    root.chmod(0o777)
    local.init(
        runner=local.DockerRunner(network_mode="host", user=UID, environment=dict(S3_ENV)),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(compiled))
    store = f"s3://{BUCKET}/store"
    watch = ContainerWatch(image)
    old_umask = os.umask(0)  # kfp.local makes each task's output folders on the host; uid 10001 writes there
    start = time.perf_counter()
    error: Exception | None = None
    try:
        pipeline(
            store=store,
            s3_endpoint=endpoint,
            source="demo",
            queries=[],
            area="",
            deploy_mode="render",
            serving_image=serving_image,
            logger_url=LOGGER_URL,
        )
    except Exception as exc:  # reported with the containers' exit codes below
        error = exc
    finally:
        os.umask(old_umask)
        watch.close()
    seconds = time.perf_counter() - start
    failed = {watch.started.get(c, c): code for c, code in watch.exits.items() if code != 0}
    unfinished = sorted(set(watch.started) - set(watch.exits))
    print(
        f"{len(watch.started)} task containers from {image} as uid {UID}: "
        f"{sum(1 for c in watch.exits.values() if c == 0)} exited 0, {len(failed)} failed"
    )
    if error or failed or unfinished or not watch.started:
        raise E2EError(
            f"pipeline run failed: {error or ''} failed containers {failed}, no exit code for {unfinished}"
            + ("" if watch.started else f"; no container of {image} ran")
        )
    return {"store": store, "containers": len(watch.started), "seconds": seconds}


def check_inferenceservice(isvc: dict[str, Any]) -> None:
    """The rendered InferenceService has KServe's logger (to the sink) and Prometheus scraping."""
    from hhpulse.flows.deploy import PROMETHEUS_ANNOTATIONS

    logger = isvc["spec"]["predictor"].get("logger")
    if logger != {"mode": "all", "url": LOGGER_URL}:
        raise E2EError(f"the InferenceService's logger is {logger}, not mode all to {LOGGER_URL}")
    ann = isvc["metadata"].get("annotations", {})
    if any(ann.get(k) != v for k, v in PROMETHEUS_ANNOTATIONS.items()):
        raise E2EError(f"the InferenceService lacks KServe's Prometheus scraping annotations: {ann}")
    print(f"InferenceService: logger mode all -> {LOGGER_URL}; Prometheus scraping on :8080/metrics")


def read_outputs(endpoint: str, store: str) -> dict[str, Any]:
    """The champion, its published bundle and the rendered InferenceService, from the store."""
    import yaml

    s3 = s3_client(endpoint)
    prefix = store.split(f"s3://{BUCKET}/", 1)[1]

    def get(key: str) -> bytes:
        try:
            return s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
        except s3.exceptions.NoSuchKey:
            raise E2EError(f"the pipeline left no {store}/{key}") from None

    champion = json.loads(get("models/hhpulse/champion.json"))
    version = champion["version"]
    isvc = yaml.safe_load(get(f"deploy/{version}/inferenceservice.yaml"))
    runs = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/runs/").get("Contents", [])
    outcomes = [json.loads(get(o["Key"].split(prefix + "/", 1)[1])) for o in runs]
    states = [o.get("state") for o in outcomes]
    print(f"champion {version}; InferenceService rendered; run outcome {states}")
    if not outcomes or not all(o.get("succeeded") is True for o in outcomes):
        raise E2EError(f"the run's recorded outcome is not a success: {outcomes}")
    return {"version": version, "isvc": isvc}


# -- 3. KServe's storage initializer ---------------------------------------------------------------

DOWNLOAD = "import sys; from kserve_storage import Storage; print(Storage.download(sys.argv[1], sys.argv[2]))"


def predictor_container(isvc: dict[str, Any]) -> dict[str, Any]:
    containers = isvc["spec"]["predictor"]["containers"]
    (container,) = [c for c in containers if c["name"] == "kserve-container"]
    return container


def storage_initializer(storage_python: str, uri: str, out: Path, endpoint: str) -> None:
    env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": endpoint, "S3_USE_HTTPS": "0"}
    proc = subprocess.run(
        [storage_python, "-c", DOWNLOAD, uri, str(out)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise E2EError(f"kserve-storage could not download {uri}:\n{proc.stderr[-3000:]}")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    print(f"kserve-storage downloaded {uri}: {len(files)} files")


# -- 4. the serving image ---------------------------------------------------------------------------


def start_predictor(client: str, image: str, container: dict[str, Any], models: Path, port: int) -> str:
    """docker run the predictor as the InferenceService's pod would run; returns the container name."""
    name = f"hhpulse-e2e-serving-{os.getpid()}"
    cmd = ["run", "-d", "--name", name, "--user", UID, "--tmpfs", "/tmp:rw,size=64m"]
    cmd += ["-v", f"{models}:/mnt/models:ro", "-p", f"127.0.0.1:{port}:8080"]
    cmd += pod_flags(container, {})
    engine(client, *cmd, image, *container.get("args", []))
    return name


def pod_flags(container: dict[str, Any], env_defaults: dict[str, str]) -> list[str]:
    """The container spec's hardening, environment and memory limit as `docker run` flags
    (``env_defaults``: values for env entries that come from a Secret)."""
    sc = container.get("securityContext", {})
    flags: list[str] = []
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    for env in container.get("env", []):
        flags += ["-e", f"{env['name']}={env.get('value', env_defaults.get(env['name']))}"]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        flags += ["--memory", limits["memory"].replace("Gi", "g").replace("Mi", "m")]
    return flags


def wait_ready(client: str, name: str, base: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                return
        if engine(client, "inspect", "-f", "{{.State.Running}}", name, check=False) != "true":
            break
        time.sleep(0.5)
    logs = subprocess.run([client, "logs", "--tail", "40", name], capture_output=True, text=True)
    raise E2EError(f"the predictor did not become ready:\n{logs.stdout}{logs.stderr}")


def post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise E2EError(f"POST {url}: {exc.code} {exc.read().decode(errors='replace')}") from None


# -- 5. compare with the host --------------------------------------------------------------------


def host_predict(models: Path, instances: list[Any], work: Path) -> list[dict[str, Any]]:
    src, out = work / "instances.jsonl", work / "host_predictions.jsonl"
    rows = [{"responsibility": i} if isinstance(i, str) else i for i in instances]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    hhpulse = Path(sys.executable).with_name("hhpulse")
    cmd = [str(hhpulse) if hhpulse.exists() else "hhpulse", "predict", "--model", str(models)]
    proc = subprocess.run([*cmd, "--input", str(src), "--output", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise E2EError(f"hhpulse predict on the host failed: {proc.stderr}")
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def printed(p: float) -> str:
    return f"{round(float(p), DIGITS):.{DIGITS}f}"


def v2_rows(resp: dict[str, Any], tasks: list[str], cohorts: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = {o["name"]: o for o in resp["outputs"]}
    n = out[f"{tasks[0]}_cohort"]["shape"][0]
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for t in tasks:
        probs, k = out[f"{t}_probabilities"]["data"], len(cohorts[t])
        for i in range(n):
            rows[i][t] = {
                "cohort": out[f"{t}_cohort"]["data"][i],
                "probabilities": dict(zip(cohorts[t], probs[i * k : (i + 1) * k], strict=True)),
            }
    return rows


def compare(host: list[dict[str, Any]], served: list[dict[str, Any]], tasks: list[str], what: str) -> int:
    """Count the rows whose cohorts or printed probabilities differ; print each difference."""
    if len(host) != len(served):
        print(f"MISMATCH {what}: {len(served)} answers for {len(host)} instances")
        return max(1, len(host))
    bad = 0
    for i, (h, s) in enumerate(zip(host, served, strict=True)):
        for t in tasks:
            hp = {c: printed(v) for c, v in h[t]["probabilities"].items()}
            sp = {c: printed(v) for c, v in s[t]["probabilities"].items()}
            if h[t]["cohort"] != s[t]["cohort"] or hp != sp:
                bad += 1
                print(f"MISMATCH {what} row {i} {t}: host {h[t]['cohort']} {hp} != {s[t]['cohort']} {sp}")
    return bad


def check_answers(base: str, models: Path, work: Path) -> int:
    cohorts = json.loads((models / "cohorts.json").read_text())
    tasks = list(cohorts)
    instances: list[Any] = [*TEXTS, *RECORDS]
    host = host_predict(models, instances, work)
    v1 = post(f"{base}/v1/models/hhpulse:predict", {"instances": instances})["predictions"]
    bad = compare(host, v1, tasks, "v1")
    plain = post(
        f"{base}/v2/models/hhpulse/infer",
        {"inputs": [{"name": "responsibility", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]},
    )
    full = post(
        f"{base}/v2/models/hhpulse/infer",
        {
            "inputs": [
                {"name": f, "datatype": "BYTES", "shape": [len(RECORDS)], "data": [r[f] for r in RECORDS]}
                for f in ("responsibility", "name", "requirement")
            ]
        },
    )
    bad += compare(host, v2_rows(plain, tasks, cohorts) + v2_rows(full, tasks, cohorts), tasks, "v2")
    n = len(instances)
    print(f"v1 and v2 against host `hhpulse predict`: {n} instances x {len(tasks)} tasks, {bad} mismatches")
    for inst, h in zip(instances, host, strict=True):
        text = inst if isinstance(inst, str) else inst["responsibility"]
        print(f"  {text[:48]:<48} " + "  ".join(f"{t}={h[t]['cohort']}" for t in tasks))
    return bad


def check_metrics(base: str, version: str) -> int:
    """The predictor's /metrics after the calls: hhpulse's counters, input histograms and model info."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    wanted = [
        f'hhpulse_model_info{{model="hhpulse",version="{version}"}} 1.0',
        'hhpulse_input_chars_count{field="responsibility"}',
        'hhpulse_input_known_term_share_count{field="responsibility"}',
        "hhpulse_predicted_cohorts_total{",
    ]
    missing = [w for w in wanted if w not in text]
    for w in missing:
        print(f"MISSING from the predictor's /metrics: {w}")
    print(f"predictor /metrics: {len(wanted) - len(missing)} of {len(wanted)} hhpulse series present")
    return len(missing)


# -- 6. the prediction log: hhpulse logsink, and this driver as KServe's agent -------------------------


def logsink_container(store: str, endpoint: str) -> dict[str, Any]:
    """The log sink's container as the chart renders it (logger.enabled) for this store."""
    import helm_python as helm
    import yaml

    values = {"store": {"uri": store, "endpoint": endpoint}, "logger": {"enabled": True}}
    out = helm.Chart.load(str(REPO / "helm" / "hhpulse")).render(values, name="hhpulse", namespace="hhpulse")
    texts = [text for path, text in out.items() if path.endswith(".yaml")]  # not NOTES.txt
    docs = [d for text in texts for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    (deployment,) = [
        d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "hhpulse-logsink"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def start_logsink(client: str, image: str, container: dict[str, Any], port: int) -> str:
    """docker run the sink as its pod would run, on the host's network (S3 is on loopback here):
    the chart's command and args, bound to 127.0.0.1:``port``; the Secret's keys are S3_ENV's."""
    name = f"hhpulse-e2e-logsink-{os.getpid()}"
    cmd = ["run", "-d", "--name", name, "--network", "host", "--user", UID, "--tmpfs", "/tmp:rw,size=16m"]
    cmd += pod_flags(container, S3_ENV)
    args = [
        a for a in container.get("args", []) if not a.startswith(("--host=", "--port=", "--metrics-port="))
    ]
    args += ["--host=127.0.0.1", f"--port={port}", f"--metrics-port={free_port()}", "--drain-seconds=1"]
    program, *rest = container["command"]
    engine(client, *cmd, "--entrypoint", program, image, *rest, *args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r,
        ):
            if r.status == 200:
                return name
        if engine(client, "inspect", "-f", "{{.State.Running}}", name, check=False) != "true":
            break
        time.sleep(0.3)
    logs = subprocess.run([client, "logs", "--tail", "40", name], capture_output=True, text=True)
    raise E2EError(f"the log sink did not become ready:\n{logs.stdout}{logs.stderr}")


def _send(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def agent_call(predict_url: str, sink: str, body: dict[str, Any]) -> tuple[int, bytes, Any]:
    """One call through "the agent": the request event to the sink, the call to the predictor;
    returns (status, response body, the response event to post, or None when not 200 – KServe
    logs a response only for a 200)."""
    import uuid
    from datetime import datetime, timezone

    from hhpulse.watch.logsink import REQUEST, RESPONSE, agent_headers

    raw = json.dumps(body, ensure_ascii=False).encode()
    event_id = str(uuid.uuid4())
    status, answer = _send(
        sink, raw, agent_headers(event_id, REQUEST, time=datetime.now(timezone.utc), **AGENT)
    )
    if status != 200:
        raise E2EError(f"the sink refused a request event: {status} {answer.decode(errors='replace')}")
    status, response = _send(predict_url, raw, {"Content-Type": "application/json"})
    if status != 200:
        return status, response, None
    headers = agent_headers(event_id, RESPONSE, time=datetime.now(timezone.utc), **AGENT)
    return status, response, (event_id, response, headers)


def check_log(base: str, sink: str, client: str, name: str, endpoint: str, store: str, version: str) -> int:
    """Calls through the agent, the sink stopped (SIGTERM), the served log compared with the answers."""
    from hhpulse.data.store import S3Store
    from hhpulse.watch.served import read_served

    with_ids = [
        {**({"responsibility": t} if isinstance(t, str) else t), "id": str(91000000 + i)}
        for i, t in enumerate([*TEXTS, *RECORDS])
    ]
    calls = [
        (f"{base}/v1/models/hhpulse:predict", {"instances": with_ids}),
        (f"{base}/v1/models/hhpulse:predict", {"instances": TEXTS[:2]}),
        (
            f"{base}/v2/models/hhpulse/infer",
            {"inputs": [{"name": "responsibility", "datatype": "BYTES", "shape": [3], "data": TEXTS[:3]}]},
        ),
        (f"{base}/v1/models/hhpulse:predict", {"instances": [5]}),  # refused: no response event
    ]
    expected: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    later = []
    for url, body in calls:
        status, response, event = agent_call(url, sink, body)
        if event is None:
            print(f"call refused by the predictor ({status}): the agent sends no response event")
            continue
        later.append(event)
        doc = json.loads(response)
        rows = (
            doc["predictions"] if "predictions" in doc else v2_rows(doc, ["salary", "demand"], _cohorts(doc))
        )
        instances = body.get("instances") or [{"responsibility": t} for t in body["inputs"][0]["data"]]
        expected[event[0]] = (body, [{"instance": i, **r} for i, r in zip(instances, rows, strict=True)])
    for event_id, response, headers in reversed(later):  # the agent's workers race: order is not kept
        status, answer = _send(sink, response, headers)
        if status != 200 or json.loads(answer)["status"] != "paired":
            raise E2EError(f"the sink did not pair response {event_id}: {status} {answer!r}")
    # another InferenceService's logger, misrouted to this sink: refused, never written
    stranger = {**later[0][2], "Ce-Inferenceservicename": "another-model", "Ce-Id": "stranger"}
    status, answer = _send(sink, later[0][1], stranger)
    if status != 403:
        raise E2EError(f"the sink took an event from another InferenceService: {status} {answer!r}")
    engine(client, "stop", "-t", "30", name)
    code = engine(client, "inspect", "-f", "{{.State.ExitCode}}", name)
    tail = engine(client, "logs", "--tail", "3", name)
    print(f"log sink stopped with exit code {code}: {tail.splitlines()[-1] if tail else ''}")
    os.environ.update(S3_ENV)  # this driver reads the log as hhpulse monitor would, with the same keys
    records = list(read_served(S3Store(store, endpoint_url=endpoint)))
    bad = 0 if code == "0" else 1
    by_request: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_request.setdefault(rec["request_id"], []).append(rec)
    for event_id, (_, rows) in expected.items():
        got = by_request.pop(event_id, [])
        if len(got) != len(rows):
            print(f"MISMATCH log {event_id}: {len(got)} records for {len(rows)} instances")
            bad += 1
            continue
        bad += compare(rows, got, ["salary", "demand"], f"log {event_id[:8]}")
        for row, rec in zip(rows, got, strict=True):
            inst = row["instance"]
            vid = inst.get("id") if isinstance(inst, dict) else None
            if rec["id"] != vid or rec["model_version"] != version:
                print(f"MISMATCH log id/version: {rec['id']} {rec['model_version']} != {vid} {version}")
                bad += 1
    if by_request:
        print(f"MISMATCH log: records of requests never answered: {sorted(by_request)}")
        bad += 1
    ids = sum(1 for r in records if r["id"])
    print(
        f"served log: {len(records)} records ({ids} with a vacancy id) in {store}/served/, {bad} mismatches"
    )
    return bad


def _cohorts(v2: dict[str, Any]) -> dict[str, list[str]]:
    return {
        o["name"].rsplit("_", 1)[0]: o["parameters"]["cohorts"].split(",")
        for o in v2["outputs"]
        if o["name"].endswith("_probabilities")
    }


# -- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.e2e", description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=shutil.which("docker") or "docker", help="the docker client")
    ap.add_argument("--pipeline-image", required=True)
    ap.add_argument("--serving-image", required=True)
    ap.add_argument(
        "--storage-python", default=sys.executable, help="a python with kserve-storage [%(default)s]"
    )
    ap.add_argument("--compiled", type=Path, default=COMPILED, help="[pipelines/hhpulse.yaml]")
    ap.add_argument("--work", type=Path, default=REPO / ".hhpulse" / "e2e", help="[.hhpulse/e2e]")
    ap.add_argument("--keep", action="store_true", help="leave the predictor container running")
    args = ap.parse_args(argv)
    from pipelines.local import PrivateTmpdir

    # what kfp.local, the storage initializer and the host commands leave in the temp
    # directory goes with this run's own, removed at the end (see pipelines.local)
    with PrivateTmpdir("hhpulse-e2e-"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    times: dict[str, float] = {}
    predictor = sink = None
    bad = 0
    try:
        with contextlib.ExitStack() as s3_up:
            with stage("s3 server (moto on 127.0.0.1)", times):
                endpoint = s3_up.enter_context(s3_server())
                s3_client(endpoint).create_bucket(Bucket=BUCKET)
                print(f"moto S3 on {endpoint}, bucket {BUCKET}")
            with stage("pipeline (compiled, DockerRunner)", times):
                run = run_compiled_pipeline(
                    args.compiled, args.pipeline_image, args.serving_image, endpoint, work, args.engine
                )
                outputs = read_outputs(endpoint, run["store"])
            container = predictor_container(outputs["isvc"])
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            if container["image"] != args.serving_image:
                raise E2EError(f"the InferenceService runs {container['image']}, not {args.serving_image}")
            with stage("storage initializer (kserve-storage)", times):
                models = work / "mnt-models"
                storage_initializer(args.storage_python, env["STORAGE_URI"], models, endpoint)
            check_inferenceservice(outputs["isvc"])
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            with stage("predictor start (serving image, until /v2/health/ready)", times):
                predictor = start_predictor(args.engine, args.serving_image, container, models, port)
                wait_ready(args.engine, predictor, base)
                print(
                    f"{args.serving_image} ready on {base} (read-only rootfs, uid {UID}, /mnt/models read-only)"
                )
            with stage("v1/v2 vs host predict", times):
                bad = check_answers(base, models, work)
                bad += check_metrics(base, outputs["version"])
            with stage("prediction log (logsink container, the agent's events, S3)", times):
                sink_port = free_port()
                sink = start_logsink(
                    args.engine, args.serving_image, logsink_container(run["store"], endpoint), sink_port
                )
                bad += check_log(
                    base,
                    f"http://127.0.0.1:{sink_port}/",
                    args.engine,
                    sink,
                    endpoint,
                    run["store"],
                    outputs["version"],
                )
    except E2EError as exc:
        print(f"\ne2e FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if predictor and not args.keep:
            engine(args.engine, "rm", "-f", predictor, check=False)
        if sink and not args.keep:
            engine(args.engine, "rm", "-f", sink, check=False)
    print("\ne2e stage times:")
    for name, seconds in times.items():
        print(f"  {seconds:7.1f} s  {name}")
    if bad:
        print(
            f"e2e FAILED: {bad} mismatches (predictor vs host `hhpulse predict`, its /metrics, the served log)",
            file=sys.stderr,
        )
        return 1
    print("e2e OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
