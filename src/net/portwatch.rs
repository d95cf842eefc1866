//! Watches what arrives for a local TCP or UDP port through a raw IPv6 socket (a copy of every
//! segment, taken before the transport layer handles it), so that the peer's first SYN can be seen
//! while a listener swallows it, and strangers can be logged. Received bytes are untrusted: they are
//! parsed leniently and anything malformed is skipped. Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Instant;

use super::NetError;
use super::rawrecv::{RawPoll, RawReceiver};
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
pub struct PortWatch {
    poll: RawPoll,
    proto: u8,
    port: u16,
}

impl PortWatch {
    /// Opens the watch (needs CAP_NET_RAW); `proto` is 6 (TCP) or 17 (UDP).
    pub fn open(proto: u8, local: SocketAddrV6) -> Result<Self, NetError> {
        let r = RawReceiver::open(proto, *local.ip(), local.scope_id())?;
        Ok(PortWatch {
            poll: RawPoll::new(vec![r]),
            proto,
            port: local.port(),
        })
    }

    /// The next segment for the watched port, waiting at most until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<Seen>, NetError> {
        let (proto, port) = (self.proto, self.port);
        while let Some(p) = self.poll.next(deadline)? {
            if let Some(seen) = classify(proto, port, p.bytes, p.from) {
                return Ok(Some(seen));
            }
        }
        Ok(None)
    }
}

/// Parses a received transport segment; anything malformed or for another port is None.
fn classify(proto: u8, port: u16, bytes: &[u8], src_ip: Ipv6Addr) -> Option<Seen> {
    let (sport, dport, tcp) = match proto {
        6 => {
            let t = TcpRepr::parse_quoted(bytes).ok()?.repr;
            (t.src_port, t.dst_port, Some((t.flags, t.seq)))
        }
        _ => {
            let u = UdpRepr::parse(bytes).ok()?.repr;
            (u.src_port, u.dst_port, None)
        }
    };
    (dport == port).then(|| Seen {
        src: SocketAddrV6::new(src_ip, sport, 0, 0),
        tcp,
    })
}
