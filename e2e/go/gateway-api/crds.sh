#!/usr/bin/env bash
# Prints the directory of the Gateway API's standard-channel manifests (CRDs and the
# release's ValidatingAdmissionPolicy), from the release of the Go module
# sigs.k8s.io/gateway-api named in version.env. The module is fetched once through the Go
# module proxy into Go's module cache (GOMODCACHE, outside the checkout); later runs,
# and runs without a network, read it from there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=version.env
source "$here/version.env"
command -v go >/dev/null || {
  echo "error: Go is not installed; install Go >= 1.24 (https://go.dev/doc/install) and retry" >&2
  exit 1
}
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
# Outside any module, so no go.mod is read or written.
cd "$(mktemp -d)"
json=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
dir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$json")
rmdir "$PWD"
if [[ -z "$dir" || ! -d "$dir/config/crd/standard" ]]; then
  echo "error: go mod download of sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION gave no config/crd/standard:" >&2
  echo "$json" >&2
  exit 1
fi
echo "$dir/config/crd/standard"
