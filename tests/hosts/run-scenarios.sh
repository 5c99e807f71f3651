#!/usr/bin/env bash
# Run Molecule scenarios as parallel `molecule test -s X` processes.
#
#   tests/hosts/run-scenarios.sh [-j N] [scenario ...]
#
# Default: every scenario under extensions/molecule (a directory with molecule.yml), 2 at a time
# (one scenario alone keeps both cores busy outside its observation windows; at 3 and 4 on 2 cores
# the load average reached 25 and scenarios failed by it: a /stats answer over 1 s for 15 s, too few
# client packets to judge, and the run took no less time).
# Each scenario logs to $MOLECULE_LOG_DIR/<scenario>.log (default tests/output/molecule/).
# Environment: MTPROXY_VENV (default <repo>/.venv), ANSIBLE_COLLECTIONS_PATH (default
# <venv>/collections), MOLECULE_HOST_IMAGE (default: built/cached by build-image.sh),
# MOLECULE_TRIXIE_IMAGE (the Debian 13 image of the scenarios that name it; default: build-image.sh trixie),
# MOLECULE_SCENARIO_TIMEOUT seconds per scenario (default 1800). Real builds instead of the stand-in:
# MTPROXY_C_BINARY, MTPROXY_GO_BINARY, and MTPROXY_GO_INCOMPATIBLE_BINARY (incompatible_binary's Go
# build that rejects the C flags; without it that scenario stages the stand-in's flavour of one).
# Containers of every scenario started here are removed at the end, also on failure or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
jobs=2
while getopts 'j:h' opt; do
  case $opt in
    j) jobs=$OPTARG ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

venv=${MTPROXY_VENV:-$repo/.venv}
export PATH="$venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$venv/collections}
export ANSIBLE_PIPELINING=1
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
timeout_s=${MOLECULE_SCENARIO_TIMEOUT:-1800}
log_dir=${MOLECULE_LOG_DIR:-$repo/tests/output/molecule}
mkdir -p "$log_dir"

if ! timeout 10 docker info >/dev/null 2>&1; then
  echo "no Docker engine answers: run tests/hosts/docker-engine.sh first" >&2
  exit 2
fi
if [[ -z ${MOLECULE_HOST_IMAGE:-} ]]; then
  MOLECULE_HOST_IMAGE=$("$here/build-image.sh")
fi
export MOLECULE_HOST_IMAGE

if (($# > 0)); then
  scenarios=("$@")
else
  scenarios=()
  for file in "$repo"/extensions/molecule/*/molecule.yml; do
    name=$(basename "$(dirname "$file")")
    [[ $name == shared ]] || scenarios+=("$name")
  done
fi
for name in "${scenarios[@]}"; do
  [[ -f $repo/extensions/molecule/$name/molecule.yml ]] || { echo "no scenario: $name" >&2; exit 2; }
  # A scenario on Debian 13 hosts names the trixie image.
  if [[ -z ${MOLECULE_TRIXIE_IMAGE:-} ]] && grep -q MOLECULE_TRIXIE_IMAGE "$repo/extensions/molecule/$name/molecule.yml"; then
    MOLECULE_TRIXIE_IMAGE=$("$here/build-image.sh" trixie)
    export MOLECULE_TRIXIE_IMAGE
  fi
done

# With real binaries, a scenario whose fault only the stand-in can produce says so in a file
# `standin-only` (the reason) and is skipped. None has one: the fault scenarios take their faults
# from the environment (tests/hosts/prepare_proxy_host.yml, mtproxy_test_faults), which works on
# any build; a new scenario adds the file only when no such fault can stand in for its knob.
if [[ -n ${MTPROXY_C_BINARY:-}${MTPROXY_GO_BINARY:-} ]]; then
  kept=()
  for name in "${scenarios[@]}"; do
    reason_file=$repo/extensions/molecule/$name/standin-only
    if [[ -f $reason_file ]]; then
      echo "SKIP $name: $(cat "$reason_file")"
    else
      kept+=("$name")
    fi
  done
  scenarios=("${kept[@]}")
fi

declare -A pid_of=() started_at=()
result_dir=$(mktemp -d)

# Instances are named <scenario>-hN by convention; molecule labels them owner=molecule.
remove_containers() {
  local name=$1 ids=()
  mapfile -t ids < <(docker ps -aq --filter label=owner=molecule --filter "name=^${name}-h[0-9]+$" 2>/dev/null || true)
  ((${#ids[@]} == 0)) || docker rm -f -v "${ids[@]}" >/dev/null 2>&1 || true
  # A container scenario's fleet also has pods and volumes (tests/hosts/container_fleet.py).
  "$venv/bin/python" "$repo/tests/hosts/container_fleet.py" down --prefix "$name" >/dev/null 2>&1 || true
}

cleanup() {
  local name
  for name in "${!pid_of[@]}"; do
    kill -TERM -- "-${pid_of[$name]}" 2>/dev/null || true
  done
  for name in "${!pid_of[@]}"; do
    wait "${pid_of[$name]}" 2>/dev/null || true
    remove_containers "$name"
  done
  rm -rf "$result_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_one() {
  local name=$1
  cd "$repo"
  set +e
  timeout --kill-after=30 "$timeout_s" molecule test -s "$name" >"$log_dir/$name.log" 2>&1
  echo $? >"$result_dir/$name.rc"
}

# What failed, for a reader who has only this script's output (CI keeps no log files): the failed
# tasks and test assertions, then the log's end.
failure_excerpt() {
  local log=$1
  [[ -f $log ]] || return 0
  grep -E -A12 '^(fatal|failed): |^FAILED |^E  |^ERROR |^CRITICAL ' "$log" | head -n 150 | cut -c1-4000 || true
  echo "--- last 40 lines"
  tail -n 40 "$log" | cut -c1-4000
}

report() {
  local name=$1 rc
  rc=$(cat "$result_dir/$name.rc" 2>/dev/null || echo 255)
  remove_containers "$name"
  if [[ $rc == 0 ]]; then
    printf 'PASS %-24s %4d s  %s\n' "$name" $((SECONDS - started_at[$name])) "$log_dir/$name.log"
  else
    printf 'FAIL %-24s %4d s  rc=%s  %s\n' "$name" $((SECONDS - started_at[$name])) "$rc" "$log_dir/$name.log"
    failure_excerpt "$log_dir/$name.log" | sed "s/^/  $name| /"
  fi
  unset "pid_of[$name]"
}

wait_for_one() {
  local done_pid name
  wait -n -p done_pid "${pid_of[@]}" || true
  for name in "${!pid_of[@]}"; do
    if [[ ${pid_of[$name]} == "$done_pid" ]]; then
      report "$name"
      return
    fi
  done
}

echo "running ${#scenarios[@]} scenario(s), $jobs at a time, image $MOLECULE_HOST_IMAGE, logs in $log_dir"
for name in "${scenarios[@]}"; do
  while ((${#pid_of[@]} >= jobs)); do wait_for_one; done
  started_at[$name]=$SECONDS
  # Own process group, so an interrupt can stop molecule and the ansible processes under it.
  set -m
  run_one "$name" &
  pid_of[$name]=$!
  set +m
done
while ((${#pid_of[@]} > 0)); do wait_for_one; done

passed=0 failed=0
for name in "${scenarios[@]}"; do
  if [[ $(cat "$result_dir/$name.rc" 2>/dev/null || echo 255) == 0 ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "scenarios finished in $SECONDS s"
echo "scenarios: $passed passed, $failed failed"
((failed == 0))
