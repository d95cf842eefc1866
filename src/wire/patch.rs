//! Fast probe variants: a probe built once, then copied and patched per probe in the fields a
//! sweep varies (hop limit, ports, TCP sequence number, SCTP initiate tag), with the TCP/UDP
//! checksum updated incrementally (RFC 1624) and SCTP's CRC32c recomputed, because CRC32c cannot
//! be updated that way. The result equals building the probe from scratch. Pure: no I/O.

use super::checksum;
use super::ipv6::{self, field as ip6};
use super::probe::{ChecksumMode, ProbeRepr, Transport};
use super::{sctp, tcp, udp};

/// The values that vary between probes of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub hop_limit: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// SCTP INIT initiate tag.
    pub init_tag: u32,
}

impl Variant {
    /// `repr` with this variant's values (the slow path, for reports).
    pub fn apply(&self, repr: &ProbeRepr) -> ProbeRepr {
        let mut r = repr.clone();
        r.ip.hop_limit = self.hop_limit;
        match &mut r.transport {
            Transport::Tcp(t) => {
                (t.src_port, t.dst_port, t.seq) = (self.sport, self.dport, self.seq)
            }
            Transport::Udp(u) => (u.src_port, u.dst_port) = (self.sport, self.dport),
            Transport::Sctp(s) => {
                (s.src_port, s.dst_port) = (self.sport, self.dport);
                if let Some(sctp::SctpChunk::Init(i)) = s.chunks.first_mut() {
                    i.initiate_tag = self.init_tag;
                }
            }
        }
        r
    }
}

/// A built probe and what is needed to patch copies of it.
#[derive(Debug, Clone)]
pub struct Patcher {
    template: Vec<u8>,
    base: Variant,
    proto: u8,
    mode: ChecksumMode,
    /// Whether the SCTP packet starts with an INIT chunk (whose initiate tag may vary).
    sctp_init: bool,
    /// The template's correct TCP/UDP checksum as it stands on the wire, the base of every
    /// incremental update (a deliberately bad one is made from the updated correct one).
    base_correct: u16,
}

const T: usize = ipv6::HEADER_LEN;

impl Patcher {
    /// Builds the template from `repr`; its own values are the base of every patch.
    pub fn new(repr: &ProbeRepr) -> Result<Self, super::WireError> {
        let (template, _) = repr.to_bytes()?;
        let mut correct = repr.clone();
        correct.checksum_mode = ChecksumMode::Correct;
        let base_correct = match correct.to_bytes()?.1 {
            super::probe::WireChecksum::Internet(c) => c,
            super::probe::WireChecksum::Crc32c(_) => 0,
        };
        let (sport, dport) = repr.transport.ports();
        let (seq, init_tag, sctp_init) = match &repr.transport {
            Transport::Tcp(t) => (t.seq, 0, false),
            Transport::Sctp(s) => match s.chunks.first() {
                Some(sctp::SctpChunk::Init(i)) => (0, i.initiate_tag, true),
                _ => (0, 0, false),
            },
            Transport::Udp(_) => (0, 0, false),
        };
        Ok(Patcher {
            template,
            base: Variant {
                hop_limit: repr.ip.hop_limit,
                sport,
                dport,
                seq,
                init_tag,
            },
            proto: repr.transport.next_header(),
            mode: repr.checksum_mode,
            sctp_init,
            base_correct,
        })
    }

    pub fn len(&self) -> usize {
        self.template.len()
    }

    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    pub fn base(&self) -> Variant {
        self.base
    }

    /// The checksum to store given the correct one, as `ProbeRepr::emit` does.
    fn finish(&self, correct: u16) -> u16 {
        if self.mode == ChecksumMode::Bad {
            checksum::corrupt16(correct)
        } else {
            correct
        }
    }

    /// Writes the probe for `v` into `out` (exactly `len()` bytes).
    pub fn write(&self, v: &Variant, out: &mut [u8]) {
        out.copy_from_slice(&self.template);
        out[ip6::HOP_LIMIT] = v.hop_limit;
        let b = &self.base;
        let ports = |out: &mut [u8]| {
            out[T..T + 2].copy_from_slice(&v.sport.to_be_bytes());
            out[T + 2..T + 4].copy_from_slice(&v.dport.to_be_bytes());
        };
        let fixed = matches!(self.mode, ChecksumMode::Fixed(_));
        match self.proto {
            ipv6::proto::TCP => {
                ports(out);
                out[T + 4..T + 8].copy_from_slice(&v.seq.to_be_bytes());
                if !fixed {
                    let f = T + tcp::field::CHECKSUM.start;
                    let mut c = self.base_correct;
                    c = checksum::update16(c, b.sport, v.sport);
                    c = checksum::update16(c, b.dport, v.dport);
                    c = checksum::update32(c, b.seq, v.seq);
                    out[f..f + 2].copy_from_slice(&self.finish(c).to_be_bytes());
                }
            }
            ipv6::proto::UDP => {
                ports(out);
                if !fixed {
                    let f = T + udp::field::CHECKSUM.start;
                    let mut c = self.base_correct;
                    c = checksum::update16(c, b.sport, v.sport);
                    c = checksum::update16(c, b.dport, v.dport);
                    // A zero result is sent as all ones (RFC 8200 §8.1).
                    let c = self.finish(checksum::udp_wire_value(c));
                    out[f..f + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
            _ => {
                ports(out);
                if self.sctp_init {
                    let at = T + sctp::field::CHUNKS + sctp::chunk_field::VALUE;
                    out[at..at + 4].copy_from_slice(&v.init_tag.to_be_bytes());
                }
                if !fixed {
                    let f = T + sctp::field::CHECKSUM.start;
                    out[f..f + 4].fill(0);
                    let crc = checksum::crc32c(&out[T..]);
                    let crc = if self.mode == ChecksumMode::Bad {
                        !crc
                    } else {
                        crc
                    };
                    out[f..f + 4].copy_from_slice(&checksum::sctp_wire_bytes(crc));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::FlowLabel;
    use crate::wire::probe::IpFields;
    use crate::wire::sctp::{InitChunk, SctpChunk, SctpRepr};
    use crate::wire::tcp::{TcpFlags, TcpOption, TcpRepr};
    use crate::wire::udp::UdpRepr;

    fn repr(transport: Transport, payload: &[u8], mode: ChecksumMode) -> ProbeRepr {
        ProbeRepr {
            ip: IpFields {
                src: "2001:db8:1::11".parse().unwrap(),
                dst: "2001:db8:2::5".parse().unwrap(),
                hop_limit: 3,
                traffic_class: 0,
                flow_label: FlowLabel::default(),
            },
            transport,
            payload: payload.to_vec(),
            checksum_mode: mode,
        }
    }

    fn with(r: &ProbeRepr, v: &Variant) -> ProbeRepr {
        v.apply(r)
    }

    /// Patched copies equal probes built from scratch, for every transport and checksum mode.
    #[test]
    fn patched_equals_built() {
        let tcp = Transport::Tcp(TcpRepr {
            src_port: 1000,
            dst_port: 80,
            seq: 7,
            ack: 0,
            flags: TcpFlags(TcpFlags::SYN),
            window: 65535,
            urgent: 0,
            options: vec![TcpOption::Mss { value: 1440 }],
        });
        let udp = Transport::Udp(UdpRepr {
            src_port: 1000,
            dst_port: 53,
        });
        let sctp = Transport::Sctp(SctpRepr {
            src_port: 1000,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![SctpChunk::Init(InitChunk {
                initiate_tag: 9,
                a_rwnd: 65535,
                outbound_streams: 10,
                inbound_streams: 10,
                initial_tsn: 1,
                params: vec![],
            })],
        });
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for t in [tcp, udp, sctp] {
            for mode in [
                ChecksumMode::Correct,
                ChecksumMode::Bad,
                ChecksumMode::Fixed(0x1234),
            ] {
                for payload in [&b""[..], b"x", b"synergy"] {
                    if matches!(t, Transport::Sctp(_)) && !payload.is_empty() {
                        continue;
                    }
                    let r = repr(t.clone(), payload, mode);
                    let p = Patcher::new(&r).unwrap();
                    let mut out = vec![0u8; p.len()];
                    for _ in 0..2000 {
                        let v = Variant {
                            hop_limit: next() as u8,
                            sport: (next() as u16).max(1),
                            dport: (next() as u16).max(1),
                            seq: next() as u32,
                            init_tag: (next() as u32).max(1),
                        };
                        p.write(&v, &mut out);
                        assert_eq!(
                            out,
                            with(&r, &v).to_bytes().unwrap().0,
                            "{:?} {mode:?} {v:?}",
                            r.transport.name()
                        );
                    }
                }
            }
        }
    }
}
