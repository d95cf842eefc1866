//! What the kernel says about a socket and about this host, for deciding what a caller holds
//! (`punch::check`): SO_DOMAIN/SO_TYPE/SO_PROTOCOL, SO_NETNS_COOKIE, SO_COOKIE, the freebind and
//! transparent flags, getsockname/getpeername (socket(7), ipv6(7), through socket2 where it has
//! them), this namespace's addresses (getifaddrs(3)), and whether the kernel will bind a source
//! now. Does I/O (getsockopt, getifaddrs, bind).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockRef;

use crate::punch::check::{HostAddr, SocketFacts};

/// SO_NETNS_COOKIE (asm-generic/socket.h, Linux 5.14): not among socket2's options.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Reads a fixed-size socket option into a `T`, for options socket2 does not offer. `T` must be
/// plain data (integers, C structs of them) for which all-zero bytes are a valid value.
pub(crate) fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<T> {
    // SAFETY: `T` is plain data (the caller's contract above), so zeroed bytes are a valid value.
    let mut v: T = unsafe { std::mem::zeroed() };
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

/// Sets an int-valued socket option (for options socket2 does not offer).
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: valid fd; the option value is a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The facts of the socket `fd`. Fails with ENOTSOCK for a descriptor that is not a socket.
pub fn socket_facts(fd: BorrowedFd<'_>) -> io::Result<SocketFacts> {
    let sock = SockRef::from(&fd);
    let domain = libc::c_int::from(sock.domain()?);
    let ty = libc::c_int::from(sock.r#type()?);
    let protocol = sock.protocol()?.map_or(0, libc::c_int::from);
    let netns = getsockopt::<u64>(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE)?;
    let cookie = sock.cookie()?;
    let v6 = domain == libc::AF_INET6;
    // An option the kernel will not answer counts as set (fail closed) for the IPv6 level; the
    // IPv4-level twin is read where the kernel answers for it.
    let freebind =
        v6 && (sock.freebind_v6().unwrap_or(true) || sock.freebind_v4().unwrap_or(false));
    let transparent = v6
        && (sock.ip_transparent_v6().unwrap_or(true) || sock.ip_transparent_v4().unwrap_or(false));
    let as_v6 = |a: socket2::SockAddr| match a.as_socket() {
        Some(SocketAddr::V6(a)) => Some(a),
        _ => None,
    };
    let local = sock.local_addr().ok().and_then(as_v6);
    let connected_to = sock.peer_addr().ok().and_then(as_v6);
    let listening = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    Ok(SocketFacts {
        domain,
        ty,
        protocol,
        netns,
        cookie,
        freebind,
        transparent,
        local,
        connected_to,
        listening,
    })
}

/// The socket's SO_COOKIE, its name in sock_diag and in this project's registries.
pub fn cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    SockRef::from(&fd).cookie()
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

/// Whether the kernel binds `addr` (with its zone `scope`) on a fresh UDP socket without freebind
/// now: false for an address that is not this host's, and for a tentative or DAD-failed one.
pub fn source_bindable(addr: Ipv6Addr, scope: u32) -> io::Result<bool> {
    let probe = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    Ok(probe
        .bind(&SocketAddrV6::new(addr, 0, 0, scope).into())
        .is_ok())
}
