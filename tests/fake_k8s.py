"""A fake Kubernetes API server for InferenceServices, on 127.0.0.1.

It implements GET/POST/PATCH on
``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}]``, records
every request (method, path, content type, body), answers 404 with a Status body when
the object is absent, and sets the Ready condition after ``ready_after`` GETs, never
(``ready_after=None``), or as Failed (``fail=True``).

Authorization: ``forbid`` answers some methods 403 outright; with ``rbac`` and ``subject``, each
request is authorized as the API server's RBAC authorizer would, by :class:`k8s_rbac.Rbac`
(the rendered chart's Roles and Kubeflow's ClusterRoles), as that subject.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def api(self):  # type: ignore[no-untyped-def]
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.CustomObjectsApi(client.ApiClient(cfg))


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
                    "url": f"http://{name}.{ns}.example.com",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            return self._send(200, obj)
        if method == "POST":
            if key in f.objects:
                return self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
            obj = {**body, "metadata": {**body["metadata"], "generation": 1}}
            f.objects[key] = obj
            return self._send(201, obj)
        if method == "PATCH":
            if key not in f.objects:
                return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            obj = _merge(f.objects[key], body)
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
