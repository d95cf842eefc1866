//! The raw IPv6 socket that injects probes whole: AF_INET6, SOCK_RAW, IPPROTO_RAW, with which Linux
//! takes the IPv6 header as given (hop limit, traffic class, flow label and source included;
//! raw(7), ipv6(7)). Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{NetError, privilege};

/// An open header-including raw IPv6 socket.
#[derive(Debug)]
pub struct RawSender {
    sock: Socket,
}

impl RawSender {
    /// Opens the socket (needs CAP_NET_RAW) and, where the source address is local, binds it to
    /// that address: an unbound header-including socket pays for a source-address lookup on every
    /// packet. `src_scope` is the interface index for a link-local source, else 0.
    pub fn open(src: Option<(Ipv6Addr, u32)>) -> Result<Self, NetError> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                privilege::missing("opening a raw IPv6 socket", privilege::NET_RAW)
            } else {
                NetError::io(
                    "opening a raw IPv6 socket",
                    "AF_INET6/SOCK_RAW/IPPROTO_RAW",
                    e,
                )
            }
        })?;
        if let Some((addr, scope)) = src {
            let sa = SockAddr::from(SocketAddrV6::new(addr, 0, 0, scope));
            if let Err(e) = sock.bind(&sa) {
                // A source that is not one of this host's addresses can still be sent from;
                // the kernel then looks the route up per packet.
                log::debug!("raw socket not bound to {addr}: {e}");
            }
        }
        Ok(RawSender { sock })
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> Result<Self, NetError> {
        Ok(RawSender {
            sock: self
                .sock
                .try_clone()
                .map_err(|e| NetError::io("duplicating the raw socket", "raw", e))?,
        })
    }

    /// Sends one whole IPv6 packet toward `dst` (`scope`: interface index for link-local).
    pub fn send(&self, packet: &[u8], dst: Ipv6Addr, scope: u32) -> Result<usize, NetError> {
        let sa = SockAddr::from(SocketAddrV6::new(dst, 0, 0, scope));
        self.sock
            .send_to(packet, &sa)
            .map_err(|e| NetError::io("sending a probe", dst, e))
    }
}
