//! The raw sockets that receive replies to probes (ICMPv6 errors, TCP RST/SYN-ACK, SCTP
//! ABORT/INIT ACK), matched to the probes sent (`reply::match_reply`), and the two small traits
//! through which the trace and `probe --watch` send and receive, so that their logic runs on
//! scripted sockets in tests. Does I/O.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::NetError;
use super::raw::RawSender;
use super::rawrecv::{RawPoll, RawReceiver};
use crate::reply::{Fate, ProbeKey, match_reply};
use crate::wire::ipv6::proto;

/// Raw sockets for the replies to probes of one protocol, sent from one local address.
pub struct ReplySockets {
    poll: RawPoll,
    local: Ipv6Addr,
}

impl ReplySockets {
    /// ICMPv6 always; TCP for RSTs and SYN-ACKs, SCTP for ABORTs and INIT ACKs (needs CAP_NET_RAW).
    pub fn open(local: Ipv6Addr, scope: u32, transport: u8) -> Result<Self, NetError> {
        let mut receivers = vec![RawReceiver::open(proto::ICMPV6, local, scope)?];
        if transport == proto::TCP || transport == proto::SCTP {
            receivers.push(RawReceiver::open(transport, local, scope)?);
        }
        Ok(ReplySockets {
            poll: RawPoll::new(receivers),
            local,
        })
    }

    /// The next reply that answers one of `keys`: its index, fate and arrival time.
    pub fn next_match(
        &mut self,
        keys: &[ProbeKey],
        deadline: Instant,
    ) -> Result<Option<(usize, Fate, Instant)>, NetError> {
        let local = self.local;
        while let Some(p) = self.poll.next(deadline)? {
            let arrived = p.arrived(local);
            if let Some((i, fate)) = match_reply(keys, &arrived) {
                return Ok(Some((i, fate, p.at)));
            }
        }
        Ok(None)
    }
}

/// Sends whole IPv6 packets: the raw socket, or a script in the tests.
pub trait PacketSender {
    fn send(&self, packet: &[u8], dst: Ipv6Addr, scope: u32) -> Result<usize, NetError>;
}

impl PacketSender for RawSender {
    fn send(&self, packet: &[u8], dst: Ipv6Addr, scope: u32) -> Result<usize, NetError> {
        RawSender::send(self, packet, dst, scope)
    }
}

/// Yields the replies that answer probes: the raw receive sockets, or a script in the tests.
pub trait ReplySource {
    /// The next reply that answers one of `keys`, waiting at most until `deadline`: the key's
    /// index, the fate, and when the reply arrived.
    fn next_match(
        &mut self,
        keys: &[ProbeKey],
        deadline: Instant,
    ) -> Result<Option<(usize, Fate, Instant)>, NetError>;
}

impl ReplySource for ReplySockets {
    fn next_match(
        &mut self,
        keys: &[ProbeKey],
        deadline: Instant,
    ) -> Result<Option<(usize, Fate, Instant)>, NetError> {
        ReplySockets::next_match(self, keys, deadline)
    }
}
