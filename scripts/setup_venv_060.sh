#!/usr/bin/env bash
# Create (once) a virtualenv holding the released slim-bindings 0.6.0 wheel.
#
# The wheel installs under the same module name as our package (`slim_bindings`), so it must live in a
# venv of its own. It is the wire-compatibility reference and the speed baseline for the interop tests
# (tests/python/test_interop_060.py) and the end-to-end benchmark (benches/e2e.py).
#
# Usage: scripts/setup_venv_060.sh            # venv at <repo>/.venv-060
#        SLIM060_VENV=/some/path scripts/setup_venv_060.sh
# Prints the venv's python path on the last line of stdout. Exit 0 when the venv is ready (also when it
# already was), non-zero when it cannot be created (e.g. the package registry is unreachable).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SLIM060_VENV:-$repo_root/.venv-060}"
wanted="0.6.0"
py="$venv/bin/python"

installed_version() {
    # Reads the distribution metadata only: importing the module would start its runtime for nothing.
    "$py" - <<'EOF' 2>/dev/null
import importlib.metadata as m
print(m.version("slim-bindings"))
EOF
}

if [[ -x "$py" ]] && [[ "$(installed_version || true)" == "$wanted" ]]; then
    echo "slim-bindings $wanted already present in $venv" >&2
    echo "$py"
    exit 0
fi

base_python="${PYTHON:-python3}"
if [[ ! -x "$py" ]]; then
    echo "creating venv $venv with $base_python" >&2
    "$base_python" -m venv "$venv"
fi

# Bounded: a registry that does not answer must not hang a test session.
"$py" -m pip install --quiet --disable-pip-version-check --timeout 60 --retries 2 "slim-bindings==$wanted" >&2

if [[ "$(installed_version || true)" != "$wanted" ]]; then
    echo "slim-bindings $wanted did not install into $venv" >&2
    exit 1
fi
echo "slim-bindings $wanted installed in $venv" >&2
echo "$py"
