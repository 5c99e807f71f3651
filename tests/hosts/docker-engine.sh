#!/usr/bin/env bash
# Make sure a Docker engine without the default bridge answers on this machine (idempotent).
#
#   tests/hosts/docker-engine.sh [--replace-bridged]
#
# - installs docker.io, debootstrap (image build), iproute2 when their commands are missing;
# - starts `dockerd --bridge=none ...` when no engine answers, logging to ${TMPDIR:-/tmp}/dockerd.log;
# - an engine that already has a `bridge` network is refused (exit 1), unless --replace-bridged
#   (or MTPROXY_REPLACE_BRIDGED_DOCKERD=1) is given: then that engine is stopped and replaced.
#   The test hosts must never share a bridge with anything, so we do not silently reuse it.
set -euo pipefail

replace_bridged=${MTPROXY_REPLACE_BRIDGED_DOCKERD:-0}
for arg in "$@"; do
  case $arg in
    --replace-bridged) replace_bridged=1 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "docker-engine.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log=${TMPDIR:-/tmp}/dockerd.log
say() { echo "docker-engine: $*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

has_bridge_network() {
  timeout 10 docker network ls --format '{{.Name}}' 2>/dev/null | grep -qx bridge
}

wait_engine() {
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if ((SECONDS >= deadline)); then
      say "engine did not answer within 60 s; see $log"
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 1
  done
}

# Only what is missing: a machine with docker-ce must not get docker.io on top (they conflict).
install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  ((${#missing[@]} > 0)) || return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

stop_bridged_engine() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker.service 2>/dev/null; then
    say "stopping docker.service (it runs with the default bridge)"
    systemctl stop docker.socket docker.service
    return
  fi
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || pgrep -xo dockerd || true)
  if [[ -z $pid ]]; then
    say "an engine with a bridge network answers but no local dockerd pid was found (DOCKER_HOST?); refusing"
    exit 1
  fi
  say "stopping dockerd pid $pid (it runs with the default bridge)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      say "dockerd pid $pid did not exit within 30 s"
      exit 1
    fi
    sleep 1
  done
}

start_engine() {
  say "starting dockerd without bridge (log: $log)"
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    >"$log" 2>&1 </dev/null &
  wait_engine
}

install_missing

if engine_answers && has_bridge_network; then
  if [[ $replace_bridged != 1 ]]; then
    say "a Docker engine with the default 'bridge' network is running and was not started by this script."
    say "The test hosts need an engine started with --bridge=none. Stop it yourself, or rerun with"
    say "--replace-bridged (MTPROXY_REPLACE_BRIDGED_DOCKERD=1) to let this script stop and replace it."
    exit 1
  fi
  stop_bridged_engine
fi

if ! engine_answers; then
  # A leftover docker0 from an earlier bridged engine would be picked up again.
  if ip link show docker0 >/dev/null 2>&1; then
    say "deleting leftover docker0 link"
    ip link delete docker0
  fi
  start_engine
fi

if has_bridge_network; then
  say "engine still lists a 'bridge' network; refusing"
  exit 1
fi
say "engine ready: $(docker info --format '{{.ServerVersion}}') networks: $(docker network ls --format '{{.Name}}' | sort | tr '\n' ' ')"
