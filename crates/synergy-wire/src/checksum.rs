//! Every checksum a probe carries, in one place: the Internet checksum over the IPv6 pseudo-header
//! (RFC 8200 §8.1, used by TCP and UDP) and SCTP's CRC32c (RFC 9260 §6.8, Appendix A). Pure: no I/O.

use std::net::Ipv6Addr;

/// Adds `data` to a running one's-complement sum as big-endian 16-bit words; an odd trailing byte
/// is padded with a zero byte on the right (RFC 1071 §4.1).
pub fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum into 16 bits with end-around carry.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The IPv6 pseudo-header sum of RFC 8200 §8.1: source, destination, upper-layer packet length
/// (32 bits) and next header (the low byte of a 32-bit word).
pub fn pseudo_header_sum(src: &Ipv6Addr, dst: &Ipv6Addr, upper_len: u32, next_header: u8) -> u64 {
    let mut acc = sum_words(&src.octets(), 0);
    acc = sum_words(&dst.octets(), acc);
    acc += u64::from(upper_len >> 16) + u64::from(upper_len & 0xFFFF);
    acc + u64::from(next_header)
}

/// The checksum to store in a TCP or UDP header: the complement of the one's-complement sum of the
/// pseudo-header and `segment` (whose checksum field must be zero while this runs).
pub fn upper_layer(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(sum_words(
        segment,
        pseudo_header_sum(src, dst, len, next_header),
    ))
}

/// Whether a received TCP/UDP `segment`, checksum field included, verifies (RFC 1071: the sum of
/// everything, checksum included, is all ones).
pub fn upper_layer_ok(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, segment: &[u8]) -> bool {
    upper_layer(src, dst, next_header, segment) == 0
}

/// RFC 768 as amended for IPv6 by RFC 8200 §8.1: a computed UDP checksum of zero is sent as 0xFFFF,
/// because zero on the wire means "no checksum", which IPv6 forbids.
pub fn udp_wire_value(computed: u16) -> u16 {
    if computed == 0 { 0xFFFF } else { computed }
}

/// A 16-bit checksum that is wrong for sure: one that differs from `correct` also in one's-complement
/// arithmetic, where 0x0000 and 0xFFFF are the same number.
pub fn corrupt16(correct: u16) -> u16 {
    match correct {
        0x0000 | 0xFFFF => 0x1234,
        c => c.wrapping_add(1).max(1),
    }
}

/// CRC32c (Castagnoli) as SCTP uses it: computed over the whole SCTP packet with the checksum field
/// zero (RFC 9260 §6.8).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The four bytes SCTP stores in its checksum field: the CRC32c in the reflected (least significant
/// byte first) order of RFC 9260 Appendix A, i.e. little-endian.
pub fn sctp_wire_bytes(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 Appendix B.4 CRC32c examples; the RFC prints each result as the bytes on the wire.
    #[test]
    fn crc32c_rfc3720_vectors() {
        let zeros = [0u8; 32];
        let ones = [0xFFu8; 32];
        let inc: Vec<u8> = (0u8..32).collect();
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(sctp_wire_bytes(crc32c(&zeros)), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(sctp_wire_bytes(crc32c(&ones)), [0x43, 0xab, 0xa8, 0x62]);
        assert_eq!(sctp_wire_bytes(crc32c(&inc)), [0x4e, 0x79, 0xdd, 0x46]);
        assert_eq!(sctp_wire_bytes(crc32c(&dec)), [0x5c, 0xdb, 0x3f, 0x11]);
        // The iSCSI read command PDU of B.4.
        let mut pdu = [0u8; 48];
        pdu[0] = 0x01;
        pdu[1] = 0xc0;
        pdu[16..20].copy_from_slice(&[0x14, 0, 0, 0]);
        pdu[20..24].copy_from_slice(&[0, 0, 0x04, 0]);
        pdu[24..28].copy_from_slice(&[0, 0, 0, 0x14]);
        pdu[28..32].copy_from_slice(&[0, 0, 0, 0x18]);
        pdu[32..36].copy_from_slice(&[0x28, 0, 0, 0]);
        pdu[40..44].copy_from_slice(&[0x02, 0, 0, 0]);
        assert_eq!(crc32c(&pdu), 0xd996_3a56);
    }

    #[test]
    fn odd_length_pads_right() {
        assert_eq!(sum_words(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_carries_around() {
        assert_eq!(fold(0x1_FFFF), 0x0001);
        assert_eq!(fold(0x2_0001), 0x0003);
    }

    #[test]
    fn corrupt_is_never_equivalent() {
        for c in [0u16, 1, 0x7FFF, 0xFFFE, 0xFFFF, 0x1234] {
            let b = corrupt16(c);
            assert_ne!(b, c);
            let equiv = |x: u16| if x == 0xFFFF { 0 } else { x };
            assert_ne!(equiv(b), equiv(c), "{c:#x} -> {b:#x}");
        }
    }

    #[test]
    fn udp_zero_becomes_all_ones() {
        assert_eq!(udp_wire_value(0), 0xFFFF);
        assert_eq!(udp_wire_value(0x1234), 0x1234);
    }
}

/// RFC 1624 eqn. 3 incremental update of a one's-complement checksum when a 16-bit word of the
/// covered data changes from `old` to `new`: HC' = ~(~HC + ~m + m').
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!csum) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// The same for a 32-bit field (two words).
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod incremental_tests {
    use super::*;

    /// Incremental updates equal recomputation, word by word, for many random changes.
    #[test]
    fn incremental_equals_full() {
        let src: Ipv6Addr = "2001:db8:1::11".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:2::5".parse().unwrap();
        let mut next = crate::fixtures::xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut seg = [0u8; 24];
            for b in seg.iter_mut() {
                *b = next() as u8;
            }
            seg[16..18].fill(0);
            let c = upper_layer(&src, &dst, 6, &seg);
            let (old, new) = (
                u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]),
                next() as u32,
            );
            seg[4..8].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update32(c, old, new), upper_layer(&src, &dst, 6, &seg));
            let (old16, new16) = (u16::from_be_bytes([seg[0], seg[1]]), next() as u16);
            seg[0..2].copy_from_slice(&new16.to_be_bytes());
            let c2 = upper_layer(&src, &dst, 6, &seg);
            assert_eq!(update16(update32(c, old, new), old16, new16), c2);
        }
    }
}
