//! TCP sockets for punching (Linux): initial sequence numbers chosen beforehand with TCP_REPAIR
//! (on a caller's socket, on a socket of our own bound beside a listener), listeners bound in
//! repair mode for swallowing, the socket filters that swallow (all, or the punched peers'), the
//! RFC 6528-like ISN of a punched flow, and the kernel's window-scale choice, which the probe must
//! repeat. Does I/O.

use std::net::SocketAddrV6;

use socket2::{Domain, SockAddr, SockFilter, Socket, Type};

use std::os::fd::{AsFd, BorrowedFd};

use super::sockfacts::{getsockopt, setsockopt_int};
use super::{NetError, privilege};

/// `TCP_REPAIR_QUEUE` value selecting the send queue (linux/tcp.h).
const TCP_SEND_QUEUE: libc::c_int = 2;

fn stream_socket(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None)
        .map_err(|e| NetError::io("opening a TCP socket", local, e))?;
    sock.set_only_v6(true)
        .map_err(|e| NetError::io("setting IPV6_V6ONLY", local, e))?;
    sock.set_reuse_address(true)
        .map_err(|e| NetError::io("setting SO_REUSEADDR", local, e))?;
    Ok(sock)
}

fn bind_and_listen(sock: Socket, local: SocketAddrV6) -> Result<Socket, NetError> {
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding", local, e))?;
    sock.listen(8)
        .map_err(|e| NetError::io("listening", local, e))?;
    Ok(sock)
}

/// Turns TCP_REPAIR on for `sock`, naming CAP_NET_ADMIN when it is refused. In repair mode the
/// kernel lets the socket bind any port (SK_FORCE_REUSE) and take a chosen send sequence number.
fn repair_on(sock: BorrowedFd<'_>, local: SocketAddrV6) -> Result<(), NetError> {
    setsockopt_int(sock, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            privilege::missing(
                "choosing the TCP initial sequence number (TCP_REPAIR)",
                privilege::NET_ADMIN,
            )
        } else {
            NetError::io("turning TCP_REPAIR on", local, e)
        }
    })
}

/// In repair mode: the send queue's next sequence number becomes `isn`, and repair mode ends.
fn queue_seq_and_leave(sock: BorrowedFd<'_>, isn: u32) -> std::io::Result<()> {
    setsockopt_int(
        sock,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_SEND_QUEUE,
    )?;
    setsockopt_int(
        sock,
        libc::IPPROTO_TCP,
        libc::TCP_QUEUE_SEQ,
        isn as libc::c_int,
    )?;
    setsockopt_int(sock, libc::IPPROTO_TCP, libc::TCP_REPAIR, 0)
}

/// A TCP socket (IPv6 only) in repair mode bound to `local`, whatever else holds the port.
fn repair_bound(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None)
        .map_err(|e| NetError::io("opening a TCP socket", local, e))?;
    sock.set_only_v6(true)
        .map_err(|e| NetError::io("setting IPV6_V6ONLY", local, e))?;
    repair_on(sock.as_fd(), local)?;
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding (repair mode)", local, e))?;
    Ok(sock)
}

/// A TCP socket bound to `local` whose SYN will carry sequence number `isn` (needs
/// CAP_NET_ADMIN). It is bound in repair mode, which the kernel lets share the port of any socket
/// (a listener's included), so it can meet the peer's SYN on the listener's own address and port;
/// the caller must have checked that the port is its own. `isn` must not be 0 (the kernel's "choose one").
pub fn isn_socket(local: SocketAddrV6, isn: u32) -> Result<Socket, NetError> {
    let sock = repair_bound(local)?;
    queue_seq_and_leave(sock.as_fd(), isn)
        .map_err(|e| NetError::io("setting the initial sequence number", local, e))?;
    Ok(sock)
}

/// A listener on `local` bound and listening in repair mode (needs CAP_NET_ADMIN), which the
/// kernel lets share the port with any socket; it stays in repair mode (a listener cannot leave
/// it), which matters to nothing a listener does. For swallowing only: put a filter on it.
pub fn repair_listener(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = repair_bound(local)?;
    sock.listen(8)
        .map_err(|e| NetError::io("listening (repair mode)", local, e))?;
    Ok(sock)
}

/// Makes the SYN of a caller's bound, unconnected TCP socket carry `isn` (needs CAP_NET_ADMIN):
/// TCP_REPAIR on, TCP_REPAIR_QUEUE = send queue, TCP_QUEUE_SEQ = isn, TCP_REPAIR off. Leaving
/// repair mode resets SO_REUSEADDR, so the socket's own setting is put back.
pub fn fix_isn(sock: BorrowedFd<'_>, local: SocketAddrV6, isn: u32) -> Result<(), NetError> {
    let reuse: libc::c_int = getsockopt(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR)
        .map_err(|e| NetError::io("reading SO_REUSEADDR", local, e))?;
    repair_on(sock, local)?;
    let set = queue_seq_and_leave(sock, isn);
    // Whatever happened, repair mode must not stay on (a socket in repair mode sends nothing).
    let off = setsockopt_int(sock, libc::IPPROTO_TCP, libc::TCP_REPAIR, 0);
    set.and(off)
        .map_err(|e| NetError::io("setting the initial sequence number", local, e))?;
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse)
        .map_err(|e| NetError::io("restoring SO_REUSEADDR", local, e))
}

/// The initial sequence number for a punched connection from `local` to `peer`, in the manner of
/// RFC 6528 §3: a keyed hash of the connection's addresses and ports (key: this boot's random
/// id, which only local users can read) plus a 4-microsecond clock (CLOCK_BOOTTIME, shared by
/// every process of the host). A fresh attempt for the same flow therefore always gets a later
/// number than the one before, so a firewall entry left by the earlier probe re-initialises on it
/// instead of counting the new SYN as INVALID. Never 0.
pub fn isn_for(local: SocketAddrV6, peer: SocketAddrV6) -> u32 {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut ts: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let ticks = (ts.tv_sec as u64)
        .wrapping_mul(250_000)
        .wrapping_add(ts.tv_nsec as u64 / 4000);
    isn_at(boot_id.trim(), local, peer, ticks)
}

/// [`isn_for`] at a given clock reading (4-µs ticks), with `key` as the hash key. Pure.
pub fn isn_at(key: &str, local: SocketAddrV6, peer: SocketAddrV6, ticks: u64) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key, local.ip(), local.port(), peer.ip(), peer.port()).hash(&mut h);
    (h.finish() as u32).wrapping_add(ticks as u32).max(1)
}

/// A classic BPF socket filter for a listener that drops everything from the given peers
/// (address and TCP source port) and keeps everything else: their SYNs are swallowed without a
/// SYN-ACK or a RST while the punched connection is made on another socket. The filter of a TCP
/// socket sees the segment from its TCP header on; the IPv6 source address is read relative to
/// the network header (SKF_NET_OFF). Pure.
pub fn peer_filter(peers: &[SocketAddrV6]) -> Vec<SockFilter> {
    peer_program(peers, 0, u32::MAX)
}

/// A classic BPF socket filter that keeps only what comes from `peer` (address and TCP source
/// port): on a socket the daemon hands to a caller, so that the caller cannot use it to make a
/// connection anywhere else (the handshake's SYN-ACK from any other host is dropped). Pure.
pub fn only_from(peer: SocketAddrV6) -> Vec<SockFilter> {
    peer_program(&[peer], u32::MAX, 0)
}

/// Per peer: when the source address and port are the peer's, return `matched`; after all
/// peers, `otherwise`.
fn peer_program(peers: &[SocketAddrV6], matched: u32, otherwise: u32) -> Vec<SockFilter> {
    const NET: u32 = (-0x100000i32) as u32; // SKF_NET_OFF
    let ld_w = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ld_h = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut prog = Vec::with_capacity(peers.len() * 11 + 1);
    for p in peers {
        // 11 instructions: the port, four address words, then the verdict; a mismatch jumps
        // past it.
        prog.push(SockFilter::new(ld_h, 0, 0, 0));
        prog.push(SockFilter::new(jeq, 0, 9, u32::from(p.port())));
        for (i, w) in p.ip().octets().chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            prog.push(SockFilter::new(
                ld_w,
                0,
                0,
                NET.wrapping_add(8 + 4 * i as u32),
            ));
            // Instructions left in the block after this jump: 1 (verdict) + 2 per later word.
            prog.push(SockFilter::new(jeq, 0, (7 - 2 * i) as u8, word));
        }
        prog.push(SockFilter::new(ret, 0, 0, matched));
    }
    prog.push(SockFilter::new(ret, 0, 0, otherwise));
    prog
}

/// SO_LOCK_FILTER (asm-generic/socket.h): the socket's filter can no longer be changed or removed.
const SO_LOCK_FILTER: libc::c_int = 44;

/// Puts [`only_from`]`(peer)` on a socket of ours and locks it, before the socket is handed to a
/// caller: the caller can use the socket with the peer and nothing else.
pub fn lock_to_peer(sock: &Socket, peer: SocketAddrV6) -> Result<(), NetError> {
    sock.attach_filter(&only_from(peer))
        .map_err(|e| NetError::io("filtering the socket to its peer", peer, e))?;
    setsockopt_int(sock.as_fd(), libc::SOL_SOCKET, SO_LOCK_FILTER, 1)
        .map_err(|e| NetError::io("locking the socket's filter", peer, e))
}

/// Puts `prog` on a socket in place of its filter, or removes the filter when `prog` is None.
pub fn set_filter(sock: BorrowedFd<'_>, prog: Option<&[SockFilter]>) -> std::io::Result<()> {
    let s = socket2::SockRef::from(&sock);
    match prog {
        Some(p) => s.attach_filter(p),
        None => s.detach_filter(),
    }
}

/// How many instructions the socket's filter has (0: none), from SO_GET_FILTER.
pub fn filter_len(sock: BorrowedFd<'_>) -> std::io::Result<usize> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a zero length the kernel only reports the filter's length in `len`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(len as usize)
}

/// A TCP socket bound to `local` (SO_REUSEADDR): the client side of `connect`.
pub fn client_socket(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = stream_socket(local)?;
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding", local, e))?;
    Ok(sock)
}

/// A plain listener on `local` (the classic SocketSynergy mode: the kernel answers with its own ISN).
pub fn plain_listener(local: SocketAddrV6) -> Result<Socket, NetError> {
    bind_and_listen(stream_socket(local)?, local)
}

/// The window-scale shift Linux will put in this host's SYNs (tcp_select_initial_window): the
/// smallest shift that brings max(`tcp_rmem[2]`, rmem_max) under 65536, at most 14; None when
/// window scaling is off. The probe must carry the same, because conntrack takes the scale of a
/// direction from its first SYN.
pub fn kernel_window_scale() -> Option<u8> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if read("/proc/sys/net/ipv4/tcp_window_scaling")?.trim() == "0" {
        return None;
    }
    let rmem_max: u64 = read("/proc/sys/net/ipv4/tcp_rmem")?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()?;
    let core_max: u64 = read("/proc/sys/net/core/rmem_max")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut space = rmem_max.max(core_max).min(u64::from(u16::MAX) << 14);
    let mut shift = 0u8;
    while space > 65535 && shift < 14 {
        space >>= 1;
        shift += 1;
    }
    Some(shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A classic BPF interpreter for the instructions `peer_filter` uses, over a packet given as
    /// its IPv6 header (the network header) and its TCP header (where the filter starts).
    fn run(prog: &[SockFilter], ip: &[u8; 40], tcp: &[u8]) -> u32 {
        // SockFilter's fields are private: read them through its C layout.
        let insn = |i: usize| -> (u16, u8, u8, u32) {
            // SAFETY: SockFilter is #[repr(transparent)] over libc::sock_filter.
            let f: libc::sock_filter = unsafe { std::mem::transmute_copy(&prog[i]) };
            (f.code, f.jt, f.jf, f.k)
        };
        let net = (-0x100000i32) as u32;
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = insn(pc);
            let load = |k: u32, n: usize| -> u32 {
                let (buf, off): (&[u8], usize) = if k >= net {
                    (&ip[..], (k - net) as usize)
                } else {
                    (tcp, k as usize)
                };
                buf[off..off + n]
                    .iter()
                    .fold(0, |v, b| (v << 8) | u32::from(*b))
            };
            match code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = load(k, 4),
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => a = load(k, 2),
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == k { jt } else { jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    fn packet(src: SocketAddrV6) -> ([u8; 40], [u8; 20]) {
        let mut ip = [0u8; 40];
        ip[8..24].copy_from_slice(&src.ip().octets());
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
        (ip, tcp)
    }

    #[test]
    fn only_from_keeps_the_peer_alone() {
        let peer: SocketAddrV6 = "[2001:db8:2::5]:5000".parse().unwrap();
        let prog = only_from(peer);
        let (ip, tcp) = packet(peer);
        assert_eq!(run(&prog, &ip, &tcp), u32::MAX);
        for other in [
            "[2001:db8:2::5]:5001",
            "[2001:db8:2::6]:5000",
            "[2001:db8:3::7]:80",
        ] {
            let (ip, tcp) = packet(other.parse().unwrap());
            assert_eq!(run(&prog, &ip, &tcp), 0, "{other}");
        }
    }

    #[test]
    fn empty_filter_keeps_everything() {
        let (ip, tcp) = packet("[2001:db8::1]:1".parse().unwrap());
        assert_eq!(run(&peer_filter(&[]), &ip, &tcp), u32::MAX);
    }

    proptest! {
        /// The filter drops a segment exactly when its source address and port are a punched
        /// peer's; a source that differs from a peer in one word or only in the port is kept.
        #[test]
        fn drops_exactly_the_punched_peers(
            peers in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..8),
            pick in any::<prop::sample::Index>(),
            word in 0usize..5,
        ) {
            let peers: Vec<SocketAddrV6> = peers
                .into_iter()
                .map(|(a, p)| SocketAddrV6::new(a.into(), p, 0, 0))
                .collect();
            let prog = peer_filter(&peers);
            for p in &peers {
                let (ip, tcp) = packet(*p);
                prop_assert_eq!(run(&prog, &ip, &tcp), 0);
            }
            if !peers.is_empty() {
                // A near miss: one address word or the port changed.
                let p = peers[pick.index(peers.len())];
                let mut o = p.ip().octets();
                let mut port = p.port();
                if word < 4 {
                    o[4 * word] ^= 0x80;
                } else {
                    port ^= 1;
                }
                let near = SocketAddrV6::new(o.into(), port, 0, 0);
                let (ip, tcp) = packet(near);
                let want = if peers.contains(&near) { 0 } else { u32::MAX };
                prop_assert_eq!(run(&prog, &ip, &tcp), want);
            }
        }

        /// A later attempt for the same flow gets a later number (RFC 1982 order) for up to
        /// 2^31 ticks (2.4 h), never 0; other flows get other offsets.
        #[test]
        fn isn_moves_forward_with_the_clock(t in any::<u64>(), d in 1u64..(1 << 31)) {
            let l: SocketAddrV6 = "[2001:db8:1::11]:4000".parse().unwrap();
            let p: SocketAddrV6 = "[2001:db8:2::5]:5000".parse().unwrap();
            let a = isn_at("k", l, p, t);
            let b = isn_at("k", l, p, t.wrapping_add(d));
            prop_assert!(a != 0 && b != 0);
            let diff = b.wrapping_sub(a);
            // max(1) can nudge a 0 to 1: allow that one step.
            prop_assert!(diff > 0 && diff <= (1 << 31) || diff == 0 && d == 1);
        }
    }

    #[test]
    fn isn_depends_on_the_flow_and_the_key() {
        let l: SocketAddrV6 = "[2001:db8:1::11]:4000".parse().unwrap();
        let p: SocketAddrV6 = "[2001:db8:2::5]:5000".parse().unwrap();
        let q: SocketAddrV6 = "[2001:db8:2::5]:5001".parse().unwrap();
        assert_ne!(isn_at("k", l, p, 0), isn_at("k", l, q, 0));
        assert_ne!(isn_at("k", l, p, 0), isn_at("other boot", l, p, 0));
    }
}
