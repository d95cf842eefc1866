//! What the kernel says about a socket and about this host, for deciding what a caller holds
//! (`punch::check`): SO_DOMAIN/SO_TYPE/SO_PROTOCOL, SO_NETNS_COOKIE, SO_COOKIE, the freebind and
//! transparent flags, getsockname/getpeername (socket(7), ipv6(7)), and this namespace's
//! addresses (getifaddrs(3)). Does I/O (getsockopt, getifaddrs).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockRef;

use crate::punch::check::{HostAddr, SocketFacts};

// Linux socket options (asm-generic/socket.h, in6.h); spelled out for every libc target.
const SO_COOKIE: libc::c_int = 57;
const SO_NETNS_COOKIE: libc::c_int = 71;
const IPV6_TRANSPARENT: libc::c_int = 75;
const IPV6_FREEBIND: libc::c_int = 78;

fn getsockopt<T: Copy + Default>(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a valid, writable buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// An int-valued option that is on (errors count as on: fail closed), and the IPv4-level twin
/// where the kernel answers for it.
fn flag(fd: BorrowedFd<'_>, v6: (i32, i32), v4: (i32, i32)) -> bool {
    let v6_on = getsockopt::<libc::c_int>(fd, v6.0, v6.1).map_or(true, |v| v != 0);
    let v4_on = getsockopt::<libc::c_int>(fd, v4.0, v4.1).is_ok_and(|v| v != 0);
    v6_on || v4_on
}

/// The facts of the socket `fd`. Fails with ENOTSOCK for a descriptor that is not a socket.
pub fn socket_facts(fd: BorrowedFd<'_>) -> io::Result<SocketFacts> {
    let domain = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let ty = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let protocol = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let netns = getsockopt::<u64>(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE)?;
    let v6 = domain == libc::AF_INET6;
    let freebind = v6
        && flag(
            fd,
            (libc::SOL_IPV6, IPV6_FREEBIND),
            (libc::SOL_IP, libc::IP_FREEBIND),
        );
    let transparent = v6
        && flag(
            fd,
            (libc::SOL_IPV6, IPV6_TRANSPARENT),
            (libc::SOL_IP, libc::IP_TRANSPARENT),
        );
    let sock = SockRef::from(&fd);
    let as_v6 = |a: socket2::SockAddr| match a.as_socket() {
        Some(SocketAddr::V6(a)) => Some(a),
        _ => None,
    };
    let local = sock.local_addr().ok().and_then(as_v6);
    let connected_to = sock.peer_addr().ok().and_then(as_v6);
    Ok(SocketFacts {
        domain,
        ty,
        protocol,
        netns,
        freebind,
        transparent,
        local,
        connected_to,
    })
}

/// The kernel's cookie of a socket (SO_COOKIE), as sock_diag reports it.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    getsockopt::<u64>(fd, libc::SOL_SOCKET, SO_COOKIE)
}

/// The cookie of the network namespace this thread is in (SO_NETNS_COOKIE of a fresh socket).
pub fn own_netns_cookie() -> io::Result<u64> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
    // SAFETY: the socket is open for the duration of the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
    getsockopt::<u64>(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE)
}

/// Every IPv6 address assigned to an interface in this network namespace now, with its interface.
pub fn host_addrs() -> io::Result<Vec<HostAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_addr, when not null, points to a sockaddr whose family says its size.
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET6
        {
            // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
            let sa = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            // SAFETY: ifa_name is a NUL-terminated interface name.
            let ifindex = unsafe { libc::if_nametoindex(ifa.ifa_name) };
            out.push(HostAddr {
                addr: Ipv6Addr::from(sa.sin6_addr.s6_addr),
                ifindex,
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A peer for the check from a C `sockaddr_in6`-like triple, with its scope.
pub fn peer_addr(addr: Ipv6Addr, port: u16, scope: u32) -> SocketAddrV6 {
    SocketAddrV6::new(addr, port, 0, scope)
}
