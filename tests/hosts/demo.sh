#!/usr/bin/env bash
# `make demo`: a small fleet of C hosts goes to Go (cutover.yml), then back (rollback.yml).
#
# Environment (all optional):
#   DEMO_HOSTS=4 DEMO_CANARIES=1 DEMO_PREFIX=mtproxy-demo DEMO_DIR=<repo>/artifacts/demo
#   DEMO_CANARY_WINDOW_S=10 DEMO_WAVE_WINDOW_S=5   observation windows passed to the playbooks,
#   DEMO_SAMPLE_INTERVAL_S=1 DEMO_BASELINE_WINDOW_S=5  with matching /stats sampling
#   DEMO_THRESHOLDS='{...}'                        SLO thresholds (JSON; default: the collection's defaults)
#   DEMO_PRIVILEGE_DROP=service                    mtproxy_cutover_privilege_drop: the hosts' C runs with
#                                                  -u nobody and the Go ignores -u (binary refuses it)
#   DEMO_KEEP=1                                    leave the hosts running for a look around
#   MTPROXY_C_BINARY / MTPROXY_GO_BINARY           real binaries instead of the stand-in
#   MTPROXY_VENV (default <repo>/.venv), ANSIBLE_COLLECTIONS_PATH (default <venv>/collections)
# The hosts are removed on exit, also when a step fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${MTPROXY_VENV:-$repo/.venv}
export PATH="$venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$venv/collections}
export ANSIBLE_PIPELINING=1

prefix=${DEMO_PREFIX:-mtproxy-demo}
hosts=${DEMO_HOSTS:-4}
canaries=${DEMO_CANARIES:-1}
workdir=${DEMO_DIR:-$repo/artifacts/demo}
artifacts=$workdir/artifacts
inventory=$workdir/inventory.yml
run_id=demo-$(date -u +%Y%m%dT%H%M%SZ)
windows=(-e "mtproxy_cutover_canary_window_s=${DEMO_CANARY_WINDOW_S:-10}"
         -e "mtproxy_cutover_wave_window_s=${DEMO_WAVE_WINDOW_S:-5}"
         -e "mtproxy_cutover_sample_interval_s=${DEMO_SAMPLE_INTERVAL_S:-1}"
         -e "mtproxy_cutover_baseline_window_s=${DEMO_BASELINE_WINDOW_S:-5}")
# The demo hosts forward to loopback test backends, so the collection's default thresholds apply.
if [[ -n ${DEMO_THRESHOLDS:-} ]]; then
  windows+=(-e "{\"mtproxy_cutover_thresholds\": $DEMO_THRESHOLDS}")
fi

step() { printf '\n=== %s (%d s)\n' "$*" "$SECONDS"; }

teardown() {
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "hosts kept (DEMO_KEEP=1): python3 $here/fleet.py down --name-prefix $prefix"
  else
    python3 "$here/fleet.py" down --name-prefix "$prefix" || true
  fi
}

step "Docker engine"
"$here/docker-engine.sh"

step "Test-host image"
image=$("$here/build-image.sh")
echo "$image"

mkdir -p "$workdir"
python3 "$here/fleet.py" down --name-prefix "$prefix" >/dev/null 2>&1 || true
trap teardown EXIT

step "Boot $hosts hosts ($canaries canary)"
python3 "$here/fleet.py" up --name-prefix "$prefix" --count "$hosts" --canaries "$canaries" \
  --image "$image" --inventory "$inventory"

step "Make them C hosts (MTProxy.service, test client) and stage the Go binary"
ansible-playbook -i "$inventory" "$here/prepare_proxy_host.yml" -e "mtproxy_test_stage_dir=$workdir/go-release"

rc=0
step "Cut over to Go (run $run_id-cutover)"
ansible-playbook -i "$inventory" "$repo/playbooks/cutover.yml" \
  -e "@$workdir/go-release/go-binary-vars.yml" -e "mtproxy_cutover_artifacts_dir=$artifacts" \
  -e "mtproxy_cutover_run_id=$run_id-cutover" -e "mtproxy_cutover_privilege_drop=${DEMO_PRIVILEGE_DROP:-service}" \
  "${windows[@]}" || rc=$?

step "Roll back to C (run $run_id-rollback)"
ansible-playbook -i "$inventory" "$repo/playbooks/rollback.yml" \
  -e "mtproxy_cutover_artifacts_dir=$artifacts" -e "mtproxy_cutover_run_id=$run_id-rollback" \
  "${windows[@]}" || { status=$?; ((rc)) || rc=$status; }

step "Reports"
for run in "$run_id-cutover" "$run_id-rollback"; do
  for file in report.md report.json; do
    [[ -f $artifacts/$run/$file ]] && echo "$artifacts/$run/$file"
  done
done
[[ -f $artifacts/$run_id-cutover/report.md ]] && { echo; cat "$artifacts/$run_id-cutover/report.md"; }
echo
if ((rc == 0)); then echo "demo finished in $SECONDS s"; else echo "demo FAILED (rc=$rc) after $SECONDS s"; fi
# Called here rather than left to the EXIT trap (which covers the early exits), so that shellcheck
# sees it called.
trap - EXIT
teardown
exit "$rc"
