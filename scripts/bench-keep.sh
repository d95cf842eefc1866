#!/usr/bin/env bash
# bench-keep.sh — what keeping thousands of holes open costs the daemon (issue #15).
#
#   scripts/bench-keep.sh [--flows N] [--seconds S]      (as root; defaults 10,000 flows, 60 s)
#
# In a lab of its own (scripts/lab.sh, prefix bkeep<pid>, the firewalls' Linux default conntrack
# timeouts, read from fwa1 and given to the daemon as they are): the daemon on A (release build)
# is measured idle for S seconds, then nobody keeps N UDP holes through it (tests/c/synergy_test.c,
# `keep` mode: N sockets, synergy_keep() each, from A:20000+i to B:30000+i, hop limit 2), and once
# the first round of repunches is under way the daemon is measured again for S seconds: CPU time
# (the sum of its threads' schedstat run time) as a share of one core, resident memory (VmRSS), repunches
# per second (the daemon's own counters, `status --json`), and fwa1's conntrack entries for the
# flows (all N must be there). Targets: under 1 % of one core and under 20 MiB resident. The idle
# figures are the same daemon in the same run. On one host, a packet sent into a veth is received
# by the peer namespace in the sender's own context (softirq on the sending thread), so the
# daemon's time would include fwa1's forwarding and r1's ICMPv6 errors for every punch. So fwa1's
# side of A's link gets GRO and threaded NAPI (ethtool -K to-A gro on rx-udp-gro-forwarding on;
# /sys/class/net/to-A/threaded; A's side without TSO, which veth needs to hand a raw socket's
# packet to NAPI), and fwa1 receives in a kernel thread of its own, as a separate box would. Nothing leaves the
# lab's namespaces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FLOWS=10000
SECONDS_MEASURED=60
while [ $# -gt 0 ]; do
    case "$1" in
        --flows) FLOWS=${2:?}; shift 2 ;;
        --seconds) SECONDS_MEASURED=${2:?}; shift 2 ;;
        *) echo "usage: scripts/bench-keep.sh [--flows N] [--seconds S]" >&2; exit 2 ;;
    esac
done
[[ $FLOWS =~ ^[0-9]+$ ]] && [ "$FLOWS" -ge 1 ] && [ "$FLOWS" -le 20000 ] ||
    { echo "bench-keep.sh: --flows must be a whole number from 1 to 20000" >&2; exit 2; }
[[ $SECONDS_MEASURED =~ ^[0-9]+$ ]] && [ "$SECONDS_MEASURED" -ge 5 ] && [ "$SECONDS_MEASURED" -le 3600 ] ||
    { echo "bench-keep.sh: --seconds must be a whole number from 5 to 3600" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-keep.sh: needs root (namespaces, the daemon)" >&2; exit 2; }
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_lab_deps
command -v ethtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ethtool >/dev/null; }
echo "== building (release)"
BIN=$PWD/target/release/synergy-craft
WORK=$(mktemp -d /tmp/bench-keep.XXXXXX)
chmod 755 "$WORK"
release_and_c_program "$WORK"
P=bkeep$$
SOCK=$WORK/d.sock
cleanup() {
    [ -n "${KEEP_PID:-}" ] && kill "$KEEP_PID" 2>/dev/null || true
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    scripts/lab.sh --prefix "$P" down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
scripts/lab.sh --prefix "$P" up >/dev/null
ip netns exec "$P-fwa1" ethtool -K to-A gro on rx-udp-gro-forwarding on >/dev/null
ip netns exec "$P-A" ethtool -K to-fwa1 tso off >/dev/null
ip netns exec "$P-fwa1" sh -c 'echo 1 >/sys/class/net/to-A/threaded'
UDP_TIMEOUT=$(ip netns exec "$P-fwa1" sysctl -n net.netfilter.nf_conntrack_udp_timeout)
ip netns exec "$P-A" env STATE_DIRECTORY="$WORK/state" "$BIN" daemon --socket "$SOCK" --allow-uid 65534 \
    --user sys --rate 100000 --conntrack-timeout "udp=${UDP_TIMEOUT}s" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { cat "$WORK/daemon.log" >&2; exit 1; }
# `ip netns exec` and `env` exec the daemon: the background job is the daemon itself.
DPID=$DAEMON_PID
[ "$(readlink "/proc/$DPID/exe")" = "$BIN" ] || { echo "bench-keep.sh: pid $DPID is not the daemon" >&2; exit 1; }

# The daemon's time on a CPU, in ns, summed over its threads (schedstat: exact, where the tick-based
# utime/stime of /proc/PID/stat are sampled).
cpu_ns() { cat /proc/"$DPID"/task/*/schedstat | awk '{s += $1} END {printf "%d\n", s}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status"; }
repunches() {
    ip netns exec "$P-A" env SYNERGY_DAEMON_SOCKET="$SOCK" "$BIN" status --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["repunches"])'
}
# measure SECONDS: prints "cpu_percent rss_kib repunches_per_second"
measure() {
    local t0 c0 r0 t1 c1 r1
    r0=$(repunches); t0=$(date +%s.%N); c0=$(cpu_ns)
    sleep "$1"
    c1=$(cpu_ns); t1=$(date +%s.%N); r1=$(repunches)
    awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v r0="$r0" -v r1="$r1" -v rss="$(rss_kib)" \
        'BEGIN { dt = t1 - t0; printf "%.3f %d %.1f\n", 100 * (c1 - c0) / 1e9 / dt, rss, (r1 - r0) / dt }'
}

echo "== idle daemon, $SECONDS_MEASURED s (fwa1's nf_conntrack_udp_timeout: $UDP_TIMEOUT s)"
read -r IDLE_CPU IDLE_RSS _ < <(measure "$SECONDS_MEASURED")

echo "== keeping $FLOWS holes as nobody"
mkfifo "$WORK/hold"
ip netns exec "$P-A" env SYNERGY_DAEMON_SOCKET="$SOCK" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    --inh-caps=-all "$WORK/synergy_test" keep "$FLOWS" 2001:db8:1::11 20000 2001:db8:2::5 30000 2 \
    <"$WORK/hold" >"$WORK/keep.out" 2>&1 &
KEEP_PID=$!
exec 9>"$WORK/hold"
KEPT_AT=
for _ in $(seq 1200); do
    if grep -q "^kept $FLOWS" "$WORK/keep.out"; then KEPT_AT=$(date +%s); break; fi
    kill -0 "$KEEP_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$KEPT_AT" ] || { echo "bench-keep.sh: keeping failed: $(cat "$WORK/keep.out")" >&2; exit 1; }
# The first repunches come half a timeout after each keep: measure from then on.
sleep "$((UDP_TIMEOUT / 2 + 1))"
read -r KEEP_CPU KEEP_RSS RATE < <(measure "$SECONDS_MEASURED")
ENTRIES=$(scripts/lab.sh --prefix "$P" conntrack fwa1 | awk '$3 == "udp"' |
    grep -c -E "dport=(2[0-9]{4}|3[0-9]{4}) " || true)
exec 9>&-

echo
printf 'flows kept: %d; fwa1 holds %d conntrack entries for them after %d s\n' "$FLOWS" "$ENTRIES" "$(($(date +%s) - KEPT_AT))"
awk -v f="$FLOWS" -v t="$UDP_TIMEOUT" -v r="$RATE" \
    'BEGIN { printf "repunches: %.1f/s (expected about %.1f/s: %d flows every 1/2-3/4 of %d s)\n", r, f / (0.625 * t), f, t }'
awk -v ic="$IDLE_CPU" -v kc="$KEEP_CPU" -v ir="$IDLE_RSS" -v kr="$KEEP_RSS" -v f="$FLOWS" 'BEGIN {
    printf "daemon CPU:      idle %.3f %% of one core, keeping %d: %.3f %% (target: under 1 %%) %s\n", ic, f, kc, (kc < 1 ? "MET" : "MISSED")
    printf "daemon resident: idle %.1f MiB, keeping %d: %.1f MiB (target: under 20 MiB) %s\n", ir / 1024, f, kr / 1024, (kr < 20480 ? "MET" : "MISSED")
}'
