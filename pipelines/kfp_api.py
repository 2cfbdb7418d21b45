"""A small client for the Kubeflow Pipelines REST API (v2beta1): upload, run, schedule.

Plain ``requests`` rather than ``kfp.Client``, so every request is explicit and tested
against a fake server that follows ``kfp-api-v2beta1.swagger.json``. It is idempotent
by name: uploading again adds a pipeline *version*; scheduling again replaces the
recurring run of the same name, so schedules are never duplicated.

Auth: a bearer token from ``$KF_PIPELINES_SA_TOKEN_PATH`` (a projected service-account
token, as in-cluster KFP clients use) or from the environment variable named by
``token_env``; and a ``namespace`` (a Kubeflow profile), which multi-user KFP requires.

Before anything else, :meth:`KfpApi.check_server` reads ``/apis/v2beta1/healthz``: the server's
version (``tag_name``) must be at least what the package needs (:func:`required_kfp_version`),
and a multi-user server must be given a namespace. Run parameters are converted to the types
the compiled pipeline declares (:func:`typed_parameters`), because KFP refuses a run or a
recurring run whose values do not have them (``backend/src/apiserver/template/v2_template.go``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

API = "/apis/v2beta1"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


class KfpApiError(RuntimeError):
    """The KFP API answered with an error."""


def _message(resp: requests.Response) -> str:
    """KFP's own message from an error body ({"error": ..., "message": ...}), or the text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict):  # grpc-gateway's {"code", "message"}, the upload handlers' {"error_message"}
        return str(body.get("message") or body.get("error_message") or body.get("error") or body)[:500]
    return resp.text[:500]


class CronError(ValueError):
    """The cron expression is not a valid KFP (6-field, seconds-first) expression."""


class ParameterError(ValueError):
    """A run parameter the compiled pipeline does not declare, or a value not of its declared type."""


# The oldest KFP backend that runs the compiled pipeline: dsl.Collected over a ParallelFor's
# outputs needs >= 2.14 (kubeflow/pipelines#11725); the whole run's deadline (a platform
# pipelineConfig.activeDeadlineSeconds) is new in 2.17, and older API servers refuse a package
# that has one (they unmarshal the platform spec strictly).
MIN_KFP_VERSION = (2, 14, 0)
MIN_KFP_VERSION_RUN_DEADLINE = (2, 17, 0)


def _docs(package: str | Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(Path(package).read_text(encoding="utf-8")) if d]


def required_kfp_version(package: str | Path) -> tuple[int, int, int]:
    """The oldest KFP backend version that accepts and runs ``package`` (a compiled pipeline)."""
    need = MIN_KFP_VERSION
    for doc in _docs(package)[1:]:  # the platform spec
        k8s = (doc.get("platforms") or {}).get("kubernetes") or {}
        if (k8s.get("pipelineConfig") or {}).get("activeDeadlineSeconds"):
            need = max(need, MIN_KFP_VERSION_RUN_DEADLINE)
    return need


def parse_version(tag: str) -> tuple[int, int, int] | None:
    """``2.17.0``, ``v2.16.1`` or ``2.15.0-rc.1`` as (2, 17, 0); None for ``unknown`` or a commit."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", tag or "")
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def _v(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def declared_parameters(package: str | Path) -> dict[str, str]:
    """The compiled pipeline's run parameters and their KFP types (STRING, NUMBER_INTEGER, ...)."""
    spec = _docs(package)[0]
    params = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {name: p.get("parameterType", "") for name, p in params.items()}


_BOOLS = {"true": True, "false": False}
_WANT = {
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}


def _typed(kind: str, raw: str) -> Any:
    """``raw`` as a value of the KFP type ``kind``; ValueError when it is not one."""
    if kind == "STRING":
        return raw
    if kind == "NUMBER_INTEGER":
        return int(raw)
    if kind == "NUMBER_DOUBLE":
        value = float(raw)
        if not math.isfinite(value):  # JSON has no NaN or infinity
            raise ValueError(raw)
        return value
    if kind == "BOOLEAN":
        if raw.strip().lower() not in _BOOLS:
            raise ValueError(raw)
        return _BOOLS[raw.strip().lower()]
    value = json.loads(raw)
    if not isinstance(value, list if kind == "LIST" else dict):
        raise ValueError(raw)
    return value


def typed_parameters(items: dict[str, str], declared: dict[str, str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as the JSON values KFP accepts for the types ``declared``.

    STRING stays the text as given (``area=113`` is the string "113"), NUMBER_INTEGER and
    NUMBER_DOUBLE become numbers, BOOLEAN true or false, LIST and STRUCT are parsed as JSON.
    """
    out: dict[str, Any] = {}
    for key, raw in items.items():
        kind = declared.get(key)
        if kind is None:
            raise ParameterError(
                f"--param {key}: the pipeline has no such parameter (it has: {', '.join(sorted(declared))})"
            )
        if kind != "STRING" and kind not in _WANT:
            raise ParameterError(
                f"--param {key}: the pipeline declares the type {kind!r}, which a run cannot set"
            )
        try:
            out[key] = _typed(kind, raw)
        except ValueError:  # json.JSONDecodeError is one
            raise ParameterError(
                f"--param {key}={raw}: the pipeline declares it {kind}, so the value must be {_WANT[kind]}"
            ) from None
    return out


_FIELD = re.compile(
    r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?(/[0-9]+)?|\*/[0-9]+)(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?(/[0-9]+)?))*$"
)
_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")


def validate_cron(expr: str) -> str:
    """Check a KFP cron: 6 fields, seconds first. Returns it normalised.

    KFP's scheduler evaluates it in its own time zone: ``CRON_SCHEDULE_TIMEZONE`` of
    ml-pipeline-scheduledworkflow, UTC unless the cluster's admin changed it."""
    parts = expr.split()
    if len(parts) == 5:
        raise CronError(
            f"{expr!r} has 5 fields: KFP cron expressions have 6, with SECONDS first (and run in the "
            f"scheduler's time zone, UTC by default). "
            f"Did you mean '0 {expr}'?"
        )
    if len(parts) != 6:
        raise CronError(
            f"{expr!r} has {len(parts)} fields: KFP expects 6 (second minute hour day month weekday)"
        )
    for part, name, (lo, hi) in zip(parts, _NAMES, _RANGES, strict=True):
        if not _FIELD.match(part):
            raise CronError(f"{expr!r}: the {name} field {part!r} is not valid cron syntax")
        for num in re.findall(r"(?<![/A-Za-z])\d+", part):
            if not lo <= int(num) <= hi and not (name == "day of week" and int(num) == 7):
                raise CronError(f"{expr!r}: the {name} field value {num} is outside {lo}-{hi}")
    return " ".join(parts)


@dataclass
class KfpApi:
    host: str
    namespace: str | None = None
    token_env: str = "KFP_TOKEN"
    timeout: float = 60.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.host = self.host.rstrip("/")
        token = self._token()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _token(self) -> str | None:
        path = os.environ.get(TOKEN_PATH_ENV)
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
        return os.environ.get(self.token_env) or None

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        url = f"{self.host}{API}{path}"
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise KfpApiError(f"cannot reach the KFP API at {self.host}: {exc}") from exc
        if resp.status_code == 404 and method == "GET":
            return {}
        if resp.status_code >= 400:
            raise KfpApiError(f"{method} {path}: HTTP {resp.status_code}: {_message(resp)}")
        return resp.json() if resp.content else {}

    # -- the server -----------------------------------------------------------------------
    def check_server(self, required: tuple[int, int, int] = MIN_KFP_VERSION) -> list[str]:
        """Read ``/healthz``: fail on a server older than ``required``, or on a multi-user
        server without a namespace. Returns warnings (an unknown version is one)."""
        health = self._call("GET", "/healthz")
        if not health:
            raise KfpApiError(
                f"{self.host}{API}/healthz is not there: not a KFP API server with the v2beta1 API "
                f"(hhpulse needs KFP >= {_v(required)})"
            )
        warnings = []
        tag = str(health.get("tag_name", ""))
        version = parse_version(tag)
        if version is None:
            warnings.append(
                f"the KFP API server does not say its version (tag_name {tag!r}); it must be >= {_v(required)}"
            )
        elif version < required:
            raise KfpApiError(
                f"KFP at {self.host} is {tag}, older than {_v(required)}, which this pipeline needs "
                f"(dsl.Collected over a ParallelFor needs 2.14; a whole-run timeout, 2.17): upgrade Kubeflow "
                f"Pipelines, or compile without what needs the newer version"
            )
        if health.get("multi_user") and not self.namespace:
            raise KfpApiError(
                f"KFP at {self.host} runs in multi-user mode: pass --namespace with your Kubeflow profile's "
                "namespace (experiments, runs and schedules live in one)"
            )
        return warnings

    @staticmethod
    def _eq(key: str, value: str) -> str:
        return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})

    # -- pipelines ------------------------------------------------------------------------
    def upload(self, package: str | Path, name: str, version: str, description: str = "") -> tuple[str, str]:
        """Upload the pipeline, or a new version of it when it exists. Returns (pipeline_id, version_id)."""
        params = {"namespace": self.namespace} if self.namespace else {}
        existing = self._call("GET", f"/pipelines/names/{name}", params=params)
        data = Path(package).read_bytes()
        files = {"uploadfile": (Path(package).name, data, "application/x-yaml")}
        if not existing.get("pipeline_id"):
            q = {"name": name, "display_name": name, "description": description, **params}
            try:
                created = self._call("POST", "/pipelines/upload", params=q, files=files)
            except KfpApiError as exc:
                if "Failed to create a pipeline" not in str(exc):
                    raise
                # KFP's upload handler answers every refusal so, the permission check's too
                raise KfpApiError(
                    f"{exc} (multi-user KFP also answers so when the caller may not create pipelines in "
                    f"namespace {self.namespace or '(none)'}: a RoleBinding for pipelines.kubeflow.org)"
                ) from exc
            pid = created["pipeline_id"]
            versions = self._call(
                "GET", f"/pipelines/{pid}/versions", params={"page_size": 1, "sort_by": "created_at desc"}
            )
            return pid, versions["pipeline_versions"][0]["pipeline_version_id"]
        pid = existing["pipeline_id"]
        q = {"name": version, "display_name": version, "pipelineid": pid, "description": description}
        created = self._call("POST", "/pipelines/upload_version", params=q, files=files)
        return pid, created["pipeline_version_id"]

    # -- experiments ----------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        params = {
            "filter": self._eq("display_name", name),
            **({"namespace": self.namespace} if self.namespace else {}),
        }
        found = self._call("GET", "/experiments", params=params).get("experiments") or []
        if found:
            return found[0]["experiment_id"]
        body = {"display_name": name, **({"namespace": self.namespace} if self.namespace else {})}
        return self._call("POST", "/experiments", json=body)["experiment_id"]

    # -- runs -----------------------------------------------------------------------------
    def run(
        self,
        name: str,
        pipeline_id: str,
        version_id: str,
        experiment_id: str,
        parameters: dict[str, Any],
        service_account: str | None = None,
    ) -> str:
        body = {
            "display_name": name,
            "experiment_id": experiment_id,
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": {"parameters": parameters},
        }
        if service_account:
            body["service_account"] = service_account
        return self._call("POST", "/runs", json=body)["run_id"]

    def schedule(
        self,
        name: str,
        cron: str,
        pipeline_id: str,
        version_id: str,
        experiment_id: str,
        parameters: dict[str, Any],
        service_account: str | None = None,
    ) -> tuple[str, list[str]]:
        """Create the recurring run, replacing any of the same name. Returns (id, replaced ids)."""
        cron = validate_cron(cron)
        params = {"filter": self._eq("display_name", name), "experiment_id": experiment_id}
        if self.namespace:
            params["namespace"] = self.namespace
        listed = self._call("GET", "/recurringruns", params=params)
        old = [
            r["recurring_run_id"] for r in listed.get("recurringRuns") or listed.get("recurring_runs") or []
        ]
        for rid in old:
            self._call("DELETE", f"/recurringruns/{rid}")
        body = {
            "display_name": name,
            "description": f"hhpulse retraining on cron '{cron}' (the scheduler's time zone, UTC by default)",
            "experiment_id": experiment_id,
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": {"parameters": parameters},
            "trigger": {"cron_schedule": {"cron": cron}},
            "max_concurrency": "1",
            "mode": "ENABLE",
            "no_catchup": True,
        }
        if service_account:
            body["service_account"] = service_account
        created = self._call("POST", "/recurringruns", json=body)
        return created["recurring_run_id"], old
