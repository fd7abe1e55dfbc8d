# Shared by the e2e/ scripts: where the Rust build goes.
# shellcheck shell=bash
# The cargo target directory is shared by every checkout on the machine (like the Go
# caches), so a fresh clone - which is what CI runs - rebuilds only what changed.
# Set CARGO_TARGET_DIR to choose another one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}/cargo-target}"
