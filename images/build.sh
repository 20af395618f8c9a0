#!/usr/bin/env bash
# Builds a template's guest image from Debian packages, without Docker:
#   OUT/<template>/{vmlinuz, initrd.img, rootfs.img, inputs.sha256}
# The kernel is Debian's cloud kernel; the initramfs is busybox plus its virtio modules; the
# root filesystem is a debootstrap minbase with the template's packages, envd and wrenn-init,
# written into an ext4 image by mkfs.ext4 -d (no loop mount). Skipped when the inputs' content
# hash is unchanged. Progress goes to stdout as "[step/steps] what (bytes)".
#
# usage: images/build.sh TEMPLATE OUT_DIR ENVD_BINARY
set -euo pipefail

template=${1:?template name}
out_root=${2:?output directory}
envd_bin=${3:?static envd binary}
here=$(cd "$(dirname "$0")" && pwd)
pkgfile="$here/templates/$template.packages"
[ -f "$pkgfile" ] || { echo "unknown template '$template' (no $pkgfile)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "building images needs root (debootstrap, chroot)" >&2; exit 2; }
for tool in debootstrap mkfs.ext4 cpio gzip dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/install-deps.sh installs it)" >&2; exit 2; }
done

ROOTFS_SIZE=${WRENN_ROOTFS_SIZE:-2G}
KERNEL_PKG_META=linux-image-cloud-amd64
STEPS=5
step() { echo "[$1/$STEPS] $2"; }
size_of() { du -sb "$1" | cut -f1; }

# Packages of a template, following "@other" includes.
packages() {
  local f="$here/templates/$1.packages"
  while read -r line; do
    line=${line%%#*}; line=${line// /}
    [ -z "$line" ] && continue
    if [[ $line == @* ]]; then packages "${line#@}"; else echo "$line"; fi
  done < "$f"
}

# The Debian mirror this machine's apt already uses (never hard-coded here).
mirror() {
  local uri
  uri=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v security | awk '{print $2}' | head -1)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | grep -v security | awk '{print $2}' | head -1)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 2; }
  echo "$uri"
}

resolve_kernel() { apt-cache depends "$KERNEL_PKG_META" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
kernel_pkg=$(resolve_kernel)
if [ -z "$kernel_pkg" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  kernel_pkg=$(resolve_kernel)
fi
[ -n "$kernel_pkg" ] || { echo "cannot resolve $KERNEL_PKG_META (run apt-get update)" >&2; exit 2; }
pkg_list=$(packages "$template" | sort -u | paste -sd, -)

out="$out_root/$template"
inputs=$( {
  echo "template=$template kernel=$kernel_pkg size=$ROOTFS_SIZE packages=$pkg_list"
  sha256sum "$here/build.sh" "$here/init/"* "$envd_bin" | awk '{print $1}'
  for t in $(grep -ho '^@[a-z0-9_-]*' "$pkgfile" | tr -d @) "$template"; do sha256sum "$here/templates/$t.packages" | awk '{print $1}'; done
} | sha256sum | awk '{print $1}')
if [ -f "$out/inputs.sha256" ] && [ "$(cat "$out/inputs.sha256")" = "$inputs" ] \
   && [ -f "$out/rootfs.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "template $template is up to date ($inputs)"
  exit 0
fi

mkdir -p "$out_root"
work=$(mktemp -d "${out_root%/}/.build-$template-XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/debs"

step 1 "kernel: downloading $kernel_pkg and busybox-static"
(cd "$work/debs" && apt-get download -q "$kernel_pkg" busybox-static >/dev/null 2>&1) \
  || { echo "apt-get download failed (run apt-get update?)" >&2; exit 1; }
dpkg-deb -x "$work/debs/$kernel_pkg"_*.deb "$work/kernel"
dpkg-deb -x "$work/debs/"busybox-static_*.deb "$work/busybox"
kver=${kernel_pkg#linux-image-}
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
echo "      vmlinuz $(size_of "$work/vmlinuz") bytes"

step 2 "initramfs: busybox + virtio modules"
ir="$work/initramfs"
mkdir -p "$ir"/{bin,dev,proc,sys,mnt,lib/modules}
cp "$work/busybox/bin/busybox" "$ir/bin/busybox"
for app in sh mount umount insmod switch_root sleep poweroff mkdir; do ln -s busybox "$ir/bin/$app"; done
for m in virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net; do
  f=$(find "$work/kernel/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "kernel module $m missing from $kernel_pkg" >&2; exit 1; }
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$ir/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$ir/lib/modules/$m.ko" ;;
    *) cp "$f" "$ir/lib/modules/$m.ko" ;;
  esac
done
install -m 0755 "$here/init/initramfs-init" "$ir/init"
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -n -1 > "$work/initrd.img")
echo "      initrd.img $(size_of "$work/initrd.img") bytes"

step 3 "rootfs: debootstrap bookworm minbase + $pkg_list"
root="$work/rootfs"
debootstrap --variant=minbase --include="$pkg_list" bookworm "$root" "$(mirror)" > "$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; echo "debootstrap failed" >&2; exit 1; }
echo "      rootfs $(size_of "$root") bytes"

step 4 "rootfs: users, envd, wrenn-init"
chroot "$root" useradd --create-home --shell /bin/bash --uid 1000 user
echo 'user ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/user"
chmod 0440 "$root/etc/sudoers.d/user"
install -m 0755 "$envd_bin" "$root/usr/local/bin/envd"
install -m 0755 "$here/init/wrenn-init" "$root/sbin/wrenn-init"
echo wrenn > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 wrenn\n' > "$root/etc/hosts"
# apt caches and logs are not part of the image.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/var/log/"*.log "$root/tmp/"*

step 5 "image: ext4 rootfs.img ($ROOTFS_SIZE, sparse)"
mkfs.ext4 -q -F -L wrenn-root -d "$root" "$work/rootfs.img" "$ROOTFS_SIZE"
echo "      rootfs.img $(du -b --apparent-size "$work/rootfs.img" | cut -f1) bytes ($(du -B1 "$work/rootfs.img" | cut -f1) on disk)"

mkdir -p "$out"
rm -rf "$out/snapshot"
mv -f "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.img" "$out/"
echo "$inputs" > "$out/inputs.sha256"
echo "template $template built in $out"
