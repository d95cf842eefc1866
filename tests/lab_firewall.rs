//! Lab tests: what real nftables/conntrack firewalls do with synergy-craft's probes, for tcp, udp
//! and sctp. Topology: A - fwa1 - fwa2 - r1 - r2 - fwb1 - B (and C on r1), so the right hop limit
//! is 3 (expires at r1), one too low is 2 (expires at fwa2), and 6 reaches fwb1's rules.
//! Each test builds its own lab under its own prefix and tears it down, also on failure.

mod common;

use std::time::Duration;

use common::Lab;

const TOPOLOGY: [&str; 6] = ["--local", "2", "--routers", "2", "--remote", "1"];
const RIGHT: &str = "3";
const TOO_LOW: &str = "2";
const TOO_HIGH: &str = "6";
const LOCAL_FWS: [&str; 2] = ["fwa1", "fwa2"];
const SPORT: u16 = 4444;
const DPORT: u16 = 5555;

fn probe(lab: &Lab, proto: &str, hop_limit: &str, extra: &[&str]) -> String {
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let (s, d) = (SPORT.to_string(), DPORT.to_string());
    let args = [
        "probe",
        "--proto",
        proto,
        "--src",
        &a,
        "--sport",
        &s,
        "--dst",
        &b,
        "--dport",
        &d,
        "--hop-limit",
        hop_limit,
    ];
    lab.craft("A", &[&args[..], extra].concat())
}

/// Whether the peer's first packet (B:5555 -> A:4444, sent by B with hop limit 64) is captured
/// on A's link.
fn peer_reaches_a(lab: &Lab, proto: &str) -> bool {
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let filter = format!("ip6 src {b} and src port {DPORT} and dst port {SPORT}");
    let (s, d) = (SPORT.to_string(), DPORT.to_string());
    let got = lab.capture("A", &filter, 1, Duration::from_millis(1500), || {
        lab.craft(
            "B",
            &[
                "probe",
                "--proto",
                proto,
                "--src",
                &b,
                "--sport",
                &d,
                "--dst",
                &a,
                "--dport",
                &s,
                "--hop-limit",
                "64",
            ],
        );
    });
    !got.is_empty()
}

/// ICMPv6 messages of `icmp_type` captured on A while `during` runs: (source address, line).
fn icmp_at_a(lab: &Lab, icmp_type: u8, during: impl FnOnce()) -> Vec<(std::net::Ipv6Addr, String)> {
    let filter = format!("icmp6 and ip6[40] == {icmp_type}");
    lab.capture("A", &filter, 1, Duration::from_millis(1500), during)
        .into_iter()
        .filter_map(|l| {
            // "... IP6 (hlim 64, ...) SRC > DST: ..." — the source is the word before '>'.
            let words: Vec<&str> = l.split_whitespace().collect();
            let gt = words.iter().position(|w| *w == ">")?;
            Some((words.get(gt.checked_sub(1)?)?.parse().ok()?, l.clone()))
        })
        .collect()
}

fn blocked_without_probe(proto: &str, prefix: &str) {
    let Some(lab) = Lab::up(prefix, &TOPOLOGY) else {
        return;
    };
    let before = lab.counters("fwa2")["outside_drops"];
    assert!(
        !peer_reaches_a(&lab, proto),
        "{proto}: the peer reached A with no hole punched"
    );
    let after = lab.counters("fwa2")["outside_drops"];
    assert_eq!(
        after,
        before + 1,
        "{proto}: fwa2 should have counted and dropped the peer's packet"
    );
    for fw in LOCAL_FWS {
        assert!(
            lab.entry(fw, proto, DPORT, SPORT).is_none(),
            "{proto}: {fw} holds state for a dropped packet"
        );
    }
}

fn right_hop_limit_opens_hole(proto: &str, prefix: &str) {
    let Some(lab) = Lab::up(prefix, &TOPOLOGY) else {
        return;
    };
    let exceeded = icmp_at_a(&lab, 3, || {
        probe(&lab, proto, RIGHT, &[]);
    });
    assert_eq!(
        exceeded.len(),
        1,
        "{proto}: one time exceeded expected, got {exceeded:?}"
    );
    assert_eq!(
        exceeded[0].0,
        lab.addr("r1"),
        "{proto}: the probe must expire at r1, the first router: {exceeded:?}"
    );
    for fw in LOCAL_FWS {
        assert!(
            lab.entry(fw, proto, SPORT, DPORT).is_some(),
            "{proto}: {fw} holds no entry: {:?}",
            lab.conntrack(fw)
        );
    }
    for node in ["r1", "r2", "fwb1"] {
        assert!(
            lab.entry(node, proto, SPORT, DPORT).is_none(),
            "{proto}: {node} saw the probe"
        );
    }
    assert!(
        peer_reaches_a(&lab, proto),
        "{proto}: the peer did not get through the punched hole"
    );
}

fn hop_limit_one_too_low(proto: &str, prefix: &str) {
    let Some(lab) = Lab::up(prefix, &TOPOLOGY) else {
        return;
    };
    let exceeded = icmp_at_a(&lab, 3, || {
        probe(&lab, proto, TOO_LOW, &[]);
    });
    assert_eq!(
        exceeded.first().map(|e| e.0),
        Some(lab.addr("fwa2")),
        "{proto}: should expire at fwa2: {exceeded:?}"
    );
    assert!(
        lab.entry("fwa1", proto, SPORT, DPORT).is_some(),
        "{proto}: fwa1 was crossed and should hold state"
    );
    assert!(
        lab.entry("fwa2", proto, SPORT, DPORT).is_none(),
        "{proto}: fwa2 must hold no entry for a packet that died there"
    );
    assert!(
        !peer_reaches_a(&lab, proto),
        "{proto}: the peer got through although the last firewall was not punched"
    );
}

/// Too far: the probe reaches fwb1, a `reject` firewall. For TCP the RST comes back, tears down the
/// local entries and the peer is blocked. For UDP and SCTP an ICMPv6 administratively-prohibited
/// comes back; Linux conntrack keeps the entry (as RFC 4787 REQ-12 asks), so the peer still gets in.
fn too_high_reaches_reject_firewall(proto: &str, prefix: &str) {
    let Some(lab) = Lab::up(
        prefix,
        &[&TOPOLOGY[..], &["--remote-profile", "reject"]].concat(),
    ) else {
        return;
    };
    let b = lab.addr("B");
    if proto == "tcp" {
        // libpcap has no tcp[] for IPv6: byte 53 is the TCP flags byte (40 + 13), RST is 0x04.
        let rst = lab.capture(
            "A",
            &format!("ip6 src {b} and tcp and ip6[53] & 4 != 0"),
            1,
            Duration::from_millis(1500),
            || {
                probe(&lab, proto, TOO_HIGH, &[]);
            },
        );
        assert_eq!(
            rst.len(),
            1,
            "tcp: the reset from the reject firewall should reach A: {rst:?}"
        );
        // The RST has passed the local firewalls on its way to A: their entries close.
        let closed = |fw: &str| {
            lab.entry(fw, proto, SPORT, DPORT)
                .is_none_or(|l| l.contains("CLOSE"))
        };
        common::eventually(Duration::from_secs(2), || {
            LOCAL_FWS.iter().all(|fw| closed(fw))
        });
        for fw in LOCAL_FWS {
            let e = lab.entry(fw, proto, SPORT, DPORT);
            assert!(
                e.as_deref().is_none_or(|l| l.contains("CLOSE")),
                "tcp: {fw} kept a live entry after the reset: {e:?}"
            );
        }
        assert!(
            !peer_reaches_a(&lab, proto),
            "tcp: the peer got in although the reset closed the hole"
        );
    } else {
        let unreach = icmp_at_a(&lab, 1, || {
            probe(&lab, proto, TOO_HIGH, &[]);
        });
        assert_eq!(
            unreach.len(),
            1,
            "{proto}: expected one destination unreachable: {unreach:?}"
        );
        assert!(
            unreach[0].1.contains("prohibited"),
            "{proto}: not administratively prohibited: {unreach:?}"
        );
        assert_eq!(
            unreach[0].0,
            lab.addr("fwb1"),
            "{proto}: sent by the reject firewall"
        );
        for fw in LOCAL_FWS {
            assert!(
                lab.entry(fw, proto, SPORT, DPORT).is_some(),
                "{proto}: {fw} dropped its entry on an ICMPv6 error"
            );
        }
        assert!(peer_reaches_a(&lab, proto), "{proto}: the peer was blocked");
    }
    assert!(
        lab.counters("fwb1")["outside_rejects"] >= 1,
        "{proto}: fwb1 did not count its reject"
    );
}

macro_rules! per_proto {
    ($($proto:ident),*) => {$(
        mod $proto {
            const P: &str = stringify!($proto);
            #[test]
            fn blocked_without_probe() { super::blocked_without_probe(P, concat!("nb", stringify!($proto))) }
            #[test]
            fn right_hop_limit_opens_hole() { super::right_hop_limit_opens_hole(P, concat!("rh", stringify!($proto))) }
            #[test]
            fn hop_limit_one_too_low() { super::hop_limit_one_too_low(P, concat!("lo", stringify!($proto))) }
            #[test]
            fn too_high_reaches_reject_firewall() { super::too_high_reaches_reject_firewall(P, concat!("rj", stringify!($proto))) }
        }
    )*};
}

per_proto!(tcp, udp, sctp);

/// What conntrack does with a deliberately wrong checksum is decided by
/// `net.netfilter.nf_conntrack_checksum`, read back from the firewall after setting it each way:
/// with 1 the probe is INVALID, counted and dropped at the first firewall, and makes no entry
/// (why the original SocketSynergy SYN, checksum 0, opens no hole, and proof that the correct
/// checksums are what make entries); with 0 conntrack does not look and the probe makes its entry.
#[test]
fn bad_checksum_follows_nf_conntrack_checksum() {
    let Some(lab) = Lab::up("badsum", &TOPOLOGY) else {
        return;
    };
    // Set to 1 first: a probe that made no entry leaves the flow free for the one with 0.
    for (setting, proto) in ["1", "0"]
        .into_iter()
        .flat_map(|s| ["tcp", "udp", "sctp"].map(|p| (s, p)))
    {
        let set = lab.exec(
            "fwa1",
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_checksum={setting}"),
            ],
        );
        assert!(set.status.success(), "{set:?}");
        let read = lab.exec(
            "fwa1",
            &["sysctl", "-n", "net.netfilter.nf_conntrack_checksum"],
        );
        let verified = String::from_utf8_lossy(&read.stdout).trim() == "1";
        let before = lab.counters("fwa1")["invalid_drops"];
        probe(&lab, proto, RIGHT, &["--badsum"]);
        // The event each setting ends in: the INVALID count, or the entry.
        let done = || {
            if verified {
                lab.counters("fwa1")["invalid_drops"] > before
            } else {
                lab.entry("fwa1", proto, SPORT, DPORT).is_some()
            }
        };
        assert!(
            common::eventually(Duration::from_secs(5), done),
            "{proto}, nf_conntrack_checksum={setting}: neither counted nor entered"
        );
        if verified {
            assert_eq!(lab.counters("fwa1")["invalid_drops"], before + 1, "{proto}");
            assert!(
                lab.entry("fwa1", proto, SPORT, DPORT).is_none(),
                "{proto}: a bad checksum made an entry"
            );
        } else {
            assert_eq!(lab.counters("fwa1")["invalid_drops"], before, "{proto}");
        }
    }
}

/// The original SocketSynergy TCP probe — sequence 0, window 0, checksum 0x0000 — is INVALID to
/// conntrack and dropped: no hole. Its UDP probe, also with checksum 0, opens one: conntrack
/// verifies no UDP checksum of 0 (nf_conntrack_proto_udp.c, udp_error: "Packet with no
/// checksum"), whatever nf_conntrack_checksum says.
#[test]
fn original_socketsynergy_probes() {
    let Some(lab) = Lab::up("ssorig", &TOPOLOGY) else {
        return;
    };
    let before = lab.counters("fwa1")["invalid_drops"];
    probe(
        &lab,
        "tcp",
        RIGHT,
        &["--seq", "0", "--win", "0", "--checksum", "0"],
    );
    common::eventually(Duration::from_secs(2), || {
        lab.counters("fwa1")["invalid_drops"] > before
    });
    assert_eq!(
        lab.counters("fwa1")["invalid_drops"],
        before + 1,
        "the zero-checksum SYN was not INVALID"
    );
    assert!(lab.entry("fwa1", "tcp", SPORT, DPORT).is_none());
    assert!(
        !peer_reaches_a(&lab, "tcp"),
        "the peer got in after a zero-checksum SYN"
    );

    probe(&lab, "udp", RIGHT, &["--checksum", "0"]);
    common::eventually(Duration::from_secs(2), || {
        lab.entry("fwa2", "udp", SPORT, DPORT).is_some()
    });
    let entry = lab.entry("fwa2", "udp", SPORT, DPORT);
    let through = peer_reaches_a(&lab, "udp");
    assert_eq!(
        entry.is_some(),
        through,
        "entry {entry:?} but peer through={through}"
    );
    assert!(
        through,
        "a zero-checksum UDP probe opened no hole (conntrack does not verify a zero UDP checksum)"
    );
}

/// Per-firewall conntrack timeouts and random loss, as lab options.
#[test]
fn timeouts_and_loss_are_set_per_node() {
    let opts = [
        "--timeout",
        "udp=3",
        "--timeout",
        "fwa2:sctp_closed=2",
        "--loss",
        "r1=100",
    ];
    let Some(lab) = Lab::up("knobs", &[&TOPOLOGY[..], &opts[..]].concat()) else {
        return;
    };
    let sysctl = |node: &str, key: &str| {
        String::from_utf8_lossy(&lab.exec(node, &["sysctl", "-n", key]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        sysctl("fwa1", "net.netfilter.nf_conntrack_udp_timeout"),
        "3"
    );
    assert_eq!(
        sysctl("fwb1", "net.netfilter.nf_conntrack_udp_timeout"),
        "3"
    );
    assert_eq!(
        sysctl("fwa2", "net.netfilter.nf_conntrack_sctp_timeout_closed"),
        "2"
    );
    assert_eq!(
        sysctl("fwa1", "net.netfilter.nf_conntrack_sctp_timeout_closed"),
        "10"
    );
    // With 100% loss on r1, a probe meant to expire at r2 (hop limit 4) dies in r1's forwarding:
    // no time exceeded comes back, and r1 counts what it dropped. (A probe that expires at r1
    // itself never reaches r1's forward hook, so loss there does not touch it.)
    let exceeded = icmp_at_a(&lab, 3, || {
        probe(&lab, "udp", "4", &[]);
    });
    assert!(
        exceeded.is_empty(),
        "r1 drops everything, yet: {exceeded:?}"
    );
    assert!(lab.counters("r1")["loss_drops"] >= 1);
    // The UDP entry made on the way out expires after the timeout set above, read back from the
    // firewall (conntrack's garbage collection may take up to a couple of seconds more).
    assert!(lab.entry("fwa2", "udp", SPORT, DPORT).is_some());
    let out = lab.exec(
        "fwa2",
        &["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"],
    );
    let timeout: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a timeout");
    assert!(
        common::eventually(Duration::from_secs(timeout + 2), || {
            lab.entry("fwa2", "udp", SPORT, DPORT).is_none()
        }),
        "udp entry outlived its {timeout} s timeout"
    );
}
