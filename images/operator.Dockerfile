# syntax=docker/dockerfile:1
# The Conch operator: kopf + the kubernetes client + prometheus-client. No torch, no builder deps.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t conch-operator:dev .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package build needs (pyproject lists both packages; README.md is its readme).
# README.m[d]: copied when present (pyproject's readme), synthesised otherwise.
COPY pyproject.toml README.m[d] ./
COPY operator/ operator/
COPY model_repo_builder/ model_repo_builder/
RUN test -f README.md || echo "# conch" > README.md \
 && python -m venv /opt/conch \
 && /opt/conch/bin/pip install ".[operator]" \
 && ! /opt/conch/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="conch-operator" \
      org.opencontainers.image.description="Conch Kubernetes operator (ModelDeployment controller)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/conch /opt/conch
# uid/gid 65532 ("nonroot"), matching the chart's podSecurityContext; the root filesystem can be
# read-only: nothing is written outside /tmp, and no bytecode is written at runtime.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
ENV PATH=/opt/conch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["conch-operator"]
CMD ["--all-namespaces", "--metrics-port=8080", "--liveness=http://0.0.0.0:8081/healthz"]
