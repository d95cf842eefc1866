//! Asks the kernel which source address and path MTU it would use toward a destination, by
//! connecting an unprivileged UDP socket (nothing is sent). Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use super::NetError;

/// What the routing table says about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub src: Ipv6Addr,
    /// The path MTU the kernel holds for the destination (the link MTU when nothing smaller is known).
    pub mtu: Option<usize>,
}

/// Looks up the route toward `dst` (with interface `scope` for link-local destinations).
pub fn lookup(dst: Ipv6Addr, port: u16, scope: u32) -> Result<RouteInfo, NetError> {
    lookup_on(dst, port, scope, None)
}

/// Looks up the route toward `dst` that leaves through the interface `device` (SO_BINDTODEVICE,
/// as the raw socket of `-e/--interface` is bound), or through any when None.
pub fn lookup_on(
    dst: Ipv6Addr,
    port: u16,
    scope: u32,
    device: Option<&str>,
) -> Result<RouteInfo, NetError> {
    let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
        .map_err(|e| NetError::io("opening a UDP socket for the route lookup", dst, e))?;
    if let Some(name) = device {
        super::if_index(name, "--interface")?;
        socket2::SockRef::from(&sock)
            .bind_device(Some(name.as_bytes()))
            .map_err(|e| NetError::io("binding the route lookup to interface", name, e))?;
    }
    sock.connect(SocketAddrV6::new(dst, port, 0, scope))
        .map_err(|e| match device {
            Some(name) => NetError::io(
                "looking up the route",
                format!("{dst} on interface {name}"),
                e,
            ),
            None => NetError::io("looking up the route", dst, e),
        })?;
    let src = match sock.local_addr() {
        Ok(std::net::SocketAddr::V6(a)) => *a.ip(),
        Ok(other) => {
            return Err(NetError::io(
                "looking up the source address",
                dst,
                std::io::Error::other(format!("kernel chose {other}")),
            ));
        }
        Err(e) => return Err(NetError::io("looking up the source address", dst, e)),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, and `mtu`/`len` point to an int-sized buffer and its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let mtu = (rc == 0 && mtu > 0).then_some(mtu as usize);
    Ok(RouteInfo { src, mtu })
}
