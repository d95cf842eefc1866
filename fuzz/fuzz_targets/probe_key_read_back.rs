//! The key of a probe is the key read back from its bytes, and an ICMPv6 time exceeded quoting
//! any prefix of it that holds the fields that tell probes apart matches it.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use synergy_craft::reply::{Arrived, Fate, ProbeKey, match_reply};

fuzz_target!(|data: &[u8]| {
    let mut b = common::Bytes(data);
    let repr = common::probe(&mut b);
    let Ok((bytes, checksum)) = repr.to_bytes() else { return };
    let key = ProbeKey::of(&repr, checksum);
    assert_eq!(ProbeKey::from_packet(&bytes), Some(key));
    // RFC 4443 §2.4 (c): a quote as long as fits; at least the IPv6 header and the first 12
    // bytes of the transport header (ports, sequence number or verification tag, checksums).
    let from = "2001:db8:ff::1".parse().expect("an address");
    for q in 40 + 12..=bytes.len() {
        let mut msg = vec![3, 0, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&bytes[..q]);
        assert_eq!(
            match_reply(&[key], &Arrived::Icmp { from, msg: &msg }),
            Some((0, Fate::Expired { by: from, code: 0 })),
            "quote of {q} bytes"
        );
    }
});
