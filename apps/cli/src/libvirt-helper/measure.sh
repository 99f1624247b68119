#!/bin/bash
# Measures virsh save / restore of the test guest (TCG) with libvirt's save_image_format = "lzop", alternating the
# helpers named in HELPERS (the real /usr/bin/lzop, the xbzrle helper, ...), in a private libvirtd (mount
# namespace, as libvirt-helper.virsh.test.ts runs it). Root only; touches nothing outside a temp dir.
#   bash apps/cli/src/libvirt-helper/measure.sh [ROUNDS [MEM_MIB [HELPERS]]]
# MEM_MIB: guest RAM (default 64); its workload rewrites a quarter of it. HELPERS (default "lzop xbzrle") may add
# lzop-late: the real lzop started 0.3 s late when it compresses (not on restore), a control that shows how much
# of a helper's start-up virsh save time can see at all.
# The helper is the built CLI as installed (`npm run build` first): bin/xbzrle.js running the dist/xbzrle.mjs bundle.
set -euo pipefail
ROUNDS=${1:-3}
MEM_MIB=${2:-64}
HELPERS=${3:-lzop xbzrle}
for h in $HELPERS; do
  case $h in lzop | lzop-late | xbzrle) ;; *) echo "measure.sh: unknown helper $h (lzop, lzop-late, xbzrle)" >&2 && exit 2 ;; esac
done
REPO=$(cd "$(dirname "$0")/../../../.." && pwd)
T=$(mktemp -d /tmp/xbzrle-measure-XXXXXX)
chmod 755 "$T"
B=$T/ns
U="qemu+unix:///system?socket=$B/run/libvirt-sock"
NAME=xbzrle-measure-$$
cleanup() {
  virsh -c "$U" destroy "$NAME" >/dev/null 2>&1 || true
  virsh -c "$U" undefine "$NAME" >/dev/null 2>&1 || true
  for p in libvirtd virtlogd; do [ -f "$B/$p.pid" ] && kill "$(cat "$B/$p.pid")" 2>/dev/null || true; done
  sleep 1
  rm -rf "$T"
}
trap cleanup EXIT

CLI=$REPO/apps/cli/bin/xbzrle.js
[ -f "$REPO/apps/cli/dist/xbzrle.mjs" ] || { echo "measure.sh: build first (npm run build)" >&2; exit 2; }
KERNEL=$(cd "$REPO" && node --conditions=@xbzrle/source --import tsx --input-type=module \
  -e "import('@xbzrle/testkit').then(async (m) => console.log(await m.buildTestGuest()))")
cp "$KERNEL" "$T/guest.elf" && chmod 644 "$T/guest.elf"

mkdir -p "$B"/{run,log,cache} "$T/helper-bin"
# The bind mounts need their mount points; a host whose libvirtd never ran has no /run/libvirt.
mkdir -p /run/libvirt /var/log/libvirt /var/cache/libvirt
cp -a /var/lib/libvirt "$B/lib"
cp -a /etc/libvirt "$B/etc"
printf '\nsave_image_format = "lzop"\n' >>"$B/etc/qemu.conf"
PATH="$T/helper-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" unshare -m --propagation private sh -c "
  mount --bind $B/etc /etc/libvirt && mount --bind $B/run /run/libvirt && mount --bind $B/lib /var/lib/libvirt &&
  mount --bind $B/log /var/log/libvirt && mount --bind $B/cache /var/cache/libvirt &&
  virtlogd -d -p $B/virtlogd.pid && libvirtd -d -p $B/libvirtd.pid"
for _ in $(seq 100); do virsh -c "$U" version >/dev/null 2>&1 && break; sleep 0.2; done

cat >"$T/domain.xml" <<EOF
<domain type='qemu'><name>$NAME</name><memory unit='KiB'>$((MEM_MIB * 1024))</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>$T/guest.elf</kernel>
<cmdline>workload=sparse mem=$((MEM_MIB / 4)) rate=2000 period=200 seed=7</cmdline></os>
<clock offset='utc'/><on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<serial type='file'><source path='$T/serial.log'/><target port='0'/></serial><memballoon model='none'/></devices>
<seclabel type='none'/></domain>
EOF
virsh -c "$U" define "$T/domain.xml" >/dev/null
virsh -c "$U" start "$NAME" >/dev/null
sleep $((3 + MEM_MIB / 64)) # the guest fills its workload region first

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
printf 'helper\tround\timage_bytes\tsave_ms\trestore_ms\n'
for r in $(seq "$ROUNDS"); do
  for helper in $HELPERS; do
    rm -f "$T/helper-bin/lzop"
    if [ "$helper" = lzop-late ]; then
      printf '#!/bin/sh\ncase "$*" in *d*) ;; *) sleep 0.3 ;; esac\nexec /usr/bin/lzop "$@"\n' >"$T/helper-bin/lzop"
      chmod 755 "$T/helper-bin/lzop"
    fi
    if [ "$helper" = xbzrle ]; then
      printf '#!/bin/sh\n# xbzrle-libvirt-helper (measure.sh, as install.ts writes it)\nunset NODE_EXTRA_CA_CERTS\nexec %s %s --libvirt-helper=lzop --helper-wrapper="$0" "$@"\n' \
        "$(command -v node)" "$CLI" >"$T/helper-bin/lzop"
      chmod 755 "$T/helper-bin/lzop"
    fi
    s=$(ms virsh -c "$U" save "$NAME" "$T/img.save")
    size=$(stat -c %s "$T/img.save")
    x=$(ms virsh -c "$U" restore "$T/img.save")
    printf '%s\t%s\t%s\t%s\t%s\n' "$helper" "$r" "$size" "$s" "$x"
    rm -f "$T/img.save"
    sleep 2
  done
done
