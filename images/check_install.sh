#!/usr/bin/env bash
# Runs each Dockerfile's install steps in a fresh venv (no Docker engine here), then checks
# that the image's entry point starts. Usage: images/check_install.sh [serving|pipeline|all]
#
# serving: the exact `pip install ".[cpu,serve]"`, then `python -m hhpulse.serving --help`.
# pipeline: the exact `pip install ".[gpu,pipeline]"` is resolved with --dry-run (the CUDA
#   xgboost wheel and its NVIDIA libraries are several hundred MB; resolving proves the pins
#   install together); then the same extras with xgboost-cpu are installed for real and the
#   entry points (hhpulse, the components and the pipeline) are started.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PY="${PYTHON:-python3}"

# the install lines, read from the Dockerfiles themselves so they cannot drift
extras() { sed -n 's/.*pip install "\.\[\([a-z,]*\)\]".*/\1/p' "images/$1.Dockerfile"; }

check_serving() {
  local ex; ex="$(extras serving)"; [ "$ex" = "cpu,serve" ] || { echo "serving.Dockerfile installs [$ex]"; exit 1; }
  "$PY" -m venv "$work/serving"
  "$work/serving/bin/pip" install -q --upgrade pip wheel
  "$work/serving/bin/pip" install -q ".[$ex]"
  "$work/serving/bin/python" -m hhpulse.serving --help >/dev/null
  ! "$work/serving/bin/pip" show xgboost >/dev/null 2>&1 || { echo "serving image must not carry the CUDA xgboost"; exit 1; }
  echo "serving image install OK: .[$ex]; python -m hhpulse.serving starts"
}

check_pipeline() {
  local ex; ex="$(extras pipeline)"; [ "$ex" = "gpu,pipeline" ] || { echo "pipeline.Dockerfile installs [$ex]"; exit 1; }
  "$PY" -m venv "$work/pipeline"
  "$work/pipeline/bin/pip" install -q --upgrade pip wheel
  "$work/pipeline/bin/pip" install -q --dry-run ".[$ex]" >/dev/null
  "$work/pipeline/bin/pip" install -q ".[cpu,pipeline]"
  "$work/pipeline/bin/hhpulse" --help >/dev/null
  (cd "$work" && "$work/pipeline/bin/python" -c "import components.train_candidate, pipelines.hhpulse_pipeline")
  echo "pipeline image install OK: .[$ex] resolves; entry points start"
}

case "$which" in
  serving) check_serving ;;
  pipeline) check_pipeline ;;
  all) check_serving; check_pipeline ;;
  *) echo "usage: $0 [serving|pipeline|all]"; exit 2 ;;
esac
