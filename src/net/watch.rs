//! Watches what arrives for a local TCP or UDP port through a raw IPv6 socket (a copy of every
//! segment, taken before the transport layer handles it), so that the peer's first SYN can be seen
//! while a listener swallows it, and strangers can be logged. Received bytes are untrusted: they are
//! parsed leniently and anything malformed is skipped. Does I/O.

use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{NetError, privilege};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use crate::wire::udp::UdpRepr;

/// One segment or datagram seen arriving for the watched port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub src: SocketAddrV6,
    /// TCP flags and sequence number (TCP only).
    pub tcp: Option<(TcpFlags, u32)>,
}

/// A raw socket receiving copies of what arrives for one local port of one protocol.
pub struct Watch {
    sock: Socket,
    proto: u8,
    local: SocketAddrV6,
}

impl Watch {
    /// Opens the watch (needs CAP_NET_RAW); `proto` is 6 (TCP) or 17 (UDP).
    pub fn open(proto: u8, local: SocketAddrV6) -> Result<Self, NetError> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(proto))),
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                privilege::missing(
                    "watching for the peer on a raw IPv6 socket",
                    privilege::NET_RAW,
                )
            } else {
                NetError::io("opening a raw receive socket", local, e)
            }
        })?;
        sock.bind(&SockAddr::from(SocketAddrV6::new(
            *local.ip(),
            0,
            0,
            local.scope_id(),
        )))
        .map_err(|e| NetError::io("binding the raw receive socket", local, e))?;
        Ok(Watch { sock, proto, local })
    }

    /// The next segment for the watched port, waiting at most until `deadline`.
    pub fn next(&self, deadline: Instant) -> Result<Option<Seen>, NetError> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| NetError::io("setting a receive timeout", self.local, e))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetError::io("receiving on the raw socket", self.local, e)),
            };
            // SAFETY: recv_from initialised the first n bytes.
            let bytes: &[u8] =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n.min(buf.len())) };
            let Some(src_ip) = from.as_socket_ipv6().map(|a| *a.ip()) else {
                continue;
            };
            if let Some(seen) = self.classify(bytes, src_ip) {
                return Ok(Some(seen));
            }
        }
    }

    /// Parses a received transport segment (IPv6 raw sockets deliver it without the IPv6 header).
    fn classify(&self, bytes: &[u8], src_ip: Ipv6Addr) -> Option<Seen> {
        let (sport, dport, tcp) = match self.proto {
            6 => {
                let (t, _) = TcpRepr::parse(bytes, true).ok()?;
                (t.src_port, t.dst_port, Some((t.flags, t.seq)))
            }
            _ => {
                let (u, _, _) = UdpRepr::parse(bytes).ok()?;
                (u.src_port, u.dst_port, None)
            }
        };
        (dport == self.local.port()).then(|| Seen {
            src: SocketAddrV6::new(src_ip, sport, 0, 0),
            tcp,
        })
    }
}
