//! Lab tests of reply matching and hop-limit discovery: `hops` recommends the hop limit that
//! crosses the last local firewall for several topologies, `listen` then works with it (and with
//! `auto`), `probe --watch` reports where a probe expired or who reset/rejected it, a close
//! `reject` firewall is never recommended into, and the longest path is traced in under a second.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Lab};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

fn hops_json(lab: &Lab, proto: &str, sport: &str) -> serde_json::Value {
    let out = lab.craft(
        "A",
        &[
            "hops", "--proto", proto, "--sport", sport, "--dst", B, "--dport", "5555", "--json",
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("hops --json: {e}: {out}"))
}

fn watch(lab: &Lab, proto: &str, sport: &str, hop: &str) -> serde_json::Value {
    let out = lab.craft(
        "A",
        &[
            "probe",
            "--proto",
            proto,
            "--sport",
            sport,
            "--dst",
            B,
            "--dport",
            "5555",
            "--hop-limit",
            hop,
            "--watch",
            "700ms",
            "--json",
        ],
    );
    let fate = out
        .lines()
        .find(|l| l.contains("\"event\":\"fate\""))
        .unwrap_or_else(|| panic!("no fate: {out}"));
    serde_json::from_str(fate).unwrap()
}

/// A line each way through `listen` with an unmodified peer (socat for tcp, nc for udp).
fn listen_works(lab: &Lab, proto: &str, port: u16, hop: &str) {
    let (p, q) = (port.to_string(), (port + 1000).to_string());
    let mut a = lab.spawn(
        "A",
        &[BIN, "listen", proto, A, &p, B, &q, hop, "--timeout", "15"],
    );
    std::thread::sleep(Duration::from_millis(if hop == "auto" {
        1500
    } else {
        500
    }));
    let peer = if proto == "tcp" {
        format!("(echo hello from B; sleep 2) | socat - TCP6:[{A}]:{p},bind=[{B}]:{q}")
    } else {
        format!("(echo hello from B; sleep 2) | nc -6 -u -w 2 -s {B} -p {q} {A} {p}")
    };
    let b = lab.spawn("B", &["sh", "-c", &peer]);
    std::thread::sleep(Duration::from_millis(600));
    a.write(b"hello from A\n");
    let (bo, _) = b.finish(Duration::from_secs(6));
    let (ao, _) = a.finish(Duration::from_secs(4));
    let ae = String::from_utf8_lossy(&ao.stderr);
    assert_eq!(
        String::from_utf8_lossy(&ao.stdout),
        "hello from B\n",
        "{proto} listen, hop limit {hop}: {ae}"
    );
    assert_eq!(
        String::from_utf8_lossy(&bo.stdout),
        "hello from A\n",
        "{proto} peer, hop limit {hop}: {ae}"
    );
    if hop == "auto" {
        assert!(ae.contains("hop limit auto: recommended hop limit"), "{ae}");
    }
}

fn topology(local: u8, routers: u8, prefix: &str) {
    let (l, r) = (local.to_string(), routers.to_string());
    let Some(lab) = Lab::up(prefix, &["--local", &l, "--routers", &r]) else {
        return;
    };
    let want = u64::from(local) + 1;
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001")] {
        let h = hops_json(&lab, proto, sport);
        assert_eq!(
            h["recommended_hop_limit"], want,
            "{proto} local {local} routers {routers}: {h}"
        );
        // The responders at the recommended hop limit and the one below are r1 and the last local firewall.
        let hops = h["hops"].as_array().unwrap();
        let at = |n: u64| {
            hops.iter()
                .find(|x| x["hop_limit"] == n)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(at(want)["fate"]["by"], lab.addr("r1").to_string(), "{h}");
        assert_eq!(at(want)["place"], "outside");
        assert_eq!(at(want - 1)["place"], "inside");
    }
    std::thread::sleep(Duration::from_millis(1100)); // routers rate-limit ICMPv6 errors
    let f = watch(&lab, "tcp", "4002", &want.to_string());
    assert_eq!(f["fate"]["fate"], "expired", "{f}");
    assert_eq!(f["fate"]["by"], lab.addr("r1").to_string(), "{f}");
    assert_eq!(f["too_high"], false);
    listen_works(&lab, "tcp", 4444, &want.to_string());
    listen_works(&lab, "udp", 4445, &want.to_string());
}

#[test]
fn one_local_firewall_one_router() {
    topology(1, 1, "hp11");
}

#[test]
fn two_local_firewalls_two_routers() {
    topology(2, 2, "hp22");
}

#[test]
fn one_local_firewall_three_routers() {
    topology(1, 3, "hp13");
}

#[test]
fn two_local_firewalls_three_routers() {
    topology(2, 3, "hp23");
}

#[test]
fn listen_auto_finds_the_hop_limit() {
    let Some(lab) = Lab::up(
        "hpauto",
        &[
            "--local",
            "2",
            "--routers",
            "2",
            "--remote-profile",
            "reject",
        ],
    ) else {
        return;
    };
    listen_works(&lab, "tcp", 4444, "auto");
    std::thread::sleep(Duration::from_millis(1100));
    listen_works(&lab, "udp", 4445, "auto");
    for fw in lab.firewalls() {
        assert_eq!(lab.counters(&fw)["invalid_drops"], 0, "{fw}");
    }
}

/// A `reject` firewall right after one router: `hops` sees its reset (tcp) or rejection (udp) and
/// recommends below it; a deliberately too-high probe reports the reset and who sent it.
#[test]
fn close_reject_firewall_is_never_recommended_into() {
    let Some(lab) = Lab::up("hprej", &["--remote-profile", "reject"]) else {
        return;
    };
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001")] {
        let h = hops_json(&lab, proto, sport);
        let rec = h["recommended_hop_limit"].as_u64().unwrap();
        let peer_side = h["recommendation"]["peer_side_from"]
            .as_u64()
            .unwrap_or_else(|| panic!("{proto}: no peer side seen: {h}"));
        assert_eq!(rec, 2, "{h}");
        assert!(rec < peer_side, "{h}");
        // The recommended probe expires at r1 and is not reset.
        std::thread::sleep(Duration::from_millis(1100));
        let f = watch(&lab, proto, "4002", &rec.to_string());
        assert_eq!(f["fate"]["fate"], "expired", "{f}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let f = watch(&lab, "tcp", "4003", "4");
    assert_eq!(f["fate"]["fate"], "reset", "{f}");
    assert_eq!(
        f["fate"]["by"], B,
        "the reset carries the peer's address (the firewall speaks for it): {f}"
    );
    assert_eq!(f["too_high"], true);
    let f = watch(&lab, "udp", "4004", "4");
    assert_eq!(f["fate"]["fate"], "unreachable", "{f}");
    assert_eq!(f["fate"]["code"], 1, "administratively prohibited: {f}");
    assert_eq!(
        f["fate"]["by"],
        lab.addr("fwb1").to_string(),
        "rejected by fwb1: {f}"
    );
    assert_eq!(f["too_high"], true);
}

/// The longest path the tests build (3 local firewalls, 3 routers, 2 remote firewalls, silent
/// beyond): the whole `hops` run, process start to exit, takes under a second.
#[test]
fn hops_over_the_longest_path_under_one_second() {
    let Some(lab) = Lab::up(
        "hplong",
        &["--local", "3", "--routers", "3", "--remote", "2"],
    ) else {
        return;
    };
    let started = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("A"),
            BIN,
            "hops",
            "--proto",
            "tcp",
            "--sport",
            "4000",
            "--dst",
            B,
            "--dport",
            "5555",
            "--json",
        ])
        .output()
        .unwrap();
    let wall = started.elapsed();
    println!(
        "hops over {} hops: {:.1} ms wall time",
        3 + 3 + 2 + 1,
        wall.as_secs_f64() * 1000.0
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["recommended_hop_limit"], 4, "{h}");
    assert!(wall < Duration::from_secs(1), "hops took {wall:?}");
}
