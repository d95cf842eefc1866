# Sourced by test.sh and demo.sh: installs the Debian packages the lab needs when they are missing.
# shellcheck shell=bash
ensure_lab_deps() {
    local missing=()
    command -v nft >/dev/null || missing+=(nftables)
    command -v tcpdump >/dev/null || missing+=(tcpdump)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v socat >/dev/null || missing+=(socat)
    command -v nc >/dev/null || missing+=(netcat-openbsd)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v setcap >/dev/null || missing+=(libcap2-bin)
    # A userspace SCTP stack for the SCTP lab tests (the kernel here has no SCTP sockets).
    [ -x /usr/lib/usrsctp/echo_server ] || missing+=(libusrsctp-examples)
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ]; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing ${missing[*]}: install them as root (apt-get install -y ${missing[*]})" >&2
        return 1
    fi
}

# The release build and the tests' C program (tests/c/synergy_test.c) compiled against its
# library into DIR/synergy_test, for the benchmark scripts that drive the daemon as a program would.
release_and_c_program() {
    local dir=${1:?release_and_c_program DIR}
    cargo build -q --release
    cc -O2 -Wall -o "$dir/synergy_test" tests/c/synergy_test.c -Iinclude -Ltarget/release \
        -Wl,-rpath,"$PWD/target/release" -lsynergy_craft
}
