#!/usr/bin/env bash
# Build the systemd test-host image from Debian packages (no registry is reachable).
#
#   tests/hosts/build-image.sh [bookworm|trixie]
#
# bookworm (Debian 12: Python 3.11, systemd 252), the default, or trixie (Debian 13: Python 3.13,
# systemd 257). The tag is a hash of the suite and this recipe, so an image is rebuilt only when
# the recipe changes. Prints the image reference on stdout.
set -euo pipefail

suite=${1:-bookworm}
case $suite in
  bookworm | trixie) ;;
  *) echo "build-image.sh: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
# python3-cryptography: the test client, backend and stand-in speak obfuscated2 and the RPC through it;
# debootstrap does not resolve virtual packages, so its python3-cffi-backend-api-* provider is named.
# nftables and iptables (Debian's nft backend): the bridge handover's redirect (module_utils/_handover/bridge.py),
# nft first, iptables where a test hides nft; hosts that use it also get CAP_NET_ADMIN.
packages=python3,python3-cffi-backend,python3-cryptography,systemd,systemd-sysv,dbus,procps,iproute2,ca-certificates,nftables,iptables
repo=mtproxy-cutover-host
[[ $suite == bookworm ]] || repo=$repo-$suite

tag=$(printf '%s|%s|%s' "$suite" "$packages" "$(sed -n '/^# recipe-end/q;p' "$0" | sha256sum)" | sha256sum | cut -c1-12)
image="$repo:$tag"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "building $image (debootstrap $suite)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" >&2
# The hosts have no network: drop what would try to reach it and the units that cannot run in a container.
rm -f "$rootfs"/etc/systemd/system/*.wants/systemd-timesyncd.service
chroot "$rootfs" systemctl mask systemd-networkd-wait-online.service getty@tty1.service console-getty.service >&2 || true
echo "$repo" >"$rootfs/etc/hostname"
tar -C "$rootfs" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$image" >&2
echo "$image"
# recipe-end
