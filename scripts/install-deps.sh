#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for building and testing Wrenn, as one set,
# then checks that every command is there afterwards (installing one package can remove
# another: the machine image ships a newer qemu-utils that Debian's qemu-system-x86 replaces,
# and an install that only looked before it ran would leave qemu-img missing). Idempotent and
# quick when everything is already there.
set -euo pipefail

# command -> Debian package that provides it
required=(
  "curl curl"
  "cc build-essential"
  "python3 python3"
  "useradd passwd"
  # The VM layer: QEMU (microvm, TCG or KVM), qemu-img, and what images/build.sh uses.
  "qemu-system-x86_64 qemu-system-x86"
  "qemu-img qemu-utils"
  "debootstrap debootstrap"
  "cpio cpio"
  "mkfs.ext4 e2fsprogs"
  "xz xz-utils"
  # Network slots of the host agent.
  "nft nftables"
  "ip iproute2"
  # The web console's browser tests: Debian's Chromium, driven by playwright-core.
  "chromium chromium"
  # The OCI suite (crates/wrenn-oci/tests) runs its own registry on 127.0.0.1 with a config of
  # its own; the package's system service is not used.
  "docker-registry docker-registry"
  # Templates from OCI images get Debian's static busybox (their init's tools).
  "busybox busybox-static"
)

have() { command -v "$1" >/dev/null 2>&1; }
missing() {
  local out=() entry
  for entry in "${required[@]}"; do
    set -- $entry
    have "$1" || out+=("$2")
  done
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || out+=(python3-venv)
  echo "${out[@]:-}"
}

need="$(missing)"
if [ -n "$need" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: $need" >&2
    exit 1
  fi
  # Everything the project needs goes in one apt transaction, so apt resolves the set
  # together (qemu-system-x86 and qemu-utils must come from the same version).
  all=()
  for entry in "${required[@]}"; do set -- $entry; all+=("$2"); done
  echo "install-deps: installing $need"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # qemu-utils must match qemu-system-x86's version: a newer qemu-utils that the machine image
  # ships conflicts with Debian's QEMU, and apt would remove it rather than pick the match.
  qemu_ver="$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
  [ -n "$qemu_ver" ] || qemu_ver="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
  pkgs=()
  for p in $(printf '%s\n' "${all[@]}" python3-venv | sort -u); do
    case "$p" in
      qemu-system-x86|qemu-utils) pkgs+=("$p=$qemu_ver") ;;
      *) pkgs+=("$p") ;;
    esac
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${pkgs[@]}" >/dev/null
  need="$(missing)"
  if [ -n "$need" ]; then
    echo "install-deps: still missing after installing: $need" >&2
    exit 1
  fi
fi

# The web console's build needs Node.js >= 20.19 and npm (scripts/build-dashboard.sh checks the
# version). Installed from Debian only when there is none: a newer Node.js already installed
# (NodeSource's, which brings its own npm) is kept, never replaced by Debian's.
if ! have node || ! have npm; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install Node.js and npm" >&2
    exit 1
  fi
  echo "install-deps: installing nodejs npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
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
