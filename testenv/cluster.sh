#!/usr/bin/env bash
# The local Kubernetes control plane that Conch's tests and demo run on: etcd, kube-apiserver
# (TLS, RBAC, service-account tokens, audit log), kube-controller-manager, kube-scheduler and kwok
# simulating two GPU nodes and one CPU node, all on 127.0.0.1 and built from upstream by
# hack/build-tools.sh. Every process is tracked by PID in the state dir so `down` stops exactly
# what `up` started.
#
#   testenv/cluster.sh up       start (or find running) and print `export KUBECONFIG=...` last
#   testenv/cluster.sh down     stop everything it started and remove its state
#   testenv/cluster.sh status   exit 0 when the apiserver answers /readyz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"  # root, the pinned versions, CACHE, BIN; log, waits, processes by PID, PKI
COMPONENT=cluster
STATE=${CONCH_CLUSTER_DIR:-$HOME/.local/state/conch/cluster}
ETCD_PORT=${CONCH_ETCD_PORT:-22379}
API_PORT=${CONCH_API_PORT:-26443}
KCM_PORT=${CONCH_KCM_PORT:-20257}
SCHED_PORT=${CONCH_SCHED_PORT:-20259}
KWOK_PORT=${CONCH_KWOK_PORT:-20248}
# Pod IPs come from loopback so that nothing can ever route to a real network.
POD_CIDR=${CONCH_POD_CIDR:-127.64.0.1/16}
SERVICE_CIDR=${CONCH_SERVICE_CIDR:-10.96.0.0/16}
KUBECONFIG_PATH=$STATE/kubeconfig
PKI=$STATE/pki

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

ready() { curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
            "https://127.0.0.1:$API_PORT/readyz" >/dev/null; }

make_pki() {
  make_ca ca conch-local-ca
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=conch-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  # The aggregation layer (custom.metrics.k8s.io from prometheus-adapter, testenv/monitoring.sh): the apiserver
  # proxies to an extension apiserver with this client cert, which trusts the headers it sets via this CA.
  make_ca front-proxy-ca conch-front-proxy-ca
  cert front-proxy-client "/CN=front-proxy-client" "" front-proxy-ca
  service_account_keys
}

start_etcd() {
  start etcd "$BIN/etcd" --name conch --data-dir "$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "conch=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))" --log-level warn
  wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode RBAC --allow-privileged=true \
    --enable-admission-plugins ExtendedResourceToleration \
    --audit-policy-file "$here/cluster/audit-policy.yaml" --audit-log-path "$STATE/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --profiling=false \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true
  # (aggregator routing: the apiserver dials an APIService's EndpointSlice address, 127.0.0.1, never a ClusterIP)
  wait_for kube-apiserver 90 ready
}

start_controllers() {
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=true --controllers '*' --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --node-monitor-grace-period 40s --concurrent-gc-syncs 5 \
    --horizontal-pod-autoscaler-sync-period 5s \
    --kube-api-qps 200 --kube-api-burst 400 \
    --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 --concurrent-job-syncs 20
  # (client QPS 20 and 5 syncs per controller, the defaults, made the deployment controller the
  # bottleneck of thousands of Deployments: 759 of 5000 available after 16 min in bench_scale)
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
    --kube-api-qps 200 --kube-api-burst 400
  cat "$CACHE/kwok-stages-$KWOK_VERSION.yaml" "$here/cluster/kwok-pod-complete.yaml" > "$STATE/kwok-stages.yaml"
  # Leases carry the node heartbeats (the heartbeat-with-lease stage only refreshes node status every
  # ~10 min); without them the node-lifecycle controller marks nodes NotReady and their pods unready.
  start kwok "$BIN/kwok" --kubeconfig "$KUBECONFIG_PATH" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "$POD_CIDR" --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --config "$STATE/kwok-stages.yaml"
}

install_cluster_objects() {
  kubectl_ apply --server-side --force-conflicts -f "$CACHE/crds/servicemonitors-$PROM_OPERATOR_VERSION.yaml" >/dev/null
  kubectl_ apply -f "$here/cluster/nodes.yaml" >/dev/null
  wait_for "3 Ready nodes" 90 bash -c \
    "[ \$('$BIN/kubectl' --kubeconfig '$KUBECONFIG_PATH' get nodes -l type=kwok --no-headers 2>/dev/null | grep -cw Ready) -eq 3 ]"
  wait_for "default ServiceAccount" 60 kubectl_ -n default get serviceaccount default
  wait_for "ServiceMonitor CRD" 30 kubectl_ get --raw /apis/monitoring.coreos.com/v1
}

up() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run hack/build-tools.sh (make tools) first"
  done
  local t0=$SECONDS
  mkdir -p "$STATE"
  make_pki
  local server="https://127.0.0.1:$API_PORT"
  kubeconfig admin "$KUBECONFIG_PATH" "$server"
  kubeconfig controller-manager "$STATE/controller-manager.kubeconfig" "$server"
  kubeconfig scheduler "$STATE/scheduler.kubeconfig" "$server"
  log "starting etcd"; start_etcd
  log "starting kube-apiserver on https://127.0.0.1:$API_PORT"; start_apiserver
  log "starting controller-manager, scheduler, kwok"; start_controllers
  install_cluster_objects
  log "cluster ready in $((SECONDS - t0))s"
  kubectl_ get nodes -o wide >&2
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

down() {
  local name
  # a monitoring stack started against this cluster (testenv/monitoring.sh) goes first
  [ -d "${CONCH_MONITORING_DIR:-$STATE-monitoring}" ] && CONCH_CLUSTER_DIR=$STATE bash "$here/monitoring.sh" down || true
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name" 50; done
  rm -rf "$STATE"
  log "cluster stopped and state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) ready ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
