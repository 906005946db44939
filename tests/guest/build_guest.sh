#!/usr/bin/env bash
# Build the QEMU test guest from Debian packages only: a distribution kernel and a busybox
# initramfs whose ACPI power button runs `poweroff` and which prints GUEST-READY on the serial
# console once it can take a shutdown request.  The kernel is also unpacked to an ELF vmlinux,
# which QEMU boots through its PVH entry point: under TCG that skips the decompressor and
# halves the boot (about 5 s instead of 11 s here).
#
#   tests/guest/build_guest.sh [cache dir]      (default ${PYXAPI_GUEST_CACHE:-~/.cache/pyxapi-guest})
#
# Prints the cache dir; it then holds vmlinuz, vmlinux and initrd.gz.  Nothing here is ever committed.
set -euo pipefail

cache=${1:-${PYXAPI_GUEST_CACHE:-$HOME/.cache/pyxapi-guest}}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
version=$(sha256sum "$0" | cut -c1-16)   # any change to this script rebuilds
if [ -s "$cache/vmlinux" ] && [ -s "$cache/initrd.gz" ] && [ "$(cat "$cache/version" 2>/dev/null)" = "$version" ]; then
    echo "$cache"
    exit 0
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# The kernel package the linux-image-amd64 meta package points at (e.g. linux-image-6.1.0-56-amd64).
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1
}
kpkg=${PYXAPI_GUEST_KERNEL:-$(kernel_package)}
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && kpkg=$(kernel_package)      # no package lists yet
fi
[ -n "$kpkg" ] || { echo "no linux-image package found (apt-get update?)" >&2; exit 1; }
apt-get download "$kpkg" busybox-static >&2
dpkg-deb -x "$kpkg"_*.deb kx
dpkg-deb -x busybox-static_*.deb bb

root=$work/root
mkdir -p "$root"/{bin,sbin,etc/acpi/PWRF,proc,sys,dev,tmp,lib/modules}
cp bb/bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -s ../bin/busybox "$root/sbin/init"

# Modules in load order (no modules.dep ships in the initramfs).  Some may be built in.
: > "$root/etc/modules"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
         failover net_failover virtio_net virtio_balloon button evdev pvpanic pvpanic-mmio; do
    f=$(find kx/lib/modules -name "$m.ko*" | head -n1)
    [ -n "$f" ] || continue
    case "$f" in
        *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$root/etc/modules"
done

cat > "$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
exec /sbin/init
EOF
cat > "$root/etc/inittab" <<'EOF'
::sysinit:/etc/rc
::respawn:-/bin/sh
::shutdown:/bin/sync
EOF
cat > "$root/etc/rc" <<'EOF'
#!/bin/sh
# wait (at most ~2 s) for the power button's input device, then listen to it
i=0
while [ $i -lt 20 ] && ! ls /dev/input/event* >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
mkdir -p /var/log /var/run
acpid -c /etc/acpi -l /dev/null
pidof acpid >/dev/null && echo GUEST-READY
EOF
cat > "$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
poweroff
EOF
chmod +x "$root/init" "$root/etc/rc" "$root/etc/acpi/PWRF/00000080"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > initrd.gz
cp kx/boot/vmlinuz-* vmlinuz
python3 - vmlinuz vmlinux <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")        # the xz payload inside the bzImage
if start < 0:
    sys.exit("vmlinuz: no xz payload")
elf = lzma.LZMADecompressor().decompress(data[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("vmlinuz: the payload is not an ELF kernel")
open(sys.argv[2], "wb").write(elf)
EOF
mv vmlinuz vmlinux initrd.gz "$cache/"
echo "$kpkg" > "$cache/kernel-package"
echo "$version" > "$cache/version"
echo "$cache"
