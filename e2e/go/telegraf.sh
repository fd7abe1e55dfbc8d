#!/usr/bin/env bash
# Builds Telegraf, the benchmark's peer (e2e/bench), with only the plugins it uses
# (inputs.http_listener_v2 and inputs.mqtt_consumer with the JSON parser, outputs.postgresql:
# Telegraf's custom-build tags), into the
# cache outside the checkout, and prints the binary's path. Not part of the tests or the
# demo; a second run with the same version is instant.
set -euo pipefail
TELEGRAF_VERSION=v1.37.2
tags=custom,inputs.http_listener_v2,inputs.mqtt_consumer,parsers.json,outputs.postgresql

command -v go >/dev/null || {
  echo "error: Go is not installed; install Go >= 1.24 (https://go.dev/doc/install) and retry" >&2
  exit 1
}
cache=${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}
key=$( { cat "$0"; go version; } | sha256sum | cut -c1-16)
out="$cache/bin/telegraf-$key"
if [[ ! -x "$out/telegraf" ]]; then
  mkdir -p "$out"
  started=$(date +%s)
  echo "[telegraf] building Telegraf $TELEGRAF_VERSION ($tags); the first build takes several minutes" >&2
  GOBIN="$out" CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath -tags "$tags" -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${TELEGRAF_VERSION#v}" \
    "github.com/influxdata/telegraf/cmd/telegraf@$TELEGRAF_VERSION"
  echo "[telegraf] built in $(( $(date +%s) - started ))s" >&2
fi
echo "$out/telegraf"
