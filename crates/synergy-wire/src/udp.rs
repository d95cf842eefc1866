//! The UDP header (RFC 768; the IPv6 checksum rule of RFC 8200 §8.1): `UdpRepr` to emit and parse.
//! Pure: no I/O. The checksum is filled in by `wire::probe` through `wire::checksum`.

use super::{Field, WireError, get_u16, need};

/// Byte ranges of the header.
pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Writes the header for a datagram carrying `payload_len` bytes, checksum zero.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, WireError> {
        need("UDP header", buf, HEADER_LEN)?;
        let len = HEADER_LEN + payload_len;
        let len16 = u16::try_from(len).map_err(|_| WireError::FieldOverflow {
            what: "UDP datagram",
            len,
        })?;
        buf[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        buf[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[field::LENGTH].copy_from_slice(&len16.to_be_bytes());
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        Ok(HEADER_LEN)
    }

    /// Reads the header.
    pub fn parse(buf: &[u8]) -> Result<UdpRead, WireError> {
        need("UDP header", buf, HEADER_LEN)?;
        Ok(UdpRead {
            repr: UdpRepr {
                src_port: get_u16(buf, field::SRC_PORT),
                dst_port: get_u16(buf, field::DST_PORT),
            },
            length: get_u16(buf, field::LENGTH),
            checksum: get_u16(buf, field::CHECKSUM),
        })
    }
}

/// A UDP header as read: the ports, and the length and checksum fields as they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRead {
    pub repr: UdpRepr,
    pub length: u16,
    pub checksum: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncations() {
        let r = UdpRepr {
            src_port: 4444,
            dst_port: 5555,
        };
        let mut buf = [0xAAu8; 8];
        r.emit(&mut buf, 4).unwrap();
        assert_eq!(buf, [0x11, 0x5c, 0x15, 0xb3, 0, 12, 0, 0]);
        assert_eq!(
            UdpRepr::parse(&buf).unwrap(),
            UdpRead {
                repr: r,
                length: 12,
                checksum: 0
            }
        );
        for n in 0..8 {
            assert!(UdpRepr::parse(&buf[..n]).is_err());
        }
        assert!(r.emit(&mut buf, 65528).is_err());
    }
}
