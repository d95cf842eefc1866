//! The hop-limit trace behind `hops` and the `auto` hop limit of `listen`/`connect`, and what it
//! says (`hops`). The trace keeps the flow's 5-tuple and flow label constant (Paris style, so ECMP
//! and firewalls see one flow) and tells probes apart by a field outside it: the TCP sequence
//! number, the SCTP tag, or the UDP payload (and so the checksum, which survives even an 8-byte
//! quote). It sends one hop limit after the other and stops at the first reply that is not an
//! expiry inside the site ([`hops::Hop::lets_trace_go_on`]), so nothing of it goes past the first
//! router outside the site: the peer's side never sees it. Sockets come in through
//! `net::{PacketSender, ReplySource}` and the flow from the caller, so it does no I/O of its own
//! and its logic is unit-tested with scripted sockets.

pub mod hops;

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use crate::net::{NetError, PacketSender, ReplySource};
use crate::param::{HopLimit, Prefix};
use crate::punch::plan::{Flow, probe_for};
use crate::reply::{Fate, ProbeKey};
use crate::wire::Proto;
use hops::{Hop, trace_end};

/// The payload of UDP trace probes, followed by the hop limit byte. Sessions drop datagrams that
/// carry it, in case a trace probe of the other side gets through.
pub const UDP_TRACE_MAGIC: &[u8] = b"synergy-craft hop ";

/// What to trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceSpec {
    /// The flow traced, as this host sends it (`punch::kernel_like`); each probe carries its own
    /// tag in it (`Flow::tagged`).
    pub flow: Flow,
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
    pub fn auto(
        flow: Flow,
        local: SocketAddrV6,
        peer: SocketAddrV6,
        site: Prefix,
        base: u32,
    ) -> Self {
        TraceSpec {
            flow,
            local,
            peer,
            max_hops: 30,
            wait: Duration::from_millis(500),
            max_silent: 3,
            site,
            base,
        }
    }
}

/// Sends probes with hop limits 1, 2, ... one at a time: the next one when the last one's reply
/// has come (and lets the trace go on) or `wait` has passed without one. Stops at the first reply
/// that ends the trace (an expiry outside the site, or anything that is not an expiry inside it),
/// after `max_silent` silent hop limits in a row, or at `max_hops`. Returns the hops sent.
pub fn trace(
    spec: &TraceSpec,
    sender: &impl PacketSender,
    replies: &mut impl ReplySource,
) -> Result<Vec<Hop>, NetError> {
    let mut keys = Vec::with_capacity(usize::from(spec.max_hops));
    let mut packets = Vec::with_capacity(usize::from(spec.max_hops));
    for h in 1..=spec.max_hops {
        let flow = spec.flow.tagged(spec.base.wrapping_add(u32::from(h)));
        let mut repr = probe_for(flow, spec.local, spec.peer, HopLimit(h));
        if flow.proto() == Proto::Udp {
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

#[cfg(test)]
mod tests {
    //! The trace's logic with scripted sockets: what it sends, when it stops, what it finds.
    use std::cell::RefCell;

    use std::net::Ipv6Addr;

    use super::hops::recommend;
    use super::*;

    /// Keeps every packet sent.
    #[derive(Default)]
    struct Sent(RefCell<Vec<Vec<u8>>>);

    impl PacketSender for Sent {
        fn send(&self, packet: &[u8], _: Ipv6Addr, _: u32) -> Result<usize, NetError> {
            self.0.borrow_mut().push(packet.to_vec());
            Ok(packet.len())
        }
    }

    /// Answers each probe sent, once, as `script` says for its hop limit (None: silence, and
    /// the wait passes at once).
    struct Script<'a> {
        sent: &'a Sent,
        answered: usize,
        script: fn(u8) -> Option<Fate>,
    }

    impl ReplySource for Script<'_> {
        fn next_match(
            &mut self,
            keys: &[ProbeKey],
            _: Instant,
        ) -> Result<Option<(usize, Fate, Instant)>, NetError> {
            let sent = self.sent.0.borrow();
            while let Some(p) = sent.get(self.answered) {
                self.answered += 1;
                let (Some(fate), Some(key)) = ((self.script)(p[7]), ProbeKey::from_packet(p))
                else {
                    continue;
                };
                let i = keys
                    .iter()
                    .position(|k| *k == key)
                    .expect("a key of a probe sent");
                return Ok(Some((i, fate, Instant::now())));
            }
            Ok(None)
        }
    }

    const FWA1: &str = "2001:db8:1::1";
    const R1: &str = "2001:db8:ff::1";

    fn run(script: fn(u8) -> Option<Fate>) -> (Vec<Hop>, Vec<u8>) {
        let (hops, sent) = run_flow(Flow::Udp, script);
        (hops, sent.iter().map(|p| p[7]).collect())
    }

    /// Traces `flow` against `script`; returns the hops and the packets sent.
    fn run_flow(flow: Flow, script: fn(u8) -> Option<Fate>) -> (Vec<Hop>, Vec<Vec<u8>>) {
        let spec = TraceSpec {
            flow,
            local: "[2001:db8:1::11]:4000".parse().unwrap(),
            peer: "[2001:db8:2::5]:5000".parse().unwrap(),
            max_hops: 30,
            wait: Duration::from_millis(500),
            max_silent: 3,
            site: "2001:db8:1::/48".parse().unwrap(),
            base: 7,
        };
        let sent = Sent::default();
        let mut replies = Script {
            sent: &sent,
            answered: 0,
            script,
        };
        let hops = trace(&spec, &sent, &mut replies).unwrap();
        let packets = sent.0.borrow().clone();
        (hops, packets)
    }

    /// A TCP trace: each hop limit's SYN carries its own sequence number (base + hop limit), the
    /// flow's options as given, and the replies are told apart by it.
    #[test]
    fn tcp_probes_are_told_apart_by_their_sequence_number() {
        let flow = Flow::Tcp {
            isn: 0,
            wscale: Some(7),
            mss: 1440,
        };
        let (hops, sent) = run_flow(flow, |h| match h {
            1 => expired(FWA1),
            2 => expired("2001:db8:1::2"),
            _ => expired(R1),
        });
        assert_eq!(sent.len(), 3, "{hops:?}");
        for (i, p) in sent.iter().enumerate() {
            let t = crate::wire::tcp::TcpRepr::parse(&p[40..]).unwrap().repr;
            assert_eq!((p[7], t.seq), (i as u8 + 1, 7 + i as u32 + 1));
            assert!(
                t.options
                    .contains(&crate::wire::tcp::TcpOption::Mss { value: 1440 })
            );
        }
        assert_eq!(recommend(&hops).hop_limit, Some(3));
    }

    fn expired(by: &str) -> Option<Fate> {
        Some(Fate::Expired {
            by: by.parse().unwrap(),
            code: 0,
        })
    }

    #[test]
    fn stops_at_the_first_router_outside_the_site() {
        let (hops, sent) = run(|h| expired(if h < 2 { FWA1 } else { R1 }));
        assert_eq!(sent, [1, 2], "nothing past the first router outside");
        assert_eq!(recommend(&hops).hop_limit, Some(2));
    }

    #[test]
    fn steps_over_a_silent_border_firewall() {
        let (hops, sent) = run(|h| match h {
            1 => None,
            2 => expired("2001:db8:1::2"),
            _ => expired(R1),
        });
        assert_eq!(sent, [1, 2, 3]);
        assert_eq!(recommend(&hops).hop_limit, Some(3));
    }

    #[test]
    fn gives_up_after_max_silent_hops_without_evidence() {
        let (hops, sent) = run(|_| None);
        assert_eq!(sent, [1, 2, 3]);
        assert_eq!(recommend(&hops).hop_limit, None);
    }

    #[test]
    fn a_responder_that_repeats_ends_it_without_a_recommendation() {
        let (hops, sent) = run(|_| {
            Some(Fate::Unreachable {
                by: FWA1.parse().unwrap(),
                code: 0,
            })
        });
        assert_eq!(sent, [1]);
        assert_eq!(recommend(&hops).hop_limit, None);
        let (hops, sent) = run(|_| expired(FWA1));
        assert_eq!(sent, [1, 2], "the second expiry at the same router ends it");
        assert_eq!(recommend(&hops).hop_limit, None);
    }

    #[test]
    fn a_reset_from_the_peer_ends_it_at_once() {
        let (hops, sent) = run(|_| {
            Some(Fate::Reset {
                by: "2001:db8:2::5".parse().unwrap(),
            })
        });
        assert_eq!(sent, [1]);
        assert_eq!(recommend(&hops).hop_limit, None);
    }
}
