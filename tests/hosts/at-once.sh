#!/usr/bin/env bash
# Run named commands, N at a time (default: all at once), each logging to tests/output/<name>.log;
# print each one's last line as it ends, or the tail of its log when it failed; exit 1 if any failed.
#
#   tests/hosts/at-once.sh [-j N] NAME 'COMMAND' [NAME 'COMMAND' ...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
jobs=0
if [[ ${1:-} == -j ]]; then jobs=$2; shift 2; fi
(($# > 0 && $# % 2 == 0)) || { sed -n '2,5p' "$0" >&2; exit 2; }
log_dir=$repo/tests/output
mkdir -p "$log_dir"

declare -A name_of=()
finish() {  # wait for the first running command to end and report it
  local pid rc=0
  wait -n -p pid "${!name_of[@]}" || rc=$?
  local name=${name_of[$pid]}
  unset "name_of[$pid]"
  if ((rc == 0)); then
    echo "PASS $name: $(tail -n 1 "$log_dir/$name.log")"
  else
    failed=1
    echo "FAIL $name (rc $rc, $log_dir/$name.log):"
    tail -n 60 "$log_dir/$name.log"
  fi
}

failed=0
while (($# > 0)); do
  name=$1 command=$2
  shift 2
  while ((jobs > 0 && ${#name_of[@]} >= jobs)); do finish; done
  echo "start $name: $command"
  bash -c "$command" >"$log_dir/$name.log" 2>&1 &
  name_of[$!]=$name
done
while ((${#name_of[@]} > 0)); do finish; done
exit "$failed"
