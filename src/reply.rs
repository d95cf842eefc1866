//! Which probe a reply answers, and what it says of the probe's fate: an ICMPv6 error is matched by
//! the fields it quotes (addresses, next header, ports, and the TCP sequence number, SCTP initiate
//! tag or checksum that tell probes of one flow apart), never by the sender's address alone; a TCP
//! RST or SYN-ACK by its acknowledgment number, an SCTP ABORT or INIT ACK by its verification tag.
//! Received bytes are untrusted and parsed leniently. Pure: no I/O.

use std::net::Ipv6Addr;

use crate::param::Prefix;
use crate::wire::icmpv6::{IcmpError, IcmpErrorRepr, QuotedTransport};
use crate::wire::ipv6::proto;
use crate::wire::probe::{ProbeRepr, Transport, WireChecksum};
use crate::wire::sctp::{SctpRepr, chunk_type};
use crate::wire::tcp::{TcpFlags, TcpRepr};

/// What identifies one probe on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP sequence number.
    pub seq: Option<u32>,
    /// SCTP INIT initiate tag.
    pub init_tag: Option<u32>,
    pub checksum: WireChecksum,
}

impl ProbeKey {
    pub fn of(repr: &ProbeRepr, checksum: WireChecksum) -> Self {
        let (sport, dport) = repr.transport.ports();
        let (seq, init_tag) = match &repr.transport {
            Transport::Tcp(t) => (Some(t.seq), None),
            // The initiate tag the packet's leading chunk carries, as `from_packet` reads it (an
            // INIT is never bundled with other chunks, RFC 9260 §6.10).
            Transport::Sctp(s) => (
                None,
                s.chunks
                    .first()
                    .and_then(crate::wire::sctp::SctpChunk::initiate_tag),
            ),
            Transport::Udp(_) => (None, None),
        };
        ProbeKey {
            src: repr.ip.src,
            dst: repr.ip.dst,
            proto: repr.transport.next_header(),
            sport,
            dport,
            seq,
            init_tag,
            checksum,
        }
    }
}

impl ProbeKey {
    /// The key of a probe read back from its bytes (a whole IPv6 packet, as captured); None when
    /// it is not a TCP, UDP or SCTP packet this parser can read.
    pub fn from_packet(bytes: &[u8]) -> Option<Self> {
        let ip = crate::wire::ipv6::Ipv6Repr::parse(bytes).ok()?;
        let t = bytes.get(crate::wire::ipv6::HEADER_LEN..)?;
        let (sport, dport, seq, init_tag, checksum) = match ip.next_header {
            proto::TCP => {
                let crate::wire::tcp::TcpRead {
                    repr: r,
                    checksum: c,
                } = TcpRepr::parse(t).ok()?;
                (
                    r.src_port,
                    r.dst_port,
                    Some(r.seq),
                    None,
                    WireChecksum::Internet(c),
                )
            }
            proto::UDP => {
                let crate::wire::udp::UdpRead {
                    repr: r,
                    checksum: c,
                    ..
                } = crate::wire::udp::UdpRepr::parse(t).ok()?;
                (
                    r.src_port,
                    r.dst_port,
                    None,
                    None,
                    WireChecksum::Internet(c),
                )
            }
            proto::SCTP => {
                let s = SctpRepr::parse_summary(t).ok()?;
                (
                    s.src_port,
                    s.dst_port,
                    None,
                    s.initiate_tag,
                    WireChecksum::Crc32c(u32::from_le_bytes(s.checksum)),
                )
            }
            _ => return None,
        };
        Some(ProbeKey {
            src: ip.src,
            dst: ip.dst,
            proto: ip.next_header,
            sport,
            dport,
            seq,
            init_tag,
            checksum,
        })
    }
}

/// Something that arrived, as the receiving socket gives it (IPv6 header already removed).
#[derive(Debug, Clone, Copy)]
pub enum Arrived<'a> {
    /// An ICMPv6 message from `from`.
    Icmp { from: Ipv6Addr, msg: &'a [u8] },
    /// A TCP segment or SCTP packet (`proto` 6 or 132) from `from` to `to`.
    Transport {
        proto: u8,
        from: Ipv6Addr,
        to: Ipv6Addr,
        bytes: &'a [u8],
    },
}

/// What became of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Time exceeded: the hop limit ran out at `by` (code 0), as meant for a punch.
    Expired {
        by: Ipv6Addr,
        code: u8,
    },
    Unreachable {
        by: Ipv6Addr,
        code: u8,
    },
    TooBig {
        by: Ipv6Addr,
        mtu: u32,
    },
    ParamProblem {
        by: Ipv6Addr,
        code: u8,
        pointer: u32,
    },
    /// A TCP RST: the peer's side (the peer, or a firewall speaking for it) refused the probe.
    Reset {
        by: Ipv6Addr,
    },
    /// An SCTP ABORT.
    Aborted {
        by: Ipv6Addr,
    },
    /// A SYN-ACK or INIT ACK: the probe reached the peer itself.
    Answered {
        by: Ipv6Addr,
    },
}

impl Fate {
    pub fn by(&self) -> Ipv6Addr {
        match *self {
            Fate::Expired { by, .. }
            | Fate::Unreachable { by, .. }
            | Fate::TooBig { by, .. }
            | Fate::ParamProblem { by, .. }
            | Fate::Reset { by }
            | Fate::Aborted { by }
            | Fate::Answered { by } => by,
        }
    }

    /// Whether the reply shows that the probe got past the local site to the peer's side, where it
    /// can be reset or rejected (the hazard of a too-high hop limit): a RST, ABORT or answer from
    /// the peer, or a rejection (administratively prohibited, port unreachable, source policy,
    /// reject route, unknown next header) sent from outside the local site.
    pub fn reached_peer_side(&self, site: &Prefix) -> bool {
        match *self {
            Fate::Reset { .. } | Fate::Aborted { .. } | Fate::Answered { .. } => true,
            Fate::Unreachable { by, code } => matches!(code, 1 | 4 | 5 | 6) && !site.contains(by),
            Fate::ParamProblem { by, code, .. } => code == 1 && !site.contains(by),
            Fate::Expired { .. } | Fate::TooBig { .. } => false,
        }
    }

    /// A short human description.
    pub fn describe(&self) -> String {
        match *self {
            Fate::Expired { by, code: 0 } => format!("hop limit expired at {by}"),
            Fate::Expired { by, code } => format!("time exceeded (code {code}) at {by}"),
            Fate::Unreachable { by, code } => {
                let why = match code {
                    0 => "no route",
                    1 => "administratively prohibited",
                    2 => "beyond scope",
                    3 => "address unreachable",
                    4 => "port unreachable",
                    5 => "source address failed policy",
                    6 => "reject route",
                    _ => "unreachable",
                };
                format!("{why} (ICMPv6 from {by})")
            }
            Fate::TooBig { by, mtu } => format!("packet too big for MTU {mtu} at {by}"),
            Fate::ParamProblem { by, code, pointer } => {
                format!("parameter problem code {code} pointer {pointer} from {by}")
            }
            Fate::Reset { by } => {
                format!("reset (TCP RST from {by}, or a firewall using its address)")
            }
            Fate::Aborted { by } => format!("aborted (SCTP ABORT from {by})"),
            Fate::Answered { by } => format!("answered by the peer {by}"),
        }
    }
}

/// The index in `keys` of the probe a reply answers, and the fate it tells; None when it answers
/// none of them or cannot be told apart.
pub fn match_reply(keys: &[ProbeKey], arrived: &Arrived<'_>) -> Option<(usize, Fate)> {
    match *arrived {
        Arrived::Icmp { from, msg } => {
            let r = IcmpErrorRepr::parse(msg).ok()?;
            let q = r.quote?;
            let t = q.transport?;
            let candidates: Vec<usize> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| {
                    k.src == q.src
                        && k.dst == q.dst
                        && k.proto == q.next_header
                        && quote_fits(k, &t)
                })
                .map(|(i, _)| i)
                .collect();
            let [i] = candidates[..] else { return None };
            let fate = match r.error {
                IcmpError::TimeExceeded { code } => Fate::Expired { by: from, code },
                IcmpError::DestUnreachable { code } => Fate::Unreachable { by: from, code },
                IcmpError::PacketTooBig { mtu } => Fate::TooBig { by: from, mtu },
                IcmpError::ParamProblem { code, pointer } => Fate::ParamProblem {
                    by: from,
                    code,
                    pointer,
                },
            };
            Some((i, fate))
        }
        Arrived::Transport {
            proto: p,
            from,
            to,
            bytes,
        } => {
            let direct = |k: &ProbeKey, sport: u16, dport: u16| {
                k.proto == p && k.dst == from && k.src == to && k.dport == sport && k.sport == dport
            };
            if p == proto::TCP {
                let t = TcpRepr::parse_quoted(bytes).ok()?.repr;
                let acked = t.flags.has(TcpFlags::ACK).then_some(t.ack);
                let i = keys.iter().position(|k| {
                    direct(k, t.src_port, t.dst_port) && k.seq.map(|s| s.wrapping_add(1)) == acked
                })?;
                if t.flags.has(TcpFlags::RST) {
                    Some((i, Fate::Reset { by: from }))
                } else if t.flags.has(TcpFlags::SYN) {
                    Some((i, Fate::Answered { by: from }))
                } else {
                    None
                }
            } else if p == proto::SCTP {
                let s = SctpRepr::parse_summary(bytes).ok()?;
                let i = keys.iter().position(|k| {
                    direct(k, s.src_port, s.dst_port) && k.init_tag == Some(s.verification_tag)
                })?;
                match s.first_chunk_type? {
                    chunk_type::ABORT => Some((i, Fate::Aborted { by: from })),
                    chunk_type::INIT_ACK => Some((i, Fate::Answered { by: from })),
                    _ => None,
                }
            } else {
                None
            }
        }
    }
}

/// Whether the quoted transport fields that are present agree with the probe.
fn quote_fits(k: &ProbeKey, t: &QuotedTransport) -> bool {
    let csum16 = |c: Option<u16>| match (c, k.checksum) {
        (Some(c), WireChecksum::Internet(w)) => c == w,
        _ => true,
    };
    match *t {
        QuotedTransport::Tcp {
            src_port,
            dst_port,
            seq,
            checksum,
        } => {
            (src_port, dst_port) == (k.sport, k.dport)
                && seq.is_none_or(|s| Some(s) == k.seq)
                && csum16(checksum)
        }
        QuotedTransport::Udp {
            src_port,
            dst_port,
            checksum,
        } => (src_port, dst_port) == (k.sport, k.dport) && csum16(checksum),
        QuotedTransport::Sctp {
            src_port,
            dst_port,
            checksum,
            initiate_tag,
            ..
        } => {
            (src_port, dst_port) == (k.sport, k.dport)
                && initiate_tag.is_none_or(|t| Some(t) == k.init_tag)
                && match (checksum, k.checksum) {
                    (Some(c), WireChecksum::Crc32c(w)) => c == w,
                    _ => true,
                }
        }
    }
}

/// Matches the replies of one run to its probes, identical ones included. Probes that look the
/// same on the wire (one `ProbeKey`: a `--count` above 1, or a sweep of the hop limit alone, which
/// no quote shows) form a group; `match_reply` runs on one key per group, so they are never
/// ambiguous to each other, and a reply that answers a group goes to its earliest probe that was
/// sent before the reply and is not answered yet: identical probes are matched in send order.
#[derive(Debug, Clone)]
pub(crate) struct RunMatcher {
    distinct: Vec<ProbeKey>,
    /// The probes (indices into the run) of each distinct key, in send order.
    members: Vec<Vec<usize>>,
    answered: Vec<bool>,
}

impl RunMatcher {
    /// `keys`: every probe of the run, in send order.
    pub fn new(keys: &[ProbeKey]) -> Self {
        let mut distinct: Vec<ProbeKey> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut group_of = std::collections::HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let g = *group_of.entry(*k).or_insert_with(|| {
                distinct.push(*k);
                members.push(Vec::new());
                distinct.len() - 1
            });
            members[g].push(i);
        }
        RunMatcher {
            distinct,
            members,
            answered: vec![false; keys.len()],
        }
    }

    /// One key per group of identical probes, for `match_reply`.
    pub fn distinct(&self) -> &[ProbeKey] {
        &self.distinct
    }

    /// The probe a reply to group `group` answers: the earliest unanswered one for which
    /// `sent_before_reply` holds, and whether it had identical twins (matched by order). None when
    /// every such probe is answered already (a duplicate reply).
    pub fn assign(
        &mut self,
        group: usize,
        sent_before_reply: impl Fn(usize) -> bool,
    ) -> Option<(usize, bool)> {
        let members = self.members.get(group)?;
        let twins = members.len() > 1;
        let n = members
            .iter()
            .copied()
            .find(|&m| !self.answered[m] && sent_before_reply(m))?;
        self.answered[n] = true;
        Some((n, twins))
    }

    /// The probes no reply was assigned to, in send order.
    pub fn unanswered(&self) -> impl Iterator<Item = usize> + '_ {
        self.answered
            .iter()
            .enumerate()
            .filter(|(_, a)| !**a)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(hop: u8, payload: &[u8]) -> (ProbeRepr, Vec<u8>, ProbeKey) {
        let r = ProbeRepr {
            payload: payload.to_vec(),
            ..crate::fixtures::udp_probe(4444, hop)
        };
        let (b, c) = r.to_bytes().unwrap();
        let k = ProbeKey::of(&r, c);
        (r, b, k)
    }

    #[test]
    fn the_key_of_a_probe_is_the_key_read_from_its_bytes_whatever_its_chunks() {
        use crate::wire::sctp::{InitChunk, SctpChunk, SctpRepr};
        let init = SctpChunk::Init(InitChunk {
            initiate_tag: 0x0102_0304,
            a_rwnd: 65535,
            outbound_streams: 10,
            inbound_streams: 10,
            initial_tsn: 7,
            params: vec![],
        });
        let punch = SctpChunk::stale_cookie_error(9);
        let raw = |ctype, value: &[u8]| SctpChunk::Generic {
            ctype,
            flags: 0,
            value: value.to_vec(),
        };
        for chunks in [
            vec![init.clone()],
            vec![punch.clone()],
            vec![punch.clone(), init.clone()],
            vec![init.clone(), punch.clone()],
            vec![raw(chunk_type::INIT, &[1, 2, 3, 4, 5])],
            vec![raw(chunk_type::INIT_ACK, &[1, 2, 3, 4])],
            vec![raw(chunk_type::INIT, &[1, 2, 3])],
            vec![raw(chunk_type::INIT, &[])],
        ] {
            let (mut r, _, _) = probe(2, b"");
            r.transport = Transport::Sctp(SctpRepr {
                src_port: 4444,
                dst_port: 5555,
                verification_tag: 0,
                chunks: chunks.clone(),
            });
            let (b, c) = r.to_bytes().unwrap();
            assert_eq!(
                ProbeKey::from_packet(&b),
                Some(ProbeKey::of(&r, c)),
                "{chunks:?}"
            );
        }
    }

    fn icmp(t: u8, code: u8, quote: &[u8]) -> Vec<u8> {
        let mut m = vec![t, code, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(quote);
        m
    }

    #[test]
    fn udp_probes_of_one_flow_told_apart_by_checksum_even_in_an_8_byte_quote() {
        let (_, b1, k1) = probe(1, b"hop 1");
        let (_, b2, k2) = probe(2, b"hop 2");
        let keys = [k1, k2];
        let from: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
        let m = icmp(3, 0, &b2[..48]);
        assert_eq!(
            match_reply(&keys, &Arrived::Icmp { from, msg: &m }),
            Some((1, Fate::Expired { by: from, code: 0 }))
        );
        // Only the ports quoted: both probes fit, so nothing is matched.
        let m = icmp(3, 0, &b1[..44]);
        assert_eq!(match_reply(&keys, &Arrived::Icmp { from, msg: &m }), None);
        // Another flow's quote matches nothing.
        let mut other = b1.clone();
        other[40] = 0x99;
        let m = icmp(3, 0, &other);
        assert_eq!(match_reply(&keys, &Arrived::Icmp { from, msg: &m }), None);
    }

    #[test]
    fn key_from_packet_equals_key_from_repr() {
        let (_, bytes, key) = probe(3, b"x");
        assert_eq!(ProbeKey::from_packet(&bytes), Some(key));
    }

    #[test]
    fn peer_side() {
        let site: Prefix = "2001:db8:1::/48".parse().unwrap();
        let inside: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let outside: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
        assert!(Fate::Reset { by: outside }.reached_peer_side(&site));
        assert!(
            Fate::Unreachable {
                by: outside,
                code: 1
            }
            .reached_peer_side(&site)
        );
        assert!(
            !Fate::Unreachable {
                by: inside,
                code: 1
            }
            .reached_peer_side(&site)
        );
        assert!(
            !Fate::Unreachable {
                by: outside,
                code: 0
            }
            .reached_peer_side(&site)
        );
        assert!(
            !Fate::Expired {
                by: outside,
                code: 0
            }
            .reached_peer_side(&site)
        );
    }

    #[test]
    fn identical_probes_are_matched_in_send_order() {
        let k = |sport: u16| ProbeKey {
            src: "2001:db8:1::11".parse().unwrap(),
            dst: "2001:db8:2::5".parse().unwrap(),
            proto: proto::UDP,
            sport,
            dport: 5555,
            seq: None,
            init_tag: None,
            checksum: WireChecksum::Internet(7),
        };
        // Probes 0, 1, 3 are identical; 2 differs.
        let keys = [k(1), k(1), k(2), k(1)];
        let mut m = RunMatcher::new(&keys);
        assert_eq!(m.distinct().len(), 2);
        // A reply that arrived after probes 0..=1 only were sent.
        assert_eq!(m.assign(0, |i| i <= 1), Some((0, true)));
        assert_eq!(m.assign(0, |i| i <= 1), Some((1, true)));
        assert_eq!(m.assign(0, |i| i <= 1), None, "probe 3 was not sent yet");
        assert_eq!(m.assign(0, |_| true), Some((3, true)));
        assert_eq!(
            m.assign(0, |_| true),
            None,
            "a duplicate reply answers nothing"
        );
        assert_eq!(m.unanswered().collect::<Vec<_>>(), vec![2]);
        assert_eq!(m.assign(1, |_| true), Some((2, false)));
        assert_eq!(m.unanswered().count(), 0);
        assert_eq!(m.assign(9, |_| true), None);
    }
}
