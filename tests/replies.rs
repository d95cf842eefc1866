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

/// Every truncation of every captured reply parses or fails cleanly; while the quote still holds
/// the fields that tell probes apart, it still matches.
#[test]
fn captured_replies_truncated_everywhere() {
    for (name, pkts) in fixtures() {
        let key = ProbeKey::from_packet(&pkts[0]).unwrap();
        let full = arrived(&pkts[1]);
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
            let _ = match_reply(&[key], &a);
        }
        assert!(match_reply(&[key], &full).is_some(), "{name}");
    }
}

fn fuzz_one(bytes: &[u8], key: ProbeKey) {
    let from: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
    let _ = IcmpErrorRepr::parse(bytes);
    let _ = match_reply(&[key], &Arrived::Icmp { from, msg: bytes });
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
