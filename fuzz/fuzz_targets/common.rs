//! A probe made from fuzz bytes: which transport, which options or chunks, and every value.

use synergy_wire::ipv6::FlowLabel;
use synergy_wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
use synergy_wire::sctp::{InitChunk, SctpChunk, SctpRepr};
use synergy_wire::tcp::{TcpFlags, TcpOption, TcpRepr};
use synergy_wire::udp::UdpRepr;

/// Reads numbers from the fuzz bytes, zeros once they run out.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// A probe of any transport, with up to four TCP options (kinds may repeat) or up to three SCTP
/// chunks (INITs may repeat), every value from the bytes.
pub fn probe(b: &mut Bytes<'_>) -> ProbeRepr {
    let kind = b.u8();
    let transport = match kind % 3 {
        0 => {
            let mut options = Vec::new();
            for _ in 0..b.u8() % 5 {
                options.push(match b.u8() % 6 {
                    0 => TcpOption::Nop,
                    1 => TcpOption::Mss { value: b.u16() },
                    2 => TcpOption::WindowScale { shift: b.u8() },
                    3 => TcpOption::SackPermitted,
                    4 => TcpOption::Timestamps {
                        tsval: b.u32(),
                        tsecr: b.u32(),
                    },
                    _ => TcpOption::Raw {
                        bytes: vec![b.u8(), 3, b.u8()],
                    },
                });
            }
            Transport::Tcp(TcpRepr {
                src_port: b.u16(),
                dst_port: b.u16(),
                seq: b.u32(),
                ack: b.u32(),
                flags: TcpFlags(b.u8()),
                window: b.u16(),
                urgent: b.u16(),
                options,
            })
        }
        1 => Transport::Udp(UdpRepr {
            src_port: b.u16(),
            dst_port: b.u16(),
        }),
        _ => {
            let mut chunks = Vec::new();
            for _ in 0..1 + b.u8() % 3 {
                let shape = b.u8() % 3;
                chunks.push(if shape == 2 {
                    // Bytes with the type of an INIT or INIT ACK, of any length.
                    SctpChunk::Generic {
                        ctype: 1 + b.u8() % 2,
                        flags: b.u8(),
                        value: vec![b.u8(); usize::from(b.u8() % 8)],
                    }
                } else if shape == 0 {
                    SctpChunk::Init(InitChunk {
                        initiate_tag: b.u32(),
                        a_rwnd: b.u32(),
                        outbound_streams: b.u16(),
                        inbound_streams: b.u16(),
                        initial_tsn: b.u32(),
                        params: vec![],
                    })
                } else {
                    SctpChunk::stale_cookie_error(b.u32())
                });
            }
            Transport::Sctp(SctpRepr {
                src_port: b.u16(),
                dst_port: b.u16(),
                verification_tag: b.u32(),
                chunks,
            })
        }
    };
    let sctp = matches!(transport, Transport::Sctp(_));
    let payload = if sctp {
        vec![]
    } else {
        vec![b.u8(); usize::from(b.u8() % 16)]
    };
    ProbeRepr {
        ip: {
            let src = std::net::Ipv6Addr::from(b.u32() as u128 | 0x2001_0db8 << 96);
            let dst = std::net::Ipv6Addr::from(b.u32() as u128 | 0x2001_0db8_0002 << 80);
            IpFields {
                traffic_class: b.u8(),
                flow_label: FlowLabel::new(b.u32() & FlowLabel::MAX).unwrap_or_default(),
                payload_len: (b.u8() & 1 == 1).then(|| b.u16()),
                ..IpFields::new(src, dst, b.u8())
            }
        },
        transport,
        payload,
        checksum_mode: match b.u8() % 3 {
            0 => ChecksumMode::Correct,
            1 => ChecksumMode::Bad,
            _ if sctp => ChecksumMode::Fixed(b.u32()),
            _ => ChecksumMode::Fixed(u32::from(b.u16())),
        },
    }
}
