#!/usr/bin/env bash
# A local Kubernetes cluster with ONE real node: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd (Debian's 1.6) + runc, the CNI bridge plugin, and a kubelet built from
# upstream at K8S_VERSION (hack/build-tools.sh kubelet). Pods run in real containers from Conch's
# images (hack/images.sh, loaded with `ctr -n k8s.io image import`), with cgroup limits, the
# securityContext they ask for, probes from the kubelet and `kubectl logs`.
#
# Network safety: everything runs inside ONE network namespace created here, whose only
# interfaces are `lo` and the bridge `cni0` (pods hang off it by veth pairs that never leave the
# namespace). It has no interface to the host's network and no route out. Its processes are
# started with `nsenter --net=...`; anything that talks to the apiserver or a pod (kubectl, helm,
# the tests) runs inside it too: `testenv/realnode.sh exec CMD...`. The kubernetes Service's ClusterIP
# is an address of the namespace's loopback where the apiserver listens on 443, so pods reach the
# apiserver with their in-cluster config and no kube-proxy.
#
#   testenv/realnode.sh up [--no-images]   start (or find running); loads the images unless told not to
#   testenv/realnode.sh down               stop what `up` started, restore the sysctls, remove the state
#   testenv/realnode.sh exec CMD...        run CMD inside the namespace (KUBECONFIG set)
#   testenv/realnode.sh status             exit 0 when the node is Ready
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"  # root, the pinned versions, CACHE, BIN; log, waits, processes by PID, PKI
COMPONENT=realnode
WAIT_EVERY=0.5
STATE=${CONCH_REALNODE_DIR:-$HOME/.local/state/conch/realnode}
NETNS=${CONCH_REALNODE_NETNS:-conch-realnode}
NS_PATH=/run/netns/$NETNS
NODE=realnode
NODE_IP=10.88.0.1
POD_SUBNET=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_VIP=10.96.0.1
PKI=$STATE/pki
KUBECONFIG_PATH=$STATE/kubeconfig
PAUSE_IMAGE=conch.local/pause:3.10.2
SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops"
# the kubelet evicts pods (and admits none) below this much free disk; up refuses to start below twice it
EVICT_DISK_FLOOR_MIB=1024

in_ns() { nsenter --net="$NS_PATH" -- "$@"; }
kubectl_() { in_ns "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { in_ns ctr --address "$STATE/containerd.sock" -n k8s.io "$@"; }

start_in_ns() {  # name command...   (inside the namespace, in a session of its own)
  local name=$1; shift
  start "$name" nsenter --net="$NS_PATH" -- "$@"
}

need_packages() {
  local missing=() p
  for p in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
           gcc:gcc ip:iproute2 nsenter:util-linux; do
    if [ "${p:0:1}" = / ]; then [ -e "${p%%:*}" ] || missing+=("${p#*:}")
    else command -v "${p%%:*}" >/dev/null || [ -x "/usr/sbin/${p%%:*}" ] || missing+=("${p#*:}"); fi
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} (apt; services are not started)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

# The namespace: lo, the bridge with the node's address, the Service VIP on lo. Nothing else.
make_netns() {
  [ -e "$NS_PATH" ] || ip netns add "$NETNS"
  in_ns ip link set lo up
  in_ns ip link show cni0 >/dev/null 2>&1 || in_ns ip link add cni0 type bridge
  in_ns ip addr replace "$NODE_IP/16" dev cni0
  in_ns ip link set cni0 up
  in_ns ip addr replace "$API_VIP/32" dev lo
  # the promise: no interface but lo, cni0 and the pods' veths (which only ever join cni0)
  local ifs; ifs=$(in_ns ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vE '^(lo|cni0|veth.*)$' || true)
  [ -z "$ifs" ] || die "namespace $NETNS has unexpected interfaces: $ifs"
}

make_pki() {
  make_ca ca conch-realnode-ca
  cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:$NODE_IP,IP:$API_VIP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=conch-admin"
  cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  service_account_keys
}

ready() { kubectl_ get --raw /readyz; }

start_control_plane() {
  start_in_ns etcd "$BIN/etcd" --name conch --data-dir "$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster conch=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 --log-level warn
  wait_for etcd 30 in_ns curl -fsS --max-time 2 http://127.0.0.1:2379/health
  start_in_ns kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port 443 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet.crt" --kubelet-client-key "$PKI/apiserver-kubelet.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction \
    --profiling=false
  wait_for kube-apiserver 90 ready
  start_in_ns kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=true --controllers '*' --leader-elect=false \
    --bind-address 127.0.0.1 \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key"
  start_in_ns kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1
}

write_containerd_config() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$STATE/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE for lowering oom_score_adj below its own
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc || echo /usr/sbin/runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  cat >"$STATE/cni/net.d/10-conch.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "conch", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.88.1.1",
             "gateway": "$NODE_IP"}]], "routes": [{"dst": "0.0.0.0/0"}],
             "dataDir": "$STATE/cni/ipam"}},
  {"type": "loopback"}]}
EOF
}

write_kubelet_config() {
  mkdir -p "$STATE/kubelet"
  : >"$STATE/kubelet/resolv.conf"
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$STATE/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: $NODE_IP
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# kubelet would set vm.overcommit_memory, kernel.panic, kernel.panic_on_oops on the host; with
# protectKernelDefaults it only checks them (up saves and sets them, down restores them)
protectKernelDefaults: false
makeIPTablesUtilChains: false
resolvConf: $STATE/kubelet/resolv.conf
clusterDomain: cluster.local
# absolute disk floors: a percentage of a large shared disk (2% of 252 GiB = 5 GiB) put the node under
# DiskPressure while GiBs were free, and the operator's pod then never started (helm --wait timed out)
evictionHard: {memory.available: 100Mi, nodefs.available: ${EVICT_DISK_FLOOR_MIB}Mi, imagefs.available: ${EVICT_DISK_FLOOR_MIB}Mi, nodefs.inodesFree: 2%}
# never garbage-collect images: they come only from `ctr image import` (a full disk once removed them all)
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
podPidsLimit: 4096
maxPods: 50
EOF
}

save_sysctls() {
  [ -f "$STATE/sysctls.saved" ] && return
  local k; for k in $SYSCTLS; do echo "$k=$(sysctl -n "$k")"; done >"$STATE/sysctls.saved"
}

restore_sysctls() {
  [ -f "$STATE/sysctls.saved" ] || return 0
  local kv; while read -r kv; do sysctl -q -w "$kv" >/dev/null || true; done <"$STATE/sysctls.saved"
  log "restored $(tr '\n' ' ' <"$STATE/sysctls.saved")"
}

build_pause() {
  ctr_ image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return
  local src; src=$(cd "$CACHE/src/k8s-$K8S_VERSION" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  local dir; dir=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-conch -o "$dir/pause" "$src"
  "$root/hack/images.sh" docker build -q --network=none -t "$PAUSE_IMAGE" -f - "$dir" >/dev/null <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
  "$root/hack/images.sh" docker save -o "$dir/pause.tar" "$PAUSE_IMAGE"
  ctr_ image import "$dir/pause.tar" >/dev/null
  rm -rf "$dir"
}

load_images() {  # the three Conch images, from hack/images.sh's daemon
  local dir=$STATE/image-ids image name
  mkdir -p "$dir"
  set -o pipefail
  for image in $("$root/hack/images.sh" names); do
    local want; want=$("$root/hack/images.sh" docker image inspect -f '{{.Id}}' "$image") \
      || die "$image is not built: run make images (hack/images.sh build) first"
    [ "$(ctr_ image ls -q "name==$image" 2>/dev/null | head -1)" = "$image" ] \
      && [ -f "$dir/$(basename "${image%%:*}").id" ] && [ "$(cat "$dir/$(basename "${image%%:*}").id")" = "$want" ] \
      && continue
    name=$(basename "${image%%:*}")
    log "ctr image import $image (docker save streamed into containerd; layers it has are skipped)"
    "$root/hack/images.sh" docker save "$image" | ctr_ image import - >/dev/null
    echo "$want" >"$dir/$name.id"
  done
}

check_disk() {
  local free_mib; free_mib=$(df -Pm "$STATE" | awk 'NR==2 {print $4}')
  [ "$free_mib" -ge $((2 * EVICT_DISK_FLOOR_MIB)) ] \
    || die "only ${free_mib} MiB free on the disk holding $STATE: the kubelet would report DiskPressure and start no pod (it needs ${EVICT_DISK_FLOOR_MIB} MiB; free some space, e.g. old clones or pytest's /tmp/pytest-of-\$USER)"
}

node_ready() {
  kubectl_ get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

up() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespace, containerd, kubelet)"
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run hack/build-tools.sh and hack/build-tools.sh kubelet first"
  done
  need_packages
  local t0=$SECONDS images=1
  [ "${1:-}" = --no-images ] && images=0
  mkdir -p "$STATE"
  make_netns
  make_pki
  local server=https://127.0.0.1:443
  kubeconfig admin "$KUBECONFIG_PATH" "$server"
  kubeconfig controller-manager "$STATE/controller-manager.kubeconfig" "$server"
  kubeconfig scheduler "$STATE/scheduler.kubeconfig" "$server"
  kubeconfig kubelet "$STATE/kubelet.kubeconfig" "$server"
  log "control plane in netns $NETNS (apiserver https://$API_VIP:443 for pods)"
  start_control_plane
  write_containerd_config
  start_in_ns containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 ctr_ version
  local dockerd=0  # pause and Conch's images come out of hack/images.sh's daemon
  if ! "$root/hack/images.sh" docker version >/dev/null 2>&1; then "$root/hack/images.sh" up >/dev/null; dockerd=1; fi
  build_pause
  [ $images = 0 ] || load_images
  [ $dockerd = 0 ] || "$root/hack/images.sh" down
  check_disk
  write_kubelet_config
  save_sysctls
  start_in_ns kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE" --node-ip "$NODE_IP" \
    --root-dir "$STATE/kubelet/root" --cert-dir "$STATE/kubelet/pki" \
    --node-labels node.conch.dev/real=true --v 1
  wait_for "node $NODE Ready" 120 node_ready
  wait_for "default ServiceAccount" 60 kubectl_ -n default get serviceaccount default
  log "real node ready in $((SECONDS - t0))s; run things with: testenv/realnode.sh exec CMD"
  kubectl_ get nodes -o wide >&2
}

down() {
  [ -d "$STATE" ] || { log "nothing to stop"; return; }
  # pods first, so that their containers, mounts and cgroups go with the kubelet's help
  if alive kubelet && alive kube-apiserver; then
    kubectl_ delete pods --all -A --grace-period=5 --wait=true --timeout=60s >/dev/null 2>&1 || true
  fi
  local name
  stop kubelet
  if alive containerd; then  # any sandbox left: stop and remove it through CRI
    local t; for t in $(ctr_ task ls -q 2>/dev/null); do ctr_ task kill -s KILL "$t" >/dev/null 2>&1 || true; done
  fi
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
  restore_sysctls
  # kubelet's and the shims' mounts under the state dir
  grep -o " $STATE[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  [ -e "$NS_PATH" ] && ip netns delete "$NETNS"
  rm -rf "$STATE"
  log "real node stopped and state removed"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) node_ready ;;
  exec) shift; KUBECONFIG=$KUBECONFIG_PATH CONCH_REALNODE_KUBECONFIG=$KUBECONFIG_PATH in_ns "$@" ;;
  kubectl) shift; kubectl_ "$@" ;;
  *) echo "usage: $0 up [--no-images]|down|status|exec CMD...|kubectl ARGS" >&2; exit 2 ;;
esac
