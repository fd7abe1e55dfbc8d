#!/usr/bin/env bash
# Fails with a message that says how to get each missing prerequisite.
set -euo pipefail
missing=0
need() { # command, how to get it
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "error: '$1' not found. $2" >&2
    missing=1
  fi
}
need cargo "Install Rust with rustup: https://rustup.rs (then open a new shell)."
need go "Install Go 1.24 or newer: https://go.dev/dl/ (or apt-get install golang-1.24) and put it on PATH."
need git "Install git: apt-get install git."
need cc "Install a C compiler (the Argo CD health-check tests build a Lua interpreter): apt-get install gcc."
if command -v go >/dev/null 2>&1; then
  version="$(go env GOVERSION | sed 's/^go//')"
  major="${version%%.*}"; rest="${version#*.}"; minor="${rest%%.*}"
  if (( major < 1 || (major == 1 && minor < 24) )); then
    echo "error: Go $version is too old; Kubernetes 1.33 needs Go 1.24 or newer: https://go.dev/dl/" >&2
    missing=1
  fi
fi
if [[ -z "${SMARTREGION_PG_BIN:-}" ]] && ! command -v initdb >/dev/null 2>&1 \
   && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "error: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found." \
       "Install them with 'apt-get install postgresql-15' or set SMARTREGION_PG_BIN to their directory." >&2
  missing=1
fi
# The MQTT tests run a real broker: Debian's Mosquitto, installed here when possible.
if ! command -v mosquitto >/dev/null 2>&1 && [[ ! -x /usr/sbin/mosquitto ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mosquitto (MQTT broker for the ingest tests) with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto >/dev/null; } \
      || { echo "error: failed to install mosquitto; install it with 'apt-get install mosquitto'" >&2; missing=1; }
  else
    echo "error: 'mosquitto' not found (the MQTT broker for the ingest tests). Install it with 'sudo apt-get install mosquitto'." >&2
    missing=1
  fi
fi
exit "$missing"
