#!/usr/bin/env bash
# Fuzzing as equivalences, not only "no panic", in two ways:
#  1. coverage-guided, with cargo-fuzz (libFuzzer) on the nightly toolchain where it is installed:
#     every target in fuzz/fuzz_targets/ for FUZZ_SECONDS each (default 60): a patched probe equals
#     the probe built; a probe's key equals the key read back from its bytes and from every quote
#     of it; the SCTP summary reads within the chunk's length; a daemon reply line has one
#     spelling; received bytes never panic the parsers and the matcher;
#  2. the same properties as proptest cases on the stable toolchain, CASES each (default
#     3,000,000 for the reply parser and matcher on random and mutated captured replies).
# A failing case fails the run, with the input (libFuzzer: fuzz/artifacts/; proptest: shrunk).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CASES=${CASES:-3000000}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

if cargo +nightly fuzz --version >/dev/null 2>&1; then
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    for target in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
        echo "fuzz.sh: $target for ${FUZZ_SECONDS}s"
        # A finding (crash, timeout, leak, out of memory) or a failed build fails the run.
        if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$FUZZ_SECONDS" \
            >"$log" 2>&1; then
            tail -40 "$log" >&2
            echo "fuzz.sh: $target failed; its input is in fuzz/artifacts/$target/" >&2
            exit 1
        fi
        grep -E '^Done' "$log" || true
    done
else
    echo "fuzz.sh: no cargo-fuzz on a nightly toolchain (cargo install cargo-fuzz); only the proptest properties run" >&2
fi

echo "fuzz.sh: $CASES cases per property"
PROPTEST_CASES=$CASES cargo test --release --quiet --test replies -- never_panic --test-threads 2
PROPTEST_CASES=$((CASES / 100)) cargo test --release --quiet --workspace --lib -- \
    patched_equals_built replies_round_trip a_line_read_as_a_reply --test-threads 2
