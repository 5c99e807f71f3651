#!/usr/bin/env bash
# ansible-test sanity for the collection, offline-safe: ansible-test needs the checkout under
# ansible_collections/mtproxy/cutover and a pip bootstrap script it would otherwise download.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="$repo/.venv-sanity"
python=${PYTHON:-python3}
core_version=$(sed -n 's/^ansible-core==//p' "$repo/requirements/test.txt")

if [ ! -x "$venv/bin/ansible-test" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$core_version"
fi

pip_version=$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))' |
  xargs -I{} sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" {}/_internal/python_requirements.py | head -n 1)
pip_version=${pip_version:-24.2}
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
if ! ls "$cache"/pip-"$pip_version"-*.whl >/dev/null 2>&1; then
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$cache" "pip==$pip_version"
fi
cp "$repo/tests/sanity/get_pip_offline.py" "$cache/get_pip_${pip_version//./_}.py"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/mtproxy/cutover"
mkdir -p "$dest"
# Only what git tracks or would track: ansible-test reads the tree as the collection.
# (A tracked file deleted in the work tree is left out.)
(cd "$repo" && git ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done) |
  (cd "$repo" && xargs -0 cp --parents -t "$dest")
cd "$dest"
git init -q && git add -A >/dev/null
"$venv/bin/ansible-test" sanity --local --requirements --python "${SANITY_PYTHON:-3.11}" "$@"
