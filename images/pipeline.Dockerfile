# The image every hhpulse pipeline task runs in (KFP on the cluster, kfp.local's DockerRunner in
# `make e2e`). XGBoost is the CUDA-capable wheel, so the training steps use device="cuda" on GPU
# nodes (the driver comes from the node; no CUDA toolkit base is needed). Build: `make images`.
#
# No ENTRYPOINT: KFP gives every task its own command (`sh -ec ... python3 -m kfp.dsl.executor_main`).
# On Kubernetes a command replaces an ENTRYPOINT, but under Docker it is passed to it as arguments,
# so an ENTRYPOINT would swallow the task's command there.
#
# BASE_IMAGE: any Debian-like image with python3 (3.10+), python3-venv and libgomp1. The default
# is the local base `make base` builds with debootstrap when no registry is reachable.
# pip secrets (optional; mounted for the install steps only, never stored in a layer):
#   pip_ca    a CA bundle for a TLS-intercepting proxy      (--secret id=pip_ca,src=FILE)
#   pip_conf  a pip.conf with the index URL and credentials (--secret id=pip_conf,src=FILE)
ARG BASE_IMAGE=hhpulse-base:bookworm

FROM ${BASE_IMAGE} AS deps
WORKDIR /src
RUN python3 -m venv /opt/venv
# 1. the dependencies, from pyproject.toml alone: a code change does not reinstall them
COPY pyproject.toml images/requirements.py ./
RUN --mount=type=secret,id=pip_ca --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=hhpulse-pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    python3 requirements.py pyproject.toml gpu,pipeline > requirements.txt \
 && /opt/venv/bin/pip install --disable-pip-version-check -r requirements.txt

# the venv the image ships: pip and the large packages' test suites out; /opt/app on its path
FROM deps AS venv
RUN /opt/venv/bin/python -m pip uninstall -q -y pip \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*/tests' \
      \( -path '*/numpy/*' -o -path '*/scipy/*' -o -path '*/pandas/*' -o -path '*/sklearn/*' \) \
      -exec rm -rf {} + \
 && echo /opt/app > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hhpulse-app.pth"

# hhpulse itself (src/, components/, pipelines/) in /opt/app: a code change rebuilds only this
FROM deps AS app
COPY README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=secret,id=pip_ca --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=hhpulse-pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    /opt/venv/bin/pip install --disable-pip-version-check --no-deps --target /opt/app .

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/hhpulse/hhpulse
LABEL org.opencontainers.image.title="hhpulse-pipeline" \
      org.opencontainers.image.description="hhpulse Kubeflow pipeline steps (CUDA-capable XGBoost)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/app/bin:/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# the node's NVIDIA driver libraries: GKE mounts them at /usr/local/nvidia/lib64 (elsewhere the
# NVIDIA container toolkit puts them on the default search path); without them XGBoost trains on the
# CPU while it holds the GPU
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
RUN echo 'hhpulse:x:10001:10001:hhpulse:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'hhpulse:x:10001:' >> /etc/group
COPY --from=venv /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
WORKDIR /tmp
USER 10001:10001
CMD ["hhpulse", "--help"]
