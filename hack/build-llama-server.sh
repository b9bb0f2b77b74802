#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU, no curl, no OpenSSL, no web UI download) from the llama.cpp sources
# vendored in the llama-cpp-python sdist on PyPI (LLAMA_CPP_PYTHON_VERSION in versions.env), for the LLM
# serving benchmark (bench/bench_llm_load.py). The binary is linked statically against ggml/llama and cached
# with a version.json under $CACHE/llama.cpp/<version>/: a second run builds nothing. Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${CONCH_CACHE:-$HOME/.cache/conch}
VERSION=${LLAMA_CPP_PYTHON_VERSION}
DEST=$CACHE/llama.cpp/$VERSION
JOBS=${LLAMA_BUILD_JOBS:-2}
PY=${PY:-python3}

log() { printf '[build-llama-server %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ -x "$DEST/bin/llama-server" ] && [ -f "$DEST/version.json" ]; then
  log "llama-cpp-python $VERSION: cached"
  echo "$DEST/bin/llama-server"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/conch-llama-build-XXXXXX")
trap 'rm -rf "$work"' EXIT
log "llama-cpp-python $VERSION: downloading the sdist"
"$PY" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$work" >&2
tar -xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
src=$work/llama_cpp_python-$VERSION/vendor/llama.cpp
[ -f "$src/CMakeLists.txt" ] || { log "no vendored llama.cpp in the sdist"; exit 1; }
# the sdist ships the vendored tree's git metadata (one commit): the build info and version.json name it
commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)

log "configuring (commit $commit)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$work/configure.log" 2>&1 \
  || { tail -40 "$work/configure.log" >&2; exit 1; }
log "building llama-server with -j$JOBS (several minutes on 2 cores)"
start=$SECONDS
cmake --build "$work/build" --target llama-server -j"$JOBS" >"$work/build.log" 2>&1 \
  || { tail -60 "$work/build.log" >&2; exit 1; }
log "built in $((SECONDS - start)) s"

staging=$DEST.tmp.$$
rm -rf "$staging"
mkdir -p "$staging/bin"
cp "$work/build/bin/llama-server" "$staging/bin/"
# a static build needs no libllama/libggml; copy any that a shared build would leave, with an rpath-free lookup
find "$work/build/bin" -maxdepth 1 -name '*.so*' -exec cp -a {} "$staging/bin/" \;
server_version=$(LD_LIBRARY_PATH="$staging/bin" "$staging/bin/llama-server" --version 2>&1 | tr '\n' ' ' || true)
printf '{"llama_cpp_python": "%s", "llama_cpp_commit": "%s", "server_version": "%s", "build_s": %d}\n' \
  "$VERSION" "$commit" "${server_version% }" "$((SECONDS - start))" >"$staging/version.json"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$staging" "$DEST"
log "cached in $DEST"
echo "$DEST/bin/llama-server"
