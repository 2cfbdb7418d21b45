"""The README's cluster install, read from the README itself, and the objects it makes.

:func:`readme_install` parses the shell block of README.md's "The pipeline on a cluster" section:
the namespace, the Secret that ``kubectl create secret generic`` and ``kubectl annotate secret``
make (as kubectl would make it), and the values of ``helm install ... --set``. The tests run the
real systems' rules on what these commands produce, so a README that drifts from the chart fails.
"""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "hhpulse"


def render_chart(
    values: dict[str, Any], *, name: str = "hhpulse", namespace: str = "hhpulse"
) -> list[dict[str, Any]]:
    """The chart's objects (hooks and tests included), each with its namespace set as Helm applies it."""
    import helm_python as helm

    out = helm.Chart.load(str(CHART)).render(values, name=name, namespace=namespace)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d.setdefault("metadata", {}).setdefault("namespace", namespace)
                docs.append(d)
    return docs


def _set(values: dict[str, Any], dotted: str, raw: str) -> None:
    """``helm --set a.b=c``: nested keys; {x,y} a list; true/false and integers typed."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        values = values.setdefault(k, {})
    if raw.startswith("{") and raw.endswith("}"):
        value: Any = [v for v in raw[1:-1].split(",") if v]
    elif raw in ("true", "false"):
        value = raw == "true"
    elif re.fullmatch(r"-?\d+", raw):
        value = int(raw)
    else:
        value = raw
    values[keys[-1]] = value


def readme_commands() -> list[list[str]]:
    """The commands of the README's cluster section, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## The pipeline on a cluster", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        shlex.split(line, comments=True)
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def readme_install(access_key: str = "AKIA-README", secret_key: str = "secret-README") -> dict[str, Any]:
    """What the README's commands create: {"namespace", "secret", "values", "release", "commands"}."""
    cmds = [c for c in readme_commands() if c]
    out: dict[str, Any] = {"commands": cmds, "values": {}, "secret": None}
    for c in cmds:
        ns = c[c.index("-n") + 1] if "-n" in c else None
        if c[:1] == ["kubectl"] and "create" in c and "secret" in c and "generic" in c:
            i = c.index("generic")
            name = c[i + 1]
            data = {}
            for arg in c[i + 2 :]:
                if arg.startswith("--from-literal="):
                    k, _, v = arg.removeprefix("--from-literal=").partition("=")
                    v = {"<key>": access_key, "<secret>": secret_key}.get(v, v)
                    data[k] = base64.b64encode(v.encode()).decode()
            out["secret"] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": ns, "annotations": {}},
                "data": data,
            }
        elif c[:1] == ["kubectl"] and "annotate" in c and "secret" in c:
            i = c.index("secret")
            assert out["secret"] and c[i + 1] == out["secret"]["metadata"]["name"], c
            for arg in c[i + 2 :]:
                if "=" in arg and not arg.startswith("-"):
                    k, _, v = arg.partition("=")
                    out["secret"]["metadata"]["annotations"][k] = v
        elif c[:2] == ["helm", "install"]:
            out["release"], out["chart"], out["namespace"] = c[2], c[3], ns
            for i, arg in enumerate(c):
                if arg == "--set":
                    k, _, v = c[i + 1].partition("=")
                    _set(out["values"], k, v)
    return out


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(kind/name, pod spec, pod annotations) of every object that makes pods."""
    out = []
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "Pod":
            out.append((f"Pod/{name}", d["spec"], d["metadata"].get("annotations") or {}))
        elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
            tmpl = d["spec"]["template"]
            out.append(
                (f"{kind}/{name}", tmpl["spec"], (tmpl.get("metadata") or {}).get("annotations") or {})
            )
    return out


def manifests() -> list[dict[str, Any]]:
    """The dev prerequisites that ``kubectl -n hhpulse apply -k manifests/`` applies."""
    kust = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    docs = []
    for res in kust["resources"]:
        for d in yaml.safe_load_all((REPO / "manifests" / res).read_text()):
            if d:
                d.setdefault("metadata", {}).setdefault("namespace", "hhpulse")
                docs.append(d)
    return docs
