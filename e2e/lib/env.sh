# Shared by the e2e/ scripts: where the Rust build goes.
# shellcheck shell=bash
# The cargo target directory is shared by every checkout on the machine (like the Go
# caches), so a fresh clone - which is what CI runs - rebuilds only what changed.
# Set CARGO_TARGET_DIR to choose another one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}/cargo-target}"
# Incremental compilation pays off while editing, not for these scripts' builds, and it
# fills the disk of a long-lived shared target directory (tens of GB); off unless asked.
# The checkout these scripts belong to, for the tools they run: a binary in the shared
# target directory may have been built from another checkout, whose path it carries.
SMARTREGION_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SMARTREGION_ROOT
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Test and benchmark executables of builds that no longer exist pile up in the shared
# target directory (each links everything, 100-300 MB): drop those unused for two days.
prune_stale_executables() {
  find "$CARGO_TARGET_DIR"/{debug,release}/deps -maxdepth 1 -type f ! -name '*.*' -mtime +2 \
    -delete 2>/dev/null || true
}
