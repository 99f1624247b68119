#!/usr/bin/env bash
# Installs the Debian packages the real-QEMU/libvirt tests and benchmarks need, if any is missing.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients lzop zstd lz4 gzip gcc binutils iproute2 util-linux pv time openssl socat prometheus chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "install-deps: done"
