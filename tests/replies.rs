//! The reply parser and matcher on untrusted input: real replies captured in the lab (fixtures,
//! made by scripts/capture-fixtures.sh) are matched to their probes with the right fate, and
//! arbitrary or mutated bytes never panic (proptest; scripts/fuzz.sh runs millions of cases).

use std::net::Ipv6Addr;
use std::path::PathBuf;

use proptest::prelude::*;
use synergy_craft::reply::{Arrived, Fate, ProbeKey, match_reply};
use synergy_craft::wire::icmpv6::IcmpErrorRepr;
use synergy_craft::wire::ipv6::{self, Ipv6Repr};

const ETHERNET: usize = 14;

type Fixture = (String, Vec<Vec<u8>>);

/// The fixtures, read once.
fn fixtures() -> &'static [Fixture] {
    static FIXTURES: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(read_fixtures)
}

fn read_fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replies");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures directory") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("pcap") {
            continue;
        }
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut pkts = Vec::new();
        while let Some(p) = r.next_packet() {
            pkts.push(p.unwrap().data[ETHERNET..].to_vec());
        }
        out.push((
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            pkts,
        ));
    }
    out.sort();
    out
}

/// What the receiving raw socket would hand over for a captured IPv6 packet.
fn arrived(pkt: &[u8]) -> Arrived<'_> {
    let ip = Ipv6Repr::parse(pkt).unwrap();
    let body = &pkt[ipv6::HEADER_LEN..];
    if ip.next_header == ipv6::proto::ICMPV6 {
        Arrived::Icmp {
            from: ip.src,
            msg: body,
        }
    } else {
        Arrived::Transport {
            proto: ip.next_header,
            from: ip.src,
            to: ip.dst,
            bytes: body,
        }
    }
}

#[test]
fn captured_replies_match_their_probes() {
    let fx = fixtures();
    assert_eq!(
        fx.len(),
        9,
        "fixtures: {:?}",
        fx.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let b: Ipv6Addr = "2001:db8:2::5".parse().unwrap();
    for (name, pkts) in fx {
        let name = name.as_str();
        assert_eq!(pkts.len(), 2, "{name}");
        let key =
            ProbeKey::from_packet(&pkts[0]).unwrap_or_else(|| panic!("{name}: probe unreadable"));
        let (i, fate) = match_reply(&[key], &arrived(&pkts[1]))
            .unwrap_or_else(|| panic!("{name}: reply not matched"));
        assert_eq!(i, 0);
        let ok = match name {
            "tcp-expired" | "udp-expired" | "sctp-expired" => {
                matches!(fate, Fate::Expired { code: 0, .. })
            }
            "tcp-reset" => fate == Fate::Reset { by: b },
            "tcp-reset-closed-port" => matches!(fate, Fate::Reset { .. }),
            "udp-admin-prohibited" | "sctp-admin-prohibited" => {
                matches!(fate, Fate::Unreachable { code: 1, .. })
            }
            "udp-port-unreachable" => matches!(fate, Fate::Unreachable { code: 4, .. }),
            "sctp-param-problem" => matches!(
                fate,
                Fate::ParamProblem {
                    code: 1,
                    pointer: 6,
                    ..
                }
            ),
            other => panic!("unknown fixture {other}"),
        };
        assert!(ok, "{name}: {fate:?}");
        // Another probe of the same flow (different sequence number, tag or checksum) is not matched.
        let mut other = key;
        other.seq = other.seq.map(|s| s ^ 1);
        other.init_tag = other.init_tag.map(|t| t ^ 1);
        other.checksum = match other.checksum {
            synergy_craft::wire::probe::WireChecksum::Internet(c) => {
                synergy_craft::wire::probe::WireChecksum::Internet(c ^ 1)
            }
            synergy_craft::wire::probe::WireChecksum::Crc32c(c) => {
                synergy_craft::wire::probe::WireChecksum::Crc32c(c ^ 1)
            }
        };
        assert_eq!(
            match_reply(&[other], &arrived(&pkts[1])),
            None,
            "{name}: matched a different probe"
        );
    }
}

/// Every truncation of every captured reply parses or fails cleanly, and matches exactly while it
/// still holds the fields that tell probes apart: no cut below some length matches, every cut
/// from it on matches with the whole reply's fate, and for an ICMPv6 error that length is at most
/// the ICMPv6 header, the quoted IPv6 header and the transport's first 12 bytes (ports, sequence
/// number or verification tag, and SCTP's checksum).
#[test]
fn captured_replies_truncated_everywhere() {
    for (name, pkts) in fixtures() {
        let key = ProbeKey::from_packet(&pkts[0]).unwrap();
        let full = arrived(&pkts[1]);
        let whole = match_reply(&[key], &full).unwrap_or_else(|| panic!("{name}"));
        let mut first_match = None;
        for cut in 0..=pkts[1].len() - ipv6::HEADER_LEN {
            let a = match full {
                Arrived::Icmp { from, msg } => Arrived::Icmp {
                    from,
                    msg: &msg[..cut],
                },
                Arrived::Transport {
                    proto,
                    from,
                    to,
                    bytes,
                } => Arrived::Transport {
                    proto,
                    from,
                    to,
                    bytes: &bytes[..cut.min(bytes.len())],
                },
            };
            match (match_reply(&[key], &a), first_match) {
                (Some(got), _) => {
                    assert_eq!(got, whole, "{name} cut to {cut}");
                    first_match.get_or_insert(cut);
                }
                (None, Some(from)) => panic!("{name}: matched cut to {from}, not to {cut}"),
                (None, None) => {}
            }
        }
        let from = first_match.unwrap_or_else(|| panic!("{name}: no cut matched"));
        if let Arrived::Icmp { .. } = full {
            assert!(
                from <= 8 + ipv6::HEADER_LEN + 12,
                "{name}: needs {from} bytes"
            );
        }
    }
}

fn fuzz_one(bytes: &[u8], key: ProbeKey) {
    let from: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
    let _ = IcmpErrorRepr::parse(bytes);
    let _ = match_reply(&[key], &Arrived::Icmp { from, msg: bytes });
    // Transport replies from the probe's peer to its source, so that the matching of RSTs,
    // SYN-ACKs, ABORTs and INIT ACKs is reached, and from a stranger.
    for from in [key.dst, from] {
        for proto in [6u8, 17, 132] {
            let _ = match_reply(
                &[key],
                &Arrived::Transport {
                    proto,
                    from,
                    to: key.src,
                    bytes,
                },
            );
        }
    }
    let _ = ProbeKey::from_packet(bytes);
}

fn any_key() -> ProbeKey {
    ProbeKey::from_packet(&fixtures()[0].1[0]).unwrap()
}

proptest! {
    // PROPTEST_CASES sets the number of cases (scripts/fuzz.sh: millions).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        fuzz_one(&bytes, any_key());
    }

    /// Captured replies with bytes changed and cut: stays close to real structure, so deep paths
    /// (extension headers, quoted transports) are reached.
    #[test]
    fn mutated_captured_replies_never_panic(
        which in 0usize..9,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let fx = fixtures();
        let (_, pkts) = &fx[which % fx.len()];
        let key = ProbeKey::from_packet(&pkts[0]).unwrap();
        let mut msg = pkts[1][ipv6::HEADER_LEN..].to_vec();
        for (at, v) in flips {
            let n = msg.len();
            msg[at % n] = v;
        }
        msg.truncate(cut % (msg.len() + 1));
        fuzz_one(&msg, key);
    }
}

/// A TCP RST or SYN-ACK, or an SCTP ABORT or INIT ACK, from a probe's peer matches exactly that
/// probe (the acknowledgment number is its sequence number + 1, the verification tag its initiate
/// tag) with the fate its kind says; the same reply with any one of the fields that tie it to the
/// probe changed matches nothing.
mod transport_replies {
    use super::*;
    use synergy_craft::reply::Fate;
    use synergy_craft::wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
    use synergy_craft::wire::sctp::{InitChunk, SctpChunk, SctpRepr, chunk_type};
    use synergy_craft::wire::tcp::{TcpFlags, TcpRepr};

    const A: &str = "2001:db8:1::11";
    const B: &str = "2001:db8:2::5";

    fn key(transport: Transport) -> ProbeKey {
        let r = ProbeRepr {
            ip: IpFields::new(A.parse().unwrap(), B.parse().unwrap(), 2),
            transport,
            payload: vec![],
            checksum_mode: ChecksumMode::Correct,
        };
        let (_, c) = r.to_bytes().unwrap();
        ProbeKey::of(&r, c)
    }

    fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
        let t = TcpRepr {
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            flags: TcpFlags(flags),
            window: 0,
            urgent: 0,
            options: vec![],
        };
        let mut b = vec![0u8; t.header_len()];
        t.emit(&mut b).unwrap();
        b
    }

    fn sctp(sport: u16, dport: u16, vtag: u32, ctype: u8) -> Vec<u8> {
        let s = SctpRepr {
            src_port: sport,
            dst_port: dport,
            verification_tag: vtag,
            chunks: vec![SctpChunk::Generic {
                ctype,
                flags: 0,
                value: vec![],
            }],
        };
        let mut b = vec![0u8; s.len()];
        s.emit(&mut b).unwrap();
        b
    }

    fn reply(proto: u8, from: &str, bytes: &[u8], k: ProbeKey) -> Option<(usize, Fate)> {
        match_reply(
            &[k],
            &Arrived::Transport {
                proto,
                from: from.parse().unwrap(),
                to: A.parse().unwrap(),
                bytes,
            },
        )
    }

    proptest! {
        #[test]
        fn tcp_resets_and_syn_acks(sport in 1u16.., dport in 1u16.., seq: u32, other: u32, syn_ack: bool) {
            let k = key(Transport::Tcp(TcpRepr {
                src_port: sport, dst_port: dport, seq, ack: 0,
                flags: TcpFlags(TcpFlags::SYN), window: 65535, urgent: 0, options: vec![],
            }));
            let flags = if syn_ack { TcpFlags::SYN | TcpFlags::ACK } else { TcpFlags::RST | TcpFlags::ACK };
            let by = B.parse().unwrap();
            let want = if syn_ack { Fate::Answered { by } } else { Fate::Reset { by } };
            let ack = seq.wrapping_add(1);
            prop_assert_eq!(reply(6, B, &tcp(dport, sport, other, ack, flags), k), Some((0, want)));
            prop_assume!(other != ack);
            prop_assert_eq!(reply(6, B, &tcp(dport, sport, 0, other, flags), k), None);
            prop_assert_eq!(reply(6, B, &tcp(dport ^ 1, sport, 0, ack, flags), k), None);
            prop_assert_eq!(reply(6, B, &tcp(dport, sport ^ 1, 0, ack, flags), k), None);
            prop_assert_eq!(reply(6, A, &tcp(dport, sport, 0, ack, flags), k), None);
            prop_assert_eq!(reply(132, B, &tcp(dport, sport, 0, ack, flags), k), None);
        }

        #[test]
        fn sctp_aborts_and_init_acks(sport in 1u16.., dport in 1u16.., tag in 1u32.., other: u32, init_ack: bool) {
            let k = key(Transport::Sctp(SctpRepr {
                src_port: sport, dst_port: dport, verification_tag: 0,
                chunks: vec![SctpChunk::Init(InitChunk {
                    initiate_tag: tag, a_rwnd: 65535, outbound_streams: 10,
                    inbound_streams: 10, initial_tsn: 1, params: vec![],
                })],
            }));
            let ctype = if init_ack { chunk_type::INIT_ACK } else { chunk_type::ABORT };
            let by = B.parse().unwrap();
            let want = if init_ack { Fate::Answered { by } } else { Fate::Aborted { by } };
            prop_assert_eq!(reply(132, B, &sctp(dport, sport, tag, ctype), k), Some((0, want)));
            prop_assume!(other != tag);
            prop_assert_eq!(reply(132, B, &sctp(dport, sport, other, ctype), k), None);
            prop_assert_eq!(reply(132, B, &sctp(dport ^ 1, sport, tag, ctype), k), None);
            prop_assert_eq!(reply(132, A, &sctp(dport, sport, tag, ctype), k), None);
        }
    }
}

/// The key of a TCP or UDP probe is the key read back from its bytes, and an ICMPv6 time
/// exceeded that quotes any prefix of it holding the IPv6 header and the transport's first 12
/// bytes matches it (fuzz/fuzz_targets/probe_key_read_back.rs fuzzes the same with SCTP too).
mod keys_read_back {
    use super::*;
    use synergy_craft::wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
    use synergy_craft::wire::tcp::{TcpFlags, TcpRepr};
    use synergy_craft::wire::udp::UdpRepr;

    proptest! {
        #[test]
        fn from_bytes_and_from_every_quote(
            tcp: bool, sport: u16, dport: u16, seq: u32, hop: u8, len in 0usize..40,
        ) {
            let transport = if tcp {
                Transport::Tcp(TcpRepr {
                    src_port: sport, dst_port: dport, seq, ack: 0,
                    flags: TcpFlags(TcpFlags::SYN), window: 65535, urgent: 0, options: vec![],
                })
            } else {
                Transport::Udp(UdpRepr { src_port: sport, dst_port: dport })
            };
            let r = ProbeRepr {
                ip: IpFields::new("2001:db8:1::11".parse().unwrap(), "2001:db8:2::5".parse().unwrap(), hop),
                transport,
                payload: vec![0x5a; len],
                checksum_mode: ChecksumMode::Correct,
            };
            let (bytes, c) = r.to_bytes().unwrap();
            let key = ProbeKey::of(&r, c);
            prop_assert_eq!(ProbeKey::from_packet(&bytes), Some(key));
            let from: Ipv6Addr = "2001:db8:ff::1".parse().unwrap();
            for q in ipv6::HEADER_LEN + 12..=bytes.len() {
                let mut msg = vec![3, 0, 0, 0, 0, 0, 0, 0];
                msg.extend_from_slice(&bytes[..q]);
                prop_assert_eq!(
                    match_reply(&[key], &Arrived::Icmp { from, msg: &msg }),
                    Some((0, Fate::Expired { by: from, code: 0 }))
                );
            }
        }
    }
}
