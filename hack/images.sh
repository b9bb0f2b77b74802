#!/usr/bin/env bash
# Builds Conch's three images for real, offline, with Debian's docker.io:
#   ghcr.io/conch-dev/conch-operator:0.1.0              images/operator.Dockerfile (no torch)
#   ghcr.io/conch-dev/model-repo-builder:0.1.0          images/builder.Dockerfile
#   ghcr.io/conch-dev/tritonserver:25.12-py3-conch0.1.0 images/triton.Dockerfile
# Nothing is pulled from a container registry: the base images are made here (debootstrap
# --variant=minbase bookworm + docker import, tagged python:3.11-slim; a Triton stand-in tagged
# nvcr.io/nvidia/tritonserver:25.12-py3, see images/tritonserver-standin.Dockerfile), Python packages
# come from a wheelhouse downloaded from PyPI on the host, and every build runs with --network=none.
# dockerd is this script's own: its own data root (the layer cache, kept between runs), socket and
# network namespace (loopback only), started with --iptables=false --ip-forward=false --bridge=none.
#
#   hack/images.sh build     build the three images (starts dockerd, stops it unless it was running)
#   hack/images.sh save DIR  docker save each image to DIR/<name>.tar (for ctr image import)
#   hack/images.sh up|down   start / stop the private dockerd;  hack/images.sh docker ARGS  run docker
#   hack/images.sh names     the three image names;  hack/images.sh pins  the Triton image's pip pins
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CACHE=${CONCH_CACHE:-$HOME/.cache/conch}
STATE=${CONCH_IMAGES_DIR:-$HOME/.local/state/conch/images}
DATA_ROOT=${CONCH_DOCKER_ROOT:-$CACHE/docker}
SOCK=$STATE/docker.sock
WHEELHOUSE=$CACHE/wheelhouse
VERSION=0.1.0
REGISTRY=${CONCH_REGISTRY:-ghcr.io/conch-dev}
OPERATOR_IMAGE=$REGISTRY/conch-operator:$VERSION
BUILDER_IMAGE=$REGISTRY/model-repo-builder:$VERSION
TRITON_IMAGE=$REGISTRY/tritonserver:25.12-py3-conch$VERSION
TRITON_BASE=nvcr.io/nvidia/tritonserver:25.12-py3
PYTHON_BASE=python:3.11-slim
SUITE=bookworm
BASE_TAR=$CACHE/images/debian-$SUITE-minbase-python.tar

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
docker_() { DOCKER_BUILDKIT=1 /usr/bin/docker -H "unix://$SOCK" "$@"; }

need_packages() {
  local missing=() p
  for p in dockerd:docker.io debootstrap:debootstrap; do
    command -v "${p%%:*}" >/dev/null || [ -x "/usr/sbin/${p%%:*}" ] || missing+=("${p#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "install ${missing[*]} (Debian packages) first"
  log "installing ${missing[*]} (apt; services are not started)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

dockerd_alive() { [ -S "$SOCK" ] && docker_ version >/dev/null 2>&1; }

# dockerd in a network namespace of its own with only loopback in it: nothing it runs, and no pull,
# can reach any network.
up() {
  dockerd_alive && return 1
  need_packages
  mkdir -p "$STATE" "$DATA_ROOT"
  rm -f "$SOCK"
  setsid unshare --net sh -c 'ip link set lo up && exec "$@"' dockerd /usr/sbin/dockerd \
    --host "unix://$SOCK" --data-root "$DATA_ROOT" --exec-root "$STATE/exec" \
    --pidfile "$STATE/dockerd.pid" --iptables=false --ip-forward=false --ip-masq=false \
    --bridge=none --ip6tables=false >"$STATE/dockerd.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + 60))
  until dockerd_alive; do
    [ $SECONDS -lt $deadline ] || die "dockerd did not answer in 60 s (log: $STATE/dockerd.log)"
    sleep 0.5
  done
  log "dockerd up (data root $DATA_ROOT, no network)"
}

down() {
  [ -f "$STATE/dockerd.pid" ] || return 0
  local pid; pid=$(cat "$STATE/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$STATE/dockerd.pid" "$SOCK"
  log "dockerd stopped"
}

# The base rootfs: Debian's minimal variant plus python3.11 (venv, pip) and the few libraries the
# Triton stand-in links against. The tarball is cached; `docker import` makes it an image.
base_image() {
  if [ ! -s "$BASE_TAR" ]; then
    mkdir -p "$CACHE/images"
    local tmp; tmp=$(mktemp -d "$CACHE/images/rootfs.XXXXXX")
    log "debootstrap --variant=minbase $SUITE (about 2 minutes)"
    debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-pip,python-is-python3,libpython3.11,libexpat1,libgomp1 \
      "$SUITE" "$tmp/root" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
      || die "debootstrap failed (log: $STATE/debootstrap.log)"
    rm -rf "$tmp/root"/var/cache/apt/archives/*.deb "$tmp/root"/var/lib/apt/lists/* \
      "$tmp/root"/var/log/* "$tmp/root"/usr/share/doc/* "$tmp/root"/usr/share/man/*
    tar --numeric-owner -C "$tmp/root" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$tmp"
  fi
  local id; id=$(sha256sum "$BASE_TAR" | cut -c1-12)
  if [ "$(docker_ image inspect -f '{{index .Config.Labels "conch.dev/rootfs"}}' "$PYTHON_BASE" 2>/dev/null)" != "$id" ]; then
    log "docker import $BASE_TAR as $PYTHON_BASE (local stand-in)"
    docker_ import --change "LABEL conch.dev/rootfs=$id" --change 'CMD ["python3"]' \
      "$BASE_TAR" "$PYTHON_BASE" >/dev/null
  fi
}

# The wheels each image installs (linux x86_64, CPython 3.11: the host venv's python, which is every
# base's python here, the Triton stand-in's included; NGC's real 25.12 has 3.12, and an online build
# there resolves its own), downloaded from PyPI once per requirement set into $WHEELHOUSE/<set>; each
# build sees its image's set as images/wheels.
wheel_set() {  # name requirement...
  local name=$1; shift
  local dir=$WHEELHOUSE/$name stamp
  stamp=$(printf '%s\n' "$@" | sha256sum | cut -c1-16)
  mkdir -p "$dir"
  [ -f "$dir/.stamp-$stamp" ] && return
  log "wheels for $name: pip download from PyPI into $dir"
  local py=$root/.venv/bin/python
  [ -x "$py" ] || py=python3
  "$py" -m pip download -q --only-binary=:all: --dest "$dir" "$@"
  touch "$dir/.stamp-$stamp"
}

# The Triton image's requirements, written once, in images/triton.Dockerfile: each quoted
# "name==version" or "name[extra]==version" (the python steps' packages and the gateway's).
triton_pins() {
  grep -oE '"[A-Za-z0-9_.-]+(\[[A-Za-z0-9_,.-]+\])?==[0-9][0-9A-Za-z.]*"' "$root/images/triton.Dockerfile" | tr -d '"'
}

wheelhouse() {
  local deps pins
  mapfile -t deps < <(python3 "$root/images/pyproject_deps.py" "$root/pyproject.toml" operator)
  wheel_set operator "${deps[@]}" "setuptools>=77" wheel
  mapfile -t deps < <(python3 "$root/images/pyproject_deps.py" "$root/pyproject.toml" builder)
  log "(the builder's set is about 3 GB cold: PyPI's torch is the CUDA build, with its nvidia-* wheels)"
  wheel_set builder "${deps[@]}" "setuptools>=77" wheel
  mapfile -t pins < <(triton_pins)
  [ ${#pins[@]} -gt 0 ] || die "no pins found in images/triton.Dockerfile"
  wheel_set triton "${pins[@]}"
  wheel_set standin --no-deps "$(grep -oE 'nvidia-pytriton==[0-9.]+' "$root/pyproject.toml")"
}


# Each image is built from a small mirror (hard links) of what it uses: the repository's files
# and only its own wheels. BuildKit keeps one copy of a context per folder and sends what changed;
# with separate folders the builder's 3 GB of wheels is not re-sent because another image ran.
mirror() {  # name wheel-set...
  local ctx=$STATE/context-$1 f; shift
  rm -rf "$ctx"
  mkdir -p "$ctx/images/wheels"
  local files=("$root/pyproject.toml" "$root/README.md" "$root/operator" "$root/model_repo_builder" "$root/conch_gateway")
  cp -al "${files[@]}" "$ctx/" 2>/dev/null || cp -a "${files[@]}" "$ctx/"
  cp -p "$root"/images/*.Dockerfile "$root/images/pyproject_deps.py" "$ctx/images/"
  cp -p "$root/.dockerignore" "$ctx/"
  for set in "$@"; do
    for f in "$WHEELHOUSE/$set"/*.whl; do ln -f "$f" "$ctx/images/wheels/" 2>/dev/null || cp -p "$f" "$ctx/images/wheels/"; done
  done
  echo "$ctx"
}

build_one() {  # context dockerfile tag [build args...]
  local context=$1 file=$2 tag=$3; shift 3
  local t0=$SECONDS
  log "building $tag ($file)"
  docker_ build --network=none --build-arg PIP_NO_INDEX=1 \
    --build-arg "REVISION=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$@" -f "$root/$file" -t "$tag" "$context" >"$STATE/build-$(basename "$file" .Dockerfile).log" 2>&1 \
    || { tail -40 "$STATE/build-$(basename "$file" .Dockerfile).log" >&2; die "build of $tag failed"; }
  log "built $tag in $((SECONDS - t0)) s"
}

build() {
  local started=0 t0=$SECONDS
  mkdir -p "$STATE"
  if up; then started=1; fi
  base_image
  wheelhouse
  build_one "$(mirror standin standin)" images/tritonserver-standin.Dockerfile "$TRITON_BASE" \
    --build-arg "BASE_IMAGE=$PYTHON_BASE"
  build_one "$(mirror operator operator)" images/operator.Dockerfile "$OPERATOR_IMAGE"
  build_one "$(mirror builder builder)" images/builder.Dockerfile "$BUILDER_IMAGE"
  build_one "$(mirror triton triton)" images/triton.Dockerfile "$TRITON_IMAGE"
  # superseded layers and build contexts go (each changed dependency layer of the builder is ~6 GB);
  # the most recently used cache, what the next build reuses, stays
  docker_ image prune -f >/dev/null
  docker_ builder prune -f --filter type=regular --keep-storage "${CONCH_BUILD_CACHE_KEEP:-16GB}" >/dev/null
  docker_ image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
    | grep -E "^($REGISTRY|nvcr.io|python)" | sort >&2
  log "images built in $((SECONDS - t0)) s"
  [ $started = 0 ] || [ "${CONCH_KEEP_DOCKERD:-0}" = 1 ] || down
}

save() {  # dir
  local dir=$1 started=0 image
  mkdir -p "$dir"
  if up; then started=1; fi
  for image in "$OPERATOR_IMAGE" "$BUILDER_IMAGE" "$TRITON_IMAGE"; do
    docker_ save -o "$dir/$(basename "${image%%:*}").tar" "$image"
  done
  [ $started = 0 ] || down
}

case "${1:-}" in
  build) build ;;
  save) save "${2:?usage: $0 save DIR}" ;;
  up) up || true; echo "DOCKER_HOST=unix://$SOCK" ;;
  down) down ;;
  docker) shift; docker_ "$@" ;;
  pins) triton_pins ;;
  names) printf '%s\n' "$OPERATOR_IMAGE" "$BUILDER_IMAGE" "$TRITON_IMAGE" ;;
  *) echo "usage: $0 build|save DIR|up|down|docker ARGS|names|pins" >&2; exit 2 ;;
esac
