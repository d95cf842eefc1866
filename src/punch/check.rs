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
    #[error("uid {uid} already has {open} requests open (at most {cap} at once)")]
    Busy { uid: u32, open: usize, cap: usize },
    #[error("rate limit: more than {rate} requests per second from uid {uid}")]
    RateLimit { uid: u32, rate: u32 },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request did not arrive within {0} ms of connecting")]
    Late(u64),
    #[error("a request carries exactly one socket, this one {0}")]
    Descriptors(usize),
    #[error("the descriptor passed is not a socket")]
    NotSocket,
    #[error("the socket is not an IPv6 socket (synergy-craft punches for IPv6 only)")]
    NotIpv6,
    #[error("socket type {ty} protocol {protocol} is not TCP, UDP or SCTP")]
    Protocol { ty: i32, protocol: i32 },
    #[error("the socket belongs to another network namespace than the daemon's")]
    ForeignNamespace,
    #[error("the socket is not bound to a local address and port (bind it first)")]
    Unbound,
    #[error("source {addr}: {why}")]
    SourceNotLocal { addr: Ipv6Addr, why: &'static str },
    #[error("[{addr}]:{port} is shared with a socket of uid {other} (not the caller's port)")]
    PortShared {
        addr: Ipv6Addr,
        port: u16,
        other: u32,
    },
    #[error("peer [{addr}]:{port}: {why}")]
    BadPeer {
        addr: Ipv6Addr,
        port: u16,
        why: &'static str,
    },
    #[error("no peer given and the socket is not connected")]
    NotConnected,
    #[error("hop limit {hop} is outside {min}-{max}")]
    HopRange { hop: u8, min: u8, max: u8 },
    #[error("the caller hung up before the probe was sent")]
    CallerGone,
    #[error("could not ask the kernel {what}: {detail}")]
    Kernel { what: &'static str, detail: String },
}

impl Refusal {
    /// The errno the C ABI reports for this refusal (one per kind; include/synergy.h).
    pub fn errno(&self) -> i32 {
        match self {
            Refusal::Policy { .. } => libc::EACCES,
            Refusal::Busy { .. } => libc::EBUSY,
            Refusal::RateLimit { .. } => libc::EAGAIN,
            Refusal::Malformed(_) | Refusal::Descriptors(_) | Refusal::Unbound => libc::EINVAL,
            Refusal::Late(_) => libc::ETIMEDOUT,
            Refusal::NotSocket => libc::ENOTSOCK,
            Refusal::NotIpv6 => libc::EAFNOSUPPORT,
            Refusal::Protocol { .. } => libc::EPROTONOSUPPORT,
            Refusal::ForeignNamespace => libc::EXDEV,
            Refusal::SourceNotLocal { .. } => libc::EADDRNOTAVAIL,
            Refusal::PortShared { .. } => libc::EADDRINUSE,
            Refusal::BadPeer { .. } => libc::EDESTADDRREQ,
            Refusal::NotConnected => libc::ENOTCONN,
            Refusal::HopRange { .. } => libc::ERANGE,
            Refusal::CallerGone => libc::ECONNRESET,
            Refusal::Kernel { .. } => libc::EIO,
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
    /// IPV6_FREEBIND or IP_FREEBIND set: it may be bound to an address this host does not have.
    pub freebind: bool,
    /// IPV6_TRANSPARENT or IP_TRANSPARENT set.
    pub transparent: bool,
    /// getsockname(); None when it is not an IPv6 address.
    pub local: Option<SocketAddrV6>,
    /// getpeername(), when connected.
    pub connected_to: Option<SocketAddrV6>,
}

/// One of this host's addresses: the address and the interface it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: Ipv6Addr,
    pub ifindex: u32,
}

/// Another socket on the same protocol and port (from sock_diag): its local address and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortUser {
    pub addr: Ipv6Addr,
    pub uid: u32,
}

/// The transport of an IPv6 socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockKind {
    Tcp,
    Udp,
    Sctp,
}

/// A flow the caller was found to hold, ready to punch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub kind: SockKind,
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
}

/// The transport of a socket, from SO_DOMAIN/SO_TYPE/SO_PROTOCOL: exactly TCP (MPTCP counts as
/// TCP: its first subflow is a TCP SYN), UDP or SCTP (one-to-one or one-to-many style); every other
/// protocol (UDP-Lite, ICMPv6 ping sockets, raw, DCCP) has its own port space and is refused.
pub fn transport_of(facts: &SocketFacts) -> Result<SockKind, Refusal> {
    if facts.domain != libc::AF_INET6 {
        return Err(Refusal::NotIpv6);
    }
    let wrong = Refusal::Protocol {
        ty: facts.ty,
        protocol: facts.protocol,
    };
    match (facts.ty, facts.protocol) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP | libc::IPPROTO_MPTCP) => Ok(SockKind::Tcp),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Ok(SockKind::Udp),
        (libc::SOCK_STREAM | libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP) => Ok(SockKind::Sctp),
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

/// Why `addr` cannot be the source of a punch, if it cannot (RFC 4291 §2.4-2.5: unspecified,
/// loopback, multicast and IPv4-mapped/compatible addresses are never a flow's source).
fn unusable_source(addr: &Ipv6Addr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the socket is bound to the unspecified address; bind one of this host's addresses")
    } else if addr.is_loopback() {
        Some("loopback is not a routable source")
    } else if addr.is_multicast() {
        Some("a multicast address is not a source")
    } else if is_mapped_or_compat(addr) {
        Some("an IPv4-mapped or IPv4-compatible address is not an IPv6 source")
    } else {
        None
    }
}

/// Why `addr` cannot be the peer of a punch, if it cannot.
fn unusable_peer(addr: &Ipv6Addr, port: u16) -> Option<&'static str> {
    if port == 0 {
        Some("port 0 is not a peer's port")
    } else if addr.is_unspecified() {
        Some("the unspecified address is not a peer")
    } else if addr.is_loopback() {
        Some("loopback is not a peer behind a firewall")
    } else if addr.is_multicast() {
        Some("a multicast address is not a peer")
    } else if is_mapped_or_compat(addr) {
        Some("an IPv4-mapped or IPv4-compatible address is not an IPv6 peer")
    } else {
        None
    }
}

/// Decides whether the socket described by `facts` may be punched for toward `peer` (or, when
/// `peer` is None, toward the address it is connected to), by a caller with uid `caller_uid`, on a
/// host whose namespace cookie is `own_netns`, whose addresses are `host` and where `port_users`
/// are every socket of the same protocol on the socket's port. Every rule of docs/API.md
/// ("What the daemon checks") is here; the first one broken is the answer.
pub fn decide(
    facts: &SocketFacts,
    peer: Option<SocketAddrV6>,
    caller_uid: u32,
    own_netns: u64,
    host: &[HostAddr],
    port_users: &[PortUser],
) -> Result<SocketInfo, Refusal> {
    let kind = transport_of(facts)?;
    if facts.netns != own_netns {
        return Err(Refusal::ForeignNamespace);
    }
    let local = facts.local.ok_or(Refusal::NotIpv6)?;
    if local.port() == 0 {
        return Err(Refusal::Unbound);
    }
    let src = *local.ip();
    let not_local = |why| Refusal::SourceNotLocal { addr: src, why };
    if let Some(why) = unusable_source(&src) {
        return Err(not_local(why));
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
    let assigned = host.iter().any(|h| {
        h.addr == src && (!link_local || (local.scope_id() != 0 && h.ifindex == local.scope_id()))
    });
    if !assigned {
        return Err(not_local(if link_local {
            "this link-local address is not assigned to the socket's interface"
        } else {
            "not an address assigned to an interface of this host"
        }));
    }
    if let Some(other) = port_users
        .iter()
        .find(|u| (u.addr == src || u.addr.is_unspecified()) && u.uid != caller_uid)
    {
        return Err(Refusal::PortShared {
            addr: src,
            port: local.port(),
            other: other.uid,
        });
    }
    let peer = match peer.or(facts.connected_to) {
        Some(p) => p,
        None => return Err(Refusal::NotConnected),
    };
    let dst = *peer.ip();
    let bad_peer = |why| Refusal::BadPeer {
        addr: dst,
        port: peer.port(),
        why,
    };
    if let Some(why) = unusable_peer(&dst, peer.port()) {
        return Err(bad_peer(why));
    }
    if host.iter().any(|h| h.addr == dst) {
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
    Ok(SocketInfo { kind, local, peer })
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

    fn facts(local: &str, port: u16) -> SocketFacts {
        SocketFacts {
            domain: libc::AF_INET6,
            ty: libc::SOCK_DGRAM,
            protocol: libc::IPPROTO_UDP,
            netns: NS,
            freebind: false,
            transparent: false,
            local: Some(SocketAddrV6::new(local.parse().unwrap(), port, 0, 0)),
            connected_to: None,
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

    fn run(
        f: &SocketFacts,
        p: Option<SocketAddrV6>,
        users: &[PortUser],
    ) -> Result<SocketInfo, Refusal> {
        decide(f, p, 1000, NS, &host(), users)
    }

    #[test]
    fn honest_udp_socket_is_held() {
        let h = run(&facts(A, 4444), peer(B, 5555), &[]).unwrap();
        assert_eq!(h.kind, SockKind::Udp);
        assert_eq!(h.local.port(), 4444);
        assert_eq!(h.peer, peer(B, 5555).unwrap());
        // Its own socket (same uid) on the port is no obstacle.
        let me = PortUser {
            addr: A.parse().unwrap(),
            uid: 1000,
        };
        assert!(run(&facts(A, 4444), peer(B, 5555), &[me]).is_ok());
    }

    #[test]
    fn protocols_other_than_tcp_udp_sctp_are_refused() {
        let mut f = facts(A, 4444);
        for (ty, proto, ok) in [
            (libc::SOCK_STREAM, libc::IPPROTO_TCP, Some(SockKind::Tcp)),
            (libc::SOCK_STREAM, libc::IPPROTO_MPTCP, Some(SockKind::Tcp)),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP, Some(SockKind::Udp)),
            (
                libc::SOCK_SEQPACKET,
                libc::IPPROTO_SCTP,
                Some(SockKind::Sctp),
            ),
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
    fn ports_shared_with_another_user_are_refused() {
        let other = |addr: &str| PortUser {
            addr: addr.parse().unwrap(),
            uid: 0,
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

    #[test]
    fn every_kind_has_its_own_errno() {
        let a: Ipv6Addr = A.parse().unwrap();
        let kinds = [
            Refusal::Policy { uid: 1 },
            Refusal::Busy {
                uid: 1,
                open: 1,
                cap: 1,
            },
            Refusal::RateLimit { uid: 1, rate: 1 },
            Refusal::Malformed(String::new()),
            Refusal::Late(1),
            Refusal::NotSocket,
            Refusal::NotIpv6,
            Refusal::Protocol { ty: 0, protocol: 0 },
            Refusal::ForeignNamespace,
            Refusal::SourceNotLocal { addr: a, why: "" },
            Refusal::PortShared {
                addr: a,
                port: 1,
                other: 0,
            },
            Refusal::BadPeer {
                addr: a,
                port: 1,
                why: "",
            },
            Refusal::NotConnected,
            Refusal::HopRange {
                hop: 1,
                min: 1,
                max: 1,
            },
            Refusal::CallerGone,
            Refusal::Kernel {
                what: "",
                detail: String::new(),
            },
        ];
        let mut errnos: Vec<i32> = kinds.iter().map(Refusal::errno).collect();
        errnos.sort_unstable();
        errnos.dedup();
        assert_eq!(errnos.len(), kinds.len());
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
