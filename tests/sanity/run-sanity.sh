#!/usr/bin/env bash
# ansible-test sanity for the collection with one supported ansible-core, offline-safe.
#
#   tests/sanity/run-sanity.sh CORE [ansible-test sanity options]     CORE: 2.16 or 2.21
#
# The core and its Python come from requirements/core-CORE.txt (`ansible-core==`, `# python: X.Y`);
# ansible-test runs in its own venv, .venv-sanity-CORE, and installs the sanity requirements there.
# SANITY_TARGET_PYTHONS="3.6 ...": also compile and import tests on these target-only Pythons.
# ansible-test needs the checkout under ansible_collections/mtproxy/cutover and a pip bootstrap
# script it would otherwise download. shellcheck must be on PATH (ansible-test skips the shell
# scripts silently without it): `make venv` installs the pinned one (requirements/test.txt).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
core=${1:?usage: run-sanity.sh CORE [ansible-test sanity options] (CORE: 2.16 or 2.21)}
shift
pins=$repo/requirements/core-$core.txt
if [[ ! -f $pins ]]; then
  known=("$repo"/requirements/core-*.txt)
  known=("${known[@]##*/core-}")
  echo "run-sanity.sh: no $pins; CORE is one of: ${known[*]%.txt}" >&2
  exit 2
fi
core_version=$(sed -n 's/^ansible-core==//p' "$pins")
python_version=$(sed -n 's/^# python: //p' "$pins")
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "run-sanity.sh: shellcheck is not on PATH; ansible-test would skip the shell scripts." \
    "Run 'make venv' and put .venv/bin on PATH (make sanity does), or install shellcheck." >&2
  exit 2
fi
venv=$repo/.venv-sanity-$core

if [[ $("$venv/bin/python" -c 'import ansible.release as r; print(r.__version__)' 2>/dev/null) != "$core_version" ]]; then
  rm -rf "$venv"
  "$("$repo/tests/hosts/find-python.sh" "$python_version")" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$core_version"
fi

# Every pip version ansible-test may bootstrap (one per group of Python versions), each with the stand-in script.
pip_versions=$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))' |
  xargs -I{} sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" {}/_internal/python_requirements.py | sort -u)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for pip_version in $pip_versions; do
  if ! ls "$cache"/pip-"$pip_version"-*.whl >/dev/null 2>&1; then
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$cache" "pip==$pip_version"
  fi
  cp "$repo/tests/sanity/get_pip_offline.py" "$cache/get_pip_${pip_version//./_}.py"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/mtproxy/cutover"
mkdir -p "$dest"
# Only what git tracks or would track: ansible-test reads the tree as the collection.
# (A tracked file deleted in the work tree is left out.)
(cd "$repo" && git ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done) |
  (cd "$repo" && xargs -0 cp --parents -t "$dest")
# The harness the tarball leaves out has its ignores apart (tests/sanity/harness-ignores.txt).
grep -v '^#' "$repo/tests/sanity/harness-ignores.txt" >>"$dest/tests/sanity/ignore-$core.txt"
cd "$dest"
git init -q && git add -A >/dev/null
echo "ansible-test sanity: ansible-core $core_version, Python $python_version, $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
"$venv/bin/ansible-test" sanity --local --requirements --python "$python_version" "$@"

# The modules and module_utils also compile and import on the target-only Pythons asked for.
for target in ${SANITY_TARGET_PYTHONS:-}; do
  mkdir -p "$work/bin"
  ln -sfn "$("$repo/tests/hosts/find-python.sh" "$target")" "$work/bin/python$target"
  echo "ansible-test sanity: ansible-core $core_version, target Python $target"
  PATH="$work/bin:$PATH" "$venv/bin/ansible-test" sanity --local --requirements --python "$target" \
    --test compile --test import "$@"
done
