#!/usr/bin/env bash
# Property-based fuzzing of the parsers on the stable toolchain (proptest; cargo-fuzz needs
# nightly): envd's Connect envelopes, JSON/proto codecs, path resolution, multipart uploads and
# Connect streams on the wire (the real envd binary); the server's WebSocket messages and the
# proxy's Host routing. `make test` runs the same properties at proptest's default (256 cases;
# 64 for the wire ones); this script runs them at CASES and prints the figures.
#
#   scripts/fuzz-parsers.sh [CASES]     (default 256 per property; `make soak` passes more)
#
# Prints per target the properties and cases run, then `fuzz-parsers: properties=N cases=N
# failures=F` (the figures for docs/reliability.md). A failure prints proptest's minimal input.
set -uo pipefail
cd "$(dirname "$0")/.."
cases=${1:-256}
: "${CARGO:=cargo}"
export PROPTEST_CASES=$cases

# name | cargo test arguments | the properties (test names)
targets=(
  "envd-envelope|-p envd --lib connect::envelope::tests::|frames_round_trip_in_any_chunks truncated_streams_wait oversize_is_refused_from_the_header arbitrary_bytes_never_panic"
  "envd-codecs|-p envd --lib connect::tests::|json_decoding_never_panics json_shaped_input_never_panics start_requests_round_trip directory_listings_round_trip"
  "envd-paths|-p envd --lib paths::tests::|resolved_paths_are_absolute_and_folded parent_dirs_stop_at_root"
  "envd-wire|-p envd --test fuzz_wire|multipart_uploads_write_exactly_their_parts mangled_multipart_is_refused_cleanly connect_streams_of_any_bytes_end_in_an_error"
  "server-ws|-p wrenn-server --lib ws::tests::|first_frames_of_any_text_are_parsed_or_refused first_frames_of_any_json_never_panic exec_frames_carry_their_fields pty_frames_carry_their_fields control_frames events_are_json_with_the_bytes"
  "recipes|-p wrenn-types --test recipe_props|never_panics_and_lines_are_real instruction_like_text_never_panics continuations_join double_quoting_round_trips single_quoting_is_literal exec_form_round_trips unknown_instruction_names_its_line"
  "server-proxy|-p wrenn-server --test proxy_hosts|any_headers_route_without_panicking capsule_hosts_round_trip routing_headers_round_trip other_domains_go_to_the_api extra_labels_are_no_capsule"
)
props_total=0
failures=0
for t in "${targets[@]}"; do
  IFS='|' read -r name args props <<<"$t"
  # shellcheck disable=SC2086
  out=$(
    set -- $args
    "$CARGO" test --locked "$@" 2>&1
  )
  ok=0
  bad=0
  for p in $props; do
    if grep -qE "^test (.*::)?$p \.\.\. ok$" <<<"$out"; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
      echo "fuzz-parsers: $name: $p did not pass"
    fi
  done
  props_total=$((props_total + ok + bad))
  failures=$((failures + bad))
  echo "fuzz-parsers: $name: $ok of $((ok + bad)) properties held, $cases cases each"
  [ "$bad" -gt 0 ] && grep -E 'minimal failing input|panicked|error(\[|:)' <<<"$out" | head -20
done
echo "fuzz-parsers: properties=$props_total cases=$((props_total * cases)) failures=$failures (PROPTEST_CASES=$cases)"
[ "$failures" -eq 0 ]
