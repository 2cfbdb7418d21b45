"""A fake Kubernetes API server for InferenceServices, on 127.0.0.1.

It implements GET/POST/PATCH on
``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}]``, records
every request (method, path, content type, body), answers 404 with a Status body when
the object is absent, and sets the Ready condition after ``ready_after`` GETs, never
(``ready_after=None``), or as Failed (``fail=True``). A Ready object's ``status.url`` has the
host KServe's ``Standard`` mode gives it (``{name}-{namespace}.{domain}``, the default
``domainTemplate`` of kserve's ``config/configmap/inferenceservice.yaml``).

Validation, as the API server validates a custom resource: a created object, and an object as a
merge patch leaves it, must satisfy the v1beta1 ``openAPIV3Schema`` of KServe's CRD
(``../shared/specs/kserve-inferenceservice-crd.yaml``, or ``$HHPULSE_SHARED/specs``), else 422 ``Invalid`` with the fields in
the message, and nothing is stored. Without the CRD file (no ``../shared``) nothing is validated;
``validates`` says which.

Authorization: ``forbid`` answers some methods 403 outright; with ``rbac`` and ``subject``, each
request is authorized as the API server's RBAC authorizer would, by :class:`k8s_rbac.Rbac`
(the rendered chart's Roles and Kubeflow's ClusterRoles), as that subject.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# where tests/conftest.py finds ../shared
CRD = (
    Path(os.environ.get("HHPULSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "specs"
    / "kserve-inferenceservice-crd.yaml"
)
PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")


class FakeK8s:
    def __init__(
        self,
        ready_after: int | None = 1,
        fail: bool = False,
        forbid: tuple[str, ...] = (),
        rbac: Any = None,
        subject: Any = None,
    ) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.ready_after = ready_after
        self.fail = fail
        self.forbid = forbid  # methods answered 403 Forbidden, as RBAC would
        self.rbac, self.subject = rbac, subject
        self.gets = 0
        handler = type("H", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def validates(self) -> bool:
        return CRD.is_file()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def api(self):  # type: ignore[no-untyped-def]
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.CustomObjectsApi(client.ApiClient(cfg))


@functools.cache
def _crd_validator() -> Any:
    """The CRD's v1beta1 schema as a validator, loaded once (the CRD is 2 MB of YAML)."""
    import jsonschema
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(CRD.read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def invalid(obj: dict) -> list[str]:
    """The CRD schema's complaints about ``obj``, as ``field.path: message``; [] when valid or
    when the CRD is not there."""
    if not CRD.is_file():
        return []
    return [
        f"{'.'.join(str(x) for x in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(_crd_validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        if v is None:
            out.pop(k, None)
    return out


class _Handler(BaseHTTPRequestHandler):
    fake: FakeK8s

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _invalid(self, name: str, errors: list[str]) -> None:
        self._send(
            422,
            {
                "kind": "Status",
                "status": "Failure",
                "reason": "Invalid",
                "code": 422,
                "message": f'InferenceService.serving.kserve.io "{name}" is invalid: {"; ".join(errors)}',
            },
        )

    def _handle(self, method: str) -> None:
        m = PATH.match(self.path.split("?")[0])
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        f = self.fake
        f.requests.append(
            {
                "method": method,
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            }
        )
        if not m:
            return self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
        ns, name = m.group(1), m.group(2)
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch"}.get(
            method, method.lower()
        )
        denied = f.rbac is not None and not f.rbac.can(
            f.subject, verb, "serving.kserve.io", "inferenceservices", ns, name or ""
        )
        if method in f.forbid or denied:
            user = f.subject.name if f.subject is not None else f"system:serviceaccount:{ns}:default"
            return self._send(
                403,
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "Forbidden",
                    "code": 403,
                    "message": f'inferenceservices.serving.kserve.io is forbidden: User "{user}" '
                    f'cannot {verb} resource "inferenceservices" in API group "serving.kserve.io" '
                    f'in the namespace "{ns}"',
                },
            )
        key = (ns, name or (body or {}).get("metadata", {}).get("name"))
        if method == "GET":
            obj = f.objects.get(key)
            if obj is None:
                return self._send(
                    404,
                    {
                        "kind": "Status",
                        "status": "Failure",
                        "reason": "NotFound",
                        "code": 404,
                        "message": f'inferenceservices.serving.kserve.io "{name}" not found',
                    },
                )
            f.gets += 1
            gen = obj["metadata"]["generation"]
            if f.fail:
                obj["status"] = {
                    "observedGeneration": gen,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "Failed",
                            "message": "predictor crashed",
                        }
                    ],
                }
            elif f.ready_after is not None and f.gets >= f.ready_after:
                obj["status"] = {
                    "observedGeneration": gen,
                    "url": f"http://{name}-{ns}.example.com",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            return self._send(200, obj)
        if method == "POST":
            if key in f.objects:
                return self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
            if errors := invalid(body):
                return self._invalid(key[1], errors)
            obj = {**body, "metadata": {**body["metadata"], "generation": 1}}
            f.objects[key] = obj
            return self._send(201, obj)
        if method == "PATCH":
            if key not in f.objects:
                return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            obj = _merge(f.objects[key], body)
            if errors := invalid({k: v for k, v in obj.items() if k != "status"}):
                return self._invalid(key[1], errors)
            obj["metadata"]["generation"] = f.objects[key]["metadata"]["generation"] + 1
            obj.pop("status", None)
            f.objects[key] = obj
            f.gets = 0
            return self._send(200, obj)
        self._send(405, {"kind": "Status", "code": 405})

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")
