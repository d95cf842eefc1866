//! The IPv6 fixed header (RFC 8200 §3): a view with named byte ranges and `Ipv6Repr` to emit and
//! parse it. Pure: no I/O.

use std::net::Ipv6Addr;

use super::{Field, WireError, get_u16, get_u32, need};

/// Byte ranges of the fixed header.
/// The 20-bit IPv6 flow label (RFC 8200 §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FlowLabel(u32);

impl FlowLabel {
    pub const MAX: u32 = 0xF_FFFF;
    pub fn new(v: u32) -> Option<Self> {
        (v <= Self::MAX).then_some(FlowLabel(v))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

pub mod field {
    use super::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

pub const HEADER_LEN: usize = 40;

/// Next-header numbers used here (IANA protocol numbers).
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
    pub const ICMPV6: u8 = 58;
}

/// Every field of the IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ipv6Repr {
    pub traffic_class: u8,
    pub flow_label: FlowLabel,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

impl Ipv6Repr {
    /// Writes the 40 header bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        need("IPv6 header", buf, HEADER_LEN)?;
        let word = (6u32 << 28) | (u32::from(self.traffic_class) << 20) | self.flow_label.get();
        buf[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        buf[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        buf[field::NEXT_HEADER] = self.next_header;
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        Ok(())
    }

    /// Reads the fixed header; the payload may be truncated (as in an ICMPv6 quote).
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        need("IPv6 header", buf, HEADER_LEN)?;
        let word = get_u32(buf, field::VER_TC_FLOW);
        if word >> 28 != 6 {
            return Err(WireError::Malformed {
                what: "IPv6 header",
                detail: format!("version {} is not 6", word >> 28),
            });
        }
        let addr = |f: Field| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[f]);
            Ipv6Addr::from(o)
        };
        Ok(Ipv6Repr {
            traffic_class: ((word >> 20) & 0xFF) as u8,
            flow_label: FlowLabel::new(word & FlowLabel::MAX).unwrap_or_default(),
            payload_len: get_u16(buf, field::PAYLOAD_LEN),
            next_header: buf[field::NEXT_HEADER],
            hop_limit: buf[field::HOP_LIMIT],
            src: addr(field::SRC),
            dst: addr(field::DST),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_label_is_20_bits() {
        assert_eq!(FlowLabel::new(0xF_FFFF).map(FlowLabel::get), Some(0xF_FFFF));
        assert_eq!(FlowLabel::new(0x10_0000), None);
    }

    fn sample() -> Ipv6Repr {
        Ipv6Repr {
            traffic_class: 0xb8,
            flow_label: FlowLabel::new(0xABCDE).unwrap(),
            payload_len: 20,
            next_header: proto::TCP,
            hop_limit: 3,
            src: "2001:db8:1::11".parse().unwrap(),
            dst: "2001:db8:2::5".parse().unwrap(),
        }
    }

    #[test]
    fn golden_header() {
        let mut buf = [0xAAu8; 40];
        sample().emit(&mut buf).unwrap();
        assert_eq!(
            &buf[0..8],
            &[0x6b, 0x8a, 0xbc, 0xde, 0x00, 0x14, 0x06, 0x03]
        );
        assert_eq!(&buf[8..12], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(buf[23], 0x11);
        assert_eq!(buf[39], 0x05);
        assert_eq!(Ipv6Repr::parse(&buf).unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = [0u8; 40];
        sample().emit(&mut buf).unwrap();
        for n in 0..40 {
            assert!(Ipv6Repr::parse(&buf[..n]).is_err(), "length {n}");
        }
    }

    #[test]
    fn wrong_version() {
        let mut buf = [0u8; 40];
        sample().emit(&mut buf).unwrap();
        buf[0] = 0x45;
        assert!(Ipv6Repr::parse(&buf).is_err());
    }
}
