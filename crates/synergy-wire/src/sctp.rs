//! SCTP packets (RFC 9260): the common header (§3.1), chunks (§3.2), the INIT chunk with its
//! parameters (§3.3.2) and a generic chunk for every other type (e.g. ABORT, §3.3.7). Neither pnet
//! nor etherparse has SCTP, so this is the project's own. Pure: no I/O; the CRC32c is filled in by
//! `wire::probe` through `wire::checksum`.

use super::{Field, WireError, get_u16, get_u32, need, pad4};

/// Byte ranges of the common header.
pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const VERIFICATION_TAG: Field = 4..8;
    pub const CHECKSUM: Field = 8..12;
    pub const CHUNKS: usize = 12;
}

/// Byte ranges inside a chunk (relative to the chunk's start).
pub mod chunk_field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const VALUE: usize = 4;
}

/// Byte ranges inside an INIT chunk's value (relative to the value's start, RFC 9260 §3.3.2).
pub mod init_field {
    use super::Field;
    pub const INITIATE_TAG: Field = 0..4;
    pub const A_RWND: Field = 4..8;
    pub const OUTBOUND_STREAMS: Field = 8..10;
    pub const INBOUND_STREAMS: Field = 10..12;
    pub const INITIAL_TSN: Field = 12..16;
    pub const PARAMS: usize = 16;
}

pub const COMMON_HEADER_LEN: usize = 12;
pub const CHUNK_HEADER_LEN: usize = 4;
pub const INIT_FIXED_LEN: usize = 16;

/// Chunk type numbers (RFC 9260 §3.2).
pub mod chunk_type {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const ERROR: u8 = 9;
}

/// Error cause code of Stale Cookie (RFC 9260 §3.3.10.3).
pub const CAUSE_STALE_COOKIE: u16 = 3;

/// Parameter type of Supported Address Types (RFC 9260 §3.3.2.1.4), and its address type values.
pub const PARAM_SUPPORTED_ADDRESS_TYPES: u16 = 12;
pub const ADDRESS_TYPE_IPV4: u16 = 5;
pub const ADDRESS_TYPE_IPV6: u16 = 6;

/// A TLV parameter of an INIT chunk (RFC 9260 §3.2.1); the value is padded to four bytes on the
/// wire, the length field excludes the padding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InitParam {
    #[serde(rename = "type")]
    pub ptype: u16,
    #[serde(serialize_with = "ser_hex")]
    pub value: Vec<u8>,
}

impl InitParam {
    /// Supported Address Types listing the given address type values.
    pub fn supported_address_types(types: &[u16]) -> Self {
        InitParam {
            ptype: PARAM_SUPPORTED_ADDRESS_TYPES,
            value: types.iter().flat_map(|t| t.to_be_bytes()).collect(),
        }
    }
    fn wire_len(&self) -> usize {
        pad4(4 + self.value.len())
    }
}

fn ser_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::to_hex(b))
}

/// The fields of an INIT chunk (RFC 9260 §3.3.2). `initiate_tag` must be non-zero for a valid INIT;
/// the builder does not stop a user who asks for zero on purpose through a generic chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InitChunk {
    pub initiate_tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    pub params: Vec<InitParam>,
}

/// One chunk of an SCTP packet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "chunk", rename_all = "snake_case")]
pub enum SctpChunk {
    Init(InitChunk),
    /// Any chunk given as type, flags and value bytes.
    Generic {
        #[serde(rename = "type")]
        ctype: u8,
        flags: u8,
        #[serde(serialize_with = "ser_hex")]
        value: Vec<u8>,
    },
}

/// The initiate tag a chunk of type `ctype` with value `value` carries: the first four value
/// bytes of an INIT or INIT ACK (RFC 9260 §3.3.2, §3.3.3), None for any other chunk or a value
/// too short. The one rule for a chunk built and a chunk read.
fn initiate_tag_of(ctype: u8, value: &[u8]) -> Option<u32> {
    (matches!(ctype, chunk_type::INIT | chunk_type::INIT_ACK)
        && value.len() >= init_field::INITIATE_TAG.end)
        .then(|| get_u32(value, init_field::INITIATE_TAG))
}

impl SctpChunk {
    /// The initiate tag this chunk carries on the wire: an INIT's, or the first four value bytes
    /// of a chunk given as bytes with the type of an INIT or INIT ACK (RFC 9260 §3.3.2, §3.3.3).
    pub fn initiate_tag(&self) -> Option<u32> {
        match self {
            SctpChunk::Init(i) => Some(i.initiate_tag),
            SctpChunk::Generic { ctype, value, .. } => initiate_tag_of(*ctype, value),
        }
    }

    /// The chunk synergy-craft punches with: an ERROR chunk holding one Stale Cookie cause
    /// (RFC 9260 §3.3.10, §3.3.10.3) whose measure of staleness is `staleness` (the trace tells
    /// its probes apart by it). Sent with verification tag 0, it makes Linux conntrack create a
    /// CLOSED entry without marking an INIT in either direction, so the peer's INIT, the
    /// listener's INIT ACK and the rest of the association pass (an INIT punch makes conntrack
    /// drop the INIT ACK since the 2023 INIT-collision change); and a peer it reaches by mistake
    /// discards it silently (§8.4 rule 7). See docs/LAB.md, SCTP.
    ///
    /// ```
    /// use synergy_wire::sctp::SctpChunk;
    /// let c = SctpChunk::stale_cookie_error(0);
    /// assert_eq!(c.chunk_type(), 9);
    /// assert_eq!(c.wire_len(), 12);
    /// ```
    pub fn stale_cookie_error(staleness: u32) -> SctpChunk {
        let mut value = Vec::with_capacity(8);
        value.extend_from_slice(&CAUSE_STALE_COOKIE.to_be_bytes());
        value.extend_from_slice(&8u16.to_be_bytes());
        value.extend_from_slice(&staleness.to_be_bytes());
        SctpChunk::Generic {
            ctype: chunk_type::ERROR,
            flags: 0,
            value,
        }
    }

    /// Length on the wire, padding included.
    pub fn wire_len(&self) -> usize {
        pad4(self.length_field())
    }

    /// The chunk length field: header and value, padding excluded.
    fn length_field(&self) -> usize {
        match self {
            SctpChunk::Init(i) => {
                let params: usize = i.params.iter().map(InitParam::wire_len).sum();
                // The last parameter's padding is not counted in the chunk length (§3.2).
                let last_pad = i
                    .params
                    .last()
                    .map_or(0, |p| p.wire_len() - (4 + p.value.len()));
                CHUNK_HEADER_LEN + INIT_FIXED_LEN + params - last_pad
            }
            SctpChunk::Generic { value, .. } => CHUNK_HEADER_LEN + value.len(),
        }
    }

    pub fn chunk_type(&self) -> u8 {
        match self {
            SctpChunk::Init(_) => chunk_type::INIT,
            SctpChunk::Generic { ctype, .. } => *ctype,
        }
    }

    fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.length_field();
        let wire = pad4(len);
        need("SCTP chunk", buf, wire)?;
        let len16 = u16::try_from(len).map_err(|_| WireError::FieldOverflow {
            what: "SCTP chunk",
            len,
        })?;
        buf[..wire].fill(0);
        buf[chunk_field::TYPE] = self.chunk_type();
        buf[chunk_field::LENGTH].copy_from_slice(&len16.to_be_bytes());
        buf[chunk_field::FLAGS] = match self {
            SctpChunk::Init(_) => 0,
            SctpChunk::Generic { flags, .. } => *flags,
        };
        let v = &mut buf[chunk_field::VALUE..wire];
        match self {
            SctpChunk::Init(i) => {
                v[init_field::INITIATE_TAG].copy_from_slice(&i.initiate_tag.to_be_bytes());
                v[init_field::A_RWND].copy_from_slice(&i.a_rwnd.to_be_bytes());
                v[init_field::OUTBOUND_STREAMS].copy_from_slice(&i.outbound_streams.to_be_bytes());
                v[init_field::INBOUND_STREAMS].copy_from_slice(&i.inbound_streams.to_be_bytes());
                v[init_field::INITIAL_TSN].copy_from_slice(&i.initial_tsn.to_be_bytes());
                let mut at = init_field::PARAMS;
                for p in &i.params {
                    let plen = 4 + p.value.len();
                    let plen16 = u16::try_from(plen).map_err(|_| WireError::FieldOverflow {
                        what: "SCTP parameter",
                        len: plen,
                    })?;
                    v[at..at + 2].copy_from_slice(&p.ptype.to_be_bytes());
                    v[at + 2..at + 4].copy_from_slice(&plen16.to_be_bytes());
                    v[at + 4..at + plen].copy_from_slice(&p.value);
                    at += p.wire_len();
                }
            }
            SctpChunk::Generic { value, .. } => v[..value.len()].copy_from_slice(value),
        }
        Ok(wire)
    }
}

/// An SCTP packet: common header fields and its chunks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SctpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
    pub chunks: Vec<SctpChunk>,
}

/// What a parse of a (possibly truncated) SCTP packet found: enough to match a quote to its probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpSummary {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
    pub checksum: [u8; 4],
    pub first_chunk_type: Option<u8>,
    /// The initiate tag of an INIT or INIT ACK first chunk, when its bytes are present.
    pub initiate_tag: Option<u32>,
}

impl SctpRepr {
    pub fn len(&self) -> usize {
        COMMON_HEADER_LEN + self.chunks.iter().map(SctpChunk::wire_len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Writes the packet with a zero checksum; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        need("SCTP packet", buf, self.len())?;
        buf[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        buf[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[field::VERIFICATION_TAG].copy_from_slice(&self.verification_tag.to_be_bytes());
        buf[field::CHECKSUM].copy_from_slice(&[0; 4]);
        let mut at = field::CHUNKS;
        for c in &self.chunks {
            at += c.emit(&mut buf[at..])?;
        }
        Ok(at)
    }

    /// Reads the common header and what is present of the first chunk; never fails past the
    /// 12-byte common header, because ICMPv6 quotes cut packets anywhere (RFC 4443 §2.4 (c)).
    pub fn parse_summary(buf: &[u8]) -> Result<SctpSummary, WireError> {
        need("SCTP common header", buf, COMMON_HEADER_LEN)?;
        let chunk = &buf[field::CHUNKS..];
        let first_chunk_type = chunk.get(chunk_field::TYPE).copied();
        // The first chunk's value as far as its own length says, never its padding or the next
        // chunk (RFC 9260 §3.2).
        let own_len = chunk
            .get(chunk_field::LENGTH)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let value = chunk
            .get(chunk_field::VALUE..own_len.min(chunk.len()))
            .unwrap_or(&[]);
        let initiate_tag = first_chunk_type.and_then(|t| initiate_tag_of(t, value));
        let mut checksum = [0u8; 4];
        checksum.copy_from_slice(&buf[field::CHECKSUM]);
        Ok(SctpSummary {
            src_port: get_u16(buf, field::SRC_PORT),
            dst_port: get_u16(buf, field::DST_PORT),
            verification_tag: get_u32(buf, field::VERIFICATION_TAG),
            checksum,
            first_chunk_type,
            initiate_tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> SctpRepr {
        SctpRepr {
            src_port: 4444,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![SctpChunk::Init(InitChunk {
                initiate_tag: 0x01020304,
                a_rwnd: 65535,
                outbound_streams: 10,
                inbound_streams: 65535,
                initial_tsn: 0x0a0b0c0d,
                params: vec![InitParam::supported_address_types(&[ADDRESS_TYPE_IPV6])],
            })],
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, a summary's initiate tag comes from within its chunk's length.
        #[test]
        fn the_summary_never_reads_past_the_chunk(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(s) = SctpRepr::parse_summary(&data)
                && let Some(tag) = s.initiate_tag
            {
                let chunk_len = data
                    .get(14..16)
                    .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                proptest::prop_assert!(chunk_len >= 8);
                proptest::prop_assert_eq!(data.get(16..20), Some(&tag.to_be_bytes()[..]));
            }
        }
    }

    #[test]
    fn the_summary_reads_the_initiate_tag_within_the_chunk_only() {
        let (mut b, _) = {
            let mut b = vec![0u8; init().len()];
            let n = init().emit(&mut b).unwrap();
            (b, n)
        };
        let whole = SctpRepr::parse_summary(&b).unwrap();
        assert_eq!(whole.initiate_tag, Some(0x01020304));
        // The same bytes with the INIT's length cut to its header: the tag is past the chunk.
        b[COMMON_HEADER_LEN + 2..COMMON_HEADER_LEN + 4].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(SctpRepr::parse_summary(&b).unwrap().initiate_tag, None);
        // And to one byte short of the tag.
        b[COMMON_HEADER_LEN + 2..COMMON_HEADER_LEN + 4].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(SctpRepr::parse_summary(&b).unwrap().initiate_tag, None);
    }

    #[test]
    fn init_golden_bytes() {
        let r = init();
        let mut buf = [0xEEu8; 40];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, 12 + 4 + 16 + 8);
        #[rustfmt::skip]
        let want = [
            0x11, 0x5c, 0x15, 0xb3, 0, 0, 0, 0, 0, 0, 0, 0,          // ports, vtag, checksum
            1, 0, 0, 0x1a,                                          // INIT, flags, length 26
            1, 2, 3, 4, 0, 0, 0xff, 0xff, 0, 10, 0xff, 0xff, 10, 11, 12, 13,
            0, 12, 0, 6, 0, 6, 0, 0,                                // Supported Address Types: IPv6, pad
        ];
        assert_eq!(&buf[..n], &want[..]);
    }

    #[test]
    fn punch_golden_bytes() {
        // RFC 9260 §3.3.10: ERROR, flags 0, length 12; §3.3.10.3: cause 3, length 8, staleness.
        let r = SctpRepr {
            src_port: 4444,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![SctpChunk::stale_cookie_error(0x0102_0304)],
        };
        let mut buf = [0xEEu8; 24];
        let n = r.emit(&mut buf).unwrap();
        #[rustfmt::skip]
        let want = [
            0x11, 0x5c, 0x15, 0xb3, 0, 0, 0, 0, 0, 0, 0, 0,
            9, 0, 0, 12,
            0, 3, 0, 8, 1, 2, 3, 4,
        ];
        assert_eq!(&buf[..n], &want[..]);
    }

    #[test]
    fn generic_chunk_padding() {
        let r = SctpRepr {
            src_port: 1,
            dst_port: 2,
            verification_tag: 7,
            chunks: vec![SctpChunk::Generic {
                ctype: chunk_type::ABORT,
                flags: 1,
                value: vec![9, 9, 9],
            }],
        };
        let mut buf = [0xEEu8; 24];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, 20);
        assert_eq!(&buf[12..20], &[6, 1, 0, 7, 9, 9, 9, 0]);
    }

    #[test]
    fn summary_of_every_truncation() {
        let r = init();
        let mut buf = [0u8; 40];
        let n = r.emit(&mut buf).unwrap();
        for cut in 0..=n {
            let s = SctpRepr::parse_summary(&buf[..cut]);
            assert_eq!(s.is_ok(), cut >= 12, "cut {cut}");
            if let Ok(s) = s {
                assert_eq!(s.initiate_tag.is_some(), cut >= 20, "cut {cut}");
                assert_eq!(s.first_chunk_type.is_some(), cut >= 13);
            }
        }
    }
}
