#!/usr/bin/env bash
# Runs every test of synergy-craft: unit tests, CLI tests, and the lab tests that build network
# namespaces with nftables firewalls (these need root). Installs what the tests need when missing.
# SYNERGY_REQUIRE_LAB=1 (set by .ci/run) turns a lab test that cannot run into a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v ip >/dev/null || missing+=(iproute2)
command -v socat >/dev/null || missing+=(socat)
command -v nc >/dev/null || missing+=(netcat-openbsd)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v setcap >/dev/null || missing+=(libcap2-bin)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "test.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing ${missing[*]}; lab tests will say they cannot run (install as root)" >&2
    fi
fi
if ! python3 -c 'import scapy.all' 2>/dev/null; then
    echo "test.sh: installing scapy (independent packet builder for the byte-compare test)" >&2
    python3 -m pip install -q --root-user-action=ignore scapy >&2 || echo "test.sh: could not install scapy" >&2
fi

bash -n scripts/*.sh
cargo test "$@"
