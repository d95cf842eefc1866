#!/usr/bin/env bash
# The synergy-craft demo: two firewalled hosts in a namespace lab, for tcp, udp and sctp:
# the peer is blocked, A punches, the peer gets through, and a connection is made.
#
#   A (2001:db8:1::11) -- fwa1 -- r1 -- fwb1 -- B (2001:db8:2::5)        strict firewalls
#
# Needs root (namespaces, nftables). Everything runs inside namespaces named demo-*.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root for network namespaces and nftables: sudo scripts/demo.sh" >&2; exit 2; }
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_lab_deps

echo "== building synergy-craft (release)"
cargo build --release --quiet
BIN=$PWD/target/release/synergy-craft
LAB=(scripts/lab.sh --prefix demo)
trap '"${LAB[@]}" down >/dev/null 2>&1 || true' EXIT
"${LAB[@]}" up
A=$("${LAB[@]}" addr A)
B=$("${LAB[@]}" addr B)
HOPS=2 # A -> fwa1 (1) -> r1 (2): crosses A's firewall, expires at the first router

# Whether B's packet B:dport -> A:sport shows up on A's link.
peer_packet() {
    local proto=$1 sport=$2 dport=$3 out pid
    out=$(mktemp)
    "${LAB[@]}" exec A timeout 3 tcpdump -i any -n -c 1 -U "ip6 src $B and src port $dport and dst port $sport" >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$out" && break; sleep 0.05; done
    "${LAB[@]}" exec B "$BIN" probe --proto "$proto" --src "$B" --sport "$dport" --dst "$A" --dport "$sport" --hop-limit 64 >/dev/null
    wait "$pid" || true
    if grep -q "1 packet captured" "$out"; then echo "reaches A"; else echo "dropped"; fi
    rm -f "$out"
}

declare -A ROW
port=4440
for proto in tcp udp sctp; do
    port=$((port + 1))
    sport=$port
    dport=$((port + 1111))
    echo
    echo "== $proto: peer B:$dport -> A:$sport"
    before_drops=$("${LAB[@]}" counters fwa1 | awk '$1 == "outside_drops" {print $2}')
    before=$(peer_packet "$proto" "$sport" "$dport")
    after_drops=$("${LAB[@]}" counters fwa1 | awk '$1 == "outside_drops" {print $2}')
    echo "   before the punch: B's first packet $before (fwa1 outside drops $before_drops -> $after_drops)"
    echo "   punch from A:"
    "${LAB[@]}" exec A "$BIN" probe --proto "$proto" --src "$A" --sport "$sport" --dst "$B" --dport "$dport" --hop-limit $HOPS | sed 's/^/     /'
    sleep 0.2
    state=$("${LAB[@]}" state fwa1 "$proto" "$sport" "$dport")
    echo "   fwa1 conntrack entry: $state; fwb1 entry: $("${LAB[@]}" state fwb1 "$proto" "$sport" "$dport") (the probe expired before it)"
    after=$(peer_packet "$proto" "$sport" "$dport")
    echo "   after the punch: B's first packet $after"
    case $proto in
        tcp | udp)
            # A connection: synergy-craft listen on A lets only B:dport in; B is unmodified socat.
            sport=$((sport + 100)); dport=$((dport + 100))
            got_a=$(mktemp)
            (echo "pong from A"; sleep 2) | "${LAB[@]}" exec A timeout 10 "$BIN" listen "$proto" "$A" "$sport" "$B" "$dport" $HOPS \
                --timeout 8 >"$got_a" 2>/dev/null &
            sleep 0.5
            if [ "$proto" = tcp ]; then
                peer="TCP6:[$A]:$sport,bind=[$B]:$dport"
            else
                peer="UDP6:[$A]:$sport,bind=[$B]:$dport"
            fi
            got_b=$(mktemp)
            (echo "ping from B"; sleep 2) | "${LAB[@]}" exec B timeout 5 socat -T 2 - "$peer" >"$got_b" 2>/dev/null &
            sleep 1
            st=$("${LAB[@]}" conntrack fwa1 | grep -E "sport=$sport dport=$dport .*\[ASSURED\]" >/dev/null && echo "[ASSURED] " || true)
            st+=$("${LAB[@]}" state fwa1 "$proto" "$sport" "$dport")
            wait
            conn="listen on A got '$(cat "$got_a")', socat on B got '$(cat "$got_b")'; fwa1 during it: $st"
            rm -f "$got_a" "$got_b"
            echo "   connection: $conn"
            ;;
        sctp) conn="B's INIT reaches A (no SCTP sockets here: tests/lab_sctp.rs runs a whole usrsctp association)" ;;
    esac
    ROW[$proto]="$before|$state|$after|$conn"
done

echo
echo "== summary"
printf '%-5s %-16s %-14s %-15s %s\n' PROTO "BEFORE PUNCH" "fwa1 ENTRY" "AFTER PUNCH" CONNECTION
for proto in tcp udp sctp; do
    IFS='|' read -r before state after conn <<<"${ROW[$proto]}"
    printf '%-5s %-16s %-14s %-15s %s\n' "$proto" "$before" "$state" "$after" "$conn"
done
