# A LOCAL STAND-IN for nvcr.io/nvidia/tritonserver:25.12-py3, for machines that cannot pull from NGC
# (hack/images.sh tags it with the NGC name in its own private docker daemon, then builds
# images/triton.Dockerfile on it unchanged). It is the Triton Inference Server 2.51 that the
# nvidia-pytriton 0.7.0 wheel bundles (python backend only: no onnxruntime/pytorch/tensorrt backends,
# no CUDA) laid out like NGC's (/opt/tritonserver/{bin,backends,lib}, tritonserver on PATH, a
# triton-server user with uid 1000, root by default), on Debian bookworm (python 3.11, where NGC
# 25.12 has Triton 2.64 on Ubuntu 24.04 and python 3.12; the wheelhouse is downloaded for the host's
# python, 3.11, so for this stand-in). Never push it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS unpack
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    set -e; whl=$(ls /wheels/nvidia_pytriton-0.7.0-*.whl); \
    python3 -m zipfile -e "$whl" /x; \
    mkdir -p /opt/tritonserver/lib; \
    cp -a /x/pytriton/tritonserver/bin /x/pytriton/tritonserver/backends /opt/tritonserver/; \
    cp -a /x/nvidia_pytriton.libs/. /opt/tritonserver/lib/; \
    cp /x/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub /opt/tritonserver/backends/python/; \
    rm -rf /opt/tritonserver/backends/python/__pycache__; \
    chmod 0755 /opt/tritonserver/bin/tritonserver /opt/tritonserver/backends/python/triton_python_backend_stub; \
    chmod -R a+rX /opt/tritonserver

FROM ${BASE_IMAGE}
# Debian's PEP 668 marker (/usr/lib/python3.11/EXTERNALLY-MANAGED) stays, like Ubuntu 24.04's on NGC:
# triton.Dockerfile's pip step has to install into the system python in spite of it, here as there.
RUN groupadd --gid 1000 triton-server \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash triton-server
COPY --from=unpack /opt/tritonserver /opt/tritonserver
ENV PATH=/opt/tritonserver/bin:$PATH \
    LD_LIBRARY_PATH=/opt/tritonserver/lib \
    TRITON_SERVER_VERSION=2.51.0
RUN tritonserver --help 2>&1 | grep -q "^Usage: tritonserver"
LABEL org.opencontainers.image.title="tritonserver-standin" \
      org.opencontainers.image.description="Local stand-in for nvcr.io/nvidia/tritonserver:25.12-py3: Triton 2.51.0 from nvidia-pytriton 0.7.0 (python backend only) on Debian bookworm" \
      org.opencontainers.image.version="2.51.0-pytriton0.7.0" \
      org.opencontainers.image.licenses="BSD-3-Clause"
