//! synergy-wire: byte-exact views and `Repr`s of the packets synergy-craft sends: IPv6 (RFC
//! 8200), TCP (RFC 9293), UDP (RFC 768) and SCTP (RFC 9260), the whole probe built from them, the
//! fast patcher of sweeps, and the ICMPv6 errors (RFC 4443) that quote them. Pure: no sockets,
//! clocks or environment, no unsafe code, and nothing of the rest of synergy-craft; every field
//! lives at a named byte range.
//!
//! ```
//! use synergy_wire::ipv6::Ipv6Repr;
//! use synergy_wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
//! use synergy_wire::udp::UdpRepr;
//!
//! // A UDP punch from [2001:db8:1::11]:4000 to [2001:db8:2::5]:5000 that expires at hop 2.
//! let probe = ProbeRepr {
//!     ip: IpFields::new("2001:db8:1::11".parse().unwrap(), "2001:db8:2::5".parse().unwrap(), 2),
//!     transport: Transport::Udp(UdpRepr { src_port: 4000, dst_port: 5000 }),
//!     payload: b"hi".to_vec(),
//!     checksum_mode: ChecksumMode::Correct,
//! };
//! let (bytes, _checksum) = probe.to_bytes().unwrap();
//! assert_eq!(bytes.len(), 40 + 8 + 2);
//! assert_eq!(bytes[7], 2); // the hop limit (RFC 8200 §3)
//! let ip = Ipv6Repr::parse(&bytes).unwrap();
//! assert_eq!((ip.payload_len, ip.next_header), (8 + 2, 17));
//! ```

#![deny(unsafe_code)]

pub mod checksum;
#[cfg(test)]
mod fixtures;
pub mod icmpv6;
pub mod ipv6;
pub mod patch;
pub mod probe;
pub mod sctp;
pub mod tcp;
pub mod udp;

use thiserror::Error;

/// A byte range of a header field.
pub type Field = core::ops::Range<usize>;

/// The transport protocols synergy-craft punches for: the one protocol type from the command
/// line down to the sockets, with its one name and its one next-header number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// Its name on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Its IPv6 next header number (RFC 8200 §4, IANA protocol numbers).
    pub fn next_header(self) -> u8 {
        match self {
            Proto::Tcp => ipv6::proto::TCP,
            Proto::Udp => ipv6::proto::UDP,
            Proto::Sctp => ipv6::proto::SCTP,
        }
    }
}

impl core::str::FromStr for Proto {
    type Err = String;

    /// `tcp`, `udp` or `sctp`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        Proto::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not a protocol: tcp, udp or sctp"))
    }
}

impl core::fmt::Display for Proto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes could not be built or read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error(
        "packet of {len} bytes is too large: the IPv6 payload length field holds at most 65535 \
         (jumbograms, RFC 2675, are not supported)"
    )]
    TooLarge { len: usize },
    #[error("TCP options take {len} bytes; at most 40 fit in the header (RFC 9293 §3.1)")]
    TcpOptionsTooLong { len: usize },
    #[error("{what} of {len} bytes does not fit in its 16-bit length field")]
    FieldOverflow { what: &'static str, len: usize },
}

/// Checks that `buf` holds at least `need` bytes.
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<(), WireError> {
    if buf.len() < need {
        Err(WireError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Reads a big-endian u16 at a field; the caller has checked the length.
pub(crate) fn get_u16(buf: &[u8], f: Field) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[f]);
    u16::from_be_bytes(b)
}

/// Reads a big-endian u32 at a field; the caller has checked the length.
pub(crate) fn get_u32(buf: &[u8], f: Field) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[f]);
    u32::from_be_bytes(b)
}

/// Rounds up to a multiple of four (SCTP chunks and parameters, TCP option space).
pub(crate) fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Lower-case hexadecimal of `bytes`, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses hexadecimal bytes; spaces, colons and a leading `0x` are allowed.
pub fn from_hex(text: &str) -> Result<Vec<u8>, WireError> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let digits: Vec<u8> = t
        .bytes()
        .filter(|c| !matches!(c, b' ' | b':' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(WireError::Malformed {
            what: "hex",
            detail: format!("{text:?} has an odd number of digits"),
        });
    }
    digits
        .chunks_exact(2)
        .map(|p| {
            let s = std::str::from_utf8(p).unwrap_or("zz");
            u8::from_str_radix(s, 16).map_err(|_| WireError::Malformed {
                what: "hex",
                detail: format!("{text:?} has a non-hex digit in {s:?}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("0x01 ab:FF").unwrap(), vec![1, 0xab, 0xff]);
        assert_eq!(to_hex(&[1, 0xab, 0xff]), "01abff");
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
    }
}
