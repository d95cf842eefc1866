//! Punching a hole for one flow: whether the caller holds the flow (what the kernel says, decided
//! by `check`), the probe it needs, built once and sent through the raw IPv6 socket, and sent
//! again on demand to keep the local firewalls' entries alive. Does I/O (raw socket, getsockopt,
//! sock_diag).

pub mod check;
pub mod client;
pub mod keeper;
pub mod plan;
pub mod server;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::BorrowedFd;

use crate::net::raw::RawSender;
use crate::net::{NetError, random_nonzero_u32, random_u32, sockdiag, sockfacts};
use crate::wire::probe::ProbeRepr;
pub use check::TcpRole;
use check::{Proto, Refusal, SocketInfo};
use plan::Flow;

/// A built probe and the socket that sends it.
pub struct Puncher {
    sender: RawSender,
    bytes: Vec<u8>,
    dst: Ipv6Addr,
    scope: u32,
    repr: ProbeRepr,
}

impl Puncher {
    /// Builds the probe to go out through an already open raw socket (no privilege needed).
    pub fn with_sender(repr: ProbeRepr, scope: u32, sender: RawSender) -> Result<Self, NetError> {
        let (bytes, _) = repr.to_bytes()?;
        Ok(Puncher {
            sender,
            bytes,
            dst: repr.ip.dst,
            scope,
            repr,
        })
    }

    /// Sends the probe (again).
    pub fn punch(&self) -> Result<(), NetError> {
        self.sender
            .send(&self.bytes, self.dst, self.scope)
            .map(|_| ())
    }

    pub fn repr(&self) -> &ProbeRepr {
        &self.repr
    }
}

/// The TCP flow of a SYN as this host's kernel would send it toward `peer`, with sequence number
/// `isn`: MSS from the route's MTU, the kernel's window-scale shift (see `net::tcp`).
pub fn kernel_like_tcp(isn: u32, peer: SocketAddrV6) -> plan::Flow {
    let mtu = crate::net::route::lookup(*peer.ip(), peer.port(), peer.scope_id())
        .ok()
        .and_then(|r| r.mtu)
        .unwrap_or(1280);
    let mss = u16::try_from(mtu.saturating_sub(60)).unwrap_or(1220);
    plan::Flow::Tcp {
        isn,
        wscale: crate::net::tcp::kernel_window_scale(),
        mss,
    }
}

/// The flow of `proto` toward `peer` as this host sends it: TCP's options as the kernel's own SYN
/// has them ([`kernel_like_tcp`], sequence number 0), SCTP's punch (mark 0), UDP. Does I/O (route,
/// sysctls) for TCP.
pub fn kernel_like(proto: crate::wire::Proto, peer: SocketAddrV6) -> plan::Flow {
    match proto {
        crate::wire::Proto::Tcp => kernel_like_tcp(0, peer),
        crate::wire::Proto::Udp => plan::Flow::Udp,
        crate::wire::Proto::Sctp => plan::Flow::Sctp { mark: 0 },
    }
}

/// Reads what the kernel says about `fd` and this host, and decides whether a caller with uid
/// `caller_uid` holds the flow toward `peer` (or the socket's connected peer): `check::decide`.
pub fn held_flow(
    fd: BorrowedFd<'_>,
    peer: Option<SocketAddrV6>,
    caller_uid: u32,
) -> Result<SocketInfo, Refusal> {
    held_flow_made(fd, peer, caller_uid, &|_| None)
}

/// [`held_flow`] for the daemon, whose own sockets (the connections it made for a caller's punched
/// listener, by SO_COOKIE) count as that caller's: `made` names the uid each was made for.
pub fn held_flow_made(
    fd: BorrowedFd<'_>,
    peer: Option<SocketAddrV6>,
    caller_uid: u32,
    made: &dyn Fn(u64) -> Option<u32>,
) -> Result<SocketInfo, Refusal> {
    let facts = sockfacts::socket_facts(fd).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => Refusal::NotSocket,
        _ => Refusal::Descriptor(e.raw_os_error().unwrap_or(libc::EBADF)),
    })?;
    let kernel = |what: &'static str| {
        move |e: std::io::Error| Refusal::Kernel {
            what,
            detail: e.to_string(),
        }
    };
    let kind = check::transport_of(&facts)?;
    let netns = sockfacts::own_netns_cookie().map_err(kernel("for its network namespace"))?;
    let addrs = sockfacts::host_addrs().map_err(kernel("for this host's addresses"))?;
    // What is asked about the source and its port only makes sense in our own namespace.
    let (port_users, source_bindable) = match facts.local {
        Some(l) if l.port() != 0 && facts.netns == netns => {
            // The sockets of the same port space: MPTCP binds a TCP subflow, so TCP's table.
            let protocol = match kind {
                Proto::Tcp => libc::IPPROTO_TCP,
                Proto::Udp => libc::IPPROTO_UDP,
                Proto::Sctp => libc::IPPROTO_SCTP,
            } as u8;
            let mut users = sockdiag::port_users(protocol, l.port())
                .map_err(kernel("which sockets share the port (sock_diag)"))?;
            for u in &mut users {
                if let Some(uid) = made(u.cookie) {
                    u.uid = uid;
                }
            }
            (
                users,
                sockfacts::source_bindable(*l.ip(), l.scope_id())
                    .map_err(kernel("whether it binds the source"))?,
            )
        }
        _ => (Vec::new(), false),
    };
    let host = check::HostView {
        netns,
        addrs,
        port_users,
        source_bindable,
    };
    check::decide(&facts, peer, caller_uid, &host)
}

/// The probe a socket's flow needs: a SYN like the kernel's with a fresh sequence number (the
/// listener will answer with its own ISN: the classic SocketSynergy behaviour), a datagram, or the
/// SCTP punch chunk.
pub fn flow_for(info: &SocketInfo) -> Flow {
    match info.kind {
        Proto::Tcp => kernel_like_tcp(random_nonzero_u32(), info.peer),
        Proto::Udp => Flow::Udp,
        Proto::Sctp => Flow::Sctp { mark: random_u32() },
    }
}

/// How a checked socket is punched for: its role for TCP (client: its ISN fixed; server: the
/// rendezvous); every other socket gets its probe (as a connected one does).
pub fn tcp_role(info: &SocketInfo) -> TcpRole {
    match info.kind {
        Proto::Tcp => info.role,
        Proto::Udp | Proto::Sctp => TcpRole::Connected,
    }
}

/// The client sequence (socket, bind, synergy, connect): gives the caller's socket the initial
/// sequence number of [`crate::net::tcp::isn_for`] (TCP_REPAIR: CAP_NET_ADMIN), puts a
/// swallowing listener beside it ([`client::Hold`]) and sends the socket's twin, a SYN with that
/// number and the kernel's options, so that the socket's own SYN on connect() is a retransmission
/// to the firewalls (RFC 9293 §3.5). Returns the probe sent and the hold, which the caller keeps
/// (`Hold::keep`, on a thread) until the socket connects.
pub fn punch_client(
    fd: BorrowedFd<'_>,
    info: &SocketInfo,
    hop_limit: crate::param::HopLimit,
    sender: &RawSender,
) -> Result<(ProbeRepr, client::Hold), NetError> {
    let isn = crate::net::tcp::isn_for(info.local, info.peer);
    crate::net::tcp::fix_isn(fd, info.local, isn)?;
    let watched = fd
        .try_clone_to_owned()
        .map_err(|e| NetError::io("watching the socket", info.local, e))?;
    let hold = client::Hold::begin(info.local, watched)?;
    Ok((punch_tcp_probe(isn, info, hop_limit, sender)?, hold))
}

/// Sends the SYN like the kernel's with sequence number `isn` for a checked TCP flow.
pub fn punch_tcp_probe(
    isn: u32,
    info: &SocketInfo,
    hop_limit: crate::param::HopLimit,
    sender: &RawSender,
) -> Result<ProbeRepr, NetError> {
    send(tcp_probe(isn, info, hop_limit), info, sender)
}

/// The SYN like the kernel's with sequence number `isn` for a checked TCP flow (not sent).
pub fn tcp_probe(isn: u32, info: &SocketInfo, hop_limit: crate::param::HopLimit) -> ProbeRepr {
    plan::probe_for(
        kernel_like_tcp(isn, info.peer),
        info.local,
        info.peer,
        hop_limit,
    )
}

/// Sends the probe for a checked flow that needs nothing prepared (UDP, SCTP, a connected TCP
/// socket) through `sender`. Returns the probe sent.
pub fn punch_plain(
    info: &SocketInfo,
    hop_limit: crate::param::HopLimit,
    sender: &RawSender,
) -> Result<ProbeRepr, NetError> {
    send(plain_probe(info, hop_limit), info, sender)
}

/// The probe [`punch_plain`] sends (not sent).
pub fn plain_probe(info: &SocketInfo, hop_limit: crate::param::HopLimit) -> ProbeRepr {
    plan::probe_for(flow_for(info), info.local, info.peer, hop_limit)
}

/// Sends a probe built for a checked flow; returns it.
pub fn send_probe(
    repr: ProbeRepr,
    info: &SocketInfo,
    sender: &RawSender,
) -> Result<ProbeRepr, NetError> {
    send(repr, info, sender)
}

fn send(repr: ProbeRepr, info: &SocketInfo, sender: &RawSender) -> Result<ProbeRepr, NetError> {
    let (bytes, _) = repr.to_bytes()?;
    sender.send(&bytes, *info.peer.ip(), info.peer.scope_id())?;
    Ok(repr)
}
