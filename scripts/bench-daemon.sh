#!/usr/bin/env bash
# bench-daemon.sh — how long an honest caller waits for the daemon while others try to stall it.
#
#   sudo scripts/bench-daemon.sh [--calls N]      (default 50 calls)
#
# In a lab of its own (scripts/lab.sh, prefix bdmn<pid>): the daemon on A admits nobody and uid 1.
# uid 1 holds 20 idle connections open (they never send a request) and passes a TCP socket whose
# last close blocks (SO_LINGER 1 h, a full send queue to a loopback peer that never reads). Then
# nobody makes N synergy() calls through the C ABI (tests/c/synergy_test.c, `time` mode), one after
# the other, and the script prints the median, 90th percentile and worst answer time, against the
# target of 100 ms (issue #10). Nothing leaves the lab's namespaces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CALLS=50
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) CALLS=${2:?}; shift 2 ;;
        *) echo "usage: scripts/bench-daemon.sh [--calls N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-daemon.sh: needs root (namespaces, the daemon)" >&2; exit 2; }
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_lab_deps
LIB=target/release
WORK=$(mktemp -d /tmp/bench-daemon.XXXXXX)
chmod 755 "$WORK"
release_and_c_program "$WORK"
P=bdmn$$
SOCK=$WORK/d.sock
cleanup() {
    [ -n "${STALL_PID:-}" ] && kill "$STALL_PID" 2>/dev/null || true
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    scripts/lab.sh --prefix "$P" down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
scripts/lab.sh --prefix "$P" up >/dev/null
ip netns exec "$P-A" "$LIB/synergy-craft" daemon --socket "$SOCK" --allow-uid 65534 --allow-uid 1 --user sys \
    --rate 1000 2>"$WORK/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { cat "$WORK/daemon.log" >&2; exit 1; }
mkfifo "$WORK/hold"
ip netns exec "$P-A" env SYNERGY_DAEMON_SOCKET="$SOCK" setpriv --reuid=1 --regid=1 --clear-groups \
    --inh-caps=-all "$WORK/synergy_test" stall "$SOCK" 20 <"$WORK/hold" >"$WORK/stall.out" &
STALL_PID=$!
exec 9>"$WORK/hold"
for _ in $(seq 100); do grep -q stalling "$WORK/stall.out" 2>/dev/null && break; sleep 0.05; done
grep -q stalling "$WORK/stall.out" || { echo "bench-daemon.sh: the staller did not start" >&2; exit 1; }
: >"$WORK/times"
for i in $(seq "$CALLS"); do
    ip netns exec "$P-A" env SYNERGY_DAEMON_SOCKET="$SOCK" setpriv --reuid=nobody --regid=nogroup \
        --clear-groups --inh-caps=-all "$WORK/synergy_test" time udp 2001:db8:1::11 $((20000 + i)) \
        2001:db8:2::5 5555 2 | awk '/answered in/ && /: ok/ {print $3}' >>"$WORK/times"
done
exec 9>&-
OK=$(wc -l <"$WORK/times")
sort -n "$WORK/times" | awk -v calls="$CALLS" -v ok="$OK" '
    { t[NR] = $1 }
    END {
        if (NR == 0) { print "no call was answered"; exit 1 }
        med = t[int((NR + 1) / 2)]; p90 = t[int(NR * 0.9 + 0.999)]; worst = t[NR]
        printf "honest calls answered: %d of %d, with 20 idle connections and a blocking close pending\n", ok, calls
        printf "answer time: median %.2f ms, p90 %.2f ms, worst %.2f ms (target: under 100 ms) %s\n",
            med / 1000, p90 / 1000, worst / 1000, (worst < 100000 && ok == calls) ? "MET" : "MISSED"
    }'
