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
# The library builds without the command line (feature `cli`), and then without clap.
cargo build --lib --no-default-features -q
if cargo tree -p synergy-craft --no-default-features -e normal --prefix none | grep -q '^clap '; then
    echo "test.sh: the library without feature cli still depends on clap" >&2
    exit 1
fi
# The library's documentation builds without a warning, private items included.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items -q
if [ $# -gt 0 ]; then
    # Arguments (a test name, --test lab_hops, ...) go to cargo test as they are.
    exec cargo test --workspace "$@"
fi

# Unit, CLI, fixture and doc tests.
cargo test --workspace --lib --bins --test cli --test replies
cargo test --workspace --doc
# The lab test binaries, three at a time (each runs its tests two at a time): they mostly wait on
# the network, every test builds its own namespaces under its own prefix, and one of them idles
# 90 s by design. Each binary's output is printed whole when it ends; any failure fails the run.
cargo build --workspace --lib --examples -q
mapfile -t labs < <(cargo test --workspace --no-run --message-format=json -q 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"] \
            and t.get("name", "").startswith("lab_"):
        print(t["name"] + " " + m["executable"])
' | sort)
[ ${#labs[@]} -gt 0 ] || { echo "test.sh: no lab test binaries found" >&2; exit 1; }
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# Longest first, so that the three lanes end together.
order=(lab_session lab_keep lab_hops lab_matrix lab_tcp_api lab_sweep lab_api lab_firewall lab_sctp lab_daemon lab_json lab_privilege)
for name in "${order[@]}"; do
    for entry in "${labs[@]}"; do [ "${entry%% *}" = "$name" ] && echo "$entry"; done
done >"$logs/queue"
for entry in "${labs[@]}"; do
    grep -qxF "$entry" "$logs/queue" || echo "$entry" >>"$logs/queue"
done
start=$SECONDS
xargs -P 3 -L 1 sh -c 'cd "$0" && "$2" >"$3/$1.log" 2>&1; echo $? >"$3/$1.rc"' "$PWD" <<<"$(sed "s|\$| $logs|" "$logs/queue")"
failed=0
while read -r name _; do
    cat "$logs/$name.log"
    if [ "$(cat "$logs/$name.rc" 2>/dev/null || echo 1)" != 0 ]; then
        echo "test.sh: $name FAILED" >&2
        failed=1
    fi
done <"$logs/queue"
echo "test.sh: lab tests took $((SECONDS - start)) s" >&2
exit $failed
