#!/usr/bin/env bash
# Fuzzes the reply parser and matcher (untrusted network input) with proptest on the stable
# toolchain: CASES random inputs and CASES mutations of real captured replies (default 3,000,000
# each), release build. A panic anywhere fails the run and proptest prints the shrunk input.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CASES=${CASES:-3000000}
echo "fuzz.sh: $CASES cases per property"
PROPTEST_CASES=$CASES cargo test --release --quiet --test replies -- never_panic --test-threads 2
