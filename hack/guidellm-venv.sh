#!/usr/bin/env bash
# Installs guidellm (GUIDELLM_VERSION in versions.env), the load generator of the LLM serving benchmark
# (bench/bench_llm_load.py), into its own venv under $CACHE/guidellm-<version>/, apart from the project's
# venv (it brings its own torch, transformers and datasets pins). A second run installs nothing. Prints the
# path of the `guidellm` executable.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${CONCH_CACHE:-$HOME/.cache/conch}
VENV=$CACHE/guidellm-$GUIDELLM_VERSION
PY=${PY:-python3}

log() { printf '[guidellm-venv %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ -x "$VENV/bin/guidellm" ] && [ -f "$VENV/.stamp" ]; then
  log "guidellm $GUIDELLM_VERSION: cached"
  echo "$VENV/bin/guidellm"
  exit 0
fi
log "guidellm $GUIDELLM_VERSION: installing into $VENV (torch included: a few GB the first time)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
"$VENV/bin/python" -m pip install -q "guidellm==$GUIDELLM_VERSION" >&2
"$VENV/bin/guidellm" --version >&2
touch "$VENV/.stamp"
echo "$VENV/bin/guidellm"
