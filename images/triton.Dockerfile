# Triton for Conch: NVIDIA's tritonserver plus what the python steps of Conch's repositories import
# (model_repo_builder/triton/python_backend/): numpy (every step), tokenizers (the tokenizer step of a text
# ensemble), onnxruntime (export.backend "python", the CPU path) and onnxruntime-genai (a generative
# model's streaming step; it needs onnxruntime >= 1.31). The operator's default serving
# image (spec.serving.image; conch.api.types.DEFAULT_TRITON_IMAGE). Build from the repository root:
#   docker build -f images/triton.Dockerfile -t ghcr.io/conch-dev/tritonserver:24.10-py3-conch0.1.0 .
# (`make images` builds it offline on a local stand-in for the NGC base: images/tritonserver-standin.Dockerfile.)
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM ${TRITON_IMAGE}
USER root
# PIP_NO_INDEX=1 (hack/images.sh): install only from the wheels in images/wheels (--network=none).
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Into the system python3 that the python backend's stub embeds; pinned, so a rebuilt image
# behaves the same. numpy stays 1.x, like the builder's.
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    python3 -m pip install --find-links /wheels \
      "numpy==1.26.4" \
      "tokenizers==0.23.3" \
      "onnxruntime==1.32.0" \
      "onnxruntime-genai==0.18.0"
# Smoke check: the python steps' shared module and every third-party module they import load here.
RUN --mount=type=bind,source=model_repo_builder/triton/python_backend,target=/tmp/conch-steps \
    cd /tmp/conch-steps \
 && python3 -c "import textproc, numpy, tokenizers, onnxruntime, onnxruntime_genai; assert numpy.__version__.startswith('1.')"
# Triton's image user (uid/gid 1000), the uid the operator's serving pods run as.
USER 1000:1000
WORKDIR /tmp
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1
ARG REVISION=unknown
LABEL org.opencontainers.image.title="conch-tritonserver" \
      org.opencontainers.image.description="NVIDIA Triton 24.10 with numpy, tokenizers, onnxruntime and onnxruntime-genai for Conch's python steps (text ensembles, CPU backend)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="24.10-py3-conch0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="nvcr.io/nvidia/tritonserver:24.10-py3" \
      org.opencontainers.image.source="https://github.com/conch-dev/conch"
