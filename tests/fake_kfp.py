"""A fake Kubeflow Pipelines API server (v2beta1) on 127.0.0.1, for testing submit/schedule.

Shapes: it follows ``kfp-api-v2beta1.swagger.json``: request bodies are validated against the
spec's definitions with jsonschema (an invalid body gets 400, as the real server would reject
it), query parameters must be ones the spec declares, and answers use the spec's shapes.

Rules, as KFP 2.17's API server applies them (``multi_user=True``; sources in
tests/upstream/kfp-calls.yaml):

- ``/healthz`` answers without authentication, with the body KFP's ``main.go`` writes by hand
  (``commit_sha``, ``tag_name``: the server's version, ``multi_user``, ``pipeline_store``), which
  has more than the swagger's ``v2beta1GetHealthzResponse`` (only ``multi_user`` and
  ``pipeline_store``);
- every other call needs a bearer token that the fake issued for the audience
  ``pipelines.kubeflow.org`` (KFP's TokenReview), else 401;
- each call is authorized as a SubjectAccessReview on its pipelines.kubeflow.org resource and verb
  (tests/upstream/kfp-calls.yaml) in the namespace KFP takes it from, answered by
  :class:`k8s_rbac.Rbac` over the given RBAC objects (the rendered chart, Kubeflow's roles): a
  denial is 403, and an upload's is KFP's own 400 "Failed to create a pipeline";
- experiments, runs and recurring runs need a namespace ("An experiment cannot have an empty
  namespace in multi-user mode"), and a run's or recurring run's namespace is its experiment's;
- the runtime parameters of a run and a recurring run are checked against the uploaded pipeline
  version as ``v2_template.go`` does (:func:`kfp_rules.parameter_error`).

Every request is recorded for the tests to inspect (``requests``, and ``reviews``: each access
review with its answer).
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import yaml

from k8s_rbac import Rbac, Subject
from kfp_rules import parameter_error

AUDIENCE = "pipelines.kubeflow.org"
CALLS = yaml.safe_load((Path(__file__).parent / "upstream" / "kfp-calls.yaml").read_text())
AUTHZ = {c["route"]: c for c in CALLS["api_server"]}


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes] | None:
    """Form fields of a multipart/form-data body (the email parser; cgi is gone in Python 3.13)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    msg = BytesParser(policy=default).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw
    )
    if not msg.is_multipart():
        return None
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in msg.iter_parts()
    }


class Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def _grpc_error(status: int, code: int, message: str) -> Refused:
    """grpc-gateway's error body, as the v2beta1 API answers."""
    return Refused(status, {"error": message, "code": code, "message": message, "details": []})


class FakeKfp:
    def __init__(
        self,
        swagger: Path,
        *,
        multi_user: bool = False,
        rbac: Rbac | None = None,
        version: str = "2.17.0",
    ) -> None:
        self.spec = json.loads(swagger.read_text())
        self.multi_user = multi_user
        self.rbac = rbac or Rbac([])
        self.tag_name = version
        self.tokens: dict[str, tuple[Subject, str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.packages: dict[str, dict[str, Any]] = {}  # version id -> the pipeline spec
        self.experiments: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        handler = type("H", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def issue_token(self, who: Subject, audience: str = AUDIENCE) -> str:
        """A token the fake's TokenReview accepts as ``who``, for ``audience``."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (who, audience)
        return token

    def schema(self, name: str) -> dict:
        return {"$ref": f"#/definitions/{name}", "definitions": self.spec["definitions"]}

    def declared_query(self, method: str, path_template: str) -> set[str]:
        op = self.spec["paths"][path_template][method.lower()]
        return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}

    # -- multi-user rules ---------------------------------------------------------------------
    def authenticate(self, headers: dict[str, str]) -> Subject | None:
        if not self.multi_user:
            return None
        auth = headers.get("Authorization", "")
        who = self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        if who is None or who[1] != AUDIENCE:
            raise _grpc_error(
                401, 16, "Failed to check authorization. User identity is empty in the request header"
            )
        return who[0]

    def authorize(self, who: Subject | None, route: str, namespace: str, *, upload: bool = False) -> None:
        if not self.multi_user:
            return
        entry = AUTHZ[route]
        rule = (
            self.rbac.can(who, entry["verb"], "pipelines.kubeflow.org", entry["resource"], namespace)
            if who
            else None
        )
        self.reviews.append(
            {
                "user": who.name if who else None,
                "verb": entry["verb"],
                "resource": entry["resource"],
                "namespace": namespace,
                "allowed": rule is not None,
            }
        )
        if rule is None:
            if upload:  # pipeline_upload_server.go hides the reason
                raise Refused(
                    400,
                    {
                        "error_message": "Failed to create a pipeline",
                        "error_details": "Failed to create a pipeline",
                    },
                )
            raise _grpc_error(
                403,
                7,
                f"Failed to authorize with API: PermissionDenied: User '{who.name if who else ''}' is not "
                f"authorized with reason:  (request: &ResourceAttributes{{Namespace:{namespace},"
                f"Verb:{entry['verb']},Group:pipelines.kubeflow.org,Version:v1beta1,Resource:{entry['resource']}}})",
            )

    def namespace(self, value: str) -> str:
        """ReplaceNamespace: single-user KFP keeps everything in the empty namespace."""
        return value if self.multi_user else ""

    def require_namespace(self, namespace: str, what: str) -> None:
        if self.multi_user and not namespace:
            raise _grpc_error(400, 3, f"{what} cannot have an empty namespace in multi-user mode")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKfp

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self, method: str) -> None:
        try:
            self._handle(method)
        except Refused as r:
            self._send(r.status, r.body)

    def _handle(self, method: str) -> None:  # noqa: C901 - one route table
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self._body()
        rec = {"method": method, "path": url.path, "query": query, "headers": dict(self.headers), "raw": raw}
        self.fake.requests.append(rec)
        f = self.fake
        p = url.path.removeprefix("/apis/v2beta1")

        def check_query(template: str) -> None:
            unknown = set(query) - f.declared_query(method, f"/apis/v2beta1{template}")
            if unknown:
                raise Refused(400, {"error": f"unknown query parameters {sorted(unknown)}"})

        def body_of(defn: str) -> dict:
            try:
                body = json.loads(raw)
                jsonschema.validate(body, f.schema(defn))
            except (ValueError, jsonschema.ValidationError) as exc:
                raise Refused(400, {"error": f"invalid {defn}: {exc}"}) from None
            rec["json"] = body
            return body

        def experiment_of(eid: str) -> dict:
            if eid not in f.experiments:
                raise _grpc_error(404, 5, f"Experiment {eid} not found")
            return f.experiments[eid]

        def check_parameters(body: dict) -> None:
            ref = body.get("pipeline_version_reference") or {}
            spec = f.packages.get(ref.get("pipeline_version_id", ""))
            if spec is None:
                raise _grpc_error(404, 5, "pipeline version not found")
            error = parameter_error(spec, (body.get("runtime_config") or {}).get("parameters"))
            if error:
                raise _grpc_error(400, 3, f"Invalid input error: {error}")

        if method == "GET" and p == "/healthz":
            return self._send(
                200,
                {
                    "commit_sha": "0" * 40,
                    "tag_name": f.tag_name,
                    "multi_user": f.multi_user,
                    "pipeline_store": "database",
                },
            )
        who = f.authenticate(dict(self.headers))
        if method == "GET" and p.startswith("/pipelines/names/"):
            name = p.rsplit("/", 1)[1]
            ns = f.namespace(query.get("namespace", ""))
            if ns:
                f.authorize(who, "GET /apis/v2beta1/pipelines/names/{name}", ns)
            hit = [x for x in f.pipelines.values() if x["name"] == name and x.get("namespace", "") == ns]
            return self._send(200, hit[0]) if hit else self._send(404, {"error": "not found", "code": 5})
        if method == "POST" and p in ("/pipelines/upload", "/pipelines/upload_version"):
            check_query(p)
            form = _multipart(self.headers.get("Content-Type", ""), raw)
            if form is None:
                return self._send(400, {"error": "expected multipart/form-data"})
            if "uploadfile" not in form:
                return self._send(400, {"error": "missing uploadfile"})
            rec["upload"] = form["uploadfile"]
            spec = next(yaml.safe_load_all(form["uploadfile"]))
            if p.endswith("upload"):
                ns = f.namespace(query.get("namespace", ""))
                if ns:  # an upload without a namespace makes a shared pipeline, unchecked
                    f.authorize(who, "POST /apis/v2beta1/pipelines/upload", ns, upload=True)
                pid = str(uuid.uuid4())
                pipe = {
                    "pipeline_id": pid,
                    "name": query["name"],
                    "display_name": query.get("display_name", ""),
                    "namespace": ns,
                }
                f.pipelines[pid] = pipe
                vid = str(uuid.uuid4())
                f.versions[pid] = [{"pipeline_id": pid, "pipeline_version_id": vid, "name": query["name"]}]
                f.packages[vid] = spec
                return self._send(200, pipe)
            pid = query.get("pipelineid")
            if pid not in f.pipelines:
                return self._send(404, {"error": "pipeline not found"})
            if f.pipelines[pid]["namespace"]:
                f.authorize(
                    who,
                    "POST /apis/v2beta1/pipelines/upload_version",
                    f.pipelines[pid]["namespace"],
                    upload=True,
                )
            ver = {"pipeline_id": pid, "pipeline_version_id": str(uuid.uuid4()), "name": query["name"]}
            f.versions[pid].append(ver)
            f.packages[ver["pipeline_version_id"]] = spec
            return self._send(200, ver)
        if method == "GET" and p.endswith("/versions"):
            pid = p.split("/")[2]
            check_query("/pipelines/{pipeline_id}/versions")
            if f.pipelines.get(pid, {}).get("namespace"):
                f.authorize(
                    who, "GET /apis/v2beta1/pipelines/{pipeline_id}/versions", f.pipelines[pid]["namespace"]
                )
            return self._send(
                200,
                {
                    "pipeline_versions": list(reversed(f.versions.get(pid, []))),
                    "total_size": len(f.versions.get(pid, [])),
                },
            )
        if p == "/experiments":
            if method == "GET":
                check_query(p)
                ns = f.namespace(query.get("namespace", ""))
                f.require_namespace(ns, "An experiment")
                f.authorize(who, "GET /apis/v2beta1/experiments", ns)
                want = (
                    json.loads(query["filter"])["predicates"][0]["string_value"]
                    if "filter" in query
                    else None
                )
                hits = [
                    e
                    for e in f.experiments.values()
                    if want in (None, e["display_name"]) and e.get("namespace", "") == ns
                ]
                return self._send(200, {"experiments": hits, "total_size": len(hits)})
            body = body_of("v2beta1Experiment")
            ns = f.namespace(body.get("namespace", ""))
            f.require_namespace(ns, "An experiment")
            f.authorize(who, "POST /apis/v2beta1/experiments", ns)
            eid = str(uuid.uuid4())
            f.experiments[eid] = {**body, "namespace": ns, "experiment_id": eid}
            return self._send(200, f.experiments[eid])
        if p == "/runs" and method == "POST":
            body = body_of("v2beta1Run")
            ns = experiment_of(body.get("experiment_id", "")).get("namespace", "")
            f.require_namespace(ns, "A run")
            f.authorize(who, "POST /apis/v2beta1/runs", ns)
            check_parameters(body)
            rid = str(uuid.uuid4())
            f.runs[rid] = {**body, "run_id": rid, "state": "PENDING", "namespace": ns}
            return self._send(200, f.runs[rid])
        if p == "/recurringruns":
            if method == "GET":
                check_query(p)
                ns = (
                    experiment_of(query["experiment_id"]).get("namespace", "")
                    if query.get("experiment_id")
                    else f.namespace(query.get("namespace", ""))
                )
                f.require_namespace(ns, "A recurring run")
                f.authorize(who, "GET /apis/v2beta1/recurringruns", ns)
                want = (
                    json.loads(query["filter"])["predicates"][0]["string_value"]
                    if "filter" in query
                    else None
                )
                hits = [
                    r
                    for r in f.recurring.values()
                    if want in (None, r["display_name"]) and r.get("namespace", "") == ns
                ]
                return self._send(200, {"recurringRuns": hits, "total_size": len(hits)})
            body = body_of("v2beta1RecurringRun")
            ns = experiment_of(body.get("experiment_id", "")).get("namespace", "")
            f.require_namespace(ns, "Recurring run")
            f.authorize(who, "POST /apis/v2beta1/recurringruns", ns)
            check_parameters(body)
            rid = str(uuid.uuid4())
            f.recurring[rid] = {**body, "recurring_run_id": rid, "status": "ENABLED", "namespace": ns}
            return self._send(200, f.recurring[rid])
        if p.startswith("/recurringruns/") and method == "DELETE":
            rid = p.rsplit("/", 1)[1]
            if rid in f.recurring:
                f.authorize(
                    who,
                    "DELETE /apis/v2beta1/recurringruns/{recurring_run_id}",
                    f.recurring[rid]["namespace"],
                )
            f.recurring.pop(rid, None)
            return self._send(200, {})
        self._send(404, {"error": f"no route {method} {url.path}"})

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")
