#!/usr/bin/env bash
# Runs the test control plane (etcd, kube-apiserver, kube-controller-manager) in
# the background, for people: the same processes and flags the Rust fixture uses.
#
# Usage: tests/control-plane/cluster.sh start|stop|status|env
#   start    start it (if not running) and print `export KUBECONFIG=...`
#   stop     stop it (its state directory is kept; `start` then begins afresh)
#   status   say what runs and whether the API server is ready
#   env      print `export KUBECONFIG=...`
# Try:  eval "$(tests/control-plane/cluster.sh start)" && kubectl get ns
#
# Environment:
#   PLINTH_CLUSTER_DIR      state directory (default: ${PLINTH_CACHE_DIR:-$HOME/.cache/plinth}/cluster)
#   PLINTH_CLUSTER_PORT     kube-apiserver port on 127.0.0.1 (default: 16443)
#   PLINTH_CLUSTER_ETCD_PORT  etcd client port (default: 16379; the peer port is the next one)
#   PLINTH_KUBE_BIN_DIR     binaries (default: the cache that tests/control-plane/provision.sh fills)
# Everything listens on 127.0.0.1 only. Logs are in <state dir>/logs/.
set -euo pipefail

readonly KUBE_VERSION=v1.20.2
readonly CACHE_ROOT="${PLINTH_CACHE_DIR:-${HOME}/.cache/plinth}"
readonly BIN_DIR="${PLINTH_KUBE_BIN_DIR:-${CACHE_ROOT}/kubernetes/${KUBE_VERSION}/bin}"
readonly STATE="${PLINTH_CLUSTER_DIR:-${CACHE_ROOT}/cluster}"
readonly API_PORT="${PLINTH_CLUSTER_PORT:-16443}"
readonly ETCD_PORT="${PLINTH_CLUSTER_ETCD_PORT:-16379}"
readonly ETCD_PEER_PORT=$((ETCD_PORT + 1))
readonly KUBECONFIG_PATH="${STATE}/kubeconfigs/admin.kubeconfig"
readonly COMPONENTS=(etcd kube-apiserver kube-controller-manager)
readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'cluster: %s\n' "$*" >&2; }
die() {
  printf 'cluster: error: %s\n' "$1" >&2
  [[ -n "${2:-}" ]] && printf 'cluster: what to do: %s\n' "$2" >&2
  exit 1
}

pid_of() {
  local file="${STATE}/run/$1.pid"
  [[ -f "${file}" ]] || return 1
  local pid
  pid=$(<"${file}")
  kill -0 "${pid}" 2>/dev/null || return 1
  printf '%s\n' "${pid}"
}

find_binaries() {
  local missing=()
  [[ -x "${BIN_DIR}/kube-apiserver" ]] || missing+=(kube-apiserver)
  [[ -x "${BIN_DIR}/kube-controller-manager" ]] || missing+=(kube-controller-manager)
  if [[ -x "${BIN_DIR}/etcd" ]]; then
    ETCD="${BIN_DIR}/etcd"
  elif command -v etcd >/dev/null 2>&1; then
    ETCD=$(command -v etcd)
  else
    missing+=(etcd)
  fi
  ((${#missing[@]} == 0)) ||
    die "missing ${missing[*]} in ${BIN_DIR}" "run ${HERE}/provision.sh (or set PLINTH_KUBE_BIN_DIR)"
  command -v openssl >/dev/null 2>&1 || die "openssl is not installed" "apt-get install -y openssl"
  command -v curl >/dev/null 2>&1 || die "curl is not installed" "apt-get install -y curl"
}

# issue NAME SUBJECT EXTENSIONS: a key and a certificate signed by the cluster's CA.
issue() {
  local pki="${STATE}/pki"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${pki}/$1.key" 2>/dev/null
  openssl req -new -key "${pki}/$1.key" -subj "$2" -out "${pki}/$1.csr"
  printf '%b\n' "$3" >"${pki}/$1.ext"
  openssl x509 -req -in "${pki}/$1.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "${pki}/$1.ext" -out "${pki}/$1.crt" 2>/dev/null
  rm -f "${pki}/$1.csr" "${pki}/$1.ext"
}

# kubeconfig FILE USER CERT-STEM
kubeconfig() {
  local pki="${STATE}/pki"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: plinth-test
  cluster:
    server: https://127.0.0.1:${API_PORT}
    certificate-authority-data: $(base64 -w0 <"${pki}/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"${pki}/$3.crt")
    client-key-data: $(base64 -w0 <"${pki}/$3.key")
contexts:
- name: plinth-test
  context:
    cluster: plinth-test
    user: $2
current-context: plinth-test
EOF
  chmod 600 "$1"
}

make_pki() {
  local pki="${STATE}/pki"
  [[ -f "${pki}/ca.crt" && -f "${pki}/sa.key" ]] && return 0
  say "making certificates in ${pki}"
  mkdir -p "${pki}" "${STATE}/kubeconfigs"
  chmod 700 "${pki}"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${pki}/ca.key" 2>/dev/null
  openssl req -x509 -new -key "${pki}/ca.key" -subj "/CN=plinth-test-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "${pki}/ca.crt"
  issue apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1"
  local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  issue admin "/CN=plinth-test-admin/O=system:masters" "${client}"
  issue kube-controller-manager "/CN=system:kube-controller-manager" "${client}"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${pki}/sa.key" 2>/dev/null
  openssl pkey -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub"
}

# launch NAME ARGS...: starts a process in its own session, logging to logs/NAME.log.
launch() {
  local name="$1"
  shift
  printf '==> %s\n' "$*" >>"${STATE}/logs/${name}.log"
  setsid "$@" </dev/null >>"${STATE}/logs/${name}.log" 2>&1 &
  echo $! >"${STATE}/run/${name}.pid"
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

readyz() {
  local pki="${STATE}/pki"
  curl -fsS --max-time 5 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
    "https://127.0.0.1:${API_PORT}/readyz" >/dev/null 2>&1
}

wait_until() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS > deadline)); then
      stop_all
      die "${what} within ${seconds}s" "read the logs in ${STATE}/logs/"
    fi
    for component in "${COMPONENTS[@]}"; do
      if [[ -f "${STATE}/run/${component}.pid" ]] && ! pid_of "${component}" >/dev/null; then
        tail -n 20 "${STATE}/logs/${component}.log" >&2 || true
        stop_all
        die "${component} exited while waiting for: ${what}" "read ${STATE}/logs/${component}.log"
      fi
    done
    sleep 0.3
  done
}

default_account_exists() {
  local pki="${STATE}/pki"
  curl -fsS --max-time 5 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
    "https://127.0.0.1:${API_PORT}/api/v1/namespaces/default/serviceaccounts/default" >/dev/null 2>&1
}

start() {
  if pid_of kube-apiserver >/dev/null && readyz; then
    say "already running at https://127.0.0.1:${API_PORT}"
    env_line
    return 0
  fi
  find_binaries
  stop_all quiet
  for port in "${API_PORT}" "${ETCD_PORT}" "${ETCD_PEER_PORT}"; do
    port_free "${port}" || die "port ${port} on 127.0.0.1 is in use" \
      "stop what uses it, or choose other ports with PLINTH_CLUSTER_PORT / PLINTH_CLUSTER_ETCD_PORT"
  done
  mkdir -p "${STATE}/logs" "${STATE}/run"
  rm -rf "${STATE}/etcd"
  mkdir -p "${STATE}/etcd" "${STATE}/apiserver"
  chmod 700 "${STATE}/etcd"
  make_pki
  kubeconfig "${KUBECONFIG_PATH}" plinth-test-admin admin
  kubeconfig "${STATE}/kubeconfigs/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
  local pki="${STATE}/pki"
  local etcd_url="http://127.0.0.1:${ETCD_PORT}" peer_url="http://127.0.0.1:${ETCD_PEER_PORT}"

  say "starting etcd (${etcd_url})"
  launch etcd "${ETCD}" --name=plinth-test --data-dir="${STATE}/etcd" \
    --listen-client-urls="${etcd_url}" --advertise-client-urls="${etcd_url}" \
    --listen-peer-urls="${peer_url}" --initial-advertise-peer-urls="${peer_url}" \
    --initial-cluster="plinth-test=${peer_url}" --initial-cluster-state=new \
    --logger=zap --log-outputs=stderr

  say "starting kube-apiserver (https://127.0.0.1:${API_PORT})"
  launch kube-apiserver "${BIN_DIR}/kube-apiserver" --etcd-servers="${etcd_url}" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${API_PORT}" --insecure-port=0 \
    --cert-dir="${STATE}/apiserver" --tls-cert-file="${pki}/apiserver.crt" --tls-private-key-file="${pki}/apiserver.key" \
    --client-ca-file="${pki}/ca.crt" --authorization-mode=RBAC \
    --service-account-key-file="${pki}/sa.pub" --service-account-signing-key-file="${pki}/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false
  wait_until "kube-apiserver ready" 120 readyz

  say "starting kube-controller-manager"
  launch kube-controller-manager "${BIN_DIR}/kube-controller-manager" \
    --kubeconfig="${STATE}/kubeconfigs/kube-controller-manager.kubeconfig" --leader-elect=false \
    --port=0 --secure-port=0 --use-service-account-credentials=true \
    --service-account-private-key-file="${pki}/sa.key" --root-ca-file="${pki}/ca.crt" \
    --cluster-signing-cert-file="${pki}/ca.crt" --cluster-signing-key-file="${pki}/ca.key" \
    --service-cluster-ip-range=10.0.0.0/24 --profiling=false
  wait_until "the controller manager to make the default service account" 120 default_account_exists

  say "ready: Kubernetes ${KUBE_VERSION} at https://127.0.0.1:${API_PORT} (no scheduler, no kubelet: pods never run)"
  say "logs in ${STATE}/logs/; stop with: $0 stop"
  env_line
}

stop_all() {
  local component pid stopped=0
  for component in kube-controller-manager kube-apiserver etcd; do
    if pid=$(pid_of "${component}"); then
      kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null || true
      stopped=1
      [[ "${1:-}" == quiet ]] || say "stopped ${component} (pid ${pid})"
    fi
    rm -f "${STATE}/run/${component}.pid"
  done
  if [[ "${stopped}" == 0 && "${1:-}" != quiet ]]; then
    say "nothing was running"
  fi
}

status() {
  local component pid rc=0
  for component in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "${component}"); then
      printf '%-24s running (pid %s)\n' "${component}" "${pid}"
    else
      printf '%-24s not running\n' "${component}"
      rc=1
    fi
  done
  if [[ -f "${STATE}/pki/admin.crt" ]] && readyz; then
    printf '%-24s ready at https://127.0.0.1:%s\n' "kube-apiserver /readyz" "${API_PORT}"
  else
    printf '%-24s not ready\n' "kube-apiserver /readyz"
    rc=1
  fi
  return "${rc}"
}

env_line() {
  [[ -f "${KUBECONFIG_PATH}" ]] || die "no kubeconfig yet" "run: $0 start"
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_PATH}"
}

case "${1:-}" in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  env) env_line ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
