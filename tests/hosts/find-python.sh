#!/usr/bin/env bash
# Print the path of a Python X.Y interpreter that runs (for the venvs of the other ansible-core
# versions: 2.16 on 3.12, 2.21 on 3.13), or fail saying how to get one.
#
#   tests/hosts/find-python.sh 3.13
#
# Looked up as pythonX.Y on PATH, then among pyenv's installed versions (a pyenv shim on PATH runs
# only when that version is selected, so it is tried by its real path).
set -euo pipefail

want=${1:?usage: find-python.sh X.Y}
works() { [[ -x $1 ]] && "$1" -c "import sys, venv; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" 2>/dev/null; }

if candidate=$(command -v "python$want" 2>/dev/null) && works "$candidate"; then
  echo "$candidate"
  exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for version in $(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}(\.[0-9]+)?$" | sort -t. -k3 -n -r); do
    candidate=$root/versions/$version/bin/python$want
    if works "$candidate"; then
      echo "$candidate"
      exit 0
    fi
  done
fi
echo "find-python.sh: no Python $want with venv found (tried python$want on PATH and pyenv);" \
  "install it, e.g. 'pyenv install $want', and run again" >&2
exit 1
