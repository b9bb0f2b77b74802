# Triton for Conch: NVIDIA's tritonserver plus what the python steps of Conch's repositories import
# (model_repo_builder/triton/python_backend/): numpy (every step), tokenizers (the tokenizer step of a text
# ensemble), onnxruntime (export.backend "python", the CPU path) and onnxruntime-genai (a generative
# model's streaming step; it needs onnxruntime >= 1.31); and Conch's OpenAI-compatible gateway
# (`conch-gateway`, package conch_gateway: starlette, uvicorn, pydantic, tritonclient[grpc]), the second
# container of a generative model's serving pod, which runs this same image, as does the auth proxy
# (`conch-gateway auth-proxy`, spec.auth: aiohttp, grpcio, prometheus-client; aiohttp 3.14.5 has cp311
# and cp312 manylinux_2_28 wheels, prometheus-client is pure python). The operator's default
# serving image (spec.serving.image; conch.api.types.DEFAULT_TRITON_IMAGE). Build from the repository root:
#   docker build -f images/triton.Dockerfile -t ghcr.io/conch-dev/tritonserver:25.12-py3-conch0.1.0 .
# (`make images` builds it offline on a local stand-in for the NGC base: images/tritonserver-standin.Dockerfile.)
# The base: NGC's Triton 25.12 (Triton 2.64, CUDA 13.1: NVIDIA driver 575 or later), Ubuntu 24.04 with
# python 3.12. Verified in NVIDIA's documentation: Triton's release notes put every release from 24.12
# on "Ubuntu 24.04 including Python 3.12" (docs.nvidia.com/deeplearning/triton-inference-server/
# archives/triton-inference-server-2530/user-guide/docs/introduction/release_notes.html), the
# Release Compatibility Matrix lists Python 3.12.3 for 25.01 through 25.12 (.../user-guide/docs/
# introduction/compatibility.html, the trtllm-python-py3 table; the same release's -py3 image has the same
# OS), and release-notes/rel-25-12.html the driver. 24.10 (Ubuntu 22.04, python 3.10) could not be
# kept: onnxruntime 1.32.0 and onnxruntime-genai 0.18.0 publish no cp310 wheels.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.12-py3

FROM ${TRITON_IMAGE}
USER root
# PIP_NO_INDEX=1 (hack/images.sh): install only from the wheels in images/wheels (--network=none).
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Into the system python3 that the python backend's stub embeds (and that runs the gateway); pinned, so
# a rebuilt image behaves the same, and every pin is here: hack/images.sh downloads the wheels of each
# quoted "name==version" below. numpy stays 1.x, like the builder's. One pip run resolves the lot, so
# protobuf is tritonclient's 6.x, which onnxruntime accepts too. Python: NGC 25.12 has 3.12, the stand-in
# 3.11; every pin has wheels for both (PyPI, linux x86_64: numpy 1.26.4 and tokenizers manylinux2014,
# onnxruntime and onnxruntime-genai manylinux_2_28, within Ubuntu 24.04's glibc 2.39; checked with
# `pip download --only-binary=:all: --python-version 3.12`, each pin alone and the whole set resolved).
# Ubuntu 24.04 marks its python3 externally managed (PEP 668); this is an image's own system python,
# which Triton's python backend embeds, so the pip step alone overrides the marker.
RUN --mount=type=bind,source=images/wheels,target=/wheels \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --find-links /wheels \
      "numpy==1.26.4" \
      "tokenizers==0.23.3" \
      "onnxruntime==1.32.0" \
      "onnxruntime-genai==0.18.0" \
      "starlette==1.7.0" \
      "uvicorn==0.54.0" \
      "pydantic==2.14.4" \
      "tritonclient[grpc]==2.73.0" \
      "grpcio==1.85.3" \
      "aiohttp==3.14.5" \
      "prometheus-client==0.26.0"
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
# The repository check every serving pod's init container runs before Triton loads the repository
# (conch.render.verify): the builder's own module (model_repo_builder/store/verify.py: standard library
# only, no package imports), copied alone as conch_verify.py, with a `conch-verify` launcher; one
# implementation for `model-repo-builder verify` and for the pods, and no builder image on GPU nodes.
COPY model_repo_builder/store/verify.py /opt/conch/conch_verify.py
RUN printf '%s\n' '#!/usr/bin/env python3' \
      '"""conch-verify, pyproject.toml [project.scripts], for the module in /opt/conch."""' \
      'import sys' \
      'sys.path.insert(0, "/opt/conch")' \
      'from conch_verify import main' \
      'sys.exit(main())' >/usr/local/bin/conch-verify \
 && chmod 0755 /usr/local/bin/conch-verify \
 && python3 -m compileall -q /opt/conch/conch_verify.py
# Smoke check: the python steps' shared module and every third-party module they import load here, and
# the gateway's console script runs (its --help imports every module of conch_gateway, and so theirs).
RUN --mount=type=bind,source=model_repo_builder/triton/python_backend,target=/tmp/conch-steps \
    cd /tmp/conch-steps \
 && python3 -c "import textproc, numpy, tokenizers, onnxruntime, onnxruntime_genai; assert numpy.__version__.startswith('1.')" \
 && conch-gateway --help | grep -q -- --triton-grpc \
 && conch-gateway auth-proxy --help | grep -q -- --tokens \
 && conch-verify --help | grep -q -- --message-file
# Triton's image user (uid/gid 1000), the uid the operator's serving pods run as.
USER 1000:1000
WORKDIR /tmp
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1
ARG REVISION=unknown
LABEL org.opencontainers.image.title="conch-tritonserver" \
      org.opencontainers.image.description="NVIDIA Triton 25.12 with numpy, tokenizers, onnxruntime and onnxruntime-genai for Conch's python steps (text ensembles, CPU backend, generative models), Conch's OpenAI-compatible gateway (conch-gateway) and repository check (conch-verify)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="25.12-py3-conch0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="nvcr.io/nvidia/tritonserver:25.12-py3" \
      org.opencontainers.image.source="https://github.com/conch-dev/conch"
