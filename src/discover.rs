//! Sends probes and collects what comes back: the reply listener behind `probe --watch`, and the
//! hop-limit trace behind `hops` and the `auto` hop limit of `listen`/`connect`. The trace keeps the
//! flow's 5-tuple and flow label constant (Paris style, so ECMP and firewalls see one flow) and
//! tells probes apart by a field outside it: the TCP sequence number, the SCTP initiate tag, or the
//! UDP payload (and so the checksum, which survives even an 8-byte quote). All hop limits are in
//! flight at once. Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::cli::Proto;
use crate::hops::{Hop, Place};
use crate::net::NetError;
use crate::net::raw::RawSender;
use crate::net::rawrecv::{RawPoll, RawReceiver};
use crate::param::{HopLimit, Prefix};
use crate::punch::kernel_like_tcp;
use crate::punch::plan::{Flow, probe_for};
use crate::reply::{Arrived, Fate, ProbeKey, match_reply};
use crate::wire::ipv6::proto;

/// The payload of UDP trace probes, followed by the hop limit byte. Sessions drop datagrams that
/// carry it, in case a trace probe of the other side gets through.
pub const UDP_TRACE_MAGIC: &[u8] = b"synergy-craft hop ";

/// Raw sockets for the replies to probes of one protocol, sent from one local address.
pub struct Replies {
    poll: RawPoll,
    local: Ipv6Addr,
}

impl Replies {
    /// ICMPv6 always; TCP for RSTs and SYN-ACKs, SCTP for ABORTs and INIT ACKs (needs CAP_NET_RAW).
    pub fn open(local: Ipv6Addr, scope: u32, transport: u8) -> Result<Self, NetError> {
        let mut receivers = vec![RawReceiver::open(proto::ICMPV6, local, scope)?];
        if transport == proto::TCP || transport == proto::SCTP {
            receivers.push(RawReceiver::open(transport, local, scope)?);
        }
        Ok(Replies {
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
            let arrived = if p.proto == proto::ICMPV6 {
                Arrived::Icmp {
                    from: p.from,
                    msg: p.bytes,
                }
            } else {
                Arrived::Transport {
                    proto: p.proto,
                    from: p.from,
                    to: local,
                    bytes: p.bytes,
                }
            };
            if let Some((i, fate)) = match_reply(keys, &arrived) {
                return Ok(Some((i, fate, Instant::now())));
            }
        }
        Ok(None)
    }
}

/// What to trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceSpec {
    pub proto: Proto,
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
    pub max_hops: u8,
    pub wait: Duration,
    pub site: Prefix,
    /// Probe h carries TCP sequence number / SCTP initiate tag `base + h`.
    pub base: u32,
}

/// Sends one probe per hop limit 1..=max_hops at once and collects replies until every hop limit
/// up to the first reply from the peer's side has answered, or `wait` has passed.
pub fn trace(
    spec: &TraceSpec,
    sender: &RawSender,
    replies: &mut Replies,
) -> Result<Vec<Hop>, NetError> {
    let mut keys = Vec::with_capacity(usize::from(spec.max_hops));
    let mut packets = Vec::with_capacity(usize::from(spec.max_hops));
    // The TCP options as the kernel's own SYN has them, looked up once (route, sysctls).
    let tcp = if spec.proto == Proto::Tcp {
        kernel_like_tcp(0, spec.peer)
    } else {
        Flow::Udp
    };
    for h in 1..=spec.max_hops {
        let tag = spec.base.wrapping_add(u32::from(h));
        let flow = match spec.proto {
            Proto::Tcp => tcp.with_isn(tag),
            Proto::Udp => Flow::Udp,
            Proto::Sctp => Flow::Sctp {
                init_tag: tag.max(1),
                tsn: tag,
            },
        };
        let mut repr = probe_for(flow, spec.local, spec.peer, HopLimit(h));
        if spec.proto == Proto::Udp {
            repr.payload = [UDP_TRACE_MAGIC, &[h]].concat();
        }
        let (bytes, checksum) = repr
            .to_bytes()
            .map_err(|e| NetError::Build(e.to_string()))?;
        keys.push(ProbeKey::of(&repr, checksum));
        packets.push(bytes);
    }
    let start = Instant::now();
    for p in &packets {
        sender.send(p, *spec.peer.ip(), spec.peer.scope_id())?;
    }
    let deadline = start + spec.wait;
    let mut got: Vec<Option<(Fate, Duration)>> = vec![None; packets.len()];
    while let Some((i, fate, at)) = replies.next_match(&keys, deadline)? {
        if got[i].is_none() {
            got[i] = Some((fate, at.duration_since(start)));
        }
        let hops: Vec<Hop> = hops_of(&got, &spec.site);
        let peer_side = hops.iter().position(|h| h.place == Place::PeerSide);
        let upto = peer_side.map_or(hops.len(), |p| p + 1);
        if hops[..upto].iter().all(|h| h.place != Place::Silent) {
            break;
        }
    }
    Ok(hops_of(&got, &spec.site))
}

fn hops_of(got: &[Option<(Fate, Duration)>], site: &Prefix) -> Vec<Hop> {
    got.iter()
        .enumerate()
        .map(|(i, r)| Hop::new(u8::try_from(i + 1).unwrap_or(u8::MAX), *r, site))
        .collect()
}
