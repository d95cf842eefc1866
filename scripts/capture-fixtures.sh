#!/usr/bin/env bash
# Captures real replies to probes in the lab, for the reply parser's regression fixtures:
# tests/fixtures/replies/NAME.pcap holds the probe and what came back, as seen on A's link.
# Run as root; it brings up and tears down its own lab (prefix fixt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet
BIN=$PWD/target/debug/synergy-craft
OUT=tests/fixtures/replies
LAB=(scripts/lab.sh --prefix fixt)
mkdir -p "$OUT"
trap '"${LAB[@]}" down >/dev/null 2>&1 || true' EXIT
"${LAB[@]}" --remote-profile reject up >/dev/null
A=$("${LAB[@]}" addr A)
B=$("${LAB[@]}" addr B)
FW=$("${LAB[@]}" addr fwa1)

# capture NAME PROTO DST DPORT HOPLIMIT: one probe and its reply, on A's link.
capture() {
    local name=$1 proto=$2 dst=$3 dport=$4 hl=$5 err
    err=$(mktemp)
    "${LAB[@]}" exec A timeout 5 tcpdump -i to-fwa1 -U -c 2 -w "$OUT/$name.pcap" \
        "ip6 and (host $dst or icmp6) and not (icmp6 and (ip6[40] >= 128))" 2>"$err" &
    local pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$err" && break; sleep 0.05; done
    "${LAB[@]}" exec A "$BIN" probe --proto "$proto" --src "$A" --sport 4444 --dst "$dst" --dport "$dport" \
        --hop-limit "$hl" >/dev/null
    wait "$pid" || true
    rm -f "$err"
    sleep 1.2 # routers rate-limit ICMPv6 errors per destination
    echo "$name: $(tcpdump -r "$OUT/$name.pcap" 2>/dev/null | wc -l) packets"
}

capture tcp-expired tcp "$B" 5555 2
capture udp-expired udp "$B" 5555 2
capture sctp-expired sctp "$B" 5555 2
capture tcp-reset tcp "$B" 5556 4
capture udp-admin-prohibited udp "$B" 5557 4
capture sctp-admin-prohibited sctp "$B" 5558 4
capture udp-port-unreachable udp "$FW" 9 64
capture tcp-reset-closed-port tcp "$FW" 9 64
capture sctp-param-problem sctp "$FW" 9 64
