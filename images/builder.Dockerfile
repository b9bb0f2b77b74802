# syntax=docker/dockerfile:1
# model-repo-builder: PyTorch -> compressed, verified ONNX Triton model repository. Run by the
# operator's build Jobs as `model-repo-builder build ... --summary-file /dev/termination-log`.
# Build from the repository root:  docker build -f images/builder.Dockerfile -t conch-builder:dev .
# torch comes from PyPI by default (CUDA wheels); for a smaller CPU-only image pass
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
WORKDIR /src
# README.m[d]: copied when present (pyproject's readme), synthesised otherwise.
COPY pyproject.toml README.m[d] ./
COPY operator/ operator/
COPY model_repo_builder/ model_repo_builder/
RUN test -f README.md || echo "# conch" > README.md \
 && python -m venv /opt/conch \
 && /opt/conch/bin/pip install ".[builder]" \
 && /opt/conch/bin/model-repo-builder --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="conch-builder" \
      org.opencontainers.image.description="Conch model-repo-builder (PyTorch to verified Triton ONNX repositories)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/conch /opt/conch
# uid/gid 1000, the uid the operator's build pods run as (restricted Pod Security Standard).
# Everything the builder writes goes to the model store (/store) or /tmp (both volumes).
RUN groupadd --gid 1000 builder \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin builder
ENV PATH=/opt/conch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TORCH_HOME=/tmp/torch \
    XDG_CACHE_HOME=/tmp/.cache
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["model-repo-builder"]
CMD ["--help"]
