# syntax=docker/dockerfile:1
# The KServe predictor image: slim, CPU-only XGBoost, runs as a non-root user.
# KServe's storage initializer mounts the model bundle at /mnt/models.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
# the same install lines that images/check_install.sh runs in CI
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip wheel \
 && /opt/venv/bin/pip install ".[cpu,serve]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
RUN groupadd --gid 10001 hhpulse && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hhpulse
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "hhpulse.serving"]
