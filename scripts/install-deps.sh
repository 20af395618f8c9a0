#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for building and testing Wrenn. Idempotent
# and quick when everything is already there.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have curl || need_pkgs+=(curl)
have cc || need_pkgs+=(build-essential)
have python3 || need_pkgs+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
have useradd || need_pkgs+=(passwd)
# The VM layer: QEMU (microvm, TCG or KVM), qemu-img, and what images/build.sh uses.
have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
have qemu-img || need_pkgs+=(qemu-utils)
have debootstrap || need_pkgs+=(debootstrap)
have cpio || need_pkgs+=(cpio)
have mkfs.ext4 || need_pkgs+=(e2fsprogs)
have xz || need_pkgs+=(xz-utils)
# Network slots of the host agent.
have nft || need_pkgs+=(nftables)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
  echo "install-deps: cargo is missing; install the Rust toolchain (rustup, stable >= 1.85) first" >&2
  exit 1
fi

# envd runs processes as the capsule's default user `user`; the tests need that account too.
if [ "$(id -u)" -eq 0 ] && ! id -u user >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash user
  echo "install-deps: created user 'user'"
fi
