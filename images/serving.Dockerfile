# The KServe predictor image: the CPU-only XGBoost build and only what the predictor needs at run
# time; non-root, and fine with a read-only root filesystem (KServe's storage initializer mounts
# the model bundle at /mnt/models). Build: `make images`.
#
# pyarrow and deltalake stay out: only the pipeline's history code imports them (the bundle is
# read from /mnt/models). boto3 is in for `hhpulse logsink` (the prediction log sink the chart runs from
# this image; it writes served/... batches to S3). kserve's own requirements (the kubernetes
# client among them) stay in. tests/test_images.py checks the built image (contents, size <= 800 MB).
#
# BASE_IMAGE and the pip secrets (pip_ca, pip_conf): as in pipeline.Dockerfile.
ARG BASE_IMAGE=hhpulse-base:bookworm

FROM ${BASE_IMAGE} AS deps
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml images/requirements.py ./
RUN --mount=type=secret,id=pip_ca --mount=type=secret,id=pip_conf \
    --mount=type=cache,target=/root/.cache/pip,id=hhpulse-pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    python3 requirements.py pyproject.toml cpu,serve --without pyarrow deltalake > requirements.txt \
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
LABEL org.opencontainers.image.title="hhpulse-serving" \
      org.opencontainers.image.description="hhpulse KServe predictor (salary and demand cohorts) and its prediction log sink" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/app/bin:/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN echo 'hhpulse:x:10001:10001:hhpulse:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'hhpulse:x:10001:' >> /etc/group
COPY --from=venv /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# the predictor; the log sink runs with the command `python -m hhpulse.cli logsink` (the chart's)
ENTRYPOINT ["python", "-m", "hhpulse.serving"]
