#!/usr/bin/env bash
# lab.sh — a lab of network namespaces with real nftables/conntrack firewalls for synergy-craft.
#
#   host A -- [local firewalls fwa1..fwaN] -- [transit routers r1..rK] -- [remote firewalls fwb1..fwbM] -- host B
#                                                  |
#                                               host C (a stranger, on r1)
#
# Every namespace is named PREFIX-NODE, every address is in 2001:db8::/32, and nothing is ever
# sent outside the namespaces the lab made: the veth pairs are created inside them.
set -euo pipefail

PREFIX=${SYNERGY_LAB_PREFIX:-sclab}
NLOCAL=1
NROUTERS=1
NREMOTE=1
LOCAL_PROFILE=strict
REMOTE_PROFILE=strict
FW_PROFILES=()
TIMEOUTS=()
LOSSES=()
SILENT=()
SAME48=0
ICMP_RATELIMIT=0
STATE_DIR=/run/synergy-lab
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

usage() {
    cat <<'EOF'
usage: scripts/lab.sh [OPTIONS] COMMAND [ARGS...]

Commands:
  up                       build the lab (tears down a lab of the same prefix first)
  down                     tear the lab down (idempotent)
  info                     nodes, namespaces, addresses and firewall profiles
  addr NODE                the node's main IPv6 address (A, B, C, fwa1, r1, ...)
  exec NODE CMD...         run a command on a node
  conntrack NODE           the node's conntrack table (/proc/net/nf_conntrack)
  counters NODE            the firewall's counters: NAME PACKETS BYTES
  state NODE PROTO SPORT DPORT
                           state of the entry whose original direction is SPORT -> DPORT:
                           SYN_SENT, ESTABLISHED, CLOSED, ..., UNREPLIED/REPLIED (udp) or none
  capture NODE [IFACE] [TCPDUMP ARGS...]
                           tcpdump on a node's link (default: every interface)
  profile NODE PROFILE     load another firewall profile on a firewall
  timeout NODE KEY=SECONDS set a conntrack timeout on a firewall (see --timeout)
  loss NODE PERCENT        drop PERCENT of what a router or firewall forwards (0 removes it)
  matrix                   build a lab per profile and print whether the peer gets through
                           after a probe with the right, a too-low and a too-high hop limit

Options (before the command):
  --prefix P               namespace prefix [env SYNERGY_LAB_PREFIX, default sclab]
  --local N                local firewalls between A and the routers [1]
  --routers K              transit routers [1]
  --remote M               remote firewalls between the routers and B [1]
  --profile P              profile of every firewall: strict, liberal or reject
  --local-profile P        profile of A's firewalls [strict]
  --remote-profile P       profile of B's firewalls [strict]
  --fw NODE=P              profile of one firewall, e.g. --fw fwb1=reject (repeatable)
  --loss NODE=PERCENT      random loss on a forwarding node (repeatable); see `loss`
  --timeout [NODE:]KEY=S   conntrack timeout on every firewall or on one, e.g. udp=3,
                           fwa1:tcp_syn_sent=5, sctp_closed=2 (net.netfilter.nf_conntrack_*)
  --silent NODE            NODE (a firewall or router, or `all` of them) drops the ICMPv6 time
                           exceeded it would send itself, counted as `silenced` (repeatable)
  --icmp-ratelimit MS      every node sends at most one ICMPv6 error per MS milliseconds to a
                           destination (net.ipv6.icmp.ratelimit) [0: every error, so that
                           back-to-back experiments see every expiry; Linux's default is 1000]
  --same-48                both sites are /56s of one ISP /48, as two customers of one ISP:
                           A's links in 2001:db8:1::/56, the routers' in 2001:db8:1:ff00::/56,
                           B's in 2001:db8:1:200::/56 (B is 2001:db8:1:200::5)

Profiles:
  strict   forward policy drop; established,related accepted; invalid counted and dropped;
           new from the inside accepted; RFC 4890 ICMPv6 accepted; the rest counted and dropped;
           nf_conntrack_tcp_be_liberal=0
  liberal  strict with nf_conntrack_tcp_be_liberal=1
  reject   strict, but unsolicited inbound TCP gets a RST and the rest ICMPv6 admin-prohibited

Addresses: A 2001:db8:1::11, B 2001:db8:2::5 (--same-48: 2001:db8:1:200::5), C 2001:db8:3::7;
see `info` for the rest. B counts what arrives on its link from A's address (`counters B`:
from_a), before any rule of its own.
EOF
}

die() { echo "lab.sh: $*" >&2; exit 2; }

# ---- topology -------------------------------------------------------------------------------

state_file() { echo "$STATE_DIR/$PREFIX.state"; }

load_state() {
    local f
    f=$(state_file)
    [ -f "$f" ] || die "no lab with prefix '$PREFIX' is up (run: scripts/lab.sh --prefix $PREFIX up)"
    # shellcheck disable=SC1090
    . "$f"
}

# NODES: A fwa1..fwaN r1..rK fwb1..fwbM B, in path order; link j joins NODES[j] and NODES[j+1].
build_nodes() {
    NODES=(A)
    local i
    for ((i = 1; i <= NLOCAL; i++)); do NODES+=("fwa$i"); done
    for ((i = 1; i <= NROUTERS; i++)); do NODES+=("r$i"); done
    for ((i = 1; i <= NREMOTE; i++)); do NODES+=("fwb$i"); done
    NODES+=(B)
    NLINKS=$((${#NODES[@]} - 1))
    R1POS=$((NLOCAL + 1))
}

ns() { echo "$PREFIX-$1"; }

# The /64 of link j, without the trailing "::".
link_prefix() {
    local j=$1
    if ((j < NLOCAL)); then
        printf '2001:db8:1:%x' "$j"
    elif ((j <= NLOCAL + NROUTERS)); then
        if ((SAME48)); then printf '2001:db8:1:ff%02x' $((j - NLOCAL)); else printf '2001:db8:100:%x' $((j - NLOCAL)); fi
    else
        if ((SAME48)); then printf '2001:db8:1:2%02x' $((NLINKS - 1 - j)); else printf '2001:db8:2:%x' $((NLINKS - 1 - j)); fi
    fi
}

b_addr() { if ((SAME48)); then echo "2001:db8:1:200::5"; else echo "2001:db8:2::5"; fi; }

# Address of the node on link j: side 0 = left end, 1 = right end.
link_addr() {
    local j=$1 side=$2 p
    p=$(link_prefix "$j")
    if ((j == 0 && side == 0)); then echo "2001:db8:1::11"
    elif ((j == NLINKS - 1 && side == 1)); then b_addr
    elif ((side == 0)); then echo "$p::1"
    else echo "$p::2"
    fi
}

pos_of() {
    local i
    for i in "${!NODES[@]}"; do
        [ "${NODES[$i]}" = "$1" ] && { echo "$i"; return; }
    done
    [ "$1" = C ] && { echo C; return; }
    die "no node '$1' in this lab (nodes: ${NODES[*]} C)"
}

# Main address of a node: hosts by their fixed address, others by the left link's (or A-side) one.
node_addr() {
    local p
    p=$(pos_of "$1")
    case "$1" in
        C) echo "2001:db8:3::7" ;;
        A) echo "2001:db8:1::11" ;;
        *) link_addr $((p - 1)) 1 ;;
    esac
}

is_fw() { [[ $1 == fwa* || $1 == fwb* ]]; }

# The interface of a firewall that faces its own site.
inside_if() {
    local p
    p=$(pos_of "$1")
    if [[ $1 == fwa* ]]; then echo "to-${NODES[$((p - 1))]}"; else echo "to-${NODES[$((p + 1))]}"; fi
}

profile_of() {
    local node=$1 kv
    for kv in "${FW_PROFILES[@]}"; do
        [ "${kv%%=*}" = "$node" ] && { echo "${kv#*=}"; return; }
    done
    if [[ $node == fwa* ]]; then echo "$LOCAL_PROFILE"; else echo "$REMOTE_PROFILE"; fi
}

# ---- firewalls ------------------------------------------------------------------------------

fw_ruleset() {
    local profile=$1 inside=$2 tail
    case "$profile" in
        strict | liberal) tail="counter name outside_drops drop" ;;
        reject) tail="meta l4proto tcp counter name outside_rejects reject with tcp reset
    counter name outside_rejects reject with icmpv6 type admin-prohibited" ;;
        *) die "unknown profile '$profile' (strict, liberal, reject)" ;;
    esac
    cat <<EOF
table inet synergy_lab
delete table inet synergy_lab
table inet synergy_lab {
  counter invalid_drops { }
  counter outside_drops { }
  counter outside_rejects { }
  counter icmp_accepts { }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid counter name invalid_drops drop
    iifname "$inside" ct state new accept
    # RFC 4890 section 4.3.1: error messages and echo must not be dropped in transit.
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply } counter name icmp_accepts accept
    $tail
  }
}
EOF
}

apply_profile() {
    local node=$1 profile=$2 liberal=0
    [ "$profile" = liberal ] && liberal=1
    fw_ruleset "$profile" "$(inside_if "$node")" | ip netns exec "$(ns "$node")" nft -f -
    ip netns exec "$(ns "$node")" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=$liberal
    ip netns exec "$(ns "$node")" sysctl -qw net.netfilter.nf_conntrack_checksum=1
}

# Random loss on a forwarding node (there is no netem here): an nftables table of its own whose
# forward chain runs before the firewall's and drops PERCENT of all forwarded packets, counted.
apply_loss() {
    local node=$1 pct=$2
    [[ $pct =~ ^[0-9]+$ ]] && ((pct <= 100)) || die "loss '$pct': a whole percentage 0-100"
    [[ $node == A || $node == B || $node == C ]] && die "loss applies to forwarding nodes, not host $node"
    {
        echo "table inet synergy_loss"
        echo "delete table inet synergy_loss"
        if ((pct > 0)); then
            echo "table inet synergy_loss {"
            echo "  counter loss_drops { }"
            echo "  chain forward {"
            echo "    type filter hook forward priority filter - 10; policy accept;"
            if ((pct == 100)); then
                echo "    counter name loss_drops drop"
            else
                echo "    numgen random mod 100 < $pct counter name loss_drops drop"
            fi
            echo "  }"
            echo "}"
        fi
    } | ip netns exec "$(ns "$node")" nft -f -
}

# KEY -> sysctl name: udp -> nf_conntrack_udp_timeout, tcp_syn_sent -> nf_conntrack_tcp_timeout_syn_sent.
timeout_sysctl() {
    local key=$1 proto rest
    proto=${key%%_*}
    rest=${key#"$proto"}
    echo "net.netfilter.nf_conntrack_${proto}_timeout${rest}"
}

apply_timeout() {
    local node=$1 kv=$2 key secs
    key=${kv%%=*}
    secs=${kv#*=}
    [[ $secs =~ ^[0-9]+$ ]] || die "timeout '$kv': seconds must be a whole number"
    ip netns exec "$(ns "$node")" sysctl -qw "$(timeout_sysctl "$key")=$secs" ||
        die "timeout '$kv': no sysctl $(timeout_sysctl "$key")"
}

# NODE drops the ICMPv6 time exceeded it sends itself (a border that does not answer a trace).
apply_silent() {
    local node=$1
    ip netns exec "$(ns "$node")" nft -f - <<EOF
table inet synergy_silent
delete table inet synergy_silent
table inet synergy_silent {
  counter silenced { }
  chain output {
    type filter hook output priority filter; policy accept;
    icmpv6 type time-exceeded counter name silenced drop
  }
}
EOF
}

# B counts every packet from A's address that arrives on its link, before any rule of its own.
apply_b_watch() {
    ip netns exec "$(ns B)" nft -f - <<EOF
table inet synergy_watch
delete table inet synergy_watch
table inet synergy_watch {
  counter from_a { }
  chain prerouting {
    type filter hook prerouting priority raw - 10; policy accept;
    ip6 saddr 2001:db8:1::11 counter name from_a
  }
}
EOF
}

# ---- up / down ------------------------------------------------------------------------------

need_root() {
    [ "$(id -u)" = 0 ] || die "the lab needs root (network namespaces, nftables): run it with sudo"
    command -v nft >/dev/null || die "nft not found: apt-get install -y nftables"
    command -v ip >/dev/null || die "ip not found: apt-get install -y iproute2"
}

lab_down() {
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-(A|B|C|fw[ab][0-9]+|r[0-9]+)\$" || true); do
        ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
    rm -f "$(state_file)"
    rm -rf "$STATE_DIR/$PREFIX.routes"
}

add_link() {
    local l=$1 r=$2
    ip -n "$(ns "$l")" link add "to-$r" type veth peer name "to-$l" netns "$(ns "$r")"
}

lab_up() {
    need_root
    [[ $PREFIX =~ ^[A-Za-z0-9_]{1,16}$ ]] || die "prefix '$PREFIX': 1-16 letters, digits or _"
    for v in NLOCAL NROUTERS NREMOTE; do
        [[ ${!v} =~ ^[1-9]$ ]] || die "--local, --routers and --remote take 1 to 9"
    done
    lab_down
    build_nodes
    local node p j
    for node in "${NODES[@]}" C; do
        ip netns add "$(ns "$node")"
        ip -n "$(ns "$node")" link set lo up
        ip netns exec "$(ns "$node")" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.icmp.ratelimit="$ICMP_RATELIMIT"
    done
    for ((j = 0; j < NLINKS; j++)); do
        add_link "${NODES[$j]}" "${NODES[$((j + 1))]}"
        ip -n "$(ns "${NODES[$j]}")" addr add "$(link_addr "$j" 0)/64" dev "to-${NODES[$((j + 1))]}" nodad
        ip -n "$(ns "${NODES[$((j + 1))]}")" addr add "$(link_addr "$j" 1)/64" dev "to-${NODES[$j]}" nodad
    done
    add_link r1 C
    ip -n "$(ns r1)" addr add 2001:db8:3::1/64 dev to-C nodad
    ip -n "$(ns C)" addr add 2001:db8:3::7/64 dev to-r1 nodad
    for node in "${NODES[@]}" C; do
        for ifc in $(ip -n "$(ns "$node")" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
            ip -n "$(ns "$node")" link set "$ifc" up
        done
    done
    # Routes: every link that is not attached goes via the neighbour on its side of the path.
    for ((p = 0; p <= NLINKS; p++)); do
        node=${NODES[$p]}
        local left_gw="" right_gw=""
        ((p > 0)) && left_gw=$(link_addr $((p - 1)) 0)
        ((p < NLINKS)) && right_gw=$(link_addr "$p" 1)
        for ((j = 0; j < NLINKS; j++)); do
            ((j == p - 1 || j == p)) && continue
            if ((j < p)); then
                ip -n "$(ns "$node")" -6 route add "$(link_prefix "$j")::/64" via "$left_gw"
            else
                ip -n "$(ns "$node")" -6 route add "$(link_prefix "$j")::/64" via "$right_gw"
            fi
        done
        if ((p < R1POS)); then
            ip -n "$(ns "$node")" -6 route add 2001:db8:3::/64 via "$right_gw"
        elif ((p > R1POS)); then
            ip -n "$(ns "$node")" -6 route add 2001:db8:3::/64 via "$left_gw"
        fi
        if ((p > 0 && p < NLINKS)); then
            ip netns exec "$(ns "$node")" sysctl -qw net.ipv6.conf.all.forwarding=1
        fi
    done
    ip -n "$(ns A)" -6 route add default via "$(link_addr 0 1)"
    ip -n "$(ns B)" -6 route add default via "$(link_addr $((NLINKS - 1)) 0)"
    ip -n "$(ns C)" -6 route add default via 2001:db8:3::1
    for node in "${NODES[@]}"; do
        is_fw "$node" && apply_profile "$node" "$(profile_of "$node")"
    done
    apply_b_watch
    local s
    for s in "${SILENT[@]}"; do
        if [ "$s" = all ]; then
            for node in "${NODES[@]}"; do [[ $node == A || $node == B ]] || apply_silent "$node"; done
        else
            [[ $(pos_of "$s") =~ ^[0-9]+$ && $s != A && $s != B ]] || die "--silent $s: not a firewall or router of this lab"
            apply_silent "$s"
        fi
    done
    wait_links_up
    mkdir -p "$STATE_DIR"
    {
        echo "NLOCAL=$NLOCAL NROUTERS=$NROUTERS NREMOTE=$NREMOTE SAME48=$SAME48"
        echo "LOCAL_PROFILE=$LOCAL_PROFILE REMOTE_PROFILE=$REMOTE_PROFILE"
        printf 'FW_PROFILES=(%s)\n' "${FW_PROFILES[*]:-}"
    } >"$(state_file)"
    local kv
    for kv in "${TIMEOUTS[@]}"; do
        if [[ $kv == *:* ]]; then
            apply_timeout "${kv%%:*}" "${kv#*:}"
        else
            for node in "${NODES[@]}"; do is_fw "$node" && apply_timeout "$node" "$kv"; done
        fi
    done
    for kv in "${LOSSES[@]}"; do
        pos_of "${kv%%=*}" >/dev/null
        apply_loss "${kv%%=*}" "${kv#*=}"
    done
    echo "lab '$PREFIX' up: ${NODES[*]} + C"
}

# A fresh veth drops what is sent on it (qdisc noop) until the kernel's link watcher activates it,
# up to a second after `link set up`: wait until every link is UP with a real qdisc.
wait_links_up() {
    local node i pending links
    for ((i = 0; i < 100; i++)); do
        pending=0
        for node in "${NODES[@]}" C; do
            links=$(ip -n "$(ns "$node")" -o link show type veth)
            if grep -qv 'state UP' <<<"$links" || grep -q 'qdisc noop' <<<"$links"; then
                pending=1
                break
            fi
        done
        ((pending == 0)) && return 0
        sleep 0.05
    done
    die "links did not come up within 5 s"
}

lab_info() {
    load_state
    build_nodes
    local node
    printf '%-6s %-16s %-22s %s\n' NODE NAMESPACE ADDRESS ROLE
    for node in "${NODES[@]}" C; do
        local role=host
        is_fw "$node" && role="firewall ($(profile_of "$node"), inside $(inside_if "$node"))"
        [[ $node == r* ]] && role=router
        [ "$node" = C ] && role="stranger (on r1)"
        printf '%-6s %-16s %-22s %s\n' "$node" "$(ns "$node")" "$(node_addr "$node")" "$role"
    done
}

# ---- matrix ---------------------------------------------------------------------------------

find_bin() {
    if [ -n "${SYNERGY_CRAFT:-}" ]; then echo "$SYNERGY_CRAFT"; return; fi
    if [ ! -x "$ROOT/target/release/synergy-craft" ]; then
        (cd "$ROOT" && cargo build --release --quiet) >&2
    fi
    echo "$ROOT/target/release/synergy-craft"
}

# What firewall FW has turned away from outside so far: the packets of no known flow its drop
# and reject rules counted. (INVALID drops are left out: the host's RST to a peer's SYN may be one,
# while the SYN itself went through.)
refused() {
    ip netns exec "$(ns "$1")" nft list counters table inet synergy_lab 2>/dev/null |
        awk '$1 == "counter" {name = $2} $1 == "packets" && name ~ /^outside_(drops|rejects)$/ {s += $2} END {print s + 0}'
}

# Whether a packet matching FILTER shows up on NODE's links after running CMD, or firewall FW
# turns it away first: prints "through" or "blocked" as soon as one of them shows (nothing within
# 3 s also prints "blocked").
arrives() {
    local node=$1 fw=$2 filter=$3 out before pid i
    shift 3
    out=$(mktemp)
    before=$(refused "$fw")
    ip netns exec "$(ns "$node")" timeout 3 tcpdump -i any -n -c 1 -U "$filter" >"$out" 2>&1 &
    pid=$!
    for ((i = 0; i < 50; i++)); do
        grep -q "listening on" "$out" && break
        sleep 0.05
    done
    "$@" >/dev/null
    local result=blocked
    for ((i = 0; i < 60; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        if [ "$(refused "$fw")" -gt "$before" ]; then
            kill "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || true
    if grep -q "1 packet captured" "$out"; then result=through; fi
    echo "$result"
    rm -f "$out"
}

# State of the conntrack entry whose ORIGINAL tuple is PROTO SPORT -> DPORT on a node: the TCP/SCTP
# state word, UNREPLIED or REPLIED for udp, or "none". (The reply tuple of the reverse flow has the
# same "sport=X dport=Y" text, so only the first tuple of each line is looked at.)
ct_state() {
    local node=$1 proto=$2 sport=$3 dport=$4 line
    line=$(ip netns exec "$(ns "$node")" cat /proc/net/nf_conntrack | awk -v p="$proto" -v s="sport=$sport" -v d="dport=$dport" '
        $3 == p { for (i = 1; i <= NF; i++) if ($i ~ /^sport=/) { if ($i == s && $(i + 1) == d) print; break } }' | head -n 1)
    if [ -z "$line" ]; then echo none; return; fi
    case "$proto" in
        udp) if [[ $line == *UNREPLIED* ]]; then echo UNREPLIED; else echo REPLIED; fi ;;
        *) awk '{print $6}' <<<"$line" ;;
    esac
}

lab_matrix() {
    need_root
    local bin profile proto label hl cell=0 sport dport a b result st
    bin=$(find_bin)
    # right: expires at r1; low: expires at the last local firewall, which then holds no entry;
    # high: arrives at the first remote firewall with hop limit 2, so its forward rules see it.
    local right=$((NLOCAL + 1)) low=$NLOCAL high=$((NLOCAL + NROUTERS + 2))
    printf '%-8s %-5s %-22s %-8s %s\n' PROFILE PROTO "PROBE HOP LIMIT" PEER "fwa$NLOCAL ENTRY AFTER PROBE"
    for profile in strict liberal reject; do
        LOCAL_PROFILE=$profile REMOTE_PROFILE=$profile lab_up >/dev/null
        a=$(node_addr A)
        b=$(node_addr B)
        for proto in tcp udp sctp; do
            for label in right low high; do
                case $label in right) hl=$right ;; low) hl=$low ;; high) hl=$high ;; esac
                cell=$((cell + 1))
                sport=$((20000 + cell))
                dport=$((30000 + cell))
                ip netns exec "$(ns A)" "$bin" probe --proto "$proto" --src "$a" --sport $sport \
                    --dst "$b" --dport $dport --hop-limit "$hl" >/dev/null
                sleep 0.3
                st=$(ct_state "fwa$NLOCAL" "$proto" $sport $dport)
                result=$(arrives A "fwa$NLOCAL" "ip6 src $b and src port $dport and dst port $sport" \
                    ip netns exec "$(ns B)" "$bin" probe --proto "$proto" --src "$b" --sport $dport \
                    --dst "$a" --dport $sport --hop-limit 64)
                printf '%-8s %-5s %-22s %-8s %s\n' "$profile" "$proto" "$label ($hl)" "$result" "$st"
            done
        done
    done
    lab_down
}

# ---- command line ---------------------------------------------------------------------------

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --local) NLOCAL=${2:?}; shift 2 ;;
        --routers) NROUTERS=${2:?}; shift 2 ;;
        --remote) NREMOTE=${2:?}; shift 2 ;;
        --profile) LOCAL_PROFILE=${2:?}; REMOTE_PROFILE=$2; shift 2 ;;
        --local-profile) LOCAL_PROFILE=${2:?}; shift 2 ;;
        --remote-profile) REMOTE_PROFILE=${2:?}; shift 2 ;;
        --fw) FW_PROFILES+=("${2:?}"); shift 2 ;;
        --timeout) TIMEOUTS+=("${2:?}"); shift 2 ;;
        --loss) LOSSES+=("${2:?}"); shift 2 ;;
        --silent) SILENT+=("${2:?}"); shift 2 ;;
        --same-48) SAME48=1; shift ;;
        --icmp-ratelimit) ICMP_RATELIMIT=${2:?}; [[ $ICMP_RATELIMIT =~ ^[0-9]+$ ]] || die "--icmp-ratelimit: milliseconds, a whole number"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --*) die "unknown option '$1' (see --help)" ;;
        *) break ;;
    esac
done

[ $# -gt 0 ] || { usage >&2; exit 2; }
cmd=$1
shift
case "$cmd" in
    up) lab_up ;;
    down) need_root; lab_down; echo "lab '$PREFIX' down" ;;
    info) lab_info ;;
    addr) load_state; build_nodes; node_addr "${1:?addr NODE}" ;;
    exec)
        load_state; build_nodes
        node=${1:?exec NODE CMD...}; shift
        pos_of "$node" >/dev/null
        # A node is a host of its own: its route memory (synergy-craft routes) is the lab's, never
        # the machine's /var/lib/synergy-craft.
        export STATE_DIRECTORY=${STATE_DIRECTORY:-$STATE_DIR/$PREFIX.routes/$node}
        exec ip netns exec "$(ns "$node")" "$@"
        ;;
    conntrack)
        load_state; build_nodes
        pos_of "${1:?conntrack NODE}" >/dev/null
        ip netns exec "$(ns "$1")" cat /proc/net/nf_conntrack
        ;;
    counters)
        load_state; build_nodes
        pos_of "${1:?counters NODE}" >/dev/null
        for t in synergy_lab synergy_loss synergy_silent synergy_watch; do
            ip netns exec "$(ns "$1")" nft list counters table inet $t 2>/dev/null || true
        done | awk '$1 == "counter" {name = $2} $1 == "packets" {print name, $2, $4}'
        ;;
    capture)
        load_state; build_nodes
        node=${1:?capture NODE [IFACE] [ARGS]}; shift
        pos_of "$node" >/dev/null
        ifc=any
        if [ $# -gt 0 ] && [[ $1 != -* ]]; then ifc=$1; shift; fi
        exec ip netns exec "$(ns "$node")" tcpdump -n -i "$ifc" "$@"
        ;;
    state)
        load_state; build_nodes
        [ $# -eq 4 ] || die "usage: state NODE PROTO SPORT DPORT"
        pos_of "$1" >/dev/null
        ct_state "$@"
        ;;
    profile)
        load_state; build_nodes
        is_fw "${1:?profile NODE PROFILE}" || die "'$1' is not a firewall"
        apply_profile "$1" "${2:?profile NODE PROFILE}"
        ;;
    timeout)
        load_state; build_nodes
        is_fw "${1:?timeout NODE KEY=SECONDS}" || die "'$1' is not a firewall"
        apply_timeout "$1" "${2:?timeout NODE KEY=SECONDS}"
        ;;
    loss)
        load_state; build_nodes
        pos_of "${1:?loss NODE PERCENT}" >/dev/null
        apply_loss "$1" "${2:?loss NODE PERCENT}"
        ;;
    matrix) lab_matrix ;;
    *) die "unknown command '$cmd' (see --help)" ;;
esac
