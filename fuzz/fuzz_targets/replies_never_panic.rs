//! Received bytes are untrusted: the ICMPv6 parser, the matcher (ICMPv6 errors, and TCP/SCTP
//! replies from the probe's own peer, so that their matching is reached) and the probe reader
//! never panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use synergy_craft::reply::{Arrived, ProbeKey, match_reply};
use synergy_wire::icmpv6::IcmpErrorRepr;

fuzz_target!(|data: &[u8]| {
    let (head, rest) = data.split_at(data.len().min(64));
    let repr = common::probe(&mut common::Bytes(head));
    let Ok((_, checksum)) = repr.to_bytes() else { return };
    let key = ProbeKey::of(&repr, checksum);
    let _ = IcmpErrorRepr::parse(rest);
    let _ = ProbeKey::from_packet(rest);
    let _ = match_reply(&[key], &Arrived::Icmp { from: key.dst, msg: rest });
    for proto in [6, 17, 132] {
        let _ = match_reply(
            &[key],
            &Arrived::Transport { proto, from: key.dst, to: key.src, bytes: rest },
        );
    }
});
