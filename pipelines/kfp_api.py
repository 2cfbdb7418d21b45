"""A small client for the Kubeflow Pipelines REST API (v2beta1): upload, run, schedule.

Plain ``requests`` rather than ``kfp.Client``, so every request is explicit and tested
against a fake server that follows ``kfp-api-v2beta1.swagger.json``. It is idempotent
by name: uploading again adds a pipeline *version*; scheduling again replaces the
recurring run of the same name, so schedules are never duplicated.

Auth: a bearer token from ``$KF_PIPELINES_SA_TOKEN_PATH`` (a projected service-account
token, as in-cluster KFP clients use) or from the environment variable named by
``token_env``; and an optional ``namespace`` for multi-user KFP.
"""

from __future__ import annotations

import json
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


class CronError(ValueError):
    """The cron expression is not a valid KFP (6-field, seconds-first, UTC) expression."""


_FIELD = re.compile(
    r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?(/[0-9]+)?|\*/[0-9]+)(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?(/[0-9]+)?))*$"
)
_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")


def validate_cron(expr: str) -> str:
    """Check a KFP cron: 6 fields, seconds first, evaluated in UTC. Returns it normalised."""
    parts = expr.split()
    if len(parts) == 5:
        raise CronError(
            f"{expr!r} has 5 fields: KFP cron expressions have 6, with SECONDS first (and run in UTC). "
            f"Did you mean '0 {expr}'?"
        )
    if len(parts) != 6:
        raise CronError(
            f"{expr!r} has {len(parts)} fields: KFP expects 6 (second minute hour day month weekday), in UTC"
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
            raise KfpApiError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else {}

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
            created = self._call("POST", "/pipelines/upload", params=q, files=files)
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
            "description": f"hhpulse retraining on cron '{cron}' (UTC)",
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
