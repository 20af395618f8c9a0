#!/usr/bin/env bash
# make soak: the long reliability runs, bounded in time, each against a real `wrenn up` of its
# own (data folder under /var/tmp, network slots SOAK_SLOTS), writing their figures into
# docs/reliability.md. Needs root, QEMU and the built images (make images).
#
# Steps run in order; each is a function below, so a new one is a function plus a line in
# STEPS. Durations and sizes come from the environment (defaults: the issue's figures):
#   SOAK_LOAD_SECS=300 SOAK_CAPSULES=10 SOAK_STREAMS=200 SOAK_PTYS=50
#   SOAK_CHURN_SECS=600 SOAK_CAPACITY=6 SOAK_KILL_EVERY=20 SOAK_SLOTS=3700-3999
#   SOAK_DOC=docs/reliability.md SOAK_STEPS="load churn" SOAK_PROFILE=release
# A short run: SOAK_LOAD_SECS=30 SOAK_CAPSULES=2 SOAK_STREAMS=20 SOAK_PTYS=4 SOAK_CHURN_SECS=60 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CARGO:=cargo}"
: "${CARGO_TARGET_DIR:=/var/tmp/wrenn/target}"
: "${WRENN_IMAGES:=/var/tmp/wrenn/images}"
: "${SOAK_LOAD_SECS:=300}" "${SOAK_CAPSULES:=10}" "${SOAK_STREAMS:=200}" "${SOAK_PTYS:=50}"
: "${SOAK_CHURN_SECS:=600}" "${SOAK_CAPACITY:=6}" "${SOAK_KILL_EVERY:=20}"
: "${SOAK_SLOTS:=3700-3999}" "${SOAK_DOC:=docs/reliability.md}"
: "${SOAK_STEPS:=load churn}" "${SOAK_PROFILE:=release}"
export CARGO_TARGET_DIR WRENN_IMAGES

bin=$CARGO_TARGET_DIR/$SOAK_PROFILE
[ "$SOAK_PROFILE" = debug ] && bin=$CARGO_TARGET_DIR/debug

build() {
    if [ "$SOAK_PROFILE" = debug ]; then
        "$CARGO" build --locked -p wrenn -p wrenn-bench
    else
        "$CARGO" build --locked --profile "$SOAK_PROFILE" -p wrenn -p wrenn-bench
    fi
}

soak() { # the wrenn-bench soak phase $1, with the common arguments
    "$bin/wrenn-bench" soak --wrenn "$bin/wrenn" --images "$WRENN_IMAGES" \
        --slots "$SOAK_SLOTS" --doc "$SOAK_DOC" --phase "$@"
}

step_load() {
    soak load --load-secs "$SOAK_LOAD_SECS" --capsules "$SOAK_CAPSULES" \
        --streams "$SOAK_STREAMS" --ptys "$SOAK_PTYS"
}

step_churn() {
    soak churn --churn-secs "$SOAK_CHURN_SECS" --capacity "$SOAK_CAPACITY" \
        --kill-every-secs "$SOAK_KILL_EVERY"
}

build
failed=()
for s in $SOAK_STEPS; do
    echo "== soak: $s"
    if ! "step_$s"; then
        failed+=("$s")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "soak: did not hold: ${failed[*]} (figures in $SOAK_DOC)" >&2
    exit 1
fi
echo "soak: every step held (figures in $SOAK_DOC)"
