#!/usr/bin/env bash
# Builds envd as a static binary for guest images: musl when that target is installed,
# otherwise glibc with a static C runtime (envd reads /etc/passwd itself, so no NSS is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=/var/tmp/wrenn/target}"
export CARGO_TARGET_DIR
# The guest images are keyed by envd's bytes: leave the clone's and the target dir's paths out
# of them (panic locations, generated code), so every checkout builds the same envd.
remap="--remap-path-prefix=$PWD=/wrenn --remap-path-prefix=$CARGO_TARGET_DIR=/target --remap-path-prefix=$HOME=/home"
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
   || rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1; then
  target=x86_64-unknown-linux-musl
  RUSTFLAGS="$remap" cargo build --release --locked -p envd --target "$target"
else
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS="-C target-feature=+crt-static $remap" cargo build --release --locked -p envd --target "$target"
fi
bin="$CARGO_TARGET_DIR/$target/release/envd"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
  echo "envd is not static: $(ldd "$bin")" >&2
  exit 1
fi
ln -sfn "$bin" "$CARGO_TARGET_DIR/envd-static"
echo "$bin"
