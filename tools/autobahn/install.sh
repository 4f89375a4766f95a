#!/usr/bin/env bash
# Installs the Autobahn|Testsuite (`wstest`) into target/autobahn-venv. Idempotent: prints nothing
# but errors, and does nothing when the venv already has the pinned suite.
#
# autobahntestsuite is Python 2 only (it installs on 3.x and fails on import), so the venv is made
# from pyenv's CPython 2.7.18 with virtualenv 20.21.1 — the last virtualenv that can create 2.7
# environments. Every package is pinned (constraints.txt): newer releases of its dependencies no
# longer install or import on 2.7.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${AUTOBAHN_VENV:-$root/target/autobahn-venv}"
suite_version="25.10.1"
stamp="$venv/.ringcast-installed-$suite_version-$(cksum <"$here/constraints.txt" | cut -d' ' -f1)"

if [[ -f "$stamp" && -x "$venv/bin/wstest" ]]; then
  exit 0
fi

py2="${AUTOBAHN_PYTHON2:-${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python}"
if [[ ! -x "$py2" ]]; then
  echo "autobahn: CPython 2.7.18 not found at $py2" >&2
  echo "  install it with 'pyenv install 2.7.18', or point AUTOBAHN_PYTHON2 at a python2.7" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "autobahn: python3 is required (to run virtualenv and compare results)" >&2
  exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
fail() {
  echo "autobahn: $1 failed:" >&2
  cat "$log" >&2
  exit 1
}

# virtualenv 20.21.1 into the user's python3 (no-op when present).
if ! python3 -c 'import virtualenv, sys; sys.exit(virtualenv.__version__ != "20.21.1")' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "virtualenv==20.21.1" >"$log" 2>&1 ||
    fail "pip install virtualenv==20.21.1"
fi
rm -rf "$venv"
python3 -m virtualenv --quiet -p "$py2" "$venv" >"$log" 2>&1 || fail "virtualenv -p $py2"
PYTHONWARNINGS=ignore "$venv/bin/pip" install --quiet --disable-pip-version-check --no-python-version-warning \
  -c "$here/constraints.txt" "autobahntestsuite==$suite_version" >"$log" 2>&1 ||
  fail "pip install autobahntestsuite==$suite_version"
# Import check: a broken dependency shows here, not in the middle of a run.
"$venv/bin/python" -c 'import autobahntestsuite.fuzzing' >"$log" 2>&1 || fail "import autobahntestsuite"
touch "$stamp"
