# model-repo-builder: PyTorch -> compressed, verified ONNX Triton model repository. Run by the
# operator's build Jobs as `model-repo-builder build ... --summary-file /dev/termination-log`.
# Build from the repository root (`make images` builds all three offline, see images/README.md):
#   docker build -f images/builder.Dockerfile -t ghcr.io/conch-dev/model-repo-builder:0.1.0 .
# torch comes from the package index: on PyPI that is the CUDA build (with its nvidia-* wheels, a
# few GB; it runs on CPU too). For a CPU-only image point pip at PyTorch's CPU index:
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYTHON_IMAGE=python:3.11-slim

# Dependencies only, in their own layer: cached until pyproject.toml changes.
FROM ${PYTHON_IMAGE} AS deps
# PIP_NO_INDEX=1 (hack/images.sh): install only from the wheels in images/wheels (--network=none).
ARG PIP_NO_INDEX
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml images/pyproject_deps.py /src/
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    python -m venv /opt/conch \
 && python /src/pyproject_deps.py /src/pyproject.toml builder > /src/requirements.txt \
 && /opt/conch/bin/pip install --find-links /wheels -r /src/requirements.txt "setuptools>=77" wheel

FROM ${PYTHON_IMAGE}
# uid/gid 1000, the uid the operator's build pods run as (restricted Pod Security Standard).
# Everything the builder writes goes to the model store (/store) or /tmp (both volumes).
RUN groupadd --gid 1000 builder \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin builder
COPY --from=deps /opt/conch /opt/conch
# The project itself (README.md is pyproject's readme): a small layer of its own.
RUN --mount=type=bind,source=.,target=/src,rw \
    /opt/conch/bin/pip install --no-cache-dir --no-deps --no-index --no-build-isolation /src \
 && /opt/conch/bin/model-repo-builder --help >/dev/null
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
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="conch-builder" \
      org.opencontainers.image.description="Conch model-repo-builder (PyTorch to verified Triton ONNX repositories)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/conch-dev/conch"
