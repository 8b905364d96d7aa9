# syntax=docker/dockerfile:1.7
#
# streamcast runtime image: the forecasting service only. No TensorFlow, no training
# code, no pyarrow: the image installs the locked runtime dependencies
# (deploy/docker/runtime-requirements.lock) and never the `train` or `parquet` extra. The model is not baked in; mount it at /models/model.onnx
# (or build deploy/docker/model.Dockerfile on top; see docs/operations.md).
#
#   docker build -t streamcast:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --init --rm -p 9108:9108 -v "$PWD/models/pedestrian:/models:ro" \
#       -e STREAMCAST_BOOTSTRAP_SERVERS=broker:9092 streamcast:0.1.0
#
# Signals: the service installs its own SIGTERM/SIGINT handlers, so it drains correctly
# as PID 1. Still run it with `docker run --init` (compose: `init: true`) so a tiny init
# reaps any stray child and forwards signals; Kubernetes needs nothing extra.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# One self-contained virtualenv, copied whole into the runtime stage at the same path.
RUN python -m venv /opt/streamcast
ENV PATH=/opt/streamcast/bin:$PATH
WORKDIR /src

# Dependencies first, so a code change reuses this layer instead of reinstalling
# onnxruntime & co: the lock (deploy/docker/lock.py) is pyproject.toml's
# [project].dependencies (never an extra: no TensorFlow, no pyarrow) and everything they
# need, each at the version the test suite ran with. --no-deps installs exactly that set;
# pip check proves it complete and consistent.
COPY pyproject.toml README.md deploy/docker/runtime-requirements.lock ./
RUN pip install --no-deps --requirement runtime-requirements.lock \
 && pip check

# Only the service package: training/ is not in the build context (.dockerignore), so
# setuptools finds streamcast alone; the streamcast-train script it still declares
# would fail without training/ and is removed.
COPY streamcast/ streamcast/
RUN pip install --no-deps . \
 && pip check \
 && rm -f /opt/streamcast/bin/streamcast-train \
 && python -c "import streamcast.service.app, streamcast.api.app" \
 && ! python -c "import tensorflow" 2>/dev/null \
 && ! python -c "import pyarrow" 2>/dev/null

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="streamcast" \
      org.opencontainers.image.description="Real-time LSTM forecasting for Kafka streams (stateful ONNX serving)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volume
# ownership (fsGroup) is predictable; no home, no login shell.
RUN groupadd --system --gid 10001 streamcast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin streamcast \
 && mkdir -p /models /app

COPY --from=build /opt/streamcast /opt/streamcast
COPY deploy/docker/healthcheck.py /opt/streamcast/healthcheck.py

# The container's contract: model path and metrics/health port are fixed here so every
# deployment file can rely on them; everything else comes from STREAMCAST_* variables.
ENV PATH=/opt/streamcast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMCAST_MODEL_PATH=/models/model.onnx \
    STREAMCAST_HTTP_PORT=9108 \
    STREAMCAST_LOG_FORMAT=json

# The working directory is where the service looks for an optional .env file.
WORKDIR /app
USER 10001:10001
EXPOSE 9108
STOPSIGNAL SIGTERM
# /healthz is liveness (the process and its loop are alive); python because slim has no
# curl. start-period covers loading the model and restoring state.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/streamcast/bin/python", "/opt/streamcast/healthcheck.py", "/healthz"]

ENTRYPOINT ["streamcast"]
CMD ["serve"]
