"""``hhpulse request``: call a running predictor (local, or on the cluster through an ingress)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server root [%(default)s]")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a responsibility text (repeatable)")
    src.add_argument(
        "--input", help="JSON lines of {responsibility, name?, requirement?} or API items; - for stdin"
    )
    p.add_argument("--model-name", default="hhpulse", help="model name [%(default)s]")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1", help="[%(default)s]")
    p.add_argument("--host-header", help="Host header, for KServe's host-based routing behind an ingress")
    p.add_argument(
        "--token-env", default="HHPULSE_TOKEN", help="env var holding a bearer token [%(default)s]"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds [%(default)s]")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.add_argument(
        "--explain",
        action="store_true",
        help="ask :explain (v1) and print the terms behind each cohort as a table",
    )


def _instances(args: argparse.Namespace) -> list[dict]:
    """The instances to send: ``--text``s, or JSON lines checked by the same input contract as
    ``hhpulse predict`` and the server (:func:`hhpulse.model.inputs.check_instance`)."""
    from hhpulse.model.inputs import check_instance

    if args.text:
        return [{"responsibility": t} for t in args.text]
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text(encoding="utf-8")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                inst = check_instance(json.loads(line), api_items=True)
            except ValueError as exc:
                raise ValueError(f"{args.input}:{n}: {exc}") from None
            out.append({k: v for k, v in inst.as_dict().items() if v is not None})
    return out


def _to_rows(body: dict, protocol: str) -> list[dict]:
    if protocol == "v1":
        return body["predictions"]
    outs = {o["name"]: o for o in body["outputs"]}
    rows = []
    for i in range(len(outs["salary_cohort"]["data"])):
        row = {}
        for t in ("salary", "demand"):
            cohorts = outs[f"{t}_probabilities"]["parameters"]["cohorts"].split(",")
            k = len(cohorts)
            probs = outs[f"{t}_probabilities"]["data"][i * k : (i + 1) * k]
            row[t] = {
                "cohort": outs[f"{t}_cohort"]["data"][i],
                "probabilities": dict(zip(cohorts, probs, strict=True)),
            }
        row["model_version"] = (body.get("parameters") or {}).get("model_version")
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    import requests

    try:
        instances = _instances(args)
    except (OSError, ValueError) as exc:
        print(f"hhpulse request: {exc}", file=sys.stderr)
        return 2
    base = args.url.rstrip("/")
    if args.explain and args.protocol != "v1":
        print("hhpulse request: --explain uses KServe's v1 protocol; drop --protocol v2", file=sys.stderr)
        return 2
    if args.explain:
        url, body = f"{base}/v1/models/{args.model_name}:explain", {"instances": instances}
    elif args.protocol == "v1":
        url, body = f"{base}/v1/models/{args.model_name}:predict", {"instances": instances}
    else:
        inputs = [
            {
                "name": f,
                "datatype": "BYTES",
                "shape": [len(instances)],
                "data": [i.get(f) or "" for i in instances],
            }
            for f in ("responsibility", "name", "requirement")
            if f == "responsibility" or any(i.get(f) for i in instances)
        ]
        url, body = f"{base}/v2/models/{args.model_name}/infer", {"inputs": inputs}
    headers = {"Content-Type": "application/json"}
    if args.host_header:
        headers["Host"] = args.host_header
    if os.environ.get(args.token_env):
        headers["Authorization"] = f"Bearer {os.environ[args.token_env]}"
    try:
        resp = requests.post(url, json=body, headers=headers, timeout=args.timeout)
    except requests.RequestException as exc:
        print(f"hhpulse request: cannot reach {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if resp.status_code != 200:
        print(f"hhpulse request: HTTP {resp.status_code} from {url}: {resp.text[:500]}", file=sys.stderr)
        return 1
    answer = resp.json()
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    if args.explain:
        print(explanation_table(instances, answer["explanations"]))
        return 0
    rows = _to_rows(answer, args.protocol)
    print(f"{'#':>3}  {'salary cohort':<14} {'p':>5}  {'demand':<7} {'p':>5}  text")
    for i, (inst, row) in enumerate(zip(instances, rows, strict=True)):
        s, d = row["salary"], row["demand"]
        text = inst["responsibility"].replace("\n", " ")
        print(
            f"{i:>3}  {s['cohort']:<14} {s['probabilities'][s['cohort']]:>5.2f}  {d['cohort']:<7} "
            f"{d['probabilities'][d['cohort']]:>5.2f}  {text[:60] + ('…' if len(text) > 60 else '')}"
        )
    print(f"model {rows[0].get('model_version') if rows else '?'}")
    return 0


def explanation_table(instances: list[dict], explanations: list[dict]) -> str:
    """Each instance's cohorts, then its terms toward (+) and away (-) from each, in a table."""
    lines = []
    for i, (inst, ex) in enumerate(zip(instances, explanations, strict=True)):
        text = inst["responsibility"].replace("\n", " ")
        lines.append(f"#{i}  {text[:90] + ('…' if len(text) > 90 else '')}")
        for task in ("salary", "demand"):
            e = ex[task]
            lines.append(
                f"  {task}: {e['cohort']} (p {e['probability']:.2f}, logit {e['logit']:+.3f} = "
                f"bias {e['bias']:+.3f} + terms; {e['method']})"
            )
            lines.append(f"    {'':1} {'term':<32} {'field':<14} {'contribution':>12}")
            for sign, key in (("+", "toward"), ("-", "away")):
                for t in e[key]:
                    lines.append(
                        f"    {sign} {t['term'][:32]:<32} {t['field']:<14} {t['contribution']:>+12.4f}"
                    )
            lines.append(f"    {'':1} {'(other terms)':<32} {'':<14} {e['rest']:>+12.4f}")
        lines.append("")
    lines.append(f"model {explanations[0].get('model_version') if explanations else '?'}")
    return "\n".join(lines)
