//! Sends probes and collects what comes back: the reply listener behind `probe --watch`, and the
//! hop-limit trace behind `hops` and the `auto` hop limit of `listen`/`connect`. The trace keeps the
//! flow's 5-tuple and flow label constant (Paris style, so ECMP and firewalls see one flow) and
//! tells probes apart by a field outside it: the TCP sequence number, the SCTP tag, or the UDP
//! payload (and so the checksum, which survives even an 8-byte quote). It sends one hop limit after
//! the other and stops at the first reply that is not an expiry inside the site
//! (`hops::Hop::lets_trace_go_on`), so nothing of it goes past the first router outside the site:
//! the peer's side never sees it. Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::hops::{Hop, trace_end};
use crate::net::NetError;
use crate::net::raw::RawSender;
use crate::net::rawrecv::{RawPoll, RawReceiver};
use crate::param::{HopLimit, Prefix};
use crate::punch::kernel_like_tcp;
use crate::punch::plan::{Flow, probe_for};
use crate::reply::{Arrived, Fate, ProbeKey, match_reply};
use crate::wire::Proto;
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
                return Ok(Some((i, fate, p.at)));
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
    /// How long each hop limit's reply is waited for before the next hop limit is sent.
    pub wait: Duration,
    /// The trace stops after this many silent hop limits in a row.
    pub max_silent: u8,
    pub site: Prefix,
    /// Probe h carries TCP sequence number / SCTP tag `base + h`.
    pub base: u32,
}

impl TraceSpec {
    /// The trace the `auto` hop limit of a session runs: at most 30 hops, 500 ms per hop, three
    /// silent hops in a row.
    pub fn auto(proto: Proto, local: SocketAddrV6, peer: SocketAddrV6, site: Prefix) -> Self {
        TraceSpec {
            proto,
            local,
            peer,
            max_hops: 30,
            wait: Duration::from_millis(500),
            max_silent: 3,
            site,
            base: crate::net::random_u32(),
        }
    }
}

/// Sends probes with hop limits 1, 2, ... one at a time: the next one when the last one's reply
/// has come (and lets the trace go on) or `wait` has passed without one. Stops at the first reply
/// that ends the trace (an expiry outside the site, or anything that is not an expiry inside it),
/// after `max_silent` silent hop limits in a row, or at `max_hops`. Returns the hops sent.
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
            Proto::Sctp => Flow::Sctp { mark: tag },
        };
        let mut repr = probe_for(flow, spec.local, spec.peer, HopLimit(h));
        if spec.proto == Proto::Udp {
            repr.payload = [UDP_TRACE_MAGIC, &[h]].concat();
        }
        let (bytes, checksum) = repr.to_bytes()?;
        keys.push(ProbeKey::of(&repr, checksum));
        packets.push(bytes);
    }
    let mut sent_at: Vec<Instant> = Vec::with_capacity(packets.len());
    let mut got: Vec<Option<(Fate, Duration)>> = Vec::with_capacity(packets.len());
    let mut silent_run = 0u8;
    for p in &packets {
        let now = Instant::now();
        sender.send(p, *spec.peer.ip(), spec.peer.scope_id())?;
        sent_at.push(now);
        got.push(None);
        let this = got.len() - 1;
        let deadline = now + spec.wait;
        loop {
            if trace_end(&hops_of(&got, &spec.site)).is_some() {
                return Ok(hops_of(&got, &spec.site));
            }
            if got[this].is_some() {
                break;
            }
            match replies.next_match(&keys[..got.len()], deadline)? {
                Some((i, fate, at)) => {
                    if let (Some(slot @ None), Some(sent)) = (got.get_mut(i), sent_at.get(i)) {
                        *slot = Some((fate, at.saturating_duration_since(*sent)));
                    }
                }
                None => break,
            }
        }
        silent_run = if got[this].is_some() {
            0
        } else {
            silent_run + 1
        };
        if silent_run >= spec.max_silent {
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
