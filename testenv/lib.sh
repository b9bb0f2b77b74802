# shellcheck shell=bash
# What the test environment's scripts share (cluster.sh, realnode.sh, monitoring.sh source it): the
# log line, bounded waits, processes tracked by PID under $STATE, and the local PKI (a CA, certs
# signed by it, the service-account key pair, kubeconfigs) that cluster.sh and realnode.sh issue.
#
# It sets root (the repository), the pinned versions (hack/versions.env), CACHE and BIN (the binaries
# of hack/build-tools.sh). The sourcing script sets, before calling the functions: COMPONENT (the log
# prefix), STATE (its state dir: pids/ and logs/ live there), PKI (the cert dir) for the PKI
# functions, and WAIT_EVERY if wait_for should poll other than every 0.3 s.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../hack/versions.env
source "$root/hack/versions.env"
CACHE=${CONCH_CACHE:-$HOME/.cache/conch}
BIN=$CACHE/bin

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$COMPONENT" -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

wait_for() {  # what timeout command...: poll the command until it succeeds or timeout seconds pass
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${timeout}s waiting for $what (logs: $STATE/logs)"
    sleep "${WAIT_EVERY:-0.3}"
  done
}

# ---- processes tracked by PID: `stop` ends exactly what `start` began --------------------------------

alive() { [ -f "$STATE/pids/$1" ] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

start() {  # name command...: in a session of its own, output appended to logs/<name>.log; no-op when alive
  local name=$1; shift
  alive "$name" && return
  mkdir -p "$STATE/pids" "$STATE/logs"
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

stop() {  # name [tenths]: SIGTERM, SIGKILL after tenths/10 seconds (default 10 s); forgets the PID
  local name=$1 tenths=${2:-100} pid
  [ -f "$STATE/pids/$name" ] || return 0
  pid=$(cat "$STATE/pids/$name")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/pids/$name"
}

# ---- the local PKI under $PKI: every file is made once and kept --------------------------------------

make_ca() {  # name common-name: a self-signed CA, $PKI/<name>.{crt,key}
  local name=$1 cn=$2
  mkdir -p "$PKI"
  [ -f "$PKI/$name.crt" ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" \
    -out "$PKI/$name.crt" -days 3650 -subj "/CN=$cn" 2>/dev/null
}

cert() {  # name subject [san] [ca]: signed by $PKI/<ca> (default ca); a SAN makes it serve TLS too
  local name=$1 subj=$2 san=${3:-} ca=${4:-ca}
  [ -f "$PKI/$name.crt" ] && return
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext; ext=$(mktemp)
  if [ -n "$san" ]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}

service_account_keys() {  # $PKI/sa.{key,pub}: the apiserver signs tokens, the controller-manager too
  [ -f "$PKI/sa.key" ] && return
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

kubeconfig() {  # user file server: a kubeconfig with the user's cert and key embedded
  local name=$1 file=$2 server=$3
  [ -f "$file" ] && return
  "$BIN/kubectl" config set-cluster local --server="$server" \
    --certificate-authority="$PKI/ca.crt" --embed-certs --kubeconfig="$file" >/dev/null
  "$BIN/kubectl" config set-credentials "$name" --client-certificate="$PKI/$name.crt" \
    --client-key="$PKI/$name.key" --embed-certs --kubeconfig="$file" >/dev/null
  "$BIN/kubectl" config set-context local --cluster=local --user="$name" --kubeconfig="$file" >/dev/null
  "$BIN/kubectl" config use-context local --kubeconfig="$file" >/dev/null
}
