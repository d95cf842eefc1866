//! TCP sockets for punching (Linux): initial sequence numbers chosen beforehand with TCP_REPAIR
//! (on a caller's socket, on a socket of our own bound beside a listener), listeners bound in
//! repair mode for swallowing, the socket filters that swallow (all, or the punched peers'), the
//! RFC 6528-like ISN of a punched flow, and the kernel's window-scale choice, which the probe must
//! repeat. Does I/O.

use std::net::SocketAddrV6;

use socket2::{Domain, SockAddr, SockFilter, Socket, Type};

use std::os::fd::{AsFd, BorrowedFd, FromRawFd};

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

/// A TCP socket bound to `local` whose SYN will carry sequence number `isn` (needs
/// CAP_NET_ADMIN). It is bound in repair mode, which the kernel lets share the port of any socket
/// (a listener's included), so it can meet the peer's SYN on the listener's own address and port;
/// the caller must have checked that the port is its own. `isn` must not be 0 (the kernel's "choose one").
pub fn isn_socket(local: SocketAddrV6, isn: u32) -> Result<Socket, NetError> {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None)
        .map_err(|e| NetError::io("opening a TCP socket", local, e))?;
    sock.set_only_v6(true)
        .map_err(|e| NetError::io("setting IPV6_V6ONLY", local, e))?;
    repair_on(sock.as_fd(), local)?;
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding (repair mode)", local, e))?;
    queue_seq_and_leave(sock.as_fd(), isn)
        .map_err(|e| NetError::io("setting the initial sequence number", local, e))?;
    Ok(sock)
}

/// A listener on `local` bound and listening in repair mode (needs CAP_NET_ADMIN), which the
/// kernel lets share the port with any socket; it stays in repair mode (a listener cannot leave
/// it), which matters to nothing a listener does. For swallowing only: put a filter on it.
pub fn repair_listener(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None)
        .map_err(|e| NetError::io("opening a TCP socket", local, e))?;
    sock.set_only_v6(true)
        .map_err(|e| NetError::io("setting IPV6_V6ONLY", local, e))?;
    repair_on(sock.as_fd(), local)?;
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding (repair mode)", local, e))?;
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

/// Whether a TCP socket is listening (SO_ACCEPTCONN).
pub fn is_listening(sock: BorrowedFd<'_>) -> std::io::Result<bool> {
    getsockopt::<libc::c_int>(sock, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map(|v| v != 0)
}

/// The initial sequence number for a punched connection from `local` to `peer`, in the manner of
/// RFC 6528 §3: a keyed hash of the connection's addresses and ports (key: this boot's random
/// id, which only local users can read) plus a 4-microsecond clock (CLOCK_BOOTTIME, shared by
/// every process of the host). A fresh attempt for the same flow therefore always gets a later
/// number than the one before, so a firewall entry left by the earlier probe re-initialises on it
/// instead of counting the new SYN as INVALID. Never 0.
pub fn isn_for(local: SocketAddrV6, peer: SocketAddrV6) -> u32 {
    use std::hash::{Hash, Hasher};
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        boot_id.trim(),
        local.ip(),
        local.port(),
        peer.ip(),
        peer.port(),
    )
        .hash(&mut h);
    let offset = h.finish() as u32;
    let mut ts: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let ticks = (ts.tv_sec as u64)
        .wrapping_mul(250_000)
        .wrapping_add(ts.tv_nsec as u64 / 4000);
    offset.wrapping_add(ticks as u32).max(1)
}

/// A classic BPF socket filter for a listener that drops everything from the given peers
/// (address and TCP source port) and keeps everything else: their SYNs are swallowed without a
/// SYN-ACK or a RST while the punched connection is made on another socket. The filter of a TCP
/// socket sees the segment from its TCP header on; the IPv6 source address is read relative to
/// the network header (SKF_NET_OFF). Pure.
pub fn peer_filter(peers: &[SocketAddrV6]) -> Vec<SockFilter> {
    const NET: u32 = (-0x100000i32) as u32; // SKF_NET_OFF
    let ld_w = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ld_h = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut prog = Vec::with_capacity(peers.len() * 11 + 1);
    for p in peers {
        // 11 instructions: the port, four address words, then "drop"; a mismatch jumps past it.
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
            // Instructions left in the block after this jump: 1 (drop) + 2 per later word.
            prog.push(SockFilter::new(jeq, 0, (7 - 2 * i) as u8, word));
        }
        prog.push(SockFilter::new(ret, 0, 0, 0));
    }
    prog.push(SockFilter::new(ret, 0, 0, u32::MAX));
    prog
}

/// Puts `prog` on a socket in place of its filter, or removes the filter when `prog` is None.
pub fn set_filter(sock: BorrowedFd<'_>, prog: Option<&[SockFilter]>) -> std::io::Result<()> {
    // SAFETY: `sock` stays open for the call; the borrowed Socket is never dropped (forget).
    let s = std::mem::ManuallyDrop::new(unsafe {
        Socket::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&sock))
    });
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
/// smallest shift that brings max(tcp_rmem[2], rmem_max) under 65536, at most 14; None when
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
