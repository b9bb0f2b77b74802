# Triton for Conch: NVIDIA's tritonserver plus what the python steps of Conch's repositories import
# (model_repo_builder/triton/python_backend/): numpy (every step), tokenizers (the tokenizer step of a text
# ensemble), onnxruntime (export.backend "python", the CPU path) and onnxruntime-genai (a generative
# model's streaming step; it needs onnxruntime >= 1.31); and Conch's OpenAI-compatible gateway
# (`conch-gateway`, package conch_gateway: starlette, uvicorn, pydantic, tritonclient[grpc]), the second
# container of a generative model's serving pod, which runs this same image. The operator's default
# serving image (spec.serving.image; conch.api.types.DEFAULT_TRITON_IMAGE). Build from the repository root:
#   docker build -f images/triton.Dockerfile -t ghcr.io/conch-dev/tritonserver:24.10-py3-conch0.1.0 .
# (`make images` builds it offline on a local stand-in for the NGC base: images/tritonserver-standin.Dockerfile.)
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM ${TRITON_IMAGE}
USER root
# PIP_NO_INDEX=1 (hack/images.sh): install only from the wheels in images/wheels (--network=none).
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Into the system python3 that the python backend's stub embeds (and that runs the gateway); pinned, so
# a rebuilt image behaves the same, and every pin is here: hack/images.sh downloads the wheels of each
# quoted "name==version" below. numpy stays 1.x, like the builder's. One pip run resolves the lot, so
# protobuf is tritonclient's 6.x, which onnxruntime accepts too. Python: the stand-in has 3.11, NGC 24.10
# has 3.10. The gateway's pins are the newest releases that still install on 3.10 (starlette 1.8 and
# uvicorn 0.55 need 3.11), but onnxruntime 1.32.0 has no 3.10 wheel (1.23.2 is the last), and
# onnxruntime-genai 0.18.0 needs it: on NGC's real 24.10 this step fails until those two pins change.
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    python3 -m pip install --find-links /wheels \
      "numpy==1.26.4" \
      "tokenizers==0.23.3" \
      "onnxruntime==1.32.0" \
      "onnxruntime-genai==0.18.0" \
      "starlette==1.7.0" \
      "uvicorn==0.54.0" \
      "pydantic==2.14.4" \
      "tritonclient[grpc]==2.73.0" \
      "grpcio==1.85.3"
# The gateway's package alone, as plain files in /opt/conch, with pyproject's console script
# (conch-gateway = conch_gateway.__main__:main) as a small launcher that puts /opt/conch on sys.path.
# Why not `pip install .`: the project's wheel is every Conch package (operator, builder), needs a
# build backend (setuptools) offline in the image and would put them all on this python's path; the
# gateway is pure python with its dependencies installed above, so copying it is all pip would do. Not
# PYTHONPATH either: that would reach the python backend's steps too. Byte-compiled here, because uid
# 1000 cannot write /opt (and the pods' root filesystem is read-only).
COPY conch_gateway /opt/conch/conch_gateway
RUN printf '%s\n' '#!/usr/bin/env python3' \
      '"""conch-gateway, pyproject.toml [project.scripts], for the package in /opt/conch."""' \
      'import sys' \
      'sys.path.insert(0, "/opt/conch")' \
      'from conch_gateway.__main__ import main' \
      'sys.exit(main())' >/usr/local/bin/conch-gateway \
 && chmod 0755 /usr/local/bin/conch-gateway \
 && python3 -m compileall -q /opt/conch/conch_gateway
# Smoke check: the python steps' shared module and every third-party module they import load here, and
# the gateway's console script runs (its --help imports every module of conch_gateway, and so theirs).
RUN --mount=type=bind,source=model_repo_builder/triton/python_backend,target=/tmp/conch-steps \
    cd /tmp/conch-steps \
 && python3 -c "import textproc, numpy, tokenizers, onnxruntime, onnxruntime_genai; assert numpy.__version__.startswith('1.')" \
 && conch-gateway --help | grep -q -- --triton-grpc
# Triton's image user (uid/gid 1000), the uid the operator's serving pods run as.
USER 1000:1000
WORKDIR /tmp
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1
ARG REVISION=unknown
LABEL org.opencontainers.image.title="conch-tritonserver" \
      org.opencontainers.image.description="NVIDIA Triton 24.10 with numpy, tokenizers, onnxruntime and onnxruntime-genai for Conch's python steps (text ensembles, CPU backend, generative models), and Conch's OpenAI-compatible gateway (conch-gateway)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="24.10-py3-conch0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="nvcr.io/nvidia/tritonserver:24.10-py3" \
      org.opencontainers.image.source="https://github.com/conch-dev/conch"
