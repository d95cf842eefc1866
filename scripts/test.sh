#!/usr/bin/env bash
# Runs every test of synergy-craft: unit tests, CLI tests, and the lab tests that build network
# namespaces with nftables firewalls (these need root). Installs what the tests need when missing.
# SYNERGY_REQUIRE_LAB=1 (set by .ci/run) turns a lab test that cannot run into a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_lab_deps || echo "test.sh: lab tests will say they cannot run" >&2
if ! python3 -c 'import scapy.all' 2>/dev/null; then
    echo "test.sh: installing scapy (independent packet builder for the byte-compare test)" >&2
    python3 -m pip install -q --root-user-action=ignore scapy >&2 || echo "test.sh: could not install scapy" >&2
fi

bash -n scripts/*.sh
# Style first: formatting and clippy with warnings as errors (where the toolchain has them).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; else echo "test.sh: no rustfmt; format not checked" >&2; fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --all-features -q -- -D warnings
else
    echo "test.sh: no clippy; lints not checked" >&2
fi
# The library's documentation builds without a warning, private items included.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items -q
cargo test --workspace "$@"
