# syntax=docker/dockerfile:1.7
#
# streamcast training image: `streamcast-train` with TensorFlow (the package's `train`
# extra), for the retrain CronJob (deploy/kubernetes/retrain-cronjob.yaml). The service
# image (../../Dockerfile) never carries any of this. Built from the repository root; its
# own ignore file (train.Dockerfile.dockerignore, next to this file) lets training/ in.
#
#   docker build -f deploy/docker/train.Dockerfile -t my.registry/streamcast-train:0.1.0 \
#       --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -v "$PWD/data:/data" my.registry/streamcast-train:0.1.0 \
#       fit --data /data/history.parquet --key-col key --time-col ts --value-col value \
#       --interval 1h --out /data/model

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/streamcast
ENV PATH=/opt/streamcast/bin:$PATH
WORKDIR /src

# Dependencies first (the runtime ones and the `train` extra, pinned in pyproject.toml),
# so a code change reuses this layer instead of reinstalling TensorFlow.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(d['dependencies'] + d['optional-dependencies']['train']))" \
        > /tmp/train-requirements.txt \
 && pip install --requirement /tmp/train-requirements.txt

COPY streamcast/ streamcast/
COPY training/ training/
RUN pip install --no-deps . \
 && python -c "import training.workflow, training.export, tsdata"

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="streamcast-train" \
      org.opencontainers.image.description="Trains, evaluates and exports streamcast's stateful LSTM (TensorFlow)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/training.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

RUN groupadd --system --gid 10001 streamcast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin streamcast

COPY --from=build /opt/streamcast /opt/streamcast

# The root file system is read-only in Kubernetes: every cache TensorFlow, Keras and
# matplotlib want goes under /tmp (an emptyDir there).
ENV PATH=/opt/streamcast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /work
USER 10001:10001
ENTRYPOINT ["streamcast-train"]
CMD ["--help"]
