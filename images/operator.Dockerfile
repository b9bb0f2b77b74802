# The Conch operator: kopf + the kubernetes client + prometheus-client. No torch, no builder deps.
# Build from the repository root (`make images` builds all three offline, see images/README.md):
#   docker build -f images/operator.Dockerfile -t ghcr.io/conch-dev/conch-operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim

# Dependencies only, in their own layer: cached until pyproject.toml changes.
FROM ${PYTHON_IMAGE} AS deps
# PIP_NO_INDEX=1 (hack/images.sh): install only from the wheels in images/wheels (--network=none).
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml images/pyproject_deps.py /src/
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    python -m venv /opt/conch \
 && python /src/pyproject_deps.py /src/pyproject.toml operator > /src/requirements.txt \
 && /opt/conch/bin/pip install --find-links /wheels -r /src/requirements.txt "setuptools>=77" wheel

FROM ${PYTHON_IMAGE}
# uid/gid 65532 ("nonroot"), matching the chart's podSecurityContext; the root filesystem can be
# read-only: nothing is written outside /tmp, and no bytecode is written at runtime.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=deps /opt/conch /opt/conch
# The project itself (README.md is pyproject's readme): a small layer of its own, no torch.
RUN --mount=type=bind,source=.,target=/src,rw \
    /opt/conch/bin/pip install --no-cache-dir --no-deps --no-index --no-build-isolation /src \
 && /opt/conch/bin/conch-operator --help >/dev/null \
 && ! /opt/conch/bin/python -c "import torch" 2>/dev/null
ENV PATH=/opt/conch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["conch-operator"]
CMD ["--all-namespaces", "--metrics-port=8080", "--liveness=http://0.0.0.0:8081/healthz"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="conch-operator" \
      org.opencontainers.image.description="Conch Kubernetes operator (ModelDeployment controller)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/conch-dev/conch"
