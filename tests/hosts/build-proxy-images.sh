#!/usr/bin/env bash
# Build the two proxy images of the container-flip tests from the test-host image, locally
# (`docker build --network none`; nothing is pulled or downloaded):
#
#   tests/hosts/build-proxy-images.sh [--save-go ARCHIVE]
#
# Prints two lines on stdout: the C image's tag, then the Go image's tag
# (mtproxy-cutover-proxy:c-<hash>, mtproxy-cutover-proxy:go-<hash>; the hash covers the base image
# ID, this script, tests/hosts/proxy-image/ and the binary, so an image that exists is not rebuilt).
# With --save-go ARCHIVE, `docker save` writes the Go image to ARCHIVE and a third line gives its
# image ID (sha256:...), which a `docker load` of the archive yields again.
#
# Each image has /run.sh (tests/hosts/proxy-image/run.sh, the official image's contract), the backend
# config and aes-pwd in /etc/mtproxy, the test tools the pod container runs in /opt/mtproxy-test, and
# at /usr/local/bin/mtproto-proxy:
#   - by default the stand-in (tests/standin) in that flavour: the C launcher at that path; for Go a
#     link to /usr/local/bin/mtproto-proxy-go, the launcher whose name makes it the Go flavour. The
#     stand-in reads its fault file through /etc/mtproxy-standin/faults.json -> /data/standin-faults.json,
#     so a test can give one container faults in its volume.
#   - the file $MTPROXY_C_BINARY / $MTPROXY_GO_BINARY when set (a real build).
# Environment: MOLECULE_HOST_IMAGE (default: tests/hosts/build-image.sh builds or finds it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
recipe=$here/proxy-image
standin=$repo/tests/standin
repo_name=mtproxy-cutover-proxy

save_go=
while (($# > 0)); do
  case $1 in
    --save-go) save_go=${2:?--save-go needs a path}; shift 2 ;;
    --save-go=*) save_go=${1#*=}; shift ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "build-proxy-images.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { echo "build-proxy-images: $*" >&2; }

base=${MOLECULE_HOST_IMAGE:-}
if [[ -z $base ]]; then
  base=$("$here/build-image.sh" | tail -n 1)
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base") || {
  say "base image $base not found (tests/hosts/build-image.sh builds it)"
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A fixed test aes-pwd (128 bytes), the same in both images: the pod's backend keys the C RPC with it.
aes_pwd=$(printf '%s' 'mtproxy-cutover container test aes-pwd' | sha512sum | cut -c1-128)

# Lay out the build context of one flavour in $work/<flavour>; its rootfs/ is copied over /.
layout() {
  local flavour=$1 binary=$2 ctx=$work/$1
  local root=$ctx/rootfs
  mkdir -p "$root/etc/mtproxy" "$root/usr/local/bin" "$root/opt/mtproxy-test" "$root/etc/mtproxy-test" "$root/data"
  install -m 0644 "$recipe/Dockerfile" "$ctx/Dockerfile"
  install -m 0755 "$recipe/run.sh" "$root/run.sh"
  install -m 0644 "$recipe/proxy-multi.conf" "$root/etc/mtproxy/proxy-multi.conf"
  printf '%s' "$aes_pwd" >"$root/etc/mtproxy/proxy-secret"
  chmod 0600 "$root/etc/mtproxy/proxy-secret"
  install -m 0755 "$recipe/pod.sh" "$root/opt/mtproxy-test/pod.sh"
  install -m 0755 "$standin/mtproxy_testbackend.py" "$standin/mtproxy_testclient.py" "$root/opt/mtproxy-test/"
  install -m 0644 "$standin/mtproxy_wire.py" "$root/opt/mtproxy-test/"
  if [[ -n $binary ]]; then
    [[ -f $binary ]] || { say "$flavour binary $binary is not a file"; exit 1; }
    install -m 0755 "$binary" "$root/usr/local/bin/mtproto-proxy"
    return
  fi
  mkdir -p "$root/opt/mtproxy-standin" "$root/etc/mtproxy-standin"
  install -m 0644 "$standin/mtproxy_standin.py" "$standin/mtproxy_wire.py" "$root/opt/mtproxy-standin/"
  ln -s /data/standin-faults.json "$root/etc/mtproxy-standin/faults.json"
  if [[ $flavour == c ]]; then
    install -m 0755 "$standin/mtproxy_standin_launcher.py" "$root/usr/local/bin/mtproto-proxy"
  else
    install -m 0755 "$standin/mtproxy_standin_launcher.py" "$root/usr/local/bin/mtproto-proxy-go"
    ln -s mtproto-proxy-go "$root/usr/local/bin/mtproto-proxy"
  fi
}

# Tag from everything that goes into the image: base image ID, this script, the context's bytes,
# modes and links (a tar with fixed order, times and owners).
context_tag() {
  local flavour=$1 ctx=$work/$1 sum
  sum=$({
    printf '%s\n' "$base_id"
    sha256sum <"$0"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$ctx" -cf - . | sha256sum
  } | sha256sum | cut -c1-12)
  echo "$repo_name:$flavour-$sum"
}

build() {
  local flavour=$1 binary=$2 tag
  layout "$flavour" "$binary"
  tag=$(context_tag "$flavour")
  if docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag exists"
  else
    say "building $tag (${binary:-stand-in})"
    docker build --network none --build-arg "BASE_IMAGE=$base" --label "mtproxy-cutover.proxy-image=1" \
      -t "$tag" "$work/$flavour" >&2
  fi
  echo "$tag"
}

c_tag=$(build c "${MTPROXY_C_BINARY:-}")
go_tag=$(build go "${MTPROXY_GO_BINARY:-}")
echo "$c_tag"
echo "$go_tag"

if [[ -n $save_go ]]; then
  go_id=$(docker image inspect --format '{{.Id}}' "$go_tag")
  mkdir -p "$(dirname "$save_go")"
  docker save -o "$save_go.tmp" "$go_tag"
  mv -f "$save_go.tmp" "$save_go"
  say "saved $go_tag ($go_id) to $save_go"
  echo "$go_id"
fi
