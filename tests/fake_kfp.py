"""A fake Kubeflow Pipelines API server (v2beta1) on 127.0.0.1, for testing submit/schedule.

It follows ``kfp-api-v2beta1.swagger.json``: request bodies are validated against the
spec's definitions with jsonschema (an invalid body gets 400, as the real server would
reject it), query parameters must be ones the spec declares, and answers use the
spec's shapes. Every request is recorded for the tests to inspect.
"""

from __future__ import annotations

import json
import threading
import uuid
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema


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


class FakeKfp:
    def __init__(self, swagger: Path) -> None:
        self.spec = json.loads(swagger.read_text())
        self.requests: list[dict[str, Any]] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
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

    def schema(self, name: str) -> dict:
        return {"$ref": f"#/definitions/{name}", "definitions": self.spec["definitions"]}

    def declared_query(self, method: str, path_template: str) -> set[str]:
        op = self.spec["paths"][path_template][method.lower()]
        return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


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
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self._body()
        rec = {"method": method, "path": url.path, "query": query, "headers": dict(self.headers), "raw": raw}
        self.fake.requests.append(rec)
        f = self.fake
        p = url.path.removeprefix("/apis/v2beta1")

        def check_query(template: str) -> bool:
            unknown = set(query) - f.declared_query(method, f"/apis/v2beta1{template}")
            if unknown:
                self._send(400, {"error": f"unknown query parameters {sorted(unknown)}"})
                return False
            return True

        def body_of(defn: str) -> dict | None:
            try:
                body = json.loads(raw)
                jsonschema.validate(body, f.schema(defn))
            except (ValueError, jsonschema.ValidationError) as exc:
                self._send(400, {"error": f"invalid {defn}: {exc}"})
                return None
            rec["json"] = body
            return body

        if method == "GET" and p.startswith("/pipelines/names/"):
            name = p.rsplit("/", 1)[1]
            hit = [x for x in f.pipelines.values() if x["name"] == name]
            return self._send(200, hit[0]) if hit else self._send(404, {"error": "not found", "code": 5})
        if method == "POST" and p in ("/pipelines/upload", "/pipelines/upload_version"):
            if not check_query(p):
                return
            form = _multipart(self.headers.get("Content-Type", ""), raw)
            if form is None:
                return self._send(400, {"error": "expected multipart/form-data"})
            if "uploadfile" not in form:
                return self._send(400, {"error": "missing uploadfile"})
            rec["upload"] = form["uploadfile"]
            if p.endswith("upload"):
                pid = str(uuid.uuid4())
                pipe = {
                    "pipeline_id": pid,
                    "name": query["name"],
                    "display_name": query.get("display_name", ""),
                }
                f.pipelines[pid] = pipe
                f.versions[pid] = [
                    {"pipeline_id": pid, "pipeline_version_id": str(uuid.uuid4()), "name": query["name"]}
                ]
                return self._send(200, pipe)
            pid = query.get("pipelineid")
            if pid not in f.pipelines:
                return self._send(404, {"error": "pipeline not found"})
            ver = {"pipeline_id": pid, "pipeline_version_id": str(uuid.uuid4()), "name": query["name"]}
            f.versions[pid].append(ver)
            return self._send(200, ver)
        if method == "GET" and p.endswith("/versions"):
            pid = p.split("/")[2]
            if not check_query("/pipelines/{pipeline_id}/versions"):
                return
            return self._send(
                200,
                {
                    "pipeline_versions": list(reversed(f.versions.get(pid, []))),
                    "total_size": len(f.versions.get(pid, [])),
                },
            )
        if p == "/experiments":
            if method == "GET":
                if not check_query(p):
                    return
                want = (
                    json.loads(query["filter"])["predicates"][0]["string_value"]
                    if "filter" in query
                    else None
                )
                hits = [e for e in f.experiments.values() if want in (None, e["display_name"])]
                return self._send(200, {"experiments": hits, "total_size": len(hits)})
            body = body_of("v2beta1Experiment")
            if body is None:
                return
            eid = str(uuid.uuid4())
            f.experiments[eid] = {**body, "experiment_id": eid}
            return self._send(200, f.experiments[eid])
        if p == "/runs" and method == "POST":
            body = body_of("v2beta1Run")
            if body is None:
                return
            rid = str(uuid.uuid4())
            f.runs[rid] = {**body, "run_id": rid, "state": "PENDING"}
            return self._send(200, f.runs[rid])
        if p == "/recurringruns":
            if method == "GET":
                if not check_query(p):
                    return
                want = (
                    json.loads(query["filter"])["predicates"][0]["string_value"]
                    if "filter" in query
                    else None
                )
                hits = [r for r in f.recurring.values() if want in (None, r["display_name"])]
                return self._send(200, {"recurringRuns": hits, "total_size": len(hits)})
            body = body_of("v2beta1RecurringRun")
            if body is None:
                return
            rid = str(uuid.uuid4())
            f.recurring[rid] = {**body, "recurring_run_id": rid, "status": "ENABLED"}
            return self._send(200, f.recurring[rid])
        if p.startswith("/recurringruns/") and method == "DELETE":
            f.recurring.pop(p.rsplit("/", 1)[1], None)
            return self._send(200, {})
        self._send(404, {"error": f"no route {method} {url.path}"})

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")
