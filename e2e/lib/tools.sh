#!/usr/bin/env bash
# Installs the cargo tools the test command uses into the cache (outside the checkout),
# once per version, and prints the directory that holds them.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
CARGO_DENY_VERSION=0.20.2
cache="${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}/tools/cargo-deny-$CARGO_DENY_VERSION"
if [[ ! -x "$cache/bin/cargo-deny" ]]; then
  echo "installing cargo-deny $CARGO_DENY_VERSION from crates.io into $cache (once; a few minutes)" >&2
  # Its own target dir: the workspace's shared one holds the project's build.
  CARGO_TARGET_DIR="$cache/build" cargo install cargo-deny --version "$CARGO_DENY_VERSION" \
    --locked --root "$cache" >&2
  rm -rf "$cache/build"
fi
echo "$cache/bin"
