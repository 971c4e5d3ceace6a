#!/usr/bin/env bash
# Builds a onebox guest image for the qemu provider from Debian packages, without a loop device,
# a mount or a VM: mmdebstrap into a directory, `mkfs.ext4 -d` that directory into a file system
# image, `qemu-img convert` it to qcow2. The kernel and a small initrd are copied out next to the
# disk: instances boot them directly (-kernel/-initrd), so the image needs no boot loader.
#
# usage: build.sh ALIAS OUTDIR        (ALIAS: debian-12)
#
# OUTDIR is made atomically: the image is built in OUTDIR.partial-*, then renamed, so a killed
# build never leaves a half-made image behind (only a partial directory the next build removes).
# Result: OUTDIR/{disk.qcow2, vmlinuz, initrd.img, image.json}.
#
# Environment: ONEBOX_QEMU_MIRROR (default http://deb.debian.org/debian),
#              ONEBOX_QEMU_IMAGE_SIZE (the root file system's size before it grows, default 2G).
set -euo pipefail

alias_name=${1:?usage: build.sh ALIAS OUTDIR}
out=${2:?usage: build.sh ALIAS OUTDIR}
mirror=${ONEBOX_QEMU_MIRROR:-http://deb.debian.org/debian}
size=${ONEBOX_QEMU_IMAGE_SIZE:-2G}

case $alias_name in
debian-12) suite=bookworm ;;
*) echo "build.sh: unknown image alias '$alias_name' (known: debian-12)" >&2; exit 2 ;;
esac

for tool in mmdebstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing (make qemu installs it)" >&2; exit 3; }
done
export PATH=$PATH:/usr/sbin:/sbin

out=$(realpath -m "$out")
mkdir -p "$(dirname "$out")"
rm -rf "$out".partial-*
work=$(mktemp -d "$out.partial-XXXXXX")
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")" && pwd)

# Packages: a bootable minimal Debian with systemd, sshd, Python (Ansible and the agent), sudo
# (the user's passwordless sudo), dbus (systemctl and logind work at once), cloud-init (the same
# first boot as the clouds'), and the kernel built for clouds (virtio, no hardware drivers).
packages=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,dbus,openssh-server,python3,sudo,cloud-init,iproute2,iputils-ping,netbase,ca-certificates,procps,less

echo "build.sh: mmdebstrap $suite from $mirror"
mmdebstrap --variant=minbase --include="$packages" \
    --customize-hook="$here/customize.sh \"\$1\"" \
    "$suite" "$work/root" "$mirror"

kernel=$(cd "$work/root/boot" && ls vmlinuz-* | sort -V | tail -1)
version=${kernel#vmlinuz-}
cp "$work/root/boot/$kernel" "$work/vmlinuz"
cp "$work/root/boot/initrd.img-$version" "$work/initrd.img"

echo "build.sh: mkfs.ext4 -d ($size)"
mkfs.ext4 -q -F -L onebox-root -d "$work/root" "$work/root.raw" "$size"
rm -rf "$work/root"
echo "build.sh: qemu-img convert"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/disk.qcow2"
rm -f "$work/root.raw"
cat >"$work/image.json" <<JSON
{"alias": "$alias_name", "suite": "$suite", "kernel": "$version", "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "root": "/dev/vda"}
JSON
chmod 0644 "$work"/*
chmod 0755 "$work"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
echo "build.sh: $alias_name ready in $out ($(du -sh "$out" | cut -f1))"
