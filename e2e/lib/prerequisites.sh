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
need node "Install Node.js 20 or newer (the TimescaleDB checks run PGlite from npm): apt-get install nodejs, or https://nodejs.org/."
need npm "Install npm (it fetches PGlite with TimescaleDB from the npm registry): apt-get install npm, or https://nodejs.org/."
if command -v node >/dev/null 2>&1; then
  node_major="$(node --version | sed 's/^v\([0-9]*\).*/\1/')"
  if (( node_major < 20 )); then
    echo "error: Node.js $(node --version) is too old; PGlite needs Node.js 20 or newer: https://nodejs.org/" >&2
    missing=1
  fi
fi
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
# Debian packages the scripts need, installed here when possible: Mosquitto (the MQTT
# tests run a real broker) and shellcheck (e2e/test checks the scripts).
install_deb() { # command-or-path package why
  if command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || ( "$1" == /* && -e "$1" ) ]]; then
    return 0
  fi
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $2 ($3) with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null; } \
      || { echo "error: failed to install $2; install it with 'apt-get install $2'" >&2; missing=1; }
  else
    echo "error: '$1' not found ($3). Install it with 'sudo apt-get install $2'." >&2
    missing=1
  fi
}
install_deb shellcheck shellcheck "checks the shell scripts"
# The MQTT tests run a real broker: Debian's Mosquitto.
install_deb mosquitto mosquitto "the MQTT broker for the ingest tests"
# The local cluster's real node (e2e/src/node.rs): Debian's container runtime and CNI
# plugins, and the tools that build its network and images.
if [[ $(id -u) != 0 ]]; then
  echo "error: the local cluster's real node needs root (network namespaces, cgroups," \
       "containerd); run this as root, e.g. in a throwaway VM or CI machine." >&2
  missing=1
fi
install_deb containerd containerd "the real node's container runtime"
install_deb runc runc "the OCI runtime containerd starts containers with"
install_deb /usr/lib/cni/ptp containernetworking-plugins "the real node's pod network (ptp, host-local, loopback)"
install_deb iptables iptables "kube-proxy's Services and kube-router's NetworkPolicies"
install_deb ipset ipset "kube-router's NetworkPolicies"
install_deb conntrack conntrack "kube-proxy clears stale UDP flows"
install_deb nsenter util-linux "starts the node's processes in its network namespace"
install_deb dpkg-deb dpkg "unpacks the Debian packages the images are built from"
# e2e/test-timescaledb only: TimescaleDB for the machine's PostgreSQL.
if [[ "${SMARTREGION_TIMESCALEDB:-}" == 1 ]]; then
  postgres_binary="$(command -v postgres 2>/dev/null || true)"
  if [[ -z "$postgres_binary" ]]; then
    candidates=(/usr/lib/postgresql/*/bin/postgres)
    postgres_binary="${candidates[-1]}"
  fi
  pg_bin="${SMARTREGION_PG_BIN:-$(dirname "$(readlink -f "$postgres_binary")")}"
  if [[ ! -f "$pg_bin/../lib/timescaledb.so" ]]; then
    echo "error: TimescaleDB is not installed for the PostgreSQL in $pg_bin (no ../lib/timescaledb.so)." \
         "Install TimescaleDB 2.28.x for PostgreSQL 15: Timescale's packages, or from source" \
         "(docs/database.md, \"Installing TimescaleDB\")." >&2
    missing=1
  fi
fi
exit "$missing"
