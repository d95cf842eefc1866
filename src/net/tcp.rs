//! TCP sockets for punching (Linux): a socket whose initial sequence number is chosen beforehand
//! with TCP_REPAIR, so that its SYN matches the probe's; and a listener that silently swallows SYNs
//! (a drop-all socket filter) so that the kernel neither resets the peer nor answers it with an
//! unrelated ISN while the real socket gets ready. Also the kernel's window-scale choice, which the
//! probe must repeat. Does I/O.

use std::net::SocketAddrV6;

use socket2::{Domain, SockAddr, SockFilter, Socket, Type};

use std::os::fd::AsFd;

use super::sockfacts::setsockopt_int;
use super::{NetError, privilege};

/// `TCP_REPAIR_QUEUE` value selecting the send queue (linux/tcp.h).
const TCP_SEND_QUEUE: libc::c_int = 2;

fn stream_socket(local: SocketAddrV6, reuse_port: bool) -> Result<Socket, NetError> {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None)
        .map_err(|e| NetError::io("opening a TCP socket", local, e))?;
    sock.set_only_v6(true)
        .map_err(|e| NetError::io("setting IPV6_V6ONLY", local, e))?;
    sock.set_reuse_address(true)
        .map_err(|e| NetError::io("setting SO_REUSEADDR", local, e))?;
    if reuse_port {
        // The swallowing listener and the ISN socket share the local address and port.
        sock.set_reuse_port(true)
            .map_err(|e| NetError::io("setting SO_REUSEPORT", local, e))?;
    }
    Ok(sock)
}

fn bind_and_listen(sock: Socket, local: SocketAddrV6) -> Result<Socket, NetError> {
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding", local, e))?;
    sock.listen(8)
        .map_err(|e| NetError::io("listening", local, e))?;
    Ok(sock)
}

/// A TCP socket bound to `local` whose SYN will carry sequence number `isn`: TCP_REPAIR on,
/// TCP_REPAIR_QUEUE = send queue, TCP_QUEUE_SEQ = isn, TCP_REPAIR off (needs CAP_NET_ADMIN, only
/// here). `isn` must not be 0, which the kernel takes as "choose one".
pub fn socket_with_isn(local: SocketAddrV6, isn: u32) -> Result<Socket, NetError> {
    let sock = stream_socket(local, true)?;
    setsockopt_int(sock.as_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, 1).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            privilege::missing(
                "choosing the TCP initial sequence number (TCP_REPAIR)",
                privilege::NET_ADMIN,
            )
        } else {
            NetError::io("turning TCP_REPAIR on", local, e)
        }
    })?;
    let seq = (|| {
        setsockopt_int(
            sock.as_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_QUEUE,
            TCP_SEND_QUEUE,
        )?;
        setsockopt_int(
            sock.as_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUEUE_SEQ,
            isn as libc::c_int,
        )?;
        setsockopt_int(sock.as_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, 0)
    })();
    seq.map_err(|e| NetError::io("setting the initial sequence number", local, e))?;
    sock.bind(&SockAddr::from(local))
        .map_err(|e| NetError::io("binding", local, e))?;
    Ok(sock)
}

/// A listener on `local` whose socket filter drops every segment: SYNs to the port are discarded
/// without a SYN-ACK or a RST, and nothing is ever accepted.
pub fn swallowing_listener(local: SocketAddrV6) -> Result<Socket, NetError> {
    let sock = stream_socket(local, true)?;
    // Classic BPF: "ret #0" = keep zero bytes of every packet.
    let drop_all = [SockFilter::new(
        (libc::BPF_RET | libc::BPF_K) as u16,
        0,
        0,
        0,
    )];
    sock.attach_filter(&drop_all)
        .map_err(|e| NetError::io("attaching the drop-all filter", local, e))?;
    bind_and_listen(sock, local)
}

/// A plain listener on `local` (the classic SocketSynergy mode: the kernel answers with its own ISN).
pub fn plain_listener(local: SocketAddrV6) -> Result<Socket, NetError> {
    bind_and_listen(stream_socket(local, false)?, local)
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
