//! The probes the unit tests share (test builds only): one flow from [2001:db8:1::11]:4444 to
//! [2001:db8:2::5]:5555, the lab's A and B, with hop limit 3, traffic class 0x20 and flow label
//! 0x12345 (the golden bytes are written for these). Pure.

use crate::ipv6::FlowLabel;
use crate::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
use crate::sctp::{InitChunk, InitParam, SctpChunk, SctpRepr};
use crate::tcp::{TcpFlags, TcpOption, TcpRepr};
use crate::udp::UdpRepr;

pub fn ip() -> IpFields {
    IpFields {
        traffic_class: 0x20,
        flow_label: FlowLabel::new(0x12345).unwrap(),
        ..IpFields::new(
            "2001:db8:1::11".parse().unwrap(),
            "2001:db8:2::5".parse().unwrap(),
            3,
        )
    }
}

pub fn probe(transport: Transport, payload: Vec<u8>) -> ProbeRepr {
    ProbeRepr {
        ip: ip(),
        transport,
        payload,
        checksum_mode: ChecksumMode::Correct,
    }
}

/// A SYN with ECE and CWR, every numeric field set.
pub fn tcp_header(options: Vec<TcpOption>) -> TcpRepr {
    TcpRepr {
        src_port: 4444,
        dst_port: 5555,
        seq: 0x11223344,
        ack: 0x55667788,
        flags: TcpFlags(TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR),
        window: 64240,
        urgent: 7,
        options,
    }
}

pub fn tcp_probe(options: Vec<TcpOption>, payload: Vec<u8>) -> ProbeRepr {
    probe(Transport::Tcp(tcp_header(options)), payload)
}

pub fn udp_probe(payload: Vec<u8>) -> ProbeRepr {
    probe(
        Transport::Udp(UdpRepr {
            src_port: 4444,
            dst_port: 5555,
        }),
        payload,
    )
}

/// An INIT with every field set and a Supported Address Types parameter (IPv6).
pub fn init_chunk() -> InitChunk {
    InitChunk {
        initiate_tag: 0xcafef00d,
        a_rwnd: 65535,
        outbound_streams: 10,
        inbound_streams: 65535,
        initial_tsn: 0x01020304,
        params: vec![InitParam::supported_address_types(&[6])],
    }
}

pub fn sctp_probe() -> ProbeRepr {
    probe(
        Transport::Sctp(SctpRepr {
            src_port: 4444,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![SctpChunk::Init(init_chunk())],
        }),
        vec![],
    )
}

/// A xorshift64 generator from `seed` (not zero): the same numbers every run, for tests that
/// try many random values.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
