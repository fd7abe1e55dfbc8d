#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet,
# kube-proxy, kwok, kube-router, CoreDNS and
# helm from the wrapper modules in e2e/go/ into a cache outside the checkout, and prints
# the directory that holds them. A second run with the same versions and go.sum is instant.
# Helm has its own key, so changing its version does not rebuild Kubernetes.
#
# Cache: $SMARTREGION_CACHE (default ~/.cache/smartregion). Go's own module and build
# caches (GOMODCACHE, GOCACHE) are left at their defaults, also outside the checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
source "$here/../versions.env"

command -v go >/dev/null || {
  echo "error: Go is not installed; install Go >= 1.24 (https://go.dev/doc/install) and retry" >&2
  exit 1
}
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly

cache=${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}
# The key changes whenever a version, a go.sum or the Go toolchain changes.
key=$( { echo "tools: etcd kwok kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"; grep -E '^[A-Z]' "$here/../versions.env" | grep -Ev '^(HELM|KUBE_ROUTER|COREDNS)_'; cat "$here"/{etcd,kubernetes,kwok}/go.sum; go version; } | sha256sum | cut -c1-16)
helm_key=$( { grep '^HELM_' "$here/../versions.env"; cat "$here/helm/go.sum"; go version; } | sha256sum | cut -c1-16)
# The real node's network tools have their own key too.
# (This script is part of it: the two build in a minute when Go's cache is warm.)
node_key=$( { grep -E '^(KUBE_ROUTER|COREDNS)_' "$here/../versions.env"; cat "$here"/{kube-router,coredns}/go.sum "$0"; go version; } | sha256sum | cut -c1-16)
out="$cache/bin/$key"
if [[ -f "$out/.complete" && -f "$out/.helm-$helm_key" && -f "$out/.node-$node_key" ]]; then
  if [[ ! -f "$out/.node-$node_key" ]]; then
  kr=github.com/cloudnativelabs/kube-router/v2/pkg/version
  build_module "$here/kube-router" "-s -w -X $kr.Version=$KUBE_ROUTER_VERSION -X $kr.BuildDate=module" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  build_module "$here/coredns" "-s -w" github.com/coredns/coredns
  "$out/kube-router" --version >&2
  "$out/coredns" -version >&2
  rm -f "$out"/.node-*
  touch "$out/.node-$node_key"
fi
echo "$out"
  exit 0
fi
mkdir -p "$out"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build_module DIR LDFLAGS PACKAGE... : go build with a progress line every 30 s.
build_module() {
  local dir=$1 ldflags=$2; shift 2
  local total started
  started=$(date +%s)
  total=$(cd "$dir" && go list -deps -tags selinux,notest "$@" | wc -l)
  log "building $(basename "$dir"): $* ($total packages; the first build takes minutes, later ones are cached)"
  local progress
  progress=$(mktemp)
  (
    cd "$dir"
    go build -v -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$out/" "$@" 2>"$progress"
  ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if (( ($(date +%s) - started) % 30 < 2 )); then
      log "  $(basename "$dir"): $(grep -vc '^#' "$progress" || true)/$total packages compiled, $(( $(date +%s) - started ))s"
    fi
  done
  if ! wait "$pid"; then
    grep -v '^[a-z0-9._/-]*$' "$progress" >&2 || cat "$progress" >&2
    rm -f "$progress"
    log "error: building $(basename "$dir") failed (output above)"
    exit 1
  fi
  rm -f "$progress"
  log "built $(basename "$dir") in $(( $(date +%s) - started ))s"
}

# Version stamps, as the upstream release builds set them (hack/lib/version.sh).
k8s_info=$(cd "$here/kubernetes" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Info": "\(.*\)".*/\1/p')
k8s_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$k8s_info")
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_date"
done

if [[ ! -f "$out/.complete" ]]; then
  build_module "$here/etcd" "-s -w" go.etcd.io/etcd/server/v3
  mv "$out/server" "$out/etcd"
  build_module "$here/kwok" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  build_module "$here/kubernetes" "$k8s_ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy
  "$out/kube-apiserver" --version >&2
  # Captured, not piped to head: under pipefail an early-closing head would kill etcd
  # with SIGPIPE and fail the build after it succeeded.
  etcd_version=$("$out/etcd" --version)
  echo "${etcd_version%%$'\n'*}" >&2
  touch "$out/.complete"
fi
if [[ ! -f "$out/.helm-$helm_key" ]]; then
  # Helm stamps its version from these (see helm's Makefile).
  build_module "$here/helm" "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" helm.sh/helm/v4/cmd/helm
  "$out/helm" version --short >&2
  rm -f "$out"/.helm-*
  touch "$out/.helm-$helm_key"
fi
if [[ ! -f "$out/.node-$node_key" ]]; then
  kr=github.com/cloudnativelabs/kube-router/v2/pkg/version
  build_module "$here/kube-router" "-s -w -X $kr.Version=$KUBE_ROUTER_VERSION -X $kr.BuildDate=module" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  build_module "$here/coredns" "-s -w" github.com/coredns/coredns
  "$out/kube-router" --version >&2
  "$out/coredns" -version >&2
  rm -f "$out"/.node-*
  touch "$out/.node-$node_key"
fi
echo "$out"
