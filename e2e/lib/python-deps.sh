#!/usr/bin/env bash
# Installs the Python packages the tests run the open-data catalogue through (the
# harvester's own code: ckanext-dcat with CKAN, and pyshacl; e2e/dcat/requirements.txt)
# into a virtual environment in the cache, outside the checkout, once per version of the
# requirements; prints the environment's python.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
requirements="$root/e2e/dcat/requirements.txt"
venv="${SMARTREGION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartregion}/python/dcat"
stamp="$venv/requirements.sha256"
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  echo "installing ckanext-dcat, CKAN and pyshacl from PyPI into $venv (once; a minute or two)" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    echo "python3 cannot make a virtual environment: install Debian's python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  if ! "$venv/bin/pip" install --quiet -r "$requirements" >&2; then
    echo "pip could not install $requirements from the package index; see its message above" >&2
    exit 1
  fi
  echo "$wanted" >"$stamp"
fi
echo "$venv/bin/python"
