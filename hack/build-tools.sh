#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl), kwok and helm from the Go module proxy, and caches them per version outside the repo.
# A second run finds every binary in the cache and builds nothing. Prints progress per binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${CONCH_CACHE:-$HOME/.cache/conch}
BIN=$CACHE/bin
mkdir -p "$BIN"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOSUMDB=off GOFLAGS=-mod=mod
export GOPROXY=${GOPROXY:-https://proxy.golang.org}

log() { printf '[build-tools %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
have() { [ -x "$BIN/$1-$2" ]; }
# `hack/build-tools.sh kubelet` builds the kubelet (for testenv/realnode.sh) from the same wrapper module.
K8S_BINS="kube-apiserver kube-controller-manager kube-scheduler kubectl"

build_k8s() {
  local need=0 c
  for c in $K8S_BINS; do have "$c" "$K8S_VERSION" || need=1; done
  [ $need = 1 ] || { log "kubernetes $K8S_VERSION: cached"; return; }
  local dir=$CACHE/src/k8s-$K8S_VERSION minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local staging=v0.${K8S_VERSION#v1.}
  mkdir -p "$dir"
  log "kubernetes $K8S_VERSION: writing wrapper module in $dir"
  local upstream; upstream=$(curl -fsS "$GOPROXY/k8s.io/kubernetes/@v/$K8S_VERSION.mod")
  {
    echo "module conch.dev/tools/k8s"
    echo
    echo "$upstream" | grep -E '^go [0-9]'
    echo "$upstream" | grep -E '^godebug ' || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "$upstream" | sed -nE 's#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/.*#replace \1 => \1 '"$staging"'#p'
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local ts; ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local vflags="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    vflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    vflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$ts -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  (cd "$dir" && log "kubernetes: go mod download (slow the first time)" && go mod download k8s.io/kubernetes >&2)
  for c in $K8S_BINS; do
    have "$c" "$K8S_VERSION" && continue
    log "kubernetes: building $c (several minutes cold)"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $vflags" -o "$BIN/$c-$K8S_VERSION.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$BIN/$c-$K8S_VERSION.tmp" "$BIN/$c-$K8S_VERSION"
    log "kubernetes: $c done"
  done
}

build_etcd() {
  have etcd "$ETCD_VERSION" && { log "etcd $ETCD_VERSION: cached"; return; }
  local dir=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  local upstream; upstream=$(curl -fsS "$GOPROXY/go.etcd.io/etcd/server/v3/@v/$ETCD_VERSION.mod")
  {
    echo "module conch.dev/tools/etcd"
    echo "$upstream" | grep -E '^go [0-9]'
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 ; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
  } > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
  log "etcd $ETCD_VERSION: building"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd-$ETCD_VERSION.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd-$ETCD_VERSION.tmp" "$BIN/etcd-$ETCD_VERSION"
  log "etcd: done"
}

build_install() {  # name version package [ldflags]
  have "$1" "$2" && { log "$1 $2: cached"; return; }
  log "$1 $2: building"
  local tmp; tmp=$(mktemp -d)
  GOBIN=$tmp go install -trimpath -ldflags "-s -w ${4:-}" "$3@$2"
  mv "$tmp/$1" "$BIN/$1-$2"; rmdir "$tmp"
  log "$1: done"
}

fetch_servicemonitor_crd() {
  local out=$CACHE/crds/servicemonitors-$PROM_OPERATOR_VERSION.yaml
  [ -s "$out" ] && return
  mkdir -p "$CACHE/crds"
  local d; d=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')
  cp "$d/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$out.tmp"
  mv "$out.tmp" "$out"
}

fetch_kwok_stages() {
  local out=$CACHE/kwok-stages-$KWOK_VERSION.yaml
  [ -s "$out" ] && return
  local d; d=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')
  local f s=$d/kustomize/stage
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
    cat "$s/$f"; echo "---"
  done > "$out.tmp"
  mv "$out.tmp" "$out"
}

# ---- the monitoring stack (testenv/monitoring.sh) ------------------------------------------------
build_prom_operator() {  # the operator's go.mod replaces its pkg/ modules with local dirs: build through a wrapper module
  have prometheus-operator "$PROM_OPERATOR_VERSION" && { log "prometheus-operator $PROM_OPERATOR_VERSION: cached"; return; }
  local dir=$CACHE/src/prometheus-operator-$PROM_OPERATOR_VERSION m=github.com/prometheus-operator/prometheus-operator
  mkdir -p "$dir"
  local upstream; upstream=$(curl -fsS "$GOPROXY/$m/@v/$PROM_OPERATOR_VERSION.mod")
  {
    echo "module conch.dev/tools/prometheus-operator"
    echo "$upstream" | grep -E '^go [0-9]'
    echo "require $m $PROM_OPERATOR_VERSION"
    for sub in pkg/apis/monitoring pkg/client; do echo "replace $m/$sub => $m/$sub $PROM_OPERATOR_VERSION"; done
  } > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/operator"\n' "$m" > "$dir/tools.go"
  log "prometheus-operator $PROM_OPERATOR_VERSION: building (minutes cold)"
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROM_OPERATOR_VERSION#v}" \
     -o "$BIN/prometheus-operator-$PROM_OPERATOR_VERSION.tmp" "$m/cmd/operator")
  mv "$BIN/prometheus-operator-$PROM_OPERATOR_VERSION.tmp" "$BIN/prometheus-operator-$PROM_OPERATOR_VERSION"
  log "prometheus-operator: done"
}

fetch_prom_operator_crds() {  # every monitoring.coreos.com CRD the operator watches (Prometheus, PrometheusRule, ...)
  local out=$CACHE/crds/prometheus-operator-$PROM_OPERATOR_VERSION.yaml
  [ -s "$out" ] && return
  mkdir -p "$CACHE/crds"
  local d; d=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')
  local f; for f in "$d"/example/prometheus-operator-crd/*.yaml; do cat "$f"; echo "---"; done > "$out.tmp"
  mv "$out.tmp" "$out"
}

build_prometheus() {  # prometheus + promtool; only the kubernetes and file service discovery plugins
  have prometheus "$PROMETHEUS_VERSION" && have promtool "$PROMETHEUS_VERSION" && { log "prometheus $PROMETHEUS_VERSION: cached"; return; }
  local dir=$CACHE/src/prometheus-$PROMETHEUS_VERSION m=github.com/prometheus/prometheus
  mkdir -p "$dir"
  local upstream; upstream=$(curl -fsS "$GOPROXY/$m/@v/$PROMETHEUS_MODULE_VERSION.mod")
  {
    echo "module conch.dev/tools/prometheus"
    echo "$upstream" | grep -E '^go [0-9]'
    echo "require $m $PROMETHEUS_MODULE_VERSION"
    echo "$upstream" | grep -E '^replace ' || true
  } > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/prometheus"\n\t_ "%s/cmd/promtool"\n)\n' "$m" "$m" > "$dir/tools.go"
  local v=github.com/prometheus/common/version c
  for c in prometheus promtool; do
    have "$c" "$PROMETHEUS_VERSION" && continue
    log "prometheus $PROMETHEUS_VERSION: building $c (minutes cold)"
    (cd "$dir" && go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
       -ldflags "-s -w -X $v.Version=${PROMETHEUS_VERSION#v} -X $v.Branch=release -X $v.Revision=$PROMETHEUS_MODULE_VERSION" \
       -o "$BIN/$c-$PROMETHEUS_VERSION.tmp" "$m/cmd/$c")
    mv "$BIN/$c-$PROMETHEUS_VERSION.tmp" "$BIN/$c-$PROMETHEUS_VERSION"
  done
  log "prometheus: done"
}

build_prom_adapter() {  # its binary is cmd/adapter
  have prometheus-adapter "$PROM_ADAPTER_VERSION" && { log "prometheus-adapter $PROM_ADAPTER_VERSION: cached"; return; }
  log "prometheus-adapter $PROM_ADAPTER_VERSION: building (minutes cold)"
  # A wrapper module: `go install pkg@version` asks the proxy for the module's version list, which it refuses.
  local dir=$CACHE/src/prometheus-adapter-$PROM_ADAPTER_VERSION m=sigs.k8s.io/prometheus-adapter
  mkdir -p "$dir"
  printf 'module conch.dev/tools/prometheus-adapter\n\ngo 1.22.1\n\nrequire %s %s\n' "$m" "$PROM_ADAPTER_VERSION" > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/adapter"\n' "$m" > "$dir/tools.go"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/prometheus-adapter-$PROM_ADAPTER_VERSION.tmp" "$m/cmd/adapter")
  mv "$BIN/prometheus-adapter-$PROM_ADAPTER_VERSION.tmp" "$BIN/prometheus-adapter-$PROM_ADAPTER_VERSION"
  log "prometheus-adapter: done"
}

monitoring_tools() {
  fetch_prom_operator_crds
  build_prom_adapter
  build_prom_operator
  build_prometheus
  local c
  for c in prometheus:$PROMETHEUS_VERSION promtool:$PROMETHEUS_VERSION prometheus-operator:$PROM_OPERATOR_VERSION; do
    ln -sfn "$BIN/${c%%:*}-${c#*:}" "$BIN/${c%%:*}"
  done
  ln -sfn "$BIN/prometheus-adapter-$PROM_ADAPTER_VERSION" "$BIN/prometheus-adapter"
}

start=$(date +%s)
if [ "${1:-}" = monitoring ]; then  # only the monitoring stack (testenv/monitoring.sh)
  monitoring_tools
  log "monitoring tools ready in $BIN ($(( $(date +%s) - start ))s)"
  exit 0
fi
if [ "${1:-}" = kubelet ]; then  # only the kubelet: the real node's (testenv/realnode.sh)
  K8S_BINS=kubelet build_k8s
  ln -sfn "$BIN/kubelet-$K8S_VERSION" "$BIN/kubelet"
  log "kubelet ready in $BIN ($(( $(date +%s) - start ))s)"
  exit 0
fi
build_etcd
build_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
fetch_servicemonitor_crd
fetch_kwok_stages
build_k8s
for c in etcd:$ETCD_VERSION kwok:$KWOK_VERSION helm:$HELM_VERSION kube-apiserver:$K8S_VERSION \
         kube-controller-manager:$K8S_VERSION kube-scheduler:$K8S_VERSION kubectl:$K8S_VERSION; do
  ln -sfn "$BIN/${c%%:*}-${c#*:}" "$BIN/${c%%:*}"
done
monitoring_tools
log "all tools ready in $BIN ($(( $(date +%s) - start ))s)"
