#!/usr/bin/env bash
# Make sure both compose versions the compose scenario runs are on this machine (idempotent):
#
#   tests/hosts/compose-clis.sh
#
# - v1: `docker-compose` 1.29, Debian bookworm's docker-compose package (apt-get install);
# - v2: the `docker compose` CLI plugin. Bookworm has no v2 package; Debian trixie's docker-compose
#   package (2.26, a Go program that needs only libc6 >= 2.34) is. Both packages are called
#   docker-compose, so trixie's is not installed: its .deb is downloaded with a private apt
#   configuration (the machine's own Debian mirror, suite trixie; the machine's apt sources are not
#   changed) and only its plugin binary is put in /usr/local/lib/docker/cli-plugins/, where the docker
#   CLI looks for plugins. `docker-compose` stays v1, `docker compose` is v2, as on a host with both.
# Prints the two versions.
set -euo pipefail

say() { echo "compose-clis: $*" >&2; }
plugin_dir=/usr/local/lib/docker/cli-plugins

v1_ok() { [[ $(docker-compose version --short 2>/dev/null) == 1.* ]]; }
v2_ok() { [[ $(docker compose version --short 2>/dev/null) == 2.* ]]; }

if ! v1_ok; then
  say "installing docker-compose (v1) from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends docker-compose >&2
fi

# The Debian mirror the machine already uses (deb822 or one-line sources).
mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1 || true)
  if [[ -z $uri ]]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' |
      grep -v security | grep debian | head -n 1 || true)
  fi
  [[ -n $uri ]] || { say "no Debian mirror found in the apt sources"; exit 1; }
  echo "$uri"
}

if ! v2_ok; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb $(mirror) trixie main" >"$work/sources.list"
  opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
  say "downloading Debian trixie's docker-compose (v2) for its CLI plugin"
  apt-get "${opts[@]}" update -q >&2
  (cd "$work" && apt-get "${opts[@]}" download docker-compose >&2)
  dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
  install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugin_dir/docker-compose"
fi

v1_ok || { say "docker-compose is not v1 after the install"; exit 1; }
v2_ok || { say "docker compose (v2 plugin) does not answer after the install"; exit 1; }
echo "v1 $(docker-compose version --short)"
echo "v2 $(docker compose version --short)"
