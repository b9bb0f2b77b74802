#!/usr/bin/env bash
# The local monitoring stack on loopback, against the cluster of testenv/cluster.sh: the Prometheus Operator
# (run on the host with the cluster's kubeconfig), a real Prometheus that consumes the configuration the
# operator generates from ServiceMonitors and PrometheusRules, and prometheus-adapter serving
# custom.metrics.k8s.io with the chart's rule (so an HPA can scale on Triton's queue time).
#
# The operator reconciles the `Prometheus` object below into a config Secret, rule ConfigMaps and a
# StatefulSet of 0 replicas (no pod ever runs). testenv/monitoring_bridge.py reads the Secret and the
# ConfigMaps, adapts only what a process outside the cluster needs (kubeconfig_file for service
# discovery, rule file paths) and reloads the real prometheus binary (3.5, Go proxy, see versions.env).
# prometheus-adapter is registered as APIService v1beta1.custom.metrics.k8s.io through a selector-less
# Service whose EndpointSlice names 127.0.0.1:<port>: the apiserver (--enable-aggregator-routing) dials
# that address, never a ClusterIP. The apiserver refuses loopback IPs in IPv4 EndpointSlices, so the
# bridge also mirrors the loopback IPs of the pods behind each Service into FQDN EndpointSlices: that is
# what a ServiceMonitor's endpointslice discovery reads. Every process is tracked by PID in the state dir.
#
#   testenv/monitoring.sh up                start (or find running); prints `export PROMETHEUS_URL=...` last
#   testenv/monitoring.sh down              stop everything it started, unregister the APIService, remove state
#   testenv/monitoring.sh prometheus-stop   stop only the prometheus process (tests: "Prometheus down")
#   testenv/monitoring.sh prometheus-start  start it again on the same port and data
#   testenv/monitoring.sh status            exit 0 when Prometheus answers /-/ready
#
# Environment: CONCH_CLUSTER_DIR (the cluster's state, as for cluster.sh), CONCH_MONITORING_DIR,
# CONCH_PROM_PORT, CONCH_PROM_OPERATOR_PORT, CONCH_ADAPTER_PORT, CONCH_MONITORING_NAME (the Prometheus
# object's name and the operator's --controller-id, so that two stacks on one cluster never fight),
# CONCH_SCRAPE_INTERVAL (global default; a ServiceMonitor's interval wins), CONCH_ADAPTER_RATE_WINDOW,
# CONCH_PYTHON (a python with PyYAML and the kubernetes client; default: the repo's .venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"  # root, the pinned versions, CACHE, BIN; log, waits, processes by PID, PKI
COMPONENT=monitoring
CLUSTER=${CONCH_CLUSTER_DIR:-$HOME/.local/state/conch/cluster}
STATE=${CONCH_MONITORING_DIR:-$CLUSTER-monitoring}
KUBECONFIG_PATH=$CLUSTER/kubeconfig
PKI=$CLUSTER/pki
PROM_PORT=${CONCH_PROM_PORT:-29090}
OPERATOR_PORT=${CONCH_PROM_OPERATOR_PORT:-29091}
ADAPTER_PORT=${CONCH_ADAPTER_PORT:-29443}
NAME=${CONCH_MONITORING_NAME:-conch}
NS=conch-monitoring
SCRAPE_INTERVAL=${CONCH_SCRAPE_INTERVAL:-5s}
RATE_WINDOW=${CONCH_ADAPTER_RATE_WINDOW:-30s}
PYTHON=${CONCH_PYTHON:-$root/.venv/bin/python}
APISERVICE=v1beta1.custom.metrics.k8s.io
ADAPTER_SVC=prometheus-adapter-$NAME

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

prom_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null; }

# The apiserver trusts extension apiservers only when it runs with the front-proxy flags of cluster.sh.
aggregation_configured() {
  kubectl_ -n kube-system get configmap extension-apiserver-authentication \
    -o jsonpath='{.data.requestheader-client-ca-file}' 2>/dev/null | grep -q 'BEGIN CERTIFICATE'
}

install_objects() {
  kubectl_ apply --server-side --force-conflicts -f "$CACHE/crds/prometheus-operator-$PROM_OPERATOR_VERSION.yaml" >/dev/null
  wait_for "Prometheus CRD" 60 kubectl_ get --raw /apis/monitoring.coreos.com/v1/prometheuses
  kubectl_ create namespace "$NS" --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
  # replicas 0: the operator still generates the configuration; the StatefulSet never gets a pod.
  kubectl_ apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: $NAME
  namespace: $NS
  annotations: {operator.prometheus.io/controller-id: $NAME}
spec:
  replicas: 0
  version: $PROMETHEUS_VERSION
  serviceDiscoveryRole: EndpointSlice
  scrapeInterval: $SCRAPE_INTERVAL
  evaluationInterval: $SCRAPE_INTERVAL
  serviceMonitorSelector: {}
  serviceMonitorNamespaceSelector: {}
  podMonitorSelector: {}
  podMonitorNamespaceSelector: {}
  ruleSelector: {}
  ruleNamespaceSelector: {}
YAML
}

start_operator() {
  start prometheus-operator env KUBECONFIG="$KUBECONFIG_PATH" "$BIN/prometheus-operator" \
    --web.listen-address "127.0.0.1:$OPERATOR_PORT" --controller-id "$NAME" --log-level info
  wait_for "the operator's config Secret prometheus-$NAME" 90 kubectl_ -n "$NS" get secret "prometheus-$NAME"
}

start_bridge() {
  mkdir -p "$STATE/prometheus"
  start bridge "$PYTHON" "$here/monitoring_bridge.py" --kubeconfig "$KUBECONFIG_PATH" --namespace "$NS" \
    --name "$NAME" --out "$STATE/prometheus" --reload-url "http://127.0.0.1:$PROM_PORT/-/reload"
  wait_for "the bridge's prometheus.yml" 60 test -s "$STATE/prometheus/prometheus.yml"
}

start_prometheus() {
  start prometheus "$BIN/prometheus" --config.file "$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path "$STATE/tsdb" --storage.tsdb.retention.time 1d \
    --web.listen-address "127.0.0.1:$PROM_PORT" --web.enable-lifecycle --log.level info
  wait_for "prometheus /-/ready on 127.0.0.1:$PROM_PORT" 60 prom_ready
}

adapter_rules() {  # the chart's prometheus-adapter rule, rendered with this stack's rate window
  HELM_CACHE_HOME=$STATE/helm HELM_CONFIG_HOME=$STATE/helm HELM_DATA_HOME=$STATE/helm \
    "$BIN/helm" template conch "$root/charts/conch" --show-only templates/prometheus-adapter-rules.yaml \
    --set prometheusAdapter.rules.enabled=true --set "prometheusAdapter.rules.rateWindow=$RATE_WINDOW" \
    | "$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["config.yaml"])'
}

adapter_cert() {  # serving cert for the Service's DNS name (the apiserver checks it), signed by the cluster CA
  local dir=$STATE/adapter
  [ -f "$dir/tls.crt" ] && return
  mkdir -p "$dir"
  openssl genrsa -out "$dir/tls.key" 2048 2>/dev/null
  openssl req -new -key "$dir/tls.key" -subj "/CN=$ADAPTER_SVC.$NS.svc" 2>/dev/null \
    | openssl x509 -req -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 365 -sha256 -out "$dir/tls.crt" \
        -extfile <(printf 'subjectAltName=DNS:%s.%s.svc,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$ADAPTER_SVC" "$NS") 2>/dev/null
}

start_adapter() {
  adapter_rules > "$STATE/adapter-rules.yaml"
  adapter_cert
  start prometheus-adapter "$BIN/prometheus-adapter" --bind-address 127.0.0.1 --secure-port "$ADAPTER_PORT" \
    --tls-cert-file "$STATE/adapter/tls.crt" --tls-private-key-file "$STATE/adapter/tls.key" \
    --lister-kubeconfig "$KUBECONFIG_PATH" --authentication-kubeconfig "$KUBECONFIG_PATH" \
    --authorization-kubeconfig "$KUBECONFIG_PATH" --prometheus-url "http://127.0.0.1:$PROM_PORT/" \
    --config "$STATE/adapter-rules.yaml" --metrics-relist-interval 10s --v 1
  wait_for "prometheus-adapter on 127.0.0.1:$ADAPTER_PORT" 60 \
    curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --resolve "$ADAPTER_SVC.$NS.svc:$ADAPTER_PORT:127.0.0.1" \
      "https://$ADAPTER_SVC.$NS.svc:$ADAPTER_PORT/healthz"
}

# The apiserver refuses loopback addresses in IPv4 EndpointSlices (and Endpoints); an FQDN slice whose
# address is the literal 127.0.0.1 passes validation, and the aggregator dials its first address as is.
register_adapter() {
  local ca; ca=$(base64 -w0 < "$PKI/ca.crt")
  kubectl_ apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $ADAPTER_SVC, namespace: $NS}
spec:
  ports: [{name: https, port: 443, targetPort: $ADAPTER_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $ADAPTER_SVC
  namespace: $NS
  labels: {kubernetes.io/service-name: $ADAPTER_SVC, endpointslice.kubernetes.io/managed-by: conch.dev-monitoring}
addressType: FQDN
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
ports: [{name: https, port: $ADAPTER_PORT, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $APISERVICE, labels: {conch.dev/monitoring: "$NAME"}}
spec:
  group: custom.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $ca
  service: {name: $ADAPTER_SVC, namespace: $NS, port: 443}
YAML
  wait_for "APIService $APISERVICE Available" 90 bash -c \
    "'$BIN/kubectl' --kubeconfig '$KUBECONFIG_PATH' get apiservice $APISERVICE -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
}

unregister_adapter() {  # only when the APIService is still ours (another stack may have registered since)
  local owner
  owner=$(kubectl_ get apiservice "$APISERVICE" -o jsonpath='{.metadata.labels.conch\.dev/monitoring}' 2>/dev/null || true)
  [ "$owner" = "$NAME" ] && kubectl_ delete apiservice "$APISERVICE" --wait=false >/dev/null 2>&1 || true
  kubectl_ -n "$NS" delete service "$ADAPTER_SVC" --wait=false >/dev/null 2>&1 || true
  kubectl_ -n "$NS" delete endpointslice "$ADAPTER_SVC" --wait=false >/dev/null 2>&1 || true
}

up() {
  for b in prometheus prometheus-operator prometheus-adapter kubectl helm; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run hack/build-tools.sh monitoring (make tools) first"
  done
  [ -s "$KUBECONFIG_PATH" ] || die "no cluster at $CLUSTER: run testenv/cluster.sh up first"
  local t0=$SECONDS
  mkdir -p "$STATE"
  log "installing the Prometheus Operator CRDs and Prometheus $NS/$NAME"; install_objects
  log "starting prometheus-operator $PROM_OPERATOR_VERSION (web 127.0.0.1:$OPERATOR_PORT)"; start_operator
  log "starting the config bridge"; start_bridge
  log "starting prometheus on http://127.0.0.1:$PROM_PORT"; start_prometheus
  log "starting prometheus-adapter $PROM_ADAPTER_VERSION on 127.0.0.1:$ADAPTER_PORT"; start_adapter
  if aggregation_configured; then
    log "registering $APISERVICE"; register_adapter
  else
    log "warning: the apiserver runs without the front-proxy flags (a cluster started before they were added):"
    log "  $APISERVICE not registered; restart the cluster (cluster.sh down && up) for the custom metrics API"
  fi
  log "monitoring ready in $((SECONDS - t0))s"
  echo "export PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
}

down() {
  [ -s "$KUBECONFIG_PATH" ] && { unregister_adapter; kubectl_ -n "$NS" delete prometheus "$NAME" --wait=false >/dev/null 2>&1 || true; }
  local name
  for name in prometheus-adapter prometheus bridge prometheus-operator; do stop "$name"; done
  # the bridge's mirrored slices (another stack's bridge, if one runs, writes them again within a second)
  [ -s "$KUBECONFIG_PATH" ] && kubectl_ delete endpointslices -A --wait=false \
    -l endpointslice.kubernetes.io/managed-by=loopback-mirror.monitoring.conch.dev >/dev/null 2>&1 || true
  rm -rf "$STATE"
  log "monitoring stopped and state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  prometheus-stop) stop prometheus ;;
  prometheus-start) start_prometheus ;;
  status) prom_ready ;;
  *) echo "usage: $0 up|down|prometheus-stop|prometheus-start|status" >&2; exit 2 ;;
esac
