#!/bin/sh
# Install everything liveos and its tests need on a Debian 12 machine (run as root), then create
# .venv with liveos (editable) and the dev tools. Idempotent: re-running only checks.
# bubblewrap: the sandbox for programs from images; busybox-static: the tests' hostile images;
# qemu-system-common: qemu-storage-daemon, which exports qcow2/vhd/vhdx images as raw files (FUSE).
# isomd5sum: checkisomd5, the tests' independent checker of the MD5 liveos implants in ISOs.
# grub-pc-bin: GRUB's i386-pc modules, for BIOS boot of ISOs whose image has none (grub-common:
# grub-mkimage).
# erofs-utils: mkfs.erofs/fsck.erofs, the erofs root image (--rootfs erofs) and its verify check.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="python3 python3-venv python3-pip qemu-utils squashfs-tools mtools dosfstools fdisk gdisk util-linux
mount e2fsprogs xfsprogs btrfs-progs zstd xz-utils cpio libarchive-tools xorriso
qemu-system-x86 ovmf mmdebstrap debian-archive-keyring ca-certificates socat openssl grub-common
bubblewrap busybox-static qemu-system-common isomd5sum grub-pc-bin erofs-utils"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "setup-host: run as root to install:$missing" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup-host: ready (.venv/bin/liveos, .venv/bin/nox)"
