#!/usr/bin/env bash
# Builds Traefik, the Gateway API implementation the end-to-end tests run on the real node
# (e2e/src/gateway.rs), from the wrapper module in e2e/go/traefik/ into the cache outside
# the checkout, and prints the binary's path. A second run with the same go.sum is instant.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v go >/dev/null || {
  echo "error: Go is not installed; install Go >= 1.25 (https://go.dev/doc/install) and retry" >&2
  exit 1
}
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
cache=${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}
key=$( { cat "$0" "$here/traefik/go.sum"; go version; } | sha256sum | cut -c1-16)
out="$cache/bin/traefik-$key"
if [[ ! -x "$out/traefik" ]]; then
  mkdir -p "$out"
  version=$(sed -n 's|^require github.com/traefik/traefik/v3 \(v[^ ]*\).*|\1|p' "$here/traefik/go.mod")
  started=$(date +%s)
  echo "[traefik] building Traefik $version; the first build takes several minutes" >&2
  (
    cd "$here/traefik"
    go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${version#v}" \
      -o "$out/traefik.partial" github.com/traefik/traefik/v3/cmd/traefik
  )
  mv "$out/traefik.partial" "$out/traefik"
  echo "[traefik] built in $(( $(date +%s) - started ))s" >&2
fi
echo "$out/traefik"
