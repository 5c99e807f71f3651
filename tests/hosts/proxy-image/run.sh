#!/usr/bin/env bash
# Entry script of the mtproxy.cutover test proxy images (tests/hosts/build-proxy-images.sh). It keeps
# the contract of the official MTProxy image's run script (same variables, /data/secret, the fixed
# flags it passes), written anew for these tests. The same script is in the C and the Go image: a
# flip changes the binary, never the contract.
#
#   SECRET           client secrets, 32 hex digits each, comma-separated (at most 16). Unset: the
#                    secrets kept in /data/secret; neither: one random secret. Written (lower case)
#                    to /data/secret, which the proxy reads (--mtproto-secret-file).
#   TAG              proxy tag, 32 hex digits, passed as -P; a malformed tag is reported and left out.
#   WORKERS          worker processes (-M), default 2.
#   MAX_CONNECTIONS  this image's addition: -c, default 512. The C binary's own default (65536 and
#                    more) is above the open-files limit of the test machines (20000), where the
#                    binary refuses to start; an operator's image sets it for its hosts the same way.
#   INTERNAL_IP      this image's addition: the local address of --nat-info, default 127.0.0.1 (no network lookup).
#   EXTERNAL_IP      this image's addition: the global address of --nat-info, default the internal one.
#
# Unlike the official script nothing is downloaded: the backend config and the aes-pwd file are part
# of the image (/etc/mtproxy), and the internal address is read from the routing table (127.0.0.1
# when there is no route, as in a container started with --network none). No secret or tag value is
# ever printed: these lines end up in `docker logs` and in incident notes.
set -euo pipefail

config=/etc/mtproxy/proxy-multi.conf
aes_pwd=/etc/mtproxy/proxy-secret
secret_file=/data/secret
hex32='[0-9a-fA-F]{32}'

say() { echo "[+] $*"; }
warn() { echo "[!] $*"; }
fail() { echo "[F] $*" >&2; exit 1; }

mkdir -p /data

if [[ -n ${SECRET:-} ]]; then
  secrets=$SECRET
  say "client secrets: from SECRET"
elif [[ -s $secret_file ]]; then
  # The file may separate secrets by commas or by white space, as the binary's own reader allows.
  secrets=$(tr -s ' \t\r\n,' ',' <"$secret_file")
  secrets=${secrets#,}
  secrets=${secrets%,}
  say "client secrets: from $secret_file"
else
  secrets=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  say "client secrets: none given, generated one (kept in $secret_file)"
fi
if [[ ! $secrets =~ ^$hex32(,$hex32){0,15}$ ]]; then
  fail "bad secret format: 32 hex digits per secret, at most 16, separated by commas"
fi
secrets=${secrets,,}
printf '%s\n' "$secrets" >"$secret_file.new"
mv -f "$secret_file.new" "$secret_file"
say "client secrets: $(($(tr -cd ',' <"$secret_file" | wc -c) + 1)) in $secret_file"

tag_args=()
if [[ -n ${TAG:-} ]]; then
  if [[ $TAG =~ ^$hex32$ ]]; then
    tag_args=(-P "${TAG,,}")
    say "proxy tag: set"
  else
    warn "TAG is not 32 hex digits: running without a proxy tag"
  fi
fi

workers=${WORKERS:-2}
[[ $workers =~ ^[1-9][0-9]*$ ]] || fail "WORKERS must be a positive number"
max_connections=${MAX_CONNECTIONS:-512}
[[ $max_connections =~ ^[1-9][0-9]*$ ]] || fail "MAX_CONNECTIONS must be a positive number"

# The official script asks the routing table and a web service for these; test containers have no
# network, so both come from the environment (default: the container's loopback).
internal_ip=${INTERNAL_IP:-127.0.0.1}
external_ip=${EXTERNAL_IP:-$internal_ip}
say "nat-info: $internal_ip:$external_ip, workers: $workers, max connections: $max_connections"

exec /usr/local/bin/mtproto-proxy -p 2398 --http-stats -H 443 -M "$workers" -C 60000 -c "$max_connections" \
  --aes-pwd "$aes_pwd" -u root "$config" --allow-skip-dh --nat-info "$internal_ip:$external_ip" \
  --mtproto-secret-file "$secret_file" "${tag_args[@]}"
