//! What a caller may punch for: the pure decision over what the kernel says about a socket (its
//! family, type, protocol, namespace, bind flags, address) and about this host (its addresses, the
//! other sockets on that address and port), and the one refusal type with its errno for every kind
//! of "no". The daemon and the library's own send path both decide here. Pure: no I/O; the facts
//! are read by `net::sockfacts` and `net::sockdiag`.

use std::net::{Ipv6Addr, SocketAddrV6};

use thiserror::Error;

/// One kind of refusal, each with its own errno (documented in include/synergy.h and docs/API.md).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(
        "uid {uid} is not admitted by the daemon's policy (its uid and groups are not allowed)"
    )]
    Policy { uid: u32 },
    #[error("{who} already has {open} {what} (at most {cap})")]
    Busy {
        who: String,
        what: &'static str,
        open: usize,
        cap: usize,
    },
    #[error("rate limit: more than {rate} requests per second from {who}")]
    RateLimit { who: String, rate: u32 },
    #[error("malformed request")]
    Malformed(#[source] crate::daemon::proto::ProtoError),
    #[error("the request could not be read ({0})")]
    Unreadable(std::io::ErrorKind),
    #[error("the request did not arrive within {0} ms of connecting")]
    Late(u64),
    #[error("a request carries exactly one socket, this one {0}")]
    Descriptors(usize),
    #[error("the descriptor passed is not a socket")]
    NotSocket,
    #[error("the socket's options cannot be read (errno {0})")]
    Descriptor(i32),
    #[error("the socket is not an IPv6 socket (synergy-craft punches for IPv6 only)")]
    NotIpv6,
    #[error("socket type {ty} protocol {protocol} is not TCP, UDP or SCTP")]
    Protocol { ty: i32, protocol: i32 },
    #[error("the socket belongs to another network namespace than the daemon's")]
    ForeignNamespace,
    #[error("the socket is not bound to a local address and port (bind it first)")]
    Unbound,
    #[error("source {addr}: {why}")]
    SourceNotLocal { addr: Ipv6Addr, why: String },
    #[error("[{addr}]:{port} is shared with a socket of uid {other} (not the caller's port)")]
    PortShared {
        addr: Ipv6Addr,
        port: u16,
        other: u32,
    },
    #[error(
        "the kernel's socket list does not show this socket on [{addr}]:{port}, so it cannot vouch \
         that no other user shares the port"
    )]
    PortUnseen { addr: Ipv6Addr, port: u16 },
    #[error("peer [{addr}]:{port}: {why}")]
    BadPeer {
        addr: Ipv6Addr,
        port: u16,
        why: String,
    },
    #[error("no peer given and the socket is not connected")]
    NotConnected,
    #[error("hop limit {hop} is outside {min}-{max}")]
    HopRange { hop: u8, min: u8, max: u8 },
    #[error("the caller hung up before the probe was sent")]
    CallerGone,
    #[error("could not ask the kernel {what}: {detail}")]
    Kernel { what: &'static str, detail: String },
    /// MPTCP is punched for only once connected (see `decide`).
    #[error(
        "an MPTCP socket is punched for only once connected (not listening or about to connect)"
    )]
    MptcpUnconnected,
    /// "auto" found no hop limit (`routes`): ERANGE, or EIO when the route or the route memory
    /// could not be read.
    #[error("{why}")]
    Auto { errno: i32, why: String },
    /// `synergy_keep()` keeps UDP flows and TCP listeners' holes; a TCP client connects right
    /// after its punch (its own SYNs keep the hole), and SCTP is not kept.
    #[error(
        "keeping a hole open is for UDP sockets and TCP listeners; this is a {} socket that is neither",
        .0.name()
    )]
    KeepProto(Proto),
    #[error("the flow [{local}]:{lport} > [{peer}]:{pport} is not kept for this caller")]
    NotKept {
        local: Ipv6Addr,
        lport: u16,
        peer: Ipv6Addr,
        pport: u16,
    },
    /// Every check held, but preparing or sending the punch failed (the errno says how: EBUSY for
    /// a listener with a filter of its own, EALREADY for a peer already waited for, ...).
    #[error("punching failed: {detail}")]
    Punch { errno: i32, detail: String },
}

impl Refusal {
    /// The errno the C ABI reports for this refusal (one per kind; include/synergy.h).
    pub fn errno(&self) -> i32 {
        match self {
            Refusal::Policy { .. } => libc::EACCES,
            Refusal::Busy { .. } => libc::EBUSY,
            Refusal::RateLimit { .. } => libc::EAGAIN,
            Refusal::Malformed(_)
            | Refusal::Unreadable(_)
            | Refusal::Descriptors(_)
            | Refusal::Unbound => libc::EINVAL,
            Refusal::Late(_) => libc::ETIMEDOUT,
            Refusal::NotSocket => libc::ENOTSOCK,
            Refusal::Descriptor(errno)
            | Refusal::Punch { errno, .. }
            | Refusal::Auto { errno, .. } => *errno,
            Refusal::NotIpv6 => libc::EAFNOSUPPORT,
            Refusal::Protocol { .. } | Refusal::MptcpUnconnected => libc::EPROTONOSUPPORT,
            Refusal::ForeignNamespace => libc::EXDEV,
            Refusal::SourceNotLocal { .. } => libc::EADDRNOTAVAIL,
            Refusal::PortShared { .. } | Refusal::PortUnseen { .. } => libc::EADDRINUSE,
            Refusal::BadPeer { .. } => libc::EDESTADDRREQ,
            Refusal::NotConnected => libc::ENOTCONN,
            Refusal::HopRange { .. } => libc::ERANGE,
            Refusal::CallerGone => libc::ECONNRESET,
            Refusal::Kernel { .. } => libc::EIO,
            Refusal::KeepProto(_) => libc::EOPNOTSUPP,
            Refusal::NotKept { .. } => libc::ENOENT,
        }
    }
}

/// What the kernel says about one socket (getsockopt, getsockname, getpeername).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFacts {
    /// SO_DOMAIN.
    pub domain: i32,
    /// SO_TYPE.
    pub ty: i32,
    /// SO_PROTOCOL.
    pub protocol: i32,
    /// SO_NETNS_COOKIE: the network namespace the socket lives in.
    pub netns: u64,
    /// SO_COOKIE: the socket itself, as sock_diag names it.
    pub cookie: u64,
    /// IPV6_FREEBIND or IP_FREEBIND set: it may be bound to an address this host does not have.
    pub freebind: bool,
    /// IPV6_TRANSPARENT or IP_TRANSPARENT set.
    pub transparent: bool,
    /// getsockname(); None when it is not an IPv6 address.
    pub local: Option<SocketAddrV6>,
    /// getpeername(), when connected.
    pub connected_to: Option<SocketAddrV6>,
    /// SO_ACCEPTCONN: the socket listens.
    pub listening: bool,
}

/// One of this host's addresses: the address and the interface it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: Ipv6Addr,
    pub ifindex: u32,
}

/// A socket on the same protocol and port (from sock_diag): its local address, owner and cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortUser {
    pub addr: Ipv6Addr,
    pub uid: u32,
    pub cookie: u64,
}

/// What the kernel says around one socket: this namespace, its addresses, every socket of the
/// same port space on the socket's port, and whether the kernel will bind the socket's source on a
/// fresh socket now (getifaddrs also lists tentative and DAD-failed addresses; bind does not take
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub netns: u64,
    pub addrs: Vec<HostAddr>,
    pub port_users: Vec<PortUser>,
    pub source_bindable: bool,
}

pub use crate::wire::Proto;

/// What a socket is in the SocketSynergy sequences: bound and not connected, about to connect
/// (client); a listener (server); or already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRole {
    Client,
    Server,
    Connected,
}

/// A flow the caller was found to hold, ready to punch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub kind: Proto,
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
    /// What the socket is (SO_ACCEPTCONN, getpeername); it decides how a TCP punch is made.
    pub role: TcpRole,
}

/// The transport of a socket, from SO_DOMAIN/SO_TYPE/SO_PROTOCOL: exactly TCP (MPTCP counts as
/// TCP: its first subflow is a TCP SYN), UDP or SCTP (one-to-one or one-to-many style); every other
/// protocol (UDP-Lite, ICMPv6 ping sockets, raw, DCCP) has its own port space and is refused.
pub fn transport_of(facts: &SocketFacts) -> Result<Proto, Refusal> {
    if facts.domain != libc::AF_INET6 {
        return Err(Refusal::NotIpv6);
    }
    let wrong = Refusal::Protocol {
        ty: facts.ty,
        protocol: facts.protocol,
    };
    match (facts.ty, facts.protocol) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP | libc::IPPROTO_MPTCP) => Ok(Proto::Tcp),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Ok(Proto::Udp),
        (libc::SOCK_STREAM | libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP) => Ok(Proto::Sctp),
        _ => Err(wrong),
    }
}

fn is_mapped_or_compat(a: &Ipv6Addr) -> bool {
    let s = a.segments();
    s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.is_unicast_link_local()
}

/// The kind of address `a` is when it can never be an end of a flow (RFC 4291 §2.4-2.5:
/// unspecified, loopback, multicast, IPv4-mapped or -compatible), else None.
fn never_an_end(a: &Ipv6Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if is_mapped_or_compat(a) {
        Some("an IPv4-mapped or IPv4-compatible address")
    } else {
        None
    }
}

/// Decides whether the socket described by `facts` may be punched for toward `peer` (or, when
/// `peer` is None, toward the address it is connected to), by a caller with uid `caller_uid`, on a
/// host the kernel describes as `host`. Every rule of docs/API.md ("What the daemon checks") on
/// the socket and the peer is here; the first one broken is the answer.
pub fn decide(
    facts: &SocketFacts,
    peer: Option<SocketAddrV6>,
    caller_uid: u32,
    host: &HostView,
) -> Result<SocketInfo, Refusal> {
    let kind = transport_of(facts)?;
    if facts.netns != host.netns {
        return Err(Refusal::ForeignNamespace);
    }
    let local = facts.local.ok_or(Refusal::NotIpv6)?;
    if local.port() == 0 {
        return Err(Refusal::Unbound);
    }
    let src = *local.ip();
    let not_local = |why: &str| Refusal::SourceNotLocal {
        addr: src,
        why: why.to_string(),
    };
    if let Some(what) = never_an_end(&src) {
        return Err(not_local(&format!(
            "{what} is not a source; bind one of this host's addresses"
        )));
    }
    if facts.freebind {
        return Err(not_local(
            "the socket has IPV6_FREEBIND/IP_FREEBIND set and may hold an address it does not own",
        ));
    }
    if facts.transparent {
        return Err(not_local("the socket is transparent (IPV6_TRANSPARENT)"));
    }
    let link_local = is_link_local(&src);
    let assigned = host.addrs.iter().any(|h| {
        h.addr == src && (!link_local || (local.scope_id() != 0 && h.ifindex == local.scope_id()))
    });
    if !assigned {
        return Err(not_local(if link_local {
            "this link-local address is not assigned to the socket's interface"
        } else {
            "not an address assigned to an interface of this host"
        }));
    }
    if !host.source_bindable {
        return Err(not_local(
            "the kernel will not bind it now (a tentative or duplicate address)",
        ));
    }
    let on_port = |u: &&PortUser| u.addr == src || u.addr.is_unspecified();
    if let Some(other) = host
        .port_users
        .iter()
        .filter(on_port)
        .find(|u| u.uid != caller_uid)
    {
        return Err(Refusal::PortShared {
            addr: src,
            port: local.port(),
            other: other.uid,
        });
    }
    // The list vouches only if it shows the socket itself (SCTP endpoints appear once they
    // listen; older kernels leave out bound TCP sockets). An MPTCP socket is listed through its
    // TCP subflow, whose cookie is not its own: then a subflow of the caller's on this address
    // (or `::`) and port must be there (an MPTCP socket whose connect failed holds no port).
    let listed = if facts.protocol == libc::IPPROTO_MPTCP {
        host.port_users
            .iter()
            .filter(on_port)
            .any(|u| u.uid == caller_uid)
    } else {
        host.port_users.iter().any(|u| u.cookie == facts.cookie)
    };
    if !listed {
        return Err(Refusal::PortUnseen {
            addr: src,
            port: local.port(),
        });
    }
    let peer = match peer.or(facts.connected_to) {
        Some(p) => p,
        None => return Err(Refusal::NotConnected),
    };
    let dst = *peer.ip();
    let bad_peer = |why: &str| Refusal::BadPeer {
        addr: dst,
        port: peer.port(),
        why: why.to_string(),
    };
    if peer.port() == 0 {
        return Err(bad_peer("port 0 is not a peer's port"));
    }
    if let Some(what) = never_an_end(&dst) {
        return Err(bad_peer(&format!("{what} is not a peer")));
    }
    if host.addrs.iter().any(|h| h.addr == dst) {
        return Err(bad_peer("that is this host's own address"));
    }
    let peer = match (link_local, is_link_local(&dst)) {
        (true, true) => SocketAddrV6::new(dst, peer.port(), 0, local.scope_id()),
        (false, false) => SocketAddrV6::new(dst, peer.port(), 0, 0),
        (true, false) => {
            return Err(bad_peer(
                "a link-local source reaches only link-local peers",
            ));
        }
        (false, true) => return Err(bad_peer("a link-local peer needs a link-local source")),
    };
    let role = if facts.listening {
        TcpRole::Server
    } else if facts.connected_to.is_some() {
        TcpRole::Connected
    } else {
        TcpRole::Client
    };
    // TCP_REPAIR and a listener's socket filter reach an MPTCP socket's subflows, not the
    // socket: neither TCP sequence can be made clean for it until it is connected.
    if facts.protocol == libc::IPPROTO_MPTCP && role != TcpRole::Connected {
        return Err(Refusal::MptcpUnconnected);
    }
    Ok(SocketInfo {
        kind,
        local,
        peer,
        role,
    })
}

/// Checks a hop limit against the configured range.
pub fn hop_in_range(hop: u8, min: u8, max: u8) -> Result<(), Refusal> {
    if (min..=max).contains(&hop) {
        Ok(())
    } else {
        Err(Refusal::HopRange { hop, min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "2001:db8:1::11";
    const B: &str = "2001:db8:2::5";
    const NS: u64 = 4096;
    const COOKIE: u64 = 77;

    fn facts(local: &str, port: u16) -> SocketFacts {
        SocketFacts {
            domain: libc::AF_INET6,
            ty: libc::SOCK_DGRAM,
            protocol: libc::IPPROTO_UDP,
            netns: NS,
            cookie: COOKIE,
            freebind: false,
            transparent: false,
            local: Some(SocketAddrV6::new(local.parse().unwrap(), port, 0, 0)),
            connected_to: None,
            listening: false,
        }
    }

    fn host() -> Vec<HostAddr> {
        vec![
            HostAddr {
                addr: A.parse().unwrap(),
                ifindex: 2,
            },
            HostAddr {
                addr: "fe80::1".parse().unwrap(),
                ifindex: 2,
            },
            HostAddr {
                addr: "::1".parse().unwrap(),
                ifindex: 1,
            },
        ]
    }

    fn peer(s: &str, port: u16) -> Option<SocketAddrV6> {
        Some(SocketAddrV6::new(s.parse().unwrap(), port, 0, 0))
    }

    /// The kernel's view around `f`: the test host, the socket itself listed as the caller's on its
    /// port, and `users` beside it.
    fn view(f: &SocketFacts, users: &[PortUser]) -> HostView {
        let mut port_users = users.to_vec();
        if let Some(l) = f.local {
            port_users.push(PortUser {
                addr: *l.ip(),
                uid: 1000,
                cookie: COOKIE,
            });
        }
        HostView {
            netns: NS,
            addrs: host(),
            port_users,
            source_bindable: true,
        }
    }

    fn run(
        f: &SocketFacts,
        p: Option<SocketAddrV6>,
        users: &[PortUser],
    ) -> Result<SocketInfo, Refusal> {
        decide(f, p, 1000, &view(f, users))
    }

    #[test]
    fn honest_udp_socket_is_held() {
        let h = run(&facts(A, 4444), peer(B, 5555), &[]).unwrap();
        assert_eq!(h.kind, Proto::Udp);
        assert_eq!(h.local.port(), 4444);
        assert_eq!(h.peer, peer(B, 5555).unwrap());
        // Its own socket (same uid) on the port is no obstacle.
        let me = PortUser {
            addr: A.parse().unwrap(),
            uid: 1000,
            cookie: 78,
        };
        assert!(run(&facts(A, 4444), peer(B, 5555), &[me]).is_ok());
    }

    #[test]
    fn protocols_other_than_tcp_udp_sctp_are_refused() {
        let mut f = facts(A, 4444);
        // Connected, which every protocol's punch accepts (an unconnected MPTCP socket is not).
        f.connected_to = Some(SocketAddrV6::new(B.parse().unwrap(), 5555, 0, 0));
        for (ty, proto, ok) in [
            (libc::SOCK_STREAM, libc::IPPROTO_TCP, Some(Proto::Tcp)),
            (libc::SOCK_STREAM, libc::IPPROTO_MPTCP, Some(Proto::Tcp)),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP, Some(Proto::Udp)),
            (libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP, Some(Proto::Sctp)),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE, None),
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6, None),
            (libc::SOCK_RAW, libc::IPPROTO_UDP, None),
            (libc::SOCK_DCCP, 33, None),
        ] {
            f.ty = ty;
            f.protocol = proto;
            match ok {
                Some(t) => assert_eq!(run(&f, peer(B, 5555), &[]).unwrap().kind, t),
                None => assert_eq!(
                    run(&f, peer(B, 5555), &[]).unwrap_err().errno(),
                    libc::EPROTONOSUPPORT,
                    "{ty} {proto}"
                ),
            }
        }
        f.domain = libc::AF_INET;
        assert_eq!(run(&f, peer(B, 5555), &[]), Err(Refusal::NotIpv6));
    }

    #[test]
    fn foreign_namespace_freebind_transparent_are_refused() {
        let mut f = facts(A, 4444);
        f.netns = NS + 1;
        assert_eq!(run(&f, peer(B, 5555), &[]), Err(Refusal::ForeignNamespace));
        let mut f = facts(A, 4444);
        f.freebind = true;
        assert_eq!(
            run(&f, peer(B, 5555), &[]).unwrap_err().errno(),
            libc::EADDRNOTAVAIL
        );
        let mut f = facts(A, 4444);
        f.transparent = true;
        assert_eq!(
            run(&f, peer(B, 5555), &[]).unwrap_err().errno(),
            libc::EADDRNOTAVAIL
        );
    }

    #[test]
    fn sources_not_assigned_here_are_refused() {
        for src in [
            "::",
            "::1",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "ff02::1",
            "2001:db8:1::99",
            B,
        ] {
            assert_eq!(
                run(&facts(src, 4444), peer(B, 5555), &[])
                    .unwrap_err()
                    .errno(),
                libc::EADDRNOTAVAIL,
                "{src}"
            );
        }
        assert_eq!(run(&facts(A, 0), peer(B, 5555), &[]), Err(Refusal::Unbound));
        // A link-local source must be on the interface that has it.
        let mut f = facts("fe80::1", 4444);
        f.local = Some(SocketAddrV6::new("fe80::1".parse().unwrap(), 4444, 0, 3));
        assert_eq!(
            run(&f, peer("fe80::2", 5555), &[]).unwrap_err().errno(),
            libc::EADDRNOTAVAIL
        );
        f.local = Some(SocketAddrV6::new("fe80::1".parse().unwrap(), 4444, 0, 2));
        let h = run(&f, peer("fe80::2", 5555), &[]).unwrap();
        assert_eq!(h.peer.scope_id(), 2);
        assert_eq!(
            run(&f, peer(B, 5555), &[]).unwrap_err().errno(),
            libc::EDESTADDRREQ
        );
        assert_eq!(
            run(&facts(A, 4444), peer("fe80::2", 5555), &[])
                .unwrap_err()
                .errno(),
            libc::EDESTADDRREQ
        );
    }

    #[test]
    fn the_role_comes_from_listening_and_the_peer_and_mptcp_must_be_connected() {
        let role = |listening: bool, connected: bool, protocol: i32| {
            let mut f = facts(A, 4444);
            f.ty = libc::SOCK_STREAM;
            f.protocol = protocol;
            f.listening = listening;
            f.connected_to = connected.then(|| SocketAddrV6::new(B.parse().unwrap(), 5555, 0, 0));
            decide(&f, peer(B, 5555), 1000, &view(&f, &[])).map(|i| i.role)
        };
        assert_eq!(role(false, false, libc::IPPROTO_TCP), Ok(TcpRole::Client));
        assert_eq!(role(true, false, libc::IPPROTO_TCP), Ok(TcpRole::Server));
        assert_eq!(role(false, true, libc::IPPROTO_TCP), Ok(TcpRole::Connected));
        assert_eq!(
            role(false, true, libc::IPPROTO_MPTCP),
            Ok(TcpRole::Connected)
        );
        for (listening, connected) in [(false, false), (true, false)] {
            let r = role(listening, connected, libc::IPPROTO_MPTCP);
            assert_eq!(r, Err(Refusal::MptcpUnconnected));
            assert_eq!(r.unwrap_err().errno(), libc::EPROTONOSUPPORT);
        }
    }

    #[test]
    fn ports_shared_with_another_user_are_refused() {
        let other = |addr: &str| PortUser {
            addr: addr.parse().unwrap(),
            uid: 0,
            cookie: 5,
        };
        for addr in [A, "::"] {
            assert_eq!(
                run(&facts(A, 5353), peer(B, 5555), &[other(addr)]),
                Err(Refusal::PortShared {
                    addr: A.parse().unwrap(),
                    port: 5353,
                    other: 0
                })
            );
        }
        // Another user on another address of the same port does not share this flow.
        assert!(run(&facts(A, 5353), peer(B, 5555), &[other("2001:db8:1::12")]).is_ok());
    }

    #[test]
    fn a_socket_the_kernel_does_not_list_or_a_source_it_will_not_bind_is_refused() {
        let f = facts(A, 4444);
        let mut v = view(&f, &[]);
        v.port_users.clear();
        assert_eq!(
            decide(&f, peer(B, 5555), 1000, &v),
            Err(Refusal::PortUnseen {
                addr: A.parse().unwrap(),
                port: 4444
            })
        );
        // MPTCP is listed through its TCP subflow, under another cookie: a subflow of the caller's
        // on the port will do, none will not.
        let mut m = f;
        m.ty = libc::SOCK_STREAM;
        m.protocol = libc::IPPROTO_MPTCP;
        // Connected: an MPTCP socket is punched for only then (see the roles below).
        m.connected_to = Some(SocketAddrV6::new(B.parse().unwrap(), 5555, 0, 0));
        assert_eq!(
            decide(&m, peer(B, 5555), 1000, &v).unwrap_err().errno(),
            libc::EADDRINUSE
        );
        let subflow = PortUser {
            addr: A.parse().unwrap(),
            uid: 1000,
            cookie: 99,
        };
        let mut with_subflow = v.clone();
        with_subflow.port_users.push(subflow);
        assert!(decide(&m, peer(B, 5555), 1000, &with_subflow).is_ok());
        let mut v = view(&f, &[]);
        v.source_bindable = false;
        assert_eq!(
            decide(&f, peer(B, 5555), 1000, &v).unwrap_err().errno(),
            libc::EADDRNOTAVAIL
        );
    }

    #[test]
    fn unusable_peers_are_refused() {
        for (p, port) in [
            ("ff02::1", 5555),
            ("ff0e::1", 5555),
            ("::", 5555),
            ("::1", 5555),
            (A, 5555),
            ("::ffff:192.0.2.1", 5555),
            (B, 0),
        ] {
            assert_eq!(
                run(&facts(A, 4444), peer(p, port), &[])
                    .unwrap_err()
                    .errno(),
                libc::EDESTADDRREQ,
                "{p} {port}"
            );
        }
        assert_eq!(run(&facts(A, 4444), None, &[]), Err(Refusal::NotConnected));
        let mut f = facts(A, 4444);
        f.connected_to = peer(B, 5555);
        assert_eq!(run(&f, None, &[]).unwrap().peer, peer(B, 5555).unwrap());
    }

    /// One errno per kind of refusal, and each kind one errno: two refusals share an errno
    /// exactly when they are the same kind (docs/API.md's table).
    #[test]
    fn errnos_tell_refusal_kinds_apart() {
        let a: Ipv6Addr = A.parse().unwrap();
        let kinds = [
            ("policy", Refusal::Policy { uid: 1 }),
            (
                "busy",
                Refusal::Busy {
                    who: String::new(),
                    what: "",
                    open: 1,
                    cap: 1,
                },
            ),
            (
                "rate",
                Refusal::RateLimit {
                    who: String::new(),
                    rate: 1,
                },
            ),
            (
                "bad request",
                Refusal::Malformed(crate::daemon::proto::ProtoError::Magic),
            ),
            ("bad request", Refusal::Descriptors(2)),
            ("bad request", Refusal::Unbound),
            ("late", Refusal::Late(1)),
            ("not a socket", Refusal::NotSocket),
            ("descriptor", Refusal::Descriptor(libc::EBADF)),
            ("not ipv6", Refusal::NotIpv6),
            ("protocol", Refusal::Protocol { ty: 0, protocol: 0 }),
            ("namespace", Refusal::ForeignNamespace),
            (
                "source",
                Refusal::SourceNotLocal {
                    addr: a,
                    why: String::new(),
                },
            ),
            (
                "port",
                Refusal::PortShared {
                    addr: a,
                    port: 1,
                    other: 0,
                },
            ),
            ("port", Refusal::PortUnseen { addr: a, port: 1 }),
            (
                "peer",
                Refusal::BadPeer {
                    addr: a,
                    port: 1,
                    why: String::new(),
                },
            ),
            ("not connected", Refusal::NotConnected),
            (
                "hop",
                Refusal::HopRange {
                    hop: 1,
                    min: 1,
                    max: 1,
                },
            ),
            ("gone", Refusal::CallerGone),
            (
                "kernel",
                Refusal::Kernel {
                    what: "",
                    detail: String::new(),
                },
            ),
        ];
        for (k1, r1) in &kinds {
            for (k2, r2) in &kinds {
                assert_eq!(k1 == k2, r1.errno() == r2.errno(), "{k1} / {k2}");
            }
        }
        assert_eq!(
            hop_in_range(9, 1, 4),
            Err(Refusal::HopRange {
                hop: 9,
                min: 1,
                max: 4
            })
        );
        assert!(hop_in_range(4, 1, 4).is_ok());
    }
}
