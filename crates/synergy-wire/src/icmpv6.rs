//! ICMPv6 error messages (RFC 4443 §3: destination unreachable, packet too big, time exceeded,
//! parameter problem) and the invoking packet they quote, which RFC 4443 §2.4 (c) lets a sender
//! cut anywhere: every field of the quote is read only if its bytes are there. Untrusted input: no
//! panic and no allocation, whatever arrives. Pure: no I/O.

use std::net::Ipv6Addr;

use super::ipv6::{self, Ipv6Repr, proto};
use super::{Field, WireError, need};

/// Byte ranges of an ICMPv6 error message.
pub mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Unused (time exceeded, unreachable), MTU (packet too big) or pointer (parameter problem).
    pub const PARAM: Field = 4..8;
    pub const QUOTE: usize = 8;
}

pub const HEADER_LEN: usize = 8;

/// ICMPv6 error types (RFC 4443 §3).
pub mod kind {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
}

/// The error itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Codes (RFC 4443 §3.1): 0 no route, 1 administratively prohibited, 2 beyond scope,
    /// 3 address unreachable, 4 port unreachable, 5 source policy, 6 reject route.
    DestUnreachable {
        code: u8,
    },
    PacketTooBig {
        mtu: u32,
    },
    /// Code 0: hop limit exceeded in transit; 1: fragment reassembly time exceeded.
    TimeExceeded {
        code: u8,
    },
    ParamProblem {
        code: u8,
        pointer: u32,
    },
}

/// The transport header of the quoted packet, as far as it is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotedTransport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: Option<u32>,
        checksum: Option<u16>,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        checksum: Option<u16>,
    },
    Sctp {
        src_port: u16,
        dst_port: u16,
        vtag: Option<u32>,
        checksum: Option<u32>,
        initiate_tag: Option<u32>,
    },
}

/// The quoted invoking packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// The upper-layer protocol after any extension headers that could be walked.
    pub next_header: u8,
    /// None when the quote ends before the transport ports.
    pub transport: Option<QuotedTransport>,
}

/// An ICMPv6 error and its quote (None when fewer than 40 quoted bytes arrived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    pub error: IcmpError,
    pub quote: Option<Quote>,
}

fn be16(b: &[u8], f: Field) -> Option<u16> {
    b.get(f).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], f: Field) -> Option<u32> {
    b.get(f)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl IcmpErrorRepr {
    /// Parses an ICMPv6 message (starting at its type byte). Informational messages and anything
    /// shorter than the 8-byte header are errors; a short or odd quote is not.
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        need("ICMPv6 header", msg, HEADER_LEN)?;
        let code = msg[field::CODE];
        let param = be32(msg, field::PARAM).unwrap_or(0);
        let error = match msg[field::TYPE] {
            kind::DEST_UNREACHABLE => IcmpError::DestUnreachable { code },
            kind::PACKET_TOO_BIG => IcmpError::PacketTooBig { mtu: param },
            kind::TIME_EXCEEDED => IcmpError::TimeExceeded { code },
            kind::PARAM_PROBLEM => IcmpError::ParamProblem {
                code,
                pointer: param,
            },
            t => {
                return Err(WireError::Malformed {
                    what: "ICMPv6",
                    detail: format!("type {t} is not an error message"),
                });
            }
        };
        Ok(IcmpErrorRepr {
            error,
            quote: parse_quote(&msg[field::QUOTE..]),
        })
    }
}

/// Reads a quoted packet leniently (RFC 4443 §2.4 (c)).
pub fn parse_quote(q: &[u8]) -> Option<Quote> {
    let ip = Ipv6Repr::parse(q).ok()?;
    let mut nh = ip.next_header;
    let mut at = ipv6::HEADER_LEN;
    // Walk at most eight extension headers (RFC 8200 §4); stop where the bytes end.
    let mut transport_ok = true;
    for _ in 0..8 {
        let len = match nh {
            0 | 43 | 60 => q.get(at + 1).map(|l| (usize::from(*l) + 1) * 8),
            44 => {
                // A non-first fragment quotes no transport header.
                if be16(q, at + 2..at + 4).is_some_and(|off| off & 0xFFF8 != 0) {
                    transport_ok = false;
                }
                Some(8)
            }
            51 => q.get(at + 1).map(|l| (usize::from(*l) + 2) * 4),
            _ => break,
        };
        match (q.get(at), len) {
            (Some(next), Some(len)) => {
                nh = *next;
                at += len;
            }
            _ => {
                transport_ok = false;
                break;
            }
        }
    }
    let t = q.get(at..).unwrap_or(&[]);
    let transport = if transport_ok {
        quoted_transport(nh, t)
    } else {
        None
    };
    Some(Quote {
        src: ip.src,
        dst: ip.dst,
        hop_limit: ip.hop_limit,
        next_header: nh,
        transport,
    })
}

/// The transport header fields present in `t`, or None when even the ports are missing.
fn quoted_transport(nh: u8, t: &[u8]) -> Option<QuotedTransport> {
    let (src_port, dst_port) = (be16(t, 0..2)?, be16(t, 2..4)?);
    match nh {
        proto::TCP => Some(QuotedTransport::Tcp {
            src_port,
            dst_port,
            seq: be32(t, 4..8),
            checksum: be16(t, 16..18),
        }),
        proto::UDP => Some(QuotedTransport::Udp {
            src_port,
            dst_port,
            checksum: be16(t, 6..8),
        }),
        proto::SCTP => Some(QuotedTransport::Sctp {
            src_port,
            dst_port,
            vtag: be32(t, 4..8),
            // CRC32c is stored least significant byte first (RFC 9260 Appendix A).
            checksum: t
                .get(8..12)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
            initiate_tag: super::sctp::SctpRepr::parse_summary(t)
                .ok()
                .and_then(|s| s.initiate_tag),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Transport;
    use crate::tcp::TcpRepr;

    /// A SYN that expired at hop 1.
    fn tcp_probe() -> Vec<u8> {
        let mut p = crate::fixtures::probe(
            Transport::Tcp(TcpRepr {
                seq: 0xabcdef01,
                options: vec![],
                ..crate::fixtures::tcp_header(vec![])
            }),
            vec![],
        );
        p.ip.hop_limit = 1;
        p.to_bytes().unwrap().0
    }

    fn time_exceeded(quote: &[u8]) -> Vec<u8> {
        let mut m = vec![3, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(quote);
        m
    }

    #[test]
    fn every_truncation_of_a_quote() {
        let probe = tcp_probe();
        for cut in 0..=probe.len() {
            let r = IcmpErrorRepr::parse(&time_exceeded(&probe[..cut])).unwrap();
            assert_eq!(r.error, IcmpError::TimeExceeded { code: 0 });
            match r.quote {
                None => assert!(cut < 40, "cut {cut}"),
                Some(q) => {
                    assert_eq!(q.next_header, 6);
                    match q.transport {
                        None => assert!(cut < 44, "cut {cut}"),
                        Some(QuotedTransport::Tcp {
                            src_port,
                            seq,
                            checksum,
                            ..
                        }) => {
                            assert_eq!(src_port, 4444);
                            assert_eq!(seq.is_some(), cut >= 48, "cut {cut}");
                            assert_eq!(checksum.is_some(), cut >= 58, "cut {cut}");
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        for cut in 0..8 {
            assert!(IcmpErrorRepr::parse(&time_exceeded(&probe)[..cut]).is_err());
        }
    }

    #[test]
    fn informational_is_not_an_error() {
        assert!(IcmpErrorRepr::parse(&[128, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn extension_headers_are_walked() {
        let probe = tcp_probe();
        // Insert an 8-byte destination-options header (next header 60) before TCP.
        let mut q = probe[..40].to_vec();
        q[6] = 60;
        q.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        q.extend_from_slice(&probe[40..]);
        let r = IcmpErrorRepr::parse(&time_exceeded(&q)).unwrap();
        let qt = r.quote.unwrap();
        assert_eq!(qt.next_header, 6);
        assert!(matches!(
            qt.transport,
            Some(QuotedTransport::Tcp {
                seq: Some(0xabcdef01),
                ..
            })
        ));
        // The same cut inside the extension header: no transport, no panic.
        let r = IcmpErrorRepr::parse(&time_exceeded(&q[..44])).unwrap();
        assert_eq!(r.quote.unwrap().transport, None);
    }
}
