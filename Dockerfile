# syntax=docker/dockerfile:1.7
# qarm service images. Linted here (`make lint` runs hadolint); no Docker engine runs on the
# project's machines, so the build itself is untested here.
#
#   docker build -t qarm:cpu .                        # default: CPU (onnxruntime, faiss-cpu)
#   docker build --target gpu -t qarm:gpu .           # CUDA runtime, onnxruntime-gpu, faiss-gpu
#   docker build --build-arg BUNDLE_STAGE=bundle-baked \
#       --build-arg BUNDLE_VERSION=<version> -t qarm:<version> .     # artifacts/<version> baked in
#
# Without a baked bundle, mount one (read-only) under /bundles: QARM_ARTIFACTS=/bundles and
# QARM_BUNDLE=latest serve the newest version there; QARM_BUNDLE=/bundles/<version> pins one.
# No torch, no compilers, no build tools in either final stage; the service runs as uid 10001
# and cannot write the bundles (root-owned, read-only) or anything but /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
# bundle-none: nothing baked in (mount one); bundle-baked: artifacts/${BUNDLE_VERSION} baked in.
ARG BUNDLE_STAGE=bundle-none

# ---------------------------------------------------------------- the bundle (optional)
FROM ${PYTHON_IMAGE} AS bundle-none
RUN mkdir -p /bundles

FROM bundle-none AS bundle-baked
# A version folder under artifacts/ (the folder keeps its name, the bundle version).
ARG BUNDLE_VERSION
COPY artifacts/${BUNDLE_VERSION} /bundles/${BUNDLE_VERSION}
RUN test -f "/bundles/${BUNDLE_VERSION}/manifest.json"

FROM ${BUNDLE_STAGE} AS bundle

# ---------------------------------------------------------------- CPU: build the venv
FROM ${PYTHON_IMAGE} AS cpu-builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first (they change rarely): the package's own code is stubbed for this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p codebooks runtime store service \
    && touch codebooks/__init__.py runtime/__init__.py store/__init__.py service/__init__.py \
    && /opt/venv/bin/pip install ".[serve]"
# Then the code: only the rooms the service stands on (no models/, no torch).
COPY codebooks ./codebooks
COPY runtime ./runtime
COPY store ./store
COPY service ./service
RUN /opt/venv/bin/pip install --no-deps --force-reinstall . \
    && /opt/venv/bin/python -c "import service.app, codebooks, runtime, store, onnxruntime, faiss"

# ---------------------------------------------------------------- GPU: build the venv
FROM ${CUDA_IMAGE} AS gpu-builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu's python3 (3.12 on 24.04); versions follow the CUDA base image, not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
RUN mkdir -p codebooks runtime store service \
    && touch codebooks/__init__.py runtime/__init__.py store/__init__.py service/__init__.py \
    && /opt/venv/bin/pip install ".[gpu]"
COPY codebooks ./codebooks
COPY runtime ./runtime
COPY store ./store
COPY service ./service
RUN /opt/venv/bin/pip install --no-deps --force-reinstall .

# ---------------------------------------------------------------- GPU image: `--target gpu`
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 qarm \
    && useradd --system --uid 10001 --gid qarm --home-dir /nonexistent --shell /usr/sbin/nologin qarm
COPY --from=gpu-builder /opt/venv /opt/venv
COPY --from=bundle /bundles /bundles
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QARM_HOST=0.0.0.0 \
    QARM_PORT=8000 \
    QARM_ARTIFACTS=/bundles \
    QARM_BUNDLE=latest \
    QARM_EXECUTION_PROVIDER=cuda \
    QARM_SQLITE_PATH=/tmp/qarm-store.sqlite3
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QARM_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "service"]

# ---------------------------------------------------------------- CPU image: the default target
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 qarm \
    && useradd --system --uid 10001 --gid qarm --home-dir /nonexistent --shell /usr/sbin/nologin qarm
COPY --from=cpu-builder /opt/venv /opt/venv
COPY --from=bundle /bundles /bundles
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QARM_HOST=0.0.0.0 \
    QARM_PORT=8000 \
    QARM_ARTIFACTS=/bundles \
    QARM_BUNDLE=latest \
    QARM_EXECUTION_PROVIDER=cpu \
    QARM_SQLITE_PATH=/tmp/qarm-store.sqlite3
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QARM_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "service"]
