#!/usr/bin/env bash
# Provisions the test control plane: etcd, kube-apiserver and kube-controller-manager.
#
# Kubernetes v1.20.2 is built from Debian's `kubernetes` source package with
# Debian's Go toolchain; etcd comes from Debian's `etcd-server`. The binaries
# are cached, keyed by version, under
#   ${PLINTH_CACHE_DIR:-$HOME/.cache/plinth}/kubernetes/v1.20.2/bin/
# and reused while they work. A build happens in a temporary directory and is
# moved into place only when complete, so a half build is never taken as cached.
# Before building, the patches in tests/control-plane/patches/*.patch are
# applied to the source with `patch -p1`, in name order.
#
# Usage: tests/control-plane/provision.sh [--force]
#   --force   rebuild even when cached binaries work
# Environment:
#   PLINTH_CACHE_DIR       cache root (default: $HOME/.cache/plinth)
#   PLINTH_DEBIAN_MIRROR   Debian mirror for the source package (default: http://deb.debian.org)
#   PLINTH_KEEP_BUILD=1    keep the build directory (for debugging a failed build)
#
# Prints the bin directory on the last line of stdout; everything else goes to stderr.
set -euo pipefail

readonly KUBE_VERSION=v1.20.2
readonly KUBE_MAJOR=1
readonly KUBE_MINOR=20
readonly SOURCE_PACKAGE=kubernetes
readonly DEBIAN_SUITE=bookworm
readonly CACHE_ROOT="${PLINTH_CACHE_DIR:-${HOME}/.cache/plinth}"
readonly VERSION_DIR="${CACHE_ROOT}/kubernetes/${KUBE_VERSION}"
readonly BIN_DIR="${VERSION_DIR}/bin"
readonly MIRROR="${PLINTH_DEBIAN_MIRROR:-http://deb.debian.org}"
# Bumped whenever the way the binaries are built changes: older caches are rebuilt.
# 3: tests/control-plane/patches/ applied (a custom resource may hold "" again).
readonly RECIPE=3
# Go >= 1.18 changed the runtime's map iterator; reflect2 1.0.1, vendored by
# Kubernetes 1.20, then crashes the kube-apiserver (SIGSEGV in mapiternext when
# encoding custom resources). Debian's reflect2 1.0.2 replaces the vendored copy.
readonly REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
# Fixes applied to the source before building (see each file's header).
readonly PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/patches"

FORCE=0
for arg in "$@"; do
  case "${arg}" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "provision: unknown argument '${arg}' (try --help)" >&2
      exit 2
      ;;
  esac
done

STEP="start"
HINT=""
WORK=""
START_TIME=$(date +%s)

# step NAME HINT: announces a step; HINT says what to do if it fails.
step() {
  STEP="$1"
  HINT="${2:-}"
  printf '==> [%4ss] %s\n' "$(($(date +%s) - START_TIME))" "${STEP}" >&2
}

die() {
  trap - ERR
  printf '\nprovision: FAILED in step "%s": %s\n' "${STEP}" "$1" >&2
  if [[ -n "${HINT}" ]]; then
    printf 'provision: what to do: %s\n' "${HINT}" >&2
  fi
  if [[ -n "${WORK}" && -d "${WORK}" ]]; then
    printf 'provision: build logs are in %s (kept for inspection; the next run removes it).\n' "${WORK}/logs" >&2
    PLINTH_KEEP_BUILD=1
  fi
  exit 1
}

on_error() {
  local rc=$?
  trap - ERR
  printf '\nprovision: FAILED in step "%s" (exit code %s, line %s).\n' "${STEP}" "${rc}" "$1" >&2
  if [[ -n "${HINT}" ]]; then
    printf 'provision: what to do: %s\n' "${HINT}" >&2
  fi
  if [[ -n "${WORK}" && -d "${WORK}" ]]; then
    printf 'provision: build logs are in %s (kept for inspection; the next run removes it).\n' "${WORK}/logs" >&2
    PLINTH_KEEP_BUILD=1
  fi
  exit "${rc}"
}
trap 'on_error $LINENO' ERR

cleanup() {
  if [[ -n "${WORK}" && -d "${WORK}" && "${PLINTH_KEEP_BUILD:-0}" != 1 ]]; then
    rm -rf "${WORK}"
  fi
}
trap cleanup EXIT

# run LOGNAME CMD...: runs a command with its output in the build log; on failure shows the log tail.
run() {
  local log="${WORK}/logs/$1.log"
  shift
  if ! "$@" >"${log}" 2>&1; then
    printf -- '--- last lines of %s ---\n' "${log}" >&2
    tail -n 40 "${log}" >&2
    printf -- '---\n' >&2
    return 1
  fi
}

as_root() {
  if [[ "$(id -u)" == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "root is needed to run: $*"
  fi
}

# binaries_work DIR: true when DIR holds working binaries of the expected version.
binaries_work() {
  local dir="$1"
  [[ -x "${dir}/kube-apiserver" && -x "${dir}/kube-controller-manager" && -e "${dir}/etcd" ]] || return 1
  "${dir}/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes ${KUBE_VERSION}" || return 1
  "${dir}/kube-controller-manager" --version 2>/dev/null | grep -qx "Kubernetes ${KUBE_VERSION}" || return 1
  "${dir}/etcd" --version >/dev/null 2>&1 || return 1
  grep -qx "recipe: ${RECIPE}" "${dir}/BUILD-INFO" 2>/dev/null || return 1
}

find_etcd() {
  local candidate
  for candidate in "$(command -v etcd 2>/dev/null || true)" /usr/bin/etcd /usr/local/bin/etcd; do
    if [[ -n "${candidate}" && -x "${candidate}" ]]; then
      printf '%s\n' "${candidate}"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------
step "check system packages (golang-go, golang-github-modern-go-reflect2-dev, etcd-server, openssl, tar, patch, ca-certificates)" \
  "install them by hand: apt-get update && apt-get install -y golang-go golang-github-modern-go-reflect2-dev etcd-server openssl ca-certificates tar gzip patch"
missing=()
command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]] || missing+=(etcd-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v tar >/dev/null 2>&1 || missing+=(tar)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
need_go=1
if [[ "${FORCE}" == 0 ]] && binaries_work "${BIN_DIR}"; then
  need_go=0
fi
if [[ "${need_go}" == 1 ]]; then
  if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/lib/go/bin/go ]]; then
    missing+=(golang-go)
  fi
  [[ -f "${REFLECT2_SRC}/go_above_118.go" ]] || missing+=(golang-github-modern-go-reflect2-dev)
  command -v patch >/dev/null 2>&1 || missing+=(patch)
fi
if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available: install them with your package manager"
  step "install ${missing[*]} with apt-get" \
    "check that the Debian package archive is reachable, then run: apt-get update && apt-get install -y ${missing[*]}"
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
ETCD_PATH=$(find_etcd) || die "etcd is not on PATH nor in /usr/bin after installing etcd-server"

# ---------------------------------------------------------------------------
step "look for cached binaries in ${BIN_DIR}"
if [[ "${FORCE}" == 0 ]] && binaries_work "${BIN_DIR}"; then
  if [[ "$(readlink -f "${BIN_DIR}/etcd")" != "$(readlink -f "${ETCD_PATH}")" ]]; then
    ln -sfn "${ETCD_PATH}" "${BIN_DIR}/etcd"
  fi
  printf '==> cached binaries work: %s\n' "$("${BIN_DIR}/kube-apiserver" --version)" >&2
  printf '%s\n' "${BIN_DIR}"
  exit 0
fi
if [[ -e "${BIN_DIR}" ]]; then
  printf '==> %s exists but does not hold working %s binaries: rebuilding\n' "${BIN_DIR}" "${KUBE_VERSION}" >&2
fi

# ---------------------------------------------------------------------------
step "find the Go toolchain" "apt-get install -y golang-go (Go 1.15 to 1.19 are known to build Kubernetes ${KUBE_VERSION} in GOPATH mode)"
GO=$(command -v go 2>/dev/null || true)
[[ -n "${GO}" ]] || GO=/usr/lib/go/bin/go
[[ -x "${GO}" ]] || die "no go binary found"
go_version=$("${GO}" env GOVERSION)
printf '    using %s (%s)\n' "${GO}" "${go_version}" >&2

# One build at a time per cache; what an interrupted build left is removed.
step "lock ${VERSION_DIR}" "another provision.sh may be running; wait for it, or remove ${VERSION_DIR}/.lock if none is"
mkdir -p "${VERSION_DIR}"
exec 9>"${VERSION_DIR}/.lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 1800 9 || die "could not lock ${VERSION_DIR}/.lock within 30 minutes"
fi
if [[ "${FORCE}" == 0 ]] && binaries_work "${BIN_DIR}"; then
  printf '==> another run built them meanwhile: %s\n' "$("${BIN_DIR}/kube-apiserver" --version)" >&2
  printf '%s\n' "${BIN_DIR}"
  exit 0
fi
rm -rf "${VERSION_DIR}"/build.* "${VERSION_DIR}"/bin.old.*
WORK=$(mktemp -d "${VERSION_DIR}/build.XXXXXX")
mkdir -p "${WORK}/logs" "${WORK}/apt/lists/partial" "${WORK}/apt/cache/archives/partial" "${WORK}/download"

# ---------------------------------------------------------------------------
step "download the Debian source package '${SOURCE_PACKAGE}' (${DEBIAN_SUITE})" \
  "check that ${MIRROR} is reachable (set PLINTH_DEBIAN_MIRROR to use another Debian mirror); the system's apt configuration is not used nor changed"
cat >"${WORK}/apt/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${MIRROR}/debian ${DEBIAN_SUITE} main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${MIRROR}/debian ${DEBIAN_SUITE}-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${MIRROR}/debian-security ${DEBIAN_SUITE}-security main
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=${WORK}/apt/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=${WORK}/apt/lists"
  -o "Dir::Cache=${WORK}/apt/cache"
  -o "APT::Sandbox::User=root"
)
run apt-update apt-get "${apt_opts[@]}" update
compgen -G "${WORK}/apt/lists/*_Sources*" >/dev/null ||
  die "no source index could be fetched from ${MIRROR} (see ${WORK}/logs/apt-update.log)"
(cd "${WORK}/download" && run apt-source apt-get "${apt_opts[@]}" source --download-only "${SOURCE_PACKAGE}")
shopt -s nullglob
tarballs=("${WORK}"/download/"${SOURCE_PACKAGE}"_*.orig.tar.*)
shopt -u nullglob
((${#tarballs[@]} == 1)) || die "expected one orig tarball in ${WORK}/download, found ${#tarballs[@]}"
printf '    %s\n' "$(basename "${tarballs[0]}")" >&2

# ---------------------------------------------------------------------------
export GOPATH="${WORK}/gopath"
readonly SRC="${GOPATH}/src/k8s.io/kubernetes"
step "unpack the source into ${SRC}" "check free disk space in ${VERSION_DIR} (about 1.5 GB is needed)"
mkdir -p "${SRC}"
tar -xf "${tarballs[0]}" -C "${SRC}" --strip-components=1
[[ -d "${SRC}/cmd/kube-apiserver" && -d "${SRC}/vendor" ]] || die "the tarball does not hold cmd/kube-apiserver and vendor/"
grep -q "gitVersion" "${SRC}/staging/src/k8s.io/component-base/version/base.go" || die "unexpected source layout: no gitVersion in component-base/version"
[[ "$(basename "${tarballs[0]}")" == *"${KUBE_VERSION#v}.orig.tar."* ]] ||
  die "the source package does not hold Kubernetes ${KUBE_VERSION} ($(basename "${tarballs[0]}")); update KUBE_VERSION here and in the fixture"

step "replace the vendored reflect2 1.0.1 with Debian's 1.0.2 (Go >= 1.18 map iteration)" \
  "apt-get install -y golang-github-modern-go-reflect2-dev"
[[ -f "${REFLECT2_SRC}/go_above_118.go" ]] || die "${REFLECT2_SRC} does not hold reflect2 >= 1.0.2"
rm -rf "${SRC}/vendor/github.com/modern-go/reflect2"
mkdir -p "${SRC}/vendor/github.com/modern-go/reflect2"
cp "${REFLECT2_SRC}"/*.go "${REFLECT2_SRC}"/*.s "${SRC}/vendor/github.com/modern-go/reflect2/"

step "apply the patches in ${PATCH_DIR}" \
  "a patch no longer applies to this source: see ${WORK}/logs/patch-*.log and update the patch"
shopt -s nullglob
patches=("${PATCH_DIR}"/*.patch)
shopt -u nullglob
for p in "${patches[@]}"; do
  printf '    %s\n' "$(basename "${p}")" >&2
  run "patch-$(basename "${p}" .patch)" patch -d "${SRC}" -p1 --forward --batch --no-backup-if-mismatch -i "${p}"
done

export GO111MODULE=off CGO_ENABLED=0 GOFLAGS=""
export GOCACHE="${GOCACHE:-$("${GO}" env GOCACHE)}"
cd "${SRC}"

# ---------------------------------------------------------------------------
step "build openapi-gen" "see ${WORK}/logs/openapi-gen-build.log"
run openapi-gen-build "${GO}" build -o "${WORK}/tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen

# ---------------------------------------------------------------------------
step "generate the OpenAPI definitions (pkg/generated/openapi, kube-aggregator, apiextensions-apiserver)" \
  "see the openapi-gen-*.log files in ${WORK}/logs"
# Mirrors Makefile.generated_files: all Go directories outside vendor/ (staging
# named through vendor/), the files among them that carry a `+k8s:` tag, and
# per target the directories tagged `+k8s:openapi-gen=`.
find -H . \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune -o -type f -name '*.go' -print |
  sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' -e 's|/[^/]*$||' | LC_ALL=C sort -u >"${WORK}/all-go-dirs"
while read -r dir; do
  find "${dir}/" -maxdepth 1 -type f -name '*.go' -print0
done <"${WORK}/all-go-dirs" | xargs -0 grep -l '^// *+k8s:' | LC_ALL=C sort -u >"${WORK}/k8s-tag-files"

# openapi_dirs TARGET: the package directories whose definitions go into TARGET.
openapi_dirs() {
  local defaults='^vendor/k8s\.io/apimachinery/pkg/(apis/meta/v1|runtime|version)/'
  case "$1" in
    KUBE) grep -Ev '^vendor/k8s\.io/(code-generator|sample-apiserver)/' "${WORK}/k8s-tag-files" ;;
    AGGREGATOR) grep -E "${defaults}|^vendor/k8s\.io/kube-aggregator/" "${WORK}/k8s-tag-files" ;;
    APIEXTENSIONS) grep -E "${defaults}|^vendor/k8s\.io/apiextensions/|^vendor/k8s\.io/api/autoscaling/v1/" "${WORK}/k8s-tag-files" ;;
  esac | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u
}

declare -A OUTPUT_PKG=(
  [KUBE]=pkg/generated/openapi
  [AGGREGATOR]=staging/src/k8s.io/kube-aggregator/pkg/generated/openapi
  [APIEXTENSIONS]=staging/src/k8s.io/apiextensions-apiserver/pkg/generated/openapi
)
for target in KUBE AGGREGATOR APIEXTENSIONS; do
  inputs=$(openapi_dirs "${target}" | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  [[ -n "${inputs}" ]] || die "no +k8s:openapi-gen directories found for ${target}"
  printf '    %s: %s packages -> %s\n' "${target}" "$(tr ',' '\n' <<<"${inputs}" | wc -l)" "${OUTPUT_PKG[${target}]}" >&2
  run "openapi-gen-${target}" "${WORK}/tools/openapi-gen" \
    --logtostderr \
    -i "${inputs}" \
    -p "k8s.io/kubernetes/${OUTPUT_PKG[${target}]}" \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "${WORK}/logs/openapi-${target}-violations.report"
  [[ -s "${OUTPUT_PKG[${target}]}/zz_generated.openapi.go" ]] || die "openapi-gen wrote no ${OUTPUT_PKG[${target}]}/zz_generated.openapi.go"
done

# ---------------------------------------------------------------------------
step "build kube-apiserver and kube-controller-manager ${KUBE_VERSION} (several minutes on 2 cores)" \
  "see ${WORK}/logs/kube-build.log; a build needs about 3 GB of memory"
ldflags=""
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=${KUBE_MAJOR}"
  ldflags+=" -X ${pkg}.gitMinor=${KUBE_MINOR}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
mkdir -p "${WORK}/bin"
run kube-build "${GO}" build -trimpath -ldflags "-s -w${ldflags}" -o "${WORK}/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager

# ---------------------------------------------------------------------------
step "check the new binaries" "see the output above; the build produced binaries that do not report ${KUBE_VERSION}"
ln -s "${ETCD_PATH}" "${WORK}/bin/etcd"
{
  echo "kubernetes ${KUBE_VERSION} built from Debian source package $(basename "${tarballs[0]}")"
  echo "recipe: ${RECIPE}"
  echo "go: ${go_version}"
  echo "reflect2: $(dpkg-query -W -f '${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null || echo unknown)"
  for p in "${patches[@]}"; do
    echo "patch: $(basename "${p}") $(sha256sum "${p}" | cut -c1-12)"
  done
  echo "etcd: $("${ETCD_PATH}" --version | head -n1)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"${WORK}/bin/BUILD-INFO"
binaries_work "${WORK}/bin" || die "the built binaries do not report Kubernetes ${KUBE_VERSION}"

# ---------------------------------------------------------------------------
step "install the binaries into ${BIN_DIR}" "check permissions on ${VERSION_DIR}"
old="${VERSION_DIR}/bin.old.$$"
if [[ -e "${BIN_DIR}" ]]; then
  mv "${BIN_DIR}" "${old}"
fi
mv "${WORK}/bin" "${BIN_DIR}"
rm -rf "${old}"

step "remove the build directory ${WORK}"
cd /
if [[ "${PLINTH_KEEP_BUILD:-0}" != 1 ]]; then
  rm -rf "${WORK}"
  WORK=""
fi

printf '==> done in %ss: %s\n' "$(($(date +%s) - START_TIME))" "$("${BIN_DIR}/kube-apiserver" --version)" >&2
printf '%s\n' "${BIN_DIR}"
